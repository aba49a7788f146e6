//! Packet handling on a connected session, and the route from a PUBLISH to its subscribers.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use foldhash::{HashSet, HashSetExt};
use vireo_broker::{Enqueued, Message, Outgoing, SessionId};
use vireo_codec::{
    Ack, ByteString, Packet, Publish, PublishHeader, QoS, QosPid, ReasonCode, SubAck, Subscribe,
    Unsubscribe, has_wildcard, validate_topic_filter,
};

use crate::conn::{Close, ConnState};
use crate::frames::Span;
use crate::shared::Mailbox;
use crate::worker::{Worker, home_of_session, slot_of_session};

const PINGRESP: &[u8] = &[0xD0, 0x00];
/// QoS 1/2 payloads up to this size are copied into the PUBLISH frame rather than shared.
const INLINE_PAYLOAD: usize = 256;

impl Worker {
    /// One line per packet type.
    pub(crate) fn handle(&mut self, key: usize, packet: Packet) -> Result<(), Close> {
        let Some(conn) = self.conns.get(key) else {
            return Ok(());
        };
        let (skey, packet) = match (conn.state, packet) {
            (ConnState::AwaitingConnect, Packet::Connect(c)) => return self.on_connect(key, c),
            (ConnState::AwaitingConnect, p) => {
                tracing::info!(peer = %conn.peer, packet = p.name(), "first packet is not CONNECT [MQTT-3.1.0-1]");
                return Err(Close::Protocol);
            }
            (ConnState::Connected { session }, packet) => (session as usize, packet),
        };
        match packet {
            Packet::Publish(p) => self.on_publish(key, skey, p),
            Packet::PubAck(a) => self.on_puback(key, skey, &a),
            Packet::PubRec(a) => self.on_pubrec(key, skey, &a),
            Packet::PubRel(a) => self.on_pubrel(key, skey, a),
            Packet::PubComp(a) => self.on_pubcomp(key, skey, &a),
            Packet::Subscribe(s) => self.on_subscribe(key, skey, s),
            Packet::Unsubscribe(u) => self.on_unsubscribe(key, skey, u),
            Packet::PingReq => {
                self.push_frame(key, Bytes::from_static(PINGRESP)); // [MQTT-3.12.4-1]
                Ok(())
            }
            Packet::Disconnect(_) => Err(Close::Disconnect),
            Packet::Connect(_) => {
                tracing::info!(peer = %conn.peer, "second CONNECT [MQTT-3.1.0-2]");
                Err(Close::Protocol)
            }
            other => {
                tracing::info!(peer = %conn.peer, packet = other.name(), "server-bound packet type not allowed [MQTT-4.8.0-1]");
                Err(Close::Protocol)
            }
        }
    }

    fn push_frame(&mut self, key: usize, frame: Bytes) {
        if let Some(conn) = self.conns.get_mut(key)
            && conn.push(frame)
        {
            self.dirty.push(key);
        }
    }

    fn push_packet(&mut self, key: usize, packet: &Packet) {
        if let Some(conn) = self.conns.get_mut(key)
            && conn.push_packet(packet)
        {
            self.dirty.push(key);
        }
    }

    fn on_publish(&mut self, key: usize, skey: usize, p: Publish) -> Result<(), Close> {
        self.shared
            .stats
            .publishes_in
            .fetch_add(1, Ordering::Relaxed);
        let config = &self.shared.config;
        // Levels can exceed the limit only if the topic is at least that long: skip the count
        // on the hot path for ordinary topics.
        if p.topic.len() > config.max_topic_length
            || (p.topic.len() >= config.max_topic_levels
                && p.topic.bytes().filter(|&b| b == b'/').count() >= config.max_topic_levels)
        {
            tracing::info!(
                topic_len = p.topic.len(),
                "topic over the configured length/levels"
            );
            return Err(Close::Limit);
        }
        let deliver = match p.qos {
            QosPid::AtMostOnce => true,
            QosPid::AtLeastOnce(pid) => {
                self.push_packet(key, &Packet::PubAck(Ack::new(pid))); // [MQTT-3.3.4-1]
                true
            }
            QosPid::ExactlyOnce(pid) => {
                let Some(slot) = self.sessions.get_mut(skey) else {
                    return Ok(());
                };
                // [MQTT-4.3.3-2]: deliver on first receipt, acknowledge every repeat.
                let first = slot.session.on_incoming_qos2(pid).map_err(|()| {
                    tracing::info!("too many QoS 2 messages awaiting PUBREL");
                    Close::Limit
                })?;
                self.push_packet(key, &Packet::PubRec(Ack::new(pid)));
                first
            }
        };
        if deliver {
            let msg = Arc::new(Message {
                topic: p.topic,
                payload: p.payload,
                qos: p.qos.qos(),
                retain: p.retain,
                properties: p.properties,
            });
            let throttle = self.publish(msg);
            // A client with deliveries of its own in flight is not throttled: its acks must
            // keep being read, or its own session would stall.
            let consuming = self
                .sessions
                .get(skey)
                .is_some_and(|s| s.session.inflight_len() > 0);
            if throttle
                && !consuming
                && let Some(conn) = self.conns.get_mut(key)
            {
                conn.throttled = true;
            }
        }
        Ok(())
    }

