//! MQTT 5.0 from a client socket, the message side: PUBLISH flags, retained messages, topic
//! names and filters, the QoS 1 / QoS 2 exchanges in both directions and their re-sending on
//! resume, SUBSCRIBE / UNSUBSCRIBE and their acks, overlapping and shared subscriptions,
//! ordering, flow control, and acks under a small Maximum Packet Size.
//!
//! Every wait has a deadline; nothing sleeps to synchronise. The two tests about Message
//! Expiry let an interval run out, since no event marks an expiry.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use vireo_codec::{
    Ack, Bytes, BytesMut, Packet, PacketId, Properties, Property, ProtocolVersion, Publish, QoS,
    QosPid, ReasonCode, Subscribe, SubscriptionOptions, Unsubscribe,
};

// ---------------------------------------------------------------- helpers

/// Sends a PUBLISH with the DUP flag as given.
fn send_dup(c: &mut Client, t: &str, payload: &[u8], qos: QosPid, dup: bool, props: &[Property]) {
    let mut p = Publish::new(topic(t), Bytes::copy_from_slice(payload));
    p.qos = qos;
    p.dup = dup;
    for prop in props {
        p.properties.push(prop.clone());
    }
    c.send(&Packet::Publish(p));
}

fn puback(c: &mut Client) -> Ack {
    match c.recv() {
        Some(Packet::PubAck(a)) => a,
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

fn pubrec(c: &mut Client) -> Ack {
    match c.recv() {
        Some(Packet::PubRec(a)) => a,
        other => panic!("expected PUBREC, got {other:?}"),
    }
}

fn pubrel(c: &mut Client) -> Ack {
    match c.recv() {
        Some(Packet::PubRel(a)) => a,
        other => panic!("expected PUBREL, got {other:?}"),
    }
}

fn pubcomp(c: &mut Client) -> Ack {
    match c.recv() {
        Some(Packet::PubComp(a)) => a,
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
}

fn unsuback(c: &mut Client) -> (PacketId, Vec<u8>) {
    match c.recv() {
        Some(Packet::UnsubAck(a)) => (a.packet_id, a.codes.iter().map(|c| c.0).collect()),
        other => panic!("expected UNSUBACK, got {other:?}"),
    }
}

/// Publishes QoS 1 and waits for the PUBACK.
fn publish1(c: &mut Client, t: &str, payload: &[u8], retain: bool, id: u16) {
    c.send_publish(t, payload, QosPid::AtLeastOnce(pid(id)), retain, &[]);
    assert_eq!(puback(c).packet_id, pid(id));
}

/// Everything that arrives until the line is quiet for [`QUIET`].
fn drain(c: &mut Client) -> Vec<Packet> {
    let mut got = Vec::new();
    while let Some(p) = c.recv_within(QUIET) {
        got.push(p);
    }
    got
}

/// The DISCONNECT the broker sends before closing, as the very next packet (no ack or
/// SUBACK for the offending packet first), then the close.
fn disconnect_next(c: &mut Client) -> u8 {
    match c.recv() {
        Some(Packet::Disconnect(d)) => {
            assert!(c.closed_within(WAIT, false), "close after DISCONNECT");
            d.reason.0
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
}

/// A PINGREQ answered with a PINGRESP as the next packet: nothing was queued before it.
fn ping(c: &mut Client) {
    c.send_raw(&[0xC0, 0x00]);
    assert_eq!(c.recv(), Some(Packet::PingResp));
}

fn unsubscribe_packet(id: u16, filters: &[&str]) -> Packet {
    Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(id),
        properties: Properties::new(),
        filters: filters.iter().map(|f| (*f).into()).collect(),
    })
}

// ---------------------------------------------------------------- PUBLISH: fixed header

/// [MQTT-3.3.1-4] a PUBLISH with QoS bits 11 is malformed: DISCONNECT 0x81, nothing routed.
#[test]
fn v5_mqtt_3_3_1_4_qos_3_is_malformed() {
    let broker = start();
    let addr = broker.local_addr();
    let mut w = subscriber(addr, "w", "t", QoS::AtLeastOnce);
    let mut c = Client::connect_v5(addr, "c", &[]);
    // PUBLISH QoS 3, topic "t", packet id 1, no properties.
    c.send_raw(&[0x36, 0x06, 0x00, 0x01, b't', 0x00, 0x01, 0x00]);
    assert_eq!(disconnect_next(&mut c), 0x81, "[MQTT-3.3.1-4]"); // [MQTT-3.3.1-4]
    w.expect_nothing();
}

/// [MQTT-3.3.1-2] a QoS 0 PUBLISH never has DUP: one that has is malformed (DISCONNECT 0x81,
/// as Mosquitto), and QoS 0 deliveries the broker sends have DUP 0.
#[test]
fn v5_mqtt_3_3_1_2_qos0_never_has_dup() {
    let broker = start();
    let addr = broker.local_addr();
    let mut w = subscriber(addr, "w", "d0", QoS::AtMostOnce);
    let mut p = Client::connect_v5(addr, "p", &[]);
    for (i, qos) in [QosPid::AtMostOnce, QosPid::AtLeastOnce(pid(1))]
        .into_iter()
        .enumerate()
    {
        send_dup(
            &mut p,
            "d0",
            &[i as u8],
            qos,
            qos != QosPid::AtMostOnce,
            &[],
        );
        let got = w.recv_publish();
        assert_eq!(got.qos, QosPid::AtMostOnce);
        assert!(!got.dup, "[MQTT-3.3.1-2] QoS 0 delivery with DUP 0"); // [MQTT-3.3.1-2]
    }
    assert_eq!(puback(&mut p).packet_id, pid(1));
    // PUBLISH QoS 0 with DUP set, topic "d0", no properties.
    p.send_raw(&[0x38, 0x05, 0x00, 0x02, b'd', b'0', 0x00]);
    assert_eq!(disconnect_next(&mut p), 0x81, "[MQTT-3.3.1-2] DUP on QoS 0"); // [MQTT-3.3.1-2]
    w.expect_nothing();
}

/// [MQTT-3.3.1-3] the DUP a subscriber sees says whether *that* packet is a re-send: a
/// PUBLISH that arrived with DUP 1 goes out for the first time with DUP 0.
#[test]
fn v5_mqtt_3_3_1_3_outgoing_dup_is_independent() {
    let broker = start();
    let addr = broker.local_addr();
    let mut w = subscriber(addr, "w", "dup", QoS::ExactlyOnce);
    let mut p = Client::connect_v5(addr, "p", &[]);
    send_dup(&mut p, "dup", b"1", QosPid::AtLeastOnce(pid(1)), true, &[]);
    assert_eq!(puback(&mut p).packet_id, pid(1));
    send_dup(&mut p, "dup", b"2", QosPid::ExactlyOnce(pid(2)), true, &[]);
    assert_eq!(pubrec(&mut p).packet_id, pid(2));
    for want in [b"1", b"2"] {
        let got = w.recv_publish_ack();
        assert_eq!(&got.payload[..], want);
        assert!(!got.dup, "[MQTT-3.3.1-3] first copy has DUP 0"); // [MQTT-3.3.1-3]
    }
}

// ---------------------------------------------------------------- retained messages

/// [MQTT-3.3.1-5] a retained PUBLISH replaces the topic's retained message, its QoS too;
/// [MQTT-3.3.1-8] a non-retained one leaves it alone and is not stored.
#[test]
fn v5_mqtt_3_3_1_5_retained_replaced_not_by_plain_publish() {
    let broker = start();
    let addr = broker.local_addr();
    let mut p = Client::connect_v5(addr, "p", &[]);
    p.send_publish("ret/a", b"m1", QosPid::AtMostOnce, true, &[]);
    publish1(&mut p, "ret/a", b"m2", true, 1);
    publish1(&mut p, "ret/a", b"plain", false, 2);
    publish1(&mut p, "ret/b", b"keep", true, 3);
    publish1(&mut p, "ret/b", b"live", false, 4);
    let mut s = Client::connect_v5(addr, "s", &[]);
    assert_eq!(
        s.subscribe_opts(1, &[("ret/+", opts(QoS::ExactlyOnce))], None),
        [2]
    );
    let mut got: Vec<(String, Vec<u8>, QoS)> = (0..2)
        .map(|_| {
            let m = s.recv_publish_ack();
            assert!(m.retain);
            (m.topic.as_str().to_owned(), m.payload.to_vec(), m.qos.qos())
        })
        .collect();
    got.sort();
    assert_eq!(
        got[0],
        ("ret/a".into(), b"m2".to_vec(), QoS::AtLeastOnce),
        "[MQTT-3.3.1-5] only the newest retained message, at its QoS"
    ); // [MQTT-3.3.1-5]
    assert_eq!(
        got[1],
        ("ret/b".into(), b"keep".to_vec(), QoS::AtLeastOnce),
        "[MQTT-3.3.1-8] a RETAIN 0 PUBLISH leaves the retained message"
    ); // [MQTT-3.3.1-8]
    s.expect_nothing();
}

/// [MQTT-3.3.1-7] a retained PUBLISH with an empty payload is delivered live but never stored:
/// a later subscriber gets nothing for the topic.
#[test]
fn v5_mqtt_3_3_1_7_empty_retained_is_not_stored() {
    let broker = start();
    let addr = broker.local_addr();
    let mut live = subscriber(addr, "live", "empty/#", QoS::AtLeastOnce);
    let mut p = Client::connect_v5(addr, "p", &[]);
    publish1(&mut p, "empty/a", b"old", true, 1);
    publish1(&mut p, "empty/a", b"", true, 2);
    publish1(&mut p, "empty/b", b"", true, 3);
    assert_eq!(&live.recv_publish_ack().payload[..], b"old");
    assert!(live.recv_publish_ack().payload.is_empty());
    assert!(live.recv_publish_ack().payload.is_empty());
    let mut s = Client::connect_v5(addr, "s", &[]);
    assert_eq!(
        s.subscribe_opts(1, &[("empty/#", opts(QoS::AtLeastOnce))], None),
        [1]
    );
    assert_eq!(
        s.recv_within(QUIET),
        None,
        "[MQTT-3.3.1-7] no retained message with an empty payload"
    ); // [MQTT-3.3.1-7]
}

// ---------------------------------------------------------------- topic names and filters

/// [MQTT-3.3.2-1] the Topic Name is a UTF-8 string: ill-formed bytes are malformed
/// (DISCONNECT 0x81); [MQTT-4.7.3-2] so is U+0000 in a topic name or filter; [MQTT-3.3.2-13]
/// a Response Topic and [MQTT-3.3.2-19] a Content Type that are not UTF-8 likewise.
#[test]
fn v5_mqtt_3_3_2_1_strings_in_publish_and_subscribe_are_utf8() {
    let broker = start();
    let addr = broker.local_addr();
    let mut w = subscriber(addr, "w", "#", QoS::AtMostOnce);
    let cases: [(&[u8], &str); 5] = [
        // PUBLISH, topic C3 28 (ill-formed), no properties.
        (
            &[0x30, 0x05, 0x00, 0x02, 0xC3, 0x28, 0x00],
            "[MQTT-3.3.2-1] topic C3 28",
        ),
        // PUBLISH, topic "a\0".
        (
            &[0x30, 0x05, 0x00, 0x02, b'a', 0x00, 0x00],
            "[MQTT-4.7.3-2] topic with U+0000",
        ),
        // SUBSCRIBE id 1, filter "a\0/#" QoS 0.
        (
            &[
                0x82, 0x0A, 0x00, 0x01, 0x00, 0x00, 0x04, b'a', 0x00, b'/', b'#', 0x00,
            ],
            "[MQTT-4.7.3-2] filter with U+0000",
        ),
        // PUBLISH "t", Response Topic C3 28.
        (
            &[
                0x30, 0x09, 0x00, 0x01, b't', 0x05, 0x08, 0x00, 0x02, 0xC3, 0x28,
            ],
            "[MQTT-3.3.2-13] Response Topic C3 28",
        ),
        // PUBLISH "t", Content Type ED A0 80 (an encoded surrogate).
        (
            &[
                0x30, 0x0A, 0x00, 0x01, b't', 0x06, 0x03, 0x00, 0x03, 0xED, 0xA0, 0x80,
            ],
            "[MQTT-3.3.2-19] Content Type ED A0 80",
        ),
    ];
    for (i, (bytes, what)) in cases.iter().enumerate() {
        let mut c = Client::connect_v5(addr, &format!("bad{i}"), &[]);
        c.send_raw(bytes);
        // [MQTT-3.3.2-1] [MQTT-4.7.3-2] [MQTT-3.3.2-13] [MQTT-3.3.2-19]
        assert_eq!(disconnect_next(&mut c), 0x81, "{what}: malformed");
    }
    w.expect_nothing();
}

/// [MQTT-3.3.2-2] [MQTT-4.7.0-1] wildcards never appear in a Topic Name: a PUBLISH to `a/+`
/// or `a/#` gets DISCONNECT 0x90 and is not delivered; the same strings are valid filters.
#[test]
fn v5_mqtt_4_7_0_1_no_wildcards_in_topic_names() {
    let broker = start();
    let addr = broker.local_addr();
    let mut w = Client::connect_v5(addr, "w", &[]);
    assert_eq!(
        w.subscribe_opts(
            1,
            &[
                ("a/+", opts(QoS::AtMostOnce)),
                ("a/#", opts(QoS::AtMostOnce))
            ],
            None
        ),
        [0, 0],
        "[MQTT-4.7.0-1] wildcards are fine in filters"
    ); // [MQTT-4.7.0-1]
    for (i, name) in [&b"a/+"[..], b"a/#"].into_iter().enumerate() {
        let mut c = Client::connect_v5(addr, &format!("p{i}"), &[]);
        let mut raw = vec![0x30, 0x06, 0x00, 0x03];
        raw.extend_from_slice(name);
        raw.push(0x00);
        c.send_raw(&raw);
        assert_eq!(
            disconnect_next(&mut c),
            0x90,
            "[MQTT-3.3.2-2] [MQTT-4.7.0-1] wildcard in a topic name"
        ); // [MQTT-3.3.2-2] [MQTT-4.7.0-1]
    }
    w.expect_nothing();
}

/// [MQTT-3.3.2-3] a PUBLISH sent to a subscriber has a topic that matches its filter.
#[test]
fn v5_mqtt_3_3_2_3_delivered_topic_matches_the_filter() {
    let broker = start();
    let addr = broker.local_addr();
    let mut s = subscriber(addr, "s", "s/+/t", QoS::AtLeastOnce);
    let mut p = Client::connect_v5(addr, "p", &[]);
    for (i, t) in ["s/1/2/t", "s/t", "s/1/t", "s/1/t/x", "x/1/t", "s//t"]
        .into_iter()
        .enumerate()
    {
        p.send_publish(
            t,
            t.as_bytes(),
            QosPid::AtLeastOnce(pid(i as u16 + 1)),
            false,
            &[],
        );
        puback(&mut p);
    }
    for want in ["s/1/t", "s//t"] {
        let got = s.recv_publish_ack();
        assert_eq!(
            got.topic.as_str(),
            want,
            "[MQTT-3.3.2-3] only topics matching s/+/t"
        ); // [MQTT-3.3.2-3]
    }
    s.expect_nothing();
}

/// [MQTT-4.7.1-1] `#` stands alone in the last level; [MQTT-4.7.1-2] `+` fills a whole
/// level: other placements get SUBACK 0x8F, valid ones are granted, in one SUBSCRIBE.
#[test]
fn v5_mqtt_4_7_1_1_wildcard_placement() {
    let broker = start();
    let mut c = Client::connect_v5(broker.local_addr(), "wild", &[]);
    let filters = [
        ("a/#/b", 0x8F, "[MQTT-4.7.1-1]"),
        ("a#", 0x8F, "[MQTT-4.7.1-1]"),
        ("#/", 0x8F, "[MQTT-4.7.1-1]"),
        ("a/b#", 0x8F, "[MQTT-4.7.1-1]"),
        ("#", 0x01, "[MQTT-4.7.1-1]"),
        ("a/#", 0x01, "[MQTT-4.7.1-1]"),
        ("a+", 0x8F, "[MQTT-4.7.1-2]"),
        ("a/+b", 0x8F, "[MQTT-4.7.1-2]"),
        ("+a/b", 0x8F, "[MQTT-4.7.1-2]"),
        ("+", 0x01, "[MQTT-4.7.1-2]"),
        ("+/+", 0x01, "[MQTT-4.7.1-2]"),
        ("a/+/c", 0x01, "[MQTT-4.7.1-2]"),
        ("+/#", 0x01, "[MQTT-4.7.1-2]"),
    ];
    let request: Vec<(&str, SubscriptionOptions)> = filters
        .iter()
        .map(|(f, _, _)| (*f, opts(QoS::AtLeastOnce)))
        .collect();
    let codes = c.subscribe_opts(1, &request, None);
    assert_eq!(codes.len(), filters.len());
    for ((filter, want, tag), got) in filters.iter().zip(codes) {
        // [MQTT-4.7.1-1] [MQTT-4.7.1-2]
        assert_eq!(got, *want, "{tag} filter {filter:?}");
    }
}

/// [MQTT-4.7.2-1] filters starting with a wildcard do not match topics starting with `$`;
/// a filter starting with `$` does.
#[test]
fn v5_mqtt_4_7_2_1_dollar_topics_need_an_explicit_filter() {
    let broker = start();
    let addr = broker.local_addr();
    let mut all = subscriber(addr, "all", "#", QoS::AtLeastOnce);
    let mut plus = subscriber(addr, "plus", "+/x", QoS::AtLeastOnce);
    let mut dollar = subscriber(addr, "dollar", "$foo/#", QoS::AtLeastOnce);
    let mut p = Client::connect_v5(addr, "p", &[]);
    p.send_publish("$foo/x", b"d", QosPid::AtLeastOnce(pid(1)), false, &[]);
    puback(&mut p);
    p.send_publish("foo/x", b"n", QosPid::AtLeastOnce(pid(2)), false, &[]);
    puback(&mut p);
    assert_eq!(dollar.recv_publish_ack().topic.as_str(), "$foo/x");
    for c in [&mut all, &mut plus] {
        let got = c.recv_publish_ack();
        assert_eq!(
            got.topic.as_str(),
            "foo/x",
            "[MQTT-4.7.2-1] no $ topic through # or +"
        ); // [MQTT-4.7.2-1]
        c.expect_nothing();
    }
    dollar.expect_nothing();
}

/// [MQTT-4.7.3-3] a topic of 65,535 bytes (the most a length prefix says) is delivered intact
/// to an exact filter of the same length; a length prefix past the end of the packet is
/// malformed (DISCONNECT 0x81).
#[test]
fn v5_mqtt_4_7_3_3_longest_topic() {
    let broker = start();
    let addr = broker.local_addr();
    let long = "l".repeat(65_535);
    let mut s = subscriber(addr, "s", &long, QoS::AtLeastOnce);
    let mut p = Client::connect_v5(addr, "p", &[]);
    publish1(&mut p, &long, b"long", false, 1);
    let got = s.recv_publish_ack();
    assert_eq!(got.topic.len(), 65_535, "[MQTT-4.7.3-3] intact"); // [MQTT-4.7.3-3]
    assert_eq!(got.topic.as_str(), long, "[MQTT-4.7.3-3] intact");
    assert_eq!(&got.payload[..], b"long");
    // PUBLISH whose topic length says 9 bytes, with 3 left in the packet.
    p.send_raw(&[0x30, 0x05, 0x00, 0x09, b'a', b'b', 0x00]);
    assert_eq!(
        disconnect_next(&mut p),
        0x81,
        "[MQTT-4.7.3-3] length prefix past the packet"
    ); // [MQTT-4.7.3-3]
    s.expect_nothing();
}

/// [MQTT-4.7.3-4] matching compares the exact bytes: no Unicode normalisation, no case
/// folding.
#[test]
fn v5_mqtt_4_7_3_4_no_normalisation() {
    let broker = start();
    let addr = broker.local_addr();
    let nfc = "caf\u{E9}";
    let mut s = subscriber(addr, "s", nfc, QoS::AtLeastOnce);
    let mut p = Client::connect_v5(addr, "p", &[]);
    for (i, t) in ["cafe\u{301}", "CAF\u{C9}", "Caf\u{E9}", nfc]
        .into_iter()
        .enumerate()
    {
        publish1(&mut p, t, t.as_bytes(), false, i as u16 + 1);
    }
    let got = s.recv_publish_ack();
    assert_eq!(
        got.topic.as_bytes(),
        nfc.as_bytes(),
        "[MQTT-4.7.3-4] only the exact bytes"
    ); // [MQTT-4.7.3-4]
    s.expect_nothing();
}

// ---------------------------------------------------------------- QoS: the broker receives

/// [MQTT-3.3.4-1] the broker answers a PUBLISH as its QoS says: nothing, PUBACK
/// [MQTT-4.3.2-4] or PUBREC [MQTT-4.3.3-8] with the PUBLISH's id; [MQTT-4.3.2-5] after the
/// PUBACK, the same id (even with DUP) is a new message; [MQTT-4.3.3-10] before PUBREL a
/// repeat is acknowledged again and not delivered again; [MQTT-4.3.3-12] after PUBCOMP the id
/// names a new message.
#[test]
fn v5_mqtt_3_3_4_1_the_broker_as_receiver() {
    let broker = start();
    let addr = broker.local_addr();
    let mut w = subscriber(addr, "w", "in", QoS::ExactlyOnce);
    let mut p = Client::connect_v5(addr, "p", &[]);
    p.send_publish("in", b"q0", QosPid::AtMostOnce, false, &[]);
    assert_eq!(&w.recv_publish().payload[..], b"q0");
    ping(&mut p); // [MQTT-3.3.4-1] nothing answered the QoS 0 PUBLISH
    p.send_publish("in", b"q1", QosPid::AtLeastOnce(pid(5)), false, &[]);
    let ack = puback(&mut p);
    assert_eq!(
        ack.packet_id,
        pid(5),
        "[MQTT-3.3.4-1] [MQTT-4.3.2-4] PUBACK id 5"
    ); // [MQTT-3.3.4-1] [MQTT-4.3.2-4]
    assert_eq!(&w.recv_publish_ack().payload[..], b"q1");
    send_dup(
        &mut p,
        "in",
        b"q1 again",
        QosPid::AtLeastOnce(pid(5)),
        true,
        &[],
    );
    assert_eq!(puback(&mut p).packet_id, pid(5), "[MQTT-4.3.2-5]");
    assert_eq!(
        &w.recv_publish_ack().payload[..],
        b"q1 again",
        "[MQTT-4.3.2-5] a new message after the PUBACK"
    ); // [MQTT-4.3.2-5]

    p.send_publish("in", b"q2", QosPid::ExactlyOnce(pid(9)), false, &[]);
    let rec = pubrec(&mut p);
    assert_eq!(
        rec.packet_id,
        pid(9),
        "[MQTT-3.3.4-1] [MQTT-4.3.3-8] PUBREC id 9"
    ); // [MQTT-3.3.4-1] [MQTT-4.3.3-8]
    assert_eq!(rec.reason.0, 0x00);
    send_dup(&mut p, "in", b"q2", QosPid::ExactlyOnce(pid(9)), true, &[]);
    assert_eq!(
        pubrec(&mut p).packet_id,
        pid(9),
        "[MQTT-4.3.3-10] a repeat before PUBREL gets PUBREC"
    ); // [MQTT-4.3.3-10]
    assert_eq!(&w.recv_publish_ack().payload[..], b"q2");
    assert_eq!(
        w.recv_within(QUIET),
        None,
        "[MQTT-4.3.3-10] the repeat is not delivered again"
    ); // [MQTT-4.3.3-10]
    p.send(&Packet::PubRel(Ack::new(pid(9))));
    let comp = pubcomp(&mut p);
    assert_eq!((comp.packet_id, comp.reason.0), (pid(9), 0x00));
    p.send_publish("in", b"q2 new", QosPid::ExactlyOnce(pid(9)), false, &[]);
    assert_eq!(pubrec(&mut p).reason.0, 0x00);
    assert_eq!(
        &w.recv_publish_ack().payload[..],
        b"q2 new",
        "[MQTT-4.3.3-12] the id names a new message after PUBCOMP"
    ); // [MQTT-4.3.3-12]
    p.send(&Packet::PubRel(Ack::new(pid(9))));
    assert_eq!(pubcomp(&mut p).reason.0, 0x00);
    w.expect_nothing();
}

/// [MQTT-4.3.3-9] after a PUBREC with a failure code (0x99, payload not UTF-8), a PUBLISH
/// with that id is a new message: PUBREC 0x00 and delivered.
#[test]
fn v5_mqtt_4_3_3_9_failed_pubrec_frees_the_id() {
    let broker = start();
    let addr = broker.local_addr();
    let mut w = subscriber(addr, "w", "pf2", QoS::AtLeastOnce);
    let mut p = Client::connect_v5(addr, "p", &[]);
    let utf8 = [Property::PayloadFormatIndicator(1)];
    p.send_publish(
        "pf2",
        &[0xFF, 0xFE],
        QosPid::ExactlyOnce(pid(11)),
        false,
        &utf8,
    );
    let rec = pubrec(&mut p);
    assert_eq!((rec.packet_id, rec.reason.0), (pid(11), 0x99));
    w.expect_nothing();
    p.send_publish("pf2", b"fine", QosPid::ExactlyOnce(pid(11)), false, &utf8);
    let rec = pubrec(&mut p);
    assert_eq!(
        (rec.packet_id, rec.reason.0),
        (pid(11), 0x00),
        "[MQTT-4.3.3-9] a new message"
    ); // [MQTT-4.3.3-9]
    assert_eq!(
        &w.recv_publish_ack().payload[..],
        b"fine",
        "[MQTT-4.3.3-9] delivered"
    );
    p.send(&Packet::PubRel(Ack::new(pid(11))));
    assert_eq!(pubcomp(&mut p).reason.0, 0x00);
}

/// [MQTT-4.3.3-13] an inbound QoS 2 exchange completes even when the message expired in
/// between; [MQTT-4.3.3-7] an outbound QoS 2 PUBLISH already sent is re-sent on resume after
/// its Message Expiry Interval ran out, not dropped.
#[test]
fn v5_mqtt_4_3_3_7_expiry_does_not_cut_qos2_short() {
    let broker = start();
    let addr = broker.local_addr();
    let (mut s, _) = connect_persistent(addr, "s");
    assert_eq!(
        s.subscribe_opts(1, &[("exp2", opts(QoS::ExactlyOnce))], None),
        [2]
    );
    let mut p = Client::connect_v5(addr, "p", &[]);
    let expiry = [Property::MessageExpiryInterval(1)];
    p.send_publish("exp2", b"x", QosPid::ExactlyOnce(pid(3)), false, &expiry);
    assert_eq!(pubrec(&mut p).packet_id, pid(3));
    let first = s.recv_publish(); // not PUBREC'd
    let id = first.qos.packet_id().unwrap();
    s.drop_connection();
    // No event marks an expiry: let the interval run out.
    std::thread::sleep(Duration::from_millis(1100));
    p.send(&Packet::PubRel(Ack::new(pid(3))));
    let comp = pubcomp(&mut p);
    assert_eq!(
        (comp.packet_id, comp.reason.0),
        (pid(3), 0x00),
        "[MQTT-4.3.3-13] PUBCOMP after the expiry"
    ); // [MQTT-4.3.3-13]
    let (mut s, present) = connect_persistent(addr, "s");
    assert!(present);
    let again = s.recv_publish();
    assert_eq!(
        (again.qos, again.dup),
        (QosPid::ExactlyOnce(id), true),
        "[MQTT-4.3.3-7] re-sent, not dropped as expired"
    ); // [MQTT-4.3.3-7]
    s.send(&Packet::PubRec(Ack::new(id)));
    assert_eq!(pubrel(&mut s).packet_id, id);
    s.send(&Packet::PubComp(Ack::new(id)));
    s.expect_nothing();
}

// ---------------------------------------------------------------- QoS: the broker sends

/// [MQTT-4.3.1-1] a subscriber granted QoS 0 gets every message at QoS 0 with DUP 0,
/// whatever the published QoS.
#[test]
fn v5_mqtt_4_3_1_1_qos0_delivery() {
    let broker = start();
    let addr = broker.local_addr();
    let mut s = subscriber(addr, "s", "z", QoS::AtMostOnce);
    let mut p = Client::connect_v5(addr, "p", &[]);
    p.send_publish("z", b"0", QosPid::AtMostOnce, false, &[]);
    publish1(&mut p, "z", b"1", false, 1);
    p.publish("z", b"2", QoS::ExactlyOnce, false, 2);
    for want in [b"0", b"1", b"2"] {
        let got = s.recv_publish();
        assert_eq!(&got.payload[..], want);
        assert_eq!(
            (got.qos, got.dup),
            (QosPid::AtMostOnce, false),
            "[MQTT-4.3.1-1] QoS 0, DUP 0"
        ); // [MQTT-4.3.1-1]
    }
}

/// [MQTT-3.8.4-8] a delivery goes at the lower of the published QoS and the granted QoS:
/// every pair of 0..2.
#[test]
fn v5_mqtt_3_8_4_8_delivered_qos_is_the_minimum() {
    let broker = start();
    let addr = broker.local_addr();
    let qos = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];
    let mut subs: Vec<Client> = qos
        .iter()
        .map(|&g| subscriber(addr, &format!("g{}", g as u8), "mx", g))
        .collect();
    let mut p = Client::connect_v5(addr, "p", &[]);
    for (i, &published) in qos.iter().enumerate() {
        p.publish("mx", &[i as u8], published, false, i as u16 + 1);
        for (s, &granted) in subs.iter_mut().zip(&qos) {
            let got = s.recv_publish_ack();
            assert_eq!(got.payload[0], i as u8);
            assert_eq!(
                got.qos.qos(),
                published.min(granted),
                "[MQTT-3.8.4-8] published {published:?}, granted {granted:?}"
            ); // [MQTT-3.8.4-8]
        }
    }
    for s in &mut subs {
        s.expect_nothing();
    }
}

/// Retransmission, sender side: [MQTT-4.3.2-2] [MQTT-4.3.3-2] first sends have DUP 0;
/// [MQTT-4.3.2-1] [MQTT-4.3.3-1] concurrent deliveries have distinct ids; [MQTT-4.4.0-1]
/// nothing is re-sent on a live connection, and on a Clean Start 0 resume exactly the
/// unacknowledged: [MQTT-3.3.1-1] [MQTT-4.3.2-3] the QoS 1 PUBLISH without PUBACK (DUP 1,
/// same id), [MQTT-4.3.3-3] the QoS 2 PUBLISH without PUBREC, [MQTT-4.3.3-5] the PUBREL
/// without PUBCOMP, and [MQTT-4.3.3-6] never the PUBLISH of a PUBREC'd message.
#[test]
fn v5_mqtt_4_4_0_1_retransmission_only_on_resume() {
    let broker = start();
    let addr = broker.local_addr();
    let (mut s, _) = connect_persistent(addr, "resumer");
    assert_eq!(
        s.subscribe_opts(1, &[("rt/#", opts(QoS::ExactlyOnce))], None),
        [2]
    );
    let mut p = Client::connect_v5(addr, "p", &[]);
    let sent = [
        ("rt/acked", QoS::AtLeastOnce),
        ("rt/unacked", QoS::AtLeastOnce),
        ("rt/unrec", QoS::ExactlyOnce),
        ("rt/uncomp", QoS::ExactlyOnce),
        ("rt/done", QoS::ExactlyOnce),
    ];
    for (i, (t, q)) in sent.iter().enumerate() {
        p.publish(t, t.as_bytes(), *q, false, i as u16 + 1);
    }
    let mut ids = std::collections::HashMap::new();
    for (t, q) in &sent {
        let got = s.recv_publish();
        assert_eq!(got.topic.as_str(), *t);
        assert_eq!(got.qos.qos(), *q);
        assert!(
            !got.dup,
            "[MQTT-4.3.2-2] [MQTT-4.3.3-2] first send has DUP 0"
        ); // [MQTT-4.3.2-2] [MQTT-4.3.3-2]
        ids.insert(*t, got.qos.packet_id().unwrap());
    }
    let distinct: HashSet<PacketId> = ids.values().copied().collect();
    assert_eq!(
        distinct.len(),
        sent.len(),
        "[MQTT-4.3.2-1] [MQTT-4.3.3-1] distinct ids in flight"
    ); // [MQTT-4.3.2-1] [MQTT-4.3.3-1]
    s.send(&Packet::PubAck(Ack::new(ids["rt/acked"])));
    s.send(&Packet::PubRec(Ack::new(ids["rt/uncomp"])));
    assert_eq!(pubrel(&mut s).packet_id, ids["rt/uncomp"]);
    s.send(&Packet::PubRec(Ack::new(ids["rt/done"])));
    assert_eq!(pubrel(&mut s).packet_id, ids["rt/done"]);
    s.send(&Packet::PubComp(Ack::new(ids["rt/done"])));
    // Well past any retry timer a broker might have.
    assert_eq!(
        s.recv_within(Duration::from_secs(1)),
        None,
        "[MQTT-4.4.0-1] no re-send on a live connection"
    ); // [MQTT-4.4.0-1]
    s.drop_connection();

    let (mut s, present) = connect_persistent(addr, "resumer");
    assert!(present);
    let mut publishes = Vec::new();
    let mut pubrels = Vec::new();
    for packet in drain(&mut s) {
        match packet {
            Packet::Publish(m) => publishes.push(m),
            Packet::PubRel(a) => pubrels.push(a.packet_id),
            other => panic!("unexpected {other:?}"),
        }
    }
    let mut resent: Vec<(String, QosPid, bool)> = publishes
        .iter()
        .map(|m| (m.topic.as_str().to_owned(), m.qos, m.dup))
        .collect();
    resent.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        resent,
        [
            (
                "rt/unacked".to_owned(),
                QosPid::AtLeastOnce(ids["rt/unacked"]),
                true
            ),
            (
                "rt/unrec".to_owned(),
                QosPid::ExactlyOnce(ids["rt/unrec"]),
                true
            ),
        ],
        "[MQTT-4.4.0-1] [MQTT-3.3.1-1] [MQTT-4.3.2-3] [MQTT-4.3.3-3] [MQTT-4.3.3-6] exactly the \
         unacknowledged PUBLISHes, DUP 1, same ids; not the PUBREC'd one"
    ); // [MQTT-4.4.0-1] [MQTT-3.3.1-1] [MQTT-4.3.2-3] [MQTT-4.3.3-3] [MQTT-4.3.3-6]
    assert_eq!(
        pubrels,
        [ids["rt/uncomp"]],
        "[MQTT-4.3.3-5] the PUBREL without PUBCOMP, same id"
    ); // [MQTT-4.3.3-5]
    s.send(&Packet::PubAck(Ack::new(ids["rt/unacked"])));
    s.send(&Packet::PubRec(Ack::new(ids["rt/unrec"])));
    assert_eq!(pubrel(&mut s).packet_id, ids["rt/unrec"]);
    s.send(&Packet::PubComp(Ack::new(ids["rt/unrec"])));
    s.send(&Packet::PubComp(Ack::new(ids["rt/uncomp"])));
    ping(&mut s);
    s.drop_connection();
    let (mut s, _) = connect_persistent(addr, "resumer");
    assert_eq!(
        s.recv_within(QUIET),
        None,
        "[MQTT-4.3.2-3] acknowledged messages are never re-sent"
    );
}

// ---------------------------------------------------------------- overlapping subscriptions

/// [MQTT-3.3.4-2] overlapping subscriptions of one client: the delivery honours the highest
/// granted QoS (Vireo sends one copy), whichever filter holds it.
#[test]
fn v5_mqtt_3_3_4_2_overlap_takes_the_highest_qos() {
    let broker = start();
    let addr = broker.local_addr();
    let mut a = Client::connect_v5(addr, "a", &[]);
    assert_eq!(
        a.subscribe_opts(
            1,
            &[
                ("ov/#", opts(QoS::AtMostOnce)),
                ("ov/b", opts(QoS::ExactlyOnce))
            ],
            None
        ),
        [0, 2]
    );
    let mut b = Client::connect_v5(addr, "b", &[]);
    assert_eq!(
        b.subscribe_opts(
            1,
            &[
                ("ov/#", opts(QoS::ExactlyOnce)),
                ("ov/b", opts(QoS::AtMostOnce))
            ],
            None
        ),
        [2, 0]
    );
    let mut p = Client::connect_v5(addr, "p", &[]);
    p.publish("ov/b", b"x", QoS::ExactlyOnce, false, 1);
    for c in [&mut a, &mut b] {
        let got = c.recv_publish_ack();
        assert_eq!(
            got.qos.qos(),
            QoS::ExactlyOnce,
            "[MQTT-3.3.4-2] the highest QoS"
        ); // [MQTT-3.3.4-2]
        c.expect_nothing();
    }
}

/// [MQTT-3.3.4-5] when a client gets several copies (a shared and an ordinary subscription
/// both match), each carries the identifier of its own subscription.
#[test]
fn v5_mqtt_3_3_4_5_each_copy_its_own_identifier() {
    let broker = start();
    let addr = broker.local_addr();
    let mut c = Client::connect_v5(addr, "c", &[]);
    assert_eq!(
        c.subscribe_opts(1, &[("$share/g/cp", opts(QoS::AtLeastOnce))], Some(1)),
        [1]
    );
    assert_eq!(
        c.subscribe_opts(2, &[("cp", opts(QoS::AtLeastOnce))], Some(2)),
        [1]
    );
    let mut p = Client::connect_v5(addr, "p", &[]);
    publish1(&mut p, "cp", b"x", false, 1);
    let mut ids: Vec<Vec<u32>> = (0..2).map(|_| sub_ids(&c.recv_publish_ack())).collect();
    ids.sort();
    assert_eq!(
        ids,
        [vec![1], vec![2]],
        "[MQTT-3.3.4-5] one identifier per copy, its own"
    ); // [MQTT-3.3.4-5]
    c.expect_nothing();
}

/// [MQTT-4.5.0-1] a message the broker takes goes into the session of every matching
/// subscriber: two online, one offline (delivered on resume).
#[test]
fn v5_mqtt_4_5_0_1_every_matching_session_gets_it() {
    let broker = start();
    let addr = broker.local_addr();
    let (mut away, _) = connect_persistent(addr, "away");
    assert_eq!(
        away.subscribe_opts(1, &[("m/#", opts(QoS::AtLeastOnce))], None),
        [1]
    );
    away.disconnect();
    let mut one = subscriber(addr, "one", "m/#", QoS::AtLeastOnce);
    let mut two = subscriber(addr, "two", "m/+", QoS::AtLeastOnce);
    let mut p = Client::connect_v5(addr, "p", &[]);
    publish1(&mut p, "m/x", b"all", false, 1);
    for c in [&mut one, &mut two] {
        assert_eq!(&c.recv_publish_ack().payload[..], b"all", "[MQTT-4.5.0-1]"); // [MQTT-4.5.0-1]
    }
    let (mut away, present) = connect_persistent(addr, "away");
    assert!(present);
    assert_eq!(
        &away.recv_publish_ack().payload[..],
        b"all",
        "[MQTT-4.5.0-1] the offline session too"
    ); // [MQTT-4.5.0-1]
}

/// [MQTT-4.6.0-5] [MQTT-4.6.0-6] by default every topic is ordered: what one publisher sends
/// on a topic at a QoS reaches each subscriber in the order sent (QoS 0, 1 and 2, two topics
/// interleaved, the publisher not waiting for its acks).
#[test]
fn v5_mqtt_4_6_0_5_ordered_topics() {
    const N: u16 = 200;
    let broker = start();
    let addr = broker.local_addr();
    let mut both = subscriber(addr, "both", "ord/#", QoS::ExactlyOnce);
    let mut one = subscriber(addr, "one", "ord/a", QoS::ExactlyOnce);
    let mut p = Client::connect_v5(addr, "p", &[]);
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        for i in 1..=N {
            let t = if i % 2 == 0 { "ord/a" } else { "ord/b" };
            let q = QosPid::new(qos, pid(i));
            p.send_publish(t, &i.to_be_bytes(), q, false, &[]);
        }
        for (c, topics) in [(&mut both, 2), (&mut one, 1)] {
            let mut last = [0u16; 2];
            for _ in 0..(if topics == 2 { N } else { N / 2 }) {
                let got = c.recv_publish_ack();
                assert_eq!(got.qos.qos(), qos);
                let n = u16::from_be_bytes([got.payload[0], got.payload[1]]);
                let slot = usize::from(got.topic.as_str() == "ord/a");
                // ord/a carries the even numbers, ord/b the odd ones.
                let want = if last[slot] == 0 {
                    slot as u16 + 1
                } else {
                    last[slot] + 2
                };
                assert_eq!(
                    n,
                    want,
                    "[MQTT-4.6.0-5] [MQTT-4.6.0-6] {qos:?} on {}: in the order sent",
                    got.topic.as_str()
                ); // [MQTT-4.6.0-5] [MQTT-4.6.0-6]
                last[slot] = n;
            }
        }
        // The publisher's side of the exchanges.
        for i in 1..=N {
            match qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => assert_eq!(puback(&mut p).packet_id, pid(i)),
                QoS::ExactlyOnce => {
                    assert_eq!(pubrec(&mut p).packet_id, pid(i));
                    p.send(&Packet::PubRel(Ack::new(pid(i))));
                }
            }
        }
        if qos == QoS::ExactlyOnce {
            for i in 1..=N {
                assert_eq!(pubcomp(&mut p).packet_id, pid(i));
            }
        }
    }
    both.expect_nothing();
    one.expect_nothing();
}

