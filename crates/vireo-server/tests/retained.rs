//! MQTT 3.1.1 retained messages.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use vireo_codec::{Packet, QoS};

/// [MQTT-3.3.1-5] stored with its QoS; [MQTT-3.3.1-8] sent with RETAIN=1 on subscribe;
/// [MQTT-3.1.2-7] it outlives the publisher's session.
#[test]
fn v311_mqtt_3_3_1_5_retained_stored_and_sent_on_subscribe() {
    let broker = start();
    let mut p = Client::connect(broker.local_addr(), "ret-pub");
    p.publish("r", b"kept", QoS::AtLeastOnce, true, 1);
    p.disconnect();
    let mut s = Client::connect(broker.local_addr(), "ret-sub");
    s.subscribe(&[("r", QoS::ExactlyOnce)]);
    let got = s.recv_publish_ack();
    assert!(got.retain, "[MQTT-3.3.1-8]");
    assert_eq!(
        got.qos(),
        QoS::AtLeastOnce,
        "[MQTT-3.3.1-5] min(stored, granted)"
    );
    assert_eq!(&got.payload[..], b"kept", "[MQTT-3.1.2-7]");
}

/// [MQTT-3.3.1-9] live forwarding clears RETAIN.
#[test]
fn v311_mqtt_3_3_1_9_forwarded_retain_cleared() {
    let broker = start();
    let mut s = Client::connect(broker.local_addr(), "live");
    s.subscribe(&[("l", QoS::AtMostOnce)]);
    let mut p = Client::connect(broker.local_addr(), "live-pub");
    p.publish("l", b"x", QoS::AtMostOnce, true, 0);
    assert!(!s.recv_publish().retain, "[MQTT-3.3.1-9]");
}

/// [MQTT-3.3.1-6] a wildcard subscription gets every matching retained message.
#[test]
fn v311_mqtt_3_3_1_6_wildcard_gets_all_retained() {
    let broker = start();
    let mut p = Client::connect(broker.local_addr(), "wr-pub");
    p.publish("a/1", b"one", QoS::AtMostOnce, true, 0);
    p.publish("a/2", b"two", QoS::AtMostOnce, true, 0);
    p.publish("b/1", b"other", QoS::AtMostOnce, true, 0);
    p.send_raw(&[0xC0, 0x00]); // PINGRESP proves the publishes were processed
    assert!(p.recv().is_some());
    let mut s = Client::connect(broker.local_addr(), "wr-sub");
    s.subscribe(&[("a/+", QoS::AtMostOnce)]);
    let mut got: Vec<_> = (0..2)
        .map(|_| s.recv_publish())
        .map(|p| (p.retain, p.payload))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![(true, "one".into()), (true, "two".into())],
        "[MQTT-3.3.1-6]"
    );
    s.expect_nothing();
}

/// [MQTT-3.3.1-7] replace; [MQTT-3.3.1-12] RETAIN=0 does not replace; [MQTT-3.3.1-10]
/// empty payload deletes and is forwarded; [MQTT-3.3.1-11] empty is never stored.
#[test]
fn v311_mqtt_3_3_1_10_replace_keep_delete() {
    let broker = start();
    let mut p = Client::connect(broker.local_addr(), "rd-pub");
    p.publish("t", b"old", QoS::AtLeastOnce, true, 1);
    p.publish("t", b"new", QoS::AtMostOnce, true, 0);
    p.publish("t", b"plain", QoS::AtLeastOnce, false, 2);
    let mut s = Client::connect(broker.local_addr(), "rd-sub1");
    s.subscribe(&[("t", QoS::AtLeastOnce)]);
    assert_eq!(
        &s.recv_publish_ack().payload[..],
        b"new",
        "[MQTT-3.3.1-7] [MQTT-3.3.1-12]"
    );
    p.publish("t", b"", QoS::AtLeastOnce, true, 3);
    let live = s.recv_publish_ack();
    assert!(
        live.payload.is_empty(),
        "[MQTT-3.3.1-10] forwarded as usual"
    );
    let mut s2 = Client::connect(broker.local_addr(), "rd-sub2");
    s2.subscribe(&[("t", QoS::AtLeastOnce)]);
    s2.expect_nothing();
    p.publish("never", b"", QoS::AtMostOnce, true, 0);
    let mut s3 = Client::connect(broker.local_addr(), "rd-sub3");
    s3.subscribe(&[("never", QoS::AtMostOnce)]);
    s3.expect_nothing(); // [MQTT-3.3.1-11]
}

/// [MQTT-3.8.4-3] re-subscribing re-sends matching retained messages.
#[test]
fn v311_mqtt_3_8_4_3_resubscribe_resends_retained() {
    let broker = start();
    let mut p = Client::connect(broker.local_addr(), "rr-pub");
    p.publish("rr", b"again", QoS::AtMostOnce, true, 0);
    // A QoS 0 PUBLISH gets no ack: the PINGRESP after it says the broker has stored it, so
    // the SUBSCRIBE below cannot overtake it (it did on a loaded machine).
    p.send_raw(&[0xC0, 0x00]);
    assert!(matches!(p.recv(), Some(Packet::PingResp)));
    let mut s = Client::connect(broker.local_addr(), "rr-sub");
    s.subscribe(&[("rr", QoS::AtMostOnce)]);
    assert!(s.recv_publish().retain);
    s.subscribe_id(2, &[("rr", QoS::AtLeastOnce)]);
    assert!(s.recv_publish().retain, "[MQTT-3.8.4-3]");
}

