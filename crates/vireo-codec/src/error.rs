//! Decode and encode errors.
//!
//! Every protocol violation names the normative statement it breaks, so that a log line leads
//! straight to the requirement. The tags are MQTT 3.1.1 tags unless the text says `v5`.

use crate::ReasonCode;

/// Why a byte sequence is not a valid MQTT packet.
///
/// Small and `Copy`: decoding errors travel on the hot path and are logged, never boxed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The remaining-length field runs past four bytes, or is not minimally encoded (v5).
    #[error("malformed remaining length: more than 4 bytes (spec 2.2.3)")]
    MalformedRemainingLength,
    /// A variable byte integer inside the packet (v5 property length, subscription id) is malformed.
    #[error("malformed variable byte integer [v5 MQTT-1.5.5-1]")]
    MalformedVarInt,
    /// The packet is larger than the configured maximum; detected from the fixed header alone.
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge {
        /// Total size the fixed header announces.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// Packet type 0, or 15 before MQTT 5.0.
    #[error("reserved control packet type {0} [MQTT-4.8.0-1]")]
    ReservedPacketType(u8),
    /// Fixed-header flag bits differ from the values the flag table requires.
    #[error("invalid fixed header flags {flags:#06b} for packet type {packet_type} [MQTT-2.2.2-2]")]
    InvalidFlags {
        /// The control packet type (upper nibble of the first byte).
        packet_type: u8,
        /// The flag nibble that was received.
        flags: u8,
    },
    /// A PUBLISH with both QoS bits set.
    #[error("PUBLISH with QoS 3 [MQTT-3.3.1-4]")]
    InvalidQoS,
    /// A QoS 0 PUBLISH with DUP set.
    #[error("QoS 0 PUBLISH with DUP set [MQTT-3.3.1-2]")]
    DupWithQoS0,
    /// A packet identifier of zero.
    #[error("packet identifier 0 [MQTT-2.3.1-1]")]
    ZeroPacketId,
    /// A string that is not well-formed UTF-8 (including encoded surrogates and overlong forms).
    #[error("ill-formed UTF-8 string [MQTT-1.5.3-1]")]
    InvalidUtf8,
    /// A string containing U+0000.
    #[error("string contains U+0000 [MQTT-1.5.3-2]")]
    NullCharacter,
    /// A client id, user name, topic name or topic filter holding a control character
    /// (U+0001..U+001F, U+007F..U+009F), which strings SHOULD NOT hold [MQTT-1.5.3-2]; the
    /// receiver may close the connection, and Vireo does, as Mosquitto does.
    #[error("string contains a control character (U+0001..U+001F, U+007F..U+009F)")]
    ControlCharacter,
    /// A topic name containing `+` or `#`.
    #[error("topic name contains a wildcard [MQTT-3.3.2-2]")]
    WildcardInTopicName,
    /// A zero-length topic name or topic filter.
    #[error("empty topic name or filter [MQTT-4.7.3-1]")]
    EmptyTopic,
    /// `#` not alone in its level or not the last level.
    #[error("`#` must be the last level and alone in it [MQTT-4.7.1-2]")]
    InvalidMultiLevelWildcard,
    /// `+` sharing a level with other characters.
    #[error("`+` must fill a whole level [MQTT-4.7.1-3]")]
    InvalidSingleLevelWildcard,
    /// A `$share/` filter without a valid share name or filter (v5).
    #[error("malformed shared subscription [v5 MQTT-4.8.2-1]")]
    InvalidSharedSubscription,
    /// A SUBSCRIBE with no topic filter.
    #[error("SUBSCRIBE without a topic filter [MQTT-3.8.3-3]")]
    EmptySubscribe,
    /// An UNSUBSCRIBE with no topic filter.
    #[error("UNSUBSCRIBE without a topic filter [MQTT-3.10.3-2]")]
    EmptyUnsubscribe,
    /// Requested QoS byte with reserved bits set or QoS 3 (subscription options in v5).
    #[error("invalid requested QoS / subscription options [MQTT-3.8.3-4]")]
    InvalidSubscriptionOptions,
    /// The reserved bit of the CONNECT flags is set.
    #[error("CONNECT reserved flag is set [MQTT-3.1.2-3]")]
    ConnectReservedFlag,
    /// Will QoS or Will Retain set while the Will Flag is clear.
    #[error("Will QoS/Retain set without the Will Flag [MQTT-3.1.2-11]")]
    WillFlagsWithoutWill,
    /// Will QoS 3.
    #[error("Will QoS 3 [MQTT-3.1.2-14]")]
    InvalidWillQoS,
    /// Password flag without the user name flag (3.1 and 3.1.1 only).
    #[error("password flag set without the user name flag [MQTT-3.1.2-22]")]
    PasswordWithoutUsername,
    /// The protocol name is neither `MQTT` nor `MQIsdp`, or does not fit the level.
    #[error("unknown protocol name [MQTT-3.1.2-1]")]
    InvalidProtocolName,
    /// A protocol level this codec does not speak. The server answers CONNACK 0x01 [MQTT-3.1.2-2].
    #[error("unsupported protocol level {0} [MQTT-3.1.2-2]")]
    UnsupportedProtocolLevel(u8),
    /// A field runs past the end of the packet.
    #[error("packet ends inside a field [MQTT-3.1.4-1]")]
    Truncated,
    /// Bytes left over after every field of the packet was read.
    #[error("unexpected bytes after the last field of the packet")]
    TrailingBytes,
    /// A property that is unknown or not allowed in this packet (v5).
    #[error("property {0:#04x} is not allowed in this packet [v5 MQTT-2.2.2-2]")]
    InvalidProperty(u8),
    /// A property that may appear once appeared twice (v5).
    #[error("property {0:#04x} appears more than once [v5 MQTT-2.2.2-2]")]
    DuplicateProperty(u8),
    /// A property whose value is out of its range (v5).
    #[error("property {0:#04x} has a value out of range")]
    InvalidPropertyValue(u8),
    /// A reason / return code that this packet may not carry.
    #[error("reason code {0:#04x} is not valid in this packet")]
    InvalidReasonCode(u8),
}