// ---------------------------------------------------------------- SUBSCRIBE

/// [MQTT-3.8.1-1] SUBSCRIBE flags other than 0010 are malformed: DISCONNECT 0x81, no SUBACK.
#[test]
fn v5_mqtt_3_8_1_1_subscribe_flags() {
    let broker = start();
    let addr = broker.local_addr();
    for (i, first) in [0x80u8, 0x83, 0x8A].into_iter().enumerate() {
        let mut c = Client::connect_v5(addr, &format!("f{i}"), &[]);
        // SUBSCRIBE id 1, filter "t" QoS 0, with the flags given.
        c.send_raw(&[first, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b't', 0x00]);
        assert_eq!(
            disconnect_next(&mut c),
            0x81,
            "[MQTT-3.8.1-1] first byte {first:#04x}"
        ); // [MQTT-3.8.1-1]
    }
}

/// [MQTT-3.8.3-2] a SUBSCRIBE without any filter is a protocol error: DISCONNECT 0x82, no
/// SUBACK.
#[test]
fn v5_mqtt_3_8_3_2_subscribe_needs_a_filter() {
    let broker = start();
    let mut c = Client::connect_v5(broker.local_addr(), "c", &[]);
    c.send_raw(&[0x82, 0x03, 0x00, 0x01, 0x00]);
    assert_eq!(disconnect_next(&mut c), 0x82, "[MQTT-3.8.3-2]"); // [MQTT-3.8.3-2]
}

