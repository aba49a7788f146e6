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
    let workdir = tempfile::tempdir().unwrap(); // its ./vireo-data, of its own
    let mut child = Command::new(BIN)
        .current_dir(workdir.path())
        .args(["--config", config.to_str().unwrap(), "--log-level", "info"])
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let port = listening_port(child.stderr.take().unwrap());
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
        // A worker would add it to an Instant and overflow.
        ("sys_interval = 18446744073709551615\n", "sys_interval"),
    ] {
        std::fs::write(&config, text).unwrap();
        let workdir = tempfile::tempdir().unwrap(); // its ./vireo-data, of its own
        let out = Command::new(BIN)
            .current_dir(workdir.path())
            .args(["--config", config.to_str().unwrap()])
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text:?} accepted");
        assert!(
            log.contains(key),
            "error for {text:?} does not name {key}: {log}"
        );
    }
}

/// Log lines up to and including the first that contains `until`, from a broker started
/// with `args` and without NO_COLOR (standard error is a pipe, not a terminal), within the
/// usual deadline; the broker is then killed.
fn log_until(args: &[&str], until: &str) -> Vec<String> {
    use std::io::BufRead;
    let workdir = tempfile::tempdir().unwrap(); // its ./vireo-data, of its own
    let mut child = Command::new(BIN)
        .current_dir(workdir.path())
        .args(["--bind", "127.0.0.1:0", "--workers", "1"])
        .args(args)
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = std::io::BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let until = until.to_owned();
    std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in log.lines().map_while(Result::ok) {
            let done = line.contains(&until);
            lines.push(line);
            if done {
                break;
            }
        }
        let _ = tx.send(lines);
    });
    let lines = rx.recv_timeout(WAIT);
    let _ = child.kill();
    let _ = child.wait();
    lines.expect("the broker logged it")
}

/// Logs go to standard error with no colour codes when it is not a terminal, even without
/// NO_COLOR: `vireo > vireo.log 2>&1` gives a clean file.
#[test]
fn logs_on_stderr_without_colour_when_not_a_terminal() {
    let lines = log_until(&[], "listening");
    assert!(lines.last().unwrap().contains("listening"));
    for line in &lines {
        assert!(!line.contains('\x1b'), "colour codes in {line:?}");
    }
}

/// `--log-format json` (or `log_format = "json"`): one JSON object per line, with the level
/// and the event's fields.
#[test]
fn json_logs_are_one_object_per_line() {
    let lines = log_until(&["--log-format", "json"], "listening");
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON object per line");
        assert!(v["level"].is_string(), "{line}");
    }
    let last: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(last["fields"]["message"], "listening");
    assert!(
        last["fields"]["addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:"))
    );
}

/// One info line per connect (client id, address, protocol, clean session, keep alive) and
/// one per close with its reason, as Mosquitto logs them.
#[test]
fn connects_and_closes_are_logged_with_their_reason() {
    let broker = Broker::spawn(&["--bind", "127.0.0.1:0", "--workers", "1"]);
    let addr = broker.addr();
    let next_with = |what: &str| broker.line_with(what);
    Client::connect(addr, "log-me").disconnect();
    let connected = next_with("client connected");
    for field in [
        "client=log-me",
        "peer=127.0.0.1:",
        "protocol=",
        "transport=\"tcp\"",
        "clean=true",
        "keep_alive=",
    ] {
        assert!(
            connected.contains(field),
            "{field} missing from {connected:?}"
        );
    }
    let closed = next_with("client disconnected");
    assert!(closed.contains("client=log-me"), "{closed:?}");
    assert!(closed.contains("sent DISCONNECT"), "{closed:?}");
    // A client that just goes away is logged as such.
    Client::connect(addr, "gone").drop_connection();
    assert!(next_with("client disconnected").contains("closed its connection"));
}

