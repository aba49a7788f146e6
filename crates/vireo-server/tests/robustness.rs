//! Hostile and awkward clients, from an independent review of the runtime: each test here
//! reproduced a defect before its fix. Sleeps appear only as the deliberate pace of a slow
//! client; the broker's progress is awaited with PINGREQ round trips.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{ErrorKind, Write};
use std::time::{Duration, Instant};

use common::*;
use vireo_codec::{Ack, Bytes, BytesMut, Connect, LastWill, Packet, Publish, QoS, QosPid};

fn rss_mb() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096 / (1024 * 1024)
}

fn qos1(t: &str, id: u16) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QosPid::new(QoS::AtLeastOnce, pid(id)),
        retain: false,
        topic: topic(t),
        properties: Default::default(),
        payload: Bytes::from_static(b"x"),
    })
}

/// Waits until the broker has handled everything `c` sent before (its PINGRESP follows it).
fn sync(c: &mut Client) {
    c.send_raw(&[0xC0, 0x00]);
    loop {
        match c.recv() {
            Some(Packet::PingResp) => return,
            Some(_) => {}
            None => panic!("no PINGRESP"),
        }
    }
}

/// A client that floods PINGREQs and never reads: the broker stops reading it once its replies
/// pass twice `max_output_bytes`, so the client's writes block and broker memory stays flat.
#[test]
fn client_that_never_reads_is_back_pressured_not_buffered() {
    let broker = start_with(|c| {
        c.workers = 1;
        c.max_output_bytes = 64 * 1024;
    });
    let mut c = Client::connect(broker.local_addr(), "flooder");
    let before = rss_mb();
    c.stream.set_nonblocking(true).unwrap();
    let chunk = [0xC0u8, 0x00].repeat(64 * 1024);
    let (mut sent, mut blocked_since) = (0usize, None);
    let deadline = Instant::now() + Duration::from_secs(20);
    // Write until writes have been blocked for a while: the broker stopped reading.
    while blocked_since.is_none_or(|t: Instant| t.elapsed() < Duration::from_millis(500)) {
        assert!(
            Instant::now() < deadline,
            "the broker kept reading ({sent} bytes)"
        );
        match c.stream.write(&chunk) {
            Ok(n) => {
                sent += n;
                blocked_since = None;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                blocked_since.get_or_insert_with(Instant::now);
                std::thread::yield_now();
            }
            Err(e) => panic!("{e}"),
        }
    }
    let grown = rss_mb().saturating_sub(before);
    assert!(
        sent < 64 * 1024 * 1024,
        "broker read {sent} bytes of PINGREQ"
    );
    assert!(grown < 32, "broker RSS grew {grown} MiB");
}

/// Generated client ids never take over a client that chose the same-looking id.
#[test]
fn generated_ids_never_take_over_named_clients() {
    let broker = start();
    let addr = broker.local_addr();
    let mut named = Vec::new();
    for w in 0..2 {
        for n in 1..=20 {
            let id = format!("vireo-{w}-{n}");
            named.push((id.clone(), Client::connect_session(addr, &id, false).0));
        }
    }
    let (_anon, ack) = Client::connect_with(addr, Connect::new(""));
    assert!(matches!(ack, Packet::ConnAck(ref a) if a.code.0 == 0));
    for (id, c) in &mut named {
        sync(c);
        assert!(c.stream.peer_addr().is_ok(), "{id} was closed");
    }
}

/// A throttling scenario: one worker, a window of 2, a watcher of the `will` topic, a slow
/// QoS 1 subscriber (one PUBACK per 200 ms) and a QoS 1 publisher with a Will that outruns it
/// in two bursts, the second sent once the broker has handled the first, so that it meets a
/// backlogged session and the publisher is throttled.
struct Throttled {
    _broker: vireo_server::ServerHandle,
    addr: std::net::SocketAddr,
    watcher: Client,
    publisher: Client,
    acker: std::thread::JoinHandle<()>,
}

