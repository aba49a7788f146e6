//! Session lifecycle on a worker: CONNECT, takeover, hand-over between workers, close, Will.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use vireo_broker::protocol::auth::{self, PasswordStep};
use vireo_broker::protocol::lifecycle::{self, Liveness, Resume, SessionFate, WillFate};
use vireo_broker::protocol::quota::Quota;
use vireo_broker::protocol::{Violation, connect, disconnect, publish};
use vireo_broker::{Message, Recipient, Session, SessionId};
use vireo_codec::{ByteString, ConnAck, Connect, LastWill, Packet, QoS, ReasonCode, parse_shared};

use crate::auth::Check;
use crate::conn::{Close, Conn, ConnState, INTERNAL, V5State};
use crate::shared::{Adoption, WorkerMsg};
use crate::tls;
use crate::worker::{SessionSlot, Worker, generated_client_id, home_of_client};
use vireo_broker::protocol::publish::OutboundAliases;

impl Worker {
    /// The first packet: check it, decide the connection's home worker, then accept or
    /// refuse.
    pub(crate) fn on_connect(
        &mut self,
        key: usize,
        mut connect: Box<Connect>,
    ) -> Result<(), Close> {
        let Some(conn) = self.conns.get_mut(key) else {
            return Ok(());
        };
        conn.version = connect.protocol;
        conn.bridge = connect.bridge;
        let persistent = self.shared.config.persistent_session_expiry();
        if let Err(code) = connect::check(&connect, &self.shared.limits, persistent) {
            tracing::info!(peer = %conn.peer, client = %connect.client_id, code = code.0, "CONNECT refused");
            return refuse(conn, code);
        }
        if connect::reserved_client_id(&connect.client_id) {
            tracing::info!(peer = %conn.peer, client = %connect.client_id, "CONNECT refused: client ids starting with $bridge/ are the broker's own");
            return refuse(conn, connect::identifier_rejected(connect.protocol));
        }
        let workers = self.shared.mailboxes.len();
        let assigned = connect.client_id.is_empty();
        if assigned {
            // [MQTT-3.1.3-6]: invent a unique id homed on this worker.
            let (by_client, sessions) = (&self.by_client, &self.sessions);
            connect.client_id = generated_client_id(self.id, workers, &mut self.generated, |id| {
                by_client.contains(id, sessions)
            });
        }
        let home = home_of_client(&connect.client_id, workers);
        // The CONNECT was decoded zero-copy from the read buffer; what outlives it is copied,
        // so that neither an idle connection nor a hand-over pins a 16 KiB read chunk.
        detach(&mut connect);
        // `use_identity_as_username`: the verified certificate names the user, as with
        // Mosquitto; no password is asked (the handshake was the credential check).
        let identity = match conn.layers.as_deref().and_then(|l| l.tls.as_ref()) {
            Some(tls) if tls.identity_as_username => match tls::peer_common_name(&tls.session) {
                Some(cn) => Some(cn),
                None => {
                    tracing::info!(peer = %conn.peer, client = %connect.client_id, "CONNECT refused: no Common Name in the client certificate");
                    return refuse(conn, auth::not_authorized(connect.protocol));
                }
            },
            _ => None,
        };
        let step = match identity {
            Some(cn) => {
                connect.username = Some(ByteString::from(cn));
                connect.password = None;
                PasswordStep::Accept
            }
            None => self
                .shared
                .password_policy
                .get(usize::from(conn.listener))
                .map_or(PasswordStep::Accept, |p| p.check(&connect)),
        };
        match step {
            PasswordStep::Accept => {}
            PasswordStep::Refuse(code) => {
                tracing::info!(peer = %conn.peer, client = %connect.client_id, "CONNECT refused: anonymous clients are not allowed");
                return refuse(conn, code);
            }
            PasswordStep::Verify => {
                self.check_off_loop(key, connect, assigned, home);
                return Ok(());
            }
        }
        if home == self.id {
            return self.accept_connect(key, connect, assigned);
        }
        // Hand the connection, with its decoded CONNECT and any pipelined bytes, to the
        // worker that owns this client id's session.
        if let Some(mut conn) = self.unregister(key) {
            // Copied (usually nothing), so the read buffer, lent to this connection by the
            // worker, stays here for the next read instead of travelling with the adoption.
            let rest = BytesMut::from(&conn.rbuf[..]);
            self.reclaim_read_buffer(std::mem::take(&mut conn.rbuf));
            self.shared.mailboxes[home].send(WorkerMsg::Adopt(Box::new(Adoption {
                stream: conn.stream,
                peer: conn.peer,
                listener: conn.listener,
                layers: conn.layers,
                connect,
                rest,
                assigned,
                refused: None,
            })));
        }
        Ok(())
    }

