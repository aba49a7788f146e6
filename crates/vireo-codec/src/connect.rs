//! CONNECT and CONNACK.

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use crate::properties::{Properties, PropertyContext};
use crate::types::allowed;
use crate::wire::{Reader, field_len, put_binary};
use crate::{DecodeError, EncodeError, ProtocolVersion, QoS, ReasonCode, TopicName};

/// A CONNECT packet. Boxed inside [`crate::Packet`]: it is by far the largest variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Protocol name and level, which fix the version of the whole connection.
    pub protocol: ProtocolVersion,
    /// Clean Session (3.1.1) / Clean Start (5.0).
    pub clean_start: bool,
    /// Keep alive in seconds; 0 turns the mechanism off.
    pub keep_alive: u16,
    /// Client identifier; may be empty.
    pub client_id: ByteString,
    /// The Will, when the Will Flag is set.
    pub will: Option<LastWill>,
    /// User name, when its flag is set.
    pub username: Option<ByteString>,
    /// Password, when its flag is set.
    pub password: Option<Bytes>,
    /// v5 CONNECT properties.
    pub properties: Properties,
    /// 3.1 / 3.1.1: the protocol level's top bit (0x83, 0x84), which a bridge sets to say it
    /// is one (Mosquitto's `try_private`, honoured by Mosquitto, EMQX and Vireo): not part of
    /// the standard, so only a broker that knows it accepts such a CONNECT.
    pub bridge: bool,
}

/// The protocol level's bridge bit.
const LEVEL_BRIDGE: u8 = 0x80;

/// The Will message of a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    /// Where it is published.
    pub topic: TopicName,
    /// Its payload.
    pub payload: Bytes,
    /// Its QoS.
    pub qos: QoS,
    /// Whether it is published retained.
    pub retain: bool,
    /// v5 Will properties.
    pub properties: Properties,
}

const FLAG_RESERVED: u8 = 0x01;
const FLAG_CLEAN: u8 = 0x02;
const FLAG_WILL: u8 = 0x04;
const FLAG_WILL_RETAIN: u8 = 0x20;
const FLAG_PASSWORD: u8 = 0x40;
const FLAG_USERNAME: u8 = 0x80;

impl Connect {
    /// A minimal CONNECT: 3.1.1, clean session, keep alive 60 s.
    pub fn new(client_id: impl Into<ByteString>) -> Self {
        Self {
            protocol: ProtocolVersion::V311,
            clean_start: true,
            keep_alive: 60,
            client_id: client_id.into(),
            will: None,
            username: None,
            password: None,
            properties: Properties::new(),
            bridge: false,
        }
    }

    /// `header_flags`: the low nibble of the fixed header, reserved (zero) except in MQTT 3.1,
    /// which had no such rule: old devices set it, and Mosquitto accepts them.
    pub(crate) fn decode(header_flags: u8, mut r: Reader) -> Result<Self, DecodeError> {
        let name = r.binary()?;
        let level = r.u8()?;
        let bridge = matches!((&name[..], level), (b"MQTT", 0x84) | (b"MQIsdp", 0x83));
        let level = if bridge { level & !LEVEL_BRIDGE } else { level };
        let protocol = match (&name[..], level) {
            (b"MQTT", 4) => ProtocolVersion::V311,
            (b"MQTT", 5) => ProtocolVersion::V5,
            (b"MQIsdp", 3) => ProtocolVersion::V31,
            (b"MQTT" | b"MQIsdp", other) => {
                return Err(DecodeError::UnsupportedProtocolLevel(other));
            }
            _ => return Err(DecodeError::InvalidProtocolName),
        };
        if header_flags != 0 && protocol != ProtocolVersion::V31 {
            return Err(DecodeError::InvalidFlags {
                packet_type: 1,
                flags: header_flags,
            });
        }
        let flags = r.u8()?;
        // MQTT 3.1 had no reserved-bit rule [MQTT-3.1.2-3 is 3.1.1's]: accept it there.
        if flags & FLAG_RESERVED != 0 && protocol != ProtocolVersion::V31 {
            return Err(DecodeError::ConnectReservedFlag);
        }
        let will_qos = (flags >> 3) & 0x03;
        let has_will = flags & FLAG_WILL != 0;
        if !has_will && (will_qos != 0 || flags & FLAG_WILL_RETAIN != 0) {
            return Err(DecodeError::WillFlagsWithoutWill);
        }
        if will_qos == 3 {
            return Err(DecodeError::InvalidWillQoS);
        }
        let has_username = flags & FLAG_USERNAME != 0;
        let has_password = flags & FLAG_PASSWORD != 0;
        if has_password && !has_username && !protocol.is_v5() {
            return Err(DecodeError::PasswordWithoutUsername);
        }
        let keep_alive = r.u16()?;
        let properties = read_props(&mut r, protocol, PropertyContext::Connect)?;
        let client_id = r.string()?;
        if crate::has_control_character(&client_id) {
            return Err(DecodeError::ControlCharacter);
        }
        let will = if has_will {
            let properties = read_props(&mut r, protocol, PropertyContext::Will)?;
            let topic = TopicName::decode(r.binary()?, false)?;
            let payload = r.binary()?;
            Some(LastWill {
                topic,
                payload,
                qos: QoS::try_from(will_qos)?,
                retain: flags & FLAG_WILL_RETAIN != 0,
                properties,
            })
        } else {
            None
        };
        let username = if has_username {
            let name = r.string()?;
            if crate::has_control_character(&name) {
                return Err(DecodeError::ControlCharacter);
            }
            Some(name)
        } else {
            None
        };
        let password = if has_password {
            Some(r.binary()?)
        } else {
            None
        };
        r.finish()?;
        Ok(Self {
            protocol,
            clean_start: flags & FLAG_CLEAN != 0,
            keep_alive,
            client_id,
            will,
            username,
            password,
            properties,
            bridge,
        })
    }

