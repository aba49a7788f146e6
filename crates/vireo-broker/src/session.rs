//! One client's session: its subscriptions, its outbound QoS 1/2 window, the messages waiting
//! for that window (or for the client to come back), and its inbound QoS 2 ids.
//!
//! Pure state, no I/O: the server asks [`Session::next_outgoing`] for what to send while its
//! socket has room, and reports acks back. QoS 0 messages never enter the session: the server
//! writes them straight to the connection or drops them, as MQTT allows.

use std::collections::VecDeque;
use std::sync::Arc;

use foldhash::{HashMap, HashMapExt, HashSet};
use vireo_codec::{ByteString, PacketId, QoS};

use crate::{Message, SessionId};

/// Bounds on what one session may hold. Every one is a way a client (or its publishers) could
/// otherwise grow the broker's memory without limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Outbound QoS 1/2 messages sent and not yet acknowledged.
    pub max_inflight: usize,
    /// QoS 1/2 messages waiting for the window or for the client to reconnect.
    pub max_queued_messages: usize,
    /// Bytes (topic + payload) of those waiting messages.
    pub max_queued_bytes: usize,
    /// When the queue is full: drop the oldest queued message (true) or the new one (false).
    pub drop_oldest: bool,
    /// Inbound QoS 2 ids awaiting PUBREL; a client past this is disconnected.
    pub max_incoming_qos2: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            max_inflight: 1024,
            max_queued_messages: 10_000,
            max_queued_bytes: 64 * 1024 * 1024,
            drop_oldest: false,
            max_incoming_qos2: 1024,
        }
    }
}

/// Something the session wants written to its client.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// A PUBLISH at QoS 1 or 2 (first send or, with `dup`, a re-send).
    Publish {
        /// Its packet id.
        pid: PacketId,
        /// QoS 1 or 2.
        qos: QoS,
        /// DUP: a re-delivery [MQTT-3.3.1-1].
        dup: bool,
        /// RETAIN as it should go out (set only for retained messages sent on subscribe).
        retain: bool,
        /// The message.
        msg: Arc<Message>,
    },
    /// A PUBREL for a QoS 2 delivery whose PUBREC has arrived.
    PubRel(PacketId),
}

#[derive(Debug)]
enum InflightState {
    /// QoS 1 awaiting PUBACK, or QoS 2 awaiting PUBREC.
    AwaitingAck {
        qos: QoS,
        retain: bool,
        msg: Arc<Message>,
    },
    /// QoS 2 awaiting PUBCOMP: the PUBLISH is never sent again, only the PUBREL [MQTT-4.3.3-1].
    AwaitingPubComp,
}

#[derive(Debug)]
struct Queued {
    qos: QoS,
    retain: bool,
    msg: Arc<Message>,
}

/// Result of offering a message to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Queued for delivery.
    Queued,
    /// Queued, and the oldest queued message was dropped to make room.
    QueuedDroppedOldest,
    /// Not queued: the queue is full.
    Dropped,
}

/// The QoS 1/2 state of a session: allocated on first use, dropped when empty, so that the
/// common idle session (subscriptions only, nothing in flight) costs no more than its header.
#[derive(Debug, Default)]
struct Flow {
    /// Sent, awaiting acknowledgement, in send order (re-sent in that order [MQTT-4.6.0-1]).
    inflight: VecDeque<(PacketId, InflightState)>,
    queue: VecDeque<Queued>,
    queued_bytes: usize,
    incoming_qos2: HashSet<PacketId>,
    /// Ids held by `inflight`, for O(1) allocation checks on the hot path.
    used_pids: HashSet<PacketId>,
}

impl Flow {
    fn is_idle(&self) -> bool {
        self.inflight.is_empty() && self.queue.is_empty() && self.incoming_qos2.is_empty()
    }

    fn position(&self, pid: PacketId) -> Option<usize> {
        self.inflight.iter().position(|(p, _)| *p == pid)
    }

