//! Packet handling on a connected session, and the route from a PUBLISH to its subscribers.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use foldhash::{HashSet, HashSetExt};
use vireo_broker::protocol::acks::{self, AckAction};
use vireo_broker::protocol::acl;
use vireo_broker::protocol::publish::OutAlias;
use vireo_broker::protocol::subscribe::{self as subscription, Filter, Refusal};
use vireo_broker::protocol::{connection, disconnect, publish as inbound};
use vireo_broker::{Enqueued, Message, Outgoing, Recipient, Session, Subscriptions};
use vireo_codec::{
    Ack, ByteString, Packet, PacketId, Property, ProtocolVersion, Publish, PublishHeader, QoS,
    QosPid, ReasonCode, SubAck, Subscribe, Unsubscribe,
};

use crate::conn::{Close, Conn, ConnState};
use crate::frames::Span;
use crate::shared::Mailbox;
use crate::worker::{Worker, home_of_session, slot_of_session};

const PINGRESP: &[u8] = &[0xD0, 0x00];
/// QoS 1/2 payloads up to this size are copied into the PUBLISH frame rather than shared.
const INLINE_PAYLOAD: usize = 256;

/// The acknowledgement a PUBLISH at `qos` gets, with `reason`: PUBACK for QoS 1, PUBREC for
/// QoS 2 [MQTT-3.3.4-1], none for QoS 0.
#[inline]
fn ack_for(qos: QosPid, reason: ReasonCode) -> Option<Packet> {
    let ack = |pid| {
        let mut ack = Ack::new(pid);
        ack.reason = reason;
        ack
    };
    Some(match qos {
        QosPid::AtMostOnce => return None,
        QosPid::AtLeastOnce(pid) => Packet::PubAck(ack(pid)),
        QosPid::ExactlyOnce(pid) => Packet::PubRec(ack(pid)),
    })
}

impl Worker {
    /// One line per packet type.
    pub(crate) fn handle(&mut self, key: usize, packet: Packet) -> Result<(), Close> {
        let Some(conn) = self.conns.get(key) else {
            return Ok(());
        };
        // The core's state machine first: which packets this phase takes.
        if let Err(no) = connection::admit(conn.state.phase(), &packet) {
            tracing::info!(peer = %conn.peer, packet = packet.name(), "{}", no.why);
            return Err(no.close);
        }
        let skey = match conn.state {
            ConnState::Connected { session } => session as usize,
            ConnState::AwaitingConnect => {
                let Packet::Connect(c) = packet else {
                    return Err(Close::PROTOCOL); // not admitted
                };
                return self.on_connect(key, c);
            }
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
            Packet::Disconnect(d) => self.on_disconnect(skey, &d),
            // Not admitted while connected (see `connection::admit`).
            Packet::Connect(_)
            | Packet::Auth(_)
            | Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp => Err(Close::PROTOCOL),
        }
    }

    fn push_frame(&mut self, key: usize, frame: Bytes) {
        if let Some(conn) = self.conns.get_mut(key)
            && conn.push(frame)
        {
            self.dirty.push(key);
        }
    }

    /// Pushes an acknowledgement that confirms state: with `persistence = "sync"`, once that
    /// state is on disk (see `holds`).
    #[inline]
    fn push_ack(&mut self, key: usize, ack: Packet) {
        if self.holds.on {
            self.holds.hold_ack(key, ack);
        } else {
            self.push_packet(key, &ack);
        }
    }

    fn push_packet(&mut self, key: usize, packet: &Packet) {
        if let Some(conn) = self.conns.get_mut(key)
            && conn.push_packet(packet)
        {
            self.dirty.push(key);
        }
    }

    /// DISCONNECT: discards the Will (unless 5.0 reason 0x04 keeps it) and takes a new
    /// Session Expiry Interval.
    fn on_disconnect(&mut self, skey: usize, d: &vireo_codec::Disconnect) -> Result<(), Close> {
        let Some(slot) = self.sessions.get_mut(skey) else {
            return Err(Close::Disconnect);
        };
        match disconnect::on_disconnect(d, slot.expiry_secs) {
            Ok(ending) => {
                if let Some(expiry) = ending.session_expiry {
                    slot.expiry_secs = expiry;
                    slot.session.clean = expiry == 0;
                }
                Err(if ending.publish_will {
                    Close::DisconnectWithWill
                } else {
                    Close::Disconnect
                })
            }
            Err(v) => {
                tracing::info!("DISCONNECT sets a session expiry after CONNECT's 0");
                Err(Close::Protocol(v.0))
            }
        }
    }

