//! MQTT 5.0 conformance from a real client socket, part A: data representation (UTF-8, VBIs),
//! fixed-header flags and packet ids, CONNECT/CONNACK rules, Wills, topic aliases towards the
//! client, DISCONNECT/AUTH handling and omitted properties under a small Maximum Packet Size.
//!
//! Every wait has a deadline; nothing sleeps to synchronise.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use vireo_codec::{
    Ack, BytesMut, LastWill, Packet, Properties, Property, ProtocolVersion, QoS, QosPid,
    SubscriptionOptions, decode,
};

// ---------------------------------------------------------------- helpers

/// A socket that hands back whole packets as raw bytes, for byte-level assertions.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
    /// Frames read past by `frame_of`, handed out first by `frame`.
    pending: VecDeque<Vec<u8>>,
}

impl Raw {
    fn open(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        Self {
            s,
            buf: Vec::new(),
            pending: VecDeque::new(),
        }
    }

    /// Opens and sends a 5.0 CONNECT with these properties; returns the CONNACK bytes.
    fn connect_v5(addr: SocketAddr, id: &str, props: &[Property]) -> (Self, Vec<u8>) {
        let mut r = Self::open(addr);
        r.send(&Packet::Connect(Box::new(Client::v5(id, props))));
        let ack = r.frame(WAIT).expect("CONNACK");
        (r, ack)
    }

    fn send_raw(&mut self, b: &[u8]) {
        let _ = self.s.write_all(b);
    }

    fn send(&mut self, p: &Packet) {
        let mut b = BytesMut::new();
        p.encode(ProtocolVersion::V5, &mut b).unwrap();
        self.send_raw(&b);
    }

    /// Length of a complete frame at the start of the buffer, if there is one.
    fn complete(&self) -> Option<usize> {
        let mut len = 0usize;
        let mut mult = 1usize;
        for i in 1..5 {
            let b = *self.buf.get(i)?;
            len += (b & 0x7F) as usize * mult;
            mult *= 128;
            if b & 0x80 == 0 {
                let total = i + 1 + len;
                return (self.buf.len() >= total).then_some(total);
            }
        }
        panic!("broker sent a remaining length over 4 bytes");
    }

    /// The next whole packet, raw; `None` on EOF or timeout.
    fn frame(&mut self, wait: Duration) -> Option<Vec<u8>> {
        if let Some(f) = self.pending.pop_front() {
            return Some(f);
        }
        self.wire_frame(wait)
    }

    fn wire_frame(&mut self, wait: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(n) = self.complete() {
                return Some(self.buf.drain(..n).collect());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.s
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut chunk = [0u8; 8192];
            match self.s.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => return None,
            }
        }
    }

    /// The next frame whose packet type (high nibble) is `ty`; frames of other types read
    /// on the way are kept for `frame`.
    fn frame_of(&mut self, ty: u8) -> Vec<u8> {
        if let Some(i) = self.pending.iter().position(|f| f[0] >> 4 == ty) {
            return self.pending.remove(i).unwrap();
        }
        loop {
            let f = self.wire_frame(WAIT).unwrap_or_else(|| {
                panic!("expected packet type {ty:x}, have {:02x?}", self.pending)
            });
            if f[0] >> 4 == ty {
                return f;
            }
            self.pending.push_back(f);
        }
    }

    /// Whether EOF (or reset) comes within `wait`, whatever bytes arrive first.
    fn eof_within(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            self.s
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut chunk = [0u8; 4096];
            match self.s.read(&mut chunk) {
                Ok(0) => return true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return false;
                }
                Err(_) => return true,
            }
        }
    }
}

/// Decodes one raw 5.0 frame.
fn parse(frame: &[u8]) -> Packet {
    let mut b = BytesMut::from(frame);
    decode(&mut b, ProtocolVersion::V5, usize::MAX)
        .unwrap()
        .expect("a whole packet")
}

/// Offset just past the fixed header of a raw frame.
fn body_start(frame: &[u8]) -> usize {
    let mut i = 1;
    while frame[i] & 0x80 != 0 {
        i += 1;
    }
    i + 1
}

/// A raw CONNECT: protocol name, level, flags, keep alive 60, raw property bytes, raw payload.
fn raw_connect(name: &[u8], level: u8, flags: u8, props: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(name.len() as u16).to_be_bytes());
    body.extend_from_slice(name);
    body.push(level);
    body.push(flags);
    body.extend_from_slice(&[0, 60]);
    if level == 5 {
        body.push(props.len() as u8);
        body.extend_from_slice(props);
    }
    body.extend_from_slice(payload);
    let mut out = vec![0x10];
    encode_vbi(body.len(), &mut out);
    out.extend_from_slice(&body);
    out
}