/// [MQTT-3.8.3-5] reserved bits of the subscription options byte are malformed: DISCONNECT
/// 0x81, no SUBACK; Retain Handling 3 and QoS 3 are refused alike (malformed, as Mosquitto).
#[test]
fn v5_mqtt_3_8_3_5_reserved_option_bits() {
    let broker = start();
    let addr = broker.local_addr();
    for (i, options) in [0xC1u8, 0x40, 0x80, 0x30, 0x03].into_iter().enumerate() {
        let mut c = Client::connect_v5(addr, &format!("o{i}"), &[]);
        c.send_raw(&[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b't', options]);
        let reason = disconnect_next(&mut c);
        if options & 0xC0 != 0 {
            assert_eq!(reason, 0x81, "[MQTT-3.8.3-5] options {options:#04x}"); // [MQTT-3.8.3-5]
        } else {
            assert!(
                matches!(reason, 0x81 | 0x82),
                "options {options:#04x}: {reason:#04x}"
            );
        }
    }
}

/// [MQTT-3.8.4-1] every SUBSCRIBE gets a SUBACK, [MQTT-3.8.4-2] with its packet id, and
/// [MQTT-3.8.4-6] a code for each filter, refused ones included.
#[test]
fn v5_mqtt_3_8_4_1_suback_per_subscribe() {
    let broker = start();
    let mut c = Client::connect_v5(broker.local_addr(), "c", &[]);
    for (id, filters) in [
        (42u16, vec!["x"]),
        (7, vec!["a", "b/#/c", "c"]),
        (0xFFFF, vec!["d", "e", "f", "g", "x"]),
    ] {
        c.send(&Packet::Subscribe(Subscribe {
            packet_id: pid(id),
            properties: Properties::new(),
            filters: filters
                .iter()
                .map(|f| ((*f).into(), opts(QoS::AtLeastOnce)))
                .collect(),
        }));
        match c.recv() {
            Some(Packet::SubAck(a)) => {
                // [MQTT-3.8.4-1] [MQTT-3.8.4-2]
                assert_eq!(a.packet_id, pid(id), "[MQTT-3.8.4-1] [MQTT-3.8.4-2]");
                // [MQTT-3.8.4-6]
                assert_eq!(a.codes.len(), filters.len(), "[MQTT-3.8.4-6] {filters:?}");
            }
            other => panic!("[MQTT-3.8.4-1] expected SUBACK, got {other:?}"),
        }
    }
}

