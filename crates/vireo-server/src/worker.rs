//! A worker thread: one mio event loop over its listener, its connections and its sessions.
//!
//! Sessions live on the worker their client id hashes to (their *home*); a connection whose
//! CONNECT arrives on another worker is handed to the home worker with its CONNECT already
//! decoded. So a takeover, a reconnect to a persistent session and every delivery to a session
//! are local to one thread, and a message for a session is routed to `home(session)` without a
//! lookup. See `docs/architecture.md`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use crossbeam_channel::Receiver;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use vireo_broker::protocol::lifecycle::{self, Liveness};
use vireo_broker::{Message, Recipients, Session, SessionId};
use vireo_codec::{ByteString, Packet, QoS, ReasonCode, decode};

use crate::clients::ClientIds;
use crate::conn::{Close, Conn, ConnState};
use crate::frames::FrameLog;
use crate::routing::MessageCopies;
use crate::server::WorkerListener;
use crate::shared::{Delivery, Shared, WorkerMsg};
use crate::transport::Layers;
use crate::unfinished::Unfinished;

pub(crate) const WAKER: Token = Token(0);
/// Listener `i` polls as `Token(FIRST_LISTENER + i)`.
const FIRST_LISTENER: usize = 1;
/// Connection tokens start here: `Token(FIRST_CONN + slab key)`.
const FIRST_CONN: usize = FIRST_LISTENER + crate::config::MAX_LISTENERS;

/// Events taken from one `poll`.
const MAX_EVENTS_PER_TICK: usize = 1024;
/// Bytes read from one connection per iteration before moving on to the others, so that one
/// fast publisher cannot starve the rest of the worker (and one iteration stays short).
const READ_BUDGET: usize = 64 * 1024;
/// Packets handled per connection per turn, at most: the byte budget alone lets a client of
/// tiny packets (PINGREQ, 2 bytes) make one turn 32,768 packets long, and twenty such
/// clients held every other client on their worker back by 50 ms a turn (hostile.py,
/// never-reads). Above what 64 KiB of 64-byte PUBLISHes hold, so fan-in is not cut short.
pub(crate) const READ_PACKETS: usize = 1024;
/// Read buffer growth step.
const READ_CHUNK: usize = 16 * 1024;
/// Deliveries from other workers handled per iteration, so that a flood of them cannot delay
/// this worker's reads and flushes: an iteration stays around a millisecond.
const MAX_DELIVERIES_PER_TICK: usize = 4 * 1024;
/// Poll timeout while reads are paused for back-pressure: how soon a paused worker notices
/// that the congested one has caught up.
const CONGESTED_POLL: Duration = Duration::from_millis(1);
/// Longest poll while an acknowledgement waits for the disk (`persistence = "sync"`).
const HOLD_POLL: Duration = Duration::from_millis(1);
/// A backlogged session that has acknowledged nothing for this long stops holding publishers
/// back: a stuck consumer must not stall everyone; its queue fills and drops instead.
const STALL: Duration = Duration::from_secs(1);
/// Every this many sweeps (10 s), idle sessions release their QoS 1/2 state.
const SHRINK_EVERY: u64 = 100;
/// Poll timeout while `accept` waits to be retried after a failure such as EMFILE.
const ACCEPT_RETRY: Duration = Duration::from_millis(10);
/// How long a stopping broker goes on delivering what is queued (Wills among it) before it
/// closes the connections.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);
/// How often timeouts and session expiry are checked.
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);

/// A session and where it is connected.
pub(crate) struct SessionSlot {
    pub session: Session,
    /// The connection serving it, if online: a slab key, 32 bits as in `ConnState` (see
    /// [`SessionSlot::conn`]).
    pub conn_key: Option<u32>,
    /// When an offline persistent session is discarded (session expiry).
    pub expires: Option<Instant>,
    /// Session expiry interval in seconds, from the last CONNECT (or DISCONNECT): 0 ends
    /// the session with its connection, `u32::MAX` never.
    pub expiry_secs: u32,
    /// A 5.0 Will waiting out its Will Delay Interval, and when it is due.
    #[allow(clippy::type_complexity)]
    pub pending_will: Option<Box<(Instant, Arc<Message>)>>,
    /// Counted in this worker's `Mailbox::backlogged`.
    pub backlogged: bool,
    /// Written to the durable store: removed from it when the session ends.
    pub stored: bool,
    /// Last time the client acknowledged a QoS 1/2 delivery (or connected).
    pub last_progress: Instant,
    /// In the worker's `deferred` list: holds QoS 1 messages not journaled yet.
    pub deferred: bool,
}