    /// Routes a message: retained store, then every matching session, locally or batched to
    /// the session's home worker. Returns whether the publisher should pause: the message went
    /// at QoS 1/2 to a worker with a backlogged session.
    pub(crate) fn publish(&mut self, msg: Arc<Message>) -> bool {
        if msg.retain {
            // Stored compacted: a retained message lives long, and must not pin the
            // publisher's whole read buffer. Copied before the store's write lock is taken,
            // so other workers' retained lookups do not wait on the allocation and copy.
            let stored = compact(&msg);
            let outcome = self.shared.retained.write().set(stored);
            tracing::trace!(?outcome, topic = %msg.topic, "retained");
        }
        self.recipients.clear();
        self.shared.index.matches(&msg.topic, &mut self.recipients);
        let mut copies = MessageCopies::default();
        let mut throttle = false;
        // Indexed, not iterated: `deliver_local` needs `&mut self`, and taking the 272-byte
        // list out of `self` and back cost two memcpys per message (callgrind: 7% of fan-in).
        for i in 0..self.recipients.len() {
            let r = self.recipients[i];
            let home = home_of_session(r.session);
            // The target's counters themselves, not this iteration's snapshot: a session that
            // became backlogged a moment ago must hold this publisher back from its next
            // packet on. What this worker has queued for the target in this iteration counts
            // too, since the target does not know of it yet.
            let reliable = r.qos != QoS::AtMostOnce && msg.qos != QoS::AtMostOnce;
            if reliable {
                let unsent = if home == self.id {
                    0
                } else {
                    self.outbox_reliable[home] += 1;
                    self.outbox_reliable[home]
                };
                let mailbox = &self.shared.mailboxes[home];
                throttle |= mailbox.holds_back(self.shared.in_transit_limit, unsent);
            }
            if home == self.id {
                self.deliver_local(r.session, &msg, r.qos, &mut copies);
            } else {
                self.outbox_pending += 1;
                if self.outbox_pending > Mailbox::HIGH_WATER {
                    // Reads stop now, not at the next iteration's check (see `read_loop`).
                    self.congested = true;
                }
                let batch = &mut self.outbox[home];
                match batch.last_mut() {
                    Some(d) if Arc::ptr_eq(&d.msg, &msg) => d.recipients.push(r),
                    _ => batch.push(crate::shared::Delivery {
                        msg: Arc::clone(&msg),
                        recipients: std::iter::once(r).collect(),
                    }),
                }
            }
        }
        throttle
    }