/// `vireo --check-config FILE`: 0 and what it found for a file the broker would start on;
/// 1 and the reason for one it would not (a bad value, a missing certificate, an ACL line it
/// cannot read), without binding anything.
#[test]
fn check_config_says_whether_the_broker_would_start() {
    let dir = std::env::temp_dir().join(format!("vireo-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let check = |text: &str| {
        let file = dir.join("vireo.toml");
        std::fs::write(&file, text).unwrap();
        let workdir = tempfile::tempdir().unwrap(); // its ./vireo-data, of its own
        Command::new(BIN)
            .current_dir(workdir.path())
            .arg("--check-config")
            .arg(&file)
            .output()
            .unwrap()
    };
    let acl = dir.join("acl");
    std::fs::write(&acl, "topic read a/#\n").unwrap();
    let good = check(&format!(
        "bind = \"127.0.0.1:1\"\nacl_file = \"{}\"\n",
        acl.display()
    ));
    let out = String::from_utf8_lossy(&good.stdout);
    assert!(good.status.success(), "{out}");
    assert!(out.contains("OK") && out.contains("1 rules"), "{out}");

    for (text, named) in [
        ("max_qos = 7\n".to_owned(), "max_qos"),
        (
            "[[listener]]\naddress = \"127.0.0.1:1\"\nprotocol = \"tls\"\n\
             tls_certificate = \"/nonexistent/cert.pem\"\ntls_key = \"/nonexistent/key.pem\"\n"
                .to_owned(),
            "/nonexistent/cert.pem",
        ),
        (
            {
                std::fs::write(dir.join("bad-acl"), "subscribe a/#\n").unwrap();
                format!("acl_file = \"{}\"\n", dir.join("bad-acl").display())
            },
            "bad-acl",
        ),
    ] {
        let bad = check(&text);
        let err = String::from_utf8_lossy(&bad.stderr);
        assert!(!bad.status.success(), "{text:?} passed the check");
        assert!(err.contains(named), "{err:?} does not name {named}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGHUP re-reads the configuration file's connection limits for the connections that come
/// next: a per-address cap set while running refuses the connection past it; a file that no
/// longer validates leaves the limits in force.
#[test]
fn sighup_reloads_the_connection_limits() {
    let dir = std::env::temp_dir().join(format!("vireo-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("vireo.toml");
    let base = "bind = \"127.0.0.1:0\"\nworkers = 1\n";
    std::fs::write(&config, base).unwrap();
    let broker = Broker::spawn(&["--config", config.to_str().unwrap()]);
    let addr = broker.addr();
    let hup = || {
        let pid = broker.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-HUP", &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    let source: std::net::IpAddr = "127.0.0.21".parse().unwrap();
    // No limit yet: three from one address.
    let held: Vec<Client> = (0..3)
        .map(|i| Client::connect_from(source, addr, &format!("free-{i}")))
        .collect();
    drop(held);
    std::fs::write(&config, format!("{base}max_connections_per_ip = 2\n")).unwrap();
    hup();
    assert!(
        broker
            .line_with("limits reloaded")
            .contains("max_connections_per_ip=2")
    );
    let fresh: std::net::IpAddr = "127.0.0.22".parse().unwrap();
    let _two: Vec<Client> = (0..2)
        .map(|i| Client::connect_from(fresh, addr, &format!("capped-{i}")))
        .collect();
    let refused = || {
        let mut c = Client::open_from(fresh, addr);
        c.send(&vireo_codec::Packet::Connect(Box::new(
            vireo_codec::Connect::new("one-too-many"),
        )));
        c.closed_silently()
    };
    assert!(refused(), "the third from the address is refused");
    // A file that no longer validates: the cap stays.
    std::fs::write(&config, format!("{base}max_qos = 9\n")).unwrap();
    hup();
    assert!(
        broker
            .line_with("limits in force are kept")
            .contains("max_qos")
    );
    assert!(refused(), "still capped");
    let _ = std::fs::remove_dir_all(&dir);
}
