//! MQTT 5.0 shared subscriptions, `$share/{group}/{filter}` (spec 4.8.2): each message that
//! matches a group's filter goes to one member of the group, not to all of them.
//!
//! A group is subscribed in a [`SubscriptionIndex`] of its own under its inner filter, with a
//! group id standing where a session id would: a match yields the groups, and each group then
//! picks one member, round-robin, skipping members that are offline while any is online. The
//! broker's ordinary index is untouched, and a broker with no shared subscription pays one
//! atomic load per message for this feature ([`SubscriptionIndex::is_empty`]).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use foldhash::HashMap;
use parking_lot::RwLock;
use vireo_codec::QoS;

use crate::{Recipient, Recipients, SessionId, SubscriptionIndex};

/// One member of a group: what the subscription granted, and whether it is connected.
#[derive(Debug)]
struct Member {
    recipient: Recipient,
    online: AtomicBool,
}

#[derive(Debug, Default)]
struct Group {
    members: Vec<Member>,
    /// Round-robin position; advanced under the read lock, hence atomic.
    next: AtomicUsize,
}

impl Group {
    fn position(&self, session: SessionId) -> Option<usize> {
        self.members
            .iter()
            .position(|m| m.recipient.session == session)
    }

    /// The next online member after the last one picked; the next member at all when none is
    /// online (a persistent member keeps QoS 1/2 messages until it returns).
    fn pick(&self) -> Option<Recipient> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for k in 0..n {
            let m = &self.members[(start + k) % n];
            if m.online.load(Ordering::Relaxed) {
                if k > 0 {
                    // The next pick starts after this member: skipped offline members do not
                    // make the one after them take two turns.
                    self.next.fetch_add(k, Ordering::Relaxed);
                }
                return Some(m.recipient);
            }
        }
        Some(self.members[start % n].recipient)
    }
}

#[derive(Debug, Default)]
struct Groups {
    /// `$share/{group}/{filter}` → group id.
    by_name: HashMap<Box<str>, u64>,
    by_id: HashMap<u64, Group>,
    next_id: u64,
}

/// Every shared subscription of a broker. `Sync`: shared by the workers like the index.
#[derive(Debug, Default)]
pub struct SharedSubscriptions {
    index: SubscriptionIndex,
    groups: RwLock<Groups>,
}

impl SharedSubscriptions {
    /// No shared subscription yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether there is none (the common case, checked once per message).
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Adds `r.session` to the group of `share` (the whole `$share/{group}/{filter}` string),
    /// whose inner filter is `filter`, or updates its options. Returns whether it was new. The
    /// member starts online: it subscribes from a connection.
    pub fn subscribe(&self, share: &str, filter: &str, r: Recipient) -> bool {
        let mut groups = self.groups.write();
        let groups = &mut *groups;
        let id = match groups.by_name.get(share) {
            Some(&id) => id,
            None => {
                groups.next_id += 1;
                let id = groups.next_id;
                groups.by_name.insert(share.into(), id);
                groups.by_id.insert(id, Group::default());
                self.index
                    .subscribe_with(filter, Recipient::new(SessionId(id), QoS::ExactlyOnce));
                id
            }
        };
        let Some(group) = groups.by_id.get_mut(&id) else {
            return false;
        };
        match group.position(r.session) {
            Some(i) => {
                group.members[i].recipient = r;
                false
            }
            None => {
                group.members.push(Member {
                    recipient: r,
                    online: AtomicBool::new(true),
                });
                true
            }
        }
    }

    /// Removes `session` from the group of `share`; the group goes with its last member.
    /// Returns whether it was a member.
    pub fn unsubscribe(&self, share: &str, filter: &str, session: SessionId) -> bool {
        let mut groups = self.groups.write();
        let Some(&id) = groups.by_name.get(share) else {
            return false;
        };
        let Some(group) = groups.by_id.get_mut(&id) else {
            return false;
        };
        let Some(i) = group.position(session) else {
            return false;
        };
        group.members.swap_remove(i);
        if group.members.is_empty() {
            groups.by_id.remove(&id);
            groups.by_name.remove(share);
            self.index.unsubscribe(SessionId(id), filter);
        }
        true
    }

