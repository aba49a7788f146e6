//! Codec-level conformance: one test per normative statement of MQTT 3.1.1 (sections 1.5, 2, 3,
//! 4.7 and 4.8) that a codec can check on its own — malformed input gives the right
//! [`DecodeError`], encoder output has the right bytes — plus a few MQTT 5.0 checks (`v5_`).
//!
//! Coverage is measured by grepping the bracketed 3.1.1 tags (`[MQTT-x.y.z-n]`); 5.0 tests cite
//! theirs as `[v5 MQTT-x.y.z-n]` (the form the codec's own errors use) so that the two sets, whose
//! labels overlap with different meanings, never mix. Behaviour that needs sessions or sockets
//! (keep alive, retained messages, QoS flows) is tested in the broker and server crates.

mod common;

use common::{MAX, hex, pid};
use vireo_codec::{
    Ack, Bytes, BytesMut, ConnAck, Connect, DecodeError, Disconnect, EncodeError, LastWill, Packet,
    Properties, Property, ProtocolVersion, Publish, QoS, QosPid, ReasonCode, SubAck, Subscribe,
    SubscriptionOptions, TopicName, Unsubscribe, decode, topic_matches, utf8,
    validate_topic_filter, validate_topic_name,
};

use ProtocolVersion::{V5, V31, V311};

fn decode_bytes(bytes: &[u8], version: ProtocolVersion) -> Result<Option<Packet>, DecodeError> {
    decode(&mut BytesMut::from(bytes), version, MAX)
}

/// The error decoding `bytes` gives; panics if it decodes or asks for more.
fn err(bytes: &[u8], version: ProtocolVersion) -> DecodeError {
    match decode_bytes(bytes, version) {
        Err(e) => e,
        other => panic!("expected an error for {bytes:02X?}, got {other:?}"),
    }
}

fn ok(bytes: &[u8], version: ProtocolVersion) -> Packet {
    let mut buf = BytesMut::from(bytes);
    let p = decode(&mut buf, version, MAX)
        .expect("decodes")
        .expect("complete");
    assert!(buf.is_empty(), "left {} bytes", buf.len());
    p
}

fn encode(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
    let mut buf = BytesMut::new();
    packet.encode(version, &mut buf).expect("encodes");
    buf.to_vec()
}

/// A length-prefixed field.
fn field(bytes: &[u8]) -> Vec<u8> {
    let mut out = u16::try_from(bytes.len())
        .expect("short field")
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(bytes);
    out
}

/// Wraps a body in a fixed header (remaining length below 128).
fn packet(first_byte: u8, body: &[u8]) -> Vec<u8> {
    let len = u8::try_from(body.len()).expect("short body");
    assert!(len < 128);
    let mut out = vec![first_byte, len];
    out.extend_from_slice(body);
    out
}

/// A 3.1.1 CONNECT with these flags, keep alive 60, then `payload` as is.
fn connect(flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = field(b"MQTT");
    body.extend_from_slice(&[4, flags, 0, 60]);
    body.extend_from_slice(payload);
    packet(0x10, &body)
}

/// A PUBLISH with this first byte, raw topic bytes, and optional packet id.
fn publish(first_byte: u8, topic: &[u8], id: Option<u16>, payload: &[u8]) -> Vec<u8> {
    let mut body = field(topic);
    if let Some(id) = id {
        body.extend_from_slice(&id.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(first_byte, &body)
}

/// A 3.1.1 SUBSCRIBE with one raw filter and requested-QoS byte.
fn subscribe(id: u16, filter: &[u8], options: u8) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    body.extend_from_slice(&field(filter));
    body.push(options);
    packet(0x82, &body)
}

fn unsubscribe(id: u16, filter: &[u8]) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    body.extend_from_slice(&field(filter));
    packet(0xA2, &body)
}

const SURROGATE: &[u8] = &[0xED, 0xA0, 0x80];
const OVERLONG: &[u8] = &[0xC0, 0xAF];

// ---- 1.5 Data representations -------------------------------------------------------------------

/// MQTT 3.1.1 [MQTT-1.5.3-1]: an encoded surrogate (`ED A0 80`) is ill-formed UTF-8.
#[test]
fn v311_mqtt_1_5_3_1_surrogate_is_ill_formed_utf8() {
    let bad = connect(0x02, &field(SURROGATE));
    assert_eq!(
        err(&bad, V311),
        DecodeError::InvalidUtf8,
        "[MQTT-1.5.3-1] client id"
    );
    let mut filter = b"a/".to_vec();
    filter.extend_from_slice(SURROGATE);
    assert_eq!(
        err(&subscribe(1, &filter, 0), V311),
        DecodeError::InvalidUtf8,
        "[MQTT-1.5.3-1] topic filter"
    );
    assert_eq!(
        err(&publish(0x30, SURROGATE, None, b""), V311),
        DecodeError::InvalidUtf8,
        "[MQTT-1.5.3-1] topic name"
    );
}

/// MQTT 3.1.1 [MQTT-1.5.3-1]: an overlong form (`C0 AF`, a disguised `/`) is ill-formed UTF-8.
#[test]
fn v311_mqtt_1_5_3_1_overlong_form_is_ill_formed_utf8() {
    assert_eq!(
        err(&connect(0x02, &field(OVERLONG)), V311),
        DecodeError::InvalidUtf8,
        "[MQTT-1.5.3-1]"
    );
    assert_eq!(
        err(&publish(0x30, &[b'a', 0xC0, 0xAF, b'b'], None, b""), V311),
        DecodeError::InvalidUtf8,
        "[MQTT-1.5.3-1]"
    );
    assert_eq!(
        utf8(Bytes::from_static(OVERLONG)),
        Err(DecodeError::InvalidUtf8)
    );
    // The malformed-packet reason a v5 server sends for it.
    assert_eq!(
        DecodeError::InvalidUtf8.reason_code(),
        ReasonCode::MALFORMED_PACKET
    );
}

/// MQTT 3.1.1 [MQTT-1.5.3-2]: a string containing U+0000 is refused.
#[test]
fn v311_mqtt_1_5_3_2_null_character_in_a_string() {
    assert_eq!(
        err(&publish(0x30, b"a\0b", None, b""), V311),
        DecodeError::NullCharacter,
        "[MQTT-1.5.3-2] topic name"
    );
    assert_eq!(
        err(&connect(0x02, &field(b"id\0")), V311),
        DecodeError::NullCharacter,
        "[MQTT-1.5.3-2] client id"
    );
    let mut payload = field(b"id");
    payload.extend_from_slice(&field(b"us\0er"));
    assert_eq!(
        err(&connect(0x82, &payload), V311),
        DecodeError::NullCharacter,
        "[MQTT-1.5.3-2] user name"
    );
    assert_eq!(
        utf8(Bytes::from_static(b"\0")),
        Err(DecodeError::NullCharacter)
    );
}

/// MQTT 3.1.1 [MQTT-1.5.3-3]: `EF BB BF` is U+FEFF and is kept, never stripped.
#[test]
fn v311_mqtt_1_5_3_3_byte_order_mark_is_kept() {
    let bytes = publish(0x30, b"\xEF\xBB\xBFt", None, b"x");
    let Packet::Publish(p) = ok(&bytes, V311) else {
        panic!("not a PUBLISH");
    };
    assert_eq!(p.topic.as_str(), "\u{FEFF}t", "[MQTT-1.5.3-3]");
    assert_eq!(&p.topic.as_bytes()[..3], b"\xEF\xBB\xBF", "[MQTT-1.5.3-3]");
    assert!(!topic_matches("t", &p.topic), "[MQTT-1.5.3-3]");
    assert!(topic_matches("\u{FEFF}t", &p.topic), "[MQTT-1.5.3-3]");
    assert_eq!(encode(&Packet::Publish(p), V311), bytes, "[MQTT-1.5.3-3]");

    let Packet::Subscribe(s) = ok(&subscribe(1, b"\xEF\xBB\xBF#", 0), V311) else {
        panic!("not a SUBSCRIBE");
    };
    assert_eq!(&*s.filters[0].0, "\u{FEFF}#", "[MQTT-1.5.3-3]");
}

// ---- 2 Control packet format --------------------------------------------------------------------

/// MQTT 3.1.1 [MQTT-2.2.2-1]: every packet the codec writes has the first byte of the flag table.
#[test]
fn v311_mqtt_2_2_2_1_encoder_writes_the_reserved_flag_values() {
    let id = pid(1);
    let cases: [(Packet, u8); 14] = [
        (Packet::Connect(Box::new(Connect::new("c"))), 0x10),
        (Packet::ConnAck(ConnAck::default()), 0x20),
        (
            Packet::Publish(Publish::new(TopicName::try_from("t").expect("topic"), "x")),
            0x30,
        ),
        (Packet::PubAck(Ack::new(id)), 0x40),
        (Packet::PubRec(Ack::new(id)), 0x50),
        (Packet::PubRel(Ack::new(id)), 0x62),
        (Packet::PubComp(Ack::new(id)), 0x70),
        (
            Packet::Subscribe(Subscribe {
                packet_id: id,
                properties: Properties::new(),
                filters: vec![("t".into(), SubscriptionOptions::default())],
            }),
            0x82,
        ),
        (
            Packet::SubAck(SubAck::new(id, vec![ReasonCode::SUCCESS])),
            0x90,
        ),
        (
            Packet::Unsubscribe(Unsubscribe {
                packet_id: id,
                properties: Properties::new(),
                filters: vec!["t".into()],
            }),
            0xA2,
        ),
        (Packet::UnsubAck(SubAck::new(id, Vec::new())), 0xB0),
        (Packet::PingReq, 0xC0),
        (Packet::PingResp, 0xD0),
        (Packet::Disconnect(Disconnect::default()), 0xE0),
    ];
    for (p, first) in cases {
        for version in [V31, V311, V5] {
            let bytes = encode(&p, version);
            assert_eq!(
                bytes[0],
                first,
                "[MQTT-2.2.2-1] {} in {version:?}",
                p.name()
            );
            assert_eq!(p.first_byte(), first, "[MQTT-2.2.2-1] {}", p.name());
        }
    }
    let auth = Packet::Auth(Disconnect::default());
    assert_eq!(encode(&auth, V5)[0], 0xF0, "[v5 MQTT-2.1.3-1] AUTH");
}

