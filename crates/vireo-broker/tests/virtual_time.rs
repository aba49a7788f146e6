//! The protocol core on virtual time: clients and a broker model built from vireo-broker's
//! pieces (the CONNECT check, the connection's [`Close`] reasons, [`Liveness`],
//! [`lifecycle::after_close`] and [`lifecycle::due`],
//! sessions, the index, the retained store), driven by a clock the test moves. Keep-alive
//! expiry, takeover, Will Delay, session expiry and message expiry are tested here with no
//! sleeps and no sockets; the same decisions run in the server's workers, and the socket tests
//! (`crates/vireo-server/tests/v5.rs`) check that they reach the wire.
//!
//! The model is deliberately small: one worker, QoS 1 deliveries as the session releases them,
//! no frames. What it does with each decision is what the server's `session.rs` and `sweep`
//! do.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vireo_broker::protocol::connection::{Close, Phase};
use vireo_broker::protocol::lifecycle::{self, Liveness, Resume, SessionFate, WillFate};
use vireo_broker::protocol::{Limits, connect, disconnect, publish};
use vireo_broker::{
    Message, Outgoing, Recipients, RetainedStore, Session, SessionId, SessionLimits, Subscribed,
    SubscriptionIndex,
};
use vireo_codec::{
    Bytes, Connect, Disconnect, LastWill, Properties, Property, ProtocolVersion, QoS, ReasonCode,
    TopicName,
};

/// The server's `packet_timeout_secs` default.
const PACKET_TIMEOUT: Duration = Duration::from_secs(10);

/// What a client saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    ConnAck {
        present: bool,
        code: u8,
    },
    /// A PUBLISH: topic, payload, remaining Message Expiry Interval.
    Publish(String, String, Option<u32>),
    /// A DISCONNECT from the broker, then the close.
    Disconnect(u8),
    Closed,
}

struct VConn {
    liveness: Liveness,
    keep_alive: u16,
    v5: bool,
    client: Option<String>,
    will: Option<LastWill>,
    will_delay: u32,
    open: bool,
    seen: Vec<Seen>,
}

struct Stored {
    session: Session,
    expiry: u32,
    expires: Option<Instant>,
    will: Option<(Instant, Arc<Message>)>,
    conn: Option<usize>,
}

/// The broker model and its virtual clock.
struct World {
    now: Instant,
    limits: Limits,
    connect_timeout: Duration,
    conns: Vec<VConn>,
    sessions: HashMap<String, Stored>,
    by_id: HashMap<SessionId, String>,
    index: SubscriptionIndex,
    retained: RetainedStore,
    next_id: u64,
}

impl World {
    fn new() -> Self {
        Self {
            // The one reading of the real clock: every later instant is this plus what the
            // test advanced.
            now: Instant::now(),
            limits: Limits::default(),
            connect_timeout: Duration::from_secs(10),
            conns: Vec::new(),
            sessions: HashMap::new(),
            by_id: HashMap::new(),
            index: SubscriptionIndex::new(1),
            retained: RetainedStore::new(1000, 1 << 20),
            next_id: 0,
        }
    }

    /// A TCP connection accepted; nothing sent yet.
    fn accept(&mut self) -> usize {
        self.conns.push(VConn {
            liveness: Liveness::awaiting_connect(self.now, self.connect_timeout),
            keep_alive: 0,
            v5: false,
            client: None,
            will: None,
            will_delay: 0,
            open: true,
            seen: Vec::new(),
        });
        self.conns.len() - 1
    }

    /// Accept, then CONNECT.
    fn client(&mut self, connect: Connect) -> usize {
        let c = self.accept();
        self.connect(c, connect);
        c
    }

