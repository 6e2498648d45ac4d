//! A histogram of `u64` observations with fixed log-scale buckets: the one distribution
//! type every layer records into (fsync durations and batch sizes here, request latencies
//! and shard handoffs in the server) and `/metrics` renders as a Prometheus histogram.
//!
//! Bucket `i` counts observations `v` with `2^(i-1) < v <= 2^i` (bucket 0: `v <= 1`); the
//! last bucket, [`BUCKETS`]` - 1`, takes everything larger (Prometheus's `+Inf`). Fixed
//! bounds keep the type allocation-free and let snapshots of different histograms merge
//! by adding bucket counts. Values carry whatever unit the recorder chose (durations are
//! recorded in microseconds by [`Histogram::observe_duration`]); the renderer scales.
//!
//! Recording is lock-free: one relaxed `fetch_add` on the bucket and one on the sum. A
//! snapshot reads the buckets one by one, so it may miss an observation that lands
//! meanwhile, but its count is the sum of its own buckets: a rendered histogram is always
//! self-consistent (the `+Inf` bucket equals `_count`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets of every histogram: upper bounds `2^0 ..= 2^(BUCKETS-2)`, then `+Inf`. With
/// microseconds the largest finite bound is about 67 seconds.
pub const BUCKETS: usize = 28;

/// Counts of observations per bucket, and their sum.
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::new()
    }
}

impl Histogram {
    /// An empty histogram (usable in a `static`).
    pub const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BUCKETS],
            sum: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, value: u64) {
        self.buckets[bucket_of(value)].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// Records a duration, in microseconds.
    pub fn observe_duration(&self, elapsed: Duration) {
        self.observe(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
    }

    /// The counts so far.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut counts = [0; BUCKETS];
        for (count, bucket) in counts.iter_mut().zip(&self.buckets) {
            *count = bucket.load(Ordering::Relaxed);
        }
        HistogramSnapshot {
            counts,
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

/// The bucket an observation falls in.
fn bucket_of(value: u64) -> usize {
    let log = if value <= 1 {
        0
    } else {
        (u64::BITS - (value - 1).leading_zeros()) as usize
    };
    log.min(BUCKETS - 1)
}

/// A histogram's counts at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Observations per bucket (not cumulative).
    pub counts: [u64; BUCKETS],
    /// Sum of the observations.
    pub sum: u64,
}

impl Default for HistogramSnapshot {
    fn default() -> HistogramSnapshot {
        HistogramSnapshot {
            counts: [0; BUCKETS],
            sum: 0,
        }
    }
}

impl HistogramSnapshot {
    /// The upper bound of bucket `i`; `None` for the last (`+Inf`).
    pub fn upper_bound(i: usize) -> Option<u64> {
        (i + 1 < BUCKETS).then(|| 1u64 << i)
    }

    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// `(upper bound, observations at or below it)` for every bucket, `None` being `+Inf`.
    pub fn cumulative(&self) -> impl Iterator<Item = (Option<u64>, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .scan(0u64, |total, (i, count)| {
                *total += count;
                Some((HistogramSnapshot::upper_bound(i), *total))
            })
    }

    /// Adds another snapshot's observations.
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.sum += other.sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_smallest_bucket_whose_bound_holds_them() {
        let histogram = Histogram::new();
        for value in [0, 1, 2, 3, 4, 5, 1 << 20, u64::MAX] {
            histogram.observe(value);
        }
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.counts[0], 2, "0 and 1");
        assert_eq!(snapshot.counts[1], 1, "2");
        assert_eq!(snapshot.counts[2], 2, "3 and 4");
        assert_eq!(snapshot.counts[3], 1, "5");
        assert_eq!(snapshot.counts[20], 1, "2^20");
        assert_eq!(snapshot.counts[BUCKETS - 1], 1, "beyond every finite bound");
        assert_eq!(snapshot.count(), 8);
        let cumulative: Vec<_> = snapshot.cumulative().collect();
        assert_eq!(cumulative[0], (Some(1), 2));
        assert_eq!(cumulative[3], (Some(8), 6));
        assert_eq!(cumulative[BUCKETS - 1], (None, 8));
        assert!(cumulative.windows(2).all(|w| w[0].1 <= w[1].1));
    }

    #[test]
    fn snapshots_merge_by_adding_counts_and_sums() {
        let (a, b) = (Histogram::new(), Histogram::new());
        a.observe(3);
        b.observe(3);
        b.observe_duration(Duration::from_millis(2));
        let mut merged = a.snapshot();
        merged.merge(&b.snapshot());
        assert_eq!(merged.count(), 3);
        assert_eq!(merged.sum, 3 + 3 + 2000);
        assert_eq!(merged.counts[2], 2);
        assert_eq!(merged.counts[11], 1, "2000 µs is in (1024, 2048]");
    }
}
