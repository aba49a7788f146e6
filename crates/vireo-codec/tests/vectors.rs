//! Byte-exact vectors: every packet type, decoded into the expected struct and encoded back into
//! exactly the same bytes.
//!
//! The 3.1.1 vectors come from the hex examples in the seed notes (`shared/seeds/004_*.txt`); the
//! 3.1 and 5.0 vectors were assembled by hand from the spec, field by field, with the layout
//! written next to each one.

mod common;

use common::{MAX, hex, pid};
use vireo_codec::{
    Ack, Bytes, BytesMut, ConnAck, Connect, DecodeError, Disconnect, LastWill, Packet, Properties,
    Property, ProtocolVersion, Publish, QoS, QosPid, ReasonCode, SubAck, Subscribe,
    SubscriptionOptions, TopicName, Unsubscribe, decode,
};

use ProtocolVersion::{V5, V31, V311};

fn topic(s: &str) -> TopicName {
    TopicName::try_from(s).expect("valid topic")
}

/// Decodes `bytes` as exactly one packet, consuming all of it.
fn decode_one(bytes: &[u8], version: ProtocolVersion) -> Packet {
    let mut buf = BytesMut::from(bytes);
    let packet = decode(&mut buf, version, MAX)
        .expect("decodes")
        .expect("complete");
    assert!(buf.is_empty(), "decode left {} bytes", buf.len());
    packet
}

fn encode(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
    let mut buf = BytesMut::new();
    packet.encode(version, &mut buf).expect("encodes");
    assert_eq!(
        packet.encoded_len(version),
        buf.len(),
        "encoded_len of {}",
        packet.name()
    );
    buf.to_vec()
}

/// The full check for one vector: decode gives `expected`, encode gives the bytes back, and
/// every strict prefix of the bytes asks for more input without consuming anything.
fn check(bytes: &[u8], version: ProtocolVersion, expected: &Packet) {
    assert_eq!(&decode_one(bytes, version), expected, "decode");
    assert_eq!(encode(expected, version), bytes, "encode of {expected:?}");
    for cut in 0..bytes.len() {
        let mut buf = BytesMut::from(&bytes[..cut]);
        assert_eq!(
            decode(&mut buf, version, MAX),
            Ok(None),
            "prefix of {cut} bytes"
        );
        assert_eq!(buf.len(), cut, "a partial packet must not be consumed");
    }
}

fn check_hex(h: &str, version: ProtocolVersion, expected: &Packet) {
    check(&hex(h), version, expected);
}

// ---- MQTT 3.1.1, from the seed notes ------------------------------------------------------------

#[test]
fn v311_connect_with_username_and_password() {
    // 10 | 25 | 00 04 "MQTT" | 04 | C2 (user, password, clean) | 00 78 (120 s)
    //    | 00 09 "528986875" | 00 06 "248493" | 00 06 "kfbskd"
    let expected = Packet::Connect(Box::new(Connect {
        keep_alive: 120,
        username: Some("248493".into()),
        password: Some(Bytes::from_static(b"kfbskd")),
        ..Connect::new("528986875")
    }));
    check_hex(
        "10 25 00 04 4D 51 54 54 04 C2 00 78 00 09 35 32 38 39 38 36 38 37 35 \
         00 06 32 34 38 34 39 33 00 06 6B 66 62 73 6B 64",
        V311,
        &expected,
    );
}

#[test]
fn v311_connect_carries_its_own_version() {
    // The connection's version argument is ignored for CONNECT: it says which version it is.
    let bytes = hex(
        "10 25 00 04 4D 51 54 54 04 C2 00 78 00 09 35 32 38 39 38 36 38 37 35 \
         00 06 32 34 38 34 39 33 00 06 6B 66 62 73 6B 64",
    );
    for version in [V31, V311, V5] {
        let Packet::Connect(c) = decode_one(&bytes, version) else {
            panic!("not a CONNECT");
        };
        assert_eq!(c.protocol, V311);
        assert_eq!(encode(&Packet::Connect(c), version), bytes);
    }
}

