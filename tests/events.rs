//! Invalidation between services (`cacheable::events`) against a real
//! `redis-server`: another service's `Cache` (another configuration, the
//! same prefix) and a raw script call following the documented recipe both
//! drop a local-tier entry of instance A before they return; and a network
//! delay between an instance and Redis never lets an invalidation return
//! before that instance stopped serving the old value.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cacheable::{Cache, cacheable, events};
use cacheable_test_support::{DelayProxy, RedisServer};

async fn local(url: String, prefix: &str, lease: Duration) -> Cache {
    Cache::builder()
        .redis_url(url)
        .prefix(prefix)
        .local_cache(1000, Duration::from_secs(60))
        .local_cache_lease(lease)
        // B's round trips take twice the proxy's delay.
        .op_timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap()
}

static DB: [AtomicU64; 4] = [
    AtomicU64::new(1),
    AtomicU64::new(1),
    AtomicU64::new(1),
    AtomicU64::new(1),
];

#[cacheable(name = "events.load", ttl = 60, tags = ["r{r}"], global, cache = cache, skip(cache))]
async fn load(cache: &Cache, r: usize) -> u64 {
    DB[r].load(Ordering::SeqCst)
}

/// Reads record `r` on `cache` until a read is a local hit.
async fn until_local(cache: &Cache, r: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let before = cache.stats().local_hits;
    while cache.stats().local_hits == before {
        assert!(
            Instant::now() < deadline,
            "no local hit: {:?}",
            cache.stats()
        );
        load(cache, r).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A local hit on A right before the write, and none of the old value after
/// the invalidation returned.
async fn assert_invalidates(a: &Cache, r: usize, invalidate: impl AsyncFnOnce()) {
    until_local(a, r).await;
    let old = DB[r].load(Ordering::SeqCst);
    DB[r].store(old + 1, Ordering::SeqCst);
    let hits = a.stats().local_hits;
    assert_eq!(load(a, r).await, old, "A still serves its local entry");
    assert_eq!(a.stats().local_hits, hits + 1);
    invalidate().await;
    assert_eq!(load(a, r).await, old + 1, "A served the old value");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_services_cache_invalidates_a_local_tier() {
    let server = RedisServer::start();
    let a = local(server.url(), "ev1", Duration::from_secs(2)).await;
    // Another service: no local tier, another TTL and timeout, same prefix.
    let b = Cache::builder()
        .redis_url(server.url())
        .prefix("ev1")
        .default_ttl(Duration::from_secs(5))
        .op_timeout(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    assert_invalidates(&a, 0, async || {
        b.delete_by_tags(&["r0"], None).await.unwrap();
    })
    .await;
    assert_invalidates(&a, 0, async || {
        b.delete_by_tags_all_tenants(&["r0"]).await.unwrap();
    })
    .await;
    assert_invalidates(&a, 0, async || b.clear().await.unwrap()).await;
}

/// The recipe of the `events` module docs, as a service in another language
/// would run it: bump and publish with one script, then wait for the
/// acknowledgements of the instances it returned.
async fn raw_invalidate(url: &str, prefix: &str, version_keys: &[String]) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let id = format!("{:032x}", Instant::now().elapsed().as_nanos() ^ 0x5eed);
    let message = serde_json::json!({ "v": 1, "id": id, "keys": version_keys }).to_string();
    let registry = format!("{prefix}:local:instances");
    let mut eval = redis::cmd("EVAL");
    eval.arg(events::INVALIDATE_SCRIPT)
        .arg(version_keys.len() + 1)
        .arg(version_keys)
        .arg(&registry)
        .arg(format!("{prefix}:local:invalidations"))
        .arg(&message);
    let mut waiting: Vec<String> = eval.query_async(&mut conn).await.unwrap();
    assert!(!waiting.is_empty(), "A is registered");
    let deadline = Instant::now() + Duration::from_secs(2);
    while !waiting.is_empty() {
        assert!(
            Instant::now() < deadline,
            "no acknowledgement from {waiting:?}"
        );
        waiting = redis::cmd("EVAL")
            .arg(events::WAIT_SCRIPT)
            .arg(2)
            .arg(&registry)
            .arg(format!("{prefix}:local:ack:{id}"))
            .arg(&waiting)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_script_call_following_the_recipe_invalidates_a_local_tier() {
    let server = RedisServer::start();
    let a = local(server.url(), "ev2", Duration::from_secs(2)).await;
    let url = server.url();
    assert_invalidates(&a, 1, async || {
        raw_invalidate(&url, "ev2", &["ev2:{g}:v:t:r1".to_owned()]).await;
    })
    .await;
    // A version key in another tenant's namespace leaves A's entry alone.
    until_local(&a, 1).await;
    raw_invalidate(&url, "ev2", &["ev2:{t:acme}:v:t:r1".to_owned()]).await;
    let hits = a.stats().local_hits;
    load(&a, 1).await;
    assert_eq!(a.stats().local_hits, hits + 1, "{:?}", a.stats());
}

/// B reaches Redis through a proxy that holds every byte for `delay` each
/// way (its subscription, acknowledgements and renewals); A invalidates.
async fn delayed_instance(prefix: &str, r: usize, delay: Duration) -> Duration {
    let server = RedisServer::start();
    let proxy = DelayProxy::start(server.port(), delay);
    let a = Cache::builder()
        .redis_url(server.url())
        .prefix(prefix)
        .build()
        .await
        .unwrap();
    let b = local(proxy.redis_url(), prefix, Duration::from_secs(2)).await;
    let tag = format!("r{r}");
    let mut took = Duration::ZERO;
    assert_invalidates(&b, r, async || {
        let started = Instant::now();
        a.delete_by_tags(&[tag.as_str()], None).await.unwrap();
        took = started.elapsed();
    })
    .await;
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_channel_delays_the_invalidation_not_the_guarantee() {
    // Delivery and acknowledgement within the acknowledgement timeout: A
    // waits for B's acknowledgement, which takes at least both delays.
    let took = delayed_instance("ev3", 2, Duration::from_millis(40)).await;
    assert!(took >= Duration::from_millis(80), "returned after {took:?}");
    // Past the timeout: A evicts B and waits for its lease instead.
    let took = delayed_instance("ev4", 3, Duration::from_millis(200)).await;
    assert!(
        took >= Duration::from_millis(250),
        "returned after {took:?}"
    );
}