    fn connect(&mut self, c: usize, connect: Connect) {
        self.conns[c].v5 = connect.protocol.is_v5();
        let n = match connect::check(&connect, &self.limits, u32::MAX) {
            Ok(n) => n,
            Err(code) => {
                self.conns[c].seen.push(Seen::ConnAck {
                    present: false,
                    code: code.0,
                });
                self.shut(c);
                return;
            }
        };
        let id = connect.client_id.to_string();
        // Takeover: the connection serving this id is told and closed, and its end is an
        // ordinary one for its Will and session [MQTT-3.1.4-2] [MQTT-3.1.4-3].
        if let Some(old) = self.sessions.get(&id).and_then(|s| s.conn) {
            self.close(old, Close::TakenOver);
        }
        let present = match lifecycle::resume(self.sessions.contains_key(&id), connect.clean_start)
        {
            Resume::Resume => true,
            Resume::Discard => {
                self.discard(&id);
                false
            }
            Resume::Fresh => false,
        };
        if !present {
            self.next_id += 1;
            let sid = SessionId(self.next_id);
            let limits = Arc::new(SessionLimits::default());
            let session = Session::new(sid, id.as_str(), n.session_expiry == 0, limits);
            self.by_id.insert(sid, id.clone());
            self.sessions.insert(
                id.clone(),
                Stored {
                    session,
                    expiry: 0,
                    expires: None,
                    will: None,
                    conn: None,
                },
            );
        }
        let stored = self.sessions.get_mut(&id).unwrap();
        stored.conn = Some(c);
        stored.expires = None;
        stored.expiry = n.session_expiry;
        // Back in time: a delayed Will is not sent [MQTT-3.1.3-9].
        stored.will = None;
        let conn = &mut self.conns[c];
        conn.keep_alive = n.keep_alive;
        conn.liveness.connected(self.now, n.keep_alive);
        conn.client = Some(id.clone());
        conn.will = connect.will;
        conn.will_delay = n.will_delay;
        conn.seen.push(Seen::ConnAck { present, code: 0 });
        self.flush(&id);
    }

    /// Any packet from the client (a PINGREQ, say): its keep-alive clock restarts.
    fn ping(&mut self, c: usize) {
        let conn = &mut self.conns[c];
        let ka = conn.keep_alive;
        conn.liveness
            .on_decoded(self.now, ka, true, false, PACKET_TIMEOUT);
    }

    /// Some bytes of a packet the client has not finished (a slowloris client's trickle).
    fn trickle(&mut self, c: usize) {
        let conn = &mut self.conns[c];
        let ka = conn.keep_alive;
        conn.liveness
            .on_decoded(self.now, ka, false, true, PACKET_TIMEOUT);
    }

    fn subscribe(&mut self, c: usize, filter: &str, qos: QoS) {
        self.ping(c);
        let id = self.conns[c].client.clone().unwrap();
        let stored = self.sessions.get_mut(&id).unwrap();
        let sid = stored.session.id;
        stored
            .session
            .subscriptions
            .insert(filter.into(), Subscribed::qos(qos));
        self.index.subscribe(sid, filter, qos);
        let mut owed = Vec::new();
        self.retained.matching(filter, &mut owed, usize::MAX);
        for msg in owed {
            let q = msg.qos.min(qos);
            self.offer(&id, msg, q, true);
        }
        self.flush(&id);
    }

    /// A PUBLISH from client `c` (or from nobody, for `None`: a message entering the broker),
    /// with a Message Expiry Interval when `expiry` is set.
    fn publish(&mut self, from: Option<usize>, topic: &str, payload: &str, expiry: Option<u32>) {
        let origin = from.map_or(SessionId(0), |c| {
            self.ping(c);
            let id = self.conns[c].client.as_ref().unwrap();
            self.sessions[id].session.id
        });
        let mut properties = Properties::new();
        if let Some(secs) = expiry {
            properties.push(Property::MessageExpiryInterval(secs));
        }
        let msg = publish::message(
            TopicName::new(topic).unwrap(),
            Bytes::copy_from_slice(payload.as_bytes()),
            QoS::AtLeastOnce,
            false,
            properties,
            origin,
            self.now,
        );
        self.route(Arc::new(msg));
    }

    fn retain(&mut self, topic: &str, payload: &str, expiry: Option<u32>) {
        let mut properties = Properties::new();
        if let Some(secs) = expiry {
            properties.push(Property::MessageExpiryInterval(secs));
        }
        let msg = publish::message(
            TopicName::new(topic).unwrap(),
            Bytes::copy_from_slice(payload.as_bytes()),
            QoS::AtLeastOnce,
            true,
            properties,
            SessionId(0),
            self.now,
        );
        self.retained.set(Arc::new(msg));
    }

    fn route(&mut self, msg: Arc<Message>) {
        let mut out = Recipients::new();
        self.index.matches(&msg.topic, &mut out);
        let targets: Vec<_> = out
            .iter()
            .filter_map(|r| Some((self.by_id.get(&r.session)?.clone(), r.qos)))
            .collect();
        for (id, qos) in targets {
            if self.offer(&id, Arc::clone(&msg), msg.qos.min(qos), false) {
                self.flush(&id);
            }
        }
    }

