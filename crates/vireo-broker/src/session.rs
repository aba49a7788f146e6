//! One client's session: its subscriptions, its outbound QoS 1/2 window, the messages waiting
//! for that window (or for the client to come back), and its inbound QoS 2 ids.
//!
//! Pure state, no I/O: the server asks [`Session::next_outgoing`] for what to send while its
//! socket has room, and reports acks back. QoS 0 messages never enter the session: the server
//! writes them straight to the connection or drops them, as MQTT allows.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use foldhash::{HashMap, HashMapExt, HashSet};
use vireo_codec::{ByteString, PacketId, QoS};

use crate::{Message, SessionId};

/// Bounds on what one session may hold. Every one is a way a client (or its publishers) could
/// otherwise grow the broker's memory without limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Outbound QoS 1/2 messages sent and not yet acknowledged.
    pub max_inflight: usize,
    /// QoS 1/2 messages waiting for the window or for the client to reconnect.
    pub max_queued_messages: usize,
    /// Bytes (topic + payload) of those waiting messages.
    pub max_queued_bytes: usize,
    /// When the queue is full: drop the oldest queued message (true) or the new one (false).
    pub drop_oldest: bool,
    /// Inbound QoS 2 ids awaiting PUBREL; a client past this is disconnected.
    pub max_incoming_qos2: usize,
    /// Bytes of a durable session's queue kept in memory: the messages queued past them are
    /// on disk only (their journal's records), read back as the queue drains (see
    /// [`Session::unspill`]). So `max_queued_bytes` can be far above the machine's memory.
    /// Sessions that are not durable keep their whole queue in memory.
    pub queue_memory_bytes: usize,
    /// A durable session journals a QoS 1 message only once it has stayed a while (see
    /// [`Session::write_deferred`]), rather than as it is queued: one delivered and
    /// acknowledged before then is never written at all (`persistence = "async"`, where a
    /// crash may lose the last moments anyway). Off, every change is journaled at once.
    pub defer_writes: bool,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            max_inflight: 1024,
            max_queued_messages: 10_000,
            max_queued_bytes: 64 * 1024 * 1024,
            drop_oldest: false,
            max_incoming_qos2: 1024,
            queue_memory_bytes: 1024 * 1024,
            defer_writes: false,
        }
    }
}

/// Something the session wants written to its client.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// A PUBLISH at QoS 1 or 2 (first send or, with `dup`, a re-send).
    Publish {
        /// Its packet id.
        pid: PacketId,
        /// QoS 1 or 2.
        qos: QoS,
        /// DUP: a re-delivery [MQTT-3.3.1-1].
        dup: bool,
        /// RETAIN as it should go out (set only for retained messages sent on subscribe).
        retain: bool,
        /// The message.
        msg: Arc<Message>,
        /// The subscription identifier it goes out with (v5; 0: none;
        /// [`Session::ALL_IDS`]: every matching subscription's).
        sub_id: u32,
    },
    /// A PUBREL for a QoS 2 delivery whose PUBREC has arrived.
    PubRel(PacketId),
}

/// A change to a durable session's QoS 1/2 state, for the store to write down. Each message
/// a session holds has a sequence number, unique within the session while it holds it, in
/// the order the messages came: what a restart sorts them back by.
#[derive(Debug, Clone)]
pub enum Change {
    /// A message entered the session's queue as `seq`.
    Added {
        /// Its sequence number.
        seq: u64,
        /// The QoS it goes out at.
        qos: QoS,
        /// RETAIN as it goes out.
        retain: bool,
        /// The subscription identifier it goes out with.
        sub_id: u32,
        /// The message.
        msg: Arc<Message>,
    },
    /// Message `seq` was sent as `pid`: after a restart it is sent again with that id and
    /// DUP [MQTT-4.4.0-1].
    Sent {
        /// Its sequence number.
        seq: u64,
        /// Its packet id.
        pid: PacketId,
    },
    /// Message `seq` left the session: acknowledged, dropped, expired, or not sendable.
    Removed {
        /// Its sequence number.
        seq: u64,
        /// Whether it had been sent (so a [`Change::Sent`] for it was recorded).
        sent: bool,
    },
    /// The PUBREC of QoS 2 delivery `seq` (sent as `pid`) arrived: the message is gone, and
    /// only a PUBREL is owed for `pid`. `seq` is `u64::MAX` when no message record precedes
    /// it (a session made durable with the PUBREL already owed).
    Released {
        /// Its sequence number.
        seq: u64,
        /// Its packet id.
        pid: PacketId,
        /// A sequence number of its own, taken when the PUBREC came: PUBRELs are re-sent
        /// after a restart in the order of these, which is the order their PUBRECs arrived
        /// in [MQTT-4.6.0-4].
        order: u64,
    },
    /// The PUBCOMP for `pid` arrived: nothing more is owed for it.
    Completed {
        /// Its packet id.
        pid: PacketId,
        /// The `order` of its [`Change::Released`] (`u64::MAX`: one restored from a store
        /// that kept PUBRELs owed by packet id).
        order: u64,
    },
    /// An inbound QoS 2 PUBLISH `pid` was taken; a repeat before PUBREL is not new.
    InboundOpened {
        /// Its packet id.
        pid: PacketId,
    },
    /// PUBREL for inbound `pid`: the id means a new message from now on.
    InboundClosed {
        /// Its packet id.
        pid: PacketId,
    },
}

/// The largest sequence number a restore takes: far above any a broker reaches (one a
/// nanosecond for 290 years), far enough below `u64::MAX` (a marker, see
/// [`Change::Released`]) that counting on from it cannot overflow.
const MAX_SEQ: u64 = u64::MAX / 2;

/// Where a durable session writes its [`Change`]s: the server's store, which makes them
/// durable in the order they are recorded.
pub trait Journal: Send + Sync + std::fmt::Debug {
    /// Writes `change` down (or queues it to be); returns its ticket: a number the journal
    /// can later say is on disk (see [`Session::next_outgoing_durable`]), 0 when it keeps
    /// no such count.
    fn record(&self, change: Change) -> u64;

    /// Asks for the queued messages numbered `from` up to (not including) `end`, recorded
    /// as [`Change::Added`] and not removed, in sequence order and up to about `max_bytes`
    /// of them: the answer comes back as a [`Loaded`] for [`Session::unspill`]. Asked again
    /// only once that came. A journal that keeps nothing never sees this asked: a session
    /// spills only while it has a journal.
    fn load(&self, from: u64, end: u64, max_bytes: usize);
}

/// What a [`Journal`] read back of a session's queue on disk (see [`Journal::load`]).
#[derive(Debug, Default)]
pub struct Loaded {
    /// The messages, in sequence order: `Restored::Message` with no packet id.
    pub messages: Vec<Restored>,
    /// Where the next load starts: past the last record looked at.
    pub next: u64,
    /// Records looked at that are gone now (expired while on disk, or not readable), with
    /// their bytes: out of the queue's count too.
    pub dropped: usize,
    /// Their bytes (topic and payload; estimated for one not readable).
    pub dropped_bytes: usize,
    /// Whether the range asked for was read to its end.
    pub done: bool,
}

/// What a restart hands back to a session (see [`Session::restore`]).
#[derive(Debug, Clone)]
pub enum Restored {
    /// A message, queued (`pid` none) or in flight with its id.
    Message {
        /// Its sequence number.
        seq: u64,
        /// The QoS it goes out at.
        qos: QoS,
        /// RETAIN as it goes out.
        retain: bool,
        /// The subscription identifier it goes out with.
        sub_id: u32,
        /// The message.
        msg: Arc<Message>,
        /// The id it was sent with, if it was.
        pid: Option<PacketId>,
    },
    /// A QoS 2 delivery awaiting PUBCOMP, restored in `order` (see [`Change::Released`]).
    Released {
        /// Its packet id.
        pid: PacketId,
        /// Its `order` as recorded (`u64::MAX`: not known).
        order: u64,
    },
    /// An inbound QoS 2 id awaiting PUBREL.
    Inbound(PacketId),
    /// Queued messages left on disk (past the session's `queue_memory_bytes`): numbered
    /// `first` to `last`, `count` of them, about `bytes` of topic and payload. After every
    /// `Message` of the session.
    Spilled {
        /// The lowest sequence number.
        first: u64,
        /// The highest.
        last: u64,
        /// How many.
        count: usize,
        /// Their bytes.
        bytes: usize,
    },
}

