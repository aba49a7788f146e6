//! State shared by all workers, and the hand-off between them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use bytes::BytesMut;
use crossbeam_channel::Sender;
use mio::Waker;
use mio::net::TcpStream;
use parking_lot::RwLock;
use vireo_broker::{Message, Recipients, RetainedStore, SubscriptionIndex};
use vireo_codec::Connect;

use crate::Config;

/// What one worker sends another.
pub(crate) enum WorkerMsg {
    /// Messages for sessions the receiving worker owns, batched per loop iteration.
    Deliver(Vec<Delivery>),
    /// A connection whose CONNECT names a client id owned by the receiving worker.
    Adopt(Box<Adoption>),
}

/// One message and the receiving worker's sessions it goes to.
pub(crate) struct Delivery {
    pub msg: Arc<Message>,
    pub recipients: Recipients,
}

/// A connection handed over after its CONNECT was read on another worker.
pub(crate) struct Adoption {
    pub stream: TcpStream,
    pub connect: Box<Connect>,
    /// Bytes that arrived after the CONNECT (pipelined packets).
    pub rest: BytesMut,
}

/// A worker's mailbox: its channel and the waker of its poll.
pub(crate) struct Mailbox {
    tx: Sender<WorkerMsg>,
    waker: Waker,
    /// Set while the worker is (about to be) blocked in `poll`; a sender wakes it only then, so
    /// a busy worker is not interrupted by a wake-up syscall per batch.
    pub sleeping: AtomicBool,
}

impl Mailbox {
    pub(crate) fn new(tx: Sender<WorkerMsg>, waker: Waker) -> Self {
        Self {
            tx,
            waker,
            sleeping: AtomicBool::new(false),
        }
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
    /// PUBLISH packets received from clients.
    pub publishes_in: AtomicU64,
    /// QoS 0 deliveries dropped because the subscriber's output queue was full.
    pub dropped_qos0: AtomicU64,
    /// QoS 1/2 deliveries dropped because a session queue was full.
    pub dropped_queued: AtomicU64,
    /// Connections closed for a protocol violation or malformed packet.
    pub protocol_errors: AtomicU64,
}

/// Everything the workers share.
pub(crate) struct Shared {
    pub config: Config,
    pub index: SubscriptionIndex,
    pub retained: RwLock<RetainedStore>,
    pub mailboxes: Vec<Mailbox>,
    pub stats: Arc<Stats>,
    pub shutdown: AtomicBool,
}
