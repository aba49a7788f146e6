//! One client connection: its socket, read buffer and output queue.
//!
//! Readiness rule (mio is edge-triggered): reads are drained until `WouldBlock` or the read
//! budget runs out — in which case the connection is put on the worker's `again` list so it is
//! read in the next iteration without waiting for an edge that will not come. Output is only
//! ever queued, never written inline: queuing marks the connection dirty, and the worker flushes
//! every dirty connection once per iteration with vectored writes. The one exception: a queue
//! that reaches `max_output_bytes` is written out at once, before anything is dropped, so that
//! a long iteration is not mistaken for a slow consumer. A partial write leaves the rest
//! queued; the WRITABLE edge marks the connection dirty again.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Buf, Bytes, BytesMut};
use mio::net::TcpStream;
use smallvec::SmallVec;
use vireo_broker::Message;
use vireo_broker::protocol::acl::ClientAcl;
use vireo_broker::protocol::connect::Negotiated;
pub(crate) use vireo_broker::protocol::connection::{Close, Phase};
use vireo_broker::protocol::lifecycle::Liveness;
use vireo_broker::protocol::publish::{InboundAliases, OutAlias, OutboundAliases};
use vireo_broker::protocol::quota::Quota;
use vireo_codec::{LastWill, Packet, ProtocolVersion, QoS};

use crate::frames::{FrameLog, Span};
use crate::shared::Shared;

/// `Conn::listener` of a connection the broker made to itself (a bridge's local side): no
/// listener accepted it, no password was asked, no ACL applies, no per-address count holds it.
pub(crate) const INTERNAL: u8 = u8::MAX;

/// Most slices handed to one `writev`. Linux allows 1024 (IOV_MAX); at 64 a stream of small
/// QoS 0 frames needed a syscall per ~5 KB (fan-in delivered 0.6M msg/s); 512 frames amortise
/// the syscall over tens of kilobytes.
pub(crate) const MAX_IOVECS: usize = 512;
/// What one queued frame costs besides its bytes: its `Bytes` handle in the queue. Counted so
/// that a flood of 2-byte acks is bounded like a flood of large frames.
const FRAME_OVERHEAD: usize = 32;
/// A blocked queue with more frames than this is merged into one buffer, releasing the arena
/// and read chunks its small frames pin.
const COALESCE_MIN: usize = 64;
/// Growth step of a connection's scratch buffer for acks and PUBLISH headers.
const SCRATCH_CHUNK: usize = 4 * 1024;
/// MQTT 3.1/3.1.1 CONNACK accepting the connection, without and with Session Present
/// [MQTT-3.2.2-1..3]. Static, so that accepting a connection allocates no scratch chunk
/// (a 4 KiB chunk per CONNACK, freed a moment later, left holes between the long-lived
/// allocations of the connections accepted in the same iteration).
const CONNACK_ACCEPTED: [&[u8]; 2] = [&[0x20, 0x02, 0x00, 0x00], &[0x20, 0x02, 0x01, 0x00]];

/// A retained message owed after a SUBSCRIBE, with the QoS it goes out at and the
/// subscription identifier it carries (0: none).
pub(crate) type Owed = (Arc<Message>, QoS, u32);

/// A piece of queued output.
pub(crate) enum Out {
    /// A frame of its own: an ack, a header, a payload, merged bytes.
    Frame(Bytes),
    /// Consecutive frames not yet cut from the buffer they were encoded into; resolved to a
    /// `Frame` by the next flush.
    Pending { span: Span, source: Source },
}

/// Where an `Out::Pending` span lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// QoS 0 frames in the worker's [`FrameLog`].
    Log,
    /// This connection's scratch buffer since the last flush: acks, PUBLISH headers, small
    /// QoS 1/2 PUBLISHes whole.
    Scratch,
}

