//! Bridges to another broker, tested against Debian's Mosquitto started by each test on a
//! loopback port (and against a fake remote where Mosquitto cannot misbehave on purpose).
//! Readiness is awaited from Mosquitto's own log (`log_type all`): the bridge's SUBACK or its
//! connection line, never a sleep.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use common::*;
use vireo_codec::{BytesMut, Packet, ProtocolVersion, QoS};
use vireo_server::{Config, Server, ServerHandle};

/// A Mosquitto on 127.0.0.1:`port`, its log lines on a channel.
struct Mosquitto {
    child: Child,
    lines: Receiver<String>,
    port: u16,
    dir: PathBuf,
}

impl Mosquitto {
    fn start(name: &str, port: u16, extra: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("vireo-bridge-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("mosquitto.conf");
        // Run as root, Mosquitto would switch to the `mosquitto` user, which cannot write its
        // persistence file into this directory: it stays who we are.
        let user = Command::new("id").arg("-un").output().unwrap();
        let user = String::from_utf8_lossy(&user.stdout).trim().to_owned();
        let text = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nlog_dest stderr\nlog_type all\n\
             user {user}\n\
             max_inflight_messages 0\nmax_queued_messages 0\n{extra}\n"
        );
        std::fs::write(&conf, text).unwrap();
        let mut child = Command::new("/usr/sbin/mosquitto")
            .arg("-c")
            .arg(&conf)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("mosquitto runs (apt-get install mosquitto)");
        let (tx, lines) = channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("mosquitto: {line}");
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut m = Self {
            child,
            lines,
            port,
            dir,
        };
        m.wait_for("running");
        m
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Waits for a log line containing `what`.
    fn wait_for(&mut self, what: &str) -> String {
        line_within(&self.lines, what)
    }

    /// SIGTERM (Mosquitto saves its persistence file), and waits for it to exit.
    fn stop(mut self) -> PathBuf {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap();
        std::mem::take(&mut self.dir)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Vireo with `[[bridge]]` tables from TOML (`{remote}` replaced by the remote's address).
fn vireo_with_bridge(toml_text: &str, remote: SocketAddr) -> ServerHandle {
    vireo_with_bridge_and(toml_text, remote, |_| {})
}

/// [`vireo_with_bridge`], with more of the configuration set by `more`.
fn vireo_with_bridge_and(
    toml_text: &str,
    remote: SocketAddr,
    more: impl FnOnce(&mut Config),
) -> ServerHandle {
    let text = toml_text.replace("{remote}", &remote.to_string());
    let parsed: Config = toml::from_str(&text).unwrap();
    start_with(|c| {
        c.bridges = parsed.bridges;
        c.metrics_bind = Some("127.0.0.1:0".parse().unwrap());
        c.sys_interval = 1;
        more(c);
    })
}

fn metrics(handle: &ServerHandle) -> String {
    http_get(handle.metrics_addr().unwrap(), "/metrics").1
}

/// Asserts the bridge `edge`'s counters on the metrics endpoint.
fn assert_forwarded(handle: &ServerHandle, out: u64, inward: u64) {
    let m = metrics(handle);
    for line in [
        format!("vireo_bridge_forwarded_out_total{{bridge=\"edge\"}} {out}"),
        format!("vireo_bridge_forwarded_in_total{{bridge=\"edge\"}} {inward}"),
    ] {
        assert!(m.contains(&line), "no {line:?} in {m}");
    }
}

const OUT_AND_IN: &str = r#"
    [[bridge]]
    name = "edge"
    address = "{remote}"
    client_id = "vireo-test-edge"
    [[bridge.topic]]
    pattern = "sensors/#"
    direction = "out"
    qos = 1
    local_prefix = "site/"
    remote_prefix = "fleet/s1/"
    [[bridge.topic]]
    pattern = "cmd/#"
    direction = "in"
    qos = 1
    local_prefix = "site/"
    remote_prefix = "fleet/s1/"
"#;

#[test]
fn v5_bridge_forwards_out_and_in_renaming_topics() {
    let mut remote = Mosquitto::start("prefixes", free_port(), "");
    let vireo = vireo_with_bridge(OUT_AND_IN, remote.addr());
    remote.wait_for("Sending SUBACK to vireo-test-edge");

    let mut remote_sub = Client::connect_v5(remote.addr(), "remote-sub", &[]);
    remote_sub.subscribe(&[("fleet/#", QoS::AtLeastOnce)]);
    let mut local_sub = Client::connect(vireo.local_addr(), "local-sub");
    local_sub.subscribe(&[("site/#", QoS::AtLeastOnce)]);

    let mut publisher = Client::connect(vireo.local_addr(), "pub");
    publisher.publish("site/sensors/t1", b"21.5", QoS::AtLeastOnce, false, 1);
    let p = remote_sub.recv_publish_ack();
    assert_eq!(
        (&*p.topic, &p.payload[..]),
        ("fleet/s1/sensors/t1", &b"21.5"[..])
    );
    assert_eq!(
        local_sub.recv_publish_ack().topic.as_str(),
        "site/sensors/t1"
    );
    // Not matched by an out rule: stays here.
    publisher.publish("site/other", b"x", QoS::AtLeastOnce, false, 2);
    assert_eq!(local_sub.recv_publish_ack().topic.as_str(), "site/other");
    remote_sub.expect_nothing();

    let mut remote_pub = Client::connect_v5(remote.addr(), "remote-pub", &[]);
    remote_pub.publish("fleet/s1/cmd/reboot", b"now", QoS::AtLeastOnce, false, 1);
    let p = local_sub.recv_publish_ack();
    assert_eq!(
        (&*p.topic, &p.payload[..]),
        ("site/cmd/reboot", &b"now"[..])
    );
    assert_eq!(
        remote_sub.recv_publish_ack().topic.as_str(),
        "fleet/s1/cmd/reboot"
    );

    let m = metrics(&vireo);
    assert!(
        m.contains("vireo_bridge_connected{bridge=\"edge\"} 1"),
        "{m}"
    );
    assert_forwarded(&vireo, 1, 1);
    // Mosquitto's bridge state topic.
    let mut sys = Client::connect(vireo.local_addr(), "sys");
    sys.subscribe(&[("$SYS/broker/connection/edge/state", QoS::AtMostOnce)]);
    assert_eq!(&sys.recv_publish().payload[..], b"1");
}

fn both_ways(version: &str) {
    let mut remote = Mosquitto::start(&format!("both-{version}"), free_port(), "");
    let cfg = format!(
        r#"
        [[bridge]]
        name = "edge"
        address = "{{remote}}"
        client_id = "vireo-test-edge"
        protocol_version = "{version}"
        [[bridge.topic]]
        pattern = "chat/#"
        direction = "both"
        qos = 1
        "#
    );
    let vireo = vireo_with_bridge(&cfg, remote.addr());
    remote.wait_for("Sending SUBACK to vireo-test-edge");
    let mut remote_sub = Client::connect(remote.addr(), "remote-sub");
    remote_sub.subscribe(&[("chat/#", QoS::AtLeastOnce)]);
    let mut local_sub = Client::connect(vireo.local_addr(), "local-sub");
    local_sub.subscribe(&[("chat/#", QoS::AtLeastOnce)]);

    let mut local_pub = Client::connect(vireo.local_addr(), "local-pub");
    local_pub.publish("chat/a", b"from here", QoS::AtLeastOnce, false, 1);
    assert_eq!(&remote_sub.recv_publish_ack().payload[..], b"from here");
    assert_eq!(&local_sub.recv_publish_ack().payload[..], b"from here");

    let mut remote_pub = Client::connect(remote.addr(), "remote-pub");
    remote_pub.publish("chat/b", b"from there", QoS::AtLeastOnce, false, 1);
    assert_eq!(&local_sub.recv_publish_ack().payload[..], b"from there");
    assert_eq!(&remote_sub.recv_publish_ack().payload[..], b"from there");
    // Each message once on each side: nothing came back round.
    local_sub.expect_nothing();
    remote_sub.expect_nothing();
    assert_forwarded(&vireo, 1, 1);
}

/// 5.0: No Local on both connections keeps a `both` rule from looping.
#[test]
fn v5_both_ways_without_a_loop() {
    both_ways("5");
}

/// 3.1.1: the protocol level's bridge bit tells Mosquitto not to echo.
#[test]
fn v311_both_ways_without_a_loop() {
    both_ways("3.1.1");
}

#[test]
fn qos1_published_while_the_remote_is_away_arrives_once_it_is_back() {
    let port = free_port();
    let persist = |dir: &str| format!("persistence true\npersistence_location {dir}/\n");
    let dir = std::env::temp_dir().join(format!("vireo-bridge-away-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let extra = persist(dir.to_str().unwrap());
    let mut remote = Mosquitto::start("away", port, &extra);
    let cfg = r#"
        [[bridge]]
        name = "edge"
        address = "{remote}"
        client_id = "vireo-test-edge"
        reconnect_min_ms = 50
        reconnect_max_ms = 200
        [[bridge.topic]]
        pattern = "data/#"
        direction = "out"
        qos = 1
    "#;
    let vireo = vireo_with_bridge(cfg, remote.addr());
    remote.wait_for("New client connected from");
    // A persistent subscriber at the remote, offline while the messages travel.
    let (mut sub, _) = Client::connect_session(remote.addr(), "remote-sub", false);
    sub.subscribe(&[("data/#", QoS::AtLeastOnce)]);
    sub.disconnect();
    let _ = remote.stop();

    let mut publisher = Client::connect(vireo.local_addr(), "pub");
    for i in 0..20u16 {
        // Each acknowledged by Vireo while the remote is down.
        publisher.publish(
            &format!("data/{i}"),
            &i.to_be_bytes(),
            QoS::AtLeastOnce,
            false,
            i + 1,
        );
    }
    let m = metrics(&vireo);
    assert!(
        m.contains("vireo_bridge_connected{bridge=\"edge\"} 0"),
        "{m}"
    );

    let mut remote = Mosquitto::start("away", port, &extra);
    remote.wait_for("as vireo-test-edge");
    let (mut sub, present) = Client::connect_session(remote.addr(), "remote-sub", false);
    assert!(present, "mosquitto kept the subscriber's session");
    for i in 0..20u16 {
        let p = sub.recv_publish_ack();
        assert_eq!(p.topic.as_str(), format!("data/{i}"), "in order, none lost");
    }
    sub.expect_nothing();
    drop(remote);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tls_bridge_with_credentials() {
    let certs = Certs::new("bridge");
    let port = free_port();
    let passwd = certs.path("passwd");
    std::fs::write(&passwd, "edge-user:edge-secret\n").unwrap();
    let hashed = Command::new("mosquitto_passwd")
        .arg("-U")
        .arg(&passwd)
        .status()
        .unwrap();
    assert!(hashed.success());
    let plain = free_port();
    let extra = format!(
        "listener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n\
         per_listener_settings false\nallow_anonymous false\npassword_file {}\n",
        certs.path("ca.pem").display(),
        certs.path("cert.pem").display(),
        certs.path("key.pem").display(),
        passwd.display()
    );
    // The first listener (plain, `plain`) is for the test's own clients, with credentials.
    let mut remote = Mosquitto::start("tls", plain, &extra);
    let cfg = format!(
        r#"
        [[bridge]]
        name = "secure"
        address = "127.0.0.1:{port}"
        protocol = "tls"
        tls_ca_file = "{}"
        client_id = "vireo-test-secure"
        username = "edge-user"
        password = "edge-secret"
        [[bridge.topic]]
        pattern = "secure/#"
        direction = "both"
        qos = 1
        "#,
        certs.path("ca.pem").display()
    );
    let vireo = vireo_with_bridge(&cfg, remote.addr());
    remote.wait_for("Sending SUBACK to vireo-test-secure");
    let mut connect = vireo_codec::Connect::new("remote-sub");
    connect.username = Some("edge-user".into());
    connect.password = Some(vireo_codec::Bytes::from_static(b"edge-secret"));
    let (mut remote_sub, ack) = Client::connect_with(remote.addr(), connect);
    assert!(matches!(ack, Packet::ConnAck(a) if !a.code.is_error()));
    remote_sub.subscribe(&[("secure/#", QoS::AtLeastOnce)]);
    let mut publisher = Client::connect(vireo.local_addr(), "pub");
    publisher.publish("secure/x", b"over tls", QoS::AtLeastOnce, false, 1);
    assert_eq!(&remote_sub.recv_publish_ack().payload[..], b"over tls");
}

/// A remote that accepts the connection and then says nothing: the bridge pings within its
/// keep alive, gives up one keep alive later, and connects again.
fn next_packet(conn: &mut std::net::TcpStream, buf: &mut BytesMut) -> Option<Packet> {
    loop {
        if let Some(p) = vireo_codec::decode(buf, ProtocolVersion::V5, usize::MAX).unwrap() {
            return Some(p);
        }
        let mut chunk = [0u8; 4096];
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A remote that accepts the connection and then says nothing: the bridge pings within its
/// keep alive ([MQTT-7.0.0-1]: a bridge keeps the client's rules, here [MQTT-3.1.2-23]),
/// gives up one keep alive later, and connects again.
#[test]
fn mqtt_7_0_0_1_keep_alive_gives_up_on_a_silent_remote_and_reconnects() {
    let fake = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = fake.local_addr().unwrap();
    let (tx, accepted) = channel();
    std::thread::spawn(move || {
        for conn in fake.incoming().map_while(Result::ok) {
            if tx.send(conn).is_err() {
                return;
            }
        }
    });
    let cfg = r#"
        [[bridge]]
        name = "edge"
        address = "{remote}"
        client_id = "vireo-test-edge"
        keep_alive_secs = 1
        reconnect_min_ms = 50
        [[bridge.topic]]
        pattern = "a/#"
    "#;
    let _vireo = vireo_with_bridge(cfg, addr);
    let mut conn = accepted.recv_timeout(WAIT).expect("the bridge connects");
    conn.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = BytesMut::new();
    let Some(Packet::Connect(c)) = next_packet(&mut conn, &mut buf) else {
        panic!("expected CONNECT")
    };
    assert_eq!(
        (&*c.client_id, c.keep_alive, c.clean_start),
        ("vireo-test-edge", 1, false)
    );
    conn.write_all(&[0x20, 0x03, 0x00, 0x00, 0x00]).unwrap(); // CONNACK, 5.0, no properties
    let started = Instant::now();
    assert_eq!(next_packet(&mut conn, &mut buf), Some(Packet::PingReq));
    // No PINGRESP: the bridge closes within another keep alive and comes back.
    assert_eq!(
        next_packet(&mut conn, &mut buf),
        None,
        "closed after the missing PINGRESP"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    let mut again = accepted.recv_timeout(WAIT).expect("the bridge reconnects");
    again.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = BytesMut::new();
    assert!(matches!(
        next_packet(&mut again, &mut buf),
        Some(Packet::Connect(_))
    ));
}

/// [MQTT-3.1.3-9] / 5.0 [MQTT-3.1.3-8]: client ids under `$bridge/` are the broker's own;
/// a client asking for one is refused (0x02 / 0x85) and the connection closed.
#[test]
fn v5_mqtt_3_1_3_8_bridge_client_ids_are_refused_to_clients() {
    let vireo = start();
    let (mut c, ack) =
        Client::connect_with(vireo.local_addr(), vireo_codec::Connect::new("$bridge/x"));
    assert!(
        matches!(&ack, Packet::ConnAck(a) if a.code.0 == 0x02),
        "{ack:?}"
    );
    assert!(c.closed_within(WAIT, true));
    let connect = Client::v5("$bridge/edge", &[]);
    let (mut c, ack) = Client::connect_v5_with(vireo.local_addr(), connect);
    assert_eq!(ack.code.0, 0x85);
    assert!(c.closed_within(WAIT, true));
}

#[test]
fn bad_bridge_configurations_refuse_to_start() {
    let parse = |t: &str| toml::from_str::<Config>(t).unwrap();
    let missing_ca = parse(
        r#"
        [[bridge]]
        name = "b"
        address = "127.0.0.1:1"
        protocol = "tls"
        tls_ca_file = "/nonexistent/ca.pem"
        [[bridge.topic]]
        pattern = "x/#"
        "#,
    );
    let err = Server::start(Config {
        bind: "127.0.0.1:0".parse().unwrap(),
        workers: 1,
        ..missing_ca
    })
    .unwrap_err();
    assert!(err.to_string().contains("tls_ca_file"), "{err}");
    let twice = parse(
        r#"
        [[bridge]]
        name = "b"
        address = "127.0.0.1:1"
        [[bridge.topic]]
        pattern = "x/#"
        [[bridge]]
        name = "b"
        address = "127.0.0.1:2"
        [[bridge.topic]]
        pattern = "x/#"
        "#,
    );
    assert!(
        twice
            .validate()
            .unwrap_err()
            .to_string()
            .contains("two bridges")
    );
}

/// What the local broker would refuse (a QoS above its `max_qos`, retain where it has none,
/// a packet over its `max_packet_size`) is fitted or dropped by the bridge, and its
/// `max_keepalive` is kept with PINGREQs: the bridge's local connection survives all of it
/// (it used to be closed by the broker, and the bridge stopped for good). A 3.1.1 remote was
/// never told the size limit: the large message is acknowledged and skipped, not a reason
/// to reconnect (it would only come again, for ever).
#[test]
fn v311_what_the_local_broker_refuses_does_not_break_the_bridge() {
    let mut remote = Mosquitto::start("local-limits", free_port(), "");
    let cfg = r#"
        [[bridge]]
        name = "edge"
        address = "{remote}"
        client_id = "vireo-test-edge"
        protocol_version = "3.1.1"
        [[bridge.topic]]
        pattern = "in/#"
        direction = "in"
        qos = 2
    "#;
    let vireo = vireo_with_bridge_and(cfg, remote.addr(), |c| {
        c.max_packet_size = 1024;
        c.max_qos = 1;
        c.retain_available = false;
        c.max_keepalive = 1;
    });
    remote.wait_for("Sending SUBACK to vireo-test-edge");
    // The behaviour under test is time passing: a keep alive of 1 s is enforced after
    // 1.5 s of silence, so the bridge must have pinged within this wait.
    std::thread::sleep(Duration::from_millis(2500));

    let mut local_sub = Client::connect(vireo.local_addr(), "local-sub");
    local_sub.subscribe(&[("in/#", QoS::AtLeastOnce)]);
    let mut remote_pub = Client::connect(remote.addr(), "remote-pub");
    remote_pub.publish("in/a", b"a", QoS::ExactlyOnce, true, 1);
    remote_pub.publish("in/big", &[b'x'; 4000], QoS::AtLeastOnce, false, 2);
    remote_pub.publish("in/b", b"b", QoS::AtLeastOnce, false, 3);
    let got: Vec<_> = (0..2)
        .map(|_| {
            let p = local_sub.recv_publish_ack();
            (p.topic.to_string(), p.qos(), p.retain)
        })
        .collect();
    assert_eq!(
        got,
        [
            ("in/a".to_owned(), QoS::AtLeastOnce, false),
            ("in/b".to_owned(), QoS::AtLeastOnce, false)
        ]
    );
    local_sub.expect_nothing();
    let m = metrics(&vireo);
    for line in [
        "vireo_bridge_connects_total{bridge=\"edge\"} 1",
        "vireo_bridge_local_connects_total{bridge=\"edge\"} 1",
        "vireo_bridge_dropped_total{bridge=\"edge\"} 1",
        "vireo_bridge_forwarded_in_total{bridge=\"edge\"} 2",
    ] {
        assert!(m.contains(line), "no {line:?} in {m}");
    }
}

/// Mosquitto bridging *into* Vireo with its defaults (3.1.1, `try_private true`: protocol
/// level 0x84). Vireo accepts the bridge bit as Mosquitto does and gives the bridge's
/// subscriptions No Local (a `both` topic does not loop back) and Retain As Published (a
/// retained message published here is retained there too).
#[test]
fn v311_a_mosquitto_bridge_with_the_bridge_bit_connects_to_vireo() {
    let vireo = start();
    let extra = format!(
        "connection to-vireo\naddress {}\nclientid mosq-edge\ntopic chat/# both 1\n",
        vireo.local_addr()
    );
    let mut remote = Mosquitto::start("into-vireo", free_port(), &extra);
    remote.wait_for("Received SUBACK");
    let mut remote_sub = Client::connect(remote.addr(), "remote-sub");
    remote_sub.subscribe(&[("chat/#", QoS::AtLeastOnce)]);
    let mut local_sub = Client::connect(vireo.local_addr(), "local-sub");
    local_sub.subscribe(&[("chat/#", QoS::AtLeastOnce)]);

    let mut remote_pub = Client::connect(remote.addr(), "remote-pub");
    remote_pub.publish("chat/a", b"from mosquitto", QoS::AtLeastOnce, false, 1);
    assert_eq!(&local_sub.recv_publish_ack().payload[..], b"from mosquitto");
    assert_eq!(
        &remote_sub.recv_publish_ack().payload[..],
        b"from mosquitto"
    );
    // No Local: Vireo did not send it back, so Mosquitto did not publish it again.
    remote_sub.expect_nothing();
    local_sub.expect_nothing();

    let mut local_pub = Client::connect(vireo.local_addr(), "local-pub");
    local_pub.publish("chat/kept", b"retained here", QoS::AtLeastOnce, true, 1);
    let p = remote_sub.recv_publish_ack();
    assert_eq!(&p.payload[..], b"retained here");
    assert_eq!(&local_sub.recv_publish_ack().payload[..], b"retained here");
    // Retain As Published: Mosquitto stored it as retained.
    let mut late = Client::connect(remote.addr(), "late");
    late.subscribe(&[("chat/kept", QoS::AtLeastOnce)]);
    let p = late.recv_publish_ack();
    assert!(p.retain, "retained at the far side too");
    assert_eq!(&p.payload[..], b"retained here");
}

/// A host name is looked up (on its own thread, so a slow resolver stalls neither the bridge
/// nor shutdown) and connected to; a name that does not resolve is retried with backoff and
/// does not keep the broker from stopping.
#[test]
fn bridge_addresses_may_be_host_names() {
    let mut remote = Mosquitto::start("hostname", free_port(), "");
    let cfg = format!(
        r#"
        [[bridge]]
        name = "edge"
        address = "localhost:{}"
        client_id = "vireo-test-edge"
        [[bridge.topic]]
        pattern = "t/#"
        [[bridge]]
        name = "nowhere"
        address = "no-such-host.invalid:1883"
        [[bridge.topic]]
        pattern = "t/#"
        "#,
        remote.port
    );
    let vireo = vireo_with_bridge(&cfg, remote.addr());
    remote.wait_for("Sending CONNACK to vireo-test-edge");
    // The status is published at the bridge loop's next turn.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !metrics(&vireo).contains("vireo_bridge_connected{bridge=\"edge\"} 1") {
        assert!(Instant::now() < deadline, "{}", metrics(&vireo));
        std::thread::yield_now();
    }
    let m = metrics(&vireo);
    assert!(
        m.contains("vireo_bridge_connected{bridge=\"nowhere\"} 0"),
        "{m}"
    );
    let started = Instant::now();
    vireo.shutdown();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown waited on a lookup"
    );
}