/// A syntactically complete packet of type `t` for the flag tests: only the flags are wrong.
fn body_for(packet_type: u8) -> Vec<u8> {
    match packet_type {
        1 => connect(0x02, &field(b"c"))[2..].to_vec(),
        2 => vec![0, 0],
        4..=7 => vec![0, 1],
        8 => subscribe(1, b"t", 0)[2..].to_vec(),
        9 => vec![0, 1, 0],
        10 => unsubscribe(1, b"t")[2..].to_vec(),
        11 => vec![0, 1],
        _ => Vec::new(),
    }
}

/// MQTT 3.1.1 [MQTT-2.2.2-2]: any other value in a reserved flag nibble is refused, for every
/// packet type that has one, and from the fixed header alone.
#[test]
fn v311_mqtt_2_2_2_2_wrong_reserved_flags_are_refused() {
    for packet_type in [1u8, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14] {
        let expected = if matches!(packet_type, 6 | 8 | 10) {
            0b0010
        } else {
            0
        };
        let body = body_for(packet_type);
        let good = packet(packet_type << 4 | expected, &body);
        assert!(
            decode_bytes(&good, V311).is_ok_and(|p| p.is_some()),
            "the base packet of type {packet_type} must be valid"
        );
        for flags in (0..16u8).filter(|&f| f != expected) {
            let bad = packet(packet_type << 4 | flags, &body);
            let e = DecodeError::InvalidFlags { packet_type, flags };
            assert_eq!(err(&bad, V311), e, "[MQTT-2.2.2-2] type {packet_type}");
            // Refused from the first two bytes, before the body is there; except CONNECT,
            // whose protocol name says whether the rule applies (MQTT 3.1 had none).
            if packet_type != 1 {
                assert_eq!(err(&bad[..2], V311), e, "[MQTT-2.2.2-2] header only");
            }
        }
    }
    // The table's examples: PINGREQ as `C1 00`, PUBACK as `42 02 ..`.
    assert!(matches!(
        err(&hex("C1 00"), V311),
        DecodeError::InvalidFlags { .. }
    ));
    assert!(matches!(
        err(&hex("42 02 00 01"), V311),
        DecodeError::InvalidFlags { .. }
    ));
}

/// MQTT 3.1.1 [MQTT-2.3.1-1]: SUBSCRIBE, UNSUBSCRIBE and QoS 1/2 PUBLISH never carry packet id 0.
#[test]
fn v311_mqtt_2_3_1_1_packet_id_zero_is_refused() {
    let cases = [
        subscribe(0, b"t", 0),
        unsubscribe(0, b"t"),
        publish(0x32, b"t", Some(0), b"x"),
        publish(0x34, b"t", Some(0), b"x"),
        hex("40 02 00 00"),
        hex("50 02 00 00"),
        hex("62 02 00 00"),
        hex("70 02 00 00"),
        hex("90 03 00 00 00"),
        hex("B0 02 00 00"),
    ];
    for bytes in cases {
        assert_eq!(
            err(&bytes, V311),
            DecodeError::ZeroPacketId,
            "[MQTT-2.3.1-1] {bytes:02X?}"
        );
    }
    // The type system keeps the encoder from writing one: ids are `NonZeroU16`.
    assert!(std::num::NonZeroU16::new(0).is_none());
}

/// MQTT 3.1.1 [MQTT-2.3.1-5]: a QoS 0 PUBLISH has no packet id field.
#[test]
fn v311_mqtt_2_3_1_5_qos0_publish_has_no_packet_id() {
    let p = Publish::new(TopicName::try_from("t").expect("topic"), "xy");
    let bytes = encode(&Packet::Publish(p), V311);
    // Remaining length == 2 + topic length + payload length.
    assert_eq!(bytes, hex("30 05 00 01 74 78 79"), "[MQTT-2.3.1-5]");
    // Two bytes after a QoS 0 topic are payload, not an id.
    let Packet::Publish(p) = ok(&hex("30 05 00 01 74 00 00"), V311) else {
        panic!("not a PUBLISH");
    };
    assert_eq!(p.qos, QosPid::AtMostOnce, "[MQTT-2.3.1-5]");
    assert_eq!(&p.payload[..], &[0, 0], "[MQTT-2.3.1-5]");
}

/// MQTT 3.1.1 [MQTT-2.3.1-6]: PUBACK, PUBREC and PUBREL carry the id of their PUBLISH.
#[test]
fn v311_mqtt_2_3_1_6_acks_carry_the_publish_packet_id() {
    let Packet::Publish(p) = ok(&publish(0x32, b"t", Some(0x1234), b""), V311) else {
        panic!("not a PUBLISH");
    };
    let id = p.qos.packet_id().expect("QoS 1 has an id");
    assert_eq!(
        encode(&Packet::PubAck(Ack::new(id)), V311),
        hex("40 02 12 34"),
        "[MQTT-2.3.1-6]"
    );
    assert_eq!(
        encode(&Packet::PubRec(Ack::new(pid(7))), V311),
        hex("50 02 00 07"),
        "[MQTT-2.3.1-6]"
    );
    assert_eq!(
        encode(&Packet::PubRel(Ack::new(pid(7))), V311),
        hex("62 02 00 07"),
        "[MQTT-2.3.1-6]"
    );
    assert_eq!(
        ok(&hex("62 02 00 07"), V311),
        Packet::PubRel(Ack::new(pid(7))),
        "[MQTT-2.3.1-6]"
    );
}

/// MQTT 3.1.1 [MQTT-2.3.1-7]: SUBACK and UNSUBACK carry the id of the request they answer.
#[test]
fn v311_mqtt_2_3_1_7_suback_and_unsuback_carry_the_request_id() {
    let Packet::Subscribe(s) = ok(&subscribe(0xBEEF, b"t", 1), V311) else {
        panic!("not a SUBSCRIBE");
    };
    let ack = SubAck::new(s.packet_id, vec![ReasonCode::GRANTED_QOS_1]);
    assert_eq!(
        encode(&Packet::SubAck(ack), V311),
        hex("90 03 BE EF 01"),
        "[MQTT-2.3.1-7]"
    );
    let Packet::Unsubscribe(u) = ok(&unsubscribe(0x0101, b"t"), V311) else {
        panic!("not an UNSUBSCRIBE");
    };
    assert_eq!(
        encode(
            &Packet::UnsubAck(SubAck::new(u.packet_id, Vec::new())),
            V311
        ),
        hex("B0 02 01 01"),
        "[MQTT-2.3.1-7]"
    );
}

/// Spec 2.2.3 (untagged): the remaining length takes at most four bytes.
#[test]
fn v311_2_2_3_remaining_length_over_four_bytes_is_malformed() {
    assert_eq!(
        err(&hex("30 FF FF FF FF 01"), V311),
        DecodeError::MalformedRemainingLength
    );
    // Four continuation bytes are enough to know, without the fifth.
    assert_eq!(
        err(&hex("30 80 80 80 80"), V311),
        DecodeError::MalformedRemainingLength
    );
    // Three continuation bytes: the fourth may still end it.
    assert_eq!(decode_bytes(&hex("30 FF FF FF"), V311), Ok(None));
    // The largest remaining length, 268 435 455 (`FF FF FF 7F`), is well formed.
    assert_eq!(
        decode(
            &mut BytesMut::from(&hex("30 FF FF FF 7F")[..]),
            V311,
            usize::MAX
        ),
        Ok(None)
    );
}

/// A packet bigger than the configured maximum is refused from its fixed header alone, before
/// its body is buffered.
#[test]
fn v311_2_2_3_oversized_packet_is_refused_from_the_fixed_header() {
    let header = hex("30 FF FF FF 7F");
    assert_eq!(
        decode(&mut BytesMut::from(&header[..]), V311, MAX),
        Err(DecodeError::PacketTooLarge {
            size: 268_435_455 + 5,
            max: MAX
        })
    );
    // Exactly at the limit is fine; one byte over is not, with only the header present.
    let at_limit = publish(0x30, b"t", None, &[0; 10]);
    let limit = at_limit.len();
    assert!(decode(&mut BytesMut::from(&at_limit[..]), V311, limit).is_ok_and(|p| p.is_some()));
    let over = publish(0x30, b"t", None, &[0; 11]);
    assert_eq!(
        decode(&mut BytesMut::from(&over[..2]), V311, limit),
        Err(DecodeError::PacketTooLarge {
            size: limit + 1,
            max: limit
        })
    );
    assert_eq!(
        DecodeError::PacketTooLarge { size: 1, max: 0 }.reason_code(),
        ReasonCode::PACKET_TOO_LARGE
    );
}

