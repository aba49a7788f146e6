//! The subscription index: which sessions a PUBLISH's topic reaches, at which QoS.
//!
//! [`SubscriptionIndex`] is shared by every worker thread. Filters live in three kinds of shard,
//! each behind its own `parking_lot` [`RwLock`] (matches take read locks, SUBSCRIBE and
//! UNSUBSCRIBE write-lock exactly one shard):
//!
//! - **exact** filters (no wildcard, most IoT subscriptions) in hash maps sharded by the hash of
//!   the whole filter, so a match is one lookup in one shard, and a tree where every topic shares
//!   its first level still spreads evenly;
//! - **wildcard** filters whose first level is literal in level tries sharded by the hash of that
//!   first level, so a match walks only the shard of the topic's first level;
//! - filters starting with `+` or `#` in one **root** trie, visited by every match except for
//!   `$`-topics, which such filters never match [MQTT-4.7.2-1].
//!
//! A shard that holds nothing is skipped without touching its lock. Every walk is iterative (a
//! deep topic cannot overflow the stack) and allocates nothing in the common case: recipients go
//! into the caller's reused [`Recipients`]. Tries drop nodes left empty by an unsubscribe, so
//! memory follows the live subscriptions, not their churn.
//!
//! Subscribers are session ids, not connections, so offline persistent sessions still match.

use std::fmt;
use std::hash::BuildHasher;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

use foldhash::HashMap;
use parking_lot::RwLock;
use smallvec::SmallVec;
use vireo_codec::{QoS, has_wildcard};

use crate::SessionId;

/// A session a message is routed to, with the QoS its subscription granted and, for MQTT 5.0,
/// its subscription options and identifier. 16 bytes, as the session id and QoS alone took
/// with padding: the v5 fields cost the match nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Recipient {
    /// The subscribing session.
    pub session: SessionId,
    /// The granted QoS of its (highest) matching subscription.
    pub qos: QoS,
    /// [`Recipient::NO_LOCAL`], [`Recipient::RETAIN_AS_PUBLISHED`], [`Recipient::MORE_IDS`].
    pub flags: u8,
    /// The v5 subscription identifier of the matching subscription; 0 for none.
    pub sub_id: u32,
}

impl Recipient {
    /// v5 No Local: not delivered to the session that published it [MQTT-3.8.3-3].
    pub const NO_LOCAL: u8 = 1;
    /// v5 Retain As Published: RETAIN goes out as it was published [MQTT-3.3.1-12].
    pub const RETAIN_AS_PUBLISHED: u8 = 2;
    /// Overlapping subscriptions with different identifiers matched: the one copy sent must
    /// carry all of them [MQTT-3.3.4-4], which the server looks up in the session (rare).
    pub const MORE_IDS: u8 = 4;
    /// Matching subscriptions with and without No Local at different QoS: the session's own
    /// messages go at the QoS of those without it, kept in [`Recipient::OWN_QOS`].
    pub const MIXED_NO_LOCAL: u8 = 8;
    /// Two bits: with [`Recipient::MIXED_NO_LOCAL`], the QoS of its own messages.
    const OWN_QOS: u8 = 0b11 << 4;

    /// The QoS at which the session gets the messages it published itself: `None` when every
    /// matching subscription has No Local.
    pub fn own_qos(&self) -> Option<QoS> {
        if self.flags & Self::MIXED_NO_LOCAL != 0 {
            QoS::try_from((self.flags & Self::OWN_QOS) >> 4).ok()
        } else if self.flags & Self::NO_LOCAL != 0 {
            None
        } else {
            Some(self.qos)
        }
    }

    /// A plain subscription at `qos`: no options, no identifier.
    pub const fn new(session: SessionId, qos: QoS) -> Self {
        Self {
            session,
            qos,
            flags: 0,
            sub_id: 0,
        }
    }

    /// Folds another matching subscription of the same session into this one: the highest
    /// QoS [MQTT-3.3.5-1]; No Local only if both have it (one subscription that wants the
    /// message is enough); Retain As Published if either has it; identifiers collected.
    pub fn merge(&mut self, other: &Recipient) {
        let own = self.own_qos().max(other.own_qos());
        let any_no_local =
            (self.flags | other.flags) & (Self::NO_LOCAL | Self::MIXED_NO_LOCAL) != 0;
        self.qos = self.qos.max(other.qos);
        let no_local = self.flags & other.flags & Self::NO_LOCAL;
        let rest =
            (self.flags | other.flags) & !(Self::NO_LOCAL | Self::MIXED_NO_LOCAL | Self::OWN_QOS);
        self.flags = no_local | rest;
        if let Some(own) = own
            && any_no_local
            && own < self.qos
        {
            // [MQTT-3.8.3-3] applies subscription by subscription: a No Local one adds
            // nothing to the session's own messages.
            self.flags |= Self::MIXED_NO_LOCAL | ((own as u8) << 4);
        }
        if self.sub_id == 0 {
            self.sub_id = other.sub_id;
        } else if other.sub_id != 0 && other.sub_id != self.sub_id {
            self.flags |= Self::MORE_IDS;
        }
    }
}