/// [MQTT-3.8.4-4] a SUBSCRIBE that replaces a subscription with Retain Handling 0 sends the
/// retained messages again, and no message of a steady publisher is lost across it.
#[test]
fn v5_mqtt_3_8_4_4_replacing_loses_nothing() {
    let broker = start();
    let addr = broker.local_addr();
    let mut p = Client::connect_v5(addr, "p", &[]);
    publish1(&mut p, "rs/kept", b"kept", true, 1);
    let mut s = Client::connect_v5(addr, "s", &[]);
    assert_eq!(
        s.subscribe_opts(1, &[("rs/#", opts(QoS::AtLeastOnce))], None),
        [1]
    );
    let first = s.recv_publish_ack();
    assert!(first.retain && &first.payload[..] == b"kept");
    for i in 1..=20u16 {
        p.send_publish(
            "rs/n",
            &i.to_be_bytes(),
            QosPid::AtLeastOnce(pid(i)),
            false,
            &[],
        );
        if i == 10 {
            // The re-subscribe, mid-stream, without waiting for its SUBACK.
            s.send(&Packet::Subscribe(Subscribe {
                packet_id: pid(2),
                properties: Properties::new(),
                filters: vec![("rs/#".into(), opts(QoS::AtLeastOnce))],
            }));
        }
    }
    let mut numbers = Vec::new();
    let mut retained = 0;
    let mut suback = false;
    while numbers.len() < 20 || retained == 0 || !suback {
        match s.recv() {
            Some(Packet::SubAck(a)) => {
                assert_eq!(a.codes.iter().map(|c| c.0).collect::<Vec<_>>(), [1]);
                suback = true;
            }
            Some(Packet::Publish(m)) => {
                s.send(&Packet::PubAck(Ack::new(m.qos.packet_id().unwrap())));
                if m.topic.as_str() == "rs/kept" {
                    assert!(m.retain);
                    retained += 1;
                } else {
                    numbers.push(u16::from_be_bytes([m.payload[0], m.payload[1]]));
                }
            }
            other => panic!("expected SUBACK or PUBLISH, got {other:?}"),
        }
    }
    assert_eq!(
        retained, 1,
        "[MQTT-3.8.4-4] the retained message is sent again"
    ); // [MQTT-3.8.4-4]
    assert_eq!(
        numbers,
        (1..=20).collect::<Vec<u16>>(),
        "[MQTT-3.8.4-4] no message lost (or doubled) across the replacement"
    ); // [MQTT-3.8.4-4]
    for i in 1..=20 {
        assert_eq!(puback(&mut p).packet_id, pid(i));
    }
    s.expect_nothing();
}

