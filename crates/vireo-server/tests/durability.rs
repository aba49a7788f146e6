//! `persistence = "async"`: what Vireo keeps in `data_dir` across a restart, and how it
//! treats a directory it cannot use or files a crash left damaged. (The store's own format
//! is tested in `vireo_broker::store`.)
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use vireo_codec::{Packet, Property, QoS, QosPid};
use vireo_server::{Config, Persistence, Server, ServerHandle, StartError};

fn config(dir: &Path) -> Config {
    Config {
        bind: "127.0.0.1:0".parse().unwrap(),
        workers: 2,
        pin_workers: false,
        persistence: Persistence::Async,
        data_dir: dir.to_owned(),
        ..Config::default()
    }
}

fn start_in(dir: &Path) -> ServerHandle {
    Server::start(config(dir)).expect("broker starts")
}

/// The retained messages of `filter`, as a new subscriber gets them: (topic, payload).
fn retained(addr: std::net::SocketAddr, filter: &str, n: usize) -> Vec<(String, Vec<u8>)> {
    let mut c = Client::connect_v5(addr, "reader", &[]);
    c.subscribe(&[(filter, QoS::AtLeastOnce)]);
    let mut got: Vec<_> = (0..n)
        .map(|_| {
            let p = c.recv_publish_ack();
            assert!(p.retain, "[MQTT-3.3.1-8] sent with RETAIN set");
            (p.topic.to_string(), p.payload.to_vec())
        })
        .collect();
    c.expect_nothing();
    got.sort();
    got
}

/// A configuration file for the binary in `dir`, persisting to `dir/data`, with `extra`
/// lines: (the file's path, the data directory).
fn binary_config(dir: &Path, extra: &str) -> (String, PathBuf) {
    binary_config_in_mode(dir, "async", extra)
}

/// [`binary_config`] with `persistence = mode`.
fn binary_config_in_mode(dir: &Path, mode: &str, extra: &str) -> (String, PathBuf) {
    let conf = dir.join("vireo.toml");
    let data = dir.join("data");
    let text = format!(
        "bind = \"127.0.0.1:0\"\npersistence = \"{mode}\"\ndata_dir = {:?}\n{extra}",
        data.display().to_string()
    );
    std::fs::write(&conf, text).unwrap();
    (conf.to_str().unwrap().to_owned(), data)
}

fn segment(dir: &Path) -> PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    segs.pop().unwrap()
}

#[test]
fn v5_retained_messages_survive_a_restart_with_their_properties() {
    let dir = tempfile::tempdir().unwrap();
    {
        let broker = start_in(dir.path());
        let mut p = Client::connect_v5(broker.local_addr(), "pub", &[]);
        p.publish("kept/a", b"first", QoS::AtLeastOnce, true, 1);
        p.publish("kept/b", b"second", QoS::AtMostOnce, true, 0);
        p.publish("kept/gone", b"x", QoS::AtLeastOnce, true, 2);
        // [MQTT-3.3.1-10] an empty retained payload removes it, on disk too.
        p.publish("kept/gone", b"", QoS::AtLeastOnce, true, 3);
        p.publish("kept/a", b"replaced", QoS::AtLeastOnce, true, 4);
        p.publish("kept/a", b"latest", QoS::AtLeastOnce, true, 5);
        broker.shutdown();
    }
    let broker = start_in(dir.path());
    assert_eq!(
        retained(broker.local_addr(), "kept/#", 2),
        [
            ("kept/a".to_owned(), b"latest".to_vec()),
            ("kept/b".to_owned(), b"second".to_vec())
        ]
    );
    broker.shutdown();

    // Properties and what is left of the expiry [MQTT-3.3.2-6] come back too.
    let dir = tempfile::tempdir().unwrap();
    {
        let broker = start_in(dir.path());
        let mut p = Client::connect_v5(broker.local_addr(), "pub", &[]);
        p.send_publish(
            "props",
            b"p",
            QosPid::AtLeastOnce(pid(1)),
            true,
            &[
                Property::ContentType("text/plain".into()),
                Property::UserProperty("site".into(), "7".into()),
                Property::MessageExpiryInterval(3600),
            ],
        );
        assert!(matches!(p.recv(), Some(Packet::PubAck(_))));
        broker.shutdown();
    }
    let broker = start_in(dir.path());
    let mut c = Client::connect_v5(broker.local_addr(), "reader", &[]);
    c.subscribe(&[("props", QoS::AtLeastOnce)]);
    let got = c.recv_publish_ack();
    let props: Vec<_> = got.properties.iter().collect();
    assert!(
        props.contains(&Property::ContentType("text/plain".into())),
        "{props:?}"
    );
    assert!(props.contains(&Property::UserProperty("site".into(), "7".into())));
    let left = props.iter().find_map(|p| match p {
        Property::MessageExpiryInterval(n) => Some(*n),
        _ => None,
    });
    assert!(left.is_some_and(|n| n <= 3600 && n > 3500), "{left:?}");
}

