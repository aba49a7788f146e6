//! MQTT 5.0 from a client socket, down to the bytes: the CONNECT / CONNACK side of the spec and
//! what surrounds it.
//!
//! - 1.5 data representation: UTF-8 strings (ill-formed, U+0000, BOM, User Properties) and
//!   variable byte integers;
//! - 2 control packet format: fixed-header flags, packet identifiers, empty property blocks;
//! - 3.1 CONNECT: protocol name and level, Connect Flags, Wills, Clean Start, client ids,
//!   Topic Alias Maximum, Request Response Information, refusals and what follows them;
//! - 3.2 CONNACK: first packet, Session Present, reason codes, small Maximum Packet Size;
//! - 3.12 PINGREQ;
//! - 3.14 DISCONNECT: flags, server reason codes, small Maximum Packet Size;
//! - 3.15 AUTH and 4.12 enhanced authentication;
//! - 4 operational behaviour: session state while connected, the transport.
//!
//! Where a test checks what the broker writes, it reads raw frames ([`Raw`]) and compares
//! bytes; otherwise it uses the shared [`Client`]. Every wait has a deadline; nothing sleeps.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use vireo_codec::{
    Ack, Bytes, ConnAck, Connect, Disconnect, Packet, Properties, Property, Publish, QoS, QosPid,
    ReasonCode, Subscribe, SubscriptionOptions, Unsubscribe,
};
use vireo_server::ServerHandle;

// ---------------------------------------------------------------- helpers

/// How many sessions the broker holds.
fn sessions(broker: &ServerHandle) -> usize {
    broker.stats().sessions.load(Ordering::Relaxed)
}

/// A SUBSCRIBE of one filter with these options and an optional Subscription Identifier.
fn subscribe_packet(id: u16, filter: &str, o: SubscriptionOptions, sub_id: Option<u32>) -> Packet {
    let mut properties = Properties::new();
    if let Some(s) = sub_id {
        properties.push(Property::SubscriptionIdentifier(s));
    }
    Packet::Subscribe(Subscribe {
        packet_id: pid(id),
        properties,
        filters: vec![(filter.into(), o)],
    })
}

/// A PUBLISH without properties.
fn publish_packet(t: &str, payload: &[u8], qos: QosPid, retain: bool) -> Packet {
    let mut p = Publish::new(topic(t), Bytes::copy_from_slice(payload));
    p.qos = qos;
    p.retain = retain;
    Packet::Publish(p)
}

/// Offset just past the fixed header of a raw frame.
fn body_start(frame: &[u8]) -> usize {
    let mut i = 1;
    while frame[i] & 0x80 != 0 {
        i += 1;
    }
    i + 1
}

/// A 5.0 CONNECT for `id` with a QoS 1 Will on `will_topic`.
fn with_will(id: &str, will_topic: &str, payload: &str, retain: bool) -> Connect {
    let mut c = Client::v5(id, &[]);
    c.will = Some(will(will_topic, payload, QoS::AtLeastOnce, retain));
    c
}

/// A persistent CONNECT (Clean Start 0) naming an authentication method the broker does not
/// have.
fn with_auth_method(id: &str, extra: &[Property]) -> Connect {
    let mut props = vec![
        Property::AuthenticationMethod("SCRAM-SHA-1".into()),
        Property::SessionExpiryInterval(60),
    ];
    props.extend_from_slice(extra);
    let mut c = Client::v5(id, &props);
    c.clean_start = false;
    c
}

/// A CONNECT the broker must not accept: it may answer with a CONNACK carrying one of
/// `allowed`, and must close. Returns whether it closed.
fn refused_before_connack(c: &mut Raw, allowed: &[u8]) -> bool {
    if let Some(f) = c.frame_within(WAIT) {
        let ack = connack_of(&f);
        assert!(
            allowed.contains(&ack.code.0),
            "only a refusing CONNACK {allowed:02x?} may come: {f:02x?}"
        );
    }
    c.closed()
}

/// Asserts a refusing CONNACK frame and the close after it.
fn assert_refused(r: &mut Raw, ack: &[u8], tag: &str) -> ConnAck {
    let Packet::ConnAck(a) = parse(ack) else {
        panic!("{tag}: expected CONNACK, got {ack:02x?}")
    };
    assert!(
        CONNACK_CODES.contains(&a.code.0),
        "[MQTT-3.2.2-8] {tag}: reason {:#x} is a Connect Reason Code",
        a.code.0
    );
    assert!(a.code.0 >= 0x80, "{tag}: refused");
    assert!(
        r.eof_within(WAIT),
        "[MQTT-3.2.2-7] [MQTT-4.13.2-1] {tag}: closed after CONNACK >= 0x80"
    );
    a
}

/// Expects the broker's DISCONNECT (reason from Table 3-10) and then EOF.
fn expect_server_disconnect(c: &mut Client, tag: &str) -> u8 {
    // expect_disconnect asserts the close that follows [MQTT-3.14.4-2].
    let reason = c.expect_disconnect();
    assert!(
        SERVER_DISCONNECT_CODES.contains(&reason),
        "[MQTT-3.14.2-1] {tag}: DISCONNECT reason {reason:#x} is a server code"
    );
    reason
}

// ---------------------------------------------------------------- 1.5 data representation

/// [MQTT-1.5.4-1] ill-formed UTF-8 (an encoded surrogate, an overlong form) makes a packet
/// malformed: a CONNECT is closed without CONNACK 0x00 and leaves no session; a SUBSCRIBE or
/// PUBLISH after CONNACK gets DISCONNECT 0x81, and nothing is routed.
#[test]
fn v5_mqtt_1_5_4_1_ill_formed_utf8_is_malformed() {
    let broker = start();
    let addr = broker.local_addr();
    let mut c = Raw::open(addr);
    c.send_raw(&raw_connect(b"MQTT", 5, 0x02, &[b'c', 0xED, 0xA0, 0x80]));
    // [MQTT-1.5.4-1]
    assert!(
        refused_before_connack(&mut c, &[0x81]),
        "[MQTT-1.5.4-1] client id with a surrogate: closed"
    );
    assert_eq!(sessions(&broker), 0, "[MQTT-1.5.4-1] no session for it");

    let mut w = watcher(addr, "w", "#");
    let cases: [(&str, Vec<u8>); 3] = [
        (
            "SUBSCRIBE filter a C0 AF",
            raw_subscribe(&[b'a', 0xC0, 0xAF]),
        ),
        (
            "PUBLISH topic t ED A0 80",
            raw_publish(&[b't', 0xED, 0xA0, 0x80], &[], b"x"),
        ),
        ("PUBLISH topic t FF", raw_publish(&[b't', 0xFF], &[], b"x")),
    ];
    for (i, (what, bytes)) in cases.iter().enumerate() {
        let mut c = Client::connect_v5(addr, &format!("bad{i}"), &[]);
        c.send_raw(bytes);
        // [MQTT-1.5.4-1]
        assert_eq!(c.expect_disconnect(), 0x81, "[MQTT-1.5.4-1] {what}");
    }
    w.expect_nothing();
}

/// [MQTT-1.5.4-2] a UTF-8 string containing U+0000 is malformed: in a client id (closed, no
/// CONNACK 0x00), a topic name (DISCONNECT 0x81, nothing delivered) or a topic filter.
#[test]
fn v5_mqtt_1_5_4_2_null_character_is_malformed() {
    let broker = start();
    let addr = broker.local_addr();
    let mut c = Raw::open(addr);
    c.send_raw(&raw_connect(b"MQTT", 5, 0x02, b"a\0b"));
    // [MQTT-1.5.4-2]
    assert!(
        refused_before_connack(&mut c, &[0x81]),
        "[MQTT-1.5.4-2] client id a\\0b: closed"
    );
    assert_eq!(sessions(&broker), 0, "[MQTT-1.5.4-2] no session for it");

    let mut w = watcher(addr, "w", "#");
    let cases: [(&str, Vec<u8>); 2] = [
        ("PUBLISH topic a\\0b", raw_publish(b"a\0b", &[], b"x")),
        ("SUBSCRIBE filter a/\\0", raw_subscribe(b"a/\0")),
    ];
    for (i, (what, bytes)) in cases.iter().enumerate() {
        let mut c = Client::connect_v5(addr, &format!("nul{i}"), &[]);
        c.send_raw(bytes);
        // [MQTT-1.5.4-2]
        assert_eq!(c.expect_disconnect(), 0x81, "[MQTT-1.5.4-2] {what}");
    }
    w.expect_nothing();
}

/// [MQTT-1.5.4-3] `EF BB BF` (U+FEFF) in a topic is kept, never stripped: a message to
/// `\u{FEFF}t` reaches the filter `\u{FEFF}t` with the bytes intact, and not the filter `t`.
#[test]
fn v5_mqtt_1_5_4_3_byte_order_mark_is_kept() {
    let broker = start();
    let addr = broker.local_addr();
    let bom = "\u{FEFF}t";
    let mut with_bom = watcher(addr, "bom", bom);
    let mut plain = watcher(addr, "plain", "t");
    let mut p = Client::connect_v5(addr, "p", &[]);
    p.send_publish(bom, b"1", QosPid::AtMostOnce, false, &[]);
    let got = with_bom.recv_publish();
    // [MQTT-1.5.4-3]
    assert_eq!(
        got.topic.as_str().as_bytes(),
        [0xEF, 0xBB, 0xBF, b't'],
        "[MQTT-1.5.4-3] U+FEFF delivered intact"
    );
    plain.expect_nothing();
    p.send_publish("t", b"2", QosPid::AtMostOnce, false, &[]);
    assert_eq!(&plain.recv_publish().payload[..], b"2");
    // [MQTT-1.5.4-3]
    with_bom.expect_nothing();
}

