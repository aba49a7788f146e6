//! The broker model: one worker of `vireo-server` with its sockets replaced by byte queues.
//!
//! Each handler is the server's (`worker.rs` `decode_all` / `sweep` / `flush_dirty` and
//! `session.rs` here, `routing.rs` in `routing.rs`), applying the protocol core's and the
//! session's decisions in the order the worker does. Left out: authentication, ACLs, TLS,
//! rate limits, the hand-over between workers, back-pressure (output limits, throttling,
//! congestion: no queue here fills) and the frame log's sharing of QoS 0 frames (the bytes
//! are the same, encoded per recipient). Where the model decides something itself it says so:
//! a session slab that never reuses a slot (the server's ids are unique either way), a sweep
//! after every clock advance, and sorting where a map's order would change the outcome.
//!
//! What happens is recorded in [`World::events`], in order, for the harness to check: protocol
//! events (a session accepted, a filter granted, a message offered to a session, a Will
//! published) and what reaches each socket ([`Event::Wire`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use vireo_broker::protocol::connect::{self, Negotiated};
use vireo_broker::protocol::connection::{self, Close, Phase};
use vireo_broker::protocol::lifecycle::{self, Liveness, Resume, SessionFate, WillFate};
use vireo_broker::protocol::publish::{self as inbound, InboundAliases, OutAlias, OutboundAliases};
use vireo_broker::protocol::{Violation, disconnect};
use vireo_broker::{
    Message, Outgoing, Recipients, RetainedStore, Session, SessionId, SessionLimits,
    SharedSubscriptions, SubscriptionIndex,
};
use vireo_codec::{
    ByteString, BytesMut, ConnAck, Connect, DecodeError, Disconnect, LastWill, Packet,
    ProtocolVersion, QoS, ReasonCode, SubscriptionOptions, decode, parse_shared,
};

use super::cases::Broker as Config;

#[path = "routing.rs"]
mod routing;

/// The worker's `Conn::state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    AwaitingConnect,
    /// Serving the session in this slot.
    Connected(usize),
}

impl ConnState {
    fn phase(self) -> Phase {
        match self {
            ConnState::AwaitingConnect => Phase::AwaitingConnect,
            ConnState::Connected(_) => Phase::Connected,
        }
    }

    pub fn session(self) -> Option<usize> {
        match self {
            ConnState::AwaitingConnect => None,
            ConnState::Connected(s) => Some(s),
        }
    }
}

/// The server's `V5State`.
#[derive(Debug)]
struct V5State {
    negotiated: Negotiated,
    aliases: InboundAliases,
    out_aliases: Option<OutboundAliases>,
}

/// A connection (the server's `Conn`, less the socket).
#[derive(Debug)]
pub struct Conn {
    pub state: ConnState,
    version: ProtocolVersion,
    /// Bytes the client sent and the broker has not decoded (an unfinished packet).
    rbuf: BytesMut,
    liveness: Liveness,
    keep_alive: u16,
    will: Option<LastWill>,
    v5: Option<V5State>,
    /// Queued output, written at the next flush.
    out: BytesMut,
    /// Retained messages owed after a SUBSCRIBE.
    owed: VecDeque<(Arc<Message>, QoS, u32)>,
    /// False once closed (the server removes it from its slab).
    pub open: bool,
}

impl Conn {
    fn negotiated(&self) -> Option<&Negotiated> {
        self.v5.as_ref().map(|v| &v.negotiated)
    }

    fn fits(&self, len: usize) -> bool {
        self.negotiated().is_none_or(|n| n.fits(len))
    }

    fn out_alias(&self, topic: &str) -> OutAlias {
        self.v5
            .as_ref()
            .and_then(|v| v.out_aliases.as_ref())
            .map_or(OutAlias::Full, |a| a.lookup(topic))
    }