    /// Sends a connection whose password must be checked to the checkers (see `auth`), who
    /// hand it on to `home` with the verdict; refuses it as busy when they are backed up.
    fn check_off_loop(&mut self, key: usize, connect: Box<Connect>, assigned: bool, home: usize) {
        let Some(mut conn) = self.unregister(key) else {
            return;
        };
        let rest = BytesMut::from(&conn.rbuf[..]);
        self.reclaim_read_buffer(std::mem::take(&mut conn.rbuf));
        let adoption = Adoption {
            stream: conn.stream,
            peer: conn.peer,
            listener: conn.listener,
            layers: conn.layers,
            connect,
            rest,
            assigned,
            refused: None,
        };
        let Some(checkers) = &self.shared.checkers else {
            return; // `Verify` is asked for only with a password file, hence checkers
        };
        if let Err(check) = checkers.submit(Check { adoption, home }) {
            let mut adoption = check.adoption;
            tracing::warn!(client = %adoption.connect.client_id, "CONNECT refused: password checks backed up");
            adoption.refused = Some(auth::busy(adoption.connect.protocol));
            self.adopt(adoption);
        }
    }

    /// A connection handed over by another worker.
    pub(crate) fn adopt(&mut self, adoption: Adoption) {
        let Adoption {
            stream,
            peer,
            listener,
            layers,
            connect,
            rest,
            assigned,
            refused,
        } = adoption;
        // A socket the client closed meanwhile is registered all the same: its event closes
        // it the ordinary way, which also gives back its per-address count.
        let liveness = Liveness::awaiting_connect(self.now, self.shared.live.connect_timeout());
        let mut conn = Conn::new(stream, peer, liveness);
        conn.version = connect.protocol;
        conn.bridge = connect.bridge;
        conn.rbuf = rest;
        // rustls or tungstenite may hold bytes already taken off the socket, which no
        // readiness event will announce: read them on the next iteration.
        let layers_pending = layers.is_some();
        conn.layers = layers;
        conn.listener = listener;
        let Some(key) = self.register(conn) else {
            return;
        };
        if layers_pending {
            self.read_later(key);
        }
        if let Some(code) = refused {
            if let Some(conn) = self.conns.get_mut(key) {
                let _ = refuse(conn, code);
            }
            return self.close(key, Close::Refused);
        }
        self.packets_left = crate::worker::READ_PACKETS;
        let result = self
            .accept_connect(key, connect, assigned)
            .and_then(|()| self.decode_all(key));
        // No read here: registering a socket that already has data (or the peer's FIN)
        // waiting makes epoll report it at the next poll, so an extra read would most often
        // just return `WouldBlock` (one system call per handed-over connection). Pipelined
        // bytes that decoding left for back-pressure put the connection on the `again` list
        // (`decode_all`).
        match result {
            Ok(()) => self.flush_layers_now(key),
            Err(reason) => self.close(key, reason),
        }
    }