/// [MQTT-1.5.5-1] the broker writes every variable byte integer in the fewest bytes (remaining
/// length 127 / 128 / 16 384, property length 206, subscription identifier 128), and an
/// over-long one it receives (`80 00`) makes the packet malformed: DISCONNECT 0x81.
#[test]
fn v5_mqtt_1_5_5_1_minimal_variable_byte_integers() {
    let broker = start();
    let addr = broker.local_addr();
    let mut sub = Raw::v5(addr, "vbi", &[]);
    sub.send(&subscribe_packet(1, "v", opts(QoS::AtMostOnce), None));
    assert!(matches!(sub.packet(), Packet::SubAck(_)));
    sub.send(&subscribe_packet(2, "w", opts(QoS::AtMostOnce), Some(128)));
    assert!(matches!(sub.packet(), Packet::SubAck(_)));
    let mut p = Client::connect_v5(addr, "p", &[]);
    let qos0 = |t: &str, props: &[u8], payload: &[u8]| raw_publish(t.as_bytes(), props, payload);

    // Remaining length 2 + 1 + 1 + payload.
    for (len, prefix) in [
        (123, &[0x30, 0x7F][..]),
        (124, &[0x30, 0x80, 0x01][..]),
        (16_380, &[0x30, 0x80, 0x80, 0x01][..]),
    ] {
        let payload = vec![b'a'; len];
        p.send_publish("v", &payload, QosPid::AtMostOnce, false, &[]);
        let f = sub.frame();
        // [MQTT-1.5.5-1]
        assert_eq!(
            &f[..prefix.len()],
            prefix,
            "[MQTT-1.5.5-1] remaining length {}",
            len + 4
        );
        assert_eq!(f, qos0("v", &[], &payload), "[MQTT-1.5.5-1]");
    }

    let value = "a".repeat(200);
    let user = Property::UserProperty("k".into(), value.as_str().into());
    p.send_publish("v", b"x", QosPid::AtMostOnce, false, &[user]);
    let f = sub.frame();
    let props = raw_user_property(b"k", value.as_bytes());
    assert_eq!(props.len(), 206);
    // [MQTT-1.5.5-1] remaining length 212 = D4 01, property length 206 = CE 01.
    assert_eq!(
        (&f[1..3], &f[6..8]),
        (&[0xD4, 0x01][..], &[0xCE, 0x01][..]),
        "[MQTT-1.5.5-1] {f:02x?}"
    );
    assert_eq!(f, qos0("v", &props, b"x"), "[MQTT-1.5.5-1]");

    p.send_publish("w", b"x", QosPid::AtMostOnce, false, &[]);
    // [MQTT-1.5.5-1] Subscription Identifier 128 = 80 01.
    assert_eq!(
        sub.frame(),
        [0x30, 0x08, 0x00, 0x01, b'w', 0x03, 0x0B, 0x80, 0x01, b'x'],
        "[MQTT-1.5.5-1] subscription identifier 128"
    );

    let mut w = watcher(addr, "w", "t");
    let overlong: [(&str, Vec<u8>); 3] = [
        ("PINGREQ remaining length 80 00", vec![0xC0, 0x80, 0x00]),
        (
            "PUBLISH property length 80 00",
            frame(0x30, &[0x00, 0x01, b't', 0x80, 0x00, b'x']),
        ),
        (
            "SUBSCRIBE subscription identifier 81 00",
            frame(
                0x82,
                &[0x00, 0x01, 0x03, 0x0B, 0x81, 0x00, 0x00, 0x01, b't', 0x00],
            ),
        ),
    ];
    for (i, (what, bytes)) in overlong.iter().enumerate() {
        let mut c = Client::connect_v5(addr, &format!("long{i}"), &[]);
        c.send_raw(bytes);
        // [MQTT-1.5.5-1]
        assert_eq!(c.expect_disconnect(), 0x81, "[MQTT-1.5.5-1] {what}");
    }
    w.expect_nothing();
}

/// [MQTT-1.5.7-1] both strings of a User Property follow the UTF-8 rules: a key or value that
/// is ill-formed or holds U+0000 makes the PUBLISH malformed (DISCONNECT 0x81), and it is not
/// forwarded; a well-formed pair is.
#[test]
fn v5_mqtt_1_5_7_1_user_property_strings_are_utf8() {
    let broker = start();
    let addr = broker.local_addr();
    let mut w = watcher(addr, "w", "t");
    let cases: [(&str, &[u8], &[u8]); 4] = [
        ("value ED A0 80", b"k", &[0xED, 0xA0, 0x80]),
        ("value with U+0000", b"k", b"v\0"),
        ("key with U+0000", b"k\0", b"v"),
        ("key C0 AF", &[0xC0, 0xAF], b"v"),
    ];
    for (i, (what, key, value)) in cases.iter().enumerate() {
        let mut c = Client::connect_v5(addr, &format!("up{i}"), &[]);
        c.send_raw(&raw_publish(b"t", &raw_user_property(key, value), b"x"));
        // [MQTT-1.5.7-1]
        assert_eq!(c.expect_disconnect(), 0x81, "[MQTT-1.5.7-1] {what}");
    }
    // [MQTT-1.5.7-1] none was forwarded
    w.expect_nothing();
    let mut c = Client::connect_v5(addr, "good", &[]);
    c.send_raw(&raw_publish(b"t", &raw_user_property(b"k", b"v"), b"ok"));
    let got = w.recv_publish();
    assert_eq!(&got.payload[..], b"ok");
    assert!(
        got.properties
            .iter()
            .any(|p| p == Property::UserProperty("k".into(), "v".into()))
    );
}

// ---------------------------------------------------------------- 2 control packet format

/// [MQTT-2.1.3-1] the broker's fixed headers carry the listed flags — CONNACK 20, SUBACK 90,
/// PUBACK 40, PUBREC 50, PUBCOMP 70, PUBREL 62, UNSUBACK B0, PINGRESP D0, DISCONNECT E0 — and
/// a PINGREQ with flags 1 (`C1 00`) is malformed: DISCONNECT 0x81.
#[test]
fn v5_mqtt_2_1_3_1_fixed_header_flags() {
    let broker = start();
    let addr = broker.local_addr();
    let (mut c, ack) = Raw::connect(addr, Client::v5("flags", &[]));
    // [MQTT-2.1.3-1]
    assert_eq!(ack[0], 0x20, "[MQTT-2.1.3-1] CONNACK");
    let first = |c: &mut Raw| c.frame()[0];
    c.send(&subscribe_packet(1, "f", opts(QoS::ExactlyOnce), None));
    assert_eq!(first(&mut c), 0x90, "[MQTT-2.1.3-1] SUBACK");
    c.send(&publish_packet(
        "z",
        b"1",
        QosPid::AtLeastOnce(pid(2)),
        false,
    ));
    assert_eq!(first(&mut c), 0x40, "[MQTT-2.1.3-1] PUBACK");
    c.send(&publish_packet(
        "z",
        b"2",
        QosPid::ExactlyOnce(pid(3)),
        false,
    ));
    assert_eq!(first(&mut c), 0x50, "[MQTT-2.1.3-1] PUBREC");
    c.send(&Packet::PubRel(Ack::new(pid(3))));
    assert_eq!(first(&mut c), 0x70, "[MQTT-2.1.3-1] PUBCOMP");

    let mut p = Client::connect_v5(addr, "p", &[]);
    p.send_publish("f", b"q2", QosPid::ExactlyOnce(pid(1)), false, &[]);
    let delivery = match c.packet() {
        Packet::Publish(d) => d.qos.packet_id().expect("QoS 2 delivery"),
        other => panic!("expected PUBLISH, got {other:?}"),
    };
    c.send(&Packet::PubRec(Ack::new(delivery)));
    assert_eq!(first(&mut c), 0x62, "[MQTT-2.1.3-1] PUBREL");
    c.send(&Packet::PubComp(Ack::new(delivery)));

    c.send(&Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(4),
        properties: Properties::new(),
        filters: vec!["f".into()],
    }));
    assert_eq!(first(&mut c), 0xB0, "[MQTT-2.1.3-1] UNSUBACK");
    c.send_raw(&[0xC0, 0x00]);
    assert_eq!(first(&mut c), 0xD0, "[MQTT-2.1.3-1] PINGRESP");
    c.send_raw(&[0xC1, 0x00]);
    let d = c.frame();
    // [MQTT-2.1.3-1]
    assert_eq!(d[0], 0xE0, "[MQTT-2.1.3-1] DISCONNECT");
    assert_eq!(
        disconnect_reason(&d),
        0x81,
        "[MQTT-2.1.3-1] PINGREQ with flags 1 is malformed"
    );
    assert!(c.closed());
}

/// [MQTT-2.1.3-1] every broker packet has the fixed-header flags of its type; [MQTT-2.2.1-5]
/// acks carry the id of their PUBLISH, both ways; [MQTT-2.2.1-6] SUBACK/UNSUBACK carry the id of
/// their request; [MQTT-2.2.2-1] an empty property section is still written as `00`;
/// [MQTT-2.2.1-2] a QoS 0 PUBLISH has no packet id; [MQTT-3.12.4-1] PINGREQ gets PINGRESP.
/// An inbound PINGREQ with flags `1` is malformed. All on one connection, one exchange after
/// another.
#[test]
fn v5_mqtt_2_1_3_1_fixed_header_flags_and_packet_ids() {
    let broker = start();
    let addr = broker.local_addr();
    let (mut r, connack) = Raw::connect(addr, Client::v5("raw", &[]));
    assert_eq!(connack[0], 0x20, "[MQTT-2.1.3-1] CONNACK flags");

    // SUBSCRIBE id BE EF: "t" at QoS 2, "q0" at QoS 0.
    r.send(&Packet::Subscribe(Subscribe {
        packet_id: pid(0xBEEF),
        properties: Properties::new(),
        filters: vec![
            ("t".into(), opts(QoS::ExactlyOnce)),
            ("q0".into(), opts(QoS::AtMostOnce)),
        ],
    }));
    let suback = r.frame_of(9);
    assert_eq!(suback[0], 0x90, "[MQTT-2.1.3-1] SUBACK flags");
    assert_eq!(suback[2..4], [0xBE, 0xEF], "[MQTT-2.2.1-6] SUBACK id");
    assert_eq!(suback[4], 0, "[MQTT-2.2.2-1] SUBACK property length 00");
    assert_eq!(suback[5..], [2, 0]);

    // QoS 1 in, id 12 34: PUBACK 12 34; the delivery back (QoS 1) is acked by us.
    let mut p = Publish::new(topic("t"), Bytes::from_static(b"one"));
    p.qos = QosPid::AtLeastOnce(pid(0x1234));
    r.send(&Packet::Publish(p));
    let puback = r.frame_of(4);
    assert_eq!(puback[0], 0x40, "[MQTT-2.1.3-1] PUBACK flags");
    assert_eq!(puback[2..4], [0x12, 0x34], "[MQTT-2.2.1-5] PUBACK id");
    let d = r.frame_of(3);
    let Packet::Publish(d) = parse(&d) else {
        unreachable!()
    };
    let QosPid::AtLeastOnce(id) = d.qos else {
        panic!("QoS 1 delivery, got {:?}", d.qos)
    };
    r.send(&Packet::PubAck(Ack::new(id)));

    // QoS 2 in, id 7: PUBREC 7, PUBREL 7 -> PUBCOMP 7; the QoS 2 delivery's PUBREL echoes its id.
    let mut p = Publish::new(topic("t"), Bytes::from_static(b"two"));
    p.qos = QosPid::ExactlyOnce(pid(7));
    r.send(&Packet::Publish(p));
    let pubrec = r.frame_of(5);
    assert_eq!(pubrec[0], 0x50, "[MQTT-2.1.3-1] PUBREC flags");
    assert_eq!(pubrec[2..4], [0, 7], "[MQTT-2.2.1-5] PUBREC id");
    r.send_raw(&[0x62, 0x02, 0x00, 0x07]);
    let pubcomp = r.frame_of(7);
    assert_eq!(pubcomp[0], 0x70, "[MQTT-2.1.3-1] PUBCOMP flags");
    assert_eq!(pubcomp[2..4], [0, 7], "[MQTT-2.2.1-5] PUBCOMP id");
    let d = r.frame_of(3);
    let Packet::Publish(d) = parse(&d) else {
        unreachable!()
    };
    let QosPid::ExactlyOnce(id) = d.qos else {
        panic!("QoS 2 delivery, got {:?}", d.qos)
    };
    r.send(&Packet::PubRec(Ack::new(id)));
    let pubrel = r.frame_of(6);
    assert_eq!(pubrel[0], 0x62, "[MQTT-2.1.3-1] PUBREL flags");
    assert_eq!(
        pubrel[2..4],
        id.get().to_be_bytes(),
        "[MQTT-2.2.1-5] broker PUBREL echoes its PUBLISH id"
    );
    r.send(&Packet::PubComp(Ack::new(id)));

    // QoS 0 delivery without properties: topic, then property length 00, then payload.
    let mut p = Client::connect_v5(addr, "pub", &[]);
    p.send_publish("q0", b"zero", QosPid::AtMostOnce, false, &[]);
    let d = r.frame_of(3);
    assert_eq!(d[0] & 0x0F, 0, "QoS 0, no DUP/RETAIN");
    let b = body_start(&d);
    assert_eq!(d[b..b + 4], [0, 2, b'q', b'0']);
    assert_eq!(
        d[b + 4],
        0,
        "[MQTT-2.2.1-2] no packet id after the topic; [MQTT-2.2.2-1] property length 00"
    );
    assert_eq!(
        &d[b + 5..],
        b"zero",
        "[MQTT-2.2.1-2] payload follows directly"
    );

    // PINGREQ -> PINGRESP D0 00.
    r.send_raw(&[0xC0, 0x00]);
    assert_eq!(
        r.frame_of(13),
        [0xD0, 0x00],
        "[MQTT-3.12.4-1] [MQTT-2.1.3-1] PINGRESP"
    );

    // UNSUBSCRIBE id 7 -> UNSUBACK B0, id 7, property length 00.
    r.send(&Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(7),
        properties: Properties::new(),
        filters: vec!["t".into()],
    }));
    let unsuback = r.frame_of(11);
    assert_eq!(unsuback[0], 0xB0, "[MQTT-2.1.3-1] UNSUBACK flags");
    assert_eq!(unsuback[2..4], [0, 7], "[MQTT-2.2.1-6] UNSUBACK id");
    assert_eq!(unsuback[4], 0, "[MQTT-2.2.2-1] UNSUBACK property length 00");

    // A PINGREQ with reserved flag bits set is malformed: DISCONNECT E0 .. 81, then EOF.
    r.send_raw(&[0xC1, 0x00]);
    let disc = r.frame_of(14);
    assert_eq!(disc[0], 0xE0, "[MQTT-2.1.3-1] DISCONNECT flags");
    assert_eq!(disc[2], 0x81, "[MQTT-2.1.3-1] wrong flags are malformed");
    assert!(r.eof_within(WAIT), "[MQTT-3.14.4-2] close after DISCONNECT");
}