    /// Marks `session`'s membership of `share` online or offline (it connected or left).
    pub fn set_online(&self, share: &str, session: SessionId, online: bool) {
        let groups = self.groups.read();
        if let Some(id) = groups.by_name.get(share)
            && let Some(group) = groups.by_id.get(id)
            && let Some(i) = group.position(session)
        {
            group.members[i].online.store(online, Ordering::Relaxed);
        }
    }

    /// The member of `share`'s group the next message goes to (round-robin, online first), if
    /// the group has any: where the messages owed to a member that left go.
    pub fn pick(&self, share: &str) -> Option<Recipient> {
        let groups = self.groups.read();
        let id = groups.by_name.get(share)?;
        groups.by_id.get(id)?.pick()
    }

    /// Appends to `out` one member of every group whose filter matches `topic`.
    pub fn matches(&self, topic: &str, out: &mut Recipients) {
        if self.is_empty() {
            return;
        }
        let start = out.len();
        self.index.matches(topic, out);
        if out.len() == start {
            return;
        }
        let groups = self.groups.read();
        let mut kept = start;
        for i in start..out.len() {
            let picked = groups.by_id.get(&out[i].session.0).and_then(Group::pick);
            if let Some(r) = picked {
                out[kept] = r;
                kept += 1;
            }
        }
        out.truncate(kept);
    }

    /// Shared subscriptions (memberships) in all.
    pub fn len(&self) -> usize {
        let groups = self.groups.read();
        groups.by_id.values().map(|g| g.members.len()).sum()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn member(id: u64) -> Recipient {
        Recipient::new(SessionId(id), QoS::AtLeastOnce)
    }

    fn picks(shared: &SharedSubscriptions, topic: &str, n: usize) -> Vec<u64> {
        (0..n)
            .flat_map(|_| {
                let mut out = Recipients::new();
                shared.matches(topic, &mut out);
                out.into_iter().map(|r| r.session.0).collect::<Vec<_>>()
            })
            .collect()
    }

    /// v5: one member per group per message, round-robin across members (spec 4.8.2).
    #[test]
    fn v5_shared_round_robin_one_member_per_group() {
        let shared = SharedSubscriptions::new();
        assert!(shared.is_empty());
        assert!(shared.subscribe("$share/g/a/+", "a/+", member(1)));
        assert!(shared.subscribe("$share/g/a/+", "a/+", member(2)));
        assert!(!shared.subscribe("$share/g/a/+", "a/+", member(2)));
        assert!(shared.subscribe("$share/h/a/#", "a/#", member(3)));
        let got = picks(&shared, "a/b", 4);
        // Each message: one of {1, 2} and 3.
        assert_eq!(got.iter().filter(|&&s| s == 3).count(), 4);
        let g: Vec<_> = got.iter().copied().filter(|&s| s != 3).collect();
        assert_eq!(g.len(), 4);
        assert!(g.windows(2).all(|w| w[0] != w[1]), "alternates: {g:?}");
        assert!(picks(&shared, "b", 1).is_empty());
    }

    #[test]
    fn v5_shared_prefers_online_members_and_drops_empty_groups() {
        let shared = SharedSubscriptions::new();
        for id in 1..=3 {
            shared.subscribe("$share/g/t", "t", member(id));
        }
        shared.set_online("$share/g/t", SessionId(1), false);
        shared.set_online("$share/g/t", SessionId(3), false);
        assert_eq!(picks(&shared, "t", 5), [2, 2, 2, 2, 2]);
        shared.set_online("$share/g/t", SessionId(2), false);
        assert_eq!(
            picks(&shared, "t", 3).len(),
            3,
            "offline members still take turns"
        );
        for id in 1..=3 {
            assert!(shared.unsubscribe("$share/g/t", "t", SessionId(id)));
        }
        assert!(!shared.unsubscribe("$share/g/t", "t", SessionId(1)));
        assert!(shared.is_empty());
        assert_eq!(shared.len(), 0);
        assert!(picks(&shared, "t", 1).is_empty());
    }
}
