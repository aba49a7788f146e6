//! Shared helpers for the loopback integration tests: start a broker on an ephemeral port and
//! talk to it from a raw socket, decoding what comes back with the project's codec.
//!
//! Every wait has a deadline; nothing sleeps to synchronise.
//!
//! [`v5`] adds MQTT 5.0 helpers (options, Wills, sessions, subscribers, reason-code tables) and
//! [`raw`] byte-level frames with the [`Raw`] socket; both are re-exported here. Each test file
//! compiles this module on its own and uses only some of it, hence `allow(dead_code)`.

#![allow(dead_code, clippy::unwrap_used)]

mod certs;
mod raw;
mod v5;

// Not every test file uses either, and an unused glob re-export warns like an unused import.
#[allow(unused_imports)]
pub use certs::*;
#[allow(unused_imports)]
pub use raw::*;
#[allow(unused_imports)]
pub use v5::*;

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use vireo_codec::{
    Ack, Bytes, BytesMut, ConnAck, Connect, LastWill, Packet, PacketId, Properties, Property,
    ProtocolVersion, Publish, QoS, QosPid, Subscribe, SubscriptionOptions, TopicName, Unsubscribe,
    decode,
};
use vireo_server::{Config, Server, ServerHandle};

/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long a test waits to be sure something does *not* happen.
pub const QUIET: Duration = Duration::from_millis(300);

/// A broker on 127.0.0.1 with an OS-chosen port, two unpinned workers.
pub fn start() -> ServerHandle {
    start_with(|_| {})
}

pub fn start_with(f: impl FnOnce(&mut Config)) -> ServerHandle {
    let mut config = Config {
        bind: "127.0.0.1:0".parse().unwrap(),
        workers: 2,
        pin_workers: false,
        ..Config::default()
    };
    f(&mut config);
    Server::start(config).expect("broker starts")
}

pub fn pid(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

pub fn topic(s: &str) -> TopicName {
    TopicName::try_from(s).unwrap()
}

/// Runs one of Debian's mosquitto clients (`mosquitto_pub`, `mosquitto_sub`) against the
/// broker on 127.0.0.1:`port`, with `args`; its output, whatever its exit status.
pub fn mosquitto_tool(tool: &str, port: u16, args: &[&str]) -> std::process::Output {
    std::process::Command::new(tool)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool} not runnable ({e}): apt-get install mosquitto-clients"))
}

/// The port a `vireo` process listens on, from its log (`addr=` in the first line that has
/// it). A thread reads the log to its end, so the process never blocks on a full pipe.
pub fn listening_port(log: impl std::io::Read + Send + 'static) -> u16 {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(log).lines() {
            let Ok(line) = line else { return };
            if let Some(rest) = line.split("addr=").nth(1)
                && let Some(tx) = tx.take()
            {
                let addr = rest.split_whitespace().next().unwrap_or_default();
                let clean: String = addr
                    .chars()
                    .filter(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                    .collect();
                let _ = tx.send(clean.rsplit(':').next().and_then(|p| p.parse().ok()));
            }
        }
    });
    rx.recv_timeout(WAIT)
        .ok()
        .flatten()
        .expect("broker never logged its address")
}

/// The next line from a process's log (read on a thread into `lines`) that contains `what`,
/// within [`WAIT`]; fails the test otherwise.
pub fn line_within(lines: &std::sync::mpsc::Receiver<String>, what: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(what) => return line,
            Ok(_) => {}
            Err(e) => panic!("no `{what}` in the log ({e})"),
        }
    }
}

/// `GET path` on an HTTP endpoint: the status line and headers, and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: vireo\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

/// The `vireo` binary run with `args`, its log (standard error) read line by line on a
/// thread of its own so that waiting for a line has a deadline; killed when dropped.
pub struct Broker {
    pub child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// Its working directory: the binary keeps its state in `./vireo-data` unless told
    /// otherwise, and brokers of parallel tests must not share one.
    pub workdir: Option<tempfile::TempDir>,
}

impl Broker {
    pub fn spawn(args: &[&str]) -> Self {
        let workdir = tempfile::tempdir().unwrap();
        let mut broker = Self::spawn_in(workdir.path(), args);
        broker.workdir = Some(workdir);
        broker
    }

