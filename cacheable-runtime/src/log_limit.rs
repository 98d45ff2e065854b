//! [`LogLimiter`]: error logging without floods, shared by the cache, the
//! rate limiter and the global cache. A leaf: it names nothing else in the
//! crate.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Logs at most one line per error kind per interval, with the number of
/// lines suppressed since the last one: errors are never a log flood.
///
/// Bounded by construction: kinds hash into a fixed array of 8 slots (two
/// atomics each), so any number of distinct kinds costs no memory and logs
/// at most 8 lines per interval.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    epoch: std::time::Instant,
    interval_ms: u64,
    slots: [(AtomicU64, AtomicU64); 8],
}

impl LogLimiter {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            epoch: std::time::Instant::now(),
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            slots: Default::default(),
        }
    }

    /// Returns `Some(suppressed)` when a line may be logged now.
    pub(crate) fn admit(&self, kind: &str) -> Option<u64> {
        let slot =
            &self.slots[usize::from(kind.bytes().fold(0u8, u8::wrapping_add)) % self.slots.len()];
        let now = u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(self.interval_ms);
        let last = slot.0.load(Relaxed);
        if now >= last.saturating_add(self.interval_ms)
            && slot.0.compare_exchange(last, now, Relaxed, Relaxed).is_ok()
        {
            Some(slot.1.swap(0, Relaxed))
        } else {
            slot.1.fetch_add(1, Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_limiter_admits_once_per_interval() {
        let l = LogLimiter::new(Duration::from_millis(50));
        assert_eq!(l.admit("timeout"), Some(0));
        for _ in 0..100 {
            assert_eq!(l.admit("timeout"), None);
        }
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(l.admit("timeout"), Some(100));
    }

    #[test]
    fn a_million_error_kinds_log_at_most_one_line_per_slot() {
        let l = LogLimiter::new(Duration::from_secs(3600));
        let admitted = (0..1_000_000u32)
            .filter(|i| l.admit(&format!("kind-{i}")).is_some())
            .count();
        assert!(admitted <= 8, "{admitted} lines logged in one interval");
    }
}
