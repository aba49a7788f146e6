//! Codec benchmarks: PUBLISH decode and encode (64-byte and 1 KiB payloads, QoS 1) and topic
//! matching. Every bench handles one packet (or one match) per iteration and reports
//! `Throughput::Elements(1)`, so criterion prints packets per second.
//!
//! Run: `cargo bench -p vireo-benches --bench codec -- --warm-up-time 1 --measurement-time 3`.
//! Goal (codec issue): at least 20 million small packets per second decoded and encoded on one
//! core.

use std::hint::black_box;
use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vireo_codec::{BytesMut, Packet, ProtocolVersion, Publish, QosPid, TopicName, topic_matches};

const VERSION: ProtocolVersion = ProtocolVersion::V311;
const MAX_PACKET: usize = 1 << 20;

/// Packets decoded per refill of the read buffer: enough that the refill (not timed) and the one
/// allocation when the buffer first turns shared are noise, small enough that a 1 KiB chunk stays
/// around 10 MiB.
const PACKETS_PER_CHUNK: u64 = 10_000;

fn publish(payload_len: usize) -> Publish {
    Publish {
        qos: QosPid::AtLeastOnce(NonZeroU16::MIN),
        ..Publish::new(
            TopicName::try_from("sensors/building-7/floor-3/room-12/temp").expect("valid topic"),
            vec![0xA5; payload_len],
        )
    }
}

/// Decodes `iters` copies of `frame` from read buffers filled ahead of time, timing only the
/// decoding: like a server that read a burst of packets and now decodes them in place.
fn decode_iters(frame: &[u8], iters: u64) -> Duration {
    let mut elapsed = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(PACKETS_PER_CHUNK);
        let mut buf = BytesMut::with_capacity(frame.len() * n as usize);
        for _ in 0..n {
            buf.extend_from_slice(frame);
        }
        let start = Instant::now();
        for _ in 0..n {
            let packet = vireo_codec::decode(&mut buf, VERSION, MAX_PACKET);
            black_box(&packet);
        }
        elapsed += start.elapsed();
        left -= n;
    }
    elapsed
}

fn bench_codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(1));

    for (name, payload_len) in [("64B", 64), ("1KiB", 1024)] {
        let p = publish(payload_len);
        let packet = Packet::Publish(p.clone());
        let mut frame = BytesMut::new();
        packet.encode(VERSION, &mut frame).expect("encodes");

        group.bench_function(format!("decode_publish_qos1/{name}"), |b| {
            b.iter_custom(|iters| decode_iters(&frame, iters));
        });

        // Packet::encode: the whole packet, payload copied, into a write buffer that is reused.
        let mut out = BytesMut::with_capacity(2 * frame.len());
        group.bench_function(format!("encode_publish_qos1/{name}"), |b| {
            b.iter(|| {
                out.clear();
                black_box(&packet)
                    .encode(VERSION, &mut out)
                    .expect("encodes");
                black_box(&out);
            });
        });

        // Publish::encode_header + payload: how a fan-out writes each subscriber's copy.
        group.bench_function(format!("encode_header_plus_payload/{name}"), |b| {
            b.iter(|| {
                out.clear();
                let p = black_box(&p);
                p.encode_header(VERSION, &mut out).expect("encodes");
                out.extend_from_slice(&p.payload);
                black_box(&out);
            });
        });
    }

    // Five-level topic against a five-level filter with both wildcards.
    let filter = "sensors/+/floor-3/room-12/#";
    let topic = "sensors/building-7/floor-3/room-12/temp";
    assert!(topic_matches(filter, topic));
    group.bench_function("topic_matches/5_levels_plus_and_hash", |b| {
        b.iter(|| topic_matches(black_box(filter), black_box(topic)));
    });

    group.finish();
}

criterion_group!(benches, bench_codec);
criterion_main!(benches);
