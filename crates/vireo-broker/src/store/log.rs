//! An append-only, keyed segment log: the store under Vireo's durable state (see
//! `docs/architecture.md`, "Durability: the store", for why this and not redb or fjall).
//!
//! **Records.** `[len u32][crc32 u32][header crc u32][op u8][key len u16][key][value]`,
//! little-endian; `len` counts what follows the header, which the first CRC covers; the
//! header CRC covers `len` and that CRC, so a scan for the next record after damage rejects
//! a wrong position in a few instructions instead of checksumming `len` bytes from it.
//! `op` 1 is a put, 0 a delete.
//!
//! **Segments.** `NNNNNNNNNN.seg` in the directory, replayed in order, the last one appended
//! to until it passes [`SEGMENT_BYTES`]. An in-memory index says where each live key's latest
//! record is, so values stay on disk until read.
//!
//! **Commit.** Puts and deletes are buffered; [`Log::commit`] writes the buffer in one
//! `write` and, when asked, one `fdatasync`: group commit is the caller batching.
//!
//! **Damage.** Opening never fails on what a crash or a bad disk leaves: a torn tail, a record
//! whose CRC does not match, a length that makes no sense. Each damaged stretch is skipped up
//! to the next record that checks (every intact record is kept), counted in [`Recovery`], and
//! the log is compacted at once so that the damage is not met again.
//!
//! **Compaction.** Once the segments hold more than twice the live bytes (and at least
//! [`COMPACT_MIN_BYTES`]), the live records are copied into new segments, written under a
//! temporary name and renamed only once all are synced (a failure leaves the old ones as they
//! were, and removes the new), then the old ones are deleted. Replayed after the old ones, the
//! new segments hold the latest value of every key they have, so a crash at any point
//! replays to the same state.
//!
//! **One owner.** An exclusive lock on `LOCK` in the directory: a second broker on the same
//! directory gets an error at start instead of two writers.

use super::index::{Index, Loc};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A segment is closed and a new one started past this size.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// No compaction below this many bytes of segments.
pub const COMPACT_MIN_BYTES: u64 = 64 << 20;
/// The largest record accepted (a length above it is damage, not a record): above the
/// largest `max_packet_size` (256 MiB) with room for the record's own fields.
pub const MAX_RECORD: usize = 512 << 20;
const HEADER: usize = 12;
/// A failed write keeps its batch to try again; past this much waiting, the oldest changes
/// are given up (logged), so a disk that stays full cannot make the broker's memory grow.
pub const MAX_PENDING_BYTES: usize = 64 << 20;

/// A buffered record: its key, and for a put where it is in the buffer and its length.
type Pending = (Box<[u8]>, Option<(usize, u32)>);

/// What opening found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    /// Intact records replayed.
    pub records: u64,
    /// Damaged stretches skipped (a torn tail is one).
    pub damaged: u64,
    /// Bytes in them.
    pub dropped_bytes: u64,
}

/// The log. Not thread-safe: one store thread owns it.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    _lock: File,
    /// Open segments by number; the last is appended to.
    segments: Vec<(u32, File)>,
    /// Bytes in the active segment, written (the buffer comes after).
    active_len: u64,
    /// Bytes in all segments.
    total_bytes: u64,
    /// Bytes of the live records.
    live_bytes: u64,
    buf: Vec<u8>,
    /// A failed write could not be cut back out of the active segment.
    tail_unknown: bool,
    /// Bytes written to segments since open, compactions included.
    written_bytes: u64,
    index: Index,
    /// The buffer's records, for the index once they are written.
    pending: Vec<Pending>,
    /// Batches given up (see [`Log::given_up`]).
    given_up: u64,
}

/// Why the log cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process holds the directory.
    #[error("{0} is in use by another process (a second broker on the same data_dir?)")]
    Locked(PathBuf),
    /// The directory cannot be created, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A new, empty segment to append to (one left by a compaction that did not finish is
/// emptied first).
fn open_segment(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .append(true)
        .open(path)?;
    file.set_len(0)?;
    Ok(file)
}

fn segment_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n:010}.seg"))
}

