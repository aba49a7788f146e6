//! The result of a run: every figure, serialisable to JSON, printable as a table, with the
//! checks that make a run fail.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::config::Config;
use crate::shared::LatencyHistogram;
use crate::sys::{CpuTimes, Machine};

/// Everything a run measured.
#[derive(Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: &'static str,
    /// The configuration it ran with.
    pub config: Config,
    /// The broker address connected to.
    pub broker: String,
    /// Where it ran.
    pub machine: Machine,
    /// Seconds from the first connect until every client was ready (or failed).
    pub setup_secs: f64,
    /// Seconds of publishing (or, for `connections`, of holding).
    pub run_secs: f64,
    /// Seconds waited after publishing stopped.
    pub drain_secs: f64,
    /// Message accounting.
    pub messages: Messages,
    /// Overall rates.
    pub throughput: Throughput,
    /// End-to-end latency (payload stamp to arrival).
    pub latency: Latency,
    /// TCP connect to CONNACK.
    pub connect_latency: Latency,
    /// Connection figures.
    pub connections: Connections,
    /// The generator's own cost.
    pub generator: Generator,
    /// One entry per second.
    pub timeline: Vec<Second>,
    /// Errors seen.
    pub errors: Errors,
    /// Why the run failed; empty when it passed.
    pub failures: Vec<Failure>,
    /// The merged latency histogram (nanoseconds), for `.hgrm` files and plots.
    #[serde(skip)]
    pub histogram: LatencyHistogram,
}

impl fmt::Debug for Report {
    /// Everything but the histogram's counts array, which would run to megabytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Report")
            .field("scenario", &self.scenario)
            .field("broker", &self.broker)
            .field("messages", &self.messages)
            .field("throughput", &self.throughput)
            .field("latency", &self.latency)
            .field("connections", &self.connections)
            .field("generator", &self.generator)
            .field("errors", &self.errors)
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

/// Message accounting over the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Messages {
    /// PUBLISH packets sent by the publishers.
    pub published: u64,
    /// QoS 1/2 publishes acknowledged (PUBACK, PUBCOMP).
    pub acked: u64,
    /// QoS 1/2 publishes still unacknowledged at the end.
    pub unacked: u64,
    /// Deliveries expected: each message times the subscribers that should receive it.
    pub expected: u64,
    /// PUBLISH packets received, duplicates included.
    pub delivered: u64,
    /// Distinct messages received.
    pub unique: u64,
    /// Expected minus unique: messages that never arrived.
    pub lost: u64,
    /// Lost messages by publisher id, for the first publishers that lost any.
    pub lost_by_publisher: BTreeMap<u32, u64>,
    /// Extra copies received.
    pub duplicated: u64,
    /// Messages that arrived after a newer one from the same publisher.
    pub out_of_order: u64,
    /// Payloads without this run's stamp, or from a publisher a subscriber should not hear.
    pub unrecognised: u64,
}

/// Overall rates.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Throughput {
    /// Published messages per second of the run phase.
    pub published_per_sec: f64,
    /// Delivered messages per second, from the start of publishing to the last delivery.
    pub delivered_per_sec: f64,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    /// Values recorded.
    pub count: u64,
    /// Minimum.
    pub min_us: f64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p99_9_us: f64,
    /// 99.99th percentile.
    pub p99_99_us: f64,
    /// Maximum.
    pub max_us: f64,
    /// Whether latency is measured from the open-loop schedule's intended send times
    /// (coordinated-omission corrected), i.e. the run was rate-limited.
    pub co_corrected: bool,
}

