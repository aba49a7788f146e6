//! The durable store's thread (`persistence = "async"`): workers hand it changes over a
//! channel and never wait on a disk; it writes every burst of them in one `write` (group
//! commit across workers) and `fdatasync`s at least every `sync_interval_ms`.
//!
//! Order: a change is sent while the lock that orders it is held (the retained store's write
//! lock for a retained message), so the log sees the changes of one key in the order memory
//! did. A send never blocks a worker; the channel is bounded by back-pressure instead: past
//! `BACKLOG` waiting changes the workers throttle their QoS 1/2 publishers (a QoS 1 fan-in
//! into a persistent session can outrun this thread, which then writes nearly every message,
//! see docs/benchmarks.md).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use vireo_broker::store::records::{self, Clocks, QueueKey, Unusable};
use vireo_broker::store::{Log, OpenError};
use vireo_broker::{Change, Journal, Loaded, Message, Restored, SessionId};

/// Changes taken per write at most: a burst bigger than this is written in several.
const BURST: usize = 65_536;
/// How often the thread takes what the workers sent. It sleeps between, rather than waiting
/// on the channel: a worker's send then never has a sleeping thread to wake (a futex call per
/// change, which cost QoS 1 fan-in a third of its rate), and a message acknowledged within a
/// tick of arriving is never written at all (see `coalesce`). A kill -9 loses what one tick
/// holds; a crash of the machine what `sync_interval_ms` does, as before.
const TICK: Duration = Duration::from_millis(5);
/// Changes waiting for the thread past which workers stop reading their clients: a tenth of
/// a second of the fastest QoS 1 fan-in's. Each may hold a message that is nowhere else (one
/// queued past `queue_memory_bytes`), so this bounds what a slow disk costs in memory.
const BACKLOG: usize = 256 * 1024;
/// How soon a failed write is tried again.
const RETRY: Duration = Duration::from_millis(500);

enum Op {
    /// A retained message, encoded on the store's thread: the worker only clones the `Arc`.
    Retained(Arc<Message>),
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    /// A change to the QoS 1/2 state of the durable session of a client.
    Change(Arc<str>, Change),
    /// A persistent session ended: its record and all its QoS 1/2 state go.
    SessionGone(Box<str>),
    /// A session's queue on disk is wanted back (see `Journal::load`): read after the
    /// changes before it are written, and answered to worker `worker`.
    Load(Box<LoadRequest>),
    /// What `coalesce` left of a change it cancelled: nothing.
    Nothing,
    Stop,
}

/// What workers hold to persist a change: one per worker (see [`Persist::for_worker`]), so
/// that the store can say how far each worker's changes are on disk.
#[derive(Debug, Clone)]
pub(crate) struct Persist {
    tx: Sender<(usize, Op)>,
    /// Whose changes these are: a worker's id, or [`Durable::others`].
    from: usize,
    durable: Arc<Durable>,
}

/// Hands worker `w` the answer to its load.
pub(crate) type Deliver = Box<dyn Fn(usize, Box<LoadReply>) + Send + Sync>;

/// How far each worker's changes are on disk, for `persistence = "sync"`: a worker counts
/// the changes it sends, the store counts those it synced, per worker; an acknowledgement
/// waits until the count it needs is synced. Changes of one worker reach the store in the
/// order it sent them, so a count is a point in that worker's history.
pub(crate) struct Durable {
    /// Changes sent, per worker (written by that worker only).
    pub sent: Vec<AtomicU64>,
    /// Changes synced to disk, per worker (written by the store's thread only).
    pub synced: Vec<AtomicU64>,
    /// Wakes the workers after a sync (set once the workers exist).
    pub wake: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
    /// Hands a worker what it asked to load (set once the workers exist).
    pub deliver: std::sync::OnceLock<Deliver>,
    /// Whether acknowledgements wait for the disk (`sync`).
    pub sync: bool,
    /// The last write failed (a full disk): new QoS 1/2 messages are refused until one
    /// succeeds.
    failing: std::sync::atomic::AtomicBool,
    /// `workers` × `workers` marks, `[taker * workers + sender]`: the last iteration of the
    /// sender whose batch the taker has taken, and how many changes the taker had sent then.
    processed: Vec<(AtomicU64, AtomicU64)>,
    workers: usize,
    /// Per worker, the changes the store gave up on (a disk that stayed full past
    /// `MAX_PENDING_BYTES`): counts in `(from, to]` are counted as synced, so that what waits
    /// behind them goes on, but are not on disk. An acknowledgement that waited for one of
    /// them is never sent; its connection is closed instead, and its client sends again.
    lost: Vec<(AtomicU64, AtomicU64)>,
}

impl std::fmt::Debug for Durable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durable")
            .field("sent", &self.sent)
            .field("synced", &self.synced)
            .field("sync", &self.sync)
            .finish_non_exhaustive()
    }
}