/// Packets whose fields run past their remaining length are malformed.
#[test]
fn v311_truncated_fields_are_malformed() {
    for bytes in [
        hex("40 01 00"),             // PUBACK with half a packet id
        hex("32 03 00 01 61"),       // QoS 1 PUBLISH with no room for its id
        hex("30 01 00"),             // topic length cut in half
        hex("82 05 00 01 00 01 61"), // SUBSCRIBE filter without its QoS byte
        hex("A2 04 00 01 00 05"),    // UNSUBSCRIBE filter shorter than its length
        hex("20 01 00"),             // CONNACK without its return code
    ] {
        assert_eq!(err(&bytes, V311), DecodeError::Truncated, "{bytes:02X?}");
    }
}

/// Bytes after the last field of a fixed-size packet are malformed.
#[test]
fn v311_trailing_bytes_are_malformed() {
    for bytes in [
        hex("C0 01 00"),
        hex("D0 01 00"),
        hex("E0 01 00"),
        hex("40 03 00 01 00"),
        hex("62 03 00 01 00"),
        hex("20 03 00 00 00"),
        hex("B0 03 00 01 00"),
    ] {
        assert_eq!(
            err(&bytes, V311),
            DecodeError::TrailingBytes,
            "{bytes:02X?}"
        );
    }
    let mut c = connect(0x02, &field(b"c"));
    c[1] += 1;
    c.push(0);
    assert_eq!(err(&c, V311), DecodeError::TrailingBytes);
}

// ---- 3.1 CONNECT --------------------------------------------------------------------------------

/// MQTT 3.1.1 [MQTT-3.1.2-1]: a protocol name other than `MQTT` (or 3.1's `MQIsdp`) is refused.
#[test]
fn v311_mqtt_3_1_2_1_wrong_protocol_name() {
    let mut body = field(b"MQTX");
    body.extend_from_slice(&[4, 2, 0, 60]);
    body.extend_from_slice(&field(b"c"));
    assert_eq!(
        err(&packet(0x10, &body), V311),
        DecodeError::InvalidProtocolName,
        "[MQTT-3.1.2-1]"
    );
    // 3.1 is `MQIsdp` at level 3 and is accepted as such.
    let mut body = field(b"MQIsdp");
    body.extend_from_slice(&[3, 2, 0, 60]);
    body.extend_from_slice(&field(b"c"));
    let Packet::Connect(c) = ok(&packet(0x10, &body), V311) else {
        panic!("not a CONNECT");
    };
    assert_eq!(c.protocol, V31, "[MQTT-3.1.2-1]");
}

/// Not a level of the standard: the top bit on 3.1 / 3.1.1 (0x83, 0x84) is a bridge saying
/// it is one (Mosquitto's `try_private`), decoded as that version plus `bridge`, and encoded
/// back the same way. 5.0 has no such bit: 0x85 is an unsupported level [MQTT-3.1.2-2].
#[test]
fn v311_the_bridge_bit_of_the_protocol_level() {
    for (name, level, version) in [(&b"MQTT"[..], 0x84, V311), (&b"MQIsdp"[..], 0x83, V31)] {
        let mut body = field(name);
        body.extend_from_slice(&[level, 2, 0, 60]);
        body.extend_from_slice(&field(b"c"));
        let bytes = packet(0x10, &body);
        let Packet::Connect(c) = ok(&bytes, V311) else {
            panic!("not a CONNECT");
        };
        assert_eq!((c.protocol, c.bridge), (version, true));
        assert_eq!(encode(&Packet::Connect(c), version), bytes);
    }
    let mut body = field(b"MQTT");
    body.extend_from_slice(&[0x85, 2, 0, 60, 0]);
    body.extend_from_slice(&field(b"c"));
    assert_eq!(
        err(&packet(0x10, &body), V311),
        DecodeError::UnsupportedProtocolLevel(0x85),
        "[MQTT-3.1.2-2]"
    );
}

/// MQTT 3.1.1 [MQTT-3.1.2-2]: an unsupported level is reported as such, so the server can answer
/// CONNACK 0x01 (`20 02 00 01`) before closing.
#[test]
fn v311_mqtt_3_1_2_2_unsupported_protocol_level() {
    let mut body = field(b"MQTT");
    body.extend_from_slice(&[7, 2, 0, 60]);
    body.extend_from_slice(&field(b"c"));
    let e = err(&packet(0x10, &body), V311);
    assert_eq!(
        e,
        DecodeError::UnsupportedProtocolLevel(7),
        "[MQTT-3.1.2-2]"
    );
    assert_eq!(e.reason_code(), ReasonCode::UNSUPPORTED_PROTOCOL_VERSION);
    let refusal = ConnAck::new(false, ReasonCode::V3_UNACCEPTABLE_PROTOCOL_VERSION);
    assert_eq!(
        encode(&Packet::ConnAck(refusal), V311),
        hex("20 02 00 01"),
        "[MQTT-3.1.2-2]"
    );
}

/// MQTT 3.1.1 [MQTT-3.1.2-3]: the reserved Connect Flags bit must be 0.
#[test]
fn v311_mqtt_3_1_2_3_reserved_connect_flag_is_refused() {
    for version_flags in [0x03, 0x01] {
        assert_eq!(
            err(&connect(version_flags, &field(b"c")), V311),
            DecodeError::ConnectReservedFlag,
            "[MQTT-3.1.2-3]"
        );
    }
}

/// MQTT 3.1.1 [MQTT-3.1.2-9]: with the Will Flag set, Will Topic and Will Message must follow.
#[test]
fn v311_mqtt_3_1_2_9_will_flag_without_will_fields() {
    assert_eq!(
        err(&connect(0x06, &field(b"c")), V311),
        DecodeError::Truncated,
        "[MQTT-3.1.2-9] payload ends after the client id"
    );
    let mut payload = field(b"c");
    payload.extend_from_slice(&field(b"w"));
    assert_eq!(
        err(&connect(0x06, &payload), V311),
        DecodeError::Truncated,
        "[MQTT-3.1.2-9] no Will Message"
    );
}

/// MQTT 3.1.1 [MQTT-3.1.2-11]: Will Flag 0 means Will QoS and Will Retain are 0.
#[test]
fn v311_mqtt_3_1_2_11_will_bits_without_will_flag() {
    for flags in [0x0A, 0x12, 0x22, 0x3A] {
        assert_eq!(
            err(&connect(flags, &field(b"c")), V311),
            DecodeError::WillFlagsWithoutWill,
            "[MQTT-3.1.2-11] flags {flags:#04x}"
        );
    }
}

/// MQTT 3.1.1 [MQTT-3.1.2-13]: Will Flag 0 requires Will QoS `00` (flags `0A` is refused).
#[test]
fn v311_mqtt_3_1_2_13_will_qos_without_will_flag() {
    assert_eq!(
        err(&connect(0x0A, &field(b"c")), V311),
        DecodeError::WillFlagsWithoutWill,
        "[MQTT-3.1.2-13]"
    );
}

/// MQTT 3.1.1 [MQTT-3.1.2-14]: Will QoS 3 is refused (flags `1E`).
#[test]
fn v311_mqtt_3_1_2_14_will_qos_3() {
    let mut payload = field(b"c");
    payload.extend_from_slice(&field(b"w"));
    payload.extend_from_slice(&field(b"m"));
    assert_eq!(
        err(&connect(0x1E, &payload), V311),
        DecodeError::InvalidWillQoS,
        "[MQTT-3.1.2-14]"
    );
    // QoS 0, 1 and 2 are all fine.
    for qos in 0..3u8 {
        let Packet::Connect(c) = ok(&connect(0x06 | qos << 3, &payload), V311) else {
            panic!("not a CONNECT");
        };
        let will = c.will.expect("will");
        assert_eq!(will.qos as u8, qos, "[MQTT-3.1.2-14]");
    }
}

/// MQTT 3.1.1 [MQTT-3.1.2-15]: Will Flag 0 requires Will Retain 0 (flags `22`).
#[test]
fn v311_mqtt_3_1_2_15_will_retain_without_will_flag() {
    assert_eq!(
        err(&connect(0x22, &field(b"c")), V311),
        DecodeError::WillFlagsWithoutWill,
        "[MQTT-3.1.2-15]"
    );
}

/// MQTT 3.1.1 [MQTT-3.1.2-18]: User Name Flag 0 means no user name follows.
#[test]
fn v311_mqtt_3_1_2_18_user_name_without_its_flag() {
    let mut payload = field(b"c");
    payload.extend_from_slice(&field(b"user"));
    assert_eq!(
        err(&connect(0x02, &payload), V311),
        DecodeError::TrailingBytes,
        "[MQTT-3.1.2-18]"
    );
}

/// MQTT 3.1.1 [MQTT-3.1.2-19]: User Name Flag 1 means a user name follows.
#[test]
fn v311_mqtt_3_1_2_19_user_name_flag_without_user_name() {
    assert_eq!(
        err(&connect(0x82, &field(b"c")), V311),
        DecodeError::Truncated,
        "[MQTT-3.1.2-19]"
    );
}

/// MQTT 3.1.1 [MQTT-3.1.2-20]: Password Flag 0 means no password follows.
#[test]
fn v311_mqtt_3_1_2_20_password_without_its_flag() {
    let mut payload = field(b"c");
    payload.extend_from_slice(&field(b"user"));
    payload.extend_from_slice(&field(b"pass"));
    assert_eq!(
        err(&connect(0x82, &payload), V311),
        DecodeError::TrailingBytes,
        "[MQTT-3.1.2-20]"
    );
}

