//! State shared by all workers, and the hand-off between them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use bytes::BytesMut;
use crossbeam_channel::Sender;
use hdrhistogram::Histogram;
use mio::Waker;
use mio::net::TcpStream;
use parking_lot::{Mutex, RwLock};
use smallvec::SmallVec;
use vireo_broker::protocol::Limits;
use vireo_broker::protocol::acl::AclFile;

use crate::per_ip::PerIp;
use vireo_broker::protocol::auth::PasswordPolicy;
use vireo_broker::protocol::quota::RateLimits;
use vireo_broker::{Message, Recipient, RetainedStore, SharedSubscriptions, SubscriptionIndex};
use vireo_codec::Connect;

use crate::Config;
use crate::auth::Checkers;

/// What one worker sends another.
pub(crate) enum WorkerMsg {
    /// Messages for sessions the receiving worker owns, batched per loop iteration: the
    /// batch, the sending worker and its iteration (for `persistence = "sync"`).
    Deliver(Vec<Delivery>, usize, u64),
    /// A connection whose CONNECT names a client id owned by the receiving worker.
    Adopt(Box<Adoption>),
    /// Messages of a session's queue read back from disk (see `Journal::load`).
    Loaded(Box<crate::store::LoadReply>),
}

/// One message and the receiving worker's sessions it goes to. Most messages reach one or two
/// sessions per worker, so two recipients are kept inline: a `Delivery` is 48 bytes, cheap to
/// batch and hand over (with the index's 16-inline `Recipients` it was 272, and moving those
/// batches showed up as 10% of a fan-in profile).
pub(crate) struct Delivery {
    pub msg: Arc<Message>,
    pub recipients: SmallVec<[Recipient; 2]>,
}

/// A connection handed over after its CONNECT was read on another worker.
pub(crate) struct Adoption {
    pub stream: TcpStream,
    /// The client's address, as accepted (counted by the per-address limits under it).
    pub peer: std::net::SocketAddr,
    /// The listener that accepted it.
    pub listener: u8,
    /// Its TLS and WebSocket state, for a connection to such a listener.
    pub layers: Option<Box<crate::transport::Layers>>,
    pub connect: Box<Connect>,
    /// Bytes that arrived after the CONNECT (pipelined packets).
    pub rest: BytesMut,
    /// The client sent an empty id and `connect.client_id` was generated: a 5.0 CONNACK
    /// returns it as Assigned Client Identifier [MQTT-3.1.3-7].
    pub assigned: bool,
    /// The CONNACK code refusing this connection, decided where its credentials were
    /// checked (`auth`): the home worker sends it and closes.
    pub refused: Option<vireo_codec::ReasonCode>,
}

/// A worker's mailbox: its channel and the waker of its poll.
pub(crate) struct Mailbox {
    tx: Sender<WorkerMsg>,
    waker: Waker,
    /// Set while the worker is (about to be) blocked in `poll`; a sender wakes it only then, so
    /// a busy worker is not interrupted by a wake-up syscall per batch.
    pub sleeping: AtomicBool,
    /// Deliveries (message x recipient) sent to this worker and not yet handled. Senders stop
    /// reading their publishers while any worker is past [`Mailbox::HIGH_WATER`], so a slow
    /// worker pushes back on publishers instead of buffering without bound.
    pub queued: AtomicUsize,
    /// Online sessions of this worker whose QoS 1/2 queue is more than a window deep and still
    /// moving: publishers feeding QoS 1/2 into such a worker pause until it drains, so QoS
    /// 1/2 messages a publisher had acknowledged are not dropped for want of queue space.
    pub backlogged: AtomicUsize,
    /// The QoS 1/2 part of `queued`. A publisher's worker acknowledges a QoS 1/2 message when
    /// it routes it, but learns that the target session is backlogged only once the target
    /// worker has handled what was sent before: in one iteration it could route tens of
    /// thousands of messages to one session and overflow its queue (measured: 0.2-1.5 % of a
    /// QoS 1 fan-in lost with the default `max_queued_messages`). Publishers feeding this
    /// worker therefore also pause while more than `Shared::in_transit_limit` are in transit.
    pub reliable: AtomicUsize,
    /// QoS 1/2 messages waiting in this worker's session queues, and sent but not yet
    /// acknowledged, as of its last sweep (gauges for the metrics endpoint).
    pub queued_messages: AtomicUsize,
    /// See `queued_messages`.
    pub inflight_messages: AtomicUsize,
    /// This worker's share of the totals in `Stats`, as of its last sweep: deliveries, bytes
    /// read and written, connections and sessions it holds (for the metrics endpoint).
    pub delivered: AtomicU64,
    pub read_bytes: AtomicU64,
    pub written_bytes: AtomicU64,
    pub connections: AtomicUsize,
    pub sessions: AtomicUsize,
    /// PUBLISH-read-to-frame-written latencies this worker sampled (see `latency`), added at
    /// each sweep.
    pub latency: Mutex<Histogram<u64>>,
}

