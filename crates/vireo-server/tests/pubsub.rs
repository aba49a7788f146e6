//! MQTT 3.1.1 PUBLISH / SUBSCRIBE / UNSUBSCRIBE routing from raw sockets.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use vireo_codec::{Packet, QoS, QosPid};

/// [MQTT-3.3.4-1] QoS 1 publish gets PUBACK with its id; [MQTT-2.3.1-6] `40 02 12 34`.
#[test]
fn v311_mqtt_2_3_1_6_puback_echoes_id() {
    let broker = start();
    let mut c = Client::connect(broker.local_addr(), "acker");
    c.send_raw(&[0x32, 0x07, 0x00, 0x01, b't', 0x12, 0x34, b'h', b'i']);
    let mut got = [0u8; 4];
    std::io::Read::read_exact(&mut c.stream, &mut got).unwrap();
    assert_eq!(got, [0x40, 0x02, 0x12, 0x34], "[MQTT-2.3.1-6]");
}

/// [MQTT-2.3.1-7] [MQTT-3.8.4-2] SUBACK echoes `BE EF`; [MQTT-3.10.4-4] UNSUBACK `B0 02 00 4D`.
#[test]
fn v311_mqtt_2_3_1_7_suback_unsuback_ids() {
    let broker = start();
    let mut c = Client::connect(broker.local_addr(), "ids");
    c.send_raw(&[0x82, 0x06, 0xBE, 0xEF, 0x00, 0x01, b'x', 0x01]);
    let mut got = [0u8; 5];
    std::io::Read::read_exact(&mut c.stream, &mut got).unwrap();
    assert_eq!(got, [0x90, 0x03, 0xBE, 0xEF, 0x01], "[MQTT-2.3.1-7]");
    c.send_raw(&[0xA2, 0x05, 0x00, 0x4D, 0x00, 0x01, b'x']);
    let mut got = [0u8; 4];
    std::io::Read::read_exact(&mut c.stream, &mut got).unwrap();
    assert_eq!(got, [0xB0, 0x02, 0x00, 0x4D], "[MQTT-3.10.4-4]");
}

/// [MQTT-3.8.4-6] delivered QoS = min(published, granted), for every pair.
#[test]
fn v311_mqtt_3_8_4_6_qos_matrix() {
    let broker = start();
    let levels = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];
    let mut publisher = Client::connect(broker.local_addr(), "matrix-pub");
    for (gi, granted) in levels.into_iter().enumerate() {
        let mut sub = Client::connect(broker.local_addr(), &format!("matrix-sub-{gi}"));
        assert_eq!(sub.subscribe(&[("m", granted)]), vec![granted as u8]);
        for (pi, published) in levels.into_iter().enumerate() {
            publisher.publish("m", b"x", published, false, (gi * 3 + pi + 1) as u16);
            let p = sub.recv_publish_ack();
            assert_eq!(
                p.qos(),
                published.min(granted),
                "[MQTT-3.8.4-6] p={published:?} g={granted:?}"
            );
            if p.qos() == QoS::AtMostOnce {
                assert!(!p.dup, "[MQTT-3.3.1-2] [MQTT-4.3.1-1] QoS 0 has DUP 0");
            }
        }
    }
}

/// [MQTT-3.3.5-1] overlapping subscriptions: delivered once, at the highest granted QoS.
#[test]
fn v311_mqtt_3_3_5_1_overlap_highest_qos_once() {
    let broker = start();
    let mut s = Client::connect(broker.local_addr(), "overlap");
    s.subscribe(&[
        ("a/#", QoS::AtMostOnce),
        ("a/b", QoS::ExactlyOnce),
        ("a/+", QoS::AtLeastOnce),
    ]);
    let mut p = Client::connect(broker.local_addr(), "overlap-pub");
    p.publish("a/b", b"one", QoS::ExactlyOnce, false, 1);
    let got = s.recv_publish_ack();
    assert_eq!(got.qos(), QoS::ExactlyOnce, "[MQTT-3.3.5-1]");
    s.expect_nothing();
}

