//! A minimal relay broker, used to measure the generator's own ceiling (a broker that costs
//! next to nothing) and as the broker of the generator's tests.
//!
//! One thread, one mio loop. It accepts CONNECT (3.1/3.1.1) with CONNACK 0, answers SUBSCRIBE
//! with the QoS asked for, acknowledges QoS 1/2 publishes (PUBACK; PUBREC, then PUBCOMP on
//! PUBREL) and forwards each publish to the subscribers whose filter matches, at the lower of
//! the two QoS, with packet ids of its own; subscribers' acknowledgements are accepted and not
//! tracked. No sessions, retained messages, wills or keepalive enforcement.
//!
//! Flow control: when a subscriber's output backs up past [`HIGH_WATER`], the sink stops
//! reading from publishers until every backed-up subscriber is under [`LOW_WATER`], so it never
//! drops a message and its memory stays bounded.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use vireo_codec::{
    Ack, ByteString, ConnAck, Packet, PacketId, ProtocolVersion, Publish, QoS, QosPid, ReasonCode,
    SubAck, decode, has_wildcard, topic_matches, validate_topic_filter,
};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX);
/// A subscriber with this much unwritten output pauses the publishers.
pub const HIGH_WATER: usize = 4 * 1024 * 1024;
/// Publishers resume once every paused-for subscriber is below this.
pub const LOW_WATER: usize = 1024 * 1024;
/// Reads per readiness event before serving other connections.
const MAX_READS_PER_WAKE: usize = 8;
/// Largest packet accepted.
const MAX_PACKET: usize = 16 * 1024 * 1024;

/// Starts sinks.
#[derive(Debug)]
pub struct Sink;

impl Sink {
    /// Binds `addr` (port 0 picks one) and serves on a thread of its own until the handle is
    /// dropped or shut down.
    pub fn start(addr: SocketAddr) -> io::Result<SinkHandle> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(addr)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let stop = Arc::new(AtomicBool::new(false));
        let local_addr = listener.local_addr()?;
        let relay = Relay::new(poll, listener, Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("vireo-lt-sink".into())
            .spawn(move || relay.run())?;
        Ok(SinkHandle {
            local_addr,
            waker,
            stop,
            thread: Some(thread),
        })
    }
}

