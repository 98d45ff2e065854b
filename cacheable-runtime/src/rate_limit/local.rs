//! The in-process side of the limiter: the same three algorithms on a
//! monotonic clock (for `Cache::memory()` and the `on_error = "local"`
//! fallback), and (in `denials.rs`) the cache of recent denials. Both read
//! the cache's clock (`crate::clock`), so tests advance a fake one through a
//! window. This file is over 400 lines because the eviction rule below needs
//! each entry's algorithm state, so the map and the three algorithms' local
//! decisions stay together.
//!
//! # Bounds
//!
//! Both maps are bounded in bytes (key, entry and hash-table slot, and for a
//! sliding window its log), not in entries, so long keys cannot stretch the
//! bound:
//!
//! - [`LocalLimiter`]: [`LOCAL_MAX_BYTES`]. When an insert would pass it,
//!   expired state is swept, then the least recently used entries that still
//!   hold a budget are evicted (down to 90 % of the bound). An entry that is
//!   exhausted (its last decision was a denial or left nothing) is never
//!   evicted before it expires: eviction never hands a denied key a fresh
//!   budget. If only exhausted entries remain, a new key is refused (counted
//!   in `RateLimitStats::local_overflow`) rather than let through unlimited.
//! - [`DenialCache`](super::denials::DenialCache):
//!   [`DENIALS_MAX_BYTES`](super::denials::DENIALS_MAX_BYTES). Expired
//!   denials are swept at most every second and when the bound is reached
//!   (then not again for 100 ms if that freed nothing: a flood of live
//!   denials is not swept once per key); a denial that still does not fit is
//!   not remembered (Redis, which holds the budget, still denies).
//!
//! moka is not used: its admission and eviction policy (TinyLFU) may drop any
//! entry, and there is no way to pin the entries that must stay (denials).
//! The rule "evict only expired or admitted state" needs the entry's state at
//! eviction time, which these maps have.

use std::collections::{HashMap, VecDeque};
use std::mem::size_of;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::{Algorithm, Verdict};
use crate::clock::AnyClock;

/// The bound of the in-process limiter's state, in bytes (about 400,000 keys
/// of 60 bytes).
pub(super) const LOCAL_MAX_BYTES: usize = 64 << 20;

/// The cost of one map slot besides the key's and the entry's heap bytes:
/// the `(String, V)` pair plus the table's control byte, over the load factor.
pub(super) fn slot_bytes<V>(key: &str) -> usize {
    (size_of::<(String, V)>() + 1) * 8 / 7 + key.len()
}

pub(super) fn us(d: Duration) -> u64 {
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

    fn fresh(p: &Policy, now: u64) -> Slot {
        match p.algorithm {
            Algorithm::Gcra => Slot::Gcra { tat: now },
            // The log never holds more than `points`: allocated once (up
            // to 1,024 points), so its bytes are accounted when the entry
            // is made room for.
            Algorithm::SlidingWindow => Slot::Sliding {
                log: VecDeque::with_capacity(p.points.min(1024) as usize),
            },
            Algorithm::FixedWindow => Slot::Fixed {
                index: now / us(p.window).max(1),
                count: 0,
            },
        }
    }

    fn matches(&self, a: Algorithm) -> bool {
        matches!(
            (self, a),
            (Slot::Gcra { .. }, Algorithm::Gcra)
                | (Slot::Sliding { .. }, Algorithm::SlidingWindow)
                | (Slot::Fixed { .. }, Algorithm::FixedWindow)
        )
    }
}

struct Entry {
    slot: Slot,
    window_us: u64,
    /// The last decision was a denial or left no point: never evicted
    /// before it expires.
    exhausted: bool,
    /// A tick of the map's clock: higher is more recent.
    last_used: u64,
}

impl Entry {
    fn bytes(&self, key: &str) -> usize {
        let log = match &self.slot {
            Slot::Sliding { log } => log.capacity() * size_of::<u64>(),
            _ => 0,
        };
        slot_bytes::<Entry>(key) + log
    }
}

#[derive(Default)]
struct Slots {
    map: HashMap<String, Entry>,
    bytes: usize,
    tick: u64,
    /// No sweep before this time (µs), after one that freed nothing.
    next_sweep: u64,
}

/// In-process limiters, keyed like the Redis keys, bounded by `max_bytes`.
pub(super) struct LocalLimiter {
    clock: AnyClock,
    epoch: Instant,
    slots: Mutex<Slots>,
    max_bytes: usize,
    /// New keys refused because only exhausted state was left to evict.
    pub(super) overflow: AtomicU64,
}

impl std::fmt::Debug for LocalLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLimiter")
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

impl Default for LocalLimiter {
    fn default() -> Self {
        Self::with_max_bytes(LOCAL_MAX_BYTES)
    }
}

/// A verdict refusing a key that found no room (retry in a second).
const NO_ROOM: Verdict = Verdict {
    allowed: false,
    remaining: 0,
    reset_after_us: 1_000_000,
    retry_after_us: 1_000_000,
};

