//! Helpers shared by the loadtest integration tests: short configurations, a Mosquitto
//! process guard, and a tiny blocking fake broker that misbehaves on purpose.
#![allow(dead_code, clippy::unwrap_used)]

pub mod certs;
pub mod fake;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use vireo_loadtest::{Config, QoS, Scenario};

/// A one-second run against `addr`: two generator threads, short drain and timeouts.
pub fn quick(scenario: Scenario, addr: SocketAddr, qos: u8) -> Config {
    let mut c = Config::new(scenario);
    c.host = addr.ip().to_string();
    c.port = addr.port();
    c.qos = QoS::try_from(qos).unwrap();
    c.sub_qos = c.qos;
    c.duration = Some(Duration::from_secs(1));
    c.threads = 2;
    c.drain_quiet = Duration::from_millis(300);
    c.drain_timeout = Duration::from_secs(3);
    c.connect_timeout = Duration::from_secs(5);
    c
}

/// Asserts the counts of a lossless run add up.
pub fn assert_lossless(r: &vireo_loadtest::Report) {
    let m = &r.messages;
    assert!(m.published > 0, "nothing published: {r}");
    assert_eq!(
        m.expected,
        m.published * r.config.scenario.receivers_per_publisher()
    );
    assert_eq!(m.unique, m.expected, "{r}");
    assert_eq!(m.lost, 0, "{r}");
    assert_eq!(m.duplicated, 0, "{r}");
    assert_eq!(m.unrecognised, 0, "{r}");
    if r.config.qos != QoS::AtMostOnce {
        assert_eq!(m.acked, m.published, "{r}");
        assert_eq!(m.unacked, 0, "{r}");
    }
    assert_eq!(r.latency.count, m.delivered, "{r}");
    assert!(r.failures.is_empty(), "{r}");
}

/// A Mosquitto broker on a free loopback port, killed on drop.
pub struct Mosquitto {
    child: Child,
    pub addr: SocketAddr,
    _dir: TempDir,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The mosquitto binary, if installed (PATH, then /usr/sbin where Debian puts it).
pub fn mosquitto_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join("mosquitto"))
        .find(|p| p.is_file())
}

impl Mosquitto {
    /// Starts Mosquitto, or returns `None` (after saying so) when it is not installed.
    pub fn start() -> Option<Self> {
        let Some(bin) = mosquitto_binary() else {
            eprintln!("mosquitto is not installed: skipping");
            return None;
        };
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let dir = TempDir::new("mosquitto");
            let conf = dir.0.join("mosquitto.conf");
            // `max_inflight_messages` also caps a 3.1.1 client's incoming QoS 1/2 in flight
            // (default 20); the generator's window is 64, and Mosquitto drops a publisher that
            // goes past it whenever it falls behind. 0 is no maximum, as compare.py runs it.
            let text = format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n\
                 max_inflight_messages 0\nset_tcp_nodelay true\nlog_dest stderr\n"
            );
            std::fs::write(&conf, text).unwrap();
            let mut child = Command::new(&bin)
                .arg("-c")
                .arg(&conf)
                .stderr(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
            // Mosquitto logs "... running" once it listens; EOF means it exited.
            let running = lines
                .by_ref()
                .map_while(Result::ok)
                .any(|l| l.ends_with("running"));
            if running {
                // Keep draining its log so it never blocks on a full pipe; a failing test's
                // output then shows what Mosquitto said (the harness captures stderr).
                std::thread::spawn(move || {
                    lines
                        .map_while(Result::ok)
                        .for_each(|l| eprintln!("mosquitto: {l}"))
                });
                return Some(Self {
                    child,
                    addr: SocketAddr::from(([127, 0, 0, 1], port)),
                    _dir: dir,
                });
            }
            let _ = child.wait();
        }
        panic!("mosquitto did not start");
    }
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("vlt-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
