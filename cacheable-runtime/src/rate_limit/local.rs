//! The in-process side of the limiter: the same three algorithms on a
//! monotonic clock (for `Cache::memory()` and the `on_error = "local"`
//! fallback), and the cache of recent denials.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::{Algorithm, Verdict};

/// Entries kept before expired ones are swept (and, if the map is still this
/// large, dropped: forgetting a budget lets a caller through, it never blocks).
const MAX_ENTRIES: usize = 100_000;

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The parameters of one decision, already validated.
#[derive(Debug, Clone, Copy)]
pub(super) struct Policy {
    pub points: u32,
    pub window: Duration,
    pub cost: u32,
    pub algorithm: Algorithm,
}

impl Policy {
    /// The GCRA emission interval in microseconds, rounded up so that sums stay
    /// exact (the scripts use the same value).
    pub(super) fn period_us(&self) -> u64 {
        us(self.window).div_ceil(u64::from(self.points)).max(1)
    }

    /// The time argument of the algorithm's script.
    pub(super) fn script_time_us(&self) -> u64 {
        match self.algorithm {
            Algorithm::Gcra => self.period_us(),
            Algorithm::SlidingWindow | Algorithm::FixedWindow => us(self.window).max(1),
        }
    }
}

enum Slot {
    Gcra { tat: u64 },
    Sliding { log: VecDeque<u64> },
    Fixed { index: u64, count: u64 },
}

impl Slot {
    /// Whether the slot no longer holds anything that matters at `now`.
    fn expired(&self, now: u64, window: u64) -> bool {
        match self {
            Slot::Gcra { tat } => *tat <= now,
            Slot::Sliding { log } => log.back().is_none_or(|&t| t + window <= now),
            Slot::Fixed { index, .. } => (index + 1).saturating_mul(window) <= now,
        }
    }
}

struct Entry {
    slot: Slot,
    window_us: u64,
}

/// In-process limiters, keyed like the Redis keys.
pub(super) struct LocalLimiter {
    epoch: Instant,
    entries: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for LocalLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLimiter").finish_non_exhaustive()
    }
}

impl Default for LocalLimiter {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl LocalLimiter {
    /// Microseconds since the limiter was created (plus one, so that a fresh
    /// GCRA slot is never "at zero").
    fn now_us(&self) -> u64 {
        us(self.epoch.elapsed()) + 1
    }

    pub(super) fn check(&self, key: &str, p: &Policy) -> Verdict {
        let now = self.now_us();
        let points = u64::from(p.points);
        let cost = u64::from(p.cost);
        let window = us(p.window).max(1);
        let mut map = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_ENTRIES && !map.contains_key(key) {
            map.retain(|_, e| !e.slot.expired(now, e.window_us));
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        let fresh = || match p.algorithm {
            Algorithm::Gcra => Slot::Gcra { tat: now },
            Algorithm::SlidingWindow => Slot::Sliding {
                log: VecDeque::new(),
            },
            Algorithm::FixedWindow => Slot::Fixed {
                index: now / window,
                count: 0,
            },
        };
        let entry = map.entry(key.to_owned()).or_insert_with(|| Entry {
            slot: fresh(),
            window_us: window,
        });
        // A changed algorithm for the same key starts over.
        let same = matches!(
            (&entry.slot, p.algorithm),
            (Slot::Gcra { .. }, Algorithm::Gcra)
                | (Slot::Sliding { .. }, Algorithm::SlidingWindow)
                | (Slot::Fixed { .. }, Algorithm::FixedWindow)
        );
        if !same {
            entry.slot = fresh();
        }
        entry.window_us = window;
        match &mut entry.slot {
            Slot::Gcra { tat } => {
                let period = p.period_us();
                let burst = points * period;
                let base = (*tat).max(now);
                let new_tat = base + cost * period;
                let allow_at = new_tat.saturating_sub(burst);
                if allow_at > now {
                    Verdict {
                        allowed: false,
                        remaining: (now + burst).saturating_sub(base) / period,
                        reset_after_us: base - now,
                        retry_after_us: allow_at - now,
                    }
                } else {
                    *tat = new_tat;
                    Verdict {
                        allowed: true,
                        remaining: (now + burst - new_tat) / period,
                        reset_after_us: new_tat - now,
                        retry_after_us: 0,
                    }
                }
            }
            Slot::Sliding { log } => {
                while log.front().is_some_and(|&t| t + window <= now) {
                    log.pop_front();
                }
                let count = log.len() as u64;
                if count + cost > points {
                    let need = count + cost - points;
                    let retry = if need <= count {
                        let idx = usize::try_from(need - 1).unwrap_or(usize::MAX);
                        log.get(idx).map_or(window, |&t| t + window - now)
                    } else {
                        window
                    };
                    Verdict {
                        allowed: false,
                        remaining: points.saturating_sub(count),
                        reset_after_us: log.back().map_or(0, |&t| t + window - now),
                        retry_after_us: retry,
                    }
                } else {
                    for _ in 0..cost {
                        log.push_back(now);
                    }
                    Verdict {
                        allowed: true,
                        remaining: points - count - cost,
                        reset_after_us: window,
                        retry_after_us: 0,
                    }
                }
            }
            Slot::Fixed { index, count } => {
                let idx = now / window;
                if *index != idx {
                    *index = idx;
                    *count = 0;
                }
                let reset = (idx + 1) * window - now;
                if *count + cost > points {
                    Verdict {
                        allowed: false,
                        remaining: points.saturating_sub(*count),
                        reset_after_us: reset,
                        retry_after_us: reset,
                    }
                } else {
                    *count += cost;
                    Verdict {
                        allowed: true,
                        remaining: points - *count,
                        reset_after_us: reset,
                        retry_after_us: 0,
                    }
                }
            }
        }
    }
}

/// A denial remembered until its retry time.
#[derive(Debug, Clone)]
struct Denial {
    until: Instant,
    reset_at: Instant,
    cost: u32,
    points: u32,
    remaining: u64,
}

/// Denials by key, kept until the retry time: while a key is denied for a
/// cost, any call with at least that cost is denied without asking Redis.
/// Nothing can make the budget available earlier (only time refills it), so
/// the answer is the one Redis would give.
#[derive(Debug, Default)]
pub(super) struct DenialCache {
    map: Mutex<HashMap<String, Denial>>,
    /// The map's length, read without the lock (the common case: empty).
    len: AtomicUsize,
}

impl DenialCache {
    pub(super) fn get(&self, key: &str, p: &Policy) -> Option<Verdict> {
        if self.len.load(Relaxed) == 0 {
            return None;
        }
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let d = map.get(key)?;
        if d.until <= now {
            map.remove(key);
            self.len.store(map.len(), Relaxed);
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
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_ENTRIES && !map.contains_key(key) {
            map.retain(|_, d| d.until > now);
            if map.len() >= MAX_ENTRIES {
                self.len.store(map.len(), Relaxed);
                return;
            }
        }
        map.insert(
            key.to_owned(),
            Denial {
                until: now + Duration::from_micros(v.retry_after_us),
                reset_at: now + Duration::from_micros(v.reset_after_us),
                cost: p.cost,
                points: p.points,
                remaining: v.remaining,
            },
        );
        self.len.store(map.len(), Relaxed);
    }

    /// Forgets every remembered denial (used by tests and `RateLimiter::reset_local`).
    pub(super) fn clear(&self) {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.clear();
        self.len.store(0, Relaxed);
    }
}
