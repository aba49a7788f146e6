//! Per-source-address connection limits: how many connections one IP address may hold open
//! (`max_connections_per_ip`) and how fast it may open new ones (`max_connection_rate_per_ip`,
//! a token bucket holding one second's worth).
//!
//! Shared by every worker (each accepts on its own SO_REUSEPORT listener, so one address's
//! connections land on all of them): the table is sharded by address behind small locks,
//! taken once at accept and once at close, never on the data path. A refused connection is
//! closed at once, before its CONNECT is read: a flood costs the broker an accept and a close
//! per attempt, and nothing else.
//!
//! Memory: an address has an entry while it holds connections, or while its bucket is
//! refilling after recent connects; others are pruned when a shard grows, so the table is
//! bounded by the connections open plus the addresses seen in the last second.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use std::sync::atomic::{AtomicU32, Ordering};

use parking_lot::Mutex;

const SHARDS: usize = 16;

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The address holds `max_connections_per_ip` already.
    TooMany,
    /// The address opened `max_connection_rate_per_ip` connections within the last second.
    TooFast,
}

#[derive(Debug)]
struct Entry {
    open: u32,
    tokens: f64,
    last: Instant,
    /// A refusal was logged since the last accepted connection: say it once per burst.
    logged: bool,
}

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<IpAddr, Entry>,
    /// Prune when the map grows past this (doubles with what survives a prune), or when it
    /// holds more than a few entries and a second has passed since the last prune.
    prune_at: usize,
    pruned: Option<Instant>,
}

/// The limits and the table. The limits change on SIGHUP (`set_limits`); while both are
/// off (0) nothing is counted, so a connection let in then is not counted later either.
#[derive(Debug)]
pub(crate) struct PerIp {
    max_open: AtomicU32,
    rate: AtomicU32,
    shards: Box<[Mutex<Shard>]>,
}