fn encode_vbi(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

/// A length-prefixed string field.
fn lp(s: &[u8]) -> Vec<u8> {
    let mut v = (s.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(s);
    v
}

/// A raw packet: first byte then body with its remaining length.
fn raw_packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    encode_vbi(body.len(), &mut out);
    out.extend_from_slice(body);
    out
}

fn opts(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions::qos(qos)
}

fn has_prop(p: &Properties, id: u8) -> bool {
    p.iter().any(|p| p.id() == id)
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

/// The server DISCONNECT reason codes of Table 3-10.
const SERVER_DISCONNECT_CODES: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95, 0x96,
    0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];

/// The Connect Reason Codes of Table 3-1.
const CONNACK_CODES: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];

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

/// [MQTT-1.5.4-1] a UTF-8 encoded surrogate makes the packet malformed: in a CONNECT client id
/// (refused, closed) and in a SUBSCRIBE filter (DISCONNECT 0x81).
#[test]
fn v5_mqtt_1_5_4_1_surrogate_is_malformed() {
    let broker = start();
    let addr = broker.local_addr();
    let mut r = Raw::open(addr);
    r.send_raw(&raw_connect(
        b"MQTT",
        5,
        0x02,
        &[],
        &lp(&[b'a', 0xED, 0xA0, 0x80]),
    ));
    if let Some(f) = r.frame(WAIT) {
        let Packet::ConnAck(a) = parse(&f) else {
            panic!("expected CONNACK, got {f:02x?}")
        };
        assert_eq!(a.code.0, 0x81, "[MQTT-1.5.4-1] surrogate client id refused");
    }
    assert!(r.eof_within(WAIT), "[MQTT-1.5.4-1] closed");

    let mut c = Client::connect_v5(addr, "sub", &[]);
    // SUBSCRIBE id 1, no properties, filter "a" C0 AF, options QoS 0.
    let mut body = vec![0, 1, 0];
    body.extend_from_slice(&lp(&[b'a', 0xC0, 0xAF]));
    body.push(0);
    c.send_raw(&raw_packet(0x82, &body));
    assert_eq!(
        expect_server_disconnect(&mut c, "1.5.4-1"),
        0x81,
        "[MQTT-1.5.4-1] overlong encoding in a filter is malformed"
    );
}

/// [MQTT-1.5.4-2] an encoded U+0000 in a topic name is malformed; nothing is delivered.
#[test]
fn v5_mqtt_1_5_4_2_null_character_is_malformed() {
    let broker = start();
    let addr = broker.local_addr();
    let mut w = watcher(addr, "w", "#");
    let mut c = Client::connect_v5(addr, "pub", &[]);
    // PUBLISH QoS 0 to "a\0b", no properties, payload "x".
    let mut body = lp(b"a\0b");
    body.push(0);
    body.push(b'x');
    c.send_raw(&raw_packet(0x30, &body));
    assert_eq!(
        expect_server_disconnect(&mut c, "1.5.4-2"),
        0x81,
        "[MQTT-1.5.4-2] U+0000 in a topic is malformed"
    );
    w.expect_nothing();
}

/// [MQTT-1.5.4-3] a BOM (EF BB BF) in a topic is kept, never stripped: it is delivered intact to
/// its subscriber, and a subscriber on the topic without it gets nothing.
#[test]
fn v5_mqtt_1_5_4_3_bom_is_not_stripped() {
    let broker = start();
    let addr = broker.local_addr();
    let mut bom = watcher(addr, "bom", "\u{FEFF}t");
    let mut plain = watcher(addr, "plain", "t");
    let mut p = Client::connect_v5(addr, "pub", &[]);
    p.send_publish("\u{FEFF}t", b"x", QosPid::AtMostOnce, false, &[]);
    let got = bom.recv_publish();
    assert_eq!(
        got.topic.as_bytes(),
        b"\xEF\xBB\xBFt",
        "[MQTT-1.5.4-3] BOM kept"
    );
    plain.expect_nothing();
}

/// [MQTT-1.5.7-1] both strings of a User Property obey the UTF-8 rules: a surrogate in the value,
/// or U+0000 in the name, is malformed (DISCONNECT 0x81) and nothing is forwarded.
#[test]
fn v5_mqtt_1_5_7_1_user_property_utf8() {
    let broker = start();
    let addr = broker.local_addr();
    let mut w = watcher(addr, "w", "t");
    for (name, value) in [
        (b"k".as_slice(), [b'v', 0xED, 0xA0, 0x80].as_slice()),
        (b"k\0".as_slice(), b"v".as_slice()),
    ] {
        let mut c = Client::connect_v5(addr, "pub", &[]);
        let mut prop = vec![0x26];
        prop.extend_from_slice(&lp(name));
        prop.extend_from_slice(&lp(value));
        let mut body = lp(b"t");
        body.push(prop.len() as u8);
        body.extend_from_slice(&prop);
        body.push(b'x');
        c.send_raw(&raw_packet(0x30, &body));
        assert_eq!(
            expect_server_disconnect(&mut c, "1.5.7-1"),
            0x81,
            "[MQTT-1.5.7-1] bad UTF-8 in a User Property is malformed"
        );
    }
    w.expect_nothing();
}