    /// [`Broker::spawn`] in `dir`, which outlives it (for a restart in the same place).
    pub fn spawn_in(dir: &std::path::Path, args: &[&str]) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vireo"))
            .args(args)
            .current_dir(dir)
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let log = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(log).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            lines,
            workdir: None,
        }
    }

    /// The next log line that contains `what`, within [`WAIT`].
    pub fn line_with(&self, what: &str) -> String {
        line_within(&self.lines, what)
    }

    /// Where it listens, from its "listening" line.
    pub fn addr(&self) -> SocketAddr {
        let line = self.line_with("listening");
        let at = line.find("127.0.0.1:").expect("a loopback address") + "127.0.0.1:".len();
        let port: String = line[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        SocketAddr::from(([127, 0, 0, 1], port.parse().unwrap()))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw MQTT client over a blocking socket.
pub struct Client {
    pub stream: TcpStream,
    buf: BytesMut,
    /// Packets read while waiting for a specific one (e.g. a PUBLISH between PUBREC and
    /// PUBREL), handed out first by the next `recv`.
    stash: VecDeque<Packet>,
    pub version: ProtocolVersion,
}

impl Client {
    /// Opens a socket; sends nothing.
    pub fn open(addr: SocketAddr) -> Self {
        Self::over(TcpStream::connect(addr).expect("connect"))
    }

    /// A 3.1.1 client over a socket already connected.
    fn over(stream: TcpStream) -> Self {
        stream.set_nodelay(true).unwrap();
        Self {
            stream,
            buf: BytesMut::new(),
            stash: VecDeque::new(),
            version: ProtocolVersion::V311,
        }
    }

    /// Opens a socket from the loopback address `source` (e.g. 127.0.0.2); sends nothing.
    pub fn open_from(source: std::net::IpAddr, addr: SocketAddr) -> Self {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket
            .bind(&SocketAddr::new(source, 0).into())
            .expect("bind");
        socket.connect(&addr.into()).expect("connect");
        Self::over(socket.into())
    }

    /// From `source`, connects as `id` (clean session) and asserts acceptance.
    pub fn connect_from(source: std::net::IpAddr, addr: SocketAddr, id: &str) -> Self {
        let mut c = Self::open_from(source, addr);
        c.send(&Packet::Connect(Box::new(Connect::new(id))));
        match c.recv() {
            Some(Packet::ConnAck(a)) if a.code.0 == 0 => c,
            other => panic!("expected CONNACK 0, got {other:?}"),
        }
    }

    /// Opens, sends `connect`, and returns the client with the CONNACK it got.
    pub fn connect_with(addr: SocketAddr, connect: Connect) -> (Self, Packet) {
        let mut c = Self::open(addr);
        c.version = connect.protocol;
        c.send(&Packet::Connect(Box::new(connect)));
        let ack = c.recv().expect("CONNACK");
        (c, ack)
    }

    /// Connects with a clean session and asserts acceptance.
    pub fn connect(addr: SocketAddr, id: &str) -> Self {
        Self::connect_session(addr, id, true).0
    }

    /// Connects as `id` with a persistent session, if a broker is there and accepts (for
    /// clients that outlive brokers); the CONNACK's Session Present.
    pub fn try_connect_persistent(
        addr: SocketAddr,
        id: &str,
        wait: Duration,
    ) -> Option<(Self, bool)> {
        let mut c = Self::over(TcpStream::connect(addr).ok()?);
        let mut connect = Connect::new(id);
        connect.clean_start = false;
        c.send(&Packet::Connect(Box::new(connect)));
        match c.recv_within(wait)? {
            Packet::ConnAck(a) if a.code.0 == 0 => Some((c, a.session_present)),
            other => panic!("{id}: expected an accepting CONNACK, got {other:?}"),
        }
    }

    /// Connects with the given clean-session flag; returns the session-present flag.
    pub fn connect_session(addr: SocketAddr, id: &str, clean: bool) -> (Self, bool) {
        let mut connect = Connect::new(id);
        connect.clean_start = clean;
        let (c, ack) = Self::connect_with(addr, connect);
        match ack {
            Packet::ConnAck(a) if a.code.0 == 0 => (c, a.session_present),
            other => panic!("expected accepting CONNACK, got {other:?}"),
        }
    }

    /// Connects with a Will.
    pub fn connect_will(
        addr: SocketAddr,
        id: &str,
        will_topic: &str,
        payload: &str,
        qos: QoS,
        retain: bool,
    ) -> Self {
        let mut connect = Connect::new(id);
        connect.will = Some(LastWill {
            topic: topic(will_topic),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            qos,
            retain,
            properties: Default::default(),
        });
        let (c, ack) = Self::connect_with(addr, connect);
        assert!(
            matches!(ack, Packet::ConnAck(ref a) if a.code.0 == 0),
            "{ack:?}"
        );
        c
    }

    /// A 5.0 CONNECT with a clean start and these properties.
    pub fn v5(id: &str, props: &[Property]) -> Connect {
        let mut c = Connect::new(id);
        c.protocol = ProtocolVersion::V5;
        for p in props {
            c.properties.push(p.clone());
        }
        c
    }

    /// Sends a 5.0 CONNECT; returns the client and the CONNACK (panics on anything else).
    pub fn connect_v5_with(addr: SocketAddr, connect: Connect) -> (Self, ConnAck) {
        let (c, ack) = Self::connect_with(addr, connect);
        match ack {
            Packet::ConnAck(a) => (c, a),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Connects with 5.0 and these CONNECT properties; asserts acceptance.
    pub fn connect_v5(addr: SocketAddr, id: &str, props: &[Property]) -> Self {
        let (c, ack) = Self::connect_v5_with(addr, Self::v5(id, props));
        assert_eq!(ack.code.0, 0, "CONNACK {ack:?}");
        c
    }

    /// Subscribes one filter with full options and an optional subscription identifier;
    /// returns the SUBACK codes.
    pub fn subscribe_opts(
        &mut self,
        id: u16,
        filters: &[(&str, SubscriptionOptions)],
        sub_id: Option<u32>,
    ) -> Vec<u8> {
        let mut properties = Properties::new();
        if let Some(s) = sub_id {
            properties.push(Property::SubscriptionIdentifier(s));
        }
        self.send(&Packet::Subscribe(Subscribe {
            packet_id: pid(id),
            properties,
            filters: filters.iter().map(|(f, o)| ((*f).into(), *o)).collect(),
        }));
        match self.recv() {
            Some(Packet::SubAck(s)) => {
                assert_eq!(s.packet_id, pid(id));
                s.codes.iter().map(|c| c.0).collect()
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Sends a PUBLISH with properties (and the topic as given, possibly empty); waits for
    /// nothing.
    pub fn send_publish(
        &mut self,
        t: &str,
        payload: &[u8],
        qos: QosPid,
        retain: bool,
        props: &[Property],
    ) {
        let topic = if t.is_empty() {
            TopicName::empty()
        } else {
            topic(t)
        };
        let mut p = Publish::new(topic, Bytes::copy_from_slice(payload));
        p.qos = qos;
        p.retain = retain;
        for prop in props {
            p.properties.push(prop.clone());
        }
        self.send(&Packet::Publish(p));
    }

    /// The 5.0 DISCONNECT the broker sends before closing: its reason code, then asserts the
    /// close follows [MQTT-3.14.4-2].
    pub fn expect_disconnect(&mut self) -> u8 {
        let reason = loop {
            match self.recv() {
                Some(Packet::Disconnect(d)) => break d.reason.0,
                // Acks or deliveries that were already queued may come first.
                Some(
                    Packet::PubAck(_) | Packet::PubRec(_) | Packet::Publish(_) | Packet::SubAck(_),
                ) => {}
                other => panic!("expected DISCONNECT, got {other:?}"),
            }
        };
        assert!(self.closed_within(WAIT, false), "close after DISCONNECT");
        reason
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        // The broker may already have closed: tests then assert on what they read.
        let _ = self.stream.write_all(bytes);
    }

    pub fn send(&mut self, packet: &Packet) {
        let mut buf = BytesMut::new();
        packet.encode(self.version, &mut buf).unwrap();
        self.send_raw(&buf);
    }

    pub fn subscribe(&mut self, filters: &[(&str, QoS)]) -> Vec<u8> {
        self.subscribe_id(1, filters)
    }

    pub fn subscribe_id(&mut self, id: u16, filters: &[(&str, QoS)]) -> Vec<u8> {
        self.send(&Packet::Subscribe(Subscribe {
            packet_id: pid(id),
            properties: Default::default(),
            filters: filters
                .iter()
                .map(|(f, q)| ((*f).into(), SubscriptionOptions::qos(*q)))
                .collect(),
        }));
        match self.recv() {
            Some(Packet::SubAck(s)) => {
                assert_eq!(s.packet_id, pid(id));
                s.codes.iter().map(|c| c.0).collect()
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    pub fn unsubscribe(&mut self, id: u16, filters: &[&str]) {
        self.send(&Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(id),
            properties: Default::default(),
            filters: filters.iter().map(|f| (*f).into()).collect(),
        }));
        match self.recv() {
            Some(Packet::UnsubAck(s)) => assert_eq!(s.packet_id, pid(id)),
            other => panic!("expected UNSUBACK, got {other:?}"),
        }
    }

    /// Publishes; for QoS 1/2 with `id`, completes the handshake and checks the ack ids.
    pub fn publish(&mut self, t: &str, payload: &[u8], qos: QoS, retain: bool, id: u16) {
        let p = Publish {
            dup: false,
            qos: QosPid::new(qos, pid(id.max(1))),
            retain,
            topic: topic(t),
            properties: Default::default(),
            payload: Bytes::copy_from_slice(payload),
        };
        self.send(&Packet::Publish(p));
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => match self.recv() {
                Some(Packet::PubAck(a)) => assert_eq!(a.packet_id, pid(id)),
                other => panic!("expected PUBACK, got {other:?}"),
            },
            QoS::ExactlyOnce => {
                match self.recv() {
                    Some(Packet::PubRec(a)) => assert_eq!(a.packet_id, pid(id)),
                    other => panic!("expected PUBREC, got {other:?}"),
                }
                self.send(&Packet::PubRel(Ack::new(pid(id))));
                match self.recv() {
                    Some(Packet::PubComp(a)) => assert_eq!(a.packet_id, pid(id)),
                    other => panic!("expected PUBCOMP, got {other:?}"),
                }
            }
        }
    }

    /// The next packet within [`WAIT`]; `None` on EOF or timeout.
    pub fn recv(&mut self) -> Option<Packet> {
        self.recv_within(WAIT)
    }

    /// The next packet within `wait`; `None` on EOF, error or timeout.
    pub fn recv_within(&mut self, wait: Duration) -> Option<Packet> {
        if let Some(p) = self.stash.pop_front() {
            return Some(p);
        }
        self.recv_wire(wait)
    }

    /// The next packet off the wire, ignoring the stash.
    fn recv_wire(&mut self, wait: Duration) -> Option<Packet> {
        let deadline = Instant::now() + wait;
        loop {
            match decode(&mut self.buf, self.version, usize::MAX) {
                Ok(Some(p)) => return Some(p),
                Ok(None) => {}
                Err(e) => panic!("broker sent a malformed packet: {e}"),
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None;
                }
                Err(_) => return None,
            }
        }
    }

    /// Receives a PUBLISH, failing the test on anything else.
    pub fn recv_publish(&mut self) -> Publish {
        match self.recv() {
            Some(Packet::Publish(p)) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Receives a PUBLISH and acknowledges it as its QoS requires.
    pub fn recv_publish_ack(&mut self) -> Publish {
        let p = self.recv_publish();
        match p.qos {
            QosPid::AtMostOnce => {}
            QosPid::AtLeastOnce(id) => self.send(&Packet::PubAck(Ack::new(id))),
            QosPid::ExactlyOnce(id) => {
                self.send(&Packet::PubRec(Ack::new(id)));
                loop {
                    match self.recv_wire(WAIT) {
                        Some(Packet::PubRel(a)) if a.packet_id == id => break,
                        Some(other) => self.stash.push_back(other),
                        None => panic!("expected PUBREL {id}, got nothing"),
                    }
                }
                self.send(&Packet::PubComp(Ack::new(id)));
            }
        }
        p
    }

    /// Asserts that nothing arrives for [`QUIET`].
    pub fn expect_nothing(&mut self) {
        if let Some(p) = self.recv_within(QUIET) {
            panic!("expected nothing, got {p:?}");
        }
    }

    /// Whether the broker closes the connection within [`WAIT`] without sending any packet.
    pub fn closed_silently(&mut self) -> bool {
        self.closed_within(WAIT, false)
    }

    /// Reads until EOF within `wait`. Fails if a packet arrives, unless `allow_packets`.
    pub fn closed_within(&mut self, wait: Duration, allow_packets: bool) -> bool {
        let deadline = Instant::now() + wait;
        let mut chunk = [0u8; 4096];
        loop {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.stream.read(&mut chunk) {
                Ok(0) => return allow_packets || self.buf.is_empty(),
                Ok(n) => {
                    if !allow_packets {
                        panic!("expected a silent close, got bytes {:02x?}", &chunk[..n]);
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return false;
                }
                Err(_) => return true, // reset counts as closed
            }
        }
    }

    /// Closes the socket without DISCONNECT.
    pub fn drop_connection(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    pub fn disconnect(mut self) {
        self.send_raw(&[0xE0, 0x00]);
        // Wait for the broker to close its side, so the DISCONNECT is processed.
        assert!(
            self.closed_within(WAIT, true),
            "broker closes after DISCONNECT"
        );
    }
}