    fn on_publish(&mut self, key: usize, skey: usize, mut p: Publish) -> Result<(), Close> {
        self.shared
            .stats
            .publishes_in
            .fetch_add(1, Ordering::Relaxed);
        let Some(conn) = self.conns.get_mut(key) else {
            return Ok(());
        };
        let version = conn.version;
        let limits = &self.shared.limits;
        if version.is_v5()
            && let peer = conn.peer
            && let Some(v5) = conn.v5_mut()
        {
            v5.aliases
                .resolve(&mut p, limits.topic_alias_maximum)
                .and_then(|()| inbound::check(&p, version, limits))
                .map_err(|v| {
                    tracing::info!(%peer, reason = v.0.0, "PUBLISH refused");
                    Close::Protocol(v.0)
                })?;
        }
        if !inbound::topic_within_limits(&p.topic, limits) {
            tracing::info!(
                topic_len = p.topic.len(),
                "topic over the configured length/levels"
            );
            return Err(Close::Limit(ReasonCode::TOPIC_NAME_INVALID));
        }
        if version.is_v5() && !inbound::payload_format_valid(&p.properties, &p.payload) {
            // Payload Format Indicator 1 with a payload that is not UTF-8: 0x99 on the ack, or
            // DISCONNECT at QoS 0 (spec 3.3.2.3.2).
            let Some(ack) = ack_for(p.qos, ReasonCode::PAYLOAD_FORMAT_INVALID) else {
                return Err(Close::Protocol(ReasonCode::PAYLOAD_FORMAT_INVALID));
            };
            self.push_packet(key, &ack);
            return Ok(());
        }
        if let Some(acl) = self
            .conns
            .get_mut(key)
            .and_then(|c| c.acl_mut(&self.shared))
            && !acl.may_publish(&p.topic)
        {
            return self.refused_publish(key, skey, p.qos, version, &p.topic);
        }
        if p.qos != QosPid::AtMostOnce
            && self
                .persist
                .as_ref()
                .is_some_and(|s| s.durable().is_failing())
        {
            // The store cannot write (a full disk): a message it could not keep is not
            // taken, so nothing is acknowledged that a crash would lose.
            self.shared
                .stats
                .refused_store_failing
                .fetch_add(1, Ordering::Relaxed);
            let Some(ack) = ack_for(p.qos, ReasonCode::QUOTA_EXCEEDED).filter(|_| version.is_v5())
            else {
                return Err(Close::Limit(ReasonCode::QUOTA_EXCEEDED));
            };
            self.push_packet(key, &ack);
            return Ok(());
        }
        let Some(slot) = self.sessions.get_mut(skey) else {
            return Ok(());
        };
        let deliver = match p.qos {
            QosPid::AtMostOnce | QosPid::AtLeastOnce(_) => true,
            // [MQTT-4.3.3-2]: deliver on first receipt, acknowledge every repeat.
            QosPid::ExactlyOnce(pid) => slot.session.on_incoming_qos2(pid).map_err(|()| {
                tracing::info!("too many QoS 2 messages awaiting PUBREL (Receive Maximum)");
                Close::Limit(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED)
            })?,
        };
        let origin = slot.session.id;
        let qos = p.qos;
        if !deliver {
            // A repeated QoS 2 PUBLISH before PUBREL: acknowledged again, not routed.
            if let QosPid::ExactlyOnce(pid) = qos {
                // Held too: the first receipt's id may not be on disk yet.
                self.push_ack(key, Packet::PubRec(Ack::new(pid)));
            }
            return Ok(());
        }
        let msg = Arc::new(inbound::message(
            p.topic,
            p.payload,
            qos.qos(),
            p.retain,
            p.properties,
            origin,
            self.now,
        ));
        // Matched before the ack (5.0 says 0x10 when nothing matched), delivered after it, so
        // that the publisher's ack comes first when it subscribes to its own topic.
        let matched = self.match_recipients(&msg);
        // [MQTT-3.3.4-1]
        if let Some(ack) = ack_for(qos, inbound::ack_reason(version, matched)) {
            // `sync`: sent once the message is on disk wherever it went.
            self.push_ack(key, ack);
        }
        let throttle = self.deliver_matched(msg);
        // A client with deliveries of its own in flight is not throttled: its acks must keep
        // being read, or its own session would stall.
        if throttle
            && self
                .sessions
                .get(skey)
                .is_none_or(|s| s.session.inflight_len() == 0)
            && let Some(conn) = self.conns.get_mut(key)
        {
            conn.throttled = true;
        }
        Ok(())
    }