    fn forget(&mut self, i: usize) {
        if let Some((pid, _)) = self.inflight.remove(i) {
            self.used_pids.remove(&pid);
        }
    }
}

/// The filters a session subscribes to, with granted QoS. The map is allocated on the first
/// subscription and dropped with the last, so a session that subscribes to nothing (most idle
/// connections, e.g. publishers) spends 8 bytes on it instead of an empty map's 40.
#[derive(Debug, Default)]
pub struct Subscriptions(Option<Box<HashMap<ByteString, QoS>>>);

impl Subscriptions {
    /// How many filters.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |m| m.len())
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `filter` is subscribed to (literal comparison).
    pub fn contains_key(&self, filter: &str) -> bool {
        self.0.as_ref().is_some_and(|m| m.contains_key(filter))
    }

    /// The QoS granted for `filter`.
    pub fn get(&self, filter: &str) -> Option<QoS> {
        self.0.as_ref().and_then(|m| m.get(filter).copied())
    }

    /// Adds or replaces `filter`; returns the QoS it replaced.
    pub fn insert(&mut self, filter: ByteString, qos: QoS) -> Option<QoS> {
        self.0
            .get_or_insert_with(|| Box::new(HashMap::new()))
            .insert(filter, qos)
    }

    /// Removes `filter`; returns its QoS if it was there.
    pub fn remove(&mut self, filter: &str) -> Option<QoS> {
        let map = self.0.as_mut()?;
        let qos = map.remove(filter);
        if map.is_empty() {
            self.0 = None;
        }
        qos
    }

    /// The filters, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &ByteString> + '_ {
        self.0.iter().flat_map(|m| m.keys())
    }
}

/// A client session.
#[derive(Debug)]
pub struct Session {
    /// Process-unique id; what the subscription index stores.
    pub id: SessionId,
    /// The client identifier it is stored under [MQTT-3.1.3-2]. A `Box<str>` (16 bytes, one
    /// allocation) rather than a shared `ByteString` (32): sessions never hand it out.
    pub client_id: Box<str>,
    /// CleanSession=1: the session ends with its connection [MQTT-3.1.2-6].
    pub clean: bool,
    /// Filters this session subscribes to, with granted QoS; mirrors the index so the session
    /// can remove its own entries when it ends.
    pub subscriptions: Subscriptions,
    /// Shared by every session of a broker.
    limits: Arc<SessionLimits>,
    flow: Option<Box<Flow>>,
    /// Packet id counter; kept outside `flow` so ids keep advancing across idle periods.
    next_pid: u16,
    /// Messages dropped because the queue was full.
    pub dropped: u64,
}

impl Session {
    /// A new, empty session.
    pub fn new(
        id: SessionId,
        client_id: impl Into<Box<str>>,
        clean: bool,
        limits: Arc<SessionLimits>,
    ) -> Self {
        Self {
            id,
            client_id: client_id.into(),
            clean,
            subscriptions: Subscriptions::default(),
            limits,
            flow: None,
            next_pid: 0,
            dropped: 0,
        }
    }

    fn flow_mut(&mut self) -> &mut Flow {
        self.flow.get_or_insert_with(Box::default)
    }

    /// Frees the QoS 1/2 state if nothing is in it. Not done on every acknowledgement: a
    /// subscriber that keeps up empties its state after almost every message, and re-allocating
    /// it each time was most of a QoS 1 fan-in profile's malloc/free (24%). The server calls
    /// this when the session goes offline and, for online sessions, every few seconds.
    pub fn shrink_if_idle(&mut self) {
        if self.flow.as_ref().is_some_and(|f| f.is_idle()) {
            self.flow = None;
        }
    }