#[test]
fn sys_topics_are_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut c = config(dir.path());
        c.sys_interval = 1;
        let broker = Server::start(c).unwrap();
        let mut s = Client::connect(broker.local_addr(), "sys");
        s.subscribe(&[("$SYS/broker/version", QoS::AtMostOnce)]);
        s.recv_publish();
        broker.shutdown();
    }
    // Started without $SYS: nothing of the last run's comes back.
    let mut c = config(dir.path());
    c.sys_interval = 0;
    let broker = Server::start(c).unwrap();
    let mut s = Client::connect(broker.local_addr(), "sys");
    s.subscribe(&[("$SYS/#", QoS::AtMostOnce)]);
    s.expect_nothing();
}

#[test]
fn a_second_broker_on_the_same_data_dir_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let _first = start_in(dir.path());
    let err = Server::start(config(dir.path())).unwrap_err();
    assert!(matches!(err, StartError::Store(_)), "{err}");
    assert!(err.to_string().contains("in use"), "{err}");
}

#[test]
fn an_unusable_data_dir_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let err = Server::start(config(&file)).unwrap_err();
    assert!(err.to_string().contains("a-file"), "{err}");
}

/// A crash mid-write leaves a torn or damaged tail: Vireo starts, keeps every intact record,
/// and drops (and logs) the rest.
#[test]
fn a_damaged_store_starts_with_every_intact_record() {
    let dir = tempfile::tempdir().unwrap();
    {
        let broker = start_in(dir.path());
        let mut p = Client::connect(broker.local_addr(), "pub");
        for (i, t) in ["d/1", "d/2", "d/3"].iter().enumerate() {
            p.publish(t, t.as_bytes(), QoS::AtLeastOnce, true, i as u16 + 1);
        }
        broker.shutdown();
    }
    let seg = segment(dir.path());
    let mut data = std::fs::read(&seg).unwrap();
    let last = data.len() - 2;
    data[last] ^= 0xFF; // a byte of the last record's payload
    std::fs::write(&seg, &data).unwrap();
    let broker = start_in(dir.path());
    assert_eq!(
        retained(broker.local_addr(), "d/#", 2),
        [
            ("d/1".to_owned(), b"d/1".to_vec()),
            ("d/2".to_owned(), b"d/2".to_vec())
        ]
    );
    broker.shutdown();

    // Cut in the middle of a record: the same.
    let seg = segment(dir.path());
    let data = std::fs::read(&seg).unwrap();
    std::fs::write(&seg, &data[..data.len() - 5]).unwrap();
    let broker = start_in(dir.path());
    assert_eq!(retained(broker.local_addr(), "d/#", 1).len(), 1);
}

/// The broker killed (SIGKILL, no shutdown): what reached the store's thread is in the page
/// cache, so it comes back.
#[test]
fn retained_messages_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (conf, data) = binary_config(dir.path(), "");
    let mut broker = Broker::spawn(&["--config", &conf]);
    let addr = broker.addr();
    let mut p = Client::connect(addr, "pub");
    p.publish("crash/a", b"kept", QoS::AtLeastOnce, true, 1);
    // Written by the store thread once it has it: wait for the bytes, not for a time.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(&data)
        .unwrap()
        .filter_map(Result::ok)
        .all(|e| {
            e.path().extension().is_none_or(|x| x != "seg") || e.metadata().unwrap().len() == 0
        })
    {
        assert!(std::time::Instant::now() < deadline, "nothing written");
        std::thread::yield_now();
    }
    broker.child.kill().unwrap(); // SIGKILL
    broker.child.wait().unwrap();
    let broker = Broker::spawn(&["--config", &conf]);
    let mut c = Client::connect(broker.addr(), "reader");
    c.subscribe(&[("crash/#", QoS::AtLeastOnce)]);
    let got = c.recv_publish_ack();
    assert_eq!(&got.payload[..], b"kept");
}

