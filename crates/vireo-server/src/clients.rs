//! A worker's client id → session lookup that stores no copy of the ids.
//!
//! The table holds session slab keys only (4 bytes an entry) and hashes and compares through
//! the session's own `client_id`. A `HashMap<ByteString, usize>` cost 40 bytes a bucket plus a
//! second handle on every client id (and the shared header that handle needs): about 100
//! bytes per idle connection, now about 10.
//!
//! Invariant: every key in the table names a session in the slab whose `client_id` it was
//! inserted under. Sessions leave the table before (or as) they leave the slab.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;
use slab::Slab;

use crate::worker::SessionSlot;

#[derive(Default)]
pub(crate) struct ClientIds {
    table: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
}

impl ClientIds {
    fn hash(&self, client_id: &str) -> u64 {
        self.hasher.hash_one(client_id)
    }

    /// The slab key of the session stored under `client_id`.
    pub(crate) fn get(&self, client_id: &str, sessions: &Slab<SessionSlot>) -> Option<usize> {
        self.table
            .find(self.hash(client_id), |&k| id_is(sessions, k, client_id))
            .map(|&k| k as usize)
    }

    /// Whether a session is stored under `client_id`.
    pub(crate) fn contains(&self, client_id: &str, sessions: &Slab<SessionSlot>) -> bool {
        self.get(client_id, sessions).is_some()
    }

    /// Stores the session in slab slot `skey` under its client id, replacing any other session
    /// stored under that id. The session must already be in the slab.
    pub(crate) fn insert(&mut self, skey: usize, sessions: &Slab<SessionSlot>) {
        let Some(slot) = sessions.get(skey) else {
            return;
        };
        let Ok(key) = u32::try_from(skey) else {
            // Session ids keep 32 bits of slot (`Worker::new_session_id`); never reached.
            return;
        };
        let client_id: &str = &slot.session.client_id;
        let hash = self.hash(client_id);
        let hasher = &self.hasher;
        let rehash = |&k: &u32| {
            sessions
                .get(k as usize)
                .map_or(0, |s| hasher.hash_one(&*s.session.client_id))
        };
        match self
            .table
            .entry(hash, |&k| id_is(sessions, k, client_id), rehash)
        {
            Entry::Occupied(mut e) => *e.get_mut() = key,
            Entry::Vacant(e) => {
                e.insert(key);
            }
        }
    }

    /// Removes the entry for `client_id` if it names slab slot `skey`. Compares keys only, so
    /// the session may already have left the slab.
    pub(crate) fn remove(&mut self, client_id: &str, skey: usize) {
        let hash = self.hash(client_id);
        if let Ok(e) = self.table.find_entry(hash, |&k| k as usize == skey) {
            e.remove();
        }
    }
}

fn id_is(sessions: &Slab<SessionSlot>, key: u32, client_id: &str) -> bool {
    sessions
        .get(key as usize)
        .is_some_and(|s| &*s.session.client_id == client_id)
}
