//! The controller: spawns the generator threads, steps the run through its phases (setup, run,
//! drain, stop), samples the counters once a second, and collects the workers' figures.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use mio::{Poll, Waker};
use vireo_codec::{Connect, QoS};

use crate::client::{LocalStats, Meter};
use crate::config::{Config, Scenario};
use crate::error::{ClientError, Error};
use crate::plan;
use crate::report::{Errors, Second};
use crate::shared::{
    Clock, LatencyHistogram, Notice, Phase, Shared, Totals, WorkerReport, new_histogram,
};
use crate::sys::{self, CpuTimes};
use crate::tls::Connector;
use crate::worker::{WAKER, Worker, WorkerSetup};
use crate::ws::Upgrader;

/// How often the controller re-checks phase conditions between notices.
const STEP: Duration = Duration::from_millis(5);
/// A run in which nothing is published or delivered for this long has stalled.
const STALL: Duration = Duration::from_secs(10);
/// How long to wait for the workers' final reports after telling them to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Failures listed by client in the report.
const FIRST_ERRORS: usize = 10;
/// Largest packet accepted from the broker beyond the configured payload.
const PACKET_HEADROOM: usize = 64 * 1024;

/// What the live progress line shows, once a second.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Since the first connect.
    pub elapsed: Duration,
    /// The phase the second ended in.
    pub phase: Phase,
    /// Messages published in the last second.
    pub published_per_sec: u64,
    /// Messages delivered in the last second.
    pub delivered_per_sec: u64,
    /// 99th percentile latency of the run so far, microseconds.
    pub p99_us: Option<f64>,
    /// Clients ready.
    pub connected: u64,
    /// Setup failures plus drops plus protocol errors.
    pub errors: u64,
}

/// What the phases measured, for the report.
#[derive(Debug, Default)]
pub struct Measured {
    /// Setup duration.
    pub setup_secs: f64,
    /// Run duration.
    pub run_secs: f64,
    /// Drain duration.
    pub drain_secs: f64,
    /// From the start of publishing to the last change of the delivered count.
    pub delivery_secs: f64,
    /// Broker RSS after setup.
    pub rss_after_kib: Option<u64>,
    /// Whether the run stopped for lack of progress, and after how long.
    pub stalled: Option<f64>,
    /// CPU used from start to the end of the drain.
    pub cpu: CpuTimes,
    /// Wall time from start to the end of the drain.
    pub wall_secs: f64,
}

/// The spawned workers and everything the controller tracks while they run.
pub struct Controller<'a, F> {
    pub(crate) config: &'a Config,
    pub(crate) addr: SocketAddr,
    pub(crate) shared: Arc<Shared>,
    rx: Receiver<Notice>,
    wakers: Vec<Arc<Waker>>,
    handles: Vec<Option<JoinHandle<()>>>,
    observe: F,
    pub(crate) total_clients: u64,
    /// Every latency recorded so far, nanoseconds.
    pub(crate) latency: LatencyHistogram,
    /// Per tick, until every worker has sent its interval histogram: the histograms so far,
    /// how many arrived, and the progress snapshot to show once they all have.
    ticks: BTreeMap<u64, (LatencyHistogram, usize, Snapshot)>,
    pub(crate) timeline: Vec<Second>,
    last_sample: (u64, Totals, CpuTimes),
    next_second_ns: u64,
    phase: Phase,
    pub(crate) errors: Errors,
    first_failure: Option<(String, ClientError)>,
    pub(crate) finals: Vec<WorkerReport>,
    pub(crate) cpu_start: CpuTimes,
}

impl<F> std::fmt::Debug for Controller<'_, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

/// A run-unique payload magic, so stale messages from earlier runs are recognised.
fn run_magic() -> u32 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() ^ (d.as_secs() as u32));
    (nanos ^ std::process::id().rotate_left(16)) | 1
}

