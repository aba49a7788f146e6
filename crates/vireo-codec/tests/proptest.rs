//! Property tests: every packet type of every version round-trips through encode → decode,
//! `encoded_len` is exact, no input makes `decode` panic, feeding a stream in arbitrary pieces
//! gives the same packets and errors as feeding it whole, and `topic_matches` agrees with a
//! reference matcher written here from the spec's wording.

use std::num::NonZeroU16;

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use vireo_codec::{
    Ack, ByteString, Bytes, BytesMut, ConnAck, Connect, DecodeError, Disconnect, LastWill,
    MAX_VAR_INT, Packet, Properties, Property, ProtocolVersion, Publish, QoS, QosPid, ReasonCode,
    SubAck, Subscribe, SubscriptionOptions, TopicName, Unsubscribe, decode, topic_matches,
    validate_topic_filter,
};

use ProtocolVersion::{V5, V31, V311};

mod reference;
use reference::reference_matches;

const VERSIONS: [ProtocolVersion; 3] = [V31, V311, V5];

// ---- strategies ---------------------------------------------------------------------------------

fn version() -> impl Strategy<Value = ProtocolVersion> {
    prop::sample::select(&VERSIONS[..])
}

/// Any MQTT string: any characters but U+0000, a few multi-byte ones made likely.
fn string() -> impl Strategy<Value = ByteString> {
    prop_oneof![
        "[a-z0-9/ ]{0,8}",
        "[^\u{0}]{0,6}",
        Just("\u{FEFF}caf\u{E9}".to_owned()),
    ]
    .prop_map(ByteString::from)
}

/// A client id or user name: an MQTT string without control characters, which the codec
/// refuses there (see `vireo_codec::has_control_character`).
fn name() -> impl Strategy<Value = ByteString> {
    prop_oneof![
        "[a-z0-9/ ]{0,8}",
        "[^\u{0}-\u{1F}\u{7F}-\u{9F}]{0,6}",
        Just("\u{FEFF}caf\u{E9}".to_owned()),
    ]
    .prop_map(ByteString::from)
}

/// A non-empty topic filter string (wildcard syntax not checked: SUBACK refuses bad ones).
fn filter_string() -> impl Strategy<Value = ByteString> {
    prop_oneof!["[a-z0-9/+#]{1,8}", "[^\u{0}-\u{1F}\u{7F}-\u{9F}]{1,6}"].prop_map(ByteString::from)
}

/// A valid topic name: non-empty, no wildcards, no U+0000, no control characters.
fn topic() -> impl Strategy<Value = TopicName> {
    prop_oneof!["[a-z0-9$/]{1,10}", "[^\u{0}-\u{1F}\u{7F}-\u{9F}+#]{1,6}"]
        .prop_map(|s| TopicName::try_from(&*s).expect("generated topic is valid"))
}

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn packet_id() -> impl Strategy<Value = NonZeroU16> {
    (1..=u16::MAX).prop_map(|n| NonZeroU16::new(n).expect("non-zero"))
}

fn qos() -> impl Strategy<Value = QoS> {
    prop::sample::select(&[QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][..])
}

fn boolean() -> impl Strategy<Value = u8> {
    0..=1u8
}

