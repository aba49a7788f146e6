//! `persistence = "sync"`: acknowledgements that wait until what they confirm is on disk.
//!
//! A PUBACK or PUBREC confirms a message that may have gone to sessions on other workers,
//! which write their part to the store when they take the message from their mailbox. So an
//! acknowledgement cannot wait for a change of its own; it waits for points in each worker's
//! history of changes ([`crate::store::Durable`] counts them):
//!
//! - its own worker's: every change it sent up to the end of the iteration that pushed the
//!   acknowledgement (the retained store, local sessions, the publisher's own QoS 2 id);
//! - each worker it handed messages to in that iteration: the changes that worker had sent
//!   once it had taken that iteration's batch (it says so in [`Durable::processed`]).
//!
//! Until both are synced the acknowledgement waits here, not in the connection's output:
//! deliveries to the same client go on meanwhile (MQTT orders PUBLISHes, not their acks
//! against them), and a publisher that never pauses still gets its acks. A persistent
//! session's CONNACK, which nothing may precede, corks its connection instead: what is
//! queued for it stays in its output until the record is on disk. The store wakes the
//! workers after each sync; while a hold waits, a worker also polls every millisecond, for
//! a worker that had nothing to write.

use std::collections::VecDeque;

use foldhash::{HashMap, HashMapExt};
use smallvec::SmallVec;

use vireo_codec::Packet;

use crate::store::Durable;

/// Acknowledgements a worker holds at most before it stops reading (a few tens of
/// milliseconds of a fast publisher's; a disk slower than that pushes back on publishers).
const MAX_HELD: usize = 64 * 1024;

/// A target not known yet: the other worker has not taken the batch.
const UNRESOLVED: u64 = u64::MAX;

/// The acknowledgements one iteration pushed, and what they wait for.
#[derive(Debug)]
struct Hold {
    iteration: u64,
    /// (worker, changes of it that must be synced).
    targets: SmallVec<[(usize, u64); 4]>,
    /// Corked connections (a CONNACK waits in their output).
    conns: Vec<usize>,
    /// Acknowledgements to push once released, with their connection.
    acks: Vec<(usize, Packet)>,
}

/// What a release lets go.
#[derive(Debug, Default)]
pub(crate) struct Released {
    /// Connections to write again.
    pub uncorked: Vec<usize>,
    /// Acknowledgements to push.
    pub acks: Vec<(usize, Packet)>,
    /// Connections whose acknowledgement or CONNACK confirmed what the store gave up (see
    /// `Durable::was_lost`): to close, unacknowledged.
    pub lost: Vec<usize>,
}

/// One worker's held acknowledgements.
#[derive(Debug)]
pub(crate) struct Holds {
    /// `persistence = "sync"`: holds are made. Otherwise everything here stays empty.
    pub on: bool,
    /// This worker's loop iterations; batches to other workers carry it.
    pub iteration: u64,
    /// Connections corked in this iteration, and acknowledgements held.
    now: Vec<usize>,
    now_acks: Vec<(usize, Packet)>,
    /// Per worker, whether this iteration handed it messages.
    handed: Vec<bool>,
    queue: VecDeque<Hold>,
    /// Corked connections, with the iteration of the last hold on each.
    corked: HashMap<usize, u64>,
    /// The batch the mailbox is being drained from: (sender, its iteration).
    pub inbox_from: Option<(usize, u64)>,
    /// Connections whose next QoS 2 delivery waits for the disk: refilled at each turn.
    refill: foldhash::HashSet<usize>,
    /// Acknowledgements held, in `now_acks` and `queue`.
    held: usize,
}

impl Holds {
    pub(crate) fn new(on: bool, workers: usize) -> Self {
        Self {
            on,
            iteration: 1,
            now: Vec::new(),
            now_acks: Vec::new(),
            handed: vec![false; workers],
            queue: VecDeque::new(),
            corked: HashMap::new(),
            inbox_from: None,
            refill: foldhash::HashSet::default(),
            held: 0,
        }
    }

    /// `key`'s output (a CONNACK just pushed) waits for this iteration's changes.
    pub(crate) fn cork(&mut self, key: usize) {
        if self.on {
            // Corked at once: a TLS or WebSocket flush within the iteration must not write
            // the CONNACK either.
            self.corked.insert(key, self.iteration);
            self.now.push(key);
        }
    }