#[test]
fn v311_connect_with_will_username_and_password() {
    // 10 1D | 00 04 "MQTT" | 04 | F6 = user 80 + password 40 + will retain 20 + will QoS 2 (10)
    //       + will 04 + clean 02 | 00 3C | 00 02 "id" | 00 03 "w/t" | 00 02 01 02 | 00 01 "u"
    //       | 00 01 "p"
    let expected = Packet::Connect(Box::new(Connect {
        will: Some(LastWill {
            topic: topic("w/t"),
            payload: Bytes::from_static(&[1, 2]),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: Properties::new(),
        }),
        username: Some("u".into()),
        password: Some(Bytes::from_static(b"p")),
        ..Connect::new("id")
    }));
    check_hex(
        "10 1D 00 04 4D 51 54 54 04 F6 00 3C 00 02 69 64 00 03 77 2F 74 00 02 01 02 \
         00 01 75 00 01 70",
        V311,
        &expected,
    );
}

#[test]
fn v311_connack() {
    check_hex(
        "20 02 00 00",
        V311,
        &Packet::ConnAck(ConnAck::new(false, ReasonCode::SUCCESS)),
    );
    // The seed's example: Session Present set.
    check_hex(
        "20 02 01 00",
        V311,
        &Packet::ConnAck(ConnAck::new(true, ReasonCode::SUCCESS)),
    );
    check_hex(
        "20 02 00 05",
        V311,
        &Packet::ConnAck(ConnAck::new(false, ReasonCode::V3_NOT_AUTHORIZED)),
    );
}

fn kfb_publish(qos: QosPid) -> Packet {
    Packet::Publish(Publish {
        qos,
        ..Publish::new(topic("kfb_topic"), Bytes::from_static(b"123"))
    })
}

#[test]
fn v311_publish_qos0() {
    // 30 0E | 00 09 "kfb_topic" | "123": no packet id at QoS 0.
    check_hex(
        "30 0E 00 09 6B 66 62 5F 74 6F 70 69 63 31 32 33",
        V311,
        &kfb_publish(QosPid::AtMostOnce),
    );
}

#[test]
fn v311_publish_qos1() {
    check_hex(
        "32 10 00 09 6B 66 62 5F 74 6F 70 69 63 00 01 31 32 33",
        V311,
        &kfb_publish(QosPid::AtLeastOnce(pid(1))),
    );
}

#[test]
fn v311_publish_qos2() {
    check_hex(
        "34 10 00 09 6B 66 62 5F 74 6F 70 69 63 00 01 31 32 33",
        V311,
        &kfb_publish(QosPid::ExactlyOnce(pid(1))),
    );
}

#[test]
fn v311_publish_dup_and_retain_flags() {
    // 3D = PUBLISH + DUP 08 + QoS 2 (04) + RETAIN 01.
    let expected = Packet::Publish(Publish {
        dup: true,
        retain: true,
        qos: QosPid::ExactlyOnce(pid(0x1234)),
        ..Publish::new(topic("a"), Bytes::new())
    });
    check_hex("3D 05 00 01 61 12 34", V311, &expected);
}

#[test]
fn v311_publish_with_two_byte_remaining_length() {
    // 200-byte payload: remaining length 2 + 1 + 200 = 203 = CB 01 as a variable byte integer.
    let payload = vec![0xAB; 200];
    let mut bytes = hex("30 CB 01 00 01 74");
    bytes.extend_from_slice(&payload);
    let expected = Packet::Publish(Publish::new(topic("t"), payload));
    check(&bytes, V311, &expected);
}

#[test]
fn v311_publish_remaining_length_boundaries() {
    // Remaining lengths 127 (one byte), 128 (two), 16 383 (two) and 16 384 (three bytes).
    for (remaining, header) in [
        (127usize, "30 7F"),
        (128, "30 80 01"),
        (16_383, "30 FF 7F"),
        (16_384, "30 80 80 01"),
    ] {
        let payload = vec![b'x'; remaining - 3];
        let mut bytes = hex(header);
        bytes.extend_from_slice(&hex("00 01 74"));
        bytes.extend_from_slice(&payload);
        check(
            &bytes,
            V311,
            &Packet::Publish(Publish::new(topic("t"), payload)),
        );
    }
}

