//! A client that publishes as fast as it can to a topic with 10,000 subscribers that never
//! read: the broker's memory stays within its output bounds, the flooder is served, and a
//! well-behaved client's QoS 1 round trips go on throughout.
//!
//! The broker runs as its own process (the `vireo` binary): 10,000 subscribers are 10,000
//! file descriptors on each side, and one process here may hold 20,000.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use vireo_codec::{BytesMut, Connect, Packet, QoS, Subscribe, SubscriptionOptions};

const BIN: &str = env!("CARGO_BIN_EXE_vireo");
const SUBSCRIBERS: usize = 10_000;
/// Per subscriber, what the broker may queue for its socket.
const MAX_OUTPUT: usize = 16 * 1024;
/// QoS 1 round trips the quiet client makes during the flood.
const ROUND_TRIPS: u16 = 8;

struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_mib(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<usize>()
        .unwrap()
        / 1024
}

/// CONNECT and SUBSCRIBE to "flood", sent together; the CONNACK and SUBACK are read later.
fn subscriber_bytes(i: usize) -> Vec<u8> {
    let mut buf = BytesMut::new();
    for p in [
        Packet::Connect(Box::new(Connect::new(format!("s{i}")))),
        Packet::Subscribe(Subscribe {
            packet_id: pid(1),
            properties: Default::default(),
            filters: vec![("flood".into(), SubscriptionOptions::qos(QoS::AtMostOnce))],
        }),
    ] {
        p.encode(vireo_codec::ProtocolVersion::V311, &mut buf)
            .unwrap();
    }
    buf.to_vec()
}

/// A connection from this process's own loopback source address (127.x.y.2, from the
/// process id), so that 10,000 connections do not compete for ephemeral ports with other
/// tests' (or benchmarks') connections still in TIME_WAIT on 127.0.0.1.
fn connect_from_fresh_address(addr: SocketAddr) -> TcpStream {
    let id = std::process::id();
    let source = std::net::Ipv4Addr::new(127, (id >> 8) as u8, id as u8, 2);
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((source, 0)).into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    socket.into()
}

#[test]
fn publisher_flooding_10000_silent_subscribers_does_not_hurt_a_quiet_client() {
    // This process holds one side of every connection; the broker inherits the limit.
    let files = rlimit::increase_nofile_limit(u64::MAX).unwrap();
    assert!(
        files > SUBSCRIBERS as u64 + 200,
        "needs an open-files limit above {SUBSCRIBERS} (ulimit -n), have {files}"
    );
    let config = std::env::temp_dir().join(format!("vireo-flood-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        format!(
            "bind = \"127.0.0.1:0\"\nworkers = 2\npin_workers = false\n\
             max_output_bytes = {MAX_OUTPUT}\n"
        ),
    )
    .unwrap();
    let workdir = tempfile::tempdir().unwrap(); // its ./vireo-data, of its own
    let mut child = Command::new(BIN)
        .current_dir(workdir.path())
        .args([
            "--config",
            config.to_str().unwrap(),
            "--log-level",
            "warn,vireo_server::server=info",
        ])
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let port = listening_port(child.stderr.take().unwrap());
    let broker = Broker(child);
    let _ = std::fs::remove_file(&config);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let pid = broker.0.id();
    let rss_idle = rss_mib(pid);

    // 10,000 subscribers, pipelined, then each one's CONNACK and SUBACK (9 bytes).
    let mut subscribers: Vec<TcpStream> = (0..SUBSCRIBERS)
        .map(|i| {
            let mut s = connect_from_fresh_address(addr);
            s.write_all(&subscriber_bytes(i)).unwrap();
            s
        })
        .collect();
    for s in &mut subscribers {
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut acks = [0u8; 9];
        s.read_exact(&mut acks).unwrap();
        assert_eq!(
            acks,
            [0x20, 2, 0, 0, 0x90, 3, 0, 1, 0],
            "CONNACK 0, SUBACK QoS 0"
        );
    }

    // The quiet pair.
    let mut echo_sub = Client::connect(addr, "echo-sub");
    echo_sub.subscribe(&[("echo", QoS::AtLeastOnce)]);
    let mut echo_pub = Client::connect(addr, "echo-pub");

    // The flooder: 256-byte QoS 0 PUBLISHes as fast as the broker reads them, until told to
    // stop (or 60 s at most).
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut flooder = Client::connect(addr, "flooder");
    let flood = {
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        let mut stream = flooder.stream.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut batch = BytesMut::new();
            for _ in 0..64 {
                Packet::Publish(vireo_codec::Publish {
                    dup: false,
                    qos: vireo_codec::QosPid::AtMostOnce,
                    retain: false,
                    topic: topic("flood"),
                    properties: Default::default(),
                    payload: vireo_codec::Bytes::from(vec![b'x'; 256]),
                })
                .encode(vireo_codec::ProtocolVersion::V311, &mut batch)
                .unwrap();
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                if stream.write_all(&batch).is_err() {
                    return;
                }
                sent.fetch_add(64, Ordering::Relaxed);
            }
        })
    };

    // The flood under way first (its thread may not have run yet on a loaded machine):
    // the broker has taken some batches, so it is reading them.
    let started = Instant::now();
    while sent.load(Ordering::Relaxed) < 4 * 64 {
        assert!(started.elapsed() < WAIT, "the flood did not start");
        std::thread::yield_now();
    }

    // Round trips while the flood runs: each within the usual deadline (before the fix in
    // `Worker::read_deferred`, the third waited for the whole flood), none lost.
    let mut worst = Duration::ZERO;
    let mut rss_peak = 0;
    for id in 1..=ROUND_TRIPS {
        let start = Instant::now();
        echo_pub.publish("echo", b"ping", QoS::AtLeastOnce, false, id);
        assert_eq!(&echo_sub.recv_publish_ack().payload[..], b"ping");
        worst = worst.max(start.elapsed());
        rss_peak = rss_peak.max(rss_mib(pid));
    }
    stop.store(true, Ordering::Relaxed);
    let flooded = sent.load(Ordering::Relaxed);
    // The flooder is still connected (the broker sends it nothing, so a read would block).
    flooder.stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    assert!(
        matches!(flooder.stream.read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the flooder was cut off"
    );
    // Each subscriber may have its output bound queued in the broker; the rest is dropped
    // (QoS 0), not buffered.
    let bound = rss_idle + SUBSCRIBERS * (MAX_OUTPUT + 4096) / (1024 * 1024) + 64;
    eprintln!(
        "flooded {flooded} messages to {SUBSCRIBERS} subscribers; worst round trip \
         {worst:?}; broker RSS {rss_idle} MiB idle, {rss_peak} MiB peak (bound {bound})"
    );
    assert!(flooded >= 64, "the flood ran");
    assert!(
        rss_peak <= bound,
        "broker RSS {rss_peak} MiB past {bound} MiB"
    );
    // Stopping the broker ends the flooder's blocked write.
    drop(broker);
    flood.join().unwrap();
    drop(subscribers);
}
