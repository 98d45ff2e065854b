//! The cache service and the cache-aside engine against real stores: the same
//! behaviour suite on the memory store and on a real `redis-server`, then the
//! Redis-only guarantees (consistency races, failures, stability).
//!
//! The suite runs on a [`FakeClock`]: expiry, policies and early refresh are
//! seen by advancing it, not by sleeping. Redis' own TTLs are server time and
//! stay real: `redis_ttls_are_server_time` and
//! `tag_versions_do_not_grow_without_bound` watch them in real time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cacheable::clock::FakeClock;
use cacheable::{BreakerState, Cache, CacheOptions, TtlPolicy, tenant};
use cacheable_test_support::{DelayProxy, RedisCluster, RedisServer};

mod common;
use common::slow_computation;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

fn user(id: u64, name: &str) -> User {
    User {
        id,
        name: name.to_owned(),
    }
}

async fn redis_cache(server: &RedisServer, prefix: &str) -> Cache {
    Cache::builder()
        .redis_url(server.url())
        .prefix(prefix)
        .op_timeout(Duration::from_millis(500))
        .build()
        .await
        .expect("valid configuration")
}

/// A counter of how many times a computation ran.
#[derive(Clone, Default)]
struct Calls(Arc<AtomicUsize>);

impl Calls {
    fn hit(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

async fn load(cache: &Cache, calls: &Calls, key: &str, opts: &CacheOptions, name: &str) -> User {
    let calls = calls.clone();
    let name = name.to_owned();
    cache
        .get_or_compute(key, opts, || async move {
            let n = calls.hit();
            Ok::<_, std::convert::Infallible>(User { id: n as u64, name })
        })
        .await
        .unwrap()
}

// ---------------------------------------------------------------- the suite

/// Runs the suite on `cache`, whose clock is `clock`.
async fn suite(cache: Cache, clock: &FakeClock) {
    hit_and_miss(&cache).await;
    set_get_delete(&cache).await;
    ttl_expiry(&cache, clock).await;
    tenant_isolation(&cache).await;
    tag_invalidation(&cache).await;
    tenant_invalidation(&cache).await;
    err_is_not_cached(&cache).await;
    nested_dependencies(&cache).await;
    stale_set_race_tags(&cache).await;
    stale_set_race_delete(&cache).await;
    stampede_in_process(&cache).await;
    policies(&cache, clock).await;
    early_refresh(&cache, clock).await;
    tenant_quota(&cache).await;
}

/// The suite's caches allow each tenant 64 KiB per window.
async fn tenant_quota(cache: &Cache) {
    let opts = CacheOptions::new()
        .ttl(Duration::from_secs(60))
        .tenant("quota");
    let big = "x".repeat(10 * 1024);
    let mut stored = 0;
    for i in 0..8 {
        match cache.set(&format!("k{i}"), &big, &opts).await {
            Ok(()) => stored += 1,
            Err(e) => assert!(
                matches!(e, cacheable::CacheError::Quota { limit: 65536 }),
                "{e:?}"
            ),
        }
    }
    assert_eq!(
        stored, 6,
        "six 10 KiB values fit in 64 KiB, the seventh does not"
    );
    assert_eq!(
        cache.get::<String>("k6", &opts).await.unwrap(),
        None,
        "nothing was written over quota"
    );
    // Cache-aside over quota: the value is returned, uncached, and the error counted.
    let errors = cache.stats().errors;
    let calls = Calls::default();
    for _ in 0..2 {
        let c = calls.clone();
        let big = big.clone();
        let v: String = cache
            .get_or_compute("aside", &opts, || async move {
                c.hit();
                Ok::<_, ()>(big)
            })
            .await
            .unwrap();
        assert_eq!(v.len(), 10 * 1024);
    }
    assert_eq!(calls.get(), 2, "over quota the function runs every time");
    assert!(cache.stats().errors >= errors + 2);
    // Other tenants and the global space have their own budgets.
    cache
        .set("k0", &big, &CacheOptions::new().tenant("quota-other"))
        .await
        .unwrap();
    cache
        .set("k0", &big, &CacheOptions::new().global())
        .await
        .unwrap();
}

/// XFetch: a value that took long to compute is refreshed by one caller
/// shortly before it expires, not after, and never far from its expiry.
/// The computation "takes" 300 ms of the cache's clock; hits come every
/// 20 ms of it, whatever the machine's load.
async fn early_refresh(cache: &Cache, clock: &FakeClock) {
    let calls = Calls::default();
    let slow = |calls: Calls, clock: FakeClock| async move {
        clock.advance(Duration::from_millis(300));
        Ok::<_, ()>(calls.hit())
    };
    let load = |key: &'static str, opts: CacheOptions| {
        let (calls, clock) = (calls.clone(), clock.clone());
        async move {
            cache
                .get_or_compute(key, &opts, || slow(calls, clock))
                .await
                .unwrap()
        }
    };
    // Far from expiry (over 40 compute times left), never.
    let far = CacheOptions::new()
        .ttl(Duration::from_secs(60))
        .tenant("xfetch");
    load("far", far.clone()).await;
    for _ in 0..47 {
        clock.advance(Duration::from_secs(1));
        load("far", far.clone()).await;
    }
    assert_eq!(calls.get(), 1, "no early refresh 13 s before expiry");
    // Near expiry, one caller refreshes before it (the chance that 70 hits
    // in the last 1.5 s all pass is below 1e-9).
    let opts = CacheOptions::new()
        .ttl(Duration::from_millis(1500))
        .tenant("xfetch");
    load("x", opts.clone()).await;
    let stored = clock.elapsed();
    let remaining = || Duration::from_millis(1500).saturating_sub(clock.elapsed() - stored);
    while remaining() > Duration::from_millis(20) && calls.get() == 2 {
        load("x", opts.clone()).await;
        clock.advance(Duration::from_millis(20));
    }
    assert_eq!(calls.get(), 3, "refreshed before expiry");
}

async fn hit_and_miss(cache: &Cache) {
    let calls = Calls::default();
    let opts = CacheOptions::new().ttl(Duration::from_secs(60));
    let a = load(cache, &calls, "hm", &opts, "ann").await;
    let b = load(cache, &calls, "hm", &opts, "other").await;
    assert_eq!(a, b, "second call is served from the cache");
    assert_eq!(calls.get(), 1);
    let stats = cache.stats();
    let f = stats
        .function("cache.get_or_compute")
        .expect("per-function stats");
    assert!(f.hits >= 1 && f.misses >= 1, "{f:?}");
    assert!(f.computes >= 1);
}

async fn set_get_delete(cache: &Cache) {
    let opts = CacheOptions::new()
        .ttl(Duration::from_secs(60))
        .tenant("sgd");
    assert_eq!(cache.get::<User>("u", &opts).await.unwrap(), None);
    cache.set("u", &user(1, "a"), &opts).await.unwrap();
    assert_eq!(
        cache.get::<User>("u", &opts).await.unwrap(),
        Some(user(1, "a"))
    );
    cache.delete("u", &opts).await.unwrap();
    assert_eq!(cache.get::<User>("u", &opts).await.unwrap(), None);
    cache.set("u", &user(2, "b"), &opts).await.unwrap();
    assert_eq!(
        cache.get::<User>("u", &opts).await.unwrap(),
        Some(user(2, "b")),
        "set after delete works"
    );
}

/// Expiry on the cache's clock, to the millisecond. (A minute: Redis' own
/// TTL, in real time, never runs out during the test.)
async fn ttl_expiry(cache: &Cache, clock: &FakeClock) {
    let calls = Calls::default();
    let opts = CacheOptions::new().ttl(Duration::from_secs(60));
    load(cache, &calls, "ttl", &opts, "x").await;
    clock.advance(Duration::from_millis(59_999));
    load(cache, &calls, "ttl", &opts, "x").await;
    assert_eq!(calls.get(), 1, "fresh 1 ms before its ttl");
    clock.advance(Duration::from_millis(1));
    load(cache, &calls, "ttl", &opts, "x").await;
    assert_eq!(calls.get(), 2, "expired entries are recomputed");
}

/// Real time: with the system clock, an entry expires after its TTL; with
/// a fake clock, Redis' TTL still runs in real time (a fake clock cannot
/// move it), while the cache already treats the entry as expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_ttls_are_server_time() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "real").await;
    let calls = Calls::default();
    let opts = CacheOptions::new().ttl(Duration::from_millis(300));
    load(&cache, &calls, "ttl", &opts, "x").await;
    load(&cache, &calls, "ttl", &opts, "x").await;
    assert_eq!(calls.get(), 1);
    tokio::time::sleep(Duration::from_millis(450)).await;
    load(&cache, &calls, "ttl", &opts, "x").await;
    assert_eq!(calls.get(), 2, "expired entries are recomputed");