/// Recipients of one message. Inline up to 16, the common fan-out; the caller keeps one and
/// reuses it across matches so that a large fan-out allocates once, not per message.
pub type Recipients = SmallVec<[Recipient; 16]>;

/// Most shards an index gets: more would only spread a few filters over many locks.
const MAX_SHARDS: usize = 1 << 16;

/// Up to this many appended recipients, duplicates are removed by a quadratic scan: 32² / 2
/// comparisons of 16-byte entries is still cheaper than a sort.
const DEDUP_SCAN_MAX: usize = 32;

/// When everything but the largest subscriber list adds up to at most this many entries (a
/// bit per entry in a `u64`), those few are sorted and the large list is checked against them,
/// so a `#` subscriber next to a 10k fan-out does not make every match sort 10k entries.
const DEDUP_FEW_MAX: usize = 64;

/// A subscriber list builds its session → position map past this length, so that subscribing
/// and unsubscribing on a filter with a large fan-out (100k sessions) is not a linear scan.
const POSITIONS_FROM: usize = 32;

/// ...and drops it again below this one; the gap keeps a list hovering around the threshold
/// from rebuilding its map on every change.
const POSITIONS_UNTIL: usize = 16;

/// The sessions subscribed with one filter, each once.
#[derive(Debug, Default)]
struct Subscribers {
    /// Contiguous so a match copies it with one `extend_from_slice`. One inline entry: most
    /// filters have a single subscriber.
    list: SmallVec<[Recipient; 1]>,
    /// Index of each session in `list`, kept only while the list is long (see `POSITIONS_FROM`).
    positions: Option<Box<HashMap<SessionId, usize>>>,
}

impl Subscribers {
    fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    fn position(&self, session: SessionId) -> Option<usize> {
        match &self.positions {
            Some(positions) => positions.get(&session).copied(),
            None => self.list.iter().position(|r| r.session == session),
        }
    }

    /// Adds `r.session`, or updates its QoS and options. Returns whether it was new.
    fn insert(&mut self, r: Recipient) -> bool {
        let session = r.session;
        if let Some(i) = self.position(session) {
            self.list[i] = r;
            return false;
        }
        self.list.push(r);
        match &mut self.positions {
            Some(positions) => {
                positions.insert(session, self.list.len() - 1);
            }
            None if self.list.len() > POSITIONS_FROM => {
                let positions = self.list.iter().enumerate();
                self.positions = Some(Box::new(positions.map(|(i, r)| (r.session, i)).collect()));
            }
            None => {}
        }
        true
    }

    /// Removes `session`. Returns whether it was there.
    fn remove(&mut self, session: SessionId) -> bool {
        let Some(i) = self.position(session) else {
            return false;
        };
        self.list.swap_remove(i);
        if let Some(positions) = &mut self.positions {
            positions.remove(&session);
            if let Some(moved) = self.list.get(i) {
                positions.insert(moved.session, i);
            }
            if self.list.len() < POSITIONS_UNTIL {
                self.positions = None;
            }
        }
        // Give back a large fan-out's buffer once it is mostly empty (amortised O(1)).
        if self.list.len() < self.list.capacity() / 4 {
            self.list.shrink_to_fit();
        }
        true
    }

    /// Appends every subscriber to `out`, noting the list in `appended`.
    fn append_to(&self, out: &mut Recipients, appended: &mut Appended) {
        if self.list.is_empty() {
            return;
        }
        appended.lists += 1;
        if self.list.len() > appended.biggest.len() {
            appended.biggest = out.len()..out.len() + self.list.len();
        }
        out.extend_from_slice(&self.list);
    }
}

/// What one match appended to `out`: with a single list, sessions are already unique.
#[derive(Debug, Default)]
struct Appended {
    /// Non-empty subscriber lists appended.
    lists: usize,
    /// Where in `out` the longest of them went; each session appears in it once.
    biggest: Range<usize>,
}

/// One level of a wildcard trie. The path from the root spells a filter's levels.
#[derive(Debug, Default)]
struct Node {
    /// Literal next levels.
    children: HashMap<Box<str>, Node>,
    /// The `+` next level.
    plus: Option<Box<Node>>,
    /// Filters that end at this node.
    exact: Subscribers,
    /// Filters that end with a `#` right after this node: they match the topic that ends here
    /// and everything below it (`a/#` matches `a`). At a trie's root, the filter `#`.
    multi: Subscribers,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.exact.is_empty()
            && self.multi.is_empty()
            && self.children.is_empty()
            && self.plus.is_none()
    }

    /// Whether this node holds something besides one child: then it stays when that child goes.
    fn holds_more_than_one_child(&self) -> bool {
        !self.exact.is_empty()
            || !self.multi.is_empty()
            || self.children.len() + usize::from(self.plus.is_some()) > 1
    }

    fn child(&self, level: &str) -> Option<&Node> {
        if level == "+" {
            self.plus.as_deref()
        } else {
            self.children.get(level)
        }
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut Node> {
        if level == "+" {
            self.plus.as_deref_mut()
        } else {
            self.children.get_mut(level)
        }
    }

    fn child_or_insert(&mut self, level: &str) -> &mut Node {
        if level == "+" {
            self.plus.get_or_insert_with(Box::default)
        } else {
            // `entry` wants an owned key even when the level exists: one small allocation per
            // level on SUBSCRIBE, which is not the hot path.
            self.children.entry(level.into()).or_default()
        }
    }

    fn remove_child(&mut self, level: &str) {
        if level == "+" {
            self.plus = None;
        } else {
            self.children.remove(level);
        }
    }

    /// Nodes below this one (not counting itself).
    fn descendants(&self) -> usize {
        let mut count = 0;
        let mut stack: Vec<&Node> = vec![self];
        while let Some(node) = stack.pop() {
            count += node.children.len() + usize::from(node.plus.is_some());
            stack.extend(node.children.values());
            stack.extend(node.plus.as_deref());
        }
        count
    }
}

