//! Retained messages: the last message with RETAIN set on each topic, handed to every new
//! subscription whose filter matches that topic.
//!
//! [`RetainedStore`] is a topic-level trie, so a new subscription's filter walks only the branches
//! it can match (`a/+/c` looks at the children of `a`, `sensors/#` at the subtree under
//! `sensors`), never the whole store. Deleting a message prunes the nodes it leaves empty. Walks
//! are iterative, so a deep topic cannot overflow the stack.
//!
//! The store is not locked inside: the server wraps it in one `parking_lot::RwLock` (PUBLISH with
//! RETAIN writes, SUBSCRIBE reads; both are rare next to plain PUBLISH).

use std::sync::Arc;

use std::collections::BTreeMap;
use std::ops::Bound;

use smallvec::SmallVec;

use crate::Message;

/// What [`RetainedStore::set`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetainOutcome {
    /// The topic had no retained message; now it has this one.
    Stored,
    /// This message replaced the topic's previous one.
    Replaced,
    /// The empty payload removed the topic's retained message.
    Deleted,
    /// The empty payload found no retained message to remove.
    NotFound,
    /// Not stored: it would put the store over its message or byte limit (or its topic is empty,
    /// an unresolved v5 topic alias). A message it would have replaced stays.
    Refused,
}

/// One topic level. The path from the root spells a topic's levels. Children are ordered, so
/// that a walk can stop anywhere and go on later from the topic it stopped at (see
/// [`RetainedStore::matching_after`]).
#[derive(Debug, Default)]
struct Node {
    children: BTreeMap<Box<str>, Node>,
    /// The retained message whose topic ends here.
    message: Option<Arc<Message>>,
    /// When it was set, in [`RetainedStore::seq`]'s count.
    set_at: u64,
}

impl Node {
    /// Nodes below this one (not counting itself).
    fn descendants(&self) -> usize {
        let mut count = 0;
        let mut stack: Vec<&Node> = vec![self];
        while let Some(node) = stack.pop() {
            count += node.children.len();
            stack.extend(node.children.values());
        }
        count
    }
}

/// The retained messages, bounded in count and bytes (see the module docs).
#[derive(Debug)]
pub struct RetainedStore {
    root: Node,
    len: usize,
    /// Sum of [`Message::weight`] over the stored messages.
    bytes: usize,
    /// Every retained message is a publisher-chosen allocation that outlives its connection:
    /// both limits keep that growth bounded.
    max_messages: usize,
    max_bytes: usize,
    /// Messages set so far (see [`RetainedStore::seq`]).
    seq: u64,
}

impl RetainedStore {
    /// An empty store that holds at most `max_messages` messages of `max_bytes` bytes in all.
    pub fn new(max_messages: usize, max_bytes: usize) -> Self {
        Self {
            root: Node::default(),
            len: 0,
            bytes: 0,
            max_messages,
            max_bytes,
            seq: 0,
        }
    }

    /// Stores `msg` as its topic's retained message, replacing any previous one [MQTT-3.3.1-5]
    /// [MQTT-3.3.1-7]. An empty payload removes the topic's message and is itself never stored
    /// [MQTT-3.3.1-10] [MQTT-3.3.1-11]. A message for a new topic that would take the store over
    /// `max_messages` or `max_bytes` is [`RetainOutcome::Refused`]; so is a replacement that would
    /// take it over `max_bytes`, which leaves the previous message in place.
    pub fn set(&mut self, msg: Arc<Message>) -> RetainOutcome {
        let topic = msg.topic.as_str();
        if topic.is_empty() {
            return RetainOutcome::Refused;
        }
        if msg.payload.is_empty() {
            return match self.remove(topic) {
                Some(_) => RetainOutcome::Deleted,
                None => RetainOutcome::NotFound,
            };
        }
        let weight = msg.weight();
        match self.get(topic).map(|old| old.weight()) {
            Some(old) => {
                let bytes = self.bytes - old + weight;
                if bytes > self.max_bytes {
                    return RetainOutcome::Refused;
                }
                self.seq += 1;
                let seq = self.seq;
                let node = self.slot(topic);
                node.message = Some(msg);
                node.set_at = seq;
                self.bytes = bytes;
                RetainOutcome::Replaced
            }
            None => {
                let bytes = self.bytes.saturating_add(weight);
                if self.len >= self.max_messages || bytes > self.max_bytes {
                    return RetainOutcome::Refused;
                }
                self.seq += 1;
                let seq = self.seq;
                let node = self.slot(topic);
                node.message = Some(msg);
                node.set_at = seq;
                self.bytes = bytes;
                self.len += 1;
                RetainOutcome::Stored
            }
        }
    }

