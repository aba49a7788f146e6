//! One MQTT client of a generator thread: its socket, buffers, connection state and role.
//!
//! I/O rules (mio is edge-triggered): reads drain to `WouldBlock` or stop at a budget and say so,
//! so the worker revisits them; output is only queued here, and [`Client::flush`] writes
//! everything queued in one `write` per loop iteration, waiting for a WRITABLE event after
//! `WouldBlock`. Nothing here allocates per message: the read and write buffers are reused and
//! PUBLISH frames are encoded straight into the write buffer. Over TLS a rustls session sits
//! beside the socket (see [`crate::tls`]), over WebSocket a framing session (see [`crate::ws`]),
//! both over wss; the plain path only tests that they are absent.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};

use bytes::{Buf, BytesMut};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::ClientConnection;
use socket2::{Domain, Socket, Type};
use vireo_codec::{
    Ack, ByteString, Connect, Packet, PacketId, ProtocolVersion, Publish, QoS, QosPid, Subscribe,
    SubscriptionOptions, decode,
};

use crate::error::ClientError;
use crate::frame::{self, Frame};
use crate::inflight::Inflight;
use crate::payload::{STAMP_LEN, Stamp};
use crate::shared::{Clock, LatencyHistogram};
use crate::tls::{self, Connector};
use crate::tracker::{Arrival, Tracker};
use crate::ws::{Upgrader, WsSession};

/// Reads per readiness event before yielding to other clients (64 KiB each): bounds the time
/// one busy subscriber can hold its thread; the worker comes back to it next iteration.
const MAX_READS_PER_WAKE: usize = 8;
/// A publisher stops encoding once this much is queued, so one write carries a large batch
/// without letting a slow socket make the buffer grow.
const WRITE_HIGH_WATER: usize = 64 * 1024;
/// Messages one publisher may encode per loop iteration, so that many publishers on one thread
/// take turns.
const MAX_BATCH: u32 = 256;

/// Where a client is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not connected yet.
    NotStarted,
    /// TCP connect in progress.
    Connecting,
    /// CONNECT sent.
    AwaitConnAck,
    /// SUBSCRIBE sent (subscribers only).
    AwaitSubAck,
    /// Connected and, for a subscriber, subscribed.
    Ready,
    /// Gone, by failure or at the end.
    Closed,
}

impl State {
    /// Between starting the TCP connect and being ready.
    pub fn is_handshake(self) -> bool {
        matches!(
            self,
            State::Connecting | State::AwaitConnAck | State::AwaitSubAck
        )
    }
}

/// What a client does once connected.
#[derive(Debug)]
pub enum Role {
    /// Publishes stamped messages.
    Publisher(Box<Publisher>),
    /// Subscribes and accounts for what arrives.
    Subscriber(Box<Subscriber>),
    /// Only holds its connection (`connections` scenario).
    Idle,
}

/// A publisher's schedule, window and template.
#[derive(Debug)]
pub struct Publisher {
    /// Dense publisher id written into every payload.
    pub id: u32,
    /// Header template: topic, and a shared zeroed payload whose length sets the frame size.
    template: Publish,
    /// Next sequence number, which is also the count sent.
    pub seq: u64,
    /// Nanoseconds between messages of the open-loop schedule; `None` for unlimited.
    interval_ns: Option<u64>,
    /// Intended send time of the next message.
    next_due_ns: u64,
    /// Messages to send in all, if `--count`.
    limit: Option<u64>,
    /// QoS 1/2 packet ids in flight.
    pub window: Inflight,
    /// Whether the `--count` was reached (reported once).
    pub done: bool,
}

impl Publisher {
    /// A publisher on `template.topic`, its payload length taken from `template.payload`.
    pub fn new(
        id: u32,
        template: Publish,
        rate: Option<f64>,
        limit: Option<u64>,
        inflight: u16,
    ) -> Self {
        Self {
            id,
            template,
            seq: 0,
            interval_ns: rate.map(|r| ((1e9 / r) as u64).max(1)),
            next_due_ns: 0,
            limit,
            window: Inflight::new(inflight),
            done: false,
        }
    }

    /// Starts the open-loop schedule at `start_ns`.
    pub fn start(&mut self, start_ns: u64) {
        self.next_due_ns = start_ns;
    }
}

/// A subscriber's filter and accounting.
#[derive(Debug)]
pub struct Subscriber {
    /// The filter it subscribes to.
    pub filter: ByteString,
    /// Requested QoS.
    pub qos: QoS,
    /// Per-publisher sequence accounting.
    pub tracker: Tracker,
}