/// Splits a wildcard filter into the levels that spell its trie path and whether it ends in `#`
/// (then the subscription hangs on the node of the levels before the `#`).
fn filter_path(filter: &str) -> (Option<&str>, bool) {
    if filter == "#" {
        (None, true)
    } else if let Some(path) = filter.strip_suffix("/#") {
        (Some(path), true)
    } else {
        (Some(filter), false)
    }
}

fn levels(path: Option<&str>) -> impl Iterator<Item = &str> {
    path.into_iter().flat_map(|p| p.split('/'))
}

fn trie_insert(root: &mut Node, filter: &str, r: Recipient) -> bool {
    let (path, multi) = filter_path(filter);
    let mut node = root;
    for level in levels(path) {
        node = node.child_or_insert(level);
    }
    if multi {
        node.multi.insert(r)
    } else {
        node.exact.insert(r)
    }
}

/// Removes the subscription, then the nodes it leaves empty. Three iterative passes (remove,
/// find the cut, cut) rather than recursion, so a deep filter cannot overflow the stack.
fn trie_remove(root: &mut Node, filter: &str, session: SessionId) -> bool {
    let (path, multi) = filter_path(filter);
    let mut node = &mut *root;
    for level in levels(path) {
        match node.child_mut(level) {
            Some(child) => node = child,
            None => return false,
        }
    }
    let removed = if multi {
        node.multi.remove(session)
    } else {
        node.exact.remove(session)
    };
    if !removed || !node.is_empty() {
        return removed;
    }
    // The deepest node on the path that keeps something besides the path's next level; every
    // node below it on the path holds only that one branch down to the emptied leaf.
    let mut cut = 0;
    let mut node = &*root;
    for (depth, level) in levels(path).enumerate() {
        if node.holds_more_than_one_child() {
            cut = depth;
        }
        match node.child(level) {
            Some(child) => node = child,
            None => break,
        }
    }
    let mut node = root;
    let mut path_levels = levels(path);
    for level in path_levels.by_ref().take(cut) {
        match node.child_mut(level) {
            Some(child) => node = child,
            None => return true,
        }
    }
    if let Some(level) = path_levels.next() {
        node.remove_child(level);
    }
    true
}

/// Appends the subscribers of every filter in the trie that matches `topic`.
fn trie_collect(root: &Node, topic: &str, out: &mut Recipients, appended: &mut Appended) {
    // (node reached, the topic's levels left: `None` once the topic ends at this node).
    let mut stack: SmallVec<[(&Node, Option<&str>); 16]> = SmallVec::new();
    stack.push((root, Some(topic)));
    while let Some((node, rest)) = stack.pop() {
        node.multi.append_to(out, appended);
        let Some(rest) = rest else {
            node.exact.append_to(out, appended);
            continue;
        };
        let (level, next) = split_level(rest);
        if let Some(child) = node.children.get(level) {
            stack.push((child, next));
        }
        if let Some(plus) = node.plus.as_deref() {
            stack.push((plus, next));
        }
    }
}

/// Keeps each session once in `out[start..]`, at the highest QoS it appears with. `biggest`
/// is the range of one list in it whose sessions are unique.
fn dedup_sessions(out: &mut Recipients, start: usize, biggest: Range<usize>) {
    let len = out.len() - start;
    let kept = if len <= DEDUP_SCAN_MAX {
        dedup_by_scan(&mut out[start..])
    } else if len - biggest.len() <= DEDUP_FEW_MAX {
        dedup_few_against_big(
            &mut out[start..],
            biggest.start - start..biggest.end - start,
        )
    } else {
        dedup_by_sort(&mut out[start..])
    };
    out.truncate(start + kept);
}

/// Compacts unique sessions to the front of `tail`; returns how many.
fn dedup_by_scan(tail: &mut [Recipient]) -> usize {
    let mut kept = 0;
    for i in 0..tail.len() {
        let r = tail[i];
        match tail[..kept].iter_mut().find(|k| k.session == r.session) {
            Some(k) => k.merge(&r),
            None => {
                tail[kept] = r;
                kept += 1;
            }
        }
    }
    kept
}