/// One property of the given id, with a value in its range.
fn property(id: u8) -> BoxedStrategy<Property> {
    use Property as P;
    match id {
        0x01 => boolean().prop_map(P::PayloadFormatIndicator).boxed(),
        0x02 => any::<u32>().prop_map(P::MessageExpiryInterval).boxed(),
        0x03 => string().prop_map(P::ContentType).boxed(),
        0x08 => topic()
            .prop_map(|t| P::ResponseTopic(t.into_inner()))
            .boxed(),
        0x09 => bytes(8).prop_map(P::CorrelationData).boxed(),
        0x0B => (1..=MAX_VAR_INT)
            .prop_map(P::SubscriptionIdentifier)
            .boxed(),
        0x11 => any::<u32>().prop_map(P::SessionExpiryInterval).boxed(),
        0x12 => string().prop_map(P::AssignedClientIdentifier).boxed(),
        0x13 => any::<u16>().prop_map(P::ServerKeepAlive).boxed(),
        0x15 => string().prop_map(P::AuthenticationMethod).boxed(),
        0x16 => bytes(8).prop_map(P::AuthenticationData).boxed(),
        0x17 => boolean().prop_map(P::RequestProblemInformation).boxed(),
        0x18 => any::<u32>().prop_map(P::WillDelayInterval).boxed(),
        0x19 => boolean().prop_map(P::RequestResponseInformation).boxed(),
        0x1A => string().prop_map(P::ResponseInformation).boxed(),
        0x1C => string().prop_map(P::ServerReference).boxed(),
        0x1F => string().prop_map(P::ReasonString).boxed(),
        0x21 => (1..=u16::MAX).prop_map(P::ReceiveMaximum).boxed(),
        0x22 => any::<u16>().prop_map(P::TopicAliasMaximum).boxed(),
        0x23 => (1..=u16::MAX).prop_map(P::TopicAlias).boxed(),
        0x24 => boolean().prop_map(P::MaximumQoS).boxed(),
        0x25 => boolean().prop_map(P::RetainAvailable).boxed(),
        0x26 => (string(), string())
            .prop_map(|(k, v)| P::UserProperty(k, v))
            .boxed(),
        0x27 => (1..=u32::MAX).prop_map(P::MaximumPacketSize).boxed(),
        0x28 => boolean().prop_map(P::WildcardSubscriptionAvailable).boxed(),
        0x29 => boolean()
            .prop_map(P::SubscriptionIdentifierAvailable)
            .boxed(),
        0x2A => boolean().prop_map(P::SharedSubscriptionAvailable).boxed(),
        other => panic!("no strategy for property {other:#04x}"),
    }
}

/// Which properties each packet may carry (spec 2.2.2.2, table 2-4), written out independently
/// of the codec's own table. User Property (0x26) is allowed everywhere and may repeat.
mod allowed {
    pub const CONNECT: &[u8] = &[0x11, 0x15, 0x16, 0x17, 0x19, 0x21, 0x22, 0x27];
    pub const WILL: &[u8] = &[0x01, 0x02, 0x03, 0x08, 0x09, 0x18];
    pub const CONNACK: &[u8] = &[
        0x11, 0x12, 0x13, 0x15, 0x16, 0x1A, 0x1C, 0x1F, 0x21, 0x22, 0x24, 0x25, 0x27, 0x28, 0x29,
        0x2A,
    ];
    pub const PUBLISH: &[u8] = &[0x01, 0x02, 0x03, 0x08, 0x09, 0x23];
    pub const ACK: &[u8] = &[0x1F];
    pub const SUBSCRIBE: &[u8] = &[0x0B];
    pub const SUBACK: &[u8] = &[0x1F];
    pub const UNSUBSCRIBE: &[u8] = &[];
    pub const DISCONNECT: &[u8] = &[0x11, 0x1C, 0x1F];
    pub const AUTH: &[u8] = &[0x15, 0x16, 0x1F];
}

/// A v5 property list for a packet that allows `ids` once each, plus User Properties (and, for
/// PUBLISH, repeated Subscription Identifiers), in a shuffled order; empty before v5.
fn properties(
    version: ProtocolVersion,
    ids: &'static [u8],
    repeat_sub_id: bool,
) -> BoxedStrategy<Properties> {
    if !version.is_v5() {
        return Just(Properties::new()).boxed();
    }
    let singles: Vec<BoxedStrategy<Option<Property>>> = ids
        .iter()
        .map(|&id| option::weighted(0.25, property(id)).boxed())
        .collect();
    let sub_ids = if repeat_sub_id { 0..3usize } else { 0..1 };
    (
        singles,
        vec(property(0x26), 0..3),
        vec(property(0x0B), sub_ids),
    )
        .prop_map(|(singles, users, sub_ids)| {
            let mut all: Vec<Property> = singles.into_iter().flatten().collect();
            all.extend(users);
            all.extend(sub_ids);
            all
        })
        .prop_shuffle()
        .prop_map(Properties::from)
        .boxed()
}

fn reason(codes: &'static [u8]) -> impl Strategy<Value = ReasonCode> {
    prop::sample::select(codes).prop_map(ReasonCode)
}

