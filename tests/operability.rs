//! Running a cache in production: the disabled mode (`Cache::disabled`,
//! `CacheBuilder::enabled(false)`), the serialized form of `Stats` and
//! `Health`, and the key tooling of `cacheable::debug` against a real
//! `redis-server`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cacheable::debug::{self, KeyInfo};
use cacheable::{Cache, CacheOptions, RateLimited, cache_evict, cacheable, rate_limit, tenant};
use cacheable_test_support::RedisServer;
use serde::{Serialize, Serializer};

/// Counts how often something ran.
struct Calls(AtomicUsize);

impl Calls {
    const fn new() -> Self {
        Self(AtomicUsize::new(0))
    }
    fn hit(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// A key argument that counts its serializations: each one is key work.
struct Counted<'a>(u64, &'a Calls);

impl Serialize for Counted<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.1.hit();
        s.serialize_u64(self.0)
    }
}

/// A tag argument that counts its renderings.
struct Tagged<'a>(&'a Calls);

impl std::fmt::Display for Tagged<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.hit();
        f.write_str("t")
    }
}

#[cacheable(ttl = 60, cache = cache, skip(cache, body, tag), tags = ["x:{tag}"])]
async fn lookup(cache: &Cache, id: Counted<'_>, tag: Tagged<'_>, body: &Calls) -> u64 {
    body.hit();
    id.0 * 2
}

#[tokio::test]
async fn a_disabled_cache_runs_every_body_with_no_key_work() {
    let (keys, tags, bodies) = (Calls::new(), Calls::new(), Calls::new());
    let off = Cache::disabled();
    for _ in 0..10 {
        assert_eq!(
            lookup(&off, Counted(21, &keys), Tagged(&tags), &bodies).await,
            42
        );
    }
    assert_eq!(bodies.get(), 10, "every call runs its body");
    assert_eq!(keys.get(), 0, "no argument was hashed");
    assert_eq!(tags.get(), 0, "no tag was rendered");
    let stats = off.stats();
    assert!(stats.disabled);
    assert_eq!((stats.hits, stats.misses, stats.errors), (0, 0, 0));
    assert_eq!(stats.functions().count(), 0);

    // The same fn on an enabled cache does the key work (the counters count).
    let on = Cache::memory();
    for _ in 0..2 {
        assert_eq!(
            lookup(&on, Counted(21, &keys), Tagged(&tags), &bodies).await,
            42
        );
    }
    assert_eq!(bodies.get(), 11, "the second call is a hit");
    assert!(
        keys.get() >= 2 && tags.get() >= 2,
        "{} {}",
        keys.get(),
        tags.get()
    );
    assert!(!on.stats().disabled);
}

static EVICTS: Calls = Calls::new();

#[cache_evict(tags = ["x:t"], cache = cache)]
async fn rename(cache: &Cache) -> Result<(), String> {
    EVICTS.hit();
    Ok(())
}

#[cache_evict(tags = ["x:t"], cache = cache, strict)]
async fn rename_strict(cache: &Cache) -> Result<(), cacheable::CacheError> {
    EVICTS.hit();
    Ok(())
}

#[rate_limit(points = 2, duration = 60, by = "global", cache = cache)]
async fn send(cache: &Cache) -> Result<(), RateLimited> {
    Ok(())
}

