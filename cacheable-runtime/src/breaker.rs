//! A circuit breaker in front of the store (guarantee 4).
//!
//! Closed: calls go through; `threshold` consecutive availability failures
//! open it. Open: calls fail at once with `CircuitOpen` (microseconds) until
//! the cool-down ends; then exactly one probe is made (half-open). A
//! successful probe closes it; a failed one opens it again with a doubled
//! cool-down (up to `max_cooldown`, at most [`MAX_COOLDOWN`], 500 ms).
//!
//! The probe is a `PING` in a background task ([`Breaker::probe`]), not a
//! user's call: the call that finds the cool-down over still fails at once,
//! and no call ever waits for a probe's timeout. A probe that fails with a
//! connection error is retried once at once: the first command after the
//! server came back often fails on the dead connection ("broken pipe") while
//! the client reconnects, and counting that as "still down" would double the
//! cool-down. Since a probe costs users nothing, the cool-down is capped at
//! 500 ms: calls resume within about half a second of the store answering.
//!
//! Cool-downs are read on the cache's clock (`crate::clock`): tests advance
//! a fake clock through them. The probe's timeout is Tokio's (real) timer.

use std::future::Future;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::clock::AnyClock;

use crate::error::CacheError;

/// The longest cool-down between probes, whatever is configured.
pub(crate) const MAX_COOLDOWN: Duration = Duration::from_millis(500);

/// What [`Breaker::enter`] lets a call do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    /// Closed: go to the store.
    Go,
    /// Open: fail at once.
    Refused,
    /// The cool-down is over and this call won the probe: start
    /// [`Breaker::probe`] (in the background) and fail at once.
    Probe,
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// The breaker's state, as reported by `Cache::health`. Serializes as
/// `"closed"`, `"open"` or `"half_open"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are refused until a probe succeeds.
    Open,
    /// One probe is in flight.
    HalfOpen,
}