/// Compacts unique sessions to the front of `tail` (reordering it); returns how many.
fn dedup_by_sort(tail: &mut [Recipient]) -> usize {
    tail.sort_unstable_by_key(|r| r.session);
    let mut kept: usize = 0;
    for i in 0..tail.len() {
        let r = tail[i];
        match kept.checked_sub(1).map(|last| &mut tail[last]) {
            Some(k) if k.session == r.session => k.merge(&r),
            _ => {
                tail[kept] = r;
                kept += 1;
            }
        }
    }
    kept
}

/// Dedups when all but the unique list at `big` are at most `DEDUP_FEW_MAX` entries: those few
/// are sorted aside, and one pass over the big list (a binary search into the few per entry)
/// folds the duplicates' QoS into it. O(big · log few), no allocation, the big list not moved
/// when it came first. Returns how many entries it keeps at the front of `tail`.
fn dedup_few_against_big(tail: &mut [Recipient], big: Range<usize>) -> usize {
    let mut few: SmallVec<[Recipient; DEDUP_FEW_MAX]> = SmallVec::new();
    few.extend_from_slice(&tail[..big.start]);
    few.extend_from_slice(&tail[big.end..]);
    let few_len = dedup_by_sort(&mut few);
    few.truncate(few_len);
    let big_len = big.len();
    tail.copy_within(big, 0);
    // Bit j: few[j] is also in the big list.
    let mut in_big = 0u64;
    for r in &mut tail[..big_len] {
        if let Ok(j) = few.binary_search_by_key(&r.session, |f| f.session) {
            r.merge(&few[j]);
            in_big |= 1 << j;
        }
    }
    let mut kept = big_len;
    for (j, r) in few.iter().enumerate() {
        if in_big & (1 << j) == 0 {
            tail[kept] = *r;
            kept += 1;
        }
    }
    kept
}

/// The first level of a topic or filter.
fn first_level(s: &str) -> &str {
    split_level(s).0
}

/// The first level of a topic and the rest after its `/`, if any. Levels are short, so a byte
/// scan (memchr for long rests): `str::split_once` was ~10% of fan-in instructions, and
/// memchr's SIMD set-up alone 5% on levels of a few bytes.
fn split_level(s: &str) -> (&str, Option<&str>) {
    let bytes = s.as_bytes();
    let slash = if bytes.len() < 32 {
        bytes.iter().position(|&b| b == b'/')
    } else {
        memchr::memchr(b'/', bytes)
    };
    match slash {
        // `/` is ASCII, so both sides of it are on char boundaries.
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    }
}

/// One shard, on its own cache lines so that readers of one shard's lock do not slow another's.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard<T> {
    /// Subscriptions held, written under the write lock and read without any lock, so that a
    /// match skips an empty shard without touching its lock.
    len: AtomicUsize,
    data: RwLock<T>,
}

impl<T> Shard<T> {
    fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }
}

/// Filters without wildcards, keyed by the whole filter string.
type ExactFilters = HashMap<Box<str>, Subscribers>;

/// A subscription came or went.
#[derive(Debug, Clone, Copy)]
enum Change {
    Added,
    Removed,
}

/// Where a filter is stored.
enum Place<'a> {
    /// No wildcard: the exact shard of the whole filter.
    Exact,
    /// Starts with `+` or `#`: the root trie.
    Root,
    /// A wildcard below a literal first level: the trie shard of that level.
    Wild(&'a str),
}

impl Place<'_> {
    fn of(filter: &str) -> Place<'_> {
        if !has_wildcard(filter) {
            return Place::Exact;
        }
        match first_level(filter) {
            "+" | "#" => Place::Root,
            first => Place::Wild(first),
        }
    }
}

/// The sharded subscription index (see the module docs). `Sync`: share it by reference or `Arc`.
pub struct SubscriptionIndex {
    /// Picks shards. Its own seed, independent of the maps' seeds, so that keys sharing a shard
    /// do not also share hash bits inside that shard's map.
    hasher: foldhash::fast::RandomState,
    /// Shard count − 1 (a power of two).
    mask: usize,
    exact: Box<[Shard<ExactFilters>]>,
    wild: Box<[Shard<Node>]>,
    root: Shard<Node>,
    /// Subscriptions in total.
    len: AtomicUsize,
}

impl fmt::Debug for SubscriptionIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionIndex")
            .field("shards", &self.exact.len())
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl Default for SubscriptionIndex {
    /// One shard per expected worker thread is plenty: 16.
    fn default() -> Self {
        Self::new(16)
    }
}

impl SubscriptionIndex {
    /// An empty index with `shards` shards of each kind, rounded up to a power of two (at least
    /// 1, at most 65,536).
    pub fn new(shards: usize) -> Self {
        let shards = shards.clamp(1, MAX_SHARDS).next_power_of_two();
        Self {
            hasher: foldhash::fast::RandomState::default(),
            mask: shards - 1,
            exact: (0..shards).map(|_| Shard::default()).collect(),
            wild: (0..shards).map(|_| Shard::default()).collect(),
            root: Shard::default(),
            len: AtomicUsize::new(0),
        }
    }

    fn shard_of(&self, key: &str) -> usize {
        if self.mask == 0 {
            return 0;
        }
        // The high half: the better-mixed bits of the hash.
        (self.hasher.hash_one(key) >> 32) as usize & self.mask
    }