    /// Accepts a CONNECT on the session's home worker: takeover, clean/persistent session,
    /// CONNACK, then re-sends what the session still owes. `assigned`: the client id was
    /// generated for an empty one.
    fn accept_connect(
        &mut self,
        key: usize,
        connect: Box<Connect>,
        assigned: bool,
    ) -> Result<(), Close> {
        let connect = *connect;
        let persistent = self.shared.config.persistent_session_expiry();
        // Checked on the worker that decoded it; checked again here (pure, cheap) rather than
        // carried across the hand-over.
        let negotiated = match connect::check(&connect, &self.shared.limits, persistent) {
            Ok(n) => n,
            Err(code) => {
                let Some(conn) = self.conns.get_mut(key) else {
                    return Ok(());
                };
                return refuse(conn, code);
            }
        };
        // Authorization, before anything changes for a session of that id: the client's ACL,
        // and its Will's topic, which it must be allowed to publish to (as Mosquitto checks).
        let generation = self.shared.acl_generation.load(Ordering::Acquire);
        let internal = self.conns.get(key).is_some_and(|c| c.listener == INTERNAL);
        let acl = self
            .shared
            .acl
            .read()
            .as_ref()
            .filter(|_| !internal)
            .map(|a| {
                (
                    a.for_client(connect.username.as_deref(), &connect.client_id),
                    generation,
                )
            });
        if let (Some((acl, _)), Some(will)) = (&acl, &connect.will)
            && !acl.check_publish(&will.topic)
        {
            tracing::info!(client = %connect.client_id, topic = %will.topic, "Will topic not allowed by the ACL: CONNECT refused");
            let Some(conn) = self.conns.get_mut(key) else {
                return Ok(());
            };
            return refuse(conn, auth::not_authorized(connect.protocol));
        }
        let existing = self.by_client.get(&connect.client_id, &self.sessions);
        if let Some(skey) = existing
            && let Some(old) = self.sessions.get(skey).and_then(|s| s.conn())
        {
            self.final_read(old);
            if let Some(c) = self.conns.get(old) {
                tracing::info!(client = %connect.client_id, old = %c.peer, "session taken over [MQTT-3.1.4-2]");
                self.close(old, Close::TakenOver);
            }
        }
        let existing = self.by_client.get(&connect.client_id, &self.sessions);
        // A stored session a Clean Start discards: its deletion is confirmed by the CONNACK
        // too, or a crash could bring it back after the client was told it was gone.
        let discards_stored =
            existing.is_some_and(|s| self.sessions.get(s).is_some_and(|s| s.stored));
        let (skey, session_present) = match (
            existing,
            lifecycle::resume(existing.is_some(), connect.clean_start),
        ) {
            (Some(skey), Resume::Resume) => (skey, true),
            (other, _) => {
                if let Some(skey) = other {
                    // Clean Session / Clean Start discards the stored session [MQTT-3.1.2-6]
                    // (5.0 [MQTT-3.1.2-4]).
                    self.discard_session(skey);
                }
                let stored = &self.shared.stats.sessions;
                if stored.fetch_add(1, Ordering::Relaxed)
                    >= self.shared.live.max_sessions.load(Ordering::Relaxed)
                {
                    stored.fetch_sub(1, Ordering::Relaxed);
                    tracing::warn!(client = %connect.client_id, "max_sessions reached; CONNECT refused");
                    let Some(conn) = self.conns.get_mut(key) else {
                        return Ok(());
                    };
                    return refuse(conn, connect::server_unavailable(connect.protocol));
                }
                let skey = self.sessions.vacant_key();
                let id = self.new_session_id(skey);
                let limits = Arc::clone(&self.session_limits);
                let clean = negotiated.session_expiry == 0;
                let session = Session::new(id, &*connect.client_id, clean, limits);
                self.sessions.insert(SessionSlot {
                    session,
                    conn_key: None,
                    expires: None,
                    expiry_secs: 0,
                    pending_will: None,
                    backlogged: false,
                    stored: false,
                    last_progress: self.now,
                    deferred: false,
                });
                self.by_client.insert(skey, &self.sessions);
                (skey, false)
            }
        };
        let Some(conn) = self.conns.get_mut(key) else {
            return Ok(());
        };
        let Some(slot) = self.sessions.get_mut(skey) else {
            return Ok(());
        };
        slot.set_conn(Some(key));
        slot.expires = None;
        slot.expiry_secs = negotiated.session_expiry;
        slot.session.clean = negotiated.session_expiry == 0;
        slot.last_progress = self.now;
        if slot.pending_will.take().is_some() {
            // Back before its Will Delay ran out: the Will is not sent (5.0 [MQTT-3.1.3-9]).
            tracing::debug!(client = %connect.client_id, "delayed Will cancelled by reconnect");
        }
        slot.session.set_receive_maximum(negotiated.receive_maximum);
        let version = connect.protocol;
        conn.state = ConnState::connected(skey);
        conn.keep_alive = negotiated.keep_alive;
        conn.liveness.connected(self.now, negotiated.keep_alive);
        let stats = &self.shared.stats;
        stats.connects.fetch_add(1, Ordering::Relaxed);
        let online = stats.clients_connected.fetch_add(1, Ordering::Relaxed) + 1;
        stats.clients_maximum.fetch_max(online, Ordering::Relaxed);
        // One line per connect, as Mosquitto writes it ("New client connected from ... as
        // ... (p2, c1, k60)").
        tracing::info!(
            client = %connect.client_id,
            peer = %conn.peer,
            protocol = version.name(),
            transport = if conn.listener == INTERNAL {
                "internal"
            } else {
                crate::transport::Layers::name(conn.layers.as_deref())
            },
            clean = connect.clean_start,
            keep_alive = negotiated.keep_alive,
            session_present,
            "client connected"
        );
        // [MQTT-3.2.0-1] CONNACK first; [MQTT-3.2.2-1..3] session present.
        let quota = Quota::new(*self.shared.rate_limits.read(), self.now);
        let newly_dirty = if version.is_v5() {
            let assigned_id = assigned.then_some(&*connect.client_id);
            let ack = connect::accepted(
                version,
                session_present,
                &self.shared.limits,
                &negotiated,
                assigned_id,
            );
            conn.set_connect_state(
                connect.will,
                Some(V5State {
                    out_aliases: OutboundAliases::new(
                        negotiated.topic_alias_maximum,
                        self.shared.limits.outbound_topic_alias_maximum,
                    ),
                    negotiated,
                    aliases: Default::default(),
                }),
                acl,
                quota,
            );
            conn.push_packet(&Packet::ConnAck(ack))
        } else {
            conn.set_connect_state(connect.will, None, acl, quota);
            conn.push_connack_accepted(connect::session_present_flag(version, session_present))
        };
        if newly_dirty {
            self.dirty.push(key);
        }
        self.connected.push(key);
        let resend: Vec<_> = if session_present {
            slot.session.resend().collect()
        } else {
            Vec::new()
        };
        self.set_shared_online(skey, true);
        self.persist_session(skey);
        if discards_stored || self.sessions.get(skey).is_some_and(|s| s.stored) {
            // `sync`: the CONNACK of a persistent session waits for its record (and one that
            // discarded a stored session, for its deletion).
            self.holds.cork(key);
        }
        if session_present {
            // [MQTT-4.4.0-1] unacknowledged PUBLISH (DUP) and PUBREL, in order.
            for out in resend {
                self.write_outgoing(key, skey, out);
            }
            self.refill(key);
        }
        Ok(())
    }

