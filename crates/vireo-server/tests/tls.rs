//! TLS listeners from a client's side: Debian's mosquitto clients with `--cafile` (TLS 1.3 and
//! 1.2, MQTT 3.1.1 and 5.0), paho-mqtt with `tls_set`, a rustls client moving a message larger
//! than rustls's buffers, a plain and a TLS listener on one broker, and bad input on the TLS
//! port. Certificates are made by the test (rcgen) in a temporary directory.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;

use common::*;
use vireo_codec::{BytesMut, Connect, Packet, ProtocolVersion, QoS, decode};
use vireo_server::{ListenerConfig, ServerHandle};

/// A broker with a plain listener (first) and a TLS one (second).
fn broker(certs: &Certs) -> (ServerHandle, SocketAddr, SocketAddr) {
    let broker = start_with(|c| {
        c.listeners = vec![
            ListenerConfig::tcp("127.0.0.1:0".parse().unwrap()),
            certs.listener(),
        ];
    });
    let addrs = broker.listener_addrs().to_vec();
    (broker, addrs[0], addrs[1])
}

/// A mosquitto client trusting the test CA.
fn mosquitto(tool: &str, port: u16, certs: &Certs, args: &[&str]) -> std::process::Output {
    let ca = certs.path("ca.pem");
    let with_ca = [&["--cafile", ca.to_str().unwrap()][..], args].concat();
    mosquitto_tool(tool, port, &with_ca)
}

/// mosquitto_pub / mosquitto_sub with `--cafile`: a retained QoS 1 message published over TLS
/// is read back over TLS, for 3.1.1 and 5.0 and for TLS 1.3 and 1.2; and a plain subscriber
/// on the other listener of the same broker gets what a TLS client publishes.
#[test]
fn mosquitto_clients_over_tls() {
    let certs = Certs::new("mosq");
    let (_broker, plain, tls) = broker(&certs);
    for (version, tls_version) in [
        ("mqttv311", "tlsv1.3"),
        ("mqttv5", "tlsv1.3"),
        ("mqttv311", "tlsv1.2"),
        ("mqttv5", "tlsv1.2"),
    ] {
        let topic = format!("tls/{version}/{tls_version}");
        let common = ["-V", version, "--tls-version", tls_version, "-t", &topic];
        let published = mosquitto(
            "mosquitto_pub",
            tls.port(),
            &certs,
            &[&common[..], &["-m", "secret", "-r", "-q", "1"]].concat(),
        );
        assert!(
            published.status.success(),
            "{version} {tls_version}: {}",
            String::from_utf8_lossy(&published.stderr)
        );
        let got = mosquitto(
            "mosquitto_sub",
            tls.port(),
            &certs,
            &[&common[..], &["-C", "1", "-W", "5"]].concat(),
        );
        assert_eq!(
            String::from_utf8_lossy(&got.stdout),
            "secret\n",
            "{version} {tls_version}: {}",
            String::from_utf8_lossy(&got.stderr)
        );
        // The same retained message through the plain listener.
        let mut c = Client::connect(plain, "plain-reader");
        c.subscribe(&[(&topic, QoS::AtLeastOnce)]);
        assert_eq!(&c.recv_publish_ack().payload[..], b"secret");
    }
}

