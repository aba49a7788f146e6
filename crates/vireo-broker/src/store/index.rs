//! The log's in-memory index: where each live key's latest record is.
//!
//! Ordered, so that the records under one prefix (a session's state, its queue in sequence
//! order) are a range: a session that ends deletes its own keys without a scan of everyone's,
//! and a queue kept on disk is read back from where it stopped. No hashing also means no keys
//! a client could choose to collide.
//!
//! **Numbered keys.** A key with a NUL byte 10 bytes from its end is `prefix` (up to and with
//! the byte after the NUL) followed by a big-endian `u64`: the records of a session's queue
//! (see `records::QueueKey`; topics and client ids cannot hold NUL, so no other key looks like
//! one). There are millions of them for a client away long enough, all sharing one prefix, so
//! they are kept as a number per prefix: 20 bytes and a share of a tree node each (about 35
//! bytes), where a key of their own was 90. That is what a message the broker keeps on disk
//! only costs it in memory.

use std::collections::BTreeMap;
use std::ops::Bound;

/// Where a live record is.
#[derive(Debug, Clone, Copy)]
pub(super) struct Loc {
    pub segment: u32,
    pub offset: u32,
    pub len: u32,
}

/// Bytes a numbered key's number takes at its end, and the NUL and tag before it.
const NUMBER: usize = 8;
const NUMBERED_TAIL: usize = NUMBER + 2;

/// `key` as (prefix, number), if it is a numbered key.
fn split(key: &[u8]) -> Option<(&[u8], u64)> {
    let at = key.len().checked_sub(NUMBERED_TAIL)?;
    if key[at] != 0 {
        return None;
    }
    let (prefix, n) = key.split_at(key.len() - NUMBER);
    Some((prefix, u64::from_be_bytes(n.try_into().ok()?)))
}

fn join(prefix: &[u8], n: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + NUMBER);
    k.extend_from_slice(prefix);
    k.extend_from_slice(&n.to_be_bytes());
    k
}

#[derive(Debug, Default)]
pub(super) struct Index {
    plain: BTreeMap<Box<[u8]>, Loc>,
    numbered: BTreeMap<Box<[u8]>, BTreeMap<u64, Loc>>,
    len: usize,
}

impl Index {
    pub fn insert(&mut self, key: &[u8], loc: Loc) -> Option<Loc> {
        let old = match split(key) {
            Some((prefix, n)) => match self.numbered.get_mut(prefix) {
                Some(numbers) => numbers.insert(n, loc),
                None => {
                    self.numbered
                        .insert(prefix.into(), BTreeMap::from([(n, loc)]));
                    None
                }
            },
            None => self.plain.insert(key.into(), loc),
        };
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    pub fn remove(&mut self, key: &[u8]) -> Option<Loc> {
        let old = match split(key) {
            Some((prefix, n)) => {
                let numbers = self.numbered.get_mut(prefix)?;
                let old = numbers.remove(&n);
                if numbers.is_empty() {
                    self.numbered.remove(prefix);
                }
                old
            }
            None => self.plain.remove(key),
        };
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    pub fn get(&self, key: &[u8]) -> Option<Loc> {
        match split(key) {
            Some((prefix, n)) => self.numbered.get(prefix)?.get(&n).copied(),
            None => self.plain.get(key).copied(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Every key and where it is, in no order.
    pub fn iter(&self) -> impl Iterator<Item = (Vec<u8>, Loc)> + '_ {
        let plain = self.plain.iter().map(|(k, l)| (k.to_vec(), *l));
        let numbered = self
            .numbered
            .iter()
            .flat_map(|(p, ns)| ns.iter().map(move |(n, l)| (join(p, *n), *l)));
        plain.chain(numbered)
    }

    /// The keys that are not numbered, in byte order.
    pub fn plain_keys(&self) -> Vec<Vec<u8>> {
        self.plain.keys().map(|k| k.to_vec()).collect()
    }

    /// The prefixes of the numbered keys, in byte order.
    pub fn numbered_prefixes(&self) -> Vec<Vec<u8>> {
        self.numbered.keys().map(|k| k.to_vec()).collect()
    }

    /// Every key starting with `prefix`, in byte order.
    pub fn keys_with_prefix(&self, prefix: &[u8]) -> Vec<Vec<u8>> {
        let from = Bound::Included(prefix);
        let mut keys: Vec<Vec<u8>> = self
            .plain
            .range::<[u8], _>((from, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.to_vec())
            .collect();
        for (p, numbers) in self
            .numbered
            .range::<[u8], _>((from, Bound::Unbounded))
            .take_while(|(p, _)| p.starts_with(prefix))
        {
            keys.extend(numbers.keys().map(|n| join(p, *n)));
        }
        keys.sort_unstable();
        keys
    }

    /// The numbers under numbered-key `prefix` from `from` on, with their records' lengths,
    /// in order.
    pub fn numbers_from(&self, prefix: &[u8], from: u64) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.numbered
            .get(prefix)
            .into_iter()
            .flat_map(move |ns| ns.range(from..).map(|(n, l)| (*n, l.len)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn loc(n: u32) -> Loc {
        Loc {
            segment: 1,
            offset: n,
            len: n,
        }
    }

    #[test]
    fn numbered_and_plain_keys_read_back_alike() {
        let mut ix = Index::default();
        let q = |tag: u8, n: u64| join(&[b'q', b'c', 0, tag], n);
        assert!(ix.insert(b"cclient", loc(1)).is_none());
        assert!(ix.insert(&q(b'm', 2), loc(2)).is_none());
        assert!(ix.insert(&q(b'm', 1), loc(3)).is_none());
        assert!(ix.insert(&[b'q', b'c', 0, b'i', 0, 7], loc(4)).is_none());
        assert_eq!(ix.insert(&q(b'm', 2), loc(5)).unwrap().len, 2);
        assert_eq!(ix.len(), 4);
        assert_eq!(ix.get(&q(b'm', 2)).unwrap().len, 5);
        assert!(ix.get(&q(b'm', 3)).is_none());
        assert_eq!(
            ix.keys_with_prefix(&[b'q', b'c', 0]),
            vec![vec![b'q', b'c', 0, b'i', 0, 7], q(b'm', 1), q(b'm', 2)],
            "both kinds, in byte order"
        );
        assert_eq!(
            ix.numbers_from(&[b'q', b'c', 0, b'm'], 2)
                .collect::<Vec<_>>(),
            vec![(2, 5)]
        );
        let mut all: Vec<Vec<u8>> = ix.iter().map(|(k, _)| k).collect();
        all.sort();
        assert_eq!(all.len(), 4);
        assert!(ix.remove(&q(b'm', 1)).is_some());
        assert!(ix.remove(&q(b'm', 2)).is_some());
        assert!(ix.remove(&q(b'm', 2)).is_none());
        assert_eq!(ix.len(), 2);
        assert!(ix.numbered.is_empty(), "an empty prefix is dropped");
    }
}