#[derive(Debug)]
enum InflightState {
    /// QoS 1 awaiting PUBACK, or QoS 2 awaiting PUBREC.
    AwaitingAck {
        seq: u64,
        qos: QoS,
        retain: bool,
        msg: Arc<Message>,
        sub_id: u32,
        /// Journaled (see [`Queued::written`]).
        written: bool,
    },
    /// QoS 2 awaiting PUBCOMP: the PUBLISH is never sent again, only the PUBREL [MQTT-4.3.3-1].
    /// `order`: see [`Change::Released`].
    AwaitingPubComp { order: u64 },
}

#[derive(Debug)]
struct Queued {
    seq: u64,
    /// The journal's ticket for its `Added` (0: not journaled, or restored from disk).
    ticket: u64,
    qos: QoS,
    retain: bool,
    msg: Arc<Message>,
    sub_id: u32,
    /// Its `Added` is journaled (or it came from the journal). A deferred one (see
    /// [`SessionLimits::defer_writes`]) is not yet: nothing about it is written until it is.
    written: bool,
}

/// What an acknowledgement from the client (PUBACK, PUBREC, PUBCOMP) matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// It completed (or advanced) a delivery in flight.
    Matched,
    /// No delivery in flight has this id: ignored (a late repeat, or after a reconnect).
    Unknown,
    /// The id is in flight at the other QoS, or at another step (PUBREC for a QoS 1 PUBLISH,
    /// PUBACK or PUBCOMP for a QoS 2 one awaiting PUBREC): a protocol violation, which
    /// Mosquitto answers by closing the connection (5.0: DISCONNECT 0x82).
    WrongStep,
}

/// One subscription of a session as it was granted: what the index holds for it too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscribed {
    /// Granted QoS.
    pub qos: QoS,
    /// [`crate::Recipient`] flags (No Local, Retain As Published).
    pub flags: u8,
    /// v5 subscription identifier; 0 for none.
    pub sub_id: u32,
}

impl Subscribed {
    /// A plain subscription at `qos`.
    pub const fn qos(qos: QoS) -> Self {
        Self {
            qos,
            flags: 0,
            sub_id: 0,
        }
    }
}

/// Result of offering a message to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Queued for delivery.
    Queued,
    /// Queued, and the oldest queued message was dropped to make room.
    QueuedDroppedOldest,
    /// Not queued: the queue is full.
    Dropped,
}

/// The QoS 1/2 state of a session: allocated on first use, dropped when empty, so that the
/// common idle session (subscriptions only, nothing in flight) costs no more than its header.
#[derive(Debug, Default)]
struct Flow {
    /// Sent, awaiting acknowledgement, in send order (re-sent in that order [MQTT-4.6.0-1]).
    inflight: VecDeque<(PacketId, InflightState)>,
    queue: VecDeque<Queued>,
    queued_bytes: usize,
    incoming_qos2: HashSet<PacketId>,
    /// Ids held by `inflight`, for O(1) allocation checks on the hot path.
    used_pids: HashSet<PacketId>,
    /// The next message's sequence number (see [`Change`]). Starting again at 0 when the
    /// state is freed is safe: nothing of the old numbers is held then.
    next_seq: u64,
    /// The queue's tail that is on disk only (durable sessions).
    spill: Spill,
    /// QoS 1 messages held whose journaling is deferred (see [`Session::write_deferred`]).
    deferred: Deferred,
}

/// Where the deferred messages are: every message numbered below `low` is journaled (or
/// gone); those from `low` up to `mark` were there at the last [`Session::write_deferred`]
/// and are journaled by the next one.
#[derive(Debug, Default)]
struct Deferred {
    count: usize,
    low: u64,
    mark: u64,
}

/// The part of a durable session's queue that is on disk only: messages numbered from
/// `first` up to `Flow::next_seq`, all behind those in memory. While any are, every new
/// message joins them, so the queue keeps its order.
#[derive(Debug, Default)]
struct Spill {
    first: u64,
    /// Messages on disk (0: none, nothing spills).
    count: usize,
    /// Their bytes (topic and payload), for `max_queued_bytes`.
    bytes: usize,
    /// A [`Journal::load`] is on its way.
    loading: bool,
}

impl Flow {
    fn is_idle(&self) -> bool {
        self.inflight.is_empty()
            && self.queue.is_empty()
            && self.incoming_qos2.is_empty()
            && self.spill.count == 0
            && !self.spill.loading
    }

    fn position(&self, pid: PacketId) -> Option<usize> {
        self.inflight.iter().position(|(p, _)| *p == pid)
    }

    /// Queues message `seq`, read back from the journal (on disk already: no ticket).
    fn queue_stored(&mut self, seq: u64, qos: QoS, retain: bool, sub_id: u32, msg: Arc<Message>) {
        self.queued_bytes += msg.weight();
        self.queue.push_back(Queued {
            seq,
            ticket: 0,
            qos,
            retain,
            msg,
            sub_id,
            written: true,
        });
    }

    /// Removes entry `i` of the window; returns the sequence number of the message it held,
    /// if it was journaled (one deferred is forgotten here, and never written).
    fn forget(&mut self, i: usize) -> Option<u64> {
        let (pid, state) = self.inflight.remove(i)?;
        self.used_pids.remove(&pid);
        match state {
            InflightState::AwaitingAck { seq, written, .. } => self.journaled(seq, written),
            InflightState::AwaitingPubComp { .. } => None,
        }
    }

    /// `seq` leaves the session: `Some(seq)` if the journal has it (and is to be told),
    /// `None` if it was deferred (counted out).
    fn journaled(&mut self, seq: u64, written: bool) -> Option<u64> {
        if written {
            Some(seq)
        } else {
            self.deferred.count -= 1;
            None
        }
    }
}

/// The filters a session subscribes to, as granted. The map is allocated on the first
/// subscription and dropped with the last, so a session that subscribes to nothing (most idle
/// connections, e.g. publishers) spends 8 bytes on it instead of an empty map's 40.
#[derive(Debug, Default)]
pub struct Subscriptions(Option<Box<HashMap<ByteString, Subscribed>>>);

impl Subscriptions {
    /// How many filters.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |m| m.len())
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `filter` is subscribed to (literal comparison).
    pub fn contains_key(&self, filter: &str) -> bool {
        self.0.as_ref().is_some_and(|m| m.contains_key(filter))
    }

    /// What was granted for `filter`.
    pub fn get(&self, filter: &str) -> Option<Subscribed> {
        self.0.as_ref().and_then(|m| m.get(filter).copied())
    }

    /// Adds or replaces `filter`; returns what it replaced.
    pub fn insert(&mut self, filter: ByteString, sub: Subscribed) -> Option<Subscribed> {
        self.0
            .get_or_insert_with(|| Box::new(HashMap::new()))
            .insert(filter, sub)
    }

    /// Removes `filter`; returns what was granted if it was there.
    pub fn remove(&mut self, filter: &str) -> Option<Subscribed> {
        let map = self.0.as_mut()?;
        let qos = map.remove(filter);
        if map.is_empty() {
            self.0 = None;
        }
        qos
    }

    /// The filters, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &ByteString> + '_ {
        self.0.iter().flat_map(|m| m.keys())
    }

    /// The identifiers of every subscription whose filter matches `topic` (a shared one's
    /// inner filter included), for the one PUBLISH that must carry them all [MQTT-3.3.4-4].
    /// A walk over the session's filters: only for the rare overlapping case.
    pub fn ids_matching(&self, topic: &str) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .iter()
            .filter(|(_, s)| s.sub_id != 0)
            .filter(|(f, _)| {
                let filter = match vireo_codec::parse_shared(f) {
                    Ok(Some((_, inner))) => inner,
                    _ => f,
                };
                vireo_codec::topic_matches(filter, topic)
            })
            .map(|(_, s)| s.sub_id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Filters and what was granted, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&ByteString, &Subscribed)> + '_ {
        self.0.iter().flat_map(|m| m.iter())
    }
}

