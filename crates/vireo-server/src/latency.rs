//! The latency the metrics endpoint reports: from a PUBLISH read to its frame written to a
//! subscriber's socket, sampled once per loop iteration of each worker.
//!
//! Timing every delivery would cost a clock read per message; instead each worker samples
//! the first message it delivers in an iteration (read from its own clients, or handed over
//! by another worker, with the loop time its `Message::received` carries) and, when that
//! iteration's flush is done, records how long ago it was read. That is one clock read per
//! busy iteration, and under load (thousands of iterations a second) a fair picture of the
//! distribution; the first message of an iteration is its oldest, so it leans high, not low.
//! Each worker keeps its samples and records them into the shared histogram at its sweep.

use std::time::Instant;

use hdrhistogram::Histogram;

/// Highest latency recorded, in microseconds (60 s); longer ones count as 60 s.
const HIGHEST_US: u64 = 60_000_000;

/// Bucket bounds of the Prometheus histogram, in seconds.
pub(crate) const BUCKETS_SECONDS: [f64; 16] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// An empty histogram: 1 µs to 60 s, two significant digits (about 10 KiB).
pub(crate) fn histogram() -> Histogram<u64> {
    // Bounds that are valid by construction: 1 <= low, high >= 2 * low, sigfig <= 5.
    Histogram::new_with_bounds(1, HIGHEST_US, 2)
        .unwrap_or_else(|_| unreachable!("constant histogram bounds are valid"))
}

/// Samples a worker keeps between two sweeps, at most; more are not taken (a sweep comes
/// every 100 ms, and a loop iteration takes far longer than 12 µs under load).
const MAX_PENDING: usize = 8 * 1024;

/// One worker's sampler: the samples since its last sweep, in microseconds. Handed to the
/// shared histogram one by one, so a sweep costs what was sampled, not a pass over the
/// histogram's thousands of counters (which made the broker's instruction count depend on
/// how long a run took).
#[derive(Debug, Default)]
pub(crate) struct Sampler {
    sample: Option<Instant>,
    pending: Vec<u32>,
}

impl Sampler {
    /// A message read at `received` is being delivered in this iteration.
    #[inline]
    pub(crate) fn offer(&mut self, received: Instant) {
        if self.sample.is_none() {
            self.sample = Some(received);
        }
    }

    /// The iteration's flush is done: keeps the sample, if any.
    #[inline]
    pub(crate) fn flushed(&mut self) {
        if let Some(received) = self.sample.take()
            && self.pending.len() < MAX_PENDING
        {
            let us = received
                .elapsed()
                .as_micros()
                .clamp(1, u128::from(HIGHEST_US));
            // At most 60,000,000: fits.
            self.pending.push(us as u32);
        }
    }

    /// Records the samples kept since the last call into `total`.
    pub(crate) fn drain_into(&mut self, total: &mut Histogram<u64>) {
        for us in self.pending.drain(..) {
            total.saturating_record(u64::from(us));
        }
    }

    /// Whether samples wait for the sweep.
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

/// Bucket counts (`le` in seconds; each bucket's own, not cumulative: prometheus-client
/// accumulates them when it encodes), the sum in seconds and the count, as the Prometheus
/// histogram type has them. The sum is the histogram's (bucket-rounded) mean times its count.
pub(crate) fn buckets(h: &Histogram<u64>) -> (Vec<(f64, u64)>, f64, u64) {
    let mut out: Vec<(f64, u64)> = BUCKETS_SECONDS
        .iter()
        .map(|&le| (le, 0))
        .chain(std::iter::once((f64::INFINITY, 0)))
        .collect();
    // Each recorded value (hdrhistogram's bucket-rounded one) into the first bucket that
    // holds it: a value counts once, which `count_between` on adjacent ranges does not
    // promise (its ranges round outwards).
    for v in h.iter_recorded() {
        let seconds = v.value_iterated_to() as f64 / 1e6;
        let i = BUCKETS_SECONDS
            .iter()
            .position(|&le| seconds <= le)
            .unwrap_or(BUCKETS_SECONDS.len());
        out[i].1 += v.count_at_value();
    }
    let count = h.len();
    let sum = h.mean() * count as f64 / 1e6;
    (out, sum, count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn one_sample_per_flush_the_first_offered() {
        let mut s = Sampler::default();
        let now = Instant::now();
        let old = now.checked_sub(Duration::from_millis(50)).unwrap_or(now);
        s.offer(old);
        s.offer(now);
        s.flushed();
        s.flushed(); // nothing offered since: nothing recorded
        let mut total = histogram();
        s.drain_into(&mut total);
        assert_eq!(total.len(), 1);
        assert!(total.value_at_quantile(1.0) >= 50_000, "{}", total.max());
        let (b, sum, count) = buckets(&total);
        assert_eq!(count, 1);
        assert!(sum >= 0.05);
        // Per bucket: the one sample in (50 ms, 100 ms] (hdrhistogram rounds within 1 %).
        let at = |le: f64| b.iter().find(|(l, _)| *l == le).map(|x| x.1);
        assert_eq!(at(0.05).unwrap_or(0) + at(0.1).unwrap_or(0), 1);
        assert_eq!(b.iter().map(|x| x.1).sum::<u64>(), 1);
        assert_eq!(b.last().map(|x| x.1), Some(0));
        // Drained: the sampler starts afresh.
        assert!(!s.has_pending());
    }
}