/// Per-thread measurement and the constants every client of the thread needs.
#[derive(Debug)]
pub struct Meter {
    /// The run's clock.
    pub clock: Clock,
    /// The run's payload magic.
    pub magic: u32,
    /// The protocol spoken.
    pub version: ProtocolVersion,
    /// Largest packet accepted from the broker.
    pub max_packet: usize,
    /// End-to-end latency since the last tick, nanoseconds.
    pub latency: LatencyHistogram,
    /// TCP connect to CONNACK, nanoseconds.
    pub connect_latency: LatencyHistogram,
    /// Running totals.
    pub stats: LocalStats,
    /// What the first TLS handshake agreed (version, cipher suite, key exchange), for the report.
    pub tls_session: Option<String>,
}

/// A thread's running totals, copied into its shared `Counters` once per loop iteration.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalStats {
    /// PUBLISH packets queued.
    pub published: u64,
    /// QoS 1/2 publishes completed.
    pub acked: u64,
    /// PUBLISH packets received.
    pub delivered: u64,
    /// Distinct messages received.
    pub unique: u64,
    /// Payloads without this run's stamp.
    pub unrecognised: u64,
    /// Stray acknowledgements.
    pub protocol_errors: u64,
    /// Keepalive PINGREQs sent.
    pub pings: u64,
}

/// What [`Client::produce`] left the publisher able to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Produce {
    /// Could encode more right now (stopped at the batch limit).
    More,
    /// Next message is due at this time.
    DueAt(u64),
    /// Waiting for the socket or the in-flight window: an event will wake the thread.
    Blocked,
    /// Has just sent its `--count` (returned once).
    Finished,
    /// Finished earlier, or not a ready publisher.
    Idle,
}

/// One connection.
#[derive(Debug)]
pub struct Client {
    /// MQTT client id.
    pub name: String,
    /// What it does once connected.
    pub role: Role,
    /// Local address to bind to, if any.
    pub source: Option<IpAddr>,
    /// When to start connecting (nanoseconds since the epoch; 0 for at once).
    pub connect_at_ns: u64,
    /// Where it is in its life.
    pub state: State,
    /// Whether the worker has it in its list of clients to flush.
    pub queued_for_flush: bool,
    sock: Option<TcpStream>,
    /// The TLS session over `sock`, when the run speaks TLS (boxed: most of a kilobyte).
    tls: Option<Box<ClientConnection>>,
    /// The WebSocket framing over `sock` (or over `tls`), when the run speaks it (boxed, like
    /// `tls`, so that the plain client stays small).
    ws: Option<Box<WsSession>>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// The socket returned `WouldBlock` on write: wait for a WRITABLE event.
    write_blocked: bool,
    /// Set when the handshake started, for the connect timeout and latency.
    started_ns: u64,
    /// Last time bytes were written, for keepalive.
    last_sent_ns: u64,
}

impl Client {
    /// A client that has not connected yet.
    pub fn new(name: String, role: Role, source: Option<IpAddr>, connect_at_ns: u64) -> Self {
        Self {
            name,
            role,
            source,
            connect_at_ns,
            state: State::NotStarted,
            queued_for_flush: false,
            sock: None,
            tls: None,
            ws: None,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            write_blocked: false,
            started_ns: 0,
            last_sent_ns: 0,
        }
    }

    /// Starts a non-blocking TCP connect (bound to `source` when set) and registers the socket.
    pub fn start_connect(
        &mut self,
        token: Token,
        registry: &Registry,
        addr: SocketAddr,
        now_ns: u64,
    ) -> Result<(), ClientError> {
        let mut sock = open_socket(addr, self.source).map_err(ClientError::Connect)?;
        registry
            .register(&mut sock, token, Interest::READABLE | Interest::WRITABLE)
            .map_err(ClientError::Io)?;
        self.sock = Some(sock);
        self.state = State::Connecting;
        self.started_ns = now_ns;
        Ok(())
    }