impl Mailbox {
    pub(crate) fn new(tx: Sender<WorkerMsg>, waker: Waker) -> Self {
        Self {
            tx,
            waker,
            sleeping: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            backlogged: AtomicUsize::new(0),
            reliable: AtomicUsize::new(0),
            queued_messages: AtomicUsize::new(0),
            inflight_messages: AtomicUsize::new(0),
            delivered: AtomicU64::new(0),
            read_bytes: AtomicU64::new(0),
            written_bytes: AtomicU64::new(0),
            connections: AtomicUsize::new(0),
            sessions: AtomicUsize::new(0),
            latency: Mutex::new(crate::latency::histogram()),
        }
    }

    /// Deliveries a worker may have waiting before publishers everywhere pause: about 32k
    /// messages is a few milliseconds of work, enough to keep every worker busy, small enough
    /// that latency and memory stay bounded.
    pub(crate) const HIGH_WATER: usize = 32 * 1024;

    pub(crate) fn is_congested(&self) -> bool {
        self.queued.load(Ordering::Relaxed) > Self::HIGH_WATER
    }

    /// Sends deliveries, `reliable` of them at QoS 1/2, counting them against this mailbox's
    /// high-water mark and in-transit limit.
    pub(crate) fn send_deliveries(
        &self,
        batch: Vec<Delivery>,
        reliable: usize,
        from: usize,
        iteration: u64,
    ) {
        let count: usize = batch.iter().map(|d| d.recipients.len()).sum();
        self.queued.fetch_add(count, Ordering::Relaxed);
        if reliable > 0 {
            self.reliable.fetch_add(reliable, Ordering::Relaxed);
        }
        self.send(WorkerMsg::Deliver(batch, from, iteration));
    }

    /// Whether publishers feeding QoS 1/2 into this worker must pause: a session is
    /// backlogged, or more than `limit` QoS 1/2 deliveries are in transit, counting `unsent`
    /// ones the caller has batched but not sent yet.
    pub(crate) fn holds_back(&self, limit: usize, unsent: usize) -> bool {
        self.backlogged.load(Ordering::Relaxed) > 0
            || self.reliable.load(Ordering::Relaxed) + unsent > limit
    }

    pub(crate) fn send(&self, msg: WorkerMsg) {
        // A send fails only when the worker has exited (shutdown): nothing left to deliver to.
        if self.tx.send(msg).is_ok() {
            self.wake_if_sleeping();
        }
    }

    pub(crate) fn wake_if_sleeping(&self) {
        if self.sleeping.swap(false, Ordering::SeqCst) {
            // A failed wake means the poll is gone, i.e. the worker is shutting down.
            let _ = self.waker.wake();
        }
    }

    pub(crate) fn wake(&self) {
        let _ = self.waker.wake();
    }
}

/// Broker-wide counters, readable while it runs.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections open now.
    pub connections: AtomicUsize,
    /// Sessions stored now, online and offline (bounded by `max_sessions`).
    pub sessions: AtomicUsize,
    /// PUBLISH packets received from clients.
    pub publishes_in: AtomicU64,
    /// QoS 0 deliveries dropped because the subscriber's output queue was full.
    pub dropped_qos0: AtomicU64,
    /// QoS 1/2 deliveries dropped because a session queue was full.
    pub dropped_queued: AtomicU64,
    /// Connections closed for a protocol violation or malformed packet.
    pub protocol_errors: AtomicU64,
    /// Deliveries not sent because they exceed the client's 5.0 Maximum Packet Size
    /// [MQTT-3.1.2-25]: discarded as if sent.
    pub dropped_too_large: AtomicU64,
    /// CONNECTs refused for a wrong user name or password.
    pub auth_failures: AtomicU64,
    /// Retained messages not kept because the retained store was full.
    pub retained_refused: AtomicU64,
    /// Connections closed at accept by the per-address limits.
    pub refused_per_ip: AtomicU64,
    /// PUBLISHes and subscriptions the ACL did not allow.
    pub acl_denied: AtomicU64,
    /// QoS 1/2 PUBLISHes refused because the store could not write (a full disk).
    pub refused_store_failing: AtomicU64,
    /// Bytes held now in unfinished packets, across the broker.
    pub unfinished_bytes: AtomicUsize,
    /// Connections closed because unfinished packets passed `max_unfinished_bytes`.
    pub unfinished_closed: AtomicU64,
    /// Times a connection was throttled by `max_publish_rate` / `max_inbound_bytes_rate`.
    pub rate_limited: AtomicU64,
    /// Clients connected now (CONNECT accepted, not yet closed).
    pub clients_connected: AtomicUsize,
    /// The most clients connected at once.
    pub clients_maximum: AtomicUsize,
    /// CONNECTs accepted.
    pub connects: AtomicU64,
    /// PUBLISHes delivered to subscribers (queued for their connection or session), added
    /// once per sweep from each worker's own count.
    pub publishes_out: AtomicU64,
    /// Bytes read from clients, added once per sweep.
    pub bytes_in: AtomicU64,
    /// Bytes written to clients, added once per sweep.
    pub bytes_out: AtomicU64,
}