/// Which reason codes each packet may carry (spec 2.4, table 2-6), written out independently
/// of the codec's own `types::allowed` on purpose, like `allowed` above: generated from the
/// codec's table, a code missing there would never be generated, and never caught.
mod codes {
    pub const V3_CONNACK: &[u8] = &[0, 1, 2, 3, 4, 5];
    pub const V3_SUBACK: &[u8] = &[0, 1, 2, 0x80];
    pub const CONNACK: &[u8] = &[
        0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95,
        0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
    ];
    pub const PUBACK: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
    pub const PUBREL: &[u8] = &[0x00, 0x92];
    pub const SUBACK: &[u8] = &[
        0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
    ];
    pub const UNSUBACK: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
    pub const DISCONNECT: &[u8] = &[
        0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94,
        0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
    ];
    pub const AUTH: &[u8] = &[0x00, 0x18, 0x19];
}

fn connect(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let will = option::of((
        topic(),
        bytes(8),
        qos(),
        any::<bool>(),
        properties(version, allowed::WILL, false),
    ));
    (
        any::<bool>(),
        any::<u16>(),
        name(),
        will,
        option::of(name()),
        option::of(bytes(8)),
        properties(version, allowed::CONNECT, false),
        any::<bool>(),
    )
        .prop_map(
            move |(
                clean_start,
                keep_alive,
                client_id,
                will,
                username,
                password,
                properties,
                bridge,
            )| {
                // Before v5 a password needs a user name [MQTT-3.1.2-22].
                let password = password.filter(|_| version.is_v5() || username.is_some());
                Packet::Connect(Box::new(Connect {
                    protocol: version,
                    clean_start,
                    keep_alive,
                    client_id,
                    will: will.map(|(topic, payload, qos, retain, properties)| LastWill {
                        topic,
                        payload,
                        qos,
                        retain,
                        properties,
                    }),
                    username,
                    password,
                    properties,
                    // The level's bridge bit exists before 5.0 only.
                    bridge: bridge && !version.is_v5(),
                }))
            },
        )
}

fn connack(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let codes = if version.is_v5() {
        codes::CONNACK
    } else {
        codes::V3_CONNACK
    };
    (
        any::<bool>(),
        reason(codes),
        properties(version, allowed::CONNACK, false),
    )
        .prop_map(|(session_present, code, properties)| {
            Packet::ConnAck(ConnAck {
                session_present,
                code,
                properties,
            })
        })
}

fn publish(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        any::<bool>(),
        qos(),
        packet_id(),
        any::<bool>(),
        topic(),
        any::<bool>(),
        properties(version, allowed::PUBLISH, true),
        bytes(40),
    )
        .prop_map(
            move |(dup, qos, id, retain, topic, alias_only, mut properties, payload)| {
                let qos = QosPid::new(qos, id);
                // v5 may leave the topic empty when a Topic Alias names it.
                let topic = if version.is_v5() && alias_only {
                    if !properties
                        .iter()
                        .any(|p| matches!(p, Property::TopicAlias(_)))
                    {
                        properties.push(Property::TopicAlias(1));
                    }
                    TopicName::default()
                } else {
                    topic
                };
                Packet::Publish(Publish {
                    // DUP must be 0 at QoS 0 [MQTT-3.3.1-2].
                    dup: dup && qos != QosPid::AtMostOnce,
                    qos,
                    retain,
                    topic,
                    properties,
                    payload,
                })
            },
        )
}

/// PUBACK / PUBREC (`rel == false`) or PUBREL / PUBCOMP (`rel == true`) contents.
fn ack(version: ProtocolVersion, rel: bool) -> BoxedStrategy<Ack> {
    if !version.is_v5() {
        return packet_id().prop_map(Ack::new).boxed();
    }
    let codes = if rel { codes::PUBREL } else { codes::PUBACK };
    (
        packet_id(),
        reason(codes),
        properties(version, allowed::ACK, false),
    )
        .prop_map(|(packet_id, reason, properties)| Ack {
            packet_id,
            reason,
            properties,
        })
        .boxed()
}

fn subscription_options(version: ProtocolVersion) -> impl Strategy<Value = SubscriptionOptions> {
    (qos(), any::<bool>(), any::<bool>(), 0..=2u8).prop_map(
        move |(qos, no_local, retain_as_published, retain_handling)| {
            if version.is_v5() {
                SubscriptionOptions {
                    qos,
                    no_local,
                    retain_as_published,
                    retain_handling,
                }
            } else {
                SubscriptionOptions::qos(qos)
            }
        },
    )
}