/// [MQTT-3.1.2-4] a 3.1.1 persistent session (Clean Session 0) and its subscriptions come
/// back after a restart: [MQTT-3.2.2-2] Session Present, and messages published while its
/// client is away wait for it. A clean session is never stored; an unsubscribed filter stays
/// gone.
#[test]
fn v311_a_persistent_session_and_its_subscriptions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let broker = start_in(dir.path());
        let addr = broker.local_addr();
        let (mut c, present) = Client::connect_session(addr, "keeper", false);
        assert!(!present);
        c.subscribe(&[("s/#", QoS::AtLeastOnce), ("u/#", QoS::AtLeastOnce)]);
        c.unsubscribe(2, &["u/#"]);
        c.disconnect();
        let (mut t, _) = Client::connect_session(addr, "transient", true);
        t.subscribe(&[("s/#", QoS::AtLeastOnce)]);
        t.disconnect();
        broker.shutdown();
    }
    let broker = start_in(dir.path());
    let addr = broker.local_addr();
    let mut p = Client::connect(addr, "pub");
    p.publish("s/x", b"for keeper", QoS::AtLeastOnce, false, 1);
    p.publish("u/y", b"unsubscribed", QoS::AtLeastOnce, false, 2);
    let (mut c, present) = Client::connect_session(addr, "keeper", false);
    assert!(
        present,
        "[MQTT-3.2.2-2] the session is back after the restart"
    );
    let got = c.recv_publish_ack();
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("s/x", &b"for keeper"[..])
    );
    c.expect_nothing();
    let (_, present) = Client::connect_session(addr, "transient", false);
    assert!(!present, "a clean session is not stored");
}

/// A session its client ends (Clean Session 1, as 5.0 Clean Start or Session Expiry 0) is
/// removed from the store too.
#[test]
fn a_session_ended_by_its_client_is_not_brought_back() {
    let dir = tempfile::tempdir().unwrap();
    {
        let broker = start_in(dir.path());
        let addr = broker.local_addr();
        let (mut c, _) = Client::connect_session(addr, "ends", false);
        c.subscribe(&[("e/#", QoS::AtLeastOnce)]);
        c.disconnect();
        // Clean Session 1 discards the stored session [MQTT-3.1.2-6].
        let (c, present) = Client::connect_session(addr, "ends", true);
        assert!(!present);
        c.disconnect();
        broker.shutdown();
    }
    let broker = start_in(dir.path());
    let (_, present) = Client::connect_session(broker.local_addr(), "ends", false);
    assert!(!present, "discarded on disk too");
}

/// Restarted with a lower `max_retained_messages`, the stored messages over it are dropped
/// from the store too: raising the limit again does not bring back what was not served.
#[test]
fn retained_messages_over_a_lowered_limit_are_dropped_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let with_limit = |n: usize| {
        let mut c = config(dir.path());
        c.max_retained_messages = n;
        Server::start(c).unwrap()
    };
    {
        let broker = with_limit(10);
        let mut p = Client::connect(broker.local_addr(), "pub");
        for i in 0..5u16 {
            p.publish(&format!("l/{i}"), b"x", QoS::AtLeastOnce, true, i + 1);
        }
        broker.shutdown();
    }
    with_limit(2).shutdown();
    let broker = with_limit(10);
    assert_eq!(retained(broker.local_addr(), "l/#", 2).len(), 2);
}

