//! The scenarios against a real broker, Mosquitto, when it is installed (skipped otherwise).
#![allow(clippy::unwrap_used)]

mod common;

use common::{Mosquitto, assert_lossless, quick};
use vireo_loadtest::{Scenario, run};

#[test]
fn fan_in_qos1() {
    let Some(m) = Mosquitto::start() else { return };
    let mut c = quick(
        Scenario::FanIn {
            publishers: 5,
            subscribers: 1,
        },
        m.addr,
        1,
    );
    c.rate = Some(1_000.0);
    assert_lossless(&run(&c).unwrap());
}

#[test]
fn fan_out_qos2() {
    let Some(m) = Mosquitto::start() else { return };
    let mut c = quick(
        Scenario::FanOut {
            publishers: 1,
            subscribers: 5,
        },
        m.addr,
        2,
    );
    c.rate = Some(1_000.0);
    assert_lossless(&run(&c).unwrap());
}

#[test]
fn p2p_qos1_and_connections() {
    let Some(m) = Mosquitto::start() else { return };
    let mut c = quick(Scenario::P2p { pairs: 10 }, m.addr, 1);
    c.rate = Some(500.0);
    assert_lossless(&run(&c).unwrap());
    let c = quick(
        Scenario::Connections {
            connections: 200,
            connect_rate: None,
        },
        m.addr,
        0,
    );
    let r = run(&c).unwrap();
    assert_eq!(r.connections.connected, 200, "{r}");
}