#[test]
fn v311_publish_encode_header_then_payload() {
    // `encode_header` + payload must give the same bytes as `Packet::encode`.
    let Packet::Publish(p) = kfb_publish(QosPid::AtLeastOnce(pid(1))) else {
        unreachable!()
    };
    let mut buf = BytesMut::new();
    p.encode_header(V311, &mut buf).expect("encodes");
    assert_eq!(buf.len(), p.header_len(V311));
    buf.extend_from_slice(&p.payload);
    assert_eq!(
        buf.to_vec(),
        hex("32 10 00 09 6B 66 62 5F 74 6F 70 69 63 00 01 31 32 33")
    );
}

#[test]
fn v311_puback_pubrec_pubrel_pubcomp() {
    check_hex("40 02 00 01", V311, &Packet::PubAck(Ack::new(pid(1))));
    check_hex("50 02 00 01", V311, &Packet::PubRec(Ack::new(pid(1))));
    check_hex("62 02 00 01", V311, &Packet::PubRel(Ack::new(pid(1))));
    check_hex("70 02 00 01", V311, &Packet::PubComp(Ack::new(pid(1))));
    check_hex("40 02 FF FF", V311, &Packet::PubAck(Ack::new(pid(0xFFFF))));
}

fn app_topic_subscribe(id: u16, qos: QoS) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: pid(id),
        properties: Properties::new(),
        filters: vec![("app_topic".into(), SubscriptionOptions::qos(qos))],
    })
}

#[test]
fn v311_subscribe() {
    // 82 0E | 00 0A | 00 09 "app_topic" | 00 (requested QoS 0)
    check_hex(
        "82 0E 00 0A 00 09 61 70 70 5F 74 6F 70 69 63 00",
        V311,
        &app_topic_subscribe(10, QoS::AtMostOnce),
    );
    check_hex(
        "82 0E 00 0B 00 09 61 70 70 5F 74 6F 70 69 63 01",
        V311,
        &app_topic_subscribe(11, QoS::AtLeastOnce),
    );
}

#[test]
fn v311_subscribe_several_filters() {
    // 82 0E | 00 05 | 00 03 "a/#" 02 | 00 03 "+/b" 00
    let expected = Packet::Subscribe(Subscribe {
        packet_id: pid(5),
        properties: Properties::new(),
        filters: vec![
            ("a/#".into(), SubscriptionOptions::qos(QoS::ExactlyOnce)),
            ("+/b".into(), SubscriptionOptions::qos(QoS::AtMostOnce)),
        ],
    });
    check_hex(
        "82 0E 00 05 00 03 61 2F 23 02 00 03 2B 2F 62 00",
        V311,
        &expected,
    );
}

#[test]
fn v311_suback() {
    check_hex(
        "90 03 00 0A 00",
        V311,
        &Packet::SubAck(SubAck::new(pid(10), vec![ReasonCode::SUCCESS])),
    );
    check_hex(
        "90 03 00 0B 01",
        V311,
        &Packet::SubAck(SubAck::new(pid(11), vec![ReasonCode::GRANTED_QOS_1])),
    );
    // Codes keep their order, failure included.
    check_hex(
        "90 06 BE EF 02 80 01 00",
        V311,
        &Packet::SubAck(SubAck::new(
            pid(0xBEEF),
            vec![
                ReasonCode::GRANTED_QOS_2,
                ReasonCode::V3_SUBSCRIBE_FAILURE,
                ReasonCode::GRANTED_QOS_1,
                ReasonCode::SUCCESS,
            ],
        )),
    );
}

#[test]
fn v311_unsubscribe() {
    // A2 0D | 00 0C | 00 09 "app_topic"
    let expected = Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(12),
        properties: Properties::new(),
        filters: vec!["app_topic".into()],
    });
    check_hex(
        "A2 0D 00 0C 00 09 61 70 70 5F 74 6F 70 69 63",
        V311,
        &expected,
    );
}

#[test]
fn v311_unsuback() {
    check_hex(
        "B0 02 00 0C",
        V311,
        &Packet::UnsubAck(SubAck::new(pid(12), Vec::new())),
    );
}

#[test]
fn v311_pingreq_pingresp_disconnect() {
    check_hex("C0 00", V311, &Packet::PingReq);
    check_hex("D0 00", V311, &Packet::PingResp);
    check_hex(
        "E0 00",
        V311,
        &Packet::Disconnect(Disconnect::new(ReasonCode::SUCCESS)),
    );
}