/// paho-mqtt with `tls_set(ca_certs=…)`, 3.1.1 and 5.0: QoS 1 there and back.
#[test]
fn paho_mqtt_over_tls() {
    let certs = Certs::new("paho");
    let (_broker, _plain, tls) = broker(&certs);
    let python = if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let script = format!("{}/tests/clients/paho_tls.py", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("timeout")
        .args(["60", python, &script, &tls.port().to_string()])
        .arg(certs.path("ca.pem"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A blocking rustls client speaking raw MQTT frames.
struct TlsClient {
    stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    buf: BytesMut,
}

impl TlsClient {
    fn connect(addr: SocketAddr, certs: &Certs) -> Self {
        Self {
            stream: tls_stream(addr, certs),
            buf: BytesMut::new(),
        }
    }

    fn send(&mut self, p: &Packet) {
        let mut frame = BytesMut::new();
        p.encode(ProtocolVersion::V311, &mut frame).unwrap();
        self.stream.write_all(&frame).unwrap();
        self.stream.flush().unwrap();
    }

    fn recv(&mut self) -> Packet {
        loop {
            if let Some(p) = decode(&mut self.buf, ProtocolVersion::V311, usize::MAX).unwrap() {
                return p;
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk).expect("a packet within WAIT");
            assert!(n > 0, "closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// A 1 MB QoS 1 PUBLISH through TLS and back (many TLS records each way, past rustls's own
/// buffer limits, so partial writes and the socket's back-pressure are exercised), while a
/// plain client on the other listener receives it too.
#[test]
fn large_messages_cross_tls_both_ways() {
    let certs = Certs::new("large");
    let broker = start_with(|c| {
        c.max_packet_size = 2 * 1024 * 1024;
        c.listeners = vec![
            ListenerConfig::tcp("127.0.0.1:0".parse().unwrap()),
            certs.listener(),
        ];
    });
    let (plain, tls) = (broker.listener_addrs()[0], broker.listener_addrs()[1]);
    let mut watcher = Client::connect(plain, "watcher");
    watcher.subscribe(&[("big", QoS::AtLeastOnce)]);
    let mut c = TlsClient::connect(tls, &certs);
    c.send(&Packet::Connect(Box::new(Connect::new("tls-big"))));
    assert!(matches!(c.recv(), Packet::ConnAck(a) if a.code.0 == 0));
    c.send(&Packet::Subscribe(vireo_codec::Subscribe {
        packet_id: pid(1),
        properties: Default::default(),
        filters: vec![("big".into(), opts(QoS::AtLeastOnce))],
    }));
    assert!(matches!(c.recv(), Packet::SubAck(_)));
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    c.send(&Packet::Publish(vireo_codec::Publish {
        dup: false,
        qos: vireo_codec::QosPid::AtLeastOnce(pid(2)),
        retain: false,
        topic: topic("big"),
        properties: Default::default(),
        payload: payload.clone().into(),
    }));
    let (mut acked, mut echoed) = (false, false);
    while !(acked && echoed) {
        match c.recv() {
            Packet::PubAck(a) => acked = a.packet_id == pid(2),
            Packet::Publish(p) => {
                assert_eq!(p.payload.len(), payload.len());
                assert!(p.payload[..] == payload[..], "payload changed on the way");
                if let vireo_codec::QosPid::AtLeastOnce(id) = p.qos {
                    c.send(&Packet::PubAck(vireo_codec::Ack::new(id)));
                }
                echoed = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(watcher.recv_publish_ack().payload[..] == payload[..]);
}

/// Plain MQTT, or garbage, sent to the TLS port ends that connection (a TLS alert may come
/// first) and nothing else: the broker goes on serving both listeners. A client that opens
/// the TLS port and says nothing is closed by the CONNECT timeout like any other.
#[test]
fn plaintext_and_garbage_on_the_tls_port_are_closed() {
    let certs = Certs::new("bad");
    let broker = start_with(|c| {
        c.connect_timeout_secs = 1;
        c.listeners = vec![
            ListenerConfig::tcp("127.0.0.1:0".parse().unwrap()),
            certs.listener(),
        ];
    });
    let (plain, tls) = (broker.listener_addrs()[0], broker.listener_addrs()[1]);
    let mut mqtt = Raw::open(tls);
    mqtt.send(&Packet::Connect(Box::new(Connect::new("plain-on-tls"))));
    assert!(
        mqtt.eof_within(WAIT),
        "plain MQTT on the TLS port stays open"
    );
    let mut garbage = Raw::open(tls);
    garbage.send_raw(&[0x16, 0x03, 0x01, 0x00, 0x05, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
    assert!(garbage.eof_within(WAIT), "a broken ClientHello stays open");
    let mut silent = Raw::open(tls);
    assert!(
        silent.eof_within(WAIT),
        "a silent TLS client stays past the CONNECT timeout"
    );
    // Both listeners still serve.
    let mut c = TlsClient::connect(tls, &certs);
    c.send(&Packet::Connect(Box::new(Connect::new("after"))));
    assert!(matches!(c.recv(), Packet::ConnAck(a) if a.code.0 == 0));
    let _ = Client::connect(plain, "plain-after");
}

/// A TLS listener whose key does not parse stops the start with the listener and file named.
#[test]
fn bad_tls_files_refuse_to_start() {
    let certs = Certs::new("badfiles");
    std::fs::write(certs.path("key.pem"), "not a key").unwrap();
    let config = vireo_server::Config {
        listeners: vec![certs.listener()],
        ..Default::default()
    };
    let err = vireo_server::Server::start(config).unwrap_err().to_string();
    assert!(
        err.contains("key.pem") && err.contains("tls listener"),
        "{err}"
    );
}

/// Password checks run off the event loop and hand the connection on with its TLS session:
/// over TLS, the right password connects and works, a wrong one gets its refusal through the
/// TLS session (mosquitto_sub reports it).
#[test]
fn passwords_over_tls() {
    let certs = Certs::new("passwd");
    let hash = vireo_server::passwd::hash_password_with(b"wonder", 256, 1, 1).unwrap();
    let passwd = certs.path("passwd");
    std::fs::write(&passwd, format!("alice:{hash}\n")).unwrap();
    let broker = start_with(|c| {
        c.password_file = Some(passwd);
        c.listeners = vec![certs.listener()];
    });
    let port = broker.listener_addrs()[0].port();
    let mut c = TlsClient::connect(broker.listener_addrs()[0], &certs);
    let mut connect = Connect::new("tls-bad");
    connect.username = Some("alice".into());
    connect.password = Some(vireo_codec::Bytes::from_static(b"nope"));
    c.send(&Packet::Connect(Box::new(connect)));
    assert!(
        matches!(c.recv(), Packet::ConnAck(a) if a.code.0 == 4),
        "CONNACK 0x04 over TLS"
    );
    let ok = ["-u", "alice", "-P", "wonder", "-t", "p/k"];
    let published = mosquitto(
        "mosquitto_pub",
        port,
        &certs,
        &[&ok[..], &["-m", "v", "-r", "-q", "1"]].concat(),
    );
    assert!(
        published.status.success(),
        "{}",
        String::from_utf8_lossy(&published.stderr)
    );
    let got = mosquitto(
        "mosquitto_sub",
        port,
        &certs,
        &[&ok[..], &["-C", "1", "-W", "5"]].concat(),
    );
    assert_eq!(String::from_utf8_lossy(&got.stdout), "v\n");
    let bad = mosquitto(
        "mosquitto_sub",
        port,
        &certs,
        &[
            "-u", "alice", "-P", "nope", "-t", "p/k", "-C", "1", "-W", "5",
        ],
    );
    assert!(
        !bad.status.success(),
        "{:?} {} {}",
        bad.status,
        String::from_utf8_lossy(&bad.stdout),
        String::from_utf8_lossy(&bad.stderr)
    );
    let err = String::from_utf8_lossy(&bad.stderr).to_lowercase();
    assert!(
        err.contains("not authori") || err.contains("bad user"),
        "{err}"
    );
}

/// mTLS with `use_identity_as_username`: the client certificate's Common Name is the user the
/// ACL knows, no password asked; a client without a certificate fails the handshake. With
/// `tls_client_ca` alone, a certificate is optional.
#[test]
fn client_certificates_name_the_user() {
    let certs = Certs::new("mtls");
    let (alice_cert, alice_key) = certs.client("alice");
    let acl = certs.path("acl");
    std::fs::write(&acl, "user alice\ntopic readwrite alice/#\n").unwrap();
    let mut required = certs.listener();
    required.tls_client_ca = Some(certs.path("ca.pem"));
    required.require_certificate = true;
    required.use_identity_as_username = true;
    let mut optional = certs.listener();
    optional.tls_client_ca = Some(certs.path("ca.pem"));
    let broker = start_with(|c| {
        c.acl_file = Some(acl);
        c.listeners = vec![required, optional];
    });
    let (strict, lenient) = (broker.listener_addrs()[0], broker.listener_addrs()[1]);
    let with_cert = |tool: &str, port: u16, args: &[&str]| {
        let mut all = vec!["--cert", alice_cert.to_str().unwrap(), "--key"];
        all.push(alice_key.to_str().unwrap());
        all.extend_from_slice(args);
        mosquitto(tool, port, &certs, &all)
    };
    for version in ["mqttv311", "mqttv5"] {
        let published = with_cert(
            "mosquitto_pub",
            strict.port(),
            &[
                "-V", version, "-t", "alice/k", "-m", version, "-r", "-q", "1",
            ],
        );
        assert!(
            published.status.success(),
            "{version}: {}",
            String::from_utf8_lossy(&published.stderr)
        );
        let got = with_cert(
            "mosquitto_sub",
            strict.port(),
            &["-V", version, "-t", "alice/k", "-C", "1", "-W", "5"],
        );
        assert_eq!(String::from_utf8_lossy(&got.stdout), format!("{version}\n"));
        // The ACL sees user alice: other topics are not hers.
        let denied = with_cert(
            "mosquitto_sub",
            strict.port(),
            &["-V", version, "-t", "bob/#", "-C", "1", "-W", "5"],
        );
        let err = String::from_utf8_lossy(&denied.stderr).to_lowercase();
        assert!(err.contains("denied"), "{version}: {err}");
    }
    // No certificate: the strict listener refuses the handshake.
    let bare = mosquitto(
        "mosquitto_pub",
        strict.port(),
        &certs,
        &["-t", "alice/x", "-m", "x"],
    );
    assert!(
        !bare.status.success(),
        "connected without a client certificate"
    );
    // The lenient one takes a client without a certificate (anonymous: no rule lets it
    // publish alice/x, so the retained message stays the last one).
    let anon = mosquitto(
        "mosquitto_pub",
        lenient.port(),
        &certs,
        &["-t", "alice/x", "-m", "x"],
    );
    assert!(
        anon.status.success(),
        "{}",
        String::from_utf8_lossy(&anon.stderr)
    );
}

/// A reload (SIGHUP) takes new certificates and keys for new handshakes; a connection made
/// under the old certificate stays up and served.
#[test]
fn reload_swaps_certificates_keeping_connections() {
    let old = Certs::new("reload-old");
    let new = Certs::new("reload-new");
    let broker = start_with(|c| c.listeners = vec![old.listener()]);
    let addr = broker.listener_addrs()[0];
    let mut kept = TlsClient::connect(addr, &old);
    kept.send(&Packet::Connect(Box::new(Connect::new("kept"))));
    assert!(matches!(kept.recv(), Packet::ConnAck(a) if a.code.0 == 0));
    for f in ["cert.pem", "key.pem"] {
        std::fs::copy(new.path(f), old.path(f)).unwrap();
    }
    broker.reload().unwrap();
    let pubbed = |certs: &Certs| {
        mosquitto("mosquitto_pub", addr.port(), certs, &["-t", "t", "-m", "x"])
            .status
            .success()
    };
    assert!(pubbed(&new), "the new certificate is served");
    assert!(!pubbed(&old), "the old CA no longer verifies the server");
    kept.send(&Packet::PingReq);
    assert!(
        matches!(kept.recv(), Packet::PingResp),
        "the old session stays"
    );
    // A broken key on reload keeps the certificate in use.
    std::fs::write(old.path("key.pem"), "broken").unwrap();
    let err = broker.reload().unwrap_err();
    assert!(err.contains("tls listener"), "{err}");
    assert!(pubbed(&new));
}