fn subscribe(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        packet_id(),
        properties(version, allowed::SUBSCRIBE, false),
        vec((filter_string(), subscription_options(version)), 1..4),
    )
        .prop_map(|(packet_id, properties, filters)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                properties,
                filters,
            })
        })
}

fn suback(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let codes = if version.is_v5() {
        codes::SUBACK
    } else {
        codes::V3_SUBACK
    };
    (
        packet_id(),
        properties(version, allowed::SUBACK, false),
        vec(reason(codes), 0..4),
    )
        .prop_map(|(packet_id, properties, codes)| {
            Packet::SubAck(SubAck {
                packet_id,
                properties,
                codes,
            })
        })
}

fn unsubscribe(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        packet_id(),
        properties(version, allowed::UNSUBSCRIBE, false),
        vec(filter_string(), 1..4),
    )
        .prop_map(|(packet_id, properties, filters)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                properties,
                filters,
            })
        })
}

fn unsuback(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    // Before v5 an UNSUBACK is just the packet id.
    let max_codes = if version.is_v5() { 4 } else { 1 };
    (
        packet_id(),
        properties(version, allowed::SUBACK, false),
        vec(reason(codes::UNSUBACK), 0..max_codes),
    )
        .prop_map(|(packet_id, properties, codes)| {
            Packet::UnsubAck(SubAck {
                packet_id,
                properties,
                codes,
            })
        })
}

/// DISCONNECT (`auth == false`) or AUTH contents.
fn disconnect(version: ProtocolVersion, auth: bool) -> BoxedStrategy<Disconnect> {
    if !version.is_v5() {
        return Just(Disconnect::default()).boxed();
    }
    let (codes, ids) = if auth {
        (codes::AUTH, allowed::AUTH)
    } else {
        (codes::DISCONNECT, allowed::DISCONNECT)
    };
    (reason(codes), properties(version, ids, false))
        .prop_map(|(reason, properties)| Disconnect { reason, properties })
        .boxed()
}

/// Any packet that exists in `version`.
fn packet(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let common = prop_oneof![
        connect(version),
        connack(version),
        publish(version),
        // PUBLISH is the hot path: give it a second share.
        publish(version),
        ack(version, false).prop_map(Packet::PubAck),
        ack(version, false).prop_map(Packet::PubRec),
        ack(version, true).prop_map(Packet::PubRel),
        ack(version, true).prop_map(Packet::PubComp),
        subscribe(version),
        suback(version),
        unsubscribe(version),
        unsuback(version),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        disconnect(version, false).prop_map(Packet::Disconnect),
    ];
    if version.is_v5() {
        prop_oneof![
            14 => common,
            1 => disconnect(version, true).prop_map(Packet::Auth),
        ]
        .boxed()
    } else {
        common.boxed()
    }
}

fn versioned_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    version().prop_flat_map(|v| (Just(v), packet(v)))
}

fn versioned_packets(max: usize) -> impl Strategy<Value = (ProtocolVersion, Vec<Packet>)> {
    version().prop_flat_map(move |v| (Just(v), vec(packet(v), 1..max)))
}

// ---- helpers ------------------------------------------------------------------------------------

fn encode(p: &Packet, version: ProtocolVersion) -> BytesMut {
    let mut buf = BytesMut::new();
    p.encode(version, &mut buf)
        .expect("generated packets encode");
    buf
}

type Outcome = Result<Packet, DecodeError>;

/// Decodes every complete packet in `buf`; returns true once an error ends the stream (a
/// connection is closed on the first malformed packet, so nothing after it counts).
fn drain(buf: &mut BytesMut, version: ProtocolVersion, max: usize, out: &mut Vec<Outcome>) -> bool {
    loop {
        match decode(buf, version, max) {
            Ok(Some(p)) => out.push(Ok(p)),
            Ok(None) => return false,
            Err(e) => {
                out.push(Err(e));
                return true;
            }
        }
    }
}

