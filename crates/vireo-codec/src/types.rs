//! Small value types shared by every packet: protocol version, QoS, packet ids, reason codes.

use std::fmt;
use std::num::NonZeroU16;

use crate::DecodeError;

/// A packet identifier: never zero on the wire [MQTT-2.3.1-1].
pub type PacketId = NonZeroU16;

/// The protocol spoken on a connection, fixed by its CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProtocolVersion {
    /// MQTT 3.1: protocol name `MQIsdp`, level 3.
    V31,
    /// MQTT 3.1.1: protocol name `MQTT`, level 4.
    V311,
    /// MQTT 5.0: protocol name `MQTT`, level 5.
    V5,
}

impl ProtocolVersion {
    /// The protocol level byte of CONNECT.
    pub const fn level(self) -> u8 {
        match self {
            ProtocolVersion::V31 => 3,
            ProtocolVersion::V311 => 4,
            ProtocolVersion::V5 => 5,
        }
    }

    /// The protocol name of CONNECT.
    pub const fn name(self) -> &'static str {
        match self {
            ProtocolVersion::V31 => "MQIsdp",
            ProtocolVersion::V311 | ProtocolVersion::V5 => "MQTT",
        }
    }

    /// Whether packets carry properties and reason codes.
    pub const fn is_v5(self) -> bool {
        matches!(self, ProtocolVersion::V5)
    }
}

/// Quality of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(u8)]
pub enum QoS {
    /// At most once.
    #[default]
    AtMostOnce = 0,
    /// At least once.
    AtLeastOnce = 1,
    /// Exactly once.
    ExactlyOnce = 2,
}

impl TryFrom<u8> for QoS {
    type Error = DecodeError;

    fn try_from(value: u8) -> Result<Self, Self::Error> {
        match value {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            2 => Ok(QoS::ExactlyOnce),
            _ => Err(DecodeError::InvalidQoS),
        }
    }
}

/// QoS together with the packet id that QoS 1 and 2 need and QoS 0 must not have
/// [MQTT-2.3.1-5]: the type makes "QoS 1 without an id" unrepresentable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QosPid {
    /// QoS 0, no packet id.
    AtMostOnce,
    /// QoS 1 with its packet id.
    AtLeastOnce(PacketId),
    /// QoS 2 with its packet id.
    ExactlyOnce(PacketId),
}

impl QosPid {
    /// Builds from a QoS and an id; the id is ignored for QoS 0.
    pub const fn new(qos: QoS, pid: PacketId) -> Self {
        match qos {
            QoS::AtMostOnce => QosPid::AtMostOnce,
            QoS::AtLeastOnce => QosPid::AtLeastOnce(pid),
            QoS::ExactlyOnce => QosPid::ExactlyOnce(pid),
        }
    }

    /// The QoS level.
    pub const fn qos(self) -> QoS {
        match self {
            QosPid::AtMostOnce => QoS::AtMostOnce,
            QosPid::AtLeastOnce(_) => QoS::AtLeastOnce,
            QosPid::ExactlyOnce(_) => QoS::ExactlyOnce,
        }
    }

    /// The packet id, if the QoS has one.
    pub const fn packet_id(self) -> Option<PacketId> {
        match self {
            QosPid::AtMostOnce => None,
            QosPid::AtLeastOnce(p) | QosPid::ExactlyOnce(p) => Some(p),
        }
    }
}

/// A CONNACK return code (3.1.1) or a reason code (5.0). One byte; the named constants cover
/// both versions (the 3.1.1 codes 1..=5 are only valid in a 3.1/3.1.1 CONNACK).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ReasonCode(pub u8);