/// 100,000 retained messages reach one slow `#` subscriber whole: paced by the output limit,
/// not dropped.
#[test]
fn many_retained_to_slow_wildcard_subscriber_arrive_whole() {
    const N: usize = 100_000;
    let broker = start_with(|c| c.max_output_bytes = 64 * 1024);
    let mut p = Client::connect(broker.local_addr(), "bulk-pub");
    let mut bytes = Vec::with_capacity(N * 16);
    for i in 0..N {
        let t = format!("bulk/{i}");
        bytes.extend_from_slice(&[0x31, (2 + t.len() + 1) as u8, 0, t.len() as u8]);
        bytes.extend_from_slice(t.as_bytes());
        bytes.push(b'x');
    }
    p.send_raw(&bytes);
    p.send_raw(&[0xC0, 0x00]);
    assert!(p.recv().is_some(), "all retained publishes processed");
    let mut s = Client::connect(broker.local_addr(), "bulk-sub");
    s.subscribe(&[("bulk/#", QoS::AtMostOnce)]);
    let mut seen = vec![false; N];
    for _ in 0..N {
        let got = s.recv_publish();
        assert!(got.retain);
        let i: usize = got.topic.as_str()[5..].parse().unwrap();
        seen[i] = true;
    }
    assert!(seen.iter().all(|&b| b), "every retained message arrived");
    s.expect_nothing();
}

/// A retained message too large for the session's `max_queued_bytes` is dropped on its own:
/// the retained messages owed after it still go out at once, not at the client's next
/// packet (found by the protocol core's sequence fuzzer).
#[test]
fn retained_message_too_large_to_queue_does_not_hold_back_the_rest() {
    let broker = start_with(|c| c.max_queued_bytes = 60);
    let addr = broker.local_addr();
    let mut p = Client::connect(addr, "ret-pub");
    // Large ones on every side of the small one, whatever order the store hands them out in.
    for (i, t) in ["a", "a/a", "a/b", "a/d", "a/e", "a/f"]
        .into_iter()
        .enumerate()
    {
        p.publish(t, &[b'x'; 100], QoS::AtLeastOnce, true, 1 + i as u16);
    }
    p.publish("a/c", b"small", QoS::AtLeastOnce, true, 10);
    let mut s = Client::connect(addr, "ret-sub");
    s.subscribe(&[("a/#", QoS::AtLeastOnce)]);
    assert_eq!(&*s.recv_publish_ack().topic, "a/c");
    s.expect_nothing();
}

/// Retained messages a SUBSCRIBE still owed when a persistent subscriber's connection went
/// belong to its session: once it reconnects it gets every one of them (those in flight
/// again, the rest from its queue), none lost. With a window of 10, 90 of the 100 were
/// still owed when the connection dropped.
#[test]
fn retained_owed_to_a_persistent_session_survive_its_disconnect() {
    let broker = start_with(|c| c.max_inflight = 10);
    let addr = broker.local_addr();
    let mut p = Client::connect(addr, "ret-pub");
    for i in 0..100u16 {
        p.publish(&format!("r/{i}"), b"kept", QoS::AtLeastOnce, true, i + 1);
    }
    let (mut s, _) = Client::connect_session(addr, "keeper", false);
    s.subscribe(&[("r/#", QoS::AtLeastOnce)]);
    s.drop_connection();
    let (mut s, present) = Client::connect_session(addr, "keeper", false);
    assert!(present);
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 100 {
        let p = s.recv_publish_ack();
        assert!(p.retain, "{:?} sent as retained", p.topic);
        seen.insert(p.topic.to_string());
    }
    s.expect_nothing();
}

/// The retained messages a SUBSCRIBE is owed are those retained when it was made
/// [MQTT-3.3.1-6], taken from the store a batch at a time as the subscriber reads: a topic
/// retained or replaced while the walk is under way reaches the subscriber once, live, not a
/// second time from the walk.
#[test]
fn v311_a_retained_walk_is_as_of_the_subscribe() {
    const N: u16 = 2000;
    let broker = start_with(|c| c.max_output_bytes = 4 * 1024);
    let addr = broker.local_addr();
    let mut p = Client::connect(addr, "walk-pub");
    for i in 0..N {
        p.publish(&format!("w/{i:04}"), b"old", QoS::AtLeastOnce, true, i + 1);
    }
    let mut s = Client::connect(addr, "walk-sub");
    s.subscribe(&[("w/#", QoS::AtLeastOnce)]);
    // The subscriber reads nothing yet: the walk waits on its output, far from the end.
    p.publish("w/1999", b"new", QoS::AtLeastOnce, true, 1);
    p.publish("w/zzzz", b"new", QoS::AtLeastOnce, true, 2);
    let mut seen: std::collections::HashMap<String, Vec<(bool, Vec<u8>)>> = Default::default();
    for _ in 0..N + 1 {
        let m = s.recv_publish_ack();
        seen.entry(m.topic.to_string())
            .or_default()
            .push((m.retain, m.payload.to_vec()));
    }
    s.expect_nothing();
    assert_eq!(seen.len(), usize::from(N) + 1, "every topic");
    assert_eq!(
        seen["w/1999"],
        [(false, b"new".to_vec())],
        "replaced during the walk: once, live"
    );
    assert_eq!(
        seen["w/zzzz"],
        [(false, b"new".to_vec())],
        "new during the walk: once, live"
    );
    assert_eq!(
        seen["w/0000"],
        [(true, b"old".to_vec())],
        "[MQTT-3.3.1-8] RETAIN set"
    );
}
