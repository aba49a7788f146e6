//! PUBLISH: the one packet on the hot path. Topic and payload are zero-copy slices of the
//! buffer the packet was decoded from, and the header can be encoded apart from the payload so
//! that one payload buffer serves every subscriber.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::connect::{props_len, read_props};
use crate::properties::{Properties, Property, PropertyContext};
use crate::wire::{Reader, field_len, put_binary, put_var_int, var_int_len};
use crate::{DecodeError, EncodeError, ProtocolVersion, QoS, QosPid, TopicName};

/// A PUBLISH packet.
#[derive(Clone, PartialEq, Eq)]
pub struct Publish {
    /// DUP: this packet is a re-delivery [MQTT-3.3.1-1].
    pub dup: bool,
    /// QoS and, for QoS 1 and 2, the packet id.
    pub qos: QosPid,
    /// RETAIN.
    pub retain: bool,
    /// Topic name (empty only for a v5 publish that names its topic by alias).
    pub topic: TopicName,
    /// v5 PUBLISH properties.
    pub properties: Properties,
    /// Application payload.
    pub payload: Bytes,
}

impl fmt::Debug for Publish {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publish")
            .field("dup", &self.dup)
            .field("qos", &self.qos)
            .field("retain", &self.retain)
            .field("topic", &self.topic)
            .field("properties", &self.properties)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

impl Publish {
    /// A QoS 0, non-retained publish.
    pub fn new(topic: TopicName, payload: impl Into<Bytes>) -> Self {
        Self {
            dup: false,
            qos: QosPid::AtMostOnce,
            retain: false,
            topic,
            properties: Properties::new(),
            payload: payload.into(),
        }
    }

    /// The QoS level.
    pub fn qos(&self) -> QoS {
        self.qos.qos()
    }

    pub(crate) fn decode(
        flags: u8,
        mut r: Reader,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let dup = flags & 0x08 != 0;
        let retain = flags & 0x01 != 0;
        let qos = QoS::try_from((flags >> 1) & 0x03)?;
        if dup && qos == QoS::AtMostOnce {
            return Err(DecodeError::DupWithQoS0);
        }
        let topic = TopicName::decode(r.binary()?, version.is_v5())?;
        let qos = match qos {
            QoS::AtMostOnce => QosPid::AtMostOnce,
            QoS::AtLeastOnce => QosPid::AtLeastOnce(r.packet_id()?),
            QoS::ExactlyOnce => QosPid::ExactlyOnce(r.packet_id()?),
        };
        let properties = read_props(&mut r, version, PropertyContext::Publish)?;
        // v5: an empty topic name is only valid when a Topic Alias names the topic
        // [v5 MQTT-4.7.3-1].
        if topic.is_empty()
            && properties
                .find(|p| matches!(p, Property::TopicAlias(_)).then_some(()))
                .is_none()
        {
            return Err(DecodeError::EmptyTopic);
        }
        Ok(Self {
            dup,
            qos,
            retain,
            topic,
            properties,
            payload: r.rest(),
        })
    }

    /// The first byte of the fixed header.
    pub fn first_byte(&self) -> u8 {
        0x30 | (u8::from(self.dup) << 3) | ((self.qos() as u8) << 1) | u8::from(self.retain)
    }

    /// Length of topic, packet id and properties: everything between fixed header and payload.
    pub fn variable_header_len(&self, version: ProtocolVersion) -> usize {
        field_len(self.topic.as_bytes())
            + if self.qos.packet_id().is_some() { 2 } else { 0 }
            + props_len(&self.properties, version)
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        self.variable_header_len(version) + self.payload.len()
    }

    /// Bytes the header takes (fixed header plus variable header), without the payload.
    pub fn header_len(&self, version: ProtocolVersion) -> usize {
        let body = self.body_len(version);
        1 + var_int_len(body) + self.variable_header_len(version)
    }

    /// Encodes everything but the payload: a caller that writes `header ++ payload` (for
    /// example as two iovecs) sends the whole packet while sharing one payload buffer.
    pub fn encode_header(
        &self,
        version: ProtocolVersion,
        buf: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        PublishHeader {
            dup: self.dup,
            qos: self.qos,
            retain: self.retain,
            topic: &self.topic,
            properties: &self.properties,
            payload_len: self.payload.len(),
        }
        .encode(version, buf)
    }
}

/// A PUBLISH header described by borrowed parts, for a server that sends one stored message to
/// many subscribers: it encodes each subscriber's header (its own packet id, DUP, RETAIN)
/// without building a [`Publish`], so topic and payload are neither cloned nor copied.
#[derive(Debug, Clone, Copy)]
pub struct PublishHeader<'a> {
    /// DUP flag.
    pub dup: bool,
    /// QoS and packet id.
    pub qos: QosPid,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic name.
    pub topic: &'a str,
    /// v5 properties (ignored before v5).
    pub properties: &'a Properties,
    /// Length of the payload that will follow the header.
    pub payload_len: usize,
}

impl PublishHeader<'_> {
    fn variable_len(&self, version: ProtocolVersion) -> usize {
        field_len(self.topic.as_bytes())
            + if self.qos.packet_id().is_some() { 2 } else { 0 }
            + props_len(self.properties, version)
    }

    /// Bytes the header takes on the wire.
    pub fn len(&self, version: ProtocolVersion) -> usize {
        let variable = self.variable_len(version);
        1 + var_int_len(variable + self.payload_len) + variable
    }

    /// Never empty: a header has at least its fixed part.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Appends the header to `buf`.
    pub fn encode(&self, version: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let variable = self.variable_len(version);
        buf.reserve(1 + var_int_len(variable + self.payload_len) + variable);
        buf.put_u8(
            0x30 | (u8::from(self.dup) << 3)
                | ((self.qos.qos() as u8) << 1)
                | u8::from(self.retain),
        );
        put_var_int(buf, variable + self.payload_len)?;
        put_binary(buf, self.topic.as_bytes())?;
        if let Some(pid) = self.qos.packet_id() {
            buf.put_u16(pid.get());
        }
        if version.is_v5() {
            self.properties.encode(buf)?;
        }
        Ok(())
    }
}