    fn record_alias(&mut self, topic: &str, alias: OutAlias) {
        if let OutAlias::Set(a) = alias
            && let Some(aliases) = self.v5.as_mut().and_then(|v| v.out_aliases.as_mut())
        {
            aliases.record(topic, a);
        }
    }

    fn push_packet(&mut self, packet: &Packet) {
        // The server logs and drops a packet it cannot encode; none of these can fail.
        let encoded = packet.encode(self.version, &mut self.out);
        assert!(encoded.is_ok(), "cannot encode {}", packet.name());
    }
}

/// The server's `SessionSlot`.
#[derive(Debug)]
pub struct Slot {
    pub session: Session,
    pub conn: Option<usize>,
    expires: Option<Instant>,
    expiry_secs: u32,
    pending_will: Option<(Instant, Arc<Message>)>,
}

/// What happened, in order.
#[derive(Debug)]
pub enum Event {
    /// Bytes written to connection `key`'s socket.
    Wire(usize, Vec<u8>),
    /// The broker closes connection `key`, for this reason.
    Closing(usize, Close),
    /// The socket of `key` is closed.
    SocketClosed(usize),
    /// A DISCONNECT from the client was admitted on `key`.
    Disconnect(usize, Disconnect),
    /// CONNECT accepted on `key`: CONNACK 0x00 with Session Present `present` queued.
    Accepted {
        key: usize,
        client_id: String,
        sid: SessionId,
        present: bool,
    },
    /// One filter of a SUBSCRIBE decided: granted at a QoS, or refused.
    Subscribed {
        sid: SessionId,
        filter: String,
        options: SubscriptionOptions,
        granted: Option<QoS>,
    },
    Unsubscribed {
        sid: SessionId,
        filter: String,
    },
    /// An inbound PUBLISH routed.
    Routed(Arc<Message>),
    /// A Will published.
    Will(Arc<Message>),
    /// A message handed to a session (at `qos`), live or as a retained message on SUBSCRIBE.
    Offered {
        sid: SessionId,
        msg: Arc<Message>,
        qos: QoS,
        retained: bool,
    },
}

/// The worker's state, on a clock the harness moves.
pub struct World {
    pub now: Instant,
    pub cfg: Config,
    session_limits: Arc<SessionLimits>,
    pub conns: Vec<Conn>,
    /// A slab that never reuses a slot (session ids are unique either way).
    pub sessions: Vec<Option<Slot>>,
    by_client: HashMap<String, usize>,
    by_id: HashMap<SessionId, usize>,
    index: SubscriptionIndex,
    shared_subs: SharedSubscriptions,
    retained: RetainedStore,
    recipients: Recipients,
    dirty: Vec<usize>,
    next_session: u64,
    generated: u64,
    pub events: Vec<Event>,
}

const PINGRESP: &[u8] = &[0xD0, 0x00];

impl World {
    pub fn new(cfg: Config, now: Instant) -> Self {
        Self {
            now,
            session_limits: Arc::new(cfg.session),
            retained: RetainedStore::new(cfg.max_retained_messages, 1 << 20),
            cfg,
            conns: Vec::new(),
            sessions: Vec::new(),
            by_client: HashMap::new(),
            by_id: HashMap::new(),
            index: SubscriptionIndex::new(1),
            shared_subs: SharedSubscriptions::new(),
            recipients: Recipients::new(),
            dirty: Vec::new(),
            next_session: 0,
            generated: 0,
            events: Vec::new(),
        }
    }

    pub fn slot(&self, skey: usize) -> Option<&Slot> {
        self.sessions.get(skey).and_then(Option::as_ref)
    }

    fn mark_dirty(&mut self, key: usize) {
        if !self.dirty.contains(&key) {
            self.dirty.push(key);
        }
    }

    fn push_packet(&mut self, key: usize, packet: &Packet) {
        self.conns[key].push_packet(packet);
        self.mark_dirty(key);
    }

    fn push_bytes(&mut self, key: usize, bytes: &[u8]) {
        self.conns[key].out.extend_from_slice(bytes);
        self.mark_dirty(key);
    }