pub(crate) struct Worker {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub poll: Poll,
    /// Its socket of each listener, in the configuration's order.
    listeners: Vec<WorkerListener>,
    rx: Receiver<WorkerMsg>,
    pub conns: Slab<Conn>,
    pub sessions: Slab<SessionSlot>,
    /// Client id → session slab key.
    pub by_client: ClientIds,
    next_session: u64,
    /// Limits shared by every session of this worker.
    pub session_limits: Arc<vireo_broker::SessionLimits>,
    /// The durable store, for this worker's changes (`persistence` on).
    pub persist: Option<crate::store::Persist>,
    /// Acknowledgements waiting for the disk (`persistence = "sync"`).
    pub holds: crate::holds::Holds,
    /// Counter for generated client ids.
    pub generated: u64,
    /// Per destination worker, deliveries batched during this iteration.
    pub outbox: Vec<Vec<Delivery>>,
    /// Connections with queued output, flushed at the end of the iteration.
    pub dirty: Vec<usize>,
    /// Connections whose CONNECT was accepted this iteration: once their CONNACK is written,
    /// their output queue is released at once rather than at the next sweep, since most
    /// clients then stay idle (see `Conn::release_idle_queue`).
    pub connected: Vec<usize>,
    /// Connections to read again next iteration (budget ran out, or reads paused).
    again: Vec<usize>,
    /// Packets the connection being read may still handle this turn (see `READ_PACKETS`).
    pub packets_left: usize,
    /// Connections throttled by their rate limit, and when each may be read again (entries
    /// of connections closed since are skipped when due).
    rate_waits: BinaryHeap<Reverse<(Instant, usize)>>,
    /// Whether rate limits were ever on (`Shared::rate_limits_ever`): decoded packets are
    /// charged to the client.
    rate_limits_on: bool,
    /// PUBLISHes delivered and bytes read since the last sweep (added to `Stats` there).
    pub delivered: u64,
    read_bytes: u64,
    /// Samples the PUBLISH-read-to-frame-written latency (see `latency`).
    pub latency: crate::latency::Sampler,
    /// Worker 0 publishes the `$SYS` topics (when `sys_interval` is not 0).
    sys: Option<crate::sys::SysTopics>,
    /// Deliveries received from other workers, not yet handled: the current batch, consumed
    /// in place.
    inbox: std::vec::IntoIter<Delivery>,
    /// Some other worker is past its delivery high-water mark: reads pause (back-pressure).
    pub congested: bool,
    /// Some worker has a backlogged session: publishers marked `throttled` pause.
    pub backlogged: bool,
    /// The disk is behind (see `store_behind`): QoS 1/2 publishers are throttled.
    pub store_behind: bool,
    /// Recipients added to the outbox this iteration; past the high-water mark reads stop at
    /// once instead of at the next iteration's congestion check.
    pub outbox_pending: usize,
    /// Per destination worker, QoS 1/2 deliveries in this iteration's outbox.
    pub outbox_reliable: Vec<usize>,
    /// A takeover is reading the old connection to its end (`Worker::final_read`).
    pub final_read: bool,
    /// A read that does not fill the buffer ends this read (see `read_loop`): set only while
    /// handling a readable event that reports no FIN or error. Every other read (deferred
    /// ones, whose event may have carried a FIN, hand-overs, takeovers) goes to `WouldBlock`.
    short_read_ends: bool,
    /// `accept` failed (e.g. EMFILE): retry next iteration, since no new edge will come for
    /// connections already in the backlog.
    accept_retry: bool,
    /// The read buffer lent to whichever connection is being read (see `read`).
    rbuf: BytesMut,
    /// Where QoS 0 frames are encoded, once per message (see `frames`).
    pub frames: FrameLog,
    /// Scratch recipient list reused by every routed message.
    pub recipients: Recipients,
    pub now: Instant,
    last_sweep: Instant,
    /// Sessions holding messages whose journaling is deferred (`SessionLimits::defer_writes`),
    /// by slab key, and when they were last written: every `write_period`, so that a message
    /// is written between one and two periods after it was queued.
    pub deferred: Vec<usize>,
    last_deferred_write: Instant,
    write_period: Duration,
    sweeps: u64,
    /// Bytes held in unfinished packets, bounded by this worker's share of
    /// `max_unfinished_bytes`.
    unfinished: Unfinished,
}

impl SessionSlot {
    /// The connection serving this session, if online.
    pub(crate) fn conn(&self) -> Option<usize> {
        self.conn_key.map(|k| k as usize)
    }

    /// Records the connection now serving it (`None`: offline).
    pub(crate) fn set_conn(&mut self, key: Option<usize>) {
        // Connection slab keys fit 32 bits, as `ConnState::connected` already assumes.
        self.conn_key = key.map(|k| k as u32);
        self.session.set_connected(key.is_some());
    }

    /// Puts this session (slab key `skey`) in its worker's `deferred` list if it now holds
    /// messages not journaled: called wherever a message may have been queued.
    pub(crate) fn note_deferred(&mut self, skey: usize, deferred: &mut Vec<usize>) {
        if !self.deferred && self.session.has_deferred() {
            self.deferred = true;
            deferred.push(skey);
        }
    }
}

impl Worker {
    pub(crate) fn new(
        id: usize,
        shared: Arc<Shared>,
        poll: Poll,
        mut listeners: Vec<WorkerListener>,
        rx: Receiver<WorkerMsg>,
    ) -> io::Result<Self> {
        for (i, l) in listeners.iter_mut().enumerate() {
            poll.registry().register(
                &mut l.socket,
                Token(FIRST_LISTENER + i),
                Interest::READABLE,
            )?;
        }
        let workers = shared.mailboxes.len();
        let now = Instant::now();
        let write_period =
            Duration::from_millis(shared.config.write_delay_ms / 2).max(Duration::from_millis(1));
        let session_limits = Arc::new(shared.config.session_limits());
        let unfinished_budget = shared.config.unfinished_budget_per_worker();
        let rate_limits_on = shared.rate_limits_ever.load(Ordering::Relaxed);
        let sys = if id == 0 {
            crate::sys::SysTopics::new(shared.config.sys_interval, now)
        } else {
            None
        };
        let persist = shared.persist.as_ref().map(|p| p.for_worker(id));
        let sync_acks = persist.as_ref().is_some_and(|p| p.durable().sync);
        Ok(Self {
            id,
            shared,
            poll,
            listeners,
            rx,
            conns: Slab::new(),
            sessions: Slab::new(),
            by_client: ClientIds::default(),
            next_session: 0,
            session_limits,
            persist,
            holds: crate::holds::Holds::new(sync_acks, workers),
            generated: 0,
            outbox: (0..workers).map(|_| Vec::new()).collect(),
            dirty: Vec::new(),
            connected: Vec::new(),
            again: Vec::new(),
            packets_left: READ_PACKETS,
            rate_waits: BinaryHeap::new(),
            rate_limits_on,
            delivered: 0,
            read_bytes: 0,
            latency: crate::latency::Sampler::default(),
            sys,
            inbox: Vec::new().into_iter(),
            congested: false,
            backlogged: false,
            store_behind: false,
            outbox_pending: 0,
            outbox_reliable: vec![0; workers],
            accept_retry: false,
            final_read: false,
            short_read_ends: false,
            rbuf: BytesMut::new(),
            frames: FrameLog::default(),
            recipients: Recipients::new(),
            now,
            last_sweep: now,
            deferred: Vec::new(),
            last_deferred_write: now,
            write_period,
            sweeps: 0,
            unfinished: Unfinished::new(unfinished_budget),
        })
    }