impl DecodeError {
    /// The v5 reason code a server sends (in CONNACK or DISCONNECT) for this error.
    pub const fn reason_code(self) -> ReasonCode {
        match self {
            DecodeError::PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            DecodeError::UnsupportedProtocolLevel(_) | DecodeError::InvalidProtocolName => {
                ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
            }
            DecodeError::WildcardInTopicName | DecodeError::EmptyTopic => {
                ReasonCode::TOPIC_NAME_INVALID
            }
            DecodeError::InvalidMultiLevelWildcard
            | DecodeError::InvalidSingleLevelWildcard
            | DecodeError::InvalidSharedSubscription => ReasonCode::TOPIC_FILTER_INVALID,
            // Topic Alias 0 [MQTT-3.3.2-8].
            DecodeError::InvalidPropertyValue(0x23) => ReasonCode::TOPIC_ALIAS_INVALID,
            DecodeError::DuplicateProperty(_)
            | DecodeError::InvalidPropertyValue(_)
            | DecodeError::ZeroPacketId
            | DecodeError::EmptySubscribe
            | DecodeError::EmptyUnsubscribe => ReasonCode::PROTOCOL_ERROR,
            _ => ReasonCode::MALFORMED_PACKET,
        }
    }
}

/// Why a packet could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The packet would exceed the 268,435,455-byte remaining-length ceiling.
    #[error("packet too large to encode ({0} bytes of remaining length)")]
    PacketTooLarge(usize),
    /// A string or binary field longer than 65,535 bytes.
    #[error("field of {0} bytes exceeds the 65,535-byte limit of a length-prefixed field")]
    FieldTooLong(usize),
    /// The packet or field does not exist in the protocol version asked for.
    #[error("packet not representable in this protocol version")]
    NotInVersion,
}
