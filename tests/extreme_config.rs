//! No configuration can cause a panic: every setter with extreme values
//! (`Duration::MAX`, `Duration::ZERO`, `u32::MAX`, `u64::MAX`, NaN jitter …)
//! either builds a cache that then serves cached calls on the memory store,
//! or is refused with `CacheError::Config`. Out-of-range values are refused.

use std::time::Duration;

use cacheable::{
    Cache, CacheBuilder, CacheError, CacheOptions, MAX_TTL, TtlPolicy, cacheable, tenant,
};

const DURATIONS: [Duration; 5] = [
    Duration::ZERO,
    Duration::from_nanos(1),
    Duration::from_secs(1),
    MAX_TTL,
    Duration::MAX,
];

type Setter = Box<dyn Fn(CacheBuilder) -> CacheBuilder>;

/// Every setter with every extreme value, named for the failure message.
fn configurations() -> Vec<(String, Setter)> {
    let mut all: Vec<(String, Setter)> = Vec::new();
    for d in DURATIONS {
        all.push((
            format!("default_ttl({d:?})"),
            Box::new(move |b| b.default_ttl(d)),
        ));
        all.push((
            format!("op_timeout({d:?})"),
            Box::new(move |b| b.op_timeout(d)),
        ));
        all.push((
            format!("write_guard({d:?})"),
            Box::new(move |b| b.write_guard(d)),
        ));
        all.push((
            format!("evict_wait({d:?})"),
            Box::new(move |b| b.evict_wait(d)),
        ));
        for e in DURATIONS {
            all.push((
                format!("stampede({d:?}, {e:?})"),
                Box::new(move |b| b.stampede(d, e)),
            ));
            for n in [0, 1, u32::MAX] {
                all.push((
                    format!("circuit_breaker({n}, {d:?}, {e:?})"),
                    Box::new(move |b| b.circuit_breaker(n, d, e)),
                ));
            }
        }
        for jitter in [f64::NAN, -1.0, 0.0, 0.5, 1.0, f64::INFINITY, f64::MAX] {
            for stale in [Duration::ZERO, Duration::MAX] {
                all.push((
                    format!("policy(ttl {d:?}, jitter {jitter}, stale {stale:?})"),
                    Box::new(move |b| b.policy("p", TtlPolicy::new(d).jitter(jitter).stale(stale))),
                ));
            }
        }
    }
    for q in [0, 1, u64::MAX] {
        all.push((
            format!("tenant_quota_bytes({q})"),
            Box::new(move |b| b.tenant_quota_bytes(q)),
        ));
    }
    all.push(("prefix(\"\")".into(), Box::new(|b| b.prefix(""))));
    all.push((
        "prefix(10 KB)".into(),
        Box::new(|b| b.prefix("p".repeat(10_240))),
    ));
    all.push((
        "require_tenant()".into(),
        Box::new(CacheBuilder::require_tenant),
    ));
    all
}

#[cacheable(ttl = 60, name = "extreme.site", cache = cache)]
async fn site(cache: &Cache, x: u64) -> u64 {
    x
}

#[cacheable(policy = "p", name = "extreme.policy", cache = cache)]
async fn with_policy(cache: &Cache, x: u64) -> u64 {
    x + 1
}

/// A few cached calls of every kind, with extreme per-call options too.
async fn exercise(cache: &Cache) {
    for opts in [
        CacheOptions::new(),
        CacheOptions::new().ttl(Duration::MAX).stale(Duration::MAX),
        CacheOptions::new().ttl(Duration::from_nanos(1)),
        CacheOptions::new().policy("p").tags(["t"]),
    ] {
        for _ in 0..2 {
            let v: Result<u64, ()> = cache.get_or_compute("k", &opts, || async { Ok(7) }).await;
            assert_eq!(v, Ok(7));
            let _ = cache.set("s", &1u8, &opts).await;
            let _ = cache.get::<u8>("s", &opts).await;
        }
    }
    assert_eq!(site(cache, 3).await, 3);
    assert_eq!(site(cache, 3).await, 3);
    assert_eq!(with_policy(cache, 3).await, 4);
    assert_eq!(with_policy(cache, 3).await, 4);
    let _ = cache.delete_by_tags(&["t"], None).await;
    let _ = cache.health().await;
    let _ = cache.stats();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_configuration_never_panics() {
    let mut built = 0;
    let mut refused = 0;
    for (name, set) in configurations() {
        match set(Cache::builder().memory()).build().await {
            Ok(cache) => {
                let run =
                    tokio::spawn(async move { tenant::scope("acme", exercise(&cache)).await });
                if let Err(e) = run.await {
                    panic!("`{name}` built a cache whose calls panicked: {e}");
                }
                built += 1;
            }
            Err(CacheError::Config(_)) => refused += 1,
            Err(e) => panic!("`{name}`: not a Config error: {e:?}"),
        }
    }
    assert!(
        built > 50 && refused > 50,
        "{built} built, {refused} refused"
    );
}

#[tokio::test]
async fn out_of_range_values_are_refused() {
    let bad: Vec<(&str, CacheBuilder)> = vec![
        (
            "huge default ttl",
            Cache::builder().default_ttl(Duration::MAX),
        ),
        (
            "ttl over 10 years",
            Cache::builder().default_ttl(MAX_TTL + Duration::from_secs(1)),
        ),
        (
            "huge policy ttl",
            Cache::builder().policy("p", TtlPolicy::new(Duration::MAX)),
        ),
        (
            "huge op timeout",
            Cache::builder().op_timeout(Duration::MAX),
        ),
        (
            "zero lease",
            Cache::builder().stampede(Duration::ZERO, Duration::from_secs(1)),
        ),
        (
            "zero lease wait",
            Cache::builder().stampede(Duration::from_secs(1), Duration::ZERO),
        ),
        (
            "huge lease",
            Cache::builder().stampede(Duration::MAX, Duration::from_secs(1)),
        ),
        (
            "zero breaker threshold",
            Cache::builder().circuit_breaker(0, Duration::from_millis(1), Duration::from_millis(2)),
        ),
        (
            "zero breaker cooldown",
            Cache::builder().circuit_breaker(3, Duration::ZERO, Duration::ZERO),
        ),
        (
            "huge breaker cooldown",
            Cache::builder().circuit_breaker(3, Duration::MAX, Duration::MAX),
        ),
        (
            "huge evict wait",
            Cache::builder().evict_wait(Duration::MAX),
        ),
        (
            "huge write guard",
            Cache::builder().write_guard(Duration::MAX),
        ),
        ("zero quota", Cache::builder().tenant_quota_bytes(0)),
    ];
    for (what, b) in bad {
        let err = b.memory().build().await.expect_err(what);
        assert!(matches!(err, CacheError::Config(_)), "{what}: {err:?}");
    }
    // The limits themselves are accepted.
    Cache::builder()
        .memory()
        .default_ttl(MAX_TTL)
        .policy("p", TtlPolicy::new(MAX_TTL).stale(MAX_TTL))
        .evict_wait(Duration::ZERO)
        .build()
        .await
        .expect("at the limits");
}
