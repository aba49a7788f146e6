//! MQTT 3.1.1 QoS 2 flows in both directions, with duplicates and reordering from raw sockets.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use vireo_codec::{Ack, Packet, Publish, QoS, QosPid};

fn q2(t: &str, id: u16, dup: bool, payload: &'static [u8]) -> Packet {
    Packet::Publish(Publish {
        dup,
        qos: QosPid::ExactlyOnce(pid(id)),
        retain: false,
        topic: topic(t),
        properties: Default::default(),
        payload: payload.into(),
    })
}

/// [MQTT-4.3.3-2] a repeated QoS 2 PUBLISH before PUBREL is acknowledged again but delivered
/// once; after PUBCOMP the id is a new message.
#[test]
fn v311_mqtt_4_3_3_2_inbound_duplicate_delivered_once() {
    let broker = start();
    let mut s = Client::connect(broker.local_addr(), "q2-sub");
    s.subscribe(&[("q2", QoS::ExactlyOnce)]);
    let mut p = Client::connect(broker.local_addr(), "q2-pub");
    p.send(&q2("q2", 9, false, b"once"));
    assert!(matches!(p.recv(), Some(Packet::PubRec(a)) if a.packet_id == pid(9)));
    p.send(&q2("q2", 9, true, b"once"));
    assert!(
        matches!(p.recv(), Some(Packet::PubRec(a)) if a.packet_id == pid(9)),
        "PUBREC again"
    );
    p.send(&Packet::PubRel(Ack::new(pid(9))));
    assert!(matches!(p.recv(), Some(Packet::PubComp(a)) if a.packet_id == pid(9)));
    assert_eq!(&s.recv_publish_ack().payload[..], b"once");
    s.expect_nothing();
    // The id is free again: a new message with it is delivered.
    p.publish("q2", b"again", QoS::ExactlyOnce, false, 9);
    assert_eq!(
        &s.recv_publish_ack().payload[..],
        b"again",
        "[MQTT-4.3.3-2]"
    );
}

/// An unknown PUBREL still gets PUBCOMP; [MQTT-3.6.1-1] PUBREL with flags 0000 closes.
#[test]
fn v311_mqtt_3_6_1_1_pubrel_handling() {
    let broker = start();
    let mut p = Client::connect(broker.local_addr(), "rel");
    p.send(&Packet::PubRel(Ack::new(pid(77))));
    assert!(matches!(p.recv(), Some(Packet::PubComp(a)) if a.packet_id == pid(77)));
    p.send_raw(&[0x60, 0x02, 0x00, 0x01]);
    assert!(p.closed_silently(), "[MQTT-3.6.1-1]");
}

/// [MQTT-2.3.1-2] 20 interleaved QoS 2 publishes get 20 PUBRECs with their own ids;
/// [MQTT-4.6.0-3] in order.
#[test]
fn v311_mqtt_4_6_0_3_interleaved_qos2_ids() {
    let broker = start();
    let mut p = Client::connect(broker.local_addr(), "inter");
    for id in 1..=20 {
        p.send(&q2("i", id, false, b"x"));
    }
    for id in 1..=20 {
        assert!(
            matches!(p.recv(), Some(Packet::PubRec(a)) if a.packet_id == pid(id)),
            "[MQTT-4.6.0-3]"
        );
    }
    for id in (1..=20).rev() {
        p.send(&Packet::PubRel(Ack::new(pid(id))));
        assert!(matches!(p.recv(), Some(Packet::PubComp(a)) if a.packet_id == pid(id)));
    }
}

/// [MQTT-4.3.3-1] outbound QoS 2: PUBLISH, PUBREC -> PUBREL (`62`), PUBCOMP; reconnect before
/// PUBCOMP re-sends the PUBREL, not the PUBLISH; [MQTT-4.6.0-4] PUBRELs in PUBREC order.
#[test]
fn v311_mqtt_4_3_3_1_outbound_qos2_and_pubrel_resend() {
    let broker = start();
    let (mut s, _) = Client::connect_session(broker.local_addr(), "q2-out", false);
    s.subscribe(&[("o", QoS::ExactlyOnce)]);
    let mut p = Client::connect(broker.local_addr(), "q2-out-pub");
    for n in 1..=3u16 {
        p.publish("o", &n.to_be_bytes(), QoS::ExactlyOnce, false, n);
    }
    let ids: Vec<_> = (0..3)
        .map(|_| s.recv_publish().qos.packet_id().unwrap())
        .collect();
    for &i in &[ids[2], ids[0], ids[1]] {
        s.send(&Packet::PubRec(Ack::new(i)));
    }
    for &i in &[ids[2], ids[0], ids[1]] {
        assert!(
            matches!(s.recv(), Some(Packet::PubRel(a)) if a.packet_id == i),
            "[MQTT-4.6.0-4]"
        );
    }
    s.drop_connection();
    let (mut s, present) = Client::connect_session(broker.local_addr(), "q2-out", false);
    assert!(present);
    let mut again = Vec::new();
    for _ in 0..3 {
        match s.recv() {
            Some(Packet::PubRel(a)) => again.push(a.packet_id),
            other => panic!("[MQTT-4.3.3-1] expected PUBREL, got {other:?}"),
        }
    }
    assert_eq!(again, vec![ids[2], ids[0], ids[1]]);
    for i in again {
        s.send(&Packet::PubComp(Ack::new(i)));
    }
    s.expect_nothing();
}

/// [MQTT-3.10.4-3] a QoS 2 delivery already started completes after UNSUBSCRIBE.
#[test]
fn v311_mqtt_3_10_4_3_inflight_completes_after_unsubscribe() {
    let broker = start();
    let mut s = Client::connect(broker.local_addr(), "unsub-q2");
    s.subscribe(&[("u", QoS::ExactlyOnce)]);
    let mut p = Client::connect(broker.local_addr(), "unsub-q2-pub");
    p.publish("u", b"x", QoS::ExactlyOnce, false, 1);
    let got = s.recv_publish();
    let id = got.qos.packet_id().unwrap();
    s.send(&Packet::PubRec(Ack::new(id)));
    assert!(matches!(s.recv(), Some(Packet::PubRel(a)) if a.packet_id == id));
    s.unsubscribe(5, &["u"]);
    s.send(&Packet::PubComp(Ack::new(id)));
    s.send_raw(&[0xC0, 0x00]);
    assert_eq!(
        s.recv(),
        Some(Packet::PingResp),
        "connection fine after PUBCOMP"
    );
}
