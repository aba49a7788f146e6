//! The scenarios against Vireo itself, started in-process on a free port.
#![allow(clippy::unwrap_used)]

mod common;

use common::{assert_lossless, quick};
use vireo_loadtest::{Scenario, run};
use vireo_server::{Server, ServerHandle};

fn vireo() -> ServerHandle {
    let config = vireo_server::Config {
        bind: "127.0.0.1:0".parse().unwrap(),
        workers: 2,
        ..Default::default()
    };
    Server::start(config).unwrap()
}

#[test]
fn fan_in_qos1() {
    let v = vireo();
    let mut c = quick(
        Scenario::FanIn {
            publishers: 5,
            subscribers: 2,
        },
        v.local_addr(),
        1,
    );
    c.rate = Some(1_000.0);
    assert_lossless(&run(&c).unwrap());
}

#[test]
fn fan_out_qos2() {
    let v = vireo();
    let mut c = quick(
        Scenario::FanOut {
            publishers: 1,
            subscribers: 5,
        },
        v.local_addr(),
        2,
    );
    c.rate = Some(1_000.0);
    assert_lossless(&run(&c).unwrap());
}

#[test]
fn p2p_qos0_and_connections() {
    let v = vireo();
    let mut c = quick(Scenario::P2p { pairs: 10 }, v.local_addr(), 0);
    c.rate = Some(500.0);
    assert_lossless(&run(&c).unwrap());
    let c = quick(
        Scenario::Connections {
            connections: 200,
            connect_rate: None,
        },
        v.local_addr(),
        0,
    );
    let r = run(&c).unwrap();
    assert_eq!(r.connections.connected, 200, "{r}");
}
