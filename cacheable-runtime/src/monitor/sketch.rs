//! [`Sketch`]: a bounded, lock-free latency histogram for quantiles
//! (p50/p95/p99), and [`Latency`], the summary `stats()` reports.
//!
//! # Design
//!
//! A log-linear histogram in the manner of HDR Histogram: durations in
//! nanoseconds; values below 32 ns have a bucket each, and every power of two
//! above is split into 32 equal buckets. A bucket's width is at most 1/32 of
//! its lower bound, and a quantile is reported as the bucket's midpoint, so
//! the reported value is within **1/64 (1.6 %) relative error** of the exact
//! sample quantile (clamped to the exact maximum, which is kept beside).
//! Values from 2^40 ns (about 18 minutes) up share the last bucket.
//!
//! Fixed size: [`BUCKETS`] counters of 8 bytes (9 KiB), allocated on the
//! first record, so a sketch nobody records into costs one pointer.
//!
//! Relaxed atomics rather than a mutex: a record is four uncontended atomic
//! operations (bucket, count, sum, max) with no lock to convoy on when many
//! threads time the same popular route; a snapshot may see a record half
//! applied (a count without its bucket), which moves a quantile by at most
//! one sample. No crate was taken: the candidates (`hdrhistogram`,
//! `sketches-ddsketch`) need `&mut` to record, so a mutex per sketch, and
//! this one is 100 lines.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Sub-buckets per power of two: 2^5 = 32.
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
/// The largest exponent with buckets of its own; larger values saturate.
const MAX_EXP: u32 = 40;
/// Buckets of one sketch: the 32 exact ones, then 32 per power of two from
/// 2^5 to 2^40.
pub(crate) const BUCKETS: usize = (SUB + (MAX_EXP - SUB_BITS + 1) as u64 * SUB) as usize;

/// The bucket of a value in nanoseconds.
fn index(v: u64) -> usize {
    if v < SUB {
        // lossless: below 32
        #[allow(clippy::cast_possible_truncation)]
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= SUB_BITS
    if exp > MAX_EXP {
        return BUCKETS - 1;
    }
    let sub = (v >> (exp - SUB_BITS)) & (SUB - 1);
    // lossless: at most BUCKETS - 1
    #[allow(clippy::cast_possible_truncation)]
    let i = (SUB + u64::from(exp - SUB_BITS) * SUB + sub) as usize;
    i
}

/// The lower bound and width of bucket `i`.
fn bounds(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < SUB {
        return (i, 1);
    }
    let exp = (i - SUB) / SUB + u64::from(SUB_BITS);
    let sub = (i - SUB) % SUB;
    let width = 1u64 << (exp - u64::from(SUB_BITS));
    ((SUB + sub) * width, width)
}

/// A bounded latency histogram; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct Sketch {
    buckets: OnceLock<Box<[AtomicU64]>>,
    sum_nanos: AtomicU64,
    max_nanos: AtomicU64,
}

impl Sketch {
    /// Records one duration.
    pub(crate) fn record(&self, d: Duration) {
        let v = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let buckets = self
            .buckets
            .get_or_init(|| (0..BUCKETS).map(|_| AtomicU64::new(0)).collect());
        buckets[index(v)].fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(v, Relaxed);
        self.max_nanos.fetch_max(v, Relaxed);
    }

    /// The bucket counts now (empty before the first record).
    pub(crate) fn counts(&self) -> Vec<u64> {
        self.buckets
            .get()
            .map(|b| b.iter().map(|c| c.load(Relaxed)).collect())
            .unwrap_or_default()
    }

    /// The summary of everything recorded.
    pub(crate) fn latency(&self) -> Latency {
        let counts = self.counts();
        let max = self.max_nanos.load(Relaxed);
        let q = |p| Duration::from_nanos(quantile(&counts, p).map_or(0, |v| v.min(max)));
        Latency {
            count: counts.iter().sum(),
            p50: q(0.50),
            p95: q(0.95),
            p99: q(0.99),
            max: Duration::from_nanos(max),
            total: Duration::from_nanos(self.sum_nanos.load(Relaxed)),
        }
    }
}

/// The `q` quantile (0..=1) of a histogram given by its bucket counts (a
/// [`Sketch::counts`], or the difference of two for a window): the midpoint
/// of the bucket holding the sample of rank `ceil(q × n)`. `None` when empty.
pub(crate) fn quantile(counts: &[u64], q: f64) -> Option<u64> {
    let n: u64 = counts.iter().sum();
    if n == 0 {
        return None;
    }
    // ranks are below 2^53 in practice: f64 is exact enough here
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
    let mut seen = 0u64;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            let (low, width) = bounds(i);
            return Some(low + width / 2);
        }
    }
    None
}