impl Slots {
    /// Makes room for `need` more bytes: sweeps expired entries, then evicts
    /// the least recently used entries that still hold a budget, down to 90 %
    /// of `max`. Returns whether `need` fits.
    fn make_room(&mut self, need: usize, max: usize, now: u64) -> bool {
        if self.bytes + need <= max {
            return true;
        }
        if now < self.next_sweep {
            return false;
        }
        let mut bytes = self.bytes;
        self.map.retain(|k, e| {
            let keep = !e.slot.expired(now, e.window_us);
            if !keep {
                bytes -= e.bytes(k);
            }
            keep
        });
        let target = max - max / 10;
        if bytes + need > target {
            let mut admitted: Vec<(u64, usize)> = self
                .map
                .iter()
                .filter(|(_, e)| !e.exhausted)
                .map(|(k, e)| (e.last_used, e.bytes(k)))
                .collect();
            admitted.sort_unstable_by_key(|&(t, _)| t);
            let mut freed = 0;
            let mut cutoff = None;
            for (t, b) in admitted {
                if bytes - freed + need <= target {
                    break;
                }
                freed += b;
                cutoff = Some(t);
            }
            if let Some(cutoff) = cutoff {
                self.map.retain(|_, e| e.exhausted || e.last_used > cutoff);
                bytes -= freed;
            }
        }
        self.bytes = bytes;
        let fits = self.bytes + need <= max;
        if !fits {
            // Everything left is exhausted: sweeping again at once would only
            // burn CPU under a flood.
            self.next_sweep = now + 100_000;
        }
        fits
    }
}

impl LocalLimiter {
    pub(super) fn with_max_bytes(max_bytes: usize) -> Self {
        Self {
            clock: AnyClock::System,
            epoch: Instant::now(),
            slots: Mutex::new(Slots::default()),
            max_bytes,
            overflow: AtomicU64::new(0),
        }
    }

    /// The same limiter, timed by `clock`.
    pub(super) fn with_clock(mut self, clock: AnyClock) -> Self {
        self.epoch = clock.now();
        self.clock = clock;
        self
    }

    /// Microseconds since the limiter was created (plus one, so that a fresh
    /// GCRA slot is never "at zero").
    fn now_us(&self) -> u64 {
        us(self.clock.now().saturating_duration_since(self.epoch)) + 1
    }

    /// Bytes held (as accounted against the bound) and entries.
    #[cfg(test)]
    pub(super) fn usage(&self) -> (usize, usize) {
        let s = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        (s.bytes, s.map.len())
    }

    /// Runs `f` on the entry of `key` (created fresh if missing, or `None`
    /// when there is no room), keeping the byte count and recency.
    fn with_entry<R>(
        &self,
        key: &str,
        p: &Policy,
        now: u64,
        create: bool,
        f: impl FnOnce(&mut Slot, u64) -> (R, Option<bool>),
    ) -> Option<R> {
        let window = us(p.window).max(1);
        let mut guard = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let s = &mut *guard;
        s.tick += 1;
        let tick = s.tick;
        if !s.map.contains_key(key) {
            if !create {
                return None;
            }
            let entry = Entry {
                slot: Slot::fresh(p, now),
                window_us: window,
                exhausted: false,
                last_used: tick,
            };
            let need = entry.bytes(key);
            if !s.make_room(need, self.max_bytes, now) {
                self.overflow.fetch_add(1, Relaxed);
                return None;
            }
            s.bytes += need;
            s.map.insert(key.to_owned(), entry);
        }
        let entry = s.map.get_mut(key)?;
        let before = entry.bytes(key);
        // A changed algorithm for the same key starts over.
        if !entry.slot.matches(p.algorithm) {
            entry.slot = Slot::fresh(p, now);
        }
        entry.window_us = window;
        entry.last_used = tick;
        let (r, exhausted) = f(&mut entry.slot, window);
        if let Some(x) = exhausted {
            entry.exhausted = x;
        }
        let after = entry.bytes(key);
        s.bytes = s.bytes + after - before;
        if s.bytes > self.max_bytes {
            // A sliding window's log grew: evict others (this entry is the
            // most recent, so the last to go).
            s.make_room(0, self.max_bytes, now);
        }
        Some(r)
    }

    pub(super) fn check(&self, key: &str, p: &Policy) -> Verdict {
        let now = self.now_us();
        let Some(v) = self.with_entry(key, p, now, true, |slot, window| {
            let v = decide(slot, p, now, window);
            (v, Some(!v.allowed || v.remaining == 0))
        }) else {
            return NO_ROOM;
        };
        v
    }

    /// Lowers the budget of `key` to at most `remaining` points (what Redis
    /// last reported), so that a fallback starts from there and never from a
    /// full budget. A key with no local state and at least a full budget is
    /// not stored (a fresh slot starts full).
    pub(super) fn observe(&self, key: &str, p: &Policy, remaining: u64) {
        let now = self.now_us();
        let points = u64::from(p.points);
        let used = points.saturating_sub(remaining);
        let create = used > 0;
        let _ = self.with_entry(key, p, now, create, |slot, window| {
            observe_slot(slot, p, now, window, used);
            ((), Some(remaining == 0))
        });
    }
}

/// Lowers a slot's budget to `points - used`.
fn observe_slot(slot: &mut Slot, p: &Policy, now: u64, window: u64, used: u64) {
    match slot {
        Slot::Gcra { tat } => {
            let target = now + used * p.period_us();
            *tat = (*tat).max(target);
        }
        Slot::Sliding { log } => {
            while log.front().is_some_and(|&t| t + window <= now) {
                log.pop_front();
            }
            while (log.len() as u64) < used {
                log.push_back(now);
            }
        }
        Slot::Fixed { index, count } => {
            let idx = now / window;
            if *index != idx {
                *index = idx;
                *count = 0;
            }
            *count = (*count).max(used);
        }
    }
}

fn decide(slot: &mut Slot, p: &Policy, now: u64, window: u64) -> Verdict {
    let points = u64::from(p.points);
    let cost = u64::from(p.cost);
    match slot {
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

#[cfg(test)]
#[path = "local_tests.rs"]
mod tests;