    /// Checks a connect in progress after a readiness event; on success starts the TLS session
    /// (with `tls`) and the WebSocket upgrade (with `ws`), and queues CONNECT, which waits for
    /// both.
    pub fn finish_connect(
        &mut self,
        connect: &mut Connect,
        tls: Option<&Connector>,
        ws: Option<&Upgrader>,
        meter: &mut Meter,
    ) -> Result<(), ClientError> {
        let Some(sock) = &self.sock else {
            return Err(ClientError::Closed);
        };
        if let Some(e) = sock.take_error().map_err(ClientError::Connect)? {
            return Err(ClientError::Connect(e));
        }
        match sock.peer_addr() {
            Ok(_) => {}
            // Spurious wake-up: still connecting.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
            Err(e) => return Err(ClientError::Connect(e)),
        }
        sock.set_nodelay(true).map_err(ClientError::Io)?;
        if let Some(tls) = tls {
            self.tls = Some(tls.connect()?);
        }
        if let Some(ws) = ws {
            self.ws = Some(ws.connect()?);
        }
        connect.client_id = ByteString::from(self.name.as_str());
        Packet::Connect(Box::new(connect.clone()))
            .encode(meter.version, &mut self.wbuf)
            .map_err(|_| ClientError::Unexpected("CONNECT too large to encode"))?;
        self.state = State::AwaitConnAck;
        Ok(())
    }

