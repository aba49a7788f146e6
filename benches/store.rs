//! Which embedded store holds Vireo's durable state: redb, fjall, or an append-only segment log
//! of our own, on the workloads durability puts on it (issue 11). Not a criterion benchmark:
//! each workload runs once per store, in the same process, one after the other, and the
//! table it prints is what `docs/architecture.md` ("Durability: the store") quotes.
//!
//! ```text
//! cargo bench -p vireo-benches --bench store            # full sizes
//! cargo bench -p vireo-benches --bench store -- --quick # a tenth, to try it
//! ```
//!
//! Workloads (keys are 16 bytes, values ~100: a topic, a 64-byte payload, a header):
//! - **fan-in QoS 1**: messages for one persistent subscriber, committed and synced in
//!   batches of 64 (one worker loop iteration's worth), each deleted 1,000 messages later
//!   (its PUBACK). Throughput, and p99 of a batch's commit (the latency a PUBACK waits for in
//!   `sync` mode).
//! - **1M queued**: messages for an offline subscriber, batches of 1,000, never deleted. Then
//!   bytes on disk per message, and recovery: reopen and read every record back.
//! - **100k retained**: one message per topic, batches of 1,000; recovery as above.
//!
//! Write amplification is the bytes the process wrote to files (`wchar` of `/proc/self/io`,
//! compactions included) over the bytes of the records themselves.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use redb::ReadableTable as _;

const VALUE_LEN: usize = 100;
const ACK_LAG: u64 = 1_000;

trait Store {
    fn name() -> &'static str;
    fn open(dir: &Path) -> Self;
    fn put(&mut self, key: &[u8], value: &[u8]);
    fn delete(&mut self, key: &[u8]);
    /// Ends a batch: written and synced to disk.
    fn commit(&mut self);
    /// Reads every record (what a restart does); returns how many.
    fn scan(&mut self) -> usize;
}

// ---------------------------------------------------------------------------------------
// redb: a copy-on-write B-tree; one write transaction per batch, durable on commit.

const TABLE: redb::TableDefinition<'_, &[u8], &[u8]> = redb::TableDefinition::new("t");

struct Redb {
    db: redb::Database,
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Store for Redb {
    fn name() -> &'static str {
        "redb 2.6"
    }
    fn open(dir: &Path) -> Self {
        let db = redb::Database::create(dir.join("redb")).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(TABLE).unwrap();
        tx.commit().unwrap();
        Self {
            db,
            ops: Vec::new(),
        }
    }
    fn put(&mut self, key: &[u8], value: &[u8]) {
        self.ops.push((key.to_vec(), Some(value.to_vec())));
    }
    fn delete(&mut self, key: &[u8]) {
        self.ops.push((key.to_vec(), None));
    }
    fn commit(&mut self) {
        let tx = self.db.begin_write().unwrap();
        {
            let mut t = tx.open_table(TABLE).unwrap();
            for (k, v) in self.ops.drain(..) {
                match v {
                    Some(v) => {
                        t.insert(&k[..], &v[..]).unwrap();
                    }
                    None => {
                        t.remove(&k[..]).unwrap();
                    }
                }
            }
        }
        tx.commit().unwrap();
    }
    fn scan(&mut self) -> usize {
        let tx = self.db.begin_read().unwrap();
        let t = tx.open_table(TABLE).unwrap();
        t.iter().unwrap().filter(Result::is_ok).count()
    }
}

// ---------------------------------------------------------------------------------------
// fjall: an LSM tree with a journal; one write batch per batch, journal synced.

struct Fjall {
    keyspace: fjall::Keyspace,
    part: fjall::PartitionHandle,
    batch: Option<fjall::Batch>,
}

impl Store for Fjall {
    fn name() -> &'static str {
        "fjall 2.11"
    }
    fn open(dir: &Path) -> Self {
        let keyspace = fjall::Config::new(dir.join("fjall")).open().unwrap();
        let part = keyspace
            .open_partition("t", fjall::PartitionCreateOptions::default())
            .unwrap();
        Self {
            keyspace,
            part,
            batch: None,
        }
    }
    fn put(&mut self, key: &[u8], value: &[u8]) {
        let ks = &self.keyspace;
        self.batch
            .get_or_insert_with(|| ks.batch())
            .insert(&self.part, key, value);
    }
    fn delete(&mut self, key: &[u8]) {
        let ks = &self.keyspace;
        self.batch
            .get_or_insert_with(|| ks.batch())
            .remove(&self.part, key);
    }
    fn commit(&mut self) {
        if let Some(b) = self.batch.take() {
            b.commit().unwrap();
        }
        self.keyspace.persist(fjall::PersistMode::SyncData).unwrap();
    }
    fn scan(&mut self) -> usize {
        self.part.iter().filter(Result::is_ok).count()
    }
}

// ---------------------------------------------------------------------------------------
// Ours: `vireo_broker::store::Log`, an append-only segment log with CRC-checked records, one
// write and one fdatasync per batch, an in-memory index of where each live value is, and
// compaction once dead bytes outweigh live ones.

struct Log(vireo_broker::store::Log);

