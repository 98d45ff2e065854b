//! Faults against a real `redis-server`: how much several limiter instances
//! admit when Redis stops answering mid-run, and how fast the circuit
//! breaker lets calls through again when Redis comes back.

use std::num::NonZeroU32;
use std::process::Command;
use std::time::{Duration, Instant};

use cacheable::{Algorithm, Cache, CacheOptions, RateLimitOptions};
use cacheable_test_support::RedisServer;

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

/// Sends `signal` (`STOP`, `CONT`) to the test's own redis-server.
fn signal(server: &RedisServer, signal: &str) {
    let pid = server.pid().expect("redis-server is running");
    let ok = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("`kill` runs")
        .success();
    assert!(ok, "kill -{signal} {pid}");
}

async fn cache_on(server: &RedisServer, op_timeout: Duration) -> Cache {
    Cache::builder()
        .redis_url(server.url())
        .op_timeout(op_timeout)
        .build()
        .await
        .unwrap()
}

/// Every instance fires `calls` checks at once on `key`; returns the admitted.
async fn fire(caches: &[Cache], key: &str, opts: &RateLimitOptions, calls: usize) -> usize {
    let tasks: Vec<_> = caches
        .iter()
        .map(|c| {
            let (rl, key, opts) = (c.rate_limiter(), key.to_owned(), opts.clone());
            tokio::spawn(async move {
                let mut ok = 0;
                for _ in 0..calls {
                    ok += usize::from(rl.check(&key, &opts).await.unwrap().allowed);
                }
                ok
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap();
    }
    ok
}

/// `N` limiter instances (separate caches, connections and local limiters)
/// on one Redis; Redis stops answering (SIGSTOP) mid-run, so decisions time
/// out (the script may or may not have run) and the breakers open. The
/// documented bound (`OnError::Local`): on top of what Redis admitted, the
/// instances together admit at most `N × (points / expected instances)`,
/// and nothing for a key Redis last reported exhausted. Before the fix every
/// instance started the key from a full budget: 60 + 4 × 100 = 460 of 100.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_admits_no_more_than_the_documented_bound() {
    const N: usize = 4;
    const POINTS: u32 = 100;
    for algorithm in [
        Algorithm::Gcra,
        Algorithm::SlidingWindow,
        Algorithm::FixedWindow,
    ] {
        let server = RedisServer::start();
        let mut caches = Vec::new();
        for _ in 0..N {
            caches.push(cache_on(&server, Duration::from_millis(100)).await);
        }
        let opts =
            RateLimitOptions::new(nz(POINTS), Duration::from_secs(3600)).algorithm(algorithm);

        // Redis admits 60 of the 100 on "part"; every instance exhausts "all".
        let before = fire(&caches, "part", &opts, 15).await;
        assert_eq!(before, 60, "{algorithm:?}");
        let all = fire(&caches, "all", &opts, 40).await;
        assert_eq!(all, 100, "{algorithm:?}");
        // Every instance must have *heard* Redis report "all" exhausted: an
        // instance whose 40 calls all ran before the budget ran out last
        // heard "n left" and may admit up to min(n, its share), which the
        // first bound covers. One more call each makes the last report a
        // denial everywhere.
        let extra = fire(&caches, "all", &opts, 1).await;
        assert_eq!(extra, 0, "{algorithm:?}");
        for c in &caches {
            // The denial cache would answer "all" without Redis: make the
            // fallback decide.
            c.rate_limiter().clear_denial_cache();
        }

        signal(&server, "STOP");
        let started = Instant::now();
        let part_down = fire(&caches, "part", &opts, 100).await;
        let all_down = fire(&caches, "all", &opts, 100).await;
        let spent = started.elapsed();
        signal(&server, "CONT");

        let share = POINTS as usize / 4; // the default expected instances
        let bound = POINTS as usize + N * share;
        eprintln!(
            "{algorithm:?}: part {before} + {part_down} (bound {bound}), \
             exhausted 100 + {all_down} (bound 100), outage {spent:?}"
        );
        assert!(
            before + part_down <= bound,
            "{algorithm:?}: {before} + {part_down} > {bound}"
        );
        assert_eq!(all_down, 0, "{algorithm:?}: an exhausted key got a budget");
        let s = caches[0].rate_limiter().stats();
        assert!(s.errors > 0 && s.fallback_local > 0, "{s:?}");
    }
}

/// With Redis hanging (SIGSTOP), the breaker's half-open probe must not cost
/// a user call the operation timeout: once open, every call fails fast.
/// Before the fix the call that found the cool-down over was the probe and
/// waited the full 300 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_probe_costs_no_call_the_timeout() {
    let server = RedisServer::start();
    let op_timeout = Duration::from_millis(300);
    let cache = cache_on(&server, op_timeout).await;
    let opts = CacheOptions::new().ttl(Duration::from_secs(60));
    cache.set("k", &1u32, &opts).await.unwrap();

    signal(&server, "STOP");
    // Open the breaker (5 timeouts).
    while cache.health().await.reachable {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for _ in 0..5 {
        let _ = cache.get::<u32>("k", &opts).await;
    }
    let mut slowest = Duration::ZERO;
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        let t = Instant::now();
        assert!(cache.get::<u32>("k", &opts).await.is_err());
        slowest = slowest.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    signal(&server, "CONT");
    assert!(
        slowest < op_timeout / 3,
        "a call waited {slowest:?} with the breaker open or half-open"
    );
}

/// Redis killed (SIGKILL) for 3.7 s and restarted on the same port: calls go
/// to Redis again within a second of it answering. Before the fix the probe
/// was a user call, a failed one (Redis down, or the first command on the
/// dead connection failing with "broken pipe") doubled the cool-down, and
/// the probes at about 0.6, 1.6, 3.6 and 7.6 s kept calls away for almost 4 s
/// after a restart at 3.7 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_resume_within_a_second_of_redis_restarting() {
    let mut server = RedisServer::start();
    let cache = cache_on(&server, Duration::from_millis(300)).await;
    let rl = cache.rate_limiter();
    let limit = RateLimitOptions::new(nz(1_000_000), Duration::from_secs(60));
    let opts = CacheOptions::new().ttl(Duration::from_secs(60));
    cache.set("k", &1u32, &opts).await.unwrap();
    assert_eq!(
        rl.check("r", &limit).await.unwrap().source,
        cacheable::rate_limit::Source::Redis
    );

    server.kill();
    let down = Instant::now();
    while down.elapsed() < Duration::from_millis(3700) {
        let _ = cache.get::<u32>("k", &opts).await;
        let _ = rl.check("r", &limit).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.restart();
    let up = Instant::now();
    let (mut cache_back, mut limiter_back) = (None, None);
    while (cache_back.is_none() || limiter_back.is_none()) && up.elapsed() < Duration::from_secs(10)
    {
        if cache_back.is_none() && cache.get::<u32>("k", &opts).await.is_ok() {
            cache_back = Some(up.elapsed());
        }
        if limiter_back.is_none()
            && rl.check("r", &limit).await.unwrap().source == cacheable::rate_limit::Source::Redis
        {
            limiter_back = Some(up.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("cache back after {cache_back:?}, limiter after {limiter_back:?}");
    for (what, back) in [("cache", cache_back), ("rate limiter", limiter_back)] {
        let back = back.unwrap_or_else(|| panic!("the {what} never used redis again"));
        assert!(
            back < Duration::from_secs(1),
            "the {what} came back after {back:?}"
        );
    }
}