    pub(crate) fn body_len(&self) -> usize {
        let v5 = self.protocol.is_v5();
        let mut len = field_len(self.protocol.name().as_bytes()) + 1 + 1 + 2;
        if v5 {
            len += self.properties.encoded_len();
        }
        len += field_len(self.client_id.as_bytes());
        if let Some(w) = &self.will {
            if v5 {
                len += w.properties.encoded_len();
            }
            len += field_len(w.topic.as_bytes()) + field_len(&w.payload);
        }
        if let Some(u) = &self.username {
            len += field_len(u.as_bytes());
        }
        if let Some(p) = &self.password {
            len += field_len(p);
        }
        len
    }

    pub(crate) fn encode_body(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let v5 = self.protocol.is_v5();
        put_binary(buf, self.protocol.name().as_bytes())?;
        let bridge = if self.bridge && !v5 { LEVEL_BRIDGE } else { 0 };
        buf.put_u8(self.protocol.level() | bridge);
        let mut flags = 0;
        if self.clean_start {
            flags |= FLAG_CLEAN;
        }
        if let Some(w) = &self.will {
            flags |= FLAG_WILL | ((w.qos as u8) << 3);
            if w.retain {
                flags |= FLAG_WILL_RETAIN;
            }
        }
        if self.username.is_some() {
            flags |= FLAG_USERNAME;
        }
        if self.password.is_some() {
            flags |= FLAG_PASSWORD;
        }
        buf.put_u8(flags);
        buf.put_u16(self.keep_alive);
        if v5 {
            self.properties.encode(buf)?;
        }
        put_binary(buf, self.client_id.as_bytes())?;
        if let Some(w) = &self.will {
            if v5 {
                w.properties.encode(buf)?;
            }
            put_binary(buf, w.topic.as_bytes())?;
            put_binary(buf, &w.payload)?;
        }
        if let Some(u) = &self.username {
            put_binary(buf, u.as_bytes())?;
        }
        if let Some(p) = &self.password {
            put_binary(buf, p)?;
        }
        Ok(())
    }
}

/// A CONNACK packet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnAck {
    /// Session Present flag.
    pub session_present: bool,
    /// Return code (3.1.1) or reason code (5.0).
    pub code: ReasonCode,
    /// v5 CONNACK properties.
    pub properties: Properties,
}

impl ConnAck {
    /// A CONNACK with `code` and no properties.
    pub fn new(session_present: bool, code: ReasonCode) -> Self {
        Self {
            session_present,
            code,
            properties: Properties::new(),
        }
    }

    pub(crate) fn decode(mut r: Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let flags = r.u8()?;
        if flags & 0xFE != 0 {
            return Err(DecodeError::InvalidFlags {
                packet_type: 2,
                flags,
            });
        }
        let code = r.u8()?;
        let codes = if version.is_v5() {
            allowed::CONNACK
        } else {
            allowed::V3_CONNACK
        };
        if !codes.contains(&code) {
            return Err(DecodeError::InvalidReasonCode(code));
        }
        let properties = read_props(&mut r, version, PropertyContext::ConnAck)?;
        r.finish()?;
        Ok(Self {
            session_present: flags & 1 != 0,
            code: ReasonCode(code),
            properties,
        })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        2 + props_len(&self.properties, version)
    }

    pub(crate) fn encode_body(
        &self,
        version: ProtocolVersion,
        buf: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        buf.put_u8(u8::from(self.session_present));
        buf.put_u8(self.code.0);
        if version.is_v5() {
            self.properties.encode(buf)?;
        }
        Ok(())
    }
}

/// Reads a property block in v5, nothing before it.
pub(crate) fn read_props(
    r: &mut Reader,
    version: ProtocolVersion,
    ctx: PropertyContext,
) -> Result<Properties, DecodeError> {
    if version.is_v5() {
        Properties::decode(r, ctx)
    } else {
        Ok(Properties::new())
    }
}

/// Encoded length of a property block in v5, zero before it.
pub(crate) fn props_len(props: &Properties, version: ProtocolVersion) -> usize {
    if version.is_v5() {
        props.encoded_len()
    } else {
        0
    }
}
