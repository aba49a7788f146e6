//! The scenarios over WebSocket against Vireo, started in-process with a `ws` listener (and a
//! `wss` one) on a free port: fan-out and fan-in at QoS 1 with nothing lost, large messages
//! (frames with 64-bit lengths), wss, a path the broker does not serve, and the command line.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::certs::Certs;
use common::{TempDir, assert_lossless, quick};
use vireo_loadtest::config::WsConfig;
use vireo_loadtest::{ClientError, Error, Scenario, run};
use vireo_server::{ListenerConfig, ListenerProtocol, Server, ServerHandle};

/// Vireo with one listener on a free loopback port.
fn vireo(listener: ListenerConfig) -> (ServerHandle, SocketAddr) {
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

fn ws_listener() -> ListenerConfig {
    ListenerConfig::ws("127.0.0.1:0".parse().unwrap())
}

/// A short QoS 1 run of `scenario` over WebSocket.
fn over_ws(scenario: Scenario, addr: SocketAddr) -> vireo_loadtest::Config {
    let mut c = quick(scenario, addr, 1);
    c.ws = Some(WsConfig::default());
    c
}

#[test]
fn fan_out_qos1_over_ws_loses_nothing() {
    let (_v, addr) = vireo(ws_listener());
    let c = over_ws(
        Scenario::FanOut {
            publishers: 2,
            subscribers: 8,
        },
        addr,
    );
    let r = run(&c).unwrap();
    assert_lossless(&r);
    assert!(r.to_string().contains("over WebSocket:"), "{r}");
    assert_eq!(r.connect_latency.count, 10, "{r}");
}

#[test]
fn fan_in_qos1_over_ws_loses_nothing() {
    let (_v, addr) = vireo(ws_listener());
    let c = over_ws(
        Scenario::FanIn {
            publishers: 8,
            subscribers: 2,
        },
        addr,
    );
    assert_lossless(&run(&c).unwrap());
}

/// Messages larger than a read (64 KiB) and than a 16-bit frame length, in both directions.
#[test]
fn large_messages_over_ws() {
    let (_v, addr) = vireo(ws_listener());
    let mut c = over_ws(
        Scenario::FanOut {
            publishers: 2,
            subscribers: 2,
        },
        addr,
    );
    c.payload = 100_000;
    c.rate = Some(50.0);
    assert_lossless(&run(&c).unwrap());
}

/// WebSocket over TLS: `--ws` with `--tls`.
#[test]
fn fan_in_qos1_over_wss() {
    let certs = Certs::new();
    let (_v, addr) = vireo(ListenerConfig {
        protocol: ListenerProtocol::Wss,
        tls_certificate: Some(certs.path("cert.pem")),
        tls_key: Some(certs.path("key.pem")),
        ..ws_listener()
    });
    let mut c = over_ws(
        Scenario::FanIn {
            publishers: 4,
            subscribers: 2,
        },
        addr,
    );
    c.tls = certs.verify_with("ca.pem");
    let r = run(&c).unwrap();
    assert_lossless(&r);
    assert!(r.to_string().contains("over WebSocket over TLS:"), "{r}");
    assert!(r.connections.tls.is_some(), "{r}");
}

/// The broker answers an upgrade for a path it does not serve with 404: a setup failure that
/// says so.
#[test]
fn a_path_the_broker_does_not_serve_fails_setup() {
    let (_v, addr) = vireo(ws_listener());
    let mut c = over_ws(Scenario::P2p { pairs: 1 }, addr);
    c.ws = Some(WsConfig {
        path: "/elsewhere".into(),
    });
    c.connect_timeout = Duration::from_secs(2);
    match run(&c) {
        Err(Error::Setup {
            source: ClientError::WebSocket(e),
            ..
        }) => assert!(e.to_string().contains("404"), "{e}"),
        other => panic!("expected a refused upgrade, got {other:?}"),
    }
}

/// `--ws --ws-path` reach the run and the JSON report; `--ws-path` alone is refused; a plain
/// MQTT client against the WebSocket listener fails to set up.
#[test]
fn command_line() {
    let (_v, addr) = vireo(ListenerConfig {
        path: Some("/custom".into()),
        ..ws_listener()
    });
    let dir = TempDir::new("ws");
    let json = dir.0.join("report.json");
    let bin = env!("CARGO_BIN_EXE_vireo-loadtest");
    let port = addr.port().to_string();
    let common = ["--threads", "1", "--quiet", "--port", &port];
    let out = Command::new(bin)
        .args([
            "fan-in",
            "--publishers",
            "2",
            "--duration",
            "0.5",
            "--qos",
            "1",
        ])
        .args(common)
        .args(["--ws", "--ws-path", "/custom", "--drain-quiet", "0.3"])
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
    assert!(stdout.contains("over WebSocket"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["config"]["ws"]["path"], "/custom", "{report}");
    assert_eq!(report["messages"]["lost"], 0, "{report}");

    let alone = Command::new(bin)
        .args([
            "fan-in",
            "--duration",
            "1",
            "--port",
            &port,
            "--ws-path",
            "/x",
        ])
        .output()
        .unwrap();
    assert_eq!(alone.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&alone.stderr);
    assert!(stderr.contains("--ws"), "{stderr}");

    let plain = Command::new(bin)
        .args([
            "p2p",
            "--pairs",
            "1",
            "--duration",
            "0.5",
            "--connect-timeout",
            "1",
        ])
        .args(common)
        .output()
        .unwrap();
    assert!(!plain.status.success());
}