    /// Queues a QoS 1 copy for the session (QoS 0 goes to online sessions only, as in the
    /// server); whether it was taken.
    fn offer(&mut self, id: &str, msg: Arc<Message>, qos: QoS, retain: bool) -> bool {
        let Some(stored) = self.sessions.get_mut(id) else {
            return false;
        };
        if msg.expired(self.now) {
            return false; // [MQTT-3.3.2-5]
        }
        if qos == QoS::AtMostOnce {
            let Some(c) = stored.conn else {
                return false;
            };
            let seen = seen_publish(&msg, self.now);
            self.conns[c].seen.push(seen);
            return true;
        }
        stored.session.enqueue(msg, qos, retain);
        true
    }

    /// Sends what the session's window lets out, acknowledging each at once (the client model
    /// is a prompt one).
    fn flush(&mut self, id: &str) {
        let now = self.now;
        let Some(stored) = self.sessions.get_mut(id) else {
            return;
        };
        let Some(c) = stored.conn else {
            return;
        };
        while let Some(out) = stored.session.next_outgoing(now) {
            if let Outgoing::Publish { pid, msg, .. } = out {
                self.conns[c].seen.push(seen_publish(&msg, now));
                stored.session.on_puback(pid);
            }
        }
    }

    /// The client's DISCONNECT: the core decides what it ends.
    fn disconnect(&mut self, c: usize, d: Disconnect) {
        let id = self.conns[c].client.clone().unwrap();
        let expiry = self.sessions[&id].expiry;
        match disconnect::on_disconnect(&d, expiry) {
            Ok(ending) => {
                if let Some(secs) = ending.session_expiry {
                    self.sessions.get_mut(&id).unwrap().expiry = secs;
                }
                let close = if ending.publish_will {
                    Close::DisconnectWithWill
                } else {
                    Close::Disconnect
                };
                self.close(c, close);
            }
            Err(v) => self.close(c, Close::from_violation(v)),
        }
    }

    /// The socket went away (EOF, reset).
    fn drop_socket(&mut self, c: usize) {
        self.close(c, Close::Eof);
    }

    /// Moves the clock and runs what the server's sweep runs.
    fn advance(&mut self, by: Duration) {
        self.now += by;
        let now = self.now;
        let expired: Vec<usize> = (0..self.conns.len())
            .filter(|&c| self.conns[c].open && self.conns[c].liveness.expired(now))
            .collect();
        for c in expired {
            self.close(c, Close::Timeout);
        }
        let ids: Vec<String> = self.sessions.keys().cloned().collect();
        for id in ids {
            let s = &self.sessions[&id];
            let due = lifecycle::due(
                now,
                s.conn.is_some(),
                s.will.as_ref().map(|w| w.0),
                s.expires,
            );
            if due.expired {
                self.discard(&id);
            } else if due.will
                && let Some((_, will)) = self.sessions.get_mut(&id).unwrap().will.take()
            {
                self.route(will);
            }
        }
    }

    /// A connection ends for `reason`: the core says what the client is told and whether
    /// its Will goes out.
    fn close(&mut self, c: usize, reason: Close) {
        if !self.conns[c].open {
            return;
        }
        let conn = &self.conns[c];
        let phase = if conn.client.is_some() {
            Phase::Connected
        } else {
            Phase::AwaitingConnect
        };
        let version = if conn.v5 {
            ProtocolVersion::V5
        } else {
            ProtocolVersion::V311
        };
        if let Some(code) = reason.disconnect_reason(phase, version) {
            self.conns[c].seen.push(Seen::Disconnect(code.0));
        }
        self.shut(c);
        let Some(id) = self.conns[c].client.clone() else {
            return;
        };
        let will = self.conns[c]
            .will
            .take()
            .filter(|_| reason.publishes_will());
        let delay = self.conns[c].will_delay;
        let Some(stored) = self.sessions.get_mut(&id) else {
            return;
        };
        if stored.conn != Some(c) {
            return;
        }
        stored.conn = None;
        let fate = lifecycle::after_close(self.now, will.is_some(), delay, stored.expiry);
        let origin = stored.session.id;
        let will = will.map(|w| {
            Arc::new(publish::message(
                w.topic,
                w.payload,
                w.qos,
                w.retain,
                w.properties,
                origin,
                self.now,
            ))
        });
        match fate.session {
            SessionFate::EndsNow => {}
            SessionFate::Kept => stored.expires = None,
            SessionFate::ExpiresAt(at) => stored.expires = Some(at),
        }
        match (will, fate.will) {
            (Some(will), WillFate::At(at)) => stored.will = Some((at, will)),
            (Some(will), _) => self.route(will),
            (None, _) => {}
        }
        if fate.session == SessionFate::EndsNow {
            self.discard(&id);
        }
    }