    /// Reads what the socket has (up to a budget), handling every complete packet. Returns
    /// whether more may be waiting (budget spent before `WouldBlock`).
    ///
    /// A read that does not fill `scratch` drained the socket, so the read that would only
    /// return `WouldBlock` is skipped (half of all reads in fan-out): epoll is edge-triggered
    /// and Linux raises a new edge for every segment that arrives after this read, as tokio
    /// relies on too. Not when `to_would_block` (the event reported the peer closing, or an
    /// error): a FIN queued behind the data just read raises no further edge, and only a read
    /// past the data sees it.
    pub fn on_readable(
        &mut self,
        scratch: &mut [u8],
        meter: &mut Meter,
        to_would_block: bool,
    ) -> Result<bool, ClientError> {
        for _ in 0..MAX_READS_PER_WAKE {
            let Some(sock) = &mut self.sock else {
                return Ok(false);
            };
            let n = match sock.read(scratch) {
                Ok(0) => return Err(ClientError::Closed),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ClientError::Io(e)),
            };
            let now_ns = meter.clock.now_ns();
            if self.tls.is_none() && self.ws.is_none() {
                self.ingest(&scratch[..n], now_ns, meter)?;
            } else if self.tls.is_none() {
                self.ingest_ws(&scratch[..n], now_ns, meter)?;
            } else {
                self.ingest_tls(&scratch[..n], now_ns, meter)?;
            }
            // The same holds over TLS and WebSocket: rustls keeps a partial record and the
            // WebSocket session a partial frame header, not unread socket bytes.
            if n < scratch.len() && !to_would_block {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Decrypts `ciphertext`, just read, and handles the packets its plaintext completes. A TLS
    /// error is answered with the alert rustls makes for it, when the socket takes it.
    fn ingest_tls(
        &mut self,
        ciphertext: &[u8],
        now_ns: u64,
        meter: &mut Meter,
    ) -> Result<(), ClientError> {
        let Some(mut session) = self.tls.take() else {
            return Ok(());
        };
        let result = tls::decrypt(&mut session, ciphertext, |plaintext| {
            if self.ws.is_none() {
                self.ingest(plaintext, now_ns, meter)
            } else {
                self.ingest_ws(plaintext, now_ns, meter)
            }
        });
        if let (Err(ClientError::Tls(_)), Some(sock)) = (&result, &mut self.sock) {
            let _ = tls::write_out(&mut session, sock);
        }
        if meter.tls_session.is_none() && !session.is_handshaking() {
            meter.tls_session = tls::describe(&session);
        }
        self.tls = Some(session);
        result
    }

    /// Unframes `stream`, just read (from the socket, or plaintext from rustls), and handles
    /// the packets its frames' payloads complete.
    fn ingest_ws(
        &mut self,
        stream: &[u8],
        now_ns: u64,
        meter: &mut Meter,
    ) -> Result<(), ClientError> {
        let Some(mut session) = self.ws.take() else {
            return Ok(());
        };
        let result = session.read(stream, |mqtt| self.ingest(mqtt, now_ns, meter));
        self.ws = Some(session);
        result
    }

    /// Handles every packet that `data`, just read, completes: first the one kept in `rbuf`
    /// from earlier reads, then those in `data` itself, parsed where they lie, so the bytes of
    /// a read are copied only for an incomplete packet at its end (kept in `rbuf`) and for
    /// packets other than PUBLISH (decoded by the codec from `rbuf`).
    fn ingest(
        &mut self,
        mut data: &[u8],
        now_ns: u64,
        meter: &mut Meter,
    ) -> Result<(), ClientError> {
        if !self.rbuf.is_empty() {
            let mut rbuf = std::mem::take(&mut self.rbuf);
            let done = self.finish_pending(&mut rbuf, &mut data, now_ns, meter);
            self.rbuf = rbuf;
            done?;
        }
        while !data.is_empty() {
            match frame::parse(data, meter.version, meter.max_packet)? {
                Frame::Publish(f) => {
                    self.on_publish(f.qos, f.payload(data), now_ns, meter)?;
                    data = &data[f.len..];
                }
                Frame::Other(len) => {
                    // `rbuf` is empty here: it holds just this packet.
                    self.rbuf.extend_from_slice(&data[..len]);
                    data = &data[len..];
                    let packet = decode(&mut self.rbuf, meter.version, meter.max_packet)?
                        .ok_or(ClientError::Unexpected("incomplete packet"))?;
                    self.on_packet(packet, now_ns, meter)?;
                }
                Frame::Partial(_) => {
                    self.rbuf.extend_from_slice(data);
                    break;
                }
            }
        }
        Ok(())
    }

    /// The receive path as it was before the fast path: every byte through `rbuf`, every
    /// packet through the codec. The reference the tests hold [`Client::ingest`] to.
    #[cfg(test)]
    fn ingest_codec(
        &mut self,
        data: &[u8],
        now_ns: u64,
        meter: &mut Meter,
    ) -> Result<(), ClientError> {
        self.rbuf.extend_from_slice(data);
        while let Some(packet) = decode(&mut self.rbuf, meter.version, meter.max_packet)? {
            self.on_packet(packet, now_ns, meter)?;
        }
        Ok(())
    }

    /// Completes the packet `rbuf` holds with the bytes it lacks from the front of `data`, and
    /// handles it. `rbuf` never holds more than that one packet, so it is empty afterwards
    /// unless `data` ran out first.
    fn finish_pending(
        &mut self,
        rbuf: &mut BytesMut,
        data: &mut &[u8],
        now_ns: u64,
        meter: &mut Meter,
    ) -> Result<(), ClientError> {
        loop {
            match frame::parse(rbuf, meter.version, meter.max_packet)? {
                Frame::Publish(f) => {
                    self.on_publish(f.qos, f.payload(rbuf), now_ns, meter)?;
                    rbuf.clear();
                    return Ok(());
                }
                Frame::Other(_) => {
                    let packet = decode(rbuf, meter.version, meter.max_packet)?
                        .ok_or(ClientError::Unexpected("incomplete packet"))?;
                    return self.on_packet(packet, now_ns, meter);
                }
                Frame::Partial(needed) => {
                    if data.is_empty() {
                        return Ok(());
                    }
                    let (head, rest) = data.split_at(needed.min(data.len()));
                    rbuf.extend_from_slice(head);
                    *data = rest;
                }
            }
        }
    }

    /// After WRITABLE: the socket takes bytes again.
    pub fn on_writable(&mut self) {
        self.write_blocked = false;
    }

    /// Writes everything queued, in as few writes as the socket allows.
    pub fn flush(&mut self, now_ns: u64) -> Result<(), ClientError> {
        if self.tls.is_some() || self.ws.is_some() {
            return self.flush_layered(now_ns);
        }
        let Some(sock) = &mut self.sock else {
            return Ok(());
        };
        while !self.wbuf.is_empty() && !self.write_blocked {
            match sock.write(&self.wbuf) {
                Ok(0) => return Err(ClientError::Closed),
                Ok(n) => {
                    self.wbuf.advance(n);
                    self.last_sent_ns = now_ns;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.write_blocked = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ClientError::Io(e)),
            }
        }
        Ok(())
    }

    /// [`Client::flush`] over TLS, WebSocket or both: over WebSocket everything queued becomes
    /// one frame (once the upgrade is done), and the frames go to the socket or to rustls.
    fn flush_layered(&mut self, now_ns: u64) -> Result<(), ClientError> {
        let Some(sock) = &mut self.sock else {
            return Ok(());
        };
        if self.write_blocked {
            return Ok(());
        }
        let out = match &mut self.ws {
            Some(ws) => {
                ws.frame(&mut self.wbuf);
                ws.out()
            }
            None => &mut self.wbuf,
        };
        let queued = out.len();
        let result = match &mut self.tls {
            Some(session) => tls::flush(session, sock, out),
            None => write_all(sock, out),
        };
        if out.len() < queued {
            self.last_sent_ns = now_ns;
        }
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.write_blocked = true;
                Ok(())
            }
            Err(e) => Err(ClientError::Io(e)),
        }
    }