/// Whether a whole record starts at `buf[0]`; its total length if so.
fn record_at(buf: &[u8]) -> Option<usize> {
    let head = buf.get(..HEADER)?;
    if crc32fast::hash(&head[..8]).to_le_bytes() != head[8..12] {
        return None;
    }
    let len = u32::from_le_bytes(head[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(head[4..8].try_into().ok()?);
    if !(3..=MAX_RECORD).contains(&len) {
        return None;
    }
    let body = buf.get(HEADER..HEADER + len)?;
    let klen = usize::from(u16::from_le_bytes([body[1], body[2]]));
    (body[0] <= 1 && 3 + klen <= len && crc32fast::hash(body) == crc).then_some(HEADER + len)
}

impl Log {
    /// Opens (creating) the log in `dir`, replaying every segment. Damage is skipped and
    /// reported, never an error; an error is the directory itself failing, or another owner.
    pub fn open(dir: &Path) -> Result<(Self, Recovery), OpenError> {
        fs::create_dir_all(dir).map_err(at(dir))?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(at(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(OpenError::Locked(dir.to_owned())),
            Err(fs::TryLockError::Error(e)) => return Err(at(&lock_path)(e)),
        }
        // A compaction that did not finish: its output is not trusted (the old segments
        // still hold everything).
        for e in fs::read_dir(dir).map_err(at(dir))?.flatten() {
            if e.file_name()
                .to_str()
                .is_some_and(|n| n.ends_with(".seg.tmp"))
            {
                let _ = fs::remove_file(e.path());
            }
        }
        let mut numbers: Vec<u32> = fs::read_dir(dir)
            .map_err(at(dir))?
            .filter_map(|e| {
                let name = e.ok()?.file_name();
                name.to_str()?.strip_suffix(".seg")?.parse().ok()
            })
            .collect();
        numbers.sort_unstable();
        if numbers.is_empty() {
            numbers.push(1);
        }
        let mut log = Self {
            dir: dir.to_owned(),
            _lock: lock,
            segments: Vec::new(),
            active_len: 0,
            total_bytes: 0,
            live_bytes: 0,
            buf: Vec::new(),
            tail_unknown: false,
            written_bytes: 0,
            index: Index::default(),
            pending: Vec::new(),
            given_up: 0,
        };
        let mut recovery = Recovery::default();
        for n in numbers {
            let path = segment_path(dir, n);
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .append(true)
                .open(&path)
                .map_err(at(&path))?;
            let data = fs::read(&path).map_err(at(&path))?;
            log.replay(n, &data, &mut recovery);
            log.total_bytes += data.len() as u64;
            log.active_len = data.len() as u64;
            log.segments.push((n, file));
        }
        if recovery.damaged > 0 {
            // Rewrite what is intact, so appends start after a clean record and the damage
            // is not skipped again at every start.
            log.compact().map_err(at(dir))?;
        }
        Ok((log, recovery))
    }

    fn replay(&mut self, segment: u32, data: &[u8], recovery: &mut Recovery) {
        let mut pos = 0;
        while pos < data.len() {
            if let Some(n) = record_at(&data[pos..]) {
                self.apply(segment, pos, &data[pos..pos + n]);
                recovery.records += 1;
                pos += n;
                continue;
            }
            // Damage: the next position where an intact record starts.
            let next = (pos + 1..data.len())
                .find(|&p| record_at(&data[p..]).is_some())
                .unwrap_or(data.len());
            recovery.damaged += 1;
            recovery.dropped_bytes += (next - pos) as u64;
            pos = next;
        }
    }

    fn apply(&mut self, segment: u32, offset: usize, record: &[u8]) {
        let body = &record[HEADER..];
        let klen = usize::from(u16::from_le_bytes([body[1], body[2]]));
        let key = &body[3..3 + klen];
        let old = if body[0] == 1 {
            self.live_bytes += record.len() as u64;
            self.index.insert(
                key,
                Loc {
                    segment,
                    offset: offset as u32,
                    len: record.len() as u32,
                },
            )
        } else {
            self.index.remove(key)
        };
        if let Some(old) = old {
            self.live_bytes -= u64::from(old.len);
        }
    }

    fn push_record(&mut self, key: &[u8], value: Option<&[u8]>) -> (usize, u32) {
        let buf = &mut self.buf;
        let start = buf.len();
        let len = 3 + key.len() + value.map_or(0, <[u8]>::len);
        buf.extend_from_slice(&(len as u32).to_le_bytes());
        buf.extend_from_slice(&[0; 8]);
        buf.push(u8::from(value.is_some()));
        buf.extend_from_slice(&(key.len() as u16).to_le_bytes());
        buf.extend_from_slice(key);
        if let Some(v) = value {
            buf.extend_from_slice(v);
        }
        let crc = crc32fast::hash(&buf[start + HEADER..]);
        buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        let head_crc = crc32fast::hash(&buf[start..start + 8]);
        buf[start + 8..start + HEADER].copy_from_slice(&head_crc.to_le_bytes());
        (start, (HEADER + len) as u32)
    }

    /// Sets `key` to `value` at the next commit. Keys are at most 65,535 bytes, records at
    /// most [`MAX_RECORD`]: the caller's limits are far below.
    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        debug_assert!(key.len() <= usize::from(u16::MAX));
        let at = self.push_record(key, Some(value));
        self.pending.push((key.into(), Some(at)));
    }

    /// Removes `key` at the next commit.
    pub fn delete(&mut self, key: &[u8]) {
        self.push_record(key, None);
        self.pending.push((key.into(), None));
    }

    /// How many times a failing commit gave its batch up (past [`MAX_PENDING_BYTES`]): what
    /// was put and deleted before such a failure is not on disk, and never will be.
    pub fn given_up(&self) -> u64 {
        self.given_up
    }

    /// Whether anything waits for [`Log::commit`].
    pub fn is_dirty(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Writes what was put and deleted since the last commit, and syncs it if `sync`. On an
    /// error (a full disk) the segment is cut back to where it was and nothing of the batch
    /// is in the index: the log stays consistent, and the batch waits for the next commit
    /// (past [`MAX_PENDING_BYTES`] it is given up, and the error says so).
    pub fn commit(&mut self, sync: bool) -> io::Result<()> {
        if self.buf.is_empty() {
            if sync {
                self.active().sync_data()?;
            }
            return Ok(());
        }
        if self.tail_unknown
            || (self.active_len + self.buf.len() as u64 > SEGMENT_BYTES && self.active_len > 0)
        {
            self.start_segment()?;
            self.tail_unknown = false;
        }
        let base = self.active_len;
        let written = self.active().write_all(&self.buf).and_then(|()| {
            if sync {
                self.active().sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            if self.active().set_len(base).is_err() {
                // Where the segment ends is unknown now: the next write starts a new one.
                self.tail_unknown = true;
            }
            if self.buf.len() > MAX_PENDING_BYTES {
                self.buf.clear();
                self.pending.clear();
                self.given_up += 1;
                return Err(io::Error::new(
                    e.kind(),
                    format!("{e}; over {MAX_PENDING_BYTES} bytes of changes waited: given up"),
                ));
            }
            return Err(e);
        }
        let segment = self.segments.last().map_or(1, |(n, _)| *n);
        for (key, at) in std::mem::take(&mut self.pending) {
            let old = match at {
                Some((start, len)) => {
                    self.live_bytes += u64::from(len);
                    self.index.insert(
                        &key,
                        Loc {
                            segment,
                            offset: (base + start as u64) as u32,
                            len,
                        },
                    )
                }
                None => self.index.remove(&key),
            };
            if let Some(old) = old {
                self.live_bytes -= u64::from(old.len);
            }
        }
        self.active_len += self.buf.len() as u64;
        self.total_bytes += self.buf.len() as u64;
        self.written_bytes += self.buf.len() as u64;
        self.buf.clear();
        if self.total_bytes > COMPACT_MIN_BYTES && self.total_bytes > 2 * self.live_bytes {
            self.compact()?;
        }
        Ok(())
    }

    fn active(&self) -> &File {
        &self.segments[self.segments.len() - 1].1
    }

    fn start_segment(&mut self) -> io::Result<()> {
        let n = self.segments.last().map_or(0, |(n, _)| *n) + 1;
        let path = segment_path(&self.dir, n);
        let file = open_segment(&path)?;
        File::open(&self.dir)?.sync_all()?;
        self.segments.push((n, file));
        self.active_len = 0;
        Ok(())
    }

    fn read(&self, loc: Loc) -> io::Result<Vec<u8>> {
        let file = self
            .segments
            .iter()
            .find(|(n, _)| *n == loc.segment)
            .map(|(_, f)| f)
            .ok_or_else(|| io::Error::other("segment gone"))?;
        let mut rec = vec![0; loc.len as usize];
        file.read_exact_at(&mut rec, u64::from(loc.offset))?;
        Ok(rec)
    }

    /// The committed value of `key`.
    pub fn get(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let Some(loc) = self.index.get(key) else {
            return Ok(None);
        };
        let rec = self.read(loc)?;
        let value = rec
            .get(HEADER + 1..HEADER + 3)
            .map(|k| usize::from(u16::from_le_bytes([k[0], k[1]])))
            .and_then(|klen| rec.get(HEADER + 3 + klen..));
        match value {
            Some(v) if record_at(&rec) == Some(rec.len()) => Ok(Some(v.to_vec())),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a record changed on disk since it was read",
            )),
        }
    }

    /// Every committed key, in byte order.
    pub fn keys(&self) -> Vec<Vec<u8>> {
        let mut keys: Vec<Vec<u8>> = self.index.iter().map(|(k, _)| k).collect();
        keys.sort_unstable();
        keys
    }

    /// Every committed key that is not numbered (see [`Log::numbers_from`]), in byte order.
    pub fn plain_keys(&self) -> Vec<Vec<u8>> {
        self.index.plain_keys()
    }

    /// The prefixes of the numbered keys, in byte order.
    pub fn numbered_prefixes(&self) -> Vec<Vec<u8>> {
        self.index.numbered_prefixes()
    }

    /// The committed keys that start with `prefix`, in byte order.
    pub fn keys_with_prefix(&self, prefix: &[u8]) -> Vec<Vec<u8>> {
        self.index.keys_with_prefix(prefix)
    }

    /// For keys `prefix` + a big-endian `u64` whose `prefix` ends in a NUL and one more byte
    /// (a session's queue records): the committed numbers from `from` on, in order, with
    /// their records' sizes.
    pub fn numbers_from<'a>(
        &'a self,
        prefix: &[u8],
        from: u64,
    ) -> impl Iterator<Item = (u64, u32)> + 'a {
        self.index.numbers_from(prefix, from)
    }

    /// The size on disk of `key`'s committed record (its value and a few bytes more).
    pub fn record_len(&self, key: &[u8]) -> Option<u32> {
        self.index.get(key).map(|loc| loc.len)
    }

    /// Keys put since the last commit (not yet in [`Log::keys`]), in the order put.
    pub fn pending_keys(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.pending
            .iter()
            .filter(|(_, at)| at.is_some())
            .map(|(k, _)| &**k)
    }

    /// Live records.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.index.len() == 0
    }

    /// Bytes in the segments on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Bytes written to segments since open, compactions included (write amplification is
    /// this over the bytes of the records put).
    pub fn written_bytes(&self) -> u64 {
        self.written_bytes
    }

    /// Bytes of live records (what a compaction would keep).
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Copies the live records into new segments (of at most [`SEGMENT_BYTES`] each, written
    /// one at a time, so memory holds one segment's worth) and deletes the others.
    pub fn compact(&mut self) -> io::Result<()> {
        self.commit(false)?;
        let mut n = self.segments.last().map_or(0, |(n, _)| *n) + 1;
        let mut written: Vec<u32> = Vec::new();
        let result = self.write_compacted(&mut n, &mut written);
        let (index, last_len) = match result {
            Ok(done) => done,
            Err(e) => {
                for w in written {
                    let _ = fs::remove_file(temp_path(&self.dir, w));
                }
                return Err(e);
            }
        };
        // Every new segment is whole and synced: give them their names. A crash between two
        // renames replays the old segments, then the renamed new ones: the same state.
        let mut new_segments = Vec::with_capacity(written.len());
        for &w in &written {
            fs::rename(temp_path(&self.dir, w), segment_path(&self.dir, w))?;
            let file = OpenOptions::new()
                .read(true)
                .append(true)
                .open(segment_path(&self.dir, w))?;
            new_segments.push((w, file));
        }
        File::open(&self.dir)?.sync_all()?;
        let old = std::mem::replace(&mut self.segments, new_segments);
        self.index = index;
        self.active_len = last_len;
        self.total_bytes = self.live_bytes;
        self.written_bytes += self.live_bytes; // what the new segments hold
        for (o, _) in old {
            if let Err(e) = fs::remove_file(segment_path(&self.dir, o)) {
                // Harmless but for its space: replayed before the new ones, and removed by
                // the next compaction after a restart.
                tracing::warn!(segment = o, error = %e, "an old segment could not be removed");
            }
        }
        File::open(&self.dir)?.sync_all()?;
        Ok(())
    }

    /// Writes the live records to temporary segments numbered from `*n`, recording each
    /// in `written`; returns the new index and the last segment's length.
    /// Streamed through a small buffer: a compaction holds one record and 1 MiB, not a
    /// segment.
    fn write_compacted(&self, n: &mut u32, written: &mut Vec<u32>) -> io::Result<(Index, u64)> {
        let temp = |n: u32| -> io::Result<io::BufWriter<File>> {
            Ok(io::BufWriter::with_capacity(
                1 << 20,
                File::create(temp_path(&self.dir, n))?,
            ))
        };
        let finish = |out: io::BufWriter<File>| -> io::Result<()> {
            out.into_inner().map_err(|e| e.into_error())?.sync_data()
        };
        let mut out = temp(*n)?;
        written.push(*n);
        let mut len = 0u64;
        let mut index = Index::default();
        for (key, loc) in self.index.iter() {
            if len > 0 && len + u64::from(loc.len) > SEGMENT_BYTES {
                finish(std::mem::replace(&mut out, temp(*n + 1)?))?;
                *n += 1;
                written.push(*n);
                len = 0;
            }
            out.write_all(&self.read(loc)?)?;
            index.insert(
                &key,
                Loc {
                    segment: *n,
                    offset: len as u32,
                    len: loc.len,
                },
            );
            len += u64::from(loc.len);
        }
        finish(out)?;
        Ok((index, len))
    }
}

fn temp_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n:010}.seg.tmp"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> (Log, Recovery) {
        Log::open(dir).unwrap()
    }

    fn segment(dir: &Path) -> PathBuf {
        let mut segs: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        segs.sort();
        segs.pop().unwrap()
    }

    fn filled(dir: &Path, n: u32) {
        let (mut log, _) = open(dir);
        for i in 0..n {
            log.put(format!("k{i}").as_bytes(), format!("value {i}").as_bytes());
            log.commit(true).unwrap();
        }
    }

    #[test]
    fn what_is_committed_is_there_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, r) = open(dir.path());
            assert_eq!(r, Recovery::default());
            log.put(b"a", b"1");
            log.put(b"b", b"2");
            log.commit(true).unwrap();
            log.put(b"a", b"3");
            log.delete(b"b");
            log.put(b"c", b"");
            log.commit(false).unwrap();
            log.put(b"never", b"committed");
        }
        let (log, r) = open(dir.path());
        assert_eq!(r.damaged, 0);
        assert_eq!(r.records, 5);
        assert_eq!(log.get(b"a").unwrap().as_deref(), Some(&b"3"[..]));
        assert_eq!(log.get(b"b").unwrap(), None);
        assert_eq!(log.get(b"c").unwrap().as_deref(), Some(&b""[..]));
        assert_eq!(log.get(b"never").unwrap(), None);
        assert_eq!(log.len(), 2);
    }

    #[test]
    fn a_second_owner_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = open(dir.path());
        assert!(matches!(Log::open(dir.path()), Err(OpenError::Locked(_))));
    }

    /// A crash mid-write leaves a torn tail: cut anywhere, every whole record before it is
    /// kept, the rest counted, and appends go on after it.
    #[test]
    fn a_torn_tail_is_dropped_and_counted_at_any_cut() {
        let dir = tempfile::tempdir().unwrap();
        filled(dir.path(), 3);
        let path = segment(dir.path());
        let full = fs::read(&path).unwrap();
        let record = full.len() / 3;
        for cut in 1..record {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir_all(dir.path()).unwrap();
            fs::write(dir.path().join("0000000001.seg"), &full[..2 * record + cut]).unwrap();
            let (mut log, r) = open(dir.path());
            assert_eq!((r.records, r.damaged, r.dropped_bytes), (2, 1, cut as u64));
            assert_eq!(log.len(), 2);
            log.put(b"after", b"x");
            log.commit(true).unwrap();
            drop(log);
            let (log, r) = open(dir.path());
            assert_eq!(r.damaged, 0, "compacted: the damage is gone");
            assert_eq!(log.len(), 3);
        }
    }

    /// Flipped bytes in the last records, or in one in the middle: that record is dropped,
    /// every intact one after it kept.
    #[test]
    fn flipped_bytes_lose_only_the_records_they_hit() {
        let dir = tempfile::tempdir().unwrap();
        filled(dir.path(), 10);
        let path = segment(dir.path());
        let full = fs::read(&path).unwrap();
        let record = full.len() / 10;
        for (victim, byte) in [(9, 0), (9, 12), (8, 3), (4, 5), (4, 9), (0, 0)] {
            let mut data = full.clone();
            data[victim * record + byte] ^= 0x5A;
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join("0000000001.seg"), &data).unwrap();
            let (log, r) = open(dir.path());
            assert_eq!(r.records, 9, "victim {victim} byte {byte}");
            assert_eq!(r.damaged, 1);
            let key = format!("k{victim}");
            assert_eq!(log.get(key.as_bytes()).unwrap(), None);
            for i in (0..10).filter(|&i| i != victim) {
                let want = format!("value {i}");
                assert_eq!(
                    log.get(format!("k{i}").as_bytes()).unwrap().as_deref(),
                    Some(want.as_bytes())
                );
            }
        }
    }

    #[test]
    fn garbage_never_panics_and_never_refuses_to_open() {
        let mut rng = fastrand::Rng::with_seed(7);
        for len in [0, 1, 7, 8, 9, 100, 5000] {
            let dir = tempfile::tempdir().unwrap();
            let mut junk = vec![0u8; len];
            rng.fill(&mut junk);
            fs::write(dir.path().join("0000000001.seg"), &junk).unwrap();
            let (log, r) = open(dir.path());
            assert_eq!(log.len(), 0);
            assert_eq!(r.dropped_bytes, len as u64);
        }
    }

    #[test]
    fn compaction_keeps_the_live_records_only() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = open(dir.path());
        for round in 0..50u32 {
            for k in 0..100u32 {
                log.put(&k.to_be_bytes(), &round.to_be_bytes());
            }
            log.commit(false).unwrap();
        }
        log.delete(&0u32.to_be_bytes());
        log.commit(true).unwrap();
        let before = log.disk_bytes();
        log.compact().unwrap();
        assert!(
            log.disk_bytes() * 40 < before,
            "{} vs {before}",
            log.disk_bytes()
        );
        log.put(b"new", b"after");
        log.commit(true).unwrap();
        drop(log);
        let (log, r) = open(dir.path());
        assert_eq!(r.damaged, 0);
        assert_eq!(log.len(), 100);
        assert_eq!(log.get(&0u32.to_be_bytes()).unwrap(), None);
        assert_eq!(
            log.get(&7u32.to_be_bytes()).unwrap().as_deref(),
            Some(&49u32.to_be_bytes()[..])
        );
        assert_eq!(log.get(b"new").unwrap().as_deref(), Some(&b"after"[..]));
    }

    /// A compaction that did not finish left temporary segments: they are not replayed (a
    /// stale copy would bring deleted keys back) and are removed.
    #[test]
    fn an_unfinished_compaction_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = open(dir.path());
            log.put(b"k", b"old");
            log.commit(true).unwrap();
        }
        let stale = fs::read(segment(dir.path())).unwrap();
        {
            let (mut log, _) = open(dir.path());
            log.delete(b"k");
            log.commit(true).unwrap();
        }
        let tmp = dir.path().join("0000000009.seg.tmp");
        fs::write(&tmp, &stale).unwrap();
        let (log, r) = open(dir.path());
        assert_eq!(r.damaged, 0);
        assert_eq!(
            log.get(b"k").unwrap(),
            None,
            "the deleted key stays deleted"
        );
        assert!(!tmp.exists());
    }

    /// Damage longer than any record (a zeroed megabyte): every intact record after it is
    /// still found.
    #[test]
    fn records_after_a_long_damaged_stretch_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        filled(dir.path(), 4);
        let path = segment(dir.path());
        let full = fs::read(&path).unwrap();
        let record = full.len() / 4;
        let mut data = full[..2 * record].to_vec();
        data.extend(std::iter::repeat_n(0u8, 1 << 20));
        data.extend_from_slice(&full[2 * record..]);
        fs::write(&path, &data).unwrap();
        let (log, r) = open(dir.path());
        assert_eq!((r.records, r.damaged, r.dropped_bytes), (4, 1, 1 << 20));
        assert_eq!(log.len(), 4);
    }

    #[test]
    fn a_read_only_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        fs::write(&file, b"x").unwrap();
        let err = Log::open(&file).unwrap_err();
        assert!(err.to_string().contains("not-a-dir"), "{err}");
    }
}
