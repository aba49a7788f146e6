//! A bridge to another MQTT broker, as a state machine with no sockets: the server feeds it the
//! packets of its two connections (the local one into this broker, the remote one to the
//! other broker) and the time, and writes out what it leaves in [`Bridge::local_out`] and
//! [`Bridge::remote_out`].
//!
//! **Acknowledged means forwarded.** A QoS 1/2 message crossing the bridge is acknowledged to
//! the side it came from only once the other side has acknowledged it (PUBACK, or PUBREC for
//! QoS 2), so the bridge holds nothing the two brokers do not also hold: while the remote is
//! away, local messages wait in the bridge's local session (the broker's own queue, bounded
//! by `max_queued_messages`), and at most [`BridgeSpec::max_inflight`] of them here.
//!
//! **Loops.** A rule forwarding `both` ways would send a message back where it came from.
//! Both connections subscribe with No Local (5.0), so neither broker returns what the bridge
//! itself published; a 3.1.1 remote is told it is talking to a bridge by the protocol level's
//! top bit (Mosquitto's `try_private`), which Mosquitto honours the same way.
//!
//! Layout: `rules` (topic patterns, directions, prefixes), `backoff` (reconnect delays), this
//! file (the two connections' protocol).

mod backoff;
mod rules;

pub use backoff::Backoff;
pub use rules::{Direction, RuleError, TopicRule, route_in, route_out};

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use vireo_codec::{
    Ack, Bytes, BytesMut, ConnAck, Connect, Disconnect, FixedHeader, Packet, PacketId, Properties,
    Property, ProtocolVersion, Publish, QoS, QosPid, ReasonCode, Subscribe, SubscriptionOptions,
    TopicName,
};

use crate::protocol::{Limits, publish as inbound};

/// Client ids of the bridges' local connections start with this; other clients may not use
/// them (the server refuses such a CONNECT), so nobody can take a bridge's session over.
pub const LOCAL_CLIENT_PREFIX: &str = "$bridge/";

/// Property ids a forwarded PUBLISH must not carry: each hop has its own aliases and
/// subscription identifiers.
const TOPIC_ALIAS: u8 = 0x23;
const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;

/// Bytes waiting to be written to one side past which a QoS 0 message for it is dropped
/// (counted): QoS 0 has no window, so without this a slow side would make the bridge buffer
/// without bound. QoS 1/2 are bounded by the windows. The remote's socket is also left
/// unread while this much waits for the local broker; the local one is always read, so the
/// two brokers' back-pressure can never wait on each other in a cycle.
pub const BUFFER_LIMIT: usize = 256 * 1024;

/// What a bridge is, as configured.
#[derive(Clone)]
pub struct BridgeSpec {
    /// Its name, in logs and metrics, and in the local client id.
    pub name: String,
    /// The protocol spoken to the remote broker (3.1.1 or 5.0).
    pub remote_version: ProtocolVersion,
    /// 3.1.1: set the protocol level's top bit, telling the remote it is a bridge.
    pub try_private: bool,
    /// The client id it connects to the remote with.
    pub client_id: String,
    /// Clean Session (3.1.1) / Clean Start with no session expiry (5.0) on the remote.
    pub clean_session: bool,
    /// Keep alive towards the remote, in seconds (0: none).
    pub keep_alive: u16,
    /// Credentials for the remote.
    pub username: Option<String>,
    /// See `username`; never printed (`Debug` leaves it out).
    pub password: Option<Bytes>,
    /// What crosses, in order: the first rule that matches a topic names it on the other side.
    pub rules: Vec<TopicRule>,
    /// QoS 1/2 messages in flight per direction: also the Receive Maximum it asks of both
    /// brokers, which bounds what it holds.
    pub max_inflight: u16,
    /// How long the remote has to answer CONNECT.
    pub connect_timeout: Duration,
    /// Reconnect delays (see [`Backoff`]).
    pub reconnect_min: Duration,
    /// See `reconnect_min`.
    pub reconnect_max: Duration,
    /// The largest packet the local broker takes: asked of a 5.0 remote as its Maximum
    /// Packet Size, so nothing comes in that could not be published here.
    pub maximum_packet_size: u32,
    /// The local broker's `max_topic_length` and `max_topic_levels` (its CONNACK does not say
    /// them): a remote message whose topic is over either is dropped, not published into a
    /// refusal.
    pub max_topic_length: usize,
    /// See `max_topic_length`.
    pub max_topic_levels: usize,
}

impl fmt::Debug for BridgeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BridgeSpec")
            .field("name", &self.name)
            .field("remote_version", &self.remote_version)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("rules", &self.rules.len())
            .finish_non_exhaustive()
    }
}

impl BridgeSpec {
    /// The client id of its local connection.
    pub fn local_client_id(&self) -> String {
        format!("{LOCAL_CLIENT_PREFIX}{}", self.name)
    }
}

/// Why the remote connection ends (or never came up).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Lost {
    /// No CONNACK within `connect_timeout`.
    #[error("no CONNACK within the connect timeout")]
    ConnackTimeout,
    /// No PINGRESP within the keep alive.
    #[error("no PINGRESP within the keep alive")]
    KeepAliveTimeout,
    /// The remote refused the CONNECT.
    #[error("CONNECT refused with {0:?}")]
    Refused(ReasonCode),
    /// The remote sent DISCONNECT (5.0).
    #[error("remote sent DISCONNECT {0:?}")]
    Disconnected(ReasonCode),
    /// The remote broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
}

/// What the server must do with the remote connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open it (TCP, then TLS if configured) and send `remote_out`, which holds the CONNECT.
    Connect,
    /// Close it, then call [`Bridge::remote_lost`].
    Close(Lost),
}