impl Durable {
    /// Changes sent from outside the workers (at start): the last counter.
    pub const fn others(workers: usize) -> usize {
        workers
    }

    /// Whether the store cannot write now (a full disk).
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// How many changes of worker `w` are on disk.
    pub fn synced_of(&self, w: usize) -> u64 {
        self.synced[w].load(Ordering::Acquire)
    }

    /// Whether `count` changes of worker `w` are on disk.
    pub fn is_synced(&self, w: usize, count: u64) -> bool {
        self.synced[w].load(Ordering::Acquire) >= count
    }

    /// Whether change `count` of worker `w` was given up (see [`Durable::lost`]): the latest
    /// stretch of them only, which is all a hold still waiting can be behind.
    pub fn was_lost(&self, w: usize, count: u64) -> bool {
        self.lost.get(w).is_some_and(|(from, to)| {
            count > from.load(Ordering::Acquire) && count <= to.load(Ordering::Acquire)
        })
    }

    /// Changes worker `w` has sent so far.
    pub fn sent_by(&self, w: usize) -> u64 {
        self.sent[w].load(Ordering::Relaxed)
    }

    /// Worker `taker` has taken `sender`'s batch of iteration `iteration` (and every earlier
    /// one): notes how many changes it had sent by then.
    pub fn mark_processed(&self, taker: usize, sender: usize, iteration: u64) {
        let Some((it, count)) = self.processed.get(taker * self.workers + sender) else {
            return;
        };
        count.store(self.sent_by(taker), Ordering::Release);
        it.store(iteration, Ordering::Release);
    }

    /// The changes `taker` had sent once it took `sender`'s batch of `iteration`, if it has:
    /// at least that many (a later mark only counts more).
    pub fn processed_by(&self, taker: usize, sender: usize, iteration: u64) -> Option<u64> {
        let (it, count) = self.processed.get(taker * self.workers + sender)?;
        (it.load(Ordering::Acquire) >= iteration).then(|| count.load(Ordering::Acquire))
    }
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Op::Retained(_) => "Retained",
            Op::Put(..) => "Put",
            Op::Delete(_) => "Delete",
            Op::Change(..) => "Change",
            Op::SessionGone(_) => "SessionGone",
            Op::Load(_) => "Load",
            Op::Nothing => "Nothing",
            Op::Stop => "Stop",
        })
    }
}

/// Whether a retained topic is kept: not `$SYS/` ones, which describe this run and are
/// published again within `sys_interval` of the next.
fn kept(topic: &str) -> bool {
    !topic.starts_with("$SYS/")
}

impl Persist {
    /// The same store, for worker `w`'s changes.
    pub(crate) fn for_worker(&self, w: usize) -> Self {
        Self {
            tx: self.tx.clone(),
            from: w,
            durable: Arc::clone(&self.durable),
        }
    }

    /// Whether the store's thread is so far behind (a slow disk) that workers should stop
    /// reading their clients until it catches up: the changes waiting for it are bounded.
    pub(crate) fn is_behind(&self) -> bool {
        self.tx.len() > BACKLOG
    }

    /// How far each worker's changes are on disk.
    pub(crate) fn durable(&self) -> &Arc<Durable> {
        &self.durable
    }

    /// Sends `op`; returns how many changes this worker has sent with it (its ticket: on
    /// disk once `Durable::is_synced` says so).
    fn send(&self, op: Op) -> u64 {
        send(&self.tx, &self.durable, self.from, op)
    }

    /// `msg` is now its topic's retained message (sent under the retained store's lock).
    pub(crate) fn retained_set(&self, msg: &Arc<Message>) {
        if kept(&msg.topic) {
            self.send(Op::Retained(Arc::clone(msg)));
        }
    }

    /// The persistent session of `client_id` is now `record` (see `records::encode_session`).
    pub(crate) fn session_put(&self, client_id: &str, record: Vec<u8>) {
        self.send(Op::Put(records::session_key(client_id), record));
    }

    /// The record of `client_id`'s session goes, its QoS 1/2 state stays (for now).
    pub(crate) fn session_record_deleted(&self, client_id: &str) {
        self.send(Op::Delete(records::session_key(client_id)));
    }

    /// The persistent session of `client_id` ended: its record and its QoS 1/2 state go.
    pub(crate) fn session_deleted(&self, client_id: &str) {
        self.send(Op::SessionGone(client_id.into()));
    }

    /// Where the durable session of `client_id` writes the changes to its QoS 1/2 state.
    pub(crate) fn journal(&self, client_id: &str, session: SessionId) -> Arc<dyn Journal> {
        Arc::new(SessionJournal {
            client: client_id.into(),
            session,
            persist: self.clone(),
        })
    }
}

