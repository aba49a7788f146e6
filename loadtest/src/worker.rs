//! A generator thread: one mio event loop over its share of the clients.
//!
//! Each iteration: start due connects, let publishers encode what is due, continue reads that
//! hit their budget, flush every client with queued output (one write each), publish the
//! counters, then poll with a timeout that is zero when there is more to do right away and
//! otherwise the earliest due message, connect or housekeeping.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crossbeam_channel::Sender;
use mio::event::Event;
use mio::{Events, Poll, Token};
use vireo_codec::Connect;

use crate::client::{Client, Meter, Produce, Role, State};
use crate::error::ClientError;
use crate::shared::{Notice, Phase, Shared, WorkerReport, new_histogram};
use crate::timer::Timer;
use crate::tls::Connector;
use crate::tracker::TrackerTotals;
use crate::ws::Upgrader;

/// Token of the waker the controller uses on phase changes and ticks.
pub const WAKER: Token = Token(usize::MAX);
/// Token of the timer that wakes the loop when the next message is due.
const TIMER: Token = Token(usize::MAX - 1);
/// Handshakes (TCP connect to CONNACK/SUBACK) one thread keeps going at once when no connect
/// rate is set: enough to ramp fast, few enough not to overflow a broker's accept backlog.
/// `--handshakes` replaces it.
pub const MAX_HANDSHAKES: usize = 256;
/// Keepalive and connect timeouts are checked this often.
const HOUSEKEEPING_NS: u64 = 50_000_000;
/// Longest poll: the loop also re-reads the phase at least this often.
const MAX_POLL: Duration = Duration::from_millis(100);
/// Readiness events taken per poll.
const EVENTS_CAPACITY: usize = 1024;
/// Size of the scratch buffer reads go through.
const READ_CHUNK: usize = 64 * 1024;

/// Everything a worker starts from.
#[derive(Debug)]
pub struct WorkerSetup {
    /// Index of this worker.
    pub index: usize,
    /// Its poll instance; the controller holds a waker registered on it.
    pub poll: Poll,
    /// State shared with the controller.
    pub shared: Arc<Shared>,
    /// Where notices go.
    pub tx: Sender<Notice>,
    /// Its clients, in connect order.
    pub clients: Vec<Client>,
    /// The broker.
    pub addr: SocketAddr,
    /// CONNECT template; the client id is filled in per client.
    pub connect: Connect,
    /// TLS for every client, when the run speaks it.
    pub tls: Option<Connector>,
    /// WebSocket for every client, when the run speaks it.
    pub ws: Option<Upgrader>,
    /// Keepalive in nanoseconds (0: off).
    pub keepalive_ns: u64,
    /// Handshake timeout in nanoseconds.
    pub connect_timeout_ns: u64,
    /// Handshakes this thread keeps in flight at most.
    pub max_handshakes: usize,
    /// Publisher count of the whole run (for per-publisher arrays).
    pub total_publishers: u32,
    /// Per-thread measurement.
    pub meter: Meter,
}

/// A running worker.
#[derive(Debug)]
pub struct Worker {
    s: WorkerSetup,
    /// Clients with queued output, flushed at the end of the iteration.
    dirty: Vec<usize>,
    /// Clients whose read stopped at its budget.
    pending_reads: Vec<usize>,
    /// The pending reads being served this iteration (kept to reuse its allocation).
    reading: Vec<usize>,
    /// Indexes of the publishers, for the produce pass.
    publishers: Vec<usize>,
    scratch: Box<[u8]>,
    /// Next client to start connecting.
    next_start: usize,
    handshaking: usize,
    ready: u64,
    failed: u64,
    errors: u64,
    publishers_done: u64,
    last_tick: u64,
    next_housekeeping_ns: u64,
    running_since: Option<u64>,
    /// Precise wake-ups for due messages; `None` if it could not be created (the poll timeout,
    /// with its millisecond granularity, takes over).
    timer: Option<Timer>,
}

impl Worker {
    /// Prepares the loop.
    pub fn new(s: WorkerSetup) -> Self {
        let publishers = (0..s.clients.len())
            .filter(|&i| matches!(s.clients[i].role, Role::Publisher(_)))
            .collect();
        Self {
            dirty: Vec::with_capacity(s.clients.len()),
            pending_reads: Vec::new(),
            reading: Vec::new(),
            publishers,
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            next_start: 0,
            handshaking: 0,
            ready: 0,
            failed: 0,
            errors: 0,
            publishers_done: 0,
            last_tick: 0,
            next_housekeeping_ns: 0,
            running_since: None,
            timer: Timer::new(s.poll.registry(), TIMER)
                .ok()
                .filter(Timer::is_precise),
            s,
        }
    }