/// The local connection broke the protocol or went away: the bridge cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("local connection: {0}")]
pub struct LocalError(pub &'static str);

/// Counters for the metrics and `$SYS`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BridgeStats {
    /// Messages published to the remote (and acknowledged there, for QoS 1/2).
    pub forwarded_out: u64,
    /// Messages published locally (and acknowledged, for QoS 1/2).
    pub forwarded_in: u64,
    /// Messages not forwarded: QoS 0 while the remote was away, refused by the other side, too
    /// large for it, or matched by no rule.
    pub dropped: u64,
}

/// The remote connection's state; each variant holds what is valid in it.
#[derive(Debug)]
enum Remote {
    /// Not connected; the next attempt is due at `retry_at`.
    Down { retry_at: Instant },
    /// CONNECT sent (or about to be); CONNACK due by `deadline`.
    Connecting { deadline: Instant },
    /// Accepted.
    Up(Up),
}

#[derive(Debug)]
struct Up {
    last_sent: Instant,
    last_received: Instant,
    ping_sent: Option<Instant>,
    /// Ours, or the Server Keep Alive of its CONNACK [MQTT-3.2.2-21].
    keep_alive: Option<Duration>,
    /// QoS 1/2 PUBLISHes it may have in flight: our `max_inflight` or its Receive Maximum.
    window: usize,
    /// What its 5.0 CONNACK allows.
    maximum_qos: QoS,
    retain_available: bool,
    maximum_packet_size: usize,
}

/// The local connection once its CONNACK came: what the broker allows.
#[derive(Debug)]
struct LocalUp {
    /// QoS 1/2 PUBLISHes it takes in flight (its Receive Maximum).
    window: usize,
    /// Its limits from the CONNACK, with `max_topic_*` from the spec: a remote message is
    /// fitted to them (QoS lowered, retain cleared) or dropped before it is published.
    limits: Limits,
    /// Its Server Keep Alive (set when the broker has a `max_keepalive`): PINGREQ when quiet.
    keep_alive: Option<Duration>,
    last_sent: Instant,
}

/// How a message that came from one side is acknowledged there once the other side took it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SourceAck {
    None,
    PubAck(PacketId),
    PubRec(PacketId),
}

impl SourceAck {
    fn of(qos: QosPid) -> Self {
        match qos {
            QosPid::AtMostOnce => Self::None,
            QosPid::AtLeastOnce(id) => Self::PubAck(id),
            QosPid::ExactlyOnce(id) => Self::PubRec(id),
        }
    }

    fn packet(self) -> Option<Packet> {
        match self {
            Self::None => None,
            Self::PubAck(id) => Some(Packet::PubAck(Ack::new(id))),
            Self::PubRec(id) => Some(Packet::PubRec(Ack::new(id))),
        }
    }
}

/// A local message on its way out.
#[derive(Debug)]
struct OutMsg {
    seq: u64,
    publish: Publish,
    local: SourceAck,
    /// The local connection it came in: acknowledged only to that one.
    local_session: u64,
    /// QoS 2 at the remote: PUBREC came, PUBREL sent, PUBCOMP awaited.
    released: bool,
}

/// A remote message on its way in.
#[derive(Debug)]
struct InMsg {
    seq: u64,
    publish: Publish,
    remote: SourceAck,
    /// The remote session it came in: acknowledged only to that one.
    session: u64,
    /// Published locally at QoS 2 and PUBREC came: PUBREL sent, PUBCOMP awaited.
    released: bool,
}

/// One bridge: both connections' protocol state.
#[derive(Debug)]
pub struct Bridge {
    spec: BridgeSpec,
    remote: Remote,
    backoff: Backoff,
    /// Bumped each time the remote starts a new session (CONNACK without Session Present).
    remote_session: u64,
    remote_next_id: u16,
    remote_suback: Option<PacketId>,
    /// `Some` once the local CONNACK came.
    local: Option<LocalUp>,
    /// Bumped each time the local connection is made again.
    local_session: u64,
    /// The local subscriptions are in place (SUBACK): only then is the remote connected, so
    /// nothing that arrives there could have been missed here.
    local_ready: bool,
    local_next_id: u16,
    next_seq: u64,
    /// Local messages not yet sent to the remote, oldest first.
    out_queue: VecDeque<OutMsg>,
    /// Sent to the remote and not yet acknowledged there, by remote packet id.
    out_inflight: HashMap<u16, OutMsg>,
    /// Ids in `out_inflight` a kept remote session still has to be sent again, oldest first:
    /// they go as its window allows, which may be smaller than before the reconnect.
    out_resend: VecDeque<u16>,
    /// Remote messages not yet published locally, oldest first.
    in_queue: VecDeque<InMsg>,
    /// Published locally and not yet acknowledged, by local packet id.
    in_inflight: HashMap<u16, InMsg>,
    /// Remote QoS 2 ids accepted (PUBREC sent) and not yet released: a re-sent PUBLISH with
    /// one of these is a duplicate [MQTT-4.3.3-9].
    in_received: HashSet<u16>,
    /// Remote QoS 2 ids taken and not yet acknowledged: a re-send is not delivered twice.
    in_taking: HashSet<u16>,
    stats: BridgeStats,
    /// Whether a message dropped for the local broker's limits was logged at warn level
    /// (the first is; the rest are counted).
    warned_local_drop: bool,
    /// Bytes for the local connection.
    pub local_out: BytesMut,
    /// Bytes for the remote connection.
    pub remote_out: BytesMut,
}

