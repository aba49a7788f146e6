//! Many connections and slow consumers.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::thread;

use common::*;
use vireo_codec::{Ack, Bytes, BytesMut, Packet, Publish, QoS, QosPid};

/// 1,000 subscribers and 1,000 publishers (2,000 connections over two workers, so most
/// publishes cross workers): every QoS 1 message arrives, once, in order.
#[test]
fn two_thousand_connections_qos1_nothing_lost() {
    const PAIRS: usize = 1000;
    const PER_PUBLISHER: u16 = 10;
    let broker = start();
    let addr = broker.local_addr();
    let mut subs: Vec<Client> = (0..PAIRS)
        .map(|i| {
            let mut s = Client::connect(addr, &format!("ls-{i}"));
            assert_eq!(
                s.subscribe(&[(&format!("load/{i}"), QoS::AtLeastOnce)]),
                vec![1]
            );
            s
        })
        .collect();
    let mut pubs: Vec<Client> = (0..PAIRS)
        .map(|i| Client::connect(addr, &format!("lp-{i}")))
        .collect();
    for (i, p) in pubs.iter_mut().enumerate() {
        let mut wire = BytesMut::new();
        for n in 1..=PER_PUBLISHER {
            Packet::Publish(Publish {
                dup: false,
                qos: QosPid::AtLeastOnce(pid(n)),
                retain: false,
                topic: topic(&format!("load/{i}")),
                properties: Default::default(),
                payload: Bytes::copy_from_slice(&n.to_be_bytes()),
            })
            .encode(p.version, &mut wire)
            .unwrap();
        }
        p.send_raw(&wire);
    }
    for p in &mut pubs {
        for n in 1..=PER_PUBLISHER {
            assert!(matches!(p.recv(), Some(Packet::PubAck(a)) if a.packet_id == pid(n)));
        }
    }
    for s in &mut subs {
        for n in 1..=PER_PUBLISHER {
            let got = s.recv_publish_ack();
            assert_eq!(&got.payload[..], &n.to_be_bytes(), "in order, none lost");
        }
    }
    assert_eq!(broker.stats().dropped_queued.load(Ordering::Relaxed), 0);
    assert_eq!(
        broker.stats().connections.load(Ordering::Relaxed),
        2 * PAIRS
    );
}

fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// One subscriber stops reading: the other still receives every message, the broker drops
/// (and counts) QoS 0 for the stalled one, and memory stays near the configured output
/// limit instead of growing with the 200 MB published.
#[test]
fn slow_consumer_does_not_hurt_fast_one_and_memory_is_bounded() {
    const N: usize = 100_000;
    const SIZE: usize = 2048;
    let broker = start_with(|c| c.max_output_bytes = 4 * 1024 * 1024);
    let addr = broker.local_addr();
    let mut stalled = Client::connect(addr, "stalled");
    stalled.subscribe(&[("firehose", QoS::AtMostOnce)]);
    let mut fast = Client::connect(addr, "fast");
    fast.subscribe(&[("firehose", QoS::AtLeastOnce)]);
    let rss_before = rss_bytes();
    let reader = thread::spawn(move || {
        let mut count = 0;
        while count < N {
            let got = fast.recv_publish();
            if let QosPid::AtLeastOnce(id) = got.qos {
                fast.send(&Packet::PubAck(Ack::new(id)));
            }
            assert_eq!(got.payload.len(), SIZE);
            count += 1;
        }
        fast
    });
    let mut publisher = Client::connect(addr, "firehose-pub");
    let payload = Bytes::from(vec![7u8; SIZE]);
    let mut wire = BytesMut::new();
    let mut peak = 0;
    for chunk in 0..N / 1000 {
        wire.clear();
        for n in 0..1000 {
            let id = ((chunk * 1000 + n) % 60_000 + 1) as u16;
            Packet::Publish(Publish {
                dup: false,
                qos: QosPid::AtLeastOnce(pid(id)),
                retain: false,
                topic: topic("firehose"),
                properties: Default::default(),
                payload: payload.clone(),
            })
            .encode(publisher.version, &mut wire)
            .unwrap();
        }
        publisher.send_raw(&wire);
        for _ in 0..1000 {
            assert!(matches!(publisher.recv(), Some(Packet::PubAck(_))));
        }
        peak = peak.max(rss_bytes());
    }
    let fast = reader.join().unwrap();
    let grown = peak.saturating_sub(rss_before);
    let dropped = broker.stats().dropped_qos0.load(Ordering::Relaxed);
    assert!(
        dropped > 0,
        "the stalled subscriber's QoS 0 copies were dropped"
    );
    assert!(
        grown < 64 * 1024 * 1024,
        "memory grew {} MiB while 200 MB went through; the output limit is 4 MiB",
        grown >> 20
    );
    drop((fast, stalled));
}
