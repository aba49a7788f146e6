//! The memory a worker's connections hold in unfinished packets, bounded by a budget.
//!
//! A packet's bytes stay in its connection's read buffer until the packet is whole. A client
//! that declares a large packet and never finishes it holds that memory for as long as the
//! packet timeout allows (see `Liveness::on_decoded`); many such clients together could hold
//! gigabytes within that time. Each worker therefore keeps a budget (its share of
//! `max_unfinished_bytes`): past it, the connections whose unfinished packets are oldest are
//! closed first, until the rest fits. A client uploading a large packet at line rate is
//! young by this measure (its age restarts with every packet it completes), so it is the
//! hoarders that go.
//!
//! Bookkeeping is O(1) per read, and nothing for a worker where no connection holds part of a
//! packet: holders are kept in the order their unfinished packet began, and entries that went
//! stale (the packet was finished, the connection closed) are skipped when met and compacted
//! away once they outnumber the live ones.

use std::collections::VecDeque;

use foldhash::{HashMap, HashMapExt};

/// What one connection holds.
#[derive(Debug, Clone, Copy)]
struct Held {
    /// Bytes counted against the budget (the read buffer's capacity).
    bytes: usize,
    /// When its unfinished packet began, in the worker's order of events.
    stamp: u64,
    /// A packet was finished since the last count: what is left unfinished began just now.
    restart: bool,
}

/// A worker's unfinished-packet budget. Only connections holding part of a packet have an
/// entry, so idle connections cost nothing here (and nothing in `Conn`, where every byte
/// counts per idle client).
#[derive(Debug)]
pub(crate) struct Unfinished {
    bytes: usize,
    budget: usize,
    held: HashMap<usize, Held>,
    /// `(stamp, connection key)`, oldest first; entries whose stamp is no longer their
    /// connection's are stale.
    order: VecDeque<(u64, usize)>,
    seq: u64,
}

impl Unfinished {
    pub(crate) fn new(budget: usize) -> Self {
        Self {
            bytes: 0,
            budget,
            held: HashMap::new(),
            order: VecDeque::new(),
            seq: 0,
        }
    }

    /// Bytes held now, across this worker's connections.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Records that connection `key` now holds `now` bytes of unfinished packet (0: none).
    /// Returns the change in bytes held, for the broker-wide gauge.
    #[inline]
    pub(crate) fn update(&mut self, key: usize, now: usize) -> isize {
        if now == 0 {
            if self.held.is_empty() {
                return 0; // the common case: nobody on this worker holds anything
            }
            return self.release(key);
        }
        let seq = &mut self.seq;
        let mut fresh = || {
            *seq += 1;
            *seq
        };
        let (delta, new_stamp) = match self.held.get_mut(&key) {
            Some(h) => {
                let delta = now as isize - h.bytes as isize;
                h.bytes = now;
                if std::mem::take(&mut h.restart) {
                    h.stamp = fresh();
                    (delta, Some(h.stamp))
                } else {
                    (delta, None)
                }
            }
            None => {
                let stamp = fresh();
                let h = Held {
                    bytes: now,
                    stamp,
                    restart: false,
                };
                self.held.insert(key, h);
                (now as isize, Some(stamp))
            }
        };
        self.bytes = self.bytes.saturating_add_signed(delta);
        if let Some(stamp) = new_stamp {
            self.order.push_back((stamp, key));
            if self.order.len() > 2 * self.held.len() + 64 {
                // Stamps are never reused, so what is left is one entry per holder: O(1) per
                // update over time.
                let held = &self.held;
                self.order
                    .retain(|&(stamp, key)| held.get(&key).is_some_and(|h| h.stamp == stamp));
            }
        }
        delta
    }

    /// A packet of `key`'s was finished: what it holds now (if anything) is a new packet.
    #[inline]
    pub(crate) fn restart(&mut self, key: usize) {
        if !self.held.is_empty()
            && let Some(h) = self.held.get_mut(&key)
        {
            h.restart = true;
        }
    }

    /// The connection is going (closed, or handed to another worker): its bytes no longer
    /// count here. Returns the change, as [`Unfinished::update`].
    pub(crate) fn release(&mut self, key: usize) -> isize {
        match self.held.remove(&key) {
            Some(h) => {
                self.bytes = self.bytes.saturating_sub(h.bytes);
                -(h.bytes as isize)
            }
            None => 0,
        }
    }

    /// While over budget: the connection whose unfinished packet is oldest, for the caller
    /// to close (which releases it).
    pub(crate) fn victim(&mut self) -> Option<usize> {
        if self.bytes <= self.budget {
            return None;
        }
        while let Some((stamp, key)) = self.order.pop_front() {
            if self.held.get(&key).is_some_and(|h| h.stamp == stamp) {
                // Out of the order now; `release` drops its entry when the caller closes it.
                return Some(key);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn victim(u: &mut Unfinished) -> Option<usize> {
        let v = u.victim()?;
        u.release(v);
        Some(v)
    }

    #[test]
    fn counts_bytes_and_returns_deltas() {
        let mut u = Unfinished::new(100);
        assert_eq!(u.update(0, 40), 40);
        assert_eq!(u.update(1, 30), 30);
        assert_eq!(u.update(0, 10), -30);
        assert_eq!(u.bytes(), 40);
        assert_eq!(u.release(1), -30);
        assert_eq!(u.update(0, 0), -10);
        assert_eq!(u.update(5, 0), 0);
        assert_eq!(u.bytes(), 0);
        assert!(u.held.is_empty());
    }

    #[test]
    fn nothing_goes_within_budget() {
        let mut u = Unfinished::new(100);
        u.update(0, 50);
        u.update(1, 50);
        assert_eq!(victim(&mut u), None);
    }

    #[test]
    fn oldest_unfinished_packet_goes_first() {
        let mut u = Unfinished::new(100);
        u.update(0, 40); // the hoarder
        u.update(1, 40);
        u.update(2, 40);
        assert_eq!(victim(&mut u), Some(0));
        assert_eq!(victim(&mut u), None, "80 bytes fit");
    }

    /// A client streaming packets finishes one with every read: its unfinished tail is new
    /// each time, so a hoarder that began later but never finished is older.
    #[test]
    fn a_finished_packet_makes_the_holder_young_again() {
        let mut u = Unfinished::new(100);
        u.update(0, 40); // the streamer, first
        u.update(1, 40); // the hoarder
        u.restart(0);
        u.update(0, 70);
        assert_eq!(victim(&mut u), Some(1));
        assert_eq!(victim(&mut u), None);
    }

    /// Bytes added to the same unfinished packet do not make it younger.
    #[test]
    fn growing_the_same_packet_keeps_its_age() {
        let mut u = Unfinished::new(100);
        u.update(0, 10);
        u.update(1, 10);
        u.update(0, 95);
        assert_eq!(victim(&mut u), Some(0));
    }

    #[test]
    fn stale_entries_stay_bounded() {
        let mut u = Unfinished::new(usize::MAX);
        u.update(1, 5);
        for _ in 0..10_000 {
            u.restart(0);
            u.update(0, 10);
        }
        // Connections that held a packet once and finished it.
        for k in 2..1_002 {
            u.update(k, 10);
            u.update(k, 0);
        }
        assert!(u.order.len() <= 2 * u.held.len() + 65, "{}", u.order.len());
        // The order survives compaction: 1 is still the oldest.
        u.budget = 0;
        assert_eq!(victim(&mut u), Some(1));
    }
}