    /// Marks the session's shared-subscription memberships online or offline, so groups pick
    /// connected members first.
    fn set_shared_online(&self, skey: usize, online: bool) {
        let Some(slot) = self.sessions.get(skey) else {
            return;
        };
        for filter in slot.session.subscriptions.keys() {
            if filter.starts_with("$share/") {
                self.shared
                    .shared_subs
                    .set_online(filter, slot.session.id, online);
            }
        }
    }

    /// Reads what a connection about to be taken over has already sent, ignoring back-pressure:
    /// a DISCONNECT waiting there must still discard the Will [MQTT-3.1.2-10] (this read
    /// closes the connection itself in that case).
    fn final_read(&mut self, key: usize) {
        // `read_loop` stops early while congested or throttled; this read must not, even when
        // the PUBLISHes it finds would throttle the connection again.
        self.final_read = true;
        self.read_now(key);
        self.final_read = false;
    }

    /// Closes a connection: tells a 5.0 client why, publishes its Will unless it ended with
    /// DISCONNECT (or delays it by its Will Delay Interval), and ends the session when its
    /// expiry interval is 0.
    pub(crate) fn close(&mut self, key: usize, reason: Close) {
        if let Some(conn) = self.conns.get_mut(key)
            && let Some(code) = reason.disconnect_reason(conn.state.phase(), conn.version)
        {
            // [MQTT-3.14.0-1] only after a successful CONNACK; then nothing else is sent
            // [MQTT-3.14.4-1].
            conn.push_packet(&Packet::Disconnect(disconnect::server_disconnect(
                Violation(code),
            )));
        }
        // Output held for the disk is not written: the client was not told yet.
        let corked = self.holds.is_corked(key);
        let Some(mut conn) = self.unregister(key) else {
            return;
        };
        if conn.listener != INTERNAL {
            self.shared.per_ip.release(conn.peer.ip());
        }
        self.reclaim_read_buffer(std::mem::take(&mut conn.rbuf));
        if !corked && (reason.flushes_first() || conn.layers.as_deref().is_some_and(|l| l.ended()))
        {
            // Best effort: a refusing CONNACK or a DISCONNECT (or a refused WebSocket
            // upgrade's response, a close frame's reply) should reach the client before the
            // close, and unread input would turn the close into a reset that can discard it.
            // A TLS or WebSocket peer is then told the stream ends (close_notify, a close
            // frame): after what is queued, since nothing may follow them.
            let _ = conn.flush(&mut self.frames);
            if let Some(layers) = conn.layers.as_deref_mut() {
                layers.close(&mut conn.stream);
            }
            conn.drain_input();
        }
        let Some(session) = conn.state.session() else {
            return;
        };
        self.shared
            .stats
            .clients_connected
            .fetch_sub(1, Ordering::Relaxed);
        let will_delay = conn.negotiated().map_or(0, |n| n.will_delay);
        let will = conn
            .take_will()
            .filter(|_| reason.publishes_will())
            .map(|w| self.will_message(w, session));
        let Some(slot) = self.sessions.get_mut(session) else {
            return;
        };
        // And one per close of a connected client, with why (and the reason code of a
        // protocol error or a limit; a field left unset is not written).
        tracing::info!(
            client = %slot.session.client_id,
            peer = %conn.peer,
            reason = reason.why(),
            code = reason.code().map(|c| tracing::field::display(format!("{:#04x}", c.0))),
            "client disconnected"
        );
        if slot.conn() != Some(key) {
            return;
        }
        slot.set_conn(None);
        // Retained messages a SUBSCRIBE still owed this connection, paced by its output,
        // belong to the session: the QoS 1/2 ones wait in its queue for the next connection
        // (QoS 0 is not kept for offline sessions), instead of going with this one.
        // Walked to the end here (bounded by the queue's limits: the walk stops once the
        // queue refuses).
        while !slot.session.clean
            && let Some((msg, qos, sub_id)) = conn.next_owed(&self.shared.retained)
        {
            if qos != QoS::AtMostOnce
                && slot.session.enqueue_with(msg, qos, true, sub_id)
                    == vireo_broker::Enqueued::Dropped
            {
                break;
            }
        }
        slot.note_deferred(session, &mut self.deferred);
        slot.session.shrink_if_idle();
        let fate = lifecycle::after_close(self.now, will.is_some(), will_delay, slot.expiry_secs);
        match (will, fate.will) {
            // 5.0: published when the delay or the session ends, whichever is first
            // [MQTT-3.1.2-8], unless the client comes back first [MQTT-3.1.3-9].
            (Some(will), WillFate::At(at)) => slot.pending_will = Some(Box::new((at, will))),
            // [MQTT-3.1.2-8] [MQTT-3.1.2-16] [MQTT-3.1.2-17]
            (Some(will), _) => self.publish(will),
            (None, _) => {}
        }
        self.set_shared_online(session, false);
        self.update_backlog(session);
        let Some(slot) = self.sessions.get_mut(session) else {
            return;
        };
        match fate.session {
            SessionFate::EndsNow => self.discard_session(session),
            SessionFate::Kept => slot.expires = None,
            SessionFate::ExpiresAt(at) => slot.expires = Some(at),
        }
        // Offline from now: its expiry, if any, counts from this moment across a restart.
        self.persist_session(session);
    }