    /// The retained message of exactly `topic`.
    pub fn get(&self, topic: &str) -> Option<&Arc<Message>> {
        let mut node = &self.root;
        for level in topic.split('/') {
            node = node.children.get(level)?;
        }
        node.message.as_ref()
    }

    /// Removes and returns the retained message of exactly `topic` (for an empty payload, or a
    /// v5 message whose expiry passed), pruning the nodes it leaves empty.
    pub fn remove(&mut self, topic: &str) -> Option<Arc<Message>> {
        let mut node = &mut self.root;
        for level in topic.split('/') {
            node = node.children.get_mut(level)?;
        }
        let removed = node.message.take()?;
        let leaf_empty = node.children.is_empty();
        self.len -= 1;
        self.bytes -= removed.weight();
        if leaf_empty {
            self.prune(topic);
        }
        Some(removed)
    }

    /// Removes `msg` if it is still its topic's retained message (the same allocation, not a
    /// newer one): how an expired v5 message leaves the store when a subscriber finds it
    /// [MQTT-3.3.2-5]. Returns whether it was removed.
    pub fn remove_if_current(&mut self, msg: &Arc<Message>) -> bool {
        let current = self.get(&msg.topic).is_some_and(|m| Arc::ptr_eq(m, msg));
        current && self.remove(&msg.topic).is_some()
    }

    /// Cuts the branch down to `topic`'s node, now empty, at the deepest node on the path that
    /// holds something else (the root at the latest).
    fn prune(&mut self, topic: &str) {
        let mut cut = 0;
        let mut node = &self.root;
        for (depth, level) in topic.split('/').enumerate() {
            if node.message.is_some() || node.children.len() > 1 {
                cut = depth;
            }
            match node.children.get(level) {
                Some(child) => node = child,
                None => return,
            }
        }
        let mut node = &mut self.root;
        let mut levels = topic.split('/');
        for level in levels.by_ref().take(cut) {
            match node.children.get_mut(level) {
                Some(child) => node = child,
                None => return,
            }
        }
        if let Some(level) = levels.next() {
            node.children.remove(level);
        }
    }

    /// How many messages were set so far: a walk that passes this as `until` to
    /// [`RetainedStore::matching_after`] skips those set after it.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The node of `topic`, created if need be.
    fn slot(&mut self, topic: &str) -> &mut Node {
        let mut node = &mut self.root;
        for level in topic.split('/') {
            // `entry` wants an owned key even when the level exists; retained PUBLISH is rare.
            node = node.children.entry(level.into()).or_default();
        }
        node
    }

    /// Appends the retained messages whose topic matches `filter` [MQTT-3.3.1-6], at most
    /// `limit` of them: the walk stops there, so a `#` over a large store costs what the caller
    /// can take, not the whole store (under the store's read lock). A filter starting with `+`
    /// or `#` does not match topics starting with `$` [MQTT-4.7.2-1]. The filter must be
    /// valid. The messages come in the store's order (see [`RetainedStore::matching_after`]).
    pub fn matching(&self, filter: &str, out: &mut Vec<Arc<Message>>, limit: usize) {
        self.matching_after(filter, None, u64::MAX, out, limit);
    }