fn throttled(keep_alive: u16) -> Throttled {
    let broker = start_with(|c| {
        c.workers = 1;
        c.max_inflight = 2;
    });
    let addr = broker.local_addr();
    let mut watcher = Client::connect(addr, "watcher");
    watcher.subscribe(&[("will", QoS::AtMostOnce)]);
    let mut sub = Client::connect(addr, "slow");
    sub.subscribe(&[("t", QoS::AtLeastOnce)]);
    let mut connect = Connect::new("pub");
    connect.keep_alive = keep_alive;
    connect.will = Some(LastWill {
        topic: topic("will"),
        payload: Bytes::from_static(b"died"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Default::default(),
    });
    let (mut publisher, ack) = Client::connect_with(addr, connect);
    assert!(matches!(ack, Packet::ConnAck(ref a) if a.code.0 == 0));
    for id in 1..=20 {
        publisher.send(&qos1("t", id));
    }
    sync(&mut publisher);
    for id in 21..=40 {
        publisher.send(&qos1("t", id));
    }
    let acker = std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(4);
        while Instant::now() < end {
            if let Some(Packet::Publish(p)) = sub.recv_within(Duration::from_millis(200))
                && let QosPid::AtLeastOnce(id) = p.qos
            {
                std::thread::sleep(Duration::from_millis(200)); // the slow consumer's pace
                sub.send(&Packet::PubAck(Ack::new(id)));
            }
        }
    });
    Throttled {
        _broker: broker,
        addr,
        watcher,
        publisher,
        acker,
    }
}

/// [MQTT-3.1.2-24] a publisher held back by a slow subscriber keeps pinging and must not be
/// timed out (nor its Will published) just because the broker stopped reading it.
#[test]
fn v311_mqtt_3_1_2_24_throttled_publisher_is_not_timed_out() {
    let mut t = throttled(1);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        t.publisher.send_raw(&[0xC0, 0x00]);
        let got = t.watcher.recv_within(Duration::from_millis(300));
        assert!(got.is_none(), "publisher timed out while pinging: {got:?}");
    }
    t.acker.join().unwrap();
}

/// [MQTT-3.1.2-10] a DISCONNECT still waiting unread behind back-pressure when the client
/// reconnects discards the Will: the takeover reads it first.
#[test]
fn v311_mqtt_3_1_2_10_disconnect_before_takeover_discards_will() {
    let mut t = throttled(60);
    // The old socket stays open: closing it with our PUBACKs unread would make its kernel send
    // RST, which may discard the DISCONNECT before the broker reads it (and then the Will is
    // rightly published). The point is a DISCONNECT waiting unread when the takeover comes.
    t.publisher.send_raw(&[0xE0, 0x00]);
    let (_again, ack) = Client::connect_with(t.addr, Connect::new("pub"));
    assert!(matches!(ack, Packet::ConnAck(ref a) if a.code.0 == 0));
    t.watcher.expect_nothing();
    t.acker.join().unwrap();
}

/// A client that both consumes and publishes QoS 1 is never throttled into a stall: its own
/// acknowledgements keep being read.
#[test]
fn consumer_that_publishes_is_not_stalled() {
    let broker = start_with(|c| {
        c.workers = 1;
        c.max_inflight = 4;
    });
    let mut a = Client::connect(broker.local_addr(), "echo");
    a.subscribe(&[("t", QoS::AtLeastOnce)]);
    let mut next = 1u16;
    for _ in 0..20 {
        a.send(&qos1("t", next));
        next += 1;
    }
    let mut received = 0;
    while received < 200 {
        // Each step must come well within the 1 s a stalled session would take to expire.
        match a.recv_within(Duration::from_millis(500)) {
            Some(Packet::Publish(p)) => {
                if let QosPid::AtLeastOnce(id) = p.qos {
                    a.send(&Packet::PubAck(Ack::new(id)));
                }
                received += 1;
                a.send(&qos1("t", next));
                next = next.wrapping_add(1).max(1);
            }
            Some(_) => {}
            None => panic!("stalled after {received} messages"),
        }
    }
}

/// Messages waiting in an offline session's queue are stored compacted: 5,000 one-byte
/// messages interleaved with 16 KiB ones must not pin 5,000 read chunks.
#[test]
fn queued_messages_do_not_pin_read_buffers() {
    let broker = start_with(|c| {
        c.workers = 1;
        c.max_queued_bytes = 1024 * 1024;
    });
    let addr = broker.local_addr();
    let (mut s, _) = Client::connect_session(addr, "offline", false);
    s.subscribe(&[("q", QoS::AtLeastOnce)]);
    s.disconnect();
    let mut p = Client::connect(addr, "pinner");
    let before = rss_mb();
    let mut buf = BytesMut::new();
    let big = Bytes::from(vec![0u8; 16 * 1024]);
    for n in 1..=5000u16 {
        qos1("q", n).encode(p.version, &mut buf).unwrap();
        let mut filler = Publish::new(topic("nobody"), big.clone());
        filler.qos = QosPid::AtMostOnce;
        Packet::Publish(filler).encode(p.version, &mut buf).unwrap();
        if buf.len() > 1 << 20 {
            p.stream.write_all(&buf).unwrap();
            buf.clear();
            // Drain the PUBACKs as we go so the broker never waits on us.
            while let Some(Packet::PubAck(_)) = p.recv_within(Duration::from_millis(1)) {}
        }
    }
    p.stream.write_all(&buf).unwrap();
    sync(&mut p);
    let grown = rss_mb().saturating_sub(before);
    assert!(
        grown < 24,
        "RSS grew {grown} MiB for 5,000 queued 1-byte messages"
    );
}