    fn trie_shard(&self, place: &Place<'_>) -> &Shard<Node> {
        match place {
            Place::Wild(first) => &self.wild[self.shard_of(first)],
            _ => &self.root,
        }
    }

    /// Adds a subscription, or replaces the QoS of the one `session` has with the identical
    /// filter string. Returns `true` if it is new, `false` if it replaced one. The filter must
    /// already be valid (`vireo_codec::validate_topic_filter`); it is stored literally, so a
    /// shared subscription's `$share/{group}/` prefix is the caller's to strip.
    pub fn subscribe(&self, session: SessionId, filter: &str, qos: QoS) -> bool {
        self.subscribe_with(filter, Recipient::new(session, qos))
    }

    /// [`SubscriptionIndex::subscribe`] with v5 options and identifier: `r` is what a
    /// matching topic yields.
    pub fn subscribe_with(&self, filter: &str, r: Recipient) -> bool {
        match Place::of(filter) {
            Place::Exact => {
                let shard = &self.exact[self.shard_of(filter)];
                let mut map = shard.data.write();
                let new = match map.get_mut(filter) {
                    Some(subscribers) => subscribers.insert(r),
                    None => map.entry(filter.into()).or_default().insert(r),
                };
                if new {
                    self.count(shard, Change::Added);
                }
                new
            }
            place => {
                let shard = self.trie_shard(&place);
                let mut root = shard.data.write();
                let new = trie_insert(&mut root, filter, r);
                if new {
                    self.count(shard, Change::Added);
                }
                new
            }
        }
    }

    /// Removes the subscription of `session` whose filter is literally `filter`: no wildcard
    /// matching, so `a/#` does not remove `a/+` [MQTT-3.10.4-1]. Returns whether one existed.
    pub fn unsubscribe(&self, session: SessionId, filter: &str) -> bool {
        match Place::of(filter) {
            Place::Exact => {
                let shard = &self.exact[self.shard_of(filter)];
                let mut map = shard.data.write();
                let Some(subscribers) = map.get_mut(filter) else {
                    return false;
                };
                let removed = subscribers.remove(session);
                if subscribers.is_empty() {
                    map.remove(filter);
                }
                if removed {
                    self.count(shard, Change::Removed);
                }
                removed
            }
            place => {
                let shard = self.trie_shard(&place);
                let mut root = shard.data.write();
                let removed = trie_remove(&mut root, filter, session);
                if removed {
                    self.count(shard, Change::Removed);
                }
                removed
            }
        }
    }