/// Decodes `stream` whole, then in the pieces that `cuts` (sorted offsets) make, and checks both
/// give the same outcomes and leave the same bytes unread.
fn same_whole_and_split(
    stream: &[u8],
    cuts: &[usize],
    version: ProtocolVersion,
    max: usize,
) -> Result<Vec<Outcome>, TestCaseError> {
    let mut whole_buf = BytesMut::from(stream);
    let mut whole = Vec::new();
    let whole_failed = drain(&mut whole_buf, version, max, &mut whole);

    let mut split_buf = BytesMut::new();
    let mut split = Vec::new();
    let mut split_failed = false;
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
        split_buf.extend_from_slice(&stream[start..cut]);
        start = cut;
        if drain(&mut split_buf, version, max, &mut split) {
            split_failed = true;
            break;
        }
    }
    prop_assert_eq!(&split, &whole);
    prop_assert_eq!(split_failed, whole_failed);
    if !whole_failed {
        prop_assert_eq!(&split_buf[..], &whole_buf[..]);
    }
    Ok(whole)
}

/// Sorted cut points inside a stream of `len` bytes.
fn cuts(len: usize, raw: &[prop::sample::Index]) -> Vec<usize> {
    let mut cuts: Vec<usize> = raw.iter().map(|i| i.index(len + 1)).collect();
    cuts.sort_unstable();
    cuts
}

/// Reference filter validation (spec 4.7.1): non-empty; every level is either free of wildcard
/// characters, exactly `+`, or exactly `#` as the last level.
fn reference_valid_filter(filter: &str) -> bool {
    let levels: Vec<&str> = filter.split('/').collect();
    !filter.is_empty()
        && levels.iter().enumerate().all(|(i, l)| {
            !l.contains(['+', '#']) || *l == "+" || (*l == "#" && i == levels.len() - 1)
        })
}

fn level() -> impl Strategy<Value = String> {
    prop::sample::select(&["a", "b", "ab", "", "$a", "$SYS"][..]).prop_map(str::to_owned)
}

fn topic_levels() -> impl Strategy<Value = Vec<String>> {
    vec(level(), 1..5).prop_filter("a topic is not empty", |l| !l.join("/").is_empty())
}

/// A valid filter, often derived from `topic` so that matches are common.
fn filter_for(topic: Vec<String>) -> impl Strategy<Value = String> {
    let n = topic.len();
    (
        vec(0..4u8, n),
        0..=n,
        any::<bool>(),
        vec(level(), 0..4),
        any::<bool>(),
    )
        .prop_map(move |(edits, keep, hash, other, unrelated)| {
            let mut levels: Vec<String> = if unrelated {
                other
            } else {
                topic
                    .iter()
                    .zip(&edits)
                    .map(|(l, e)| if *e == 0 { "+".to_owned() } else { l.clone() })
                    .take(keep)
                    .collect()
            };
            if hash || levels.join("/").is_empty() {
                levels.push("#".to_owned());
            }
            levels.join("/")
        })
}