/// MQTT 3.1.1 [MQTT-3.1.2-21]: Password Flag 1 means a password follows.
#[test]
fn v311_mqtt_3_1_2_21_password_flag_without_password() {
    let mut payload = field(b"c");
    payload.extend_from_slice(&field(b"user"));
    assert_eq!(
        err(&connect(0xC2, &payload), V311),
        DecodeError::Truncated,
        "[MQTT-3.1.2-21]"
    );
}

/// MQTT 3.1.1 [MQTT-3.1.2-22]: the Password Flag needs the User Name Flag (flags `42`), in 3.1
/// as in 3.1.1.
#[test]
fn v311_mqtt_3_1_2_22_password_without_user_name() {
    let mut payload = field(b"c");
    payload.extend_from_slice(&field(b"pass"));
    assert_eq!(
        err(&connect(0x42, &payload), V311),
        DecodeError::PasswordWithoutUsername,
        "[MQTT-3.1.2-22]"
    );
    let mut body = field(b"MQIsdp");
    body.extend_from_slice(&[3, 0x42, 0, 60]);
    body.extend_from_slice(&payload);
    assert_eq!(
        err(&packet(0x10, &body), V311),
        DecodeError::PasswordWithoutUsername,
        "[MQTT-3.1.2-22] MQTT 3.1"
    );
}