impl Latency {
    /// Percentiles of a nanosecond histogram.
    pub fn from_histogram(h: &LatencyHistogram, co_corrected: bool) -> Self {
        if h.is_empty() {
            return Self {
                co_corrected,
                ..Self::default()
            };
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        let q = |q: f64| us(h.value_at_quantile(q));
        Self {
            count: h.len(),
            min_us: us(h.min()),
            mean_us: h.mean() / 1000.0,
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            p99_9_us: q(0.999),
            p99_99_us: q(0.9999),
            max_us: us(h.max()),
            co_corrected,
        }
    }
}

/// Connection figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Connections {
    /// Clients the run tried to connect.
    pub attempted: u64,
    /// Clients that got their CONNACK (and SUBACK).
    pub connected: u64,
    /// Clients that failed to set up.
    pub failed: u64,
    /// Clients lost after setup.
    pub dropped: u64,
    /// Connections set up per second during setup.
    pub connect_rate: f64,
    /// Broker RSS before connecting, KiB (`--broker-pid`).
    pub broker_rss_before_kib: Option<u64>,
    /// Broker RSS with every client connected, KiB.
    pub broker_rss_after_kib: Option<u64>,
    /// Broker memory per connected client, bytes.
    pub broker_bytes_per_connection: Option<f64>,
    /// Keepalive PINGREQs sent.
    pub pings: u64,
    /// Over TLS, what the handshakes agreed (the first one's version, cipher suite and key
    /// exchange), e.g. `TLSv1_3 TLS13_AES_256_GCM_SHA384 X25519`.
    pub tls: Option<String>,
}

/// The generator's own cost, so a reader can tell when it was the bottleneck.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Generator {
    /// Generator threads.
    pub threads: usize,
    /// CPU time used during the run, seconds.
    pub cpu: CpuTimes,
    /// CPU use over the whole run in percent of one core.
    pub cpu_percent: f64,
    /// True when the generator used (nearly) all the cores its threads can use: the figures
    /// may then describe the generator rather than the broker.
    pub saturated: bool,
    /// The open-files limit in force.
    pub open_files_limit: u64,
}

/// One second of the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Second {
    /// Seconds since the first connect.
    pub t: f64,
    /// Phase name.
    pub phase: &'static str,
    /// Messages published in this second.
    pub published: u64,
    /// Messages delivered in this second.
    pub delivered: u64,
    /// Clients ready at the end of the second.
    pub connected: u64,
    /// Median latency of the messages delivered in this second, microseconds.
    pub p50_us: Option<f64>,
    /// 99th percentile of the same, microseconds.
    pub p99_us: Option<f64>,
    /// Maximum of the same, microseconds.
    pub max_us: Option<f64>,
    /// Generator CPU in this second, percent of one core.
    pub cpu_percent: f64,
}