/// [MQTT-3.3.2-3] only matching topics delivered, topic bytes verbatim.
#[test]
fn v311_mqtt_3_3_2_3_only_matching_topics() {
    let broker = start();
    let mut s = Client::connect(broker.local_addr(), "matcher");
    s.subscribe(&[("s/+/t", QoS::AtMostOnce)]);
    let mut p = Client::connect(broker.local_addr(), "matcher-pub");
    for t in ["s/1/2/t", "s/t", "s/1/t"] {
        p.publish(t, t.as_bytes(), QoS::AtMostOnce, false, 0);
    }
    assert_eq!(s.recv_publish().topic.as_str(), "s/1/t", "[MQTT-3.3.2-3]");
    s.expect_nothing();
}

/// [MQTT-4.7.2-1] `#` and `+/x` do not match `$` topics; `$foo/#` does.
#[test]
fn v311_mqtt_4_7_2_1_dollar_topics() {
    let broker = start();
    let mut wild = Client::connect(broker.local_addr(), "wild");
    wild.subscribe(&[("#", QoS::AtMostOnce), ("+/x", QoS::AtMostOnce)]);
    let mut dollar = Client::connect(broker.local_addr(), "dollar");
    dollar.subscribe(&[("$foo/#", QoS::AtMostOnce)]);
    let mut p = Client::connect(broker.local_addr(), "dollar-pub");
    p.publish("$foo/x", b"d", QoS::AtMostOnce, false, 0);
    assert_eq!(
        dollar.recv_publish().topic.as_str(),
        "$foo/x",
        "[MQTT-4.7.2-1]"
    );
    wild.expect_nothing();
}

/// [MQTT-1.5.3-3] a BOM is kept in topic names; [MQTT-4.7.3-4] matching is byte-exact.
#[test]
fn v311_mqtt_4_7_3_4_exact_bytes() {
    let broker = start();
    let mut s = Client::connect(broker.local_addr(), "exact");
    s.subscribe(&[
        ("caf\u{e9}", QoS::AtMostOnce),
        ("\u{feff}t", QoS::AtMostOnce),
    ]);
    let mut p = Client::connect(broker.local_addr(), "exact-pub");
    p.publish("cafe\u{301}", b"nfd", QoS::AtMostOnce, false, 0);
    p.publish("CAF\u{c9}", b"upper", QoS::AtMostOnce, false, 0);
    p.publish("t", b"nobom", QoS::AtMostOnce, false, 0);
    p.publish("\u{feff}t", b"bom", QoS::AtMostOnce, false, 0);
    p.publish("caf\u{e9}", b"nfc", QoS::AtMostOnce, false, 0);
    let a = s.recv_publish();
    assert_eq!(a.topic.as_bytes(), "\u{feff}t".as_bytes(), "[MQTT-1.5.3-3]");
    assert_eq!(&s.recv_publish().payload[..], b"nfc", "[MQTT-4.7.3-4]");
    s.expect_nothing();
}

/// [MQTT-4.7.1-1] [MQTT-3.3.2-2] a PUBLISH to a wildcard topic closes; nothing delivered.
#[test]
fn v311_mqtt_3_3_2_2_wildcard_topic_name_closes() {
    let broker = start();
    let mut s = Client::connect(broker.local_addr(), "wc-sub");
    s.subscribe(&[("#", QoS::AtMostOnce)]);
    let mut c = Client::connect(broker.local_addr(), "wc-pub");
    c.send_raw(&[0x30, 0x05, 0x00, 0x03, b'a', b'/', b'#']);
    assert!(c.closed_silently(), "[MQTT-3.3.2-2]");
    s.expect_nothing();
}