#[derive(Debug)]
pub(crate) struct Breaker {
    clock: AnyClock,
    epoch: Instant,
    state: AtomicU8,
    failures: AtomicU32,
    open_until_ms: AtomicU64,
    cooldown_ms: AtomicU64,
    threshold: u32,
    min_cooldown: Duration,
    max_cooldown: Duration,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, min_cooldown: Duration, max_cooldown: Duration) -> Self {
        Self {
            clock: AnyClock::System,
            epoch: Instant::now(),
            state: AtomicU8::new(CLOSED),
            failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
            cooldown_ms: AtomicU64::new(Self::ms(min_cooldown)),
            threshold: threshold.max(1),
            min_cooldown,
            max_cooldown: max_cooldown.min(MAX_COOLDOWN).max(min_cooldown),
        }
    }

    /// The same breaker, timed by `clock`.
    pub(crate) fn with_clock(mut self, clock: AnyClock) -> Self {
        self.epoch = clock.now();
        self.clock = clock;
        self
    }

    fn ms(d: Duration) -> u64 {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
    }

    fn now_ms(&self) -> u64 {
        Self::ms(self.clock.now().saturating_duration_since(self.epoch))
    }

    /// Whether a call may go to the store now (a probe included).
    pub(crate) fn allow(&self) -> bool {
        self.enter() != Pass::Refused
    }

    /// What a call may do now.
    pub(crate) fn enter(&self) -> Pass {
        let pass = |won: bool| if won { Pass::Probe } else { Pass::Refused };
        match self.state.load(Ordering::Acquire) {
            CLOSED => Pass::Go,
            OPEN => {
                let now = self.now_ms();
                if now < self.open_until_ms.load(Ordering::Acquire) {
                    return Pass::Refused;
                }
                let won = self
                    .state
                    .compare_exchange(OPEN, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
                if won {
                    // The probe's deadline: see the HALF_OPEN arm.
                    self.open_until_ms.store(
                        now.saturating_add(self.cooldown_ms.load(Ordering::Relaxed)),
                        Ordering::Release,
                    );
                }
                pass(won)
            }
            _ => {
                // A probe whose future was dropped (a cancelled request) never
                // reports back; after a cool-down another call may probe, so
                // the breaker cannot stay half-open for ever.
                let deadline = self.open_until_ms.load(Ordering::Acquire);
                let now = self.now_ms();
                pass(
                    now >= deadline
                        && self
                            .open_until_ms
                            .compare_exchange(
                                deadline,
                                now.saturating_add(self.cooldown_ms.load(Ordering::Relaxed)),
                                Ordering::AcqRel,
                                Ordering::Acquire,
                            )
                            .is_ok(),
                )
            }
        }
    }

    /// One probe: `ping` under `timeout`, retried once at once on a
    /// connection error (a dead connection's stale error while the client
    /// reconnects). Closes the breaker on success, else opens it again.
    pub(crate) async fn probe<F, Fut>(&self, timeout: Duration, mut ping: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), CacheError>>,
    {
        for attempt in 0..2 {
            match tokio::time::timeout(timeout, ping()).await {
                Ok(Ok(())) => {
                    self.success();
                    return;
                }
                Ok(Err(CacheError::Connection(_))) if attempt == 0 => {}
                _ => break,
            }
        }
        self.failure();
    }

    pub(crate) fn success(&self) {
        // Read before writing: on the hot path nothing changes, and a store
        // would bounce the cache line between cores on every call.
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.state.load(Ordering::Acquire) != CLOSED {
            self.cooldown_ms
                .store(Self::ms(self.min_cooldown), Ordering::Relaxed);
            self.state.store(CLOSED, Ordering::Release);
        }
    }

    pub(crate) fn failure(&self) {
        let state = self.state.load(Ordering::Acquire);
        let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if state == HALF_OPEN || (state == CLOSED && failures >= self.threshold) {
            let mut cooldown = self.cooldown_ms.load(Ordering::Relaxed);
            if state == HALF_OPEN {
                // The probe failed: the store is still down, wait longer.
                cooldown = cooldown.saturating_mul(2).min(Self::ms(self.max_cooldown));
                self.cooldown_ms.store(cooldown, Ordering::Relaxed);
            }
            self.open_until_ms
                .store(self.now_ms().saturating_add(cooldown), Ordering::Release);
            self.state.store(OPEN, Ordering::Release);
        }
    }

    pub(crate) fn state(&self) -> BreakerState {
        match self.state.load(Ordering::Acquire) {
            CLOSED => BreakerState::Closed,
            OPEN => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }
}

/// Runs a probe in the background. Outside a Tokio runtime it is dropped:
/// the half-open deadline then lets a later call probe.
pub(crate) fn spawn_probe(probe: impl Future<Output = ()> + Send + 'static) {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(probe);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;

    /// A breaker on a fake clock, and the clock to advance.
    fn breaker(threshold: u32, min: Duration, max: Duration) -> (Breaker, FakeClock) {
        let clock = FakeClock::new();
        let b = Breaker::new(threshold, min, max).with_clock(AnyClock::new(clock.clone()));
        (b, clock)
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn opens_after_threshold_and_probes_once() {
        let (b, clock) = breaker(3, 30 * MS, Duration::from_secs(1));
        for _ in 0..2 {
            assert!(b.allow());
            b.failure();
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allow());
        clock.advance(29 * MS);
        assert!(!b.allow(), "still cooling down 1 ms before the end");
        clock.advance(MS);
        assert!(b.allow(), "probe after cool-down");
        assert!(!b.allow(), "only one probe");
        b.failure();
        assert_eq!(b.state(), BreakerState::Open);
        clock.advance(59 * MS);
        assert!(!b.allow(), "cool-down doubled after a failed probe");
        clock.advance(MS);
        assert!(b.allow());
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow());
        // Closed again: the cool-down is back at its minimum.
        for _ in 0..3 {
            b.failure();
        }
        clock.advance(30 * MS);
        assert!(b.allow(), "cool-down reset to the minimum after a success");
    }

    #[test]
    fn the_doubled_cool_down_stops_at_the_maximum() {
        let (b, clock) = breaker(1, 100 * MS, 300 * MS);
        b.failure();
        clock.advance(100 * MS);
        assert_eq!(b.enter(), Pass::Probe);
        for expected in [200, 300, 300] {
            b.failure(); // the probe failed
            clock.advance((expected - 1) * MS);
            assert!(!b.allow(), "cool-down of {expected} ms not over");
            clock.advance(MS);
            assert_eq!(b.enter(), Pass::Probe, "cool-down of {expected} ms over");
        }
    }

    #[test]
    fn a_lost_probe_does_not_keep_it_half_open() {
        let (b, clock) = breaker(1, 30 * MS, Duration::from_secs(1));
        b.failure();
        clock.advance(30 * MS);
        assert!(b.allow(), "the probe");
        // The probe's future is dropped: neither success nor failure comes.
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(!b.allow(), "still waiting for the probe");
        clock.advance(29 * MS);
        assert!(!b.allow(), "still waiting, 1 ms before the deadline");
        clock.advance(MS);
        assert!(b.allow(), "after a cool-down, another call probes");
        assert!(!b.allow(), "one at a time");
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn the_cool_down_is_capped() {
        let b = Breaker::new(1, Duration::from_millis(10), Duration::from_secs(30));
        assert_eq!(b.max_cooldown, MAX_COOLDOWN);
    }

    /// The system clock still times the breaker (one short real sleep).
    #[test]
    fn the_system_clock_times_the_cool_down() {
        let b = Breaker::new(1, 10 * MS, Duration::from_secs(1));
        b.failure();
        assert!(!b.allow());
        std::thread::sleep(15 * MS);
        assert!(b.allow());
    }

    #[tokio::test]
    async fn a_probe_retries_once_on_a_connection_error() {
        let (b, clock) = breaker(1, 10 * MS, Duration::from_secs(1));
        b.failure();
        clock.advance(10 * MS);
        assert_eq!(b.enter(), Pass::Probe);
        let mut calls = 0;
        b.probe(Duration::from_millis(100), || {
            calls += 1;
            let r = if calls == 1 {
                Err(CacheError::Connection("broken pipe".into()))
            } else {
                Ok(())
            };
            async move { r }
        })
        .await;
        assert_eq!(calls, 2);
        assert_eq!(b.state(), BreakerState::Closed);
        // A timeout is not retried: the store is slow, not reconnecting.
        b.failure();
        clock.advance(10 * MS);
        assert_eq!(b.enter(), Pass::Probe);
        let mut calls = 0;
        b.probe(Duration::from_millis(20), || {
            calls += 1;
            std::future::pending::<Result<(), CacheError>>()
        })
        .await;
        assert_eq!(calls, 1);
        assert_eq!(b.state(), BreakerState::Open);
    }
}