    /// Updates the shard's and the total count. Called under the shard's write lock, so each
    /// subscription's increment is ordered before its decrement and no count dips below zero.
    fn count<T>(&self, shard: &Shard<T>, change: Change) {
        match change {
            Change::Added => {
                shard.len.fetch_add(1, Ordering::Release);
                self.len.fetch_add(1, Ordering::Relaxed);
            }
            Change::Removed => {
                shard.len.fetch_sub(1, Ordering::Release);
                self.len.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Appends to `out` every session with a subscription matching `topic`, each once at the
    /// highest QoS among its matching subscriptions [MQTT-3.3.5-1]. Filters starting with `+` or
    /// `#` do not match `$`-topics [MQTT-4.7.2-1]. Entries already in `out` are left alone (and
    /// not deduplicated against). Holds at most one read lock at a time.
    pub fn matches(&self, topic: &str, out: &mut Recipients) {
        let start = out.len();
        let mut appended = Appended::default();
        let exact = &self.exact[self.shard_of(topic)];
        if !exact.is_empty()
            && let Some(subscribers) = exact.data.read().get(topic)
        {
            subscribers.append_to(out, &mut appended);
        }
        let wild = &self.wild[self.shard_of(first_level(topic))];
        if !wild.is_empty() {
            trie_collect(&wild.data.read(), topic, out, &mut appended);
        }
        if !topic.starts_with('$') && !self.root.is_empty() {
            trie_collect(&self.root.data.read(), topic, out, &mut appended);
        }
        if appended.lists > 1 {
            dedup_sessions(out, start, appended.biggest);
        }
    }

    /// Subscriptions in the index.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether the index holds no subscription.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Distinct exact filters plus wildcard trie nodes (roots not counted): the index's memory
    /// footprint in entries, zero once every subscription is gone. Walks everything under read
    /// locks, one shard at a time: for tests and occasional metrics, not the hot path.
    pub fn node_count(&self) -> usize {
        let exact: usize = self.exact.iter().map(|s| s.data.read().len()).sum();
        let wild: usize = self.wild.iter().map(|s| s.data.read().descendants()).sum();
        exact + wild + self.root.data.read().descendants()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use vireo_codec::{topic_matches, validate_topic_filter, validate_topic_name};

    use super::*;

    const Q0: QoS = QoS::AtMostOnce;
    const Q1: QoS = QoS::AtLeastOnce;
    const Q2: QoS = QoS::ExactlyOnce;

    fn s(id: u64) -> SessionId {
        SessionId(id)
    }

    /// Matches, sorted by session, as (id, qos) pairs.
    fn hits(index: &SubscriptionIndex, topic: &str) -> Vec<(u64, QoS)> {
        let mut out = Recipients::new();
        index.matches(topic, &mut out);
        let mut v: Vec<_> = out.iter().map(|r| (r.session.0, r.qos)).collect();
        v.sort();
        v
    }

    fn sessions(index: &SubscriptionIndex, topic: &str) -> Vec<u64> {
        hits(index, topic).into_iter().map(|(id, _)| id).collect()
    }

    #[test]
    fn exact_filter_matches_only_its_topic() {
        let index = SubscriptionIndex::new(4);
        assert!(index.subscribe(s(1), "a/b", Q1));
        assert_eq!(hits(&index, "a/b"), [(1, Q1)]);
        assert!(hits(&index, "a").is_empty());
        assert!(hits(&index, "a/b/c").is_empty());
        assert!(hits(&index, "a/B").is_empty());
        assert!(hits(&index, "a/b/").is_empty());
    }

    /// [MQTT-4.7.1-3] `+` matches exactly one level, which may be empty.
    #[test]
    fn plus_matches_one_whole_level() {
        let index = SubscriptionIndex::new(4);
        index.subscribe(s(1), "a/+/c", Q0);
        index.subscribe(s(2), "+", Q0);
        index.subscribe(s(3), "a/+", Q0);
        assert_eq!(sessions(&index, "a/b/c"), [1]);
        assert_eq!(sessions(&index, "a//c"), [1]);
        assert!(sessions(&index, "a/b/c/d").is_empty());
        assert_eq!(sessions(&index, "a/c"), [3]);
        assert_eq!(sessions(&index, "a"), [2]);
        assert_eq!(sessions(&index, "a/"), [3]);
        assert_eq!(sessions(&index, "/"), Vec::<u64>::new());
        assert_eq!(sessions(&index, "x"), [2]);
    }

    /// [MQTT-4.7.1-2] `#` matches the parent level and any number of levels below it.
    #[test]
    fn hash_matches_parent_and_below() {
        let index = SubscriptionIndex::new(4);
        index.subscribe(s(1), "a/#", Q0);
        index.subscribe(s(2), "a/+/#", Q0);
        index.subscribe(s(3), "#", Q0);
        assert_eq!(sessions(&index, "a"), [1, 3]);
        assert_eq!(sessions(&index, "a/b"), [1, 2, 3]);
        assert_eq!(sessions(&index, "a/b/c/d"), [1, 2, 3]);
        assert_eq!(sessions(&index, "b"), [3]);
        assert_eq!(sessions(&index, "/"), [3]);
    }

    /// [MQTT-4.7.2-1] Filters starting with a wildcard do not match topics starting with `$`.
    #[test]
    fn dollar_topics_need_a_literal_first_level() {
        let index = SubscriptionIndex::new(4);
        index.subscribe(s(1), "#", Q0);
        index.subscribe(s(2), "+/monitor/Clients", Q0);
        index.subscribe(s(3), "$SYS/#", Q0);
        index.subscribe(s(4), "$SYS/monitor/+", Q0);
        index.subscribe(s(5), "$SYS/monitor/Clients", Q0);
        index.subscribe(s(6), "+/+/+", Q0);
        assert_eq!(sessions(&index, "$SYS/monitor/Clients"), [3, 4, 5]);
        assert_eq!(sessions(&index, "SYS/monitor/Clients"), [1, 2, 6]);
        assert_eq!(sessions(&index, "a/$SYS/b"), [1, 6]);
    }

    /// [MQTT-3.3.5-1] One delivery per session, at the highest QoS of its matching filters.
    #[test]
    fn overlapping_filters_deliver_once_at_highest_qos() {
        let index = SubscriptionIndex::new(4);
        index.subscribe(s(1), "a/b", Q0);
        index.subscribe(s(1), "a/+", Q2);
        index.subscribe(s(1), "#", Q1);
        index.subscribe(s(2), "a/b", Q1);
        index.subscribe(s(2), "a/#", Q0);
        assert_eq!(hits(&index, "a/b"), [(1, Q2), (2, Q1)]);
    }

    #[test]
    fn overlapping_large_fanout_dedups_by_sorting() {
        let index = SubscriptionIndex::new(2);
        for id in 0..100 {
            index.subscribe(s(id), "t/x", Q0);
            index.subscribe(s(id), "t/+", if id % 2 == 0 { Q2 } else { Q0 });
        }
        index.subscribe(s(1000), "#", Q1);
        let got = hits(&index, "t/x");
        assert_eq!(got.len(), 101);
        assert!(
            got[..100]
                .iter()
                .all(|&(id, q)| q == if id % 2 == 0 { Q2 } else { Q0 })
        );
        assert_eq!(got[100], (1000, Q1));
    }

    #[test]
    fn resubscribe_replaces_qos() {
        let index = SubscriptionIndex::new(4);
        assert!(index.subscribe(s(1), "a/+", Q0));
        assert!(!index.subscribe(s(1), "a/+", Q2));
        assert!(index.subscribe(s(1), "a/b", Q1));
        assert!(!index.subscribe(s(1), "a/b", Q0));
        assert_eq!(index.len(), 2);
        let mut out = Recipients::new();
        index.matches("a/c", &mut out);
        assert_eq!(out.as_slice(), [Recipient::new(s(1), Q2)]);
    }

    /// [MQTT-3.10.4-1] Unsubscribe compares filters character by character.
    #[test]
    fn unsubscribe_is_literal() {
        let index = SubscriptionIndex::new(4);
        index.subscribe(s(1), "a/+", Q0);
        index.subscribe(s(1), "a/b", Q0);
        assert!(!index.unsubscribe(s(1), "a/#"));
        assert!(!index.unsubscribe(s(1), "+/+"));
        assert!(!index.unsubscribe(s(2), "a/+"));
        assert_eq!(index.len(), 2);
        assert!(index.unsubscribe(s(1), "a/+"));
        assert!(!index.unsubscribe(s(1), "a/+"));
        assert_eq!(sessions(&index, "a/b"), [1]);
        assert!(sessions(&index, "a/c").is_empty());
        assert!(index.unsubscribe(s(1), "a/b"));
        assert!(index.is_empty());
    }

    #[test]
    fn unsubscribe_cleans_up_nodes() {
        let index = SubscriptionIndex::new(4);
        let filters = [
            "#",
            "+",
            "a",
            "a/b",
            "a/#",
            "a/+/c",
            "a/+/c/#",
            "+/b/+",
            "/",
            "//#",
            "a/b/c/d/e/f",
            "$SYS/#",
            "+/+/+/+/+",
        ];
        for (i, f) in filters.iter().enumerate() {
            index.subscribe(s(i as u64 % 3), f, Q1);
            index.subscribe(s(7), f, Q0);
        }
        assert!(index.node_count() > 0);
        // Remove in an order that leaves shared prefixes in place for a while.
        for f in filters.iter().rev() {
            assert!(index.unsubscribe(s(7), f));
        }
        assert!(index.node_count() > 0);
        for (i, f) in filters.iter().enumerate() {
            assert!(index.unsubscribe(s(i as u64 % 3), f), "{f}");
        }
        assert_eq!(index.node_count(), 0);
        assert!(index.is_empty());
        assert!(hits(&index, "a/b").is_empty());
    }

    #[test]
    fn partial_cleanup_keeps_siblings() {
        let index = SubscriptionIndex::new(1);
        index.subscribe(s(1), "a/b/c/+", Q0);
        index.subscribe(s(1), "a/b/x/+", Q0);
        let before = index.node_count();
        index.subscribe(s(1), "a/b/c/d/e/#", Q0);
        index.unsubscribe(s(1), "a/b/c/d/e/#");
        assert_eq!(index.node_count(), before);
        index.unsubscribe(s(1), "a/b/c/+");
        assert_eq!(sessions(&index, "a/b/x/y"), [1]);
        // a, b, x, + remain.
        assert_eq!(index.node_count(), 4);
    }

    /// A filter with a large fan-out: subscribe, resubscribe and unsubscribe stay correct past
    /// the positions map threshold and back below it.
    #[test]
    fn large_fanout_subscriber_list() {
        let index = SubscriptionIndex::new(4);
        let n = 5_000;
        for id in 0..n {
            assert!(index.subscribe(s(id), "fan/out", Q0));
            assert!(index.subscribe(s(id), "fan/+", Q0));
        }
        assert!(!index.subscribe(s(17), "fan/out", Q2));
        for id in (0..n).filter(|id| id % 3 != 0) {
            assert!(index.unsubscribe(s(id), "fan/out"));
            assert!(index.unsubscribe(s(id), "fan/+"));
        }
        let got = hits(&index, "fan/out");
        let want: Vec<_> = (0..n).filter(|id| id % 3 == 0).map(|id| (id, Q0)).collect();
        assert_eq!(got, want);
        for id in (0..n).filter(|id| id % 3 == 0) {
            assert!(index.unsubscribe(s(id), "fan/out"));
            assert!(index.unsubscribe(s(id), "fan/+"));
        }
        assert!(!index.unsubscribe(s(17), "fan/out"));
        assert_eq!(index.node_count(), 0);
    }

    #[test]
    fn matches_appends_after_existing_entries() {
        let index = SubscriptionIndex::new(4);
        index.subscribe(s(1), "a/b", Q1);
        index.subscribe(s(1), "a/+", Q0);
        let mut out = Recipients::new();
        out.push(Recipient::new(s(1), Q0));
        index.matches("a/b", &mut out);
        assert_eq!(
            out.as_slice(),
            [Recipient::new(s(1), Q0), Recipient::new(s(1), Q1)]
        );
    }

    #[test]
    fn shard_counts_round_up_to_powers_of_two() {
        assert_eq!(SubscriptionIndex::new(0).exact.len(), 1);
        assert_eq!(SubscriptionIndex::new(1).exact.len(), 1);
        assert_eq!(SubscriptionIndex::new(3).wild.len(), 4);
        assert_eq!(SubscriptionIndex::new(16).exact.len(), 16);
    }

    #[test]
    fn index_is_sync_and_shared_by_threads() {
        fn assert_sync<T: Send + Sync>() {}
        assert_sync::<SubscriptionIndex>();
        let index = SubscriptionIndex::new(8);
        std::thread::scope(|scope| {
            for t in 0..4u64 {
                let index = &index;
                scope.spawn(move || {
                    let mut out = Recipients::new();
                    for i in 0..500u64 {
                        let filter = format!("t{}/{}/+", i % 7, i);
                        index.subscribe(s(t * 1000 + i), &filter, Q1);
                        out.clear();
                        index.matches(&format!("t{}/{}/x", i % 7, i), &mut out);
                        assert!(out.iter().any(|r| r.session == s(t * 1000 + i)));
                        if i % 2 == 0 {
                            assert!(index.unsubscribe(s(t * 1000 + i), &filter));
                        }
                    }
                });
            }
        });
        assert_eq!(index.len(), 4 * 250);
    }

    const LEVELS: &[&str] = &["a", "b", "", "$s", "+", "#"];

    fn filter_strategy() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(LEVELS), 1..5)
            .prop_map(|levels| levels.join("/"))
            .prop_filter("valid filter", |f| validate_topic_filter(f).is_ok())
    }

    fn topic_strategy() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(&LEVELS[..4]), 1..5)
            .prop_map(|levels| levels.join("/"))
            .prop_filter("valid topic", |t| validate_topic_name(t).is_ok())
    }