    /// Whether output is queued (over TLS: or rustls has records to send, e.g. the
    /// handshake's next flight; over WebSocket: the upgrade request or frames, while MQTT
    /// bytes wait for the upgrade).
    pub fn has_output(&self) -> bool {
        let mqtt = !self.wbuf.is_empty() && self.ws.as_ref().is_none_or(|ws| ws.is_open());
        mqtt || self.tls.as_ref().is_some_and(|t| t.wants_write())
            || self.ws.as_ref().is_some_and(|ws| ws.has_output())
    }

    /// Whether everything queued has gone to the socket (or to rustls).
    fn all_written(&self) -> bool {
        self.wbuf.is_empty() && self.ws.as_ref().is_none_or(|ws| !ws.has_output())
    }

    /// Closes the socket (deregistering it); the client is done.
    pub fn close(&mut self, registry: &Registry) {
        if let Some(mut sock) = self.sock.take() {
            // Deregistering a socket that is being dropped cannot fail in a way that matters.
            let _ = registry.deregister(&mut sock);
        }
        self.tls = None;
        self.ws = None;
        self.state = State::Closed;
    }

    /// Queues a DISCONNECT and writes it if the socket takes it now (end of run).
    pub fn disconnect(&mut self, meter: &Meter, now_ns: u64) {
        if self.state == State::Ready {
            let _ = Packet::Disconnect(Default::default()).encode(meter.version, &mut self.wbuf);
            let _ = self.flush(now_ns);
            // A close frame after the DISCONNECT, if that went out whole.
            if self.all_written()
                && let Some(ws) = &mut self.ws
            {
                ws.close();
                let _ = self.flush(now_ns);
            }
            // close_notify after them, if they went out whole.
            if self.all_written()
                && let Some(session) = &mut self.tls
            {
                session.send_close_notify();
                let _ = self.flush(now_ns);
            }
        }
    }

    /// Whether the handshake has run past `timeout_ns`.
    pub fn handshake_expired(&self, now_ns: u64, timeout_ns: u64) -> bool {
        self.state.is_handshake() && now_ns.saturating_sub(self.started_ns) >= timeout_ns
    }

    /// Queues a PINGREQ if nothing was written for three quarters of the keepalive.
    pub fn keepalive(&mut self, now_ns: u64, keepalive_ns: u64, meter: &mut Meter) -> bool {
        let idle = now_ns.saturating_sub(self.last_sent_ns.max(self.started_ns));
        if self.state != State::Ready || keepalive_ns == 0 || idle < keepalive_ns / 4 * 3 {
            return false;
        }
        if Packet::PingReq
            .encode(meter.version, &mut self.wbuf)
            .is_err()
        {
            return false;
        }
        self.last_sent_ns = now_ns;
        meter.stats.pings += 1;
        true
    }

    /// Encodes as many due messages as the window, the socket and the batch limit allow.
    pub fn produce(&mut self, now_ns: u64, meter: &mut Meter) -> Result<Produce, ClientError> {
        let Role::Publisher(p) = &mut self.role else {
            return Ok(Produce::Idle);
        };
        if self.state != State::Ready || p.done {
            return Ok(Produce::Idle);
        }
        let qos = p.template.qos();
        let padding = p.template.payload.len() - STAMP_LEN;
        for _ in 0..MAX_BATCH {
            if self.write_blocked || self.wbuf.len() >= WRITE_HIGH_WATER {
                return Ok(Produce::Blocked);
            }
            if p.limit.is_some_and(|l| p.seq >= l) {
                p.done = true;
                return Ok(Produce::Finished);
            }
            if qos != QoS::AtMostOnce && !p.window.has_room() {
                return Ok(Produce::Blocked);
            }
            let sent_ns = match p.interval_ns {
                Some(_) if p.next_due_ns > now_ns => return Ok(Produce::DueAt(p.next_due_ns)),
                Some(interval) => {
                    p.next_due_ns += interval;
                    p.next_due_ns - interval
                }
                None => now_ns,
            };
            let pid = match qos {
                QoS::AtMostOnce => PacketId::MIN,
                q => p
                    .window
                    .acquire(q == QoS::ExactlyOnce)
                    .ok_or(ClientError::Unexpected("full in-flight window"))?,
            };
            p.template.qos = QosPid::new(qos, pid);
            p.template
                .encode_header(meter.version, &mut self.wbuf)
                .map_err(|_| ClientError::Unexpected("PUBLISH too large to encode"))?;
            let stamp = Stamp {
                publisher: p.id,
                seq: p.seq,
                sent_ns,
            };
            stamp.write(meter.magic, padding, &mut self.wbuf);
            p.seq += 1;
            meter.stats.published += 1;
        }
        Ok(Produce::More)
    }

