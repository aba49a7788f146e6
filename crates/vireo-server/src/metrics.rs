//! The Prometheus endpoint: `GET http://<metrics_bind>/metrics` in the OpenMetrics text
//! format (prometheus-client), served by tiny_http on a thread of its own, off the workers.
//! Each scrape reads the broker's `Stats` once into constant metrics: the workers keep
//! counting as they do for `$SYS`, and a scrape costs them nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use crate::shared::Shared;

/// Binds the endpoint; the returned address is where it listens (port 0 picks one).
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<(tiny_http::Server, SocketAddr)> {
    let server = tiny_http::Server::http(addr).map_err(std::io::Error::other)?;
    let bound = server.server_addr().to_ip().unwrap_or(addr);
    Ok((server, bound))
}

/// Serves scrapes until the broker stops.
pub(crate) fn serve(server: tiny_http::Server, shared: Arc<Shared>) {
    while !shared.shutdown.load(Ordering::Relaxed) {
        let request = match server.recv_timeout(Duration::from_millis(100)) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint stops");
                return;
            }
        };
        let response = if request.url() == "/metrics" {
            let body = render(&shared);
            let kind = tiny_http::Header::from_bytes(
                "Content-Type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            );
            let response = tiny_http::Response::from_string(body);
            match kind {
                Ok(h) => response.with_header(h),
                Err(()) => response,
            }
        } else {
            tiny_http::Response::from_string("not found: the metrics are at /metrics\n")
                .with_status_code(404)
        };
        if let Err(e) = request.respond(response) {
            tracing::debug!(error = %e, "metrics response not sent");
        }
    }
}

fn worker_label(i: usize) -> Vec<(String, String)> {
    vec![("worker".to_owned(), i.to_string())]
}

/// Each worker's latency histogram as a Prometheus histogram (buckets, sum, count), taken at
/// the scrape.
#[derive(Debug)]
struct Latency(Vec<WorkerLatency>);

/// One worker's: its label, bucket counts, sum (seconds) and count.
#[derive(Debug)]
struct WorkerLatency {
    labels: Vec<(String, String)>,
    buckets: Vec<(f64, u64)>,
    sum: f64,
    count: u64,
}

