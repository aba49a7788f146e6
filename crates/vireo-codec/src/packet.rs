//! The control packet enum, the fixed header, and the top-level `decode` / `encode`.

use bytes::{Buf, BufMut, BytesMut};

use crate::types::allowed;
use crate::wire::{Reader, decode_var_int, is_minimal_var_int, put_var_int, var_int_len};
use crate::{
    Ack, ConnAck, Connect, DecodeError, Disconnect, EncodeError, PacketId, ProtocolVersion,
    Publish, SubAck, Subscribe, Unsubscribe,
};

/// AUTH has the same shape as DISCONNECT: a reason code and properties.
pub type Auth = Disconnect;

/// An MQTT control packet of any version.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)] // variants are the packets of the same name
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(Ack),
    PubRec(Ack),
    PubRel(Ack),
    PubComp(Ack),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(SubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    /// v5 only.
    Auth(Auth),
}

/// The fixed header at the front of every packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    /// Packet type (upper nibble) and flags (lower nibble).
    pub first_byte: u8,
    /// The remaining length: bytes after the fixed header.
    pub remaining_len: usize,
    /// Bytes the fixed header itself takes (2 to 5).
    pub header_len: usize,
}

impl FixedHeader {
    /// Parses the fixed header at the front of `buf`; `Ok(None)` if it is not all there yet.
    pub fn parse(buf: &[u8]) -> Result<Option<Self>, DecodeError> {
        let Some(&first_byte) = buf.first() else {
            return Ok(None);
        };
        Ok(decode_var_int(&buf[1..])?.map(|(len, n)| Self {
            first_byte,
            remaining_len: len as usize,
            header_len: 1 + n,
        }))
    }

    /// Total packet size: header plus remaining length.
    pub fn packet_len(&self) -> usize {
        self.header_len + self.remaining_len
    }

    /// The packet type, 0 to 15.
    pub fn packet_type(&self) -> u8 {
        self.first_byte >> 4
    }

    /// Checks the type and flag nibble against the table in spec 2.2 [MQTT-2.2.2-2].
    pub fn validate(&self, version: ProtocolVersion) -> Result<(), DecodeError> {
        let (packet_type, flags) = (self.packet_type(), self.first_byte & 0x0F);
        let expected = match packet_type {
            0 => return Err(DecodeError::ReservedPacketType(0)),
            15 if !version.is_v5() => return Err(DecodeError::ReservedPacketType(15)),
            // CONNECT: reserved except in MQTT 3.1, whose CONNECT says which it is: checked
            // while decoding. PUBLISH flags are DUP/QoS/RETAIN, checked while decoding.
            1 | 3 => return Ok(()),
            6 | 8 | 10 => 0b0010,
            _ => 0,
        };
        if flags == expected {
            Ok(())
        } else {
            Err(DecodeError::InvalidFlags { packet_type, flags })
        }
    }
}

/// Decodes one packet from the front of `buf`.
///
/// `Ok(None)`: not all of it is there yet (nothing consumed). `Ok(Some(p))`: the packet's bytes
/// were split off `buf`; a PUBLISH's topic and payload share them, uncopied. A packet larger than
/// `max_packet_size` is refused from its fixed header, before its body is buffered.
///
/// `version` is the connection's protocol; a CONNECT carries its own and ignores it.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: usize,
) -> Result<Option<Packet>, DecodeError> {
    let Some(header) = FixedHeader::parse(buf)? else {
        return Ok(None);
    };
    header.validate(version)?;
    // MQTT 5.0 demands minimal variable byte integers [v5 MQTT-1.5.5-1]; 3.1.1 does not.
    if version.is_v5() && !is_minimal_var_int(&buf[1..header.header_len]) {
        return Err(DecodeError::MalformedRemainingLength);
    }
    let size = header.packet_len();
    if size > max_packet_size {
        return Err(DecodeError::PacketTooLarge {
            size,
            max: max_packet_size,
        });
    }
    if buf.len() < size {
        return Ok(None);
    }
    if let Some(packet) = decode_in_place(buf, &header, size)? {
        return Ok(Some(packet));
    }
    let mut frame = buf.split_to(size).freeze();
    frame.advance(header.header_len);
    decode_body(header.first_byte, Reader::new(frame), version).map(Some)
}

/// Packets that keep nothing of the buffer and have one valid layout — acks that are just a
/// packet id (every 3.1/3.1.1 ack, v5's short form) and PINGREQ/PINGRESP — decoded where they
/// lie, without cutting a shared frame from the buffer (two reference-count operations on
/// the read chunk per ack otherwise). `None` for everything else. Same results and errors as
/// `decode_body`; the fixed header is already validated.
fn decode_in_place(
    buf: &mut BytesMut,
    header: &FixedHeader,
    size: usize,
) -> Result<Option<Packet>, DecodeError> {
    let body = &buf[header.header_len..size];
    let packet = match (header.first_byte >> 4, body) {
        (kind @ 4..=7, &[hi, lo]) => {
            let id =
                PacketId::new(u16::from_be_bytes([hi, lo])).ok_or(DecodeError::ZeroPacketId)?;
            let ack = Ack::new(id);
            match kind {
                4 => Packet::PubAck(ack),
                5 => Packet::PubRec(ack),
                6 => Packet::PubRel(ack),
                _ => Packet::PubComp(ack),
            }
        }
        (12, []) => Packet::PingReq,
        (13, []) => Packet::PingResp,
        _ => return Ok(None),
    };
    buf.advance(size);
    Ok(Some(packet))
}