#[test]
fn v311_every_seed_vector_back_to_back() {
    // The seed's packets as one stream: decoded one after another from one buffer.
    let stream = hex(
        "10 25 00 04 4D 51 54 54 04 C2 00 78 00 09 35 32 38 39 38 36 38 37 35 \
         00 06 32 34 38 34 39 33 00 06 6B 66 62 73 6B 64 \
         20 02 01 00 \
         30 0E 00 09 6B 66 62 5F 74 6F 70 69 63 31 32 33 \
         32 10 00 09 6B 66 62 5F 74 6F 70 69 63 00 01 31 32 33 \
         34 10 00 09 6B 66 62 5F 74 6F 70 69 63 00 01 31 32 33 \
         40 02 00 01 50 02 00 01 62 02 00 01 70 02 00 01 \
         82 0E 00 0A 00 09 61 70 70 5F 74 6F 70 69 63 00 \
         90 03 00 0A 00 \
         A2 0D 00 0C 00 09 61 70 70 5F 74 6F 70 69 63 \
         B0 02 00 0C C0 00 D0 00 E0 00",
    );
    let mut buf = BytesMut::from(&stream[..]);
    let mut names = Vec::new();
    let mut reencoded = BytesMut::new();
    while let Some(p) = decode(&mut buf, V311, MAX).expect("decodes") {
        p.encode(V311, &mut reencoded).expect("encodes");
        names.push(p.name());
    }
    assert!(buf.is_empty());
    assert_eq!(
        names,
        [
            "CONNECT",
            "CONNACK",
            "PUBLISH",
            "PUBLISH",
            "PUBLISH",
            "PUBACK",
            "PUBREC",
            "PUBREL",
            "PUBCOMP",
            "SUBSCRIBE",
            "SUBACK",
            "UNSUBSCRIBE",
            "UNSUBACK",
            "PINGREQ",
            "PINGRESP",
            "DISCONNECT"
        ]
    );
    assert_eq!(reencoded.to_vec(), stream);
}

// ---- MQTT 3.1 -----------------------------------------------------------------------------------

#[test]
fn v31_connect() {
    // 10 11 | 00 06 "MQIsdp" | 03 | 02 (clean) | 00 3C | 00 03 "abc"
    let expected = Packet::Connect(Box::new(Connect {
        protocol: V31,
        ..Connect::new("abc")
    }));
    check_hex(
        "10 11 00 06 4D 51 49 73 64 70 03 02 00 3C 00 03 61 62 63",
        V311,
        &expected,
    );
}

#[test]
fn v31_publish_and_acks_share_the_3_1_1_layout() {
    check_hex(
        "32 10 00 09 6B 66 62 5F 74 6F 70 69 63 00 01 31 32 33",
        V31,
        &kfb_publish(QosPid::AtLeastOnce(pid(1))),
    );
    check_hex("40 02 00 01", V31, &Packet::PubAck(Ack::new(pid(1))));
    check_hex(
        "B0 02 00 0C",
        V31,
        &Packet::UnsubAck(SubAck::new(pid(12), Vec::new())),
    );
}

// ---- MQTT 5.0, built by hand from the spec ------------------------------------------------------

#[test]
fn v5_connect_with_properties() {
    // 10 17 | 00 04 "MQTT" | 05 | 02 (clean start) | 00 1E (30 s)
    //       | 08 = properties: 11 00 00 0E 10 (session expiry 3600) 21 00 14 (receive max 20)
    //       | 00 02 "c1"
    let expected = Packet::Connect(Box::new(Connect {
        protocol: V5,
        keep_alive: 30,
        properties: Properties::from(vec![
            Property::SessionExpiryInterval(3600),
            Property::ReceiveMaximum(20),
        ]),
        ..Connect::new("c1")
    }));
    check_hex(
        "10 17 00 04 4D 51 54 54 05 02 00 1E 08 11 00 00 0E 10 21 00 14 00 02 63 31",
        V5,
        &expected,
    );
}