/// Sends `op` as a change of `from`, counted.
fn send(tx: &Sender<(usize, Op)>, durable: &Durable, from: usize, op: Op) -> u64 {
    let ticket = durable.sent[from].fetch_add(1, Ordering::Relaxed) + 1;
    let _ = tx.send((from, op));
    ticket
}

/// A durable session's [`Journal`]: its changes go down the store's channel, behind
/// everything its worker sent before, so the log sees them in the order they happened.
#[derive(Debug)]
struct SessionJournal {
    client: Arc<str>,
    /// The session it journals: a load's answer goes to it, not to a later session of the
    /// same client id.
    session: SessionId,
    persist: Persist,
}

impl Journal for SessionJournal {
    fn record(&self, change: Change) -> u64 {
        self.persist
            .send(Op::Change(Arc::clone(&self.client), change))
    }

    fn load(&self, from: u64, end: u64, max_bytes: usize) {
        // Not counted: a load changes nothing on disk.
        let _ = self.persist.tx.send((
            self.persist.from,
            Op::Load(Box::new(LoadRequest {
                client: Arc::clone(&self.client),
                session: self.session,
                from,
                end,
                max_bytes,
                worker: self.persist.from,
            })),
        ));
    }
}

/// A session's queue on disk, wanted back.
#[derive(Debug)]
pub(crate) struct LoadRequest {
    client: Arc<str>,
    session: SessionId,
    from: u64,
    end: u64,
    max_bytes: usize,
    worker: usize,
}

/// What a worker gets back for a [`LoadRequest`].
#[derive(Debug)]
pub(crate) struct LoadReply {
    pub client: Arc<str>,
    pub session: SessionId,
    pub loaded: Loaded,
}

/// Reads the queued messages `req` asks for out of the committed log (expired or unreadable
/// ones are deleted on the way, and counted).
fn load(log: &mut Log, req: &LoadRequest, clocks: &Clocks) -> Loaded {
    let mut key = Vec::new();
    QueueKey::Message(req.from).write_key(&req.client, &mut key);
    let prefix = &key[..key.len() - 8];
    let mut loaded = Loaded {
        next: req.end,
        done: true,
        ..Loaded::default()
    };
    let mut seqs: Vec<u64> = Vec::new();
    let mut bytes = 0usize;
    for (seq, len) in log.numbers_from(prefix, req.from) {
        if seq >= req.end {
            break;
        }
        if bytes >= req.max_bytes {
            loaded.next = seq;
            loaded.done = false;
            break;
        }
        bytes += len as usize;
        seqs.push(seq);
    }
    for seq in seqs {
        QueueKey::Message(seq).write_key(&req.client, &mut key);
        match log
            .get(&key)
            .map(|v| v.map(|v| records::decode_queued(&v, clocks)))
        {
            Ok(Some(Ok((qos, retain, sub_id, msg)))) => loaded.messages.push(Restored::Message {
                seq,
                qos,
                retain,
                sub_id,
                msg,
                pid: None,
            }),
            other => {
                if !matches!(other, Ok(Some(Err(Unusable::Expired)))) {
                    tracing::warn!(
                        client = &*req.client,
                        "a queued message on disk is not readable: dropped"
                    );
                }
                loaded.dropped += 1;
                loaded.dropped_bytes += log.record_len(&key).map_or(0, |n| n as usize);
                log.delete(&key);
            }
        }
    }
    loaded
}

impl Persist {
    /// `topic` has no retained message any more.
    pub(crate) fn retained_deleted(&self, topic: &str) {
        if kept(topic) {
            self.send(Op::Delete(records::retained_key(topic)));
        }
    }
}

/// What the metrics endpoint shows of the store.
#[derive(Debug, Default)]
pub(crate) struct StoreStats {
    pub records: AtomicU64,
    pub disk_bytes: AtomicU64,
    pub live_bytes: AtomicU64,
    pub written_bytes: AtomicU64,
    pub commits: AtomicU64,
    pub syncs: AtomicU64,
    pub write_errors: AtomicU64,
}

impl StoreStats {
    fn update(&self, log: &Log) {
        self.records.store(log.len() as u64, Ordering::Relaxed);
        self.disk_bytes.store(log.disk_bytes(), Ordering::Relaxed);
        self.live_bytes.store(log.live_bytes(), Ordering::Relaxed);
        self.written_bytes
            .store(log.written_bytes(), Ordering::Relaxed);
    }
}

/// The running thread.
#[derive(Debug)]
pub(crate) struct StoreThread {
    tx: Sender<(usize, Op)>,
    thread: std::thread::JoinHandle<()>,
}

impl StoreThread {
    /// Writes and syncs what was sent before this call, then ends the thread.
    pub(crate) fn stop(self) {
        let _ = self.tx.send((0, Op::Stop));
        let _ = self.thread.join();
    }
}

