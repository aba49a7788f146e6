//! The receive fast path: finds the packet at the front of a read buffer and, when it is a
//! PUBLISH, parses it in place, without building a [`vireo_codec::Packet`] (no `Bytes`, no
//! reference counts, no topic validation).
//!
//! Every received message goes through here, and the generator must cost much less than the
//! broker it measures, so the fast path reads only what the accounting needs: the QoS and packet
//! id (to acknowledge) and where the payload starts (for the stamp). The topic's bytes are
//! skipped after checking that they fit in the packet: the generator trusts the topic's
//! contents (it subscribes to one filter, and a wrong topic would show as a wrong stamp or a
//! count that does not add up). Whether a broker sends well-formed topic names is a conformance
//! question, tested by the codec's and the server's own tests, not by the load generator.
//!
//! Everything else is left to [`vireo_codec::decode`]: packets of other types, and any PUBLISH
//! the fast path does not take whole (v5 properties other than a lone Topic Alias, QoS 3, DUP on QoS 0, packet
//! id 0, a topic or packet id running past the packet), so the codec reports malformed packets
//! exactly as before. The fixed header is checked here as the codec checks it (same checks,
//! same order, same errors), including the maximum packet size, which is enforced from the
//! fixed header alone, before the body is buffered.

use vireo_codec::{DecodeError, FixedHeader, PacketId, ProtocolVersion, QosPid};

/// What is at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A whole PUBLISH, parsed in place.
    Publish(PublishFrame),
    /// A whole packet of this many bytes that only the codec decodes.
    Other(usize),
    /// The packet is not all there: at least this many more bytes are needed (1 while the
    /// fixed header itself is incomplete, as its length is not known yet).
    Partial(usize),
}

/// Where the parts of a PUBLISH lie in its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PublishFrame {
    /// Bytes the whole packet takes, fixed header included.
    pub len: usize,
    /// QoS and packet id.
    pub qos: QosPid,
    /// Offset of the payload from the start of the frame; it runs to `len`.
    pub payload: usize,
}

impl PublishFrame {
    /// The payload, from the buffer the frame was parsed from.
    pub fn payload<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.payload..self.len]
    }
}

/// Parses the packet at the front of `buf`. Errors are those [`vireo_codec::decode`] gives for
/// the fixed header (malformed remaining length, reserved type, bad flags, too large); an
/// oversized packet is refused as soon as its fixed header is in.
#[inline]
pub(crate) fn parse(
    buf: &[u8],
    version: ProtocolVersion,
    max_packet: usize,
) -> Result<Frame, DecodeError> {
    let Some(header) = FixedHeader::parse(buf)? else {
        return Ok(Frame::Partial(1));
    };
    header.validate(version)?;
    // v5 wants minimal variable byte integers [v5 MQTT-1.5.5-1]: a last byte of zero after a
    // continuation byte only pads.
    if version.is_v5() && header.header_len > 2 && buf[header.header_len - 1] == 0 {
        return Err(DecodeError::MalformedRemainingLength);
    }
    let len = header.packet_len();
    if len > max_packet {
        return Err(DecodeError::PacketTooLarge {
            size: len,
            max: max_packet,
        });
    }
    if buf.len() < len {
        return Ok(Frame::Partial(len - buf.len()));
    }
    if header.packet_type() != 3 {
        return Ok(Frame::Other(len));
    }
    let body = &buf[header.header_len..len];
    Ok(match publish_body(header.first_byte, body, version) {
        Some((qos, offset)) => Frame::Publish(PublishFrame {
            len,
            qos,
            payload: header.header_len + offset,
        }),
        None => Frame::Other(len),
    })
}

/// The v5 Topic Alias property's identifier.
const TOPIC_ALIAS: u8 = 0x23;

