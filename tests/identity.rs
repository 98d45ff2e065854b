//! Guarantee 11, "one call site, one identity": distinct functions, methods
//! of distinct types and distinct generic instantiations never share
//! entries or rate-limit budgets; rendered `key` templates are injective;
//! two sites that do share an identity are reported. Also the golden keys
//! of fixed fns, and `#[cache_evict(strict)]`.
//!
//! Each scenario runs on `Cache::memory()` and on a real `redis-server`. This
//! file is its own test binary, so its process-wide conflict counter sees
//! only the one conflict made on purpose below.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cacheable::{Cache, CacheError, RateLimited, cache_evict, cacheable, rate_limit};
use cacheable_test_support::RedisServer;

async fn redis_cache(server: &RedisServer, prefix: &str) -> Cache {
    Cache::builder()
        .redis_url(server.url())
        .prefix(prefix)
        .op_timeout(Duration::from_millis(500))
        .build()
        .await
        .expect("valid configuration")
}

/// The caches every scenario runs on: memory and real Redis.
async fn caches(server: &RedisServer, prefix: &str) -> [Cache; 2] {
    [Cache::memory(), redis_cache(server, prefix).await]
}

// ----- methods of two types in one module -----

mod repos {
    use cacheable::{Cache, cacheable};

    pub struct UserRepo {
        pub cache: Cache,
    }

    pub struct OrgRepo<T> {
        pub cache: Cache,
        pub tag: T,
    }

    impl UserRepo {
        #[cacheable(ttl = 60, cache = self.cache)]
        pub async fn name(&self, id: u64) -> String {
            format!("user {id}")
        }

        #[cacheable(ttl = 60, cache = self.cache, name = "repo.label")]
        pub async fn label(&self, id: u64) -> String {
            format!("user label {id}")
        }
    }

    impl<T: Send + Sync> OrgRepo<T> {
        #[cacheable(ttl = 60, cache = self.cache)]
        pub async fn name(&self, id: u64) -> String {
            format!("org {} {id}", std::any::type_name::<T>())
        }

        #[cacheable(ttl = 60, cache = self.cache, name = "repo.label")]
        pub async fn label(&self, id: u64) -> String {
            format!("org label {} {id}", std::any::type_name::<T>())
        }
    }
}

#[tokio::test]
async fn methods_of_two_types_are_two_entries() {
    let server = RedisServer::start();
    for cache in caches(&server, "methods").await {
        let users = repos::UserRepo {
            cache: cache.clone(),
        };
        let orgs8 = repos::OrgRepo {
            cache: cache.clone(),
            tag: 0u8,
        };
        let orgs16 = repos::OrgRepo {
            cache: cache.clone(),
            tag: 0u16,
        };
        let _ = (orgs8.tag, orgs16.tag);
        assert_eq!(users.name(1).await, "user 1");
        assert_eq!(orgs8.name(1).await, "org u8 1");
        assert_eq!(orgs16.name(1).await, "org u16 1");
        // Hits come from each type's own entry.
        assert_eq!(users.name(1).await, "user 1");
        assert_eq!(orgs8.name(1).await, "org u8 1");

        // With one explicit `name` on both, `Self` still tells them apart.
        assert_eq!(users.label(1).await, "user label 1");
        assert_eq!(orgs8.label(1).await, "org label u8 1");
        assert_eq!(orgs16.label(1).await, "org label u16 1");
        assert_eq!(users.label(1).await, "user label 1");

        // Per-function stats stay keyed by the readable name.
        let stats = cache.stats();
        let f = stats.function("identity::repos::name").unwrap();
        assert_eq!((f.hits, f.misses), (2, 3));
        let f = stats.function("repo.label").unwrap();
        assert_eq!((f.hits, f.misses), (1, 3));
    }
}

// ----- type and const arguments -----

trait Table {
    const NAME: &'static str;
}

struct Users;
struct Orgs;

impl Table for Users {
    const NAME: &'static str = "users";
}

impl Table for Orgs {
    const NAME: &'static str = "orgs";
}

#[cacheable(ttl = 60, cache = cache)]
async fn row_label<T: Table>(cache: &Cache, id: u64) -> String {
    format!("{}#{id}", T::NAME)
}

#[cacheable(ttl = 60, cache = cache, name = "rows.named")]
async fn row_label_named<T: Table>(cache: &Cache, id: u64) -> String {
    format!("{}#{id}", T::NAME)
}

#[cacheable(ttl = 60, cache = cache)]
async fn scaled<const N: u64>(cache: &Cache, x: u64) -> u64 {
    x * N
}

#[cacheable(ttl = 60, cache = cache, name = "scaled.named", key = "{x}")]
async fn scaled_named<const N: u64>(cache: &Cache, x: u64) -> u64 {
    x * N
}