/// A SUBSCRIBE repeating `#` 100,000 times owes the retained set once, not 100,000 times, and
/// is answered within the usual wait (checking repeats pairwise would take minutes).
#[test]
fn repeated_wildcard_filters_do_not_copy_the_retained_store() {
    let broker = start_with(|c| c.workers = 1);
    let addr = broker.local_addr();
    let mut p = Client::connect(addr, "retainer");
    for n in 0..1000 {
        let mut m = Publish::new(topic(&format!("r/{n}")), Bytes::from_static(b"v"));
        m.retain = true;
        p.send(&Packet::Publish(m));
    }
    sync(&mut p);
    let mut c = Client::connect(addr, "greedy");
    let before = rss_mb();
    let mut body = vec![0x00, 0x01];
    for _ in 0..100_000 {
        body.extend_from_slice(&[0x00, 0x01, b'#', 0x00]);
    }
    let mut pkt = vec![0x82];
    let mut len = body.len();
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        pkt.push(b);
        if len == 0 {
            break;
        }
    }
    pkt.extend_from_slice(&body);
    c.send_raw(&pkt);
    let mut retained = 0;
    loop {
        match c.recv() {
            Some(Packet::SubAck(s)) => assert_eq!(s.codes.len(), 100_000),
            Some(Packet::Publish(m)) => {
                assert!(m.retain);
                retained += 1;
                if retained == 1000 {
                    break;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    c.expect_nothing();
    let grown = rss_mb().saturating_sub(before);
    assert!(grown < 16, "RSS grew {grown} MiB");
}

/// QoS 1 messages a publisher's worker acknowledged and routed to a session on another worker
/// are not dropped for want of queue space: the publisher pauses while too many are in
/// transit, since the target's backlog signal comes only after it handled what was sent. Six
/// publishers (both workers get some) pipeline 400 messages each in one write, into a queue of
/// 64; before the in-transit bound, most of the remote publishers' messages were dropped.
#[test]
fn qos1_routed_across_workers_is_not_dropped_for_queue_space() {
    let broker = start_with(|c| {
        c.workers = 2;
        c.max_inflight = 4;
        c.max_queued_messages = 64;
    });
    let addr = broker.local_addr();
    let mut sub = Client::connect(addr, "transit-sub");
    sub.subscribe(&[("transit/#", QoS::AtLeastOnce)]);
    let (publishers, each) = (6u16, 400u16);
    let mut pubs: Vec<Client> = (0..publishers)
        .map(|p| Client::connect(addr, &format!("transit-pub-{p}")))
        .collect();
    for (p, c) in pubs.iter_mut().enumerate() {
        let mut burst = BytesMut::new();
        for i in 1..=each {
            let mut packet = qos1(&format!("transit/{p}"), i);
            if let Packet::Publish(publish) = &mut packet {
                publish.payload = Bytes::from(i.to_be_bytes().to_vec());
            }
            packet
                .encode(vireo_codec::ProtocolVersion::V311, &mut burst)
                .unwrap();
        }
        c.send_raw(&burst);
    }
    let mut next = vec![1u16; publishers as usize];
    for n in 0..publishers as usize * each as usize {
        let Some(Packet::Publish(p)) = sub.recv() else {
            panic!("delivery {n} never came: {next:?} expected next per publisher");
        };
        if let QosPid::AtLeastOnce(id) = p.qos {
            sub.send(&Packet::PubAck(Ack::new(id)));
        }
        let from: usize = p.topic["transit/".len()..].parse().unwrap();
        let seq = u16::from_be_bytes([p.payload[0], p.payload[1]]);
        assert_eq!(
            seq, next[from],
            "publisher {from}: in order, none missing [MQTT-4.6.0-5]"
        );
        next[from] += 1;
    }
    for c in &mut pubs {
        let mut acks = 0;
        while acks < each {
            match c.recv() {
                Some(Packet::PubAck(_)) => acks += 1,
                other => panic!("expected PUBACK, got {other:?}"),
            }
        }
    }
}

/// PUBLISHes pipelined behind a CONNECT that is handed to the session's home worker are read
/// once a throttle lifts. The adopting worker decodes the pipelined bytes itself; when the
/// first PUBLISH throttles the publisher (a backlogged QoS 1 session), the rest waits in the
/// connection's buffer, and since the first worker had already emptied the socket no readable
/// event will come for it: unless the adoption puts the connection on the `again` list, those
/// PUBLISHes are never decoded. Eight publishers, so that with two workers some are handed
/// over (each one is with probability 1/2).
#[test]
fn pipelined_publishes_behind_a_handed_over_connect_are_read_after_a_throttle() {
    let broker = start_with(|c| {
        c.workers = 2;
        c.max_inflight = 2;
    });
    let addr = broker.local_addr();
    let mut sub = Client::connect(addr, "adopt-sub");
    sub.subscribe(&[("adopt/#", QoS::AtLeastOnce)]);
    // Two in flight and three waiting (more than a window): the subscriber is backlogged,
    // and stays so while it acknowledges nothing.
    let mut feeder = Client::connect(addr, "adopt-feeder");
    for i in 1..=5 {
        feeder.publish("adopt/feed", b"f", QoS::AtLeastOnce, false, i);
    }
    let (publishers, each) = (8u16, 3u16);
    let mut pubs = Vec::new();
    for p in 0..publishers {
        let mut c = Client::open(addr);
        let mut burst = BytesMut::new();
        Packet::Connect(Box::new(Connect::new(format!("adopt-pub-{p}").as_str())))
            .encode(vireo_codec::ProtocolVersion::V311, &mut burst)
            .unwrap();
        for i in 1..=each {
            qos1(&format!("adopt/{p}"), i)
                .encode(vireo_codec::ProtocolVersion::V311, &mut burst)
                .unwrap();
        }
        c.send_raw(&burst);
        pubs.push(c);
    }
    // Each publisher's first PUBLISH was handled (and throttled it) while the subscriber was
    // backlogged.
    for c in &mut pubs {
        assert!(matches!(c.recv(), Some(Packet::ConnAck(a)) if a.code.0 == 0));
        assert!(matches!(c.recv(), Some(Packet::PubAck(a)) if a.packet_id == pid(1)));
    }
    // The subscriber catches up; the throttle lifts and every publisher's rest is read.
    for n in 0..5 + usize::from(publishers * each) {
        let Some(Packet::Publish(p)) = sub.recv() else {
            panic!("delivery {n} never came");
        };
        if let QosPid::AtLeastOnce(id) = p.qos {
            sub.send(&Packet::PubAck(Ack::new(id)));
        }
    }
    for c in &mut pubs {
        for i in 2..=each {
            assert!(matches!(c.recv(), Some(Packet::PubAck(a)) if a.packet_id == pid(i)));
        }
    }
}

/// With a window of one, a backlogged session stops holding publishers back once its queue
/// has drained. The hysteresis cleared only below `window / 2` queued messages, which for a
/// window of one is never: publishers stayed throttled for as long as the consumer kept
/// acknowledging, and resumed only once it had been quiet for the 1 s stall time.
#[test]
fn window_of_one_backlog_clears_once_drained() {
    let broker = start_with(|c| {
        c.workers = 1;
        c.max_inflight = 1;
    });
    let addr = broker.local_addr();
    let mut sub = Client::connect(addr, "w1-sub");
    sub.subscribe(&[("w1", QoS::AtLeastOnce)]);
    let mut publisher = Client::connect(addr, "w1-pub");
    // Three queued behind the one in flight: backlogged.
    let mut burst = BytesMut::new();
    for i in 1..=4 {
        qos1("w1", i)
            .encode(vireo_codec::ProtocolVersion::V311, &mut burst)
            .unwrap();
    }
    publisher.send_raw(&burst);
    for _ in 0..4 {
        match sub.recv() {
            Some(Packet::Publish(p)) => {
                if let QosPid::AtLeastOnce(id) = p.qos {
                    sub.send(&Packet::PubAck(Ack::new(id)));
                }
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    sync(&mut sub); // its last PUBACK is handled: the queue is empty
    // Drained and still progressing: new publishes go through well within the stall time.
    // Two of them: the one that finds the session backlogged is still delivered, the
    // throttle holds back the next.
    let started = Instant::now();
    let mut burst = BytesMut::new();
    for i in [9, 10] {
        qos1("w1", i)
            .encode(vireo_codec::ProtocolVersion::V311, &mut burst)
            .unwrap();
    }
    publisher.send_raw(&burst);
    loop {
        match publisher.recv_within(Duration::from_millis(600)) {
            Some(Packet::PubAck(a)) if a.packet_id == pid(10) => break,
            Some(_) => {}
            None => panic!("publisher still throttled after {:?}", started.elapsed()),
        }
    }
}

/// A QoS 1 round trip between two well-behaved clients: PUBACK to the publisher, the message
/// (acknowledged) to the subscriber.
fn round_trip(publisher: &mut Client, subscriber: &mut Client, id: u16) {
    publisher.publish("echo", b"ping", QoS::AtLeastOnce, false, id);
    let p = subscriber.recv_publish_ack();
    assert_eq!(&p.payload[..], b"ping");
}

/// Slowloris: a client that never finishes a packet (a PUBLISH declaring 1,000,000 bytes that
/// sends 600 KB of them), one that trickles a packet a byte at a time, and one that sends a
/// CONNECT's first byte and no more are each closed once their unfinished packet is older
/// than `packet_timeout_secs`, whatever their keep alive and the CONNECT timeout; a
/// well-behaved client's QoS 1 round trips go on meanwhile.
#[test]
fn unfinished_packets_are_closed_after_packet_timeout() {
    let broker = start_with(|c| {
        c.workers = 1;
        c.packet_timeout_secs = 1;
        c.connect_timeout_secs = 60; // far past WAIT: only the packet limit can close them
        c.max_packet_size = 2 * 1024 * 1024;
    });
    let addr = broker.local_addr();
    let mut subscriber = Client::connect(addr, "sub");
    subscriber.subscribe(&[("echo", QoS::AtLeastOnce)]);
    let mut publisher = Client::connect(addr, "pub");
    round_trip(&mut publisher, &mut subscriber, 1);

    // Keep alive 60 s (90 s of silence allowed), far past WAIT.
    let mut hoarder = Client::connect(addr, "hoarder");
    let mut header = vec![0x30];
    header.extend(vbi_bytes(1_000_000));
    hoarder.send_raw(&header);
    hoarder.send_raw(&vec![0u8; 600 * 1024]);

    let mut half_connect = Raw::open(addr);
    half_connect.send_raw(&[0x10]);

    let mut trickler = Client::connect(addr, "trickler");
    let publish = encode(&qos1("slow/topic/with/a/longer/name", 7));
    let started = Instant::now();
    let mut sent = 0;
    let trickled_off = loop {
        assert!(started.elapsed() < WAIT, "the trickler was never closed");
        trickler.send_raw(&publish[sent..sent + 1]);
        sent += 1;
        assert!(sent < publish.len(), "the whole packet went through");
        // The deliberate pace of a slowloris client: a byte every 200 ms.
        if trickler.closed_within(Duration::from_millis(200), false) {
            break started.elapsed();
        }
        round_trip(&mut publisher, &mut subscriber, 2);
    };
    assert!(
        trickled_off >= Duration::from_millis(900),
        "closed before the packet limit ran out: {trickled_off:?}"
    );
    assert!(hoarder.closed_within(WAIT, false), "the hoarder stays");
    assert!(half_connect.closed(), "the half CONNECT stays");
    round_trip(&mut publisher, &mut subscriber, 3);
}

/// A 5.0 client whose packet stays unfinished is told why before the close: DISCONNECT 0x8D
/// (Keep Alive timeout, "no packet has been received"), as for a silent one [MQTT-3.1.2-24].
#[test]
fn v5_unfinished_packet_gets_disconnect_0x8d() {
    let broker = start_with(|c| c.packet_timeout_secs = 1);
    let mut c = Raw::v5(broker.local_addr(), "slow", &[]);
    c.send_raw(&[0x30, 0x7F, 0x00]); // 127 bytes declared, 1 sent
    let f = c.disconnect_frame();
    assert_eq!(disconnect_reason(&f), 0x8D, "{f:02x?}");
    assert!(c.closed());
}

/// Waits, within [`WAIT`], until `f` holds of the broker's counters.
fn until(stats: &vireo_server::Stats, what: &str, f: impl Fn(&vireo_server::Stats) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f(stats) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2)); // polling a gauge: no event to await
    }
}

/// Slowloris at scale: connections that each hold part of a large PUBLISH are bounded as a
/// whole by `max_unfinished_bytes`, not only one by one by their age. Past the budget the
/// connection whose unfinished packet is oldest goes (5.0: DISCONNECT 0x97 Quota exceeded),
/// the later ones stay, and well-behaved clients' QoS 1 round trips go on.
#[test]
fn v5_unfinished_packets_are_bounded_in_memory_oldest_closed_first() {
    const CHUNK: usize = 300_000;
    let broker = start_with(|c| {
        c.workers = 1;
        c.max_packet_size = 1024 * 1024;
        c.max_unfinished_bytes = 2 * 1024 * 1024;
        c.packet_timeout_secs = 600; // only the budget can close them here
    });
    let addr = broker.local_addr();
    let stats = broker.stats();
    let mut subscriber = Client::connect(addr, "sub");
    subscriber.subscribe(&[("echo", QoS::AtLeastOnce)]);
    let mut publisher = Client::connect(addr, "pub");

    let mut header = vec![0x30];
    header.extend(vbi_bytes(1_000_000));
    let mut hoarders = Vec::new();
    for i in 0..10 {
        let mut h = Raw::v5(addr, &format!("hoarder-{i}"), &[]);
        h.send_raw(&header);
        // Topic "h", no properties, then the payload's first bytes.
        h.send_raw(&[0x00, 0x01, b'h', 0x00]);
        h.send_raw(&vec![0u8; CHUNK - 4]);
        hoarders.push(h);
        // Its bytes are read (counted) or someone was closed for them.
        until(&stats, "the hoarder's bytes to be read", |s| {
            s.unfinished_closed
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0
                || s.unfinished_bytes
                    .load(std::sync::atomic::Ordering::Relaxed)
                    >= CHUNK * hoarders.len()
        });
        round_trip(&mut publisher, &mut subscriber, 1 + i as u16);
        if stats
            .unfinished_closed
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
        {
            break;
        }
    }
    assert!(hoarders.len() < 10, "2 MiB never ran out");
    let held = stats
        .unfinished_bytes
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(held <= 2 * 1024 * 1024, "{held} bytes held past the budget");
    // The first hoarder, the oldest, went, and was told why.
    let f = hoarders[0].disconnect_frame();
    assert_eq!(disconnect_reason(&f), 0x97, "{f:02x?}");
    assert!(hoarders[0].closed());
    // The newest is still there: it can finish its packet (a QoS 0 PUBLISH; the PINGREQ
    // after it is answered).
    let last = hoarders.last_mut().unwrap();
    last.send_raw(&vec![0u8; 1_000_000 - CHUNK]);
    last.send_raw(&[0xC0, 0x00]);
    assert_eq!(
        last.frame(),
        vec![0xD0, 0x00],
        "PINGRESP after the finished packet"
    );
    round_trip(&mut publisher, &mut subscriber, 100);
}

/// Connection floods from one address: past `max_connections_per_ip` open, or
/// `max_connection_rate_per_ip` new per second, a connection is closed before its CONNECT is
/// read (no CONNACK), counted; other addresses, and the clients already in, are served.
#[test]
fn connection_floods_are_bounded_per_source_address() {
    let broker = start_with(|c| c.max_connections_per_ip = 3);
    let addr = broker.local_addr();
    let stats = broker.stats();
    let (flood, other): (std::net::IpAddr, std::net::IpAddr) =
        ("127.0.0.3".parse().unwrap(), "127.0.0.4".parse().unwrap());
    let mut held: Vec<Client> = (0..3)
        .map(|i| Client::connect_from(flood, addr, &format!("flood-{i}")))
        .collect();
    for _ in 0..5 {
        let mut refused = Client::open_from(flood, addr);
        refused.send(&Packet::Connect(Box::new(Connect::new("one-too-many"))));
        assert!(refused.closed_silently(), "no CONNACK past the cap");
    }
    assert_eq!(
        stats
            .refused_per_ip
            .load(std::sync::atomic::Ordering::Relaxed),
        5
    );
    // Another address, and the three already in, go on as before.
    let mut subscriber = Client::connect_from(other, addr, "sub");
    subscriber.subscribe(&[("echo", QoS::AtLeastOnce)]);
    let mut publisher = Client::connect_from(other, addr, "pub");
    round_trip(&mut publisher, &mut subscriber, 1);
    held[0].publish("echo", b"ping", QoS::AtLeastOnce, false, 2);
    assert_eq!(&subscriber.recv_publish_ack().payload[..], b"ping");
    // A connection that ends gives its place back.
    held.pop().unwrap().disconnect();
    held.push(Client::connect_from(flood, addr, "flood-again"));
}

/// The rate limit: with 1 per second, the second connection within the second is refused
/// while the first stays served.
#[test]
fn connection_rate_is_limited_per_source_address() {
    let broker = start_with(|c| c.max_connection_rate_per_ip = 1);
    let addr = broker.local_addr();
    let source: std::net::IpAddr = "127.0.0.5".parse().unwrap();
    let mut first = Client::connect_from(source, addr, "first");
    let mut second = Client::open_from(source, addr);
    second.send(&Packet::Connect(Box::new(Connect::new("second"))));
    assert!(second.closed_silently(), "no CONNACK past the rate");
    first.subscribe(&[("t", QoS::AtMostOnce)]);
    first.publish("t", b"still here", QoS::AtMostOnce, false, 0);
    assert_eq!(&first.recv_publish().payload[..], b"still here");
}

/// One SUBSCRIBE with 100,000 filters: the first `max_subscriptions` are granted, the rest
/// refused one by one (0x80) in one SUBACK of 100,000 codes; the session holds no more than
/// the bound, and other clients are served meanwhile.
#[test]
fn subscribe_with_100000_filters_is_bounded() {
    let broker = start_with(|c| c.max_subscriptions = 1024);
    let addr = broker.local_addr();
    let mut subscriber = Client::connect(addr, "sub");
    subscriber.subscribe(&[("echo", QoS::AtLeastOnce)]);
    let mut publisher = Client::connect(addr, "pub");
    let mut greedy = Client::connect(addr, "greedy");
    let mut body = vec![0x00, 0x01]; // packet id 1
    for i in 0..100_000u32 {
        let f = format!("f/{i}");
        body.extend((f.len() as u16).to_be_bytes());
        body.extend(f.as_bytes());
        body.push(0x00);
    }
    greedy.send_raw(&frame(0x82, &body));
    round_trip(&mut publisher, &mut subscriber, 1);
    match greedy.recv() {
        Some(Packet::SubAck(a)) => {
            assert_eq!(a.codes.len(), 100_000);
            assert!(
                a.codes[..1024].iter().all(|c| c.0 == 0),
                "granted up to the bound"
            );
            assert!(
                a.codes[1024..].iter().all(|c| c.0 == 0x80),
                "refused past it"
            );
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }
    // Still connected and served.
    greedy.publish("f/1", b"mine", QoS::AtMostOnce, false, 0);
    assert_eq!(&greedy.recv_publish().payload[..], b"mine");
}

/// A retained-message flood: past `max_retained_messages` new retained topics are routed but
/// not kept, counted; the store holds exactly its bound, and a topic already stored can still
/// be replaced.
#[test]
fn retained_floods_are_bounded_and_counted() {
    let broker = start_with(|c| c.max_retained_messages = 10);
    let addr = broker.local_addr();
    let stats = broker.stats();
    let mut flooder = Client::connect(addr, "flooder");
    for i in 0..50u16 {
        flooder.publish(&format!("r/{i}"), b"kept?", QoS::AtLeastOnce, true, i + 1);
    }
    flooder.publish("r/0", b"replaced", QoS::AtLeastOnce, true, 100);
    assert_eq!(
        stats
            .retained_refused
            .load(std::sync::atomic::Ordering::Relaxed),
        40
    );
    let mut reader = Client::connect(addr, "reader");
    reader.subscribe(&[("r/#", QoS::AtMostOnce)]);
    let mut got: Vec<String> = (0..10)
        .map(|_| {
            let p = reader.recv_publish();
            format!("{}={}", &*p.topic, String::from_utf8_lossy(&p.payload))
        })
        .collect();
    got.sort();
    assert!(got.contains(&"r/0=replaced".to_owned()), "{got:?}");
    assert!(
        got.iter().all(|t| t.starts_with("r/")
            && t[2..].split('=').next().unwrap().parse::<u16>().unwrap() < 10),
        "{got:?}"
    );
    reader.expect_nothing();
}

/// Floods `n` QoS 0 PUBLISHes of `size`-byte payloads on "flood" in one write, while a quiet
/// client does one QoS 1 round trip on "echo"; returns how long the subscriber took to get
/// them all, checking that none was lost, that they came in order, and that the quiet
/// client's message was not held behind the flood.
fn flood_under_rate_limit(broker: &vireo_server::ServerHandle, n: usize, size: usize) -> Duration {
    let addr = broker.local_addr();
    let mut subscriber = Client::connect(addr, "sub");
    subscriber.subscribe(&[("flood", QoS::AtMostOnce), ("echo", QoS::AtLeastOnce)]);
    let mut flood = Client::connect(addr, "flood");
    let mut burst = BytesMut::new();
    for i in 0..n {
        let mut payload = vec![b'.'; size];
        payload[..8].copy_from_slice(&(i as u64).to_be_bytes());
        Packet::Publish(Publish {
            dup: false,
            qos: QosPid::AtMostOnce,
            retain: false,
            topic: topic("flood"),
            properties: Default::default(),
            payload: Bytes::from(payload),
        })
        .encode(vireo_codec::ProtocolVersion::V311, &mut burst)
        .unwrap();
    }
    let start = Instant::now();
    flood.send_raw(&burst);
    let mut quiet = Client::connect(addr, "quiet");
    quiet.publish("echo", b"ping", QoS::AtLeastOnce, false, 1);
    let (mut next, mut echo_at) = (0u64, None);
    while next < n as u64 || echo_at.is_none() {
        let p = subscriber.recv_publish_ack();
        if &*p.topic == "echo" {
            echo_at = Some(next);
        } else {
            assert_eq!(p.payload[..8], next.to_be_bytes(), "in order, none lost");
            next += 1;
        }
    }
    let elapsed = start.elapsed();
    assert!(
        echo_at.is_some_and(|at| at < n as u64),
        "the quiet client waited for the whole flood"
    );
    elapsed
}

/// `max_publish_rate`: a publisher that sends 400 PUBLISHes at once against a limit of 200
/// per second is throttled, not disconnected: its first 200 (the burst) go at once, the rest
/// at the rate, so the last arrives no sooner than a second later; nothing is lost, and a
/// quiet client is served meanwhile.
#[test]
fn publish_rate_limit_throttles_without_loss() {
    let broker = start_with(|c| c.max_publish_rate = 200);
    let elapsed = flood_under_rate_limit(&broker, 400, 16);
    assert!(
        elapsed >= Duration::from_millis(900),
        "not throttled: {elapsed:?}"
    );
    assert!(
        broker
            .stats()
            .rate_limited
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
}

/// `max_inbound_bytes_rate`: 40 KB sent at once against 20 KB per second takes at least a
/// second past the burst to be read, all of it delivered.
#[test]
fn inbound_bandwidth_limit_throttles_without_loss() {
    let broker = start_with(|c| c.max_inbound_bytes_rate = 20_000);
    let elapsed = flood_under_rate_limit(&broker, 40, 1000);
    assert!(
        elapsed >= Duration::from_millis(900),
        "not throttled: {elapsed:?}"
    );
}

/// A reload (what SIGHUP does) changes `max_connections` and `max_sessions` for what comes
/// next, and keeps the connections already open: lowered to what is open, the next
/// connection is closed at accept and, once one leaves, a CONNECT that needs a new session
/// is refused with CONNACK 0x03.
#[test]
fn reloaded_connection_and_session_limits_apply_to_what_comes_next() {
    let mut config = vireo_server::Config {
        bind: "127.0.0.1:0".parse().unwrap(),
        workers: 2,
        pin_workers: false,
        ..Default::default()
    };
    let broker = vireo_server::Server::start(config.clone()).unwrap();
    let addr = broker.local_addr();
    let mut a = Client::connect(addr, "a");
    let mut b = Client::connect(addr, "b");
    config.max_connections = 2;
    config.max_sessions = 2;
    broker.reload_limits(&config);
    let mut third = Client::open(addr);
    third.send(&Packet::Connect(Box::new(Connect::new("c"))));
    assert!(third.closed_silently(), "past max_connections");
    // The two open ones are untouched.
    a.subscribe(&[("x", QoS::AtMostOnce)]);
    b.publish("x", b"still", QoS::AtMostOnce, false, 1);
    assert_eq!(&a.recv_publish().payload[..], b"still");
    // A connection slot frees, but the two sessions still fill max_sessions ("b" is clean
    // and ends with its connection, so keep a persistent one instead).
    let stats = broker.stats();
    let down_to_one = || {
        let deadline = Instant::now() + WAIT;
        while stats.connections.load(std::sync::atomic::Ordering::Relaxed) > 1 {
            assert!(Instant::now() < deadline, "a connection never closed");
            std::thread::yield_now();
        }
    };
    b.disconnect();
    down_to_one();
    let (persistent, _) = Client::connect_session(addr, "p", false);
    persistent.drop_connection();
    down_to_one();
    let (mut refused, ack) = Client::connect_with(addr, Connect::new("d"));
    assert!(
        matches!(ack, Packet::ConnAck(ref c) if c.code.0 == 0x03),
        "past max_sessions: {ack:?}"
    );
    assert!(refused.closed_silently());
}