impl Bridge {
    /// A bridge that will connect at `now`.
    pub fn new(spec: BridgeSpec, now: Instant) -> Self {
        let backoff = Backoff::new(spec.reconnect_min, spec.reconnect_max);
        Self {
            spec,
            remote: Remote::Down { retry_at: now },
            backoff,
            remote_session: 0,
            remote_next_id: 0,
            remote_suback: None,
            local: None,
            local_session: 0,
            local_ready: false,
            local_next_id: 0,
            next_seq: 0,
            out_queue: VecDeque::new(),
            out_inflight: HashMap::new(),
            out_resend: VecDeque::new(),
            in_queue: VecDeque::new(),
            in_inflight: HashMap::new(),
            in_received: HashSet::new(),
            in_taking: HashSet::new(),
            stats: BridgeStats::default(),
            warned_local_drop: false,
            local_out: BytesMut::new(),
            remote_out: BytesMut::new(),
        }
    }

    /// Its configuration.
    pub fn spec(&self) -> &BridgeSpec {
        &self.spec
    }

    /// Its counters.
    pub fn stats(&self) -> BridgeStats {
        self.stats
    }

    /// Whether the remote has accepted the connection.
    pub fn is_up(&self) -> bool {
        matches!(self.remote, Remote::Up(_))
    }

    /// Whether the server should read more from the remote: a 3.1.1 remote has no Receive
    /// Maximum to respect, so the bridge stops reading once a window's worth waits locally.
    /// It also stops while [`BUFFER_LIMIT`] bytes wait for the local connection.
    pub fn wants_remote_input(&self) -> bool {
        self.in_queue.len() < usize::from(self.spec.max_inflight)
            && self.local_out.len() < BUFFER_LIMIT
    }

    /// The CONNECT of the local connection (handed to the broker directly, not as bytes):
    /// 5.0, a reserved client id, no keep alive (it is in-process), and a Receive Maximum of
    /// `max_inflight`, so the broker's own session queue holds what waits for the remote.
    pub fn local_connect(&self) -> Connect {
        let mut c = Connect::new(self.spec.local_client_id());
        c.protocol = ProtocolVersion::V5;
        c.keep_alive = 0;
        c.properties
            .push(Property::ReceiveMaximum(self.spec.max_inflight));
        // The broker's own limit: a message that grew on its way out (a topic alias
        // resolved, a 3.1.1 PUBLISH given its property length) is dropped by the broker
        // [MQTT-3.1.2-25] instead of reaching a bridge that could not decode it.
        c.properties
            .push(Property::MaximumPacketSize(self.spec.maximum_packet_size));
        c
    }

    /// When [`Bridge::tick`] next has something to do.
    pub fn next_deadline(&self) -> Instant {
        let remote = self.remote_deadline();
        match self
            .local
            .as_ref()
            .and_then(|l| Some(l.last_sent + l.keep_alive?))
        {
            Some(ping) => ping.min(remote),
            None => remote,
        }
    }

    fn remote_deadline(&self) -> Instant {
        match &self.remote {
            // Nothing to time until the local side is ready: its SUBACK is an event.
            Remote::Down { retry_at } if self.local_ready => *retry_at,
            Remote::Down { retry_at } => *retry_at + Duration::from_secs(3600),
            Remote::Connecting { deadline } => *deadline,
            Remote::Up(up) => {
                let far = up.last_received + Duration::from_secs(3600);
                match up.keep_alive {
                    None => far,
                    Some(ka) => match up.ping_sent {
                        Some(sent) => sent + ka,
                        None => up.last_sent.min(up.last_received) + ka,
                    },
                }
            }
        }
    }