// ---------------------------------------------------------------- UNSUBSCRIBE

/// [MQTT-3.10.1-1] UNSUBSCRIBE flags other than 0010 are malformed: DISCONNECT 0x81, no
/// UNSUBACK.
#[test]
fn v5_mqtt_3_10_1_1_unsubscribe_flags() {
    let broker = start();
    let addr = broker.local_addr();
    for (i, first) in [0xA0u8, 0xA3, 0xAA].into_iter().enumerate() {
        let mut c = Client::connect_v5(addr, &format!("u{i}"), &[]);
        // UNSUBSCRIBE id 1, filter "t".
        c.send_raw(&[first, 0x06, 0x00, 0x01, 0x00, 0x00, 0x01, b't']);
        assert_eq!(
            disconnect_next(&mut c),
            0x81,
            "[MQTT-3.10.1-1] first byte {first:#04x}"
        ); // [MQTT-3.10.1-1]
    }
}

/// [MQTT-3.10.3-2] an UNSUBSCRIBE without any filter is a protocol error: DISCONNECT 0x82.
#[test]
fn v5_mqtt_3_10_3_2_unsubscribe_needs_a_filter() {
    let broker = start();
    let mut c = Client::connect_v5(broker.local_addr(), "c", &[]);
    c.send_raw(&[0xA2, 0x03, 0x00, 0x01, 0x00]);
    assert_eq!(disconnect_next(&mut c), 0x82, "[MQTT-3.10.3-2]"); // [MQTT-3.10.3-2]
}