/// A persistent session the store held at start.
#[derive(Debug)]
pub(crate) struct StoredSession {
    pub client_id: String,
    pub record: records::SessionRecord,
    /// Expiry left (`None`: never).
    pub remaining: Option<Duration>,
    /// Its QoS 1/2 state, in the order it is restored in.
    pub state: Vec<Restored>,
}

/// What the store held at start.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    pub retained: Vec<Arc<Message>>,
    pub sessions: Vec<StoredSession>,
}

/// Opens the store in `dir` and reads back what it holds. Damage in the files is logged and
/// skipped, never an error; an unusable directory or a second broker on it is.
pub(crate) fn open(dir: &Path, queue_memory_bytes: usize) -> Result<(Log, Recovered), OpenError> {
    let started = Instant::now();
    let (mut log, recovery) = Log::open(dir)?;
    if recovery.damaged > 0 {
        tracing::warn!(
            data_dir = %dir.display(),
            damaged = recovery.damaged,
            dropped_bytes = recovery.dropped_bytes,
            kept = recovery.records,
            "the store had damaged records (a crash mid-write, or a bad disk): they were dropped, every intact record kept"
        );
    }
    let clocks = Clocks::read();
    let mut recovered = Recovered::default();
    // In byte order: sessions, retained messages, plain queue keys; the numbered ones (a
    // queue can be millions) are walked by `restore_queues` without a copy each.
    let keys = log.plain_keys();
    let mut gone = 0;
    let mut queue_keys = Vec::new();
    for key in keys {
        if QueueKey::parse(&key).is_some() {
            queue_keys.push(key);
            continue;
        }
        if let Some(client_id) = records::session_client(&key) {
            let record = log
                .get(&key)
                .ok()
                .flatten()
                .and_then(|v| records::SessionRecord::decode(&v).ok());
            let Some(record) = record else {
                tracing::warn!(
                    client = client_id,
                    "a stored session is not readable: dropped"
                );
                log.delete(&key);
                gone += 1;
                continue;
            };
            let remaining = record.remaining(&clocks);
            if remaining == Some(Duration::ZERO) && record.will.is_none() {
                log.delete(&key); // expired while the broker was down
                gone += 1;
                continue;
            }
            // Expired with a Will still to come: restored all the same, to end at once,
            // which publishes the Will [MQTT-3.1.2-8] and removes the record.
            recovered.sessions.push(StoredSession {
                client_id: client_id.to_owned(),
                record,
                remaining,
                state: Vec::new(),
            });
            continue;
        }
        let Some(topic) = records::retained_topic(&key) else {
            continue;
        };
        let value = match log.get(&key) {
            Ok(Some(v)) => v,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(topic, error = %e, "a retained message could not be read: dropped");
                continue;
            }
        };
        match records::decode_message(&value, &clocks) {
            Ok(msg) => recovered.retained.push(msg),
            Err(why) => {
                if why == Unusable::Malformed {
                    tracing::warn!(topic, "a stored retained message is not readable: dropped");
                }
                log.delete(&key);
                gone += 1;
            }
        }
    }
    gone += restore_queues(
        &mut log,
        queue_keys,
        &mut recovered.sessions,
        &clocks,
        queue_memory_bytes,
    );
    if gone > 0
        && let Err(e) = log.commit(true)
    {
        tracing::warn!(error = %e, "the store could not drop expired records");
    }
    tracing::info!(
        data_dir = %dir.display(),
        retained = recovered.retained.len(),
        sessions = recovered.sessions.len(),
        session_messages = recovered
            .sessions
            .iter()
            .map(|s| s.state.len())
            .sum::<usize>(),
        expired_or_unreadable = gone,
        ms = started.elapsed().as_millis() as u64,
        "store opened"
    );
    Ok((log, recovered))
}

