//! MQTT 5.0 properties (spec 2.2.2).
//!
//! A packet's properties are kept as the encoded block they arrived in (see [`Properties`]):
//! decoding validates it without allocating, encode → decode gives back exactly what was sent,
//! and a broker forwards a PUBLISH's properties by copying bytes. Decoding checks that each
//! property is allowed in its packet, appears at most once where the spec says so, and has a
//! value in range.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use crate::wire::{Reader, decode_var_int, field_len, put_binary, put_var_int, var_int_len};
use crate::{DecodeError, EncodeError};

/// One MQTT 5.0 property.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)] // each variant is the property of the same name in spec 2.2.2.2
pub enum Property {
    PayloadFormatIndicator(u8),
    MessageExpiryInterval(u32),
    ContentType(ByteString),
    ResponseTopic(ByteString),
    CorrelationData(Bytes),
    SubscriptionIdentifier(u32),
    SessionExpiryInterval(u32),
    AssignedClientIdentifier(ByteString),
    ServerKeepAlive(u16),
    AuthenticationMethod(ByteString),
    AuthenticationData(Bytes),
    RequestProblemInformation(u8),
    WillDelayInterval(u32),
    RequestResponseInformation(u8),
    ResponseInformation(ByteString),
    ServerReference(ByteString),
    ReasonString(ByteString),
    ReceiveMaximum(u16),
    TopicAliasMaximum(u16),
    TopicAlias(u16),
    MaximumQoS(u8),
    RetainAvailable(u8),
    UserProperty(ByteString, ByteString),
    MaximumPacketSize(u32),
    WildcardSubscriptionAvailable(u8),
    SubscriptionIdentifierAvailable(u8),
    SharedSubscriptionAvailable(u8),
}

/// Which packet a property list belongs to; decides which properties are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyContext {
    /// CONNECT.
    Connect,
    /// The Will properties inside CONNECT.
    Will,
    /// CONNACK.
    ConnAck,
    /// PUBLISH.
    Publish,
    /// PUBACK, PUBREC, PUBREL, PUBCOMP.
    Ack,
    /// SUBSCRIBE.
    Subscribe,
    /// SUBACK and UNSUBACK.
    SubAck,
    /// UNSUBSCRIBE.
    Unsubscribe,
    /// DISCONNECT.
    Disconnect,
    /// AUTH.
    Auth,
}

impl Property {
    /// The property identifier byte.
    pub const fn id(&self) -> u8 {
        match self {
            Property::PayloadFormatIndicator(_) => 0x01,
            Property::MessageExpiryInterval(_) => 0x02,
            Property::ContentType(_) => 0x03,
            Property::ResponseTopic(_) => 0x08,
            Property::CorrelationData(_) => 0x09,
            Property::SubscriptionIdentifier(_) => 0x0B,
            Property::SessionExpiryInterval(_) => 0x11,
            Property::AssignedClientIdentifier(_) => 0x12,
            Property::ServerKeepAlive(_) => 0x13,
            Property::AuthenticationMethod(_) => 0x15,
            Property::AuthenticationData(_) => 0x16,
            Property::RequestProblemInformation(_) => 0x17,
            Property::WillDelayInterval(_) => 0x18,
            Property::RequestResponseInformation(_) => 0x19,
            Property::ResponseInformation(_) => 0x1A,
            Property::ServerReference(_) => 0x1C,
            Property::ReasonString(_) => 0x1F,
            Property::ReceiveMaximum(_) => 0x21,
            Property::TopicAliasMaximum(_) => 0x22,
            Property::TopicAlias(_) => 0x23,
            Property::MaximumQoS(_) => 0x24,
            Property::RetainAvailable(_) => 0x25,
            Property::UserProperty(..) => 0x26,
            Property::MaximumPacketSize(_) => 0x27,
            Property::WildcardSubscriptionAvailable(_) => 0x28,
            Property::SubscriptionIdentifierAvailable(_) => 0x29,
            Property::SharedSubscriptionAvailable(_) => 0x2A,
        }
    }

