//! Session lifecycle on a worker: CONNECT, takeover, hand-over between workers, close, Will.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use vireo_broker::{Message, Session};
use vireo_codec::{ByteString, ConnAck, Connect, Packet, ProtocolVersion, ReasonCode};

use crate::conn::{Close, Conn, ConnState};
use crate::shared::{Adoption, WorkerMsg};
use crate::worker::{SessionSlot, Worker, generated_client_id, home_of_client};

impl Worker {
    /// The first packet: decide the connection's home worker, then accept or refuse.
    pub(crate) fn on_connect(
        &mut self,
        key: usize,
        mut connect: Box<Connect>,
    ) -> Result<(), Close> {
        let Some(conn) = self.conns.get_mut(key) else {
            return Ok(());
        };
        conn.version = connect.protocol;
        if connect.protocol == ProtocolVersion::V5 {
            // MQTT 5.0 sessions are not served yet: refuse in the client's own version.
            let refuse = ConnAck::new(false, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION);
            conn.push_packet(&Packet::ConnAck(refuse));
            return Err(Close::Refused);
        }
        let id_len = connect.client_id.len();
        if connect.client_id.is_empty() && !connect.clean_start {
            // [MQTT-3.1.3-8]
            return refuse(conn, ReasonCode::V3_IDENTIFIER_REJECTED);
        }
        if connect.protocol == ProtocolVersion::V31 && id_len > 23 {
            // MQTT 3.1 limits client ids to 23 bytes; refuse as Mosquitto does [MQTT-3.1.3-9].
            return refuse(conn, ReasonCode::V3_IDENTIFIER_REJECTED);
        }
        let workers = self.shared.mailboxes.len();
        if connect.client_id.is_empty() {
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
        if home == self.id {
            return self.accept_connect(key, connect);
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
                connect,
                rest,
            })));
        }
        Ok(())
    }

    /// A connection handed over by another worker.
    pub(crate) fn adopt(&mut self, adoption: Adoption) {
        let Adoption {
            stream,
            connect,
            rest,
        } = adoption;
        let peer = match stream.peer_addr() {
            Ok(p) => p,
            Err(_) => return, // already gone
        };
        let deadline = self.now + self.shared.config.connect_timeout();
        let mut conn = Conn::new(stream, peer, deadline);
        conn.version = connect.protocol;
        conn.rbuf = rest;
        let Some(key) = self.register(conn) else {
            return;
        };
        let result = self
            .accept_connect(key, connect)
            .and_then(|()| self.decode_all(key));
        // No read here: registering a socket that already has data (or the peer's FIN)
        // waiting makes epoll report it at the next poll, so an extra read would most often
        // just return `WouldBlock` (one system call per handed-over connection). Pipelined
        // bytes that decoding left for back-pressure put the connection on the `again` list
        // (`decode_all`).
        if let Err(reason) = result {
            self.close(key, reason);
        }
    }

    /// Accepts a CONNECT on the session's home worker: takeover, clean/persistent session,
    /// CONNACK, then re-sends what the session still owes.
    fn accept_connect(&mut self, key: usize, connect: Box<Connect>) -> Result<(), Close> {
        let connect = *connect;
        let existing = self.by_client.get(&connect.client_id, &self.sessions);
        if let Some(skey) = existing
            && let Some(old) = self.sessions.get(skey).and_then(|s| s.conn)
        {
            self.final_read(old);
            if let Some(c) = self.conns.get(old) {
                tracing::info!(client = %connect.client_id, old = %c.peer, "session taken over [MQTT-3.1.4-2]");
                self.close(old, Close::TakenOver);
            }
        }
        let existing = self.by_client.get(&connect.client_id, &self.sessions);
        let (skey, session_present) = match existing {
            Some(skey) if !connect.clean_start => (skey, true),
            other => {
                if let Some(skey) = other {
                    // CleanSession=1 discards the stored session [MQTT-3.1.2-6].
                    self.discard_session(skey);
                }
                let stored = &self.shared.stats.sessions;
                if stored.fetch_add(1, Ordering::Relaxed) >= self.shared.config.max_sessions {
                    stored.fetch_sub(1, Ordering::Relaxed);
                    tracing::warn!(client = %connect.client_id, "max_sessions reached; CONNECT refused");
                    let Some(conn) = self.conns.get_mut(key) else {
                        return Ok(());
                    };
                    return refuse(conn, ReasonCode::V3_SERVER_UNAVAILABLE);
                }
                let skey = self.sessions.vacant_key();
                let id = self.new_session_id(skey);
                let limits = Arc::clone(&self.session_limits);
                let session = Session::new(id, &*connect.client_id, connect.clean_start, limits);
                self.sessions.insert(SessionSlot {
                    session,
                    conn: None,
                    expires: None,
                    backlogged: false,
                    last_progress: self.now,
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
        slot.conn = Some(key);
        slot.expires = None;
        slot.last_progress = self.now;
        conn.state = ConnState::connected(skey);
        conn.will = connect.will.map(Box::new);
        conn.keep_alive_secs = connect.keep_alive;
        conn.deadline = conn.keep_alive().map(|ka| self.now + ka);
        // [MQTT-3.2.0-1] CONNACK first; [MQTT-3.2.2-1..3] session present.
        let newly_dirty = conn.push_connack_accepted(session_present);
        if newly_dirty {
            self.dirty.push(key);
        }
        self.connected.push(key);
        if session_present {
            // [MQTT-4.4.0-1] unacknowledged PUBLISH (DUP) and PUBREL, in order.
            let resend: Vec<_> = slot.session.resend().collect();
            for out in resend {
                self.write_outgoing(key, out);
            }
        }
        Ok(())
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

    /// Closes a connection: publishes its Will unless it ended with DISCONNECT, and ends a
    /// clean session with it.
    pub(crate) fn close(&mut self, key: usize, reason: Close) {
        let Some(mut conn) = self.unregister(key) else {
            return;
        };
        self.reclaim_read_buffer(std::mem::take(&mut conn.rbuf));
        if matches!(reason, Close::Refused | Close::TakenOver | Close::Shutdown) {
            // Best effort: a refusing CONNACK should reach the client before the close, and
            // unread input would turn the close into a reset that can discard it.
            let _ = conn.flush(&mut self.frames);
            conn.drain_input();
        }
        let Some(session) = conn.state.session() else {
            return;
        };
        if let Some(will) = conn.will.take().map(|w| *w)
            && reason.publishes_will()
        {
            // [MQTT-3.1.2-8] [MQTT-3.1.2-16] [MQTT-3.1.2-17]
            let msg = Arc::new(Message {
                topic: will.topic,
                payload: will.payload,
                qos: will.qos,
                retain: will.retain,
                properties: will.properties,
            });
            self.publish(msg);
        }
        let Some(slot) = self.sessions.get_mut(session) else {
            return;
        };
        if slot.conn == Some(key) {
            slot.conn = None;
            slot.session.shrink_if_idle();
            self.update_backlog(session);
            let Some(slot) = self.sessions.get_mut(session) else {
                return;
            };
            if slot.session.clean {
                self.discard_session(session);
            } else if self.shared.config.session_expiry_secs > 0 {
                let ttl = std::time::Duration::from_secs(self.shared.config.session_expiry_secs);
                slot.expires = self.now.checked_add(ttl);
            }
        }
    }

    /// Removes a session and its subscriptions.
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
        let session = slot.session;
        for filter in session.subscriptions.keys() {
            self.shared.index.unsubscribe(session.id, filter);
        }
        self.by_client.remove(&session.client_id, skey);
    }
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
    // [MQTT-3.2.2-4] session present 0 with a refusal; [MQTT-3.2.2-5] then close.
    conn.push_packet(&Packet::ConnAck(ConnAck::new(false, code)));
    Err(Close::Refused)
}