/// Attaches the stored QoS 1/2 state to its sessions: `keys` are the plain ones (PUBRELs
/// owed by packet id, inbound ids), the numbered ones (messages, their sent ids, PUBRELs owed
/// in order) are walked per prefix without a copy of each key. Returns how many records were
/// deleted: a message expired while the broker was down, a record that is not readable, or
/// state whose session is not stored (it ended before its state was written). A session's
/// queued messages past `queue_memory_bytes` are not read: they stay on disk, handed back
/// as one `Restored::Spilled`, and are read as the queue drains.
fn restore_queues(
    log: &mut Log,
    keys: Vec<Vec<u8>>,
    sessions: &mut [StoredSession],
    clocks: &Clocks,
    queue_memory_bytes: usize,
) -> usize {
    use vireo_codec::PacketId;
    let index: std::collections::HashMap<String, usize> = sessions
        .iter()
        .enumerate()
        .map(|(i, s)| (s.client_id.clone(), i))
        .collect();
    let mut gone = 0;
    // Each numbered prefix as (session, kind), its state dropped if it has no session.
    let mut prefixes: Vec<(usize, QueueKey, Vec<u8>)> = Vec::new();
    for prefix in log.numbered_prefixes() {
        let mut probe = prefix.clone();
        probe.extend_from_slice(&0u64.to_be_bytes());
        let Some((client, kind)) = QueueKey::parse(&probe) else {
            continue;
        };
        match index.get(client) {
            Some(&at) => prefixes.push((at, kind, prefix)),
            None => {
                // Its session ended, or never was stored.
                for k in log.keys_with_prefix(&prefix) {
                    log.delete(&k);
                    gone += 1;
                }
            }
        }
    }
    let read = |log: &Log, prefix: &[u8], n: u64| {
        let mut k = prefix.to_vec();
        k.extend_from_slice(&n.to_be_bytes());
        let v = log.get(&k).ok().flatten();
        (k, v)
    };
    // The sent ids first, so that each message finds its own.
    let mut sent: std::collections::HashMap<(usize, u64), u16> = std::collections::HashMap::new();
    for (at, kind, prefix) in &prefixes {
        if let QueueKey::Sent(_) = kind {
            let seqs: Vec<u64> = log.numbers_from(prefix, 0).map(|(n, _)| n).collect();
            for seq in seqs {
                match read(log, prefix, seq) {
                    (_, Some(v)) if v.len() == 2 => {
                        sent.insert((*at, seq), u16::from_le_bytes([v[0], v[1]]));
                    }
                    (k, _) => {
                        log.delete(&k);
                        gone += 1;
                    }
                }
            }
        }
    }
    for (at, kind, prefix) in &prefixes {
        let at = *at;
        match kind {
            QueueKey::Message(_) => {
                // Which to read into memory (all that were sent, then up to the budget), and
                // what stays on disk: decided on the index alone.
                let mut in_memory = 0usize;
                let mut wanted: Vec<u64> = Vec::new();
                let mut spill: Option<(u64, u64, usize, usize)> = None;
                for (seq, len) in log.numbers_from(prefix, 0) {
                    let len = len as usize;
                    if !sent.contains_key(&(at, seq))
                        && (spill.is_some()
                            || (in_memory > 0 && in_memory + len > queue_memory_bytes))
                    {
                        // Past the budget: left on disk, and all after it (the queue's order).
                        let s = spill.get_or_insert((seq, seq, 0, 0));
                        s.1 = seq;
                        s.2 += 1;
                        s.3 += len;
                        continue;
                    }
                    in_memory += len;
                    wanted.push(seq);
                }
                for seq in wanted {
                    let pid = sent.remove(&(at, seq)).and_then(PacketId::new);
                    let (k, value) = read(log, prefix, seq);
                    match value.map(|v| records::decode_queued(&v, clocks)) {
                        Some(Ok((qos, retain, sub_id, msg))) => {
                            sessions[at].state.push(Restored::Message {
                                seq,
                                qos,
                                retain,
                                sub_id,
                                msg,
                                pid,
                            });
                        }
                        other => {
                            if !matches!(other, Some(Err(Unusable::Expired))) {
                                tracing::warn!(
                                    client = sessions[at].client_id,
                                    "a stored queued message is not readable: dropped"
                                );
                            }
                            log.delete(&k);
                            if pid.is_some() {
                                let mut sk = Vec::new();
                                QueueKey::Sent(seq).write_key(&sessions[at].client_id, &mut sk);
                                log.delete(&sk);
                            }
                            gone += 1;
                        }
                    }
                }
                if let Some((first, last, count, bytes)) = spill {
                    sessions[at].state.push(Restored::Spilled {
                        first,
                        last,
                        count,
                        bytes,
                    });
                }
            }
            QueueKey::Owed(_) => {
                let orders: Vec<u64> = log.numbers_from(prefix, 0).map(|(n, _)| n).collect();
                for order in orders {
                    let (k, v) = read(log, prefix, order);
                    match v
                        .filter(|v| v.len() == 2)
                        .and_then(|v| PacketId::new(u16::from_le_bytes([v[0], v[1]])))
                    {
                        Some(pid) => sessions[at].state.push(Restored::Released { pid, order }),
                        None => {
                            log.delete(&k);
                            gone += 1;
                        }
                    }
                }
            }
            _ => {}
        }
    }
    // The plain keys: PUBRELs owed as the first stores kept them, inbound ids.
    for key in keys {
        let Some((client, what)) = QueueKey::parse(&key) else {
            continue;
        };
        let Some(&at) = index.get(client) else {
            log.delete(&key);
            gone += 1;
            continue;
        };
        let item = match what {
            QueueKey::Released(pid) => PacketId::new(pid).map(|pid| Restored::Released {
                pid,
                order: u64::MAX,
            }),
            QueueKey::Inbound(pid) => PacketId::new(pid).map(Restored::Inbound),
            _ => None,
        };
        if let Some(item) = item {
            sessions[at].state.push(item);
        }
    }
    // Ids whose message is gone (written by a crash between the two): dropped.
    for ((at, seq), _) in sent {
        let mut k = Vec::new();
        QueueKey::Sent(seq).write_key(&sessions[at].client_id, &mut k);
        log.delete(&k);
        gone += 1;
    }
    gone
}

