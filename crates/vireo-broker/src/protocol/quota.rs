//! Per-client publish rate and inbound bandwidth limits.
//!
//! A limited client is throttled, not disconnected: once it has used its allowance the
//! broker stops reading its socket until the allowance is back, so TCP pushes back on the
//! client and nothing it sent is lost (EMQX's `messages_rate` / `bytes_rate` behave the same
//! way; Mosquitto has no such limit). Each limit is a GCRA bucket (the generic cell rate
//! algorithm, a token bucket kept as one instant): a client may burst one second's worth,
//! then goes at the rate.
//!
//! Pure and on the caller's clock, as the rest of the protocol core: the worker charges each
//! decoded packet and, when [`Quota::resume_at`] says so, stops reading until then.

use std::time::{Duration, Instant};

/// What one client may send, as configured; 0 turns a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimits {
    /// PUBLISH packets per second.
    pub publishes_per_sec: u32,
    /// Bytes per second of packets read, all packet types.
    pub bytes_per_sec: u64,
}

impl RateLimits {
    /// Whether any limit is set.
    pub fn any(self) -> bool {
        self.publishes_per_sec > 0 || self.bytes_per_sec > 0
    }
}

/// The burst a bucket allows on top of its rate: one second's worth.
const BURST: Duration = Duration::from_secs(1);

/// One GCRA bucket: `tat` (the theoretical arrival time) is when the bucket would be empty
/// again if nothing more came; each unit pushes it on by `1 / rate`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    rate: u64,
    tat: Instant,
}

impl Bucket {
    fn new(rate: u64, now: Instant) -> Option<Self> {
        (rate > 0).then_some(Self { rate, tat: now })
    }

    fn charge(&mut self, now: Instant, units: u64) {
        let nanos = u128::from(units) * 1_000_000_000 / u128::from(self.rate);
        let cost = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        self.tat = self.tat.max(now) + cost;
    }

    /// When the client may go on: once less than a burst is owed.
    fn resume_at(&self, now: Instant) -> Option<Instant> {
        let at = self.tat.checked_sub(BURST)?;
        (at > now).then_some(at)
    }
}

/// One client's allowance.
#[derive(Debug, Clone)]
pub struct Quota {
    publishes: Option<Bucket>,
    bytes: Option<Bucket>,
    /// Whether this client has been throttled before (the log line is written once).
    throttled_before: bool,
}

impl Quota {
    /// A full allowance at `now`; `None` when no limit is set.
    pub fn new(limits: RateLimits, now: Instant) -> Option<Self> {
        limits.any().then(|| Self {
            publishes: Bucket::new(u64::from(limits.publishes_per_sec), now),
            bytes: Bucket::new(limits.bytes_per_sec, now),
            throttled_before: false,
        })
    }

    /// Counts one decoded packet of `len` bytes, a PUBLISH or not.
    pub fn charge(&mut self, now: Instant, len: usize, publish: bool) {
        if publish && let Some(b) = self.publishes.as_mut() {
            b.charge(now, 1);
        }
        if let Some(b) = self.bytes.as_mut() {
            b.charge(now, len as u64);
        }
    }

    /// `Some(when)` if the client has used its allowance: read nothing more from it until
    /// then.
    pub fn resume_at(&self, now: Instant) -> Option<Instant> {
        let p = self.publishes.and_then(|b| b.resume_at(now));
        let b = self.bytes.and_then(|b| b.resume_at(now));
        p.max(b)
    }

    /// Whether this is the first time the client is throttled (to log it once).
    pub fn first_throttle(&mut self) -> bool {
        !std::mem::replace(&mut self.throttled_before, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(publishes: u32, bytes: u64, now: Instant) -> Quota {
        Quota::new(
            RateLimits {
                publishes_per_sec: publishes,
                bytes_per_sec: bytes,
            },
            now,
        )
        .expect("a limit is set")
    }

    #[test]
    fn no_limit_no_quota() {
        assert!(Quota::new(RateLimits::default(), Instant::now()).is_none());
    }

    #[test]
    fn a_burst_of_one_second_then_the_rate() {
        let t0 = Instant::now();
        let mut q = quota(100, 0, t0);
        // 100 at once: the burst, nothing owed beyond it.
        for _ in 0..100 {
            q.charge(t0, 10, true);
        }
        assert_eq!(q.resume_at(t0), None);
        // The 101st is one over: wait 10 ms (one unit at 100/s).
        q.charge(t0, 10, true);
        assert_eq!(q.resume_at(t0), Some(t0 + Duration::from_millis(10)));
        assert_eq!(q.resume_at(t0 + Duration::from_millis(10)), None);
        // Non-PUBLISH packets do not count against the publish rate.
        let t1 = t0 + Duration::from_millis(10);
        q.charge(t1, 10, false);
        assert_eq!(q.resume_at(t1), None);
    }

    #[test]
    fn an_idle_client_earns_back_no_more_than_a_burst() {
        let t0 = Instant::now();
        let mut q = quota(10, 0, t0);
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..10 {
            q.charge(later, 1, true);
        }
        assert_eq!(q.resume_at(later), None);
        q.charge(later, 1, true);
        assert_eq!(q.resume_at(later), Some(later + Duration::from_millis(100)));
    }

    #[test]
    fn bandwidth_counts_bytes_of_every_packet() {
        let t0 = Instant::now();
        let mut q = quota(0, 1000, t0);
        q.charge(t0, 1000, false);
        assert_eq!(q.resume_at(t0), None);
        // 500 bytes over: half a second.
        q.charge(t0, 500, true);
        assert_eq!(q.resume_at(t0), Some(t0 + Duration::from_millis(500)));
    }

    #[test]
    fn the_later_of_both_limits_applies() {
        let t0 = Instant::now();
        let mut q = quota(1, 1_000_000, t0);
        q.charge(t0, 10, true);
        q.charge(t0, 10, true);
        assert_eq!(q.resume_at(t0), Some(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn logged_once() {
        let mut q = quota(1, 0, Instant::now());
        assert!(q.first_throttle());
        assert!(!q.first_throttle());
    }
}