    let clock = FakeClock::new();
    let fake = Cache::builder()
        .redis_url(server.url())
        .prefix("fake")
        .clock(clock.clone())
        .build()
        .await
        .unwrap();
    let calls = Calls::default();
    let opts = CacheOptions::new().ttl(Duration::from_secs(30)).global();
    load(&fake, &calls, "ttl", &opts, "x").await;
    clock.advance(Duration::from_secs(3600));
    load(&fake, &calls, "ttl", &opts, "x").await;
    assert_eq!(calls.get(), 2, "expired on the cache's clock");
    let keys = server.command(&[b"KEYS", b"fake:*"]);
    assert!(
        String::from_utf8_lossy(&keys).contains("fake:"),
        "Redis still holds the keys: its TTLs are not the fake clock's"
    );
}

const CRAFTED: &[&str] = &[
    "a",
    "a:b",
    "a%3Ab",
    "*",
    "{x}",
    "",
    "ü",
    "a}",
    "{",
    "p:{t:a}:k:iso",
];

async fn tenant_isolation(cache: &Cache) {
    let big = "t".repeat(10 * 1024);
    let mut ids: Vec<&str> = CRAFTED.to_vec();
    ids.push(&big);
    let opts = CacheOptions::new().ttl(Duration::from_secs(60));
    for id in &ids {
        tenant::scope(*id, async {
            cache
                .set("iso", &format!("value of {id}"), &opts)
                .await
                .unwrap();
        })
        .await;
    }
    for id in &ids {
        let got: Option<String> =
            tenant::scope(*id, async { cache.get("iso", &opts).await.unwrap() }).await;
        assert_eq!(
            got.as_deref(),
            Some(format!("value of {id}").as_str()),
            "tenant {id:?} reads its own value"
        );
    }
    // Outside any tenant: the global space, untouched by any tenant.
    assert_eq!(cache.get::<String>("iso", &opts).await.unwrap(), None);
    // Invalidating one crafted tenant leaves every other one intact.
    cache.delete_by_tenant("*").await.unwrap();
    cache.delete_by_tenant("a:b").await.unwrap();
    for id in &ids {
        let got: Option<String> =
            tenant::scope(*id, async { cache.get("iso", &opts).await.unwrap() }).await;
        if *id == "*" || *id == "a:b" {
            assert_eq!(got, None, "{id:?} was cleared");
        } else {
            assert_eq!(
                got.as_deref(),
                Some(format!("value of {id}").as_str()),
                "{id:?} survives"
            );
        }
    }
    // Tag invalidation in one tenant does not reach another.
    let tagged = CacheOptions::new()
        .ttl(Duration::from_secs(60))
        .tags(["shared"]);
    for id in ["{x}", "{"] {
        tenant::scope(id, async {
            cache.set("tagged", &id.to_owned(), &tagged).await.unwrap();
        })
        .await;
    }
    cache.delete_by_tags(&["shared"], Some("{")).await.unwrap();
    let x: Option<String> =
        tenant::scope("{x}", async { cache.get("tagged", &tagged).await.unwrap() }).await;
    let y: Option<String> =
        tenant::scope("{", async { cache.get("tagged", &tagged).await.unwrap() }).await;
    assert_eq!((x.as_deref(), y), (Some("{x}"), None));
}