/// Starts the thread that owns `log`, for `workers` workers; `sync`: acknowledgements wait
/// for the disk, so every burst is synced as it is written.
pub(crate) fn spawn(
    log: Log,
    sync_interval: Duration,
    sync: bool,
    workers: usize,
    stats: Arc<StoreStats>,
) -> std::io::Result<(Persist, StoreThread)> {
    let (tx, rx) = crossbeam_channel::unbounded();
    stats.update(&log);
    let durable = Arc::new(Durable {
        sent: (0..=workers).map(|_| AtomicU64::new(0)).collect(),
        synced: (0..=workers).map(|_| AtomicU64::new(0)).collect(),
        wake: std::sync::OnceLock::new(),
        deliver: std::sync::OnceLock::new(),
        sync,
        failing: std::sync::atomic::AtomicBool::new(false),
        processed: (0..workers * workers)
            .map(|_| (AtomicU64::new(0), AtomicU64::new(0)))
            .collect(),
        workers,
        lost: (0..=workers)
            .map(|_| (AtomicU64::new(0), AtomicU64::new(0)))
            .collect(),
    });
    let thread_durable = Arc::clone(&durable);
    let thread = std::thread::Builder::new()
        .name("vireo-store".into())
        .spawn(move || run(log, &rx, sync_interval, &thread_durable, &stats))?;
    let persist = Persist {
        tx: tx.clone(),
        from: Durable::others(workers),
        durable,
    };
    Ok((persist, StoreThread { tx, thread }))
}

fn run(
    mut log: Log,
    rx: &Receiver<(usize, Op)>,
    sync_interval: Duration,
    durable: &Durable,
    stats: &StoreStats,
) {
    let mut last_sync = Instant::now();
    let mut unsynced = false;
    let mut failures = 0u64;
    let mut given_up = log.given_up();
    let mut bufs = Buffers::default();
    let mut burst: Vec<Op> = Vec::with_capacity(BURST);
    // Loads asked for, answered once what was sent before them is written.
    let mut loads: Vec<Box<LoadRequest>> = Vec::new();
    // Changes taken, per worker: synced up to these once a sync succeeds.
    let mut taken: Vec<u64> = vec![0; durable.sent.len()];
    let take = |taken: &mut Vec<u64>, burst: &mut Vec<Op>, (from, op): (usize, Op)| {
        if let Some(n) = taken.get_mut(from) {
            *n += 1;
        }
        burst.push(op);
    };
    loop {
        let mut stop = false;
        if rx.is_empty() && !log.is_dirty() {
            // Idle: wait for the next change (or the sync that is due), then (async) give
            // the others one tick to arrive behind it.
            let wait = if unsynced {
                sync_interval.saturating_sub(last_sync.elapsed())
            } else {
                Duration::from_secs(3600)
            };
            match rx.recv_timeout(wait) {
                Ok(op) => take(&mut taken, &mut burst, op),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => stop = true,
            }
        }
        if !stop {
            if log.is_dirty() {
                std::thread::sleep(RETRY);
            } else if !durable.sync && rx.len() < BURST {
                // (A full burst already waiting is taken at once: under a load faster than
                // a burst a tick, sleeping would only let the channel grow.)
                std::thread::sleep(TICK);
            }
            for op in rx.try_iter().take(BURST - burst.len()) {
                take(&mut taken, &mut burst, op);
            }
        }
        coalesce(&mut burst, &mut bufs);
        // Read once per burst: a message's expiry, an `Instant`, becomes wall time as well as
        // the worker's clocks would have made it.
        let clocks = Clocks::read();
        for op in burst.drain(..) {
            match op {
                Op::Load(req) => loads.push(req),
                op => stop |= apply(&mut log, op, &mut bufs, &clocks),
            }
        }
        if stop {
            // Everything sent before the stop is written too.
            for (_, op) in rx.try_iter() {
                apply(&mut log, op, &mut bufs, &clocks);
            }
        }
        let synced_before = taken.clone();
        let sync = stop || durable.sync || last_sync.elapsed() >= sync_interval;
        if log.is_dirty() || (sync && unsynced) {
            match log.commit(sync) {
                Ok(()) => {
                    stats.commits.fetch_add(1, Ordering::Relaxed);
                    if sync {
                        stats.syncs.fetch_add(1, Ordering::Relaxed);
                    }
                    stats.update(&log);
                    if failures > 0 {
                        tracing::info!(
                            failures,
                            "the store writes again: QoS 1/2 messages are taken again"
                        );
                        failures = 0;
                        durable.failing.store(false, Ordering::Relaxed);
                    }
                    unsynced = !sync;
                    if sync {
                        last_sync = Instant::now();
                    }
                }
                Err(e) => {
                    // A full disk: the log cut the batch back out, stays consistent, and keeps
                    // the batch for the next try (within MAX_PENDING_BYTES).
                    if log.given_up() != given_up {
                        given_up = log.given_up();
                        // What was taken so far is not on disk and never will be: marked
                        // lost before it counts as synced, so the holds behind it let go
                        // and close their connections instead of acknowledging.
                        for (w, (from, to)) in durable.lost.iter().enumerate() {
                            from.store(durable.synced_of(w), Ordering::Release);
                            to.store(taken[w], Ordering::Release);
                        }
                        publish_synced(durable, &taken);
                    }
                    failures += 1;
                    stats.write_errors.fetch_add(1, Ordering::Relaxed);
                    durable.failing.store(true, Ordering::Relaxed);
                    if failures == 1 || failures.is_power_of_two() {
                        tracing::error!(error = %e, failures, "the store cannot write: changes wait in memory and are tried again; new QoS 1/2 messages are refused until it can (5.0: 0x97, 3.1.1: the publisher is disconnected)");
                    }
                    if stop {
                        tracing::error!(
                            "stopping with changes the store could not write: they are lost"
                        );
                    }
                }
            }
        }
        if !log.is_dirty() && !unsynced {
            // Everything taken is on disk: written and synced, or cancelled in its burst
            // (nothing to write is durable too).
            publish_synced(durable, &synced_before);
        }
        if !log.is_dirty() && !loads.is_empty() {
            // Written (synced or not): the records they ask for are in the log now. A
            // failing disk keeps them waiting with the writes.
            for req in loads.drain(..) {
                let loaded = load(&mut log, &req, &clocks);
                if let Some(deliver) = durable.deliver.get() {
                    deliver(
                        req.worker,
                        Box::new(LoadReply {
                            client: req.client,
                            session: req.session,
                            loaded,
                        }),
                    );
                }
            }
        }
        if stop {
            return;
        }
    }
}