    /// Runs until the broker shuts down.
    pub(crate) fn run(&mut self) {
        let mut events = Events::with_capacity(MAX_EVENTS_PER_TICK);
        while !self.shared.shutdown.load(Ordering::Relaxed) {
            // Other workers' mailboxes only: what this worker's clients publish reaches its own
            // subscribers directly, never through its own mailbox, so its own backlog is no
            // reason to stop reading them. (It was: a worker congested by a flood from
            // another one saw itself congested at nearly every turn, and left its own quiet
            // clients unread for the whole flood.)
            let id = self.id;
            self.congested = self
                .shared
                .mailboxes
                .iter()
                .enumerate()
                .any(|(i, m)| i != id && m.is_congested());
            // The disk behind: QoS 1/2 publishers wait until it catches up (throttled, as for
            // a backlogged session), so that neither the acknowledgements waiting for it nor
            // the changes on their way to it grow without bound. Not all reads: subscribers'
            // acknowledgements must go on, or the changes they cancel would be written too.
            let disk_behind = store_behind(&self.shared);
            self.store_behind = self.holds.is_full() || disk_behind;
            self.backlogged = disk_behind || mailboxes_hold_back(&self.shared);
            let timeout = if self.inbox.len() > 0 || !self.rx.is_empty() {
                Some(Duration::ZERO)
            } else if self.accept_retry {
                Some(ACCEPT_RETRY)
            } else if !self.again.is_empty() {
                Some(if self.congested || self.backlogged {
                    CONGESTED_POLL
                } else {
                    Duration::ZERO
                })
            } else {
                Some(SWEEP_INTERVAL)
            };
            let timeout = if self.holds.waiting() {
                timeout.map(|t| t.min(HOLD_POLL))
            } else {
                timeout
            };
            let timeout = if self.deferred.is_empty() {
                timeout
            } else {
                let due = self.last_deferred_write + self.write_period;
                timeout.map(|t| t.min(due.saturating_duration_since(self.now)))
            };
            let timeout = match self.rate_waits.peek() {
                Some(Reverse((at, _))) => {
                    timeout.map(|t| t.min(at.saturating_duration_since(self.now)))
                }
                None => timeout,
            };
            let mailbox = &self.shared.mailboxes[self.id];
            mailbox.sleeping.store(true, Ordering::SeqCst);
            // Re-check after announcing sleep: a sender that saw `sleeping == false` has
            // already queued its message, and this check sees it.
            let timeout = if self.rx.is_empty() {
                timeout
            } else {
                Some(Duration::ZERO)
            };
            let polled = self.poll.poll(&mut events, timeout);
            mailbox.sleeping.store(false, Ordering::SeqCst);
            if let Err(e) = polled
                && e.kind() != io::ErrorKind::Interrupted
            {
                tracing::error!(worker = self.id, error = %e, "poll failed; worker stops");
                break;
            }
            self.now = Instant::now();
            if std::mem::take(&mut self.accept_retry) {
                for i in 0..self.listeners.len() {
                    self.accept(i);
                }
            }
            self.rate_limits_on = self.shared.rate_limits_ever.load(Ordering::Relaxed);
            // Deferred reads first: those that waited longest go before this poll's events.
            self.read_deferred();
            for event in events.iter() {
                match event.token() {
                    WAKER => {}
                    Token(t) if t < FIRST_CONN => self.accept(t - FIRST_LISTENER),
                    Token(t) => {
                        let key = t - FIRST_CONN;
                        if event.is_writable() {
                            if let Some(conn) = self.conns.get_mut(key) {
                                conn.write_blocked = false;
                            }
                            self.mark_dirty(key);
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.short_read_ends = !(event.is_read_closed() || event.is_error());
                            self.read(key);
                            self.short_read_ends = false;
                        }
                    }
                }
            }
            self.wake_rate_limited();
            self.drain_mailbox();
            if self.now.duration_since(self.last_sweep) >= SWEEP_INTERVAL {
                self.last_sweep = self.now;
                self.sweep();
            }
            if !self.deferred.is_empty()
                && self.now.duration_since(self.last_deferred_write) >= self.write_period
            {
                self.write_deferred(false);
            }
            self.send_outbox();
            if self.holds.on {
                self.release_holds();
            }
            self.flush_dirty();
            // Closes during the flush may have published Wills.
            self.send_outbox();
            // Sealed after the iteration's last batch: every batch it sent carries its
            // number, so a worker that marks it taken has taken them all.
            if self.holds.on
                && let Some(p) = &self.persist
            {
                self.holds.seal(self.id, p.durable());
            }
            for key in std::mem::take(&mut self.connected) {
                if let Some(conn) = self.conns.get_mut(key) {
                    conn.release_idle_queue();
                }
            }
        }
        self.stop();
    }