/// A client session.
#[derive(Debug)]
pub struct Session {
    /// Process-unique id; what the subscription index stores.
    pub id: SessionId,
    /// The client identifier it is stored under [MQTT-3.1.3-2]. A `Box<str>` (16 bytes, one
    /// allocation) rather than a shared `ByteString` (32): sessions never hand it out.
    pub client_id: Box<str>,
    /// CleanSession=1: the session ends with its connection [MQTT-3.1.2-6].
    pub clean: bool,
    /// Filters this session subscribes to, with granted QoS; mirrors the index so the session
    /// can remove its own entries when it ends.
    pub subscriptions: Subscriptions,
    /// Shared by every session of a broker.
    limits: Arc<SessionLimits>,
    flow: Option<Box<Flow>>,
    /// Packet id counter; kept outside `flow` so ids keep advancing across idle periods.
    next_pid: u16,
    /// The client's v5 Receive Maximum: the window is the smaller of it and
    /// `limits.max_inflight` [MQTT-3.3.4-9]. 0 (3.1.1): the limit alone.
    receive_maximum: u16,
    /// Set for a session the store keeps: every change to its QoS 1/2 state goes there.
    /// Boxed to a thin pointer: most sessions have none, and every byte of a session counts
    /// at a million of them.
    #[allow(clippy::redundant_allocation)]
    journal: Option<Box<Arc<dyn Journal>>>,
    /// A client is connected to it (see [`Session::set_connected`]).
    connected: bool,
}

impl Session {
    /// The `sub_id` of a message matched by overlapping subscriptions with different
    /// identifiers: the server sends every matching subscription's [MQTT-3.3.4-4].
    pub const ALL_IDS: u32 = u32::MAX;

    /// A new, empty session.
    pub fn new(
        id: SessionId,
        client_id: impl Into<Box<str>>,
        clean: bool,
        limits: Arc<SessionLimits>,
    ) -> Self {
        Self {
            id,
            client_id: client_id.into(),
            clean,
            subscriptions: Subscriptions::default(),
            limits,
            flow: None,
            next_pid: 0,
            receive_maximum: 0,
            journal: None,
            connected: false,
        }
    }

    /// Makes the session durable: from now on its QoS 1/2 state is written to `journal`.
    /// Called while it holds none (a new session, or one about to be [`Session::restore`]d:
    /// the server makes a session durable when it first stores it). `None` stops it (the
    /// store forgets the session as a whole).
    pub fn set_journal(&mut self, journal: Option<Arc<dyn Journal>>) {
        debug_assert!(
            journal.is_none()
                || self.journal.is_some()
                || self.flow.as_ref().is_none_or(|f| f.is_idle()),
            "made durable while holding QoS 1/2 state the journal would not have"
        );
        self.journal = journal.map(Box::new);
    }

    /// Whether a client is connected. A connected session's queue stays in memory (up to
    /// `max_queued_bytes`, as a session that is not durable): it is being drained, and
    /// spilling it would write and read back every message while the subscriber catches up
    /// (under a QoS 1 fan-in that halved the rate, and the slower drain spilled more). Only
    /// while offline do messages past `queue_memory_bytes` go to disk only; once any are,
    /// every new one joins them, connected or not, so the queue keeps its order.
    pub fn set_connected(&mut self, connected: bool) {
        self.connected = connected;
    }

    /// Whether the store keeps this session's QoS 1/2 state.
    pub fn is_durable(&self) -> bool {
        self.journal.is_some()
    }

    fn record(&self, change: Change) {
        if let Some(j) = &self.journal {
            j.record(change);
        }
    }

    /// Brings back what the store held for this session, in the order given (the store's
    /// sequence order); not written to the journal, which holds it already.
    pub fn restore(&mut self, item: Restored) {
        let flow = self.flow_mut();
        match item {
            Restored::Message {
                seq,
                qos,
                retain,
                sub_id,
                msg,
                pid,
            } => {
                if seq > MAX_SEQ {
                    return; // not a number this broker writes: damage
                }
                flow.next_seq = flow.next_seq.max(seq + 1);
                match pid {
                    Some(pid) if flow.used_pids.insert(pid) => {
                        flow.inflight.push_back((
                            pid,
                            InflightState::AwaitingAck {
                                seq,
                                qos,
                                retain,
                                msg,
                                sub_id,
                                written: true,
                            },
                        ));
                    }
                    _ => flow.queue_stored(seq, qos, retain, sub_id, msg),
                }
            }
            Restored::Released { pid, order } => {
                if order != u64::MAX {
                    if order > MAX_SEQ {
                        return;
                    }
                    flow.next_seq = flow.next_seq.max(order + 1);
                }
                if flow.used_pids.insert(pid) {
                    flow.inflight
                        .push_back((pid, InflightState::AwaitingPubComp { order }));
                }
            }
            Restored::Inbound(pid) => {
                flow.incoming_qos2.insert(pid);
            }
            Restored::Spilled {
                first,
                last,
                count,
                bytes,
            } => {
                if last > MAX_SEQ || count == 0 || first > last {
                    return;
                }
                flow.next_seq = flow.next_seq.max(last + 1);
                flow.spill = Spill {
                    first,
                    count,
                    bytes,
                    loading: false,
                };
            }
        }
    }

    /// Takes back what a [`Journal::load`] read of the queue on disk: the messages join the
    /// queue in memory, behind those already there. Then asks for more if the queue is
    /// still short.
    pub fn unspill(&mut self, loaded: Loaded) {
        let Some(flow) = self.flow.as_mut() else {
            return;
        };
        flow.spill.loading = false;
        let mut count = loaded.dropped;
        let mut bytes = loaded.dropped_bytes;
        for item in loaded.messages {
            let Restored::Message {
                seq,
                qos,
                retain,
                sub_id,
                msg,
                ..
            } = item
            else {
                continue;
            };
            if seq < flow.spill.first || seq >= flow.next_seq {
                continue; // not what was asked for
            }
            count += 1;
            bytes += msg.weight();
            flow.queue_stored(seq, qos, retain, sub_id, msg);
        }
        let spill = &mut flow.spill;
        spill.first = spill.first.max(loaded.next);
        spill.count = spill.count.saturating_sub(count);
        spill.bytes = spill.bytes.saturating_sub(bytes);
        if spill.first >= flow.next_seq || (loaded.done && loaded.next >= flow.next_seq) {
            // All read back (a record that was not there counts as read).
            spill.count = 0;
        }
        if spill.count == 0 {
            spill.bytes = 0;
        }
        self.want_load();
    }

    /// Asks the journal for the queue's tail on disk once the part in memory is under half
    /// its budget.
    fn want_load(&mut self) {
        let budget = self.limits.queue_memory_bytes;
        let (Some(journal), Some(flow)) = (&self.journal, self.flow.as_mut()) else {
            return;
        };
        let spill = &mut flow.spill;
        if spill.count == 0 || spill.loading || flow.queued_bytes > budget / 2 {
            return;
        }
        spill.loading = true;
        journal.load(
            spill.first,
            flow.next_seq,
            budget.saturating_sub(flow.queued_bytes).max(1),
        );
    }

    /// Whether part of the queue is on disk only, or on its way back from it: the journal
    /// still holds messages this session is to deliver.
    pub fn has_spill(&self) -> bool {
        self.flow
            .as_ref()
            .is_some_and(|f| f.spill.count != 0 || f.spill.loading)
    }

    /// Queued messages on disk only (see [`SessionLimits::queue_memory_bytes`]).
    pub fn spilled_len(&self) -> usize {
        self.flow.as_ref().map_or(0, |f| f.spill.count)
    }

    /// Sets the client's Receive Maximum (v5 CONNECT; 0 for none), which bounds the window
    /// from the next send on.
    pub fn set_receive_maximum(&mut self, receive_maximum: u16) {
        self.receive_maximum = receive_maximum;
    }

    /// Unacknowledged QoS 1/2 PUBLISHes this session may have out at once.
    pub fn window(&self) -> usize {
        match self.receive_maximum {
            0 => self.limits.max_inflight,
            n => self.limits.max_inflight.min(usize::from(n)),
        }
    }

