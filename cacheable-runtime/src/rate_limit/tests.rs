//! Unit tests of `rate_limit` (the limiter on Redis and its fallbacks).

use super::*;
use crate::Cache;

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

#[tokio::test]
async fn memory_gcra_admits_a_burst_then_refuses() {
    let cache = Cache::memory();
    let rl = cache.rate_limiter();
    let opts = RateLimitOptions::new(nz(3), Duration::from_secs(60));
    for left in [2, 1, 0] {
        let d = rl.check("k", &opts).await.unwrap();
        assert!(d.allowed);
        assert_eq!(d.remaining, left);
    }
    let d = rl.check("k", &opts).await.unwrap();
    assert!(!d.allowed);
    assert!(d.retry_after > Duration::from_secs(19) && d.retry_after <= Duration::from_secs(20));
    assert_eq!(d.source, Source::Local);
}

#[tokio::test]
async fn memory_sliding_and_fixed_count_cost() {
    let cache = Cache::memory();
    let rl = cache.rate_limiter();
    for alg in [Algorithm::SlidingWindow, Algorithm::FixedWindow] {
        let opts = RateLimitOptions::new(nz(10), Duration::from_secs(3600))
            .algorithm(alg)
            .cost(nz(4));
        assert!(rl.check("c", &opts).await.unwrap().allowed);
        let d = rl.check("c", &opts).await.unwrap();
        assert!(d.allowed);
        assert_eq!(d.remaining, 2);
        assert!(!rl.check("c", &opts).await.unwrap().allowed);
    }
}

#[test]
fn keys_escape_braces_and_keep_the_tenant() {
    let cache = Cache::memory();
    let rl = cache.rate_limiter();
    let opts = RateLimitOptions::new(nz(1), Duration::from_secs(1)).tenant("a}:{b");
    assert_eq!(
        rl.redis_key("login:{x}", &opts),
        "cacheable:{t:a%7D%3A%7Bb}:rlg:login%3A%7Bx%7D"
    );
    let g = RateLimitOptions::new(nz(1), Duration::from_secs(1)).global();
    assert_eq!(rl.redis_key("k", &g), "cacheable:{g}:rlg:k");
}

#[test]
fn retry_after_rounds_up_to_whole_seconds() {
    let r = RateLimited {
        limit: 1,
        remaining: 0,
        reset_after: Duration::ZERO,
        retry_after: Duration::from_millis(1),
        window: Duration::from_secs(1),
        policy: "p".into(),
    };
    assert_eq!(r.retry_after_secs(), 1);
    let r = RateLimited {
        retry_after: Duration::from_millis(41_001),
        ..r
    };
    assert_eq!(r.retry_after_secs(), 42);
}

#[tokio::test]
async fn limiters_are_counted_apart_and_add_up_to_the_totals() {
    let cache = Cache::memory();
    let rl = cache.rate_limiter();
    let login = RateLimitOptions::new(nz(3), Duration::from_secs(60)).name("login");
    let search = RateLimitOptions::new(nz(1), Duration::from_secs(60)).name(String::from("search"));
    for _ in 0..5 {
        rl.check("login:u1", &login).await.unwrap();
    }
    rl.check("search:u1", &search).await.unwrap();
    rl.check("search:u2", &search).await.unwrap();
    rl.check("search:u2", &search).await.unwrap();
    let s = rl.stats();
    let l = s.limiter("login").unwrap();
    assert_eq!((l.allowed, l.denied, l.fallbacks), (3, 2, 0));
    assert!((l.denial_rate() - 0.4).abs() < 1e-9);
    let r = s.limiter("search").unwrap();
    assert_eq!((r.allowed, r.denied), (2, 1));
    assert_eq!(s.limiter("default"), None);
    assert_eq!(
        s.limiters().map(|(n, _)| n).collect::<Vec<_>>(),
        ["login", "search"]
    );
    assert_eq!((s.allowed, s.denied), (5, 3));
    // Serialized: `limiters` is an object by name.
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["limiters"]["login"]["denied"], 2);
    assert_eq!(json["limiters"]["search"]["allowed"], 2);
    assert_eq!(json["denied"], 3);
}

#[tokio::test]
async fn the_limiter_names_are_capped_and_later_ones_count_as_other() {
    let cache = Cache::memory();
    let rl = cache.rate_limiter();
    let opts =
        |i: usize| RateLimitOptions::new(nz(1), Duration::from_secs(60)).name(format!("l{i}"));
    // (Keys apart: the key, not the name, picks the budget.) Two decisions per name: one admitted, one denied.
    for i in 0..300 {
        for _ in 0..2 {
            rl.check(&format!("k{i}"), &opts(i)).await.unwrap();
        }
    }
    // A name seen before the cap still counts apart after it.
    rl.check("k0", &opts(0)).await.unwrap();
    let s = rl.stats();
    assert_eq!(s.limiters().count(), MAX_LIMITERS + 1);
    let other = s.limiter(OTHER_LIMITER).unwrap();
    let late = u64::try_from(300 - MAX_LIMITERS).unwrap();
    assert_eq!((other.allowed, other.denied), (late, late));
    assert_eq!(s.limiter("l0").map(|l| (l.allowed, l.denied)), Some((1, 2)));
    assert_eq!(s.limiter("l255").map(|l| l.allowed), Some(1));
    assert_eq!(s.limiter("l256"), None);
    // Nothing is lost: the per-limiter counts add up to the totals.
    let sum: u64 = s.limiters().map(|(_, l)| l.allowed + l.denied).sum();
    assert_eq!(sum, s.allowed + s.denied);
}

#[tokio::test]
async fn a_limiter_named_other_is_added_to_not_replaced() {
    let cache = Cache::memory();
    let rl = cache.rate_limiter();
    let opts = |name: String| RateLimitOptions::new(nz(5), Duration::from_secs(60)).name(name);
    rl.check("k", &opts(OTHER_LIMITER.to_owned()))
        .await
        .unwrap();
    for i in 0..MAX_LIMITERS {
        rl.check(&format!("k{i}"), &opts(format!("l{i}")))
            .await
            .unwrap();
    }
    let s = rl.stats();
    assert_eq!(s.limiter(OTHER_LIMITER).map(|l| l.allowed), Some(2));
    assert_eq!(s.limiters().count(), MAX_LIMITERS);
}