impl Store for Log {
    fn name() -> &'static str {
        "own log"
    }
    fn open(dir: &Path) -> Self {
        Self(vireo_broker::store::Log::open(dir).unwrap().0)
    }
    fn put(&mut self, key: &[u8], value: &[u8]) {
        self.0.put(key, value);
    }
    fn delete(&mut self, key: &[u8]) {
        self.0.delete(key);
    }
    fn commit(&mut self) {
        self.0.commit(true).unwrap();
    }
    fn scan(&mut self) -> usize {
        // Opening already read every record; reading the values back is what a restart
        // that rebuilds its queues does.
        let keys: Vec<Vec<u8>> = self.0.keys();
        keys.iter()
            .filter(|k| self.0.get(k).is_ok_and(|v| v.is_some()))
            .count()
    }
}

// ---------------------------------------------------------------------------------------

fn key(session: u64, seq: u64) -> [u8; 16] {
    let mut k = [0; 16];
    k[..8].copy_from_slice(&session.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// A record's value: random bytes (payloads rarely compress, and a store that compresses
/// must not look better on `xxxx` than it is), its sequence number first.
fn value(seq: u64) -> [u8; VALUE_LEN] {
    let mut rng = fastrand::Rng::with_seed(seq);
    let mut v = [0u8; VALUE_LEN];
    rng.fill(&mut v);
    v[..8].copy_from_slice(&seq.to_le_bytes());
    v
}

fn written() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    io.lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap().map(|e| e.unwrap()) {
        let meta = e.metadata().unwrap();
        total += if meta.is_dir() {
            dir_bytes(&e.path())
        } else {
            meta.len()
        };
    }
    total
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

struct Row {
    store: &'static str,
    fanin_rate: f64,
    fanin_p99: Duration,
    fanin_amp: f64,
    queued_rate: f64,
    queued_bytes: f64,
    queued_amp: f64,
    queued_recovery: Duration,
    retained_rate: f64,
    retained_recovery: Duration,
}

fn run<S: Store>(scale: u64) -> Row {
    let record = (16 + VALUE_LEN) as f64;
    // Fan-in QoS 1: put, and delete ACK_LAG later.
    let dir = tempfile::tempdir().unwrap();
    let mut s = S::open(dir.path());
    let n = 200_000 / scale;
    let w0 = written();
    let t0 = Instant::now();
    let mut commits = Vec::new();
    for seq in 0..n {
        s.put(&key(1, seq), &value(seq));
        if seq >= ACK_LAG {
            s.delete(&key(1, seq - ACK_LAG));
        }
        if seq % 64 == 63 {
            let c = Instant::now();
            s.commit();
            commits.push(c.elapsed());
        }
    }
    s.commit();
    let fanin_rate = n as f64 / t0.elapsed().as_secs_f64();
    let fanin_amp = (written() - w0) as f64 / (n as f64 * record);
    drop(s);

    // 1M queued for an offline subscriber, then recovery.
    let qdir = tempfile::tempdir().unwrap();
    let mut s = S::open(qdir.path());
    let q = 1_000_000 / scale;
    let w0 = written();
    let t0 = Instant::now();
    for seq in 0..q {
        s.put(&key(2, seq), &value(seq));
        if seq % 1000 == 999 {
            s.commit();
        }
    }
    s.commit();
    let queued_rate = q as f64 / t0.elapsed().as_secs_f64();
    let queued_amp = (written() - w0) as f64 / (q as f64 * record);
    drop(s);
    let queued_bytes = dir_bytes(qdir.path()) as f64 / q as f64;
    let t0 = Instant::now();
    let mut s = S::open(qdir.path());
    assert_eq!(s.scan() as u64, q);
    let queued_recovery = t0.elapsed();
    drop(s);

    // 100k retained, then recovery.
    let rdir = tempfile::tempdir().unwrap();
    let mut s = S::open(rdir.path());
    let r = 100_000 / scale;
    let t0 = Instant::now();
    for topic in 0..r {
        s.put(format!("sensors/{topic:08}/temp").as_bytes(), &value(topic));
        if topic % 1000 == 999 {
            s.commit();
        }
    }
    s.commit();
    let retained_rate = r as f64 / t0.elapsed().as_secs_f64();
    drop(s);
    let t0 = Instant::now();
    let mut s = S::open(rdir.path());
    assert_eq!(s.scan() as u64, r);
    let retained_recovery = t0.elapsed();

    Row {
        store: S::name(),
        fanin_rate,
        fanin_p99: p99(commits),
        fanin_amp,
        queued_rate,
        queued_bytes,
        queued_amp,
        queued_recovery,
        retained_rate,
        retained_recovery,
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = if quick { 10 } else { 1 };
    let rows = [run::<Redb>(scale), run::<Fjall>(scale), run::<Log>(scale)];
    println!(
        "| store | fan-in QoS 1 msg/s | commit p99 | write amp | queued msg/s | bytes/msg on disk | write amp | recovery (1M) | retained msg/s | recovery (100k) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {:.0} | {:.2} ms | {:.1}× | {:.0} | {:.0} | {:.1}× | {:.2} s | {:.0} | {:.2} s |",
            r.store,
            r.fanin_rate,
            r.fanin_p99.as_secs_f64() * 1e3,
            r.fanin_amp,
            r.queued_rate,
            r.queued_bytes,
            r.queued_amp,
            r.queued_recovery.as_secs_f64(),
            r.retained_rate,
            r.retained_recovery.as_secs_f64(),
        );
    }
}