    /// Delivers to one session of this worker at min(published, granted) QoS
    /// [MQTT-3.8.4-6]. `copies` holds what is made once per message for all its recipients.
    pub(crate) fn deliver_local(
        &mut self,
        session: SessionId,
        msg: &Arc<Message>,
        granted: QoS,
        copies: &mut MessageCopies,
    ) {
        let skey = slot_of_session(session);
        let Some(slot) = self.sessions.get_mut(skey) else {
            return; // session ended while the message was in flight
        };
        if slot.session.id != session {
            return; // ... and its slot was reused by another session
        }
        let qos = msg.qos.min(granted);
        if qos == QoS::AtMostOnce {
            let Some(key) = slot.conn else {
                return; // QoS 0 is not kept for offline sessions
            };
            let limit = self.shared.config.max_output_bytes;
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            // A full queue is first written out (a long iteration must not pass for a slow
            // consumer); only if the socket itself is full is the consumer slow: then drop and
            // count, and nobody else waits for it.
            // Tried once per blocked episode: a known-blocked socket is not written again for
            // every message dropped on it.
            if conn.out_bytes() >= limit
                && (conn.write_blocked
                    || conn.flush(&mut self.frames).is_err()
                    || conn.out_bytes() >= limit)
            {
                self.shared
                    .stats
                    .dropped_qos0
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
            let log = &mut self.frames;
            let span = *copies
                .qos0_frame
                .get_or_insert_with(|| log.encode_qos0(msg, false));
            if conn.push_span(span, log, key) {
                self.dirty.push(key);
            }
            return;
        }
        // A message that will wait long (client away, or more than two windows queued) is
        // stored compacted: as a slice it would pin the publisher's whole read chunk for as
        // long as it waits, which `max_queued_bytes` does not see. Messages about to be sent
        // stay zero-copy (compacting every queued one cost QoS 1 fan-in ~15%).
        let deep = 2 * self.shared.config.max_inflight;
        let waits = slot.conn.is_none() || slot.session.queued_len() >= deep;
        let stored = if waits {
            Arc::clone(copies.compact.get_or_insert_with(|| compact(msg)))
        } else {
            Arc::clone(msg)
        };
        match slot.session.enqueue(stored, qos, false) {
            Enqueued::Queued => {}
            Enqueued::QueuedDroppedOldest | Enqueued::Dropped => {
                self.shared
                    .stats
                    .dropped_queued
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(key) = slot.conn {
            self.refill(key);
        }
        self.update_backlog(skey);
    }

    /// Moves what the session may send now (window and output limit permitting) onto the
    /// connection, then owed retained messages.
    pub(crate) fn refill(&mut self, key: usize) {
        let limit = self.shared.config.max_output_bytes;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(skey) = conn.state.session() else {
            return;
        };
        let Some(slot) = self.sessions.get_mut(skey) else {
            return;
        };
        let mut newly_dirty = false;
        while conn.out_bytes() < limit {
            if let Some(out) = slot.session.next_outgoing() {
                newly_dirty |= push_outgoing(conn, out);
                continue;
            }
            // Retained messages owed after a SUBSCRIBE, paced by the same output limit.
            let Some((msg, qos)) = conn.next_owed() else {
                break;
            };
            if qos == QoS::AtMostOnce {
                let span = self.frames.encode_qos0(&msg, true);
                newly_dirty |= conn.push_span(span, &mut self.frames, key);
            } else {
                slot.session.enqueue(msg, qos, true);
                if slot.session.has_sendable() {
                    continue;
                }
                break;
            }
        }
        if newly_dirty {
            self.dirty.push(key);
        }
    }

    pub(crate) fn write_outgoing(&mut self, key: usize, out: Outgoing) {
        if let Some(conn) = self.conns.get_mut(key)
            && push_outgoing(conn, out)
        {
            self.dirty.push(key);
        }
    }

    /// The client completed a delivery: refill its window and re-check its backlog.
    fn progress(&mut self, key: usize, skey: usize) {
        if let Some(slot) = self.sessions.get_mut(skey) {
            slot.last_progress = self.now;
        }
        self.refill(key);
        self.update_backlog(skey);
    }

    fn session_mut(&mut self, skey: usize) -> Option<&mut vireo_broker::Session> {
        self.sessions.get_mut(skey).map(|s| &mut s.session)
    }

    fn on_puback(&mut self, key: usize, skey: usize, a: &Ack) -> Result<(), Close> {
        if let Some(s) = self.session_mut(skey)
            && s.on_puback(a.packet_id)
        {
            self.progress(key, skey);
        }
        Ok(())
    }

    fn on_pubrec(&mut self, key: usize, skey: usize, a: &Ack) -> Result<(), Close> {
        if let Some(s) = self.session_mut(skey) {
            let rel = s.on_pubrec(a.packet_id);
            self.write_outgoing(key, rel);
        }
        Ok(())
    }

    fn on_pubrel(&mut self, key: usize, skey: usize, a: Ack) -> Result<(), Close> {
        if let Some(s) = self.session_mut(skey) {
            s.on_pubrel(a.packet_id);
        }
        // PUBCOMP even for an unknown id, so the client can finish [MQTT-4.3.3-2].
        self.push_packet(key, &Packet::PubComp(Ack::new(a.packet_id)));
        Ok(())
    }

    fn on_pubcomp(&mut self, key: usize, skey: usize, a: &Ack) -> Result<(), Close> {
        if let Some(s) = self.session_mut(skey)
            && s.on_pubcomp(a.packet_id)
        {
            self.progress(key, skey);
        }
        Ok(())
    }

    fn on_subscribe(&mut self, key: usize, skey: usize, sub: Subscribe) -> Result<(), Close> {
        let config = &self.shared.config;
        let (max_qos, max_subs) = (config.max_qos(), config.max_subscriptions);
        let (max_len, max_levels) = (config.max_topic_length, config.max_topic_levels);
        let wildcards = config.wildcard_subscriptions;
        // Owed retained messages per connection are bounded like the retained store itself.
        let max_owed = config.max_retained_messages;
        let Some(slot) = self.sessions.get_mut(skey) else {
            return Ok(());
        };
        let id = slot.session.id;
        let mut codes = Vec::with_capacity(sub.filters.len());
        let mut retained = Vec::new();
        // Filters of this SUBSCRIBE already owed their retained messages: a set, since the
        // client chooses how many filters a SUBSCRIBE repeats.
        let mut matched: HashSet<&str> = HashSet::new();
        for (filter, options) in &sub.filters {
            let valid = validate_topic_filter(filter).is_ok()
                && filter.len() <= max_len
                && filter.split('/').count() <= max_levels
                && (wildcards || !has_wildcard(filter));
            let room = slot.session.subscriptions.len() < max_subs
                || slot.session.subscriptions.contains_key(filter);
            if !valid || !room {
                // [MQTT-3.8.4-5] failure code for this filter alone.
                tracing::debug!(%filter, valid, room, "subscription refused");
                codes.push(ReasonCode::V3_SUBSCRIBE_FAILURE);
                continue;
            }
            let qos = options.qos.min(max_qos);
            self.shared.index.subscribe(id, filter, qos);
            // Copied: the session keeps it, and a slice would pin the read buffer.
            slot.session
                .subscriptions
                .insert(ByteString::from(&**filter), qos);
            codes.push(ReasonCode::granted(qos));
            // [MQTT-3.3.1-6] retained messages matching the new subscription: once per distinct
            // filter of this SUBSCRIBE, and not past `max_owed` already owed (a SUBSCRIBE
            // repeating `#` must not copy the whole store per repetition).
            let owed_now = self.conns.get(key).map_or(0, |c| c.owed_len());
            if !matched.insert(filter) || owed_now >= max_owed {
                continue;
            }
            let room = max_owed.saturating_sub(owed_now);
            self.shared
                .retained
                .read()
                .matching(filter, &mut retained, room);
            if let Some(conn) = self.conns.get_mut(key) {
                let owed = retained.drain(..).map(|m| {
                    let q = m.qos.min(qos);
                    (m, q)
                });
                conn.owe(owed);
            }
        }
        // [MQTT-3.8.4-1] [MQTT-3.8.4-2] one SUBACK, codes in order [MQTT-3.9.3-1].
        self.push_packet(key, &Packet::SubAck(SubAck::new(sub.packet_id, codes)));
        self.refill(key);
        Ok(())
    }

    fn on_unsubscribe(&mut self, key: usize, skey: usize, u: Unsubscribe) -> Result<(), Close> {
        if let Some(slot) = self.sessions.get_mut(skey) {
            for filter in &u.filters {
                // Literal comparison only [MQTT-3.10.4-1].
                if slot.session.subscriptions.remove(filter).is_some() {
                    self.shared.index.unsubscribe(slot.session.id, filter);
                }
            }
        }
        // Always answered, even when nothing matched [MQTT-3.10.4-4] [MQTT-3.10.4-5].
        self.push_packet(key, &Packet::UnsubAck(SubAck::new(u.packet_id, Vec::new())));
        Ok(())
    }
}

/// What one message needs made once, however many sessions of this worker it reaches.
#[derive(Default)]
pub(crate) struct MessageCopies {
    /// Its QoS 0 PUBLISH frame in the worker's frame log, shared by every QoS 0 recipient.
    qos0_frame: Option<Span>,
    /// Its compacted copy, shared by every session queue it waits in.
    compact: Option<Arc<Message>>,
}

/// A copy of `msg` that owns its topic and payload, for storage that outlives the read buffer
/// the message was decoded from.
pub(crate) fn compact(msg: &Arc<Message>) -> Arc<Message> {
    Arc::new(Message {
        topic: msg.topic.detached(),
        payload: Bytes::copy_from_slice(&msg.payload),
        qos: msg.qos,
        retain: msg.retain,
        properties: msg.properties.clone(),
    })
}

/// Queues a QoS 1/2 PUBLISH (its own small header, the shared payload) or a PUBREL.
fn push_outgoing(conn: &mut crate::conn::Conn, out: Outgoing) -> bool {
    match out {
        Outgoing::Publish {
            pid,
            qos,
            dup,
            retain,
            msg,
        } => {
            let header = PublishHeader::new(
                dup,
                QosPid::new(qos, pid),
                retain,
                &msg.topic,
                msg.payload.len(),
            );
            let version = conn.version;
            let len = header.len(version);
            // A small payload is copied behind its header: cheaper than sharing it (a
            // reference count taken here and dropped after the write, often on another core's
            // buffer), and consecutive PUBLISHes to one client become one slice.
            let inline = msg.payload.len() <= INLINE_PAYLOAD;
            let start = conn.scratch(if inline { len + msg.payload.len() } else { len });
            if header.encode(version, conn.scratch_buf()).is_err() {
                return false;
            }
            if inline {
                conn.scratch_buf().extend_from_slice(&msg.payload);
                return conn.push_scratch(start);
            }
            let dirty = conn.push_scratch(start);
            conn.push(msg.payload.clone()) || dirty
        }
        Outgoing::PubRel(pid) => conn.push_packet(&Packet::PubRel(Ack::new(pid))),
    }
}