    fn on_packet(
        &mut self,
        packet: Packet,
        now_ns: u64,
        meter: &mut Meter,
    ) -> Result<(), ClientError> {
        match packet {
            Packet::ConnAck(ack) => self.on_connack(ack.code.0, now_ns, meter),
            Packet::SubAck(ack) => self.on_suback(ack.codes.first().map(|c| c.0)),
            Packet::Publish(publish) => {
                self.on_publish(publish.qos, &publish.payload, now_ns, meter)
            }
            Packet::PubAck(a) => self.on_ack(a.packet_id, AckKind::Ack, meter),
            Packet::PubRec(a) => self.on_ack(a.packet_id, AckKind::Rec, meter),
            Packet::PubComp(a) => self.on_ack(a.packet_id, AckKind::Comp, meter),
            Packet::PubRel(a) => self.queue_ack(Packet::PubComp(Ack::new(a.packet_id)), meter),
            Packet::PingResp => Ok(()),
            Packet::Disconnect(_) => Err(ClientError::Closed),
            other => Err(ClientError::Unexpected(other.name())),
        }
    }

    fn on_connack(&mut self, code: u8, now_ns: u64, meter: &mut Meter) -> Result<(), ClientError> {
        if self.state != State::AwaitConnAck {
            return Err(ClientError::Unexpected("CONNACK"));
        }
        if code != 0 {
            return Err(ClientError::Refused { code });
        }
        meter
            .connect_latency
            .saturating_record(now_ns.saturating_sub(self.started_ns).max(1));
        let Role::Subscriber(s) = &self.role else {
            self.state = State::Ready;
            return Ok(());
        };
        let subscribe = Subscribe {
            packet_id: PacketId::MIN,
            properties: Default::default(),
            filters: vec![(s.filter.clone(), SubscriptionOptions::qos(s.qos))],
        };
        Packet::Subscribe(subscribe)
            .encode(meter.version, &mut self.wbuf)
            .map_err(|_| ClientError::Unexpected("SUBSCRIBE too large to encode"))?;
        self.state = State::AwaitSubAck;
        Ok(())
    }

    fn on_suback(&mut self, code: Option<u8>) -> Result<(), ClientError> {
        if self.state != State::AwaitSubAck {
            return Err(ClientError::Unexpected("SUBACK"));
        }
        match code {
            Some(c) if c < 0x80 => {
                self.state = State::Ready;
                Ok(())
            }
            _ => Err(ClientError::SubscribeRefused),
        }
    }

    fn on_publish(
        &mut self,
        qos: QosPid,
        payload: &[u8],
        now_ns: u64,
        meter: &mut Meter,
    ) -> Result<(), ClientError> {
        meter.stats.delivered += 1;
        match (Stamp::read(meter.magic, payload), &mut self.role) {
            (Some(stamp), Role::Subscriber(s)) => {
                match s.tracker.record(stamp.publisher, stamp.seq) {
                    Arrival::InOrder | Arrival::OutOfOrder => meter.stats.unique += 1,
                    Arrival::Duplicate => {}
                    Arrival::Unexpected => meter.stats.unrecognised += 1,
                }
                let latency = now_ns.saturating_sub(stamp.sent_ns).max(1);
                meter.latency.saturating_record(latency);
            }
            _ => meter.stats.unrecognised += 1,
        }
        match qos {
            QosPid::AtMostOnce => Ok(()),
            QosPid::AtLeastOnce(id) => self.queue_ack(Packet::PubAck(Ack::new(id)), meter),
            QosPid::ExactlyOnce(id) => self.queue_ack(Packet::PubRec(Ack::new(id)), meter),
        }
    }

    fn on_ack(
        &mut self,
        id: PacketId,
        kind: AckKind,
        meter: &mut Meter,
    ) -> Result<(), ClientError> {
        let Role::Publisher(p) = &mut self.role else {
            meter.stats.protocol_errors += 1;
            return Ok(());
        };
        let result = match kind {
            AckKind::Ack => p.window.on_puback(id),
            AckKind::Rec => p.window.on_pubrec(id),
            AckKind::Comp => p.window.on_pubcomp(id),
        };
        match (result, kind) {
            (Err(_), _) => meter.stats.protocol_errors += 1,
            (Ok(()), AckKind::Rec) => {
                return self.queue_ack(Packet::PubRel(Ack::new(id)), meter);
            }
            (Ok(()), _) => meter.stats.acked += 1,
        }
        Ok(())
    }