#[tokio::test]
async fn generic_instantiations_are_distinct_entries() {
    let server = RedisServer::start();
    for cache in caches(&server, "generics").await {
        assert_eq!(row_label::<Users>(&cache, 7).await, "users#7");
        assert_eq!(row_label::<Orgs>(&cache, 7).await, "orgs#7");
        assert_eq!(row_label::<Users>(&cache, 7).await, "users#7");
        assert_eq!(row_label_named::<Users>(&cache, 7).await, "users#7");
        assert_eq!(row_label_named::<Orgs>(&cache, 7).await, "orgs#7");

        assert_eq!(scaled::<2>(&cache, 5).await, 10);
        assert_eq!(scaled::<3>(&cache, 5).await, 15);
        assert_eq!(scaled::<2>(&cache, 5).await, 10);
        assert_eq!(scaled_named::<2>(&cache, 5).await, 10);
        assert_eq!(scaled_named::<3>(&cache, 5).await, 15);

        let stats = cache.stats();
        let f = stats.function("identity::row_label").unwrap();
        assert_eq!((f.hits, f.misses), (1, 2));
        let f = stats.function("identity::scaled").unwrap();
        assert_eq!((f.hits, f.misses), (1, 2));
    }
}

// ----- key templates are injective -----

#[cacheable(ttl = 60, cache = cache, key = "{a}:{b}")]
async fn joined(cache: &Cache, a: &str, b: &str) -> String {
    format!("{a}|{b}")
}

#[tokio::test]
async fn key_templates_are_injective() {
    let server = RedisServer::start();
    for cache in caches(&server, "templates").await {
        assert_eq!(joined(&cache, "x:y", "z").await, "x:y|z");
        assert_eq!(joined(&cache, "x", "y:z").await, "x|y:z");
        assert_eq!(joined(&cache, "x%3Ay", "z").await, "x%3Ay|z");
        assert_eq!(joined(&cache, "x:y", "z").await, "x:y|z");
        let stats = cache.stats();
        let f = stats.function("identity::joined").unwrap();
        assert_eq!((f.hits, f.misses), (1, 3));
    }
}

// ----- rate limits: templates and names -----

#[derive(Debug)]
struct Limited;

impl From<RateLimited> for Limited {
    fn from(_: RateLimited) -> Self {
        Limited
    }
}

#[rate_limit(points = 1, duration = 60, key = "{a}:{b}", cache = cache)]
async fn limited_pair(cache: &Cache, a: &str, b: &str) -> Result<(), Limited> {
    let _ = (a, b);
    Ok(())
}

mod a {
    use super::Limited;
    use cacheable::{Cache, rate_limit};

    #[rate_limit(points = 1, duration = 60, by = "global", cache = cache)]
    pub async fn b(cache: &Cache) -> Result<(), Limited> {
        Ok(())
    }
}

#[rate_limit(points = 1, duration = 60, by = "global", name = "identity.a.b", cache = cache)]
async fn dotted(cache: &Cache) -> Result<(), Limited> {
    Ok(())
}

#[tokio::test]
async fn rate_limit_keys_are_injective() {
    let server = RedisServer::start();
    for cache in caches(&server, "limits").await {
        limited_pair(&cache, "x:y", "z").await.unwrap();
        limited_pair(&cache, "x", "y:z")
            .await
            .expect("(\"x\", \"y:z\") has its own budget");
        assert!(limited_pair(&cache, "x:y", "z").await.is_err());

        a::b(&cache).await.unwrap();
        dotted(&cache)
            .await
            .expect("`name = \"identity.a.b\"` is not fn `b` of module `a`");
        assert!(a::b(&cache).await.is_err());
        assert!(dotted(&cache).await.is_err());
    }
}

// ----- conflicts are reported -----

#[cacheable(ttl = 60, cache = cache, name = "conflict.same")]
async fn conflict_one(cache: &Cache, id: u64) -> u64 {
    id
}

#[cacheable(ttl = 60, cache = cache, name = "conflict.same")]
async fn conflict_two(cache: &Cache, id: u64) -> u64 {
    id + 1000
}

#[cacheable(ttl = 60, cache = cache, name = "conflict.generic")]
async fn not_a_conflict<T: Table>(cache: &Cache, id: u64) -> String {
    format!("{}{id}", T::NAME)
}

#[tokio::test]
async fn identical_identities_are_reported_once() {
    let cache = Cache::memory();
    // Instantiations of one site are not conflicts, in any order.
    for _ in 0..2 {
        not_a_conflict::<Users>(&cache, 1).await;
        not_a_conflict::<Orgs>(&cache, 1).await;
    }
    conflict_one(&cache, 1).await;
    conflict_one(&cache, 2).await;
    assert_eq!(cache.stats().identity_conflicts, 0);
    conflict_two(&cache, 3).await;
    assert_eq!(cache.stats().identity_conflicts, 1);
    // Reported once: later calls of either site add nothing.
    for id in 0..5 {
        conflict_one(&cache, id).await;
        conflict_two(&cache, id).await;
    }
    // The counter is process-wide: another cache sees it too.
    assert_eq!(Cache::memory().stats().identity_conflicts, 1);
}