impl<'a, F: FnMut(&Snapshot)> Controller<'a, F> {
    /// Builds the clients and starts one thread per worker; with `tls`, every client speaks TLS,
    /// with `ws`, MQTT over WebSocket (over TLS with both).
    pub fn spawn(
        config: &'a Config,
        addr: SocketAddr,
        tls: Option<Connector>,
        ws: Option<Upgrader>,
        observe: F,
    ) -> Result<Self, Error> {
        let total_clients = match config.scenario {
            Scenario::Connections { connections, .. } => u64::from(connections),
            ref s => u64::from(s.publishers()) + u64::from(s.subscribers()),
        };
        let threads = config.threads.clamp(1, total_clients.max(1) as usize);
        let plan = plan::clients(config, threads)?;
        let cpu_start = sys::cpu_times().unwrap_or_default();
        let clock = Clock::start();
        let shared = Arc::new(Shared::new(threads, run_magic(), clock));
        let (tx, rx) = crossbeam_channel::unbounded();
        let connect = connect_template(config);
        // Split the run's handshake budget over the threads, at least one each.
        let max_handshakes = config
            .handshakes
            .map_or(crate::worker::MAX_HANDSHAKES, |n| {
                n.div_ceil(plan.len().max(1)).max(1)
            });
        let mut wakers: Vec<Arc<Waker>> = Vec::new();
        let mut handles = Vec::new();
        let spawned = (|| {
            for (index, clients) in plan.into_iter().enumerate() {
                let poll = Poll::new()?;
                wakers.push(Arc::new(Waker::new(poll.registry(), WAKER)?));
                let setup = WorkerSetup {
                    index,
                    poll,
                    shared: Arc::clone(&shared),
                    tx: tx.clone(),
                    clients,
                    addr,
                    connect: connect.clone(),
                    tls: tls.clone(),
                    ws: ws.clone(),
                    keepalive_ns: u64::from(config.keepalive) * 1_000_000_000,
                    connect_timeout_ns: config.connect_timeout.as_nanos() as u64,
                    max_handshakes,
                    total_publishers: config.scenario.publishers(),
                    meter: meter(config, &shared),
                };
                let handle = std::thread::Builder::new()
                    .name(format!("vireo-lt-{index}"))
                    .spawn(move || Worker::new(setup).run())?;
                handles.push(Some(handle));
            }
            Ok(())
        })();
        if let Err(e) = spawned {
            // Threads already started see Stop and exit on their own.
            shared.set_phase(Phase::Stop);
            wakers.iter().for_each(|w| drop(w.wake()));
            return Err(Error::Start(e));
        }
        Ok(Self {
            config,
            addr,
            shared,
            rx,
            wakers,
            handles,
            observe,
            total_clients,
            latency: new_histogram(),
            ticks: BTreeMap::new(),
            timeline: Vec::new(),
            last_sample: (0, Totals::default(), cpu_start),
            next_second_ns: 1_000_000_000,
            phase: Phase::Setup,
            errors: Errors::default(),
            first_failure: None,
            finals: Vec::new(),
            cpu_start,
        })
    }

    fn now(&self) -> u64 {
        self.shared.clock.now_ns()
    }

    fn set_phase(&mut self, phase: Phase) {
        self.phase = phase;
        self.shared.set_phase(phase);
        self.wake_all();
    }

    fn wake_all(&self) {
        for w in &self.wakers {
            // A worker that already exited has nothing to wake.
            let _ = w.wake();
        }
    }

    fn is_pubsub(&self) -> bool {
        !matches!(self.config.scenario, Scenario::Connections { .. })
    }

    /// Runs every phase; the caller stops the workers whatever this returns.
    pub fn drive(&mut self) -> Result<Measured, Error> {
        let mut m = Measured {
            setup_secs: self.setup()?,
            rss_after_kib: self.config.broker_pid.and_then(sys::rss_kib),
            ..Measured::default()
        };
        let run_start = self.now();
        m.stalled = self.run_phase();
        m.run_secs = secs(self.now() - run_start);
        let drain_start = self.now();
        let last_delivery = if self.is_pubsub() {
            self.drain()
        } else {
            drain_start
        };
        m.drain_secs = secs(self.now() - drain_start);
        m.delivery_secs = secs(last_delivery.saturating_sub(run_start)).max(m.run_secs);
        m.cpu = sys::cpu_times().unwrap_or_default().since(&self.cpu_start);
        m.wall_secs = secs(self.now());
        Ok(m)
    }