impl PerIp {
    pub(crate) fn new(max_open: u32, rate: u32) -> Self {
        Self {
            max_open: AtomicU32::new(max_open),
            rate: AtomicU32::new(rate),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }

    /// Whether either limit is set: `admit` and `release` are called only then.
    pub(crate) fn is_on(&self) -> bool {
        self.max_open.load(Ordering::Relaxed) > 0 || self.rate.load(Ordering::Relaxed) > 0
    }

    /// New limits, for the connections that come from now on. Turned off, the table is
    /// emptied: connections then closing are not released (nothing is while off), and counts
    /// kept from before would refuse addresses wrongly were the limits turned on again. Turned
    /// on, counting starts from the connections that come next.
    pub(crate) fn set_limits(&self, max_open: u32, rate: u32) {
        self.max_open.store(max_open, Ordering::Relaxed);
        self.rate.store(rate, Ordering::Relaxed);
        if max_open == 0 && rate == 0 {
            for shard in self.shards.iter() {
                shard.lock().map.clear();
            }
        }
    }

    fn shard(&self, ip: &IpAddr) -> &Mutex<Shard> {
        let h = match ip {
            IpAddr::V4(a) => u32::from(*a) as usize,
            IpAddr::V6(a) => (u128::from(*a) ^ (u128::from(*a) >> 64)) as usize,
        };
        // The low bits of an address vary most between clients.
        &self.shards[(h ^ (h >> 8)) % SHARDS]
    }

    /// A new connection from `ip`: counted, or refused (`Err((why, log))`, `log` for the
    /// first refusal since this address was last let in).
    pub(crate) fn admit(&self, ip: IpAddr, now: Instant) -> Result<(), (Refusal, bool)> {
        let max_open = self.max_open.load(Ordering::Relaxed);
        let rate = f64::from(self.rate.load(Ordering::Relaxed));
        let mut shard = self.shard(&ip).lock();
        let burst = rate;
        let len = shard.map.len();
        let stale = shard
            .pruned
            .is_none_or(|t| now.saturating_duration_since(t).as_secs() >= 1);
        if len >= shard.prune_at.max(64) || (len >= 64 && stale) {
            shard
                .map
                .retain(|_, e| e.open > 0 || refilled(e, rate, now) < burst);
            shard.prune_at = 2 * shard.map.len();
            shard.pruned = Some(now);
        }
        let e = shard.map.entry(ip).or_insert(Entry {
            open: 0,
            tokens: burst,
            last: now,
            logged: false,
        });
        e.tokens = refilled(e, rate, now);
        e.last = now;
        let refusal = if max_open > 0 && e.open >= max_open {
            Some(Refusal::TooMany)
        } else if rate > 0.0 && e.tokens < 1.0 {
            Some(Refusal::TooFast)
        } else {
            None
        };
        if let Some(why) = refusal {
            let log = !std::mem::replace(&mut e.logged, true);
            return Err((why, log));
        }
        if rate > 0.0 {
            e.tokens -= 1.0;
        }
        e.open += 1;
        e.logged = false;
        Ok(())
    }

    /// A connection [`PerIp::admit`] let in has closed (nothing to do while the limits are
    /// off: nothing was counted).
    pub(crate) fn release(&self, ip: IpAddr) {
        if !self.is_on() {
            return;
        }
        let mut shard = self.shard(&ip).lock();
        if let Some(e) = shard.map.get_mut(&ip) {
            e.open = e.open.saturating_sub(1);
            // Kept while the bucket refills, or the rate would restart at every close.
            if e.open == 0 && self.rate.load(Ordering::Relaxed) == 0 {
                shard.map.remove(&ip);
            }
        }
    }
}

/// The tokens `e` holds at `now`.
fn refilled(e: &Entry, rate: f64, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(e.last).as_secs_f64();
    (e.tokens + elapsed * rate).min(rate)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn off_when_both_limits_are_zero_and_on_once_set() {
        let p = PerIp::new(0, 0);
        assert!(!p.is_on());
        p.set_limits(1, 0);
        assert!(p.is_on());
        let now = Instant::now();
        assert!(p.admit(ip(1), now).is_ok());
        assert_eq!(p.admit(ip(1), now).unwrap_err().0, Refusal::TooMany);
    }

    #[test]
    fn caps_open_connections_per_address() {
        let p = PerIp::new(2, 0);
        let now = Instant::now();
        assert!(p.admit(ip(1), now).is_ok());
        assert!(p.admit(ip(1), now).is_ok());
        assert_eq!(p.admit(ip(1), now), Err((Refusal::TooMany, true)));
        assert_eq!(
            p.admit(ip(1), now),
            Err((Refusal::TooMany, false)),
            "logged once"
        );
        assert!(
            p.admit(ip(2), now).is_ok(),
            "other addresses are not affected"
        );
        p.release(ip(1));
        assert!(p.admit(ip(1), now).is_ok());
    }

    #[test]
    fn rate_refills_over_time() {
        let p = PerIp::new(0, 2);
        let t0 = Instant::now();
        assert!(p.admit(ip(1), t0).is_ok());
        assert!(p.admit(ip(1), t0).is_ok());
        assert_eq!(p.admit(ip(1), t0).unwrap_err().0, Refusal::TooFast);
        // Closing does not give the tokens back.
        p.release(ip(1));
        p.release(ip(1));
        assert_eq!(p.admit(ip(1), t0).unwrap_err().0, Refusal::TooFast);
        assert!(
            p.admit(ip(1), t0 + Duration::from_millis(500)).is_ok(),
            "half a second: one"
        );
        assert!(p.admit(ip(1), t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn idle_addresses_are_pruned() {
        let p = PerIp::new(0, 10);
        let t0 = Instant::now();
        for i in 0..=255u8 {
            for j in 0..=39u8 {
                let a = IpAddr::from([10, j, 0, i]);
                p.admit(a, t0).unwrap();
                p.release(a);
            }
        }
        // A second later every bucket is full again: the next growth prunes them.
        let later = t0 + Duration::from_secs(2);
        for i in 0..=255u8 {
            p.admit(IpAddr::from([11, 0, 0, i]), later).unwrap();
        }
        let held: usize = p.shards.iter().map(|s| s.lock().map.len()).sum();
        assert!(held < 2 * 256 + SHARDS * 64, "{held} entries kept");
    }
}