/// [MQTT-3.10.4-1] UNSUBSCRIBE compares filters literally: `a/+` removes only `a/+`, and
/// `a/#` (never subscribed) removes nothing (0x11); [MQTT-3.10.4-2] after the UNSUBACK no
/// new message goes out for a removed filter.
#[test]
fn v5_mqtt_3_10_4_1_literal_unsubscribe() {
    let broker = start();
    let addr = broker.local_addr();
    let mut c = Client::connect_v5(addr, "c", &[]);
    assert_eq!(
        c.subscribe_opts(
            1,
            &[
                ("a/b", opts(QoS::AtLeastOnce)),
                ("a/+", opts(QoS::AtLeastOnce))
            ],
            Some(3)
        ),
        [1, 1]
    );
    c.send(&unsubscribe_packet(2, &["a/+", "a/#", "A/B"]));
    let (id, codes) = unsuback(&mut c);
    assert_eq!(id, pid(2));
    assert_eq!(
        codes,
        [0x00, 0x11, 0x11],
        "[MQTT-3.10.4-1] only the literal filter is removed"
    ); // [MQTT-3.10.4-1]
    let mut p = Client::connect_v5(addr, "p", &[]);
    publish1(&mut p, "a/b", b"still", false, 1);
    publish1(&mut p, "a/c", b"gone", false, 2);
    let got = c.recv_publish_ack();
    assert_eq!(&got.payload[..], b"still", "[MQTT-3.10.4-1] a/b stays"); // [MQTT-3.10.4-1]
    assert_eq!(
        c.recv_within(QUIET),
        None,
        "[MQTT-3.10.4-2] nothing for the removed a/+"
    ); // [MQTT-3.10.4-2]
    c.unsubscribe(3, &["a/b"]);
    publish1(&mut p, "a/b", b"after", false, 3);
    assert_eq!(
        c.recv_within(QUIET),
        None,
        "[MQTT-3.10.4-2] nothing after the UNSUBACK"
    ); // [MQTT-3.10.4-2]
}

/// [MQTT-3.10.4-3] QoS 1 and QoS 2 deliveries already started for a filter are completed
/// after it is unsubscribed: the PUBACK is taken, the PUBREC answered with PUBREL and the
/// PUBCOMP taken (and nothing is re-sent).
#[test]
fn v5_mqtt_3_10_4_3_started_deliveries_complete() {
    let broker = start();
    let addr = broker.local_addr();
    let (mut c, _) = connect_persistent(addr, "c");
    assert_eq!(
        c.subscribe_opts(1, &[("go", opts(QoS::ExactlyOnce))], None),
        [2]
    );
    let mut p = Client::connect_v5(addr, "p", &[]);
    publish1(&mut p, "go", b"1", false, 1);
    p.publish("go", b"2", QoS::ExactlyOnce, false, 2);
    let q1 = c.recv_publish();
    let q2 = c.recv_publish();
    let (id1, id2) = (q1.qos.packet_id().unwrap(), q2.qos.packet_id().unwrap());
    c.unsubscribe(2, &["go"]);
    c.send(&Packet::PubAck(Ack::new(id1)));
    c.send(&Packet::PubRec(Ack::new(id2)));
    let rel = pubrel(&mut c);
    assert_eq!(
        (rel.packet_id, rel.reason.0),
        (id2, 0x00),
        "[MQTT-3.10.4-3] the QoS 2 delivery goes on"
    ); // [MQTT-3.10.4-3]
    c.send(&Packet::PubComp(Ack::new(id2)));
    ping(&mut c);
    c.drop_connection();
    let (mut c, present) = connect_persistent(addr, "c");
    assert!(present);
    assert_eq!(
        c.recv_within(QUIET),
        None,
        "[MQTT-3.10.4-3] both completed: nothing owed on resume"
    ); // [MQTT-3.10.4-3]
}

/// [MQTT-3.10.4-4] every UNSUBSCRIBE gets an UNSUBACK, [MQTT-3.10.4-5] with its packet id,
/// even when nothing was removed; [MQTT-3.10.4-6] several filters get one UNSUBACK;
/// [MQTT-3.11.3-2] its codes come from the UNSUBACK table.
#[test]
fn v5_mqtt_3_10_4_5_unsuback_always() {
    let broker = start();
    let addr = broker.local_addr();
    let mut c = Client::connect_v5(addr, "c", &[]);
    c.send(&unsubscribe_packet(77, &["never/subscribed"]));
    let (id, codes) = unsuback(&mut c);
    // [MQTT-3.10.4-4] [MQTT-3.10.4-5]
    assert_eq!(
        (id, codes.as_slice()),
        (pid(77), &[0x11][..]),
        "[MQTT-3.10.4-4] [MQTT-3.10.4-5]"
    );
    assert_eq!(
        c.subscribe_opts(
            1,
            &[
                ("x", opts(QoS::AtLeastOnce)),
                ("y", opts(QoS::AtLeastOnce)),
                ("z", opts(QoS::AtLeastOnce))
            ],
            None
        ),
        [1, 1, 1]
    );
    c.send(&unsubscribe_packet(78, &["x", "y", "z", "w", "x"]));
    let (id, codes) = unsuback(&mut c);
    assert_eq!(id, pid(78), "[MQTT-3.10.4-5]");
    assert_eq!(
        codes,
        [0x00, 0x00, 0x00, 0x11, 0x11],
        "[MQTT-3.10.4-6] one UNSUBACK, as a sequence of single ones"
    ); // [MQTT-3.10.4-6]
    ping(&mut c); // [MQTT-3.10.4-6] no second UNSUBACK
    for code in &codes {
        assert!(
            [0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91].contains(code),
            "[MQTT-3.11.3-2] code {code:#04x}"
        ); // [MQTT-3.11.3-2]
    }
    // A filter that is not valid: still a code from the table.
    c.send(&unsubscribe_packet(79, &["a/#/b"]));
    let (_, codes) = unsuback(&mut c);
    assert!(
        codes.len() == 1 && [0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91].contains(&codes[0]),
        "[MQTT-3.11.3-2] {codes:02x?}"
    ); // [MQTT-3.11.3-2]
    let mut p = Client::connect_v5(addr, "p", &[]);
    for (i, t) in ["x", "y", "z"].into_iter().enumerate() {
        publish1(&mut p, t, b"late", false, i as u16 + 1);
    }
    assert_eq!(
        c.recv_within(QUIET),
        None,
        "[MQTT-3.10.4-6] all three removed"
    ); // [MQTT-3.10.4-6]
}

// ---------------------------------------------------------------- shared subscriptions

/// Two members of `$share/g/{t}` at `qos`; `first` with a session that outlives its
/// connection when `keep`. Publishes two messages and returns each member with the one it
/// got (round-robin: one each), not acknowledged.
fn shared_pair(
    addr: SocketAddr,
    t: &str,
    qos: QoS,
    keep: bool,
) -> ((Client, Publish), (Client, Publish)) {
    let filter = format!("$share/g/{t}");
    let mut a = if keep {
        connect_persistent(addr, "member-a").0
    } else {
        Client::connect_v5(addr, "member-a", &[])
    };
    let mut b = Client::connect_v5(addr, "member-b", &[]);
    for c in [&mut a, &mut b] {
        assert_eq!(
            c.subscribe_opts(1, &[(filter.as_str(), opts(qos))], None),
            [qos as u8]
        );
    }
    let mut p = Client::connect_v5(addr, "p", &[]);
    p.publish(t, b"1", qos, false, 1);
    p.publish(t, b"2", qos, false, 2);
    let got_a = a.recv_publish();
    let got_b = b.recv_publish();
    assert_ne!(got_a.payload, got_b.payload, "one message each");
    ((a, got_a), (b, got_b))
}

/// [MQTT-4.8.2-4] a QoS 2 delivery to a shared-group member cut off before it completed is
/// finished with that member when it reconnects (the PUBLISH again, then the PUBREL), and
/// no other member gets the message.
#[test]
fn v5_mqtt_4_8_2_4_qos2_finishes_with_the_same_member() {
    let broker = start();
    let addr = broker.local_addr();
    let ((a, got_a), (mut b, got_b)) = shared_pair(addr, "sh2", QoS::ExactlyOnce, true);
    let id = got_a.qos.packet_id().unwrap();
    let bid = got_b.qos.packet_id().unwrap();
    b.send(&Packet::PubRec(Ack::new(bid)));
    assert_eq!(pubrel(&mut b).packet_id, bid);
    b.send(&Packet::PubComp(Ack::new(bid)));
    a.drop_connection();
    assert_eq!(
        b.recv_within(QUIET),
        None,
        "[MQTT-4.8.2-4] not handed to the other member"
    ); // [MQTT-4.8.2-4]
    let (mut a, present) = connect_persistent(addr, "member-a");
    assert!(present);
    let again = a.recv_publish();
    assert_eq!(
        (again.qos, again.dup, &again.payload),
        (QosPid::ExactlyOnce(id), true, &got_a.payload),
        "[MQTT-4.8.2-4] the PUBLISH again, to the same member"
    ); // [MQTT-4.8.2-4]
    a.send(&Packet::PubRec(Ack::new(id)));
    assert_eq!(pubrel(&mut a).packet_id, id);
    a.drop_connection();
    let (mut a, _) = connect_persistent(addr, "member-a");
    assert_eq!(
        pubrel(&mut a).packet_id,
        id,
        "[MQTT-4.8.2-4] the PUBREL again, to the same member"
    ); // [MQTT-4.8.2-4]
    a.send(&Packet::PubComp(Ack::new(id)));
    ping(&mut a);
    assert_eq!(
        b.recv_within(QUIET),
        None,
        "[MQTT-4.8.2-4] the other member never gets it"
    ); // [MQTT-4.8.2-4]
}