async fn tag_invalidation(cache: &Cache) {
    let calls = Calls::default();
    let users = CacheOptions::new()
        .ttl(Duration::from_secs(60))
        .tags(["users", "user:1"])
        .tenant("tags");
    let other = CacheOptions::new()
        .ttl(Duration::from_secs(60))
        .tags(["user:2"])
        .tenant("tags");
    let elsewhere = CacheOptions::new()
        .ttl(Duration::from_secs(60))
        .tags(["user:1"])
        .tenant("other-tenant");
    load(cache, &calls, "u1", &users, "a").await;
    load(cache, &calls, "u2", &other, "b").await;
    load(cache, &calls, "u1", &elsewhere, "c").await;
    assert_eq!(calls.get(), 3);
    cache
        .delete_by_tags(&["user:1"], Some("tags"))
        .await
        .unwrap();
    load(cache, &calls, "u1", &users, "a").await;
    assert_eq!(calls.get(), 4, "tagged entry recomputed");
    load(cache, &calls, "u2", &other, "b").await;
    load(cache, &calls, "u1", &elsewhere, "c").await;
    assert_eq!(calls.get(), 4, "other tags and other tenants are intact");
    // All tenants at once.
    cache.delete_by_tags_all_tenants(&["user:1"]).await.unwrap();
    load(cache, &calls, "u1", &users, "a").await;
    load(cache, &calls, "u1", &elsewhere, "c").await;
    load(cache, &calls, "u2", &other, "b").await;
    assert_eq!(
        calls.get(),
        6,
        "user:1 recomputed in both tenants, user:2 kept"
    );
}

async fn tenant_invalidation(cache: &Cache) {
    let calls = Calls::default();
    let opts = CacheOptions::new().ttl(Duration::from_secs(60));
    for t in ["ten-a", "ten-b"] {
        tenant::scope(t, load(cache, &calls, "k", &opts, t)).await;
    }
    assert_eq!(calls.get(), 2);
    cache.delete_by_tenant("ten-a").await.unwrap();
    for t in ["ten-a", "ten-b"] {
        tenant::scope(t, load(cache, &calls, "k", &opts, t)).await;
    }
    assert_eq!(calls.get(), 3, "only ten-a recomputed");
}

async fn err_is_not_cached(cache: &Cache) {
    let calls = Calls::default();
    let opts = CacheOptions::new().ttl(Duration::from_secs(60));
    for _ in 0..2 {
        let c = calls.clone();
        let r: Result<u32, String> = cache
            .get_or_compute("err", &opts, || async move {
                c.hit();
                Err("db down".to_owned())
            })
            .await;
        assert_eq!(r, Err("db down".to_owned()));
    }
    assert_eq!(calls.get(), 2, "errors are not cached");
    let c = calls.clone();
    let ok: Result<u32, String> = cache
        .get_or_compute("err", &opts, || async move { Ok(c.hit() as u32) })
        .await;
    assert_eq!(ok, Ok(3));
}

async fn nested_dependencies(cache: &Cache) {
    let calls = Calls::default();
    let outer_opts = CacheOptions::new()
        .ttl(Duration::from_secs(60))
        .tags(["page"])
        .tenant("nest");
    let inner_opts = CacheOptions::new()
        .ttl(Duration::from_secs(60))
        .tags(["user:9"])
        .tenant("nest");
    let outer = || {
        let calls = calls.clone();
        let inner_opts = inner_opts.clone();
        async move {
            let c2 = calls.clone();
            let inner: u64 = cache
                .get_or_compute("inner", &inner_opts, || async move {
                    Ok::<_, ()>(c2.hit() as u64 * 100)
                })
                .await
                .unwrap();
            calls.hit();
            Ok::<_, ()>(inner + 1)
        }
    };
    let first = cache
        .get_or_compute("outer", &outer_opts, outer)
        .await
        .unwrap();
    let again = cache
        .get_or_compute("outer", &outer_opts, outer)
        .await
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(calls.get(), 2, "outer and inner computed once");
    cache
        .delete_by_tags(&["user:9"], Some("nest"))
        .await
        .unwrap();
    let after = cache
        .get_or_compute("outer", &outer_opts, outer)
        .await
        .unwrap();
    assert_ne!(
        after, first,
        "invalidating the inner tag invalidates the outer entry"
    );
    assert_eq!(calls.get(), 4);
}

/// The stale-set race, driven deterministically: the computation starts, the
/// invalidation runs and returns, then the computation finishes with its now
/// stale value. No read after the invalidation may return that value.
async fn stale_set_race_tags(cache: &Cache) {
    let opts = CacheOptions::new()
        .ttl(Duration::from_secs(60))
        .tags(["race"])
        .tenant("race");
    let (go, slow) = slow_computation(cache, "r", &opts).await;
    cache.delete_by_tags(&["race"], Some("race")).await.unwrap();
    go.send(()).unwrap();
    assert_eq!(
        slow.await.unwrap(),
        "old",
        "the slow caller gets its own result"
    );
    let next: String = cache
        .get_or_compute("r", &opts, || async { Ok::<_, ()>("new".to_owned()) })
        .await
        .unwrap();
    assert_eq!(
        next, "new",
        "the value computed before the invalidation is never served after it"
    );
    assert_eq!(
        cache.get::<String>("r", &opts).await.unwrap().as_deref(),
        Some("new")
    );
}

