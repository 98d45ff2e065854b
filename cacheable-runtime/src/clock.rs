//! Time behind a trait, in the manner of `governor`'s `clock` module: the
//! cache's in-process timers read time through a [`Clock`], so tests move it
//! by hand ([`FakeClock::advance`]) instead of sleeping.
//!
//! A leaf module: it depends on nothing else in the crate.
//!
//! # What reads this clock
//!
//! Set with [`CacheBuilder::clock`](crate::CacheBuilder::clock), it drives:
//!
//! - the circuit breakers' cool-downs (the cache's and the rate limiter's);
//! - the envelope's stored-at and soft expiry (fresh until), and so the
//!   `stale` window and XFetch early refresh; the compute time recorded with
//!   a value (what XFetch scales by) and the write guard;
//! - the memory store's key expiry (entries, version counters, leases);
//! - the in-process rate limiter's windows and the denial cache.
//!
//! # What does not
//!
//! - **Redis' own TTLs** (`PX`/`EX` on entries, counters, leases) and the
//!   Redis rate-limit scripts run on the server's clock. A fake clock cannot
//!   move them: advancing it past an entry's TTL makes the entry stale or
//!   expired *to this process* (its envelope says so), while Redis still
//!   holds the key until its own TTL runs out in real time.
//! - **Version counters' fresh values** (`envelope::fresh_version`) and
//!   write stamps: they are uniqueness sources, not timers, and must never
//!   go backwards; they stay on the system clock.
//! - Waits that sleep (the cross-process lease wait, invalidation retries,
//!   timeouts) run on Tokio's timer, and statistics (hit and health
//!   latency) measure real time.
//!
//! # Cost
//!
//! The cache keeps a private enum of clocks: the default is its `System` variant,
//! a branch and a direct `Instant::now()` / `SystemTime::now()`, with no
//! `dyn` call and no reference count touched per read. Only a custom clock
//! pays a virtual call.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of time for the cache's in-process timers.
///
/// `now` must be monotonic (never go backwards); `unix_ms` is wall-clock
/// time, written into stored values so that every process reading them
/// agrees on when they expire.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// A monotonic instant.
    fn now(&self) -> Instant;

    /// Milliseconds since the Unix epoch.
    fn unix_ms(&self) -> u64;
}

/// The system's clocks: [`Instant::now`] and [`SystemTime::now`]. The default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> Instant {
        Instant::now()
    }

    #[inline]
    fn unix_ms(&self) -> u64 {
        system_unix_ms()
    }
}

#[inline]
fn system_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A clock that stands still until [`advance`](Self::advance)d. **For tests.**
///
/// It starts at the real time of its creation and moves only by hand.
/// Clones share one time: give a clone to
/// [`CacheBuilder::clock`](crate::CacheBuilder::clock) and keep one to
/// advance. Expiry, stale windows, early refresh, breaker cool-downs and
/// local rate-limit windows then follow it, and a test sees them without
/// sleeping. Redis' own TTLs do not follow it (see the [module docs](self)).
///
/// ```
/// use std::time::Duration;
/// use cacheable_runtime::clock::{Clock, FakeClock};
///
/// let clock = FakeClock::new();
/// let t0 = clock.now();
/// clock.advance(Duration::from_secs(90));
/// assert_eq!(clock.now() - t0, Duration::from_secs(90));
/// ```
#[derive(Debug, Clone)]
pub struct FakeClock {
    inner: Arc<Fake>,
}

#[derive(Debug)]
struct Fake {
    start: Instant,
    start_unix_ms: u64,
    /// Nanoseconds advanced since `start` (584 years fit).
    offset_ns: AtomicU64,
}

impl Default for FakeClock {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeClock {
    /// A clock at the current real time, standing still.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Fake {
                start: Instant::now(),
                start_unix_ms: system_unix_ms(),
                offset_ns: AtomicU64::new(0),
            }),
        }
    }

    /// Moves the time of this clock and all its clones forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.inner.offset_ns.fetch_add(ns, Ordering::AcqRel);
    }

    /// How far the clock was advanced since it was created.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.inner.offset_ns.load(Ordering::Acquire))
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Instant {
        let elapsed = self.elapsed();
        self.inner
            .start
            .checked_add(elapsed)
            .unwrap_or(self.inner.start)
    }

    fn unix_ms(&self) -> u64 {
        let ms = u64::try_from(self.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.inner.start_unix_ms.saturating_add(ms)
    }
}

/// The clock a cache's parts hold: the system clock without indirection, or
/// a custom one behind an `Arc`. Cloning it is free for `System`.
#[derive(Debug, Clone, Default)]
pub(crate) enum AnyClock {
    /// [`SystemClock`], read directly.
    #[default]
    System,
    /// Any other [`Clock`].
    Custom(Arc<dyn Clock>),
}

impl AnyClock {
    /// Wraps `clock`; a [`SystemClock`] becomes the direct `System` variant.
    pub(crate) fn new<C: Clock>(clock: C) -> Self {
        if (&clock as &dyn std::any::Any).is::<SystemClock>() {
            Self::System
        } else {
            Self::Custom(Arc::new(clock))
        }
    }

    /// Whether this is the system clock (read directly).
    pub(crate) fn is_system(&self) -> bool {
        matches!(self, Self::System)
    }

    #[inline]
    pub(crate) fn now(&self) -> Instant {
        match self {
            Self::System => Instant::now(),
            Self::Custom(c) => c.now(),
        }
    }

    #[inline]
    pub(crate) fn unix_ms(&self) -> u64 {
        match self {
            Self::System => system_unix_ms(),
            Self::Custom(c) => c.unix_ms(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fake_clock_moves_only_by_hand_and_clones_share_it() {
        let clock = FakeClock::new();
        let (t0, u0) = (clock.now(), clock.unix_ms());
        std::thread::yield_now();
        assert_eq!(clock.now(), t0, "it stands still");
        let clone = clock.clone();
        clone.advance(Duration::from_millis(1500));
        assert_eq!(clock.now() - t0, Duration::from_millis(1500));
        assert_eq!(clock.unix_ms() - u0, 1500);
        assert_eq!(clock.elapsed(), Duration::from_millis(1500));
    }

    #[test]
    fn the_system_clock_is_read_directly() {
        assert!(AnyClock::new(SystemClock).is_system());
        assert!(!AnyClock::new(FakeClock::new()).is_system());
        let clock = AnyClock::default();
        let t0 = clock.now();
        assert!(clock.now() >= t0);
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis();
        assert!(u128::from(clock.unix_ms()).abs_diff(wall) < 5_000);
    }

    #[test]
    fn a_custom_clock_is_read_through_the_handle() {
        let fake = FakeClock::new();
        let clock = AnyClock::new(fake.clone());
        let (t0, u0) = (clock.now(), clock.unix_ms());
        fake.advance(Duration::from_secs(3));
        assert_eq!(clock.now() - t0, Duration::from_secs(3));
        assert_eq!(clock.unix_ms() - u0, 3000);
    }
}