/// MQTT 3.1.1 [MQTT-3.1.3-1]: payload fields come in the order client id, Will Topic, Will
/// Message, user name, password — decoded and encoded that way.
#[test]
fn v311_mqtt_3_1_3_1_payload_field_order() {
    let mut payload = Vec::new();
    for f in [&b"client"[..], b"will/t", b"bye", b"user", b"pass"] {
        payload.extend_from_slice(&field(f));
    }
    let bytes = connect(0xCE, &payload); // user, password, will QoS 1, will, clean
    let expected = Packet::Connect(Box::new(Connect {
        will: Some(LastWill {
            topic: TopicName::try_from("will/t").expect("topic"),
            payload: Bytes::from_static(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties::new(),
        }),
        username: Some("user".into()),
        password: Some(Bytes::from_static(b"pass")),
        ..Connect::new("client")
    }));
    assert_eq!(ok(&bytes, V311), expected, "[MQTT-3.1.3-1]");
    assert_eq!(encode(&expected, V311), bytes, "[MQTT-3.1.3-1]");
}

/// MQTT 3.1.1 [MQTT-3.1.3-3]: the client id is always present.
#[test]
fn v311_mqtt_3_1_3_3_client_id_is_required() {
    assert_eq!(
        err(&connect(0x02, &[]), V311),
        DecodeError::Truncated,
        "[MQTT-3.1.3-3]"
    );
    // Present but empty is well formed (whether to accept it is the server's call, 3.1.3-6).
    let Packet::Connect(c) = ok(&connect(0x02, &field(b"")), V311) else {
        panic!("not a CONNECT");
    };
    assert!(c.client_id.is_empty(), "[MQTT-3.1.3-3]");
}

/// MQTT 3.1.1 [MQTT-3.1.3-4]: the client id is a UTF-8 string (`FF FE` is not).
#[test]
fn v311_mqtt_3_1_3_4_client_id_must_be_utf8() {
    assert_eq!(
        err(&connect(0x02, &field(&[0xFF, 0xFE])), V311),
        DecodeError::InvalidUtf8,
        "[MQTT-3.1.3-4]"
    );
}

/// MQTT 3.1.1 [MQTT-3.1.3-10]: the Will Topic is a UTF-8 string (`C3 28` is not).
#[test]
fn v311_mqtt_3_1_3_10_will_topic_must_be_utf8() {
    let mut payload = field(b"c");
    payload.extend_from_slice(&field(&[0xC3, 0x28]));
    payload.extend_from_slice(&field(b"m"));
    assert_eq!(
        err(&connect(0x06, &payload), V311),
        DecodeError::InvalidUtf8,
        "[MQTT-3.1.3-10]"
    );
    // And a topic name: no wildcards.
    let mut payload = field(b"c");
    payload.extend_from_slice(&field(b"w/#"));
    payload.extend_from_slice(&field(b"m"));
    assert_eq!(
        err(&connect(0x06, &payload), V311),
        DecodeError::WildcardInTopicName,
        "[MQTT-3.1.3-10]"
    );
}

/// MQTT 3.1.1 [MQTT-3.1.3-11]: the user name is a UTF-8 string (`ED B0 80` is not).
#[test]
fn v311_mqtt_3_1_3_11_user_name_must_be_utf8() {
    let mut payload = field(b"c");
    payload.extend_from_slice(&field(&[0xED, 0xB0, 0x80]));
    assert_eq!(
        err(&connect(0x82, &payload), V311),
        DecodeError::InvalidUtf8,
        "[MQTT-3.1.3-11]"
    );
}

/// MQTT 3.1.1 [MQTT-3.1.4-1]: a CONNECT that does not conform to 3.1 is refused.
#[test]
fn v311_mqtt_3_1_4_1_malformed_connects() {
    // Remaining length shorter than the fields.
    assert_eq!(
        err(&hex("10 04 00 04 4D 51"), V311),
        DecodeError::Truncated,
        "[MQTT-3.1.4-1]"
    );
    // Protocol-name length 5 swallows the level byte.
    let mut body = field(b"MQTT\x04");
    body.extend_from_slice(&[2, 0, 60]);
    body.extend_from_slice(&field(b"c"));
    assert_eq!(
        err(&packet(0x10, &body), V311),
        DecodeError::InvalidProtocolName,
        "[MQTT-3.1.4-1]"
    );
    // Client id length larger than what is left.
    assert_eq!(
        err(&connect(0x02, &hex("00 0A 61 62 63")), V311),
        DecodeError::Truncated,
        "[MQTT-3.1.4-1]"
    );
    // Keep alive cut in half.
    assert_eq!(
        err(&hex("10 09 00 04 4D 51 54 54 04 02 00"), V311),
        DecodeError::Truncated,
        "[MQTT-3.1.4-1]"
    );
}

// ---- 3.2 CONNACK --------------------------------------------------------------------------------

/// MQTT 3.1.1 [MQTT-3.2.2-1] / [MQTT-3.2.2-3]: an accepted CONNACK without a session is
/// `20 02 00 00`.
#[test]
fn v311_mqtt_3_2_2_1_connack_without_session_present() {
    let ack = Packet::ConnAck(ConnAck::new(false, ReasonCode::SUCCESS));
    assert_eq!(
        encode(&ack, V311),
        hex("20 02 00 00"),
        "[MQTT-3.2.2-1] [MQTT-3.2.2-3]"
    );
}

/// MQTT 3.1.1 [MQTT-3.2.2-2]: Session Present is bit 0 of the acknowledge flags.
#[test]
fn v311_mqtt_3_2_2_2_connack_with_session_present() {
    let ack = Packet::ConnAck(ConnAck::new(true, ReasonCode::SUCCESS));
    assert_eq!(encode(&ack, V311), hex("20 02 01 00"), "[MQTT-3.2.2-2]");
    assert_eq!(ok(&hex("20 02 01 00"), V311), ack, "[MQTT-3.2.2-2]");
    // Bits 7-1 of the acknowledge flags are reserved.
    assert!(matches!(
        err(&hex("20 02 02 00"), V311),
        DecodeError::InvalidFlags { .. }
    ));
}

/// MQTT 3.1.1 [MQTT-3.2.2-6]: return codes other than 0 to 5 do not exist in 3.1.1.
#[test]
fn v311_mqtt_3_2_2_6_undefined_connack_return_codes() {
    for code in [6u8, 0x80, 0x87, 0xFF] {
        assert_eq!(
            err(&[0x20, 0x02, 0x00, code], V311),
            DecodeError::InvalidReasonCode(code),
            "[MQTT-3.2.2-6]"
        );
    }
    for code in 0..=5u8 {
        assert_eq!(
            ok(&[0x20, 0x02, 0x00, code], V311),
            Packet::ConnAck(ConnAck::new(false, ReasonCode(code))),
            "[MQTT-3.2.2-6]"
        );
    }
}

// ---- 3.3 PUBLISH --------------------------------------------------------------------------------

/// MQTT 3.1.1 [MQTT-3.3.1-1]: DUP is bit 3 of the first byte, read and written as such.
#[test]
fn v311_mqtt_3_3_1_1_dup_flag() {
    let bytes = publish(0x3A, b"t", Some(9), b"x");
    let Packet::Publish(p) = ok(&bytes, V311) else {
        panic!("not a PUBLISH");
    };
    assert!(p.dup, "[MQTT-3.3.1-1]");
    assert_eq!(p.qos, QosPid::AtLeastOnce(pid(9)));
    assert_eq!(encode(&Packet::Publish(p), V311), bytes, "[MQTT-3.3.1-1]");
}

/// MQTT 3.1.1 [MQTT-3.3.1-2]: a QoS 0 PUBLISH must have DUP 0.
#[test]
fn v311_mqtt_3_3_1_2_dup_with_qos0_is_refused() {
    assert_eq!(
        err(&publish(0x38, b"t", None, b"x"), V311),
        DecodeError::DupWithQoS0,
        "[MQTT-3.3.1-2]"
    );
}

/// MQTT 3.1.1 [MQTT-3.3.1-4]: QoS bits `11` are refused (first byte `36`).
#[test]
fn v311_mqtt_3_3_1_4_qos_3_is_refused() {
    for first in [0x36, 0x37, 0x3E, 0x3F] {
        assert_eq!(
            err(&publish(first, b"t", Some(1), b"x"), V311),
            DecodeError::InvalidQoS,
            "[MQTT-3.3.1-4] {first:#04x}"
        );
    }
    assert_eq!(
        QoS::try_from(3),
        Err(DecodeError::InvalidQoS),
        "[MQTT-3.3.1-4]"
    );
}

/// MQTT 3.1.1 [MQTT-3.3.2-1]: the topic name is a UTF-8 string that fits in the packet.
#[test]
fn v311_mqtt_3_3_2_1_topic_name_is_a_utf8_string() {
    assert_eq!(
        err(&publish(0x30, &[0xC3, 0x28], None, b""), V311),
        DecodeError::InvalidUtf8,
        "[MQTT-3.3.2-1]"
    );
    // Topic length larger than the packet.
    assert_eq!(
        err(&hex("30 04 00 09 61 62"), V311),
        DecodeError::Truncated,
        "[MQTT-3.3.2-1]"
    );
}

/// MQTT 3.1.1 [MQTT-3.3.2-2]: a PUBLISH topic name has no wildcard.
#[test]
fn v311_mqtt_3_3_2_2_wildcard_in_topic_name_is_refused() {
    for topic in [&b"a/+"[..], b"a/#", b"#", b"+", b"a+b"] {
        assert_eq!(
            err(&publish(0x30, topic, None, b""), V311),
            DecodeError::WildcardInTopicName,
            "[MQTT-3.3.2-2] {topic:?}"
        );
    }
    assert_eq!(
        TopicName::try_from("a/+"),
        Err(DecodeError::WildcardInTopicName),
        "[MQTT-3.3.2-2]"
    );
}

// ---- 3.6 PUBREL ---------------------------------------------------------------------------------

/// MQTT 3.1.1 [MQTT-3.6.1-1]: PUBREL flags are `0010`; `60 02 ..` is refused.
#[test]
fn v311_mqtt_3_6_1_1_pubrel_flags() {
    assert_eq!(
        err(&hex("60 02 00 01"), V311),
        DecodeError::InvalidFlags {
            packet_type: 6,
            flags: 0
        },
        "[MQTT-3.6.1-1]"
    );
    assert_eq!(
        ok(&hex("62 02 00 01"), V311),
        Packet::PubRel(Ack::new(pid(1))),
        "[MQTT-3.6.1-1]"
    );
}

// ---- 3.8 SUBSCRIBE / 3.9 SUBACK -----------------------------------------------------------------

/// MQTT 3.1.1 [MQTT-3.8.1-1]: SUBSCRIBE flags are `0010`; `80 ..` and `83 ..` are refused.
#[test]
fn v311_mqtt_3_8_1_1_subscribe_flags() {
    let mut bytes = subscribe(1, b"t", 0);
    for first in [0x80, 0x83] {
        bytes[0] = first;
        assert!(
            matches!(
                err(&bytes, V311),
                DecodeError::InvalidFlags { packet_type: 8, .. }
            ),
            "[MQTT-3.8.1-1]"
        );
    }
}

/// MQTT 3.1.1 [MQTT-3.8.3-1]: topic filters are UTF-8 strings.
#[test]
fn v311_mqtt_3_8_3_1_topic_filter_must_be_utf8() {
    let mut filter = b"a/".to_vec();
    filter.extend_from_slice(SURROGATE);
    assert_eq!(
        err(&subscribe(1, &filter, 0), V311),
        DecodeError::InvalidUtf8,
        "[MQTT-3.8.3-1]"
    );
}

/// MQTT 3.1.1 [MQTT-3.8.3-3]: a SUBSCRIBE holds at least one filter.
#[test]
fn v311_mqtt_3_8_3_3_empty_subscribe_is_refused() {
    assert_eq!(
        err(&hex("82 02 00 01"), V311),
        DecodeError::EmptySubscribe,
        "[MQTT-3.8.3-3]"
    );
}

/// MQTT 3.1.1 [MQTT-3.8.3-4]: the upper six bits of the requested QoS are 0 and the QoS is 0-2.
#[test]
fn v311_mqtt_3_8_3_4_requested_qos_byte() {
    for options in [0x03, 0x41, 0x04, 0x80, 0xFF] {
        assert_eq!(
            err(&subscribe(1, b"t", options), V311),
            DecodeError::InvalidSubscriptionOptions,
            "[MQTT-3.8.3-4] {options:#04x}"
        );
    }
    for qos in 0..3u8 {
        let Packet::Subscribe(s) = ok(&subscribe(1, b"t", qos), V311) else {
            panic!("not a SUBSCRIBE");
        };
        assert_eq!(s.filters[0].1.qos as u8, qos, "[MQTT-3.8.3-4]");
    }
}

/// MQTT 3.1.1 [MQTT-3.8.4-5]: one code per filter, so an invalid filter must not fail the whole
/// SUBSCRIBE: decoding keeps it, `validate_topic_filter` flags it, and the SUBACK says `80` for it.
#[test]
fn v311_mqtt_3_8_4_5_invalid_filter_fails_alone() {
    let mut body = pid(3).get().to_be_bytes().to_vec();
    for (f, q) in [(&b"x"[..], 2u8), (b"y/#/z", 0), (b"w", 1)] {
        body.extend_from_slice(&field(f));
        body.push(q);
    }
    let Packet::Subscribe(s) = ok(&packet(0x82, &body), V311) else {
        panic!("not a SUBSCRIBE");
    };
    let codes: Vec<ReasonCode> = s
        .filters
        .iter()
        .map(|(f, o)| match validate_topic_filter(f) {
            Ok(()) => ReasonCode::granted(o.qos),
            Err(_) => ReasonCode::V3_SUBSCRIBE_FAILURE,
        })
        .collect();
    assert_eq!(
        encode(&Packet::SubAck(SubAck::new(s.packet_id, codes)), V311),
        hex("90 05 00 03 02 80 01"),
        "[MQTT-3.8.4-5] [MQTT-3.9.3-1]"
    );
}

/// MQTT 3.1.1 [MQTT-3.9.3-1]: SUBACK codes keep the order of the filters.
#[test]
fn v311_mqtt_3_9_3_1_suback_codes_keep_their_order() {
    let Packet::SubAck(a) = ok(&hex("90 05 00 03 02 80 01"), V311) else {
        panic!("not a SUBACK");
    };
    assert_eq!(
        a.codes,
        [
            ReasonCode::GRANTED_QOS_2,
            ReasonCode::V3_SUBSCRIBE_FAILURE,
            ReasonCode::GRANTED_QOS_1
        ],
        "[MQTT-3.9.3-1]"
    );
}

/// MQTT 3.1.1 [MQTT-3.9.3-2]: only 0x00, 0x01, 0x02 and 0x80 are SUBACK return codes.
#[test]
fn v311_mqtt_3_9_3_2_only_four_suback_codes() {
    for code in [0x03u8, 0x11, 0x81, 0x8F, 0xFF] {
        assert_eq!(
            err(&[0x90, 0x03, 0x00, 0x01, code], V311),
            DecodeError::InvalidReasonCode(code),
            "[MQTT-3.9.3-2]"
        );
    }
    for code in [0x00u8, 0x01, 0x02, 0x80] {
        assert!(
            decode_bytes(&[0x90, 0x03, 0x00, 0x01, code], V311).is_ok(),
            "[MQTT-3.9.3-2]"
        );
    }
}

// ---- 3.10 UNSUBSCRIBE ---------------------------------------------------------------------------

/// MQTT 3.1.1 [MQTT-3.10.1-1]: UNSUBSCRIBE flags are `0010`; `A0 ..` is refused.
#[test]
fn v311_mqtt_3_10_1_1_unsubscribe_flags() {
    let mut bytes = unsubscribe(1, b"t");
    bytes[0] = 0xA0;
    assert_eq!(
        err(&bytes, V311),
        DecodeError::InvalidFlags {
            packet_type: 10,
            flags: 0
        },
        "[MQTT-3.10.1-1]"
    );
}

/// MQTT 3.1.1 [MQTT-3.10.3-1]: UNSUBSCRIBE filters are UTF-8 strings.
#[test]
fn v311_mqtt_3_10_3_1_unsubscribe_filter_must_be_utf8() {
    assert_eq!(
        err(&unsubscribe(1, OVERLONG), V311),
        DecodeError::InvalidUtf8,
        "[MQTT-3.10.3-1]"
    );
}

/// MQTT 3.1.1 [MQTT-3.10.3-2]: an UNSUBSCRIBE holds at least one filter.
#[test]
fn v311_mqtt_3_10_3_2_empty_unsubscribe_is_refused() {
    assert_eq!(
        err(&hex("A2 02 00 01"), V311),
        DecodeError::EmptyUnsubscribe,
        "[MQTT-3.10.3-2]"
    );
}

/// MQTT 3.1.1 [MQTT-3.10.4-1]: unsubscribe filters are compared literally, so the codec hands
/// them over byte for byte, wildcards and all, without interpreting them.
#[test]
fn v311_mqtt_3_10_4_1_unsubscribe_filters_are_kept_literally() {
    let mut body = pid(1).get().to_be_bytes().to_vec();
    for f in ["a/+", "a/#", "A/+"] {
        body.extend_from_slice(&field(f.as_bytes()));
    }
    let Packet::Unsubscribe(u) = ok(&packet(0xA2, &body), V311) else {
        panic!("not an UNSUBSCRIBE");
    };
    let filters: Vec<&str> = u.filters.iter().map(|f| &**f).collect();
    assert_eq!(filters, ["a/+", "a/#", "A/+"], "[MQTT-3.10.4-1]");
}

/// MQTT 3.1.1 [MQTT-3.10.4-4]: UNSUBACK for id 77 is `B0 02 00 4D`.
#[test]
fn v311_mqtt_3_10_4_4_unsuback_bytes() {
    assert_eq!(
        encode(&Packet::UnsubAck(SubAck::new(pid(77), Vec::new())), V311),
        hex("B0 02 00 4D"),
        "[MQTT-3.10.4-4]"
    );
}

// ---- 3.12 PINGREQ / 3.14 DISCONNECT -------------------------------------------------------------

/// MQTT 3.1.1 [MQTT-3.12.4-1]: PINGREQ `C0 00` decodes and PINGRESP encodes as `D0 00`.
#[test]
fn v311_mqtt_3_12_4_1_pingreq_and_pingresp_bytes() {
    assert_eq!(ok(&hex("C0 00"), V311), Packet::PingReq, "[MQTT-3.12.4-1]");
    assert_eq!(
        encode(&Packet::PingResp, V311),
        hex("D0 00"),
        "[MQTT-3.12.4-1]"
    );
}

/// MQTT 3.1.1 [MQTT-3.14.1-1]: DISCONNECT's reserved bits must be 0; `E1 00` is refused.
#[test]
fn v311_mqtt_3_14_1_1_disconnect_flags() {
    assert_eq!(
        err(&hex("E1 00"), V311),
        DecodeError::InvalidFlags {
            packet_type: 14,
            flags: 1
        },
        "[MQTT-3.14.1-1]"
    );
}

// ---- 4.7 Topic names and topic filters ----------------------------------------------------------

/// MQTT 3.1.1 [MQTT-4.7.1-1]: wildcards belong in filters, never in topic names.
#[test]
fn v311_mqtt_4_7_1_1_wildcards_only_in_filters() {
    for s in ["a/#", "+/b", "#", "+"] {
        assert_eq!(
            validate_topic_filter(s),
            Ok(()),
            "[MQTT-4.7.1-1] filter {s}"
        );
        assert_eq!(
            validate_topic_name(s),
            Err(DecodeError::WildcardInTopicName),
            "[MQTT-4.7.1-1] name {s}"
        );
    }
    assert!(
        matches!(ok(&subscribe(1, b"a/#", 0), V311), Packet::Subscribe(_)),
        "[MQTT-4.7.1-1]"
    );
}

/// MQTT 3.1.1 [MQTT-4.7.1-2]: `#` stands alone in the last level.
#[test]
fn v311_mqtt_4_7_1_2_multi_level_wildcard() {
    for bad in ["a/#/b", "a#", "#/", "#/a", "a/b#", "##"] {
        assert_eq!(
            validate_topic_filter(bad),
            Err(DecodeError::InvalidMultiLevelWildcard),
            "[MQTT-4.7.1-2] {bad}"
        );
    }
    for good in ["#", "a/#", "/#", "a/b/#", "+/#"] {
        assert_eq!(validate_topic_filter(good), Ok(()), "[MQTT-4.7.1-2] {good}");
    }
    // `#` matches the parent level and every level below it.
    for topic in [
        "sport/tennis",
        "sport/tennis/player1",
        "sport/tennis/player1/ranking",
    ] {
        assert!(
            topic_matches("sport/tennis/#", topic),
            "[MQTT-4.7.1-2] {topic}"
        );
    }
    assert!(!topic_matches("sport/tennis/#", "sport"), "[MQTT-4.7.1-2]");
    assert!(
        !topic_matches("sport/tennis/#", "sport/tennisball"),
        "[MQTT-4.7.1-2]"
    );
    assert!(topic_matches("#", "a/b/c"), "[MQTT-4.7.1-2]");
    assert!(topic_matches("#", "/"), "[MQTT-4.7.1-2]");
}

/// MQTT 3.1.1 [MQTT-4.7.1-3]: `+` fills a whole level, at any level.
#[test]
fn v311_mqtt_4_7_1_3_single_level_wildcard() {
    for bad in ["a+", "a/+b", "+a/b", "++", "a/b+/c"] {
        assert_eq!(
            validate_topic_filter(bad),
            Err(DecodeError::InvalidSingleLevelWildcard),
            "[MQTT-4.7.1-3] {bad}"
        );
    }
    for good in ["+", "+/+", "a/+/c", "/+", "+/", "+/+/+"] {
        assert_eq!(validate_topic_filter(good), Ok(()), "[MQTT-4.7.1-3] {good}");
    }
    // The spec's examples: `sport/+` matches `sport/` but not `sport`; `+/+` and `/+` match
    // `/finance`, `+` does not.
    assert!(
        topic_matches("sport/tennis/+", "sport/tennis/player1"),
        "[MQTT-4.7.1-3]"
    );
    assert!(
        !topic_matches("sport/tennis/+", "sport/tennis/player1/ranking"),
        "[MQTT-4.7.1-3]"
    );
    assert!(!topic_matches("sport/+", "sport"), "[MQTT-4.7.1-3]");
    assert!(topic_matches("sport/+", "sport/"), "[MQTT-4.7.1-3]");
    assert!(topic_matches("+/+", "/finance"), "[MQTT-4.7.1-3]");
    assert!(topic_matches("/+", "/finance"), "[MQTT-4.7.1-3]");
    assert!(!topic_matches("+", "/finance"), "[MQTT-4.7.1-3]");
    assert!(topic_matches("+", "finance"), "[MQTT-4.7.1-3]");
    assert!(
        topic_matches("a/+/c", "a//c"),
        "[MQTT-4.7.1-3] an empty level is a level"
    );
}

/// MQTT 3.1.1 [MQTT-4.7.2-1]: filters starting with a wildcard never match `$` topics.
#[test]
fn v311_mqtt_4_7_2_1_wildcards_do_not_match_dollar_topics() {
    for (filter, topic) in [
        ("#", "$SYS/broker/load"),
        ("+/x", "$foo/x"),
        ("+/monitor/Clients", "$SYS/monitor/Clients"),
        ("#", "$"),
        ("+", "$SYS"),
    ] {
        assert!(
            !topic_matches(filter, topic),
            "[MQTT-4.7.2-1] {filter} vs {topic}"
        );
    }
    for (filter, topic) in [
        ("$SYS/#", "$SYS/broker/load"),
        ("$SYS/monitor/+", "$SYS/monitor/Clients"),
        ("$foo/#", "$foo/x"),
        ("$SYS", "$SYS"),
        // Only the first character counts: a `$` further in is ordinary.
        ("+/$x", "a/$x"),
        ("#", "a/$SYS"),
    ] {
        assert!(
            topic_matches(filter, topic),
            "[MQTT-4.7.2-1] {filter} vs {topic}"
        );
    }
}

/// MQTT 3.1.1 [MQTT-4.7.3-1]: topic names and filters are at least one character long.
#[test]
fn v311_mqtt_4_7_3_1_empty_topics_are_refused() {
    assert_eq!(
        err(&publish(0x30, b"", None, b"x"), V311),
        DecodeError::EmptyTopic,
        "[MQTT-4.7.3-1]"
    );
    assert_eq!(
        validate_topic_name(""),
        Err(DecodeError::EmptyTopic),
        "[MQTT-4.7.3-1]"
    );
    assert_eq!(
        validate_topic_filter(""),
        Err(DecodeError::EmptyTopic),
        "[MQTT-4.7.3-1]"
    );
    // An empty filter makes the whole SUBSCRIBE / UNSUBSCRIBE malformed (the connection
    // closes, as Mosquitto does), alone or among others.
    assert_eq!(
        err(&subscribe(1, b"", 0), V311),
        DecodeError::EmptyTopic,
        "[MQTT-4.7.3-1]"
    );
    assert_eq!(
        err(&unsubscribe(1, b""), V311),
        DecodeError::EmptyTopic,
        "[MQTT-4.7.3-1]"
    );
}

/// MQTT 3.1 CONNECTs from old devices: the reserved connect flag and fixed-header flags are
/// accepted, as Mosquitto accepts them (3.1 had no rule against them); 3.1.1 still refuses.
#[test]
fn v31_connect_reserved_bits_are_accepted() {
    let body = hex("00 06 4D 51 49 73 64 70 03 01 00 0A 00 01 70");
    let Packet::Connect(c) = ok(&packet(0x10, &body), V311) else {
        panic!("not a CONNECT");
    };
    assert_eq!(c.protocol, V31);
    assert_eq!(&*c.client_id, "p");
    assert!(matches!(ok(&packet(0x14, &body), V311), Packet::Connect(_)));
    assert_eq!(
        err(&connect(0x03, &field(b"p")), V311),
        DecodeError::ConnectReservedFlag,
        "[MQTT-3.1.2-3]"
    );
}

/// Control characters (U+0001..U+001F, U+007F..U+009F) in a client id, user name, topic name
/// or topic filter make the packet malformed: the spec lets a receiver close [MQTT-1.5.3-2],
/// and Vireo does, as Mosquitto does.
#[test]
fn control_characters_are_refused() {
    for bad in [
        &b"a\x01b"[..],
        b"a\x1f",
        b"\x7f",
        "a\u{85}".as_bytes(),
        "\u{9f}".as_bytes(),
    ] {
        assert_eq!(
            err(&publish(0x30, bad, None, b"x"), V311),
            DecodeError::ControlCharacter,
            "topic {bad:02x?}"
        );
        assert_eq!(
            err(&subscribe(1, bad, 0), V311),
            DecodeError::ControlCharacter
        );
        assert_eq!(
            err(&unsubscribe(1, bad), V311),
            DecodeError::ControlCharacter
        );
        assert_eq!(
            err(&connect(0x02, &field(bad)), V311),
            DecodeError::ControlCharacter,
            "client id"
        );
        let mut payload = field(b"id");
        payload.extend_from_slice(&field(bad));
        assert_eq!(
            err(&connect(0x82, &payload), V311),
            DecodeError::ControlCharacter,
            "user name"
        );
        let text = std::str::from_utf8(bad).expect("UTF-8");
        assert_eq!(
            validate_topic_filter(text),
            Err(DecodeError::ControlCharacter)
        );
        assert_eq!(
            validate_topic_name(text),
            Err(DecodeError::ControlCharacter)
        );
    }
    // Characters next to the ranges pass: U+00A0, U+0080's neighbours in other planes, tabs in
    // payloads (payloads are not strings).
    assert!(matches!(
        ok(
            &publish(0x30, "a\u{a0}\u{100}".as_bytes(), None, b"\x01"),
            V311
        ),
        Packet::Publish(_)
    ));
}

/// MQTT 3.1.1 [MQTT-4.7.3-2]: topic names and filters never contain U+0000.
#[test]
fn v311_mqtt_4_7_3_2_null_in_topics_is_refused() {
    assert_eq!(
        validate_topic_name("a\0"),
        Err(DecodeError::NullCharacter),
        "[MQTT-4.7.3-2]"
    );
    assert_eq!(
        validate_topic_filter("a\0/#"),
        Err(DecodeError::NullCharacter),
        "[MQTT-4.7.3-2]"
    );
    assert_eq!(
        err(&subscribe(1, b"a\0/#", 0), V311),
        DecodeError::NullCharacter,
        "[MQTT-4.7.3-2]"
    );
    assert_eq!(
        err(&publish(0x30, b"a\0", None, b""), V311),
        DecodeError::NullCharacter,
        "[MQTT-4.7.3-2]"
    );
}

/// MQTT 3.1.1 [MQTT-4.7.3-3]: topics fit a 65 535-byte string; a 65 535-byte topic round-trips.
#[test]
fn v311_mqtt_4_7_3_3_longest_topic_round_trips() {
    let long = "t".repeat(65_535);
    let p = Packet::Publish(Publish::new(
        TopicName::try_from(&*long).expect("topic"),
        "x",
    ));
    let bytes = encode(&p, V311);
    assert_eq!(bytes.len(), 1 + 3 + 2 + 65_535 + 1);
    assert_eq!(ok(&bytes, V311), p, "[MQTT-4.7.3-3]");
    // One byte more does not fit the length prefix.
    let longer = "t".repeat(65_536);
    assert!(validate_topic_name(&longer).is_err(), "[MQTT-4.7.3-3]");
    assert!(validate_topic_filter(&longer).is_err(), "[MQTT-4.7.3-3]");
    let sub = Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        properties: Properties::new(),
        filters: vec![(longer.into(), SubscriptionOptions::default())],
    });
    assert_eq!(
        sub.encode(V311, &mut BytesMut::new()),
        Err(EncodeError::FieldTooLong(65_536)),
        "[MQTT-4.7.3-3]"
    );
    // A length prefix larger than the packet.
    assert_eq!(
        err(&hex("30 03 FF FF 61"), V311),
        DecodeError::Truncated,
        "[MQTT-4.7.3-3]"
    );
}