#[tokio::test]
async fn a_disabled_cache_never_touches_redis() {
    let redis = RedisServer::start();
    let connections = || info_field(&redis, "stats", "total_connections_received");
    let before = connections();
    let off = Cache::builder()
        .redis_url(redis.url())
        .prefix("off")
        .enabled(false)
        .build()
        .await
        .expect("a disabled cache builds");
    assert!(!off.is_enabled());

    let (keys, tags, bodies) = (Calls::new(), Calls::new(), Calls::new());
    for _ in 0..3 {
        lookup(&off, Counted(1, &keys), Tagged(&tags), &bodies).await;
    }
    assert_eq!(bodies.get(), 3);
    // The service API: nothing found, writes and deletes succeed.
    let opts = CacheOptions::new().tenant("acme").tags(["users"]);
    off.set("k", &1u32, &opts).await.expect("set");
    assert_eq!(off.get::<u32>("k", &opts).await.expect("get"), None);
    let computed = Calls::new();
    for _ in 0..2 {
        let v = off
            .get_or_compute("k", &opts, || async {
                computed.hit();
                Ok::<_, ()>(7u32)
            })
            .await;
        assert_eq!(v, Ok(7));
    }
    assert_eq!(
        computed.get(),
        2,
        "get_or_compute runs its closure each time"
    );
    off.delete("k", &opts).await.expect("delete");
    off.delete_by_tags(&["users"], Some("acme"))
        .await
        .expect("tags");
    off.delete_by_tags_all_tenants(&["users"])
        .await
        .expect("all");
    off.delete_by_tenant("acme").await.expect("tenant");
    off.clear().await.expect("clear");
    // `#[cache_evict]`: the body runs, the eviction succeeds doing nothing.
    assert_eq!(rename(&off).await, Ok(()));
    assert_eq!(rename_strict(&off).await.map_err(|e| e.to_string()), Ok(()));
    assert_eq!(EVICTS.get(), 2);
    assert_eq!(off.pending_invalidations(), 0);

    // Rate limits stay enforced, in the process.
    assert!(send(&off).await.is_ok());
    assert!(send(&off).await.is_ok());
    assert!(
        send(&off).await.is_err(),
        "the third call is over the limit"
    );

    let health = off.health().await;
    assert!(health.disabled && health.is_ok() && !health.reachable);
    assert_eq!(health.backend, "disabled");
    assert_eq!(health.error, None);

    // One connection since `before`: the INFO that reads the counter.
    assert_eq!(connections(), before + 1, "the disabled cache connected");
    assert_eq!(resp_int(&redis.command(&[b"DBSIZE"])), 0);
}

#[tokio::test]
async fn enabled_false_needs_no_store_but_enabled_true_does() {
    let off = Cache::builder().enabled(false).build().await;
    assert!(off.is_ok_and(|c| !c.is_enabled()));
    let none = Cache::builder().build().await;
    assert!(matches!(none, Err(cacheable::CacheError::Config(_))));
    // The rest of the configuration is still checked.
    let bad = Cache::builder().enabled(false).prefix("a b").build().await;
    assert!(matches!(bad, Err(cacheable::CacheError::Config(_))));
}

// ----- silence: no warning from a disabled global cache -----

/// Counts every tracing event (of any level) while it is the default.
struct CountEvents(Arc<AtomicUsize>);