    /// Writes a persistent session (its expiry and subscriptions) to the durable store, when
    /// there is one; a session that became clean (5.0: Session Expiry 0 at DISCONNECT) is
    /// removed from it instead.
    pub(crate) fn persist_session(&mut self, skey: usize) {
        let Some(persist) = &self.persist else {
            return;
        };
        let Some(slot) = self.sessions.get_mut(skey) else {
            return;
        };
        if slot.expiry_secs == 0 {
            if slot.stored && slot.session.has_spill() {
                // Part of its queue is on disk only, still to be delivered on this
                // connection: only the record goes now (a restart drops the rest), the
                // queue when the session ends.
                persist.session_record_deleted(&slot.session.client_id);
            } else if std::mem::take(&mut slot.stored) {
                persist.session_deleted(&slot.session.client_id);
                slot.session.set_journal(None);
            }
            return;
        }
        let offline_since = if slot.conn().is_some() {
            0
        } else {
            vireo_broker::store::records::unix_ms(std::time::SystemTime::now())
        };
        let will = stored_will(slot, slot.conn().and_then(|k| self.conns.get(k)), self.now);
        persist.session_put(
            &slot.session.client_id,
            session_record(slot, offline_since, will.as_ref()),
        );
        if !slot.session.is_durable() {
            // Its QoS 1/2 state follows the record (what it holds already first).
            let journal = persist.journal(&slot.session.client_id, slot.session.id);
            slot.session.set_journal(Some(journal));
        }
        slot.stored = true;
    }