    /// A PUBLISH the ACL does not allow: acknowledged as `acl::refused_publish_reason` says,
    /// never routed nor retained, counted.
    fn refused_publish(
        &mut self,
        key: usize,
        skey: usize,
        qos: QosPid,
        version: ProtocolVersion,
        topic: &str,
    ) -> Result<(), Close> {
        self.shared.stats.acl_denied.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%topic, "PUBLISH not allowed by the ACL: dropped");
        let reason = acl::refused_publish_reason(version);
        if let QosPid::ExactlyOnce(pid) = qos
            && reason == ReasonCode::SUCCESS
            && let Some(slot) = self.sessions.get_mut(skey)
        {
            // The exchange goes on to PUBCOMP like any other; a repeat is fine.
            slot.session
                .on_incoming_qos2(pid)
                .map_err(|()| Close::Limit(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED))?;
        }
        if let Some(ack) = ack_for(qos, reason) {
            self.push_packet(key, &ack);
        }
        Ok(())
    }

    /// Routes a message: retained store, then every matching session, locally or batched to
    /// the session's home worker. Says whether any subscriber matched, and whether the
    /// publisher should pause: the message went at QoS 1/2 to a worker with a backlogged
    /// session.
    pub(crate) fn publish(&mut self, msg: Arc<Message>) {
        self.match_recipients(&msg);
        self.deliver_matched(msg);
    }

    /// Stores a retained message, and finds every recipient of `msg` into
    /// `self.recipients`. Returns whether there is any.
    #[inline]
    pub(crate) fn match_recipients(&mut self, msg: &Arc<Message>) -> bool {
        if msg.retain && self.shared.config.retain_available {
            // Stored compacted: a retained message lives long, and must not pin the
            // publisher's whole read buffer. Copied before the store's write lock is taken,
            // so other workers' retained lookups do not wait on the allocation and copy.
            let stored = compact(msg);
            let outcome = match &self.persist {
                None => self.shared.retained.write().set(stored),
                Some(persist) => {
                    // Sent under the store's lock, so the log sees one topic's changes in the
                    // order the store made them; only an `Arc` is cloned here, the store's
                    // thread encodes it.
                    let kept = Arc::clone(&stored);
                    let mut retained = self.shared.retained.write();
                    let outcome = retained.set(stored);
                    match outcome {
                        vireo_broker::RetainOutcome::Stored
                        | vireo_broker::RetainOutcome::Replaced => persist.retained_set(&kept),
                        vireo_broker::RetainOutcome::Deleted => {
                            persist.retained_deleted(&kept.topic);
                        }
                        _ => {}
                    }
                    outcome
                }
            };
            tracing::trace!(?outcome, topic = %msg.topic, "retained");
            if outcome == vireo_broker::RetainOutcome::Refused {
                // Routed all the same, not kept: counted, and logged once per broker.
                let before = self
                    .shared
                    .stats
                    .retained_refused
                    .fetch_add(1, Ordering::Relaxed);
                if before == 0 {
                    tracing::warn!(
                        topic = %msg.topic,
                        "retained store full (max_retained_messages / max_retained_bytes): \
                         new retained topics are not kept (logged once; see Stats::retained_refused)"
                    );
                }
            }
        }
        self.recipients.clear();
        self.shared.index.matches(&msg.topic, &mut self.recipients);
        // One member of each matching `$share/` group (an atomic load when there are none).
        self.shared
            .shared_subs
            .matches(&msg.topic, &mut self.recipients);
        !self.recipients.is_empty()
    }

    /// Delivers `msg` to the recipients [`Worker::match_recipients`] found. Returns whether
    /// the publisher should pause.
    #[inline]
    pub(crate) fn deliver_matched(&mut self, msg: Arc<Message>) -> bool {
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
                throttle |=
                    self.store_behind || mailbox.holds_back(self.shared.in_transit_limit, unsent);
            }
            if home == self.id {
                self.latency.offer(msg.received);
                self.deliver_local(r, &msg, &mut copies);
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
    /// [MQTT-3.8.4-6], with its subscription's options. `copies` holds what is made once per
    /// message for all its recipients.
    pub(crate) fn deliver_local(
        &mut self,
        r: Recipient,
        msg: &Arc<Message>,
        copies: &mut MessageCopies,
    ) {
        let skey = slot_of_session(r.session);
        let Some(slot) = self.sessions.get_mut(skey) else {
            return; // session ended while the message was in flight
        };
        if slot.session.id != r.session {
            return; // ... and its slot was reused by another session
        }
        // 5.0 No Local [MQTT-3.8.3-3]; expired [MQTT-3.3.2-5]. One test for the common case
        // (3.1.1 subscriptions have no flags, most messages no expiry).
        let mut r = r;
        if r.flags != 0 || msg.expires.is_some() {
            if msg.expired(self.now) {
                return;
            }
            if msg.origin == r.session {
                match r.own_qos() {
                    None => return,
                    Some(own) => r.qos = own,
                }
            }
        }
        let qos = msg.qos.min(r.qos);
        if qos == QoS::AtMostOnce {
            let Some(key) = slot.conn() else {
                return; // QoS 0 is not kept for offline sessions
            };
            let limit = self.shared.live.max_output_bytes();
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
                    || self.holds.is_corked(key)
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
            let span = if conn.version.is_v5() {
                // The common case inline: the message's shared 5.0 frame is made, and this
                // recipient needs nothing of its own (no identifier, RETAIN nor alias).
                let plain = r.flags & (Recipient::MORE_IDS | Recipient::RETAIN_AS_PUBLISHED) == 0
                    && r.sub_id == 0;
                let shared = match copies.qos0_frame_v5 {
                    Some(span) if plain => conn.plain_v5_fits(span.len()).map(|f| (span, f)),
                    _ => None,
                };
                let made = match shared {
                    Some((span, fits)) => fits.then_some(span),
                    None => {
                        let subs = &slot.session.subscriptions;
                        qos0_frame_v5(log, conn, subs, r, msg, self.now, copies)
                    }
                };
                match made {
                    Some(span) => span,
                    None => {
                        // Larger than the client's Maximum Packet Size: not sent
                        // [MQTT-3.1.2-24].
                        self.shared
                            .stats
                            .dropped_too_large
                            .fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            } else if let Some(span) = copies.qos0_frame {
                span
            } else {
                let span = log.encode_qos0(msg, false);
                copies.qos0_frame = Some(span);
                span
            };
            if conn.push_span(span, log, key) {
                self.dirty.push(key);
            }
            self.delivered += 1;
            return;
        }
        // 5.0 Retain As Published keeps the publisher's RETAIN [MQTT-3.3.1-13]; otherwise a
        // live delivery has RETAIN 0 [MQTT-3.3.1-12].
        let retain = r.flags & Recipient::RETAIN_AS_PUBLISHED != 0 && msg.retain;
        let sub_id = sub_id_of(&r);
        // A message that will wait long (client away, or more than two windows queued) is
        // stored compacted: as a slice it would pin the publisher's whole read chunk for as
        // long as it waits, which `max_queued_bytes` does not see. Messages about to be sent
        // stay zero-copy (compacting every queued one cost QoS 1 fan-in ~15%).
        let deep = 2 * self.shared.config.max_inflight;
        let waits = slot.conn().is_none() || slot.session.queued_len() >= deep;
        let stored = if waits {
            Arc::clone(copies.compact.get_or_insert_with(|| compact(msg)))
        } else {
            Arc::clone(msg)
        };
        let outcome = slot.session.enqueue_with(stored, qos, retain, sub_id);
        slot.note_deferred(skey, &mut self.deferred);
        if outcome != Enqueued::Dropped {
            self.delivered += 1;
        }
        if outcome != Enqueued::Queued {
            self.shared
                .stats
                .dropped_queued
                .fetch_add(1, Ordering::Relaxed);
        }
        if let Some(key) = slot.conn() {
            self.refill(key);
        }
        self.update_backlog(skey);
    }

    /// Moves what the session may send now (window and output limit permitting) onto the
    /// connection, then owed retained messages.
    pub(crate) fn refill(&mut self, key: usize) {
        let limit = self.shared.live.max_output_bytes();
        let now = self.now;
        // `sync`: a QoS 2 message goes out once it is on disk (see `next_outgoing_durable`).
        let synced = match &self.persist {
            Some(p) if self.holds.on => p.durable().synced_of(self.id),
            _ => u64::MAX,
        };
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
            if let Some(out) = slot.session.next_outgoing_durable(now, synced) {
                match push_outgoing(conn, out, &slot.session.subscriptions, now) {
                    Ok(dirty) => newly_dirty |= dirty,
                    Err(pid) => {
                        // Too large for the client: dropped as if delivered [MQTT-3.1.2-25].
                        slot.session.abandon(pid);
                        self.shared
                            .stats
                            .dropped_too_large
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
                continue;
            }
            if synced != u64::MAX && slot.session.waits_for_disk(synced) {
                break; // the next goes once on disk: owed retained messages wait behind it
            }
            // Retained messages owed after a SUBSCRIBE, paced by the same output limit.
            let Some((msg, qos, sub_id)) = conn.next_owed(&self.shared.retained) else {
                break;
            };
            if msg.expired(now) {
                // Expired while retained: never sent [MQTT-3.3.2-5], and out of the store.
                let mut retained = self.shared.retained.write();
                if retained.remove_if_current(&msg)
                    && let Some(persist) = &self.persist
                {
                    persist.retained_deleted(&msg.topic);
                }
                continue;
            }
            if qos == QoS::AtMostOnce {
                let mut alias = OutAlias::Full;
                let span = if conn.version.is_v5() {
                    let ids = ids_for(sub_id, &slot.session.subscriptions, &msg.topic);
                    let expiry = msg.remaining_expiry(now);
                    alias = conn.out_alias(&msg.topic);
                    self.frames.encode_qos0_v5(&msg, true, expiry, &ids, alias)
                } else {
                    self.frames.encode_qos0(&msg, true)
                };
                if conn.fits(span.len()) {
                    conn.record_alias(&msg.topic, alias);
                    newly_dirty |= conn.push_span(span, &mut self.frames, key);
                } else {
                    self.shared
                        .stats
                        .dropped_too_large
                        .fetch_add(1, Ordering::Relaxed);
                }
            } else {
                let outcome = slot.session.enqueue_with(msg, qos, true, sub_id);
                // Go on while it can be sent, and past one dropped with nothing queued (too
                // large for `max_queued_bytes` on its own): the rest are not held behind it.
                let skipped =
                    matches!(outcome, Enqueued::Dropped) && slot.session.queued_len() == 0;
                if slot.session.has_sendable() || skipped {
                    continue;
                }
                break;
            }
        }
        if synced != u64::MAX && slot.session.waits_for_disk(synced) {
            self.holds.refill_later(key);
        }
        slot.note_deferred(skey, &mut self.deferred);
        if newly_dirty {
            self.dirty.push(key);
        }
    }

    /// Queues a re-sent PUBLISH or PUBREL of session `skey` on connection `key`.
    pub(crate) fn write_outgoing(&mut self, key: usize, skey: usize, out: Outgoing) {
        let now = self.now;
        let (Some(conn), Some(slot)) = (self.conns.get_mut(key), self.sessions.get_mut(skey))
        else {
            return;
        };
        match push_outgoing(conn, out, &slot.session.subscriptions, now) {
            Ok(true) => self.dirty.push(key),
            Ok(false) => {}
            Err(pid) => {
                slot.session.abandon(pid);
                self.shared
                    .stats
                    .dropped_too_large
                    .fetch_add(1, Ordering::Relaxed);
            }
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

    fn version(&self, key: usize) -> vireo_codec::ProtocolVersion {
        self.conns
            .get(key)
            .map_or(vireo_codec::ProtocolVersion::V311, |c| c.version)
    }

    /// Applies what an acknowledgement of a delivery decided.
    fn completed(&mut self, key: usize, skey: usize, action: AckAction) -> Result<(), Close> {
        match action {
            AckAction::Progress => {
                self.progress(key, skey);
                Ok(())
            }
            AckAction::Ignore => Ok(()),
            AckAction::Close(v) => {
                tracing::info!("acknowledgement of the wrong QoS or step; closing");
                Err(Close::Protocol(v.0))
            }
        }
    }

    fn on_puback(&mut self, key: usize, skey: usize, a: &Ack) -> Result<(), Close> {
        // A 5.0 PUBACK with a failure reason acknowledges too [MQTT-4.4.0-2].
        let Some(s) = self.session_mut(skey) else {
            return Ok(());
        };
        let action = acks::completion(s.on_puback(a.packet_id));
        self.completed(key, skey, action)
    }

    fn on_pubrec(&mut self, key: usize, skey: usize, a: &Ack) -> Result<(), Close> {
        let version = self.version(key);
        let Some(s) = self.session_mut(skey) else {
            return Ok(());
        };
        if acks::pubrec_failed(a) {
            // 5.0 PUBREC >= 0x80: the delivery ends, no PUBREL [MQTT-4.3.3-4].
            let action = acks::completion(s.on_pubrec_failed(a.packet_id));
            return self.completed(key, skey, action);
        }
        let outcome = s.on_pubrec(a.packet_id);
        if let AckAction::Close(v) = acks::completion(outcome) {
            tracing::info!("PUBREC for a QoS 1 delivery; closing");
            return Err(Close::Protocol(v.0));
        }
        let rel = acks::pubrel(a.packet_id, outcome, version);
        // `sync`: once the PUBREC is on disk. A client that got the PUBREL delivers and
        // forgets the id; if a crash then lost the PUBREC, the PUBLISH sent again after the
        // restart would look new to it and arrive twice (the crash test found this).
        self.push_ack(key, Packet::PubRel(rel));
        Ok(())
    }

    fn on_pubrel(&mut self, key: usize, skey: usize, a: Ack) -> Result<(), Close> {
        let version = self.version(key);
        let known = self
            .session_mut(skey)
            .is_some_and(|s| s.on_pubrel(a.packet_id));
        // PUBCOMP even for an unknown id, so the client can finish [MQTT-4.3.3-2] (5.0 with
        // 0x92).
        let comp = acks::pubcomp(a.packet_id, known, version);
        // `sync`: once the id is released on disk too, or a re-used id would look like a
        // repeat after a crash and be dropped. An unknown id changed nothing: nothing to
        // wait for (and a flood of them holds nothing).
        if known {
            self.push_ack(key, Packet::PubComp(comp));
        } else {
            self.push_packet(key, &Packet::PubComp(comp));
        }
        Ok(())
    }

    fn on_pubcomp(&mut self, key: usize, skey: usize, a: &Ack) -> Result<(), Close> {
        let Some(s) = self.session_mut(skey) else {
            return Ok(());
        };
        let action = acks::completion(s.on_pubcomp(a.packet_id));
        self.completed(key, skey, action)
    }

    fn on_subscribe(&mut self, key: usize, skey: usize, sub: Subscribe) -> Result<(), Close> {
        let version = self.version(key);
        let bridge = self.conns.get(key).is_some_and(|c| c.bridge);
        let limits = self.shared.limits;
        let sub_id = sub
            .properties
            .find(|p| match p {
                Property::SubscriptionIdentifier(id) => Some(id),
                _ => None,
            })
            .unwrap_or(0);
        let Some(slot) = self.sessions.get_mut(skey) else {
            return Ok(());
        };
        let id = slot.session.id;
        let mut codes = Vec::with_capacity(sub.filters.len());
        // Filters of this SUBSCRIBE already owed their retained messages: a set, since the
        // client chooses how many filters a SUBSCRIBE repeats.
        let mut matched: HashSet<&str> = HashSet::new();
        for (filter, options) in &sub.filters {
            let room = slot.session.subscriptions.len() < limits.max_subscriptions
                || slot.session.subscriptions.contains_key(filter);
            let mut grant =
                match subscription::grant(filter, options, sub_id, version, &limits, room) {
                    Ok(grant) => grant,
                    Err(Refusal::Code(code)) => {
                        // [MQTT-3.8.4-5] failure code for this filter alone.
                        tracing::debug!(%filter, code = code.0, "subscription refused");
                        codes.push(code);
                        continue;
                    }
                    Err(Refusal::Close(v)) => {
                        tracing::info!(%filter, "No Local on a shared subscription [MQTT-3.8.3-4]");
                        return Err(Close::Protocol(v.0));
                    }
                };
            if let Some(acl) = self
                .conns
                .get_mut(key)
                .and_then(|c| c.acl_mut(&self.shared))
                && !acl.may_subscribe(grant.filter.matching())
            {
                tracing::debug!(%filter, "subscription not allowed by the ACL");
                self.shared.stats.acl_denied.fetch_add(1, Ordering::Relaxed);
                codes.push(acl::refused_subscribe_code(version));
                continue;
            }
            if bridge {
                grant.as_bridge();
            }
            let granted = grant.subscribed;
            let r = Recipient {
                session: id,
                qos: granted.qos,
                flags: granted.flags,
                sub_id: granted.sub_id,
            };
            // Copied: the session keeps it, and a slice would pin the read buffer.
            let existed = slot
                .session
                .subscriptions
                .insert(ByteString::from(&**filter), granted)
                .is_some();
            match grant.filter {
                Filter::Plain(f) => {
                    self.shared.index.subscribe_with(f, r);
                }
                Filter::Shared { share, filter } => {
                    self.shared.shared_subs.subscribe(share, filter, r);
                }
            }
            codes.push(grant.code());
            // [MQTT-3.3.1-6] retained messages matching the new subscription (5.0: as its
            // Retain Handling says): once per distinct filter of this SUBSCRIBE, taken from
            // the store a batch at a time as the output drains (`Conn::next_owed`), so a
            // SUBSCRIBE to `#` over a large store costs its first batch here, not the store.
            if !grant.sends_retained(existed) || !matched.insert(filter) {
                continue;
            }
            let until = self.shared.retained.read().seq();
            if let Some(conn) = self.conns.get_mut(key)
                && !conn.owe(filter, granted.qos, granted.sub_id, until)
            {
                tracing::debug!(%filter, "too many retained walks owed: none sent for this filter");
            }
        }
        // [MQTT-3.8.4-1] [MQTT-3.8.4-2] one SUBACK, codes in order [MQTT-3.9.3-1].
        self.push_packet(key, &Packet::SubAck(SubAck::new(sub.packet_id, codes)));
        self.persist_session(skey);
        self.refill(key);
        Ok(())
    }

    fn on_unsubscribe(&mut self, key: usize, skey: usize, u: Unsubscribe) -> Result<(), Close> {
        let version = self.version(key);
        let mut codes = Vec::new();
        if let Some(slot) = self.sessions.get_mut(skey) {
            let id = slot.session.id;
            let mut removed = Vec::new();
            for filter in &u.filters {
                // Literal comparison only [MQTT-3.10.4-1].
                let existed = slot.session.subscriptions.remove(filter).is_some();
                if existed {
                    removed.push(filter);
                }
                if version.is_v5() {
                    // 5.0 [MQTT-3.11.3-1]: a code per filter, in order.
                    codes.push(subscription::unsubscribe_code(existed));
                }
            }
            for filter in removed {
                self.unsubscribe_filter(id, filter);
            }
        } else if version.is_v5() {
            codes.resize(u.filters.len(), ReasonCode::NO_SUBSCRIPTION_EXISTED);
        }
        // Always answered, even when nothing matched [MQTT-3.10.4-4] [MQTT-3.10.4-5].
        self.push_packet(key, &Packet::UnsubAck(SubAck::new(u.packet_id, codes)));
        self.persist_session(skey);
        Ok(())
    }
}

/// The `sub_id` a delivery to `r` carries (see `Outgoing::Publish`).
fn sub_id_of(r: &Recipient) -> u32 {
    if r.flags & Recipient::MORE_IDS != 0 {
        Session::ALL_IDS
    } else {
        r.sub_id
    }
}

/// The 5.0 QoS 0 frame of `msg` for `r`: shared by the message's recipients that need no
/// subscription identifier, RETAIN nor topic alias, else encoded for this one. `None` when it is larger
/// than the client's Maximum Packet Size. Out of line: the 3.1.1 fan-out does not carry it.
#[inline(never)]
fn qos0_frame_v5(
    log: &mut crate::frames::FrameLog,
    conn: &mut Conn,
    subscriptions: &Subscriptions,
    r: Recipient,
    msg: &Message,
    now: std::time::Instant,
    copies: &mut MessageCopies,
) -> Option<Span> {
    let retain = r.flags & Recipient::RETAIN_AS_PUBLISHED != 0 && msg.retain;
    let sub_id = sub_id_of(&r);
    let expiry = msg.remaining_expiry(now);
    let alias = conn.out_alias(&msg.topic);
    let span = if sub_id == 0 && !retain && alias == OutAlias::Full {
        *copies
            .qos0_frame_v5
            .get_or_insert_with(|| log.encode_qos0_v5(msg, false, expiry, &[], alias))
    } else if sub_id == 0 && !retain {
        // Subscribers that took the same topics in the same order hold the same alias for
        // it (fan-out): they share one frame too.
        match copies.qos0_frame_aliased {
            Some((a, span)) if a == alias => span,
            _ => {
                let span = log.encode_qos0_v5(msg, false, expiry, &[], alias);
                copies.qos0_frame_aliased = Some((alias, span));
                span
            }
        }
    } else {
        let ids = ids_for(sub_id, subscriptions, &msg.topic);
        log.encode_qos0_v5(msg, retain, expiry, &ids, alias)
    };
    if !conn.fits(span.len()) {
        return None;
    }
    conn.record_alias(&msg.topic, alias);
    Some(span)
}

/// The subscription identifiers a PUBLISH carries for `sub_id` (see `Outgoing::Publish`).
fn ids_for(
    sub_id: u32,
    subscriptions: &Subscriptions,
    topic: &str,
) -> smallvec::SmallVec<[u32; 2]> {
    match sub_id {
        0 => smallvec::SmallVec::new(),
        Session::ALL_IDS => subscriptions.ids_matching(topic).into_iter().collect(),
        id => smallvec::smallvec![id],
    }
}

/// What one message needs made once, however many sessions of this worker it reaches.
#[derive(Default)]
pub(crate) struct MessageCopies {
    /// Its QoS 0 PUBLISH frame in the worker's frame log, shared by every 3.1.1 QoS 0
    /// recipient.
    qos0_frame: Option<Span>,
    /// The same for 5.0 recipients without subscription identifier or RETAIN.
    qos0_frame_v5: Option<Span>,
    /// The same with a topic alias, for the last alias use seen.
    qos0_frame_aliased: Option<(OutAlias, Span)>,
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
        expires: msg.expires,
        origin: msg.origin,
        received: msg.received,
    })
}

/// Queues a QoS 1/2 PUBLISH (its own small header, the shared payload) or a PUBREL. Returns
/// whether the connection became dirty, or the id of a PUBLISH too large for the client's
/// Maximum Packet Size, which was not queued.
fn push_outgoing(
    conn: &mut Conn,
    out: Outgoing,
    subscriptions: &Subscriptions,
    now: std::time::Instant,
) -> Result<bool, PacketId> {
    match out {
        Outgoing::Publish {
            pid,
            qos,
            dup,
            retain,
            msg,
            sub_id,
        } => {
            let mut header = PublishHeader::new(
                dup,
                QosPid::new(qos, pid),
                retain,
                &msg.topic,
                msg.payload.len(),
            );
            let version = conn.version;
            let ids;
            if version.is_v5() {
                ids = ids_for(sub_id, subscriptions, &msg.topic);
                header.properties = &msg.properties;
                header.message_expiry = msg.remaining_expiry(now);
                header.subscription_ids = &ids;
                let alias = conn.out_alias(&msg.topic);
                crate::frames::apply_alias(&mut header, alias);
                if !conn.fits(header.packet_len(version)) {
                    return Err(pid);
                }
                conn.record_alias(&msg.topic, alias);
            }
            let len = header.len(version);
            // A small payload is copied behind its header: cheaper than sharing it (a
            // reference count taken here and dropped after the write, often on another core's
            // buffer), and consecutive PUBLISHes to one client become one slice.
            let inline = msg.payload.len() <= INLINE_PAYLOAD;
            let start = conn.scratch(if inline { len + msg.payload.len() } else { len });
            if header.encode(version, conn.scratch_buf()).is_err() {
                return Ok(false);
            }
            if inline {
                conn.scratch_buf().extend_from_slice(&msg.payload);
                return Ok(conn.push_scratch(start));
            }
            let dirty = conn.push_scratch(start);
            Ok(conn.push(msg.payload.clone()) || dirty)
        }
        Outgoing::PubRel(pid) => Ok(conn.push_packet(&Packet::PubRel(Ack::new(pid)))),
    }
}