/// QoS and payload offset of a PUBLISH body; `None` for anything the codec should look at.
#[inline]
fn publish_body(first_byte: u8, body: &[u8], version: ProtocolVersion) -> Option<(QosPid, usize)> {
    let u16_at = |i: usize| Some(u16::from_be_bytes([*body.get(i)?, *body.get(i + 1)?]));
    let topic_len = usize::from(u16_at(0)?);
    // An empty topic is a v5 topic alias (checked below), or an error the codec reports.
    if topic_len == 0 && !version.is_v5() {
        return None;
    }
    // The topic's bytes are skipped, unvalidated (see the module documentation).
    let mut pos = 2 + topic_len;
    let qos = match first_byte & 0x0F {
        // DUP and RETAIN (bits 3 and 0) do not matter to the generator, except DUP on QoS 0,
        // which the codec refuses.
        0b0000 | 0b0001 => QosPid::AtMostOnce,
        flags => {
            let pid = PacketId::new(u16_at(pos)?)?;
            pos += 2;
            match (flags >> 1) & 0x03 {
                1 => QosPid::AtLeastOnce(pid),
                2 => QosPid::ExactlyOnce(pid),
                _ => return None,
            }
        }
    };
    if version.is_v5() {
        // Taken here: no properties, or a Topic Alias alone (which names the topic: the
        // generator does not need it, see the module documentation).
        match *body.get(pos)? {
            0 if topic_len > 0 => pos += 1,
            3 if *body.get(pos + 1)? == TOPIC_ALIAS && u16_at(pos + 2)? != 0 => pos += 4,
            _ => return None,
        }
    }
    (pos <= body.len()).then_some((qos, pos))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use vireo_codec::{Ack, BytesMut, Packet, Property, Publish, TopicName, decode};

    use super::*;

    const V3: ProtocolVersion = ProtocolVersion::V311;
    const V5: ProtocolVersion = ProtocolVersion::V5;
    const MAX: usize = 1024;

    fn pid(n: u16) -> PacketId {
        PacketId::new(n).unwrap()
    }

    fn publish(qos: QosPid, topic: &str, payload: &[u8]) -> Publish {
        let mut p = Publish::new(TopicName::new(topic).unwrap(), payload.to_vec());
        p.qos = qos;
        p
    }

    fn encode(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
        let mut buf = BytesMut::new();
        packet.encode(version, &mut buf).unwrap();
        buf.to_vec()
    }

    /// Checks `parse` against `vireo_codec::decode` on the same bytes: the same error, `Partial`
    /// where the codec wants more, a PUBLISH with the codec's QoS and payload, or `Other` with
    /// the length the codec consumed (or for a PUBLISH the codec refuses).
    fn same_as_codec(
        buf: &[u8],
        version: ProtocolVersion,
        max: usize,
    ) -> Result<Frame, DecodeError> {
        let parsed = parse(buf, version, max);
        let mut codec_buf = BytesMut::from(buf);
        let decoded = decode(&mut codec_buf, version, max);
        let consumed = buf.len() - codec_buf.len();
        match (&parsed, decoded) {
            (Err(a), Err(b)) => assert_eq!(*a, b, "{buf:02x?}"),
            (Ok(Frame::Other(_)), Err(_)) => {}
            (Ok(Frame::Partial(n)), Ok(None)) => assert!(*n >= 1),
            (Ok(Frame::Publish(f)), Ok(Some(Packet::Publish(p)))) => {
                assert_eq!(f.len, consumed);
                assert_eq!(f.qos, p.qos);
                assert_eq!(f.payload(buf), &p.payload[..]);
            }
            (Ok(Frame::Other(len)), Ok(Some(p))) => {
                assert_eq!(*len, consumed);
                assert!(
                    !matches!(p, Packet::Publish(_)) || version.is_v5(),
                    "a 3.1.1 PUBLISH the codec takes should take the fast path: {buf:02x?}"
                );
            }
            (a, b) => panic!("fast path {a:?}, codec {b:?} for {buf:02x?}"),
        }
        parsed
    }

    #[test]
    fn publishes_of_every_qos_match_the_codec_at_every_length() {
        let big = vec![7u8; 300]; // two-byte remaining length
        for version in [V3, V5] {
            for qos in [
                QosPid::AtMostOnce,
                QosPid::AtLeastOnce(pid(1)),
                QosPid::ExactlyOnce(pid(0xBEEF)),
            ] {
                for payload in [&b""[..], b"x", &big] {
                    for retain in [false, true] {
                        let mut p = publish(qos, "bench/a/b", payload);
                        p.retain = retain;
                        p.dup = qos != QosPid::AtMostOnce;
                        let wire = encode(&Packet::Publish(p), version);
                        let Ok(Frame::Publish(f)) = same_as_codec(&wire, version, MAX) else {
                            panic!("not on the fast path: {wire:02x?}");
                        };
                        assert_eq!((f.len, f.qos, f.payload(&wire)), (wire.len(), qos, payload));
                        for cut in 0..wire.len() {
                            let Ok(Frame::Partial(needed)) =
                                same_as_codec(&wire[..cut], version, MAX)
                            else {
                                panic!("prefix of {cut} bytes taken as whole");
                            };
                            assert!(cut + needed <= wire.len());
                        }
                        // A following packet is not part of this one.
                        let mut two = wire.clone();
                        two.extend_from_slice(&wire);
                        assert_eq!(parse(&two, version, MAX), Ok(Frame::Publish(f)));
                    }
                }
            }
        }
    }

    #[test]
    fn other_packets_go_to_the_codec() {
        for packet in [
            Packet::PubAck(Ack::new(pid(3))),
            Packet::PubRel(Ack::new(pid(3))),
            Packet::PubComp(Ack::new(pid(3))),
            Packet::PingResp,
        ] {
            let wire = encode(&packet, V3);
            assert_eq!(same_as_codec(&wire, V3, MAX), Ok(Frame::Other(wire.len())));
        }
        // v5: a PUBLISH with properties is the codec's.
        let mut p = publish(QosPid::AtLeastOnce(pid(9)), "t", b"abc");
        p.properties.push(Property::MessageExpiryInterval(5));
        let wire = encode(&Packet::Publish(p), V5);
        assert_eq!(same_as_codec(&wire, V5, MAX), Ok(Frame::Other(wire.len())));
    }

    /// v5: a PUBLISH whose only property is a Topic Alias, with its topic or without, takes
    /// the fast path; alias 0, or an empty topic without an alias, is the codec's.
    #[test]
    fn aliased_publishes_take_the_fast_path() {
        for (topic, qos) in [
            ("bench/a", QosPid::AtMostOnce),
            ("", QosPid::AtMostOnce),
            ("", QosPid::AtLeastOnce(pid(4))),
        ] {
            let mut p = publish(qos, "x", b"abc");
            if topic.is_empty() {
                p.topic = TopicName::empty();
            } else {
                p.topic = TopicName::new(topic).unwrap();
            }
            p.properties.push(Property::TopicAlias(7));
            let wire = encode(&Packet::Publish(p), V5);
            let Ok(Frame::Publish(f)) = same_as_codec(&wire, V5, MAX) else {
                panic!("not on the fast path: {wire:02x?}");
            };
            assert_eq!((f.qos, f.payload(&wire)), (qos, &b"abc"[..]));
        }
        let alias0 = [0x30, 0x07, 0x00, 0x00, 0x03, 0x23, 0x00, 0x00, b'x'];
        assert_eq!(
            same_as_codec(&alias0, V5, MAX),
            Ok(Frame::Other(alias0.len()))
        );
        let bare = [0x30, 0x04, 0x00, 0x00, 0x00, b'x'];
        assert_eq!(same_as_codec(&bare, V5, MAX), Ok(Frame::Other(bare.len())));
    }

    #[test]
    fn malformed_publishes_are_left_to_the_codec() {
        for wire in [
            &[0x36, 0x05, 0x00, 0x01, b't', 0x00, 0x01][..], // QoS 3
            &[0x38, 0x03, 0x00, 0x01, b't'],                 // DUP on QoS 0
            &[0x32, 0x05, 0x00, 0x01, b't', 0x00, 0x00],     // packet id 0
            &[0x32, 0x04, 0x00, 0x01, b't', 0x00],           // packet id cut short
            &[0x30, 0x03, 0x00, 0x05, b't'],                 // topic past the end
            &[0x30, 0x01, 0x00],                             // topic length cut short
            &[0x30, 0x02, 0x00, 0x00],                       // empty topic
        ] {
            assert_eq!(same_as_codec(wire, V3, MAX), Ok(Frame::Other(wire.len())));
        }
        // The topic is not validated: the fast path trusts it (see the module docs).
        let wire = [0x30, 0x04, 0x00, 0x02, 0xFF, b'#'];
        assert!(matches!(parse(&wire, V3, MAX), Ok(Frame::Publish(_))));
    }

    #[test]
    fn bad_fixed_headers_are_errors() {
        // Remaining length longer than four bytes, at every length that shows it.
        let wire = [0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01];
        for cut in 0..=wire.len() {
            let _ = same_as_codec(&wire[..cut], V3, usize::MAX);
        }
        assert_eq!(
            parse(&wire[..5], V3, usize::MAX),
            Err(DecodeError::MalformedRemainingLength)
        );
        // Non-minimal remaining length: fine in 3.1.1, malformed in v5.
        let padded = [0x30, 0x85, 0x00, 0x00, 0x01, b't', 0x00, b'x'];
        assert!(matches!(
            same_as_codec(&padded, V3, MAX),
            Ok(Frame::Publish(_))
        ));
        assert_eq!(
            same_as_codec(&padded, V5, MAX),
            Err(DecodeError::MalformedRemainingLength)
        );
        // Reserved type, bad flags.
        for wire in [&[0x00, 0x00][..], &[0xF0, 0x00], &[0x41, 0x02, 0x00, 0x01]] {
            assert!(same_as_codec(wire, V3, MAX).is_err());
        }
    }

    #[test]
    fn oversized_packets_are_refused_from_the_fixed_header() {
        let p = publish(QosPid::AtMostOnce, "t", &[0; 200]);
        let wire = encode(&Packet::Publish(p), V3);
        let max = wire.len() - 1;
        let err = DecodeError::PacketTooLarge {
            size: wire.len(),
            max,
        };
        // Refused as soon as the (two-byte) remaining length is in, not when the body is.
        assert_eq!(parse(&wire[..2], V3, max), Ok(Frame::Partial(1)));
        for cut in 3..=wire.len() {
            assert_eq!(same_as_codec(&wire[..cut], V3, max), Err(err));
        }
        assert!(matches!(
            parse(&wire, V3, wire.len()),
            Ok(Frame::Publish(_))
        ));
        // The largest remaining length there is, from the header alone.
        let huge = [0x30, 0xFF, 0xFF, 0xFF, 0x7F];
        assert_eq!(
            same_as_codec(&huge, V3, MAX),
            Err(DecodeError::PacketTooLarge {
                size: 5 + 268_435_455,
                max: MAX
            })
        );
    }
}