/// The store on the metrics endpoint: its records, bytes and writes.
#[test]
fn the_store_shows_on_the_metrics_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.metrics_bind = Some("127.0.0.1:0".parse().unwrap());
    let broker = Server::start(c).unwrap();
    let mut p = Client::connect(broker.local_addr(), "pub");
    p.publish("m/1", b"x", QoS::AtLeastOnce, true, 1);
    p.publish("m/2", b"y", QoS::AtLeastOnce, true, 2);
    // Written by the store's thread when it gets them: wait for the gauge, with a deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let (_, body) = http_get(broker.metrics_addr().unwrap(), "/metrics");
        if body.contains("vireo_store_records 2") {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        std::thread::yield_now();
    };
    assert!(
        metrics.contains("vireo_store_write_errors_total 0"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("vireo_store_commits_total 0\n"),
        "{metrics}"
    );
    assert!(!metrics.contains("vireo_store_disk_bytes 0\n"), "{metrics}");
}

/// SIGTERM: the broker stops its store after its workers, so everything they changed is
/// written and synced before it exits 0.
#[test]
fn sigterm_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (conf, _) = binary_config(dir.path(), "sync_interval_ms = 60000\n");
    let mut broker = Broker::spawn(&["--config", &conf]);
    let addr = broker.addr();
    let (mut s, _) = Client::connect_session(addr, "sub", false);
    s.subscribe(&[("t/#", QoS::AtLeastOnce)]);
    s.disconnect();
    let mut p = Client::connect(addr, "pub");
    for i in 0..50u16 {
        p.publish(&format!("t/{i}"), b"v", QoS::AtLeastOnce, true, i + 1);
    }
    let pid = broker.child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(broker.child.wait().unwrap().success(), "exit 0 on SIGTERM");
    let broker = Broker::spawn(&["--config", &conf]);
    let addr = broker.addr();
    let (mut s, present) = Client::connect_session(addr, "sub", false);
    assert!(present, "the session is back");
    for _ in 0..50 {
        s.recv_publish_ack(); // with the 50 messages queued for it
    }
    s.expect_nothing();
    let mut c = Client::connect(addr, "reader");
    c.subscribe(&[("t/#", QoS::AtLeastOnce)]);
    for _ in 0..50 {
        c.recv_publish_ack();
    }
    c.expect_nothing();
}

/// The README's run command, `vireo` with no configuration, keeps retained messages and
/// persistent sessions (in `./vireo-data`) across a restart.
#[test]
fn the_binary_keeps_its_state_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--bind", "127.0.0.1:0", "--workers", "1"];
    let mut broker = Broker::spawn_in(dir.path(), &args);
    let addr = broker.addr();
    let (mut s, _) = Client::connect_session(addr, "default-sub", false);
    s.subscribe(&[("d/#", QoS::AtLeastOnce)]);
    s.disconnect();
    let mut p = Client::connect(addr, "default-pub");
    p.publish("d/kept", b"retained", QoS::AtLeastOnce, true, 1);
    std::process::Command::new("kill")
        .args(["-TERM", &broker.child.id().to_string()])
        .status()
        .unwrap();
    assert!(broker.child.wait().unwrap().success());
    assert!(dir.path().join("vireo-data").is_dir(), "in ./vireo-data");
    let broker = Broker::spawn_in(dir.path(), &args);
    let addr = broker.addr();
    let (mut s, present) = Client::connect_session(addr, "default-sub", false);
    assert!(present, "the session is back");
    let got = s.recv_publish_ack();
    assert_eq!(
        &got.payload[..],
        b"retained",
        "queued for it while it was away"
    );
    s.expect_nothing();
    assert_eq!(
        retained(addr, "d/#", 1),
        [("d/kept".to_owned(), b"retained".to_vec())]
    );
}

/// Publishes `n` QoS `qos` messages `q/0`.. with payloads `0`.., each acknowledged.
fn publish_numbered(addr: std::net::SocketAddr, qos: QoS, n: u16) {
    let mut p = Client::connect(addr, "numbered-pub");
    for i in 0..n {
        p.publish(
            &format!("q/{i}"),
            i.to_string().as_bytes(),
            qos,
            false,
            i + 1,
        );
    }
    p.disconnect();
}

