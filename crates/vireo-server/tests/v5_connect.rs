//! MQTT 5.0 from a client socket, down to the bytes: data representation (UTF-8 strings,
//! variable byte integers), fixed headers and packet identifiers, CONNECT checks and
//! refusals, CONNACK flags and reason codes, Wills, Clean Start, server DISCONNECTs and their
//! reason codes, PINGREQ, AUTH flags.
//!
//! Where a test checks what the broker writes, it reads raw frames ([`Raw`]) and compares
//! bytes; otherwise it uses the shared [`Client`]. Every wait has a deadline; nothing sleeps.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use vireo_codec::{
    Ack, Bytes, BytesMut, ConnAck, Connect, Disconnect, LastWill, Packet, Properties, Property,
    ProtocolVersion, Publish, QoS, QosPid, ReasonCode, Subscribe, SubscriptionOptions, Unsubscribe,
    decode,
};
use vireo_server::ServerHandle;

/// Connect Reason Codes of Table 3-1 [MQTT-3.2.2-8].
const CONNACK_CODES: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];

/// Disconnect Reason Codes of Table 3-10 a server may send [MQTT-3.14.2-1] (0x04 is the
/// client's only).
const SERVER_DISCONNECT_CODES: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95, 0x96,
    0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];

/// Reason String and User Property: Vireo sends neither of its own.
const REASON_STRING: u8 = 0x1F;
const USER_PROPERTY: u8 = 0x26;

// ---------------------------------------------------------------- helpers

fn opts(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions::qos(qos)
}

fn prop_ids(p: &Properties) -> Vec<u8> {
    p.iter().map(|p| p.id()).collect()
}

fn sessions(broker: &ServerHandle) -> usize {
    broker.stats().sessions.load(Ordering::Relaxed)
}

fn will(topic_name: &str, payload: &str, qos: QoS, retain: bool) -> LastWill {
    LastWill {
        topic: topic(topic_name),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        qos,
        retain,
        properties: Properties::new(),
    }
}

/// A 5.0 subscriber on `filter` at QoS 1.
fn watcher(addr: SocketAddr, id: &str, filter: &str) -> Client {
    let mut c = Client::connect_v5(addr, id, &[]);
    assert_eq!(
        c.subscribe_opts(1, &[(filter, opts(QoS::AtLeastOnce))], None),
        [1]
    );
    c
}

/// A persistent (expiry 60 s) 5.0 CONNECT with the given Clean Start.
fn persistent(id: &str, clean_start: bool) -> Connect {
    let mut c = Client::v5(id, &[Property::SessionExpiryInterval(60)]);
    c.clean_start = clean_start;
    c
}

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

fn publish_packet(t: &str, payload: &[u8], qos: QosPid, retain: bool) -> Packet {
    let mut p = Publish::new(topic(t), Bytes::copy_from_slice(payload));
    p.qos = qos;
    p.retain = retain;
    Packet::Publish(p)
}

fn encode(p: &Packet) -> Vec<u8> {
    let mut buf = BytesMut::new();
    p.encode(ProtocolVersion::V5, &mut buf).unwrap();
    buf.to_vec()
}

/// `n` as a minimal variable byte integer (spec 1.5.5).
fn vbi_bytes(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut byte = (n & 0x7F) as u8;
        n >>= 7;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            return out;
        }
    }
}