    /// Runs the timers: a reconnect that is due, a CONNACK or PINGRESP that is late, a PINGREQ
    /// to send.
    pub fn tick(&mut self, now: Instant) -> Option<Action> {
        if let Some(local) = &self.local
            && let Some(ka) = local.keep_alive
            && now >= local.last_sent + ka
        {
            // The broker holds the bridge to its `max_keepalive` like any client.
            self.send_local(&Packet::PingReq, now);
        }
        // Not judged while its socket is left unread: the PINGRESP may be waiting there.
        let reading = self.wants_remote_input();
        match &mut self.remote {
            Remote::Down { retry_at } if self.local_ready && now >= *retry_at => {
                self.remote = Remote::Connecting {
                    deadline: now + self.spec.connect_timeout,
                };
                self.remote_out.clear();
                self.write_connect();
                Some(Action::Connect)
            }
            Remote::Connecting { deadline } if now >= *deadline => {
                Some(Action::Close(Lost::ConnackTimeout))
            }
            Remote::Up(up) => {
                let ka = up.keep_alive?;
                match up.ping_sent {
                    Some(sent) if reading && now >= sent + ka => {
                        Some(Action::Close(Lost::KeepAliveTimeout))
                    }
                    None if now >= up.last_sent.min(up.last_received) + ka => {
                        up.ping_sent = Some(now);
                        self.send_remote(&Packet::PingReq, now);
                        None
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// The remote connection closed, failed to open, or was closed on an [`Action::Close`]:
    /// the next attempt waits a backoff delay (`jitter` in `[0, 1]`, the caller's random
    /// draw). What is in flight is sent again once it is back.
    pub fn remote_lost(&mut self, now: Instant, jitter: f64) -> Duration {
        let delay = self.backoff.fail(jitter);
        self.remote = Remote::Down {
            retry_at: now + delay,
        };
        self.remote_out.clear();
        self.remote_suback = None;
        self.out_resend.clear();
        delay
    }

    /// The local connection broke (the broker closed it): the server makes a new one and
    /// sends [`Bridge::local_connect`] again. That is a new local session, so what the
    /// broker had not yet acknowledged is published to it again, as new messages, and what
    /// came from the old one is no longer acknowledged there (the broker forgot it).
    pub fn local_lost(&mut self) {
        self.local = None;
        self.local_ready = false;
        self.local_session += 1;
        self.local_out.clear();
        let mut inflight: Vec<InMsg> = self
            .in_inflight
            .drain()
            .map(|(_, m)| m)
            // A QoS 2 message the broker sent PUBREC for is routed there already.
            .filter(|m| !m.released)
            .collect();
        inflight.sort_by_key(|m| m.seq);
        for msg in inflight.into_iter().rev() {
            self.in_queue.push_front(msg);
        }
    }

    /// Says goodbye to the remote (DISCONNECT, normal) before the server closes both.
    pub fn shutdown(&mut self, now: Instant) {
        if self.is_up() {
            self.send_remote(
                &Packet::Disconnect(Disconnect::new(ReasonCode::SUCCESS)),
                now,
            );
        }
    }

    /// A packet from the local broker.
    pub fn on_local(&mut self, packet: Packet, now: Instant) -> Result<(), LocalError> {
        match packet {
            Packet::ConnAck(ack) => self.on_local_connack(&ack, now),
            Packet::Publish(p) => {
                self.on_local_publish(p, now);
                Ok(())
            }
            Packet::PubAck(a) | Packet::PubComp(a) => {
                self.on_local_done(&a, now);
                Ok(())
            }
            Packet::PubRec(a) => {
                self.on_local_pubrec(&a, now);
                Ok(())
            }
            Packet::PubRel(a) => {
                // The local half of an outbound QoS 2 exchange: the message was forwarded
                // before its PUBREC went back, so the release completes at once.
                self.send_local(&Packet::PubComp(Ack::new(a.packet_id)), now);
                Ok(())
            }
            Packet::SubAck(ack) => {
                self.local_ready = true;
                let filters = self.spec.rules.iter().filter(|r| r.direction().out());
                for (rule, code) in filters.zip(&ack.codes) {
                    if code.is_error() {
                        tracing::warn!(bridge = %self.spec.name, filter = %rule.local_filter(), ?code, "local subscription refused");
                    }
                }
                Ok(())
            }
            Packet::PingResp => Ok(()),
            Packet::Disconnect(_) => Err(LocalError("the broker closed the bridge")),
            _ => Err(LocalError("unexpected packet")),
        }
    }

    /// A packet from the remote broker. `Err`: close the connection, then call
    /// [`Bridge::remote_lost`].
    pub fn on_remote(&mut self, packet: Packet, now: Instant) -> Result<(), Lost> {
        let connecting = matches!(self.remote, Remote::Connecting { .. });
        match &mut self.remote {
            Remote::Up(up) => {
                up.last_received = now;
            }
            Remote::Connecting { .. } if matches!(packet, Packet::ConnAck(_)) => {}
            _ => return Err(Lost::Protocol("a packet before CONNACK")),
        }
        match packet {
            Packet::ConnAck(ack) if connecting => self.on_remote_connack(ack, now),
            Packet::Publish(p) => self.on_remote_publish(p, now),
            Packet::PubAck(a) => {
                self.on_remote_ack(&a, false, now);
                Ok(())
            }
            Packet::PubRec(a) => {
                self.on_remote_ack(&a, true, now);
                Ok(())
            }
            Packet::PubComp(a) => {
                self.on_remote_pubcomp(&a, now);
                Ok(())
            }
            Packet::PubRel(a) => {
                let known = self.in_received.remove(&a.packet_id.get());
                let mut comp = Ack::new(a.packet_id);
                if !known {
                    comp.reason = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
                }
                self.send_remote(&Packet::PubComp(comp), now);
                Ok(())
            }
            Packet::SubAck(ack) => {
                if self.remote_suback == Some(ack.packet_id) {
                    self.remote_suback = None;
                    let filters = self.spec.rules.iter().filter(|r| r.direction().inward());
                    for (rule, code) in filters.zip(&ack.codes) {
                        if code.is_error() {
                            tracing::warn!(bridge = %self.spec.name, filter = %rule.remote_filter(), ?code, "remote subscription refused");
                        }
                    }
                }
                Ok(())
            }
            Packet::PingResp => {
                if let Remote::Up(up) = &mut self.remote {
                    up.ping_sent = None;
                }
                Ok(())
            }
            Packet::Disconnect(d) => Err(Lost::Disconnected(d.reason)),
            _ => Err(Lost::Protocol("a packet a server does not send")),
        }
    }

    fn write_connect(&mut self) {
        let spec = &self.spec;
        let mut c = Connect::new(spec.client_id.as_str());
        c.protocol = spec.remote_version;
        c.clean_start = spec.clean_session;
        c.keep_alive = spec.keep_alive;
        c.username = spec.username.as_deref().map(Into::into);
        c.password = spec.password.clone();
        if spec.remote_version.is_v5() {
            c.properties
                .push(Property::ReceiveMaximum(spec.max_inflight.max(1)));
            c.properties
                .push(Property::MaximumPacketSize(spec.maximum_packet_size));
            if !spec.clean_session {
                // A persistent session, as Clean Session 0 is in 3.1.1.
                c.properties.push(Property::SessionExpiryInterval(u32::MAX));
            }
        }
        c.bridge = spec.try_private;
        // The configuration was validated: nothing here is too long to encode.
        let _ = Packet::Connect(Box::new(c)).encode(spec.remote_version, &mut self.remote_out);
    }

    fn on_local_connack(&mut self, ack: &ConnAck, now: Instant) -> Result<(), LocalError> {
        if ack.code.is_error() {
            return Err(LocalError("the broker refused the bridge's CONNECT"));
        }
        let props = &ack.properties;
        let (receive_maximum, maximum_qos, retain_available, maximum_packet_size) =
            connack_limits(props);
        let keep_alive = props.find(|p| match p {
            Property::ServerKeepAlive(n) => Some(n),
            _ => None,
        });
        let limits = Limits {
            maximum_qos,
            retain_available,
            maximum_packet_size: u32::try_from(maximum_packet_size).unwrap_or(u32::MAX),
            max_topic_length: self.spec.max_topic_length,
            max_topic_levels: self.spec.max_topic_levels,
            ..Limits::default()
        };
        self.local = Some(LocalUp {
            window: usize::from(receive_maximum.max(1)),
            limits,
            keep_alive: keep_alive.and_then(keep_alive_of),
            last_sent: now,
        });
        let filters: Vec<_> = self
            .spec
            .rules
            .iter()
            .filter(|r| r.direction().out())
            .map(|r| (r.local_filter().into(), bridge_options(r.qos())))
            .collect();
        if filters.is_empty() {
            self.local_ready = true;
        } else {
            self.send_local(
                &Packet::Subscribe(Subscribe {
                    packet_id: PacketId::MIN,
                    properties: Properties::new(),
                    filters,
                }),
                now,
            );
        }
        self.pump_in(now);
        Ok(())
    }

    fn on_local_publish(&mut self, p: Publish, now: Instant) {
        let local = SourceAck::of(p.qos);
        let local_session = self.local_session;
        let Some((_, topic)) = route_out(&self.spec.rules, &p.topic) else {
            // Subscribed through a rule, so this does not happen; acknowledged all the same.
            self.stats.dropped += 1;
            self.ack_local(local, local_session, now);
            return;
        };
        let Ok(topic) = TopicName::new(topic) else {
            self.stats.dropped += 1;
            self.ack_local(local, local_session, now);
            return;
        };
        let publish = Publish {
            dup: false,
            qos: p.qos,
            retain: p.retain,
            topic,
            properties: p
                .properties
                .without(|id| id == TOPIC_ALIAS || id == SUBSCRIPTION_IDENTIFIER),
            payload: p.payload,
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let msg = OutMsg {
            seq,
            publish,
            local,
            local_session,
            released: false,
        };
        if local == SourceAck::None {
            if self.is_up() {
                self.send_out(msg, now);
            } else {
                self.stats.dropped += 1; // QoS 0 is not kept for an absent remote
            }
            return;
        }
        self.out_queue.push_back(msg);
        self.pump_out(now);
    }

    /// Sends what a kept remote session is owed again, then queued local messages, while
    /// the remote's window has room.
    fn pump_out(&mut self, now: Instant) {
        loop {
            let Remote::Up(up) = &self.remote else {
                return;
            };
            if self.out_inflight.len() - self.out_resend.len() >= up.window {
                return;
            }
            if let Some(id) = self.out_resend.pop_front() {
                self.resend(id, now);
                continue;
            }
            let Some(msg) = self.out_queue.pop_front() else {
                return;
            };
            if !self.send_out(msg, now) {
                return;
            }
        }
    }

    /// Sends an unacknowledged message again to the session that has it, with its id:
    /// PUBLISH with DUP set, or PUBREL once PUBREC came [MQTT-4.4.0-1].
    fn resend(&mut self, id: u16, now: Instant) {
        let Some(msg) = self.out_inflight.get_mut(&id) else {
            return;
        };
        if msg.released {
            if let Some(pid) = PacketId::new(id) {
                self.send_remote(&Packet::PubRel(Ack::new(pid)), now);
            }
        } else {
            msg.publish.dup = true;
            if encode_publish(&msg.publish, self.spec.remote_version, &mut self.remote_out) {
                self.touch_remote(now);
            }
        }
    }

    /// Sends one local message to the (connected) remote, within what its CONNACK allows.
    /// `false`: no packet id is free; it waits at the front of the queue.
    fn send_out(&mut self, mut msg: OutMsg, now: Instant) -> bool {
        let Remote::Up(up) = &self.remote else {
            return true;
        };
        let qos = msg.publish.qos().min(up.maximum_qos);
        if !up.retain_available {
            msg.publish.retain = false;
        }
        let version = self.spec.remote_version;
        let too_large =
            msg.publish.header_len(version) + msg.publish.payload.len() > up.maximum_packet_size;
        if too_large {
            tracing::warn!(bridge = %self.spec.name, topic = %msg.publish.topic, "message larger than the remote's Maximum Packet Size: dropped");
            self.stats.dropped += 1;
            self.ack_local(msg.local, msg.local_session, now);
            return true;
        }
        if qos == QoS::AtMostOnce {
            if self.remote_out.len() >= BUFFER_LIMIT {
                self.stats.dropped += 1; // the remote is not keeping up: QoS 0 may be lost
                self.ack_local(msg.local, msg.local_session, now);
                return true;
            }
            msg.publish.qos = QosPid::AtMostOnce;
            self.send_remote_publish(&msg.publish, now);
            self.stats.forwarded_out += 1;
            self.ack_local(msg.local, msg.local_session, now);
            return true;
        }
        let Some(id) = free_id(&mut self.remote_next_id, |id| {
            self.out_inflight.contains_key(&id) || self.remote_suback.is_some_and(|s| s.get() == id)
        }) else {
            self.out_queue.push_front(msg);
            return false;
        };
        msg.publish.qos = QosPid::new(qos, id);
        msg.publish.dup = false;
        self.send_remote_publish(&msg.publish, now);
        self.out_inflight.insert(id.get(), msg);
        true
    }

    /// PUBACK (`rec` false) or PUBREC from the remote for a message sent out.
    fn on_remote_ack(&mut self, a: &Ack, rec: bool, now: Instant) {
        let id = a.packet_id.get();
        let Some(msg) = self.out_inflight.get_mut(&id) else {
            return; // a stale or duplicate ack: nothing to do
        };
        if msg.released || rec != (msg.publish.qos() == QoS::ExactlyOnce) {
            return;
        }
        if a.reason.is_error() {
            tracing::warn!(bridge = %self.spec.name, topic = %msg.publish.topic, reason = ?a.reason, "remote refused a forwarded message");
            self.stats.dropped += 1;
        } else if rec {
            // Acknowledged locally only at PUBCOMP: if the remote's session is lost before
            // that, the message is sent again as new instead of lost with it.
            msg.released = true;
            self.send_remote(&Packet::PubRel(Ack::new(a.packet_id)), now);
            return;
        } else {
            self.stats.forwarded_out += 1;
        }
        self.out_done(id, now);
    }

    /// PUBCOMP from the remote.
    fn on_remote_pubcomp(&mut self, a: &Ack, now: Instant) {
        let id = a.packet_id.get();
        if self.out_inflight.get(&id).is_some_and(|m| m.released) {
            self.stats.forwarded_out += 1;
            self.out_done(id, now);
        }
    }

    /// A message out is done at the remote: acknowledged locally, its id free.
    fn out_done(&mut self, id: u16, now: Instant) {
        if let Some(msg) = self.out_inflight.remove(&id) {
            self.ack_local(msg.local, msg.local_session, now);
        }
        self.pump_out(now);
    }

    /// Acknowledges a local message, if the local connection it came in is still the one.
    fn ack_local(&mut self, ack: SourceAck, session: u64, now: Instant) {
        if session != self.local_session || self.local.is_none() {
            return; // a new local session has forgotten it
        }
        if let Some(p) = ack.packet() {
            self.send_local(&p, now);
        }
    }

    fn on_remote_connack(&mut self, ack: ConnAck, now: Instant) -> Result<(), Lost> {
        if ack.code.is_error() {
            return Err(Lost::Refused(ack.code));
        }
        let props = &ack.properties;
        let (receive_maximum, maximum_qos, retain_available, maximum_packet_size) =
            connack_limits(props);
        let server_keep_alive = props.find(|p| match p {
            Property::ServerKeepAlive(n) => Some(n),
            _ => None,
        });
        self.remote = Remote::Up(Up {
            last_sent: now,
            last_received: now,
            ping_sent: None,
            // [MQTT-3.2.2-21] the Server Keep Alive replaces the one we asked for.
            keep_alive: keep_alive_of(server_keep_alive.unwrap_or(self.spec.keep_alive)),
            window: usize::from(receive_maximum.min(self.spec.max_inflight).max(1)),
            maximum_qos,
            retain_available,
            maximum_packet_size,
        });
        self.backoff.succeeded();
        tracing::info!(bridge = %self.spec.name, session_present = ack.session_present, "bridge connected");
        let mut inflight: Vec<OutMsg> = self.out_inflight.drain().map(|(_, m)| m).collect();
        inflight.sort_by_key(|m| m.seq);
        self.out_resend.clear();
        if ack.session_present {
            // The remote kept the session: what it has not acknowledged goes again, with the
            // same ids, as its (possibly smaller) window allows [MQTT-4.4.0-1].
            for msg in inflight {
                let Some(id) = msg.publish.qos.packet_id() else {
                    continue;
                };
                self.out_resend.push_back(id.get());
                self.out_inflight.insert(id.get(), msg);
            }
        } else {
            // A new session has none of it, not even what it sent PUBREC for (that is
            // acknowledged locally only at PUBCOMP): all of it goes again, first, as new.
            self.remote_session += 1;
            self.in_received.clear();
            self.in_taking.clear();
            for mut msg in inflight.into_iter().rev() {
                msg.released = false;
                self.out_queue.push_front(msg);
            }
        }
        self.subscribe_remote(now);
        self.pump_out(now);
        Ok(())
    }

    fn subscribe_remote(&mut self, now: Instant) {
        let filters: Vec<_> = self
            .spec
            .rules
            .iter()
            .filter(|r| r.direction().inward())
            .map(|r| (r.remote_filter().into(), bridge_options(r.qos())))
            .collect();
        if filters.is_empty() {
            return;
        }
        let Some(id) = free_id(&mut self.remote_next_id, |id| {
            self.out_inflight.contains_key(&id)
        }) else {
            return;
        };
        self.remote_suback = Some(id);
        let subscribe = Subscribe {
            packet_id: id,
            properties: Properties::new(),
            filters,
        };
        self.send_remote(&Packet::Subscribe(subscribe), now);
    }

    fn on_remote_publish(&mut self, p: Publish, now: Instant) -> Result<(), Lost> {
        let alias = p.properties.find(|p| match p {
            Property::TopicAlias(a) => Some(a),
            _ => None,
        });
        if p.topic.is_empty() || alias.is_some() {
            // No Topic Alias Maximum was offered [MQTT-3.3.2-9 for the other direction].
            return Err(Lost::Protocol("a topic alias that was not offered"));
        }
        let remote = SourceAck::of(p.qos);
        if let SourceAck::PubRec(id) = remote
            && self.in_received.contains(&id.get())
        {
            // Already taken: only the PUBREC went missing [MQTT-4.3.3-9].
            self.send_remote(&Packet::PubRec(Ack::new(id)), now);
            return Ok(());
        }
        if let Some(id) = p.qos.packet_id()
            && !self.in_taking.insert(id.get())
        {
            return Ok(()); // a re-send of one still on its way in: its ack will follow
        }
        let topic = route_in(&self.spec.rules, &p.topic).and_then(|(_, t)| TopicName::new(t).ok());
        let Some(topic) = topic else {
            self.stats.dropped += 1;
            self.ack_remote(remote, self.remote_session, now);
            return Ok(());
        };
        let publish = Publish {
            dup: false,
            qos: p.qos,
            retain: p.retain,
            topic,
            properties: p.properties.without(|id| id == SUBSCRIPTION_IDENTIFIER),
            payload: p.payload,
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut msg = InMsg {
            seq,
            publish,
            remote,
            session: self.remote_session,
            released: false,
        };
        if remote == SourceAck::None {
            if self.local.is_some()
                && self.local_out.len() < BUFFER_LIMIT
                && self.fit_local(&mut msg.publish)
            {
                self.send_local(&Packet::Publish(msg.publish), now);
                self.stats.forwarded_in += 1;
            } else {
                self.stats.dropped += 1;
            }
            return Ok(());
        }
        self.in_queue.push_back(msg);
        self.pump_in(now);
        Ok(())
    }

    /// A packet from the remote too large for `max_packet_size`, whose start is in `buf`:
    /// a 3.1.1 remote was never told the limit, so a PUBLISH is acknowledged and dropped
    /// (closing would only bring it again, for ever); a 5.0 remote broke the Maximum Packet
    /// Size we sent [MQTT-3.1.2-24]. `Ok(Some(n))`: skip the packet's `n` bytes (the server
    /// does, as they come); `Ok(None)`: more of `buf` is needed first.
    pub fn remote_oversized(&mut self, buf: &[u8], now: Instant) -> Result<Option<usize>, Lost> {
        let too_large = Lost::Protocol("a packet over the Maximum Packet Size");
        if self.spec.remote_version.is_v5() || !self.is_up() {
            return Err(too_large);
        }
        let Ok(Some(header)) = FixedHeader::parse(buf) else {
            return Err(too_large);
        };
        let qos = (header.first_byte >> 1) & 3;
        if header.first_byte >> 4 != 3 || qos == 3 {
            return Err(too_large);
        }
        let body = &buf[header.header_len..];
        let Some(topic_len) = body
            .get(..2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        else {
            return Ok(None);
        };
        if 2 + topic_len + if qos == 0 { 0 } else { 2 } > header.remaining_len {
            return Err(Lost::Protocol("a PUBLISH shorter than its topic"));
        }
        let id = if qos == 0 {
            None
        } else {
            let Some(b) = body.get(2 + topic_len..4 + topic_len) else {
                return Ok(None);
            };
            let Some(id) = PacketId::new(u16::from_be_bytes([b[0], b[1]])) else {
                return Err(Lost::Protocol("PUBLISH with packet id 0"));
            };
            Some(id)
        };
        let remote = match (qos, id) {
            (1, Some(id)) => SourceAck::PubAck(id),
            (2, Some(id)) => SourceAck::PubRec(id),
            _ => SourceAck::None,
        };
        if !self.warned_local_drop {
            self.warned_local_drop = true;
            tracing::warn!(bridge = %self.spec.name, size = header.packet_len(), "a remote message over max_packet_size: dropped and acknowledged (further drops are counted, not logged)");
        }
        self.stats.dropped += 1;
        if let SourceAck::PubRec(id) = remote
            && self.in_taking.contains(&id.get())
        {
            // A re-send of one on its way in after all: its PUBREC will follow.
        } else {
            self.ack_remote(remote, self.remote_session, now);
        }
        Ok(Some(header.packet_len()))
    }

    /// Fits a remote message to what the local broker takes: its QoS lowered to the
    /// broker's Maximum QoS and its retain flag cleared where retain is not available, as a
    /// broker does for its subscribers. `false`: the broker would refuse it (too large, its
    /// topic too long or deep, a payload that is not the UTF-8 its format indicator says),
    /// so it is dropped, not published into a refusal that would close the bridge.
    fn fit_local(&mut self, p: &mut Publish) -> bool {
        let Some(local) = &self.local else {
            return false;
        };
        let limits = &local.limits;
        if p.qos() > limits.maximum_qos {
            p.qos = match limits.maximum_qos {
                QoS::AtMostOnce => QosPid::AtMostOnce,
                qos => QosPid::new(qos, p.qos.packet_id().unwrap_or(PacketId::MIN)),
            };
        }
        if !limits.retain_available {
            p.retain = false;
        }
        let why = if p.header_len(ProtocolVersion::V5) + p.payload.len()
            > limits.maximum_packet_size as usize
        {
            "larger than the local max_packet_size"
        } else if !inbound::topic_within_limits(&p.topic, limits) {
            "topic over the local max_topic_length or max_topic_levels"
        } else if !inbound::payload_format_valid(&p.properties, &p.payload) {
            "payload format indicator says UTF-8 and the payload is not"
        } else if inbound::check(p, ProtocolVersion::V5, limits).is_err() {
            "properties the local broker refuses"
        } else {
            return true;
        };
        if self.warned_local_drop {
            tracing::debug!(bridge = %self.spec.name, topic = %p.topic, why, "remote message dropped");
        } else {
            self.warned_local_drop = true;
            tracing::warn!(bridge = %self.spec.name, topic = %p.topic, why, "remote message dropped (further drops are counted, not logged)");
        }
        false
    }

    /// Publishes queued remote messages locally while the broker's window has room.
    fn pump_in(&mut self, now: Instant) {
        loop {
            let Some(window) = self.local.as_ref().map(|l| l.window) else {
                return;
            };
            if self.in_inflight.len() >= window {
                return;
            }
            let Some(mut msg) = self.in_queue.pop_front() else {
                return;
            };
            if !self.fit_local(&mut msg.publish) {
                self.stats.dropped += 1;
                self.ack_remote(msg.remote, msg.session, now);
                continue;
            }
            if msg.publish.qos() == QoS::AtMostOnce {
                self.send_local(&Packet::Publish(msg.publish), now);
                self.stats.forwarded_in += 1;
                self.ack_remote(msg.remote, msg.session, now);
                continue;
            }
            let Some(id) = free_id(&mut self.local_next_id, |id| {
                self.in_inflight.contains_key(&id) || id == PacketId::MIN.get()
            }) else {
                self.in_queue.push_front(msg);
                return;
            };
            msg.publish.qos = QosPid::new(msg.publish.qos(), id);
            if encode_publish(&msg.publish, ProtocolVersion::V5, &mut self.local_out)
                && let Some(local) = &mut self.local
            {
                local.last_sent = now;
            }
            self.in_inflight.insert(id.get(), msg);
        }
    }

    /// PUBACK or PUBCOMP from the broker: a message in is done.
    fn on_local_done(&mut self, a: &Ack, now: Instant) {
        let Some(msg) = self.in_inflight.remove(&a.packet_id.get()) else {
            return;
        };
        if !msg.released {
            // Published at QoS 1 (perhaps lowered from 2): this PUBACK is the broker's word,
            // a refusal too (acknowledged to the remote, which would only send it again).
            if a.reason.is_error() {
                self.stats.dropped += 1;
            } else {
                self.stats.forwarded_in += 1;
            }
            self.ack_remote(msg.remote, msg.session, now);
        }
        self.pump_in(now);
    }

    /// PUBREC from the broker: the message is stored there; release it, and tell the remote.
    fn on_local_pubrec(&mut self, a: &Ack, now: Instant) {
        let Some(msg) = self.in_inflight.get_mut(&a.packet_id.get()) else {
            return;
        };
        if msg.released || msg.publish.qos() != QoS::ExactlyOnce {
            return;
        }
        let (remote, session) = (msg.remote, msg.session);
        if a.reason.is_error() {
            self.in_inflight.remove(&a.packet_id.get());
            self.stats.dropped += 1;
            self.pump_in(now);
        } else {
            msg.released = true;
            self.stats.forwarded_in += 1;
            self.send_local(&Packet::PubRel(Ack::new(a.packet_id)), now);
        }
        self.ack_remote(remote, session, now);
    }

    /// Acknowledges a message to the remote, if the session it came in is still the one.
    fn ack_remote(&mut self, ack: SourceAck, session: u64, now: Instant) {
        if session != self.remote_session {
            return; // a new remote session has forgotten it
        }
        match ack {
            SourceAck::None => {}
            SourceAck::PubAck(id) => {
                self.in_taking.remove(&id.get());
            }
            SourceAck::PubRec(id) => {
                // Stored here now: a re-send of it gets a PUBREC and is not delivered again.
                self.in_taking.remove(&id.get());
                self.in_received.insert(id.get());
            }
        }
        if !self.is_up() {
            return; // it is sent again once the remote is back, and acknowledged then
        }
        if let Some(p) = ack.packet() {
            self.send_remote(&p, now);
        }
    }

    fn send_remote(&mut self, packet: &Packet, now: Instant) {
        if packet
            .encode(self.spec.remote_version, &mut self.remote_out)
            .is_ok()
            && let Remote::Up(up) = &mut self.remote
        {
            up.last_sent = now;
        }
    }

    /// A PUBLISH kept for a re-send: encoded from a reference, not cloned into a `Packet`.
    fn send_remote_publish(&mut self, p: &Publish, now: Instant) {
        if encode_publish(p, self.spec.remote_version, &mut self.remote_out) {
            self.touch_remote(now);
        }
    }

    fn touch_remote(&mut self, now: Instant) {
        if let Remote::Up(up) = &mut self.remote {
            up.last_sent = now;
        }
    }

    fn send_local(&mut self, packet: &Packet, now: Instant) {
        if packet
            .encode(ProtocolVersion::V5, &mut self.local_out)
            .is_ok()
            && let Some(local) = &mut self.local
        {
            local.last_sent = now;
        }
    }
}

/// No Local, so nothing the bridge publishes comes back to it; Retain As Published, so a
/// retained message stays retained on the other side.
fn bridge_options(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        no_local: true,
        retain_as_published: true,
        retain_handling: 0,
    }
}

fn keep_alive_of(secs: u16) -> Option<Duration> {
    (secs > 0).then(|| Duration::from_secs(u64::from(secs)))
}

/// Encodes a PUBLISH header and payload; `false` if it cannot be (nothing is written).
fn encode_publish(p: &Publish, version: ProtocolVersion, out: &mut BytesMut) -> bool {
    let ok = p.encode_header(version, out).is_ok();
    if ok {
        out.extend_from_slice(&p.payload);
    }
    ok
}

/// What a CONNACK's properties allow, with the protocol's defaults: Receive Maximum,
/// Maximum QoS, Retain Available, Maximum Packet Size.
fn connack_limits(props: &Properties) -> (u16, QoS, bool, usize) {
    let receive_maximum = props
        .find(|p| match p {
            Property::ReceiveMaximum(n) => Some(n),
            _ => None,
        })
        .unwrap_or(u16::MAX);
    let maximum_qos = props
        .find(|p| match p {
            Property::MaximumQoS(q) => QoS::try_from(q).ok(),
            _ => None,
        })
        .unwrap_or(QoS::ExactlyOnce);
    let retain_available = props
        .find(|p| match p {
            Property::RetainAvailable(r) => Some(r != 0),
            _ => None,
        })
        .unwrap_or(true);
    let maximum_packet_size = props
        .find(|p| match p {
            Property::MaximumPacketSize(n) => usize::try_from(n).ok(),
            _ => None,
        })
        .unwrap_or(usize::MAX);
    (
        receive_maximum,
        maximum_qos,
        retain_available,
        maximum_packet_size,
    )
}

/// The next packet id after `*next` for which `in_use` is false.
fn free_id(next: &mut u16, in_use: impl Fn(u16) -> bool) -> Option<PacketId> {
    for _ in 0..u16::MAX {
        *next = next.checked_add(1).unwrap_or(1);
        if !in_use(*next) {
            return PacketId::new(*next);
        }
    }
    None
}

#[cfg(test)]
mod tests;
