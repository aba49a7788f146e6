//! # vireo-codec
//!
//! The one MQTT codec of Vireo: the broker, the load generator and the tests all use it.
//! It speaks MQTT 3.1 (`MQIsdp`, level 3), 3.1.1 (`MQTT`, level 4) and 5.0 (level 5, with
//! properties, reason codes and AUTH).
//!
//! **Promise:** no sockets, no threads, no clock. Bytes in, packets out, and back.
//!
//! - [`decode`] takes the connection's read buffer (`&mut BytesMut`) and returns `Ok(None)` when it
//!   needs more bytes, the packet when it has one, or a [`DecodeError`] that names the spec tag the
//!   input breaks. A PUBLISH's topic and payload are slices of the read buffer, never copied. A
//!   packet over the configured maximum is refused from its fixed header alone.
//! - [`Packet::encode`] appends a packet to a `BytesMut`; [`Publish::encode_header`] encodes a
//!   PUBLISH without its payload so one payload buffer can be shared by every subscriber.
//! - [`topic_matches`], [`validate_topic_name`] and [`validate_topic_filter`] implement spec 4.7.
//!
//! Layout: `packet` (enum, fixed header, dispatch), `connect`, `publish`, `subscribe`, `ack`
//! (every small acknowledgement), `properties` (v5), `topic`, `wire` (primitive fields), `types`.

mod ack;
mod connect;
mod error;
mod packet;
mod properties;
mod publish;
mod subscribe;
mod topic;
mod types;
mod wire;

pub use ack::{Ack, Disconnect, SubAck};
pub use connect::{ConnAck, Connect, LastWill};
pub use error::{DecodeError, EncodeError};
pub use packet::{Auth, FixedHeader, Packet, decode};
pub use properties::{Properties, Property, PropertyContext};
pub use publish::{Publish, PublishHeader};
pub use subscribe::{Subscribe, SubscriptionOptions, Unsubscribe};
pub use topic::{
    TopicName, has_control_character, has_wildcard, parse_shared, topic_matches,
    validate_topic_filter, validate_topic_name,
};
pub use types::{PacketId, ProtocolVersion, QoS, QosPid, ReasonCode};
pub use wire::{MAX_VAR_INT, decode_var_int, utf8, var_int_len};

pub use bytes::{Bytes, BytesMut};
pub use bytestring::ByteString;