impl tracing::Subscriber for CountEvents {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

static GLOBAL_BODIES: Calls = Calls::new();

#[cacheable(ttl = 60, tags = ["g:{id}"])]
async fn on_the_global_cache(id: u64) -> u64 {
    GLOBAL_BODIES.hit();
    id
}

/// The only test of this binary that uses the global cache (and the
/// process-wide "no cache configured" warning).
#[tokio::test(flavor = "current_thread")]
async fn a_disabled_global_cache_is_silent_where_a_missing_one_warns() {
    let events = Arc::new(AtomicUsize::new(0));
    let _guard = tracing::subscriber::set_default(CountEvents(Arc::clone(&events)));
    // No cache at all: the call runs and the warning says so.
    assert_eq!(on_the_global_cache(1).await, 1);
    let warned = events.load(Ordering::SeqCst);
    assert!(warned >= 1, "the missing cache was not reported");

    cacheable::set_global(Cache::disabled());
    for i in 0..100 {
        assert_eq!(on_the_global_cache(i).await, i);
    }
    assert_eq!(GLOBAL_BODIES.get(), 101);
    assert_eq!(
        events.load(Ordering::SeqCst),
        warned,
        "a disabled cache logged"
    );
    let stats = cacheable::global().expect("set").stats();
    assert!(stats.disabled && stats.functions().count() == 0);
}

// ----- serialization -----

#[tokio::test]
async fn stats_and_health_serialize_with_millisecond_durations() {
    let cache = Cache::memory();
    let opts = CacheOptions::new().global();
    for _ in 0..2 {
        let v = cache
            .get_or_compute("slow", &opts, || async {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Ok::<_, ()>(1u8)
            })
            .await;
        assert_eq!(v, Ok(1));
    }
    let stats = serde_json::to_value(cache.stats()).expect("serialize");
    assert_eq!(stats["hits"], 1, "{stats}");
    assert_eq!(stats["misses"], 1, "{stats}");
    assert_eq!(stats["disabled"], false, "{stats}");
    let ms = stats["compute_time_ms"].as_f64().expect("a number");
    assert!((5.0..5_000.0).contains(&ms), "{stats}");
    let f = &stats["functions"]["cache.get_or_compute"];
    assert_eq!(f["computes"], 1, "{stats}");
    assert_eq!(f["compute_time_ms"], stats["compute_time_ms"], "{stats}");
    assert!(f["hit_time_ms"].is_number(), "{stats}");

    let health = serde_json::to_value(cache.health().await).expect("serialize");
    assert_eq!(health["reachable"], true, "{health}");
    assert_eq!(health["disabled"], false, "{health}");
    assert_eq!(health["breaker"], "closed", "{health}");
    assert_eq!(health["backend"], "memory", "{health}");
    assert!(health["latency_ms"].is_number(), "{health}");

    let off = serde_json::to_value(Cache::disabled().health().await).expect("serialize");
    assert_eq!(off["disabled"], true, "{off}");
    assert_eq!(off["latency_ms"], serde_json::Value::Null, "{off}");
    let off = serde_json::to_value(Cache::disabled().stats()).expect("serialize");
    assert_eq!(off["disabled"], true, "{off}");
}

// ----- debug: the keys of a call, as they are in Redis -----

static NESTED: Calls = Calls::new();

#[cacheable(ttl = 60, name = "orgs.name", cache = cache, skip(cache), tags = ["org:{id}"])]
async fn org_name(cache: &Cache, id: u64) -> String {
    format!("org {id}")
}

#[cacheable(ttl = 60, name = "users.card", cache = cache, skip(cache), tags = ["user:{id}"])]
async fn user_card(cache: &Cache, id: u64) -> String {
    NESTED.hit();
    let org = org_name(cache, id / 10).await;
    format!("user {id} of {org}")
}

async fn redis_cache(redis: &RedisServer, prefix: &str) -> Cache {
    Cache::builder()
        .redis_url(redis.url())
        .prefix(prefix)
        .build()
        .await
        .expect("cache")
}

fn exists(redis: &RedisServer, key: &str) -> bool {
    resp_int(&redis.command(&[b"EXISTS", key.as_bytes()])) == 1
}

#[tokio::test]
async fn captured_keys_are_the_keys_in_redis() {
    let redis = RedisServer::start();
    let cache = redis_cache(&redis, "dbg").await;
    // A call outside a capture is not recorded anywhere.
    tenant::scope("acme", user_card(&cache, 5)).await;

    let (card, keys) = debug::capture_keys(tenant::scope("acme", user_card(&cache, 42))).await;
    assert_eq!(card, "user 42 of org 4");
    let names: Vec<&str> = keys.iter().map(|k| k.function.as_str()).collect();
    assert_eq!(names, ["users.card", "orgs.name"], "{keys:?}");
    for info in &keys {
        assert_eq!(info.tenant.as_deref(), Some("acme"));
        assert!(info.entry.starts_with("dbg:{t:acme}:e:"), "{info:?}");
        assert!(exists(&redis, &info.entry), "{info:?} is not in Redis");
        for v in &info.version_keys {
            assert!(exists(&redis, v), "{v} is not in Redis");
        }
    }
    let outer = &keys[0];
    assert_eq!(
        outer.version_keys,
        [
            "dbg:{t:acme}:v:g",
            "dbg:{t:acme}:v:t:user%3A42",
            "dbg:{a}:v:t:user%3A42"
        ]
    );
    // Exactly the entries of the captured calls and of the first call exist.
    let entries = keys_matching(&redis, "dbg:*:e:*");
    assert_eq!(entries.len(), 4, "{entries:?}");
    assert!(keys.iter().all(|k| entries.contains(&k.entry)));

    // A hit is captured too, with the same keys; a disabled cache records none.
    let (_, again) = debug::capture_keys(tenant::scope("acme", user_card(&cache, 42))).await;
    assert_eq!(again[0], keys[0]);
    let off = Cache::disabled();
    let (_, none) = debug::capture_keys(user_card(&off, 42)).await;
    assert_eq!(none, Vec::<KeyInfo>::new());
}

#[tokio::test]
async fn explained_service_keys_are_the_keys_in_redis() {
    let redis = RedisServer::start();
    let cache = redis_cache(&redis, "svc").await;
    let opts = CacheOptions::new().tenant("a:b").tags(["users"]);
    cache.set("stats/1", &5u32, &opts).await.expect("set");
    let info = cache.explain_key("stats/1", &opts).expect("explain");
    assert_eq!(info.tenant.as_deref(), Some("a:b"));
    assert_eq!(info.entry, "svc:{t:a%3Ab}:k:stats%2F1");
    assert_eq!(
        info.version_keys,
        [
            "svc:{t:a%3Ab}:v:k:stats%2F1",
            "svc:{t:a%3Ab}:v:g",
            "svc:{t:a%3Ab}:v:t:users",
            "svc:{a}:v:t:users"
        ]
    );
    assert_eq!(
        keys_matching(&redis, "svc:*}:k:*"),
        std::slice::from_ref(&info.entry)
    );
    for v in &info.version_keys {
        assert!(exists(&redis, v), "{v} is not in Redis");
    }
    // What `get` and `get_or_compute` use, captured, is what was explained.
    let (found, seen) = debug::capture_keys(cache.get::<u32>("stats/1", &opts)).await;
    assert_eq!(found.expect("get"), Some(5));
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (&seen[0].entry, &seen[0].version_keys),
        (&info.entry, &info.version_keys)
    );
    assert_eq!(seen[0].function, "cache.get");
    // Under `require_tenant` with no tenant, as the call itself.
    let strict = Cache::builder()
        .memory()
        .require_tenant()
        .build()
        .await
        .expect("cache");
    assert!(matches!(
        strict.explain_key("k", &CacheOptions::new()),
        Err(cacheable::CacheError::NoTenant)
    ));
}