    /// Part of a session's queue, read back from disk as it asked: joins its queue in memory
    /// (an answer for an earlier session of the same client id is not its own: dropped).
    pub(crate) fn on_loaded(&mut self, reply: crate::store::LoadReply) {
        let Some(skey) = self.by_client.get(&reply.client, &self.sessions) else {
            return;
        };
        let Some(slot) = self.sessions.get_mut(skey) else {
            return;
        };
        if slot.session.id != reply.session {
            return;
        }
        slot.session.unspill(reply.loaded);
        if let Some(key) = slot.conn() {
            self.refill(key);
        }
        self.update_backlog(skey);
    }

    /// Brings back the persistent sessions the store held at start: offline, with their
    /// subscriptions in the index, expiring when they would have. Called before the loop.
    pub(crate) fn restore_sessions(&mut self, sessions: Vec<crate::store::StoredSession>) {
        for stored in sessions {
            let skey = self.sessions.vacant_key();
            let id = self.new_session_id(skey);
            let limits = Arc::clone(&self.session_limits);
            let mut session = Session::new(id, &*stored.client_id, false, limits);
            for (filter, sub) in stored.record.subscriptions {
                // Written by this broker, so valid; checked all the same, as a SUBSCRIBE is.
                let shared = parse_shared(&filter);
                let inner = match &shared {
                    Ok(Some((_, inner))) => inner,
                    Ok(None) => filter.as_str(),
                    Err(_) => continue,
                };
                if vireo_codec::validate_topic_filter(inner).is_err() {
                    continue;
                }
                let r = Recipient {
                    session: id,
                    qos: sub.qos,
                    flags: sub.flags,
                    sub_id: sub.sub_id,
                };
                match shared {
                    Ok(Some((_, inner))) => {
                        self.shared.shared_subs.subscribe(&filter, inner, r);
                    }
                    _ => {
                        self.shared.index.subscribe_with(&filter, r);
                    }
                }
                session.subscriptions.insert(ByteString::from(filter), sub);
            }
            if let Some(persist) = &self.persist {
                // Durable before it is filled: what the store gave back is not written again.
                session.set_journal(Some(persist.journal(&stored.client_id, id)));
            }
            for item in stored.state {
                session.restore(item);
            }
            let pending_will = stored.record.will.as_ref().and_then(|w| {
                // Due its delay after this start if its client was connected when the broker
                // went down (its connection ended then, without DISCONNECT), else when it was.
                let clocks = vireo_broker::store::records::Clocks::read();
                let msg = vireo_broker::store::records::decode_message(&w.message, &clocks).ok()?;
                let at = match w.due_unix_ms {
                    0 => self.now + std::time::Duration::from_secs(u64::from(w.delay_secs)),
                    due => {
                        let wall = std::time::UNIX_EPOCH + std::time::Duration::from_millis(due);
                        self.now + wall.duration_since(clocks.wall).unwrap_or_default()
                    }
                };
                Some(Box::new((at, msg)))
            });
            self.sessions.insert(SessionSlot {
                session,
                conn_key: None,
                expires: stored.remaining.map(|left| self.now + left),
                expiry_secs: stored.record.expiry_secs,
                pending_will,
                backlogged: false,
                stored: true,
                last_progress: self.now,
                deferred: false,
            });
            self.by_client.insert(skey, &self.sessions);
            self.shared.stats.sessions.fetch_add(1, Ordering::Relaxed);
            self.set_shared_online(skey, false);
            if stored.record.offline_since_ms == 0
                && let Some(persist) = &self.persist
            {
                // Stored while connected (the broker stopped under it): offline from this
                // start on, written down so that its expiry counts from here and not from
                // scratch at every restart.
                let now = vireo_broker::store::records::unix_ms(std::time::SystemTime::now());
                let slot = &self.sessions[skey];
                let will = stored_will(slot, None, self.now);
                persist.session_put(&stored.client_id, session_record(slot, now, will.as_ref()));
            }
        }
    }