async fn stale_set_race_delete(cache: &Cache) {
    let opts = CacheOptions::new()
        .ttl(Duration::from_secs(60))
        .tenant("race-del");
    cache.set("d", &"v0".to_owned(), &opts).await.unwrap();
    cache.delete("d", &opts).await.unwrap();
    let (go, slow) = slow_computation(cache, "d", &opts).await;
    cache.delete("d", &opts).await.unwrap();
    go.send(()).unwrap();
    slow.await.unwrap();
    assert_eq!(
        cache.get::<String>("d", &opts).await.unwrap(),
        None,
        "delete wins over the in-flight write"
    );
}

async fn stampede_in_process(cache: &Cache) {
    let calls = Calls::default();
    let opts = CacheOptions::new()
        .ttl(Duration::from_secs(60))
        .tenant("stampede");
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (cache, calls, opts) = (cache.clone(), calls.clone(), opts.clone());
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_compute("cold", &opts, || async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok::<_, ()>(calls.hit())
                })
                .await
                .unwrap()
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    assert_eq!(
        calls.get(),
        1,
        "32 concurrent cold callers run the function once"
    );
    assert!(results.iter().all(|r| *r == 1));
}

async fn policies(cache: &Cache, clock: &FakeClock) {
    let calls = Calls::default();
    let opts = CacheOptions::new().policy("short").tenant("pol");
    load(cache, &calls, "p", &opts, "x").await;
    clock.advance(Duration::from_secs(26));
    load(cache, &calls, "p", &opts, "x").await;
    assert_eq!(calls.get(), 1, "the policy's ttl is at least 27 s");
    clock.advance(Duration::from_secs(8));
    load(cache, &calls, "p", &opts, "x").await;
    assert_eq!(calls.get(), 2, "the policy's ttl applies");
    // An unknown policy falls back to the default ttl and counts an error.
    let before = cache.stats().errors;
    load(cache, &calls, "q", &CacheOptions::new().policy("nope"), "x").await;
    assert!(cache.stats().errors > before);
}

