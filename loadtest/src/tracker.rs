//! Per-subscriber accounting of what arrived from each publisher: unique, duplicated and
//! out-of-order messages, from the sequence numbers in the payload stamps.
//!
//! Each (subscriber, publisher) pair keeps the highest sequence seen and a ring bitmap of the last
//! [`WINDOW`] sequence numbers, so a late message is classified exactly as a duplicate or a
//! reordering while it is within the window. One older than that cannot be told apart; MQTT
//! brokers only redeliver on reconnect (which the generator never does), so it is counted as
//! out of order and unique. Loss is computed at the end, per publisher, as messages sent minus
//! unique messages received.

/// Sequence numbers behind the newest that a pair remembers: 512 bits, 64 bytes per pair.
pub const WINDOW: u64 = 512;
const WORDS: usize = (WINDOW / 64) as usize;

/// What one publisher's messages did at one subscriber.
#[derive(Debug, Clone, Default)]
struct Pair {
    /// One past the highest sequence number seen.
    next: u64,
    /// Bit `seq % WINDOW` is set when `seq` (within the window behind `next`) has arrived.
    seen: [u64; WORDS],
    unique: u64,
    duplicated: u64,
    out_of_order: u64,
}

impl Pair {
    fn bit(seq: u64) -> (usize, u64) {
        let i = seq % WINDOW;
        ((i / 64) as usize, 1 << (i % 64))
    }

    fn set(&mut self, seq: u64, on: bool) {
        let (w, mask) = Self::bit(seq);
        if on {
            self.seen[w] |= mask;
        } else {
            self.seen[w] &= !mask;
        }
    }

    fn is_set(&self, seq: u64) -> bool {
        let (w, mask) = Self::bit(seq);
        self.seen[w] & mask != 0
    }

    fn record(&mut self, seq: u64) -> Arrival {
        if seq >= self.next {
            // Forget whatever the ring held for the skipped numbers and the new one.
            if seq - self.next >= WINDOW {
                self.seen = [0; WORDS];
            } else {
                for s in self.next..seq {
                    self.set(s, false);
                }
            }
            self.set(seq, true);
            self.next = seq + 1;
            self.unique += 1;
            return Arrival::InOrder;
        }
        if self.next - seq <= WINDOW && self.is_set(seq) {
            self.duplicated += 1;
            return Arrival::Duplicate;
        }
        if self.next - seq <= WINDOW {
            self.set(seq, true);
        }
        self.unique += 1;
        self.out_of_order += 1;
        Arrival::OutOfOrder
    }
}

/// How a message fitted its publisher's sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Newer than anything before it from this publisher (possibly after a gap).
    InOrder,
    /// Older than the newest, not seen before.
    OutOfOrder,
    /// Seen before.
    Duplicate,
    /// From a publisher this subscriber should not hear from.
    Unexpected,
}

/// The pairs of one subscriber: publishers `first .. first + pairs.len()`.
#[derive(Debug, Clone)]
pub struct Tracker {
    first: u32,
    pairs: Vec<Pair>,
    unexpected: u64,
}

impl Tracker {
    /// Tracks publishers `first .. first + count`.
    pub fn new(first: u32, count: u32) -> Self {
        Self {
            first,
            pairs: vec![Pair::default(); count as usize],
            unexpected: 0,
        }
    }

    /// Accounts one message.
    pub fn record(&mut self, publisher: u32, seq: u64) -> Arrival {
        let pair = publisher
            .checked_sub(self.first)
            .and_then(|i| self.pairs.get_mut(i as usize));
        match pair {
            Some(pair) => pair.record(seq),
            None => {
                self.unexpected += 1;
                Arrival::Unexpected
            }
        }
    }

    /// Adds this tracker's unique counts into `per_publisher` (indexed by publisher id) and
    /// returns its totals.
    pub fn drain_into(&self, per_publisher: &mut [u64]) -> TrackerTotals {
        let mut t = TrackerTotals {
            unexpected: self.unexpected,
            ..TrackerTotals::default()
        };
        for (i, pair) in self.pairs.iter().enumerate() {
            if let Some(slot) = per_publisher.get_mut(self.first as usize + i) {
                *slot += pair.unique;
            }
            t.unique += pair.unique;
            t.duplicated += pair.duplicated;
            t.out_of_order += pair.out_of_order;
        }
        t
    }
}

/// Sums over pairs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrackerTotals {
    /// Distinct messages received.
    pub unique: u64,
    /// Messages received more than once (each extra copy counts).
    pub duplicated: u64,
    /// Messages that arrived after a newer one from the same publisher.
    pub out_of_order: u64,
    /// Messages from publishers this subscriber does not listen to.
    pub unexpected: u64,
}

impl std::ops::AddAssign for TrackerTotals {
    fn add_assign(&mut self, o: Self) {
        self.unique += o.unique;
        self.duplicated += o.duplicated;
        self.out_of_order += o.out_of_order;
        self.unexpected += o.unexpected;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(t: &Tracker, publishers: usize) -> (TrackerTotals, Vec<u64>) {
        let mut per = vec![0; publishers];
        (t.drain_into(&mut per), per)
    }

    #[test]
    fn in_order_gap_late_and_duplicate() {
        let mut t = Tracker::new(0, 2);
        for seq in [0, 1, 2, 5] {
            assert_eq!(t.record(0, seq), Arrival::InOrder);
        }
        assert_eq!(t.record(0, 3), Arrival::OutOfOrder);
        assert_eq!(t.record(0, 3), Arrival::Duplicate);
        assert_eq!(t.record(0, 5), Arrival::Duplicate);
        assert_eq!(t.record(1, 0), Arrival::InOrder);
        let (sum, per) = totals(&t, 2);
        assert_eq!(per, vec![5, 1]);
        assert_eq!(sum.duplicated, 2);
        assert_eq!(sum.out_of_order, 1);
    }

    #[test]
    fn ring_forgets_skipped_numbers_after_wrapping() {
        let mut t = Tracker::new(0, 1);
        assert_eq!(t.record(0, 0), Arrival::InOrder);
        // Jump exactly one window: bit 0 now belongs to seq 512, and seq 0 left the window.
        assert_eq!(t.record(0, WINDOW), Arrival::InOrder);
        assert_eq!(t.record(0, 1), Arrival::OutOfOrder);
        assert_eq!(t.record(0, WINDOW + 1), Arrival::InOrder);
        assert_eq!(t.record(0, 2), Arrival::OutOfOrder);
        assert_eq!(t.record(0, 2), Arrival::Duplicate);
    }

    #[test]
    fn offset_range_and_unexpected_publishers() {
        let mut t = Tracker::new(10, 1);
        assert_eq!(t.record(10, 0), Arrival::InOrder);
        assert_eq!(t.record(9, 0), Arrival::Unexpected);
        assert_eq!(t.record(11, 0), Arrival::Unexpected);
        let (sum, per) = totals(&t, 12);
        assert_eq!(per[10], 1);
        assert_eq!(sum.unexpected, 2);
    }
}