    // ---- the socket -------------------------------------------------------------------------

    /// A TCP connection accepted.
    pub fn accept(&mut self) -> usize {
        self.conns.push(Conn {
            state: ConnState::AwaitingConnect,
            version: ProtocolVersion::V311,
            rbuf: BytesMut::new(),
            liveness: Liveness::awaiting_connect(self.now, self.cfg.connect_timeout),
            keep_alive: 0,
            will: None,
            v5: None,
            out: BytesMut::new(),
            owed: VecDeque::new(),
            open: true,
        });
        self.conns.len() - 1
    }

    /// Bytes arrived on `key`'s socket: the worker's `read_now` (the bytes are decoded as they
    /// arrive; no back-pressure pauses the read).
    pub fn receive(&mut self, key: usize, bytes: &[u8]) {
        if !self.conns[key].open {
            return;
        }
        self.conns[key].rbuf.extend_from_slice(bytes);
        if let Err(reason) = self.decode_all(key) {
            self.close(key, reason);
        }
    }

    /// The peer closed (`read` returned 0) or the socket failed.
    pub fn socket_gone(&mut self, key: usize, io: bool) {
        if self.conns[key].open {
            self.close(key, if io { Close::Io } else { Close::Eof });
        }
    }

    /// The worker's `decode_all`.
    fn decode_all(&mut self, key: usize) -> Result<(), Close> {
        // The server's `max_packet_size`, which is also the Maximum Packet Size it announces.
        let max = self.cfg.limits.maximum_packet_size as usize;
        let mut progressed = false;
        loop {
            let conn = &mut self.conns[key];
            if !conn.open {
                return Ok(());
            }
            match decode(&mut conn.rbuf, conn.version, max) {
                Ok(Some(packet)) => {
                    progressed = true;
                    self.handle(key, packet)?;
                }
                Ok(None) => {
                    let partial = !conn.rbuf.is_empty();
                    if progressed || partial {
                        let ka = conn.keep_alive;
                        conn.liveness.on_decoded(
                            self.now,
                            ka,
                            progressed,
                            partial,
                            self.cfg.packet_timeout,
                        );
                    }
                    return Ok(());
                }
                Err(e) => {
                    if let (ConnState::AwaitingConnect, DecodeError::UnsupportedProtocolLevel(_)) =
                        (conn.state, e)
                    {
                        // [MQTT-3.1.2-2]: CONNACK 0x01, then close.
                        self.push_bytes(key, &[0x20, 0x02, 0x00, 0x01]);
                        return Err(Close::Refused);
                    }
                    return Err(Close::Protocol(e.reason_code()));
                }
            }
        }
    }

    /// The worker's `handle`: `admit`, then one line per packet type.
    fn handle(&mut self, key: usize, packet: Packet) -> Result<(), Close> {
        let conn = &self.conns[key];
        if let Err(no) = connection::admit(conn.state.phase(), &packet) {
            return Err(no.close);
        }
        let skey = match conn.state {
            ConnState::Connected(skey) => skey,
            ConnState::AwaitingConnect => {
                let Packet::Connect(c) = packet else {
                    return Err(Close::PROTOCOL);
                };
                return self.on_connect(key, c);
            }
        };
        match packet {
            Packet::Publish(p) => self.on_publish(key, skey, p),
            Packet::PubAck(a) => self.on_puback(key, skey, &a),
            Packet::PubRec(a) => self.on_pubrec(key, skey, &a),
            Packet::PubRel(a) => self.on_pubrel(key, skey, &a),
            Packet::PubComp(a) => self.on_pubcomp(key, skey, &a),
            Packet::Subscribe(s) => self.on_subscribe(key, skey, s),
            Packet::Unsubscribe(u) => self.on_unsubscribe(key, skey, u),
            Packet::PingReq => {
                self.push_bytes(key, PINGRESP);
                Ok(())
            }
            Packet::Disconnect(d) => {
                self.events.push(Event::Disconnect(key, d.clone()));
                self.on_disconnect(skey, &d)
            }
            Packet::Connect(_)
            | Packet::Auth(_)
            | Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp => Err(Close::PROTOCOL),
        }
    }