    fn decode(id: u8, r: &mut Reader) -> Result<Self, DecodeError> {
        let boolean = |r: &mut Reader| -> Result<u8, DecodeError> {
            match r.u8()? {
                v @ (0 | 1) => Ok(v),
                _ => Err(DecodeError::InvalidPropertyValue(id)),
            }
        };
        let non_zero_u16 = |r: &mut Reader| -> Result<u16, DecodeError> {
            match r.u16()? {
                0 => Err(DecodeError::InvalidPropertyValue(id)),
                v => Ok(v),
            }
        };
        Ok(match id {
            0x01 => Property::PayloadFormatIndicator(boolean(r)?),
            0x02 => Property::MessageExpiryInterval(r.u32()?),
            0x03 => Property::ContentType(r.string()?),
            0x08 => {
                // A Response Topic is used as a topic name: no wildcards [v5 MQTT-3.3.2-14].
                let topic = r.string()?;
                crate::validate_topic_name(&topic)
                    .map_err(|_| DecodeError::InvalidPropertyValue(id))?;
                Property::ResponseTopic(topic)
            }
            0x09 => Property::CorrelationData(r.binary()?),
            0x0B => match r.var_int()? {
                0 => return Err(DecodeError::InvalidPropertyValue(id)),
                v => Property::SubscriptionIdentifier(v),
            },
            0x11 => Property::SessionExpiryInterval(r.u32()?),
            0x12 => Property::AssignedClientIdentifier(r.string()?),
            0x13 => Property::ServerKeepAlive(r.u16()?),
            0x15 => Property::AuthenticationMethod(r.string()?),
            0x16 => Property::AuthenticationData(r.binary()?),
            0x17 => Property::RequestProblemInformation(boolean(r)?),
            0x18 => Property::WillDelayInterval(r.u32()?),
            0x19 => Property::RequestResponseInformation(boolean(r)?),
            0x1A => Property::ResponseInformation(r.string()?),
            0x1C => Property::ServerReference(r.string()?),
            0x1F => Property::ReasonString(r.string()?),
            0x21 => Property::ReceiveMaximum(non_zero_u16(r)?),
            0x22 => Property::TopicAliasMaximum(r.u16()?),
            0x23 => Property::TopicAlias(non_zero_u16(r)?),
            0x24 => Property::MaximumQoS(boolean(r)?),
            0x25 => Property::RetainAvailable(boolean(r)?),
            0x26 => Property::UserProperty(r.string()?, r.string()?),
            0x27 => match r.u32()? {
                0 => return Err(DecodeError::InvalidPropertyValue(id)),
                v => Property::MaximumPacketSize(v),
            },
            0x28 => Property::WildcardSubscriptionAvailable(boolean(r)?),
            0x29 => Property::SubscriptionIdentifierAvailable(boolean(r)?),
            0x2A => Property::SharedSubscriptionAvailable(boolean(r)?),
            other => return Err(DecodeError::InvalidProperty(other)),
        })
    }

    fn encoded_len(&self) -> usize {
        1 + match self {
            Property::PayloadFormatIndicator(_)
            | Property::RequestProblemInformation(_)
            | Property::RequestResponseInformation(_)
            | Property::MaximumQoS(_)
            | Property::RetainAvailable(_)
            | Property::WildcardSubscriptionAvailable(_)
            | Property::SubscriptionIdentifierAvailable(_)
            | Property::SharedSubscriptionAvailable(_) => 1,
            Property::ServerKeepAlive(_)
            | Property::ReceiveMaximum(_)
            | Property::TopicAliasMaximum(_)
            | Property::TopicAlias(_) => 2,
            Property::MessageExpiryInterval(_)
            | Property::SessionExpiryInterval(_)
            | Property::WillDelayInterval(_)
            | Property::MaximumPacketSize(_) => 4,
            Property::SubscriptionIdentifier(v) => var_int_len(*v as usize),
            Property::ContentType(s)
            | Property::ResponseTopic(s)
            | Property::AssignedClientIdentifier(s)
            | Property::AuthenticationMethod(s)
            | Property::ResponseInformation(s)
            | Property::ServerReference(s)
            | Property::ReasonString(s) => field_len(s.as_bytes()),
            Property::CorrelationData(b) | Property::AuthenticationData(b) => field_len(b),
            Property::UserProperty(k, v) => field_len(k.as_bytes()) + field_len(v.as_bytes()),
        }
    }

    fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        buf.put_u8(self.id());
        match self {
            Property::PayloadFormatIndicator(v)
            | Property::RequestProblemInformation(v)
            | Property::RequestResponseInformation(v)
            | Property::MaximumQoS(v)
            | Property::RetainAvailable(v)
            | Property::WildcardSubscriptionAvailable(v)
            | Property::SubscriptionIdentifierAvailable(v)
            | Property::SharedSubscriptionAvailable(v) => buf.put_u8(*v),
            Property::ServerKeepAlive(v)
            | Property::ReceiveMaximum(v)
            | Property::TopicAliasMaximum(v)
            | Property::TopicAlias(v) => buf.put_u16(*v),
            Property::MessageExpiryInterval(v)
            | Property::SessionExpiryInterval(v)
            | Property::WillDelayInterval(v)
            | Property::MaximumPacketSize(v) => buf.put_u32(*v),
            Property::SubscriptionIdentifier(v) => put_var_int(buf, *v as usize)?,
            Property::ContentType(s)
            | Property::ResponseTopic(s)
            | Property::AssignedClientIdentifier(s)
            | Property::AuthenticationMethod(s)
            | Property::ResponseInformation(s)
            | Property::ServerReference(s)
            | Property::ReasonString(s) => put_binary(buf, s.as_bytes())?,
            Property::CorrelationData(b) | Property::AuthenticationData(b) => put_binary(buf, b)?,
            Property::UserProperty(k, v) => {
                put_binary(buf, k.as_bytes())?;
                put_binary(buf, v.as_bytes())?;
            }
        }
        Ok(())
    }
}

/// Whether property `id` may appear in `ctx` (spec 2.2.2.2, table 2-4).
const fn allowed(id: u8, ctx: PropertyContext) -> bool {
    use PropertyContext as C;
    match id {
        0x26 => true,
        0x01 | 0x02 | 0x03 | 0x08 | 0x09 => matches!(ctx, C::Publish | C::Will),
        0x0B => matches!(ctx, C::Publish | C::Subscribe),
        0x11 => matches!(ctx, C::Connect | C::ConnAck | C::Disconnect),
        0x12 | 0x13 | 0x1A | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => matches!(ctx, C::ConnAck),
        0x15 | 0x16 => matches!(ctx, C::Connect | C::ConnAck | C::Auth),
        0x17 | 0x19 => matches!(ctx, C::Connect),
        0x18 => matches!(ctx, C::Will),
        0x1C => matches!(ctx, C::ConnAck | C::Disconnect),
        0x1F => matches!(
            ctx,
            C::ConnAck | C::Ack | C::SubAck | C::Disconnect | C::Auth
        ),
        0x21 | 0x22 | 0x27 => matches!(ctx, C::Connect | C::ConnAck),
        0x23 => matches!(ctx, C::Publish),
        _ => false,
    }
}

/// The properties of one packet, kept as their encoded block (without its length prefix).
///
/// Decoding validates the block once (every property allowed in its packet, at most once where
/// the spec says so, values in range, strings well-formed) and keeps it as a zero-copy slice of
/// the packet: a PUBLISH with properties costs no allocation, and a broker forwards the block by
/// copying its bytes. [`Properties::iter`] decodes the properties on the fly, in wire order;
/// building a list (`From<Vec<Property>>`, [`Properties::push`]) encodes it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Properties {
    raw: Bytes,
}

impl fmt::Debug for Properties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl From<Vec<Property>> for Properties {
    fn from(list: Vec<Property>) -> Self {
        list.into_iter().collect()
    }
}

impl FromIterator<Property> for Properties {
    fn from_iter<I: IntoIterator<Item = Property>>(iter: I) -> Self {
        let mut buf = BytesMut::new();
        for p in iter {
            // Encoding into a BytesMut fails only for values the types cannot hold on the wire
            // (a string over 65,535 bytes): such a property is left out.
            let start = buf.len();
            if p.encode(&mut buf).is_err() {
                buf.truncate(start);
            }
        }
        Self { raw: buf.freeze() }
    }
}

