//! MQTT 3.1.1 Will messages for every kind of close, and none after DISCONNECT.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use vireo_codec::{Connect, QoS};

fn watcher(broker: &vireo_server::ServerHandle, name: &str, t: &str) -> Client {
    let mut w = Client::connect(broker.local_addr(), name);
    w.subscribe(&[(t, QoS::AtLeastOnce)]);
    w
}

/// [MQTT-3.1.2-8] socket dropped without DISCONNECT publishes the Will;
/// [MQTT-3.1.2-10] exactly once; [MQTT-3.1.2-16] not retained.
#[test]
fn v311_mqtt_3_1_2_8_will_on_socket_close() {
    let broker = start();
    let mut w = watcher(&broker, "w1", "will/1");
    let c = Client::connect_will(
        broker.local_addr(),
        "dies",
        "will/1",
        "bye",
        QoS::AtLeastOnce,
        false,
    );
    c.drop_connection();
    let got = w.recv_publish_ack();
    assert_eq!(&got.payload[..], b"bye", "[MQTT-3.1.2-8]");
    assert!(!got.retain, "[MQTT-3.1.2-16]");
    assert_eq!(got.qos(), QoS::AtLeastOnce, "will QoS honoured");
    w.expect_nothing(); // [MQTT-3.1.2-10]
    let mut late = watcher(&broker, "w1-late", "will/1");
    late.expect_nothing(); // [MQTT-3.1.2-16] not stored
}

/// [MQTT-3.14.4-3] DISCONNECT discards the Will.
#[test]
fn v311_mqtt_3_14_4_3_no_will_after_disconnect() {
    let broker = start();
    let mut w = watcher(&broker, "w2", "will/2");
    let c = Client::connect_will(
        broker.local_addr(),
        "polite",
        "will/2",
        "bye",
        QoS::AtMostOnce,
        false,
    );
    c.disconnect();
    w.expect_nothing();
}

/// [MQTT-3.1.2-17] a retained Will is stored.
#[test]
fn v311_mqtt_3_1_2_17_retained_will() {
    let broker = start();
    let c = Client::connect_will(
        broker.local_addr(),
        "ret-will",
        "will/3",
        "stored",
        QoS::AtMostOnce,
        true,
    );
    let mut w = watcher(&broker, "w3", "will/3");
    c.drop_connection();
    assert_eq!(&w.recv_publish().payload[..], b"stored");
    let mut late = watcher(&broker, "w3-late", "will/3");
    let got = late.recv_publish();
    assert!(got.retain, "[MQTT-3.1.2-17]");
}

/// [MQTT-3.1.2-24] a keep-alive timeout publishes the Will.
#[test]
fn v311_mqtt_3_1_2_24_will_on_keepalive_timeout() {
    let broker = start();
    let mut w = watcher(&broker, "w4", "will/4");
    let mut connect = Connect::new("silent");
    connect.keep_alive = 1;
    connect.will = Some(vireo_codec::LastWill {
        topic: topic("will/4"),
        payload: "timeout".into(),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Default::default(),
    });
    let (_c, _) = Client::connect_with(broker.local_addr(), connect);
    let got = w.recv_within(Duration::from_secs(4));
    assert!(
        matches!(got, Some(vireo_codec::Packet::Publish(ref p)) if &p.payload[..] == b"timeout"),
        "{got:?}"
    );
}

/// [MQTT-4.8.0-1] a protocol violation publishes the Will.
#[test]
fn v311_mqtt_4_8_0_1_will_on_protocol_violation() {
    let broker = start();
    let mut w = watcher(&broker, "w5", "will/5");
    let mut c = Client::connect_will(
        broker.local_addr(),
        "violator",
        "will/5",
        "bad",
        QoS::AtMostOnce,
        false,
    );
    c.send_raw(&[0x30, 0x03, 0x00, 0x01, b'#']);
    assert!(c.closed_silently());
    assert_eq!(&w.recv_publish().payload[..], b"bad");
}

/// [MQTT-3.1.4-2] a takeover publishes the old connection's Will.
#[test]
fn v311_mqtt_3_1_4_2_will_on_takeover() {
    let broker = start();
    let mut w = watcher(&broker, "w6", "will/6");
    let _old = Client::connect_will(
        broker.local_addr(),
        "taken",
        "will/6",
        "replaced",
        QoS::AtMostOnce,
        false,
    );
    let _new = Client::connect(broker.local_addr(), "taken");
    assert_eq!(&w.recv_publish().payload[..], b"replaced");
}

/// [MQTT-3.1.2-12] no Will flag: nothing published on close.
#[test]
fn v311_mqtt_3_1_2_12_no_will_no_message() {
    let broker = start();
    let mut w = watcher(&broker, "w7", "#");
    let c = Client::connect(broker.local_addr(), "nowill");
    c.drop_connection();
    w.expect_nothing();
}