/// Errors seen.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Errors {
    /// Connections lost during the run.
    pub dropped: u64,
    /// Stray acknowledgements and other protocol errors that did not close a connection.
    pub protocol_errors: u64,
    /// Failures by kind, e.g. `"TCP connect failed: Connection refused (os error 111)"`.
    pub by_kind: BTreeMap<String, u64>,
    /// The first few failures, with client ids.
    pub first: Vec<String>,
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Failure {
    /// Messages lost at QoS 1 or 2.
    Loss {
        /// Messages lost.
        lost: u64,
        /// The end-to-end QoS.
        qos: u8,
    },
    /// Duplicates at QoS 2.
    Duplicates {
        /// Extra copies.
        duplicated: u64,
    },
    /// QoS 1/2 publishes never acknowledged.
    Unacknowledged {
        /// Publishes still in flight.
        unacked: u64,
    },
    /// Connections lost during the run.
    Dropped {
        /// How many.
        connections: u64,
    },
    /// Clients that could not connect (`connections`).
    ConnectFailures {
        /// How many.
        failed: u64,
        /// Out of.
        attempted: u64,
    },
    /// Stray acknowledgements.
    ProtocolErrors {
        /// How many.
        count: u64,
    },
    /// Nothing was published or delivered for a long time.
    Stalled {
        /// For how long, seconds.
        secs: f64,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Loss { lost, qos } => write!(f, "{lost} messages lost at QoS {qos}"),
            Failure::Duplicates { duplicated } => {
                write!(f, "{duplicated} duplicates at QoS 2 (exactly once)")
            }
            Failure::Unacknowledged { unacked } => {
                write!(f, "{unacked} publishes never acknowledged by the broker")
            }
            Failure::Dropped { connections } => {
                write!(f, "{connections} connections dropped during the run")
            }
            Failure::ConnectFailures { failed, attempted } => {
                write!(f, "{failed} of {attempted} connections failed")
            }
            Failure::ProtocolErrors { count } => {
                write!(f, "{count} protocol errors from the broker")
            }
            Failure::Stalled { secs } => write!(f, "no progress for {secs:.1} s"),
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        let m = &self.messages;
        let rate = c
            .rate
            .map_or_else(|| "unlimited".to_owned(), |r| format!("{r} msg/s"));
        writeln!(
            f,
            "{} against {}{}: {} publishers, {} subscribers, QoS {}/{}, {} B payload, rate {}",
            self.scenario,
            self.broker,
            match (c.ws.is_some(), c.tls.is_some()) {
                (false, false) => "",
                (false, true) => " over TLS",
                (true, false) => " over WebSocket",
                (true, true) => " over WebSocket over TLS",
            },
            c.scenario.publishers(),
            c.scenario.subscribers(),
            c.qos as u8,
            c.sub_qos as u8,
            c.payload,
            rate,
        )?;
        writeln!(
            f,
            "  phases       setup {:.2} s, run {:.2} s, drain {:.2} s",
            self.setup_secs, self.run_secs, self.drain_secs
        )?;
        if c.scenario.publishers() > 0 {
            writeln!(
                f,
                "  messages     published {}  acked {}  expected {}  delivered {}  unique {}",
                m.published, m.acked, m.expected, m.delivered, m.unique
            )?;
            writeln!(
                f,
                "  accounting   lost {}  duplicated {}  out-of-order {}  unrecognised {}  unacked {}",
                m.lost, m.duplicated, m.out_of_order, m.unrecognised, m.unacked
            )?;
            writeln!(
                f,
                "  throughput   {:.0} published/s  {:.0} delivered/s",
                self.throughput.published_per_sec, self.throughput.delivered_per_sec
            )?;
            write_latency(f, "latency", &self.latency)?;
        }
        let k = &self.connections;
        writeln!(
            f,
            "  connections  {} attempted  {} connected  {} failed  {} dropped  {:.0} conn/s",
            k.attempted, k.connected, k.failed, k.dropped, k.connect_rate
        )?;
        write_latency(f, "connect", &self.connect_latency)?;
        if let Some(tls) = &k.tls {
            writeln!(f, "  tls          {tls}, a full handshake per connection")?;
        }
        if let (Some(before), Some(after)) = (k.broker_rss_before_kib, k.broker_rss_after_kib) {
            let per = k.broker_bytes_per_connection.unwrap_or(0.0);
            writeln!(
                f,
                "  broker RSS   {before} KiB before, {after} KiB after: {per:.0} B per connection"
            )?;
        }
        let g = &self.generator;
        writeln!(
            f,
            "  generator    {} threads, CPU {:.2} s user + {:.2} s sys = {:.0}% of a core{}",
            g.threads,
            g.cpu.user,
            g.cpu.system,
            g.cpu_percent,
            if g.saturated {
                "  (SATURATED: the generator may be the bottleneck)"
            } else {
                ""
            }
        )?;
        for e in &self.errors.first {
            writeln!(f, "  error        {e}")?;
        }
        if self.failures.is_empty() {
            writeln!(f, "  result       PASS")
        } else {
            for failure in &self.failures {
                writeln!(f, "  result       FAIL: {failure}")?;
            }
            Ok(())
        }
    }
}

fn write_latency(f: &mut fmt::Formatter<'_>, name: &str, l: &Latency) -> fmt::Result {
    if l.count == 0 {
        return Ok(());
    }
    writeln!(
        f,
        "  {name:<12} µs: min {:.1}  p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  p99.99 {:.1}  max {:.1}  (n={}{})",
        l.min_us,
        l.p50_us,
        l.p90_us,
        l.p99_us,
        l.p99_9_us,
        l.p99_99_us,
        l.max_us,
        l.count,
        if l.co_corrected { ", CO-corrected" } else { "" }
    )
}