    fn setup(&mut self) -> Result<f64, Error> {
        loop {
            let t = self.shared.totals();
            // Workers send a failure's notice before counting it: take what is queued so the
            // counts just read are explained.
            while let Ok(n) = self.rx.try_recv() {
                self.on_notice(n);
            }
            if self.is_pubsub()
                && let Some((client_id, e)) = self.first_failure.take()
            {
                return Err(Error::from_setup(self.addr, client_id, e));
            }
            if t.ready + t.failed >= self.total_clients {
                if t.ready == 0
                    && let Some((client_id, e)) = self.first_failure.take()
                {
                    return Err(Error::from_setup(self.addr, client_id, e));
                }
                return Ok(secs(self.now()));
            }
            self.pump(STEP);
        }
    }

    /// Publishes (or holds) until the duration or the count is reached; returns the stall time
    /// if it stopped for lack of progress.
    fn run_phase(&mut self) -> Option<f64> {
        self.set_phase(Phase::Running);
        let start = self.now();
        let end = self
            .config
            .duration
            .map_or(u64::MAX, |d| start.saturating_add(d.as_nanos() as u64));
        let publishers = u64::from(self.config.scenario.publishers());
        let mut progress = (start, 0u64);
        loop {
            let now = self.now();
            if now >= end {
                return None;
            }
            let t = self.shared.totals();
            if self.config.count.is_some() && t.publishers_done >= publishers {
                return None;
            }
            if self.is_pubsub() && t.ready == 0 {
                // Every client was lost: nothing more can happen.
                return None;
            }
            if self.is_pubsub() {
                let moved = t.published + t.delivered;
                if moved != progress.1 {
                    progress = (now, moved);
                } else if now - progress.0 >= STALL.as_nanos() as u64 {
                    return Some(secs(now - progress.0));
                }
            }
            self.pump(STEP.min(Duration::from_nanos(end - now)));
        }
    }

    /// Waits for deliveries and acknowledgements to finish; returns the time of the last
    /// change in the delivered count.
    fn drain(&mut self) -> u64 {
        self.set_phase(Phase::Draining);
        let start = self.now();
        let receivers = self.config.scenario.receivers_per_publisher();
        let qos0 = self.config.qos == QoS::AtMostOnce;
        let quiet = self.config.drain_quiet.as_nanos() as u64;
        let timeout = self.config.drain_timeout.as_nanos() as u64;
        let mut last = (start, self.shared.totals().delivered);
        loop {
            let now = self.now();
            let t = self.shared.totals();
            if t.delivered != last.1 {
                last = (now, t.delivered);
            }
            let complete = t.unique >= t.published * receivers && (qos0 || t.acked >= t.published);
            if self.shared.all_seen(Phase::Draining) && complete {
                return last.0;
            }
            if now - last.0 >= quiet || now - start >= timeout {
                return last.0;
            }
            self.pump(STEP);
        }
    }

    /// Stops the workers and collects their final reports.
    pub fn stop(&mut self) -> Result<(), Error> {
        self.set_phase(Phase::Stop);
        let deadline = self.now() + STOP_TIMEOUT.as_nanos() as u64;
        while self.finals.len() < self.handles.len() {
            let now = self.now();
            if now >= deadline {
                break;
            }
            match self.rx.recv_timeout(Duration::from_nanos(deadline - now)) {
                Ok(notice) => self.on_notice(notice),
                Err(_) => break,
            }
        }
        for r in &self.finals {
            if let Some(h) = self.handles.get_mut(r.worker).and_then(Option::take)
                && h.join().is_err()
            {
                return Err(Error::WorkerLost(r.worker));
            }
        }
        match self.handles.iter().position(Option::is_some) {
            Some(lost) => Err(Error::WorkerLost(lost)),
            None => Ok(()),
        }
    }

