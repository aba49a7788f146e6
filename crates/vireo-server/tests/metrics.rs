//! The Prometheus endpoint: `/metrics` in the OpenMetrics text format, its counters moving
//! with the traffic; off unless `metrics_bind` is set.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Instant;

use common::*;
use vireo_codec::QoS;

/// The value of the sample `name` in an exposition.
fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_endpoint_counts_the_traffic() {
    let broker = start_with(|c| c.metrics_bind = Some(SocketAddr::from(([127, 0, 0, 1], 0))));
    let metrics = broker.metrics_addr().expect("the endpoint is on");
    let addr = broker.local_addr();
    let mut sub = Client::connect(addr, "sub");
    sub.subscribe(&[("m", QoS::AtLeastOnce)]);
    let mut p = Client::connect(addr, "p");
    for id in 1..=3 {
        p.publish("m", b"x", QoS::AtLeastOnce, false, id);
        sub.recv_publish_ack();
    }
    // Deliveries and bytes reach the counters at the workers' next sweep (100 ms).
    let deadline = Instant::now() + WAIT;
    let body = loop {
        let (head, body) = http_get(metrics, "/metrics");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("application/openmetrics-text"), "{head}");
        if sample(&body, "vireo_publishes_sent_total").is_some_and(|v| v >= 3.0) {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "deliveries never counted:\n{body}"
        );
    };
    assert!(body.ends_with("# EOF\n"), "a whole OpenMetrics exposition");
    assert!(sample(&body, "vireo_publishes_received_total").is_some_and(|v| v >= 3.0));
    assert!(sample(&body, "vireo_received_bytes_total").is_some_and(|v| v > 0.0));
    assert_eq!(sample(&body, "vireo_clients_connected"), Some(2.0));
    assert_eq!(sample(&body, "vireo_subscriptions"), Some(1.0));
    assert!(body.contains("# TYPE vireo_dropped_qos0 counter"), "{body}");
    let (head, _) = http_get(metrics, "/other");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
}

/// Per worker: deliveries, bytes, connections and sessions, summing to the totals; and the
/// PUBLISH-read-to-frame-written latency as a histogram per worker, with one sample per loop
/// iteration that delivered something (each round trip below is at least one).
#[test]
fn metrics_per_worker_counters_and_latency_histogram() {
    let broker = start_with(|c| c.metrics_bind = Some(SocketAddr::from(([127, 0, 0, 1], 0))));
    let metrics = broker.metrics_addr().unwrap();
    let addr = broker.local_addr();
    let mut sub = Client::connect(addr, "lat-sub");
    sub.subscribe(&[("lat", QoS::AtLeastOnce)]);
    let mut p = Client::connect(addr, "lat-pub");
    for id in 1..=5 {
        p.publish("lat", b"x", QoS::AtLeastOnce, false, id);
        sub.recv_publish_ack();
    }
    let deadline = Instant::now() + WAIT;
    let body = loop {
        let (_, body) = http_get(metrics, "/metrics");
        // A sweep adds to the total, then to its worker's share: a scrape between the two
        // sees them apart, the next one together.
        if sum_of(&body, "vireo_publish_latency_seconds_count") >= 5.0
            && sum_of(&body, "vireo_worker_publishes_sent_total") >= 5.0
            && sum_of(&body, "vireo_worker_received_bytes_total")
                == sample(&body, "vireo_received_bytes_total").unwrap_or(-1.0)
        {
            break body;
        }
        assert!(Instant::now() < deadline, "never counted:\n{body}");
    };
    assert!(
        body.contains("# TYPE vireo_publish_latency_seconds histogram"),
        "{body}"
    );
    // Buckets are cumulative and end at +Inf with the count; on loopback every sample is
    // well under a second.
    for worker in ["0", "1"] {
        let bucket = |le: &str| {
            sample(
                &body,
                &format!("vireo_publish_latency_seconds_bucket{{le=\"{le}\",worker=\"{worker}\"}}"),
            )
            .or_else(|| {
                sample(
                    &body,
                    &format!(
                        "vireo_publish_latency_seconds_bucket{{worker=\"{worker}\",le=\"{le}\"}}"
                    ),
                )
            })
        };
        let (one, inf) = (bucket("1.0"), bucket("+Inf"));
        assert!(
            one.is_some() && inf.is_some(),
            "worker {worker} buckets:\n{body}"
        );
        assert_eq!(one, inf, "a sample over a second on loopback:\n{body}");
    }
    assert_eq!(
        sum_of(&body, "vireo_worker_connections"),
        sample(&body, "vireo_connections").unwrap()
    );
    assert_eq!(sum_of(&body, "vireo_worker_sessions"), 2.0);
}

/// The sum over workers of a labelled gauge.
fn sum_of(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Per worker: QoS 1/2 messages waiting for an offline persistent session are counted.
#[test]
fn metrics_count_queued_messages_per_worker() {
    let broker = start_with(|c| c.metrics_bind = Some(SocketAddr::from(([127, 0, 0, 1], 0))));
    let metrics = broker.metrics_addr().unwrap();
    let addr = broker.local_addr();
    let (mut away, _) = Client::connect_session(addr, "away", false);
    away.subscribe(&[("q", QoS::AtLeastOnce)]);
    away.disconnect();
    let mut p = Client::connect(addr, "p");
    for id in 1..=5 {
        p.publish("q", b"x", QoS::AtLeastOnce, false, id);
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, body) = http_get(metrics, "/metrics");
        assert!(
            body.contains("vireo_queued_messages{worker=\"0\"}"),
            "{body}"
        );
        if sum_of(&body, "vireo_queued_messages") >= 5.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "queued messages never counted:\n{body}"
        );
    }
}

#[test]
fn metrics_endpoint_is_off_by_default() {
    let broker = start();
    assert_eq!(broker.metrics_addr(), None);
}