/// [MQTT-3.1.2-5] QoS 1 and 2 messages queued for an offline persistent session are still
/// there after a restart, in order, once each.
#[test]
fn v311_messages_queued_for_an_offline_session_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let broker = start_in(dir.path());
        let addr = broker.local_addr();
        let (mut c, _) = Client::connect_session(addr, "away", false);
        c.subscribe(&[("q/#", QoS::ExactlyOnce)]);
        c.disconnect();
        publish_numbered(addr, QoS::AtLeastOnce, 20);
        publish_numbered(addr, QoS::ExactlyOnce, 5);
        broker.shutdown();
    }
    let broker = start_in(dir.path());
    let (mut c, present) = Client::connect_session(broker.local_addr(), "away", false);
    assert!(present);
    let mut got = Vec::new();
    for _ in 0..25 {
        let p = c.recv_publish_ack();
        assert!(!p.dup, "never sent before: no DUP");
        got.push((p.qos.qos(), String::from_utf8(p.payload.to_vec()).unwrap()));
    }
    c.expect_nothing();
    let want: Vec<_> = (0..20)
        .map(|i| (QoS::AtLeastOnce, i.to_string()))
        .chain((0..5).map(|i| (QoS::ExactlyOnce, i.to_string())))
        .collect();
    assert_eq!(got, want, "[MQTT-4.6.0-2] in order, once each");
    c.disconnect(); // once the broker has taken the last acknowledgement
    // Acknowledged: gone from the store as well.
    broker.shutdown();
    let broker = start_in(dir.path());
    let (mut c, present) = Client::connect_session(broker.local_addr(), "away", false);
    assert!(present);
    c.expect_nothing();
}

/// [MQTT-4.4.0-1] after a restart, unacknowledged PUBLISHes are sent again with their
/// original packet ids and DUP set, and a PUBREL owed for a PUBREC'd QoS 2 delivery is sent
/// again; [MQTT-4.3.3-2] an inbound QoS 2 id awaiting PUBREL is still known, so the
/// publisher's re-send is not delivered twice.
#[test]
fn v311_inflight_state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second);
    {
        let broker = start_in(dir.path());
        let addr = broker.local_addr();
        let (mut c, _) = Client::connect_session(addr, "slow", false);
        c.subscribe(&[("q/#", QoS::ExactlyOnce)]);
        publish_numbered(addr, QoS::AtLeastOnce, 1);
        publish_numbered(addr, QoS::ExactlyOnce, 1);
        first = c.recv_publish();
        second = c.recv_publish();
        // The QoS 2 one gets its PUBREC, the QoS 1 one no PUBACK.
        let QosPid::ExactlyOnce(p2) = second.qos else {
            panic!("{second:?}")
        };
        c.send(&Packet::PubRec(vireo_codec::Ack::new(p2)));
        assert!(matches!(c.recv(), Some(Packet::PubRel(a)) if a.packet_id == p2));
        // A publisher's QoS 2 PUBLISH, PUBREC'd, never released.
        let (mut p, _) = Client::connect_session(addr, "qos2-pub", false);
        p.send_publish("q/once", b"once", QosPid::ExactlyOnce(pid(9)), false, &[]);
        assert!(matches!(p.recv(), Some(Packet::PubRec(a)) if a.packet_id == pid(9)));
        let got = c.recv_publish();
        assert_eq!(&got.payload[..], b"once");
        c.send(&Packet::PubRec(vireo_codec::Ack::new(
            got.qos.packet_id().unwrap(),
        )));
        let _rel = c.recv();
        c.send(&Packet::PubComp(vireo_codec::Ack::new(
            got.qos.packet_id().unwrap(),
        )));
        // Answered after the PUBCOMP, so the broker has taken it before it stops (else it
        // rightly sends the PUBREL again after the restart).
        c.send(&Packet::PingReq);
        assert!(matches!(c.recv(), Some(Packet::PingResp)));
        drop(p);
        c.drop_connection();
        broker.shutdown();
    }
    let broker = start_in(dir.path());
    let addr = broker.local_addr();
    let (mut c, present) = Client::connect_session(addr, "slow", false);
    assert!(present);
    let again = c.recv_publish();
    assert!(again.dup, "[MQTT-3.3.1-1] DUP on the re-send");
    assert_eq!(again.qos, first.qos, "its original packet id");
    assert_eq!(again.payload, first.payload);
    let rel = c.recv();
    assert!(
        matches!(&rel, Some(Packet::PubRel(a)) if Some(a.packet_id) == second.qos.packet_id()),
        "{rel:?}"
    );
    c.expect_nothing();
    // The publisher re-sends its QoS 2 PUBLISH: acknowledged, not delivered again.
    let (mut p, present) = Client::connect_session(addr, "qos2-pub", false);
    assert!(present);
    let mut dup = vireo_codec::Publish::new(topic("q/once"), &b"once"[..]);
    dup.qos = QosPid::ExactlyOnce(pid(9));
    dup.dup = true;
    p.send(&Packet::Publish(dup));
    assert!(matches!(p.recv(), Some(Packet::PubRec(a)) if a.packet_id == pid(9)));
    p.send(&Packet::PubRel(vireo_codec::Ack::new(pid(9))));
    assert!(matches!(p.recv(), Some(Packet::PubComp(a)) if a.packet_id == pid(9)));
    c.expect_nothing();
}