    /// Handles notices for up to `step`, sampling a second whenever one has passed.
    fn pump(&mut self, step: Duration) {
        let now = self.now();
        if now >= self.next_second_ns {
            self.second(now);
        }
        let until = (now + step.as_nanos() as u64).min(self.next_second_ns);
        match self
            .rx
            .recv_timeout(Duration::from_nanos(until.saturating_sub(now)))
        {
            Ok(notice) => {
                self.on_notice(notice);
                // Take whatever else is queued without waiting.
                while let Ok(n) = self.rx.try_recv() {
                    self.on_notice(n);
                }
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
        }
    }

    fn on_notice(&mut self, notice: Notice) {
        match notice {
            Notice::ClientFailed {
                client_id,
                phase,
                error,
            } => {
                let kind = error.to_string();
                *self.errors.by_kind.entry(kind.clone()).or_default() += 1;
                if phase >= Phase::Running {
                    self.errors.dropped += 1;
                }
                if self.errors.first.len() < FIRST_ERRORS {
                    self.errors.first.push(format!("{client_id}: {kind}"));
                }
                if phase == Phase::Setup && self.first_failure.is_none() {
                    self.first_failure = Some((client_id, error));
                }
            }
            Notice::Interval { tick, latency } => self.on_interval(tick, &latency),
            Notice::Final(report) => {
                // Histograms of equal bounds always add.
                let _ = self.latency.add(&*report.latency);
                self.finals.push(*report);
            }
        }
    }

    fn on_interval(&mut self, tick: u64, latency: &LatencyHistogram) {
        let _ = self.latency.add(latency);
        let workers = self.handles.len();
        let Some((h, n, _)) = self.ticks.get_mut(&tick) else {
            return;
        };
        let _ = h.add(latency);
        *n += 1;
        if *n < workers {
            return;
        }
        let us = |v: u64| v as f64 / 1000.0;
        if let Some(second) = tick
            .checked_sub(1)
            .and_then(|i| self.timeline.get_mut(i as usize))
            && !h.is_empty()
        {
            second.p50_us = Some(us(h.value_at_quantile(0.5)));
            second.p99_us = Some(us(h.value_at_quantile(0.99)));
            second.max_us = Some(us(h.max()));
        }
        if let Some((_, _, mut snapshot)) = self.ticks.remove(&tick) {
            snapshot.p99_us =
                (!self.latency.is_empty()).then(|| us(self.latency.value_at_quantile(0.99)));
            (self.observe)(&snapshot);
        }
    }

    /// Closes one second: samples counters and CPU, asks workers for their interval
    /// histograms, and shows progress.
    fn second(&mut self, now: u64) {
        self.next_second_ns += 1_000_000_000;
        let totals = self.shared.totals();
        let cpu = sys::cpu_times().unwrap_or_default();
        let (then, last, last_cpu) = self.last_sample;
        let dt = secs(now - then).max(1e-9);
        self.timeline.push(Second {
            t: secs(now),
            phase: phase_name(self.phase),
            published: totals.published - last.published,
            delivered: totals.delivered - last.delivered,
            connected: totals.ready,
            cpu_percent: cpu.since(&last_cpu).total() / dt * 100.0,
            ..Second::default()
        });
        self.last_sample = (now, totals, cpu);
        let snapshot = Snapshot {
            elapsed: Duration::from_nanos(now),
            phase: self.phase,
            published_per_sec: ((totals.published - last.published) as f64 / dt) as u64,
            delivered_per_sec: ((totals.delivered - last.delivered) as f64 / dt) as u64,
            p99_us: None,
            connected: totals.ready,
            errors: totals.failed + totals.errors,
        };
        // Shown once every worker has sent this second's latencies (see `on_interval`).
        let tick = self.shared.next_tick();
        self.ticks.insert(tick, (new_histogram(), 0, snapshot));
        self.wake_all();
    }
}

/// The CONNECT every client sends, less its client id.
fn connect_template(config: &Config) -> Connect {
    let mut connect = Connect::new("");
    connect.protocol = config.mqtt_version;
    connect.clean_start = config.clean_session;
    connect.keep_alive = config.keepalive;
    connect.username = config.username.as_deref().map(Into::into);
    connect.password = config
        .password
        .as_deref()
        .map(|p| p.as_bytes().to_vec().into());
    if config.mqtt_version.is_v5() && config.topic_alias_maximum > 0 {
        connect
            .properties
            .push(vireo_codec::Property::TopicAliasMaximum(
                config.topic_alias_maximum,
            ));
    }
    connect
}

/// A worker's measurement state.
fn meter(config: &Config, shared: &Shared) -> Meter {
    Meter {
        clock: shared.clock,
        magic: shared.magic,
        version: config.mqtt_version,
        max_packet: config.payload + PACKET_HEADROOM,
        latency: new_histogram(),
        connect_latency: new_histogram(),
        stats: LocalStats::default(),
        tls_session: None,
    }
}

/// The phase's name in the timeline.
pub fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Setup => "setup",
        Phase::Running => "run",
        Phase::Draining => "drain",
        Phase::Stop => "stop",
    }
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}