    // ---- session.rs -------------------------------------------------------------------------

    fn refuse(&mut self, key: usize, code: ReasonCode) -> Result<(), Close> {
        self.push_packet(key, &Packet::ConnAck(ConnAck::new(false, code)));
        Err(Close::Refused)
    }

    /// The server's `on_connect`, less authentication, TLS and the hand-over to the client
    /// id's home worker (one worker here).
    fn on_connect(&mut self, key: usize, mut connect: Box<Connect>) -> Result<(), Close> {
        self.conns[key].version = connect.protocol;
        if let Err(code) = connect::check(&connect, &self.cfg.limits, self.cfg.persistent_expiry) {
            return self.refuse(key, code);
        }
        let assigned = connect.client_id.is_empty();
        if assigned {
            // [MQTT-3.1.3-6], as `generated_client_id` does for one worker.
            loop {
                self.generated += 1;
                let id = format!("vireo-0-{}", self.generated);
                if !self.by_client.contains_key(&id) {
                    connect.client_id = ByteString::from(id);
                    break;
                }
            }
        }
        self.accept_connect(key, *connect, assigned)
    }

    /// The server's `accept_connect` (its second `connect::check` is the same pure call on
    /// the same CONNECT, left out; there is no ACL and no `max_sessions`).
    fn accept_connect(
        &mut self,
        key: usize,
        connect: Connect,
        assigned: bool,
    ) -> Result<(), Close> {
        let negotiated =
            match connect::check(&connect, &self.cfg.limits, self.cfg.persistent_expiry) {
                Ok(n) => n,
                Err(code) => return self.refuse(key, code),
            };
        let id = connect.client_id.to_string();
        if let Some(&skey) = self.by_client.get(&id)
            && let Some(old) = self.slot(skey).and_then(|s| s.conn)
        {
            // `final_read` has nothing to do: every byte the old connection sent was decoded
            // when it arrived.
            self.close(old, Close::TakenOver);
        }
        let existing = self.by_client.get(&id).copied();
        let (skey, session_present) = match (
            existing,
            lifecycle::resume(existing.is_some(), connect.clean_start),
        ) {
            (Some(skey), Resume::Resume) => (skey, true),
            (other, _) => {
                if let Some(skey) = other {
                    self.discard_session(skey);
                }
                let skey = self.sessions.len();
                self.next_session += 1;
                let sid = SessionId(self.next_session);
                let clean = negotiated.session_expiry == 0;
                let session =
                    Session::new(sid, id.as_str(), clean, Arc::clone(&self.session_limits));
                self.sessions.push(Some(Slot {
                    session,
                    conn: None,
                    expires: None,
                    expiry_secs: 0,
                    pending_will: None,
                }));
                self.by_client.insert(id.clone(), skey);
                self.by_id.insert(sid, skey);
                (skey, false)
            }
        };
        let now = self.now;
        let Some(slot) = self.sessions[skey].as_mut() else {
            return Ok(());
        };
        slot.conn = Some(key);
        slot.expires = None;
        slot.expiry_secs = negotiated.session_expiry;
        slot.session.clean = negotiated.session_expiry == 0;
        // Back before its Will Delay ran out: the Will is not sent (5.0 [MQTT-3.1.3-9]).
        slot.pending_will = None;
        slot.session.set_receive_maximum(negotiated.receive_maximum);
        let sid = slot.session.id;
        let resend: Vec<Outgoing> = if session_present {
            slot.session.resend().collect()
        } else {
            Vec::new()
        };
        let version = connect.protocol;
        let conn = &mut self.conns[key];
        conn.state = ConnState::Connected(skey);
        conn.keep_alive = negotiated.keep_alive;
        conn.liveness.connected(now, negotiated.keep_alive);
        let ack = if version.is_v5() {
            let assigned_id = assigned.then_some(&*connect.client_id);
            let ack = connect::accepted(
                version,
                session_present,
                &self.cfg.limits,
                &negotiated,
                assigned_id,
            );
            conn.v5 = Some(V5State {
                out_aliases: OutboundAliases::new(
                    negotiated.topic_alias_maximum,
                    self.cfg.limits.outbound_topic_alias_maximum,
                ),
                negotiated,
                aliases: InboundAliases::default(),
            });
            ack
        } else {
            conn.v5 = None;
            ConnAck::new(
                connect::session_present_flag(version, session_present),
                ReasonCode::SUCCESS,
            )
        };
        conn.will = connect.will;
        self.push_packet(key, &Packet::ConnAck(ack));
        self.events.push(Event::Accepted {
            key,
            client_id: id,
            sid,
            present: session_present,
        });
        self.set_shared_online(skey, true);
        if session_present {
            // [MQTT-4.4.0-1] unacknowledged PUBLISH (DUP) and PUBREL, in order.
            for out in resend {
                self.write_outgoing(key, skey, out);
            }
            self.refill(key);
        }
        Ok(())
    }

