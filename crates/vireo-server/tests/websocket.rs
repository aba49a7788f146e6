//! MQTT over WebSocket from a client's side: a tungstenite client speaking raw MQTT frames
//! (binary frames only, frame and packet boundaries independent, the `mqtt` subprotocol,
//! refused upgrades, pings and the close handshake), `wss` through rustls, paho-mqtt and
//! MQTT.js (node) over `ws://`, and MQTT.js in headless Chromium loaded from a page this test
//! serves. Every wait has a deadline.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};
use vireo_codec::{
    Bytes, BytesMut, Connect, LastWill, Packet, ProtocolVersion, Publish, QoS, QosPid, Subscribe,
    SubscriptionOptions, decode,
};
use vireo_server::{ListenerConfig, ListenerProtocol, ServerHandle};

/// A broker with a plain TCP listener (first) and a WebSocket one (second).
fn broker() -> (ServerHandle, SocketAddr, SocketAddr) {
    broker_with(ListenerConfig::ws("127.0.0.1:0".parse().unwrap()))
}

fn broker_with(ws: ListenerConfig) -> (ServerHandle, SocketAddr, SocketAddr) {
    let broker = start_with(|c| {
        c.listeners = vec![ListenerConfig::tcp("127.0.0.1:0".parse().unwrap()), ws];
    });
    let addrs = broker.listener_addrs().to_vec();
    (broker, addrs[0], addrs[1])
}

fn publish(t: &str, qos: QosPid, payload: Vec<u8>) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic(t),
        properties: Default::default(),
        payload: Bytes::from(payload),
    }
}

fn encode_v311(p: &Packet) -> Vec<u8> {
    let mut buf = BytesMut::new();
    p.encode(ProtocolVersion::V311, &mut buf).unwrap();
    buf.to_vec()
}

/// An MQTT client over a WebSocket, speaking raw frames.
struct WsClient<S: Read + Write> {
    ws: WebSocket<S>,
    buf: BytesMut,
    version: ProtocolVersion,
}

fn request(
    addr: SocketAddr,
    path: &str,
    protocol: Option<&str>,
) -> tungstenite::handshake::client::Request {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    if let Some(p) = protocol {
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", p.parse().unwrap());
    }
    req
}

impl WsClient<TcpStream> {
    /// Opens a WebSocket offering `mqtt`; checks the broker chose it [MQTT-6.0.0-4].
    fn open(addr: SocketAddr) -> Self {
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        Self::over(tcp, request(addr, "/mqtt", Some("mqtt")))
    }
}

impl<S: Read + Write> WsClient<S> {
    fn over(stream: S, req: tungstenite::handshake::client::Request) -> Self {
        let (ws, response) = tungstenite::client(req, stream).expect("WebSocket upgrade");
        assert_eq!(response.status(), 101);
        // [MQTT-6.0.0-4]
        assert_eq!(
            response.headers().get("Sec-WebSocket-Protocol").unwrap(),
            "mqtt"
        );
        Self {
            ws,
            buf: BytesMut::new(),
            version: ProtocolVersion::V311,
        }
    }

    fn send_bytes(&mut self, bytes: Vec<u8>) {
        self.ws.send(Message::Binary(bytes.into())).unwrap();
    }

    fn send(&mut self, p: &Packet) {
        let mut frame = BytesMut::new();
        p.encode(self.version, &mut frame).unwrap();
        self.send_bytes(frame.to_vec());
    }

    /// The next MQTT packet; every frame the broker sends must be binary [MQTT-6.0.0-1].
    fn recv(&mut self) -> Packet {
        loop {
            if let Some(p) = decode(&mut self.buf, self.version, usize::MAX).unwrap() {
                return p;
            }
            match self.ws.read().expect("a frame within WAIT") {
                Message::Binary(b) => self.buf.extend_from_slice(&b),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("the broker sent a non-binary frame: {other:?}"),
            }
        }
    }