/// MQTT 3.1.1 [MQTT-4.7.3-4]: matching compares exact bytes: no normalisation, no case folding.
#[test]
fn v311_mqtt_4_7_3_4_matching_is_byte_exact() {
    let nfc = "caf\u{E9}";
    assert!(topic_matches(nfc, nfc), "[MQTT-4.7.3-4]");
    assert!(!topic_matches(nfc, "cafe\u{301}"), "[MQTT-4.7.3-4] NFD");
    assert!(
        !topic_matches(nfc, "CAF\u{C9}"),
        "[MQTT-4.7.3-4] upper case"
    );
    assert!(!topic_matches("ACCOUNTS", "Accounts"), "[MQTT-4.7.3-4]");
    assert!(
        !topic_matches("a/b", "a/b "),
        "[MQTT-4.7.3-4] trailing space"
    );
    assert!(topic_matches("+/\u{FEFF}", "x/\u{FEFF}"), "[MQTT-4.7.3-4]");
    // The decoded topic keeps the bytes exactly as sent.
    let Packet::Publish(p) = ok(&publish(0x30, "cafe\u{301}".as_bytes(), None, b""), V311) else {
        panic!("not a PUBLISH");
    };
    assert_eq!(
        p.topic.as_bytes(),
        "cafe\u{301}".as_bytes(),
        "[MQTT-4.7.3-4]"
    );
}