impl ReasonCode {
    /// Success / normal disconnection / granted QoS 0.
    pub const SUCCESS: Self = Self(0x00);
    /// Granted QoS 1.
    pub const GRANTED_QOS_1: Self = Self(0x01);
    /// Granted QoS 2.
    pub const GRANTED_QOS_2: Self = Self(0x02);
    /// DISCONNECT: disconnect with Will message.
    pub const DISCONNECT_WITH_WILL: Self = Self(0x04);
    /// No matching subscribers.
    pub const NO_MATCHING_SUBSCRIBERS: Self = Self(0x10);
    /// No subscription existed.
    pub const NO_SUBSCRIPTION_EXISTED: Self = Self(0x11);
    /// Continue authentication.
    pub const CONTINUE_AUTHENTICATION: Self = Self(0x18);
    /// Re-authenticate.
    pub const REAUTHENTICATE: Self = Self(0x19);
    /// 3.1.1 CONNACK: unacceptable protocol version.
    pub const V3_UNACCEPTABLE_PROTOCOL_VERSION: Self = Self(0x01);
    /// 3.1.1 CONNACK: identifier rejected.
    pub const V3_IDENTIFIER_REJECTED: Self = Self(0x02);
    /// 3.1.1 CONNACK: server unavailable.
    pub const V3_SERVER_UNAVAILABLE: Self = Self(0x03);
    /// 3.1.1 CONNACK: bad user name or password.
    pub const V3_BAD_USERNAME_OR_PASSWORD: Self = Self(0x04);
    /// 3.1.1 CONNACK: not authorized.
    pub const V3_NOT_AUTHORIZED: Self = Self(0x05);
    /// 3.1.1 SUBACK failure.
    pub const V3_SUBSCRIBE_FAILURE: Self = Self(0x80);
    /// Unspecified error.
    pub const UNSPECIFIED_ERROR: Self = Self(0x80);
    /// Malformed packet.
    pub const MALFORMED_PACKET: Self = Self(0x81);
    /// Protocol error.
    pub const PROTOCOL_ERROR: Self = Self(0x82);
    /// Implementation specific error.
    pub const IMPLEMENTATION_SPECIFIC_ERROR: Self = Self(0x83);
    /// Unsupported protocol version.
    pub const UNSUPPORTED_PROTOCOL_VERSION: Self = Self(0x84);
    /// Client identifier not valid.
    pub const CLIENT_IDENTIFIER_NOT_VALID: Self = Self(0x85);
    /// Bad user name or password.
    pub const BAD_USERNAME_OR_PASSWORD: Self = Self(0x86);
    /// Not authorized.
    pub const NOT_AUTHORIZED: Self = Self(0x87);
    /// Server unavailable.
    pub const SERVER_UNAVAILABLE: Self = Self(0x88);
    /// Server busy.
    pub const SERVER_BUSY: Self = Self(0x89);
    /// Banned.
    pub const BANNED: Self = Self(0x8A);
    /// Server shutting down.
    pub const SERVER_SHUTTING_DOWN: Self = Self(0x8B);
    /// Bad authentication method.
    pub const BAD_AUTHENTICATION_METHOD: Self = Self(0x8C);
    /// Keep alive timeout.
    pub const KEEP_ALIVE_TIMEOUT: Self = Self(0x8D);
    /// Session taken over.
    pub const SESSION_TAKEN_OVER: Self = Self(0x8E);
    /// Topic filter invalid.
    pub const TOPIC_FILTER_INVALID: Self = Self(0x8F);
    /// Topic name invalid.
    pub const TOPIC_NAME_INVALID: Self = Self(0x90);
    /// Packet identifier in use.
    pub const PACKET_IDENTIFIER_IN_USE: Self = Self(0x91);
    /// Packet identifier not found.
    pub const PACKET_IDENTIFIER_NOT_FOUND: Self = Self(0x92);
    /// Receive maximum exceeded.
    pub const RECEIVE_MAXIMUM_EXCEEDED: Self = Self(0x93);
    /// Topic alias invalid.
    pub const TOPIC_ALIAS_INVALID: Self = Self(0x94);
    /// Packet too large.
    pub const PACKET_TOO_LARGE: Self = Self(0x95);
    /// Message rate too high.
    pub const MESSAGE_RATE_TOO_HIGH: Self = Self(0x96);
    /// Quota exceeded.
    pub const QUOTA_EXCEEDED: Self = Self(0x97);
    /// Administrative action.
    pub const ADMINISTRATIVE_ACTION: Self = Self(0x98);
    /// Payload format invalid.
    pub const PAYLOAD_FORMAT_INVALID: Self = Self(0x99);
    /// Retain not supported.
    pub const RETAIN_NOT_SUPPORTED: Self = Self(0x9A);
    /// QoS not supported.
    pub const QOS_NOT_SUPPORTED: Self = Self(0x9B);
    /// Use another server.
    pub const USE_ANOTHER_SERVER: Self = Self(0x9C);
    /// Server moved.
    pub const SERVER_MOVED: Self = Self(0x9D);
    /// Shared subscriptions not supported.
    pub const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: Self = Self(0x9E);
    /// Connection rate exceeded.
    pub const CONNECTION_RATE_EXCEEDED: Self = Self(0x9F);
    /// Maximum connect time.
    pub const MAXIMUM_CONNECT_TIME: Self = Self(0xA0);
    /// Subscription identifiers not supported.
    pub const SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED: Self = Self(0xA1);
    /// Wildcard subscriptions not supported.
    pub const WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED: Self = Self(0xA2);

    /// Whether this code reports a failure (0x80 and above).
    pub const fn is_error(self) -> bool {
        self.0 >= 0x80
    }

    /// The SUBACK code granting `qos`.
    pub const fn granted(qos: QoS) -> Self {
        Self(qos as u8)
    }
}

impl fmt::Debug for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReasonCode({:#04x})", self.0)
    }
}

/// Which reason codes each v5 packet may carry (spec 2.4, table 2-6), and the 3.1.1 SUBACK and
/// CONNACK code sets.
pub(crate) mod allowed {
    pub const V3_CONNACK: &[u8] = &[0, 1, 2, 3, 4, 5];
    pub const V3_SUBACK: &[u8] = &[0, 1, 2, 0x80];
    pub const CONNACK: &[u8] = &[
        0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95,
        0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
    ];
    pub const PUBACK: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
    pub const PUBREL: &[u8] = &[0x00, 0x92];
    pub const SUBACK: &[u8] = &[
        0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
    ];
    pub const UNSUBACK: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
    pub const DISCONNECT: &[u8] = &[
        0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94,
        0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
    ];
    pub const AUTH: &[u8] = &[0x00, 0x18, 0x19];
}