/// [MQTT-3.3.1-4] QoS 3 closes; [MQTT-2.3.1-1] packet id 0 closes; [MQTT-1.5.3-2] U+0000.
#[test]
fn v311_mqtt_3_3_1_4_malformed_publishes_close() {
    let broker = start();
    let mut s = Client::connect(broker.local_addr(), "bad-sub");
    s.subscribe(&[("#", QoS::AtMostOnce)]);
    let cases: [&[u8]; 5] = [
        &[0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01], // QoS 3 [MQTT-3.3.1-4]
        &[0x32, 0x05, 0x00, 0x01, b'a', 0x00, 0x00], // packet id 0 [MQTT-2.3.1-1]
        &[0x30, 0x05, 0x00, 0x03, b'a', 0x00, b'b'], // U+0000 [MQTT-1.5.3-2]
        &[0x30, 0x04, 0x00, 0x02, 0xC3, 0x28],       // ill-formed UTF-8 [MQTT-3.3.2-1]
        &[0x30, 0x02, 0x00, 0x00],                   // empty topic [MQTT-4.7.3-1]
    ];
    for (i, bytes) in cases.into_iter().enumerate() {
        let mut c = Client::connect(broker.local_addr(), &format!("bad-{i}"));
        c.send_raw(bytes);
        assert!(c.closed_silently(), "case {i}: {bytes:02x?}");
    }
    s.expect_nothing();
}

/// [MQTT-3.8.4-5] [MQTT-3.9.3-1] [MQTT-3.9.3-2] invalid filters get 0x80, in order;
/// [MQTT-3.8.4-4] one SUBACK for a multi-filter SUBSCRIBE;
/// [MQTT-4.7.1-2] [MQTT-4.7.1-3] bad wildcard use refused.
#[test]
fn v311_mqtt_3_9_3_1_suback_codes_in_order() {
    let broker = start();
    let mut c = Client::connect(broker.local_addr(), "codes");
    let codes = c.subscribe(&[
        ("x", QoS::ExactlyOnce),
        ("y/#/z", QoS::AtMostOnce),
        ("w", QoS::AtLeastOnce),
        ("a+", QoS::AtMostOnce),
        ("#/", QoS::AtMostOnce),
        ("+/+", QoS::AtMostOnce),
    ]);
    assert_eq!(codes, vec![2, 0x80, 1, 0x80, 0x80, 0], "[MQTT-3.9.3-1]");
}

/// [MQTT-3.8.3-3] empty SUBSCRIBE closes; [MQTT-3.8.3-4] requested QoS 3 closes;
/// [MQTT-3.8.1-1] wrong SUBSCRIBE flags close.
#[test]
fn v311_mqtt_3_8_3_3_malformed_subscribes_close() {
    let broker = start();
    let cases: [&[u8]; 4] = [
        &[0x82, 0x02, 0x00, 0x01], // no filter [MQTT-3.8.3-3]
        &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x03], // QoS 3 [MQTT-3.8.3-4]
        &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x41], // reserved bits [MQTT-3.8.3-4]
        &[0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00], // flags 0000 [MQTT-3.8.1-1]
    ];
    for (i, bytes) in cases.into_iter().enumerate() {
        let mut c = Client::connect(broker.local_addr(), &format!("badsub-{i}"));
        c.send_raw(bytes);
        assert!(c.closed_silently(), "case {i}");
    }
}

/// [MQTT-4.7.3-1] a CONNECT and a SUBSCRIBE with an empty filter in one write: the CONNACK
/// the broker already owes is sent before the close, as Mosquitto does, so the client learns
/// it was accepted and that the SUBSCRIBE is what broke the connection.
#[test]
fn v311_mqtt_4_7_3_1_connack_flushed_before_close_in_same_read() {
    let broker = start();
    let mut r = Raw::open(broker.local_addr());
    let mut bytes = vec![
        0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x00,
    ];
    bytes.extend([0x82, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00]); // empty filter
    r.send_raw(&bytes);
    assert_eq!(r.frame(), [0x20, 0x02, 0x00, 0x00], "CONNACK first");
    assert!(r.closed(), "[MQTT-4.7.3-1] then the close, no SUBACK");
}

/// [MQTT-3.10.3-2] empty UNSUBSCRIBE closes; [MQTT-3.10.1-1] wrong flags close.
#[test]
fn v311_mqtt_3_10_3_2_malformed_unsubscribes_close() {
    let broker = start();
    for (i, bytes) in [
        &[0xA2u8, 0x02, 0x00, 0x01][..],
        &[0xA0, 0x05, 0x00, 0x01, 0x00, 0x01, b'a'],
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = Client::connect(broker.local_addr(), &format!("badunsub-{i}"));
        c.send_raw(bytes);
        assert!(
            c.closed_silently(),
            "case {i} [MQTT-3.10.3-2] [MQTT-3.10.1-1]"
        );
    }
}