    fn queue_ack(&mut self, ack: Packet, meter: &Meter) -> Result<(), ClientError> {
        ack.encode(meter.version, &mut self.wbuf)
            .map_err(|_| ClientError::Unexpected("ack too large to encode"))
    }
}

/// Which acknowledgement of a publish arrived: PUBACK, PUBREC or PUBCOMP.
#[derive(Debug, Clone, Copy)]
enum AckKind {
    Ack,
    Rec,
    Comp,
}

/// Writes `buf` to `sock` until it is empty or the socket is full (`WouldBlock`), advancing
/// it by what was written.
fn write_all(sock: &mut TcpStream, buf: &mut BytesMut) -> io::Result<()> {
    while !buf.is_empty() {
        match sock.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf.advance(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `EINPROGRESS` on Linux: a non-blocking connect has started (std has no stable kind for it).
const EINPROGRESS: i32 = 115;

/// A non-blocking socket, bound to `source` if given, with its connect started.
fn open_socket(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    if let Some(ip) = source {
        // Each source address has its own ephemeral port range (~28k ports by default), so
        // several 127.x.y.z addresses take a run past 64k connections.
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e)
            if e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use vireo_codec::TopicName;

    use super::*;
    use crate::tracker::TrackerTotals;

    const MAGIC: u32 = 0x5EED_F00D;
    const NOW: u64 = 1_000_000;
    const MAX: usize = 512;

    fn meter() -> Meter {
        Meter {
            clock: Clock::start(),
            magic: MAGIC,
            version: ProtocolVersion::V311,
            max_packet: MAX,
            // Small histograms: the tests build thousands of meters.
            latency: LatencyHistogram::new_with_bounds(1, 1 << 30, 1).unwrap(),
            connect_latency: LatencyHistogram::new_with_bounds(1, 1 << 30, 1).unwrap(),
            stats: LocalStats::default(),
            tls_session: None,
        }
    }

    fn subscriber() -> Client {
        let role = Role::Subscriber(Box::new(Subscriber {
            filter: ByteString::from("bench/#"),
            qos: QoS::ExactlyOnce,
            tracker: Tracker::new(0, 2),
        }));
        let mut c = Client::new("sub".into(), role, None, 0);
        c.state = State::Ready;
        c
    }

    fn put(buf: &mut BytesMut, packet: Packet) {
        packet.encode(ProtocolVersion::V311, buf).unwrap();
    }

    /// A stamped PUBLISH from `publisher`.
    fn stamped(buf: &mut BytesMut, qos: QosPid, topic: &str, publisher: u32, seq: u64, pad: usize) {
        let mut payload = BytesMut::new();
        Stamp {
            publisher,
            seq,
            sent_ns: NOW - 1000 * (seq + 1),
        }
        .write(MAGIC, pad, &mut payload);
        let mut p = Publish::new(TopicName::new(topic).unwrap(), payload.freeze());
        p.qos = qos;
        put(buf, Packet::Publish(p));
    }

    fn pid(n: u16) -> PacketId {
        PacketId::new(n).unwrap()
    }

    /// Every kind of packet a subscriber meets, of every QoS, in order, out of order, duplicated,
    /// unstamped, with one- and two-byte remaining lengths.
    fn stream() -> BytesMut {
        let mut b = BytesMut::new();
        stamped(&mut b, QosPid::AtMostOnce, "bench/t", 0, 0, 40);
        stamped(&mut b, QosPid::AtLeastOnce(pid(1)), "bench/t", 0, 1, 0);
        stamped(
            &mut b,
            QosPid::ExactlyOnce(pid(2)),
            "bench/long/topic/name",
            1,
            0,
            200,
        );
        put(&mut b, Packet::PubRel(Ack::new(pid(2))));
        stamped(&mut b, QosPid::AtMostOnce, "b", 0, 3, 0);
        stamped(&mut b, QosPid::AtMostOnce, "bench/t", 0, 2, 0); // out of order
        stamped(&mut b, QosPid::AtLeastOnce(pid(3)), "bench/t", 0, 2, 0); // duplicate
        put(&mut b, Packet::PingResp);
        stamped(&mut b, QosPid::AtMostOnce, "bench/t", 5, 0, 0); // unexpected publisher
        let mut stranger = Publish::new(TopicName::new("bench/t").unwrap(), &b"no stamp"[..]);
        stranger.qos = QosPid::ExactlyOnce(pid(4));
        put(&mut b, Packet::Publish(stranger));
        stamped(&mut b, QosPid::AtMostOnce, "bench/t", 1, 1, 300);
        b
    }

    /// What a client's receive path leaves behind.
    fn outcome(c: &Client, m: &Meter) -> (String, u64, Vec<u8>, TrackerTotals, usize) {
        let Role::Subscriber(s) = &c.role else {
            unreachable!()
        };
        let totals = s.tracker.drain_into(&mut [0; 8]);
        (
            format!("{:?}", m.stats),
            m.latency.len(),
            c.wbuf.to_vec(),
            totals,
            c.rbuf.len(),
        )
    }

    /// Feeds `chunks` through the fast path and through the codec path, as reads, stopping at
    /// the first error; both must end the same.
    fn both_paths<'a>(chunks: impl IntoIterator<Item = &'a [u8]> + Clone) -> String {
        let run = |codec: bool| {
            let (mut c, mut m) = (subscriber(), meter());
            let mut error = String::new();
            for chunk in chunks.clone() {
                let r = if codec {
                    c.ingest_codec(chunk, NOW, &mut m)
                } else {
                    c.ingest(chunk, NOW, &mut m)
                };
                if let Err(e) = r {
                    error = format!("{e:?}");
                    break;
                }
            }
            (outcome(&c, &m), error)
        };
        let (fast, codec) = (run(false), run(true));
        assert_eq!(fast.0.0, codec.0.0, "stats");
        assert_eq!(fast.0.1, codec.0.1, "latency samples");
        assert_eq!(fast.0.2, codec.0.2, "acks written");
        assert_eq!(fast.0.3, codec.0.3, "tracker");
        assert_eq!(fast.1, codec.1, "error");
        if fast.1.is_empty() {
            assert_eq!(fast.0.4, codec.0.4, "bytes kept");
        }
        fast.1
    }

    #[test]
    fn a_stream_split_anywhere_gives_what_the_codec_path_gives() {
        let wire = stream();
        assert_eq!(both_paths([&wire[..]]), "");
        for cut in 0..=wire.len() {
            assert_eq!(both_paths([&wire[..cut], &wire[cut..]]), "");
        }
        for size in 1..=7 {
            assert_eq!(both_paths(wire.chunks(size)), "");
        }
        // And the figures themselves, once.
        let (mut c, mut m) = (subscriber(), meter());
        for b in wire.chunks(3) {
            c.ingest(b, NOW, &mut m).unwrap();
        }
        assert_eq!(
            (m.stats.delivered, m.stats.unique, m.stats.unrecognised),
            (9, 6, 2)
        );
        assert_eq!(m.latency.len(), 8);
        let Role::Subscriber(s) = &c.role else {
            unreachable!()
        };
        let totals = s.tracker.drain_into(&mut [0; 2]);
        assert_eq!((totals.duplicated, totals.out_of_order), (1, 1));
        let mut acks = BytesMut::new();
        for ack in [
            Packet::PubAck(Ack::new(pid(1))),
            Packet::PubRec(Ack::new(pid(2))),
            Packet::PubComp(Ack::new(pid(2))),
            Packet::PubAck(Ack::new(pid(3))),
            Packet::PubRec(Ack::new(pid(4))),
        ] {
            put(&mut acks, ack);
        }
        assert_eq!(c.wbuf, acks);
        assert!(c.rbuf.is_empty());
    }

    #[test]
    fn malformed_and_oversized_packets_fail_the_client_as_before() {
        let good = stream();
        let bad: [&[u8]; 6] = [
            &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], // remaining length > 4 bytes
            &[0x30, 0xFF, 0x07],                   // 1023 bytes > MAX
            &[0x36, 0x05, 0x00, 0x01, b't', 0x00, 0x01], // QoS 3
            &[0x32, 0x05, 0x00, 0x01, b't', 0x00, 0x00], // packet id 0
            &[0x30, 0x03, 0x00, 0x05, b't'],       // topic past the end
            &[0x20, 0x02, 0x00, 0x00],             // CONNACK when ready
        ];
        for bad in bad {
            let mut wire = good.to_vec();
            wire.extend_from_slice(bad);
            wire.extend_from_slice(&good[..40]);
            let whole = both_paths([&wire[..]]);
            assert!(!whole.is_empty(), "{bad:02x?} accepted");
            for cut in 0..=wire.len() {
                assert_eq!(both_paths([&wire[..cut], &wire[cut..]]), whole);
            }
            assert_eq!(both_paths(wire.chunks(1)), whole);
        }
    }
}
