//! `$SYS/broker/...` topics: Mosquitto's names, published retained every `sys_interval`,
//! never matched by a filter that starts with a wildcard.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Instant;

use common::*;
use vireo_codec::QoS;

/// The next value published on `topic` to `c` (subscribed to it) that satisfies `want`.
fn value_until(c: &mut Client, topic: &str, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(
            Instant::now() < deadline,
            "{topic} never satisfied the test"
        );
        let p = c.recv_publish();
        if &*p.topic == topic {
            let v = String::from_utf8(p.payload.to_vec()).unwrap();
            if want(&v) {
                return v;
            }
        }
    }
}

/// [MQTT-4.7.2-1] `#` and `+/...` do not match `$SYS` topics; `$SYS/#` does, and the values
/// are retained, so a late subscriber gets them at once.
#[test]
fn v311_mqtt_4_7_2_1_sys_topics_only_for_those_who_ask() {
    let broker = start_with(|c| c.sys_interval = 1);
    let addr = broker.local_addr();
    let mut all = Client::connect(addr, "all");
    all.subscribe(&[("#", QoS::AtMostOnce), ("+/broker/uptime", QoS::AtMostOnce)]);
    let mut sys = Client::connect(addr, "sys");
    sys.subscribe(&[("$SYS/broker/uptime", QoS::AtMostOnce)]);
    let uptime = value_until(&mut sys, "$SYS/broker/uptime", |_| true);
    assert!(uptime.ends_with(" seconds"), "{uptime}");
    // Past at least one more publication, `all` has had none of them: the first thing it
    // gets is an ordinary message published after.
    value_until(&mut sys, "$SYS/broker/uptime", |v| v != uptime);
    let mut p = Client::connect(addr, "p");
    p.publish("plain", b"x", QoS::AtMostOnce, false, 0);
    assert_eq!(&*all.recv_publish().topic, "plain");
    // Retained: a new subscriber gets the version at once.
    let mut late = Client::connect(addr, "late");
    late.subscribe(&[("$SYS/broker/version", QoS::AtMostOnce)]);
    let v = late.recv_publish();
    assert!(v.retain);
    assert!(String::from_utf8_lossy(&v.payload).starts_with("vireo "));
}

/// The counters move with what clients do: connected clients, messages received and sent.
#[test]
fn sys_counters_follow_the_traffic() {
    let broker = start_with(|c| c.sys_interval = 1);
    let addr = broker.local_addr();
    let mut sys = Client::connect(addr, "sys");
    sys.subscribe(&[("$SYS/broker/#", QoS::AtMostOnce)]);
    let mut sub = Client::connect(addr, "sub");
    sub.subscribe(&[("t", QoS::AtLeastOnce)]);
    let mut p = Client::connect(addr, "p");
    for id in 1..=3 {
        p.publish("t", b"x", QoS::AtLeastOnce, false, id);
        sub.recv_publish_ack();
    }
    let at_least = |n: u64| move |v: &str| v.parse::<u64>().is_ok_and(|v| v >= n);
    value_until(&mut sys, "$SYS/broker/clients/connected", at_least(3));
    value_until(&mut sys, "$SYS/broker/messages/received", at_least(3));
    value_until(&mut sys, "$SYS/broker/messages/sent", at_least(3));
    value_until(&mut sys, "$SYS/broker/bytes/received", at_least(1));
    value_until(&mut sys, "$SYS/broker/subscriptions/count", at_least(2));
    value_until(&mut sys, "$SYS/broker/load/messages/received/1min", |v| {
        v.parse::<f64>().is_ok_and(|v| v > 0.0)
    });
    p.disconnect();
    value_until(&mut sys, "$SYS/broker/clients/connected", |v| v == "2");
}

/// Mosquitto's own client reads them like Mosquitto's.
#[test]
fn mosquitto_sub_reads_the_version() {
    let broker = start_with(|c| c.sys_interval = 1);
    let port = broker.local_addr().port();
    let out = mosquitto_tool(
        "mosquitto_sub",
        port,
        &["-t", "$SYS/broker/version", "-C", "1", "-W", "5"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("vireo "), "{text:?}");
}
