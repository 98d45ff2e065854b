//! The cache of recent denials: a denied key is answered in process until
//! its retry time, so a flood from one identity stops reaching Redis.
//! Bounded in bytes as the local limiter is (see `local.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::Verdict;
use super::local::{Policy, slot_bytes, us};
use crate::clock::AnyClock;

/// The bound of the denial cache, in bytes (about 80,000 keys of 60 bytes).
pub(super) const DENIALS_MAX_BYTES: usize = 8 << 20;

/// A denial remembered until its retry time.
#[derive(Debug, Clone)]
struct Denial {
    until: Instant,
    reset_at: Instant,
    cost: u32,
    points: u32,
    remaining: u64,
}

#[derive(Debug)]
struct Denials {
    map: HashMap<String, Denial>,
    bytes: usize,
    next_sweep: Instant,
    /// No sweep for room before this time, after one that found none.
    next_full_sweep: Instant,
    /// Sweeps run (the flood test counts them).
    sweeps: u64,
}

/// Denials by key, kept until the retry time: while a key is denied for a
/// cost, any call with at least that cost is denied without asking Redis.
/// Nothing can make the budget available earlier (only time refills it), so
/// the answer is the one Redis would give. Bounded by `max_bytes`; expired
/// denials are swept at most every second and when the bound is reached.
#[derive(Debug)]
pub(super) struct DenialCache {
    inner: Mutex<Denials>,
    /// The map's length, read without the lock (the common case: empty).
    len: AtomicUsize,
    max_bytes: usize,
    clock: AnyClock,
}

impl Default for DenialCache {
    fn default() -> Self {
        Self::with_max_bytes(DENIALS_MAX_BYTES)
    }
}

/// How often expired denials are swept while the cache is in use.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// After a sweep for room that found none, how long new denials are not
/// remembered before the next such sweep.
const FULL_SWEEP_PAUSE: Duration = Duration::from_millis(100);

impl Denials {
    fn sweep(&mut self, now: Instant) {
        let mut bytes = self.bytes;
        self.map.retain(|k, d| {
            let keep = d.until > now;
            if !keep {
                bytes -= slot_bytes::<Denial>(k);
            }
            keep
        });
        self.bytes = bytes;
        self.next_sweep = now + SWEEP_EVERY;
        self.sweeps += 1;
    }
}

