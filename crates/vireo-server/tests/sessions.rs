//! MQTT 3.1.1 persistent sessions (CleanSession=0) and clean sessions.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::sync::atomic::Ordering;

use vireo_codec::{Connect, Packet, QoS};

/// [MQTT-3.1.2-4] [MQTT-3.2.2-2] [MQTT-3.2.2-3] subscriptions survive; SP flags right.
#[test]
fn v311_mqtt_3_1_2_4_persistent_session_resumes() {
    let broker = start();
    let (mut c, present) = Client::connect_session(broker.local_addr(), "keeper", false);
    assert!(!present, "[MQTT-3.2.2-3]");
    c.subscribe(&[("k", QoS::AtLeastOnce)]);
    c.disconnect();
    let (mut c, present) = Client::connect_session(broker.local_addr(), "keeper", false);
    assert!(present, "[MQTT-3.2.2-2]");
    let mut p = Client::connect(broker.local_addr(), "keeper-pub");
    p.publish("k", b"still here", QoS::AtLeastOnce, false, 1);
    assert_eq!(
        &c.recv_publish_ack().payload[..],
        b"still here",
        "[MQTT-3.1.2-4]"
    );
}

/// [MQTT-3.1.2-6] [MQTT-3.2.2-1] [MQTT-3.1.4-3] CleanSession=1 discards the stored session.
#[test]
fn v311_mqtt_3_1_2_6_clean_session_discards() {
    let broker = start();
    let (mut c, _) = Client::connect_session(broker.local_addr(), "cleaner", false);
    c.subscribe(&[("c", QoS::AtLeastOnce)]);
    c.disconnect();
    let (mut c, present) = Client::connect_session(broker.local_addr(), "cleaner", true);
    assert!(!present, "[MQTT-3.2.2-1]");
    let mut p = Client::connect(broker.local_addr(), "cleaner-pub");
    p.publish("c", b"x", QoS::AtLeastOnce, false, 1);
    c.expect_nothing();
    c.disconnect();
    let (_, present) = Client::connect_session(broker.local_addr(), "cleaner", false);
    assert!(
        !present,
        "[MQTT-3.1.2-6] nothing kept from the clean session"
    );
}

/// [MQTT-3.1.3-2] sessions are keyed by client id.
#[test]
fn v311_mqtt_3_1_3_2_sessions_keyed_by_client_id() {
    let broker = start();
    for (id, t) in [("ka", "ta"), ("kb", "tb")] {
        let (mut c, _) = Client::connect_session(broker.local_addr(), id, false);
        c.subscribe(&[(t, QoS::AtLeastOnce)]);
        c.disconnect();
    }
    let (mut a, present) = Client::connect_session(broker.local_addr(), "ka", false);
    assert!(present);
    let mut p = Client::connect(broker.local_addr(), "kp");
    p.publish("tb", b"b", QoS::AtLeastOnce, false, 1);
    p.publish("ta", b"a", QoS::AtLeastOnce, false, 2);
    assert_eq!(&a.recv_publish_ack().payload[..], b"a", "[MQTT-3.1.3-2]");
    a.expect_nothing();
}

/// [MQTT-3.1.2-5] [MQTT-4.5.0-1] 1,000 QoS 1 and 1,000 QoS 2 messages published while the
/// client is away all arrive after reconnect, in order, exactly as the QoS promises.
#[test]
fn v311_mqtt_3_1_2_5_offline_messages_delivered_in_order() {
    let broker = start();
    let (mut c, _) = Client::connect_session(broker.local_addr(), "away", false);
    c.subscribe(&[("away/1", QoS::AtLeastOnce), ("away/2", QoS::ExactlyOnce)]);
    c.disconnect();
    let mut p = Client::connect(broker.local_addr(), "away-pub");
    for n in 1..=1000u16 {
        p.publish("away/1", &n.to_be_bytes(), QoS::AtLeastOnce, false, n);
        p.publish("away/2", &n.to_be_bytes(), QoS::ExactlyOnce, false, n);
    }
    let (mut c, present) = Client::connect_session(broker.local_addr(), "away", false);
    assert!(present);
    let (mut next1, mut next2) = (1u16, 1u16);
    while next1 <= 1000 || next2 <= 1000 {
        let got = c.recv_publish_ack();
        let n = u16::from_be_bytes([got.payload[0], got.payload[1]]);
        match got.topic.as_str() {
            "away/1" => {
                assert_eq!(n, next1, "[MQTT-4.6.0-6] QoS 1 in order");
                next1 += 1;
            }
            _ => {
                assert_eq!(n, next2, "QoS 2 in order, exactly once");
                next2 += 1;
            }
        }
    }
    c.expect_nothing();
}