// ---- 4.8 Handling errors ------------------------------------------------------------------------

/// MQTT 3.1.1 [MQTT-4.8.0-1]: packet types 0 and 15 are reserved: a protocol violation.
#[test]
fn v311_mqtt_4_8_0_1_reserved_packet_types() {
    assert_eq!(
        err(&hex("00 00"), V311),
        DecodeError::ReservedPacketType(0),
        "[MQTT-4.8.0-1]"
    );
    assert_eq!(
        err(&hex("F0 00"), V311),
        DecodeError::ReservedPacketType(15),
        "[MQTT-4.8.0-1]"
    );
    assert_eq!(
        err(&hex("F0 00"), V31),
        DecodeError::ReservedPacketType(15),
        "[MQTT-4.8.0-1]"
    );
    assert_eq!(
        err(&hex("00 00"), V5),
        DecodeError::ReservedPacketType(0),
        "[MQTT-4.8.0-1]"
    );
}

// ---- MQTT 5.0 -----------------------------------------------------------------------------------

fn v5_connect_with_properties(props: &[u8]) -> Vec<u8> {
    let mut body = field(b"MQTT");
    body.extend_from_slice(&[5, 2, 0, 60]);
    body.push(u8::try_from(props.len()).expect("short"));
    body.extend_from_slice(props);
    body.extend_from_slice(&field(b"c"));
    packet(0x10, &body)
}

fn v5_publish_with_properties(topic: &[u8], props: &[u8]) -> Vec<u8> {
    let mut body = field(topic);
    body.push(u8::try_from(props.len()).expect("short"));
    body.extend_from_slice(props);
    body.extend_from_slice(b"payload");
    packet(0x30, &body)
}

/// MQTT 5.0 [v5 MQTT-3.1.4-1]: a property given twice (two Session Expiry Intervals) is refused.
#[test]
fn v5_duplicate_property_is_refused() {
    let props = hex("11 00 00 00 0A 11 00 00 00 0B");
    let e = err(&v5_connect_with_properties(&props), V5);
    assert_eq!(e, DecodeError::DuplicateProperty(0x11), "[v5 MQTT-3.1.4-1]");
    assert_eq!(e.reason_code(), ReasonCode::PROTOCOL_ERROR);
    // Topic Alias twice in a PUBLISH.
    assert_eq!(
        err(
            &v5_publish_with_properties(b"t", &hex("23 00 01 23 00 02")),
            V5
        ),
        DecodeError::DuplicateProperty(0x23)
    );
}

/// MQTT 5.0 spec 2.2.2.2: User Properties may repeat (and keep their order [v5 MQTT-3.3.2-18]);
/// so may Subscription Identifiers in a PUBLISH, but not in a SUBSCRIBE.
#[test]
fn v5_repeatable_properties() {
    let props = hex("26 00 01 6B 00 01 31 26 00 01 6A 00 01 32 26 00 01 6B 00 01 33");
    let Packet::Publish(p) = ok(&v5_publish_with_properties(b"t", &props), V5) else {
        panic!("not a PUBLISH");
    };
    let pairs: Vec<(String, String)> = p
        .properties
        .iter()
        .filter_map(|p| match p {
            Property::UserProperty(k, v) => Some((k.to_string(), v.to_string())),
            _ => None,
        })
        .collect();
    let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (&**k, &**v)).collect();
    assert_eq!(
        pairs,
        [("k", "1"), ("j", "2"), ("k", "3")],
        "[v5 MQTT-3.3.2-18]"
    );
    let Packet::Publish(p) = ok(&v5_publish_with_properties(b"t", &hex("0B 01 0B 02")), V5) else {
        panic!("not a PUBLISH");
    };
    assert_eq!(
        p.properties.iter().collect::<Vec<_>>(),
        [
            Property::SubscriptionIdentifier(1),
            Property::SubscriptionIdentifier(2)
        ]
    );
    // SUBSCRIBE: 82 | 00 01 | 04 0B 01 0B 02 | 00 01 "t" 00
    assert_eq!(
        err(&hex("82 0B 00 01 04 0B 01 0B 02 00 01 74 00"), V5),
        DecodeError::DuplicateProperty(0x0B)
    );
}

/// MQTT 5.0 spec 2.2.2.2: a property not defined for the packet is a malformed packet.
#[test]
fn v5_property_not_allowed_in_packet_is_refused() {
    // Session Expiry Interval in a PUBLISH.
    assert_eq!(
        err(
            &v5_publish_with_properties(b"t", &hex("11 00 00 00 0A")),
            V5
        ),
        DecodeError::InvalidProperty(0x11)
    );
    // Topic Alias in a CONNECT.
    assert_eq!(
        err(&v5_connect_with_properties(&hex("23 00 01")), V5),
        DecodeError::InvalidProperty(0x23)
    );
    // Will Delay Interval outside the Will.
    assert_eq!(
        err(&v5_connect_with_properties(&hex("18 00 00 00 01")), V5),
        DecodeError::InvalidProperty(0x18)
    );
    // Reason String in a PUBLISH; an unknown id.
    assert_eq!(
        err(&v5_publish_with_properties(b"t", &hex("1F 00 00")), V5),
        DecodeError::InvalidProperty(0x1F)
    );
    assert_eq!(
        err(&v5_publish_with_properties(b"t", &hex("7F 00")), V5),
        DecodeError::InvalidProperty(0x7F)
    );
    // Any property in an UNSUBSCRIBE other than User Property: A2 | 00 01 | 02 0B 01 | 00 01 "t"
    assert_eq!(
        err(&hex("A2 08 00 01 02 0B 01 00 01 74"), V5),
        DecodeError::InvalidProperty(0x0B)
    );
}