    fn flow_mut(&mut self) -> &mut Flow {
        self.flow.get_or_insert_with(Box::default)
    }

    /// Frees the QoS 1/2 state if nothing is in it. Not done on every acknowledgement: a
    /// subscriber that keeps up empties its state after almost every message, and re-allocating
    /// it each time was most of a QoS 1 fan-in profile's malloc/free (24%). The server calls
    /// this when the session goes offline and, for online sessions, every few seconds.
    pub fn shrink_if_idle(&mut self) {
        if self.flow.as_ref().is_some_and(|f| f.is_idle()) {
            self.flow = None;
        }
    }

    /// Queues a QoS 1/2 message ([MQTT-3.1.2-5] while offline, or behind a full window).
    pub fn enqueue(&mut self, msg: Arc<Message>, qos: QoS, retain: bool) -> Enqueued {
        self.enqueue_with(msg, qos, retain, 0)
    }

    /// [`Session::enqueue`] with the subscription identifier the message goes out with.
    pub fn enqueue_with(
        &mut self,
        msg: Arc<Message>,
        qos: QoS,
        retain: bool,
        sub_id: u32,
    ) -> Enqueued {
        debug_assert!(qos != QoS::AtMostOnce, "QoS 0 never enters the session");
        let limits = Arc::clone(&self.limits);
        let weight = msg.weight();
        if limits.max_queued_messages == 0 || weight > limits.max_queued_bytes {
            return Enqueued::Dropped;
        }
        let flow = self.flow.get_or_insert_with(Box::default);
        let mut outcome = Enqueued::Queued;
        while flow.queue.len() + flow.spill.count >= limits.max_queued_messages
            || (flow.queued_bytes + flow.spill.bytes + weight > limits.max_queued_bytes
                && flow.queue.len() + flow.spill.count > 0)
        {
            if !limits.drop_oldest {
                outcome = Enqueued::Dropped;
                break;
            }
            // The oldest in memory (with the rest on disk and none in memory, a load is on
            // its way: the new message is dropped instead).
            let Some(old) = flow.queue.pop_front() else {
                outcome = Enqueued::Dropped;
                break;
            };
            flow.queued_bytes -= old.msg.weight();
            if let (Some(j), Some(seq)) = (&self.journal, flow.journaled(old.seq, old.written)) {
                j.record(Change::Removed { seq, sent: false });
            }
            outcome = Enqueued::QueuedDroppedOldest;
        }
        if outcome != Enqueued::Dropped {
            let seq = flow.next_seq;
            flow.next_seq += 1;
            if self.journal.is_some()
                && (flow.spill.count > 0
                    || (!self.connected
                        && flow.queued_bytes + weight > limits.queue_memory_bytes
                        && !flow.queue.is_empty()))
            {
                // On disk only: its record is all there is of it until it is read back.
                if flow.spill.count == 0 {
                    flow.spill.first = seq;
                }
                flow.spill.count += 1;
                flow.spill.bytes += weight;
                self.record(Change::Added {
                    seq,
                    qos,
                    retain,
                    sub_id,
                    msg,
                });
                if outcome == Enqueued::QueuedDroppedOldest {
                    self.want_load();
                }
                return outcome;
            }
            flow.queued_bytes += weight;
            // QoS 2 is never deferred: it goes out only once journaled (see
            // `next_outgoing_durable`).
            let defer = limits.defer_writes && qos == QoS::AtLeastOnce && self.journal.is_some();
            let ticket = match &self.journal {
                Some(_) if defer => {
                    flow.deferred.count += 1;
                    0
                }
                Some(j) => j.record(Change::Added {
                    seq,
                    qos,
                    retain,
                    sub_id,
                    msg: Arc::clone(&msg),
                }),
                None => 0,
            };
            flow.queue.push_back(Queued {
                seq,
                ticket,
                qos,
                retain,
                msg,
                sub_id,
                written: !defer,
            });
        }
        outcome
    }

    /// Takes the next queued message into the inflight window, if the window has room.
    /// Messages whose expiry passed while they waited are dropped on the way [MQTT-3.3.2-5].
    pub fn next_outgoing(&mut self, now: Instant) -> Option<Outgoing> {
        self.next_outgoing_durable(now, u64::MAX)
    }

    /// [`Session::next_outgoing`], where a QoS 2 message goes out only once its journal
    /// ticket is at most `synced` (on disk). A receiver that got a QoS 2 PUBLISH holds its
    /// packet id until PUBREL [MQTT-4.3.3-2]; a broker that crashed before the message was
    /// on disk would forget it, and give the id to another message, which that receiver
    /// would then take for a repeat and drop. QoS 1 has no such state, and goes at once.
    pub fn next_outgoing_durable(&mut self, now: Instant, synced: u64) -> Option<Outgoing> {
        if synced != u64::MAX && self.waits_for_disk(synced) {
            return None;
        }
        let window = self.window();
        let flow = self.flow.as_mut()?;
        if flow.inflight.len() >= window {
            return None;
        }
        while flow.queue.front().is_some_and(|q| q.msg.expired(now)) {
            if let Some(old) = flow.queue.pop_front() {
                flow.queued_bytes -= old.msg.weight();
                if let (Some(j), Some(seq)) = (&self.journal, flow.journaled(old.seq, old.written))
                {
                    j.record(Change::Removed { seq, sent: false });
                }
            }
        }
        if flow.queue.is_empty() {
            if flow.spill.count != 0 {
                self.want_load();
            }
            return None;
        }
        let pid = if self.journal.is_none() {
            self.allocate_pid()?
        } else {
            // Durable: the id follows from the sequence number, so a restart that lost the
            // `Sent` record sends the message again with the id the client holds.
            let seq = flow.queue.front()?.seq;
            let pid = PacketId::new((seq % u64::from(u16::MAX)) as u16 + 1)?;
            if !flow.used_pids.insert(pid) {
                return None; // a message 65,535 older still holds it: wait for it
            }
            pid
        };
        let flow = self.flow.get_or_insert_with(Box::default);
        let q = flow.queue.pop_front()?;
        flow.queued_bytes -= q.msg.weight();
        let spilled = flow.spill.count != 0;
        if let Some(j) = &self.journal
            && q.written
        {
            j.record(Change::Sent { seq: q.seq, pid });
        }
        if spilled {
            self.want_load();
        }
        let flow = self.flow.get_or_insert_with(Box::default);
        flow.inflight.push_back((
            pid,
            InflightState::AwaitingAck {
                seq: q.seq,
                qos: q.qos,
                retain: q.retain,
                msg: Arc::clone(&q.msg),
                sub_id: q.sub_id,
                written: q.written,
            },
        ));
        Some(Outgoing::Publish {
            pid,
            qos: q.qos,
            dup: false,
            retain: q.retain,
            msg: q.msg,
            sub_id: q.sub_id,
        })
    }

    /// A fresh packet id not used by any inflight message [MQTT-2.3.1-4]. `None` only if all
    /// 65,535 are in use, which the inflight limit prevents.
    fn allocate_pid(&mut self) -> Option<PacketId> {
        for _ in 0..=u16::MAX {
            self.next_pid = self.next_pid.wrapping_add(1);
            if let Some(pid) = PacketId::new(self.next_pid)
                && self.flow_mut().used_pids.insert(pid)
            {
                return Some(pid);
            }
        }
        None
    }

    /// PUBACK: completes a QoS 1 delivery.
    pub fn on_puback(&mut self, pid: PacketId) -> AckOutcome {
        let Some(flow) = self.flow.as_mut() else {
            return AckOutcome::Unknown;
        };
        match flow.position(pid) {
            Some(i)
                if matches!(
                    flow.inflight[i].1,
                    InflightState::AwaitingAck {
                        qos: QoS::AtLeastOnce,
                        ..
                    }
                ) =>
            {
                if let Some(seq) = flow.forget(i) {
                    self.record(Change::Removed { seq, sent: true });
                }
                AckOutcome::Matched
            }
            Some(_) => AckOutcome::WrongStep,
            None => AckOutcome::Unknown,
        }
    }