    /// The message a Will becomes: its 5.0 properties forwarded, its Message Expiry Interval
    /// counted from now.
    pub(crate) fn will_message(&self, will: LastWill, session: usize) -> Arc<Message> {
        let origin = self
            .sessions
            .get(session)
            .map_or(SessionId(0), |s| s.session.id);
        Arc::new(publish::message(
            will.topic,
            will.payload,
            will.qos,
            will.retain,
            will.properties,
            origin,
            self.now,
        ))
    }

    /// Removes a session and its subscriptions; a Will still waiting for its delay is
    /// published now, since the session ends [MQTT-3.1.2-8].
    pub(crate) fn discard_session(&mut self, skey: usize) {
        let Some(slot) = self.sessions.try_remove(skey) else {
            return;
        };
        self.shared.stats.sessions.fetch_sub(1, Ordering::Relaxed);
        if slot.backlogged {
            self.shared.mailboxes[self.id]
                .backlogged
                .fetch_sub(1, Ordering::Relaxed);
        }
        let mut session = slot.session;
        let mut shares = Vec::new();
        for filter in session.subscriptions.keys() {
            self.unsubscribe_filter(session.id, filter);
            if let Ok(Some((_, inner))) = parse_shared(filter) {
                shares.push((filter.clone(), inner.to_owned()));
            }
        }
        self.by_client.remove(&session.client_id, skey);
        if slot.stored
            && let Some(persist) = &self.persist
        {
            persist.session_deleted(&session.client_id);
        }
        if !shares.is_empty() {
            self.hand_to_other_members(&shares, session.take_undelivered());
        }
        if let Some(pending) = slot.pending_will {
            self.publish(pending.1);
        }
    }