/// A running sink; dropping it stops it.
#[derive(Debug)]
pub struct SinkHandle {
    local_addr: SocketAddr,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SinkHandle {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops it and waits for its thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    /// Blocks until the sink's thread ends (it runs until its poll fails).
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for SinkHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// One client of the sink.
#[derive(Debug)]
struct Conn {
    sock: TcpStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// Known after CONNECT.
    version: Option<ProtocolVersion>,
    write_blocked: bool,
    queued: bool,
    /// Counted in the congested list.
    congested: bool,
    /// Has published: its reads pause while a subscriber is backed up.
    publisher: bool,
    /// Next packet id for forwarded QoS 1/2 messages.
    next_pid: u16,
}

impl Conn {
    fn next_pid(&mut self) -> PacketId {
        self.next_pid = self.next_pid.checked_add(1).unwrap_or(1);
        PacketId::new(self.next_pid).unwrap_or(PacketId::MIN)
    }

    fn queue(&mut self, packet: &Packet) -> io::Result<()> {
        let version = self.version.unwrap_or(ProtocolVersion::V311);
        packet
            .encode(version, &mut self.wbuf)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    fn flush(&mut self) -> io::Result<()> {
        while !self.wbuf.is_empty() && !self.write_blocked {
            match self.sock.write(&self.wbuf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.wbuf.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.write_blocked = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The sink's loop state.
#[derive(Debug)]
struct Relay {
    poll: Poll,
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    conns: Slab<Conn>,
    /// Subscriptions without wildcards, by topic.
    exact: HashMap<ByteString, Vec<(usize, QoS)>>,
    /// Subscriptions with wildcards.
    wild: Vec<(ByteString, usize, QoS)>,
    dirty: Vec<usize>,
    /// Subscribers over the high-water mark.
    congested: Vec<usize>,
    /// Publishers whose reads wait for the congestion to clear.
    deferred: Vec<usize>,
    targets: Vec<(usize, QoS)>,
    /// The list being worked through (`dirty` or `deferred`), kept to reuse its allocation.
    spare: Vec<usize>,
    scratch: Box<[u8]>,
}

impl Relay {
    fn new(poll: Poll, listener: TcpListener, stop: Arc<AtomicBool>) -> Self {
        Self {
            poll,
            listener,
            stop,
            conns: Slab::new(),
            exact: HashMap::new(),
            wild: Vec::new(),
            dirty: Vec::new(),
            congested: Vec::new(),
            deferred: Vec::new(),
            targets: Vec::new(),
            spare: Vec::new(),
            scratch: vec![0; 64 * 1024].into_boxed_slice(),
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        while !self.stop.load(Ordering::Acquire) {
            let timeout = if !self.deferred.is_empty() && self.congested.is_empty() {
                Duration::ZERO
            } else {
                Duration::from_millis(100)
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return;
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    Token(i) => {
                        if event.is_writable() {
                            if let Some(c) = self.conns.get_mut(i) {
                                c.write_blocked = false;
                            }
                            self.mark_dirty(i);
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read_or_defer(i);
                        }
                    }
                }
            }
            self.update_congestion();
            if self.congested.is_empty() {
                std::mem::swap(&mut self.deferred, &mut self.spare);
                for k in 0..self.spare.len() {
                    let i = self.spare[k];
                    self.read(i);
                }
                self.spare.clear();
            }
            self.flush_dirty();
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut sock, _)) => {
                    let _ = sock.set_nodelay(true);
                    let entry = self.conns.vacant_entry();
                    let token = Token(entry.key());
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if self
                        .poll
                        .registry()
                        .register(&mut sock, token, interest)
                        .is_ok()
                    {
                        entry.insert(Conn {
                            sock,
                            rbuf: BytesMut::with_capacity(64 * 1024),
                            wbuf: BytesMut::with_capacity(64 * 1024),
                            version: None,
                            write_blocked: false,
                            queued: false,
                            congested: false,
                            publisher: false,
                            next_pid: 0,
                        });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Out of descriptors or similar: try again on the next readiness event.
                Err(_) => return,
            }
        }
    }

    fn read_or_defer(&mut self, i: usize) {
        let paused = !self.congested.is_empty();
        match self.conns.get(i) {
            Some(c) if paused && c.publisher => self.deferred.push(i),
            Some(_) => self.read(i),
            None => {}
        }
    }

    /// Reads and handles packets; leaves the connection deferred if its budget ran out.
    fn read(&mut self, i: usize) {
        for _ in 0..MAX_READS_PER_WAKE {
            let Some(conn) = self.conns.get_mut(i) else {
                return;
            };
            let n = match conn.sock.read(&mut self.scratch) {
                Ok(0) => return self.close(i),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.close(i),
            };
            conn.rbuf.extend_from_slice(&self.scratch[..n]);
            if self.handle_buffered(i).is_err() {
                return self.close(i);
            }
            if !self.congested.is_empty() && self.conns.get(i).is_some_and(|c| c.publisher) {
                break;
            }
        }
        self.deferred.push(i);
    }

    fn handle_buffered(&mut self, i: usize) -> io::Result<()> {
        loop {
            let Some(conn) = self.conns.get_mut(i) else {
                return Ok(());
            };
            let version = conn.version.unwrap_or(ProtocolVersion::V311);
            let packet = match decode(&mut conn.rbuf, version, MAX_PACKET) {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(()),
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            };
            self.handle(i, packet)?;
            self.mark_dirty(i);
        }
    }

    fn handle(&mut self, i: usize, packet: Packet) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(i) else {
            return Ok(());
        };
        let refuse = || io::Error::from(io::ErrorKind::InvalidData);
        match packet {
            Packet::Connect(c) if conn.version.is_none() && !c.protocol.is_v5() => {
                conn.version = Some(c.protocol);
                conn.queue(&Packet::ConnAck(ConnAck::new(false, ReasonCode::SUCCESS)))
            }
            _ if conn.version.is_none() => Err(refuse()),
            Packet::Publish(p) => {
                conn.publisher = true;
                match p.qos {
                    QosPid::AtMostOnce => {}
                    QosPid::AtLeastOnce(id) => conn.queue(&Packet::PubAck(Ack::new(id)))?,
                    QosPid::ExactlyOnce(id) => conn.queue(&Packet::PubRec(Ack::new(id)))?,
                }
                self.route(&p)
            }
            Packet::PubRel(a) => conn.queue(&Packet::PubComp(Ack::new(a.packet_id))),
            Packet::PubRec(a) => conn.queue(&Packet::PubRel(Ack::new(a.packet_id))),
            Packet::PubAck(_) | Packet::PubComp(_) => Ok(()),
            Packet::Subscribe(s) => {
                let mut codes = Vec::with_capacity(s.filters.len());
                for (filter, opts) in s.filters {
                    if validate_topic_filter(&filter).is_err() {
                        codes.push(ReasonCode::V3_SUBSCRIBE_FAILURE);
                        continue;
                    }
                    codes.push(ReasonCode::granted(opts.qos));
                    if has_wildcard(&filter) {
                        self.wild.push((filter, i, opts.qos));
                    } else {
                        self.exact.entry(filter).or_default().push((i, opts.qos));
                    }
                }
                let conn = self.conns.get_mut(i).ok_or_else(refuse)?;
                conn.queue(&Packet::SubAck(SubAck::new(s.packet_id, codes)))
            }
            Packet::Unsubscribe(u) => {
                for f in &u.filters {
                    self.unsubscribe(i, Some(f));
                }
                conn_queue(
                    &mut self.conns,
                    i,
                    &Packet::UnsubAck(SubAck::new(u.packet_id, Vec::new())),
                )
            }
            Packet::PingReq => conn.queue(&Packet::PingResp),
            _ => Err(refuse()),
        }
    }

    /// Queues `p` for every matching subscriber.
    fn route(&mut self, p: &Publish) -> io::Result<()> {
        self.targets.clear();
        if let Some(subs) = self.exact.get(p.topic.as_byte_string()) {
            self.targets.extend_from_slice(subs);
        }
        for (filter, i, qos) in &self.wild {
            if topic_matches(filter, &p.topic) {
                self.targets.push((*i, *qos));
            }
        }
        for k in 0..self.targets.len() {
            let (t, sub_qos) = self.targets[k];
            let Some(conn) = self.conns.get_mut(t) else {
                continue;
            };
            let mut out = p.clone();
            out.dup = false;
            out.retain = false;
            out.qos = QosPid::new(p.qos().min(sub_qos), conn.next_pid());
            let version = conn.version.unwrap_or(ProtocolVersion::V311);
            out.encode_header(version, &mut conn.wbuf)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            conn.wbuf.put_slice(&p.payload);
            if !conn.queued {
                conn.queued = true;
                self.dirty.push(t);
            }
        }
        Ok(())
    }

    fn mark_dirty(&mut self, i: usize) {
        if let Some(c) = self.conns.get_mut(i)
            && !c.queued
            && !c.wbuf.is_empty()
        {
            c.queued = true;
            self.dirty.push(i);
        }
    }

    fn flush_dirty(&mut self) {
        std::mem::swap(&mut self.dirty, &mut self.spare);
        for k in 0..self.spare.len() {
            let i = self.spare[k];
            let Some(c) = self.conns.get_mut(i) else {
                continue;
            };
            c.queued = false;
            if c.flush().is_err() {
                self.close(i);
                continue;
            }
            if c.wbuf.len() > HIGH_WATER && !c.congested {
                c.congested = true;
                self.congested.push(i);
            }
        }
        self.spare.clear();
    }

    fn update_congestion(&mut self) {
        let conns = &mut self.conns;
        self.congested.retain(|&i| match conns.get_mut(i) {
            Some(c) if c.wbuf.len() > LOW_WATER => true,
            Some(c) => {
                c.congested = false;
                false
            }
            None => false,
        });
    }

    fn unsubscribe(&mut self, i: usize, filter: Option<&ByteString>) {
        let keep = |f: &ByteString, c: usize| c != i || filter.is_some_and(|x| x != f);
        self.wild.retain(|(f, c, _)| keep(f, *c));
        self.exact.retain(|f, subs| {
            subs.retain(|(c, _)| keep(f, *c));
            !subs.is_empty()
        });
    }

    fn close(&mut self, i: usize) {
        if let Some(mut c) = self.conns.try_remove(i) {
            let _ = self.poll.registry().deregister(&mut c.sock);
            self.unsubscribe(i, None);
        }
    }
}

fn conn_queue(conns: &mut Slab<Conn>, i: usize, p: &Packet) -> io::Result<()> {
    match conns.get_mut(i) {
        Some(c) => c.queue(p),
        None => Ok(()),
    }
}
