//! The scenarios over TLS against Vireo, started in-process with a TLS listener on a free
//! port: a certificate for 127.0.0.1 signed by a CA the test makes (rcgen), fan-in, large
//! messages, a connections run, a CA that does not verify, `--insecure`, and the command line.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::process::Command;

use common::certs::Certs;
use common::{assert_lossless, quick};
use vireo_loadtest::config::TlsConfig;
use vireo_loadtest::{ClientError, ConfigError, Error, Scenario, run};
use vireo_server::{ListenerConfig, ListenerProtocol, Server, ServerHandle};

/// Vireo with one TLS listener on a free loopback port.
fn vireo(certs: &Certs) -> (ServerHandle, SocketAddr) {
    let listener = ListenerConfig {
        protocol: ListenerProtocol::Tls,
        tls_certificate: Some(certs.path("cert.pem")),
        tls_key: Some(certs.path("key.pem")),
        ..ListenerConfig::tcp("127.0.0.1:0".parse().unwrap())
    };
    let config = vireo_server::Config {
        listeners: vec![listener],
        workers: 2,
        pin_workers: false,
        ..Default::default()
    };
    let server = Server::start(config).unwrap();
    let addr = server.listener_addrs()[0];
    (server, addr)
}

#[test]
fn fan_in_qos0_over_tls() {
    let certs = Certs::new();
    let (_v, addr) = vireo(&certs);
    let mut c = quick(
        Scenario::FanIn {
            publishers: 5,
            subscribers: 2,
        },
        addr,
        0,
    );
    c.rate = Some(500.0);
    c.tls = certs.verify_with("ca.pem");
    let r = run(&c).unwrap();
    assert_lossless(&r);
    let session = r.connections.tls.as_deref().unwrap_or_default();
    assert!(session.starts_with("TLSv1_3 "), "{r}");
}

/// Messages larger than what rustls buffers (64 KiB) and than one TLS record, QoS 1 both ways.
#[test]
fn large_messages_over_tls() {
    let certs = Certs::new();
    let (_v, addr) = vireo(&certs);
    let mut c = quick(
        Scenario::FanOut {
            publishers: 2,
            subscribers: 2,
        },
        addr,
        1,
    );
    c.payload = 100_000;
    c.rate = Some(20.0);
    // Slow on a loaded machine in a debug build: give the last messages time.
    c.drain_quiet = std::time::Duration::from_secs(1);
    c.tls = certs.verify_with("ca.pem");
    assert_lossless(&run(&c).unwrap());
}

#[test]
fn connections_over_tls() {
    let certs = Certs::new();
    let (_v, addr) = vireo(&certs);
    let mut c = quick(
        Scenario::Connections {
            connections: 200,
            connect_rate: None,
        },
        addr,
        0,
    );
    c.handshakes = Some(50);
    c.tls = certs.verify_with("ca.pem");
    let r = run(&c).unwrap();
    assert_eq!(r.connections.connected, 200, "{r}");
    assert_eq!(r.connect_latency.count, 200, "{r}");
    assert!(r.failures.is_empty(), "{r}");
}

#[test]
fn a_certificate_the_ca_did_not_sign_fails_setup_unless_insecure() {
    let certs = Certs::new();
    let (_v, addr) = vireo(&certs);
    let mut c = quick(
        Scenario::Connections {
            connections: 10,
            connect_rate: None,
        },
        addr,
        0,
    );
    c.tls = certs.verify_with("other-ca.pem");
    match run(&c) {
        Err(Error::Setup {
            source: ClientError::Tls(rustls::Error::InvalidCertificate(_)),
            ..
        }) => {}
        other => panic!("expected a certificate error, got {other:?}"),
    }
    c.tls = Some(TlsConfig::Insecure);
    let r = run(&c).unwrap();
    assert_eq!(r.connections.connected, 10, "{r}");
}

#[test]
fn a_missing_ca_file_is_a_configuration_error() {
    let certs = Certs::new();
    let mut c = quick(
        Scenario::P2p { pairs: 1 },
        "127.0.0.1:1".parse().unwrap(),
        0,
    );
    c.tls = certs.verify_with("absent.pem");
    assert!(matches!(
        run(&c),
        Err(Error::Config(ConfigError::TlsCaFile { .. }))
    ));
}

/// `--tls --cafile` reach the run, the JSON report says TLS in its config and connections,
/// and `--tls` alone is refused.
#[test]
fn command_line() {
    let certs = Certs::new();
    let (_v, addr) = vireo(&certs);
    let json = certs.path("report.json");
    let bin = env!("CARGO_BIN_EXE_vireo-loadtest");
    let port = addr.port().to_string();
    let out = Command::new(bin)
        .args(["connections", "--connections", "20", "--duration", "0.5"])
        .args(["--threads", "1", "--quiet", "--port", &port, "--tls"])
        .arg("--cafile")
        .arg(certs.path("ca.pem"))
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("over TLS"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let tls = &report["config"]["tls"];
    assert_eq!(tls["verify"], "ca-file", "{tls}");
    assert_eq!(tls["cafile"], certs.path("ca.pem").to_str().unwrap());
    assert_eq!(report["connections"]["connected"], 20);
    assert!(report["connections"]["tls"].is_string(), "{report}");

    let alone = Command::new(bin)
        .args(["connections", "--duration", "1", "--port", &port, "--tls"])
        .output()
        .unwrap();
    assert_eq!(alone.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&alone.stderr);
    assert!(stderr.contains("--cafile"), "{stderr}");
}