    /// [`RetainedStore::matching`] from where an earlier walk stopped: only topics after
    /// `after` (the last topic it took) in the store's order, which compares topics level by
    /// level, and only messages set by `until` (a [`RetainedStore::seq`]). Returns whether
    /// the walk may have more. A subscriber can so take a large store a batch at a time as its
    /// connection drains, each batch a short walk under the lock, as of when it subscribed:
    /// what is set later reaches it live (its subscription is in the index by then), and a
    /// message it replaced is gone, so none is sent twice and none is missed.
    pub fn matching_after(
        &self,
        filter: &str,
        after: Option<&str>,
        until: u64,
        out: &mut Vec<Arc<Message>>,
        limit: usize,
    ) -> bool {
        let end = out.len().saturating_add(limit);
        let after: SmallVec<[&str; 8]> = after.map(|t| t.split('/').collect()).unwrap_or_default();
        // Each entry: a node, the filter's levels left (`None` once it ended there), its
        // depth, and whether its path is a prefix of `after` (then it and its children up to
        // `after`'s are behind the cursor).
        struct Entry<'a> {
            node: &'a Node,
            rest: Option<&'a str>,
            depth: usize,
            on_path: bool,
        }
        let mut stack: SmallVec<[Entry<'_>; 16]> = SmallVec::new();
        stack.push(Entry {
            node: &self.root,
            rest: Some(filter),
            depth: 0,
            on_path: !after.is_empty(),
        });
        while let Some(e) = stack.pop() {
            if out.len() >= end {
                return true;
            }
            // Its own message: behind the cursor while on its path.
            let own = |out: &mut Vec<Arc<Message>>| {
                if !e.on_path && e.node.set_at <= until {
                    out.extend(e.node.message.iter().cloned());
                }
            };
            let Some(rest) = e.rest else {
                own(out);
                continue;
            };
            let (level, next) = match rest.split_once('/') {
                Some((level, next)) => (level, Some(next)),
                None => (rest, None),
            };
            let at_root = e.depth == 0;
            let (child_rest, only) = match level {
                // The parent level too: `a/#` matches `a`.
                "#" => {
                    own(out);
                    (Some("#"), None)
                }
                "+" => (next, None),
                literal => (next, Some(literal)),
            };
            // The children not behind the cursor: from its level at this depth on.
            let floor = if e.on_path {
                after.get(e.depth).copied()
            } else {
                None
            };
            let from = match (only, floor) {
                (Some(l), Some(f)) if l < f => continue,
                (Some(l), _) => Bound::Included(l),
                (None, Some(f)) => Bound::Included(f),
                (None, None) => Bound::Unbounded,
            };
            let to = match only {
                Some(l) => Bound::Included(l),
                None => Bound::Unbounded,
            };
            let children = e.node.children.range::<str, _>((from, to)).rev();
            for (name, child) in children {
                if only.is_none() && at_root && name.starts_with('$') {
                    continue; // [MQTT-4.7.2-1]
                }
                stack.push(Entry {
                    node: child,
                    rest: child_rest,
                    depth: e.depth + 1,
                    on_path: floor == Some(&**name),
                });
            }
        }
        false
    }

