//! The small acknowledgement packets: PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK,
//! DISCONNECT and AUTH.

use bytes::{BufMut, BytesMut};

use crate::connect::{props_len, read_props};
use crate::properties::{Properties, PropertyContext};
use crate::types::allowed;
use crate::wire::Reader;
use crate::{DecodeError, EncodeError, PacketId, ProtocolVersion, ReasonCode};

/// PUBACK, PUBREC, PUBREL or PUBCOMP: a packet id, and in v5 a reason code and properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The id of the PUBLISH it belongs to [MQTT-2.3.1-6].
    pub packet_id: PacketId,
    /// v5 reason code (always success before v5).
    pub reason: ReasonCode,
    /// v5 properties.
    pub properties: Properties,
}

impl Ack {
    /// A successful acknowledgement of `packet_id`.
    pub fn new(packet_id: PacketId) -> Self {
        Self {
            packet_id,
            reason: ReasonCode::SUCCESS,
            properties: Properties::new(),
        }
    }

    /// Decodes; `codes` lists the reason codes the packet type allows in v5.
    pub(crate) fn decode(
        mut r: Reader,
        version: ProtocolVersion,
        codes: &[u8],
    ) -> Result<Self, DecodeError> {
        let packet_id = r.packet_id()?;
        let mut ack = Self::new(packet_id);
        if version.is_v5() && !r.is_empty() {
            let code = r.u8()?;
            if !codes.contains(&code) {
                return Err(DecodeError::InvalidReasonCode(code));
            }
            ack.reason = ReasonCode(code);
            if !r.is_empty() {
                ack.properties = Properties::decode(&mut r, PropertyContext::Ack)?;
            }
        }
        r.finish()?;
        Ok(ack)
    }

    /// v5 lets a successful ack without properties be just the packet id (spec 3.4.2.1).
    fn short_form(&self, version: ProtocolVersion) -> bool {
        !version.is_v5() || (self.reason == ReasonCode::SUCCESS && self.properties.is_empty())
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        if self.short_form(version) {
            2
        } else {
            3 + self.properties.encoded_len()
        }
    }

    pub(crate) fn encode_body(
        &self,
        version: ProtocolVersion,
        buf: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        buf.put_u16(self.packet_id.get());
        if !self.short_form(version) {
            buf.put_u8(self.reason.0);
            self.properties.encode(buf)?;
        }
        Ok(())
    }
}

/// SUBACK or UNSUBACK: a packet id and one code per filter (UNSUBACK has none before v5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// The id of the SUBSCRIBE / UNSUBSCRIBE it answers [MQTT-2.3.1-7].
    pub packet_id: PacketId,
    /// v5 properties.
    pub properties: Properties,
    /// One code per filter, in the order of the request [MQTT-3.9.3-1].
    pub codes: Vec<ReasonCode>,
}

impl SubAck {
    /// An ack with these codes and no properties.
    pub fn new(packet_id: PacketId, codes: Vec<ReasonCode>) -> Self {
        Self {
            packet_id,
            properties: Properties::new(),
            codes,
        }
    }

    pub(crate) fn decode(
        mut r: Reader,
        version: ProtocolVersion,
        unsuback: bool,
    ) -> Result<Self, DecodeError> {
        let packet_id = r.packet_id()?;
        let properties = read_props(&mut r, version, PropertyContext::SubAck)?;
        let allowed: &[u8] = match (unsuback, version.is_v5()) {
            (true, false) => &[],
            (true, true) => allowed::UNSUBACK,
            (false, false) => allowed::V3_SUBACK,
            (false, true) => allowed::SUBACK,
        };
        let rest = r.rest();
        if let Some(&bad) = rest.iter().find(|c| !allowed.contains(c)) {
            return Err(if allowed.is_empty() {
                DecodeError::TrailingBytes
            } else {
                DecodeError::InvalidReasonCode(bad)
            });
        }
        Ok(Self {
            packet_id,
            properties,
            codes: rest.iter().map(|&c| ReasonCode(c)).collect(),
        })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion, unsuback: bool) -> usize {
        let codes = if unsuback && !version.is_v5() {
            0
        } else {
            self.codes.len()
        };
        2 + props_len(&self.properties, version) + codes
    }

    pub(crate) fn encode_body(
        &self,
        version: ProtocolVersion,
        unsuback: bool,
        buf: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        buf.put_u16(self.packet_id.get());
        if version.is_v5() {
            self.properties.encode(buf)?;
        }
        if !unsuback || version.is_v5() {
            for c in &self.codes {
                buf.put_u8(c.0);
            }
        }
        Ok(())
    }
}

/// DISCONNECT (all versions) or AUTH (v5): an optional reason code and properties.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// Reason code (v5; success before v5).
    pub reason: ReasonCode,
    /// v5 properties.
    pub properties: Properties,
}

impl Disconnect {
    /// A normal disconnect / successful auth with no properties.
    pub fn new(reason: ReasonCode) -> Self {
        Self {
            reason,
            properties: Properties::new(),
        }
    }

    pub(crate) fn decode(
        mut r: Reader,
        version: ProtocolVersion,
        auth: bool,
    ) -> Result<Self, DecodeError> {
        let mut d = Self::default();
        if version.is_v5() && !r.is_empty() {
            let code = r.u8()?;
            let (codes, ctx) = if auth {
                (allowed::AUTH, PropertyContext::Auth)
            } else {
                (allowed::DISCONNECT, PropertyContext::Disconnect)
            };
            if !codes.contains(&code) {
                return Err(DecodeError::InvalidReasonCode(code));
            }
            d.reason = ReasonCode(code);
            if !r.is_empty() {
                d.properties = Properties::decode(&mut r, ctx)?;
            }
        }
        r.finish()?;
        Ok(d)
    }

    fn short_form(&self, version: ProtocolVersion) -> bool {
        !version.is_v5() || (self.reason == ReasonCode::SUCCESS && self.properties.is_empty())
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        if self.short_form(version) {
            0
        } else {
            1 + self.properties.encoded_len()
        }
    }

    pub(crate) fn encode_body(
        &self,
        version: ProtocolVersion,
        buf: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        if !self.short_form(version) {
            buf.put_u8(self.reason.0);
            self.properties.encode(buf)?;
        }
        Ok(())
    }
}