    fn connect(&mut self, id: &str) {
        self.send(&Packet::Connect(Box::new(Connect::new(id))));
        match self.recv() {
            Packet::ConnAck(ack) => assert_eq!(ack.code.0, 0, "CONNACK {ack:?}"),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Whether the broker ends the connection (close frame or stream end) within WAIT,
    /// sending no MQTT bytes before it.
    fn closed_without_mqtt(&mut self) -> bool {
        loop {
            match self.ws.read() {
                Ok(Message::Binary(b)) => panic!("MQTT bytes before the close: {b:?}"),
                Ok(Message::Close(_)) => {}
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return false;
                }
                Err(_) => return true,
            }
        }
    }
}

/// [MQTT-6.0.0-4] the broker selects `mqtt`; QoS 0 and 1 both ways between a WebSocket client
/// and a TCP client, every broker frame binary [MQTT-6.0.0-1].
#[test]
fn mqtt_6_0_0_4_websocket_pubsub_with_tcp_clients() {
    let (_broker, tcp, ws) = broker();
    let mut web = WsClient::open(ws);
    web.connect("web");
    web.send(&Packet::Subscribe(Subscribe {
        packet_id: pid(1),
        properties: Default::default(),
        filters: vec![(
            "from-tcp".into(),
            SubscriptionOptions::qos(QoS::AtLeastOnce),
        )],
    }));
    assert!(matches!(web.recv(), Packet::SubAck(_)));
    let mut plain = Client::connect(tcp, "plain");
    plain.subscribe(&[("from-web", QoS::AtLeastOnce)]);

    plain.publish("from-tcp", b"hello web", QoS::AtLeastOnce, false, 1);
    match web.recv() {
        Packet::Publish(p) => {
            assert_eq!(&p.topic[..], "from-tcp");
            assert_eq!(&p.payload[..], b"hello web");
        }
        other => panic!("expected PUBLISH, got {other:?}"),
    }
    web.send(&Packet::Publish(publish(
        "from-web",
        QosPid::AtMostOnce,
        b"hello tcp".to_vec(),
    )));
    let got = plain.recv_publish();
    assert_eq!(&got.payload[..], b"hello tcp");
}

/// [MQTT-6.0.0-2] frame and packet boundaries are independent: a CONNECT split over two
/// binary frames gets its CONNACK; two PINGREQs in one frame get two PINGRESPs; a 1 MB
/// PUBLISH fragmented into many frames arrives whole.
#[test]
fn mqtt_6_0_0_2_frames_and_packets_are_independent() {
    let (_broker, tcp, ws) = broker_with(ListenerConfig::ws("127.0.0.1:0".parse().unwrap()));
    let mut web = WsClient::open(ws);
    let connect = encode_v311(&Packet::Connect(Box::new(Connect::new("split"))));
    let (a, b) = connect.split_at(5);
    web.send_bytes(a.to_vec());
    web.send_bytes(b.to_vec());
    assert!(matches!(web.recv(), Packet::ConnAck(_)));
    web.send_bytes(vec![0xC0, 0x00, 0xC0, 0x00]);
    assert!(matches!(web.recv(), Packet::PingResp));
    assert!(matches!(web.recv(), Packet::PingResp));

    let mut plain = Client::connect(tcp, "big-sub");
    plain.subscribe(&[("big", QoS::AtMostOnce)]);
    let payload = vec![7u8; 900 * 1024];
    let frame = encode_v311(&Packet::Publish(publish(
        "big",
        QosPid::AtMostOnce,
        payload.clone(),
    )));
    for chunk in frame.chunks(16 * 1024) {
        web.send_bytes(chunk.to_vec());
    }
    let got = plain.recv_publish();
    assert_eq!(got.payload.len(), payload.len());
    assert!(got.payload.iter().all(|&b| b == 7));
}

/// [MQTT-6.0.0-1] a CONNECT in a text frame closes the connection with no CONNACK.
#[test]
fn mqtt_6_0_0_1_text_frame_closes_the_connection() {
    let (_broker, _tcp, ws) = broker();
    let mut web = WsClient::open(ws);
    let connect = encode_v311(&Packet::Connect(Box::new(Connect::new("text"))));
    let text = String::from_utf8(connect).expect("this CONNECT is ASCII");
    web.ws.send(Message::Text(text.into())).unwrap();
    assert!(web.closed_without_mqtt(), "still open after a text frame");
}

/// Broker policy for [MQTT-6.0.0-3]: an upgrade that does not offer `mqtt` is refused with
/// 400; one for another path gets 404; `mqttv3.1` (MQTT 3.1 clients) is accepted too.
#[test]
fn upgrades_without_mqtt_or_for_another_path_are_refused() {
    let (_broker, _tcp, ws) = broker();
    let status = |path: &str, protocol: Option<&str>| {
        let mut tcp = TcpStream::connect(ws).unwrap();
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        let offer = protocol.map_or(String::new(), |p| {
            format!("Sec-WebSocket-Protocol: {p}\r\n")
        });
        write!(
            tcp,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
        )
        .unwrap();
        let mut response = String::new();
        let mut buf = [0u8; 1024];
        while !response.contains("\r\n\r\n") {
            let n = tcp.read(&mut buf).expect("a response within WAIT");
            assert!(n > 0, "closed before a response");
            response.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        // Header names are case-insensitive (the http crate writes them in lower case).
        (response[9..12].to_owned(), response.to_ascii_lowercase())
    };
    assert_eq!(status("/mqtt", None).0, "400");
    assert_eq!(status("/mqtt", Some("chat, superchat")).0, "400");
    assert_eq!(status("/other", Some("mqtt")).0, "404");
    let (code, response) = status("/mqtt", Some("mqttv3.1"));
    assert_eq!(code, "101");
    assert!(
        response.contains("sec-websocket-protocol: mqttv3.1"),
        "{response}"
    );
    let (code, response) = status("/mqtt", Some("wamp, mqtt"));
    assert_eq!(code, "101");
    assert!(
        response.contains("sec-websocket-protocol: mqtt\r\n"),
        "{response}"
    );
}

/// A configured path is served instead of `/mqtt`.
#[test]
fn configured_path_is_served() {
    let (_broker, _tcp, ws) = broker_with(ListenerConfig {
        path: Some("/ws/broker".into()),
        ..ListenerConfig::ws("127.0.0.1:0".parse().unwrap())
    });
    let tcp = TcpStream::connect(ws).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let mut web = WsClient::over(tcp, request(ws, "/ws/broker", Some("mqtt")));
    web.connect("pathed");
}

/// WebSocket pings are answered with pongs (RFC 6455), and a close frame gets its reply and
/// ends the connection; a client that closes that way without DISCONNECT has its Will sent.
#[test]
fn pings_and_the_close_handshake() {
    let (_broker, tcp, ws) = broker();
    let mut watcher = Client::connect(tcp, "watcher");
    watcher.subscribe(&[("will/web", QoS::AtMostOnce)]);
    let mut web = WsClient::open(ws);
    let mut connect = Connect::new("willing");
    connect.will = Some(LastWill {
        topic: topic("will/web"),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Default::default(),
    });
    web.send(&Packet::Connect(Box::new(connect)));
    assert!(matches!(web.recv(), Packet::ConnAck(_)));
    web.ws.send(Message::Ping(vec![1, 2, 3].into())).unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "no pong");
        if let Message::Pong(p) = web.ws.read().unwrap() {
            assert_eq!(&p[..], [1, 2, 3]);
            break;
        }
    }
    web.ws.close(None).unwrap();
    let deadline = Instant::now() + WAIT;
    let mut replied = false;
    loop {
        assert!(Instant::now() < deadline, "not closed");
        match web.ws.read() {
            Ok(Message::Close(_)) => replied = true,
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("close handshake: {e}"),
        }
    }
    assert!(replied, "no close reply");
    assert_eq!(&watcher.recv_publish().payload[..], b"gone");
}