    #[derive(Debug, Clone)]
    enum Op {
        Sub(u64, String, QoS),
        Unsub(u64, String),
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        let qos = prop::sample::select(&[Q0, Q1, Q2][..]);
        prop_oneof![
            3 => (0..4u64, filter_strategy(), qos).prop_map(|(id, f, q)| Op::Sub(id, f, q)),
            1 => (0..4u64, filter_strategy()).prop_map(|(id, f)| Op::Unsub(id, f)),
        ]
    }

    /// Lists of unique sessions, as matches append them; ids from a small range so they overlap.
    fn lists_strategy() -> impl Strategy<Value = Vec<BTreeMap<u64, u8>>> {
        let list = prop::collection::btree_map(0..300u64, 0..3u8, 0..120);
        prop::collection::vec(list, 1..5)
    }

    proptest! {
        /// Every dedup path (scan, few against big wherever it sits, sort) keeps each session
        /// once at its highest QoS and leaves earlier entries alone.
        #[test]
        fn dedup_keeps_each_session_once_at_highest_qos(lists in lists_strategy()) {
            let qos = |q: u8| QoS::try_from(q).unwrap();
            let mut out = Recipients::new();
            out.push(Recipient::new(s(9999), Q0));
            let start = out.len();
            let mut biggest = start..start;
            let mut want: BTreeMap<u64, QoS> = BTreeMap::new();
            for list in &lists {
                if list.len() > biggest.len() {
                    biggest = out.len()..out.len() + list.len();
                }
                for (&id, &q) in list {
                    out.push(Recipient::new(s(id), qos(q)));
                    let e = want.entry(id).or_insert(qos(q));
                    *e = (*e).max(qos(q));
                }
            }
            dedup_sessions(&mut out, start, biggest);
            prop_assert_eq!(out[0], Recipient::new(s(9999), Q0));
            let mut got: Vec<_> = out[start..].iter().map(|r| (r.session.0, r.qos)).collect();
            got.sort();
            prop_assert_eq!(got, want.into_iter().collect::<Vec<_>>());
        }

        #[test]
        fn matches_agree_with_naive_scan(
            ops in prop::collection::vec(op_strategy(), 0..40),
            topics in prop::collection::vec(topic_strategy(), 1..10),
        ) {
            let indexes = [SubscriptionIndex::new(1), SubscriptionIndex::new(4)];
            let mut model: BTreeMap<(u64, String), QoS> = BTreeMap::new();
            for op in &ops {
                match op {
                    Op::Sub(id, f, q) => {
                        let new = model.insert((*id, f.clone()), *q).is_none();
                        for index in &indexes {
                            prop_assert_eq!(index.subscribe(s(*id), f, *q), new);
                        }
                    }
                    Op::Unsub(id, f) => {
                        let existed = model.remove(&(*id, f.clone())).is_some();
                        for index in &indexes {
                            prop_assert_eq!(index.unsubscribe(s(*id), f), existed);
                        }
                    }
                }
            }
            for topic in &topics {
                let mut want: BTreeMap<u64, QoS> = BTreeMap::new();
                for ((id, f), q) in &model {
                    if topic_matches(f, topic) {
                        let e = want.entry(*id).or_insert(*q);
                        *e = (*e).max(*q);
                    }
                }
                let want: Vec<_> = want.into_iter().collect();
                for index in &indexes {
                    prop_assert_eq!(&hits(index, topic), &want, "topic {:?}", topic);
                }
            }
            for index in &indexes {
                prop_assert_eq!(index.len(), model.len());
                for (id, f) in model.keys() {
                    prop_assert!(index.unsubscribe(s(*id), f));
                }
                prop_assert_eq!(index.node_count(), 0);
                prop_assert!(index.is_empty());
            }
        }
    }
}
