//! The connection's state machine: awaiting CONNECT → connected → closing.
//!
//! [`admit`] decides, before any handler runs, whether a packet is one the connection's
//! [`Phase`] takes: CONNECT first and only once, no server-to-client packet types, AUTH only
//! inside an enhanced-authentication exchange. Every other decision is the packet's own
//! handler's (`connect.rs`, `publish.rs`, …). A [`Close`] is the closing phase: the decision to
//! end the connection, with what it means for the Will, the DISCONNECT a 5.0 client is told
//! and whether what is queued goes out first. Once a close is decided nothing more of the
//! connection's input is read (the server drops it in the same step), so no packet is ever
//! admitted while closing.

use vireo_codec::{Packet, ProtocolVersion, ReasonCode};

use super::{Violation, auth, lifecycle};

/// Where a connection is in its life, as far as which packets it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Accepted; the first packet must be CONNECT [MQTT-3.1.0-1].
    AwaitingConnect,
    /// CONNECT accepted (CONNACK 0x00 sent).
    Connected,
}

/// Why a connection ends (the closing phase): decides whether the Will is published, which
/// DISCONNECT reason a 5.0 client is told first, and whether queued output is flushed before
/// the socket closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// The client sent DISCONNECT 0x00 (every 3.1.1 DISCONNECT): the Will is discarded
    /// [MQTT-3.14.4-3].
    Disconnect,
    /// The client sent a 5.0 DISCONNECT with another reason than 0x00: 0x04 Disconnect with
    /// Will Message, or an error; the Will is published.
    DisconnectWithWill,
    /// Peer closed the socket.
    Eof,
    /// A socket error.
    Io,
    /// Nothing heard for 1.5 x keep alive [MQTT-3.1.2-24], or no CONNECT in time.
    Timeout,
    /// A protocol violation or malformed packet, with the 5.0 DISCONNECT reason; logged with
    /// its tag where it was detected.
    Protocol(ReasonCode),
    /// A new connection took over the client id [MQTT-3.1.4-2].
    TakenOver,
    /// CONNACK refused the connection; flush it, then close.
    Refused,
    /// A client went past a hard limit, with the 5.0 DISCONNECT reason.
    Limit(ReasonCode),
    /// The broker is stopping.
    Shutdown,
}

impl Close {
    /// Why, in words, for the log line of the close.
    pub fn why(self) -> &'static str {
        match self {
            Close::Disconnect => "sent DISCONNECT",
            Close::DisconnectWithWill => "sent DISCONNECT keeping its Will",
            Close::Eof => "closed its connection",
            Close::Io => "socket error",
            Close::Timeout => "exceeded its keep alive or packet timeout",
            Close::Protocol(_) => "protocol error",
            Close::TakenOver => "taken over by a new connection",
            Close::Refused => "refused",
            Close::Limit(_) => "past a limit",
            Close::Shutdown => "broker shutting down",
        }
    }

    /// The reason code that goes with it, for a protocol error or a limit.
    pub fn code(self) -> Option<ReasonCode> {
        match self {
            Close::Protocol(code) | Close::Limit(code) => Some(code),
            _ => None,
        }
    }

    /// A protocol error: 5.0 DISCONNECT 0x82.
    pub const PROTOCOL: Self = Close::Protocol(ReasonCode::PROTOCOL_ERROR);

    /// The close a [`Violation`] calls for.
    pub const fn from_violation(v: Violation) -> Self {
        Close::Protocol(v.0)
    }

    /// Whether the Will must be published for this close [MQTT-3.1.2-8]: not after DISCONNECT
    /// [MQTT-3.14.4-3], not for a refused CONNECT, and not when the broker itself stops.
    pub fn publishes_will(self) -> bool {
        !matches!(self, Close::Disconnect | Close::Refused | Close::Shutdown)
    }

    /// The reason of the DISCONNECT a client gets before this close, if it gets one: only a
    /// 5.0 client (3.1.1 has no server DISCONNECT), only after its CONNACK [MQTT-3.14.0-1],
    /// and never after its own DISCONNECT.
    pub fn disconnect_reason(self, phase: Phase, version: ProtocolVersion) -> Option<ReasonCode> {
        if phase != Phase::Connected || !version.is_v5() {
            return None;
        }
        match self {
            Close::Protocol(r) | Close::Limit(r) => Some(r),
            Close::Timeout => Some(lifecycle::KEEP_ALIVE_EXPIRED.0),
            Close::TakenOver => Some(lifecycle::TAKEN_OVER.0),
            Close::Shutdown => Some(ReasonCode::SERVER_SHUTTING_DOWN),
            Close::Disconnect
            | Close::DisconnectWithWill
            | Close::Eof
            | Close::Io
            | Close::Refused => None,
        }
    }

    /// Whether what is queued for the client (a refusing CONNACK, a DISCONNECT, the CONNACK
    /// and acks that came before a violation) should be written, and unread input drained,
    /// before the socket closes: a close with unread input becomes a reset, which can discard
    /// what was sent. Not when the socket is gone, nor after the client's own DISCONNECT
    /// (it reads nothing more).
    pub fn flushes_first(self) -> bool {
        !matches!(
            self,
            Close::Eof | Close::Io | Close::Disconnect | Close::DisconnectWithWill
        )
    }
}

