//! One MQTT client of a generator thread: its socket, buffers, connection state and role.
//!
//! I/O rules (mio is edge-triggered): reads drain to `WouldBlock` or stop at a budget and say so,
//! so the worker revisits them; output is only queued here, and [`Client::flush`] writes
//! everything queued in one `write` per loop iteration, waiting for a WRITABLE event after
//! `WouldBlock`. Nothing here allocates per message: the read and write buffers are reused and
//! PUBLISH frames are encoded straight into the write buffer.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};

use bytes::{Buf, BytesMut};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use socket2::{Domain, Socket, Type};
use vireo_codec::{
    Ack, ByteString, Connect, Packet, PacketId, ProtocolVersion, Publish, QoS, QosPid, Subscribe,
    SubscriptionOptions, decode,
};

use crate::error::ClientError;
use crate::inflight::Inflight;
use crate::payload::{STAMP_LEN, Stamp};
use crate::shared::{Clock, LatencyHistogram};
use crate::tracker::{Arrival, Tracker};

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

    /// Checks a connect in progress after a readiness event; on success queues CONNECT.
    pub fn finish_connect(
        &mut self,
        connect: &mut Connect,
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
        connect.client_id = ByteString::from(self.name.as_str());
        Packet::Connect(Box::new(connect.clone()))
            .encode(meter.version, &mut self.wbuf)
            .map_err(|_| ClientError::Unexpected("CONNECT too large to encode"))?;
        self.state = State::AwaitConnAck;
        Ok(())
    }

    /// Reads what the socket has (up to a budget), handling every complete packet. Returns
    /// whether more may be waiting (budget spent before `WouldBlock`).
    pub fn on_readable(
        &mut self,
        scratch: &mut [u8],
        meter: &mut Meter,
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
            self.rbuf.extend_from_slice(&scratch[..n]);
            while let Some(packet) = decode(&mut self.rbuf, meter.version, meter.max_packet)? {
                self.on_packet(packet, now_ns, meter)?;
            }
        }
        Ok(true)
    }

    /// After WRITABLE: the socket takes bytes again.
    pub fn on_writable(&mut self) {
        self.write_blocked = false;
    }

    /// Writes everything queued, in as few writes as the socket allows.
    pub fn flush(&mut self, now_ns: u64) -> Result<(), ClientError> {
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

    /// Whether output is queued.
    pub fn has_output(&self) -> bool {
        !self.wbuf.is_empty()
    }

    /// Closes the socket (deregistering it); the client is done.
    pub fn close(&mut self, registry: &Registry) {
        if let Some(mut sock) = self.sock.take() {
            // Deregistering a socket that is being dropped cannot fail in a way that matters.
            let _ = registry.deregister(&mut sock);
        }
        self.state = State::Closed;
    }

    /// Queues a DISCONNECT and writes it if the socket takes it now (end of run).
    pub fn disconnect(&mut self, meter: &Meter, now_ns: u64) {
        if self.state == State::Ready {
            let _ = Packet::Disconnect(Default::default()).encode(meter.version, &mut self.wbuf);
            let _ = self.flush(now_ns);
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
            Packet::Publish(publish) => self.on_publish(&publish, now_ns, meter),
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
        publish: &Publish,
        now_ns: u64,
        meter: &mut Meter,
    ) -> Result<(), ClientError> {
        meter.stats.delivered += 1;
        match (Stamp::read(meter.magic, &publish.payload), &mut self.role) {
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
        match publish.qos {
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
