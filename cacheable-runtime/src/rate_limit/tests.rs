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