    /// Queues a QoS 1/2 message ([MQTT-3.1.2-5] while offline, or behind a full window).
    pub fn enqueue(&mut self, msg: Arc<Message>, qos: QoS, retain: bool) -> Enqueued {
        debug_assert!(qos != QoS::AtMostOnce, "QoS 0 never enters the session");
        let limits = Arc::clone(&self.limits);
        let weight = msg.weight();
        if limits.max_queued_messages == 0 || weight > limits.max_queued_bytes {
            self.dropped += 1;
            return Enqueued::Dropped;
        }
        let flow = self.flow_mut();
        let mut outcome = Enqueued::Queued;
        let mut dropped = 0;
        while flow.queue.len() >= limits.max_queued_messages
            || (flow.queued_bytes + weight > limits.max_queued_bytes && !flow.queue.is_empty())
        {
            if !limits.drop_oldest {
                outcome = Enqueued::Dropped;
                dropped += 1;
                break;
            }
            let Some(old) = flow.queue.pop_front() else {
                break;
            };
            flow.queued_bytes -= old.msg.weight();
            dropped += 1;
            outcome = Enqueued::QueuedDroppedOldest;
        }
        if outcome != Enqueued::Dropped {
            flow.queued_bytes += weight;
            flow.queue.push_back(Queued { qos, retain, msg });
        }
        self.dropped += dropped;
        outcome
    }

    /// Takes the next queued message into the inflight window, if the window has room.
    pub fn next_outgoing(&mut self) -> Option<Outgoing> {
        let flow = self.flow.as_ref()?;
        if flow.inflight.len() >= self.limits.max_inflight || flow.queue.is_empty() {
            return None;
        }
        let pid = self.allocate_pid()?;
        let flow = self.flow_mut();
        let q = flow.queue.pop_front()?;
        flow.queued_bytes -= q.msg.weight();
        flow.inflight.push_back((
            pid,
            InflightState::AwaitingAck {
                qos: q.qos,
                retain: q.retain,
                msg: Arc::clone(&q.msg),
            },
        ));
        Some(Outgoing::Publish {
            pid,
            qos: q.qos,
            dup: false,
            retain: q.retain,
            msg: q.msg,
        })
    }

    /// A fresh packet id not used by any inflight message [MQTT-2.3.1-4]. `None` only if all
    /// 65,535 are in use, which the inflight limit prevents.
    fn allocate_pid(&mut self) -> Option<PacketId> {
        for _ in 0..=u16::MAX {
            self.next_pid = self.next_pid.wrapping_add(1);
            if let Some(pid) = PacketId::new(self.next_pid)
                && self.flow_mut().used_pids.insert(pid)
            {
                return Some(pid);
            }
        }
        None
    }

    /// PUBACK: completes a QoS 1 delivery. Returns whether it matched one.
    pub fn on_puback(&mut self, pid: PacketId) -> bool {
        let Some(flow) = self.flow.as_mut() else {
            return false;
        };
        match flow.position(pid) {
            Some(i)
                if matches!(
                    flow.inflight[i].1,
                    InflightState::AwaitingAck {
                        qos: QoS::AtLeastOnce,
                        ..
                    }
                ) =>
            {
                flow.forget(i);
                true
            }
            _ => false,
        }
    }

    /// PUBREC: the QoS 2 delivery moves on to PUBREL, which is returned to send. An unknown id
    /// still gets a PUBREL, so the client can finish its side.
    pub fn on_pubrec(&mut self, pid: PacketId) -> Outgoing {
        if let Some(flow) = self.flow.as_mut()
            && let Some(i) = flow.position(pid)
            && matches!(
                flow.inflight[i].1,
                InflightState::AwaitingAck {
                    qos: QoS::ExactlyOnce,
                    ..
                }
            )
        {
            // Moved to the back: PUBRELs, sent now and re-sent on reconnect, follow the order
            // the PUBRECs arrived in [MQTT-4.6.0-4].
            flow.inflight.remove(i);
            flow.inflight
                .push_back((pid, InflightState::AwaitingPubComp));
        }
        Outgoing::PubRel(pid)
    }