/// The suite's configuration, on `clock`.
fn with_policies(b: cacheable::CacheBuilder, clock: &FakeClock) -> cacheable::CacheBuilder {
    b.policy("short", TtlPolicy::new(Duration::from_secs(30)).jitter(0.1))
        .tenant_quota_bytes(64 * 1024)
        .clock(clock.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_passes_the_suite() {
    let clock = FakeClock::new();
    let cache = with_policies(Cache::builder().memory(), &clock)
        .build()
        .await
        .unwrap();
    suite(cache, &clock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_passes_the_suite() {
    let server = RedisServer::start();
    let clock = FakeClock::new();
    let cache = with_policies(
        Cache::builder().redis_url(server.url()).prefix("suite"),
        &clock,
    )
    .build()
    .await
    .unwrap();
    suite(cache, &clock).await;
    assert!(
        cache_health_ok(
            &Cache::builder()
                .redis_url(server.url())
                .build()
                .await
                .unwrap()
        )
        .await
    );
}

async fn cache_health_ok(cache: &Cache) -> bool {
    let h = cache.health().await;
    h.reachable
        && h.latency.is_some()
        && h.used_memory.is_some_and(|m| m > 0)
        && h.backend == "redis"
}

// ------------------------------------------------------------ Redis only

#[tokio::test]
async fn build_fails_only_on_invalid_configuration() {
    // Nothing listens on this port: still a valid configuration.
    let port = cacheable_test_support::free_port();
    let cache = Cache::builder()
        .redis_url(format!("redis://127.0.0.1:{port}/"))
        .build()
        .await;
    let cache = cache.expect("an unreachable Redis is not a build error");
    let h = cache.health().await;
    assert!(!h.reachable && h.error.is_some());
    for bad in [
        Cache::builder().build().await,
        Cache::builder().memory().prefix("").build().await,
        Cache::builder().memory().prefix("a*b").build().await,
        Cache::builder().memory().prefix("{t}").build().await,
        Cache::builder()
            .memory()
            .default_ttl(Duration::ZERO)
            .build()
            .await,
        Cache::builder().redis_url("not a url").build().await,
        Cache::builder()
            .memory()
            .policy("p", TtlPolicy::new(Duration::ZERO))
            .build()
            .await,
    ] {
        let err = bad.expect_err("invalid configuration");
        assert!(matches!(err, cacheable::CacheError::Config(_)), "{err:?}");
    }
    let secret = Cache::builder().redis_url("redis://user:hunter2@127.0.0.1:1/");
    assert!(
        !format!("{secret:?}").contains("hunter2"),
        "Debug never prints passwords"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted() {
    let mut server = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .op_timeout(Duration::from_millis(200))
        .circuit_breaker(3, Duration::from_millis(200), Duration::from_millis(400))
        .build()
        .await
        .unwrap();
    let calls = Calls::default();
    let opts = CacheOptions::new().ttl(Duration::from_secs(60));
    let v = load(&cache, &calls, "k", &opts, "a").await;
    assert_eq!(load(&cache, &calls, "k", &opts, "a").await, v);
    assert_eq!(calls.get(), 1);

    server.kill();
    // Correct results throughout: every call runs the function and returns its value.
    for i in 2..12 {
        let got = load(&cache, &calls, &format!("down{i}"), &opts, "b").await;
        assert_eq!(
            got.id as usize,
            calls.get(),
            "the function's own result is returned"
        );
    }
    let stats = cache.stats();
    assert!(
        stats.computes >= 11,
        "time in queries is counted while Redis is down: {stats:?}"
    );
    assert!(stats.errors >= 3, "errors are counted: {stats:?}");
    assert_eq!(
        cache.health().await.breaker,
        BreakerState::Open,
        "the breaker opened"
    );
    // With the breaker open a call costs no network round trip.
    let started = Instant::now();
    load(&cache, &calls, "fast", &opts, "c").await;
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "open breaker: {:?}",
        started.elapsed()
    );

    server.restart();
    // Caching resumes once a probe succeeds.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let before = calls.get();
        let x = load(&cache, &calls, "resume", &opts, "d").await;
        let y = load(&cache, &calls, "resume", &opts, "d").await;
        // The values carry the call counter: each read is either the value
        // computed by that very call or one cached from an earlier call.
        assert!(x.id as usize <= before + 1, "{x:?}");
        assert!(
            y == x || y.id as usize == calls.get(),
            "the second read is the first's value or its own: {x:?} then {y:?}"
        );
        if calls.get() == before + 1 && y == x {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "caching did not resume after restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(cache.health().await.breaker, BreakerState::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_redis_times_out_and_the_call_still_answers() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .op_timeout(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    let calls = Calls::default();
    let opts = CacheOptions::new().ttl(Duration::from_secs(60));
    load(&cache, &calls, "warm", &opts, "x").await; // connect first
    let reply = server.command(&[b"CLIENT", b"PAUSE", b"700", b"ALL"]);
    assert!(
        reply.starts_with(b"+OK"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    let started = Instant::now();
    let got = load(&cache, &calls, "slow", &opts, "y").await;
    assert_eq!(got.name, "y");
    assert!(
        started.elapsed() < Duration::from_millis(600),
        "bounded by the op timeout: {:?}",
        started.elapsed()
    );
    assert!(cache.stats().errors >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_undecodable_values_are_recomputed() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "g").await;
    let calls = Calls::default();
    let opts = CacheOptions::new()
        .ttl(Duration::from_secs(60))
        .tenant("acme");
    load(&cache, &calls, "k", &opts, "a").await;
    let key = b"g:{t:acme}:k:k";
    assert!(
        server.command(&[b"EXISTS", key]).starts_with(b":1"),
        "the key layout is as documented"
    );
    for garbage in [&b"garbage"[..], b"", &[1u8; 64], &[0xFF; 3]] {
        server.command(&[b"SET", key, garbage]);
        let before = (calls.get(), cache.stats().errors);
        let got = load(&cache, &calls, "k", &opts, "fresh").await;
        assert_eq!(got.name, "fresh", "garbage is never returned");
        assert_eq!(calls.get(), before.0 + 1);
        assert_eq!(
            load(&cache, &calls, "k", &opts, "again").await,
            got,
            "garbage was overwritten"
        );
    }
    // A value whose type changed (no version bump): a codec error, then recomputed.
    let wrong: Result<u64, ()> = cache.get_or_compute("k", &opts, || async { Ok(7) }).await;
    assert_eq!(wrong, Ok(7));
    assert!(cache.stats().errors >= 1);
}

/// The keys of `server` that match `pattern` (a `KEYS` reply, parsed).
fn keys_matching(server: &RedisServer, pattern: &[u8]) -> Vec<Vec<u8>> {
    let reply = server.command(&[b"KEYS", pattern]);
    let mut lines = reply
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let head = lines.next().expect("a reply");
    assert_eq!(head.first(), Some(&b'*'), "an array: {reply:?}");
    lines
        .filter(|l| !l.is_empty() && l[0] != b'$')
        .map(<[u8]>::to_vec)
        .collect()
}

/// A version counter that holds no version (empty, a leading zero, a sign,
/// too long, the separators of a packed reply, another type) never lets the
/// entry be served: the call recomputes, and the counter is replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_version_counters_refuse_the_entry() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "gv").await;
    let calls = Calls::default();
    let opts = CacheOptions::new()
        .ttl(Duration::from_secs(60))
        .tenant("acme")
        .tags(["t"]);
    load(&cache, &calls, "k", &opts, "a").await;
    let counters: Vec<Vec<u8>> = keys_matching(&server, b"gv:*")
        .into_iter()
        .filter(|k| k.ends_with(b":v:g") || k.windows(5).any(|w| w == b":v:t:"))
        .collect();
    // The tenant's generation, the tag in the tenant, the tag in all tenants.
    assert_eq!(counters.len(), 3, "{counters:?}");
    let garbage: [&[u8]; 9] = [
        b"",
        b"0",
        b"012",
        b"-1",
        b"abc",
        b"1,2",
        b"1\n+1",
        b"12345678901234567890",
        &[0xFF, b'1'],
    ];
    for counter in &counters {
        for bad in garbage {
            let before = calls.get();
            let cached = load(&cache, &calls, "k", &opts, "x").await;
            assert_eq!(calls.get(), before, "served from the cache");
            server.command(&[b"SET", counter, bad]);
            let got = load(&cache, &calls, "k", &opts, "fresh").await;
            assert_eq!(
                calls.get(),
                before + 1,
                "{counter:?} = {bad:?} refused the entry"
            );
            assert_ne!(got, cached);
            assert_eq!(load(&cache, &calls, "k", &opts, "again").await, got);
        }
        server.command(&[b"DEL", counter]);
        server.command(&[b"RPUSH", counter, b"1"]);
        let before = calls.get();
        load(&cache, &calls, "k", &opts, "list").await;
        assert_eq!(
            calls.get(),
            before + 1,
            "{counter:?} of another type refused the entry"
        );
    }
    assert_eq!(cache.stats().hits, 9 * 3 * 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_leaves_foreign_keys_alone() {
    let server = RedisServer::start();
    let a = redis_cache(&server, "app").await;
    let b = redis_cache(&server, "app:b").await;
    let opts = CacheOptions::new().ttl(Duration::from_secs(60)).tags(["t"]);
    for c in [&a, &b] {
        c.set("k", &1u8, &opts).await.unwrap();
        tenant::scope("x", c.set("k", &2u8, &opts)).await.unwrap();
    }
    server.command(&[b"SET", b"foreign", b"1"]);
    server.command(&[b"SET", b"app:foreign", b"1"]);
    a.clear().await.unwrap();
    assert_eq!(a.get::<u8>("k", &opts).await.unwrap(), None);
    assert_eq!(
        tenant::scope("x", a.get::<u8>("k", &opts)).await.unwrap(),
        None
    );
    assert_eq!(
        b.get::<u8>("k", &opts).await.unwrap(),
        Some(1),
        "a cache with a longer prefix is untouched"
    );
    assert!(server.command(&[b"GET", b"foreign"]).starts_with(b"$1"));
    assert!(
        server.command(&[b"GET", b"app:foreign"]).starts_with(b"$1"),
        "keys outside the layout survive"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_versions_do_not_grow_without_bound() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .prefix("grow")
        .write_guard(Duration::from_millis(500))
        .build()
        .await
        .unwrap();
    for i in 0..200 {
        let opts = CacheOptions::new()
            .ttl(Duration::from_secs(1))
            .tags([format!("tag{i}")]);
        cache.set(&format!("k{i}"), &i, &opts).await.unwrap();
        cache
            .delete_by_tags(&[&format!("tag{i}")], None)
            .await
            .unwrap();
        cache
            .delete_by_tags(&[&format!("never-used{i}")], None)
            .await
            .unwrap();
    }
    let dbsize = |s: &RedisServer| {
        let r = s.command(&[b"DBSIZE"]);
        String::from_utf8_lossy(&r[1..])
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    assert!(dbsize(&server) >= 400);
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(
        dbsize(&server),
        0,
        "entries, tag versions and counters all expire"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stampede_across_processes_runs_about_once() {
    let server = RedisServer::start();
    let calls = Calls::default();
    // Four caches with their own connections, as four app instances would have.
    let mut caches = Vec::new();
    for _ in 0..4 {
        caches.push(redis_cache(&server, "herd").await);
    }
    let opts = CacheOptions::new().ttl(Duration::from_secs(60));
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (cache, calls, opts) = (caches[i % 4].clone(), calls.clone(), opts.clone());
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_compute("cold", &opts, || async move {
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    Ok::<_, ()>(calls.hit())
                })
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        calls.get() <= 2,
        "40 callers on 4 instances ran the function {} times",
        calls.get()
    );
}

// Key stability across processes: two child processes print the key they
// hash for the same arguments; both match this process and the pinned value.

/// The helper binary the cross-process tests run (`tests/support/child.rs`).
const CHILD: &str = env!("CARGO_BIN_EXE_cacheable-test-child");

fn stable_key() -> String {
    Cache::hash_args(|h| {
        h.arg(&42u64)?;
        h.arg("héllo")?;
        h.arg(&std::collections::HashMap::from([
            ("b", 2),
            ("a", 1),
            ("c", 3),
        ]))?;
        h.arg(&Some(User {
            id: 1,
            name: "x".into(),
        }))
    })
    .unwrap()
}

#[test]
fn keys_are_stable_across_processes() {
    let mut seen = Vec::new();
    for _ in 0..2 {
        let out = std::process::Command::new(CHILD)
            .arg("key")
            .output()
            .unwrap();
        assert!(out.status.success(), "child failed: {out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let key = stdout
            .lines()
            .find_map(|l| l.split_once("KEY=").map(|(_, k)| k.trim()))
            .expect("child printed its key")
            .to_owned();
        seen.push(key);
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[0], stable_key());
    assert_eq!(
        seen[0], "ba3409fadb76a87ec4a8fd51f5b4978f",
        "pinned: changing it changes every key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_and_acl_users() {
    let server = RedisServer::start_with(&["--requirepass", "s3cret"]);
    let port = server.port();
    let calls = Calls::default();
    let opts = CacheOptions::new().ttl(Duration::from_secs(60));

    let good = Cache::builder()
        .redis_url(format!("redis://:s3cret@127.0.0.1:{port}/"))
        .build()
        .await
        .unwrap();
    assert!(good.health().await.reachable);
    load(&good, &calls, "k", &opts, "a").await;
    load(&good, &calls, "k", &opts, "a").await;
    assert_eq!(calls.get(), 1, "authenticated: cached");

    let bad = Cache::builder()
        .redis_url(format!("redis://:wrong@127.0.0.1:{port}/"))
        .build()
        .await
        .unwrap();
    let h = bad.health().await;
    assert!(!h.reachable, "a wrong password is reported by health()");
    assert!(
        !format!("{bad:?}{h:?}").contains("wrong"),
        "the password never appears in Debug output"
    );
    let got = load(&bad, &calls, "k", &opts, "b").await;
    assert_eq!(
        got.name, "b",
        "a cache that cannot authenticate runs the function"
    );
    assert!(bad.stats().errors >= 1);
}

// ------------------------------------------------------------ Redis Cluster

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_passes_the_suite() {
    let cluster = RedisCluster::start(3, 0);
    let clock = FakeClock::new();
    let cache = with_policies(
        Cache::builder()
            .redis_cluster(cluster.urls())
            .prefix("suite"),
        &clock,
    )
    .build()
    .await
    .unwrap();
    suite(cache.clone(), &clock).await;
    let h = cache.health().await;
    assert!(
        h.reachable && h.backend == "redis-cluster" && h.used_memory.is_some_and(|m| m > 0),
        "{h:?}"
    );
    // clear() reaches every shard, and only this prefix.
    let opts = CacheOptions::new().ttl(Duration::from_secs(60));
    for t in ["a", "b", "c", "d", "e", "f"] {
        tenant::scope(t, cache.set("k", &1u8, &opts)).await.unwrap();
    }
    let other = Cache::builder()
        .redis_cluster(cluster.urls())
        .prefix("other")
        .build()
        .await
        .unwrap();
    other.set("k", &2u8, &opts).await.unwrap();
    cache.clear().await.unwrap();
    for t in ["a", "b", "c", "d", "e", "f"] {
        assert_eq!(
            tenant::scope(t, cache.get::<u8>("k", &opts)).await.unwrap(),
            None,
            "tenant {t} cleared"
        );
    }
    assert_eq!(other.get::<u8>("k", &opts).await.unwrap(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_survives_a_master_failover() {
    let mut cluster = RedisCluster::start(3, 1);
    let cache = Cache::builder()
        .redis_cluster(cluster.urls())
        .prefix("fo")
        .op_timeout(Duration::from_millis(300))
        .circuit_breaker(3, Duration::from_millis(200), Duration::from_millis(500))
        .build()
        .await
        .unwrap();
    let calls = Calls::default();
    let opts = CacheOptions::new()
        .ttl(Duration::from_secs(60))
        .tenant("acme")
        .tags(["t"]);
    let first = load(&cache, &calls, "k", &opts, "a").await;
    assert_eq!(load(&cache, &calls, "k", &opts, "a").await, first);
    assert_eq!(calls.get(), 1);

    let victim = cluster.master_of("fo:{t:acme}:k:k");
    cluster.kill(victim);
    let killed_at = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut round = 0;
    loop {
        round += 1;
        let key = format!("after{round}");
        let before = calls.get();
        let a = load(&cache, &calls, &key, &opts, "b").await;
        let b = load(&cache, &calls, &key, &opts, "b").await;
        // Correct results throughout the failover: the value carries the call
        // counter, so a fresh computation and a cached value differ. `key` is
        // new, so `a` is this round's computation; `b` is `a` from the cache
        // or a computation of its own, never anything else.
        assert_eq!(a.name, "b", "correct results throughout the failover");
        assert_eq!(a.id as usize, before + 1, "a new key is computed: {a:?}");
        assert!(
            b == a || (b.name == "b" && b.id as usize == before + 2),
            "the second read is the cached value or a fresh one: {a:?} then {b:?}"
        );
        if calls.get() == before + 1 && a == b {
            eprintln!(
                "caching resumed {:?} after the master was killed",
                killed_at.elapsed()
            );
            break; // the promoted replica serves the slot: caching works again
        }
        if Instant::now() > deadline {
            let live = cluster.nodes().iter().find(|n| n.pid().is_some()).unwrap();
            let nodes = live.command(&[b"CLUSTER", b"NODES"]);
            let probe = cache.set("probe", &1u8, &opts).await;
            let read = cache.get::<u8>("probe", &opts).await;
            panic!(
                "caching did not resume after the failover; set {probe:?} get {read:?} stats {:?} health {:?}; cluster:\n{}",
                cache.stats(),
                cache.health().await,
                String::from_utf8_lossy(&nodes)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Invalidation works on the new master too.
    cache.delete_by_tags(&["t"], Some("acme")).await.unwrap();
    let before = calls.get();
    load(&cache, &calls, &format!("after{round}"), &opts, "c").await;
    assert_eq!(calls.get(), before + 1);
}

/// A cluster whose connection takes longer to set up than the operation
/// timeout (every node behind a proxy that holds bytes 60 ms each way,
/// announced with `cluster-announce-port`, so redis-rs connects through it;
/// setting up is several round trips, one operation is one or two): each
/// call gives up after the timeout, and the connection must come up all
/// the same, as a single Redis' does, rather than start over with every
/// call. Found by `cluster_three_processes_a_delayed_connection` in
/// `tests/local_tier_processes.rs`, where a loaded machine stretched the
/// setup past the timeout and no instance ever reached Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_connects_when_its_setup_outlasts_the_op_timeout() {
    let cluster = RedisCluster::start(3, 0);
    let proxies: Vec<DelayProxy> = cluster
        .nodes()
        .iter()
        .map(|n| DelayProxy::start(n.port(), Duration::from_millis(60)))
        .collect();
    cluster.announce_ports(&proxies.iter().map(DelayProxy::port).collect::<Vec<_>>());
    let cache = Cache::builder()
        .redis_cluster(proxies.iter().map(DelayProxy::redis_url))
        .prefix("slowsetup")
        .op_timeout(Duration::from_millis(250))
        .build()
        .await
        .unwrap();
    let opts = CacheOptions::new().ttl(Duration::from_secs(60)).global();
    let deadline = Instant::now() + Duration::from_secs(10);
    while cache.stats().hits == 0 {
        let v: u64 = cache
            .get_or_compute("k", &opts, || async { Ok::<_, ()>(1) })
            .await
            .unwrap();
        assert_eq!(v, 1);
        assert!(
            Instant::now() < deadline,
            "the cluster connection never came up: {:?}",
            cache.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ------------------------------------------------------------ TLS

#[cfg(feature = "tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_custom_root_and_client_certificates() {
    let opts = CacheOptions::new().ttl(Duration::from_secs(60));
    // Server authentication only.
    let (server, certs) = RedisServer::start_tls(false);
    assert!(server.url().starts_with("rediss://"));
    let cache = Cache::builder()
        .redis_url(server.url())
        .tls_root_certificate(certs.ca_cert.clone())
        .op_timeout(Duration::from_secs(3))
        .build()
        .await
        .unwrap();
    let h = cache.health().await;
    assert!(h.reachable, "{h:?}");
    let calls = Calls::default();
    load(&cache, &calls, "k", &opts, "a").await;
    load(&cache, &calls, "k", &opts, "a").await;
    assert_eq!(calls.get(), 1, "cached over TLS");
    // A client that does not trust the CA cannot connect, and degrades.
    let untrusting = Cache::builder()
        .redis_url(server.url())
        .build()
        .await
        .unwrap();
    assert!(!untrusting.health().await.reachable);
    assert_eq!(load(&untrusting, &calls, "k", &opts, "b").await.name, "b");

    // Mutual TLS: the server requires a client certificate.
    let (mtls, certs) = RedisServer::start_tls(true);
    let without = Cache::builder()
        .redis_url(mtls.url())
        .tls_root_certificate(certs.ca_cert.clone())
        .build()
        .await
        .unwrap();
    assert!(
        !without.health().await.reachable,
        "no client certificate: refused"
    );
    let with = Cache::builder()
        .redis_url(mtls.url())
        .tls_root_certificate(certs.ca_cert.clone())
        .tls_client_certificate(certs.client_cert.clone(), certs.client_key.clone())
        .op_timeout(Duration::from_secs(3))
        .build()
        .await
        .unwrap();
    let h = with.health().await;
    assert!(h.reachable, "{h:?}");
    let calls = Calls::default();
    load(&with, &calls, "k", &opts, "a").await;
    load(&with, &calls, "k", &opts, "a").await;
    assert_eq!(calls.get(), 1, "cached over mutual TLS");
}

#[test]
fn cached_futures_stay_small() {
    // A cached call holds the lookup state inline and the miss path boxed, so
    // nesting cached functions does not multiply the future's size.
    let cache = Cache::memory();
    let opts = CacheOptions::new();
    let fut = cache.get_or_compute("k", &opts, || async { Ok::<u64, ()>(1) });
    let size = std::mem::size_of_val(&fut);
    assert!(size < 1536, "get_or_compute future is {size} bytes");
}

#[cfg(feature = "metrics")]
#[test]
fn metrics_facade_reports_hits_misses_and_compute_time() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let cache = Cache::memory();
            let calls = Calls::default();
            let opts = CacheOptions::new();
            for _ in 0..40 {
                load(&cache, &calls, "m", &opts, "x").await;
            }
            cache.delete_by_tags(&["t"], None).await.unwrap();
        });
    });
    let mut seen = std::collections::HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let function = key
            .key()
            .labels()
            .find(|l| l.key() == "function")
            .map(|l| l.value().to_owned());
        let v = match value {
            DebugValue::Counter(n) => n as f64,
            DebugValue::Histogram(h) => h.len() as f64,
            DebugValue::Gauge(g) => g.into_inner(),
        };
        seen.insert((key.key().name().to_owned(), function), v);
    }
    let f = Some("cache.get_or_compute".to_owned());
    assert_eq!(
        seen.get(&("cacheable_hits_total".into(), f.clone())),
        Some(&39.0),
        "{seen:?}"
    );
    assert_eq!(
        seen.get(&("cacheable_misses_total".into(), f.clone())),
        Some(&1.0)
    );
    assert_eq!(
        seen.get(&("cacheable_compute_seconds".into(), f.clone())),
        Some(&1.0),
        "one computation timed"
    );
    // Hit latency is sampled, one hit in 16: 39 hits give 2 or 3 samples.
    let sampled = seen
        .get(&("cacheable_hit_seconds".into(), f))
        .copied()
        .unwrap_or(0.0);
    assert!((2.0..=3.0).contains(&sampled), "{sampled} hit-time samples");
    assert_eq!(
        seen.get(&("cacheable_invalidations_total".into(), None)),
        Some(&1.0)
    );
}

// A `#[cacheable]` call in one process is a hit for the same call in another:
// the child fills the entry on a shared redis-server, the parent reads it.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Filter {
    tags: std::collections::BTreeMap<String, u32>,
    query: Option<String>,
}

#[cacheable::cacheable(name = "tests.xproc", ttl = 60, tags = ["xproc:{id}"], skip(answer))]
async fn xproc(id: u64, filter: Filter, answer: String) -> String {
    answer
}

fn filter() -> Filter {
    Filter {
        tags: [("b".to_owned(), 2), ("a".to_owned(), 1)]
            .into_iter()
            .collect(),
        query: Some("ü".into()),
    }
}

#[test]
fn a_cached_call_in_one_process_hits_in_another() {
    let server = RedisServer::start();
    let out = std::process::Command::new(CHILD)
        .args(["xproc", &server.url()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "XPROC=from the child",
        "the child computed its own value"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cache = Cache::builder()
            .redis_url(server.url())
            .prefix("xproc")
            .build()
            .await
            .unwrap();
        cacheable::set_global(cache.clone());
        let got = tenant::scope("acme", xproc(7, filter(), "from the parent".into())).await;
        assert_eq!(
            got, "from the child",
            "same arguments, same key, in another process"
        );
        let other = tenant::scope("globex", xproc(7, filter(), "from the parent".into())).await;
        assert_eq!(other, "from the parent", "another tenant, another entry");
        assert_eq!(
            cache
                .stats()
                .function("tests.xproc")
                .map(|f| (f.hits, f.misses)),
            Some((1, 1))
        );
    });
}