/// [MQTT-4.4.0-1] [MQTT-3.3.1-1] [MQTT-4.6.0-1] [MQTT-2.3.1-4] unacknowledged QoS 1
/// deliveries are re-sent on reconnect with DUP=1, the same ids, in order.
#[test]
fn v311_mqtt_4_4_0_1_unacked_resent_with_dup_same_ids() {
    let broker = start();
    let (mut c, _) = Client::connect_session(broker.local_addr(), "unacked", false);
    c.subscribe(&[("u", QoS::AtLeastOnce)]);
    let mut p = Client::connect(broker.local_addr(), "unacked-pub");
    for n in 1..=5u8 {
        p.publish("u", &[n], QoS::AtLeastOnce, false, u16::from(n));
    }
    let first: Vec<_> = (0..5).map(|_| c.recv_publish()).collect();
    let ids: Vec<_> = first.iter().map(|p| p.qos.packet_id().unwrap()).collect();
    assert!(
        first.iter().all(|p| !p.dup),
        "[MQTT-4.3.2-1] first send DUP=0"
    );
    c.drop_connection(); // killed mid-flight, no acks
    let (mut c, present) = Client::connect_session(broker.local_addr(), "unacked", false);
    assert!(present);
    for (n, id) in (1..=5u8).zip(&ids) {
        let again = c.recv_publish();
        assert!(again.dup, "[MQTT-3.3.1-1]");
        assert_eq!(again.qos.packet_id(), Some(*id), "[MQTT-2.3.1-4] same id");
        assert_eq!(&again.payload[..], &[n], "[MQTT-4.6.0-1] in order");
        c.send(&Packet::PubAck(vireo_codec::Ack::new(*id)));
    }
    c.expect_nothing();
}

/// [MQTT-4.1.0-1] an inbound QoS 2 id awaiting PUBREL survives a reconnect: the PUBREL after
/// reconnect gets PUBCOMP and the message is not delivered twice.
#[test]
fn v311_mqtt_4_1_0_1_inbound_qos2_state_survives_reconnect() {
    let broker = start();
    let mut s = Client::connect(broker.local_addr(), "st-sub");
    s.subscribe(&[("st", QoS::ExactlyOnce)]);
    let (mut p, _) = Client::connect_session(broker.local_addr(), "st-pub", false);
    p.send_raw(&[0x34, 0x06, 0x00, 0x02, b's', b't', 0x00, 0x07]);
    assert!(matches!(p.recv(), Some(Packet::PubRec(_))));
    p.drop_connection();
    let (mut p, present) = Client::connect_session(broker.local_addr(), "st-pub", false);
    assert!(present);
    // DUP re-send of the same id before PUBREL: acknowledged, not delivered again.
    p.send_raw(&[0x3C, 0x06, 0x00, 0x02, b's', b't', 0x00, 0x07]);
    assert!(matches!(p.recv(), Some(Packet::PubRec(_))));
    p.send_raw(&[0x62, 0x02, 0x00, 0x07]);
    assert!(matches!(p.recv(), Some(Packet::PubComp(_))));
    s.recv_publish_ack();
    s.expect_nothing();
}

/// Offline queues are bounded: past max_queued_messages new messages are dropped, counted.
#[test]
fn offline_queue_bounded() {
    let broker = start_with(|c| c.max_queued_messages = 10);
    let (mut c, _) = Client::connect_session(broker.local_addr(), "bounded", false);
    c.subscribe(&[("b", QoS::AtLeastOnce)]);
    c.disconnect();
    let mut p = Client::connect(broker.local_addr(), "bounded-pub");
    for n in 1..=50u16 {
        p.publish("b", &n.to_be_bytes(), QoS::AtLeastOnce, false, n);
    }
    let (mut c, _) = Client::connect_session(broker.local_addr(), "bounded", false);
    for n in 1..=10u16 {
        assert_eq!(
            &c.recv_publish_ack().payload[..],
            &n.to_be_bytes(),
            "oldest kept"
        );
    }
    c.expect_nothing();
    assert_eq!(
        broker
            .stats()
            .dropped_queued
            .load(std::sync::atomic::Ordering::Relaxed),
        40
    );
}

/// Session expiry discards an abandoned persistent session (expiry is a timer: the test
/// waits past it on a quiet connection, then checks).
#[test]
fn session_expiry_discards_abandoned_session() {
    let broker = start_with(|c| c.session_expiry_secs = 1);
    let (mut c, _) = Client::connect_session(broker.local_addr(), "expiring", false);
    c.subscribe(&[("e", QoS::AtLeastOnce)]);
    c.disconnect();
    let mut idle = Client::connect(broker.local_addr(), "expiring-idle");
    assert!(
        idle.recv_within(std::time::Duration::from_millis(1600))
            .is_none()
    );
    let (_, present) = Client::connect_session(broker.local_addr(), "expiring", false);
    assert!(!present, "expired session was discarded");
}

