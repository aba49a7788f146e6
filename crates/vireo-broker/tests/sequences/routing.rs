//! The broker model's packet handling on a connected session and its routing: the server's
//! `routing.rs` (and the frame encoding of `frames.rs`), applied to [`World`].

use std::sync::Arc;
use std::time::Instant;

use vireo_broker::protocol::acks::{self, AckAction};
use vireo_broker::protocol::connection::Close;
use vireo_broker::protocol::disconnect;
use vireo_broker::protocol::publish::{self as inbound, OutAlias};
use vireo_broker::protocol::subscribe::{self as subscription, Filter, Refusal};
use vireo_broker::{Message, Outgoing, Recipient, Session, Subscriptions};
use vireo_codec::{
    Ack, ByteString, BytesMut, Disconnect, Packet, PacketId, Property, ProtocolVersion, Publish,
    PublishHeader, QoS, QosPid, ReasonCode, SubAck, Subscribe, Unsubscribe,
};

use super::{Conn, Event, World};

impl World {
    // ---- routing.rs -------------------------------------------------------------------------

    pub(super) fn on_disconnect(&mut self, skey: usize, d: &Disconnect) -> Result<(), Close> {
        let Some(slot) = self.sessions[skey].as_mut() else {
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
            Err(v) => Err(Close::Protocol(v.0)),
        }
    }