/// The variable byte integer at the front of `b`: its value and length; `None` if incomplete.
fn vbi(b: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (i, &byte) in b.iter().take(4).enumerate() {
        value |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// A whole frame: first byte, remaining length, body.
fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut f = vec![first];
    f.extend(vbi_bytes(body.len()));
    f.extend_from_slice(body);
    f
}

/// A length-prefixed string field holding exactly `bytes` (valid UTF-8 or not).
fn str_field(bytes: &[u8]) -> Vec<u8> {
    let mut f = (bytes.len() as u16).to_be_bytes().to_vec();
    f.extend_from_slice(bytes);
    f
}

/// A CONNECT with this protocol name, level, flags and client id bytes; keep alive 60, no
/// properties, no Will or credentials.
fn raw_connect(name: &[u8], level: u8, flags: u8, client_id: &[u8]) -> Vec<u8> {
    let mut body = str_field(name);
    body.extend([level, flags, 0x00, 0x3C, 0x00]);
    body.extend(str_field(client_id));
    frame(0x10, &body)
}

/// A QoS 0 PUBLISH with this topic bytes, property block and payload.
fn raw_publish(topic_bytes: &[u8], props: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = str_field(topic_bytes);
    body.extend(vbi_bytes(props.len()));
    body.extend_from_slice(props);
    body.extend_from_slice(payload);
    frame(0x30, &body)
}

/// A SUBSCRIBE (id 1, no properties) of one filter with these bytes at QoS 0.
fn raw_subscribe(filter: &[u8]) -> Vec<u8> {
    let mut body = vec![0x00, 0x01, 0x00];
    body.extend(str_field(filter));
    body.push(0x00);
    frame(0x82, &body)
}

/// A User Property (0x26) with these key and value bytes.
fn raw_user_property(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut p = vec![USER_PROPERTY];
    p.extend(str_field(key));
    p.extend(str_field(value));
    p
}

/// Decodes one whole frame the broker sent.
fn parse(frame: &[u8]) -> Packet {
    let mut b = BytesMut::from(frame);
    let p = decode(&mut b, ProtocolVersion::V5, usize::MAX)
        .unwrap_or_else(|e| panic!("broker sent a malformed packet ({e}): {frame:02x?}"))
        .unwrap_or_else(|| panic!("incomplete frame {frame:02x?}"));
    assert!(b.is_empty(), "one packet per frame: {frame:02x?}");
    p
}

fn connack_of(frame: &[u8]) -> ConnAck {
    match parse(frame) {
        Packet::ConnAck(a) => a,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

fn disconnect_reason(frame: &[u8]) -> u8 {
    match parse(frame) {
        Packet::Disconnect(d) => d.reason.0,
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
}

/// A client socket that reads what the broker writes as whole raw frames.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    fn open(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).unwrap();
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    /// Opens, sends `connect`; returns the socket and the first frame back (the CONNACK).
    fn connect(addr: SocketAddr, connect: Connect) -> (Self, Vec<u8>) {
        let mut r = Self::open(addr);
        r.send(&Packet::Connect(Box::new(connect)));
        let f = r.frame();
        (r, f)
    }

    /// Connects with 5.0 and these properties; asserts acceptance.
    fn v5(addr: SocketAddr, id: &str, props: &[Property]) -> Self {
        let (r, f) = Self::connect(addr, Client::v5(id, props));
        assert_eq!(connack_of(&f).code.0, 0, "CONNACK {f:02x?}");
        r
    }

    fn send(&mut self, p: &Packet) {
        self.send_raw(&encode(p));
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        // The broker may already have closed: tests then assert on what they read.
        let _ = self.stream.write_all(bytes);
    }

    /// The next whole frame within `wait`; `None` on EOF, error or timeout.
    fn frame_within(&mut self, wait: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some((len, n)) = self.buf.get(1..).and_then(vbi)
                && self.buf.len() >= 1 + n + len
            {
                return Some(self.buf.drain(..1 + n + len).collect());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn frame(&mut self) -> Vec<u8> {
        self.frame_within(WAIT).expect("a packet from the broker")
    }

    fn packet(&mut self) -> Packet {
        parse(&self.frame())
    }

    /// Reads past acks and deliveries already queued to the DISCONNECT; returns its frame.
    fn disconnect_frame(&mut self) -> Vec<u8> {
        loop {
            let f = self.frame();
            match f[0] >> 4 {
                14 => return f,
                3 | 4 | 5 | 6 | 7 | 9 | 11 | 13 => {}
                _ => panic!("expected DISCONNECT, got {f:02x?}"),
            }
        }
    }

    /// Whether the broker closes within [`WAIT`] with nothing more sent.
    fn closed(&mut self) -> bool {
        assert!(self.buf.is_empty(), "unexpected bytes {:02x?}", self.buf);
        self.stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut chunk = [0u8; 4096];
        match self.stream.read(&mut chunk) {
            Ok(0) => true,
            Ok(n) => panic!("expected the close, got bytes {:02x?}", &chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
            Err(_) => true, // a reset counts as closed
        }
    }
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
/// [MQTT-3.1.4-5] CONNACK reason byte 0x00, under the id given (no Assigned Client
/// Identifier).
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

/// [MQTT-4.2-1] (Appendix B: 4.2.0-1) MQTT runs over an ordered, lossless, two-way byte
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