/// [MQTT-1.5.5-1] the broker encodes remaining lengths in the fewest bytes (127 -> 7F,
/// 128 -> 80 01); an over-long inbound encoding (PINGREQ with `80 00`) is malformed.
#[test]
fn v5_mqtt_1_5_5_1_minimal_variable_byte_integers() {
    let broker = start();
    let addr = broker.local_addr();
    let (mut sub, _) = Raw::connect_v5(addr, "sub", &[]);
    sub.send(&Packet::Subscribe(vireo_codec::Subscribe {
        packet_id: pid(1),
        properties: Properties::new(),
        filters: vec![("t".into(), opts(QoS::AtMostOnce))],
    }));
    let ack = sub.frame_of(9);
    assert_eq!(ack[0], 0x90);
    let mut p = Client::connect_v5(addr, "pub", &[]);
    // QoS 0 delivery body: topic (2 + 1) + property length (1) + payload.
    for (rl, expect) in [(127usize, vec![0x7F]), (128, vec![0x80, 0x01])] {
        let payload = vec![b'x'; rl - 4];
        p.send_publish("t", &payload, QosPid::AtMostOnce, false, &[]);
        let f = sub.frame(WAIT).expect("delivery");
        assert_eq!(f[0] >> 4, 3, "a PUBLISH");
        assert_eq!(
            &f[1..1 + expect.len()],
            expect.as_slice(),
            "[MQTT-1.5.5-1] remaining length {rl} in the fewest bytes"
        );
        assert_eq!(f.len(), 1 + expect.len() + rl);
    }
    let mut c = Client::connect_v5(addr, "overlong", &[]);
    c.send_raw(&[0xC0, 0x80, 0x00]);
    assert_eq!(
        expect_server_disconnect(&mut c, "1.5.5-1"),
        0x81,
        "[MQTT-1.5.5-1] over-long remaining length is malformed"
    );
}

// ---------------------------------------------------------------- 2 packet format