    pub(super) fn on_publish(
        &mut self,
        key: usize,
        skey: usize,
        mut p: Publish,
    ) -> Result<(), Close> {
        let limits = self.cfg.limits;
        let conn = &mut self.conns[key];
        let version = conn.version;
        if version.is_v5()
            && let Some(v5) = conn.v5.as_mut()
        {
            v5.aliases
                .resolve(&mut p, limits.topic_alias_maximum)
                .and_then(|()| inbound::check(&p, version, &limits))
                .map_err(|v| Close::Protocol(v.0))?;
        }
        if p.topic.len() > limits.max_topic_length
            || (p.topic.len() >= limits.max_topic_levels
                && p.topic.bytes().filter(|&b| b == b'/').count() >= limits.max_topic_levels)
        {
            return Err(Close::Limit(ReasonCode::TOPIC_NAME_INVALID));
        }
        if version.is_v5() && !inbound::payload_format_valid(&p.properties, &p.payload) {
            let Some(ack) = ack_for(p.qos, ReasonCode::PAYLOAD_FORMAT_INVALID) else {
                return Err(Close::Protocol(ReasonCode::PAYLOAD_FORMAT_INVALID));
            };
            self.push_packet(key, &ack);
            return Ok(());
        }
        let Some(slot) = self.sessions[skey].as_mut() else {
            return Ok(());
        };
        let deliver = match p.qos {
            QosPid::AtMostOnce | QosPid::AtLeastOnce(_) => true,
            QosPid::ExactlyOnce(pid) => slot
                .session
                .on_incoming_qos2(pid)
                .map_err(|()| Close::Limit(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED))?,
        };
        let origin = slot.session.id;
        let qos = p.qos;
        if !deliver {
            if let QosPid::ExactlyOnce(pid) = qos {
                self.push_packet(key, &Packet::PubRec(Ack::new(pid)));
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
        self.events.push(Event::Routed(Arc::clone(&msg)));
        let matched = self.match_recipients(&msg);
        if let Some(ack) = ack_for(qos, inbound::ack_reason(version, matched)) {
            self.push_packet(key, &ack);
        }
        self.deliver_matched(msg);
        Ok(())
    }

    pub(super) fn publish(&mut self, msg: Arc<Message>) {
        self.match_recipients(&msg);
        self.deliver_matched(msg);
    }

    pub(super) fn match_recipients(&mut self, msg: &Arc<Message>) -> bool {
        if msg.retain && self.cfg.limits.retain_available {
            self.retained.set(Arc::clone(msg));
        }
        self.recipients.clear();
        self.index.matches(&msg.topic, &mut self.recipients);
        self.shared_subs.matches(&msg.topic, &mut self.recipients);
        !self.recipients.is_empty()
    }

    pub(super) fn deliver_matched(&mut self, msg: Arc<Message>) {
        let recipients = std::mem::take(&mut self.recipients);
        for r in &recipients {
            self.deliver_local(*r, &msg);
        }
        self.recipients = recipients;
    }

    /// The server's `deliver_local`.
    pub(super) fn deliver_local(&mut self, r: Recipient, msg: &Arc<Message>) {
        let now = self.now;
        let Some(&skey) = self.by_id.get(&r.session) else {
            return;
        };
        let Some(slot) = self.sessions[skey].as_mut() else {
            return;
        };
        if msg.expired(now) {
            return;
        }
        let mut r = r;
        if msg.origin == r.session {
            match r.own_qos() {
                None => return,
                Some(own) => r.qos = own,
            }
        }
        let qos = msg.qos.min(r.qos);
        self.events.push(Event::Offered {
            sid: r.session,
            msg: Arc::clone(msg),
            qos,
            retained: false,
        });
        if qos == QoS::AtMostOnce {
            let Some(key) = slot.conn else {
                return;
            };
            let conn = &mut self.conns[key];
            let frame = if conn.version.is_v5() {
                qos0_frame_v5(conn, &slot.session.subscriptions, r, msg, now)
            } else {
                Some(encode_qos0(msg, false))
            };
            if let Some(frame) = frame {
                conn.out.extend_from_slice(&frame);
                self.mark_dirty(key);
            }
            return;
        }
        let retain = r.flags & Recipient::RETAIN_AS_PUBLISHED != 0 && msg.retain;
        let sub_id = sub_id_of(&r);
        slot.session
            .enqueue_with(Arc::clone(msg), qos, retain, sub_id);
        if let Some(key) = slot.conn {
            self.refill(key);
        }
    }

    /// The server's `refill`, with no output limit.
    pub(super) fn refill(&mut self, key: usize) {
        let now = self.now;
        let conn = &mut self.conns[key];
        if !conn.open {
            return;
        }
        let Some(skey) = conn.state.session() else {
            return;
        };
        let Some(slot) = self.sessions[skey].as_mut() else {
            return;
        };
        let mut wrote = false;
        loop {
            if let Some(out) = slot.session.next_outgoing(now) {
                match push_outgoing(conn, out, &slot.session.subscriptions, now) {
                    Ok(()) => wrote = true,
                    Err(pid) => slot.session.abandon(pid),
                }
                continue;
            }
            let Some((msg, qos, sub_id)) = conn.owed.pop_front() else {
                break;
            };
            if msg.expired(now) {
                self.retained.remove_if_current(&msg);
                continue;
            }
            if qos == QoS::AtMostOnce {
                let mut alias = OutAlias::Full;
                let frame = if conn.version.is_v5() {
                    let ids = ids_for(sub_id, &slot.session.subscriptions, &msg.topic);
                    let expiry = msg.remaining_expiry(now);
                    alias = conn.out_alias(&msg.topic);
                    encode_qos0_v5(&msg, true, expiry, &ids, alias)
                } else {
                    encode_qos0(&msg, true)
                };
                if conn.fits(frame.len()) {
                    conn.record_alias(&msg.topic, alias);
                    conn.out.extend_from_slice(&frame);
                    wrote = true;
                }
            } else {
                slot.session.enqueue_with(msg, qos, true, sub_id);
                if slot.session.has_sendable() {
                    continue;
                }
                break;
            }
        }
        if wrote {
            self.mark_dirty(key);
        }
    }

    pub(super) fn write_outgoing(&mut self, key: usize, skey: usize, out: Outgoing) {
        let now = self.now;
        let conn = &mut self.conns[key];
        let Some(slot) = self.sessions[skey].as_mut() else {
            return;
        };
        match push_outgoing(conn, out, &slot.session.subscriptions, now) {
            Ok(()) => self.mark_dirty(key),
            Err(pid) => slot.session.abandon(pid),
        }
    }

    pub(super) fn completed(&mut self, key: usize, action: AckAction) -> Result<(), Close> {
        match action {
            AckAction::Progress => {
                self.refill(key);
                Ok(())
            }
            AckAction::Ignore => Ok(()),
            AckAction::Close(v) => Err(Close::Protocol(v.0)),
        }
    }

    pub(super) fn session_mut(&mut self, skey: usize) -> Option<&mut Session> {
        self.sessions[skey].as_mut().map(|s| &mut s.session)
    }

    pub(super) fn on_puback(&mut self, key: usize, skey: usize, a: &Ack) -> Result<(), Close> {
        let Some(s) = self.session_mut(skey) else {
            return Ok(());
        };
        let action = acks::completion(s.on_puback(a.packet_id));
        self.completed(key, action)
    }

    pub(super) fn on_pubrec(&mut self, key: usize, skey: usize, a: &Ack) -> Result<(), Close> {
        let version = self.conns[key].version;
        let Some(s) = self.session_mut(skey) else {
            return Ok(());
        };
        if acks::pubrec_failed(a) {
            let action = acks::completion(s.on_pubrec_failed(a.packet_id));
            return self.completed(key, action);
        }
        let outcome = s.on_pubrec(a.packet_id);
        if let AckAction::Close(v) = acks::completion(outcome) {
            return Err(Close::Protocol(v.0));
        }
        let rel = acks::pubrel(a.packet_id, outcome, version);
        self.push_packet(key, &Packet::PubRel(rel));
        Ok(())
    }

    pub(super) fn on_pubrel(&mut self, key: usize, skey: usize, a: &Ack) -> Result<(), Close> {
        let version = self.conns[key].version;
        let known = self
            .session_mut(skey)
            .is_some_and(|s| s.on_pubrel(a.packet_id));
        let comp = acks::pubcomp(a.packet_id, known, version);
        self.push_packet(key, &Packet::PubComp(comp));
        Ok(())
    }

    pub(super) fn on_pubcomp(&mut self, key: usize, skey: usize, a: &Ack) -> Result<(), Close> {
        let Some(s) = self.session_mut(skey) else {
            return Ok(());
        };
        let action = acks::completion(s.on_pubcomp(a.packet_id));
        self.completed(key, action)
    }

    pub(super) fn on_subscribe(
        &mut self,
        key: usize,
        skey: usize,
        sub: Subscribe,
    ) -> Result<(), Close> {
        let version = self.conns[key].version;
        let limits = self.cfg.limits;
        let max_owed = self.cfg.max_retained_messages;
        let sub_id = sub
            .properties
            .find(|p| match p {
                Property::SubscriptionIdentifier(id) => Some(id),
                _ => None,
            })
            .unwrap_or(0);
        let Some(slot) = self.sessions[skey].as_mut() else {
            return Ok(());
        };
        let id = slot.session.id;
        let mut codes = Vec::with_capacity(sub.filters.len());
        let mut matched: Vec<&str> = Vec::new();
        for (filter, options) in &sub.filters {
            let room = slot.session.subscriptions.len() < limits.max_subscriptions
                || slot.session.subscriptions.contains_key(filter);
            let grant = match subscription::grant(filter, options, sub_id, version, &limits, room) {
                Ok(grant) => grant,
                Err(Refusal::Code(code)) => {
                    self.events.push(Event::Subscribed {
                        sid: id,
                        filter: filter.to_string(),
                        options: *options,
                        granted: None,
                    });
                    codes.push(code);
                    continue;
                }
                Err(Refusal::Close(v)) => return Err(Close::Protocol(v.0)),
            };
            let granted = grant.subscribed;
            let r = Recipient {
                session: id,
                qos: granted.qos,
                flags: granted.flags,
                sub_id: granted.sub_id,
            };
            let existed = slot
                .session
                .subscriptions
                .insert(ByteString::from(&**filter), granted)
                .is_some();
            match grant.filter {
                Filter::Plain(f) => {
                    self.index.subscribe_with(f, r);
                }
                Filter::Shared { share, filter } => {
                    self.shared_subs.subscribe(share, filter, r);
                }
            }
            self.events.push(Event::Subscribed {
                sid: id,
                filter: filter.to_string(),
                options: *options,
                granted: Some(granted.qos),
            });
            codes.push(grant.code());
            let conn = &mut self.conns[key];
            let owed_now = conn.owed.len();
            if !grant.sends_retained(existed)
                || matched.contains(&&**filter)
                || owed_now >= max_owed
            {
                continue;
            }
            matched.push(filter);
            let mut retained = Vec::new();
            self.retained
                .matching(filter, &mut retained, max_owed.saturating_sub(owed_now));
            // Sorted: the store's order is unspecified, and the model must replay from a seed.
            retained.sort_by(|a, b| a.topic.cmp(&b.topic));
            for m in retained {
                let q = m.qos.min(granted.qos);
                self.events.push(Event::Offered {
                    sid: id,
                    msg: Arc::clone(&m),
                    qos: q,
                    retained: true,
                });
                conn.owed.push_back((m, q, granted.sub_id));
            }
        }
        self.push_packet(key, &Packet::SubAck(SubAck::new(sub.packet_id, codes)));
        self.refill(key);
        Ok(())
    }

    pub(super) fn on_unsubscribe(
        &mut self,
        key: usize,
        skey: usize,
        u: Unsubscribe,
    ) -> Result<(), Close> {
        let version = self.conns[key].version;
        let mut codes = Vec::new();
        if let Some(slot) = self.sessions[skey].as_mut() {
            let id = slot.session.id;
            let mut removed = Vec::new();
            for filter in &u.filters {
                let existed = slot.session.subscriptions.remove(filter).is_some();
                if existed {
                    removed.push(filter);
                }
                if version.is_v5() {
                    codes.push(subscription::unsubscribe_code(existed));
                }
            }
            for filter in removed {
                self.unsubscribe_filter(id, filter);
                self.events.push(Event::Unsubscribed {
                    sid: id,
                    filter: filter.to_string(),
                });
            }
        } else if version.is_v5() {
            codes.resize(u.filters.len(), ReasonCode::NO_SUBSCRIPTION_EXISTED);
        }
        self.push_packet(key, &Packet::UnsubAck(SubAck::new(u.packet_id, codes)));
        Ok(())
    }
}

// ---- routing.rs and frames.rs helpers -----------------------------------------------------

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

fn sub_id_of(r: &Recipient) -> u32 {
    if r.flags & Recipient::MORE_IDS != 0 {
        Session::ALL_IDS
    } else {
        r.sub_id
    }
}

fn ids_for(sub_id: u32, subscriptions: &Subscriptions, topic: &str) -> Vec<u32> {
    match sub_id {
        0 => Vec::new(),
        Session::ALL_IDS => subscriptions.ids_matching(topic),
        id => vec![id],
    }
}

fn apply_alias(header: &mut PublishHeader<'_>, alias: OutAlias) {
    match alias {
        OutAlias::Full => {}
        OutAlias::Set(a) => header.topic_alias = Some(a),
        OutAlias::Use(a) => {
            header.topic_alias = Some(a);
            header.topic = "";
        }
    }
}

fn encode_frame(header: &PublishHeader<'_>, version: ProtocolVersion, payload: &[u8]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    let encoded = header.encode(version, &mut buf);
    assert!(encoded.is_ok(), "PUBLISH header encodes");
    buf.extend_from_slice(payload);
    buf.to_vec()
}

/// `FrameLog::encode_qos0`.
fn encode_qos0(msg: &Message, retain: bool) -> Vec<u8> {
    let header = PublishHeader::new(
        false,
        QosPid::AtMostOnce,
        retain,
        &msg.topic,
        msg.payload.len(),
    );
    encode_frame(&header, ProtocolVersion::V311, &msg.payload)
}

/// `FrameLog::encode_qos0_v5`.
fn encode_qos0_v5(
    msg: &Message,
    retain: bool,
    expiry: Option<u32>,
    ids: &[u32],
    alias: OutAlias,
) -> Vec<u8> {
    let mut header = PublishHeader::new(
        false,
        QosPid::AtMostOnce,
        retain,
        &msg.topic,
        msg.payload.len(),
    );
    header.properties = &msg.properties;
    header.message_expiry = expiry;
    header.subscription_ids = ids;
    apply_alias(&mut header, alias);
    encode_frame(&header, ProtocolVersion::V5, &msg.payload)
}

/// `routing.rs` `qos0_frame_v5`, per recipient.
fn qos0_frame_v5(
    conn: &mut Conn,
    subscriptions: &Subscriptions,
    r: Recipient,
    msg: &Message,
    now: Instant,
) -> Option<Vec<u8>> {
    let retain = r.flags & Recipient::RETAIN_AS_PUBLISHED != 0 && msg.retain;
    let ids = ids_for(sub_id_of(&r), subscriptions, &msg.topic);
    let expiry = msg.remaining_expiry(now);
    let alias = conn.out_alias(&msg.topic);
    let frame = encode_qos0_v5(msg, retain, expiry, &ids, alias);
    if !conn.fits(frame.len()) {
        return None;
    }
    conn.record_alias(&msg.topic, alias);
    Some(frame)
}

/// `routing.rs` `push_outgoing`: `Err(pid)` for a PUBLISH too large for the client.
fn push_outgoing(
    conn: &mut Conn,
    out: Outgoing,
    subscriptions: &Subscriptions,
    now: Instant,
) -> Result<(), PacketId> {
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
                apply_alias(&mut header, alias);
                if !conn.fits(header.packet_len(version)) {
                    return Err(pid);
                }
                conn.record_alias(&msg.topic, alias);
            }
            let frame = encode_frame(&header, version, &msg.payload);
            conn.out.extend_from_slice(&frame);
            Ok(())
        }
        Outgoing::PubRel(pid) => {
            conn.push_packet(&Packet::PubRel(Ack::new(pid)));
            Ok(())
        }
    }
}