    /// PUBCOMP: completes a QoS 2 delivery. Returns whether it matched one.
    pub fn on_pubcomp(&mut self, pid: PacketId) -> bool {
        let Some(flow) = self.flow.as_mut() else {
            return false;
        };
        match flow.position(pid) {
            Some(i) if matches!(flow.inflight[i].1, InflightState::AwaitingPubComp) => {
                flow.forget(i);
                true
            }
            _ => false,
        }
    }

    /// Everything to re-send when the client reconnects to this session, in original order:
    /// unacknowledged PUBLISHes with DUP set and PUBRELs for those already PUBREC'd
    /// [MQTT-4.4.0-1].
    pub fn resend(&self) -> impl Iterator<Item = Outgoing> + '_ {
        self.flow
            .iter()
            .flat_map(|f| f.inflight.iter())
            .map(|(pid, state)| match state {
                InflightState::AwaitingAck { qos, retain, msg } => Outgoing::Publish {
                    pid: *pid,
                    qos: *qos,
                    dup: true,
                    retain: *retain,
                    msg: Arc::clone(msg),
                },
                InflightState::AwaitingPubComp => Outgoing::PubRel(*pid),
            })
    }

    /// An inbound QoS 2 PUBLISH with `pid`: `Ok(true)` the first time (deliver it onward),
    /// `Ok(false)` for a repeat before PUBREL (acknowledge again, deliver nothing)
    /// [MQTT-4.3.3-2]; `Err(())` if the client has too many QoS 2 ids open.
    #[allow(clippy::result_unit_err)]
    pub fn on_incoming_qos2(&mut self, pid: PacketId) -> Result<bool, ()> {
        let max = self.limits.max_incoming_qos2;
        let flow = self.flow_mut();
        if flow.incoming_qos2.contains(&pid) {
            return Ok(false);
        }
        if flow.incoming_qos2.len() >= max {
            return Err(());
        }
        flow.incoming_qos2.insert(pid);
        Ok(true)
    }

    /// PUBREL for an inbound QoS 2 id: forgets it (the id means a new message afterwards).
    pub fn on_pubrel(&mut self, pid: PacketId) {
        if let Some(flow) = self.flow.as_mut() {
            flow.incoming_qos2.remove(&pid);
        }
    }

    /// Outbound messages sent and not yet acknowledged.
    pub fn inflight_len(&self) -> usize {
        self.flow.as_ref().map_or(0, |f| f.inflight.len())
    }

    /// Messages waiting to be sent.
    pub fn queued_len(&self) -> usize {
        self.flow.as_ref().map_or(0, |f| f.queue.len())
    }

    /// Whether anything is waiting that the window would let through now.
    pub fn has_sendable(&self) -> bool {
        self.flow
            .as_ref()
            .is_some_and(|f| !f.queue.is_empty() && f.inflight.len() < self.limits.max_inflight)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use vireo_codec::{Bytes, Properties, TopicName};

    fn msg(n: u8) -> Arc<Message> {
        Arc::new(Message {
            topic: TopicName::try_from("t").unwrap(),
            payload: Bytes::from(vec![n]),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties::new(),
        })
    }

    fn session(limits: SessionLimits) -> Session {
        Session::new(SessionId(1), "c", false, Arc::new(limits))
    }

    fn pid_of(o: &Outgoing) -> PacketId {
        match o {
            Outgoing::Publish { pid, .. } | Outgoing::PubRel(pid) => *pid,
        }
    }

    /// [MQTT-2.3.1-4] distinct non-zero ids while unacknowledged; window bounds inflight.
    #[test]
    fn v311_mqtt_2_3_1_4_window_and_distinct_ids() {
        let mut s = session(SessionLimits {
            max_inflight: 3,
            ..SessionLimits::default()
        });
        for n in 0..5 {
            s.enqueue(msg(n), QoS::AtLeastOnce, false);
        }
        let sent: Vec<_> = std::iter::from_fn(|| s.next_outgoing()).collect();
        assert_eq!(sent.len(), 3, "window of 3");
        let ids: HashSet<_> = sent.iter().map(pid_of).collect();
        assert_eq!(ids.len(), 3);
        assert!(s.on_puback(pid_of(&sent[1])));
        assert!(
            !s.on_puback(pid_of(&sent[1])),
            "second PUBACK matches nothing"
        );
        let next = s.next_outgoing().unwrap();
        assert!(
            !ids.contains(&pid_of(&next)),
            "no unacked id handed out again"
        );
    }

    /// [MQTT-4.4.0-1] [MQTT-4.3.3-1] resend: PUBLISH with DUP for unacked, PUBREL once PUBREC'd.
    #[test]
    fn v311_mqtt_4_4_0_1_resend_in_order() {
        let mut s = session(SessionLimits::default());
        s.enqueue(msg(1), QoS::ExactlyOnce, false);
        s.enqueue(msg(2), QoS::AtLeastOnce, false);
        let a = s.next_outgoing().unwrap();
        let b = s.next_outgoing().unwrap();
        assert!(matches!(s.on_pubrec(pid_of(&a)), Outgoing::PubRel(p) if p == pid_of(&a)));
        // PUBREC'd entries move behind the unacknowledged ones, so PUBRELs keep PUBREC order
        // [MQTT-4.6.0-4].
        let resent: Vec<_> = s.resend().collect();
        assert!(
            matches!(&resent[0], Outgoing::Publish { dup: true, pid, .. } if *pid == pid_of(&b))
        );
        assert!(matches!(resent[1], Outgoing::PubRel(p) if p == pid_of(&a)));
        assert!(s.on_pubcomp(pid_of(&a)));
        assert_eq!(s.inflight_len(), 1);
    }

    /// [MQTT-4.3.3-2] inbound QoS 2: repeats before PUBREL are not new; after PUBREL they are.
    #[test]
    fn v311_mqtt_4_3_3_2_incoming_qos2_once() {
        let mut s = session(SessionLimits::default());
        let p = PacketId::new(9).unwrap();
        assert_eq!(s.on_incoming_qos2(p), Ok(true));
        assert_eq!(s.on_incoming_qos2(p), Ok(false));
        s.on_pubrel(p);
        assert_eq!(s.on_incoming_qos2(p), Ok(true));
    }

    #[test]
    fn queue_is_bounded_drop_new_or_oldest() {
        let limits = SessionLimits {
            max_queued_messages: 2,
            max_inflight: 0,
            ..SessionLimits::default()
        };
        let mut s = session(limits);
        assert_eq!(s.enqueue(msg(1), QoS::AtLeastOnce, false), Enqueued::Queued);
        assert_eq!(s.enqueue(msg(2), QoS::AtLeastOnce, false), Enqueued::Queued);
        assert_eq!(
            s.enqueue(msg(3), QoS::AtLeastOnce, false),
            Enqueued::Dropped
        );
        assert_eq!(s.queued_len(), 2);
        let mut s = session(SessionLimits {
            drop_oldest: true,
            ..limits
        });
        s.enqueue(msg(1), QoS::AtLeastOnce, false);
        s.enqueue(msg(2), QoS::AtLeastOnce, false);
        assert_eq!(
            s.enqueue(msg(3), QoS::AtLeastOnce, false),
            Enqueued::QueuedDroppedOldest
        );
        assert_eq!(s.dropped, 1);
        assert_eq!(s.queued_len(), 2);
    }

    #[test]
    fn incoming_qos2_is_bounded() {
        let mut s = session(SessionLimits {
            max_incoming_qos2: 1,
            ..SessionLimits::default()
        });
        assert_eq!(s.on_incoming_qos2(PacketId::new(1).unwrap()), Ok(true));
        assert_eq!(s.on_incoming_qos2(PacketId::new(2).unwrap()), Err(()));
    }
}
