//! `$SYS/broker/...`: the broker's own figures, under Mosquitto's topic names, published
//! retained every `sys_interval` seconds by worker 0 from its sweep. Filters that begin with
//! a wildcard never match them [MQTT-4.7.2-1] (the index's rule for every `$` topic), so only
//! clients that ask for `$SYS/...` see them.
//!
//! The counters are the broker's `Stats`; the per-message ones (deliveries, bytes) are
//! counted per worker in plain integers and added to `Stats` once per sweep, so the data path
//! pays no atomic for them.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use vireo_broker::protocol::publish;
use vireo_broker::{Message, SessionId};
use vireo_codec::{Bytes, QoS, TopicName};

use crate::shared::Shared;

/// The averaging windows of the `load` topics, as Mosquitto's: 1, 5 and 15 minutes.
const WINDOWS: [(u64, &str); 3] = [(60, "1min"), (300, "5min"), (900, "15min")];

/// The counters the `load` topics average, with their topic names.
const LOADS: [&str; 5] = [
    "messages/received",
    "messages/sent",
    "bytes/received",
    "bytes/sent",
    "connections",
];

/// What the `$SYS` publisher remembers between two publications.
#[derive(Debug)]
pub(crate) struct SysTopics {
    interval: Duration,
    started: Instant,
    next: Instant,
    last: Instant,
    /// The `LOADS` counters at the last publication.
    last_counts: [u64; 5],
    /// Per counter and window, the moving average per minute.
    load: [[f64; 3]; 5],
}

impl SysTopics {
    /// `None` when `sys_interval` is 0 (off).
    pub(crate) fn new(interval_secs: u64, now: Instant) -> Option<Self> {
        (interval_secs > 0).then(|| Self {
            interval: Duration::from_secs(interval_secs),
            started: now,
            next: now + Duration::from_secs(interval_secs),
            last: now,
            last_counts: [0; 5],
            load: [[0.0; 3]; 5],
        })
    }

    /// The messages to publish now, if the interval has come round.
    pub(crate) fn due(&mut self, now: Instant, shared: &Shared) -> Vec<Arc<Message>> {
        if now < self.next {
            return Vec::new();
        }
        self.next = now + self.interval;
        let s = &shared.stats;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let connected = s.clients_connected.load(Ordering::Relaxed) as u64;
        let total = s.sessions.load(Ordering::Relaxed) as u64;
        let counts = [
            get(&s.publishes_in),
            get(&s.publishes_out),
            get(&s.bytes_in),
            get(&s.bytes_out),
            get(&s.connects),
        ];
        let elapsed = now.duration_since(self.last).as_secs_f64();
        if elapsed > 0.0 {
            for (i, count) in counts.iter().enumerate() {
                let per_minute = (count - self.last_counts[i]) as f64 * 60.0 / elapsed;
                for (w, (window, _)) in WINDOWS.iter().enumerate() {
                    let keep = (-elapsed / *window as f64).exp();
                    self.load[i][w] = self.load[i][w] * keep + per_minute * (1.0 - keep);
                }
            }
        }
        self.last = now;
        self.last_counts = counts;
        let dropped = get(&s.dropped_qos0) + get(&s.dropped_queued) + get(&s.dropped_too_large);
        let mut values: Vec<(String, String)> = vec![
            (
                "version".into(),
                format!("vireo {}", env!("CARGO_PKG_VERSION")),
            ),
            (
                "uptime".into(),
                format!("{} seconds", now.duration_since(self.started).as_secs()),
            ),
            ("clients/connected".into(), connected.to_string()),
            (
                "clients/disconnected".into(),
                total.saturating_sub(connected).to_string(),
            ),
            ("clients/total".into(), total.to_string()),
            (
                "clients/maximum".into(),
                s.clients_maximum.load(Ordering::Relaxed).to_string(),
            ),
            ("messages/received".into(), counts[0].to_string()),
            ("messages/sent".into(), counts[1].to_string()),
            ("publish/messages/received".into(), counts[0].to_string()),
            ("publish/messages/sent".into(), counts[1].to_string()),
            ("publish/messages/dropped".into(), dropped.to_string()),
            ("bytes/received".into(), counts[2].to_string()),
            ("bytes/sent".into(), counts[3].to_string()),
            ("subscriptions/count".into(), shared.index.len().to_string()),
            (
                "retained messages/count".into(),
                shared.retained.read().len().to_string(),
            ),
        ];
        // Mosquitto's bridge state topic: 1 connected, 0 not.
        for b in &shared.bridges {
            let up = b.connected.load(Ordering::Relaxed);
            values.push((
                format!("connection/{}/state", b.name),
                u8::from(up).to_string(),
            ));
        }
        for (i, name) in LOADS.iter().enumerate() {
            for (w, (_, window)) in WINDOWS.iter().enumerate() {
                values.push((
                    format!("load/{name}/{window}"),
                    format!("{:.2}", self.load[i][w]),
                ));
            }
        }
        values
            .into_iter()
            .filter_map(|(name, value)| {
                let topic = TopicName::new(format!("$SYS/broker/{name}")).ok()?;
                Some(Arc::new(publish::message(
                    topic,
                    Bytes::from(value),
                    QoS::AtMostOnce,
                    true,
                    Default::default(),
                    SessionId(0),
                    now,
                )))
            })
            .collect()
    }
}