    /// Runs until the controller says stop, then sends the final report.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        loop {
            let phase = self.s.shared.phase();
            if phase == Phase::Stop {
                break;
            }
            let now = self.s.meter.clock.now_ns();
            if phase == Phase::Running && self.running_since.is_none() {
                self.start_schedules(now);
            }
            let mut wait = self.start_connects(now, phase);
            if phase == Phase::Running {
                wait = earliest(wait, self.produce(now));
            }
            if !self.continue_reads() {
                wait = Some(0);
            }
            self.flush_dirty(now);
            self.publish_counters(phase);
            let timeout = match (wait, &mut self.timer) {
                (Some(t), _) if t <= now => Duration::ZERO,
                (Some(t), Some(timer)) => {
                    timer.arm(t, now);
                    self.timeout(now, None)
                }
                (w, _) => self.timeout(now, w),
            };
            if let Err(e) = self.s.poll.poll(&mut events, Some(timeout))
                && e.kind() != std::io::ErrorKind::Interrupted
            {
                break;
            }
            for event in events.iter() {
                self.on_event(event);
            }
            let now = self.s.meter.clock.now_ns();
            if now >= self.next_housekeeping_ns {
                self.housekeeping(now);
            }
            self.check_tick();
        }
        self.finish();
    }

    fn start_schedules(&mut self, now: u64) {
        self.running_since = Some(now);
        for &i in &self.publishers {
            if let Role::Publisher(p) = &mut self.s.clients[i].role {
                p.start(now);
            }
        }
    }

    /// Starts the connects that are due; returns when the next one is due, if waiting on time.
    fn start_connects(&mut self, now: u64, phase: Phase) -> Option<u64> {
        if phase >= Phase::Draining {
            return None;
        }
        while self.next_start < self.s.clients.len() && self.handshaking < self.s.max_handshakes {
            let i = self.next_start;
            let client = &mut self.s.clients[i];
            if client.connect_at_ns > now {
                return Some(client.connect_at_ns);
            }
            self.next_start += 1;
            match client.start_connect(Token(i), self.s.poll.registry(), self.s.addr, now) {
                Ok(()) => self.handshaking += 1,
                Err(e) => self.fail(i, e),
            }
        }
        None
    }

    /// Lets every publisher encode what is due; returns the earliest time one needs attention.
    fn produce(&mut self, now: u64) -> Option<u64> {
        let mut wait = None;
        for k in 0..self.publishers.len() {
            let i = self.publishers[k];
            let client = &mut self.s.clients[i];
            let result = client.produce(now, &mut self.s.meter);
            if client.has_output() && !client.queued_for_flush {
                client.queued_for_flush = true;
                self.dirty.push(i);
            }
            match result {
                Ok(Produce::More) => wait = Some(now),
                Ok(Produce::DueAt(t)) => wait = earliest(wait, Some(t)),
                Ok(Produce::Blocked) => {}
                Ok(Produce::Finished) => self.publishers_done += 1,
                Ok(Produce::Idle) => {}
                Err(e) => self.fail(i, e),
            }
        }
        wait
    }

    /// Continues reads that stopped at their budget; returns whether all are drained.
    fn continue_reads(&mut self) -> bool {
        std::mem::swap(&mut self.pending_reads, &mut self.reading);
        for k in 0..self.reading.len() {
            let i = self.reading[k];
            // No event says whether the peer closed: read to `WouldBlock`.
            self.read(i, true);
        }
        self.reading.clear();
        self.pending_reads.is_empty()
    }

    fn on_event(&mut self, event: &Event) {
        let i = event.token().0;
        if event.token() == WAKER {
            return;
        }
        if event.token() == TIMER {
            if let Some(t) = &mut self.timer {
                t.on_fire();
            }
            return;
        }
        // A stale token (a closed client) has no socket and is ignored.
        let Some(client) = self.s.clients.get_mut(i) else {
            return;
        };
        match client.state {
            State::Connecting => {
                let (tls, ws) = (self.s.tls.as_ref(), self.s.ws.as_ref());
                let meter = &mut self.s.meter;
                if let Err(e) = client.finish_connect(&mut self.s.connect, tls, ws, meter) {
                    return self.fail(i, e);
                }
                self.mark_dirty(i);
                return;
            }
            State::NotStarted | State::Closed => return,
            _ => {}
        }
        if event.is_writable() {
            client.on_writable();
            self.mark_dirty(i);
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.read(i, event.is_read_closed() || event.is_error());
        }
    }

    /// Reads client `i`; `to_would_block`: see [`Client::on_readable`].
    fn read(&mut self, i: usize, to_would_block: bool) {
        let client = &mut self.s.clients[i];
        if client.state == State::Closed {
            return;
        }
        let was_handshake = client.state.is_handshake();
        match client.on_readable(&mut self.scratch, &mut self.s.meter, to_would_block) {
            Ok(more) => {
                if more {
                    self.pending_reads.push(i);
                }
                if was_handshake && client.state == State::Ready {
                    self.handshaking -= 1;
                    self.ready += 1;
                }
                self.mark_dirty(i);
            }
            Err(e) => self.fail(i, e),
        }
    }

    fn mark_dirty(&mut self, i: usize) {
        let client = &mut self.s.clients[i];
        if client.has_output() && !client.queued_for_flush {
            client.queued_for_flush = true;
            self.dirty.push(i);
        }
    }

    fn flush_dirty(&mut self, now: u64) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &i in &dirty {
            let client = &mut self.s.clients[i];
            client.queued_for_flush = false;
            if let Err(e) = client.flush(now) {
                self.fail(i, e);
            }
        }
        dirty.clear();
        self.dirty = dirty;
    }

    /// Closes client `i` and tells the controller, counting it as a setup failure or a drop.
    fn fail(&mut self, i: usize, error: ClientError) {
        let phase = self.s.shared.phase();
        let client = &mut self.s.clients[i];
        let was = client.state;
        client.close(self.s.poll.registry());
        if phase == Phase::Stop {
            return;
        }
        match was {
            State::Ready => {
                self.ready -= 1;
                self.errors += 1;
            }
            s if s.is_handshake() => {
                self.handshaking -= 1;
                self.failed += 1;
            }
            // Failed before its socket existed (e.g. no local port left).
            State::NotStarted => self.failed += 1,
            _ => return,
        }
        let _ = self.s.tx.send(Notice::ClientFailed {
            client_id: client.name.clone(),
            phase,
            error,
        });
    }

    fn publish_counters(&self, phase: Phase) {
        let c = &self.s.shared.counters[self.s.index];
        let st = &self.s.meter.stats;
        let errors = self.errors + st.protocol_errors;
        for (atomic, value) in [
            (&c.published, st.published),
            (&c.acked, st.acked),
            (&c.delivered, st.delivered),
            (&c.unique, st.unique),
            (&c.errors, errors),
            (&c.ready, self.ready),
            (&c.failed, self.failed),
            (&c.publishers_done, self.publishers_done),
        ] {
            // Release: a controller that reads these values also sees the notices sent before.
            atomic.store(value, Ordering::Release);
        }
        c.seen_phase.store(phase as u8, Ordering::Release);
    }

    fn timeout(&self, now: u64, wait: Option<u64>) -> Duration {
        let until = wait.unwrap_or(u64::MAX).min(self.next_housekeeping_ns);
        Duration::from_nanos(until.saturating_sub(now)).min(MAX_POLL)
    }

    fn housekeeping(&mut self, now: u64) {
        self.next_housekeeping_ns = now + HOUSEKEEPING_NS;
        let timeout = self.s.connect_timeout_ns;
        for i in 0..self.s.clients.len() {
            let client = &mut self.s.clients[i];
            if client.handshake_expired(now, timeout) {
                self.fail(i, ClientError::Timeout(Duration::from_nanos(timeout)));
            } else if client.keepalive(now, self.s.keepalive_ns, &mut self.s.meter) {
                self.mark_dirty(i);
            }
        }
    }

    fn check_tick(&mut self) {
        let tick = self.s.shared.tick();
        if tick != self.last_tick {
            self.last_tick = tick;
            let latency = Box::new(self.s.meter.latency.clone());
            self.s.meter.latency.reset();
            let _ = self.s.tx.send(Notice::Interval { tick, latency });
        }
    }

    /// Disconnects every client and sends the final figures.
    fn finish(mut self) {
        let now = self.s.meter.clock.now_ns();
        let mut report = WorkerReport {
            worker: self.s.index,
            latency: Box::new(std::mem::replace(
                &mut self.s.meter.latency,
                new_histogram(),
            )),
            connect_latency: Box::new(std::mem::replace(
                &mut self.s.meter.connect_latency,
                new_histogram(),
            )),
            sent: Vec::new(),
            unique_per_publisher: vec![0; self.s.total_publishers as usize],
            tracker: TrackerTotals::default(),
            unrecognised: self.s.meter.stats.unrecognised,
            inflight: 0,
            protocol_errors: self.s.meter.stats.protocol_errors,
            pings: self.s.meter.stats.pings,
            tls_session: self.s.meter.tls_session.take(),
        };
        for client in &mut self.s.clients {
            client.disconnect(&self.s.meter, now);
            client.close(self.s.poll.registry());
            match &client.role {
                Role::Publisher(p) => {
                    report.sent.push((p.id, p.seq));
                    report.inflight += p.window.len() as u64;
                }
                Role::Subscriber(s) => {
                    report.tracker += s.tracker.drain_into(&mut report.unique_per_publisher);
                }
                Role::Idle => {}
            }
        }
        let _ = self.s.tx.send(Notice::Final(Box::new(report)));
    }
}

/// The earlier of two optional deadlines (`None`: no deadline).
fn earliest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
