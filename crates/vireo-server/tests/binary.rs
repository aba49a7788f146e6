//! The `vireo` binary: starts on flags and a TOML file, stops cleanly on SIGTERM, and refuses
//! a bad configuration with a clear error.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};

use common::*;
use vireo_codec::QoS;

const BIN: &str = env!("CARGO_BIN_EXE_vireo");

#[test]
fn binary_serves_with_toml_config_and_stops_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("vireo-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("vireo.toml");
    std::fs::write(
        &config,
        "bind = \"127.0.0.1:0\"\nworkers = 2\nmax_qos = 1\n",
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["--config", config.to_str().unwrap(), "--log-level", "info"])
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let port = listening_port(child.stdout.take().unwrap());
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut c = Client::connect(addr, "bin");
    assert_eq!(
        c.subscribe(&[("t", QoS::ExactlyOnce)]),
        vec![1],
        "max_qos from the file"
    );
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    // Wait for the exit on a thread, so the test waits on the event with a deadline.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = rx
        .recv_timeout(WAIT)
        .expect("broker stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    assert!(
        c.closed_within(WAIT, true),
        "connections closed at shutdown"
    );
}

/// A configuration the broker must refuse at start-up, naming the offending key.
#[test]
fn binary_rejects_bad_config() {
    let dir = std::env::temp_dir().join(format!("vireo-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("bad.toml");
    for (text, key) in [
        ("max_qos = 3\n", "max_qos"),
        ("no_such_setting = 1\n", "no_such_setting"),
    ] {
        std::fs::write(&config, text).unwrap();
        let out = Command::new(BIN)
            .args(["--config", config.to_str().unwrap()])
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{text:?} accepted");
        assert!(
            log.contains(key),
            "error for {text:?} does not name {key}: {log}"
        );
    }
}