#[test]
fn v5_connect_with_will_properties_and_password_only() {
    // 10 20 | 00 04 "MQTT" | 05 | 4E = password 40 + will QoS 1 (08) + will 04 + clean 02
    //       | 00 0A | 00 (no properties) | 00 01 "c"
    //       | 05 18 00 00 00 05 (will delay 5 s) | 00 01 "w" | 00 03 "bye" | 00 02 "pw"
    // v5 allows a password without a user name.
    let expected = Packet::Connect(Box::new(Connect {
        protocol: V5,
        keep_alive: 10,
        will: Some(LastWill {
            topic: topic("w"),
            payload: Bytes::from_static(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties::from(vec![Property::WillDelayInterval(5)]),
        }),
        password: Some(Bytes::from_static(b"pw")),
        ..Connect::new("c")
    }));
    check_hex(
        "10 20 00 04 4D 51 54 54 05 4E 00 0A 00 00 01 63 05 18 00 00 00 05 00 01 77 \
         00 03 62 79 65 00 02 70 77",
        V5,
        &expected,
    );
}

#[test]
fn v5_connack_with_properties() {
    // 20 08 | 00 (no session) | 00 (success) | 05 = 22 00 0A (topic alias max 10) 24 01 (max QoS 1)
    let expected = Packet::ConnAck(ConnAck {
        session_present: false,
        code: ReasonCode::SUCCESS,
        properties: Properties::from(vec![
            Property::TopicAliasMaximum(10),
            Property::MaximumQoS(1),
        ]),
    });
    check_hex("20 08 00 00 05 22 00 0A 24 01", V5, &expected);
    check_hex(
        "20 03 00 87 00",
        V5,
        &Packet::ConnAck(ConnAck::new(false, ReasonCode::NOT_AUTHORIZED)),
    );
}

#[test]
fn v5_publish_with_properties() {
    // 32 14 | 00 03 "a/b" | 00 0A (id 10)
    //       | 0A = 01 01 (payload is UTF-8) 02 00 00 00 3C (expiry 60 s) 23 00 05 (topic alias 5)
    //       | "hi"
    let expected = Packet::Publish(Publish {
        qos: QosPid::AtLeastOnce(pid(10)),
        properties: Properties::from(vec![
            Property::PayloadFormatIndicator(1),
            Property::MessageExpiryInterval(60),
            Property::TopicAlias(5),
        ]),
        ..Publish::new(topic("a/b"), Bytes::from_static(b"hi"))
    });
    check_hex(
        "32 14 00 03 61 2F 62 00 0A 0A 01 01 02 00 00 00 3C 23 00 05 68 69",
        V5,
        &expected,
    );
}

#[test]
fn v5_publish_without_properties_writes_a_zero_property_length() {
    // 30 08 | 00 03 "a/b" | 00 | "hi"
    check_hex(
        "30 08 00 03 61 2F 62 00 68 69",
        V5,
        &Packet::Publish(Publish::new(topic("a/b"), Bytes::from_static(b"hi"))),
    );
}

#[test]
fn v5_publish_by_topic_alias_has_an_empty_topic() {
    // 30 06 | 00 00 (empty topic) | 03 23 00 07 (topic alias 7) | (no payload)
    let expected = Packet::Publish(Publish {
        properties: Properties::from(vec![Property::TopicAlias(7)]),
        ..Publish::new(TopicName::default(), Bytes::new())
    });
    check_hex("30 06 00 00 03 23 00 07", V5, &expected);
}

#[test]
fn v5_puback_with_reason_code() {
    // 40 04 | 00 01 | 10 (no matching subscribers) | 00 (no properties)
    let expected = Packet::PubAck(Ack {
        reason: ReasonCode::NO_MATCHING_SUBSCRIBERS,
        ..Ack::new(pid(1))
    });
    check_hex("40 04 00 01 10 00", V5, &expected);
    // Spec 3.4.2.1: with a remaining length under 4 the property length may be left out. The
    // short form decodes to the same ack (the encoder always writes the property length).
    assert_eq!(decode_one(&hex("40 03 00 01 10"), V5), expected);
}

#[test]
fn v5_success_ack_uses_the_short_form() {
    // A success ack without properties is just the packet id; `40 03 00 01 00` decodes to it.
    let expected = Packet::PubAck(Ack::new(pid(1)));
    check_hex("40 02 00 01", V5, &expected);
    assert_eq!(decode_one(&hex("40 03 00 01 00"), V5), expected);
    assert_eq!(decode_one(&hex("40 04 00 01 00 00"), V5), expected);
}

#[test]
fn v5_pubrec_and_pubrel_with_reason_string() {
    // 50 0A | 00 02 | 80 (unspecified error) | 06 1F 00 03 "abc" (reason string)
    let expected = Packet::PubRec(Ack {
        reason: ReasonCode::UNSPECIFIED_ERROR,
        properties: Properties::from(vec![Property::ReasonString("abc".into())]),
        ..Ack::new(pid(2))
    });
    check_hex("50 0A 00 02 80 06 1F 00 03 61 62 63", V5, &expected);
    // 62 04 | 00 03 | 92 (packet identifier not found) | 00
    let expected = Packet::PubRel(Ack {
        reason: ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
        ..Ack::new(pid(3))
    });
    check_hex("62 04 00 03 92 00", V5, &expected);
}

#[test]
fn v5_subscribe_with_options_and_identifier() {
    // 82 0B | 00 01 | 02 0B 05 (subscription identifier 5) | 00 03 "a/+"
    //       | 1D = retain handling 1 (10) + retain as published 08 + no local 04 + QoS 1
    let expected = Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        properties: Properties::from(vec![Property::SubscriptionIdentifier(5)]),
        filters: vec![(
            "a/+".into(),
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: 1,
            },
        )],
    });
    check_hex("82 0B 00 01 02 0B 05 00 03 61 2F 2B 1D", V5, &expected);
}