    /// A session that ends owing QoS 1/2 messages it got through shared subscriptions: each
    /// goes to another member of the group it came through (5.0 §4.8.2: a message is
    /// delivered to one member, and one that leaves must not take it with it). A message that
    /// matches none of the session's shares came through an ordinary subscription and ends
    /// with the session.
    fn hand_to_other_members(
        &mut self,
        shares: &[(ByteString, String)],
        owed: Vec<(Arc<Message>, vireo_codec::QoS)>,
    ) {
        for (msg, _) in owed {
            let Some((share, _)) = shares
                .iter()
                .find(|(_, inner)| vireo_codec::topic_matches(inner, &msg.topic))
            else {
                continue;
            };
            let Some(member) = self.shared.shared_subs.pick(share) else {
                continue; // the group left with it
            };
            tracing::debug!(topic = %msg.topic, %share, "owed shared message handed to another member");
            self.recipients.clear();
            self.recipients.push(member);
            self.deliver_matched(msg);
        }
    }

    /// Removes one subscription from the index it lives in (shared or not).
    pub(crate) fn unsubscribe_filter(&self, id: SessionId, filter: &str) -> bool {
        match parse_shared(filter) {
            Ok(Some((_, inner))) => self.shared.shared_subs.unsubscribe(filter, inner, id),
            _ => self.shared.index.unsubscribe(id, filter),
        }
    }
}

/// A session's record for the store: `offline_since_ms` 0 while it is connected.
fn session_record(
    slot: &SessionSlot,
    offline_since_ms: u64,
    will: Option<&vireo_broker::store::records::StoredWill>,
) -> Vec<u8> {
    let subs = slot.session.subscriptions.iter().map(|(f, s)| (&**f, *s));
    vireo_broker::store::records::encode_session(slot.expiry_secs, offline_since_ms, subs, will)
}

/// The Will to keep with a session's record: its connection's (due its delay after the
/// restart, should the broker go down under it), or the one waiting out its delay.
fn stored_will(
    slot: &SessionSlot,
    conn: Option<&Conn>,
    now: std::time::Instant,
) -> Option<vireo_broker::store::records::StoredWill> {
    use vireo_broker::store::records::{self, Clocks, StoredWill};
    let clocks = Clocks::read();
    if let Some(conn) = conn
        && let Some(will) = conn.will()
    {
        let msg = publish::message(
            will.topic.clone(),
            will.payload.clone(),
            will.qos,
            will.retain,
            will.properties.clone(),
            slot.session.id,
            now,
        );
        return Some(StoredWill {
            delay_secs: conn.negotiated().map_or(0, |n| n.will_delay),
            due_unix_ms: 0,
            message: records::encode_message(&msg, &clocks),
        });
    }
    let (at, msg) = &**slot.pending_will.as_ref()?;
    let wall = clocks.wall + at.saturating_duration_since(clocks.now);
    Some(StoredWill {
        delay_secs: 0,
        due_unix_ms: records::unix_ms(wall),
        message: records::encode_message(msg, &clocks),
    })
}

/// Copies what a CONNECT decoded zero-copy from a read buffer keeps beyond the CONNECT
/// itself (client id, Will, credentials), so that it no longer shares that buffer.
fn detach(connect: &mut Connect) {
    connect.client_id = ByteString::from(&*connect.client_id);
    if let Some(will) = &mut connect.will {
        will.topic = will.topic.detached();
        will.payload = vireo_codec::Bytes::copy_from_slice(&will.payload);
    }
    if let Some(username) = &mut connect.username {
        *username = ByteString::from(&**username);
    }
    if let Some(password) = &mut connect.password {
        *password = vireo_codec::Bytes::copy_from_slice(password);
    }
}

fn refuse(conn: &mut Conn, code: ReasonCode) -> Result<(), Close> {
    // [MQTT-3.2.2-4] session present 0 with a refusal; [MQTT-3.2.2-5] then close (5.0
    // [MQTT-3.2.2-6] [MQTT-3.2.2-7]).
    conn.push_packet(&Packet::ConnAck(ConnAck::new(false, code)));
    Err(Close::Refused)
}