    /// PUBREC: the QoS 2 delivery moves on to PUBREL, which the caller sends (for an
    /// unknown id too, so the client can finish its side; 5.0 with reason 0x92).
    pub fn on_pubrec(&mut self, pid: PacketId) -> AckOutcome {
        let Some(flow) = self.flow.as_mut() else {
            return AckOutcome::Unknown;
        };
        let Some(i) = flow.position(pid) else {
            return AckOutcome::Unknown;
        };
        match flow.inflight[i].1 {
            InflightState::AwaitingAck {
                qos: QoS::ExactlyOnce,
                ..
            } => {}
            // A repeated PUBREC: PUBREL again.
            InflightState::AwaitingPubComp { .. } => return AckOutcome::Matched,
            InflightState::AwaitingAck { .. } => return AckOutcome::WrongStep,
        }
        // Moved to the back: PUBRELs, sent now and re-sent on reconnect, follow the order the
        // PUBRECs arrived in [MQTT-4.6.0-4].
        if let Some((_, InflightState::AwaitingAck { seq, written, .. })) = flow.inflight.remove(i)
        {
            // (QoS 2 is never deferred; `u64::MAX`, nothing of the message written, in case.)
            let seq = flow.journaled(seq, written).unwrap_or(u64::MAX);
            let order = flow.next_seq;
            flow.next_seq += 1;
            flow.inflight
                .push_back((pid, InflightState::AwaitingPubComp { order }));
            self.record(Change::Released { seq, pid, order });
        }
        AckOutcome::Matched
    }

    /// A 5.0 PUBREC with a failure reason (0x80 or more): the delivery ends there, with no
    /// PUBREL [MQTT-4.3.3-4], and is not sent again [MQTT-4.4.0-2].
    pub fn on_pubrec_failed(&mut self, pid: PacketId) -> AckOutcome {
        let Some(flow) = self.flow.as_mut() else {
            return AckOutcome::Unknown;
        };
        match flow.position(pid) {
            Some(i)
                if matches!(
                    flow.inflight[i].1,
                    InflightState::AwaitingAck {
                        qos: QoS::ExactlyOnce,
                        ..
                    }
                ) =>
            {
                if let Some(seq) = flow.forget(i) {
                    self.record(Change::Removed { seq, sent: true });
                }
                AckOutcome::Matched
            }
            Some(_) => AckOutcome::WrongStep,
            None => AckOutcome::Unknown,
        }
    }

    /// Drops a delivery in flight as if it had been acknowledged: a PUBLISH larger than the
    /// client's Maximum Packet Size is not sent and counts as delivered [MQTT-3.1.2-25].
    pub fn abandon(&mut self, pid: PacketId) {
        if let Some(flow) = self.flow.as_mut()
            && let Some(i) = flow.position(pid)
            && let Some(seq) = flow.forget(i)
        {
            self.record(Change::Removed { seq, sent: true });
        }
    }

    /// PUBCOMP: completes a QoS 2 delivery.
    pub fn on_pubcomp(&mut self, pid: PacketId) -> AckOutcome {
        let Some(flow) = self.flow.as_mut() else {
            return AckOutcome::Unknown;
        };
        match flow.position(pid) {
            Some(i) => {
                let InflightState::AwaitingPubComp { order } = flow.inflight[i].1 else {
                    return AckOutcome::WrongStep;
                };
                flow.forget(i);
                self.record(Change::Completed { pid, order });
                AckOutcome::Matched
            }
            None => AckOutcome::Unknown,
        }
    }

