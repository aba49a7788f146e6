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
            properties: &self.properties,
            ..PublishHeader::new(
                self.dup,
                self.qos,
                self.retain,
                &self.topic,
                self.payload.len(),
            )
        }
        .encode(version, buf)
    }
}

/// A PUBLISH header described by borrowed parts, for a server that sends one stored message to
/// many subscribers: it encodes each subscriber's header (its own packet id, DUP, RETAIN, and in
/// v5 its subscription identifiers and the message's remaining expiry) without building a
/// [`Publish`], so topic, payload and forwarded properties are neither cloned nor copied.
#[derive(Debug, Clone, Copy)]
pub struct PublishHeader<'a> {
    /// DUP flag.
    pub dup: bool,
    /// QoS and packet id.
    pub qos: QosPid,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic name (empty when `topic_alias` names a topic the receiver already knows).
    pub topic: &'a str,
    /// v5: properties forwarded as they are (ignored before v5).
    pub properties: &'a Properties,
    /// v5: Message Expiry Interval to send, written before the forwarded properties.
    pub message_expiry: Option<u32>,
    /// v5: Topic Alias to send.
    pub topic_alias: Option<u16>,
    /// v5: Subscription Identifiers to send.
    pub subscription_ids: &'a [u32],
    /// Length of the payload that will follow the header.
    pub payload_len: usize,
}

static NO_PROPERTIES: Properties = Properties::new();

impl<'a> PublishHeader<'a> {
    /// A header with no v5 properties.
    pub fn new(dup: bool, qos: QosPid, retain: bool, topic: &'a str, payload_len: usize) -> Self {
        Self {
            dup,
            qos,
            retain,
            topic,
            properties: &NO_PROPERTIES,
            message_expiry: None,
            topic_alias: None,
            subscription_ids: &[],
            payload_len,
        }
    }

    /// Length of the v5 property block without its length prefix.
    fn props_body_len(&self) -> usize {
        self.properties.body_len()
            + self.message_expiry.map_or(0, |_| 5)
            + self.topic_alias.map_or(0, |_| 3)
            + self
                .subscription_ids
                .iter()
                .map(|&id| 1 + var_int_len(id as usize))
                .sum::<usize>()
    }

    fn variable_len(&self, version: ProtocolVersion) -> usize {
        let props = if version.is_v5() {
            let body = self.props_body_len();
            var_int_len(body) + body
        } else {
            0
        };
        field_len(self.topic.as_bytes())
            + if self.qos.packet_id().is_some() { 2 } else { 0 }
            + props
    }

    /// Bytes the header takes on the wire.
    pub fn len(&self, version: ProtocolVersion) -> usize {
        let variable = self.variable_len(version);
        1 + var_int_len(variable + self.payload_len) + variable
    }

    /// Bytes the whole packet (header and payload) takes on the wire.
    pub fn packet_len(&self, version: ProtocolVersion) -> usize {
        self.len(version) + self.payload_len
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
            put_var_int(buf, self.props_body_len())?;
            if let Some(expiry) = self.message_expiry {
                buf.put_u8(0x02);
                buf.put_u32(expiry);
            }
            if let Some(alias) = self.topic_alias {
                buf.put_u8(0x23);
                buf.put_u16(alias);
            }
            for &id in self.subscription_ids {
                buf.put_u8(0x0B);
                put_var_int(buf, id as usize)?;
            }
            buf.put_slice(self.properties.as_bytes());
        }
        Ok(())
    }
}