/// `persistence = "sync"`: a PUBACK or PUBREC means the message is on disk, in the session
/// it is queued for: kill -9 right after the last one loses nothing, though the periodic
/// sync is a minute away. (`async` loses what its last few milliseconds held, and up to
/// `write_delay_ms` of QoS 1 messages.) A persistent session's CONNACK means its record is
/// on disk too.
#[test]
fn sync_acknowledged_messages_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (conf, _) = binary_config_in_mode(dir.path(), "sync", "sync_interval_ms = 60000\n");
    let mut broker = Broker::spawn(&["--config", &conf]);
    let addr = broker.addr();
    let (mut s, _) = Client::connect_session(addr, "sync-sub", false);
    s.subscribe(&[("q/#", QoS::ExactlyOnce)]);
    s.disconnect();
    publish_numbered(addr, QoS::AtLeastOnce, 100);
    let mut p = Client::connect(addr, "qos2-pub");
    for i in 0..20u16 {
        p.publish(
            "q/2",
            i.to_string().as_bytes(),
            QoS::ExactlyOnce,
            false,
            i + 1,
        );
    }
    let (_late, _) = Client::connect_session(addr, "connected-last", false);
    broker.child.kill().unwrap(); // SIGKILL, at once
    broker.child.wait().unwrap();
    let broker = Broker::spawn(&["--config", &conf]);
    let addr = broker.addr();
    let (mut s, present) = Client::connect_session(addr, "sync-sub", false);
    assert!(present);
    let mut got: Vec<(QoS, String)> = (0..120)
        .map(|_| {
            let p = s.recv_publish_ack();
            (p.qos.qos(), String::from_utf8(p.payload.to_vec()).unwrap())
        })
        .collect();
    s.expect_nothing();
    got.sort_by_key(|(q, n)| (*q as u8, n.parse::<u32>().unwrap()));
    let want: Vec<_> = (0..100)
        .map(|i| (QoS::AtLeastOnce, i.to_string()))
        .chain((0..20).map(|i| (QoS::ExactlyOnce, i.to_string())))
        .collect();
    assert_eq!(got, want, "every acknowledged message, once");
    let (_, present) = Client::connect_session(addr, "connected-last", false);
    assert!(present, "its CONNACK came after its record was on disk");
}