/// Latency quantiles of one function or route, from a bounded sketch: within
/// 1.6 % of the exact sample quantiles (see the `monitor::sketch` docs).
///
/// Serializes (serde) each duration as a float number of milliseconds under
/// a `_ms` name (`p50_ms`, `p95_ms`, `p99_ms`, `max_ms`, `total_ms`), as
/// [`Stats`](crate::Stats) does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Latency {
    /// Samples recorded.
    pub count: u64,
    /// Median.
    #[serde(rename = "p50_ms", serialize_with = "crate::serde_ms::millis")]
    pub p50: Duration,
    /// 95th percentile.
    #[serde(rename = "p95_ms", serialize_with = "crate::serde_ms::millis")]
    pub p95: Duration,
    /// 99th percentile.
    #[serde(rename = "p99_ms", serialize_with = "crate::serde_ms::millis")]
    pub p99: Duration,
    /// The largest sample, exact.
    #[serde(rename = "max_ms", serialize_with = "crate::serde_ms::millis")]
    pub max: Duration,
    /// The sum of all samples, exact.
    #[serde(rename = "total_ms", serialize_with = "crate::serde_ms::millis")]
    pub total: Duration,
}

impl Latency {
    /// Mean of the samples; `None` when there are none.
    pub fn mean(&self) -> Option<Duration> {
        (self.count > 0).then(|| {
            Duration::from_nanos(
                u64::try_from(self.total.as_nanos() / u128::from(self.count)).unwrap_or(u64::MAX),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The exact sample quantile of rank `ceil(q × n)`.
    fn exact(sorted: &[u64], q: f64) -> u64 {
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
        sorted[rank - 1]
    }

    fn within(reported: u64, exact: u64) -> bool {
        // 1/64 relative, or exact below 32 ns
        reported.abs_diff(exact) * 64 <= exact.max(1) || (exact < SUB && reported == exact)
    }

    #[test]
    fn buckets_tile_the_range_without_gaps() {
        let mut next = 0;
        for i in 0..BUCKETS {
            let (low, width) = bounds(i);
            assert_eq!(low, next, "bucket {i}");
            assert_eq!(index(low), i);
            assert_eq!(index(low + width - 1), i);
            assert!(width * 32 <= low.max(32), "bucket {i} too wide");
            next = low + width;
        }
        assert_eq!(index(u64::MAX), BUCKETS - 1);
        assert_eq!(BUCKETS, 1184);
    }

    #[test]
    fn an_empty_sketch_reports_zeros_and_allocates_nothing() {
        let s = Sketch::default();
        assert_eq!(s.latency(), Latency::default());
        assert!(s.counts().is_empty());
        assert_eq!(s.latency().mean(), None);
    }

    #[test]
    fn one_sample_is_its_own_quantiles_and_max_is_exact() {
        let s = Sketch::default();
        s.record(Duration::from_micros(1234));
        let l = s.latency();
        assert_eq!(l.count, 1);
        assert_eq!(l.max, Duration::from_micros(1234));
        // clamped to the exact max
        assert!(l.p99 <= l.max);
        assert!(within(u64::try_from(l.p50.as_nanos()).unwrap(), 1_234_000));
    }

    #[test]
    fn huge_values_saturate_without_panicking() {
        let s = Sketch::default();
        s.record(Duration::MAX);
        s.record(Duration::from_secs(3600 * 24));
        assert_eq!(s.latency().count, 2);
    }

    #[test]
    fn concurrent_records_are_all_counted() {
        let s = std::sync::Arc::new(Sketch::default());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let s = std::sync::Arc::clone(&s);
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        s.record(Duration::from_nanos(i * 97 + t));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(s.latency().count, 40_000);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// p50/p95/p99 within 1/64 of the exact sample quantiles, for
        /// samples spread over nine orders of magnitude.
        #[test]
        fn quantiles_are_within_the_error_bound(
            samples in prop::collection::vec(
                prop_oneof![0u64..100, 100u64..100_000, 100_000u64..10_000_000_000],
                1..400,
            ),
        ) {
            let s = Sketch::default();
            for v in &samples {
                s.record(Duration::from_nanos(*v));
            }
            let mut sorted = samples.clone();
            sorted.sort_unstable();
            let counts = s.counts();
            let max = *sorted.last().unwrap();
            for q in [0.5, 0.95, 0.99, 1.0] {
                let got = quantile(&counts, q).unwrap().min(max);
                let want = exact(&sorted, q);
                prop_assert!(within(got, want), "q={q}: got {got}, exact {want}");
            }
            let l = s.latency();
            prop_assert_eq!(l.count, samples.len() as u64);
            prop_assert_eq!(l.max, Duration::from_nanos(max));
            prop_assert_eq!(l.total, Duration::from_nanos(samples.iter().sum()));
        }
    }
}