/// [MQTT-4.8.2-5] a member whose session ends while a QoS 2 delivery to it is unfinished
/// takes the message with it: no other member is sent it, whether the PUBLISH was awaiting
/// PUBREC or the PUBREL awaiting PUBCOMP.
#[test]
fn v5_mqtt_4_8_2_5_qos2_not_sent_to_another_member() {
    let broker = start();
    let addr = broker.local_addr();
    for pubrec_first in [false, true] {
        let ((mut a, got_a), (mut b, got_b)) = shared_pair(addr, "sh5", QoS::ExactlyOnce, false);
        let bid = got_b.qos.packet_id().unwrap();
        b.send(&Packet::PubRec(Ack::new(bid)));
        assert_eq!(pubrel(&mut b).packet_id, bid);
        b.send(&Packet::PubComp(Ack::new(bid)));
        if pubrec_first {
            let id = got_a.qos.packet_id().unwrap();
            a.send(&Packet::PubRec(Ack::new(id)));
            assert_eq!(pubrel(&mut a).packet_id, id);
        }
        a.drop_connection(); // Session Expiry 0: the session ends with the connection
        assert_eq!(
            b.recv_within(Duration::from_millis(500)),
            None,
            "[MQTT-4.8.2-5] not sent to another member (PUBREC first: {pubrec_first})"
        ); // [MQTT-4.8.2-5]
        b.disconnect();
    }
}

/// [MQTT-4.8.2-6] a member that answers PUBACK / PUBREC >= 0x80 ends the delivery: the
/// message is discarded, not tried on another member (nor when the member leaves).
#[test]
fn v5_mqtt_4_8_2_6_refused_shared_message_is_discarded() {
    let broker = start();
    let addr = broker.local_addr();
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let ((mut a, got_a), (mut b, got_b)) = shared_pair(addr, "sh6", qos, false);
        let mut nack = Ack::new(got_a.qos.packet_id().unwrap());
        nack.reason = ReasonCode::UNSPECIFIED_ERROR;
        let bid = got_b.qos.packet_id().unwrap();
        if qos == QoS::AtLeastOnce {
            a.send(&Packet::PubAck(nack));
            b.send(&Packet::PubAck(Ack::new(bid)));
        } else {
            a.send(&Packet::PubRec(nack));
            b.send(&Packet::PubRec(Ack::new(bid)));
            assert_eq!(pubrel(&mut b).packet_id, bid);
            b.send(&Packet::PubComp(Ack::new(bid)));
        }
        ping(&mut a);
        assert_eq!(
            b.recv_within(QUIET),
            None,
            "[MQTT-4.8.2-6] {qos:?}: not tried on another member"
        ); // [MQTT-4.8.2-6]
        a.drop_connection();
        assert_eq!(
            b.recv_within(QUIET),
            None,
            "[MQTT-4.8.2-6] {qos:?}: discarded, not handed over when the member leaves"
        ); // [MQTT-4.8.2-6]
        b.disconnect();
    }
}

// ---------------------------------------------------------------- flow control, aliases

/// [MQTT-4.9.0-1] the broker's send quota towards a client starts above zero and at most at
/// the client's Receive Maximum (3): QoS 1 and QoS 2 deliveries in flight are between 1 and 3.
#[test]
fn v5_mqtt_4_9_0_1_initial_send_quota() {
    let broker = start();
    let addr = broker.local_addr();
    let mut c = Client::connect_v5(addr, "rm3", &[Property::ReceiveMaximum(3)]);
    assert_eq!(
        c.subscribe_opts(1, &[("q", opts(QoS::ExactlyOnce))], None),
        [2]
    );
    let mut p = Client::connect_v5(addr, "p", &[]);
    for i in 1..=6u16 {
        let qos = if i % 2 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        p.publish("q", &[i as u8], qos, false, i);
    }
    let held: Vec<Publish> = drain(&mut c)
        .into_iter()
        .map(|p| match p {
            Packet::Publish(m) => m,
            other => panic!("expected PUBLISH, got {other:?}"),
        })
        .collect();
    assert!(
        (1..=3).contains(&held.len()),
        "[MQTT-4.9.0-1] {} in flight with Receive Maximum 3",
        held.len()
    ); // [MQTT-4.9.0-1]
    // Completing them lets the rest through, one for each completed, never more than 3 at
    // once.
    let window = held.len();
    let mut received = window;
    let mut open: std::collections::VecDeque<Publish> = held.into();
    while let Some(m) = open.pop_front() {
        let id = m.qos.packet_id().unwrap();
        if let QosPid::AtLeastOnce(_) = m.qos {
            c.send(&Packet::PubAck(Ack::new(id)));
        } else {
            c.send(&Packet::PubRec(Ack::new(id)));
            loop {
                match c.recv() {
                    Some(Packet::PubRel(a)) if a.packet_id == id => break,
                    Some(Packet::Publish(next)) => {
                        open.push_back(next);
                        received += 1;
                    }
                    other => panic!("expected PUBREL, got {other:?}"),
                }
            }
            c.send(&Packet::PubComp(Ack::new(id)));
        }
        while received < 6 && open.len() < window {
            match c.recv() {
                Some(Packet::Publish(next)) => {
                    open.push_back(next);
                    received += 1;
                }
                other => panic!("expected PUBLISH, got {other:?}"),
            }
        }
        assert!(open.len() <= 3, "[MQTT-4.9.0-1] {} in flight", open.len()); // [MQTT-4.9.0-1]
    }
    assert_eq!(received, 6);
    c.expect_nothing();
}

/// [MQTT-3.3.2-11] Topic Aliases the broker sends never exceed the client's Topic Alias
/// Maximum (1), however many topics it is sent; each message still names its topic.
#[test]
fn v5_mqtt_3_3_2_11_server_aliases_within_maximum() {
    let broker = start();
    let addr = broker.local_addr();
    let mut w = Client::connect_v5(addr, "w", &[Property::TopicAliasMaximum(1)]);
    assert_eq!(
        w.subscribe_opts(1, &[("al/#", opts(QoS::AtMostOnce))], None),
        [0]
    );
    let mut p = Client::connect_v5(addr, "p", &[]);
    let topics = ["al/a", "al/b", "al/c"];
    for round in 0..3 {
        for (i, t) in topics.iter().enumerate() {
            let props = [Property::TopicAlias(i as u16 + 1)];
            let name = if round == 0 { *t } else { "" };
            p.send_publish(name, t.as_bytes(), QosPid::AtMostOnce, false, &props);
        }
    }
    let mut known: Option<String> = None;
    for round in 0..3 {
        for t in topics {
            let got = w.recv_publish();
            let alias = got.properties.find(|p| match p {
                Property::TopicAlias(a) => Some(a),
                _ => None,
            });
            if let Some(a) = alias {
                assert_eq!(
                    a, 1,
                    "[MQTT-3.3.2-11] alias {a} over the client's maximum 1"
                ); // [MQTT-3.3.2-11]
                if !got.topic.is_empty() {
                    known = Some(got.topic.as_str().to_owned());
                }
            }
            let name = if got.topic.is_empty() {
                known.clone().expect("an alias the broker set up")
            } else {
                got.topic.as_str().to_owned()
            };
            assert_eq!(name, t, "round {round}");
            assert_eq!(&got.payload[..], t.as_bytes());
        }
    }
}

// ---------------------------------------------------------------- acks under a small limit

