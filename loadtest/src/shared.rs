//! What the controller thread and the generator threads share: the run phase, one block of
//! counters per worker, the clock, and the notices workers send back.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

use hdrhistogram::Histogram;

use crate::error::ClientError;
use crate::tracker::TrackerTotals;

/// Where the run is. Workers read it every loop iteration; only the controller writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Phase {
    /// Connecting clients and subscribing.
    Setup = 0,
    /// Publishing (or, for `connections`, holding).
    Running = 1,
    /// No new publishes; handshakes and deliveries finish.
    Draining = 2,
    /// Disconnect, report and exit.
    Stop = 3,
}

impl Phase {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Phase::Setup,
            1 => Phase::Running,
            2 => Phase::Draining,
            _ => Phase::Stop,
        }
    }
}

/// Monotonic nanoseconds since the run's epoch; the same epoch on every thread so payload
/// timestamps compare across threads.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Instant,
}

impl Clock {
    /// A clock whose zero is now.
    pub fn start() -> Self {
        Self {
            epoch: Instant::now(),
        }
    }

    /// Nanoseconds since the epoch.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A worker's running totals, written by that worker only (plain stores once per loop
/// iteration), read by the controller. Aligned so that two workers never share a cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Counters {
    /// PUBLISH packets queued by this worker's publishers.
    pub published: AtomicU64,
    /// QoS 1/2 publishes completed (PUBACK, PUBCOMP).
    pub acked: AtomicU64,
    /// PUBLISH packets received by this worker's subscribers, duplicates included.
    pub delivered: AtomicU64,
    /// Distinct messages received.
    pub unique: AtomicU64,
    /// Connections lost during the run plus protocol errors.
    pub errors: AtomicU64,
    /// Clients connected (and subscribed) and not lost.
    pub ready: AtomicU64,
    /// Clients that failed to set up.
    pub failed: AtomicU64,
    /// Publishers that sent their `--count`.
    pub publishers_done: AtomicU64,
    /// The last phase this worker acted on, after storing the counters above.
    pub seen_phase: AtomicU8,
}

/// A plain copy of [`Counters`], summed over workers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// See [`Counters::published`].
    pub published: u64,
    /// See [`Counters::acked`].
    pub acked: u64,
    /// See [`Counters::delivered`].
    pub delivered: u64,
    /// See [`Counters::unique`].
    pub unique: u64,
    /// See [`Counters::errors`].
    pub errors: u64,
    /// See [`Counters::ready`].
    pub ready: u64,
    /// See [`Counters::failed`].
    pub failed: u64,
    /// See [`Counters::publishers_done`].
    pub publishers_done: u64,
}

/// State shared by the controller and all workers.
#[derive(Debug)]
pub struct Shared {
    phase: AtomicU8,
    /// Bumped by the controller once a second; a worker that sees it change sends its interval
    /// histogram, so per-second latency lines up across workers.
    tick: AtomicU64,
    /// One block per worker.
    pub counters: Vec<Counters>,
    /// Run-unique payload magic.
    pub magic: u32,
    /// The run's clock.
    pub clock: Clock,
}

impl Shared {
    /// Shared state for `workers` workers.
    pub fn new(workers: usize, magic: u32, clock: Clock) -> Self {
        Self {
            phase: AtomicU8::new(Phase::Setup as u8),
            tick: AtomicU64::new(0),
            counters: (0..workers).map(|_| Counters::default()).collect(),
            magic,
            clock,
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    /// Moves to `phase` (callers wake the workers).
    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
    }

    /// The current tick.
    pub fn tick(&self) -> u64 {
        self.tick.load(Ordering::Acquire)
    }

    /// Starts the next tick and returns it.
    pub fn next_tick(&self) -> u64 {
        self.tick.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Sums the counters of every worker.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for c in &self.counters {
            let get = |a: &AtomicU64| a.load(Ordering::Acquire);
            t.published += get(&c.published);
            t.acked += get(&c.acked);
            t.delivered += get(&c.delivered);
            t.unique += get(&c.unique);
            t.errors += get(&c.errors);
            t.ready += get(&c.ready);
            t.failed += get(&c.failed);
            t.publishers_done += get(&c.publishers_done);
        }
        t
    }

    /// Whether every worker has acted on `phase` (and stored its counters since).
    pub fn all_seen(&self, phase: Phase) -> bool {
        self.counters
            .iter()
            .all(|c| c.seen_phase.load(Ordering::Acquire) >= phase as u8)
    }
}

/// A latency histogram: nanoseconds, 1 ns to 1 hour, 3 significant figures.
pub type LatencyHistogram = Histogram<u64>;

/// A fresh latency histogram.
pub fn new_histogram() -> LatencyHistogram {
    // 1 ns .. 1 h at 3 significant digits: ~200 KiB per histogram.
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("constant bounds are valid")
}

/// What a worker sends the controller.
#[derive(Debug)]
pub enum Notice {
    /// A client failed to set up, or was lost afterwards.
    ClientFailed {
        /// Its client id.
        client_id: String,
        /// The phase it failed in.
        phase: Phase,
        /// Why.
        error: ClientError,
    },
    /// The latency recorded since the previous tick.
    Interval {
        /// The tick it answers.
        tick: u64,
        /// End-to-end latencies, nanoseconds.
        latency: Box<LatencyHistogram>,
    },
    /// The worker's final figures; it exits after sending this.
    Final(Box<WorkerReport>),
}

/// A worker's figures at the end of the run.
#[derive(Debug)]
pub struct WorkerReport {
    /// The worker's index.
    pub worker: usize,
    /// Latency not yet sent in an interval.
    pub latency: Box<LatencyHistogram>,
    /// TCP connect to CONNACK, nanoseconds.
    pub connect_latency: Box<LatencyHistogram>,
    /// `(publisher id, messages sent)` for this worker's publishers.
    pub sent: Vec<(u32, u64)>,
    /// Unique messages received, indexed by publisher id, summed over this worker's subscribers.
    pub unique_per_publisher: Vec<u64>,
    /// Sums over this worker's subscribers.
    pub tracker: TrackerTotals,
    /// Payloads without this run's stamp.
    pub unrecognised: u64,
    /// QoS 1/2 messages still unacknowledged at the end.
    pub inflight: u64,
    /// Protocol errors that did not close the connection (stray acks).
    pub protocol_errors: u64,
    /// Keepalive PINGREQs sent.
    pub pings: u64,
    /// What this worker's first TLS handshake agreed.
    pub tls_session: Option<String>,
}