/// [MQTT-3.10.4-1] literal unsubscribe; [MQTT-3.10.4-2] no delivery after; [MQTT-3.10.4-5]
/// UNSUBACK even when nothing matched; [MQTT-3.10.4-6] multi-filter, one UNSUBACK.
#[test]
fn v311_mqtt_3_10_4_1_unsubscribe_is_literal() {
    let broker = start();
    let mut s = Client::connect(broker.local_addr(), "unsub");
    s.subscribe(&[
        ("a/b", QoS::AtMostOnce),
        ("a/+", QoS::AtMostOnce),
        ("x", QoS::AtMostOnce),
        ("y", QoS::AtMostOnce),
    ]);
    let mut p = Client::connect(broker.local_addr(), "unsub-pub");
    s.unsubscribe(2, &["a/#"]); // removes nothing [MQTT-3.10.4-5]
    s.unsubscribe(3, &["a/+"]);
    p.publish("a/b", b"still", QoS::AtMostOnce, false, 0);
    assert_eq!(
        &s.recv_publish().payload[..],
        b"still",
        "[MQTT-3.10.4-1] via a/b"
    );
    s.unsubscribe(4, &["a/b", "x", "y"]);
    for t in ["a/b", "x", "y"] {
        p.publish(t, b"gone", QoS::AtMostOnce, false, 0);
    }
    s.expect_nothing(); // [MQTT-3.10.4-2] [MQTT-3.10.4-6]
}

/// [MQTT-3.8.4-3] re-subscribing replaces the QoS; no duplicate subscription.
#[test]
fn v311_mqtt_3_8_4_3_resubscribe_replaces() {
    let broker = start();
    let mut s = Client::connect(broker.local_addr(), "resub");
    s.subscribe(&[("t", QoS::AtMostOnce)]);
    s.subscribe_id(2, &[("t", QoS::ExactlyOnce)]);
    let mut p = Client::connect(broker.local_addr(), "resub-pub");
    p.publish("t", b"q2", QoS::ExactlyOnce, false, 1);
    assert_eq!(
        s.recv_publish_ack().qos(),
        QoS::ExactlyOnce,
        "[MQTT-3.8.4-3]"
    );
    s.expect_nothing();
}

/// [MQTT-4.6.0-6] [MQTT-4.6.0-5] with the default configuration, one publisher's QoS 0, 1 and 2
/// messages arrive in order;
/// [MQTT-4.6.0-2] PUBACKs come back in publish order.
#[test]
fn v311_mqtt_4_6_0_6_ordering_per_publisher() {
    let broker = start();
    let mut s = Client::connect(broker.local_addr(), "order-sub");
    s.subscribe(&[("o/#", QoS::ExactlyOnce)]);
    let mut p = Client::connect(broker.local_addr(), "order-pub");
    for (qi, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        let t = format!("o/{qi}");
        for n in 1..=200u16 {
            p.publish(&t, &n.to_be_bytes(), qos, false, n);
        }
        for n in 1..=200u16 {
            let got = s.recv_publish_ack();
            assert_eq!(&got.payload[..], &n.to_be_bytes(), "[MQTT-4.6.0-6] {qos:?}");
        }
    }
    // Pipelined QoS 1: PUBACKs in order.
    for n in 1..=10u16 {
        p.send(&Packet::Publish(vireo_codec::Publish {
            dup: false,
            qos: QosPid::AtLeastOnce(pid(n)),
            retain: false,
            topic: topic("o/p"),
            properties: Default::default(),
            payload: Default::default(),
        }));
    }
    for n in 1..=10u16 {
        assert!(
            matches!(p.recv(), Some(Packet::PubAck(a)) if a.packet_id == pid(n)),
            "[MQTT-4.6.0-2]"
        );
    }
}

