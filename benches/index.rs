//! Subscription index matching: how many PUBLISH topics per second one thread can route.
//!
//! - `exact_100k`: 100k exact subscriptions (one per device), each match finds one session;
//! - `wildcard_10k`: 10k wildcard filters of mixed shapes (`+` mid-filter, trailing `#`, a few
//!   starting with `+` that every match visits), topics drawn from the same tree;
//! - `fanout_10k`: one topic with 10k subscribers, collected into a reused `Recipients`;
//! - `fanout_10k_plus_hash`: the same plus one session subscribed to `#`, so every match
//!   deduplicates two lists (the common shape: a monitoring client beside a large fan-out);
//! - `fanout_10k_overlap`: the 10k sessions also subscribed through `bcast/#`, so every match
//!   deduplicates 20k entries down to 10k (the worst case: a full sort).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vireo_broker::{Recipients, SessionId, SubscriptionIndex};
use vireo_codec::QoS;

/// Shards as the server would create them: one per worker on a 16-core machine.
const SHARDS: usize = 16;

/// Topics a bench cycles through, so one hot entry in cache does not flatter the numbers.
const TOPICS: usize = 1024;

/// A fixed pseudo-random sequence (64-bit LCG): the same topics every run.
fn pseudo_random(count: usize, below: u64) -> Vec<u64> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..count)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 33) % below
        })
        .collect()
}

fn bench_topics(c: &mut Criterion, name: &str, index: &SubscriptionIndex, topics: &[String]) {
    let mut group = c.benchmark_group("index");
    group.throughput(Throughput::Elements(1));
    let mut out = Recipients::new();
    let mut i = 0;
    group.bench_function(name, |b| {
        b.iter(|| {
            out.clear();
            index.matches(black_box(&topics[i % topics.len()]), &mut out);
            i += 1;
            black_box(out.len())
        })
    });
    group.finish();
}

fn exact_100k(c: &mut Criterion) {
    let index = SubscriptionIndex::new(SHARDS);
    for id in 0..100_000u64 {
        index.subscribe(
            SessionId(id),
            &format!("site/{}/dev/{id}/temp", id % 50),
            QoS::AtLeastOnce,
        );
    }
    let topics: Vec<String> = pseudo_random(TOPICS, 100_000)
        .into_iter()
        .map(|id| format!("site/{}/dev/{id}/temp", id % 50))
        .collect();
    bench_topics(c, "exact_100k", &index, &topics);
}

fn wildcard_10k(c: &mut Criterion) {
    let index = SubscriptionIndex::new(SHARDS);
    for id in 0..10_000u64 {
        let filter = match id % 100 {
            0 => format!("+/{}/dev/+/alarm", id % 50),
            1..=40 => format!("site/{}/dev/{}/+", id % 50, id),
            41..=70 => format!("site/{}/+/{}/temp", id % 50, id),
            71..=90 => format!("site/{}/dev/{}/#", id % 50, id),
            _ => format!("site/{}/#", id % 50),
        };
        index.subscribe(SessionId(id), &filter, QoS::AtMostOnce);
    }
    let topics: Vec<String> = pseudo_random(TOPICS, 10_000)
        .into_iter()
        .map(|id| format!("site/{}/dev/{id}/temp", id % 50))
        .collect();
    bench_topics(c, "wildcard_10k", &index, &topics);
}

fn fanout_10k(c: &mut Criterion) {
    let index = SubscriptionIndex::new(SHARDS);
    for id in 0..10_000u64 {
        index.subscribe(SessionId(id), "bcast/all", QoS::AtMostOnce);
    }
    let topics = ["bcast/all".to_owned()];
    bench_topics(c, "fanout_10k", &index, &topics);
    // One monitoring client on `#`: now two lists match and must be deduplicated.
    index.subscribe(SessionId(1 << 40), "#", QoS::AtMostOnce);
    bench_topics(c, "fanout_10k_plus_hash", &index, &topics);
    for id in 0..10_000u64 {
        index.subscribe(SessionId(id), "bcast/#", QoS::AtLeastOnce);
    }
    bench_topics(c, "fanout_10k_overlap", &index, &topics);
}

criterion_group!(benches, exact_100k, wildcard_10k, fanout_10k);
criterion_main!(benches);