    fn set_shared_online(&self, skey: usize, online: bool) {
        let Some(slot) = self.slot(skey) else {
            return;
        };
        for filter in slot.session.subscriptions.keys() {
            if filter.starts_with("$share/") {
                self.shared_subs.set_online(filter, slot.session.id, online);
            }
        }
    }

    /// The server's `Worker::close`.
    pub fn close(&mut self, key: usize, reason: Close) {
        if !self.conns[key].open {
            return;
        }
        self.events.push(Event::Closing(key, reason));
        let conn = &mut self.conns[key];
        if let Some(code) = reason.disconnect_reason(conn.state.phase(), conn.version) {
            conn.push_packet(&Packet::Disconnect(disconnect::server_disconnect(
                Violation(code),
            )));
        }
        conn.open = false;
        conn.rbuf.clear();
        conn.owed.clear();
        let out = std::mem::take(&mut conn.out);
        if reason.flushes_first() && !out.is_empty() {
            self.events.push(Event::Wire(key, out.to_vec()));
        }
        self.events.push(Event::SocketClosed(key));
        let conn = &mut self.conns[key];
        let Some(skey) = conn.state.session() else {
            return;
        };
        let will_delay = conn.negotiated().map_or(0, |n| n.will_delay);
        let will = conn.will.take().filter(|_| reason.publishes_will());
        let origin = self.slot(skey).map_or(SessionId(0), |s| s.session.id);
        let will = will.map(|w| {
            Arc::new(inbound::message(
                w.topic,
                w.payload,
                w.qos,
                w.retain,
                w.properties,
                origin,
                self.now,
            ))
        });
        let Some(slot) = self.sessions[skey].as_mut() else {
            return;
        };
        if slot.conn != Some(key) {
            return;
        }
        slot.conn = None;
        slot.session.shrink_if_idle();
        let fate = lifecycle::after_close(self.now, will.is_some(), will_delay, slot.expiry_secs);
        match (will, fate.will) {
            (Some(will), WillFate::At(at)) => slot.pending_will = Some((at, will)),
            (Some(will), _) => self.publish_will(will),
            (None, _) => {}
        }
        self.set_shared_online(skey, false);
        let Some(slot) = self.sessions[skey].as_mut() else {
            return;
        };
        match fate.session {
            SessionFate::EndsNow => self.discard_session(skey),
            SessionFate::Kept => slot.expires = None,
            SessionFate::ExpiresAt(at) => slot.expires = Some(at),
        }
    }

    fn publish_will(&mut self, will: Arc<Message>) {
        self.events.push(Event::Will(Arc::clone(&will)));
        self.publish(will);
    }