/// Slowloris over WebSocket: a client that sends part of a frame (its header declares
/// 60,000 bytes, 1,000 follow) and no more, and one that sends half an upgrade request, are
/// closed once that is older than `packet_timeout_secs` (the CONNECT timeout is far off),
/// though the MQTT read buffer holds nothing of either; a client that finishes its frames
/// is not.
#[test]
fn unfinished_frame_is_closed_after_packet_timeout() {
    let broker = start_with(|c| {
        c.packet_timeout_secs = 1;
        c.connect_timeout_secs = 60;
        c.listeners = vec![ListenerConfig::ws("127.0.0.1:0".parse().unwrap())];
    });
    let ws = broker.listener_addrs()[0];
    let mut hoarder = WsClient::open(ws);
    hoarder.connect("hoarder");
    let mut steady = WsClient::open(ws);
    steady.connect("steady");
    // A masked binary frame header with a 16-bit length, then a fraction of the payload.
    let mut partial = vec![0x82, 0x80 | 126, 0xEA, 0x60, 1, 2, 3, 4];
    partial.extend(vec![0u8; 1000]);
    hoarder.ws.get_mut().write_all(&partial).unwrap();
    let mut half_upgrade = TcpStream::connect(ws).unwrap();
    half_upgrade.set_read_timeout(Some(WAIT)).unwrap();
    half_upgrade
        .write_all(b"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
        .unwrap();
    let started = Instant::now();
    assert!(hoarder.closed_without_mqtt(), "the unfinished frame stays");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "closed too soon: {took:?}"
    );
    let mut rest = Vec::new();
    assert!(
        half_upgrade.read_to_end(&mut rest).is_ok() && rest.is_empty(),
        "the half upgrade stays, or got an answer: {rest:?}"
    );
    // The steady client pinged all along through MQTT and is still served.
    steady.send_bytes(vec![0xC0, 0x00]);
    assert!(matches!(steady.recv(), Packet::PingResp));
}

