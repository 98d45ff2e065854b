//! Unit tests of `rate_limit::local` (the in-process limiter).

use super::*;
use crate::clock::FakeClock;

fn login() -> Policy {
    Policy {
        points: 3,
        window: Duration::from_secs(15 * 60),
        cost: 1,
        algorithm: Algorithm::SlidingWindow,
    }
}

fn rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A limiter on a fake clock, and the clock to advance.
fn fake(max_bytes: usize) -> (LocalLimiter, FakeClock) {
    let clock = FakeClock::new();
    let l = LocalLimiter::with_max_bytes(max_bytes).with_clock(AnyClock::new(clock.clone()));
    (l, clock)
}

/// Identities sprayed at a limiter 20 times the size of its bound: the
/// bytes stay under the bound through about 200 rounds of eviction, and
/// the victim, denied before the spray, is still denied after it (the old
/// limiter cleared itself at 100,000 entries). The clock stands still, so
/// nothing expires: only eviction makes room. (The bound is 512 KiB, not
/// the default 64 MiB, so that 20 times it is a quick debug run.)
#[test]
fn a_flood_of_identities_keeps_the_bound_and_the_victim_denied() {
    for algorithm in [
        Algorithm::Gcra,
        Algorithm::SlidingWindow,
        Algorithm::FixedWindow,
    ] {
        let p = Policy {
            algorithm,
            ..login()
        };
        let max = 512 << 10;
        let (l, _clock) = fake(max);
        let before = rss_kib();
        for _ in 0..3 {
            assert!(l.check("victim", &p).allowed);
        }
        assert!(!l.check("victim", &p).allowed);
        let mut key = String::new();
        let mut spray = 0;
        let mut full_at = None;
        while full_at.is_none_or(|n| spray < 20 * n) {
            let i = spray;
            spray += 1;
            key.clear();
            std::fmt::Write::write_fmt(&mut key, format_args!("cacheable:{{g}}:rl:u:{i}")).unwrap();
            assert!(l.check(&key, &p).allowed, "{algorithm:?} {i}");
            if i % 256 == 0 {
                let (bytes, entries) = l.usage();
                assert!(bytes <= max, "{bytes} > {max}");
                if entries < i && full_at.is_none() {
                    full_at = Some(entries);
                }
            }
        }
        let (bytes, entries) = l.usage();
        assert!(entries > 1000, "{algorithm:?}: {entries} entries kept");
        assert!(
            !l.check("victim", &p).allowed,
            "{algorithm:?}: victim admitted"
        );
        eprintln!(
            "{algorithm:?}: {spray} keys, {entries} entries, {bytes} bytes accounted, RSS {:?} -> {:?} KiB",
            before,
            rss_kib()
        );
    }
}

/// When only exhausted keys are left, a new key is refused (and counted),
/// never admitted by forgetting an exhausted one.
#[test]
fn a_limiter_full_of_denials_refuses_new_keys_and_keeps_them() {
    let p = Policy {
        points: 1,
        ..login()
    };
    let l = LocalLimiter::with_max_bytes(64 << 10);
    let mut i = 0;
    while l.overflow.load(Relaxed) == 0 {
        let k = format!("k{i}");
        let v = l.check(&k, &p);
        i += 1;
        if v.allowed {
            assert!(!l.check(&k, &p).allowed);
        }
    }
    for j in 0..i - 1 {
        assert!(!l.check(&format!("k{j}"), &p).allowed, "k{j} was forgotten");
    }
    let (bytes, _) = l.usage();
    assert!(bytes <= 64 << 10);
}

/// The fallback starts from what Redis last reported, not from full.
#[test]
fn observe_lowers_the_budget_to_what_redis_reported() {
    for algorithm in [
        Algorithm::Gcra,
        Algorithm::SlidingWindow,
        Algorithm::FixedWindow,
    ] {
        let p = Policy {
            points: 10,
            algorithm,
            ..login()
        };
        let l = LocalLimiter::default();
        l.observe("a", &p, 2);
        assert!(l.check("a", &p).allowed);
        assert!(l.check("a", &p).allowed);
        assert!(!l.check("a", &p).allowed, "{algorithm:?}");
        l.observe("b", &p, 0);
        assert!(!l.check("b", &p).allowed, "{algorithm:?}");
        // A full budget stores nothing.
        l.observe("c", &p, 10);
        assert_eq!(l.usage().1, 2);
    }
}

/// Each algorithm refills exactly when its verdict said: denied 1 µs
/// before `retry_after`, allowed at it, and then only for what refilled.
#[test]
fn a_denied_key_is_allowed_again_at_its_retry_time() {
    for algorithm in [
        Algorithm::Gcra,
        Algorithm::SlidingWindow,
        Algorithm::FixedWindow,
    ] {
        let p = Policy {
            algorithm,
            ..login()
        };
        let (l, clock) = fake(LOCAL_MAX_BYTES);
        // Not at the start of a fixed window: the window's end comes first.
        clock.advance(Duration::from_secs(7));
        for _ in 0..3 {
            assert!(l.check("k", &p).allowed, "{algorithm:?}");
            clock.advance(Duration::from_secs(1));
        }
        let denied = l.check("k", &p);
        assert!(!denied.allowed, "{algorithm:?}");
        assert!(denied.retry_after_us > 1, "{algorithm:?}");
        assert!(denied.retry_after_us <= us(p.window), "{algorithm:?}");
        clock.advance(Duration::from_micros(denied.retry_after_us - 1));
        assert!(!l.check("k", &p).allowed, "{algorithm:?}: 1 µs early");
        clock.advance(Duration::from_micros(1));
        assert!(l.check("k", &p).allowed, "{algorithm:?}: at retry_after");
        if algorithm != Algorithm::FixedWindow {
            // One point refilled, not the whole budget.
            assert!(!l.check("k", &p).allowed, "{algorithm:?}: one point only");
        }
        // A whole window later, the whole budget is back.
        clock.advance(p.window);
        for _ in 0..3 {
            assert!(l.check("k", &p).allowed, "{algorithm:?}: full again");
        }
        assert!(!l.check("k", &p).allowed, "{algorithm:?}");
    }
}