    /// The server's `discard_session`.
    fn discard_session(&mut self, skey: usize) {
        let Some(slot) = self.sessions[skey].take() else {
            return;
        };
        let mut session = slot.session;
        // Sorted: the session's map has no order, and the model must replay from a seed.
        let mut filters: Vec<ByteString> = session.subscriptions.keys().cloned().collect();
        filters.sort();
        let mut shares = Vec::new();
        for filter in &filters {
            self.unsubscribe_filter(session.id, filter);
            if let Ok(Some((_, inner))) = parse_shared(filter) {
                shares.push((filter.clone(), inner.to_owned()));
            }
        }
        if self.by_client.get(&*session.client_id) == Some(&skey) {
            self.by_client.remove(&*session.client_id);
        }
        self.by_id.remove(&session.id);
        if !shares.is_empty() {
            let owed = session.take_undelivered();
            self.hand_to_other_members(&shares, owed);
        }
        if let Some((_, will)) = slot.pending_will {
            self.publish_will(will);
        }
    }

    fn hand_to_other_members(
        &mut self,
        shares: &[(ByteString, String)],
        owed: Vec<(Arc<Message>, QoS)>,
    ) {
        for (msg, _) in owed {
            let Some((share, _)) = shares
                .iter()
                .find(|(_, inner)| vireo_codec::topic_matches(inner, &msg.topic))
            else {
                continue;
            };
            let Some(member) = self.shared_subs.pick(share) else {
                continue;
            };
            self.recipients.clear();
            self.recipients.push(member);
            self.deliver_matched(msg);
        }
    }

    fn unsubscribe_filter(&self, id: SessionId, filter: &str) -> bool {
        match parse_shared(filter) {
            Ok(Some((_, inner))) => self.shared_subs.unsubscribe(filter, inner, id),
            _ => self.index.unsubscribe(id, filter),
        }
    }

    // ---- worker.rs: the clock and the flush -------------------------------------------------

    /// The worker's `sweep` at `now`. Idle sessions release their QoS state on every sweep
    /// (the server does it every 100th; any sweep may, and this way the release is exercised).
    pub fn sweep(&mut self) {
        let now = self.now;
        let expired: Vec<usize> = (0..self.conns.len())
            .filter(|&k| self.conns[k].open && self.conns[k].liveness.expired(now))
            .collect();
        for key in expired {
            self.close(key, Close::Timeout);
        }
        let (mut stale, mut wills) = (Vec::new(), Vec::new());
        for (skey, s) in self.sessions.iter_mut().enumerate() {
            let Some(s) = s else { continue };
            s.session.shrink_if_idle();
            let due = lifecycle::due(
                now,
                s.conn.is_some(),
                s.pending_will.as_ref().map(|w| w.0),
                s.expires,
            );
            if due.will {
                wills.push(skey);
            }
            if due.expired {
                stale.push(skey);
            }
        }
        for skey in stale {
            self.discard_session(skey);
        }
        for skey in wills {
            if let Some(will) = self.sessions[skey]
                .as_mut()
                .and_then(|s| s.pending_will.take())
            {
                self.publish_will(will.1);
            }
        }
    }

    /// The worker's `flush_dirty`: writes what each connection has queued, then refills it.
    pub fn flush(&mut self) {
        let mut i = 0;
        while i < self.dirty.len() {
            let key = self.dirty[i];
            i += 1;
            self.write(key);
            self.refill(key);
            self.write(key);
        }
        self.dirty.clear();
    }

    fn write(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if conn.open && !conn.out.is_empty() {
            let out = std::mem::take(&mut conn.out);
            self.events.push(Event::Wire(key, out.to_vec()));
        }
    }

    /// The session slot connection `key` serves, if connected.
    pub fn session_of(&self, key: usize) -> Option<usize> {
        self.conns[key].state.session()
    }

    /// Retained messages still owed to connection `key`.
    pub fn owed_on(&self, key: usize) -> usize {
        let conn = &self.conns[key];
        if conn.open { conn.owed.len() } else { 0 }
    }
}
