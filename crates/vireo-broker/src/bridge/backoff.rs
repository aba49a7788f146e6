//! When a bridge tries its remote broker again: exponential backoff with jitter, so that a
//! fleet of edge brokers whose cloud went away do not all come back in the same instant.

use std::time::Duration;

/// Delays between connection attempts: `min` after the first failure, doubling with each
/// failure in a row up to `max`, each drawn between half and all of that ("equal jitter").
/// A connection accepted (CONNACK 0) starts the series again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// Delays from `min` to `max` (`max` below `min` is taken as `min`).
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            failures: 0,
        }
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Records a failure and returns how long to wait before the next attempt. `jitter` in
    /// `[0, 1]` (the caller's random draw; out of range is clamped) picks the delay between
    /// half and all of the exponential step.
    pub fn fail(&mut self, jitter: f64) -> Duration {
        let step = self
            .min
            .saturating_mul(1u32 << self.failures.min(20))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        step.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }

    /// A connection was accepted: the next failure waits `min` again.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_maximum_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<_> = (0..6).map(|_| b.fail(1.0).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.failures(), 6);
        b.succeeded();
        assert_eq!(b.fail(1.0), Duration::from_millis(100));
    }

    #[test]
    fn jitter_spreads_between_half_and_all() {
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(2));
        assert_eq!(b.fail(0.0), Duration::from_secs(1));
        assert_eq!(b.fail(0.5), Duration::from_millis(1500));
        assert_eq!(b.fail(7.0), Duration::from_secs(2));
    }

    #[test]
    fn never_overflows() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(3600));
        for _ in 0..100 {
            assert!(b.fail(1.0) <= Duration::from_secs(3600));
        }
    }
}