/// A tmpfs of `kib` KiB mounted on `dir` for the test's length (unmounted when dropped), or
/// `None` where mounting is not allowed (no CAP_SYS_ADMIN).
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, kib: u32) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(dir.to_owned()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// A full disk at run time: the store keeps what it has, refuses new QoS 1/2 messages (5.0:
/// PUBACK 0x97 Quota Exceeded; 3.1.1: the publisher is disconnected, as it has no reason
/// code) and serves QoS 0 as before; once there is room again, it writes what waited and
/// takes QoS 1/2 again.
#[test]
fn v5_a_full_disk_refuses_new_qos_1_and_2_messages_until_there_is_room() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let Some(_disk) = SmallDisk::mount(&data, 1024) else {
        eprintln!("skipped: this machine does not let the test mount a tmpfs");
        return;
    };
    let broker = start_in(&data);
    let addr = broker.local_addr();
    // Fill the disk, then make the store write (a retained message).
    let filler = data.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    drop(f);
    let mut p = Client::connect_v5(addr, "full-pub", &[]);
    p.publish("full/r", &[7; 512], QoS::AtMostOnce, true, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let refused = loop {
        p.send_publish("full/q1", b"x", QosPid::AtLeastOnce(pid(1)), false, &[]);
        match p.recv() {
            Some(Packet::PubAck(a)) if a.reason.0 == 0x97 => break true,
            Some(Packet::PubAck(_)) => {}
            other => panic!("{other:?}"),
        }
        assert!(std::time::Instant::now() < deadline, "never refused");
        // The store has not failed a write yet: publish again (the write happens on its
        // own thread, every few milliseconds).
        std::thread::yield_now();
    };
    assert!(refused);
    p.send_publish("full/q2", b"x", QosPid::ExactlyOnce(pid(2)), false, &[]);
    assert!(
        matches!(p.recv(), Some(Packet::PubRec(a)) if a.reason.0 == 0x97),
        "QoS 2 too"
    );
    // QoS 0 goes on.
    let mut s = Client::connect_v5(addr, "full-sub", &[]);
    s.subscribe(&[("full/0", QoS::AtMostOnce)]);
    p.publish("full/0", b"still", QoS::AtMostOnce, false, 0);
    assert_eq!(&s.recv_publish().payload[..], b"still");
    // 3.1.1 has no reason code: the publisher is disconnected.
    let mut old = Client::connect(addr, "full-311");
    let mut publish = vireo_codec::Publish::new(topic("full/q1"), &b"x"[..]);
    publish.qos = QosPid::AtLeastOnce(pid(3));
    old.send(&Packet::Publish(publish));
    assert!(
        old.closed_within(Duration::from_secs(5), false),
        "disconnected"
    );
    // Room again: taken again, once the store has written what waited.
    std::fs::remove_file(&filler).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        p.send_publish("full/q1", b"x", QosPid::AtLeastOnce(pid(4)), false, &[]);
        match p.recv() {
            Some(Packet::PubAck(a)) if a.reason.0 < 0x80 => break,
            Some(Packet::PubAck(_)) => {}
            other => panic!("{other:?}"),
        }
        assert!(std::time::Instant::now() < deadline, "never taken again");
        std::thread::sleep(Duration::from_millis(20)); // the store retries every 500 ms
    }
    broker.shutdown();
    let broker = start_in(&data);
    assert_eq!(
        retained(broker.local_addr(), "full/r", 1),
        [("full/r".to_owned(), vec![7; 512])],
        "what waited was written"
    );
}

/// A persistent session's Will is kept with it: its client was connected when the broker
/// was killed, so after the restart the Will goes out as for a connection that ended without
/// DISCONNECT [MQTT-3.1.2-8]; once published, a further restart does not publish it again.
#[test]
fn v311_the_will_of_a_client_connected_at_a_crash_is_published_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (conf, _) = binary_config_in_mode(dir.path(), "sync", "");
    let mut broker = Broker::spawn(&["--config", &conf]);
    let addr = broker.addr();
    let (mut s, _) = Client::connect_session(addr, "will-watcher", false);
    s.subscribe(&[("wills/#", QoS::AtLeastOnce)]);
    s.disconnect();
    let mut connect = vireo_codec::Connect::new("will-owner");
    connect.clean_start = false;
    connect.will = Some(vireo_codec::LastWill {
        topic: topic("wills/owner"),
        payload: vireo_codec::Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
    });
    // `sync`: the CONNACK comes once the record (with the Will) is on disk.
    let (_owner, _) = Client::connect_with(addr, connect);
    broker.child.kill().unwrap();
    broker.child.wait().unwrap();
    let mut broker = Broker::spawn(&["--config", &conf]);
    let addr = broker.addr();
    let (mut s, present) = Client::connect_session(addr, "will-watcher", false);
    assert!(present);
    let got = s.recv_publish_ack();
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("wills/owner", &b"gone"[..])
    );
    s.disconnect();
    std::process::Command::new("kill")
        .args(["-TERM", &broker.child.id().to_string()])
        .status()
        .unwrap();
    assert!(broker.child.wait().unwrap().success());
    let broker = Broker::spawn(&["--config", &conf]);
    let (mut s, _) = Client::connect_session(broker.addr(), "will-watcher", false);
    s.expect_nothing();
}

