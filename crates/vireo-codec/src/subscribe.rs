//! SUBSCRIBE and UNSUBSCRIBE.
//!
//! Filters are decoded as UTF-8 strings (ill-formed UTF-8, an empty filter or a control character
//! closes the connection, [MQTT-1.5.3-1] [MQTT-4.7.3-1]) but their wildcard syntax is *not*
//! checked here: a server answers a bad filter
//! with SUBACK 0x80 / 0x8F for that filter alone [MQTT-3.8.4-5], which it can only do if the rest
//! of the packet decodes. [`crate::validate_topic_filter`] does that check, naming the tag broken.

use bytes::{BufMut, BytesMut};
use bytestring::ByteString;

use crate::connect::{props_len, read_props};
use crate::properties::{Properties, PropertyContext};
use crate::wire::{Reader, field_len, put_binary};
use crate::{DecodeError, EncodeError, PacketId, ProtocolVersion, QoS};

/// Per-filter options: the requested QoS, plus the v5 flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS requested.
    pub qos: QoS,
    /// v5: do not send this client's own publishes back to it.
    pub no_local: bool,
    /// v5: keep the RETAIN flag as published when forwarding.
    pub retain_as_published: bool,
    /// v5: 0 send retained on subscribe, 1 only for a new subscription, 2 never.
    pub retain_handling: u8,
}

impl SubscriptionOptions {
    /// Options requesting `qos` with every v5 flag off.
    pub fn qos(qos: QoS) -> Self {
        Self {
            qos,
            ..Self::default()
        }
    }

    fn decode(byte: u8, version: ProtocolVersion) -> Result<Self, DecodeError> {
        // 3.1.1: upper six bits reserved [MQTT-3.8.3-4]; v5: upper two bits reserved and
        // retain handling 3 is malformed.
        let reserved = if version.is_v5() { 0xC0 } else { 0xFC };
        let retain_handling = (byte >> 4) & 0x03;
        if byte & reserved != 0 || retain_handling == 3 {
            return Err(DecodeError::InvalidSubscriptionOptions);
        }
        let qos =
            QoS::try_from(byte & 0x03).map_err(|_| DecodeError::InvalidSubscriptionOptions)?;
        Ok(Self {
            qos,
            no_local: byte & 0x04 != 0,
            retain_as_published: byte & 0x08 != 0,
            retain_handling,
        })
    }

    fn encode(self, version: ProtocolVersion) -> u8 {
        let mut byte = self.qos as u8;
        if version.is_v5() {
            byte |= u8::from(self.no_local) << 2
                | u8::from(self.retain_as_published) << 3
                | (self.retain_handling & 0x03) << 4;
        }
        byte
    }
}

/// A topic filter field: a UTF-8 string that is not empty [MQTT-4.7.3-1] and holds no control
/// character. Both make the whole packet malformed (the connection closes, as Mosquitto does);
/// wildcard syntax is checked per filter by the receiver instead (see the module docs).
fn filter_field(r: &mut Reader) -> Result<ByteString, DecodeError> {
    let filter = r.string()?;
    if filter.is_empty() {
        return Err(DecodeError::EmptyTopic);
    }
    if crate::has_control_character(&filter) {
        return Err(DecodeError::ControlCharacter);
    }
    Ok(filter)
}

/// A SUBSCRIBE packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet id, echoed in the SUBACK.
    pub packet_id: PacketId,
    /// v5 properties (subscription identifier, user properties).
    pub properties: Properties,
    /// The requested filters, at least one [MQTT-3.8.3-3].
    pub filters: Vec<(ByteString, SubscriptionOptions)>,
}

impl Subscribe {
    pub(crate) fn decode(mut r: Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = r.packet_id()?;
        let properties = read_props(&mut r, version, PropertyContext::Subscribe)?;
        let mut filters = Vec::new();
        while !r.is_empty() {
            let filter = filter_field(&mut r)?;
            let options = SubscriptionOptions::decode(r.u8()?, version)?;
            filters.push((filter, options));
        }
        if filters.is_empty() {
            return Err(DecodeError::EmptySubscribe);
        }
        Ok(Self {
            packet_id,
            properties,
            filters,
        })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        2 + props_len(&self.properties, version)
            + self
                .filters
                .iter()
                .map(|(f, _)| field_len(f.as_bytes()) + 1)
                .sum::<usize>()
    }

    pub(crate) fn encode_body(
        &self,
        version: ProtocolVersion,
        buf: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        buf.put_u16(self.packet_id.get());
        if version.is_v5() {
            self.properties.encode(buf)?;
        }
        for (filter, options) in &self.filters {
            put_binary(buf, filter.as_bytes())?;
            buf.put_u8(options.encode(version));
        }
        Ok(())
    }
}

/// An UNSUBSCRIBE packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet id, echoed in the UNSUBACK.
    pub packet_id: PacketId,
    /// v5 properties.
    pub properties: Properties,
    /// Filters to remove, compared literally [MQTT-3.10.4-1]; at least one [MQTT-3.10.3-2].
    pub filters: Vec<ByteString>,
}

impl Unsubscribe {
    pub(crate) fn decode(mut r: Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = r.packet_id()?;
        let properties = read_props(&mut r, version, PropertyContext::Unsubscribe)?;
        let mut filters = Vec::new();
        while !r.is_empty() {
            filters.push(filter_field(&mut r)?);
        }
        if filters.is_empty() {
            return Err(DecodeError::EmptyUnsubscribe);
        }
        Ok(Self {
            packet_id,
            properties,
            filters,
        })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        2 + props_len(&self.properties, version)
            + self
                .filters
                .iter()
                .map(|f| field_len(f.as_bytes()))
                .sum::<usize>()
    }

    pub(crate) fn encode_body(
        &self,
        version: ProtocolVersion,
        buf: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        buf.put_u16(self.packet_id.get());
        if version.is_v5() {
            self.properties.encode(buf)?;
        }
        for filter in &self.filters {
            put_binary(buf, filter.as_bytes())?;
        }
        Ok(())
    }
}
