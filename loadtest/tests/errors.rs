//! Failures are reported clearly: an unreachable broker, a refused CONNECT, a broker that
//! loses messages or hangs up (non-zero exit for the binary, `Error::Failed` for the library).
#![allow(clippy::unwrap_used)]

mod common;

use std::net::TcpListener;

use common::fake::{Behaviour, start};
use common::quick;
use vireo_loadtest::{Error, Failure, Scenario, run};

fn fan_in() -> Scenario {
    Scenario::FanIn {
        publishers: 3,
        subscribers: 1,
    }
}

#[test]
fn unreachable_broker() {
    // A port that was free a moment ago: nothing listens on it.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    match run(&quick(fan_in(), addr, 1)) {
        Err(Error::Unreachable { addr: a, .. }) => assert_eq!(a, addr),
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[test]
fn connack_refused_names_the_code() {
    let addr = start(Behaviour::Refuse(5));
    let err = run(&quick(fan_in(), addr, 0)).unwrap_err();
    assert!(
        matches!(err, Error::ConnackRefused { code: 5, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("not authorized"), "{err}");
}

#[test]
fn lossy_broker_fails_at_qos1() {
    let addr = start(Behaviour::DropEvery(10));
    let mut c = quick(fan_in(), addr, 1);
    c.rate = Some(300.0);
    let err = run(&c).unwrap_err();
    let Error::Failed(report) = &err else {
        panic!("expected a failed run, got {err:?}");
    };
    let m = &report.messages;
    assert!(m.lost > 0, "{report}");
    assert_eq!(m.unique + m.lost, m.expected, "{report}");
    // One publish in ten is dropped (give or take the one in flight when counting stops).
    assert!(m.lost.abs_diff(m.expected / 10) <= 3, "{report}");
    // The fake drops every 10th publish whoever sent it: every publisher lost some.
    assert_eq!(m.lost_by_publisher.len(), 3, "{report}");
    assert_eq!(m.lost_by_publisher.values().sum::<u64>(), m.lost);
    assert!(
        matches!(report.failures[0], Failure::Loss { qos: 1, .. }),
        "{report}"
    );
    assert!(err.to_string().contains("messages lost at QoS 1"), "{err}");
}

#[test]
fn loss_at_qos0_is_reported_but_passes() {
    let addr = start(Behaviour::DropEvery(10));
    let mut c = quick(fan_in(), addr, 0);
    c.rate = Some(300.0);
    let r = run(&c).unwrap();
    assert!(r.messages.lost > 0, "{r}");
    assert!(r.failures.is_empty());
}

#[test]
fn hang_up_right_after_data_is_a_dropped_connection() {
    // The FIN arrives with (or just after) the last PUBLISH: the subscriber must read past the
    // data to see it, not stop at a short read.
    let addr = start(Behaviour::HangUpAfter(50));
    let mut c = quick(fan_in(), addr, 0);
    c.rate = Some(300.0);
    let err = run(&c).unwrap_err();
    let Error::Failed(report) = &err else {
        panic!("expected a failed run, got {err:?}");
    };
    assert_eq!(report.connections.dropped, 1, "{report}");
    assert!(
        report
            .failures
            .iter()
            .any(|f| matches!(f, Failure::Dropped { connections: 1 })),
        "{report}"
    );
    assert_eq!(report.messages.delivered, 50, "{report}");
}