    /// Retained messages stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes the stored messages weigh ([`Message::weight`]).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether no message is retained.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Trie nodes (the root not counted): zero once every message is gone. O(nodes).
    pub fn node_count(&self) -> usize {
        self.root.descendants()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use vireo_codec::{
        Bytes, QoS, TopicName, topic_matches, validate_topic_filter, validate_topic_name,
    };

    use super::*;

    fn msg(topic: &str, payload: &str) -> Arc<Message> {
        Arc::new(Message::new(
            TopicName::try_from(topic).unwrap(),
            Bytes::copy_from_slice(payload.as_bytes()),
            QoS::AtLeastOnce,
            true,
        ))
    }

    fn big() -> RetainedStore {
        RetainedStore::new(1_000, 1 << 20)
    }

    /// A limit stops the walk: what comes back is the unlimited result's first `limit`
    /// messages, in the same order, for every limit.
    #[test]
    fn matching_stops_at_its_limit() {
        let mut store = big();
        for t in ["a", "a/b", "a/c", "a/b/c", "x/y", "$SYS/z"] {
            store.set(msg(t, "p"));
        }
        for filter in ["#", "a/#", "+/+", "a/+/c"] {
            let mut all = Vec::new();
            store.matching(filter, &mut all, usize::MAX);
            for limit in 0..=all.len() + 1 {
                let mut some = vec![msg("pre", "existing")];
                store.matching(filter, &mut some, limit);
                assert_eq!(some.len(), 1 + limit.min(all.len()), "{filter} {limit}");
                let got: Vec<_> = some[1..].iter().map(|m| m.topic.to_string()).collect();
                let want: Vec<_> = all[..limit.min(all.len())]
                    .iter()
                    .map(|m| m.topic.to_string())
                    .collect();
                assert_eq!(got, want, "{filter} {limit}");
            }
        }
    }

    /// A walk resumed from where it stopped, a batch at a time, gives every match once, in
    /// the same order as one walk; a message set behind the cursor meanwhile is not in it, one
    /// set ahead of it is.
    #[test]
    fn matching_after_resumes_where_it_stopped() {
        let mut store = big();
        let topics = [
            "a", "a/b", "a/c", "a/b/c", "a-c", "b", "x/y", "x/y/z", "$SYS/z", "a/$x", "c/a/c",
        ];
        for t in topics {
            store.set(msg(t, "p"));
        }
        for filter in ["#", "a/#", "+/+", "a/+/c", "+/a/#", "x/y", "$SYS/#", "+"] {
            let mut all = Vec::new();
            assert!(!store.matching_after(filter, None, u64::MAX, &mut all, usize::MAX));
            for batch in 1..4 {
                let mut got: Vec<Arc<Message>> = Vec::new();
                let mut after: Option<String> = None;
                for _ in 0..100 {
                    let mut b = Vec::new();
                    let more =
                        store.matching_after(filter, after.as_deref(), u64::MAX, &mut b, batch);
                    if let Some(last) = b.last() {
                        after = Some(last.topic.to_string());
                    }
                    got.extend(b);
                    if !more {
                        break;
                    }
                }
                let names = |v: &[Arc<Message>]| -> Vec<String> {
                    v.iter().map(|m| m.topic.to_string()).collect()
                };
                assert_eq!(names(&got), names(&all), "{filter} in batches of {batch}");
            }
        }
        let until = store.seq();
        let mut first = Vec::new();
        store.matching_after("#", None, until, &mut first, 3);
        let cursor = first.last().unwrap().topic.to_string();
        assert_eq!(cursor, "a/b", "level-wise order: a, a/$x, a/b");
        // Set after the walk began: not in it, wherever they are (they go out live).
        store.set(msg("a/a", "behind"));
        store.set(msg("a/d", "ahead"));
        store.set(msg("x/y", "replaced"));
        let mut rest = Vec::new();
        store.matching_after("#", Some(&cursor), until, &mut rest, usize::MAX);
        let rest: Vec<String> = rest.iter().map(|m| m.topic.to_string()).collect();
        assert_eq!(rest, ["a/b/c", "a/c", "a-c", "b", "c/a/c", "x/y/z"]);
    }

    /// An expired message leaves the store only if it is still the topic's message: a newer
    /// one published meanwhile stays.
    #[test]
    fn remove_if_current_spares_a_newer_message() {
        let mut store = big();
        let old = msg("a/b", "old");
        store.set(Arc::clone(&old));
        assert!(store.remove_if_current(&old));
        assert_eq!(store.len(), 0);
        assert!(!store.remove_if_current(&old), "already gone");
        store.set(Arc::clone(&old));
        store.set(msg("a/b", "new"));
        assert!(!store.remove_if_current(&old));
        assert_eq!(&store.get("a/b").unwrap().payload[..], b"new");
    }

    /// Topics of the messages matching `filter`, sorted.
    fn topics(store: &RetainedStore, filter: &str) -> Vec<String> {
        let mut out = Vec::new();
        store.matching(filter, &mut out, usize::MAX);
        let mut v: Vec<_> = out.iter().map(|m| m.topic.to_string()).collect();
        v.sort();
        v
    }

    /// [MQTT-3.3.1-5] A RETAIN message is stored for its topic.
    #[test]
    fn stores_a_message_per_topic() {
        let mut store = big();
        assert_eq!(store.set(msg("a/b", "1")), RetainOutcome::Stored);
        assert_eq!(store.set(msg("a", "22")), RetainOutcome::Stored);
        assert_eq!(store.len(), 2);
        assert_eq!(store.bytes(), 3 + 1 + 1 + 2);
        assert_eq!(&store.get("a/b").unwrap().payload[..], b"1");
        assert!(store.get("a/c").is_none());
    }

    /// [MQTT-3.3.1-5] [MQTT-3.3.1-7] A new retained message replaces the topic's previous one.
    #[test]
    fn replaces_the_previous_message() {
        let mut store = big();
        store.set(msg("a/b", "old"));
        assert_eq!(store.set(msg("a/b", "newer")), RetainOutcome::Replaced);
        assert_eq!(store.len(), 1);
        assert_eq!(store.bytes(), 3 + 5);
        assert_eq!(&store.get("a/b").unwrap().payload[..], b"newer");
    }

    /// [MQTT-3.3.1-10] [MQTT-3.3.1-11] An empty payload removes the retained message and is not
    /// stored itself.
    #[test]
    fn empty_payload_deletes_and_is_not_stored() {
        let mut store = big();
        assert_eq!(store.set(msg("a/b", "")), RetainOutcome::NotFound);
        assert!(store.is_empty());
        assert_eq!(store.node_count(), 0);
        store.set(msg("a/b", "x"));
        assert_eq!(store.set(msg("a/b", "")), RetainOutcome::Deleted);
        assert!(store.is_empty());
        assert_eq!(store.bytes(), 0);
        assert!(topics(&store, "#").is_empty());
        assert_eq!(store.set(msg("a/b", "")), RetainOutcome::NotFound);
    }

    #[test]
    fn delete_prunes_empty_nodes_only() {
        let mut store = big();
        store.set(msg("a/b/c/d", "1"));
        store.set(msg("a/b", "2"));
        store.set(msg("a/x/y", "3"));
        assert_eq!(store.node_count(), 6);
        store.set(msg("a/b/c/d", ""));
        assert_eq!(store.node_count(), 4);
        store.set(msg("a/b", ""));
        assert_eq!(store.node_count(), 3);
        assert_eq!(topics(&store, "#"), ["a/x/y"]);
        assert_eq!(store.remove("a/x/y").unwrap().topic.as_str(), "a/x/y");
        assert_eq!(store.node_count(), 0);
        assert!(store.remove("a/x/y").is_none());
    }

    /// A new topic over either limit is refused; a replacement only needs the byte total to fit.
    #[test]
    fn limits_refuse_new_topics() {
        let mut store = RetainedStore::new(2, 20);
        assert_eq!(store.set(msg("a", "123456789")), RetainOutcome::Stored); // 10
        assert_eq!(store.set(msg("b", "12345678")), RetainOutcome::Stored); // 9
        assert_eq!(store.set(msg("c", "1")), RetainOutcome::Refused); // count
        assert_eq!(store.node_count(), 2, "a refused topic leaves no node");
        assert_eq!(store.set(msg("b", "123456789")), RetainOutcome::Replaced); // 20
        assert_eq!(store.set(msg("b", "1234567890")), RetainOutcome::Refused); // 21 bytes
        assert_eq!(&store.get("b").unwrap().payload[..], b"123456789");
        assert_eq!(store.bytes(), 20);
        store.set(msg("a", ""));
        assert_eq!(store.set(msg("c", "1234567890123")), RetainOutcome::Refused); // 24 bytes
        assert_eq!(store.set(msg("c", "123456789")), RetainOutcome::Stored);
        assert_eq!((store.len(), store.bytes()), (2, 20));
        assert_eq!(
            RetainedStore::new(0, 100).set(msg("a", "1")),
            RetainOutcome::Refused
        );
    }

    /// [MQTT-3.3.1-6] A new subscription receives the retained messages its filter matches.
    #[test]
    fn wildcards_walk_matching_branches() {
        let mut store = big();
        for t in ["a", "a/b", "a/b/c", "a/x/c", "a//c", "b/b/c", "/", "/c"] {
            store.set(msg(t, "v"));
        }
        assert_eq!(topics(&store, "a/b"), ["a/b"]);
        assert_eq!(topics(&store, "a/+/c"), ["a//c", "a/b/c", "a/x/c"]);
        assert_eq!(topics(&store, "+/b/c"), ["a/b/c", "b/b/c"]);
        assert_eq!(
            topics(&store, "a/#"),
            ["a", "a//c", "a/b", "a/b/c", "a/x/c"]
        );
        assert_eq!(topics(&store, "a/+"), ["a/b"]);
        assert_eq!(topics(&store, "+"), ["a"]);
        assert_eq!(topics(&store, "+/+"), ["/", "/c", "a/b"]);
        assert_eq!(topics(&store, "/#"), ["/", "/c"]);
        assert_eq!(topics(&store, "#").len(), 8);
        assert!(topics(&store, "a/b/c/d").is_empty());
        assert!(topics(&store, "z/#").is_empty());
    }

    /// [MQTT-4.7.2-1] Leading wildcards do not match `$` topics; `$SYS/#` does.
    #[test]
    fn dollar_topics_need_a_literal_first_level() {
        let mut store = big();
        store.set(msg("$SYS/broker/uptime", "1"));
        store.set(msg("a/$SYS", "2"));
        assert_eq!(topics(&store, "#"), ["a/$SYS"]);
        assert_eq!(topics(&store, "+/broker/uptime"), Vec::<String>::new());
        assert_eq!(topics(&store, "+/+"), ["a/$SYS"]);
        assert_eq!(topics(&store, "$SYS/#"), ["$SYS/broker/uptime"]);
        assert_eq!(topics(&store, "$SYS/+/uptime"), ["$SYS/broker/uptime"]);
        assert_eq!(topics(&store, "a/+"), ["a/$SYS"]);
    }

    const LEVELS: &[&str] = &["a", "b", "", "$s", "+", "#"];

    fn joined(levels: &'static [&'static str]) -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(levels), 1..5).prop_map(|l| l.join("/"))
    }

    proptest! {
        #[test]
        fn matching_agrees_with_naive_scan(
            sets in prop::collection::vec(
                (joined(&LEVELS[..4]).prop_filter("topic", |t| validate_topic_name(t).is_ok()),
                 "[xy]{0,2}"),
                0..40),
            filters in prop::collection::vec(
                joined(LEVELS).prop_filter("filter", |f| validate_topic_filter(f).is_ok()),
                1..10),
        ) {
            let mut store = RetainedStore::new(usize::MAX, usize::MAX);
            let mut model: BTreeMap<String, String> = BTreeMap::new();
            for (topic, payload) in &sets {
                let outcome = store.set(msg(topic, payload));
                let want = match (payload.is_empty(), model.contains_key(topic)) {
                    (true, true) => RetainOutcome::Deleted,
                    (true, false) => RetainOutcome::NotFound,
                    (false, true) => RetainOutcome::Replaced,
                    (false, false) => RetainOutcome::Stored,
                };
                prop_assert_eq!(outcome, want);
                if payload.is_empty() {
                    model.remove(topic);
                } else {
                    model.insert(topic.clone(), payload.clone());
                }
            }
            prop_assert_eq!(store.len(), model.len());
            let bytes: usize = model.iter().map(|(t, p)| t.len() + p.len()).sum();
            prop_assert_eq!(store.bytes(), bytes);
            for filter in &filters {
                let want: Vec<_> = model.keys().filter(|t| topic_matches(filter, t)).cloned().collect();
                prop_assert_eq!(topics(&store, filter), want, "filter {:?}", filter);
            }
            for topic in model.keys() {
                prop_assert!(store.remove(topic).is_some());
            }
            prop_assert_eq!(store.node_count(), 0);
            prop_assert_eq!(store.bytes(), 0);
        }
    }
}
