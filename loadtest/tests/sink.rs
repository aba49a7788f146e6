//! Every scenario for about a second against the bundled relay sink: the counts must add up.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{assert_lossless, quick};
use vireo_loadtest::sink::Sink;
use vireo_loadtest::{Scenario, run};

fn sink() -> vireo_loadtest::sink::SinkHandle {
    Sink::start("127.0.0.1:0".parse().unwrap()).unwrap()
}

#[test]
fn fan_in_qos1_unlimited() {
    let s = sink();
    let mut c = quick(
        Scenario::FanIn {
            publishers: 4,
            subscribers: 2,
        },
        s.local_addr(),
        1,
    );
    // Unlimited rate, bounded by count so the run stays short on a busy machine.
    c.count = Some(5_000);
    c.duration = Some(Duration::from_secs(5));
    let r = run(&c).unwrap();
    assert_lossless(&r);
    assert_eq!(r.messages.published, 4 * 5_000);
    assert_eq!(r.messages.delivered, 2 * 4 * 5_000);
}

#[test]
fn fan_out_qos2_rate_limited() {
    let s = sink();
    let mut c = quick(
        Scenario::FanOut {
            publishers: 2,
            subscribers: 5,
        },
        s.local_addr(),
        2,
    );
    c.rate = Some(1_000.0);
    let r = run(&c).unwrap();
    assert_lossless(&r);
    assert!(r.latency.co_corrected);
    // Two publishers at 1000/s for a second: the open-loop schedule keeps its pace.
    // (Generous lower bound: a starved generator thread may end the second behind schedule.)
    assert!((1_000..=2_400).contains(&r.messages.published), "{r}");
}

#[test]
fn p2p_qos1_and_qos0() {
    let s = sink();
    for qos in [1, 0] {
        let mut c = quick(Scenario::P2p { pairs: 10 }, s.local_addr(), qos);
        c.rate = Some(500.0);
        let r = run(&c).unwrap();
        assert_lossless(&r);
        assert_eq!(r.messages.expected, r.messages.published);
    }
}

#[test]
fn mixed_qos_downgrades_end_to_end() {
    let s = sink();
    let mut c = quick(
        Scenario::FanIn {
            publishers: 2,
            subscribers: 1,
        },
        s.local_addr(),
        2,
    );
    c.sub_qos = vireo_loadtest::QoS::AtLeastOnce;
    c.rate = Some(1_000.0);
    let r = run(&c).unwrap();
    assert_lossless(&r);
}

#[test]
fn connections_are_held_and_counted() {
    let s = sink();
    let mut c = quick(
        Scenario::Connections {
            connections: 300,
            connect_rate: Some(3_000.0),
        },
        s.local_addr(),
        0,
    );
    c.broker_pid = Some(std::process::id());
    c.source_ips = vec!["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()];
    let r = run(&c).unwrap();
    let k = &r.connections;
    assert_eq!(
        (k.attempted, k.connected, k.failed, k.dropped),
        (300, 300, 0, 0)
    );
    assert!(k.connect_rate > 0.0);
    assert_eq!(r.connect_latency.count, 300);
    assert!(k.broker_rss_before_kib.is_some() && k.broker_bytes_per_connection.is_some());
}