impl Latency {
    fn of(shared: &Shared) -> Self {
        Self(
            shared
                .mailboxes
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let (buckets, sum, count) = crate::latency::buckets(&m.latency.lock());
                    WorkerLatency {
                        labels: worker_label(i),
                        buckets,
                        sum,
                        count,
                    }
                })
                .collect(),
        )
    }
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        for w in &self.0 {
            encoder
                .encode_family(&w.labels)?
                .encode_histogram::<NoLabelSet>(w.sum, w.count, &w.buckets, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The exposition, from the broker's counters now.
pub(crate) fn render(shared: &Shared) -> String {
    let s = &shared.stats;
    let c = |a: &AtomicU64| ConstCounter::new(a.load(Ordering::Relaxed));
    let g = |a: &AtomicUsize| ConstGauge::new(a.load(Ordering::Relaxed) as i64);
    let mut r = Registry::with_prefix("vireo");
    r.register(
        "publishes_received",
        "PUBLISH packets received from clients",
        c(&s.publishes_in),
    );
    r.register(
        "publishes_sent",
        "PUBLISHes delivered to subscribers (queued for their connection or session)",
        c(&s.publishes_out),
    );
    r.register("received_bytes", "Bytes read from clients", c(&s.bytes_in));
    r.register("sent_bytes", "Bytes written to clients", c(&s.bytes_out));
    r.register("connects", "CONNECTs accepted", c(&s.connects));
    r.register(
        "dropped_qos0",
        "QoS 0 deliveries dropped: the subscriber's output queue was full",
        c(&s.dropped_qos0),
    );
    r.register(
        "dropped_queue_full",
        "QoS 1/2 deliveries dropped: the session's queue was full",
        c(&s.dropped_queued),
    );
    r.register(
        "dropped_too_large",
        "Deliveries over the client's Maximum Packet Size",
        c(&s.dropped_too_large),
    );
    r.register(
        "protocol_errors",
        "Connections closed for a protocol violation or a malformed packet",
        c(&s.protocol_errors),
    );
    r.register(
        "auth_failures",
        "CONNECTs refused for their credentials",
        c(&s.auth_failures),
    );
    r.register(
        "acl_denied",
        "PUBLISHes and subscriptions the ACL refused",
        c(&s.acl_denied),
    );
    r.register(
        "store_refused_publishes",
        "QoS 1/2 PUBLISHes refused while the store could not write (a full disk)",
        c(&s.refused_store_failing),
    );
    r.register(
        "refused_per_ip",
        "Connections closed at accept by the per-address limits",
        c(&s.refused_per_ip),
    );
    r.register(
        "retained_refused",
        "Retained messages not kept: the retained store was full",
        c(&s.retained_refused),
    );
    r.register(
        "rate_limited",
        "Times a client was throttled by max_publish_rate / max_inbound_bytes_rate",
        c(&s.rate_limited),
    );
    r.register(
        "unfinished_closed",
        "Connections closed for holding unfinished packets past max_unfinished_bytes",
        c(&s.unfinished_closed),
    );
    r.register("connections", "Connections open now", g(&s.connections));
    r.register(
        "clients_connected",
        "Clients connected now",
        g(&s.clients_connected),
    );
    r.register(
        "clients_maximum",
        "The most clients connected at once",
        g(&s.clients_maximum),
    );
    r.register(
        "sessions",
        "Sessions stored, online and offline",
        g(&s.sessions),
    );
    r.register(
        "unfinished_bytes",
        "Bytes held in packets not yet whole",
        g(&s.unfinished_bytes),
    );
    r.register(
        "subscriptions",
        "Subscriptions in the index",
        ConstGauge::new(shared.index.len() as i64),
    );
    r.register(
        "retained_messages",
        "Retained messages stored",
        ConstGauge::new(shared.retained.read().len() as i64),
    );
    // Per worker: its sessions' QoS 1/2 messages queued and in flight, its connections and
    // sessions, what it delivered, read and wrote (as of its last sweep), and the deliveries
    // other workers sent it that wait in its mailbox.
    type Read<T> = fn(&crate::shared::Mailbox) -> T;
    let gauges: [(&str, &str, Read<usize>); 5] = [
        (
            "queued_messages",
            "QoS 1/2 messages waiting in session queues",
            |m| m.queued_messages.load(Ordering::Relaxed),
        ),
        (
            "inflight_messages",
            "QoS 1/2 messages sent and not yet acknowledged",
            |m| m.inflight_messages.load(Ordering::Relaxed),
        ),
        (
            "mailbox_deliveries",
            "Deliveries waiting in a worker's mailbox",
            |m| m.queued.load(Ordering::Relaxed),
        ),
        (
            "worker_connections",
            "Connections a worker holds (as of its last sweep)",
            |m| m.connections.load(Ordering::Relaxed),
        ),
        (
            "worker_sessions",
            "Sessions a worker holds, online and offline (as of its last sweep)",
            |m| m.sessions.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, read) in gauges {
        let family = Family::<Vec<(String, String)>, Gauge>::default();
        for (i, m) in shared.mailboxes.iter().enumerate() {
            family.get_or_create(&worker_label(i)).set(read(m) as i64);
        }
        r.register(name, help, family);
    }
    let counters: [(&str, &str, Read<u64>); 3] = [
        (
            "worker_publishes_sent",
            "PUBLISHes a worker delivered to its sessions (as of its last sweep)",
            |m| m.delivered.load(Ordering::Relaxed),
        ),
        (
            "worker_received_bytes",
            "Bytes a worker read from its clients (as of its last sweep)",
            |m| m.read_bytes.load(Ordering::Relaxed),
        ),
        (
            "worker_sent_bytes",
            "Bytes a worker wrote to its clients (as of its last sweep)",
            |m| m.written_bytes.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, read) in counters {
        let family = Family::<Vec<(String, String)>, Counter>::default();
        for (i, m) in shared.mailboxes.iter().enumerate() {
            family.get_or_create(&worker_label(i)).inc_by(read(m));
        }
        r.register(name, help, family);
    }
    if !shared.bridges.is_empty() {
        bridge_metrics(&mut r, shared);
    }
    if let Some(st) = &shared.store_stats {
        store_metrics(&mut r, st);
    }
    r.register(
        "publish_latency_seconds",
        "From a PUBLISH read to its frame written to a subscriber, sampled once per loop \
         iteration of each worker (see docs/architecture.md)",
        Latency::of(shared),
    );
    let mut out = String::new();
    if encode(&mut out, &r).is_err() {
        out.clear();
    }
    out
}

/// The durable store's, as its thread last reported them.
fn store_metrics(r: &mut Registry, st: &crate::store::StoreStats) {
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let gauges = [
        (
            "store_records",
            "Live records in the durable store",
            &st.records,
        ),
        (
            "store_disk_bytes",
            "Bytes of the store's segments on disk",
            &st.disk_bytes,
        ),
        (
            "store_live_bytes",
            "Bytes of its live records (what a compaction keeps)",
            &st.live_bytes,
        ),
    ];
    for (name, help, value) in gauges {
        r.register(name, help, ConstGauge::new(load(value) as i64));
    }
    let counters = [
        (
            "store_written_bytes",
            "Bytes the store wrote to its segments, compactions included",
            &st.written_bytes,
        ),
        ("store_commits", "Writes of a burst of changes", &st.commits),
        ("store_syncs", "fdatasync calls", &st.syncs),
        (
            "store_write_errors",
            "Writes that failed (a full disk): the changes wait and are tried again",
            &st.write_errors,
        ),
    ];
    for (name, help, value) in counters {
        r.register(name, help, ConstCounter::new(load(value)));
    }
}

/// Per bridge (label `bridge`): whether its remote is connected, and what it forwarded.
fn bridge_metrics(r: &mut Registry, shared: &Shared) {
    type Read = fn(&crate::bridge::BridgeStatus) -> u64;
    let label = |b: &crate::bridge::BridgeStatus| vec![("bridge".to_owned(), b.name.clone())];
    let connected = Family::<Vec<(String, String)>, Gauge>::default();
    for b in &shared.bridges {
        connected
            .get_or_create(&label(b))
            .set(i64::from(b.connected.load(Ordering::Relaxed)));
    }
    r.register(
        "bridge_connected",
        "1 while the bridge's remote broker has accepted its connection",
        connected,
    );
    let counters: [(&str, &str, Read); 5] = [
        (
            "bridge_forwarded_out",
            "Messages the bridge published to its remote (acknowledged there, at QoS 1/2)",
            |b| b.forwarded_out.load(Ordering::Relaxed),
        ),
        (
            "bridge_forwarded_in",
            "Messages the bridge published here from its remote",
            |b| b.forwarded_in.load(Ordering::Relaxed),
        ),
        (
            "bridge_dropped",
            "Messages the bridge did not forward (QoS 0 while the remote was away, refused, over a limit of the other side)",
            |b| b.dropped.load(Ordering::Relaxed),
        ),
        (
            "bridge_connects",
            "Connection attempts to the bridge's remote",
            |b| b.connects.load(Ordering::Relaxed),
        ),
        (
            "bridge_local_connects",
            "Times the bridge's connection into this broker was made (more than 1: it broke)",
            |b| b.local_connects.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, read) in counters {
        let family = Family::<Vec<(String, String)>, Counter>::default();
        for b in &shared.bridges {
            family.get_or_create(&label(b)).inc_by(read(b));
        }
        r.register(name, help, family);
    }
}