// ----- golden keys -----

#[cacheable(ttl = 60, cache = cache)]
async fn golden_default(cache: &Cache, id: u64) -> u64 {
    id
}

#[cacheable(ttl = 60, cache = cache, name = "golden.named", version = 3, key = "{a}:{b}")]
async fn golden_template(cache: &Cache, a: &str, b: u32) -> String {
    format!("{a}{b}")
}

#[cacheable(ttl = 60, cache = cache, name = "golden.generic", global)]
async fn golden_generic<T: Table, const N: u64>(cache: &Cache) -> u64 {
    N
}

/// Every entry key under `prefix`, sorted.
fn keys(server: &RedisServer, prefix: &str) -> Vec<String> {
    let raw = server.command(&[b"KEYS", format!("{prefix}:*").as_bytes()]);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let mut keys: Vec<String> = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| l.starts_with(prefix) && l.contains(":e:"))
        .map(str::to_owned)
        .collect();
    keys.sort();
    keys
}

/// Pinned: a change here turns every cache cold after an upgrade (it never
/// serves a wrong value). Change only on purpose, and say so in the CHANGELOG.
#[tokio::test]
async fn golden_keys_of_fixed_fns() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "gold").await;
    cacheable::tenant::scope("acme", golden_default(&cache, 42)).await;
    cacheable::tenant::scope("acme", golden_template(&cache, "x:y", 7)).await;
    golden_generic::<Users, 5>(&cache).await;
    assert_eq!(
        keys(&server, "gold"),
        [
            "gold:{g}:e:golden.generic:0:he3a1253749a1b6f942a0185ddbea1958",
            "gold:{t:acme}:e:golden.named:3:t9a902e6744bdf3ac:x%3Ay:%3A:7",
            "gold:{t:acme}:e:identity%3A%3Agolden_default:0:h52337b1fa9d57b23452f81665f93e8d7",
        ]
    );
}

// ----- #[cache_evict(strict)] -----

#[derive(Debug)]
enum AppError {
    Rejected,
    Cache(CacheError),
}

impl From<CacheError> for AppError {
    fn from(e: CacheError) -> Self {
        AppError::Cache(e)
    }
}

static PLAN_CALLS: AtomicUsize = AtomicUsize::new(0);

#[cacheable(ttl = 60, cache = cache, tags = ["plan:{org}"])]
async fn plan(cache: &Cache, org: &str) -> String {
    PLAN_CALLS.fetch_add(1, Ordering::SeqCst);
    format!("{org}: free")
}

#[cache_evict(tags = ["plan:{org}"], cache = cache, strict)]
async fn upgrade(cache: &Cache, org: &str, ok: bool) -> Result<u8, AppError> {
    let _ = org;
    if ok { Ok(1) } else { Err(AppError::Rejected) }
}

#[tokio::test]
async fn strict_eviction_returns_the_invalidation_error() {
    let mut server = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .prefix("strict")
        .op_timeout(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    plan(&cache, "acme").await;
    plan(&cache, "acme").await;
    assert_eq!(PLAN_CALLS.load(Ordering::SeqCst), 1);
    // Ok: the tags are invalidated before the call returns.
    assert_eq!(upgrade(&cache, "acme", true).await.unwrap(), 1);
    plan(&cache, "acme").await;
    assert_eq!(PLAN_CALLS.load(Ordering::SeqCst), 2);
    // The body's own error is returned as it is, without invalidating.
    assert!(matches!(
        upgrade(&cache, "acme", false).await,
        Err(AppError::Rejected)
    ));
    plan(&cache, "acme").await;
    assert_eq!(PLAN_CALLS.load(Ordering::SeqCst), 2);

    // Redis gone: the invalidation fails, and `strict` returns its error.
    server.kill();
    match upgrade(&cache, "acme", true).await {
        Err(AppError::Cache(e)) => assert!(!e.kind().is_empty()),
        other => panic!("expected the invalidation error, got {other:?}"),
    }
}

#[tokio::test]
async fn strict_eviction_on_the_memory_store() {
    let cache = Cache::memory();
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    #[cacheable(ttl = 60, cache = cache, tags = ["t:{id}"])]
    async fn read(cache: &Cache, id: u64) -> u64 {
        CALLS.fetch_add(1, Ordering::SeqCst);
        id
    }
    #[cache_evict(tags = ["t:{id}"], cache = cache, strict, all_tenants)]
    async fn write(cache: &Cache, id: u64) -> Result<(), AppError> {
        let _ = id;
        Ok(())
    }
    cacheable::tenant::scope("t1", read(&cache, 1)).await;
    cacheable::tenant::scope("t1", read(&cache, 1)).await;
    write(&cache, 1).await.unwrap();
    cacheable::tenant::scope("t1", read(&cache, 1)).await;
    assert_eq!(CALLS.load(Ordering::SeqCst), 2);
}