/// A client that floods pings and never reads the pongs is closed once the unread replies
/// pass a bound, instead of the broker holding them without end; another client is served.
#[test]
fn ping_flood_without_reading_is_closed() {
    let (_broker, _tcp, ws) = broker();
    let mut flooder = WsClient::open(ws);
    flooder.connect("pinger");
    let mut steady = WsClient::open(ws);
    steady.connect("steady");
    // Masked ping frames with 125-byte payloads, written raw (tungstenite's client would
    // read pongs as it goes).
    let mut ping = vec![0x89, 0x80 | 125, 9, 8, 7, 6];
    ping.extend(vec![0u8; 125]);
    let burst: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 1000)
        .collect();
    let started = Instant::now();
    let closed = loop {
        // The kernel's buffers take several megabytes before the pongs back up in the broker.
        if flooder.ws.get_mut().write_all(&burst).is_err() {
            break true;
        }
        if started.elapsed() > WAIT * 4 {
            break false;
        }
    };
    assert!(closed, "still open after {:?} of pings", started.elapsed());
    steady.send_bytes(vec![0xC0, 0x00]);
    assert!(matches!(steady.recv(), Packet::PingResp));
}

/// `wss`: the same over TLS (rustls client, test CA), MQTT 5.0.
#[test]
fn v5_wss_listener() {
    let certs = Certs::new("wss");
    let (_broker, tcp, wss) = broker_with(ListenerConfig {
        protocol: ListenerProtocol::Wss,
        ..certs.listener()
    });
    let mut plain = Client::connect(tcp, "plain");
    plain.subscribe(&[("secure/#", QoS::AtLeastOnce)]);
    let mut web = WsClient::over(tls_stream(wss, &certs), request(wss, "/mqtt", Some("mqtt")));
    web.version = ProtocolVersion::V5;
    web.send(&Packet::Connect(Box::new(Client::v5("wss-5", &[]))));
    match web.recv() {
        Packet::ConnAck(ack) => assert_eq!(ack.code.0, 0),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    web.send(&Packet::Publish(publish(
        "secure/a",
        QosPid::new(QoS::AtLeastOnce, pid(9)),
        vec![3u8; 200 * 1024],
    )));
    match web.recv() {
        Packet::PubAck(ack) => assert_eq!(ack.packet_id, pid(9)),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    assert_eq!(plain.recv_publish().payload.len(), 200 * 1024);
}

/// paho-mqtt (`transport="websockets"`) and MQTT.js (node, `ws://`), 3.1.1 and 5.0.
#[test]
fn real_clients_over_websocket() {
    let (_broker, _tcp, ws) = broker();
    let port = ws.port().to_string();
    let dir = format!("{}/tests/clients", env!("CARGO_MANIFEST_DIR"));
    let python = if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    for (interpreter, script, install) in [
        (python, "paho_ws.py", "apt-get install python3-paho-mqtt"),
        (
            "node",
            "mqttjs_ws.js",
            "npm ci --prefix crates/vireo-server/tests/clients",
        ),
    ] {
        let out = Command::new("timeout")
            .args(["60", interpreter, &format!("{dir}/{script}"), &port])
            .output()
            .unwrap_or_else(|e| panic!("{interpreter} not runnable ({e}): {install}"));
        assert!(
            out.status.success(),
            "{script} failed ({install} if a module is missing):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Serves `page` at `/` and MQTT.js's browser bundle at `/mqtt.min.js` on a free loopback
/// port, until the returned listener's thread sees the test end (it is detached).
fn serve_page(page: String) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let bundle = format!(
        "{}/tests/clients/node_modules/mqtt/dist/mqtt.min.js",
        env!("CARGO_MANIFEST_DIR")
    );
    let bundle = std::fs::read(&bundle).unwrap_or_else(|e| {
        panic!("{bundle}: {e} (npm ci --prefix crates/vireo-server/tests/clients)")
    });
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(WAIT));
            let mut request = Vec::new();
            let mut buf = [0u8; 2048];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(n) if n > 0 => request.extend_from_slice(&buf[..n]),
                    _ => break,
                }
            }
            let line = String::from_utf8_lossy(&request);
            let (status, kind, body): (&str, &str, &[u8]) = if line.starts_with("GET / ") {
                ("200 OK", "text/html", page.as_bytes())
            } else if line.starts_with("GET /mqtt.min.js ") {
                ("200 OK", "application/javascript", &bundle)
            } else {
                ("404 Not Found", "text/plain", b"")
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(body);
        }
    });
    addr
}