/// [MQTT-2.2.1-2] a QoS 0 PUBLISH from the broker has no packet identifier: the property
/// length follows the topic; [MQTT-2.2.2-1] a SUBACK, UNSUBACK or PUBLISH without properties
/// still carries a property length of 0.
#[test]
fn v5_mqtt_2_2_1_2_qos0_has_no_packet_id() {
    let broker = start();
    let addr = broker.local_addr();
    let mut c = Raw::v5(addr, "bytes", &[]);
    c.send(&Packet::Subscribe(Subscribe {
        packet_id: pid(0x0102),
        properties: Properties::new(),
        filters: vec![("n".into(), opts(QoS::AtLeastOnce))],
    }));
    // [MQTT-2.2.2-1]
    assert_eq!(
        c.frame(),
        [0x90, 0x04, 0x01, 0x02, 0x00, 0x01],
        "[MQTT-2.2.2-1] SUBACK with property length 0"
    );
    let mut p = Client::connect_v5(addr, "p", &[]);
    p.send_publish("n", b"x", QosPid::AtMostOnce, false, &[]);
    // [MQTT-2.2.1-2] [MQTT-2.2.2-1]
    assert_eq!(
        c.frame(),
        [0x30, 0x05, 0x00, 0x01, b'n', 0x00, b'x'],
        "[MQTT-2.2.1-2] no packet id; [MQTT-2.2.2-1] property length 0"
    );
    p.send_publish("n", b"y", QosPid::AtLeastOnce(pid(1)), false, &[]);
    let f = c.frame();
    // [MQTT-2.2.2-1] header, topic, packet id, property length 0, payload.
    assert_eq!(
        (f.len(), f[0], f[1], &f[2..5], f[7], f[8]),
        (9, 0x32, 0x07, &[0x00, 0x01, b'n'][..], 0x00, b'y'),
        "[MQTT-2.2.2-1] QoS 1 PUBLISH with property length 0: {f:02x?}"
    );
    c.send_raw(&[0x40, 0x02, f[5], f[6]]);
    c.send(&Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(0x0304),
        properties: Properties::new(),
        filters: vec!["n".into()],
    }));
    // [MQTT-2.2.2-1]
    assert_eq!(
        c.frame(),
        [0xB0, 0x04, 0x03, 0x04, 0x00, 0x00],
        "[MQTT-2.2.2-1] UNSUBACK with property length 0"
    );
}

/// [MQTT-2.2.1-4] each QoS 1/2 PUBLISH the broker sends gets a non-zero packet id not in use:
/// distinct while unacknowledged (a QoS 2 id stays in use after PUBREC until PUBCOMP), and a
/// new delivery never takes one still in use.
#[test]
fn v5_mqtt_2_2_1_4_packet_ids_unique_while_in_use() {
    let broker = start();
    let addr = broker.local_addr();
    let mut c = Client::connect_v5(addr, "ids", &[]);
    assert_eq!(
        c.subscribe_opts(1, &[("ids", opts(QoS::ExactlyOnce))], None),
        [2]
    );
    let mut p = Client::connect_v5(addr, "p", &[]);
    let mut publish = |n: u16| {
        p.send_publish("ids", &[n as u8], QosPid::ExactlyOnce(pid(n)), false, &[]);
        assert!(matches!(p.recv(), Some(Packet::PubRec(_))));
        p.send(&Packet::PubRel(Ack::new(pid(n))));
        assert!(matches!(p.recv(), Some(Packet::PubComp(_))));
    };
    let delivery = |c: &mut Client| {
        let d = c.recv_publish();
        let id = d.qos.packet_id().expect("QoS 2 delivery");
        // [MQTT-2.2.1-4]
        assert_ne!(id.get(), 0, "[MQTT-2.2.1-4] non-zero");
        id
    };
    for n in 1..=3 {
        publish(n);
    }
    let first: Vec<_> = (0..3).map(|_| delivery(&mut c)).collect();
    let distinct: HashSet<_> = first.iter().copied().collect();
    // [MQTT-2.2.1-4]
    assert_eq!(distinct.len(), 3, "[MQTT-2.2.1-4] distinct ids {first:?}");
    // The first stays in use (PUBREC, PUBREL, no PUBCOMP); the second is released.
    c.send(&Packet::PubRec(Ack::new(first[0])));
    assert_eq!(c.recv(), Some(Packet::PubRel(Ack::new(first[0]))));
    c.send(&Packet::PubRec(Ack::new(first[1])));
    assert_eq!(c.recv(), Some(Packet::PubRel(Ack::new(first[1]))));
    c.send(&Packet::PubComp(Ack::new(first[1])));
    for n in 4..=6 {
        publish(n);
    }
    let later: Vec<_> = (0..3).map(|_| delivery(&mut c)).collect();
    let in_use = [first[0], first[2]];
    for id in &later {
        // [MQTT-2.2.1-4]
        assert!(
            !in_use.contains(id),
            "[MQTT-2.2.1-4] {id:?} still in use by {in_use:?}"
        );
    }
    let distinct: HashSet<_> = later.iter().copied().collect();
    assert_eq!(distinct.len(), 3, "[MQTT-2.2.1-4] distinct ids {later:?}");
}

/// [MQTT-2.2.1-4] each new QoS 1 delivery gets a non-zero id not in use: three unacked
/// deliveries have distinct ids, and a fourth does not reuse the ones still unacked.
#[test]
fn v5_mqtt_2_2_1_4_fresh_packet_ids() {
    let broker = start();
    let addr = broker.local_addr();
    let mut w = watcher(addr, "w", "t");
    let mut p = Client::connect_v5(addr, "pub", &[]);
    let mut ids = Vec::new();
    for i in 0..3u16 {
        p.publish("t", b"m", QoS::AtLeastOnce, false, i + 1);
        match w.recv_publish().qos {
            QosPid::AtLeastOnce(id) => ids.push(id.get()),
            other => panic!("QoS 1 delivery, got {other:?}"),
        }
    }
    assert!(ids.iter().all(|&i| i != 0), "[MQTT-2.2.1-4] non-zero");
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 3, "[MQTT-2.2.1-4] distinct ids {ids:?}");
    w.send(&Packet::PubAck(Ack::new(pid(ids[0]))));
    p.publish("t", b"m", QoS::AtLeastOnce, false, 4);
    let QosPid::AtLeastOnce(fourth) = w.recv_publish().qos else {
        panic!("QoS 1 delivery")
    };
    assert!(
        fourth.get() != 0 && !ids[1..].contains(&fourth.get()),
        "[MQTT-2.2.1-4] {fourth:?} not one still in use {:?}",
        &ids[1..]
    );
}