impl Properties {
    /// No properties.
    pub const fn new() -> Self {
        Self { raw: Bytes::new() }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The properties in wire order, decoded as they are visited.
    pub fn iter(&self) -> Iter {
        Iter {
            r: Reader::new(self.raw.clone()),
        }
    }

    /// Appends one (re-encodes the block: for building packets, not for hot paths).
    pub fn push(&mut self, p: Property) {
        let mut buf = BytesMut::with_capacity(self.raw.len() + p.encoded_len());
        buf.extend_from_slice(&self.raw);
        if p.encode(&mut buf).is_ok() {
            self.raw = buf.freeze();
        }
    }

    /// The first property for which `f` returns `Some`.
    pub fn find<T>(&self, f: impl FnMut(Property) -> Option<T>) -> Option<T> {
        self.iter().find_map(f)
    }

    /// The encoded block, without its length prefix.
    pub fn as_bytes(&self) -> &Bytes {
        &self.raw
    }

    /// Length of the property block without its length prefix.
    pub fn body_len(&self) -> usize {
        self.raw.len()
    }

    /// Length on the wire including the variable-byte-integer length prefix.
    pub fn encoded_len(&self) -> usize {
        let body = self.body_len();
        var_int_len(body) + body
    }

    /// Visits every property's identifier and its whole encoding (identifier included), in
    /// wire order, without decoding values. The block must be valid (it is, once decoded).
    pub fn scan(&self, mut f: impl FnMut(u8, &[u8])) {
        let raw = &self.raw[..];
        let mut at = 0;
        while at < raw.len() {
            let id = raw[at];
            let Some(len) = value_len(id, &raw[at + 1..]) else {
                return;
            };
            let end = (at + 1 + len).min(raw.len());
            f(id, &raw[at..end]);
            at = end;
        }
    }

    /// The same block without the properties whose identifier `drop` accepts: a zero-copy
    /// clone when there are none, a copy of the rest otherwise.
    pub fn without(&self, mut drop: impl FnMut(u8) -> bool) -> Properties {
        let mut found = false;
        self.scan(|id, _| found |= drop(id));
        if !found {
            return self.clone();
        }
        let mut buf = BytesMut::with_capacity(self.raw.len());
        self.scan(|id, bytes| {
            if !drop(id) {
                buf.extend_from_slice(bytes);
            }
        });
        Properties { raw: buf.freeze() }
    }

    /// Properties from a block [`Properties::as_bytes`] gave (one a store kept, say), checked
    /// as a decoded packet's are: every property allowed in `ctx`, values in range.
    pub fn from_block(raw: &[u8], ctx: PropertyContext) -> Result<Self, DecodeError> {
        let mut buf = BytesMut::with_capacity(raw.len() + 4);
        put_var_int(&mut buf, raw.len()).map_err(|_| DecodeError::MalformedVarInt)?;
        buf.put_slice(raw);
        Self::decode(&mut Reader::new(buf.freeze()), ctx)
    }

    pub(crate) fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        put_var_int(buf, self.body_len())?;
        buf.put_slice(&self.raw);
        Ok(())
    }

    pub(crate) fn decode(r: &mut Reader, ctx: PropertyContext) -> Result<Self, DecodeError> {
        let len = r.var_int()? as usize;
        if len == 0 {
            return Ok(Self::new());
        }
        let raw = r.take(len)?;
        let mut block = Reader::new(raw.clone());
        // Ids are below 0x40, so one bit per id catches duplicates without a scan.
        let mut seen: u64 = 0;
        while !block.is_empty() {
            let id = u8::try_from(block.var_int()?).map_err(|_| DecodeError::MalformedVarInt)?;
            if !allowed(id, ctx) {
                return Err(DecodeError::InvalidProperty(id));
            }
            let repeatable = id == 0x26 || (id == 0x0B && ctx == PropertyContext::Publish);
            let bit = 1u64 << (id & 0x3F);
            if !repeatable && seen & bit != 0 {
                return Err(DecodeError::DuplicateProperty(id));
            }
            seen |= bit;
            Property::decode(id, &mut block)?;
        }
        Ok(Self { raw })
    }
}

/// Bytes the value of property `id` takes at the front of `rest` (after its identifier), or
/// `None` for an unknown id or a value cut short.
fn value_len(id: u8, rest: &[u8]) -> Option<usize> {
    let field = |at: usize| -> Option<usize> {
        let len = rest.get(at..at + 2)?;
        Some(2 + usize::from(u16::from_be_bytes([len[0], len[1]])))
    };
    let len = match id {
        0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => 1,
        0x13 | 0x21 | 0x22 | 0x23 => 2,
        0x02 | 0x11 | 0x18 | 0x27 => 4,
        0x0B => match decode_var_int(rest) {
            Ok(Some((_, n))) => n,
            _ => return None,
        },
        0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1A | 0x1C | 0x1F => field(0)?,
        0x26 => {
            let key = field(0)?;
            key + field(key)?
        }
        _ => return None,
    };
    (len <= rest.len()).then_some(len)
}

/// Iterator over a block's properties (see [`Properties::iter`]).
#[derive(Debug)]
pub struct Iter {
    r: Reader,
}

impl Iterator for Iter {
    type Item = Property;

    fn next(&mut self) -> Option<Property> {
        if self.r.is_empty() {
            return None;
        }
        let id = u8::try_from(self.r.var_int().ok()?).ok()?;
        Property::decode(id, &mut self.r).ok()
    }
}
