//! The binary: exit status 0 with output files on a passing run, 1 on loss, 2 when the broker
//! cannot be reached.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::TcpListener;
use std::process::Command;

use common::TempDir;
use common::fake::{Behaviour, start};
use vireo_loadtest::sink::Sink;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vireo-loadtest"))
}

#[test]
fn passing_run_writes_every_file() {
    let sink = Sink::start("127.0.0.1:0".parse().unwrap()).unwrap();
    let dir = TempDir::new("cli");
    let (json, hgrm, svg) = (
        dir.0.join("r.json"),
        dir.0.join("r.hgrm"),
        dir.0.join("r.svg"),
    );
    let out = bin()
        .args([
            "fan-in",
            "--publishers",
            "3",
            "--subscribers",
            "1",
            "--qos",
            "1",
        ])
        .args([
            "--rate",
            "500",
            // Two seconds, so that one of the once-a-second timeline samples falls inside the
            // run phase even when a loaded machine delays set-up or the sampling (with one
            // second, both samples could land in set-up and drain: seen once on a busy box).
            "--duration",
            "2",
            "--threads",
            "1",
            "--quiet",
        ])
        .args(["--port", &sink.local_addr().port().to_string()])
        .arg("--json")
        .arg(&json)
        .arg("--hgrm")
        .arg(&hgrm)
        .arg("--plot")
        .arg(&svg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("result       PASS"), "{stdout}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let m = &report["messages"];
    assert_eq!(m["published"], m["unique"]);
    assert!(report["latency"]["p99_9_us"].as_f64().unwrap() > 0.0);
    let timeline = report["timeline"].as_array().unwrap();
    assert!(timeline.iter().any(|s| s["phase"] == "run"), "{timeline:?}");
    let hgrm = std::fs::read_to_string(&hgrm).unwrap();
    assert!(hgrm.trim_start().starts_with("Value"), "{hgrm}");
    assert!(hgrm.contains("#[Max"), "{hgrm}");
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
}

#[test]
fn loss_exits_1_and_unreachable_exits_2() {
    let lossy = start(Behaviour::DropEvery(10));
    let status = bin()
        .args([
            "p2p",
            "--pairs",
            "2",
            "--qos",
            "1",
            "--rate",
            "200",
            "--duration",
            "1",
        ])
        .args(["--quiet", "--port", &lossy.port().to_string()])
        .output()
        .unwrap();
    assert_eq!(
        status.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(String::from_utf8_lossy(&status.stderr).contains("lost"));

    let free = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = bin()
        .args(["fan-out", "--quiet", "--port", &free.port().to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("broker unreachable"));
}

/// `--plot F.png` writes the same plot as a PNG (rasterised SVG), for where SVG is not taken.
#[test]
fn plot_as_png() {
    let sink = Sink::start("127.0.0.1:0".parse().unwrap()).unwrap();
    let dir = TempDir::new("cli-png");
    let png = dir.0.join("r.png");
    let out = bin()
        .args(["fan-in", "--publishers", "1", "--subscribers", "1"])
        .args([
            "--rate",
            "200",
            "--duration",
            "1",
            "--threads",
            "1",
            "--quiet",
        ])
        .args(["--port", &sink.local_addr().port().to_string()])
        .arg("--plot")
        .arg(&png)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    // 1000 x 800, from the IHDR chunk.
    assert_eq!(&bytes[16..24], &[0, 0, 0x03, 0xE8, 0, 0, 0x03, 0x20]);
}