/// [MQTT-2.2.1-5] PUBACK, PUBREC and PUBCOMP carry the id of the client's PUBLISH, and the
/// broker's PUBREL the id of its own; [MQTT-2.2.1-6] SUBACK and UNSUBACK the id of the
/// SUBSCRIBE and UNSUBSCRIBE.
#[test]
fn v5_mqtt_2_2_1_5_acks_carry_the_packet_id() {
    let broker = start();
    let addr = broker.local_addr();
    let mut s = Client::connect_v5(addr, "s", &[]);
    s.send(&subscribe_packet(0xBEEF, "e", opts(QoS::ExactlyOnce), None));
    match s.recv() {
        // [MQTT-2.2.1-6]
        Some(Packet::SubAck(a)) => assert_eq!(a.packet_id, pid(0xBEEF), "[MQTT-2.2.1-6]"),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    let mut p = Client::connect_v5(addr, "p", &[]);
    p.send_publish("e", b"1", QosPid::AtLeastOnce(pid(0x1234)), false, &[]);
    match p.recv() {
        // [MQTT-2.2.1-5]
        Some(Packet::PubAck(a)) => assert_eq!(a.packet_id, pid(0x1234), "[MQTT-2.2.1-5] PUBACK"),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    s.recv_publish_ack();
    p.send_publish("e", b"2", QosPid::ExactlyOnce(pid(7)), false, &[]);
    match p.recv() {
        Some(Packet::PubRec(a)) => assert_eq!(a.packet_id, pid(7), "[MQTT-2.2.1-5] PUBREC"),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    p.send(&Packet::PubRel(Ack::new(pid(7))));
    match p.recv() {
        Some(Packet::PubComp(a)) => assert_eq!(a.packet_id, pid(7), "[MQTT-2.2.1-5] PUBCOMP"),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    let d = s.recv_publish();
    let id = d.qos.packet_id().expect("QoS 2 delivery");
    s.send(&Packet::PubRec(Ack::new(id)));
    match s.recv() {
        // [MQTT-2.2.1-5]
        Some(Packet::PubRel(a)) => assert_eq!(a.packet_id, id, "[MQTT-2.2.1-5] PUBREL"),
        other => panic!("expected PUBREL, got {other:?}"),
    }
    s.send(&Packet::PubComp(Ack::new(id)));
    s.send(&Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(7),
        properties: Properties::new(),
        filters: vec!["e".into()],
    }));
    match s.recv() {
        // [MQTT-2.2.1-6]
        Some(Packet::UnsubAck(a)) => assert_eq!(a.packet_id, pid(7), "[MQTT-2.2.1-6] UNSUBACK"),
        other => panic!("expected UNSUBACK, got {other:?}"),
    }
}

// ---------------------------------------------------------------- 3.1 CONNECT

/// [MQTT-3.1.2-1] a protocol name other than `MQTT` is not accepted: closed (at most a
/// CONNACK 0x84 first), no session.
#[test]
fn v5_mqtt_3_1_2_1_protocol_name_must_be_mqtt() {
    let broker = start();
    let addr = broker.local_addr();
    for name in [&b"MQTX"[..], b"mqtt", b"MQTT\0"] {
        let mut c = Raw::open(addr);
        c.send_raw(&raw_connect(name, 5, 0x02, b"n"));
        // [MQTT-3.1.2-1]
        assert!(
            refused_before_connack(&mut c, &[0x84]),
            "[MQTT-3.1.2-1] protocol name {name:02x?}: closed, never CONNACK 0x00"
        );
    }
    assert_eq!(sessions(&broker), 0, "[MQTT-3.1.2-1] no session");
}

/// [MQTT-3.1.2-2] a protocol level the broker does not support: CONNACK 0x84 (or, as
/// Mosquitto, the 3.1.1-format 0x01 a client of an unknown version can read), then the close.
#[test]
fn v5_mqtt_3_1_2_2_unsupported_protocol_level() {
    let broker = start();
    let addr = broker.local_addr();
    for level in [6u8, 2, 0xFF] {
        let mut c = Raw::open(addr);
        c.send_raw(&raw_connect(b"MQTT", level, 0x02, b"l"));
        if let Some(f) = c.frame_within(WAIT) {
            // [MQTT-3.1.2-2]
            assert!(
                f == [0x20, 0x02, 0x00, 0x01] || f == [0x20, 0x03, 0x00, 0x84, 0x00],
                "[MQTT-3.1.2-2] level {level}: refusing CONNACK, got {f:02x?}"
            );
        }
        assert!(c.closed(), "[MQTT-3.1.2-2] level {level}: closed");
    }
    assert_eq!(sessions(&broker), 0, "[MQTT-3.1.2-2] no session");
}

/// [MQTT-3.1.2-3] the reserved Connect Flags bit set: malformed, closed without CONNACK 0x00
/// (at most CONNACK 0x81), no session; the same CONNECT with the bit clear is accepted.
#[test]
fn v5_mqtt_3_1_2_3_reserved_connect_flag() {
    let broker = start();
    let addr = broker.local_addr();
    let mut c = Raw::open(addr);
    c.send_raw(&raw_connect(b"MQTT", 5, 0x03, b"r"));
    // [MQTT-3.1.2-3]
    assert!(
        refused_before_connack(&mut c, &[0x81]),
        "[MQTT-3.1.2-3] reserved flag set: closed"
    );
    assert_eq!(sessions(&broker), 0, "[MQTT-3.1.2-3] no session");
    let mut c = Raw::open(addr);
    c.send_raw(&raw_connect(b"MQTT", 5, 0x02, b"r"));
    assert_eq!(connack_of(&c.frame()).code.0, 0x00, "bit clear: accepted");
}

/// [MQTT-3.1.2-7] a Will is stored with the session and published when the connection drops;
/// [MQTT-3.1.2-14] with Will Retain 0 it is not retained: a Retain As Published subscriber
/// sees RETAIN 0, and a later subscriber gets nothing.
#[test]
fn v5_mqtt_3_1_2_7_will_stored_and_published_unretained() {
    let broker = start();
    let addr = broker.local_addr();
    let mut live = Client::connect_v5(addr, "live", &[]);
    let mut rap = opts(QoS::AtLeastOnce);
    rap.retain_as_published = true;
    assert_eq!(live.subscribe_opts(1, &[("w7/#", rap)], None), [1]);
    let mut connect = Client::v5("mortal", &[]);
    connect.will = Some(will("w7/mortal", "gone", QoS::AtLeastOnce, false));
    let (c, ack) = Client::connect_v5_with(addr, connect);
    assert_eq!(ack.code.0, 0);
    c.drop_connection();
    let got = live.recv_publish_ack();
    // [MQTT-3.1.2-7]
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("w7/mortal", &b"gone"[..]),
        "[MQTT-3.1.2-7] the stored Will is published"
    );
    // [MQTT-3.1.2-14]
    assert!(!got.retain, "[MQTT-3.1.2-14] Will Retain 0: RETAIN 0");
    live.expect_nothing();
    let mut late = Client::connect_v5(addr, "late", &[]);
    assert_eq!(late.subscribe_opts(1, &[("w7/#", rap)], None), [1]);
    // [MQTT-3.1.2-14]
    if let Some(p) = late.recv_within(QUIET) {
        panic!("[MQTT-3.1.2-14] Will Retain 0 must not be retained, got {p:?}");
    }
}

/// [MQTT-3.1.2-7] the Will of a CONNECT is stored: killing the socket publishes it;
/// [MQTT-3.1.2-10] once published it is gone (delivered exactly once), and a Will whose client
/// sends DISCONNECT 0x00 (no Will Delay, Session Expiry 0) is deleted, never published.
#[test]
fn v5_mqtt_3_1_2_7_will_stored_then_deleted() {
    let broker = start();
    let addr = broker.local_addr();
    let mut w = watcher(addr, "w", "will/#");
    let (c, ack) = Client::connect_v5_with(addr, with_will("dies", "will/dies", "bye", false));
    assert_eq!(ack.code.0, 0);
    c.drop_connection();
    let got = w.recv_publish_ack();
    assert_eq!(
        (&got.topic[..], &got.payload[..]),
        ("will/dies", b"bye".as_slice()),
        "[MQTT-3.1.2-7] the stored Will is published"
    );
    let (c, ack) = Client::connect_v5_with(addr, with_will("polite", "will/polite", "no", false));
    assert_eq!(ack.code.0, 0);
    c.disconnect(); // DISCONNECT 0x00; session expiry 0 ends the session too
    if let Some(p) = w.recv_within(QUIET) {
        panic!("[MQTT-3.1.2-10] Will published once and never after DISCONNECT 0x00: {p:?}");
    }
}

/// [MQTT-3.1.2-15] with Will Retain 1 the Will is published as a retained message: a Retain
/// As Published subscriber sees RETAIN 1, and one subscribing later gets it with RETAIN 1.
#[test]
fn v5_mqtt_3_1_2_15_will_retain_publishes_retained() {
    let broker = start();
    let addr = broker.local_addr();
    let mut live = Client::connect_v5(addr, "live", &[]);
    let mut rap = opts(QoS::AtLeastOnce);
    rap.retain_as_published = true;
    assert_eq!(live.subscribe_opts(1, &[("w15/#", rap)], None), [1]);
    let mut connect = Client::v5("mortal", &[]);
    connect.will = Some(will("w15/mortal", "kept", QoS::AtLeastOnce, true));
    let (c, _) = Client::connect_v5_with(addr, connect);
    c.drop_connection();
    let got = live.recv_publish_ack();
    assert_eq!(&got.payload[..], b"kept");
    // [MQTT-3.1.2-15]
    assert!(got.retain, "[MQTT-3.1.2-15] published with RETAIN 1");
    let mut late = Client::connect_v5(addr, "late", &[]);
    assert_eq!(
        late.subscribe_opts(1, &[("w15/#", opts(QoS::AtLeastOnce))], None),
        [1]
    );
    let got = late.recv_publish_ack();
    // [MQTT-3.1.2-15]
    assert!(
        got.retain && &got.payload[..] == b"kept",
        "[MQTT-3.1.2-15] retained Will for a later subscriber: {got:?}"
    );
}

/// [MQTT-3.1.2-10] the Will is deleted once published (not sent again when the session
/// expires) and when DISCONNECT 0x00 arrives (not sent when the session, which its Will Delay
/// outlasts, expires).
#[test]
fn v5_mqtt_3_1_2_10_will_deleted_after_publish_or_disconnect() {
    let broker = start();
    let addr = broker.local_addr();
    let mut w = watcher(addr, "w", "w10/#");
    let short = |id: &str, delay: u32| {
        let mut c = Client::v5(id, &[Property::SessionExpiryInterval(1)]);
        c.clean_start = false;
        let mut wl = will(&format!("w10/{id}"), id, QoS::AtLeastOnce, false);
        wl.properties.push(Property::WillDelayInterval(delay));
        c.will = Some(wl);
        c
    };
    let (dropped, _) = Client::connect_v5_with(addr, short("dropped", 0));
    let (mut polite, _) = Client::connect_v5_with(addr, short("polite", 100));
    polite.send(&Packet::Disconnect(Disconnect::new(ReasonCode::SUCCESS)));
    assert!(polite.closed_within(WAIT, false));
    dropped.drop_connection();
    assert_eq!(w.recv_publish_ack().topic.as_str(), "w10/dropped");
    // Both sessions expire 1 s after their close; neither Will may come (again).
    // [MQTT-3.1.2-10]
    if let Some(p) = w.recv_within(Duration::from_millis(1600)) {
        panic!("[MQTT-3.1.2-10] a deleted Will was published: {p:?}");
    }
    for id in ["dropped", "polite"] {
        let mut again = Client::v5(id, &[]);
        again.clean_start = false;
        let (c, ack) = Client::connect_v5_with(addr, again);
        assert!(!ack.session_present, "{id}: the session expired meanwhile");
        c.disconnect();
    }
    // [MQTT-3.1.2-10]
    w.expect_nothing();
}

/// [MQTT-3.1.2-26] Topic Aliases the broker sends never exceed the client's Topic Alias
/// Maximum; [MQTT-3.1.2-27] a client that gave none (or 0) gets no Topic Alias at all — even
/// for messages published with aliases.
#[test]
fn v5_mqtt_3_1_2_27_no_topic_alias_beyond_client_maximum() {
    let broker = start();
    let addr = broker.local_addr();
    let mut subs: Vec<(Client, Option<u16>)> =
        [("two", Some(2)), ("none", None), ("zero", Some(0))]
            .into_iter()
            .map(|(id, max)| {
                let props: Vec<Property> =
                    max.map(Property::TopicAliasMaximum).into_iter().collect();
                let mut c = Client::connect_v5(addr, id, &props);
                assert_eq!(
                    c.subscribe_opts(1, &[("ta/#", opts(QoS::AtLeastOnce))], None),
                    [1]
                );
                (c, max)
            })
            .collect();
    let mut p = Client::connect_v5(addr, "p", &[]);
    let mut sent = Vec::new();
    for round in 0..2 {
        for i in 0..6u16 {
            let t = format!("ta/{i}");
            let name = if round == 0 { t.as_str() } else { "" };
            let qos = if i % 2 == 0 {
                QosPid::AtMostOnce
            } else {
                QosPid::AtLeastOnce(pid(i))
            };
            p.send_publish(name, b"x", qos, false, &[Property::TopicAlias(i + 1)]);
            if i % 2 == 1 {
                assert!(matches!(p.recv(), Some(Packet::PubAck(_))));
            }
            sent.push(t);
        }
    }
    for (c, max) in &mut subs {
        let mut aliases: HashMap<u16, String> = HashMap::new();
        for want in &sent {
            let got = c.recv_publish_ack();
            let alias = got.properties.find(|p| match p {
                Property::TopicAlias(a) => Some(a),
                _ => None,
            });
            let name = match alias {
                None => got.topic.as_str().to_owned(),
                Some(a) => {
                    match max {
                        // [MQTT-3.1.2-26]
                        Some(m) if *m > 0 => assert!(
                            (1..=*m).contains(&a),
                            "[MQTT-3.1.2-26] alias {a} above the client's maximum {m}"
                        ),
                        // [MQTT-3.1.2-27]
                        _ => panic!(
                            "[MQTT-3.1.2-27] Topic Alias {a} sent to a client without a Topic Alias Maximum"
                        ),
                    }
                    if got.topic.as_str().is_empty() {
                        aliases.get(&a).cloned().expect("alias set up before use")
                    } else {
                        aliases.insert(a, got.topic.as_str().to_owned());
                        got.topic.as_str().to_owned()
                    }
                }
            };
            assert_eq!(&name, want);
        }
        c.expect_nothing();
    }
}

/// [MQTT-3.1.2-28] Request Response Information 0, or absent: the CONNACK carries no Response
/// Information.
#[test]
fn v5_mqtt_3_1_2_28_no_response_information_unless_requested() {
    let broker = start();
    let addr = broker.local_addr();
    for (id, props) in [
        ("absent", vec![]),
        ("zero", vec![Property::RequestResponseInformation(0)]),
    ] {
        let (_c, ack) = Client::connect_v5_with(addr, Client::v5(id, &props));
        assert_eq!(ack.code.0, 0);
        // [MQTT-3.1.2-28]
        assert!(
            !prop_ids(&ack.properties).contains(&0x1A),
            "[MQTT-3.1.2-28] {id}: no Response Information in {ack:?}"
        );
    }
}

/// [MQTT-3.1.3-2] the client id keys the session: two persistent sessions keep their own
/// subscriptions and queues, and resuming one gives back only its own.
#[test]
fn v5_mqtt_3_1_3_2_client_id_keys_the_session() {
    let broker = start();
    let addr = broker.local_addr();
    for (id, filter) in [("alpha", "k/a"), ("beta", "k/b")] {
        let (mut c, ack) = Client::connect_v5_with(addr, persistent(id, true));
        assert_eq!(ack.code.0, 0);
        assert_eq!(
            c.subscribe_opts(1, &[(filter, opts(QoS::AtLeastOnce))], None),
            [1]
        );
        c.disconnect();
    }
    let mut p = Client::connect_v5(addr, "p", &[]);
    for (i, t) in ["k/a", "k/b"].into_iter().enumerate() {
        p.send_publish(
            t,
            t.as_bytes(),
            QosPid::AtLeastOnce(pid(i as u16 + 1)),
            false,
            &[],
        );
        assert!(matches!(p.recv(), Some(Packet::PubAck(_))));
    }
    let (mut a, ack) = Client::connect_v5_with(addr, persistent("alpha", false));
    // [MQTT-3.1.3-2]
    assert!(ack.session_present, "[MQTT-3.1.3-2] alpha's session");
    let got = a.recv_publish_ack();
    // [MQTT-3.1.3-2]
    assert_eq!(
        &got.payload[..],
        b"k/a",
        "[MQTT-3.1.3-2] alpha's queue only"
    );
    a.expect_nothing();
    p.send_publish("k/b", b"live", QosPid::AtLeastOnce(pid(3)), false, &[]);
    assert!(matches!(p.recv(), Some(Packet::PubAck(_))));
    // [MQTT-3.1.3-2] beta's subscription is not alpha's.
    a.expect_nothing();
    let (mut b, ack) = Client::connect_v5_with(addr, persistent("beta", false));
    assert!(ack.session_present, "[MQTT-3.1.3-2] beta's session");
    assert_eq!(&b.recv_publish_ack().payload[..], b"k/b");
    assert_eq!(&b.recv_publish_ack().payload[..], b"live");
    b.expect_nothing();
}

/// [MQTT-3.1.3-5] client ids of 1 to 23 characters of `0-9a-zA-Z` are accepted:
/// [MQTT-3.1.4-5] CONNACK reason byte 0x00, [MQTT-3.2.2-1] flag bits 7-1 0, under the id
/// given (no Assigned Client Identifier).
#[test]
fn v5_mqtt_3_1_3_5_short_alphanumeric_client_ids_accepted() {
    let broker = start();
    let addr = broker.local_addr();
    for id in [
        "a",
        "Z",
        "7",
        "abcdefghijklmnopqrstuvw",
        "ABCDEFGHIJKLMNOPQRSTUVW",
        "01234567890123456789012",
        "0aZ9zA",
    ] {
        let (_c, f) = Raw::connect(addr, Client::v5(id, &[]));
        // [MQTT-3.1.4-5] first byte, remaining length, flags, reason code.
        assert_eq!(
            (f[0], f[3]),
            (0x20, 0x00),
            "[MQTT-3.1.4-5] [MQTT-3.1.3-5] id {id:?} accepted: {f:02x?}"
        );
        // [MQTT-3.2.2-1]
        assert_eq!(
            f[2] & 0xFE,
            0,
            "[MQTT-3.2.2-1] id {id:?}: CONNACK flags {f:02x?}"
        );
        let ack = connack_of(&f);
        // [MQTT-3.1.3-5]
        assert!(
            !prop_ids(&ack.properties).contains(&0x12),
            "[MQTT-3.1.3-5] id {id:?} kept, none assigned"
        );
    }
}

/// [MQTT-3.1.4-2] a CONNECT failing a further check (here the session limit) is refused with
/// a CONNACK >= 0x80 and closed [MQTT-3.2.2-7], and creates no session.
#[test]
fn v5_mqtt_3_1_4_2_refused_by_a_limit() {
    let broker = start_with(|c| c.max_sessions = 1);
    let addr = broker.local_addr();
    let first = Client::connect_v5(addr, "first", &[]);
    let (mut c, f) = Raw::connect(addr, persistent("second", true));
    let ack = connack_of(&f);
    // [MQTT-3.1.4-2]
    assert!(
        ack.code.0 >= 0x80,
        "[MQTT-3.1.4-2] refused with CONNACK >= 0x80: {ack:?}"
    );
    assert_eq!(ack.code.0, 0x97, "quota exceeded");
    // [MQTT-3.1.4-2] [MQTT-3.2.2-7]
    assert!(c.closed(), "[MQTT-3.1.4-2] [MQTT-3.2.2-7] closed");
    assert_eq!(sessions(&broker), 1, "[MQTT-3.1.4-2] no session created");
    first.disconnect();
    let (_c, ack) = Client::connect_v5_with(addr, persistent("second", false));
    assert_eq!(ack.code.0, 0);
    // [MQTT-3.1.4-2]
    assert!(
        !ack.session_present,
        "[MQTT-3.1.4-2] the refused CONNECT left no session"
    );
}

/// [MQTT-3.1.4-2] [MQTT-4.12.0-4] an authentication check that fails (unknown method) gets
/// CONNACK 0x8C and the close; no session is created, though the CONNECT asked for a
/// persistent one; [MQTT-3.2.2-8] [MQTT-3.2.2-7] [MQTT-4.13.2-1] the code is a Connect Reason
/// Code and the connection closes.
#[test]
fn v5_mqtt_3_1_4_2_failed_authentication_closes() {
    let broker = start();
    let addr = broker.local_addr();
    let mut r = Raw::open(addr);
    r.send(&Packet::Connect(Box::new(with_auth_method("nosess", &[]))));
    let ack = r.frame();
    let a = assert_refused(&mut r, &ack, "[MQTT-3.1.4-2]");
    assert_eq!(
        a.code.0, 0x8C,
        "[MQTT-3.1.4-2] [MQTT-4.12.0-4] bad authentication method"
    );
    let (_c, ack) = Client::connect_v5_with(addr, persistent("nosess", false));
    assert!(
        !ack.session_present,
        "[MQTT-3.1.4-2] the refused CONNECT created no session"
    );
}

/// [MQTT-3.1.4-4] Clean Start is processed: 0 with no session starts one, 0 with one resumes
/// it (subscription intact), 1 discards it; [MQTT-3.2.2-3] accepted with Clean Start 0:
/// flags `00` then `01`, reason `00`; [MQTT-3.2.2-2] with Clean Start 1 over a stored session:
/// flags `00`, reason `00`; [MQTT-3.2.2-1] flag bits 7-1 always 0.
#[test]
fn v5_mqtt_3_1_4_4_clean_start_and_session_present() {
    let broker = start();
    let addr = broker.local_addr();
    let mut p = Client::connect_v5(addr, "p", &[]);
    let connack = |clean: bool| {
        let (c, f) = Raw::connect(addr, persistent("cs", clean));
        // [MQTT-3.2.2-1]
        assert_eq!(f[2] & 0xFE, 0, "[MQTT-3.2.2-1] CONNACK flags {f:02x?}");
        (c, f[2], f[3])
    };

    let (mut c, flags, reason) = connack(false);
    // [MQTT-3.2.2-3]
    assert_eq!(
        (flags, reason),
        (0x00, 0x00),
        "[MQTT-3.2.2-3] Clean Start 0, no session"
    );
    c.send(&subscribe_packet(1, "cs/t", opts(QoS::AtLeastOnce), None));
    assert!(matches!(c.packet(), Packet::SubAck(_)));
    c.send_raw(&[0xE0, 0x00]);
    assert!(c.closed());

    let (mut c, flags, reason) = connack(false);
    // [MQTT-3.2.2-3]
    assert_eq!(
        (flags, reason),
        (0x01, 0x00),
        "[MQTT-3.2.2-3] Clean Start 0, session held"
    );
    p.send_publish("cs/t", b"1", QosPid::AtMostOnce, false, &[]);
    match c.packet() {
        // [MQTT-3.1.4-4]
        Packet::Publish(m) => assert_eq!(&m.payload[..], b"1", "[MQTT-3.1.4-4] resumed"),
        other => {
            panic!("[MQTT-3.1.4-4] expected the resumed subscription's PUBLISH, got {other:?}")
        }
    }
    c.send_raw(&[0xE0, 0x00]);
    assert!(c.closed());

    let (mut c, flags, reason) = connack(true);
    // [MQTT-3.2.2-2]
    assert_eq!(
        (flags, reason),
        (0x00, 0x00),
        "[MQTT-3.2.2-2] Clean Start 1 over a stored session"
    );
    p.send_publish("cs/t", b"2", QosPid::AtLeastOnce(pid(1)), false, &[]);
    match p.recv() {
        // [MQTT-3.1.4-4] the subscription went with the session.
        Some(Packet::PubAck(a)) => assert_eq!(a.reason.0, 0x10, "[MQTT-3.1.4-4] discarded"),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    // [MQTT-3.1.4-4]
    assert_eq!(c.frame_within(QUIET), None, "[MQTT-3.1.4-4] discarded");
}

/// [MQTT-3.2.2-3] Clean Start 0: SP 0 with no session, SP 1 with one, reason 00 both times;
/// [MQTT-3.2.2-2] Clean Start 1 over an existing session: flags 00, reason 00; [MQTT-3.1.4-4]
/// and the old session's subscription is gone. Here each connection ends by dropping the
/// socket, not by DISCONNECT.
#[test]
fn v5_mqtt_3_2_2_2_clean_start_and_session_present() {
    let broker = start();
    let addr = broker.local_addr();
    let connect = |clean: bool| Client::connect_v5_with(addr, persistent("cs", clean));
    let (mut c, ack) = connect(false);
    assert!(
        !ack.session_present && ack.code.0 == 0,
        "[MQTT-3.2.2-3] no session: SP 0, reason 00 ({ack:?})"
    );
    assert_eq!(
        c.subscribe_opts(1, &[("cs/#", opts(QoS::AtLeastOnce))], None),
        [1]
    );
    c.drop_connection();
    let (c, ack) = connect(false);
    assert!(
        ack.session_present && ack.code.0 == 0,
        "[MQTT-3.2.2-3] [MQTT-3.1.4-4] session held: SP 1, reason 00 ({ack:?})"
    );
    c.drop_connection();
    let (mut c, ack) = connect(true);
    assert!(
        !ack.session_present && ack.code.0 == 0,
        "[MQTT-3.2.2-2] Clean Start 1: SP 0, reason 00 ({ack:?})"
    );
    let mut p = Client::connect_v5(addr, "pub", &[]);
    p.publish("cs/1", b"x", QoS::AtLeastOnce, false, 1);
    c.expect_nothing(); // [MQTT-3.1.4-4] the old subscription was discarded
}

/// [MQTT-3.1.4-6] after refusing a CONNECT the broker processes nothing the client sent
/// behind it: a retained PUBLISH and a SUBSCRIBE in the same write are ignored.
#[test]
fn v5_mqtt_3_1_4_6_nothing_processed_after_a_refused_connect() {
    let broker = start();
    let addr = broker.local_addr();
    let mut w = watcher(addr, "w", "r6/#");
    let mut c = Raw::open(addr);
    let mut bytes = encode(&Packet::Connect(Box::new(Client::v5(
        "refused",
        &[Property::AuthenticationMethod("SCRAM-SHA-1".into())],
    ))));
    bytes.extend(encode(&publish_packet(
        "r6/x",
        b"sneaked",
        QosPid::AtLeastOnce(pid(1)),
        true,
    )));
    bytes.extend(encode(&subscribe_packet(
        2,
        "#",
        opts(QoS::AtMostOnce),
        None,
    )));
    bytes.extend([0xC0, 0x00]);
    c.send_raw(&bytes);
    let ack = connack_of(&c.frame());
    assert!(ack.code.0 >= 0x80, "{ack:?}");
    // [MQTT-3.1.4-6] no PUBACK, SUBACK or PINGRESP: the close.
    assert!(c.closed(), "[MQTT-3.1.4-6] closed with nothing more");
    // [MQTT-3.1.4-6]
    w.expect_nothing();
    let mut late = Client::connect_v5(addr, "late", &[]);
    assert_eq!(
        late.subscribe_opts(1, &[("r6/#", opts(QoS::AtLeastOnce))], None),
        [1]
    );
    // [MQTT-3.1.4-6] nothing was retained
    if let Some(p) = late.recv_within(QUIET) {
        panic!("[MQTT-3.1.4-6] the PUBLISH after the refused CONNECT was processed: {p:?}");
    }
}

// ---------------------------------------------------------------- 3.2 CONNACK

/// [MQTT-3.2.0-1] CONNACK is the first packet the broker sends, even when the client pipelines
/// SUBSCRIBE (with a retained message to deliver) and PINGREQ behind CONNECT, or resumes a
/// session with messages queued, and whichever worker owns the client id.
#[test]
fn v5_mqtt_3_2_0_1_connack_comes_first() {
    let broker = start();
    let addr = broker.local_addr();
    let mut p = Client::connect_v5(addr, "p", &[]);
    p.send_publish(
        "pipe/r",
        b"retained",
        QosPid::AtLeastOnce(pid(1)),
        true,
        &[],
    );
    assert!(matches!(p.recv(), Some(Packet::PubAck(_))));
    for i in 0..8 {
        let mut c = Raw::open(addr);
        let mut bytes = encode(&Packet::Connect(Box::new(Client::v5(
            &format!("pipe{i}"),
            &[],
        ))));
        bytes.extend(encode(&subscribe_packet(
            1,
            "pipe/#",
            opts(QoS::AtLeastOnce),
            None,
        )));
        bytes.extend([0xC0, 0x00]);
        c.send_raw(&bytes);
        let first = c.packet();
        // [MQTT-3.2.0-1]
        assert!(
            matches!(first, Packet::ConnAck(ref a) if a.code.0 == 0),
            "[MQTT-3.2.0-1] client {i}: first packet {first:?}"
        );
        let mut kinds: Vec<u8> = (0..3).map(|_| c.frame()[0] >> 4).collect();
        kinds.sort_unstable();
        assert_eq!(kinds, [3, 9, 13], "PUBLISH, SUBACK, PINGRESP");
    }

    // Resuming a session with QoS 1 messages queued.
    let (mut c, _) = Client::connect_v5_with(addr, persistent("queued", true));
    assert_eq!(
        c.subscribe_opts(1, &[("q/#", opts(QoS::AtLeastOnce))], None),
        [1]
    );
    c.drop_connection();
    for i in 0..3u16 {
        p.send_publish(
            "q/x",
            &[i as u8],
            QosPid::AtLeastOnce(pid(i + 2)),
            false,
            &[],
        );
        assert!(matches!(p.recv(), Some(Packet::PubAck(_))));
    }
    let mut c = Raw::open(addr);
    let mut bytes = encode(&Packet::Connect(Box::new(persistent("queued", false))));
    bytes.extend([0xC0, 0x00]);
    c.send_raw(&bytes);
    let first = c.packet();
    // [MQTT-3.2.0-1]
    assert!(
        matches!(first, Packet::ConnAck(ref a) if a.code.0 == 0 && a.session_present),
        "[MQTT-3.2.0-1] resumed: first packet {first:?}"
    );
    let mut kinds: Vec<u8> = (0..4).map(|_| c.frame()[0] >> 4).collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [3, 3, 3, 13],
        "the queued messages and PINGRESP after it"
    );
}

/// [MQTT-3.2.2-6] a refusing CONNACK has Session Present 0, even for a client id with a
/// stored session.
#[test]
fn v5_mqtt_3_2_2_6_refusal_has_session_present_0() {
    let broker = start_with(|c| c.max_qos = 1);
    let addr = broker.local_addr();
    let (mut c, _) = Client::connect_v5_with(addr, persistent("x", true));
    assert_eq!(
        c.subscribe_opts(1, &[("x/t", opts(QoS::AtLeastOnce))], None),
        [1]
    );
    c.disconnect();
    let refusals: [(&str, Connect); 2] = [
        ("bad authentication method", {
            let mut c = persistent("x", false);
            c.properties
                .push(Property::AuthenticationMethod("SCRAM-SHA-1".into()));
            c
        }),
        ("Will QoS above the maximum", {
            let mut c = persistent("x", false);
            c.will = Some(will("x/w", "w", QoS::ExactlyOnce, false));
            c
        }),
    ];
    for (what, connect) in refusals {
        let (mut c, f) = Raw::connect(addr, connect);
        let ack = connack_of(&f);
        assert!(ack.code.0 >= 0x80, "{what}: refused, {ack:?}");
        // [MQTT-3.2.2-6]
        assert_eq!(
            f[2], 0x00,
            "[MQTT-3.2.2-6] {what}: Session Present 0, {f:02x?}"
        );
        assert!(c.closed());
    }
    // The stored session was there all along.
    let (_c, ack) = Client::connect_v5_with(addr, persistent("x", false));
    assert!(ack.session_present);
}

/// [MQTT-3.2.2-8] every CONNACK reason code is one of Table 3-1 (0x00 and each refusal the
/// broker makes: 0x8C, 0x9B, 0x9A, 0x99, 0x97); [MQTT-3.2.2-1] flag bits 7-1 are 0;
/// [MQTT-3.2.2-7] [MQTT-4.13.2-1] each refusal (>= 0x80) is followed by the close.
#[test]
fn v5_mqtt_3_2_2_8_connack_reason_codes() {
    let broker = start_with(|c| {
        c.max_qos = 1;
        c.retain_available = false;
        c.max_sessions = 1;
    });
    let addr = broker.local_addr();
    let (_holder, f) = Raw::connect(addr, Client::v5("holder", &[]));
    // [MQTT-3.2.2-8] [MQTT-3.2.2-1]
    assert!(
        CONNACK_CODES.contains(&f[3]) && f[2] & 0xFE == 0,
        "[MQTT-3.2.2-8] [MQTT-3.2.2-1] {f:02x?}"
    );
    assert_eq!(connack_of(&f).code.0, 0x00);
    let with = |f: &dyn Fn(&mut Connect)| {
        let mut c = Client::v5("refused", &[]);
        f(&mut c);
        c
    };
    let cases: [(&str, Connect, u8); 5] = [
        (
            "authentication method",
            with(&|c| {
                c.properties
                    .push(Property::AuthenticationMethod("SCRAM-SHA-1".into()))
            }),
            0x8C,
        ),
        (
            "Will QoS 2",
            with(&|c| c.will = Some(will("w", "x", QoS::ExactlyOnce, false))),
            0x9B,
        ),
        (
            "retained Will",
            with(&|c| c.will = Some(will("w", "x", QoS::AtMostOnce, true))),
            0x9A,
        ),
        (
            "Will payload not UTF-8",
            with(&|c| {
                let mut w = will("w", "", QoS::AtMostOnce, false);
                w.payload = Bytes::from_static(&[0xFF, 0xFE]);
                w.properties.push(Property::PayloadFormatIndicator(1));
                c.will = Some(w);
            }),
            0x99,
        ),
        ("session limit", with(&|_| {}), 0x97),
    ];
    for (what, connect, want) in cases {
        let (mut c, f) = Raw::connect(addr, connect);
        let ack = connack_of(&f);
        // [MQTT-3.2.2-8]
        assert!(
            CONNACK_CODES.contains(&ack.code.0),
            "[MQTT-3.2.2-8] {what}: {:#04x} is not a Connect Reason Code",
            ack.code.0
        );
        assert_eq!(ack.code.0, want, "{what}");
        // [MQTT-3.2.2-1]
        assert_eq!(f[2] & 0xFE, 0, "[MQTT-3.2.2-1] {what}: flags {f:02x?}");
        // [MQTT-3.2.2-7] [MQTT-4.13.2-1]
        assert!(
            c.closed(),
            "[MQTT-3.2.2-7] [MQTT-4.13.2-1] {what}: closed after CONNACK {want:#04x}"
        );
    }
}

/// [MQTT-3.2.2-19] [MQTT-3.2.2-20] a client with a small Maximum Packet Size (32) gets its
/// CONNACKs — accepting and refusing — within that size and without Reason String or User
/// Property.
#[test]
fn v5_mqtt_3_2_2_19_connack_within_small_maximum_packet_size() {
    let broker = start();
    let addr = broker.local_addr();
    let small = [
        Property::MaximumPacketSize(32),
        Property::RequestProblemInformation(1),
    ];
    let mut refused_auth = Client::v5("small", &small);
    refused_auth
        .properties
        .push(Property::AuthenticationMethod("SCRAM-SHA-1".into()));
    let mut refused_will = Client::v5("small", &small);
    let mut w = will("w", "", QoS::AtMostOnce, false);
    w.payload = Bytes::from_static(&[0xFF]);
    w.properties.push(Property::PayloadFormatIndicator(1));
    refused_will.will = Some(w);
    for (what, connect, want) in [
        ("accepted", Client::v5("small", &small), 0x00),
        ("bad authentication method", refused_auth, 0x8C),
        ("invalid Will payload", refused_will, 0x99),
    ] {
        let (_c, f) = Raw::connect(addr, connect);
        let ack = connack_of(&f);
        assert_eq!(ack.code.0, want, "{what}");
        let ids = prop_ids(&ack.properties);
        // [MQTT-3.2.2-19] [MQTT-3.2.2-20]
        assert!(
            f.len() <= 32 && !ids.contains(&REASON_STRING) && !ids.contains(&USER_PROPERTY),
            "[MQTT-3.2.2-19] [MQTT-3.2.2-20] {what}: {f:02x?}"
        );
    }
}

// ---------------------------------------------------------------- 3.12 PINGREQ

/// [MQTT-3.12.4-1] every PINGREQ gets a PINGRESP `D0 00`, pipelined ones included.
#[test]
fn v5_mqtt_3_12_4_1_pingreq_answered() {
    let broker = start();
    let mut c = Raw::v5(broker.local_addr(), "ping", &[]);
    c.send_raw(&[0xC0, 0x00]);
    // [MQTT-3.12.4-1]
    assert_eq!(c.frame(), [0xD0, 0x00], "[MQTT-3.12.4-1]");
    c.send_raw(&[0xC0, 0x00, 0xC0, 0x00, 0xC0, 0x00]);
    for i in 0..3 {
        assert_eq!(c.frame(), [0xD0, 0x00], "[MQTT-3.12.4-1] pipelined {i}");
    }
    assert_eq!(c.frame_within(QUIET), None);
}

// ---------------------------------------------------------------- 3.14 DISCONNECT

/// [MQTT-3.14.1-1] a DISCONNECT with a reserved flag set (`E1 00`) is malformed: DISCONNECT
/// 0x81 and the close, and — not being a valid DISCONNECT — the Will is published.
#[test]
fn v5_mqtt_3_14_1_1_disconnect_flags_malformed() {
    let broker = start();
    let addr = broker.local_addr();
    let mut w = watcher(addr, "w", "w141/#");
    let mut connect = Client::v5("flagged", &[]);
    connect.will = Some(will("w141/flagged", "will", QoS::AtLeastOnce, false));
    let (mut c, _) = Client::connect_v5_with(addr, connect);
    c.send_raw(&[0xE1, 0x00]);
    // [MQTT-3.14.1-1]
    assert_eq!(
        c.expect_disconnect(),
        0x81,
        "[MQTT-3.14.1-1] E1 00 is malformed"
    );
    let got = w.recv_publish_ack();
    // [MQTT-3.14.1-1]
    assert_eq!(
        &got.payload[..],
        b"will",
        "[MQTT-3.14.1-1] not a DISCONNECT: the Will goes out"
    );
}

/// [MQTT-3.14.2-1] every DISCONNECT the broker sends uses a reason code a server may send
/// (Table 3-10): malformed 0x81, protocol error 0x82, taken over 0x8E, receive maximum 0x93,
/// topic alias 0x94, too large 0x95, payload format 0x99, retain 0x9A, QoS 0x9B, shutting
/// down 0x8B; [MQTT-3.14.4-2] each is followed by the close, and [MQTT-4.13.2-1] nothing sent
/// behind the offending packet is processed.
#[test]
fn v5_mqtt_3_14_2_1_server_disconnect_reason_codes() {
    let check = |what: &str, c: &mut Raw, want: u8| {
        let f = c.disconnect_frame();
        let reason = disconnect_reason(&f);
        // [MQTT-3.14.2-1]
        assert!(
            SERVER_DISCONNECT_CODES.contains(&reason),
            "[MQTT-3.14.2-1] {what}: {reason:#04x} is not a server Disconnect Reason Code"
        );
        assert_eq!(reason, want, "{what}");
        // [MQTT-3.14.4-2] [MQTT-4.13.2-1]
        assert!(
            c.closed(),
            "[MQTT-3.14.4-2] [MQTT-4.13.2-1] {what}: closed after DISCONNECT {want:#04x}"
        );
    };
    let broker = start_with(|c| {
        c.receive_maximum = 2;
        c.max_packet_size = 1024;
    });
    let addr = broker.local_addr();
    let mut w = watcher(addr, "w", "after");
    let after = encode(&publish_packet("after", b"x", QosPid::AtMostOnce, false));

    let mut c = Raw::v5(addr, "malformed", &[]);
    c.send_raw(&[[0xC1, 0x00].as_slice(), &after].concat());
    check("PINGREQ flags 1", &mut c, 0x81);

    let mut c = Raw::v5(addr, "twice", &[]);
    let mut bytes = encode(&Packet::Connect(Box::new(Client::v5("twice", &[]))));
    bytes.extend(&after);
    c.send_raw(&bytes);
    check("second CONNECT", &mut c, 0x82);

    let mut c = Raw::v5(addr, "twin", &[]);
    let _twin = Raw::v5(addr, "twin", &[]);
    check("taken over", &mut c, 0x8E);

    let mut c = Raw::v5(addr, "eager", &[]);
    let mut bytes = Vec::new();
    for i in 1..=3 {
        bytes.extend(encode(&publish_packet(
            "q2",
            b"x",
            QosPid::ExactlyOnce(pid(i)),
            false,
        )));
    }
    bytes.extend(&after);
    c.send_raw(&bytes);
    check("receive maximum exceeded", &mut c, 0x93);

    let mut c = Raw::v5(addr, "alias", &[]);
    let mut p = Publish::new(topic("after"), Bytes::from_static(b"x"));
    p.properties.push(Property::TopicAlias(11));
    let mut bytes = encode(&Packet::Publish(p));
    bytes.extend(&after);
    c.send_raw(&bytes);
    check("topic alias above the maximum", &mut c, 0x94);

    let mut c = Raw::v5(addr, "large", &[]);
    c.send(&publish_packet(
        "after",
        &[b'x'; 2000],
        QosPid::AtMostOnce,
        false,
    ));
    check("packet too large", &mut c, 0x95);

    let mut c = Raw::v5(addr, "format", &[]);
    let mut p = Publish::new(topic("after"), Bytes::from_static(&[0xFF]));
    p.properties.push(Property::PayloadFormatIndicator(1));
    let mut bytes = encode(&Packet::Publish(p));
    bytes.extend(&after);
    c.send_raw(&bytes);
    check("payload format invalid", &mut c, 0x99);
    // [MQTT-4.13.2-1] none of the PUBLISHes behind an offending packet was routed.
    w.expect_nothing();

    let limited = start_with(|c| {
        c.retain_available = false;
        c.max_qos = 1;
    });
    let addr = limited.local_addr();
    let mut c = Raw::v5(addr, "retain", &[]);
    c.send(&publish_packet("t", b"x", QosPid::AtMostOnce, true));
    check("retain not supported", &mut c, 0x9A);
    let mut c = Raw::v5(addr, "qos", &[]);
    c.send(&publish_packet(
        "t",
        b"x",
        QosPid::ExactlyOnce(pid(1)),
        false,
    ));
    check("QoS not supported", &mut c, 0x9B);
    let mut c = Raw::v5(addr, "stay", &[]);
    limited.shutdown();
    check("server shutting down", &mut c, 0x8B);
}

/// [MQTT-3.14.2-3] [MQTT-3.14.2-4] a client with a small Maximum Packet Size (32) gets the
/// broker's DISCONNECTs within that size and without Reason String or User Property.
#[test]
fn v5_mqtt_3_14_2_3_disconnect_within_small_maximum_packet_size() {
    let broker = start();
    let addr = broker.local_addr();
    let small = [
        Property::MaximumPacketSize(32),
        Property::RequestProblemInformation(1),
    ];
    let check = |what: &str, c: &mut Raw, want: u8| {
        let f = c.disconnect_frame();
        let Packet::Disconnect(d) = parse(&f) else {
            unreachable!()
        };
        assert_eq!(d.reason.0, want, "{what}");
        let ids = prop_ids(&d.properties);
        // [MQTT-3.14.2-3] [MQTT-3.14.2-4]
        assert!(
            f.len() <= 32 && !ids.contains(&REASON_STRING) && !ids.contains(&USER_PROPERTY),
            "[MQTT-3.14.2-3] [MQTT-3.14.2-4] {what}: {f:02x?}"
        );
        assert!(c.closed());
    };
    let mut c = Raw::v5(addr, "m", &small);
    c.send_raw(&[0xC1, 0x00]);
    check("malformed", &mut c, 0x81);
    let mut c = Raw::v5(addr, "p", &small);
    c.send(&Packet::Connect(Box::new(Client::v5("p", &small))));
    check("protocol error", &mut c, 0x82);
    let mut c = Raw::v5(addr, "a", &small);
    let mut p = Publish::new(topic("t"), Bytes::from_static(b"x"));
    p.properties.push(Property::TopicAlias(11));
    c.send(&Packet::Publish(p));
    check("topic alias invalid", &mut c, 0x94);
    let mut c = Raw::v5(addr, "twin", &small);
    let _twin = Raw::v5(addr, "twin", &small);
    check("taken over", &mut c, 0x8E);
}

/// [MQTT-3.14.2-3] [MQTT-3.14.2-4] with Maximum Packet Size 32, the broker's DISCONNECT for an
/// AUTH without enhanced authentication (a protocol error) arrives within the limit with no
/// Reason String and no User Property; [MQTT-3.14.2-1] its code is a server code;
/// [MQTT-3.14.4-2] the close follows.
#[test]
fn v5_mqtt_3_14_2_3_disconnect_without_reason_string_under_small_limit() {
    let broker = start();
    let (mut r, ack) = Raw::connect(
        broker.local_addr(),
        Client::v5("small", &[Property::MaximumPacketSize(32)]),
    );
    assert_eq!(ack[3], 0);
    r.send_raw(&[0xF0, 0x00]);
    let f = r.frame_of(14);
    assert!(f.len() <= 32, "within the client's Maximum Packet Size");
    let Packet::Disconnect(d) = parse(&f) else {
        unreachable!()
    };
    assert_eq!(
        d.reason.0, 0x82,
        "AUTH after a plain CONNECT is a protocol error"
    );
    assert!(
        SERVER_DISCONNECT_CODES.contains(&d.reason.0),
        "[MQTT-3.14.2-1] server DISCONNECT code"
    );
    let ids = prop_ids(&d.properties);
    assert!(
        !ids.contains(&REASON_STRING),
        "[MQTT-3.14.2-3] no Reason String: {d:?}"
    );
    assert!(
        !ids.contains(&USER_PROPERTY),
        "[MQTT-3.14.2-4] no User Property: {d:?}"
    );
    assert!(r.eof_within(WAIT), "[MQTT-3.14.4-2] close after DISCONNECT");
}

// ---------------------------------------------------------------- 3.15 AUTH, 4.12

/// [MQTT-3.15.1-1] an AUTH with a fixed-header flag set (`F1 00`) is malformed: DISCONNECT
/// 0x81 (a well-formed AUTH outside enhanced authentication is a protocol error, 0x82).
#[test]
fn v5_mqtt_3_15_1_1_auth_flags_malformed() {
    let broker = start();
    let addr = broker.local_addr();
    let mut c = Raw::v5(addr, "flagged", &[]);
    c.send_raw(&[0xF1, 0x00]);
    let f = c.disconnect_frame();
    // [MQTT-3.15.1-1]
    assert_eq!(
        disconnect_reason(&f),
        0x81,
        "[MQTT-3.15.1-1] AUTH flags 1 is malformed"
    );
    assert!(c.closed(), "[MQTT-3.15.1-1] closed");
    let mut c = Raw::v5(addr, "plain", &[]);
    c.send_raw(&[0xF0, 0x00]);
    let f = c.disconnect_frame();
    assert_eq!(disconnect_reason(&f), 0x82);
    assert!(c.closed());
}

/// [MQTT-4.12.0-4] an authentication the broker does not accept is refused with a CONNACK of
/// 0x80 or above and closed, though the client already sent the next step of the exchange
/// (an AUTH 0x18): no AUTH comes back.
#[test]
fn v5_mqtt_4_12_0_4_rejected_authentication_closes() {
    let broker = start();
    let addr = broker.local_addr();
    let method = Property::AuthenticationMethod("SCRAM-SHA-256".into());
    let data = Property::AuthenticationData(Bytes::from_static(b"n,,n=user,r=abc"));
    let mut c = Raw::open(addr);
    let mut bytes = encode(&Packet::Connect(Box::new(Client::v5(
        "auth",
        &[method.clone(), data.clone()],
    ))));
    let mut auth = Disconnect::new(ReasonCode::CONTINUE_AUTHENTICATION);
    auth.properties.push(method);
    auth.properties.push(data);
    bytes.extend(encode(&Packet::Auth(auth)));
    c.send_raw(&bytes);
    let ack = connack_of(&c.frame());
    // [MQTT-4.12.0-4]
    assert!(
        ack.code.0 >= 0x80,
        "[MQTT-4.12.0-4] refused with CONNACK >= 0x80: {ack:?}"
    );
    assert!(!ack.session_present);
    // [MQTT-4.12.0-4]
    assert!(c.closed(), "[MQTT-4.12.0-4] closed, no AUTH");
    assert_eq!(sessions(&broker), 0);
}

/// [MQTT-4.12.1-2] a re-authentication the broker cannot accept (AUTH 0x19 with a method, on a
/// connection that did no enhanced authentication) gets DISCONNECT and the close.
#[test]
fn v5_mqtt_4_12_1_2_failed_reauthentication_disconnects() {
    let broker = start();
    let mut c = Client::connect_v5(broker.local_addr(), "reauth", &[]);
    let mut props = vec![0x15];
    props.extend_from_slice(&str_field(b"SCRAM-SHA-1"));
    let mut body = vec![0x19, props.len() as u8];
    body.extend_from_slice(&props);
    c.send_raw(&frame(0xF0, &body));
    let reason = expect_server_disconnect(&mut c, "4.12.1-2");
    assert!(
        reason >= 0x80,
        "[MQTT-4.12.1-2] re-authentication refused with DISCONNECT {reason:#x}, then closed"
    );
}

// ---------------------------------------------------------------- 4 operational behaviour

/// [MQTT-4.1.0-1] a session with expiry 0 keeps its state while connected: a QoS 2 id awaiting
/// PUBREL survives (a re-sent PUBLISH is not routed again, PUBREL completes with 0x00) and
/// the subscription keeps delivering, across several of the broker's sweeps.
#[test]
fn v5_mqtt_4_1_0_1_state_kept_while_connected() {
    let broker = start();
    let addr = broker.local_addr();
    let mut w = watcher(addr, "w", "keep/q");
    let mut c = Client::connect_v5(addr, "holder", &[]);
    assert_eq!(
        c.subscribe_opts(1, &[("keep/t", opts(QoS::AtLeastOnce))], None),
        [1]
    );
    c.send_publish("keep/q", b"once", QosPid::ExactlyOnce(pid(9)), false, &[]);
    assert_eq!(c.recv(), Some(Packet::PubRec(Ack::new(pid(9)))));
    // Several sweeps (every 100 ms) pass while the connection is open and quiet.
    c.expect_nothing();
    c.expect_nothing();
    let mut again = Publish::new(topic("keep/q"), Bytes::from_static(b"once"));
    again.qos = QosPid::ExactlyOnce(pid(9));
    again.dup = true;
    c.send(&Packet::Publish(again));
    assert_eq!(c.recv(), Some(Packet::PubRec(Ack::new(pid(9)))));
    c.send(&Packet::PubRel(Ack::new(pid(9))));
    match c.recv() {
        // [MQTT-4.1.0-1]
        Some(Packet::PubComp(a)) => assert_eq!(
            (a.packet_id, a.reason.0),
            (pid(9), 0x00),
            "[MQTT-4.1.0-1] the id awaiting PUBREL was kept"
        ),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    assert_eq!(&w.recv_publish_ack().payload[..], b"once");
    // [MQTT-4.1.0-1]
    w.expect_nothing();
    let mut p = Client::connect_v5(addr, "p", &[]);
    p.send_publish("keep/t", b"still", QosPid::AtLeastOnce(pid(1)), false, &[]);
    assert!(matches!(p.recv(), Some(Packet::PubAck(_))));
    // [MQTT-4.1.0-1]
    assert_eq!(
        &c.recv_publish_ack().payload[..],
        b"still",
        "[MQTT-4.1.0-1] subscription kept"
    );
}

/// [MQTT-4.1.0-1] a Session Expiry 0 client keeps its state for the whole connection: an
/// inbound QoS 2 id awaiting PUBREL survives other traffic (QoS 1 PUBLISHes and PINGREQs) and
/// completes once, and its subscription still delivers.
#[test]
fn v5_mqtt_4_1_0_1_state_kept_across_other_traffic() {
    let broker = start();
    let addr = broker.local_addr();
    let mut w = watcher(addr, "w", "q2/#");
    let mut c = Client::connect_v5(addr, "c", &[]);
    assert_eq!(
        c.subscribe_opts(1, &[("mine/#", opts(QoS::AtLeastOnce))], None),
        [1]
    );
    c.send_publish("q2/a", b"once", QosPid::ExactlyOnce(pid(9)), false, &[]);
    assert!(matches!(c.recv(), Some(Packet::PubRec(a)) if a.packet_id == pid(9)));
    // Other traffic in between.
    for i in 0..5u16 {
        c.publish("elsewhere", b"x", QoS::AtLeastOnce, false, 20 + i);
        c.send_raw(&[0xC0, 0x00]);
        assert!(matches!(c.recv(), Some(Packet::PingResp)));
    }
    c.send(&Packet::PubRel(Ack::new(pid(9))));
    assert!(
        matches!(c.recv(), Some(Packet::PubComp(a)) if a.packet_id == pid(9)),
        "[MQTT-4.1.0-1] the QoS 2 id was still held"
    );
    let got = w.recv_publish_ack();
    assert_eq!(&got.payload[..], b"once");
    if let Some(p) = w.recv_within(QUIET) {
        panic!("[MQTT-4.1.0-1] delivered once, got {p:?}");
    }
    let mut p = Client::connect_v5(addr, "p", &[]);
    p.publish("mine/1", b"still", QoS::AtLeastOnce, false, 1);
    let got = c.recv_publish_ack();
    assert_eq!(
        &got.payload[..],
        b"still",
        "[MQTT-4.1.0-1] subscription kept"
    );
}

/// [MQTT-4.2-1] (Appendix B: MQTT-4.2.0-1) MQTT runs over an ordered, lossless, two-way byte
/// stream: plain TCP carries 200 QoS 1 messages of every size up to 3 KB and every byte value,
/// each intact and in order, with their PUBACKs in order the other way.
#[test]
fn v5_mqtt_4_2_1_tcp_carries_mqtt_end_to_end() {
    const N: usize = 200;
    let broker = start();
    let addr = broker.local_addr();
    let mut sink = watcher(addr, "sink", "stream/#");
    let mut source = Client::connect_v5(addr, "source", &[]);
    let payload = |i: usize| -> Vec<u8> { (0..(i * 97) % 3000).map(|j| (i + j) as u8).collect() };
    for i in 0..N {
        source.send_publish(
            "stream/x",
            &payload(i),
            QosPid::AtLeastOnce(pid(i as u16 + 1)),
            false,
            &[],
        );
    }
    for i in 0..N {
        match source.recv() {
            // [MQTT-4.2-1]
            Some(Packet::PubAck(a)) => {
                assert_eq!(a.packet_id, pid(i as u16 + 1), "[MQTT-4.2-1] PUBACK {i}")
            }
            other => panic!("[MQTT-4.2-1] expected PUBACK {i}, got {other:?}"),
        }
    }
    for i in 0..N {
        let got = sink.recv_publish_ack();
        // [MQTT-4.2-1]
        assert_eq!(
            &got.payload[..],
            &payload(i)[..],
            "[MQTT-4.2-1] message {i} intact and in order"
        );
    }
    sink.expect_nothing();
}