/// MQTT.js in a real browser: headless Chromium loads a page this test serves; the page
/// connects to `ws://127.0.0.1:PORT/mqtt` (MQTT 5.0), subscribes, publishes QoS 1 to itself,
/// and reports what came back by publishing it, which a TCP client here receives.
#[test]
fn mqttjs_in_headless_chromium() {
    let (_broker, tcp, ws) = broker();
    let mut report = Client::connect(tcp, "report");
    report.subscribe(&[("browser/report", QoS::AtLeastOnce)]);
    let page = format!(
        r#"<!doctype html><html><body><script src="/mqtt.min.js"></script><script>
const c = mqtt.connect('ws://127.0.0.1:{port}/mqtt', {{ clientId: 'chromium', protocolVersion: 5, reconnectPeriod: 0 }});
const say = (what) => c.publish('browser/report', what, {{ qos: 1 }});
c.on('connect', () => c.subscribe('browser/echo', {{ qos: 1 }}, (err, granted) => {{
  if (err || granted[0].qos !== 1) {{ say('subscribe failed'); return; }}
  c.publish('browser/echo', 'from the browser', {{ qos: 1 }});
}}));
c.on('message', (topic, payload, packet) => {{
  if (topic === 'browser/echo') say('echo ' + packet.qos + ' ' + payload.toString());
}});
</script></body></html>"#,
        port = ws.port()
    );
    let site = serve_page(page);
    let profile = std::env::temp_dir().join(format!("vireo-chromium-{}", std::process::id()));
    let mut chromium = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            &format!("--user-data-dir={}", profile.display()),
            &format!("http://{site}/"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium runs (apt-get install chromium)");
    // Chromium takes seconds to start on a loaded 2-core machine.
    let got = report.recv_within(Duration::from_secs(60));
    let _ = chromium.kill();
    let _ = chromium.wait();
    let _ = std::fs::remove_dir_all(&profile);
    match got {
        Some(Packet::Publish(p)) => {
            assert_eq!(&p.payload[..], b"echo 1 from the browser");
        }
        other => panic!("no report from the browser within 60 s: {other:?}"),
    }
}