/// Tells the workers that `taken` changes of each are on disk, and wakes them if that is
/// news (`sync`: their acknowledgements wait on it).
fn publish_synced(durable: &Durable, taken: &[u64]) {
    let mut news = false;
    for (w, n) in taken.iter().enumerate() {
        news |= durable.synced[w].swap(*n, Ordering::AcqRel) != *n;
    }
    if news
        && durable.sync
        && let Some(wake) = durable.wake.get()
    {
        wake();
    }
}

type BurstKey = (usize, u64);

/// What the thread keeps between bursts, so that a burst allocates nothing once warm.
#[derive(Default)]
struct Buffers {
    key: Vec<u8>,
    value: Vec<u8>,
    /// `coalesce`'s indexes into the burst: a message's Added and Sent, a PUBREL owed, an
    /// inbound id opened.
    added: foldhash::HashMap<BurstKey, (usize, Option<usize>)>,
    released: foldhash::HashMap<BurstKey, usize>,
    opened: foldhash::HashMap<BurstKey, usize>,
}

/// Cancels, within one burst, the changes that undo each other before they are written: a
/// message queued and acknowledged (with its sent id), an inbound QoS 2 id opened and
/// released, a PUBREL owed and completed. The log would write each record and its
/// tombstone; after this it writes neither. A subscriber that keeps up acknowledges most
/// messages within a tick, so QoS 1 fan-in into a persistent session writes almost nothing.
///
/// Sessions are told apart by their journal's client id (one `Arc` per durable session,
/// alive while its changes are), so the pointer is the key.
fn coalesce(burst: &mut [Op], bufs: &mut Buffers) {
    use std::collections::hash_map::Entry;
    let Buffers {
        added,
        released,
        opened,
        ..
    } = bufs;
    added.clear();
    released.clear();
    opened.clear();
    for i in 0..burst.len() {
        let Op::Change(client, change) = &burst[i] else {
            continue;
        };
        let c = Arc::as_ptr(client).cast::<u8>() as usize;
        let mut cancel: smallvec::SmallVec<[usize; 3]> = smallvec::SmallVec::new();
        match *change {
            Change::Added { seq, .. } => {
                added.insert((c, seq), (i, None));
            }
            Change::Sent { seq, .. } => {
                if let Some(entry) = added.get_mut(&(c, seq)) {
                    entry.1 = Some(i);
                }
            }
            Change::Removed { seq, .. } => {
                if let Some((a, sent)) = added.remove(&(c, seq)) {
                    cancel.extend([a, i]);
                    cancel.extend(sent);
                }
            }
            Change::Released { seq, pid, .. } => {
                if let Some((a, sent)) = added.remove(&(c, seq)) {
                    cancel.push(a);
                    cancel.extend(sent);
                    // Nothing of the message was written: only the PUBREL owed is.
                    if let Op::Change(_, Change::Released { seq, .. }) = &mut burst[i] {
                        *seq = u64::MAX;
                    }
                }
                released.insert((c, u64::from(pid.get())), i);
            }
            Change::Completed { pid, .. } => {
                if let Entry::Occupied(e) = released.entry((c, u64::from(pid.get()))) {
                    let r = e.remove();
                    cancel.push(i);
                    // The PUBREL owed is never written; the message it replaced (written
                    // before this burst) still goes.
                    if let Op::Change(client, Change::Released { seq, .. }) = &burst[r] {
                        burst[r] = match *seq {
                            u64::MAX => Op::Nothing,
                            seq => {
                                Op::Change(Arc::clone(client), Change::Removed { seq, sent: true })
                            }
                        };
                    }
                }
            }
            Change::InboundOpened { pid } => {
                opened.insert((c, u64::from(pid.get())), i);
            }
            Change::InboundClosed { pid } => {
                if let Some(o) = opened.remove(&(c, u64::from(pid.get()))) {
                    cancel.extend([o, i]);
                }
            }
        }
        for at in cancel {
            burst[at] = Op::Nothing;
        }
    }
}