// ---- properties ---------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// encode → decode gives the packet back, and `encoded_len` is the number of bytes written.
    #[test]
    fn encode_decode_round_trip((version, p) in versioned_packet()) {
        let mut buf = encode(&p, version);
        prop_assert_eq!(buf.len(), p.encoded_len(version));
        let decoded = decode(&mut buf, version, usize::MAX);
        prop_assert_eq!(decoded, Ok(Some(p)));
        prop_assert!(buf.is_empty());
    }

    /// A CONNECT is encoded in its own version whatever the connection's, and decodes the same
    /// under any connection version; a PUBLISH's header + payload equals the whole encoding.
    #[test]
    fn connect_and_publish_encodings((version, p) in versioned_packet(), other in version()) {
        match &p {
            Packet::Connect(_) => {
                let bytes = encode(&p, version);
                prop_assert_eq!(&encode(&p, other), &bytes);
                prop_assert_eq!(p.encoded_len(other), bytes.len());
                prop_assert_eq!(decode(&mut bytes.clone(), other, usize::MAX), Ok(Some(p.clone())));
            }
            Packet::Publish(publish) => {
                let mut buf = BytesMut::new();
                publish.encode_header(version, &mut buf).expect("encodes");
                prop_assert_eq!(buf.len(), publish.header_len(version));
                buf.extend_from_slice(&publish.payload);
                prop_assert_eq!(buf, encode(&p, version));
            }
            _ => {}
        }
    }

    /// AUTH exists only in v5.
    #[test]
    fn auth_is_refused_before_v5(d in disconnect(V5, true), version in prop::sample::select(&[V31, V311][..])) {
        prop_assert!(Packet::Auth(d).encode(version, &mut BytesMut::new()).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Decoding arbitrary bytes never panics, and whatever decodes re-encodes to something that
    /// decodes to the same packet.
    #[test]
    fn decoding_arbitrary_bytes_never_panics(
        bytes in vec(any::<u8>(), 0..64),
        version in version(),
        max in prop::sample::select(&[8usize, 64, usize::MAX][..]),
    ) {
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(p)) = decode(&mut buf, version, max) {
            let mut again = encode(&p, version);
            prop_assert_eq!(decode(&mut again, version, usize::MAX), Ok(Some(p)));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Valid packets with a few bytes overwritten, inserted or removed: decoding never panics, and
    /// whatever decodes round-trips.
    #[test]
    fn decoding_mutated_packets_never_panics(
        (version, p) in versioned_packet(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..4),
    ) {
        let mut bytes = encode(&p, version).to_vec();
        for (at, byte, kind) in edits {
            let i = at.index(bytes.len() + 1);
            match kind {
                0 if i < bytes.len() => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ if i < bytes.len() => { bytes.remove(i); }
                _ => bytes.push(byte),
            }
        }
        let mut buf = BytesMut::from(&bytes[..]);
        while let Ok(Some(p)) = decode(&mut buf, version, usize::MAX) {
            let mut again = encode(&p, version);
            prop_assert_eq!(decode(&mut again, version, usize::MAX), Ok(Some(p)));
        }
    }

    /// Several packets back to back, with optional garbage after them, fed in arbitrary pieces,
    /// decode to the same sequence as the stream fed whole; the packets come out in order.
    #[test]
    fn split_stream_decodes_like_whole_stream(
        (version, packets) in versioned_packets(6),
        tail in vec(any::<u8>(), 0..8),
        raw_cuts in vec(any::<prop::sample::Index>(), 0..8),
        small_max in any::<bool>(),
    ) {
        let mut stream = BytesMut::new();
        for p in &packets {
            p.encode(version, &mut stream).expect("encodes");
        }
        stream.extend_from_slice(&tail);
        let max = if small_max { 48 } else { usize::MAX };
        let cuts = cuts(stream.len(), &raw_cuts);
        let outcomes = same_whole_and_split(&stream, &cuts, version, max)?;
        if !small_max {
            let decoded: Vec<&Packet> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
            prop_assert!(decoded.len() >= packets.len());
            prop_assert_eq!(&decoded[..packets.len()], &packets.iter().collect::<Vec<_>>()[..]);
        }
    }

    /// The same holds for arbitrary bytes.
    #[test]
    fn split_arbitrary_bytes_decode_like_whole(
        stream in vec(any::<u8>(), 0..96),
        raw_cuts in vec(any::<prop::sample::Index>(), 0..8),
        version in version(),
        max in prop::sample::select(&[16usize, usize::MAX][..]),
    ) {
        let cuts = cuts(stream.len(), &raw_cuts);
        same_whole_and_split(&stream, &cuts, version, max)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// `topic_matches` agrees with the reference matcher on valid filters and topics.
    #[test]
    fn topic_matches_agrees_with_reference(
        (topic, filter) in topic_levels().prop_flat_map(|t| (Just(t.join("/")), filter_for(t)))
    ) {
        prop_assert_eq!(validate_topic_filter(&filter), Ok(()), "generated filter {}", filter);
        prop_assert_eq!(
            topic_matches(&filter, &topic),
            reference_matches(&filter, &topic),
            "filter {:?} topic {:?}", filter, topic
        );
    }

    /// `validate_topic_filter` accepts exactly the filters the reference rule accepts.
    #[test]
    fn filter_validation_agrees_with_reference(filter in "[a/+#$]{0,7}") {
        prop_assert_eq!(
            validate_topic_filter(&filter).is_ok(),
            reference_valid_filter(&filter),
            "filter {:?}", filter
        );
    }
}