    /// Everything to re-send when the client reconnects to this session, in original order:
    /// unacknowledged PUBLISHes with DUP set and PUBRELs for those already PUBREC'd
    /// [MQTT-4.4.0-1].
    pub fn resend(&self) -> impl Iterator<Item = Outgoing> + '_ {
        self.flow
            .iter()
            .flat_map(|f| f.inflight.iter())
            .map(|(pid, state)| match state {
                InflightState::AwaitingAck {
                    qos,
                    retain,
                    msg,
                    sub_id,
                    ..
                } => Outgoing::Publish {
                    pid: *pid,
                    qos: *qos,
                    dup: true,
                    retain: *retain,
                    msg: Arc::clone(msg),
                    sub_id: *sub_id,
                },
                InflightState::AwaitingPubComp { .. } => Outgoing::PubRel(*pid),
            })
    }

    /// Takes every message this session was given and may hand on — unacknowledged QoS 1
    /// PUBLISHes and the queue, in order — with the QoS each was to go out at. For a session
    /// that ends owing messages to a shared group, which then go to another member. A QoS 2
    /// PUBLISH already sent stays out, acknowledged or not: it must not reach a second member
    /// [MQTT-4.8.2-5].
    pub fn take_undelivered(&mut self) -> Vec<(Arc<Message>, QoS)> {
        let Some(flow) = self.flow.take() else {
            return Vec::new();
        };
        let inflight = flow
            .inflight
            .into_iter()
            .filter_map(|(_, state)| match state {
                InflightState::AwaitingAck {
                    qos: QoS::AtLeastOnce,
                    msg,
                    ..
                } => Some((msg, QoS::AtLeastOnce)),
                InflightState::AwaitingAck { .. } | InflightState::AwaitingPubComp { .. } => None,
            });
        inflight
            .chain(flow.queue.into_iter().map(|q| (q.msg, q.qos)))
            .collect()
    }

    /// An inbound QoS 2 PUBLISH with `pid`: `Ok(true)` the first time (deliver it onward),
    /// `Ok(false)` for a repeat before PUBREL (acknowledge again, deliver nothing)
    /// [MQTT-4.3.3-2]; `Err(())` if the client has too many QoS 2 ids open.
    #[allow(clippy::result_unit_err)]
    pub fn on_incoming_qos2(&mut self, pid: PacketId) -> Result<bool, ()> {
        let max = self.limits.max_incoming_qos2;
        let flow = self.flow_mut();
        if flow.incoming_qos2.contains(&pid) {
            return Ok(false);
        }
        if flow.incoming_qos2.len() >= max {
            return Err(());
        }
        flow.incoming_qos2.insert(pid);
        self.record(Change::InboundOpened { pid });
        Ok(true)
    }

    /// PUBREL for an inbound QoS 2 id: forgets it (the id means a new message afterwards).
    /// Returns whether the id was awaiting PUBREL.
    pub fn on_pubrel(&mut self, pid: PacketId) -> bool {
        let known = self
            .flow
            .as_mut()
            .is_some_and(|flow| flow.incoming_qos2.remove(&pid));
        if known {
            self.record(Change::InboundClosed { pid });
        }
        known
    }

    /// Inbound QoS 2 ids awaiting PUBREL: the client's unacknowledged PUBLISHes, which its
    /// Receive Maximum from the server bounds [MQTT-3.3.4-7].
    pub fn incoming_qos2_len(&self) -> usize {
        self.flow.as_ref().map_or(0, |f| f.incoming_qos2.len())
    }

    /// Outbound messages sent and not yet acknowledged.
    pub fn inflight_len(&self) -> usize {
        self.flow.as_ref().map_or(0, |f| f.inflight.len())
    }

    /// Messages waiting to be sent (those on disk only too).
    pub fn queued_len(&self) -> usize {
        self.flow
            .as_ref()
            .map_or(0, |f| f.queue.len() + f.spill.count)
    }

    /// Whether the next message is a QoS 2 one whose `Added` is not on disk yet (its
    /// ticket above `synced`).
    pub fn waits_for_disk(&self, synced: u64) -> bool {
        self.flow
            .as_ref()
            .and_then(|f| f.queue.front())
            .is_some_and(|q| {
                q.qos == QoS::ExactlyOnce && q.ticket > synced && self.journal.is_some()
            })
    }

    /// Whether some QoS 1 messages held are not journaled yet (see
    /// [`SessionLimits::defer_writes`]).
    pub fn has_deferred(&self) -> bool {
        self.flow.as_ref().is_some_and(|f| f.deferred.count > 0)
    }

    /// Journals the deferred messages that were already held at the last call (`all`: every
    /// one, for a shutdown). Called at a fixed period, so a message is journaled between one
    /// and two periods after it was queued, unless it was delivered and acknowledged first:
    /// then nothing of it is ever written. Returns whether some are still deferred.
    pub fn write_deferred(&mut self, all: bool) -> bool {
        let (Some(journal), Some(flow)) = (&self.journal, self.flow.as_mut()) else {
            return false;
        };
        let Flow {
            inflight,
            queue,
            deferred,
            next_seq,
            ..
        } = &mut **flow;
        if deferred.count == 0 {
            deferred.low = *next_seq;
            deferred.mark = *next_seq;
            return false;
        }
        let upto = if all { u64::MAX } else { deferred.mark };
        let low = deferred.low;
        // Both in sequence order, the window's before the queue's: walked back from the
        // newest to `low`, under which all is journaled.
        for q in queue.iter_mut().rev() {
            if q.seq < low {
                break;
            }
            if !q.written && q.seq < upto {
                q.written = true;
                deferred.count -= 1;
                q.ticket = journal.record(Change::Added {
                    seq: q.seq,
                    qos: q.qos,
                    retain: q.retain,
                    sub_id: q.sub_id,
                    msg: Arc::clone(&q.msg),
                });
            }
        }
        for (pid, state) in inflight.iter_mut().rev() {
            let InflightState::AwaitingAck {
                seq,
                qos,
                retain,
                msg,
                sub_id,
                written,
            } = state
            else {
                continue; // a PUBREL owed: journaled already
            };
            if *seq < low {
                break;
            }
            if !*written && *seq < upto {
                *written = true;
                deferred.count -= 1;
                journal.record(Change::Added {
                    seq: *seq,
                    qos: *qos,
                    retain: *retain,
                    sub_id: *sub_id,
                    msg: Arc::clone(msg),
                });
                journal.record(Change::Sent {
                    seq: *seq,
                    pid: *pid,
                });
            }
        }
        deferred.low = upto.min(*next_seq);
        deferred.mark = *next_seq;
        deferred.count > 0
    }

    /// Whether anything is waiting that the window would let through now.
    pub fn has_sendable(&self) -> bool {
        self.flow
            .as_ref()
            .is_some_and(|f| !f.queue.is_empty() && f.inflight.len() < self.window())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use vireo_codec::{Bytes, TopicName};

    fn msg(n: u8) -> Arc<Message> {
        Arc::new(Message::new(
            TopicName::try_from("t").unwrap(),
            Bytes::from(vec![n]),
            QoS::AtLeastOnce,
            false,
        ))
    }

    fn session(limits: SessionLimits) -> Session {
        Session::new(SessionId(1), "c", false, Arc::new(limits))
    }

    fn pid_of(o: &Outgoing) -> PacketId {
        match o {
            Outgoing::Publish { pid, .. } | Outgoing::PubRel(pid) => *pid,
        }
    }

    /// [MQTT-2.3.1-4] distinct non-zero ids while unacknowledged; window bounds inflight.
    #[test]
    fn v311_mqtt_2_3_1_4_window_and_distinct_ids() {
        let mut s = session(SessionLimits {
            max_inflight: 3,
            ..SessionLimits::default()
        });
        for n in 0..5 {
            s.enqueue(msg(n), QoS::AtLeastOnce, false);
        }
        let sent: Vec<_> = std::iter::from_fn(|| s.next_outgoing(Instant::now())).collect();
        assert_eq!(sent.len(), 3, "window of 3");
        let ids: HashSet<_> = sent.iter().map(pid_of).collect();
        assert_eq!(ids.len(), 3);
        assert_eq!(s.on_puback(pid_of(&sent[1])), AckOutcome::Matched);
        assert_eq!(
            s.on_puback(pid_of(&sent[1])),
            AckOutcome::Unknown,
            "second PUBACK matches nothing"
        );
        let next = s.next_outgoing(Instant::now()).unwrap();
        assert!(
            !ids.contains(&pid_of(&next)),
            "no unacked id handed out again"
        );
    }

    /// [MQTT-4.4.0-1] [MQTT-4.3.3-1] resend: PUBLISH with DUP for unacked, PUBREL once PUBREC'd.
    #[test]
    fn v311_mqtt_4_4_0_1_resend_in_order() {
        let mut s = session(SessionLimits::default());
        s.enqueue(msg(1), QoS::ExactlyOnce, false);
        s.enqueue(msg(2), QoS::AtLeastOnce, false);
        let a = s.next_outgoing(Instant::now()).unwrap();
        let b = s.next_outgoing(Instant::now()).unwrap();
        assert_eq!(s.on_pubrec(pid_of(&a)), AckOutcome::Matched);
        // The wrong ack for each step is told apart from an unknown id.
        assert_eq!(s.on_pubrec(pid_of(&b)), AckOutcome::WrongStep);
        assert_eq!(s.on_puback(pid_of(&a)), AckOutcome::WrongStep);
        // PUBREC'd entries move behind the unacknowledged ones, so PUBRELs keep PUBREC order
        // [MQTT-4.6.0-4].
        let resent: Vec<_> = s.resend().collect();
        assert!(
            matches!(&resent[0], Outgoing::Publish { dup: true, pid, .. } if *pid == pid_of(&b))
        );
        assert!(matches!(resent[1], Outgoing::PubRel(p) if p == pid_of(&a)));
        assert_eq!(s.on_pubcomp(pid_of(&b)), AckOutcome::WrongStep);
        assert_eq!(s.on_pubcomp(pid_of(&a)), AckOutcome::Matched);
        assert_eq!(s.inflight_len(), 1);
    }

    /// [MQTT-4.3.3-2] inbound QoS 2: repeats before PUBREL are not new; after PUBREL they are.
    #[test]
    fn v311_mqtt_4_3_3_2_incoming_qos2_once() {
        let mut s = session(SessionLimits::default());
        let p = PacketId::new(9).unwrap();
        assert_eq!(s.on_incoming_qos2(p), Ok(true));
        assert_eq!(s.on_incoming_qos2(p), Ok(false));
        s.on_pubrel(p);
        assert_eq!(s.on_incoming_qos2(p), Ok(true));
    }

    #[test]
    fn queue_is_bounded_drop_new_or_oldest() {
        let limits = SessionLimits {
            max_queued_messages: 2,
            max_inflight: 0,
            ..SessionLimits::default()
        };
        let mut s = session(limits);
        assert_eq!(s.enqueue(msg(1), QoS::AtLeastOnce, false), Enqueued::Queued);
        assert_eq!(s.enqueue(msg(2), QoS::AtLeastOnce, false), Enqueued::Queued);
        assert_eq!(
            s.enqueue(msg(3), QoS::AtLeastOnce, false),
            Enqueued::Dropped
        );
        assert_eq!(s.queued_len(), 2);
        let mut s = session(SessionLimits {
            drop_oldest: true,
            ..limits
        });
        s.enqueue(msg(1), QoS::AtLeastOnce, false);
        s.enqueue(msg(2), QoS::AtLeastOnce, false);
        assert_eq!(
            s.enqueue(msg(3), QoS::AtLeastOnce, false),
            Enqueued::QueuedDroppedOldest
        );
        assert_eq!(s.queued_len(), 2);
        let left: Vec<u8> = s
            .take_undelivered()
            .iter()
            .map(|(m, _)| m.payload[0])
            .collect();
        assert_eq!(left, [2, 3], "the oldest went");
    }

    /// What a store would hold after a journal's changes: applied as the server's store
    /// thread applies them, keyed the same way.
    #[derive(Debug, Default)]
    #[allow(clippy::type_complexity)]
    struct Recording(
        parking_lot::Mutex<Vec<Change>>,
        parking_lot::Mutex<Vec<(u64, u64, usize)>>,
    );

    impl Journal for Recording {
        fn record(&self, change: Change) -> u64 {
            let mut changes = self.0.lock();
            changes.push(change);
            changes.len() as u64
        }

        fn load(&self, from: u64, end: u64, max_bytes: usize) {
            self.1.lock().push((from, end, max_bytes));
        }
    }

    impl Recording {
        /// Answers the load asked for, as the store would: the messages added in its range
        /// and not removed since, up to its bytes.
        fn answer(&self) -> Option<Loaded> {
            let (from, end, max_bytes) = self.1.lock().pop()?;
            let mut live: std::collections::BTreeMap<u64, Arc<Message>> = Default::default();
            for c in self.0.lock().iter() {
                match c {
                    Change::Added { seq, msg, .. } => {
                        live.insert(*seq, Arc::clone(msg));
                    }
                    Change::Removed { seq, .. } | Change::Released { seq, .. } => {
                        live.remove(seq);
                    }
                    _ => {}
                }
            }
            let mut loaded = Loaded {
                next: end,
                done: true,
                ..Loaded::default()
            };
            let mut bytes = 0;
            for (&seq, msg) in live.range(from..end) {
                if bytes >= max_bytes {
                    loaded.next = seq;
                    loaded.done = false;
                    break;
                }
                bytes += msg.weight();
                loaded.messages.push(Restored::Message {
                    seq,
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    sub_id: 0,
                    msg: Arc::clone(msg),
                    pid: None,
                });
            }
            Some(loaded)
        }
    }

    /// Replays `changes` into what a restart would hand back, in the store's order.
    fn replay(changes: &[Change]) -> Vec<Restored> {
        use std::collections::BTreeMap;
        let mut msgs: BTreeMap<u64, (QoS, Arc<Message>)> = BTreeMap::new();
        let mut sent: BTreeMap<u64, PacketId> = BTreeMap::new();
        let mut released: BTreeMap<u64, PacketId> = BTreeMap::new();
        let mut inbound: BTreeMap<u16, ()> = BTreeMap::new();
        for c in changes {
            match c {
                Change::Added { seq, qos, msg, .. } => {
                    msgs.insert(*seq, (*qos, Arc::clone(msg)));
                }
                Change::Sent { seq, pid } => {
                    sent.insert(*seq, *pid);
                }
                Change::Removed { seq, sent: was } => {
                    assert!(msgs.remove(seq).is_some(), "removed what was never added");
                    assert_eq!(sent.remove(seq).is_some(), *was, "sent as recorded");
                }
                Change::Released { seq, pid, order } => {
                    assert!(msgs.remove(seq).is_some());
                    assert!(sent.remove(seq).is_some());
                    released.insert(*order, *pid);
                }
                Change::Completed { pid, order } => {
                    assert_eq!(released.remove(order), Some(*pid));
                }
                Change::InboundOpened { pid } => {
                    inbound.insert(pid.get(), ());
                }
                Change::InboundClosed { pid } => {
                    assert!(inbound.remove(&pid.get()).is_some());
                }
            }
        }
        let mut out: Vec<Restored> = msgs
            .into_iter()
            .map(|(seq, (qos, msg))| Restored::Message {
                seq,
                qos,
                retain: false,
                sub_id: 0,
                msg,
                pid: sent.get(&seq).copied(),
            })
            .collect();
        out.extend(
            released
                .into_iter()
                .map(|(order, pid)| Restored::Released { pid, order }),
        );
        out.extend(
            inbound
                .keys()
                .filter_map(|p| PacketId::new(*p).map(Restored::Inbound)),
        );
        out
    }

    fn resend_list(s: &Session) -> Vec<(u16, bool, Option<u8>)> {
        s.resend()
            .map(|o| match o {
                Outgoing::Publish { pid, msg, .. } => (pid.get(), true, Some(msg.payload[0])),
                Outgoing::PubRel(pid) => (pid.get(), false, None),
            })
            .collect()
    }

    /// Deferred writes: a QoS 1 message acknowledged before the second `write_deferred`
    /// after it was queued is never journaled; one still held then is, with its packet id
    /// if it was sent, and its removal after that is journaled too. QoS 2 never waits.
    #[test]
    fn deferred_qos1_is_written_only_if_it_stays() {
        let journal = Arc::new(Recording::default());
        let limits = SessionLimits {
            defer_writes: true,
            ..SessionLimits::default()
        };
        let mut s = Session::new(SessionId(1), "c", false, Arc::new(limits));
        s.set_journal(Some(journal.clone()));
        s.set_connected(true);
        let now = Instant::now();
        s.enqueue(msg(1), QoS::AtLeastOnce, false);
        s.enqueue(msg(2), QoS::AtLeastOnce, false);
        let Some(Outgoing::Publish { pid: first, .. }) = s.next_outgoing(now) else {
            panic!("sent")
        };
        assert!(s.has_deferred());
        assert!(journal.0.lock().is_empty(), "nothing journaled yet");
        // The first period: both were queued after the last call, so neither is written.
        assert!(s.write_deferred(false));
        assert!(journal.0.lock().is_empty());
        assert_eq!(s.on_puback(first), AckOutcome::Matched);
        // Acknowledged in time: gone without a trace. The second was sent and stays.
        let Some(Outgoing::Publish { pid: second, .. }) = s.next_outgoing(now) else {
            panic!("sent")
        };
        s.enqueue(msg(3), QoS::ExactlyOnce, false);
        assert!(
            matches!(
                &journal.0.lock()[..],
                [Change::Added {
                    seq: 2,
                    qos: QoS::ExactlyOnce,
                    ..
                }]
            ),
            "QoS 2 is journaled at once"
        );
        assert!(!s.write_deferred(false), "all written");
        let written = journal.0.lock().clone();
        assert!(matches!(
            &written[1..],
            [Change::Added { seq: 1, .. }, Change::Sent { seq: 1, pid }] if *pid == second
        ));
        assert_eq!(s.on_puback(second), AckOutcome::Matched);
        assert!(matches!(
            journal.0.lock().last(),
            Some(Change::Removed { seq: 1, sent: true })
        ));
        // Replayed, the journal gives back the QoS 2 message only.
        let back = replay(&journal.0.lock());
        assert!(matches!(&back[..], [Restored::Message { seq: 2, .. }]));
    }

    /// A connected durable session keeps its queue in memory past `queue_memory_bytes`;
    /// offline, the same queue spills.
    #[test]
    fn only_an_offline_queue_spills() {
        let limits = SessionLimits {
            queue_memory_bytes: 4,
            ..SessionLimits::default()
        };
        for connected in [true, false] {
            let journal = Arc::new(Recording::default());
            let mut s = Session::new(SessionId(1), "c", false, Arc::new(limits));
            s.set_journal(Some(journal.clone()));
            s.set_connected(connected);
            for n in 0..10 {
                s.enqueue(msg(n), QoS::AtLeastOnce, false);
            }
            assert_eq!(s.queued_len(), 10);
            assert_eq!(s.spilled_len() > 0, !connected, "connected: {connected}");
        }
    }

    /// A durable session's journal, replayed after a "crash" at any point, gives back a
    /// session that re-sends the same PUBLISHes (same ids, DUP) and PUBRELs [MQTT-4.4.0-1],
    /// queues the same messages in order, and still knows its inbound QoS 2 ids
    /// [MQTT-4.3.3-2].
    #[test]
    fn a_journal_replayed_gives_the_session_back() {
        let journal = Arc::new(Recording::default());
        let mut s = session(SessionLimits {
            max_inflight: 3,
            max_queued_messages: 2,
            drop_oldest: true,
            ..SessionLimits::default()
        });
        s.set_journal(Some(journal.clone()));
        assert!(s.is_durable());
        let now = Instant::now();
        s.enqueue(msg(0), QoS::ExactlyOnce, false);
        s.enqueue(msg(1), QoS::ExactlyOnce, false);
        let a = s.next_outgoing(now).unwrap();
        let b = s.next_outgoing(now).unwrap();
        s.enqueue(msg(2), QoS::AtLeastOnce, false);
        s.enqueue(msg(3), QoS::AtLeastOnce, false);
        let c = s.next_outgoing(now).unwrap();
        assert!(s.next_outgoing(now).is_none(), "window full");
        assert_eq!(s.on_pubrec(pid_of(&a)), AckOutcome::Matched);
        assert_eq!(s.on_pubrec(pid_of(&b)), AckOutcome::Matched);
        assert_eq!(s.on_pubcomp(pid_of(&b)), AckOutcome::Matched);
        assert_eq!(s.on_puback(pid_of(&c)), AckOutcome::Matched);
        s.enqueue(msg(4), QoS::AtLeastOnce, false);
        s.enqueue(msg(5), QoS::AtLeastOnce, false); // the oldest queued (3) goes
        let d = s.next_outgoing(now).unwrap();
        s.enqueue(msg(6), QoS::AtLeastOnce, false);
        assert!(matches!(&d, Outgoing::Publish { msg, .. } if msg.payload[0] == 4));
        let p = PacketId::new(77).unwrap();
        assert_eq!(s.on_incoming_qos2(p), Ok(true));
        assert_eq!(s.on_incoming_qos2(PacketId::new(78).unwrap()), Ok(true));
        assert!(s.on_pubrel(PacketId::new(78).unwrap()));

        let changes = journal.0.lock().clone();
        // Restored as the server does: made durable first (nothing to re-record), then filled.
        let again = Arc::new(Recording::default());
        let mut back = session(SessionLimits::default());
        back.set_journal(Some(again.clone()));
        for item in replay(&changes) {
            back.restore(item);
        }
        assert!(again.0.lock().is_empty(), "a restore records nothing");
        let mut a = resend_list(&back);
        let mut b = resend_list(&s);
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a.len(), 2, "a PUBLISH and a PUBREL owed");
        assert_eq!(
            a, b,
            "the same PUBLISHes and PUBRELs owed, with the same ids"
        );
        let drain = |s: &mut Session| {
            let mut v = Vec::new();
            while let Some(Outgoing::Publish { msg, pid, .. }) = s.next_outgoing(now) {
                v.push(msg.payload[0]);
                s.abandon(pid);
            }
            v
        };
        let restored_seqs: Vec<u64> = replay(&changes)
            .iter()
            .filter_map(|r| match r {
                Restored::Message { seq, .. } => Some(*seq),
                _ => None,
            })
            .collect();
        let (qa, qb) = (drain(&mut back), drain(&mut s));
        assert_eq!(qa, qb, "the same messages queued, in order");
        assert_eq!(qa, vec![5, 6]);
        assert_eq!(back.on_incoming_qos2(p), Ok(false), "inbound id kept");
        assert_eq!(back.on_incoming_qos2(PacketId::new(78).unwrap()), Ok(true));
        // A new message after a restore does not reuse a stored sequence number.
        back.enqueue(msg(9), QoS::AtLeastOnce, false);
        let added = again.0.lock().iter().find_map(|c| match c {
            Change::Added { seq, .. } => Some(*seq),
            _ => None,
        });
        assert!(added > restored_seqs.iter().max().copied());
    }

    /// PUBRELs owed are re-sent after a restart in the order their PUBRECs came, not in
    /// packet id order [MQTT-4.6.0-4].
    #[test]
    fn v311_mqtt_4_6_0_4_pubrels_restored_in_pubrec_order() {
        let journal = Arc::new(Recording::default());
        let mut s = session(SessionLimits::default());
        s.set_journal(Some(journal.clone()));
        let now = Instant::now();
        for n in 0..3 {
            s.enqueue(msg(n), QoS::ExactlyOnce, false);
        }
        let pids: Vec<PacketId> = (0..3)
            .map(|_| pid_of(&s.next_outgoing(now).unwrap()))
            .collect();
        for &i in &[2, 0, 1] {
            assert_eq!(s.on_pubrec(pids[i]), AckOutcome::Matched);
        }
        let mut back = session(SessionLimits::default());
        back.set_journal(Some(Arc::new(Recording::default())));
        for item in replay(&journal.0.lock()) {
            back.restore(item);
        }
        let order: Vec<u16> = resend_list(&back).iter().map(|r| r.0).collect();
        assert_eq!(
            order,
            vec![pids[2].get(), pids[0].get(), pids[1].get()],
            "PUBRELs in PUBREC order"
        );
        assert_eq!(resend_list(&back), resend_list(&s));
        // A PUBCOMP after the restore completes the restored one.
        assert_eq!(back.on_pubcomp(pids[0]), AckOutcome::Matched);
        assert_eq!(back.inflight_len(), 2);
    }

    /// Takes every message `s` has, acknowledging each and answering its loads from
    /// `journal`; `each` runs after every message with how many came. Returns the payloads'
    /// first bytes in the order sent, and how many loads were answered.
    fn drain_spilled(
        s: &mut Session,
        journal: &Recording,
        mut each: impl FnMut(&mut Session, usize),
    ) -> (Vec<u8>, usize) {
        let now = Instant::now();
        let (mut got, mut loads) = (Vec::new(), 0);
        for _ in 0..1000 {
            match s.next_outgoing(now) {
                Some(Outgoing::Publish { msg: m, pid, .. }) => {
                    got.push(m.payload[0]);
                    assert_eq!(s.on_puback(pid), AckOutcome::Matched);
                    each(s, got.len());
                }
                Some(Outgoing::PubRel(_)) => panic!("a PUBLISH"),
                None => match journal.answer() {
                    Some(loaded) => {
                        loads += 1;
                        s.unspill(loaded);
                    }
                    None => break,
                },
            }
        }
        (got, loads)
    }

    /// A durable session keeps `queue_memory_bytes` of its queue in memory and the rest on
    /// disk only; draining it reads the rest back, in order, and every message arrives once.
    #[test]
    fn a_queue_past_its_memory_budget_spills_and_comes_back_in_order() {
        let journal = Arc::new(Recording::default());
        let mut s = session(SessionLimits {
            max_inflight: 2,
            queue_memory_bytes: 8, // four 2-byte messages
            ..SessionLimits::default()
        });
        s.set_journal(Some(journal.clone()));
        for n in 0..40 {
            assert_eq!(s.enqueue(msg(n), QoS::AtLeastOnce, false), Enqueued::Queued);
        }
        assert_eq!(s.queued_len(), 40);
        assert_eq!(s.spilled_len(), 36, "four in memory, the rest on disk only");
        let (got, loads) = drain_spilled(&mut s, &journal, |s, got| {
            // New messages meanwhile join the tail on disk, behind the rest.
            if got == 10 {
                s.enqueue(msg(40), QoS::AtLeastOnce, false);
            }
        });
        assert_eq!(got, (0..=40).collect::<Vec<u8>>(), "each once, in order");
        assert!(loads >= 9, "read back a budget at a time ({loads} loads)");
        assert_eq!((s.queued_len(), s.spilled_len()), (0, 0));
        // Back to memory only once drained.
        s.enqueue(msg(1), QoS::AtLeastOnce, false);
        assert_eq!(s.spilled_len(), 0);
    }

    /// A restart hands the tail on disk back as `Spilled`: counted in the queue, read back
    /// as it drains, and new messages numbered after it.
    #[test]
    fn a_restored_spill_is_read_back() {
        let journal = Arc::new(Recording::default());
        let mut s = session(SessionLimits {
            queue_memory_bytes: 4,
            ..SessionLimits::default()
        });
        s.set_journal(Some(journal.clone()));
        for n in 0..6 {
            s.enqueue(msg(n), QoS::AtLeastOnce, false);
        }
        let mut back = session(SessionLimits {
            queue_memory_bytes: 4,
            ..SessionLimits::default()
        });
        back.set_journal(Some(journal.clone()));
        for item in replay(&journal.0.lock())[..2].iter().cloned() {
            back.restore(item);
        }
        back.restore(Restored::Spilled {
            first: 2,
            last: 5,
            count: 4,
            bytes: 8,
        });
        assert_eq!((back.queued_len(), back.spilled_len()), (6, 4));
        back.enqueue(msg(6), QoS::AtLeastOnce, false);
        assert_eq!(back.spilled_len(), 5, "behind the spill, numbered after it");
        journal.1.lock().clear(); // the first session's loads
        let (got, _) = drain_spilled(&mut back, &journal, |_, _| {});
        assert_eq!(got, (0..=6).collect::<Vec<u8>>());
    }

    #[test]
    fn incoming_qos2_is_bounded() {
        let mut s = session(SessionLimits {
            max_incoming_qos2: 1,
            ..SessionLimits::default()
        });
        assert_eq!(s.on_incoming_qos2(PacketId::new(1).unwrap()), Ok(true));
        assert_eq!(s.on_incoming_qos2(PacketId::new(2).unwrap()), Err(()));
    }
}
