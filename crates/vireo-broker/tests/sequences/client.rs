//! The clients: what each keeps of its session (its own QoS 1/2 PUBLISHes in flight, the
//! broker's deliveries it has not completed) and of each of its connections, as a client
//! library would keep it.

use std::collections::HashMap;

use vireo_broker::SessionId;
use vireo_broker::protocol::publish::InboundAliases;
use vireo_codec::{BytesMut, Connect, PacketId, ProtocolVersion, Publish};

use super::cases::ClientCfg;

/// Where one of the client's own QoS 1/2 PUBLISHes is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnStage {
    /// Sent; awaiting PUBACK (QoS 1) or PUBREC (QoS 2).
    Sent,
    /// PUBREC came: PUBREL is due (or sent), awaiting PUBCOMP.
    Released,
}

#[derive(Debug, Clone)]
pub struct Own {
    pub pid: PacketId,
    pub publish: Publish,
    pub stage: OwnStage,
}

/// Where a delivery from the broker is, on the client's side. Every state counts against
/// the client's Receive Maximum until the client sends PUBACK or PUBCOMP (or a PUBREC that
/// fails it) [MQTT-3.3.4-9].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DState {
    /// QoS 1, PUBACK owed.
    Qos1,
    /// QoS 2 received (and handed to the application), PUBREC owed.
    Qos2,
    /// QoS 2, PUBREC sent, awaiting PUBREL. The id still marks the message as delivered:
    /// a repeat is not handed to the application again (method B, spec 4.3.3).
    Qos2Recd,
    /// PUBREL came, PUBCOMP owed.
    Qos2Released,
    /// QoS 2, and the client ended it early: PUBCOMP before PUBREL came, or a PUBREC with an
    /// error. If the broker took that it is done there, and a PUBLISH with the id and DUP 0
    /// is a new message; if not (the bytes were still unsent, or cut off by a close), the
    /// broker sends it again with DUP 1, which is not a new message (method B keeps the id
    /// until PUBREL). Not counted against the window: the client does not know which.
    Qos2Done,
}

impl DState {
    /// Whether it counts against the client's Receive Maximum.
    pub fn counts(self) -> bool {
        self != DState::Qos2Done
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Delivery {
    pub pid: PacketId,
    pub state: DState,
}

/// What a client keeps of one session.
#[derive(Debug, Default)]
pub struct SessionState {
    next_pid: u16,
    pub own: Vec<Own>,
    pub deliveries: Vec<Delivery>,
    /// PUBRELs for ids it holds no delivery for (completed already, or never sent): it
    /// answers PUBCOMP, and they count against nothing.
    pub stray_rels: Vec<PacketId>,
}

impl SessionState {
    /// A packet id none of its own PUBLISHes in flight uses (3.1.1 [MQTT-2.3.1-2]).
    pub fn fresh_pid(&mut self) -> PacketId {
        loop {
            self.next_pid = self.next_pid.wrapping_add(1);
            if let Some(pid) = PacketId::new(self.next_pid)
                && !self.own.iter().any(|o| o.pid == pid)
            {
                return pid;
            }
        }
    }

    pub fn delivery(&mut self, pid: PacketId) -> Option<&mut Delivery> {
        self.deliveries.iter_mut().find(|d| d.pid == pid)
    }

    pub fn forget_delivery(&mut self, pid: PacketId) {
        self.deliveries.retain(|d| d.pid != pid);
    }
}

#[derive(Debug)]
pub struct Client {
    pub cfg: ClientCfg,
    /// Its connections (world keys), oldest first.
    pub conns: Vec<usize>,
    /// Its state per session, as the broker identifies them. A client learns that its session
    /// is new from CONNACK's Session Present 0 and then starts afresh (spec 3.2.2.1.2); here
    /// a new session id is that fresh start, also when the CONNACK is lost with a close.
    pub sessions: HashMap<SessionId, SessionState>,
}

impl Client {
    pub fn new(cfg: ClientCfg) -> Self {
        Self {
            cfg,
            conns: Vec::new(),
            sessions: HashMap::new(),
        }
    }

    /// The state of session `sid` (empty for `None`: not connected yet).
    pub fn state(&mut self, sid: Option<SessionId>) -> &mut SessionState {
        // Packets sent before the CONNECT is accepted keep no state.
        self.sessions
            .entry(sid.unwrap_or(SessionId(0)))
            .or_default()
    }
}

/// One connection as the client sees it.
#[derive(Debug)]
pub struct ClientConn {
    pub client: usize,
    /// The version its packets are encoded in (3.1.1 for a connection that never sent a
    /// valid CONNECT).
    pub version: ProtocolVersion,
    /// The CONNECT it opened with.
    pub connect: Option<Connect>,
    /// The session the broker attached it to (from the broker's decision: see
    /// `Harness::apply`).
    pub sid: Option<SessionId>,
    /// CONNACK seen: (Session Present, code).
    pub connack: Option<(bool, u8)>,
    /// A DISCONNECT came from the broker: nothing may follow [MQTT-3.14.4-1].
    pub disconnected: bool,
    pub closed: bool,
    /// Topic aliases the broker set up towards this client.
    pub aliases: InboundAliases,
    /// Bytes received and not yet decoded.
    pub rx: BytesMut,
    /// SUBSCRIBE / UNSUBSCRIBE packet ids sent and not yet answered, with their filter count.
    pub pending_subs: Vec<(u16, usize)>,
    pub pending_unsubs: Vec<(u16, usize)>,
    /// PINGREQs not yet answered.
    pub pings: usize,
    /// The rest of a packet sent in part: it goes before anything else sent here.
    pub unsent: Vec<u8>,
}

impl ClientConn {
    pub fn new(client: usize, version: ProtocolVersion) -> Self {
        Self {
            client,
            version,
            connect: None,
            sid: None,
            connack: None,
            disconnected: false,
            closed: false,
            aliases: InboundAliases::default(),
            rx: BytesMut::new(),
            pending_subs: Vec::new(),
            pending_unsubs: Vec::new(),
            pings: 0,
            unsent: Vec::new(),
        }
    }

    pub fn accepted(&self) -> bool {
        matches!(self.connack, Some((_, 0)))
    }
}