/// [MQTT-3.1.4-2] [MQTT-4.4.0-1] a takeover by a persistent reconnect moves the session with
/// its inflight state: unacked messages are re-sent on the new connection, none lost.
#[test]
fn v311_mqtt_3_1_4_2_takeover_keeps_inflight_state() {
    let broker = start();
    let (mut old, _) = Client::connect_session(broker.local_addr(), "mover", false);
    old.subscribe(&[("mv", QoS::AtLeastOnce)]);
    let mut p = Client::connect(broker.local_addr(), "mover-pub");
    p.publish("mv", b"1", QoS::AtLeastOnce, false, 1);
    let first = old.recv_publish();
    let (mut new, present) = Client::connect_session(broker.local_addr(), "mover", false);
    assert!(present);
    assert!(old.closed_within(WAIT, true), "old connection closed");
    let again = new.recv_publish();
    assert!(again.dup);
    assert_eq!(again.qos.packet_id(), first.qos.packet_id());
    new.send(&Packet::PubAck(vireo_codec::Ack::new(
        again.qos.packet_id().unwrap(),
    )));
    p.publish("mv", b"2", QoS::AtLeastOnce, false, 2);
    assert_eq!(&new.recv_publish_ack().payload[..], b"2");
    new.expect_nothing();
}

/// [MQTT-4.4.0-1] [MQTT-3.3.1-1] 1,000 QoS 1 and 1,000 QoS 2 messages to a persistent
/// subscriber whose connection is killed mid-flight (200 read and acknowledged, 100 read and
/// not, more sent but unread in the socket): after reconnecting, every message of each stream
/// reaches the client, in order, and no DUP=1 re-send repeats a message it had acknowledged.
#[test]
fn v311_mqtt_4_4_0_1_killed_mid_flight_nothing_lost() {
    let broker = start();
    let (mut c, _) = Client::connect_session(broker.local_addr(), "killed", false);
    c.subscribe(&[("k/1", QoS::AtLeastOnce), ("k/2", QoS::ExactlyOnce)]);
    let mut p = Client::connect(broker.local_addr(), "killed-pub");
    for n in 1..=1000u16 {
        p.publish("k/1", &n.to_be_bytes(), QoS::AtLeastOnce, false, n);
        p.publish("k/2", &n.to_be_bytes(), QoS::ExactlyOnce, false, n);
    }
    let number = |p: &vireo_codec::Publish| u16::from_be_bytes([p.payload[0], p.payload[1]]);
    // Per stream (0: QoS 1, 1: QoS 2): messages in the order first seen, and those acknowledged.
    let mut seen: [Vec<u16>; 2] = [Vec::new(), Vec::new()];
    let mut acked = std::collections::HashSet::new();
    for i in 0..300 {
        let got = if i < 200 {
            c.recv_publish_ack()
        } else {
            c.recv_publish()
        };
        let stream = usize::from(got.topic.as_str() == "k/2");
        seen[stream].push(number(&got));
        if i < 200 {
            acked.insert((stream, number(&got)));
        }
    }
    c.drop_connection();
    let (mut c, present) = Client::connect_session(broker.local_addr(), "killed", false);
    assert!(present);
    while seen[0].len() < 1000 || seen[1].len() < 1000 {
        let got = c.recv_publish_ack();
        let (stream, n) = (usize::from(got.topic.as_str() == "k/2"), number(&got));
        assert!(
            !acked.contains(&(stream, n)),
            "acknowledged message {n} sent again"
        );
        if seen[stream].contains(&n) {
            assert!(got.dup, "[MQTT-3.3.1-1] a re-send carries DUP");
        } else {
            seen[stream].push(n);
        }
        acked.insert((stream, n));
    }
    let all: Vec<u16> = (1..=1000).collect();
    assert_eq!(seen[0], all, "QoS 1: every message, in order");
    assert_eq!(seen[1], all, "QoS 2: every message, in order");
    c.expect_nothing();
}

/// Stored sessions are bounded by `max_sessions`, online and offline together: a CONNECT that
/// would create one more gets CONNACK 0x03 (server unavailable) with session present 0 and is
/// closed [MQTT-3.2.2-4] [MQTT-3.2.2-5]; resuming or replacing a stored session still works,
/// and a discarded one frees its place.
#[test]
fn max_sessions_bounds_stored_sessions() {
    let broker = start_with(|c| c.max_sessions = 2);
    let addr = broker.local_addr();
    let (a, _) = Client::connect_session(addr, "ms-a", false);
    a.disconnect(); // offline, stored
    let (_b, _) = Client::connect_session(addr, "ms-b", false);
    assert_eq!(broker.stats().sessions.load(Ordering::Relaxed), 2);

    let (mut c, ack) = Client::connect_with(addr, Connect::new("ms-c"));
    match ack {
        Packet::ConnAck(a) => {
            assert_eq!(a.code.0, 0x03, "server unavailable");
            assert!(!a.session_present, "[MQTT-3.2.2-4]");
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
    assert!(c.closed_within(WAIT, false), "[MQTT-3.2.2-5]");

    // Resuming the stored session needs no new place.
    let (a, present) = Client::connect_session(addr, "ms-a", false);
    assert!(present);
    // A clean session replacing it neither; it ends with its connection.
    a.disconnect();
    let a = Client::connect(addr, "ms-a");
    a.disconnect();
    assert_eq!(broker.stats().sessions.load(Ordering::Relaxed), 1);
    Client::connect(addr, "ms-c");
}