// ----- helpers -----

fn resp_int(reply: &[u8]) -> i64 {
    String::from_utf8_lossy(&reply[1..])
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("not an integer: {:?}", String::from_utf8_lossy(reply)))
}

fn info_field(redis: &RedisServer, section: &str, field: &str) -> u64 {
    let info = redis.command(&[b"INFO", section.as_bytes()]);
    let text = String::from_utf8_lossy(&info);
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in INFO {section}"))
}

/// `KEYS pattern`, parsed from its RESP array of bulk strings.
fn keys_matching(redis: &RedisServer, pattern: &str) -> Vec<String> {
    let reply = redis.command(&[b"KEYS", pattern.as_bytes()]);
    let text = String::from_utf8_lossy(&reply);
    let mut lines = text.split("\r\n");
    let count: usize = lines
        .next()
        .and_then(|l| l.strip_prefix('*'))
        .and_then(|n| n.parse().ok())
        .expect("an array");
    let mut out: Vec<String> = (0..count)
        .map(|_| {
            lines.next(); // `$len`
            lines.next().expect("a key").to_owned()
        })
        .collect();
    out.sort();
    out
}

/// A key argument whose serialization fails.
struct Unkeyable;

impl Serialize for Unkeyable {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("no key for this value"))
    }
}

#[cacheable(name = "ops.unkeyable", ttl = 60, cache = cache, skip(cache, body))]
async fn unkeyable(cache: &Cache, _id: Unkeyable, body: &Calls) -> u64 {
    body.hit();
    7
}

/// A call whose key cannot be built runs its body every time and is
/// counted like any call that fails open: a miss and an error each, so
/// that `hits + misses` stays the number of calls.
#[tokio::test]
async fn a_call_without_a_key_runs_its_body_and_counts_a_miss() {
    let cache = Cache::memory();
    let bodies = Calls::new();
    for _ in 0..3 {
        assert_eq!(unkeyable(&cache, Unkeyable, &bodies).await, 7);
    }
    assert_eq!(bodies.get(), 3, "nothing was cached");
    let f = cache.stats().function("ops.unkeyable").cloned().unwrap();
    assert_eq!((f.hits, f.misses, f.errors), (0, 3, 3), "{f:?}");
}