#[test]
fn v5_suback_unsubscribe_unsuback() {
    check_hex(
        "90 05 00 01 00 01 8F",
        V5,
        &Packet::SubAck(SubAck::new(
            pid(1),
            vec![ReasonCode::GRANTED_QOS_1, ReasonCode::TOPIC_FILTER_INVALID],
        )),
    );
    // A2 06 | 00 02 | 00 | 00 01 "x"
    check_hex(
        "A2 06 00 02 00 00 01 78",
        V5,
        &Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(2),
            properties: Properties::new(),
            filters: vec!["x".into()],
        }),
    );
    check_hex(
        "B0 05 00 02 00 00 11",
        V5,
        &Packet::UnsubAck(SubAck::new(
            pid(2),
            vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED],
        )),
    );
}

#[test]
fn v5_disconnect_with_reason() {
    // E0 02 | 04 (disconnect with Will) | 00
    let expected = Packet::Disconnect(Disconnect::new(ReasonCode::DISCONNECT_WITH_WILL));
    check_hex("E0 02 04 00", V5, &expected);
    // A remaining length of 1 leaves the property length out (spec 3.14.2.2.1).
    assert_eq!(decode_one(&hex("E0 01 04"), V5), expected);
    // E0 07 | 00 | 05 11 00 00 00 00 (session expiry 0)
    check_hex(
        "E0 07 00 05 11 00 00 00 00",
        V5,
        &Packet::Disconnect(Disconnect {
            reason: ReasonCode::SUCCESS,
            properties: Properties::from(vec![Property::SessionExpiryInterval(0)]),
        }),
    );
    check_hex(
        "E0 00",
        V5,
        &Packet::Disconnect(Disconnect::new(ReasonCode::SUCCESS)),
    );
}

#[test]
fn v5_auth() {
    // F0 0A | 18 (continue authentication) | 08 15 00 05 "SCRAM" (authentication method)
    let expected = Packet::Auth(Disconnect {
        reason: ReasonCode::CONTINUE_AUTHENTICATION,
        properties: Properties::from(vec![Property::AuthenticationMethod("SCRAM".into())]),
    });
    check_hex("F0 0A 18 08 15 00 05 53 43 52 41 4D", V5, &expected);
    check_hex(
        "F0 00",
        V5,
        &Packet::Auth(Disconnect::new(ReasonCode::SUCCESS)),
    );
}

#[test]
fn auth_is_not_in_3_1_1() {
    let mut buf = BytesMut::new();
    let auth = Packet::Auth(Disconnect::new(ReasonCode::SUCCESS));
    assert!(auth.encode(V311, &mut buf).is_err());
    assert_eq!(
        decode(&mut BytesMut::from(&[0xF0, 0x00][..]), V311, MAX),
        Err(DecodeError::ReservedPacketType(15))
    );
}