    /// `ack` for `key` waits for this iteration's changes (holds are on).
    pub(crate) fn hold_ack(&mut self, key: usize, ack: Packet) {
        debug_assert!(self.on);
        self.held += 1;
        self.now_acks.push((key, ack));
    }

    /// This iteration handed worker `w` a batch.
    pub(crate) fn handed_to(&mut self, w: usize) {
        if self.on {
            self.handed[w] = true;
        }
    }

    /// Whether `key`'s output must wait.
    #[inline]
    pub(crate) fn is_corked(&self, key: usize) -> bool {
        self.on && self.corked.contains_key(&key)
    }

    /// `key` closed: nothing of it is held any more (its slab key may be reused). A client
    /// that did not get an ack sends its message again.
    pub(crate) fn forget(&mut self, key: usize) {
        if self.on {
            self.corked.remove(&key);
            self.now.retain(|k| *k != key);
            self.now_acks.retain(|(k, _)| *k != key);
            for hold in &mut self.queue {
                hold.acks.retain(|(k, _)| *k != key);
            }
            self.held =
                self.now_acks.len() + self.queue.iter().map(|h| h.acks.len()).sum::<usize>();
        }
    }

    /// Whether so many acknowledgements wait that the worker stops reading its clients until
    /// the disk catches up.
    pub(crate) fn is_full(&self) -> bool {
        self.held > MAX_HELD
    }

    /// Whether anything waits (the loop then polls at least every millisecond).
    pub(crate) fn waiting(&self) -> bool {
        !self.queue.is_empty() || !self.refill.is_empty()
    }

    /// `key`'s next delivery waits for the disk.
    pub(crate) fn refill_later(&mut self, key: usize) {
        if self.on {
            self.refill.insert(key);
        }
    }

    /// The connections to refill now (they come back through `refill_later` if they still
    /// wait).
    pub(crate) fn take_refills(&mut self) -> Vec<usize> {
        self.refill.drain().collect()
    }

    /// Ends iteration `self.iteration` of worker `me`: what it held waits for the changes it
    /// sent so far and for those of the workers it handed messages to.
    pub(crate) fn seal(&mut self, me: usize, durable: &Durable) {
        if !self.on {
            return;
        }
        if !self.now.is_empty() || !self.now_acks.is_empty() {
            let mut targets: SmallVec<[(usize, u64); 4]> = SmallVec::new();
            targets.push((me, durable.sent_by(me)));
            for (w, handed) in self.handed.iter().enumerate() {
                if *handed && w != me {
                    targets.push((w, UNRESOLVED));
                }
            }
            let conns = std::mem::take(&mut self.now);
            self.queue.push_back(Hold {
                iteration: self.iteration,
                targets,
                conns,
                acks: std::mem::take(&mut self.now_acks),
            });
        }
        self.handed.iter_mut().for_each(|h| *h = false);
        self.iteration += 1;
    }

    /// Releases, in order, the holds whose changes are synced.
    pub(crate) fn release(&mut self, me: usize, durable: &Durable) -> Released {
        let mut ready = Released::default();
        while let Some(hold) = self.queue.front_mut() {
            let mut done = true;
            for (w, target) in &mut hold.targets {
                if *target == UNRESOLVED {
                    match durable.processed_by(*w, me, hold.iteration) {
                        Some(count) => *target = count,
                        None => {
                            done = false;
                            continue;
                        }
                    }
                }
                if !durable.is_synced(*w, *target) {
                    done = false;
                }
            }
            if !done {
                break;
            }
            let Some(hold) = self.queue.pop_front() else {
                break;
            };
            let lost = hold.targets.iter().any(|&(w, t)| durable.was_lost(w, t));
            self.held -= hold.acks.len();
            for key in hold.conns {
                if self.corked.get(&key) == Some(&hold.iteration) {
                    self.corked.remove(&key);
                    if lost {
                        ready.lost.push(key);
                    } else {
                        ready.uncorked.push(key);
                    }
                }
            }
            if lost {
                ready.lost.extend(hold.acks.into_iter().map(|(key, _)| key));
            } else {
                ready.acks.extend(hold.acks);
            }
        }
        ready
    }
}