/// [MQTT-4.3.2-2] a QoS 1 id reused (even with DUP) after its PUBACK is a new message.
#[test]
fn v311_mqtt_4_3_2_2_qos1_id_reuse_is_new_message() {
    let broker = start();
    let mut s = Client::connect(broker.local_addr(), "q1-sub");
    s.subscribe(&[("q1", QoS::AtLeastOnce)]);
    let mut p = Client::connect(broker.local_addr(), "q1-pub");
    p.publish("q1", b"first", QoS::AtLeastOnce, false, 5);
    p.send_raw(&[
        0x3A, 0x0A, 0x00, 0x02, b'q', b'1', 0x00, 0x05, b'a', b'g', b'a', b'i',
    ]);
    assert!(matches!(p.recv(), Some(Packet::PubAck(a)) if a.packet_id == pid(5)));
    let a = s.recv_publish_ack();
    let b = s.recv_publish_ack();
    assert_eq!(
        (&a.payload[..], &b.payload[..]),
        (&b"first"[..], &b"agai"[..]),
        "[MQTT-4.3.2-2]"
    );
    // [MQTT-3.3.1-3] the incoming DUP is not copied to the subscriber's first copy.
    assert!(!b.dup, "[MQTT-3.3.1-3]");
}

/// [MQTT-2.3.1-5] a QoS 0 delivery has no packet id: remaining length = 2 + topic + payload.
#[test]
fn v311_mqtt_2_3_1_5_qos0_delivery_has_no_packet_id() {
    let broker = start();
    let mut s = Client::connect(broker.local_addr(), "q0len");
    s.subscribe(&[("kfb_topic", QoS::AtMostOnce)]);
    let mut p = Client::connect(broker.local_addr(), "q0len-pub");
    // The QoS 0 PUBLISH from the seeds.
    p.send_raw(&[
        0x30, 0x0E, 0x00, 0x09, 0x6B, 0x66, 0x62, 0x5F, 0x74, 0x6F, 0x70, 0x69, 0x63, 0x31, 0x32,
        0x33,
    ]);
    let mut got = [0u8; 16];
    std::io::Read::read_exact(&mut s.stream, &mut got).unwrap();
    assert_eq!(
        got,
        [
            0x30, 0x0E, 0x00, 0x09, 0x6B, 0x66, 0x62, 0x5F, 0x74, 0x6F, 0x70, 0x69, 0x63, 0x31,
            0x32, 0x33
        ],
        "[MQTT-2.3.1-5]"
    );
}

/// Packets over the configured maximum close the connection, detected from the header.
#[test]
fn oversized_packet_closes_connection() {
    let broker = start_with(|c| c.max_packet_size = 1024);
    let mut c = Client::connect(broker.local_addr(), "big");
    // Header announcing 1 MiB; only the header is sent.
    c.send_raw(&[0x30, 0x80, 0x80, 0x40]);
    assert!(c.closed_silently());
}

/// Subscriptions per client are bounded: past the limit a filter gets 0x80.
#[test]
fn max_subscriptions_enforced() {
    let broker = start_with(|c| c.max_subscriptions = 2);
    let mut c = Client::connect(broker.local_addr(), "many");
    let codes = c.subscribe(&[
        ("a", QoS::AtMostOnce),
        ("b", QoS::AtMostOnce),
        ("c", QoS::AtMostOnce),
        ("a", QoS::AtLeastOnce),
    ]);
    assert_eq!(codes, vec![0, 0, 0x80, 1]);
}

/// Granted QoS is capped by the configured maximum.
#[test]
fn max_qos_caps_granted_qos() {
    let broker = start_with(|c| c.max_qos = 1);
    let mut c = Client::connect(broker.local_addr(), "capped");
    assert_eq!(c.subscribe(&[("a", QoS::ExactlyOnce)]), vec![1]);
}