/// Every ack the broker sends fits a client Maximum Packet Size of 32 and carries no Reason
/// String and no User Property, for failure codes (where a broker would explain itself) and
/// successes: PUBACK [MQTT-3.4.2-2] [MQTT-3.4.2-3], PUBREC [MQTT-3.5.2-2] [MQTT-3.5.2-3],
/// PUBREL [MQTT-3.6.2-2] [MQTT-3.6.2-3], PUBCOMP [MQTT-3.7.2-2] [MQTT-3.7.2-3], SUBACK
/// [MQTT-3.9.2-1] [MQTT-3.9.2-2], UNSUBACK [MQTT-3.11.2-1] [MQTT-3.11.2-2].
#[test]
fn v5_mqtt_3_4_2_2_acks_omit_reason_string_under_small_limit() {
    const MAX: u32 = 32;
    let broker = start();
    let addr = broker.local_addr();
    let mut c = Client::connect_v5(addr, "small", &[Property::MaximumPacketSize(MAX)]);
    let mut other = Client::connect_v5(addr, "other", &[]);
    let _sink = subscriber(addr, "sink", "small/in", QoS::AtMostOnce);
    let check = |packet: &Packet, what: &str, tags: &str| {
        let props = match packet {
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                &a.properties
            }
            Packet::SubAck(a) | Packet::UnsubAck(a) => &a.properties,
            other => panic!("{what}: expected an ack, got {other:?}"),
        };
        let ids = prop_ids(props);
        assert!(
            !ids.contains(&0x1F) && !ids.contains(&0x26),
            "{tags} {what}: no Reason String / User Property, got {ids:02x?}"
        );
        let mut buf = BytesMut::new();
        packet.encode(ProtocolVersion::V5, &mut buf).unwrap();
        assert!(
            buf.len() <= MAX as usize,
            "{tags} {what}: {} bytes",
            buf.len()
        );
    };

    // PUBACK 0x10 (no subscriber), 0x99 (payload not UTF-8), 0x00.
    let bad_utf8 = [Property::PayloadFormatIndicator(1)];
    for (t, payload, props, code) in [
        ("nobody", &b"x"[..], &[][..], 0x10),
        ("nobody", &[0xFF][..], &bad_utf8[..], 0x99),
        ("small/in", &b"x"[..], &[][..], 0x00),
    ] {
        c.send_publish(t, payload, QosPid::AtLeastOnce(pid(1)), false, props);
        let got = c.recv().unwrap();
        assert!(
            matches!(&got, Packet::PubAck(a) if a.reason.0 == code),
            "{got:?}"
        );
        // [MQTT-3.4.2-2] [MQTT-3.4.2-3]
        check(
            &got,
            &format!("PUBACK {code:#04x}"),
            "[MQTT-3.4.2-2] [MQTT-3.4.2-3]",
        );
        // PUBREC alike, at QoS 2.
        c.send_publish(t, payload, QosPid::ExactlyOnce(pid(2)), false, props);
        let got = c.recv().unwrap();
        assert!(
            matches!(&got, Packet::PubRec(a) if a.reason.0 == code),
            "{got:?}"
        );
        // [MQTT-3.5.2-2] [MQTT-3.5.2-3]
        check(
            &got,
            &format!("PUBREC {code:#04x}"),
            "[MQTT-3.5.2-2] [MQTT-3.5.2-3]",
        );
        // PUBCOMP: 0x00 for a held id, 0x92 after a failed PUBREC (nothing held).
        c.send(&Packet::PubRel(Ack::new(pid(2))));
        let got = c.recv().unwrap();
        let want = if code == 0x99 { 0x92 } else { 0x00 };
        assert!(
            matches!(&got, Packet::PubComp(a) if a.reason.0 == want),
            "{got:?}"
        );
        // [MQTT-3.7.2-2] [MQTT-3.7.2-3]
        check(
            &got,
            &format!("PUBCOMP {want:#04x}"),
            "[MQTT-3.7.2-2] [MQTT-3.7.2-3]",
        );
    }

    // PUBREL: 0x92 for a PUBREC of an id the broker did not send; 0x00 for a delivery.
    c.send(&Packet::PubRec(Ack::new(pid(500))));
    let got = c.recv().unwrap();
    assert!(
        matches!(&got, Packet::PubRel(a) if a.reason.0 == 0x92),
        "{got:?}"
    );
    // [MQTT-3.6.2-2] [MQTT-3.6.2-3]
    check(&got, "PUBREL 0x92", "[MQTT-3.6.2-2] [MQTT-3.6.2-3]");

    // SUBACK with an invalid filter and a granted one.
    let codes = [
        ("a/#/b", opts(QoS::AtMostOnce)),
        ("small/q2", opts(QoS::ExactlyOnce)),
    ];
    c.send(&Packet::Subscribe(Subscribe {
        packet_id: pid(3),
        properties: Properties::new(),
        filters: codes.iter().map(|(f, o)| ((*f).into(), *o)).collect(),
    }));
    let got = c.recv().unwrap();
    assert!(
        matches!(&got, Packet::SubAck(a) if a.codes == [ReasonCode(0x8F), ReasonCode(0x02)]),
        "{got:?}"
    );
    // [MQTT-3.9.2-1] [MQTT-3.9.2-2]
    check(&got, "SUBACK 0x8F", "[MQTT-3.9.2-1] [MQTT-3.9.2-2]");

    other.publish("small/q2", b"y", QoS::ExactlyOnce, false, 4);
    let m = c.recv_publish();
    let id = m.qos.packet_id().unwrap();
    c.send(&Packet::PubRec(Ack::new(id)));
    let got = c.recv().unwrap();
    assert!(
        matches!(&got, Packet::PubRel(a) if a.reason.0 == 0x00 && a.packet_id == id),
        "{got:?}"
    );
    // [MQTT-3.6.2-2] [MQTT-3.6.2-3]
    check(&got, "PUBREL 0x00", "[MQTT-3.6.2-2] [MQTT-3.6.2-3]");
    c.send(&Packet::PubComp(Ack::new(id)));

    // UNSUBACK 0x11 and 0x00.
    c.send(&unsubscribe_packet(5, &["never", "small/q2"]));
    let got = c.recv().unwrap();
    assert!(
        matches!(&got, Packet::UnsubAck(a) if a.codes == [ReasonCode(0x11), ReasonCode(0x00)]),
        "{got:?}"
    );
    // [MQTT-3.11.2-1] [MQTT-3.11.2-2]
    check(&got, "UNSUBACK 0x11", "[MQTT-3.11.2-1] [MQTT-3.11.2-2]");
    c.expect_nothing();
}

/// [MQTT-3.6.1-1] PUBREL flags other than 0010 are malformed: DISCONNECT 0x81 and no PUBCOMP,
/// though the id awaits release.
#[test]
fn v5_mqtt_3_6_1_1_pubrel_flags() {
    let broker = start();
    let addr = broker.local_addr();
    for (i, first) in [0x60u8, 0x63, 0x6A].into_iter().enumerate() {
        let mut c = Client::connect_v5(addr, &format!("r{i}"), &[]);
        c.send_publish("rel", b"x", QosPid::ExactlyOnce(pid(1)), false, &[]);
        assert_eq!(pubrec(&mut c).packet_id, pid(1));
        // PUBREL id 1, with the flags given.
        c.send_raw(&[first, 0x02, 0x00, 0x01]);
        assert_eq!(
            disconnect_next(&mut c),
            0x81,
            "[MQTT-3.6.1-1] first byte {first:#04x}"
        ); // [MQTT-3.6.1-1]
    }
}

// ---------------------------------------------------------------- outbound topic aliases

/// The Topic Alias a broker PUBLISH carries, if any.
fn alias_of(p: &Publish) -> Option<u16> {
    p.properties.find(|prop| match prop {
        Property::TopicAlias(a) => Some(a),
        _ => None,
    })
}

/// Publishes `topics` in order at QoS 0 and 1 from `publisher`; returns what `sub` received,
/// as (topic as sent, alias) in order.
fn aliased_round(
    publisher: &mut Client,
    sub: &mut Client,
    topics: &[&str],
) -> Vec<(String, Option<u16>)> {
    let mut got = Vec::new();
    for (i, t) in topics.iter().enumerate() {
        let qos1 = i % 2 == 1;
        if qos1 {
            publish1(publisher, t, b"m", false, 100 + i as u16);
        } else {
            publisher.send_publish(t, b"m", QosPid::AtMostOnce, false, &[]);
        }
        let p = if qos1 {
            sub.recv_publish_ack()
        } else {
            sub.recv_publish()
        };
        got.push((p.topic.as_str().to_owned(), alias_of(&p)));
    }
    got
}

/// v5 [MQTT-3.1.2-26] [MQTT-3.3.2-11] with outbound aliases on, the broker uses at most the
/// client's Topic Alias Maximum (here 2, below the broker's 10): the first two topics get
/// aliases 1 and 2 with their names, later PUBLISHes on them carry the alias and an empty
/// topic, at QoS 0 and QoS 1 alike, and a third topic always goes out in full. [MQTT-3.3.2-8]
/// alias 0 is never sent.
#[test]
fn v5_mqtt_3_1_2_26_outbound_aliases_within_client_maximum() {
    let broker = start_with(|c| c.outbound_topic_alias_maximum = 10);
    let mut sub = Client::connect_v5(
        broker.local_addr(),
        "sub",
        &[Property::TopicAliasMaximum(2)],
    );
    assert_eq!(
        sub.subscribe_opts(1, &[("al/#", opts(QoS::AtLeastOnce))], None),
        [1]
    );
    let mut publisher = Client::connect_v5(broker.local_addr(), "pub", &[]);
    let got = aliased_round(
        &mut publisher,
        &mut sub,
        &["al/a", "al/b", "al/a", "al/c", "al/b", "al/c", "al/a"],
    );
    let s = |t: &str, a: Option<u16>| (t.to_owned(), a);
    assert_eq!(
        got,
        [
            s("al/a", Some(1)),
            s("al/b", Some(2)),
            s("", Some(1)),
            s("al/c", None),
            s("", Some(2)),
            s("al/c", None),
            s("", Some(1)),
        ]
    );
}

/// v5 [MQTT-3.1.2-27] a client that gave no Topic Alias Maximum never gets a Topic Alias,
/// even with outbound aliases on; and with them off (the default) a client that allows
/// aliases gets none either.
#[test]
fn v5_mqtt_3_1_2_27_no_alias_unless_both_allow() {
    let broker = start_with(|c| c.outbound_topic_alias_maximum = 10);
    let mut sub = subscriber(broker.local_addr(), "sub", "na/#", QoS::AtLeastOnce);
    let mut publisher = Client::connect_v5(broker.local_addr(), "pub", &[]);
    let got = aliased_round(&mut publisher, &mut sub, &["na/a", "na/a", "na/a"]);
    assert!(
        got.iter().all(|(t, a)| t == "na/a" && a.is_none()),
        "{got:?}"
    );

    let broker = start();
    let mut sub = Client::connect_v5(
        broker.local_addr(),
        "sub",
        &[Property::TopicAliasMaximum(5)],
    );
    assert_eq!(
        sub.subscribe_opts(1, &[("na/#", opts(QoS::AtLeastOnce))], None),
        [1]
    );
    let mut publisher = Client::connect_v5(broker.local_addr(), "pub", &[]);
    let got = aliased_round(&mut publisher, &mut sub, &["na/a", "na/a", "na/a"]);
    assert!(
        got.iter().all(|(t, a)| t == "na/a" && a.is_none()),
        "{got:?}"
    );
}

/// v5 [MQTT-3.3.2-7] aliases the broker set up do not carry over to a new connection of the
/// same session: after a resume, the first PUBLISH on a topic names it in full again.
#[test]
fn v5_mqtt_3_3_2_7_outbound_aliases_reset_on_reconnect() {
    let broker = start_with(|c| c.outbound_topic_alias_maximum = 10);
    let connect = |addr| {
        let mut c = Client::v5(
            "sub",
            &[
                Property::SessionExpiryInterval(60),
                Property::TopicAliasMaximum(4),
            ],
        );
        c.clean_start = false;
        let (c, ack) = Client::connect_v5_with(addr, c);
        (c, ack.session_present)
    };
    let (mut sub, present) = connect(broker.local_addr());
    assert!(!present);
    assert_eq!(
        sub.subscribe_opts(1, &[("rc/#", opts(QoS::AtLeastOnce))], None),
        [1]
    );
    let mut publisher = Client::connect_v5(broker.local_addr(), "pub", &[]);
    let got = aliased_round(&mut publisher, &mut sub, &["rc/a", "rc/a"]);
    assert_eq!(
        got,
        [("rc/a".to_owned(), Some(1)), (String::new(), Some(1))]
    );
    sub.disconnect();
    let (mut sub, present) = connect(broker.local_addr());
    assert!(present);
    let got = aliased_round(&mut publisher, &mut sub, &["rc/a", "rc/a"]);
    assert_eq!(
        got,
        [("rc/a".to_owned(), Some(1)), (String::new(), Some(1))]
    );
}
