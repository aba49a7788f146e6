//! Assembles the [`Report`] from what the controller measured and the workers' final figures,
//! and decides whether the run failed.

use vireo_codec::QoS;

use crate::controller::{Controller, Measured};
use crate::report::{Connections, Failure, Generator, Latency, Messages, Report, Throughput};
use crate::shared::{LatencyHistogram, WorkerReport, new_histogram};
use crate::sys::Machine;
use crate::tracker::TrackerTotals;

/// Publishers listed by id in `lost_by_publisher`, at most.
const LOST_BY_PUBLISHER: usize = 100;

/// Inputs gathered outside the controller.
#[derive(Debug, Clone, Copy)]
pub struct Extra {
    /// Broker RSS before the run, KiB.
    pub rss_before_kib: Option<u64>,
    /// Open-files limit in force.
    pub open_files_limit: u64,
}

/// Builds the report; `failures` lists every check the run broke.
pub fn build<F>(ctl: &mut Controller<'_, F>, m: Measured, extra: Extra) -> Report {
    let config = ctl.config;
    let receivers = config.scenario.receivers_per_publisher();
    let w = Collected::from(&ctl.finals, config.scenario.publishers() as usize);
    let totals = ctl.shared.totals();
    let published: u64 = w.sent.iter().sum();
    // Loss per publisher: what each of its receivers should have had, minus what arrived.
    let lost: u64 = w
        .sent
        .iter()
        .zip(&w.unique)
        .map(|(s, u)| (s * receivers).saturating_sub(*u))
        .sum();
    let lost_by_publisher = w
        .sent
        .iter()
        .zip(&w.unique)
        .enumerate()
        .filter_map(|(id, (s, u))| {
            let lost = (s * receivers).saturating_sub(*u);
            (lost > 0).then_some((id as u32, lost))
        })
        .take(LOST_BY_PUBLISHER)
        .collect();
    let messages = Messages {
        published,
        acked: totals.acked,
        unacked: w.unacked,
        expected: published * receivers,
        delivered: totals.delivered,
        unique: w.tracker.unique,
        lost,
        lost_by_publisher,
        duplicated: w.tracker.duplicated,
        out_of_order: w.tracker.out_of_order,
        unrecognised: w.unrecognised,
    };
    ctl.errors.protocol_errors = w.protocol_errors;
    let connected = totals.ready + ctl.errors.dropped;
    let connections = Connections {
        attempted: ctl.total_clients,
        connected,
        failed: totals.failed,
        dropped: ctl.errors.dropped,
        connect_rate: connected as f64 / m.setup_secs.max(1e-9),
        broker_rss_before_kib: extra.rss_before_kib,
        broker_rss_after_kib: m.rss_after_kib,
        broker_bytes_per_connection: match (extra.rss_before_kib, m.rss_after_kib) {
            (Some(b), Some(a)) if connected > 0 => {
                Some((a as f64 - b as f64) * 1024.0 / connected as f64)
            }
            _ => None,
        },
        pings: w.pings,
        tls: ctl.finals.iter().find_map(|r| r.tls_session.clone()),
    };
    let cores = Machine::current().cores;
    let threads = ctl.finals.len().max(1);
    let cpu_percent = m.cpu.total() / m.wall_secs.max(1e-9) * 100.0;
    let generator = Generator {
        threads,
        cpu: m.cpu,
        cpu_percent,
        saturated: cpu_percent >= 90.0 * threads.min(cores) as f64,
        open_files_limit: extra.open_files_limit,
    };
    let co = config.rate.is_some();
    let mut report = Report {
        scenario: config.scenario.name(),
        config: config.clone(),
        broker: ctl.addr.to_string(),
        machine: Machine::current(),
        setup_secs: m.setup_secs,
        run_secs: m.run_secs,
        drain_secs: m.drain_secs,
        throughput: Throughput {
            published_per_sec: published as f64 / m.run_secs.max(1e-9),
            delivered_per_sec: totals.delivered as f64 / m.delivery_secs.max(1e-9),
        },
        latency: Latency::from_histogram(&ctl.latency, co),
        connect_latency: Latency::from_histogram(&w.connect_latency, false),
        connections,
        generator,
        timeline: std::mem::take(&mut ctl.timeline),
        errors: std::mem::take(&mut ctl.errors),
        failures: Vec::new(),
        histogram: std::mem::replace(&mut ctl.latency, new_histogram()),
        messages,
    };
    report.failures = failures(&report, m.stalled);
    report
}

/// The workers' final figures, summed.
struct Collected {
    /// Messages sent, by publisher id.
    sent: Vec<u64>,
    /// Unique messages received, by publisher id, over all subscribers.
    unique: Vec<u64>,
    tracker: TrackerTotals,
    connect_latency: LatencyHistogram,
    unrecognised: u64,
    unacked: u64,
    protocol_errors: u64,
    pings: u64,
}

impl Collected {
    fn from(finals: &[WorkerReport], publishers: usize) -> Self {
        let mut c = Self {
            sent: vec![0; publishers],
            unique: vec![0; publishers],
            tracker: TrackerTotals::default(),
            connect_latency: new_histogram(),
            unrecognised: 0,
            unacked: 0,
            protocol_errors: 0,
            pings: 0,
        };
        for r in finals {
            for &(id, n) in &r.sent {
                if let Some(s) = c.sent.get_mut(id as usize) {
                    *s = n;
                }
            }
            for (u, n) in c.unique.iter_mut().zip(&r.unique_per_publisher) {
                *u += n;
            }
            c.tracker += r.tracker;
            // Histograms with equal bounds always add.
            let _ = c.connect_latency.add(&*r.connect_latency);
            c.unrecognised += r.unrecognised + r.tracker.unexpected;
            c.unacked += r.inflight;
            c.protocol_errors += r.protocol_errors;
            c.pings += r.pings;
        }
        c
    }
}

/// The checks a run must pass.
fn failures(r: &Report, stalled: Option<f64>) -> Vec<Failure> {
    let mut out = Vec::new();
    let m = &r.messages;
    let qos = r.config.effective_qos();
    if qos != QoS::AtMostOnce && m.lost > 0 {
        out.push(Failure::Loss {
            lost: m.lost,
            qos: qos as u8,
        });
    }
    if qos == QoS::ExactlyOnce && m.duplicated > 0 {
        out.push(Failure::Duplicates {
            duplicated: m.duplicated,
        });
    }
    if m.unacked > 0 {
        out.push(Failure::Unacknowledged { unacked: m.unacked });
    }
    if r.connections.dropped > 0 {
        out.push(Failure::Dropped {
            connections: r.connections.dropped,
        });
    }
    if r.connections.failed > 0 {
        out.push(Failure::ConnectFailures {
            failed: r.connections.failed,
            attempted: r.connections.attempted,
        });
    }
    if r.errors.protocol_errors > 0 {
        out.push(Failure::ProtocolErrors {
            count: r.errors.protocol_errors,
        });
    }
    if let Some(secs) = stalled {
        out.push(Failure::Stalled { secs });
    }
    out
}