    fn shut(&mut self, c: usize) {
        let conn = &mut self.conns[c];
        conn.open = false;
        conn.seen.push(Seen::Closed);
    }

    /// Ends a session; a Will still waiting goes out with it [MQTT-3.1.2-8].
    fn discard(&mut self, id: &str) {
        let Some(stored) = self.sessions.remove(id) else {
            return;
        };
        for filter in stored.session.subscriptions.keys() {
            self.index.unsubscribe(stored.session.id, filter);
        }
        self.by_id.remove(&stored.session.id);
        if let Some((_, will)) = stored.will {
            self.route(will);
        }
    }

    /// What client `c` saw since the last call.
    fn take(&mut self, c: usize) -> Vec<Seen> {
        std::mem::take(&mut self.conns[c].seen)
    }
}

fn seen_publish(msg: &Message, now: Instant) -> Seen {
    Seen::Publish(
        msg.topic.to_string(),
        String::from_utf8_lossy(&msg.payload).into_owned(),
        msg.remaining_expiry(now),
    )
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A 5.0 CONNECT with a Session Expiry Interval.
fn v5(id: &str, expiry: u32, keep_alive: u16) -> Connect {
    let mut c = Connect::new(id);
    c.protocol = ProtocolVersion::V5;
    c.keep_alive = keep_alive;
    c.clean_start = false;
    if expiry > 0 {
        c.properties.push(Property::SessionExpiryInterval(expiry));
    }
    c
}

fn with_will(mut c: Connect, topic: &str, delay: u32) -> Connect {
    let mut properties = Properties::new();
    if delay > 0 {
        properties.push(Property::WillDelayInterval(delay));
    }
    c.will = Some(LastWill {
        topic: TopicName::new(topic).unwrap(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties,
    });
    c
}

fn connack(present: bool) -> Seen {
    Seen::ConnAck { present, code: 0 }
}

fn will_seen(topic: &str) -> Seen {
    Seen::Publish(topic.into(), "gone".into(), None)
}

/// A subscriber to `filter` with a session that lasts.
fn watcher(w: &mut World, id: &str, filter: &str) -> usize {
    let c = w.client(v5(id, u32::MAX, 0));
    w.subscribe(c, filter, QoS::AtLeastOnce);
    assert_eq!(w.take(c), [connack(false)]);
    c
}

// ---------------------------------------------------------------------------------------
// Keep alive
// ---------------------------------------------------------------------------------------

/// 5.0 [MQTT-3.1.2-22]: silence past 1.5 × keep alive closes the connection, with DISCONNECT
/// 0x8D for a 5.0 client; any packet restarts the clock.
#[test]
fn v5_keep_alive_expires_at_one_and_a_half_times() {
    let mut w = World::new();
    let c = w.client(v5("k", 0, 10));
    assert_eq!(w.take(c), [connack(false)]);
    w.advance(secs(14));
    w.ping(c);
    w.advance(secs(14));
    assert_eq!(w.take(c), [], "a packet 14 s in restarted the 15 s clock");
    w.advance(millis(999));
    assert_eq!(w.take(c), [], "still inside 15 s of the last packet");
    w.advance(millis(1));
    // [MQTT-3.1.2-22]; no Server Keep Alive in CONNACK: the client's is enforced
    // [MQTT-3.2.2-22].
    assert_eq!(
        w.take(c),
        [Seen::Disconnect(0x8D), Seen::Closed],
        "[MQTT-3.1.2-22]"
    );
}

/// [MQTT-3.1.2-24] (3.1.1): the same rule, closed without a DISCONNECT; its Will is published.
#[test]
fn v311_keep_alive_expiry_closes_and_publishes_the_will() {
    let mut w = World::new();
    let sub = watcher(&mut w, "sub", "wills/#");
    let mut connect = with_will(Connect::new("dev"), "wills/dev", 0);
    connect.keep_alive = 2;
    let c = w.client(connect);
    w.advance(millis(2999));
    assert_eq!(w.take(c), [connack(false)]);
    w.advance(millis(1));
    assert_eq!(w.take(c), [Seen::Closed], "[MQTT-3.1.2-24]");
    assert_eq!(w.take(sub), [will_seen("wills/dev")], "[MQTT-3.1.2-8]");
}

/// A connection that never sends CONNECT is closed after the CONNECT timeout, however many
/// bytes it trickles: only a connected client's input restarts the clock.
#[test]
fn connect_timeout_is_not_extended_by_input() {
    let mut w = World::new();
    let c = w.accept();
    for _ in 0..9 {
        w.advance(secs(1));
        w.trickle(c);
    }
    assert_eq!(w.take(c), []);
    w.advance(secs(1));
    assert_eq!(
        w.take(c),
        [Seen::Closed],
        "no DISCONNECT before a CONNACK [MQTT-3.14.0-1]"
    );
}

/// Keep alive 0 turns the mechanism off (spec 3.1.2.10): an hour of silence is fine.
#[test]
fn keep_alive_zero_never_times_out() {
    let mut w = World::new();
    let c = w.client(v5("quiet", 0, 0));
    w.advance(secs(3600));
    assert_eq!(w.take(c), [connack(false)]);
}

/// The broker's maximum keep alive replaces a longer (or absent) one (sent as Server Keep
/// Alive, spec 3.2.2.3.14), and is what the broker enforces.
#[test]
fn v5_server_keep_alive_is_enforced() {
    let mut w = World::new();
    w.limits.max_keep_alive = 4;
    let c = w.client(v5("lazy", 0, 600));
    w.advance(millis(5999));
    assert_eq!(w.take(c), [connack(false)]);
    w.advance(millis(1));
    assert_eq!(
        w.take(c),
        [Seen::Disconnect(0x8D), Seen::Closed],
        "Server Keep Alive"
    );
}

// ---------------------------------------------------------------------------------------
// Takeover
// ---------------------------------------------------------------------------------------

/// 5.0 [MQTT-3.1.4-3]: a second CONNECT with the same client id closes the first connection
/// with DISCONNECT 0x8E; the session continues on the new one (Clean Start 0), and the old
/// connection's Will is published (it did not end with a normal DISCONNECT).
#[test]
fn v5_takeover_closes_the_old_connection_and_keeps_the_session() {
    let mut w = World::new();
    let sub = watcher(&mut w, "sub", "wills/#");
    let first = w.client(with_will(v5("dup", 60, 0), "wills/dup", 0));
    w.subscribe(first, "news", QoS::AtLeastOnce);
    let second = w.client(v5("dup", 60, 0));
    assert_eq!(
        w.take(first),
        [connack(false), Seen::Disconnect(0x8E), Seen::Closed],
        "[MQTT-3.1.4-3]"
    );
    assert_eq!(
        w.take(second),
        [connack(true)],
        "[MQTT-3.1.2-5] the session went on"
    );
    assert_eq!(w.take(sub), [will_seen("wills/dup")], "[MQTT-3.1.2-8]");
    w.publish(None, "news", "n1", None);
    assert_eq!(
        w.take(second),
        [Seen::Publish("news".into(), "n1".into(), None)],
        "its subscription went on too"
    );
}

/// Takeover with Clean Start 1: the old session is discarded [MQTT-3.1.2-4], its
/// subscriptions with it.
#[test]
fn v5_takeover_with_clean_start_discards_the_session() {
    let mut w = World::new();
    let first = w.client(v5("dup", 60, 0));
    w.subscribe(first, "news", QoS::AtLeastOnce);
    let mut clean = v5("dup", 60, 0);
    clean.clean_start = true;
    let second = w.client(clean);
    assert_eq!(w.take(second), [connack(false)], "[MQTT-3.1.2-4]");
    w.publish(None, "news", "n1", None);
    assert_eq!(
        w.take(second),
        [],
        "the old subscription went with the session"
    );
}

// ---------------------------------------------------------------------------------------
// Will Delay
// ---------------------------------------------------------------------------------------

/// 5.0 [MQTT-3.1.3-9]: the Will waits for its delay and goes out when it ends.
#[test]
fn v5_will_waits_for_its_delay() {
    let mut w = World::new();
    let sub = watcher(&mut w, "sub", "wills/#");
    let c = w.client(with_will(v5("dev", 300, 0), "wills/dev", 30));
    w.drop_socket(c);
    w.advance(secs(29));
    assert_eq!(w.take(sub), [], "not before its delay [MQTT-3.1.3-9]");
    w.advance(secs(1));
    assert_eq!(w.take(sub), [will_seen("wills/dev")], "[MQTT-3.1.2-8]");
    w.advance(secs(300));
    assert_eq!(w.take(sub), [], "sent once");
}

/// 5.0 [MQTT-3.1.3-9]: a client back before the delay ends cancels its Will.
#[test]
fn v5_will_is_cancelled_by_a_timely_reconnect() {
    let mut w = World::new();
    let sub = watcher(&mut w, "sub", "wills/#");
    let c = w.client(with_will(v5("dev", 300, 0), "wills/dev", 30));
    w.drop_socket(c);
    w.advance(secs(20));
    let back = w.client(v5("dev", 300, 0));
    assert_eq!(w.take(back), [connack(true)]);
    w.advance(secs(600));
    assert_eq!(w.take(sub), [], "[MQTT-3.1.3-9] the Will was not sent");
}

/// 5.0 [MQTT-3.1.2-8]: the Will goes out when the session ends, if that comes before the
/// delay.
#[test]
fn v5_will_goes_out_when_the_session_ends_first() {
    let mut w = World::new();
    let sub = watcher(&mut w, "sub", "wills/#");
    let c = w.client(with_will(v5("dev", 10, 0), "wills/dev", 3600));
    w.drop_socket(c);
    w.advance(secs(9));
    assert_eq!(w.take(sub), []);
    w.advance(secs(1));
    assert_eq!(w.take(sub), [will_seen("wills/dev")], "[MQTT-3.1.2-8]");
}

/// [MQTT-3.1.2-10] / 5.0 [MQTT-3.14.4-3]: a normal DISCONNECT discards the Will; reason 0x04
/// publishes it.
#[test]
fn v5_disconnect_decides_the_will() {
    let mut w = World::new();
    let sub = watcher(&mut w, "sub", "wills/#");
    let a = w.client(with_will(v5("a", 0, 0), "wills/a", 0));
    w.disconnect(a, Disconnect::new(ReasonCode::SUCCESS));
    let b = w.client(with_will(v5("b", 0, 0), "wills/b", 0));
    w.disconnect(b, Disconnect::new(ReasonCode::DISCONNECT_WITH_WILL));
    assert_eq!(w.take(sub), [will_seen("wills/b")], "[MQTT-3.14.4-3]");
}

// ---------------------------------------------------------------------------------------
// Session expiry
// ---------------------------------------------------------------------------------------

/// 5.0 [MQTT-3.1.2-23]: the session outlives its connection by its expiry interval, queueing
/// what arrives; after it, it is gone.
#[test]
fn v5_session_expires_after_its_interval() {
    let mut w = World::new();
    let c = w.client(v5("s", 60, 0));
    w.subscribe(c, "t", QoS::AtLeastOnce);
    w.drop_socket(c);
    w.advance(secs(59));
    w.publish(None, "t", "kept", None);
    let back = w.client(v5("s", 60, 0));
    assert_eq!(
        w.take(back),
        [
            connack(true),
            Seen::Publish("t".into(), "kept".into(), None)
        ],
        "[MQTT-3.1.2-23] within its interval the session and its queue stay"
    );
    w.drop_socket(back);
    w.advance(secs(60));
    let late = w.client(v5("s", 60, 0));
    assert_eq!(
        w.take(late),
        [connack(false)],
        "expired 60 s after the close"
    );
}

/// The interval counts from the close: a connected session never expires.
#[test]
fn v5_online_session_does_not_expire() {
    let mut w = World::new();
    let c = w.client(v5("s", 5, 0));
    w.subscribe(c, "t", QoS::AtLeastOnce);
    w.advance(secs(3600));
    w.publish(None, "t", "still", None);
    assert_eq!(
        w.take(c),
        [
            connack(false),
            Seen::Publish("t".into(), "still".into(), None)
        ]
    );
}

/// 5.0 spec 3.14.2.2.2: DISCONNECT may change the expiry (here: to 0, ending the session now),
/// but a session that had 0 cannot get one (protocol error 0x82, and the Will goes out).
#[test]
fn v5_disconnect_changes_the_expiry_but_not_from_zero() {
    let mut w = World::new();
    let c = w.client(v5("s", 600, 0));
    let mut d = Disconnect::new(ReasonCode::SUCCESS);
    d.properties.push(Property::SessionExpiryInterval(0));
    w.disconnect(c, d);
    let back = w.client(v5("s", 600, 0));
    assert_eq!(
        w.take(back),
        [connack(false)],
        "expiry 0 from DISCONNECT ended it"
    );

    let sub = watcher(&mut w, "sub", "wills/#");
    let z = w.client(with_will(v5("z", 0, 0), "wills/z", 0));
    let mut d = Disconnect::new(ReasonCode::SUCCESS);
    d.properties.push(Property::SessionExpiryInterval(60));
    w.disconnect(z, d);
    assert_eq!(
        w.take(z),
        [connack(false), Seen::Disconnect(0x82), Seen::Closed],
        "spec 3.14.2.2.2: 0 cannot become non-zero"
    );
    assert_eq!(w.take(sub), [will_seen("wills/z")]);
}

/// 0xFFFFFFFF: the session never expires.
#[test]
fn v5_session_expiry_max_is_forever() {
    let mut w = World::new();
    let c = w.client(v5("s", u32::MAX, 0));
    w.drop_socket(c);
    w.advance(secs(10 * 365 * 24 * 3600));
    let back = w.client(v5("s", u32::MAX, 0));
    assert_eq!(w.take(back), [connack(true)]);
}

// ---------------------------------------------------------------------------------------
// Message expiry
// ---------------------------------------------------------------------------------------

/// 5.0 [MQTT-3.3.2-5]: a queued message whose interval passes is never sent;
/// [MQTT-3.3.2-6]: one that is sent carries what is left of its interval.
#[test]
fn v5_queued_messages_expire_and_carry_what_is_left() {
    let mut w = World::new();
    let c = w.client(v5("s", 600, 0));
    w.subscribe(c, "t", QoS::AtLeastOnce);
    w.drop_socket(c);
    w.publish(None, "t", "short", Some(5));
    w.publish(None, "t", "long", Some(100));
    w.advance(secs(30));
    let back = w.client(v5("s", 600, 0));
    assert_eq!(
        w.take(back),
        [
            connack(true),
            Seen::Publish("t".into(), "long".into(), Some(70)),
        ],
        "[MQTT-3.3.2-5] [MQTT-3.3.2-6]"
    );
}

/// The same for retained messages: a subscriber after the interval gets nothing, one before it
/// gets the remainder.
#[test]
fn v5_retained_messages_expire() {
    let mut w = World::new();
    w.retain("r/short", "s", Some(10));
    w.retain("r/long", "l", Some(100));
    w.advance(secs(40));
    let c = w.client(v5("s", 0, 0));
    w.subscribe(c, "r/#", QoS::AtLeastOnce);
    assert_eq!(
        w.take(c),
        [
            connack(false),
            Seen::Publish("r/long".into(), "l".into(), Some(60))
        ],
        "[MQTT-3.3.2-5] [MQTT-3.3.2-6]"
    );
}

/// A connected client that trickles a packet (or never finishes one) is closed
/// `PACKET_TIMEOUT` after the pass that left it unfinished, whatever its keep alive: bytes
/// are not packets [MQTT-3.1.2-24]; a 5.0 client is told 0x8D first.
#[test]
fn v5_unfinished_packet_times_out_despite_a_long_keep_alive() {
    let mut w = World::new();
    let c = w.client(v5("slow", 0, 600));
    assert_eq!(w.take(c), [connack(false)]);
    w.advance(secs(1));
    w.trickle(c);
    for _ in 0..9 {
        w.advance(secs(1));
        w.trickle(c); // one byte a second: never pushes the limit back
    }
    assert_eq!(w.take(c), []);
    w.advance(secs(1));
    assert_eq!(w.take(c), [Seen::Disconnect(0x8D), Seen::Closed]);
    // Finishing the packet in time hands the clock back to the keep alive.
    let c = w.client(v5("quick", 0, 600));
    w.take(c);
    w.trickle(c);
    w.advance(secs(5));
    w.ping(c);
    w.advance(secs(600));
    assert_eq!(w.take(c), [], "inside 1.5 x 600 s");
}