/// MQTT 5.0 spec 2.4: a reason code the packet does not define is refused.
#[test]
fn v5_invalid_reason_code_is_refused() {
    for (bytes, code) in [
        (hex("40 03 00 01 05"), 0x05),    // PUBACK
        (hex("50 03 00 01 92"), 0x92),    // PUBREC: 0x92 is PUBREL/PUBCOMP only
        (hex("62 03 00 01 10"), 0x10),    // PUBREL: 0x10 is PUBACK/PUBREC only
        (hex("70 03 00 01 80"), 0x80),    // PUBCOMP
        (hex("E0 01 01"), 0x01),          // DISCONNECT
        (hex("F0 01 01"), 0x01),          // AUTH
        (hex("20 03 00 01 00"), 0x01),    // CONNACK: 3.1.1's code 1 is not a v5 code
        (hex("90 04 00 01 00 03"), 0x03), // SUBACK
        (hex("B0 04 00 01 00 01"), 0x01), // UNSUBACK
    ] {
        assert_eq!(
            err(&bytes, V5),
            DecodeError::InvalidReasonCode(code),
            "{bytes:02X?}"
        );
    }
}

/// MQTT 5.0: property values out of their range are refused; Topic Alias 0 never appears
/// [v5 MQTT-3.3.2-8].
#[test]
fn v5_property_value_out_of_range() {
    for (props, id) in [
        (hex("01 02"), 0x01),    // Payload Format Indicator 2
        (hex("23 00 00"), 0x23), // Topic Alias 0
        (hex("0B 00"), 0x0B),    // Subscription Identifier 0
    ] {
        assert_eq!(
            err(&v5_publish_with_properties(b"t", &props), V5),
            DecodeError::InvalidPropertyValue(id),
            "[v5 MQTT-3.3.2-8] {props:02X?}"
        );
    }
    for (props, id) in [
        (hex("21 00 00"), 0x21),       // Receive Maximum 0
        (hex("27 00 00 00 00"), 0x27), // Maximum Packet Size 0
        (hex("17 02"), 0x17),          // Request Problem Information 2
    ] {
        assert_eq!(
            err(&v5_connect_with_properties(&props), V5),
            DecodeError::InvalidPropertyValue(id),
            "{props:02X?}"
        );
    }
}

/// MQTT 5.0 [v5 MQTT-3.3.2-14]: a Response Topic is a topic name, so it has no wildcards.
#[test]
fn v5_response_topic_without_wildcards() {
    let props = hex("08 00 03 72 2F 23");
    assert_eq!(
        err(&v5_publish_with_properties(b"t", &props), V5),
        DecodeError::InvalidPropertyValue(0x08),
        "[v5 MQTT-3.3.2-14]"
    );
    let props = hex("08 00 03 72 2F 78");
    assert!(decode_bytes(&v5_publish_with_properties(b"t", &props), V5).is_ok());
}

/// MQTT 5.0 [v5 MQTT-4.7.3-1]: an empty topic name needs a Topic Alias.
#[test]
fn v5_empty_topic_needs_a_topic_alias() {
    assert_eq!(
        err(&v5_publish_with_properties(b"", &[]), V5),
        DecodeError::EmptyTopic,
        "[v5 MQTT-4.7.3-1]"
    );
    let Packet::Publish(p) = ok(&v5_publish_with_properties(b"", &hex("23 00 01")), V5) else {
        panic!("not a PUBLISH");
    };
    assert!(p.topic.is_empty(), "[v5 MQTT-4.7.3-1]");
}

/// MQTT 5.0 [v5 MQTT-1.5.5-1]: variable byte integers use the fewest bytes.
#[test]
fn v5_non_minimal_variable_byte_integers_are_refused() {
    // Remaining length 0 written in two bytes.
    assert_eq!(
        err(&hex("C0 80 00"), V5),
        DecodeError::MalformedRemainingLength,
        "[v5 MQTT-1.5.5-1]"
    );
    // 3.1.1 has no such rule and accepts it.
    assert_eq!(ok(&hex("C0 80 00"), V311), Packet::PingReq);
    // Property length 0 written in two bytes.
    assert_eq!(
        err(&hex("30 06 00 01 74 80 00 78"), V5),
        DecodeError::MalformedVarInt,
        "[v5 MQTT-1.5.5-1]"
    );
    // Subscription identifier 1 written in two bytes.
    assert_eq!(
        err(&v5_publish_with_properties(b"t", &hex("0B 81 00")), V5),
        DecodeError::MalformedVarInt,
        "[v5 MQTT-1.5.5-1]"
    );
    // A property length of five bytes.
    assert_eq!(
        err(&hex("30 09 00 01 74 FF FF FF FF 01 78"), V5),
        DecodeError::MalformedVarInt,
        "[v5 MQTT-1.5.5-1]"
    );
}

/// MQTT 5.0 [v5 MQTT-1.5.7-1]: both strings of a User Property are UTF-8 strings.
#[test]
fn v5_user_property_strings_are_utf8() {
    let mut props = hex("26 00 01 6B 00 03");
    props.extend_from_slice(SURROGATE);
    assert_eq!(
        err(&v5_publish_with_properties(b"t", &props), V5),
        DecodeError::InvalidUtf8,
        "[v5 MQTT-1.5.7-1]"
    );
    assert_eq!(
        err(
            &v5_publish_with_properties(b"t", &hex("26 00 01 00 00 00")),
            V5
        ),
        DecodeError::NullCharacter,
        "[v5 MQTT-1.5.7-1]"
    );
}

/// MQTT 5.0 [v5 MQTT-3.1.2-19]: unlike 3.1.1, a password without a user name is well formed.
#[test]
fn v5_password_without_user_name_is_allowed() {
    let mut body = field(b"MQTT");
    body.extend_from_slice(&[5, 0x42, 0, 60, 0]);
    body.extend_from_slice(&field(b"c"));
    body.extend_from_slice(&field(b"pw"));
    let Packet::Connect(c) = ok(&packet(0x10, &body), V5) else {
        panic!("not a CONNECT");
    };
    assert_eq!(c.username, None, "[v5 MQTT-3.1.2-19]");
    assert_eq!(
        c.password.as_deref(),
        Some(&b"pw"[..]),
        "[v5 MQTT-3.1.2-19]"
    );
}

/// MQTT 5.0 [v5 MQTT-3.8.3-5]: reserved subscription-option bits and Retain Handling 3 are refused.
#[test]
fn v5_subscription_options_reserved_bits() {
    // 82 | 00 01 | 00 | 00 01 "t" | options
    for options in [0xC1u8, 0x40, 0x30, 0x03] {
        assert_eq!(
            err(&[0x82, 0x07, 0, 1, 0, 0, 1, b't', options], V5),
            DecodeError::InvalidSubscriptionOptions,
            "[v5 MQTT-3.8.3-5] {options:#04x}"
        );
    }
    // No Local, Retain As Published and Retain Handling 2 are fine in v5 (not in 3.1.1).
    assert!(decode_bytes(&[0x82, 0x07, 0, 1, 0, 0, 1, b't', 0x2E], V5).is_ok_and(|p| p.is_some()));
    assert!(decode_bytes(&[0x82, 0x06, 0, 1, 0, 1, b't', 0x2E], V311).is_err());
}

/// MQTT 5.0 [v5 MQTT-3.8.3-2] and spec 3.10.3: SUBSCRIBE and UNSUBSCRIBE need a filter in v5 too.
#[test]
fn v5_empty_subscribe_and_unsubscribe() {
    assert_eq!(
        err(&hex("82 03 00 01 00"), V5),
        DecodeError::EmptySubscribe,
        "[v5 MQTT-3.8.3-2]"
    );
    assert_eq!(
        err(&hex("A2 03 00 01 00"), V5),
        DecodeError::EmptyUnsubscribe
    );
}

/// Each decode error maps to the v5 reason code a server sends for it.
#[test]
fn v5_decode_errors_map_to_reason_codes() {
    for (e, code) in [
        (
            DecodeError::MalformedRemainingLength,
            ReasonCode::MALFORMED_PACKET,
        ),
        (DecodeError::InvalidQoS, ReasonCode::MALFORMED_PACKET),
        (
            DecodeError::UnsupportedProtocolLevel(6),
            ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
        ),
        (
            DecodeError::WildcardInTopicName,
            ReasonCode::TOPIC_NAME_INVALID,
        ),
        (
            DecodeError::InvalidMultiLevelWildcard,
            ReasonCode::TOPIC_FILTER_INVALID,
        ),
        (
            DecodeError::DuplicateProperty(0x11),
            ReasonCode::PROTOCOL_ERROR,
        ),
        (DecodeError::ZeroPacketId, ReasonCode::PROTOCOL_ERROR),
    ] {
        assert_eq!(e.reason_code(), code, "{e}");
    }
    // Every protocol violation names a spec tag in its message (except the length/trailing ones).
    assert!(
        DecodeError::InvalidQoS
            .to_string()
            .contains("[MQTT-3.3.1-4]")
    );
}