impl DenialCache {
    pub(super) fn with_max_bytes(max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Denials {
                map: HashMap::new(),
                bytes: 0,
                next_sweep: Instant::now(),
                next_full_sweep: Instant::now(),
                sweeps: 0,
            }),
            len: AtomicUsize::new(0),
            max_bytes,
            clock: AnyClock::System,
        }
    }

    /// The same cache, timed by `clock`.
    pub(super) fn with_clock(mut self, clock: AnyClock) -> Self {
        let d = self.inner.get_mut().unwrap_or_else(PoisonError::into_inner);
        d.next_sweep = clock.now();
        d.next_full_sweep = clock.now();
        self.clock = clock;
        self
    }

    /// Bytes held (as accounted against the bound) and entries.
    #[cfg(test)]
    pub(super) fn usage(&self) -> (usize, usize) {
        let d = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        (d.bytes, d.map.len())
    }

    pub(super) fn get(&self, key: &str, p: &Policy) -> Option<Verdict> {
        if self.len.load(Relaxed) == 0 {
            return None;
        }
        let now = self.clock.now();
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let s = &mut *guard;
        if now >= s.next_sweep {
            s.sweep(now);
            self.len.store(s.map.len(), Relaxed);
        }
        let d = s.map.get(key)?;
        if d.until <= now {
            s.map.remove(key);
            s.bytes -= slot_bytes::<Denial>(key);
            self.len.store(s.map.len(), Relaxed);
            return None;
        }
        if p.cost < d.cost || p.points != d.points {
            return None;
        }
        Some(Verdict {
            allowed: false,
            remaining: d.remaining,
            reset_after_us: us(d.reset_at.saturating_duration_since(now)),
            retry_after_us: us(d.until - now).max(1),
        })
    }

    pub(super) fn put(&self, key: &str, p: &Policy, v: &Verdict) {
        if v.allowed || v.retry_after_us == 0 {
            return;
        }
        let now = self.clock.now();
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let s = &mut *guard;
        let need = slot_bytes::<Denial>(key);
        let present = s.map.contains_key(key);
        let full = !present && s.bytes + need > self.max_bytes;
        if now >= s.next_sweep || (full && now >= s.next_full_sweep) {
            s.sweep(now);
        }
        let present = s.map.contains_key(key);
        if !present && s.bytes + need > self.max_bytes {
            // Full of live denials: sweeping again for every new key would
            // cost a pass over the map per denial under a flood.
            s.next_full_sweep = now + FULL_SWEEP_PAUSE;
            // Not remembered: Redis, which holds the budget, still denies.
            self.len.store(s.map.len(), Relaxed);
            return;
        }
        let denial = Denial {
            until: now + Duration::from_micros(v.retry_after_us),
            reset_at: now + Duration::from_micros(v.reset_after_us),
            cost: p.cost,
            points: p.points,
            remaining: v.remaining,
        };
        if s.map.insert(key.to_owned(), denial).is_none() {
            s.bytes += need;
        }
        self.len.store(s.map.len(), Relaxed);
    }

    /// Forgets every remembered denial (used by tests and `RateLimiter::reset_local`).
    pub(super) fn clear(&self) {
        let mut s = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        s.map.clear();
        s.bytes = 0;
        self.len.store(0, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;
    use crate::rate_limit::Algorithm;

    fn login() -> Policy {
        Policy {
            points: 3,
            window: Duration::from_secs(15 * 60),
            cost: 1,
            algorithm: Algorithm::SlidingWindow,
        }
    }

    #[test]
    fn a_denial_is_served_until_its_retry_time() {
        let p = login();
        let clock = FakeClock::new();
        let d = DenialCache::default().with_clock(AnyClock::new(clock.clone()));
        let v = Verdict {
            allowed: false,
            remaining: 0,
            reset_after_us: 30_000,
            retry_after_us: 20_000,
        };
        d.put("k", &p, &v);
        clock.advance(Duration::from_millis(19));
        let cached = d.get("k", &p).expect("still denied");
        assert!(!cached.allowed);
        assert_eq!(cached.retry_after_us, 1000);
        assert_eq!(cached.reset_after_us, 11_000);
        clock.advance(Duration::from_millis(1));
        assert!(d.get("k", &p).is_none(), "forgotten at its retry time");
    }

    /// Far more denials than fit: the bytes stay under the bound; once they
    /// expire, the next use after a sweep interval sweeps them all.
    #[test]
    fn the_denial_cache_is_bounded_and_sweeps_expired_denials() {
        let p = login();
        let max = 1 << 20;
        let clock = FakeClock::new();
        let d = DenialCache::with_max_bytes(max).with_clock(AnyClock::new(clock.clone()));
        let short = Verdict {
            allowed: false,
            remaining: 0,
            reset_after_us: 1,
            retry_after_us: 20_000,
        };
        // About ten times what fits (each denial weighs about 100 bytes).
        for i in 0..100_000u32 {
            d.put(&format!("k{i}"), &p, &short);
            if i % 1024 == 0 {
                assert!(d.usage().0 <= max);
            }
        }
        let (bytes, kept) = d.usage();
        assert!(
            bytes <= max && kept > 1000 && kept < 50_000,
            "{bytes} bytes, {kept}"
        );
        let sweeps = |d: &DenialCache| d.inner.lock().unwrap().sweeps;
        assert!(
            sweeps(&d) <= 2,
            "{} sweeps: a full cache of live denials is not swept once per put",
            sweeps(&d)
        );
        assert!(d.get("k0", &p).is_some(), "the first denials are kept");
        clock.advance(Duration::from_millis(20));
        assert!(d.get("k0", &p).is_none(), "expired at its retry time");
        assert_eq!(d.usage().1, kept - 1, "no sweep before SWEEP_EVERY");
        clock.advance(SWEEP_EVERY);
        // Any use after a second sweeps what expired.
        d.put("late", &p, &short);
        assert_eq!(d.usage().1, 1, "expired denials were swept");
        assert!(d.get("late", &p).is_some());
    }
}