/// [MQTT-3.8.3-2] with wildcard subscriptions switched off, a wildcard filter gets 0x80.
#[test]
fn v311_mqtt_3_8_3_2_wildcards_switched_off() {
    let broker = start_with(|c| c.wildcard_subscriptions = false);
    let mut c = Client::connect(broker.local_addr(), "nowild");
    assert_eq!(
        c.subscribe(&[
            ("a/+", QoS::AtMostOnce),
            ("a/b", QoS::AtMostOnce),
            ("#", QoS::AtMostOnce)
        ]),
        vec![0x80, 0, 0x80]
    );
}

/// [MQTT-4.1.0-2] a clean session lasts as long as its connection: still receiving after
/// several keep-alive periods.
#[test]
fn v311_mqtt_4_1_0_2_session_lasts_with_connection() {
    let broker = start();
    let mut connect = vireo_codec::Connect::new("long-lived");
    connect.keep_alive = 1;
    let (mut c, _) = Client::connect_with(broker.local_addr(), connect);
    c.subscribe(&[("ll", QoS::AtMostOnce)]);
    let mut p = Client::connect(broker.local_addr(), "long-lived-pub");
    for round in 0..4u8 {
        // Each round spans most of a keep-alive period; the PINGREQ keeps the link alive.
        assert!(
            c.recv_within(std::time::Duration::from_millis(700))
                .is_none()
        );
        c.send_raw(&[0xC0, 0x00]);
        assert_eq!(c.recv(), Some(Packet::PingResp));
        p.publish("ll", &[round], QoS::AtMostOnce, false, 0);
        assert_eq!(&c.recv_publish().payload[..], &[round]);
    }
}

/// One burst mixing QoS 0 frames (shared per worker), small QoS 1 PUBLISHes (copied whole
/// into the connection's scratch buffer) and large ones (header plus shared payload) reaches
/// the subscriber byte-exact and in order per topic and QoS [MQTT-4.6.0-5], and the
/// publisher's PUBACKs come back in order [MQTT-4.6.0-2]: the queue that interleaves the three
/// kinds of output keeps every byte where it belongs.
#[test]
fn mixed_qos_and_sizes_in_one_burst_arrive_intact() {
    let broker = start();
    let mut sub = Client::connect(broker.local_addr(), "mix-sub");
    sub.subscribe(&[("mix/0", QoS::AtMostOnce), ("mix/1", QoS::AtLeastOnce)]);
    let mut publisher = Client::connect(broker.local_addr(), "mix-pub");
    let sizes = [0usize, 10, 255, 256, 257, 300, 5000];
    let payload = |i: usize| -> Vec<u8> {
        (0..sizes[i % sizes.len()])
            .map(|b| (i * 7 + b) as u8)
            .collect()
    };
    let count = 70;
    let mut burst = bytes::BytesMut::new();
    for i in 0..count {
        let qos = if i % 3 == 0 { 0 } else { 1 };
        let p = vireo_codec::Publish {
            dup: false,
            qos: QosPid::new(
                if qos == 0 {
                    QoS::AtMostOnce
                } else {
                    QoS::AtLeastOnce
                },
                pid(i as u16 + 1),
            ),
            retain: false,
            topic: topic(&format!("mix/{qos}")),
            properties: Default::default(),
            payload: bytes::Bytes::from(payload(i)),
        };
        Packet::Publish(p)
            .encode(vireo_codec::ProtocolVersion::V311, &mut burst)
            .unwrap();
    }
    publisher.send_raw(&burst);
    for i in (0..count).filter(|i| i % 3 != 0) {
        match publisher.recv() {
            Some(Packet::PubAck(a)) => assert_eq!(a.packet_id, pid(i as u16 + 1), "[MQTT-4.6.0-2]"),
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    let mut next = [0usize, 1]; // next expected index per topic
    for _ in 0..count {
        let p = sub.recv_publish_ack();
        let q = usize::from(&*p.topic == "mix/1");
        let i = next[q];
        assert_eq!(
            p.qos(),
            if q == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            }
        );
        assert_eq!(
            &p.payload[..],
            &payload(i)[..],
            "message {i} on {}",
            &*p.topic
        );
        next[q] = (i + 1..).find(|j| usize::from(j % 3 != 0) == q).unwrap();
    }
    sub.expect_nothing();
}