fn decode_body(first_byte: u8, r: Reader, version: ProtocolVersion) -> Result<Packet, DecodeError> {
    let empty = |r: Reader, p: Packet| r.finish().map(|()| p);
    Ok(match first_byte >> 4 {
        1 => Packet::Connect(Box::new(Connect::decode(first_byte & 0x0F, r)?)),
        2 => Packet::ConnAck(ConnAck::decode(r, version)?),
        3 => Packet::Publish(Publish::decode(first_byte & 0x0F, r, version)?),
        4 => Packet::PubAck(Ack::decode(r, version, allowed::PUBACK)?),
        5 => Packet::PubRec(Ack::decode(r, version, allowed::PUBACK)?),
        6 => Packet::PubRel(Ack::decode(r, version, allowed::PUBREL)?),
        7 => Packet::PubComp(Ack::decode(r, version, allowed::PUBREL)?),
        8 => Packet::Subscribe(Subscribe::decode(r, version)?),
        9 => Packet::SubAck(SubAck::decode(r, version, false)?),
        10 => Packet::Unsubscribe(Unsubscribe::decode(r, version)?),
        11 => Packet::UnsubAck(SubAck::decode(r, version, true)?),
        12 => empty(r, Packet::PingReq)?,
        13 => empty(r, Packet::PingResp)?,
        14 => Packet::Disconnect(Disconnect::decode(r, version, false)?),
        15 => Packet::Auth(Disconnect::decode(r, version, true)?),
        other => return Err(DecodeError::ReservedPacketType(other)),
    })
}

impl Packet {
    /// The first byte of the fixed header.
    pub fn first_byte(&self) -> u8 {
        match self {
            Packet::Connect(_) => 0x10,
            Packet::ConnAck(_) => 0x20,
            Packet::Publish(p) => p.first_byte(),
            Packet::PubAck(_) => 0x40,
            Packet::PubRec(_) => 0x50,
            Packet::PubRel(_) => 0x62,
            Packet::PubComp(_) => 0x70,
            Packet::Subscribe(_) => 0x82,
            Packet::SubAck(_) => 0x90,
            Packet::Unsubscribe(_) => 0xA2,
            Packet::UnsubAck(_) => 0xB0,
            Packet::PingReq => 0xC0,
            Packet::PingResp => 0xD0,
            Packet::Disconnect(_) => 0xE0,
            Packet::Auth(_) => 0xF0,
        }
    }

    /// The packet's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Packet::Connect(_) => "CONNECT",
            Packet::ConnAck(_) => "CONNACK",
            Packet::Publish(_) => "PUBLISH",
            Packet::PubAck(_) => "PUBACK",
            Packet::PubRec(_) => "PUBREC",
            Packet::PubRel(_) => "PUBREL",
            Packet::PubComp(_) => "PUBCOMP",
            Packet::Subscribe(_) => "SUBSCRIBE",
            Packet::SubAck(_) => "SUBACK",
            Packet::Unsubscribe(_) => "UNSUBSCRIBE",
            Packet::UnsubAck(_) => "UNSUBACK",
            Packet::PingReq => "PINGREQ",
            Packet::PingResp => "PINGRESP",
            Packet::Disconnect(_) => "DISCONNECT",
            Packet::Auth(_) => "AUTH",
        }
    }

    fn version_for(&self, version: ProtocolVersion) -> ProtocolVersion {
        match self {
            Packet::Connect(c) => c.protocol,
            _ => version,
        }
    }

    fn body_len(&self, version: ProtocolVersion) -> usize {
        match self {
            Packet::Connect(c) => c.body_len(),
            Packet::ConnAck(c) => c.body_len(version),
            Packet::Publish(p) => p.body_len(version),
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                a.body_len(version)
            }
            Packet::Subscribe(s) => s.body_len(version),
            Packet::SubAck(s) => s.body_len(version, false),
            Packet::Unsubscribe(u) => u.body_len(version),
            Packet::UnsubAck(u) => u.body_len(version, true),
            Packet::PingReq | Packet::PingResp => 0,
            Packet::Disconnect(d) | Packet::Auth(d) => d.body_len(version),
        }
    }

    /// Bytes the packet takes on the wire in `version`; lets a caller reserve once.
    pub fn encoded_len(&self, version: ProtocolVersion) -> usize {
        let body = self.body_len(self.version_for(version));
        1 + var_int_len(body) + body
    }

    /// Appends the packet, encoded for `version`, to `buf`. A CONNECT is encoded in its own
    /// protocol version.
    pub fn encode(&self, version: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let version = self.version_for(version);
        if matches!(self, Packet::Auth(_)) && !version.is_v5() {
            return Err(EncodeError::NotInVersion);
        }
        let body = self.body_len(version);
        buf.reserve(1 + var_int_len(body) + body);
        if let Packet::Publish(p) = self {
            p.encode_header(version, buf)?;
            buf.put_slice(&p.payload);
            return Ok(());
        }
        buf.put_u8(self.first_byte());
        put_var_int(buf, body)?;
        match self {
            Packet::Connect(c) => c.encode_body(buf),
            Packet::ConnAck(c) => c.encode_body(version, buf),
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                a.encode_body(version, buf)
            }
            Packet::Subscribe(s) => s.encode_body(version, buf),
            Packet::SubAck(s) => s.encode_body(version, false, buf),
            Packet::Unsubscribe(u) => u.encode_body(version, buf),
            Packet::UnsubAck(u) => u.encode_body(version, true, buf),
            Packet::Disconnect(d) | Packet::Auth(d) => d.encode_body(version, buf),
            Packet::PingReq | Packet::PingResp | Packet::Publish(_) => Ok(()),
        }
    }
}