/// A session that expires while the broker is down, with its Will waiting out a longer Will
/// Delay: the session ends at the restart, and its Will goes out then [MQTT-3.1.2-8].
#[test]
fn v5_a_session_that_expired_while_the_broker_was_down_publishes_its_will() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let extra = format!("metrics_bind = \"{metrics}\"\n");
    let (conf, _) = binary_config_in_mode(dir.path(), "sync", &extra);
    let mut broker = Broker::spawn(&["--config", &conf]);
    let addr = broker.addr();
    let (mut s, _) = Client::connect_session(addr, "will-watcher", false);
    s.subscribe(&[("wills/#", QoS::AtLeastOnce)]);
    s.disconnect();
    let mut connect = Client::v5("short-lived", &[Property::SessionExpiryInterval(1)]);
    let mut will = vireo_codec::LastWill {
        topic: topic("wills/expired"),
        payload: vireo_codec::Bytes::from_static(b"ended"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
    };
    will.properties.push(Property::WillDelayInterval(3600));
    connect.will = Some(will);
    let (c, _) = Client::connect_v5_with(addr, connect);
    let written = || {
        let (_, body) = http_get(metrics, "/metrics");
        body.lines()
            .find_map(|l| l.strip_prefix("vireo_store_written_bytes_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = written();
    c.drop_connection(); // no DISCONNECT: the Will waits out its delay
    // The session's record, offline with its Will, is on disk once the store wrote again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while written() == before {
        assert!(
            std::time::Instant::now() < deadline,
            "the record was not written"
        );
    }
    broker.child.kill().unwrap();
    broker.child.wait().unwrap();
    // Down for longer than the session's expiry: the behaviour under test is time passing.
    std::thread::sleep(Duration::from_millis(1200));
    let broker = Broker::spawn(&["--config", &conf]);
    let (mut s, present) = Client::connect_session(broker.addr(), "will-watcher", false);
    assert!(present);
    let got = s.recv_publish_ack();
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("wills/expired", &b"ended"[..])
    );
}

/// A persistent session's queue past `queue_memory_bytes` is on disk only: it is still
/// delivered whole, in order and once each [MQTT-3.1.2-5] [MQTT-4.6.0-2], read back as it
/// drains, across a reconnect, more messages behind it, and a restart.
#[test]
fn v311_a_queue_past_its_memory_budget_is_delivered_whole_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = || Config {
        queue_memory_bytes: 512, // a few dozen messages
        max_queued_messages: 100_000,
        max_queued_bytes: 1 << 30,
        ..config(dir.path())
    };
    let publish = |addr, from: u16, to: u16| {
        let mut p = Client::connect(addr, "spill-pub");
        for i in from..to {
            p.publish(
                "q/n",
                i.to_string().as_bytes(),
                QoS::AtLeastOnce,
                false,
                i + 1,
            );
        }
        p.disconnect();
    };
    let mut next = 0u16;
    let mut take = |c: &mut Client, n: u16| {
        for _ in 0..n {
            let p = c.recv_publish_ack();
            let got: u16 = std::str::from_utf8(&p.payload).unwrap().parse().unwrap();
            assert_eq!(got, next, "in order, once each");
            next += 1;
        }
    };
    {
        let broker = Server::start(cfg()).expect("broker starts");
        let addr = broker.local_addr();
        let (mut c, _) = Client::connect_session(addr, "spilled", false);
        c.subscribe(&[("q/#", QoS::AtLeastOnce)]);
        c.disconnect();
        publish(addr, 0, 3000);
        let (mut c, present) = Client::connect_session(addr, "spilled", false);
        assert!(present);
        take(&mut c, 1000);
        c.disconnect();
        publish(addr, 3000, 4000);
        broker.shutdown();
    }
    let broker = Server::start(cfg()).expect("broker starts");
    let (mut c, present) = Client::connect_session(broker.local_addr(), "spilled", false);
    assert!(present);
    take(&mut c, 3000);
    c.expect_nothing();
}
