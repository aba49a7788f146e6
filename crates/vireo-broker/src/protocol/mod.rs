//! The protocol decisions, one file per packet as Mosquitto lays them out (`handle_connect.c`,
//! `handle_publish.c`, …): for each packet a client sends, in every protocol version, what to
//! answer (ack, reason code, properties), what to route, and whether to close and with which
//! DISCONNECT reason.
//!
//! Pure functions of the decoded packet, the connection's negotiated state and the broker's
//! [`Limits`], with time passed in: no sockets, no clock. The server's workers hold the state
//! (connections, sessions, the index) and apply what these functions decide, so every rule here
//! is unit-tested without a socket.

pub mod acks;
pub mod acl;
pub mod auth;
pub mod connect;
pub mod connection;
pub mod disconnect;
pub mod lifecycle;
pub mod publish;
pub mod quota;
pub mod subscribe;

use vireo_codec::{QoS, ReasonCode};

/// What the broker allows, as the server's configuration sets it: advertised to MQTT 5.0
/// clients in CONNACK and enforced for every version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Inbound QoS 2 PUBLISHes a client may have awaiting PUBREL (v5 Receive Maximum).
    pub receive_maximum: u16,
    /// Highest QoS served.
    pub maximum_qos: QoS,
    /// Whether retained messages are kept.
    pub retain_available: bool,
    /// Largest packet accepted, in bytes.
    pub maximum_packet_size: u32,
    /// Topic aliases a client may set up (0: none).
    pub topic_alias_maximum: u16,
    /// Topic aliases the broker sets up towards a client, at most (0: none; a client gets
    /// the lower of this and its own Topic Alias Maximum).
    pub outbound_topic_alias_maximum: u16,
    /// Whether filters may hold wildcards.
    pub wildcard_available: bool,
    /// Whether `$share/` filters are served.
    pub shared_available: bool,
    /// Longest keep alive granted, in seconds (0: any). A v5 client asking for more (or for
    /// none) gets this as Server Keep Alive.
    pub max_keep_alive: u16,
    /// Longest session expiry interval granted, in seconds (`u32::MAX`: any).
    pub max_session_expiry: u32,
    /// Topic length and depth allowed, names and filters alike.
    pub max_topic_length: usize,
    /// See `max_topic_length`.
    pub max_topic_levels: usize,
    /// Subscriptions one session may hold.
    pub max_subscriptions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            receive_maximum: 1024,
            maximum_qos: QoS::ExactlyOnce,
            retain_available: true,
            maximum_packet_size: 1024 * 1024,
            topic_alias_maximum: 10,
            outbound_topic_alias_maximum: 0,
            wildcard_available: true,
            shared_available: true,
            max_keep_alive: 0,
            max_session_expiry: u32::MAX,
            max_topic_length: 65_535,
            max_topic_levels: 128,
            max_subscriptions: 1024,
        }
    }
}

/// Why a connection ends, as the protocol sees it: the DISCONNECT reason a 5.0 client is told
/// before the close (3.1.1 has no server DISCONNECT: the close alone says it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation(pub ReasonCode);

impl Violation {
    /// 0x81.
    pub const MALFORMED: Self = Self(ReasonCode::MALFORMED_PACKET);
    /// 0x82.
    pub const PROTOCOL: Self = Self(ReasonCode::PROTOCOL_ERROR);
}