    /// Accepts what listener `i` has waiting.
    fn accept(&mut self, i: usize) {
        loop {
            let Some(listener) = self.listeners.get(i) else {
                return;
            };
            let (tls, ws) = (listener.tls.clone(), listener.ws.clone());
            match listener.socket.accept() {
                Ok((stream, peer)) => {
                    let stats = &self.shared.stats;
                    if stats.connections.load(Ordering::Relaxed)
                        >= self.shared.live.max_connections.load(Ordering::Relaxed)
                    {
                        tracing::warn!(%peer, "max_connections reached; connection refused");
                        continue;
                    }
                    let limits = &self.shared.per_ip;
                    if limits.is_on()
                        && let Err((why, log)) = limits.admit(peer.ip(), self.now)
                    {
                        stats.refused_per_ip.fetch_add(1, Ordering::Relaxed);
                        if log {
                            tracing::warn!(%peer, ?why, "per-address connection limit; closing (logged once per burst)");
                        }
                        continue; // dropped: closed before anything is read
                    }
                    // Linux copies TCP_NODELAY from the listener (see `bind_reuseport`): one
                    // system call per connection saved.
                    #[cfg(not(target_os = "linux"))]
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(%peer, error = %e, "set_nodelay failed");
                    }
                    let liveness =
                        Liveness::awaiting_connect(self.now, self.shared.live.connect_timeout());
                    let mut conn = Conn::new(stream, peer, liveness);
                    conn.listener = i as u8; // at most MAX_LISTENERS
                    let tls = match tls.map(|l| l.accept()) {
                        None => None,
                        Some(Ok(session)) => Some(session),
                        Some(Err(e)) => {
                            tracing::warn!(%peer, error = %e, "TLS session not created");
                            self.shared.per_ip.release(peer.ip());
                            continue;
                        }
                    };
                    let ws = ws.map(|l| l.accept());
                    if tls.is_some() || ws.is_some() {
                        conn.layers = Some(Box::new(Layers { tls, ws }));
                    }
                    self.register(conn);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends: retry next iteration (`accept_retry`): no new edge
                    // comes for connections already waiting in the backlog.
                    tracing::warn!(worker = self.id, error = %e, "accept failed");
                    self.accept_retry = true;
                    return;
                }
            }
        }
    }

    /// Adds a connection to the slab and the poll. Returns its key.
    pub(crate) fn register(&mut self, conn: Conn) -> Option<usize> {
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let conn = entry.insert(conn);
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut conn.stream, Token(key + FIRST_CONN), interest)
        {
            tracing::warn!(peer = %conn.peer, error = %e, "register failed");
            let conn = self.conns.remove(key);
            self.shared.per_ip.release(conn.peer.ip());
            return None;
        }
        self.shared
            .stats
            .connections
            .fetch_add(1, Ordering::Relaxed);
        Some(key)
    }

    /// Takes a connection out of this worker without closing it (to hand it to another).
    pub(crate) fn unregister(&mut self, key: usize) -> Option<Conn> {
        let mut conn = self.conns.try_remove(key)?;
        self.holds.forget(key);
        let delta = self.unfinished.release(key);
        self.shared.stats.add_unfinished(delta);
        // Its runs point into this worker's frame log: resolved while it still exists.
        conn.resolve(&mut self.frames);
        let _ = self.poll.registry().deregister(&mut conn.stream);
        self.shared
            .stats
            .connections
            .fetch_sub(1, Ordering::Relaxed);
        Some(conn)
    }

    pub(crate) fn mark_dirty(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key)
            && !std::mem::replace(&mut conn.dirty, true)
        {
            self.dirty.push(key);
        }
    }

    /// Reads what the socket has (up to the budget) and handles every complete packet.
    /// While some worker is congested, the read is deferred: the connection waits on the
    /// `again` list and its bytes wait in the kernel, which pushes back on the client.
    pub(crate) fn read(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.rate_limited {
            // `wake_rate_limited` reads it once its allowance is back.
            return;
        }
        // Fresh, not the iteration's `backlogged` snapshot: a publisher throttled earlier in
        // this iteration must not be let go by a snapshot taken before the backlog began.
        if conn.throttled && !holds_back_anywhere(&self.shared) {
            conn.throttled = false;
        }
        if conn.queued_cost() > 2 * self.shared.live.max_output_bytes() {
            // Resumed by `flush_dirty` once the queue drains.
            conn.output_paused = true;
            return;
        }
        if self.congested || conn.throttled {
            self.read_later(key);
            return;
        }
        self.read_now(key);
    }

    /// Reads regardless of back-pressure (see `read` for the checks).
    pub(crate) fn read_now(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        // Lend the worker's read buffer to this connection; it keeps only a partial packet
        // afterwards (see `return_read_buffer`).
        let lent = conn.rbuf.is_empty();
        if lent {
            std::mem::swap(&mut conn.rbuf, &mut self.rbuf);
        }
        if let Some(reason) = self.read_loop(key) {
            return self.close(key, reason);
        }
        self.flush_layers_now(key);
        if lent {
            self.return_read_buffer(key);
        } else if let Some(conn) = self.conns.get_mut(key) {
            conn.shrink_idle();
        }
        self.count_unfinished(key);
    }

    /// Writes what a TLS or WebSocket connection's read produced (a handshake flight, its
    /// CONNACK) now rather than with the iteration's flush, which comes after every other
    /// handshake the worker signs in this iteration: the client waiting on it waits that
    /// much less. Plain connections keep one write per iteration.
    pub(crate) fn flush_layers_now(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.layers.is_none() || !conn.dirty || conn.write_blocked || self.holds.is_corked(key) {
            return;
        }
        // It stays on the dirty list: the iteration's flush finds nothing left, or what the
        // socket did not take.
        if let Err(e) = conn.flush(&mut self.frames) {
            tracing::debug!(peer = %conn.peer, error = %e, "write failed");
            self.close(key, Close::Io);
        }
    }

    /// Counts what `key` holds of an unfinished packet after a read; past the worker's budget,
    /// closes the connections whose unfinished packets are oldest (see `unfinished`).
    fn count_unfinished(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let mut held = if conn.rbuf.is_empty() {
            0
        } else {
            conn.rbuf.capacity()
        };
        if let Some(layers) = conn.layers.as_deref() {
            held += layers.partial();
        }
        let delta = self.unfinished.update(key, held);
        self.shared.stats.add_unfinished(delta);
        while let Some(victim) = self.unfinished.victim() {
            if let Some(conn) = self.conns.get(victim) {
                tracing::warn!(
                    peer = %conn.peer,
                    held = self.unfinished.bytes(),
                    "unfinished packets past max_unfinished_bytes: closing the oldest"
                );
            }
            self.shared
                .stats
                .unfinished_closed
                .fetch_add(1, Ordering::Relaxed);
            self.close(victim, Close::Limit(ReasonCode::QUOTA_EXCEEDED));
            // `close` released it through `unregister`; this keeps the count right even if
            // the connection was somehow gone already.
            self.shared
                .stats
                .add_unfinished(self.unfinished.release(victim));
        }
    }

    /// Reads and decodes until `WouldBlock` or the budget; `Some(reason)` to close.
    ///
    /// A read that does not fill the buffer has emptied the socket, so the loop stops there
    /// instead of reading again for a `WouldBlock`: with edge-triggered epoll on Linux, data
    /// arriving later raises a new event (the same rule tokio applies). Not when the event
    /// reported the peer's FIN, which raises no further event, nor for reads not driven by an
    /// event (see `short_read_ends`).
    /// (Measured: the extra read was one of ~7 system calls per connection set-up.)
    fn read_loop(&mut self, key: usize) -> Option<Close> {
        let mut budget = READ_BUDGET;
        self.packets_left = READ_PACKETS;
        let mut drained = false;
        loop {
            // Decode what is buffered first: bytes just read, or packets left behind when
            // decoding stopped for back-pressure.
            if let Err(reason) = self.decode_all(key) {
                return Some(reason);
            }
            if self.rate_limits_on && self.conns.get(key).is_some_and(|c| c.rate_limited) {
                return None;
            }
            if budget == 0 || self.packets_left == 0 || self.paused(key) {
                self.read_later(key);
                return None;
            }
            if drained {
                return None;
            }
            let conn = self.conns.get_mut(key)?;
            if conn.rbuf.capacity() - conn.rbuf.len() < READ_CHUNK / 4 {
                conn.rbuf.reserve(READ_CHUNK);
            }
            let spare = conn.rbuf.capacity() - conn.rbuf.len();
            let read = match conn.layers.as_deref_mut() {
                None => read_into_spare(&conn.stream, &mut conn.rbuf),
                Some(layers) => {
                    let read = layers.read(&mut conn.stream, &mut conn.rbuf);
                    if layers.wants_write() {
                        // Handshake records, alerts, pongs to send: `flush_layers_now` writes
                        // them once this read is done.
                        self.mark_dirty(key);
                    }
                    read
                }
            };
            let conn = self.conns.get_mut(key)?;
            match read {
                Ok(0) => return Some(Close::Eof),
                Ok(n) => {
                    // A short read through a layer says nothing of the socket: read to
                    // `WouldBlock`.
                    drained = n < spare
                        && conn.layers.is_none()
                        && self.short_read_ends
                        && !self.final_read;
                    budget = budget.saturating_sub(n);
                    self.read_bytes += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!(peer = %conn.peer, error = %e, "read failed");
                    return Some(Close::Io);
                }
            }
        }
    }

    /// Whether reading (and decoding) a connection must stop now: the broker is congested, or
    /// this publisher is throttled. Checked after every packet, so a throttled publisher adds
    /// at most one more message to a backlogged session, not a whole read buffer's worth.
    fn paused(&self, key: usize) -> bool {
        !self.final_read && (self.congested || self.conns.get(key).is_some_and(|c| c.throttled))
    }

    /// Takes the worker's read buffer back after a read. A connection left holding a partial
    /// packet keeps a copy of just those bytes; an idle connection holds no buffer at all, so
    /// tens of thousands of idle clients cost no read buffers (and the heap's high-water mark
    /// does not grow with how many connections happened to be read in one poll).
    fn return_read_buffer(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let partial = if conn.rbuf.is_empty() {
            BytesMut::new()
        } else {
            BytesMut::from(&conn.rbuf[..])
        };
        let mut lent = std::mem::replace(&mut conn.rbuf, partial);
        lent.clear();
        if self.rbuf.capacity() < lent.capacity() {
            self.rbuf = lent;
        }
        conn.shrink_idle();
    }

    /// Takes back the read buffer of a connection being closed or handed over while it holds
    /// the worker's lent buffer (the worker then has none), so that the next read does not
    /// allocate a fresh 16 KiB chunk.
    pub(crate) fn reclaim_read_buffer(&mut self, mut buf: BytesMut) {
        if self.rbuf.capacity() == 0 {
            buf.clear();
            self.rbuf = buf;
        }
    }

    /// Reads the connections whose reads were deferred, in the order they were deferred. If
    /// the broker congests again partway, the rest keep their place at the front, ahead of
    /// those just read (which `read_later` queued again at the back): a publisher that
    /// congests the broker at each of its turns cannot keep a quiet one waiting behind it.
    /// (Measured: a flood into 10,000 subscribers held a QoS 1 round trip back for the whole
    /// flood, a minute, before this.)
    fn read_deferred(&mut self) {
        let waiting = std::mem::take(&mut self.again);
        for (i, &key) in waiting.iter().enumerate() {
            if self.congested {
                // Their `read_again` is still set: none of them is in `self.again` twice.
                let requeued = std::mem::replace(&mut self.again, waiting[i..].to_vec());
                self.again.extend(requeued);
                return;
            }
            if let Some(conn) = self.conns.get_mut(key) {
                conn.read_again = false;
                self.read(key);
            }
        }
    }

    pub(crate) fn read_later(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key)
            && !std::mem::replace(&mut conn.read_again, true)
        {
            self.again.push(key);
        }
    }

    /// Handles every complete packet in the connection's read buffer.
    pub(crate) fn decode_all(&mut self, key: usize) -> Result<(), Close> {
        let max = self.shared.config.max_packet_size;
        let mut progressed = false;
        loop {
            // The connection may have been handed to another worker by a CONNECT.
            let Some(conn) = self.conns.get_mut(key) else {
                return Ok(());
            };
            let before = conn.rbuf.len();
            match decode(&mut conn.rbuf, conn.version, max) {
                Ok(Some(packet)) => {
                    progressed = true;
                    if self.rate_limits_on {
                        let len = before - conn.rbuf.len();
                        let publish = matches!(packet, Packet::Publish(_));
                        self.handle(key, packet)?;
                        if self.charge(key, len, publish) {
                            self.note_progress(key, true, false);
                            return Ok(());
                        }
                    } else {
                        self.handle(key, packet)?;
                    }
                    self.packets_left = self.packets_left.saturating_sub(1);
                    if self.packets_left == 0 || self.paused(key) {
                        // The rest waits in the buffer, and the connection on the `again`
                        // list: no event will come for bytes already read, whoever called.
                        self.read_later(key);
                        // What waits is the broker's doing, not an unfinished packet.
                        self.note_progress(key, true, false);
                        return Ok(());
                    }
                }
                Ok(None) => {
                    let partial = self.conns.get(key).is_some_and(|c| {
                        !c.rbuf.is_empty() || c.layers.as_deref().is_some_and(|l| l.partial() > 0)
                    });
                    self.note_progress(key, progressed, partial);
                    return Ok(());
                }
                Err(e) => {
                    self.shared
                        .stats
                        .protocol_errors
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(peer = %conn.peer, error = %e, "malformed packet; closing");
                    if let (
                        ConnState::AwaitingConnect,
                        vireo_codec::DecodeError::UnsupportedProtocolLevel(_),
                    ) = (conn.state, e)
                    {
                        // [MQTT-3.1.2-2]: CONNACK 0x01, then close.
                        conn.push(Bytes::from_static(&[0x20, 0x02, 0x00, 0x01]));
                        return Err(Close::Refused);
                    }
                    // 5.0: DISCONNECT 0x81 / 0x82 / 0x95 as the error says [MQTT-4.13.1-1].
                    return Err(Close::Protocol(e.reason_code()));
                }
            }
        }
    }

    /// Charges a decoded packet to the client's rate limits; `true` if that used up its
    /// allowance: it is not read again until `wake_rate_limited` says so. Not while a
    /// takeover reads an old connection to its end.
    fn charge(&mut self, key: usize, len: usize, publish: bool) -> bool {
        let now = self.now;
        if self.final_read {
            return false;
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        let peer = conn.peer;
        let Some(quota) = conn.quota_mut() else {
            return false;
        };
        quota.charge(now, len, publish);
        let Some(at) = quota.resume_at(now) else {
            return false;
        };
        if quota.first_throttle() {
            tracing::info!(
                %peer,
                "rate limit reached (max_publish_rate / max_inbound_bytes_rate): reads paused \
                 until the client is back under it"
            );
        }
        conn.rate_limited = true;
        self.rate_waits.push(Reverse((at, key)));
        self.shared
            .stats
            .rate_limited
            .fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Reads again the throttled connections whose allowance is back.
    fn wake_rate_limited(&mut self) {
        while let Some(&Reverse((at, key))) = self.rate_waits.peek() {
            if at > self.now {
                break;
            }
            self.rate_waits.pop();
            if let Some(conn) = self.conns.get_mut(key)
                && std::mem::take(&mut conn.rate_limited)
            {
                self.read(key);
            }
        }
    }

    /// The keep-alive and unfinished-packet clocks after a decode pass (see
    /// `Liveness::on_decoded`).
    #[inline]
    fn note_progress(&mut self, key: usize, progressed: bool, partial: bool) {
        let timeout = self.shared.live.packet_timeout();
        if let Some(conn) = self.conns.get_mut(key) {
            if progressed {
                self.unfinished.restart(key);
            }
            if progressed || partial {
                let ka = conn.keep_alive;
                conn.liveness
                    .on_decoded(self.now, ka, progressed, partial, timeout);
            }
        }
    }

    fn drain_mailbox(&mut self) {
        let (mut handled, mut reliable) = (0, 0);
        while handled < MAX_DELIVERIES_PER_TICK {
            let Some(d) = self.inbox.next() else {
                if let Some((from, iteration)) = self.holds.inbox_from.take() {
                    self.mark_processed(from, iteration);
                }
                match self.rx.try_recv() {
                    Ok(WorkerMsg::Deliver(batch, from, iteration)) => {
                        self.inbox = batch.into_iter();
                        if self.holds.on {
                            self.holds.inbox_from = Some((from, iteration));
                        }
                    }
                    Ok(WorkerMsg::Adopt(adoption)) => self.adopt(*adoption),
                    Ok(WorkerMsg::Loaded(reply)) => self.on_loaded(*reply),
                    Err(_) => break,
                }
                continue;
            };
            self.latency.offer(d.msg.received);
            let mut copies = MessageCopies::default();
            for r in &d.recipients {
                self.deliver_local(*r, &d.msg, &mut copies);
                if d.msg.qos.min(r.qos) != QoS::AtMostOnce {
                    reliable += 1;
                }
            }
            handled += d.recipients.len();
        }
        if self.inbox.len() == 0
            && let Some((from, iteration)) = self.holds.inbox_from.take()
        {
            self.mark_processed(from, iteration);
        }
        // Once per tick, not per delivery: other workers read this counter's cache line.
        let mailbox = &self.shared.mailboxes[self.id];
        if handled > 0 {
            mailbox.queued.fetch_sub(handled, Ordering::Relaxed);
        }
        if reliable > 0 {
            let limit = self.shared.in_transit_limit;
            let before = mailbox.reliable.fetch_sub(reliable, Ordering::Relaxed);
            if before > limit && before - reliable <= limit {
                // Publishers paused on this worker resume now rather than at their next poll
                // timeout.
                for (i, other) in self.shared.mailboxes.iter().enumerate() {
                    if i != self.id {
                        other.wake_if_sleeping();
                    }
                }
            }
        }
    }

    /// Sends each other worker the deliveries batched for it this iteration.
    fn send_outbox(&mut self) {
        self.outbox_pending = 0;
        for (worker, batch) in self.outbox.iter_mut().enumerate() {
            if !batch.is_empty() {
                let batch = std::mem::take(batch);
                let reliable = std::mem::take(&mut self.outbox_reliable[worker]);
                self.holds.handed_to(worker);
                self.shared.mailboxes[worker].send_deliveries(
                    batch,
                    reliable,
                    self.id,
                    self.holds.iteration,
                );
            }
        }
    }

    /// `persistence = "sync"`: what earlier iterations acknowledged and is now on disk goes
    /// out (this one's waits: it is sealed at the iteration's end).
    fn release_holds(&mut self) {
        let Some(durable) = self.persist.as_ref().map(|p| Arc::clone(p.durable())) else {
            return;
        };
        for key in self.holds.take_refills() {
            self.refill(key);
        }
        let released = self.holds.release(self.id, &durable);
        for key in released.uncorked {
            self.mark_dirty(key);
        }
        for (key, ack) in released.acks {
            // `push_packet` says whether the connection just became dirty.
            if let Some(conn) = self.conns.get_mut(key)
                && conn.push_packet(&ack)
            {
                self.dirty.push(key);
            }
        }
        for key in released.lost {
            if self.conns.contains(key) {
                tracing::warn!(
                    "the store gave up changes this connection's acknowledgement confirmed: closed unacknowledged, so that its client sends again"
                );
                self.close(key, Close::Limit(ReasonCode::UNSPECIFIED_ERROR));
            }
        }
    }

    /// This worker took `from`'s batch of `iteration`: the changes it made of it are sent.
    fn mark_processed(&self, from: usize, iteration: u64) {
        if let Some(p) = &self.persist {
            p.durable().mark_processed(self.id, from, iteration);
        }
    }

    fn flush_dirty(&mut self) {
        let limit = self.shared.live.max_output_bytes();
        let mut i = 0;
        // Refilling from a session queue can dirty more connections; index, don't iterate.
        while i < self.dirty.len() {
            let key = self.dirty[i];
            i += 1;
            let corked = self.holds.is_corked(key);
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            conn.dirty = false;
            if corked {
                continue; // written when its hold is released
            }
            match conn.flush(&mut self.frames) {
                Ok(_) => {
                    if conn.output_paused && conn.queued_cost() <= limit {
                        conn.output_paused = false;
                        self.read_later(key);
                    }
                    let Some(conn) = self.conns.get_mut(key) else {
                        continue;
                    };
                    if conn.out_bytes() < limit {
                        self.refill(key);
                        if let Some(conn) = self.conns.get_mut(key)
                            && conn.has_output()
                            && !conn.dirty
                        {
                            // Refill queued more: write it now rather than next iteration.
                            match conn.flush(&mut self.frames) {
                                Ok(_) => {}
                                Err(e) => {
                                    tracing::debug!(peer = %conn.peer, error = %e, "write failed");
                                    self.close(key, Close::Io);
                                }
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(peer = %conn.peer, error = %e, "write failed");
                    self.close(key, Close::Io);
                }
            }
        }
        self.dirty.clear();
        self.frames.release(&self.conns);
        self.latency.flushed();
    }

    /// Checks connection deadlines and offline session expiry.
    fn sweep(&mut self) {
        let now = self.now;
        self.sweeps += 1;
        let stats = &self.shared.stats;
        let mine = &self.shared.mailboxes[self.id];
        let (delivered, read, written) = (
            std::mem::take(&mut self.delivered),
            std::mem::take(&mut self.read_bytes),
            crate::conn::WRITTEN.take(),
        );
        stats.publishes_out.fetch_add(delivered, Ordering::Relaxed);
        stats.bytes_in.fetch_add(read, Ordering::Relaxed);
        stats.bytes_out.fetch_add(written, Ordering::Relaxed);
        mine.delivered.fetch_add(delivered, Ordering::Relaxed);
        mine.read_bytes.fetch_add(read, Ordering::Relaxed);
        mine.written_bytes.fetch_add(written, Ordering::Relaxed);
        mine.connections.store(self.conns.len(), Ordering::Relaxed);
        mine.sessions.store(self.sessions.len(), Ordering::Relaxed);
        if self.latency.has_pending() {
            self.latency.drain_into(&mut mine.latency.lock());
        }
        if let Some(sys) = self.sys.as_mut() {
            for msg in sys.due(now, &self.shared) {
                self.publish(msg);
            }
        }
        // One pass over the connections, one over the sessions: at a million idle clients each
        // pass is the sweep's whole cost.
        let mut expired = Vec::new();
        for (key, conn) in self.conns.iter_mut() {
            conn.release_idle_queue();
            // A connection whose reads the broker paused (back-pressure) may have sent packets
            // that wait unread in the kernel: it is not silent, so it does not time out
            // [MQTT-3.1.2-24].
            let paused = conn.read_again || conn.output_paused || conn.rate_limited;
            if !paused && conn.liveness.expired(now) {
                expired.push(key);
            }
        }
        for key in expired {
            if let Some(conn) = self.conns.get(key) {
                if conn.rbuf.is_empty() {
                    tracing::info!(peer = %conn.peer, "keep alive / CONNECT timeout [MQTT-3.1.2-24]");
                } else {
                    tracing::info!(
                        peer = %conn.peer,
                        buffered = conn.rbuf.len(),
                        "packet unfinished after packet_timeout_secs: closing"
                    );
                }
            }
            self.close(key, Close::Timeout);
        }
        let shrink = self.sweeps.is_multiple_of(SHRINK_EVERY);
        let (mut stale, mut backlogged, mut wills) = (Vec::new(), Vec::new(), Vec::new());
        let (mut queued, mut inflight) = (0, 0);
        for (key, s) in self.sessions.iter_mut() {
            if shrink {
                s.session.shrink_if_idle();
            }
            queued += s.session.queued_len();
            inflight += s.session.inflight_len();
            let due = lifecycle::due(
                now,
                s.conn_key.is_some(),
                s.pending_will.as_ref().map(|w| w.0),
                s.expires,
            );
            if due.will {
                wills.push(key);
            }
            if due.expired {
                stale.push(key);
            } else if s.backlogged {
                backlogged.push(key);
            }
        }
        let mine = &self.shared.mailboxes[self.id];
        mine.queued_messages.store(queued, Ordering::Relaxed);
        mine.inflight_messages.store(inflight, Ordering::Relaxed);
        for key in stale {
            self.discard_session(key);
        }
        // 5.0 Wills whose Will Delay Interval ran out [MQTT-3.1.2-8] (those of sessions that
        // just expired went out with them).
        for key in wills {
            if let Some(will) = self
                .sessions
                .get_mut(key)
                .and_then(|s| s.pending_will.take())
            {
                self.publish(will.1);
                self.persist_session(key); // its record no longer carries it
            }
        }
        for key in backlogged {
            self.update_backlog(key);
        }
    }

    /// Re-evaluates whether a session holds publishers back: online, more than a window of
    /// QoS 1/2 messages waiting (with hysteresis: it stays backlogged until the queue is under
    /// half a window), and not stalled.
    pub(crate) fn update_backlog(&mut self, skey: usize) {
        let window = self.shared.config.max_inflight;
        let now = self.now;
        let Some(slot) = self.sessions.get_mut(skey) else {
            return;
        };
        let queued = slot.session.queued_len();
        let deep = if slot.backlogged {
            // At least 1: with a window of one, `window / 2` is 0 and the backlog would
            // never clear while the consumer keeps acknowledging.
            queued >= (window / 2).max(1)
        } else {
            queued > window
        };
        // A session whose own connection is throttled cannot make progress (its acks are not
        // read), so it must not hold publishers back.
        let online = slot
            .conn()
            .and_then(|k| self.conns.get(k))
            .is_some_and(|c| !c.throttled);
        let should = online && deep && now.duration_since(slot.last_progress) < STALL;
        if should != slot.backlogged {
            slot.backlogged = should;
            let counter = &self.shared.mailboxes[self.id].backlogged;
            if should {
                counter.fetch_add(1, Ordering::Relaxed);
            } else {
                counter.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// A new session id for the session about to take slab slot `skey`. Layout: worker index
    /// (8 bits) | serial (24 bits) | slot (32 bits). Any worker can tell where a session lives,
    /// and its home worker finds the slot without a map lookup; the serial tells a reused slot
    /// from the one a message in flight was routed to (a false match would need 16M sessions
    /// created in that slot while one message was in flight).
    pub(crate) fn new_session_id(&mut self, skey: usize) -> SessionId {
        self.next_session = (self.next_session + 1) & 0xFF_FFFF;
        SessionId(
            ((self.id as u64) << 56) | (self.next_session << 32) | (skey as u64 & 0xFFFF_FFFF),
        )
    }

    /// Shutting down: stop accepting; publish every Will still to come, delayed ones too,
    /// since the sessions end with the broker [MQTT-3.1.2-8]; once every worker has, deliver
    /// what is queued for at most `SHUTDOWN_FLUSH`; then close each connection (5.0:
    /// DISCONNECT 0x8B).
    fn stop(&mut self) {
        self.listeners.clear();
        self.now = Instant::now();
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            let Some(session) = conn.state.session() else {
                continue;
            };
            if let Some(will) = conn.take_will() {
                let msg = self.will_message(will, session);
                self.publish(msg);
            }
        }
        let delayed: Vec<_> = self
            .sessions
            .iter_mut()
            .filter_map(|(key, s)| s.pending_will.take().map(|w| (key, w)))
            .collect();
        for (key, will) in delayed {
            self.publish(will.1);
            // Published: a restart must not publish it again.
            self.persist_session(key);
        }
        self.send_outbox();
        let deadline = Instant::now() + SHUTDOWN_FLUSH;
        let shared = Arc::clone(&self.shared);
        let stopped = &shared.stopped_wills;
        stopped.fetch_add(1, Ordering::SeqCst);
        let workers = self.shared.mailboxes.len();
        loop {
            self.now = Instant::now();
            self.drain_mailbox();
            self.flush_dirty();
            let all_published = stopped.load(Ordering::SeqCst) >= workers;
            let idle = all_published
                && self.rx.is_empty()
                && self.inbox.len() == 0
                && !self.conns.iter().any(|(_, c)| c.has_output());
            if idle || self.now >= deadline {
                break;
            }
            // Waiting on sockets that are slow to take the rest, or on other workers' Wills:
            // a short pause, bounded by the deadline.
            std::thread::sleep(Duration::from_millis(1));
        }
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.close(key, Close::Shutdown);
        }
        // Before the store stops (after every worker has): nothing acknowledged is lost to
        // a SIGTERM.
        self.write_deferred(true);
    }

    /// Journals what the sessions in `deferred` held at the last call (`all`: everything).
    fn write_deferred(&mut self, all: bool) {
        self.last_deferred_write = self.now;
        let mut keys = std::mem::take(&mut self.deferred);
        keys.retain(|&skey| match self.sessions.get_mut(skey) {
            // (A key whose slot was freed and taken again: that session has its own entry.)
            Some(slot) if slot.deferred => {
                slot.deferred = slot.session.write_deferred(all);
                slot.deferred
            }
            _ => false,
        });
        keys.sort_unstable();
        keys.dedup();
        self.deferred = keys;
    }
}

/// Reads from `stream` into the spare capacity of `buf`, without first zeroing it.
///
/// Zero-filling the spare capacity before each `read` (the safe way to get a `&mut [u8]`) cost
/// 5.6% of fan-in instructions: every read, even of a 4-byte PUBACK, wrote 16 KiB of zeros.
#[allow(unsafe_code)]
fn read_into_spare(stream: &mio::net::TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    let len = buf.len();
    let (init, _) = rustix::io::read(stream, buf.spare_capacity_mut())?;
    let n = init.len();
    // SAFETY: `rustix::io::read` hands back the first `n` bytes of the spare capacity as an
    // initialised `&mut [u8]` (the kernel wrote them), so bytes `0..len + n` of `buf` are
    // initialised, and `n` is at most the spare capacity, so `len + n <= buf.capacity()`.
    unsafe { buf.set_len(len + n) };
    Ok(n)
}

/// The worker that owns a session.
/// Whether any worker holds QoS 1/2 publishers back (a backlogged session, or too much in
/// transit to it).
fn holds_back_anywhere(shared: &Shared) -> bool {
    store_behind(shared) || mailboxes_hold_back(shared)
}

/// Whether some worker's mailbox holds back publishers.
fn mailboxes_hold_back(shared: &Shared) -> bool {
    let limit = shared.in_transit_limit;
    shared.mailboxes.iter().any(|m| m.holds_back(limit, 0))
}

/// Whether the store's thread has more changes waiting than it should (a slow disk).
fn store_behind(shared: &Shared) -> bool {
    shared
        .persist
        .as_ref()
        .is_some_and(crate::store::Persist::is_behind)
}

pub(crate) fn home_of_session(id: SessionId) -> usize {
    (id.0 >> 56) as usize
}

/// The slab slot of a session on its home worker (see `Worker::new_session_id`).
pub(crate) fn slot_of_session(id: SessionId) -> usize {
    (id.0 & 0xFFFF_FFFF) as usize
}

/// The worker that owns a client id's session.
pub(crate) fn home_of_client(client_id: &str, workers: usize) -> usize {
    use std::hash::BuildHasher;
    let hash = foldhash::fast::FixedState::with_seed(0x5eed).hash_one(client_id);
    (hash % workers as u64) as usize
}

/// A generated client id for an empty one [MQTT-3.1.3-6], homed on `worker`.
/// Skips ids already in use, so an anonymous client never takes over a named one.
pub(crate) fn generated_client_id(
    worker: usize,
    workers: usize,
    counter: &mut u64,
    in_use: impl Fn(&str) -> bool,
) -> ByteString {
    loop {
        *counter += 1;
        let id = format!("vireo-{worker}-{counter}");
        if home_of_client(&id, workers) == worker && !in_use(&id) {
            return ByteString::from(id);
        }
    }
}

#[cfg(test)]
mod tests {
    /// What every connection and every session costs in the worker's slabs, whatever it does:
    /// the bulk of an idle connection's memory. Grow these knowingly.
    #[cfg(target_pointer_width = "64")]
    #[test]
    fn idle_state_stays_small() {
        use std::mem::size_of;
        eprintln!(
            "Conn {} SessionSlot {} Session {}",
            size_of::<crate::conn::Conn>(),
            size_of::<super::SessionSlot>(),
            size_of::<vireo_broker::Session>()
        );
        // mio's TcpStream carries a selector id in debug builds (16 bytes, 4 in release),
        // which costs `Conn` 8 bytes after padding (16 since the listener index, which fits
        // in release padding). 208 in release: the TLS session pointer took 8 (200 before).
        let limit = if cfg!(debug_assertions) { 224 } else { 208 };
        assert!(size_of::<crate::conn::Conn>() <= limit);
        assert!(size_of::<super::SessionSlot>() <= 120);
    }
}