/// [MQTT-2.1.3-1] every broker packet has the fixed-header flags of its type; [MQTT-2.2.1-5]
/// acks carry the id of their PUBLISH, both ways; [MQTT-2.2.1-6] SUBACK/UNSUBACK carry the id of
/// their request; [MQTT-2.2.2-1] an empty property section is still written as `00`;
/// [MQTT-2.2.1-2] a QoS 0 PUBLISH has no packet id; [MQTT-3.12.4-1] PINGREQ gets PINGRESP.
/// An inbound PINGREQ with flags `1` is malformed.
#[test]
fn v5_mqtt_2_1_3_1_fixed_header_flags_and_packet_ids() {
    let broker = start();
    let addr = broker.local_addr();
    let (mut r, connack) = Raw::connect_v5(addr, "raw", &[]);
    assert_eq!(connack[0], 0x20, "[MQTT-2.1.3-1] CONNACK flags");

    // SUBSCRIBE id BE EF: "t" at QoS 2, "q0" at QoS 0.
    r.send(&Packet::Subscribe(vireo_codec::Subscribe {
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
    let mut p = vireo_codec::Publish::new(topic("t"), vireo_codec::Bytes::from_static(b"one"));
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
    let mut p = vireo_codec::Publish::new(topic("t"), vireo_codec::Bytes::from_static(b"two"));
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
    r.send(&Packet::Unsubscribe(vireo_codec::Unsubscribe {
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

/// [MQTT-3.12.4-1] every PINGREQ is answered by a PINGRESP.
#[test]
fn v5_mqtt_3_12_4_1_every_pingreq_answered() {
    let broker = start();
    let mut c = Client::connect_v5(broker.local_addr(), "pinger", &[]);
    c.send_raw(&[0xC0, 0x00, 0xC0, 0x00, 0xC0, 0x00]);
    for _ in 0..3 {
        assert!(
            matches!(c.recv(), Some(Packet::PingResp)),
            "[MQTT-3.12.4-1] PINGRESP"
        );
    }
    c.expect_nothing();
}

// ---------------------------------------------------------------- 3.1 CONNECT, 3.2 CONNACK

/// A refused raw CONNECT: if a packet arrives it is a refusing CONNACK (never 0x00), and the
/// connection is closed. Returns the reason, if a CONNACK came.
fn refused(addr: SocketAddr, connect: &[u8], tag: &str) -> Option<u8> {
    let mut r = Raw::open(addr);
    r.send_raw(connect);
    let code = r.frame(WAIT).map(|f| {
        assert_eq!(f[0], 0x20, "{tag}: only a CONNACK may come, got {f:02x?}");
        assert!(f.len() >= 4, "{tag}: CONNACK {f:02x?}");
        assert_ne!(f[3], 0, "{tag}: never CONNACK 0x00");
        f[3]
    });
    assert!(r.eof_within(WAIT), "{tag}: connection closed");
    code
}

/// [MQTT-3.1.2-1] a protocol name other than `MQTT` is refused (CONNACK 0x84 at most) and the
/// connection closed.
#[test]
fn v5_mqtt_3_1_2_1_protocol_name() {
    let broker = start();
    let code = refused(
        broker.local_addr(),
        &raw_connect(b"MQTX", 5, 0x02, &[], &lp(b"x")),
        "[MQTT-3.1.2-1]",
    );
    assert!(
        matches!(code, None | Some(0x84)),
        "[MQTT-3.1.2-1] CONNACK 0x84, got {code:?}"
    );
}

/// [MQTT-3.1.2-2] an unsupported protocol level (6) is refused (CONNACK 0x84, or the 3.1.1
/// code 01) and the connection closed.
#[test]
fn v5_mqtt_3_1_2_2_unsupported_protocol_level() {
    let broker = start();
    let code = refused(
        broker.local_addr(),
        &raw_connect(b"MQTT", 6, 0x02, &[], &lp(b"x")),
        "[MQTT-3.1.2-2]",
    );
    assert!(
        matches!(code, None | Some(0x84) | Some(0x01)),
        "[MQTT-3.1.2-2] CONNACK 0x84 / 01, got {code:?}"
    );
}

/// [MQTT-3.1.2-3] the reserved Connect Flags bit set: malformed, refused (0x81 at most), closed.
#[test]
fn v5_mqtt_3_1_2_3_reserved_connect_flag() {
    let broker = start();
    let code = refused(
        broker.local_addr(),
        &raw_connect(b"MQTT", 5, 0x03, &[], &lp(b"x")),
        "[MQTT-3.1.2-3]",
    );
    assert!(
        matches!(code, None | Some(0x81)),
        "[MQTT-3.1.2-3] CONNACK 0x81, got {code:?}"
    );
}

/// [MQTT-3.1.3-5] client ids of 1 and 23 alphanumeric bytes are accepted; [MQTT-3.1.4-5] with
/// CONNACK reason byte 00; [MQTT-3.2.2-1] whose flag bits 7-1 are 0.
#[test]
fn v5_mqtt_3_1_3_5_alphanumeric_client_ids_accepted() {
    let broker = start();
    for id in ["a", "abcdefghijklmnopqrstuvW", "0123456789ABCDEFGHIJKLm"] {
        let (_r, ack) = Raw::connect_v5(broker.local_addr(), id, &[]);
        assert_eq!(ack[0], 0x20);
        assert_eq!(ack[2] & 0xFE, 0, "[MQTT-3.2.2-1] CONNACK flags bits 7-1");
        assert_eq!(
            ack[3], 0,
            "[MQTT-3.1.3-5] [MQTT-3.1.4-5] id {id:?} accepted with reason 00"
        );
    }
}

/// [MQTT-3.2.2-3] Clean Start 0: SP 0 with no session, SP 1 with one, reason 00 both times;
/// [MQTT-3.2.2-2] Clean Start 1 over an existing session: flags 00, reason 00; [MQTT-3.1.4-4]
/// and the old session's subscription is gone.
#[test]
fn v5_mqtt_3_2_2_2_clean_start_and_session_present() {
    let broker = start();
    let addr = broker.local_addr();
    let connect = |clean: bool| {
        let mut c = Client::v5("cs", &[Property::SessionExpiryInterval(60)]);
        c.clean_start = clean;
        Client::connect_v5_with(addr, c)
    };
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

/// [MQTT-3.1.3-2] the client id keys the session: two ids keep separate subscriptions, and
/// resuming one restores only its own.
#[test]
fn v5_mqtt_3_1_3_2_client_id_keys_the_session() {
    let broker = start();
    let addr = broker.local_addr();
    let resume = |id: &str| {
        let mut c = Client::v5(id, &[Property::SessionExpiryInterval(60)]);
        c.clean_start = false;
        Client::connect_v5_with(addr, c)
    };
    for (id, filter) in [("alice", "a/#"), ("bob", "b/#")] {
        let (mut c, _) = resume(id);
        assert_eq!(
            c.subscribe_opts(1, &[(filter, opts(QoS::AtLeastOnce))], None),
            [1]
        );
        c.drop_connection();
    }
    let (mut alice, ack) = resume("alice");
    assert!(ack.session_present);
    let mut p = Client::connect_v5(addr, "pub", &[]);
    p.publish("b/1", b"bob's", QoS::AtLeastOnce, false, 1);
    p.publish("a/1", b"alice's", QoS::AtLeastOnce, false, 2);
    let got = alice.recv_publish_ack();
    assert_eq!(
        &got.topic[..],
        "a/1",
        "[MQTT-3.1.3-2] only alice's own subscription"
    );
    alice.expect_nothing();
}

/// [MQTT-3.2.0-1] CONNECT pipelined with a SUBSCRIBE that matches a retained message: the
/// first packet back is the CONNACK.
#[test]
fn v5_mqtt_3_2_0_1_connack_first() {
    let broker = start();
    let addr = broker.local_addr();
    let mut p = Client::connect_v5(addr, "pub", &[]);
    p.publish("r", b"kept", QoS::AtLeastOnce, true, 1);
    let mut bytes = BytesMut::new();
    Packet::Connect(Box::new(Client::v5("late", &[])))
        .encode(ProtocolVersion::V5, &mut bytes)
        .unwrap();
    Packet::Subscribe(vireo_codec::Subscribe {
        packet_id: pid(1),
        properties: Properties::new(),
        filters: vec![("r".into(), opts(QoS::AtLeastOnce))],
    })
    .encode(ProtocolVersion::V5, &mut bytes)
    .unwrap();
    let mut r = Raw::open(addr);
    r.send_raw(&bytes);
    let first = r.frame(WAIT).expect("a reply");
    assert_eq!(
        first[0], 0x20,
        "[MQTT-3.2.0-1] CONNACK first, got {first:02x?}"
    );
    assert_eq!(first[3], 0);
    // And the retained message does follow.
    let d = r.frame_of(3);
    assert!(d.ends_with(b"kept"));
}

// ---------------------------------------------------------------- Wills

/// A 5.0 CONNECT for `id` with a QoS 1 Will on `will_topic`.
fn with_will(id: &str, will_topic: &str, payload: &str, retain: bool) -> vireo_codec::Connect {
    let mut c = Client::v5(id, &[]);
    c.will = Some(LastWill {
        topic: topic(will_topic),
        payload: vireo_codec::Bytes::copy_from_slice(payload.as_bytes()),
        qos: QoS::AtLeastOnce,
        retain,
        properties: Properties::new(),
    });
    c
}

/// [MQTT-3.1.2-7] the Will of a CONNECT is stored: killing the socket publishes it;
/// [MQTT-3.1.2-10] once published it is gone (delivered exactly once), and a Will whose client
/// sends DISCONNECT 0x00 is deleted, never published.
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

/// [MQTT-3.1.2-14] Will Retain 0: published non-retained (RETAIN 0 to a Retain As Published
/// subscriber, nothing for a late subscriber).
#[test]
fn v5_mqtt_3_1_2_14_will_not_retained() {
    let broker = start();
    let addr = broker.local_addr();
    let mut live = Client::connect_v5(addr, "live", &[]);
    let mut o = opts(QoS::AtLeastOnce);
    o.retain_as_published = true;
    assert_eq!(live.subscribe_opts(1, &[("will/t", o)], None), [1]);
    let (c, _) = Client::connect_v5_with(addr, with_will("dies", "will/t", "bye", false));
    c.drop_connection();
    let got = live.recv_publish_ack();
    assert!(!got.retain, "[MQTT-3.1.2-14] Will published with RETAIN 0");
    let mut late = Client::connect_v5(addr, "late", &[]);
    assert_eq!(late.subscribe_opts(1, &[("will/t", o)], None), [1]);
    if let Some(p) = late.recv_within(QUIET) {
        panic!("[MQTT-3.1.2-14] Will not retained, got {p:?}");
    }
}

/// [MQTT-3.1.2-15] Will Retain 1: published retained; a subscriber joining after it fired gets
/// it with RETAIN 1.
#[test]
fn v5_mqtt_3_1_2_15_will_retained() {
    let broker = start();
    let addr = broker.local_addr();
    let mut live = watcher(addr, "live", "will/t");
    let (c, _) = Client::connect_v5_with(addr, with_will("dies", "will/t", "bye", true));
    c.drop_connection();
    live.recv_publish_ack(); // it has fired
    let mut late = watcher(addr, "late", "will/t");
    let got = late.recv_publish_ack();
    assert!(
        got.retain && &got.payload[..] == b"bye",
        "[MQTT-3.1.2-15] Will retained: {got:?}"
    );
}

// ---------------------------------------------------------------- topic aliases, response info

/// A publisher that uses inbound Topic Alias 5 on `t` then sends by alias only.
fn publish_by_alias(addr: SocketAddr, t: &str) {
    let mut p = Client::connect_v5(addr, "aliaser", &[]);
    p.send_publish(
        t,
        b"1",
        QosPid::AtMostOnce,
        false,
        &[Property::TopicAlias(5)],
    );
    p.send_publish(
        "",
        b"2",
        QosPid::AtMostOnce,
        false,
        &[Property::TopicAlias(5)],
    );
    p.send_publish(
        "other/x",
        b"3",
        QosPid::AtMostOnce,
        false,
        &[Property::TopicAlias(6)],
    );
    p.send_publish(
        "",
        b"4",
        QosPid::AtMostOnce,
        false,
        &[Property::TopicAlias(6)],
    );
    // A round trip so all four were handled.
    p.publish("sync", b"", QoS::AtLeastOnce, false, 1);
}

/// [MQTT-3.1.2-27] a client that gave no Topic Alias Maximum gets no Topic Alias, even for
/// messages its publisher sent by alias.
#[test]
fn v5_mqtt_3_1_2_27_no_topic_alias_without_maximum() {
    let broker = start_with(|c| c.topic_alias_maximum = 10);
    let addr = broker.local_addr();
    let mut w = watcher(addr, "w", "#");
    publish_by_alias(addr, "ta/1");
    for _ in 0..5 {
        let got = w.recv_publish_ack();
        assert!(
            !has_prop(&got.properties, 0x23),
            "[MQTT-3.1.2-27] no Topic Alias property: {got:?}"
        );
        assert!(!got.topic.is_empty(), "[MQTT-3.1.2-27] full topic names");
    }
}

/// [MQTT-3.1.2-26] Topic Aliases sent to a client never exceed its Topic Alias Maximum (2).
#[test]
fn v5_mqtt_3_1_2_26_topic_alias_within_client_maximum() {
    let broker = start_with(|c| c.topic_alias_maximum = 10);
    let addr = broker.local_addr();
    let mut w = Client::connect_v5(addr, "w", &[Property::TopicAliasMaximum(2)]);
    assert_eq!(
        w.subscribe_opts(1, &[("#", opts(QoS::AtLeastOnce))], None),
        [1]
    );
    publish_by_alias(addr, "ta/1");
    for _ in 0..5 {
        let got = w.recv_publish_ack();
        for p in got.properties.iter() {
            if let Property::TopicAlias(a) = p {
                assert!(
                    (1..=2).contains(&a),
                    "[MQTT-3.1.2-26] alias {a} within the client's maximum 2"
                );
            }
        }
    }
}

/// [MQTT-3.1.2-28] Request Response Information 0, or absent: no Response Information in CONNACK.
#[test]
fn v5_mqtt_3_1_2_28_no_response_information_unless_requested() {
    let broker = start();
    for props in [vec![Property::RequestResponseInformation(0)], vec![]] {
        let (_c, ack) = Client::connect_v5_with(broker.local_addr(), Client::v5("rri", &props));
        assert_eq!(ack.code.0, 0);
        assert!(
            !has_prop(&ack.properties, 0x1A),
            "[MQTT-3.1.2-28] no Response Information: {ack:?}"
        );
    }
}

// ---------------------------------------------------------------- refused CONNECTs

/// A CONNECT naming an authentication method the broker does not have.
fn with_auth_method(id: &str, extra: &[Property]) -> vireo_codec::Connect {
    let mut props = vec![
        Property::AuthenticationMethod("SCRAM-SHA-1".into()),
        Property::SessionExpiryInterval(60),
    ];
    props.extend_from_slice(extra);
    let mut c = Client::v5(id, &props);
    c.clean_start = false;
    c
}

/// Asserts a refusing CONNACK frame and the close after it.
fn assert_refused(r: &mut Raw, ack: &[u8], tag: &str) -> vireo_codec::ConnAck {
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

/// [MQTT-3.1.4-2] [MQTT-4.12.0-4] an authentication check that fails (unknown method) gets
/// CONNACK 0x8C and the close; no session is created; [MQTT-3.2.2-8] [MQTT-3.2.2-7]
/// [MQTT-4.13.2-1] the code is a Connect Reason Code and the connection closes.
#[test]
fn v5_mqtt_3_1_4_2_failed_authentication_closes() {
    let broker = start();
    let addr = broker.local_addr();
    let mut r = Raw::open(addr);
    r.send(&Packet::Connect(Box::new(with_auth_method("nosess", &[]))));
    let ack = r.frame(WAIT).expect("CONNACK");
    let a = assert_refused(&mut r, &ack, "[MQTT-3.1.4-2]");
    assert_eq!(
        a.code.0, 0x8C,
        "[MQTT-3.1.4-2] [MQTT-4.12.0-4] bad authentication method"
    );
    let mut again = Client::v5("nosess", &[Property::SessionExpiryInterval(60)]);
    again.clean_start = false;
    let (_c, ack) = Client::connect_v5_with(addr, again);
    assert!(
        !ack.session_present,
        "[MQTT-3.1.4-2] the refused CONNECT created no session"
    );
}

/// [MQTT-3.1.4-6] after a refused CONNECT everything pipelined behind it is ignored: a retained
/// PUBLISH and a SUBSCRIBE in the same write get no answer and the message is not stored.
#[test]
fn v5_mqtt_3_1_4_6_after_refusal_nothing_is_processed() {
    let broker = start();
    let addr = broker.local_addr();
    let mut bytes = BytesMut::new();
    Packet::Connect(Box::new(with_auth_method("refused", &[])))
        .encode(ProtocolVersion::V5, &mut bytes)
        .unwrap();
    let mut p = vireo_codec::Publish::new(topic("r6"), vireo_codec::Bytes::from_static(b"no"));
    p.retain = true;
    p.qos = QosPid::AtLeastOnce(pid(1));
    Packet::Publish(p)
        .encode(ProtocolVersion::V5, &mut bytes)
        .unwrap();
    Packet::Subscribe(vireo_codec::Subscribe {
        packet_id: pid(2),
        properties: Properties::new(),
        filters: vec![("#".into(), opts(QoS::AtLeastOnce))],
    })
    .encode(ProtocolVersion::V5, &mut bytes)
    .unwrap();
    let mut r = Raw::open(addr);
    r.send_raw(&bytes);
    let ack = r.frame(WAIT).expect("CONNACK");
    assert_refused(&mut r, &ack, "[MQTT-3.1.4-6]");
    assert!(
        r.buf.is_empty() && r.pending.is_empty(),
        "[MQTT-3.1.4-6] nothing after the CONNACK: {:02x?}",
        r.buf
    );
    let mut late = Client::connect_v5(addr, "late", &[]);
    assert_eq!(
        late.subscribe_opts(1, &[("r6", opts(QoS::AtLeastOnce))], None),
        [1]
    );
    if let Some(p) = late.recv_within(QUIET) {
        panic!("[MQTT-3.1.4-6] the pipelined retained PUBLISH was ignored, got {p:?}");
    }
}

/// [MQTT-3.2.2-6] a refusing CONNACK has Session Present 0 even when a session is stored.
#[test]
fn v5_mqtt_3_2_2_6_refusal_has_no_session_present() {
    let broker = start();
    let addr = broker.local_addr();
    let mut keep = Client::v5("x", &[Property::SessionExpiryInterval(60)]);
    keep.clean_start = false;
    let (mut c, _) = Client::connect_v5_with(addr, keep);
    assert_eq!(
        c.subscribe_opts(1, &[("x/#", opts(QoS::AtMostOnce))], None),
        [0]
    );
    c.drop_connection();
    let mut r = Raw::open(addr);
    r.send(&Packet::Connect(Box::new(with_auth_method("x", &[]))));
    let ack = r.frame(WAIT).expect("CONNACK");
    assert_eq!(
        ack[2], 0x00,
        "[MQTT-3.2.2-6] flags 00 on a refusal, got {ack:02x?}"
    );
    assert_refused(&mut r, &ack, "[MQTT-3.2.2-6]");
}

/// [MQTT-3.2.2-19] [MQTT-3.2.2-20] with a small Maximum Packet Size, CONNACK (accepting or
/// refusing) carries no Reason String and no User Property.
#[test]
fn v5_mqtt_3_2_2_19_connack_without_reason_string_or_user_property() {
    let broker = start();
    let addr = broker.local_addr();
    let small = Property::MaximumPacketSize(32);
    let (_c, ack) = Client::connect_v5_with(addr, Client::v5("ok", std::slice::from_ref(&small)));
    assert_eq!(ack.code.0, 0);
    let mut r = Raw::open(addr);
    r.send(&Packet::Connect(Box::new(with_auth_method("no", &[small]))));
    let raw = r.frame(WAIT).expect("CONNACK");
    let refused = assert_refused(&mut r, &raw, "[MQTT-3.2.2-19]");
    for a in [ack, refused] {
        assert!(
            !has_prop(&a.properties, 0x1F),
            "[MQTT-3.2.2-19] no Reason String: {a:?}"
        );
        assert!(
            !has_prop(&a.properties, 0x26),
            "[MQTT-3.2.2-20] no User Property: {a:?}"
        );
    }
}

// ---------------------------------------------------------------- DISCONNECT and AUTH

/// [MQTT-3.14.1-1] a DISCONNECT with reserved flag bits set (`E1 00`) is malformed: DISCONNECT
/// 0x81, [MQTT-3.14.4-2] then the close; not being a valid DISCONNECT, the Will is published.
#[test]
fn v5_mqtt_3_14_1_1_disconnect_flags_malformed() {
    let broker = start();
    let addr = broker.local_addr();
    let mut w = watcher(addr, "w", "will/#");
    let (mut c, _) = Client::connect_v5_with(addr, with_will("bad", "will/bad", "bye", false));
    c.send_raw(&[0xE1, 0x00]);
    assert_eq!(
        expect_server_disconnect(&mut c, "3.14.1-1"),
        0x81,
        "[MQTT-3.14.1-1] DISCONNECT with flags 1 is malformed"
    );
    let got = w.recv_publish_ack();
    assert_eq!(
        &got.payload[..],
        b"bye",
        "[MQTT-3.14.1-1] no valid DISCONNECT: the Will is published"
    );
}

/// [MQTT-3.14.2-3] [MQTT-3.14.2-4] with Maximum Packet Size 32, the broker's DISCONNECT (here
/// for an AUTH without enhanced authentication, a protocol error) arrives within the limit with
/// no Reason String and no User Property; [MQTT-3.14.2-1] its code is a server code;
/// [MQTT-3.14.4-2] the close follows.
#[test]
fn v5_mqtt_3_14_2_3_disconnect_without_reason_string_under_small_limit() {
    let broker = start();
    let (mut r, ack) = Raw::connect_v5(
        broker.local_addr(),
        "small",
        &[Property::MaximumPacketSize(32)],
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
    assert!(
        !has_prop(&d.properties, 0x1F),
        "[MQTT-3.14.2-3] no Reason String: {d:?}"
    );
    assert!(
        !has_prop(&d.properties, 0x26),
        "[MQTT-3.14.2-4] no User Property: {d:?}"
    );
    assert!(r.eof_within(WAIT), "[MQTT-3.14.4-2] close after DISCONNECT");
}

/// [MQTT-3.15.1-1] an AUTH with reserved flag bits set (`F1 00`) is malformed: DISCONNECT 0x81
/// and the close.
#[test]
fn v5_mqtt_3_15_1_1_auth_flags_malformed() {
    let broker = start();
    let mut c = Client::connect_v5(broker.local_addr(), "authflags", &[]);
    c.send_raw(&[0xF1, 0x00]);
    assert_eq!(
        expect_server_disconnect(&mut c, "3.15.1-1"),
        0x81,
        "[MQTT-3.15.1-1] AUTH flags must be 0"
    );
}

/// [MQTT-4.12.1-2] a re-authentication the broker cannot accept (AUTH 0x19 with a method, on a
/// connection that did no enhanced authentication) gets DISCONNECT and the close.
#[test]
fn v5_mqtt_4_12_1_2_failed_reauthentication_disconnects() {
    let broker = start();
    let mut c = Client::connect_v5(broker.local_addr(), "reauth", &[]);
    let mut props = vec![0x15];
    props.extend_from_slice(&lp(b"SCRAM-SHA-1"));
    let mut body = vec![0x19, props.len() as u8];
    body.extend_from_slice(&props);
    c.send_raw(&raw_packet(0xF0, &body));
    let reason = expect_server_disconnect(&mut c, "4.12.1-2");
    assert!(
        reason >= 0x80,
        "[MQTT-4.12.1-2] re-authentication refused with DISCONNECT {reason:#x}, then closed"
    );
}

// ---------------------------------------------------------------- operational behaviour

/// [MQTT-4.1.0-1] a Session Expiry 0 client keeps its state for the whole connection: an
/// inbound QoS 2 id awaiting PUBREL survives other traffic and completes once, and its
/// subscription still delivers.
#[test]
fn v5_mqtt_4_1_0_1_state_kept_while_connected() {
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

/// [MQTT-4.2-1] (Appendix B: MQTT-4.2.0-1) plain TCP carries MQTT end to end, ordered and
/// lossless: 50 QoS 1 messages arrive intact and in order.
#[test]
fn v5_mqtt_4_2_1_tcp_is_ordered_and_lossless() {
    let broker = start();
    let addr = broker.local_addr();
    let mut w = watcher(addr, "w", "tcp");
    let mut p = Client::connect_v5(addr, "p", &[]);
    for i in 0..50u16 {
        let payload = format!("m{i}-{}", "z".repeat(i as usize * 37));
        p.publish("tcp", payload.as_bytes(), QoS::AtLeastOnce, false, i + 1);
    }
    for i in 0..50u16 {
        let got = w.recv_publish_ack();
        let want = format!("m{i}-{}", "z".repeat(i as usize * 37));
        assert_eq!(
            &got.payload[..],
            want.as_bytes(),
            "[MQTT-4.2-1] message {i} intact and in order"
        );
    }
}