/// A packet the connection's phase does not take: close, and log `why` (with its tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inadmissible {
    /// How the connection ends.
    pub close: Close,
    /// What to log.
    pub why: &'static str,
}

/// Whether `packet` may be handled in `phase`; `Err` closes the connection.
#[inline]
pub fn admit(phase: Phase, packet: &Packet) -> Result<(), Inadmissible> {
    let refuse = |close, why| Err(Inadmissible { close, why });
    match (phase, packet) {
        (Phase::AwaitingConnect, Packet::Connect(_)) => Ok(()),
        (Phase::AwaitingConnect, _) => refuse(
            Close::PROTOCOL,
            "first packet is not CONNECT [MQTT-3.1.0-1]",
        ),
        (
            Phase::Connected,
            Packet::Publish(_)
            | Packet::PubAck(_)
            | Packet::PubRec(_)
            | Packet::PubRel(_)
            | Packet::PubComp(_)
            | Packet::Subscribe(_)
            | Packet::Unsubscribe(_)
            | Packet::PingReq
            | Packet::Disconnect(_),
        ) => Ok(()),
        (Phase::Connected, Packet::Connect(_)) => {
            refuse(Close::PROTOCOL, "second CONNECT [MQTT-3.1.0-2]")
        }
        // No enhanced authentication is ever started (no method is configured): see `auth`.
        (Phase::Connected, Packet::Auth(_)) => refuse(
            Close::from_violation(auth::on_auth_without_method()),
            "AUTH without an authentication method",
        ),
        (
            Phase::Connected,
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp,
        ) => refuse(
            Close::PROTOCOL,
            "server-bound packet type not allowed [MQTT-4.8.0-1]",
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use vireo_codec::{
        Ack, Auth, ConnAck, Connect, Disconnect, PacketId, Publish, SubAck, Subscribe, TopicName,
        Unsubscribe,
    };

    fn every_packet() -> Vec<Packet> {
        let pid = PacketId::new(1).unwrap();
        let topic = TopicName::new("t".to_owned()).unwrap();
        vec![
            Packet::Connect(Box::new(Connect::new("c"))),
            Packet::ConnAck(ConnAck::new(false, ReasonCode::SUCCESS)),
            Packet::Publish(Publish::new(topic, Vec::new())),
            Packet::PubAck(Ack::new(pid)),
            Packet::PubRec(Ack::new(pid)),
            Packet::PubRel(Ack::new(pid)),
            Packet::PubComp(Ack::new(pid)),
            Packet::Subscribe(Subscribe {
                packet_id: pid,
                properties: Default::default(),
                filters: Vec::new(),
            }),
            Packet::SubAck(SubAck::new(pid, Vec::new())),
            Packet::Unsubscribe(Unsubscribe {
                packet_id: pid,
                properties: Default::default(),
                filters: Vec::new(),
            }),
            Packet::UnsubAck(SubAck::new(pid, Vec::new())),
            Packet::PingReq,
            Packet::PingResp,
            Packet::Disconnect(Disconnect::default()),
            Packet::Auth(Auth::default()),
        ]
    }

    /// [MQTT-3.1.0-1] before CONNECT, every other packet closes the connection (0x82 is only
    /// logged: there is no CONNACK yet, so no DISCONNECT either).
    #[test]
    fn mqtt_3_1_0_1_connect_comes_first() {
        for p in every_packet() {
            let r = admit(Phase::AwaitingConnect, &p);
            if matches!(p, Packet::Connect(_)) {
                assert_eq!(r, Ok(()));
            } else {
                assert_eq!(r.unwrap_err().close, Close::PROTOCOL, "{}", p.name());
            }
        }
        assert_eq!(
            Close::PROTOCOL.disconnect_reason(Phase::AwaitingConnect, ProtocolVersion::V5),
            None
        );
    }

    /// [MQTT-3.1.0-2] a second CONNECT, [MQTT-4.8.0-1] a server-to-client packet type and
    /// an AUTH outside an exchange close a connected client with 0x82; every server-bound
    /// type is admitted.
    #[test]
    fn mqtt_3_1_0_2_connected_phase() {
        for p in every_packet() {
            let r = admit(Phase::Connected, &p);
            match p {
                Packet::Connect(_)
                | Packet::ConnAck(_)
                | Packet::SubAck(_)
                | Packet::UnsubAck(_)
                | Packet::PingResp
                | Packet::Auth(_) => {
                    assert_eq!(r.unwrap_err().close, Close::PROTOCOL, "{}", p.name())
                }
                _ => assert_eq!(r, Ok(()), "{}", p.name()),
            }
        }
    }

    /// v5 [MQTT-3.14.0-1] a DISCONNECT only after CONNACK and only to 5.0 clients;
    /// [MQTT-3.14.4-3] no Will after the client's DISCONNECT; the server's reasons (0x8D
    /// keep alive, 0x8E taken over, 0x8B shutting down); flush before close when something
    /// is owed to the client.
    #[test]
    fn v5_mqtt_3_14_0_1_closing() {
        use ProtocolVersion::{V5, V311};
        let on = Phase::Connected;
        assert_eq!(
            Close::Timeout.disconnect_reason(on, V5),
            Some(ReasonCode::KEEP_ALIVE_TIMEOUT)
        );
        assert_eq!(
            Close::TakenOver.disconnect_reason(on, V5),
            Some(ReasonCode::SESSION_TAKEN_OVER)
        );
        assert_eq!(
            Close::Shutdown.disconnect_reason(on, V5),
            Some(ReasonCode::SERVER_SHUTTING_DOWN)
        );
        assert_eq!(Close::Timeout.disconnect_reason(on, V311), None);
        assert_eq!(Close::Disconnect.disconnect_reason(on, V5), None);
        assert_eq!(Close::Eof.disconnect_reason(on, V5), None);
        assert!(!Close::Disconnect.publishes_will());
        assert!(Close::DisconnectWithWill.publishes_will());
        assert!(Close::Timeout.publishes_will());
        assert!(Close::PROTOCOL.publishes_will());
        assert!(!Close::Shutdown.publishes_will());
        assert!(Close::Refused.flushes_first());
        assert!(Close::PROTOCOL.flushes_first());
        assert!(Close::Timeout.flushes_first());
        assert!(!Close::Eof.flushes_first());
        assert!(!Close::Disconnect.flushes_first());
    }
}