thread_local! {
    /// Bytes this thread (a worker) wrote to clients since its last sweep took them: counted
    /// here, where the writes are, without a field in every `Conn` or an atomic per write.
    pub(crate) static WRITTEN: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

// A run costs no more queue space than a frame handle.
const _: () = assert!(std::mem::size_of::<Out>() == std::mem::size_of::<Bytes>());

impl Out {
    fn len(&self) -> usize {
        match self {
            Out::Frame(b) => b.len(),
            Out::Pending { span, .. } => span.len(),
        }
    }

    /// The bytes to write; a run is resolved before any write, so it has none here.
    fn bytes(&self) -> &[u8] {
        match self {
            Out::Frame(b) => b,
            Out::Pending { .. } => &[],
        }
    }
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnState {
    /// Accepted; the first packet must be CONNECT [MQTT-3.1.0-1].
    AwaitingConnect,
    /// CONNECT accepted; serving the session in slot `session` of this worker's session slab
    /// (32 bits, as in session ids: see `Worker::new_session_id`).
    Connected { session: u32 },
}

impl ConnState {
    /// Serving the session in slab slot `skey`.
    pub(crate) fn connected(skey: usize) -> Self {
        // Slots fit 32 bits, as session ids already assume (`Worker::new_session_id`).
        ConnState::Connected {
            session: skey as u32,
        }
    }

    /// The protocol core's view of it.
    pub(crate) fn phase(self) -> Phase {
        match self {
            ConnState::AwaitingConnect => Phase::AwaitingConnect,
            ConnState::Connected { .. } => Phase::Connected,
        }
    }

    /// The session slab slot, once connected.
    pub(crate) fn session(self) -> Option<usize> {
        match self {
            ConnState::AwaitingConnect => None,
            ConnState::Connected { session } => Some(session as usize),
        }
    }
}

/// What a 5.0 connection negotiated, and its inbound topic aliases.
#[derive(Debug)]
pub(crate) struct V5State {
    pub negotiated: Negotiated,
    pub aliases: InboundAliases,
    /// Aliases towards the client, when both sides allow them.
    pub out_aliases: Option<OutboundAliases>,
}

/// What only some connections have: a Will, 5.0 state.
#[derive(Debug, Default)]
struct Extra {
    will: Option<LastWill>,
    v5: Option<V5State>,
    /// What the ACL lets this client do, when an ACL is configured, and the reload
    /// generation of the file it consults (`Shared::acl_generation`).
    acl: Option<(ClientAcl, u64)>,
    /// The client's publish rate and bandwidth allowance, when limits are configured.
    quota: Option<Quota>,
}

pub(crate) struct Conn {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub state: ConnState,
    pub version: ProtocolVersion,
    /// Bytes read and not yet decoded. PUBLISH topics and payloads are cut from it.
    pub rbuf: BytesMut,
    /// Frames waiting for the socket.
    out: VecDeque<Out>,
    /// `Out::Pending` entries in `out`, resolved by the next flush.
    runs: u32,
    out_bytes: usize,
    /// Frames queued since the last `coalesce`, at the back of `out`.
    unmerged: u32,
    /// Scratch space headers are encoded into and split off, so a frame header costs no
    /// allocation of its own.
    scratch: BytesMut,
    /// The keep alive granted in seconds; 0 before CONNECT, or turned off.
    pub keep_alive: u16,
    /// When this connection times out: CONNECT timeout, then 1.5 x keep alive after each
    /// read (the protocol core's decision; the worker's sweep enforces it).
    pub liveness: Liveness,
    /// The Will and the 5.0 state: boxed, since most connections have neither, and every
    /// byte of `Conn` counts per idle client.
    extra: Option<Box<Extra>>,
    /// The TLS and WebSocket state of a connection to such a listener (see `transport`);
    /// boxed for the same reason.
    pub layers: Option<Box<crate::transport::Layers>>,
    /// Which listener accepted it (index into the configuration's listeners), or
    /// [`INTERNAL`] for a bridge's own connection.
    pub listener: u8,
    /// On the worker's flush list this iteration.
    pub dirty: bool,
    /// On the worker's read-again list (read budget ran out before WouldBlock).
    pub read_again: bool,
    /// Published QoS 1/2 into a worker with a backlogged session: not read until no session is
    /// backlogged (see `Mailbox::backlogged`).
    pub throttled: bool,
    /// Not read because its own output queue is over twice the output limit: a client that
    /// does not read what it is sent cannot make the broker queue replies without bound.
    pub output_paused: bool,
    /// Not read until its rate limit's allowance is back (`Worker::wake_rate_limited` reads it again).
    pub rate_limited: bool,
    /// The last write hit `WouldBlock`; cleared by the next WRITABLE edge or a full flush.
    pub write_blocked: bool,
    /// A 3.1 / 3.1.1 bridge (the protocol level's top bit): its subscriptions get No Local
    /// and Retain As Published.
    pub bridge: bool,
    /// Retained messages owed to this connection after a SUBSCRIBE, sent as the output queue
    /// drains so that a large retained set is paced, not dropped. Boxed and only while some
    /// are owed: 8 bytes per connection.
    retained_backlog: Option<Box<Owing>>,
}

/// Retained messages a connection is owed: walks of the retained store, each taken a batch
/// at a time as the output drains (see `RetainedStore::matching_after`), so that a `#` over
/// a million retained messages neither walks them all inside the worker at once nor holds a
/// copy of the list per subscriber.
#[derive(Debug, Default)]
pub(crate) struct Owing {
    /// Taken from the store, not yet sent.
    ready: VecDeque<Owed>,
    walks: VecDeque<Walk>,
}

#[derive(Debug)]
struct Walk {
    filter: Box<str>,
    /// The subscription's granted QoS (a message goes at the lower of it and its own).
    qos: QoS,
    sub_id: u32,
    /// The last topic taken.
    after: Option<Box<str>>,
    /// The retained store's `seq` once the subscription was in the index: messages set
    /// later reach it live, not from the walk.
    until: u64,
}

/// Retained messages taken from the store per step of a walk.
const OWED_BATCH: usize = 64;
/// Walks a connection may have going; a SUBSCRIBE past it sends no retained messages for the
/// filters over (a client repeating distinct filters cannot make the list grow without bound).
const MAX_WALKS: usize = 1024;

impl Conn {
    pub(crate) fn new(stream: TcpStream, peer: SocketAddr, liveness: Liveness) -> Self {
        Self {
            stream,
            peer,
            state: ConnState::AwaitingConnect,
            version: ProtocolVersion::V311,
            rbuf: BytesMut::new(),
            out: VecDeque::new(),
            runs: 0,
            out_bytes: 0,
            unmerged: 0,
            scratch: BytesMut::new(),
            keep_alive: 0,
            liveness,
            extra: None,
            layers: None,
            listener: 0,
            dirty: false,
            read_again: false,
            throttled: false,
            output_paused: false,
            rate_limited: false,
            write_blocked: false,
            bridge: false,
            retained_backlog: None,
        }
    }

    /// Owes the retained messages matching `filter` as of `until` (the store's `seq`, read
    /// once the subscription is in the index), at the lower of their QoS and `qos`
    /// [MQTT-3.3.1-6]: from the start again if the filter was owed already. Returns false if
    /// the connection has too many walks going (`MAX_WALKS`).
    pub(crate) fn owe(&mut self, filter: &str, qos: QoS, sub_id: u32, until: u64) -> bool {
        let owing = self.retained_backlog.get_or_insert_default();
        if let Some(walk) = owing.walks.iter_mut().find(|w| &*w.filter == filter) {
            walk.after = None;
            walk.qos = qos;
            walk.sub_id = sub_id;
            walk.until = until;
            return true;
        }
        if owing.walks.len() >= MAX_WALKS {
            return false;
        }
        owing.walks.push_back(Walk {
            filter: filter.into(),
            qos,
            sub_id,
            after: None,
            until,
        });
        true
    }

    /// The next retained message owed, taken from `retained` a batch at a time; the list is
    /// dropped once empty.
    pub(crate) fn next_owed(
        &mut self,
        retained: &parking_lot::RwLock<vireo_broker::RetainedStore>,
    ) -> Option<Owed> {
        let owing = self.retained_backlog.as_mut()?;
        let mut batch = Vec::new();
        while owing.ready.is_empty() {
            let Some(walk) = owing.walks.front_mut() else {
                break;
            };
            let more = retained.read().matching_after(
                &walk.filter,
                walk.after.as_deref(),
                walk.until,
                &mut batch,
                OWED_BATCH,
            );
            if let Some(last) = batch.last() {
                walk.after = Some(last.topic.as_str().into());
            }
            let (qos, sub_id) = (walk.qos, walk.sub_id);
            owing.ready.extend(batch.drain(..).map(|m| {
                let q = m.qos.min(qos);
                (m, q, sub_id)
            }));
            if !more {
                owing.walks.pop_front();
            }
        }
        let next = owing.ready.pop_front();
        if owing.ready.is_empty() && owing.walks.is_empty() {
            self.retained_backlog = None;
        }
        next
    }

    /// Bytes queued for the socket.
    pub(crate) fn out_bytes(&self) -> usize {
        self.out_bytes
    }

    /// Memory the output queue holds: its bytes plus a handle per frame.
    pub(crate) fn queued_cost(&self) -> usize {
        self.out_bytes + self.out.len() * FRAME_OVERHEAD
    }

    pub(crate) fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Queues a frame. Returns true if the connection was not yet on the flush list.
    pub(crate) fn push(&mut self, frame: Bytes) -> bool {
        if frame.is_empty() {
            // An empty iovec would make `writev` return 0, which reads as a dead socket.
            return false;
        }
        self.out_bytes += frame.len();
        self.unmerged = self.unmerged.saturating_add(1);
        self.out.push_back(Out::Frame(frame));
        !std::mem::replace(&mut self.dirty, true)
    }

    /// Queues a span of the worker's frame log, extending the run at the back of the queue
    /// when the span follows it. Returns true if the connection was not yet on the flush list.
    /// `key` is this connection's: a new run is registered with the log, which keeps what it
    /// points into until it is resolved.
    #[inline]
    pub(crate) fn push_span(&mut self, span: Span, log: &mut FrameLog, key: usize) -> bool {
        let runs = self.runs;
        let dirty = self.push_pending(span, Source::Log);
        if self.runs != runs {
            log.add_holder(key);
        }
        dirty
    }

    /// Queues a span of `source`, extending the pending span at the back of the queue when
    /// the new one follows it in the same buffer.
    #[inline]
    fn push_pending(&mut self, span: Span, source: Source) -> bool {
        if span.start == span.end {
            return false;
        }
        self.out_bytes += span.len();
        match self.out.back_mut() {
            Some(Out::Pending {
                span: last,
                source: s,
            }) if *s == source && last.end == span.start => {
                last.end = span.end;
            }
            _ => {
                self.out.push_back(Out::Pending { span, source });
                self.runs += 1;
                self.unmerged = self.unmerged.saturating_add(1);
            }
        }
        !std::mem::replace(&mut self.dirty, true)
    }

    /// Pending spans in the queue (frame log and scratch), not yet resolved.
    pub(crate) fn queued_runs(&self) -> u32 {
        self.runs
    }

    /// Replaces every pending span (frame log runs, scratch spans) by its bytes. They are
    /// at the back of the queue: every flush resolves all of them first.
    pub(crate) fn resolve(&mut self, log: &mut FrameLog) {
        if self.runs == 0 {
            return;
        }
        log.seal();
        // Everything encoded since the last flush; later frames start again at offset 0.
        let scratch = self.scratch.split().freeze();
        let mut lost = 0;
        for entry in self.out.iter_mut().rev() {
            let bytes = match *entry {
                Out::Frame(_) => continue,
                Out::Pending {
                    span,
                    source: Source::Scratch,
                } => {
                    let (start, end) = (span.start as usize, span.end as usize);
                    (end <= scratch.len()).then(|| scratch.slice(start..end))
                }
                Out::Pending {
                    span,
                    source: Source::Log,
                } => log.slice(span),
            };
            // `None` cannot happen while `FrameLog::release` keeps segments for every holder
            // and scratch is split only here; if it did, the client would see a gap.
            let len = entry.len();
            *entry = Out::Frame(bytes.unwrap_or_else(|| {
                lost += len;
                Bytes::new()
            }));
            self.runs -= 1;
            if self.runs == 0 {
                break;
            }
        }
        if lost > 0 {
            tracing::error!(peer = %self.peer, lost, "queued frames lost; output dropped");
            self.out_bytes -= lost;
        }
    }

    /// Encodes `packet` into the scratch buffer and queues it.
    pub(crate) fn push_packet(&mut self, packet: &Packet) -> bool {
        let start = self.scratch(packet.encoded_len(self.version));
        if let Err(e) = packet.encode(self.version, &mut self.scratch) {
            tracing::error!(peer = %self.peer, error = %e, "cannot encode {}", packet.name());
            self.scratch.truncate(start);
            return false;
        }
        self.push_scratch(start)
    }

    /// Queues the CONNACK accepting a 3.1/3.1.1 connection (5.0 CONNACKs carry properties and
    /// go through [`Conn::push_packet`]).
    pub(crate) fn push_connack_accepted(&mut self, session_present: bool) -> bool {
        debug_assert!(self.version != ProtocolVersion::V5);
        self.push(Bytes::from_static(
            CONNACK_ACCEPTED[usize::from(session_present)],
        ))
    }

    /// What this 5.0 connection negotiated in CONNECT; `None` for 3.1/3.1.1.
    pub(crate) fn negotiated(&self) -> Option<&Negotiated> {
        self.extra
            .as_ref()
            .and_then(|e| e.v5.as_ref())
            .map(|v| &v.negotiated)
    }

    /// The 5.0 state, for the packets that change it.
    pub(crate) fn v5_mut(&mut self) -> Option<&mut V5State> {
        self.extra.as_mut().and_then(|e| e.v5.as_mut())
    }

    /// For a 5.0 client without outbound topic aliases, whether a frame of `len` bytes fits
    /// its Maximum Packet Size; `None` for any other connection. One look at the 5.0 state,
    /// for the fan-out of a shared frame.
    #[inline]
    pub(crate) fn plain_v5_fits(&self, len: usize) -> Option<bool> {
        let v5 = self.extra.as_ref()?.v5.as_ref()?;
        v5.out_aliases.is_none().then(|| v5.negotiated.fits(len))
    }

    /// How the next PUBLISH on `topic` to this client names it (always `Full` unless it is a
    /// 5.0 client with outbound aliases).
    pub(crate) fn out_alias(&self, topic: &str) -> OutAlias {
        self.extra
            .as_ref()
            .and_then(|e| e.v5.as_ref())
            .and_then(|v| v.out_aliases.as_ref())
            .map_or(OutAlias::Full, |a| a.lookup(topic))
    }

    /// Records the alias of an `OutAlias::Set` whose PUBLISH is going out.
    pub(crate) fn record_alias(&mut self, topic: &str, alias: OutAlias) {
        if let OutAlias::Set(a) = alias
            && let Some(aliases) = self.v5_mut().and_then(|v| v.out_aliases.as_mut())
        {
            aliases.record(topic, a);
        }
    }

    /// Sets what CONNECT gave: the Will, for 5.0 the negotiated state, and the client's ACL.
    pub(crate) fn set_connect_state(
        &mut self,
        will: Option<LastWill>,
        v5: Option<V5State>,
        acl: Option<(ClientAcl, u64)>,
        quota: Option<Quota>,
    ) {
        let any = will.is_some() || v5.is_some() || acl.is_some() || quota.is_some();
        self.extra = any.then(|| {
            Box::new(Extra {
                will,
                v5,
                acl,
                quota,
            })
        });
    }

    /// The client's rate-limit allowance, when limits are configured.
    #[inline]
    pub(crate) fn quota_mut(&mut self) -> Option<&mut Quota> {
        self.extra.as_mut()?.quota.as_mut()
    }

    /// The client's ACL, when one is configured, on the broker's current file (a reload
    /// bumped `Shared::acl_generation`: the new file is taken first). A connection without
    /// an ACL costs one look at `extra`, not the atomic load.
    #[inline]
    pub(crate) fn acl_mut(&mut self, shared: &Shared) -> Option<&mut ClientAcl> {
        let (acl, seen) = self.extra.as_mut()?.acl.as_mut()?;
        let generation = shared.acl_generation.load(Ordering::Acquire);
        if *seen != generation {
            if let Some(file) = shared.acl.read().clone() {
                acl.set_file(file);
            }
            *seen = generation;
        }
        Some(acl)
    }

    /// The Will, if the connection has one.
    pub(crate) fn will(&self) -> Option<&LastWill> {
        self.extra.as_ref().and_then(|e| e.will.as_ref())
    }

    /// Takes the Will, to publish or discard it.
    pub(crate) fn take_will(&mut self) -> Option<LastWill> {
        self.extra.as_mut().and_then(|e| e.will.take())
    }

    /// Whether a packet of `len` bytes may go to this client (its 5.0 Maximum Packet Size
    /// [MQTT-3.1.2-24]).
    pub(crate) fn fits(&self, len: usize) -> bool {
        self.negotiated().is_none_or(|n| n.fits(len))
    }

    /// Makes room for `len` more bytes in the scratch buffer, for callers that encode a frame
    /// into it themselves; returns where the frame starts, for [`Conn::push_scratch`].
    pub(crate) fn scratch(&mut self, len: usize) -> usize {
        // Reserved in chunks, so that acks and headers share one allocation instead of
        // costing one each (reserving exactly each frame's size made every PUBACK a malloc).
        if self.scratch.capacity() - self.scratch.len() < len {
            self.scratch.reserve(len.max(SCRATCH_CHUNK));
        }
        self.scratch.len()
    }

    /// The scratch buffer, to encode into after [`Conn::scratch`].
    pub(crate) fn scratch_buf(&mut self) -> &mut BytesMut {
        &mut self.scratch
    }

    /// Queues what was encoded into the scratch buffer since `start` (from [`Conn::scratch`]),
    /// extending the scratch span at the back of the queue when it follows it: a stream of
    /// acks or small PUBLISHes to one client is one slice at the next flush.
    pub(crate) fn push_scratch(&mut self, start: usize) -> bool {
        let span = Span {
            start: start as u64,
            end: self.scratch.len() as u64,
        };
        self.push_pending(span, Source::Scratch)
    }

    /// Writes queued frames until the queue is empty or the socket would block.
    /// `Ok(true)` when everything was written.
    pub(crate) fn flush(&mut self, log: &mut FrameLog) -> io::Result<bool> {
        self.resolve(log);
        while !self.out.is_empty() {
            // Filled in place: `collect` built the 8 KiB array and then moved it, a memcpy of
            // its whole capacity per write (callgrind: 6 % of QoS 1 fan-in).
            let mut iov: SmallVec<[IoSlice<'_>; MAX_IOVECS]> = SmallVec::new();
            iov.extend(
                self.out
                    .iter()
                    .take(MAX_IOVECS)
                    .map(|b| IoSlice::new(b.bytes())),
            );
            let written = match self.layers.as_deref_mut() {
                None => self.stream.write_vectored(&iov),
                Some(layers) => layers.write_vectored(&mut self.stream, &iov),
            };
            drop(iov);
            match written {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    WRITTEN.set(WRITTEN.get() + n as u64);
                    self.consume(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.write_blocked = true;
                    self.coalesce();
                    return Ok(false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(layers) = self.layers.as_deref_mut() {
            // The queue is in rustls; its ciphertext (and any handshake record) must reach the
            // socket too, and WebSocket control frames.
            match layers.flush(&mut self.stream) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.write_blocked = true;
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
        }
        self.write_blocked = false;
        // Everything is written: no frame holds the scratch chunk any more. Release it, so an
        // idle connection keeps no buffer (at most one allocation per connection per loop
        // iteration, against one per frame without chunking).
        if self.scratch.capacity() > 0 {
            self.scratch = BytesMut::new();
        }
        Ok(true)
    }

    /// Merges a long blocked queue into one buffer. Small frames are slices of larger chunks
    /// (the worker's frame log, publishers' read buffers); waiting behind a blocked socket
    /// they would pin those chunks, far more memory than `out_bytes` says. One copy per
    /// blocked episode bounds what a stuck subscriber holds to its queued bytes. Only frames
    /// queued since the last merge are merged, so each byte is copied at most once however
    /// often a slow consumer's socket blocks.
    fn coalesce(&mut self) {
        let tail = (self.unmerged as usize).min(self.out.len());
        if tail <= COALESCE_MIN {
            return;
        }
        let start = self.out.len() - tail;
        let len: usize = self.out.range(start..).map(Out::len).sum();
        let mut merged = BytesMut::with_capacity(len);
        for frame in self.out.drain(start..) {
            merged.extend_from_slice(frame.bytes());
        }
        self.out.push_back(Out::Frame(merged.freeze()));
        self.unmerged = 0;
    }

    /// Reads and discards what the peer already sent (bounded), so that closing after a
    /// refusing CONNACK sends FIN rather than RST, which could discard the CONNACK.
    pub(crate) fn drain_input(&mut self) {
        let mut sink = [0u8; 4096];
        for _ in 0..16 {
            match std::io::Read::read(&mut self.stream, &mut sink) {
                Ok(n) if n > 0 => {}
                _ => return,
            }
        }
    }

    fn consume(&mut self, mut n: usize) {
        self.out_bytes -= n;
        while let Some(front) = self.out.front_mut() {
            if front.len() <= n {
                n -= front.len();
                self.out.pop_front();
            } else {
                if let Out::Frame(bytes) = front {
                    bytes.advance(n);
                }
                return;
            }
        }
    }

    /// Drops the read buffer's allocation when it holds nothing, so idle connections cost
    /// little memory. (The scratch chunk is released by the flush that empties the queue.)
    pub(crate) fn shrink_idle(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
            self.rbuf = BytesMut::new();
        }
    }

    /// Drops the output queue's allocation when it is empty. Called from the worker's
    /// periodic sweep rather than after every flush, so a busy connection keeps its queue
    /// between iterations while an idle one (after its CONNACK, or a PINGRESP) holds none.
    pub(crate) fn release_idle_queue(&mut self) {
        if self.out.is_empty() && self.out.capacity() > 0 {
            self.out = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The static CONNACKs are what the codec encodes.
    #[test]
    fn connack_accepted_matches_encoder() {
        use vireo_codec::{ConnAck, ReasonCode};
        for version in [ProtocolVersion::V31, ProtocolVersion::V311] {
            for present in [false, true] {
                let mut buf = BytesMut::new();
                Packet::ConnAck(ConnAck::new(present, ReasonCode::SUCCESS))
                    .encode(version, &mut buf)
                    .expect("CONNACK encodes");
                assert_eq!(&buf[..], CONNACK_ACCEPTED[usize::from(present)]);
            }
        }
    }
}