/// Applies one change; `true` for the stop.
fn apply(log: &mut Log, op: Op, bufs: &mut Buffers, clocks: &Clocks) -> bool {
    match op {
        Op::Retained(msg) => {
            records::encode_message_into(&msg, clocks, &mut bufs.value);
            log.put(&records::retained_key(&msg.topic), &bufs.value);
        }
        Op::Put(k, v) => log.put(&k, &v),
        Op::Delete(k) => log.delete(&k),
        Op::Change(client, change) => {
            apply_change(log, &client, change, bufs, clocks);
        }
        Op::SessionGone(client) => {
            log.delete(&records::session_key(&client));
            let prefix = records::queue_prefix(&client);
            // Its own keys only (a range of the ordered index), and those not committed yet
            // too: a change can be in the same burst.
            let mut keys = log.keys_with_prefix(&prefix);
            keys.extend(
                log.pending_keys()
                    .filter(|k| k.starts_with(&prefix))
                    .map(<[u8]>::to_vec),
            );
            for k in keys {
                log.delete(&k);
            }
        }
        Op::Nothing | Op::Load(_) => {}
        Op::Stop => return true,
    }
    false
}

/// Writes one change to a durable session's QoS 1/2 state (see `records` for the keys).
/// `bufs` holds the key and value buffers kept across changes.
fn apply_change(log: &mut Log, client: &str, change: Change, bufs: &mut Buffers, clocks: &Clocks) {
    let Buffers { key, value, .. } = bufs;
    let put = |log: &mut Log, k: QueueKey, v: &[u8], key: &mut Vec<u8>| {
        k.write_key(client, key);
        log.put(key, v);
    };
    let delete = |log: &mut Log, k: QueueKey, key: &mut Vec<u8>| {
        k.write_key(client, key);
        log.delete(key);
    };
    match change {
        Change::Added {
            seq,
            qos,
            retain,
            sub_id,
            msg,
        } => {
            records::encode_queued(qos, retain, sub_id, &msg, clocks, value);
            put(log, QueueKey::Message(seq), value, key);
        }
        Change::Sent { seq, pid } => {
            put(log, QueueKey::Sent(seq), &pid.get().to_le_bytes(), key);
        }
        Change::Removed { seq, sent } => {
            delete(log, QueueKey::Message(seq), key);
            if sent {
                delete(log, QueueKey::Sent(seq), key);
            }
        }
        Change::Released { seq, pid, order } => {
            if seq != u64::MAX {
                delete(log, QueueKey::Message(seq), key);
                delete(log, QueueKey::Sent(seq), key);
            }
            put(log, QueueKey::Owed(order), &pid.get().to_le_bytes(), key);
        }
        Change::Completed { pid, order } => match order {
            u64::MAX => delete(log, QueueKey::Released(pid.get()), key),
            order => delete(log, QueueKey::Owed(order), key),
        },
        Change::InboundOpened { pid } => put(log, QueueKey::Inbound(pid.get()), &[], key),
        Change::InboundClosed { pid } => delete(log, QueueKey::Inbound(pid.get()), key),
    }
}