impl Stats {
    /// Moves the unfinished-bytes gauge by `delta`.
    #[inline]
    pub(crate) fn add_unfinished(&self, delta: isize) {
        if delta > 0 {
            self.unfinished_bytes
                .fetch_add(delta.unsigned_abs(), Ordering::Relaxed);
        } else if delta < 0 {
            self.unfinished_bytes
                .fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
    }
}

/// Everything the workers share.
/// Limits SIGHUP may change while the broker runs (`ServerHandle::reload_limits`), read
/// where the configuration's value was read before: relaxed atomic loads, as cheap as the
/// plain field. `config` keeps the values the broker started with.
#[derive(Debug)]
pub(crate) struct LiveLimits {
    pub max_connections: AtomicUsize,
    pub max_sessions: AtomicUsize,
    pub max_output_bytes: AtomicUsize,
    pub connect_timeout_secs: AtomicU64,
    pub packet_timeout_secs: AtomicU64,
}

impl LiveLimits {
    pub(crate) fn new(config: &Config) -> Self {
        let limits = Self {
            max_connections: AtomicUsize::new(0),
            max_sessions: AtomicUsize::new(0),
            max_output_bytes: AtomicUsize::new(0),
            connect_timeout_secs: AtomicU64::new(0),
            packet_timeout_secs: AtomicU64::new(0),
        };
        limits.set(config);
        limits
    }

    pub(crate) fn set(&self, config: &Config) {
        let r = Ordering::Relaxed;
        self.max_connections.store(config.max_connections, r);
        self.max_sessions.store(config.max_sessions, r);
        self.max_output_bytes.store(config.max_output_bytes, r);
        self.connect_timeout_secs
            .store(config.connect_timeout_secs, r);
        self.packet_timeout_secs
            .store(config.packet_timeout_secs, r);
    }

    #[inline]
    pub(crate) fn max_output_bytes(&self) -> usize {
        self.max_output_bytes.load(Ordering::Relaxed)
    }

    /// Seconds a new connection has to send CONNECT (at least 1).
    pub(crate) fn connect_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.connect_timeout_secs.load(Ordering::Relaxed).max(1))
    }

    #[inline]
    pub(crate) fn packet_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.packet_timeout_secs.load(Ordering::Relaxed))
    }
}

pub(crate) struct Shared {
    pub config: Config,
    /// The limits SIGHUP changes.
    pub live: LiveLimits,
    pub index: SubscriptionIndex,
    /// v5 `$share/` groups.
    pub shared_subs: SharedSubscriptions,
    /// The protocol limits, from `config` once.
    pub limits: Limits,
    pub retained: RwLock<RetainedStore>,
    /// Where changes to durable state go (`persistence` on).
    pub persist: Option<crate::store::Persist>,
    /// What the store's thread reports (`persistence` on).
    pub store_stats: Option<Arc<crate::store::StoreStats>>,
    pub mailboxes: Vec<Mailbox>,
    /// QoS 1/2 deliveries that may be in transit to one worker before publishers feeding it
    /// pause (see `Mailbox::reliable`): small enough that a session's queue, backlogged at
    /// one window, absorbs what every other worker may still send it.
    pub in_transit_limit: usize,
    pub stats: Arc<Stats>,
    pub shutdown: AtomicBool,
    /// Workers that have published their Wills while shutting down (see `Worker::stop`).
    pub stopped_wills: AtomicUsize,
    /// Who may connect with which credentials, per listener (in the configuration's order).
    pub password_policy: Vec<PasswordPolicy>,
    /// The password checkers, when a password file is configured.
    pub checkers: Option<Checkers>,
    /// The TLS listeners and the rustls configuration each accepts with (a reload swaps it).
    pub tls_listeners: Vec<(
        crate::ListenerConfig,
        Arc<RwLock<Arc<rustls::ServerConfig>>>,
    )>,
    /// Per-source-address connection limits (off while both are 0; SIGHUP may change them).
    pub per_ip: PerIp,
    /// Per-client publish rate and bandwidth, for the connections that come next (SIGHUP
    /// may change them; connections keep the allowance they were given).
    pub rate_limits: RwLock<RateLimits>,
    /// Whether rate limits were ever on: workers charge decoded packets only then.
    pub rate_limits_ever: AtomicBool,
    /// The ACL, when one is configured: swapped whole by a reload (SIGHUP); connections keep
    /// the one they connected under.
    pub acl: RwLock<Option<Arc<AclFile>>>,
    /// Bumped by every ACL reload: a connection whose `ClientAcl` is older takes the new
    /// file at its next check (a relaxed load per PUBLISH, never the lock).
    pub acl_generation: AtomicU64,
    /// Each `[[bridge]]`'s state, for the metrics and `$SYS`.
    pub bridges: Vec<Arc<crate::bridge::BridgeStatus>>,
}
