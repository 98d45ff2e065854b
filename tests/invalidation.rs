//! Invalidations stay in force (guarantee 2): each test drives one way a
//! value computed before an invalidation could come back, against a real
//! `redis-server` and, where it applies, the memory store.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cacheable::{Cache, CacheError, CacheOptions, cache_evict};
use cacheable_test_support::RedisServer;

mod common;
use common::slow_computation as slow;

async fn redis_cache(server: &RedisServer, prefix: &str) -> Cache {
    Cache::builder()
        .redis_url(server.url())
        .prefix(prefix)
        .op_timeout(Duration::from_millis(300))
        .build()
        .await
        .expect("valid configuration")
}

/// `get_or_compute` returning `value`.
async fn read(cache: &Cache, key: &str, opts: &CacheOptions, value: &str) -> String {
    let value = value.to_owned();
    cache
        .get_or_compute(key, opts, || async move { Ok::<_, ()>(value) })
        .await
        .unwrap()
}

fn int_reply(reply: &[u8]) -> i64 {
    String::from_utf8_lossy(&reply[1..]).trim().parse().unwrap()
}

fn info_field(server: &RedisServer, section: &str, field: &str) -> u64 {
    let info = server.command(&[b"INFO", section.as_bytes()]);
    let text = String::from_utf8_lossy(&info);
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in INFO {section}"))
        .trim()
        .parse()
        .unwrap()
}

// ------------------------------------------------------- counter expiry

/// A short-lived entry creates the tag's counter with its short life; a slow
/// computation of another key with that tag snapshots it; the tag is
/// invalidated; the counter expires; the slow write must not bring the
/// old value back (schema 1 recreated the counter at 0, matching the snapshot).
async fn counter_expiry_during_a_computation(cache: &Cache, expire: impl AsyncFnOnce()) {
    let short = CacheOptions::new()
        .ttl(Duration::from_millis(300))
        .tags(["item:5"])
        .tenant("exp");
    let long = CacheOptions::new()
        .ttl(Duration::from_secs(60))
        .tags(["item:5"])
        .tenant("exp");
    read(cache, "short", &short, "s").await;
    let (go, task) = slow(cache, "long", &long).await;
    cache
        .delete_by_tags(&["item:5"], Some("exp"))
        .await
        .unwrap();
    expire().await;
    go.send(()).unwrap();
    assert_eq!(task.await.unwrap(), "old", "the slow caller gets its value");
    assert_eq!(
        read(cache, "long", &long, "new").await,
        "new",
        "a value computed before the invalidation is never served after it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_expiry_during_a_computation_memory() {
    let clock = cacheable::clock::FakeClock::new();
    let cache = Cache::builder()
        .memory()
        .clock(clock.clone())
        .build()
        .await
        .unwrap();
    counter_expiry_during_a_computation(&cache, async || {
        clock.advance(Duration::from_millis(400));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_expiry_during_a_computation_redis() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "exp").await;
    counter_expiry_during_a_computation(&cache, async || {
        let key = b"exp:{t:exp}:v:t:item%3A5";
        assert_eq!(int_reply(&server.command(&[b"EXISTS", key])), 1);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            int_reply(&server.command(&[b"EXISTS", key])),
            0,
            "the counter expired with the short entry"
        );
    })
    .await;
}

// ------------------------------------------------ ABA after a restart

/// A computation snapshots a counter; Redis is killed and restarted empty;
/// the counter comes back and is bumped as many times as before. It must not
/// come back to the snapshotted version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_lost_in_a_restart_never_match() {
    let mut server = RedisServer::start();
    let cache = redis_cache(&server, "aba").await;
    let opts = CacheOptions::new()
        .ttl(Duration::from_secs(60))
        .tags(["t"])
        .tenant("aba");
    read(&cache, "warm", &opts, "w").await;
    cache.delete_by_tags(&["t"], Some("aba")).await.unwrap();
    let (go, task) = slow(&cache, "k", &opts).await;
    server.restart();
    // Wait until the cache reaches the new server and bump the counter once,
    // as the first incarnation was (schema 1 recreated it at 0 + 1: the
    // snapshotted version).
    let deadline = Instant::now() + Duration::from_secs(10);
    while cache.delete_by_tags(&["t"], Some("aba")).await.is_err() {
        assert!(Instant::now() < deadline, "redis did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    while cache.pending_invalidations() > 0 {
        assert!(Instant::now() < deadline, "the retry did not land");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    go.send(()).unwrap();
    assert_eq!(task.await.unwrap(), "old");
    assert_eq!(
        read(&cache, "k", &opts, "new").await,
        "new",
        "a counter recreated after a restart never matches an old snapshot"
    );
}

// --------------------------------------------------- evicted counters

/// `allkeys-lru` evicts counters as readily as entries. A missing counter
/// must not match the versions recorded in an entry. Deterministic part:
/// evict the counter by hand; then a stress part under a real, tight
/// `maxmemory` that checks every read against the database version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_counters_never_match() {
    let server =
        RedisServer::start_with(&["--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru"]);
    let cache = redis_cache(&server, "ev").await;
    let opts = CacheOptions::new()
        .ttl(Duration::from_secs(60))
        .tags(["user:1"])
        .tenant("ev");
    assert_eq!(read(&cache, "k", &opts, "old").await, "old");
    cache.delete_by_tags(&["user:1"], Some("ev")).await.unwrap();
    server.command(&[b"DEL", b"ev:{t:ev}:v:t:user%3A1"]);
    assert_eq!(
        read(&cache, "k", &opts, "new").await,
        "new",
        "an evicted counter never validates an invalidated entry"
    );

    // Stress: 40 records of ~16 KiB each (about 640 KiB live), rewritten and
    // invalidated, with filler that pushes Redis into eviction.
    let db: Arc<Vec<AtomicU64>> = Arc::new((0..40).map(|_| AtomicU64::new(0)).collect());
    let mut stale = 0u32;
    let filler = "x".repeat(16 * 1024);
    for i in 0u64..1500 {
        let r = usize::try_from(i.wrapping_mul(7919) % 40).unwrap();
        let tag = format!("rec:{r}");
        let opts = CacheOptions::new()
            .ttl(Duration::from_secs(60))
            .tags([tag.clone()])
            .tenant("ev");
        if i % 5 == 0 {
            db[r].fetch_add(1, Ordering::SeqCst);
            cache.delete_by_tags(&[&tag], Some("ev")).await.unwrap();
        } else {
            let floor = db[r].load(Ordering::SeqCst);
            let (db, filler) = (db.clone(), filler.clone());
            let got: (u64, String) = cache
                .get_or_compute(&format!("rec{r}"), &opts, || async move {
                    Ok::<_, ()>((db[r].load(Ordering::SeqCst), filler))
                })
                .await
                .unwrap();
            if got.0 < floor {
                stale += 1;
            }
        }
        if i % 100 == 0 {
            // Unrelated filler keys, as another user of the same Redis would write.
            for j in 0..20 {
                let _ = server.command(&[
                    b"SET",
                    format!("filler:{i}:{j}").as_bytes(),
                    filler.as_bytes(),
                ]);
            }
        }
    }
    let evicted = info_field(&server, "stats", "evicted_keys");
    assert!(
        evicted > 0,
        "the stress run must evict keys to mean anything"
    );
    assert_eq!(
        stale, 0,
        "stale reads under allkeys-lru ({evicted} keys evicted)"
    );
}

// ---------------------------------------------------------- garbage

/// A counter holding garbage is no version: it never matches, it does not
/// switch invalidation off (schema 1's INCR failed on it for ever), and it is
/// repaired so that caching resumes.
async fn garbage_in_a_counter(cache: &Cache, poke: impl Fn(&[u8])) {
    let opts = CacheOptions::new()
        .ttl(Duration::from_secs(60))
        .tags(["g"])
        .tenant("gar");
    assert_eq!(read(cache, "k", &opts, "old").await, "old");
    poke(b"not a number");
    assert_eq!(
        read(cache, "k", &opts, "v1").await,
        "v1",
        "garbage never validates an entry"
    );
    assert_eq!(
        read(cache, "k", &opts, "v2").await,
        "v1",
        "repaired: cached again"
    );
    poke(b"12abc");
    cache
        .delete_by_tags(&["g"], Some("gar"))
        .await
        .expect("an invalidation succeeds over garbage");
    assert_eq!(read(cache, "k", &opts, "v3").await, "v3");
    assert_eq!(read(cache, "k", &opts, "v4").await, "v3");
    cache.delete_by_tags(&["g"], Some("gar")).await.unwrap();
    assert_eq!(
        read(cache, "k", &opts, "v5").await,
        "v5",
        "invalidation works again after the repair"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_a_counter_is_repaired_redis() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "gar").await;
    garbage_in_a_counter(&cache, |v| {
        server.command(&[b"SET", b"gar:{t:gar}:v:t:g", v]);
    })
    .await;
    // A counter of the wrong type is garbage too.
    server.command(&[b"DEL", b"gar:{t:gar}:v:t:g"]);
    server.command(&[b"LPUSH", b"gar:{t:gar}:v:t:g", b"x"]);
    let opts = CacheOptions::new()
        .ttl(Duration::from_secs(60))
        .tags(["g"])
        .tenant("gar");
    cache.delete_by_tags(&["g"], Some("gar")).await.unwrap();
    assert_eq!(read(&cache, "k", &opts, "w1").await, "w1");
    assert_eq!(read(&cache, "k", &opts, "w2").await, "w1");
}

// ------------------------------------------------- failed invalidations

/// With Redis frozen, an invalidation fails; it is retried until it lands,
/// and until then this process serves no cached value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_invalidation_is_retried_and_blocks_reads() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "pend").await;
    let other = redis_cache(&server, "pend").await;
    let opts = CacheOptions::new()
        .ttl(Duration::from_secs(60))
        .tags(["t"])
        .tenant("p");
    assert_eq!(read(&cache, "k", &opts, "old").await, "old");
    assert_eq!(read(&other, "k", &opts, "x").await, "old");

    server.pause();
    let err = cache.delete_by_tags(&["t"], Some("p")).await.unwrap_err();
    assert!(
        matches!(err, CacheError::Timeout(_) | CacheError::Connection(_)),
        "{err:?}"
    );
    assert!(cache.pending_invalidations() > 0, "the failure is kept");
    // Reads of this process run the function while the invalidation waits.
    let started = Instant::now();
    assert_eq!(read(&cache, "k", &opts, "fresh").await, "fresh");
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "no store round trip"
    );
    server.resume();

    let deadline = Instant::now() + Duration::from_secs(5);
    while cache.pending_invalidations() > 0 {
        assert!(Instant::now() < deadline, "the retry never landed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(read(&cache, "k", &opts, "new").await, "new");
    assert_eq!(
        read(&other, "k", &opts, "y").await,
        "new",
        "the other instance sees the invalidation too"
    );
}

/// `CLIENT PAUSE WRITE` blocks the invalidation while reads go on: the
/// pausing process must not serve the entry it failed to invalidate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_during_client_pause_write() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "cp").await;
    let opts = CacheOptions::new()
        .ttl(Duration::from_secs(60))
        .tags(["t"])
        .tenant("p");
    assert_eq!(read(&cache, "k", &opts, "old").await, "old");
    server.command(&[b"CLIENT", b"PAUSE", b"1000", b"WRITE"]);
    assert!(cache.delete_by_tags(&["t"], Some("p")).await.is_err());
    assert_eq!(
        read(&cache, "k", &opts, "fresh").await,
        "fresh",
        "reads of this process bypass Redis while the invalidation is pending"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while cache.pending_invalidations() > 0 {
        assert!(Instant::now() < deadline, "the retry never landed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(read(&cache, "k", &opts, "new").await, "new");
}

/// Out of memory under `noeviction`, writes fail but an invalidation must
/// still land (`allow-oom`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_lands_when_redis_is_out_of_memory() {
    let server = RedisServer::start();
    let cache = redis_cache(&server, "oom").await;
    let opts = CacheOptions::new()
        .ttl(Duration::from_secs(60))
        .tags(["t"])
        .tenant("p");
    assert_eq!(read(&cache, "k", &opts, "old").await, "old");
    // 2 MiB of data, then a 1 MiB limit: Redis stays out of memory (a limit
    // merely reached is left again as soon as buffers are freed).
    let big = vec![b'x'; 64 * 1024];
    for i in 0..32 {
        server.command(&[b"SET", format!("fill{i}").as_bytes(), &big]);
    }
    server.command(&[b"CONFIG", b"SET", b"maxmemory-policy", b"noeviction"]);
    server.command(&[b"CONFIG", b"SET", b"maxmemory", b"1mb"]);
    assert!(
        server
            .command(&[b"SET", b"probe", b"1"])
            .starts_with(b"-OOM"),
        "Redis is out of memory"
    );
    cache
        .delete_by_tags(&["t"], Some("p"))
        .await
        .expect("an invalidation runs under OOM");
    cache
        .delete("k", &opts)
        .await
        .expect("a delete runs under OOM");
    assert_eq!(read(&cache, "k", &opts, "new").await, "new");
    assert_eq!(cache.pending_invalidations(), 0);
}

// ------------------------------------- invalidations during a computation

/// `delete_by_tenant` while a value of the tenant is computed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_invalidation_during_a_computation() {
    let server = RedisServer::start();
    for cache in [Cache::memory(), redis_cache(&server, "tn").await] {
        let opts = CacheOptions::new()
            .ttl(Duration::from_secs(60))
            .tenant("acme");
        let (go, task) = slow(&cache, "k", &opts).await;
        cache.delete_by_tenant("acme").await.unwrap();
        go.send(()).unwrap();
        assert_eq!(task.await.unwrap(), "old");
        assert_eq!(read(&cache, "k", &opts, "new").await, "new");
    }
}

/// `delete` while the key is computed, with no entry before (schema 1's
/// tombstone expired, after which the late write went through).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_during_a_computation_of_an_absent_key() {
    let server = RedisServer::start();
    for cache in [Cache::memory(), redis_cache(&server, "dl").await] {
        let opts = CacheOptions::new()
            .ttl(Duration::from_secs(60))
            .tenant("acme");
        let (go, task) = slow(&cache, "k", &opts).await;
        cache.delete("k", &opts).await.unwrap();
        go.send(()).unwrap();
        assert_eq!(task.await.unwrap(), "old");
        assert_eq!(cache.get::<String>("k", &opts).await.unwrap(), None);
        assert_eq!(read(&cache, "k", &opts, "new").await, "new");
    }
}

// ------------------------------------------------- restored snapshots

/// Redis restarts from a snapshot taken before an invalidation: the old
/// counter and the old entry come back together. Every instance checks the
/// server's identity after the connection broke and clears its keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_snapshot_never_serves_invalidated_entries() {
    let mut server = RedisServer::start();
    let a = redis_cache(&server, "snap").await;
    let b = redis_cache(&server, "snap").await;
    let opts = CacheOptions::new()
        .ttl(Duration::from_secs(60))
        .tags(["t"])
        .tenant("p");
    assert_eq!(read(&a, "k", &opts, "old").await, "old");
    assert_eq!(read(&b, "k", &opts, "x").await, "old");
    assert!(server.command(&[b"SAVE"]).starts_with(b"+OK"));
    a.delete_by_tags(&["t"], Some("p")).await.unwrap();
    server.restart();
    assert!(
        int_reply(&server.command(&[b"DBSIZE"])) > 0,
        "the server came back with the snapshot's keys"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        for cache in [&a, &b] {
            assert_eq!(
                read(cache, "k", &opts, "new").await,
                "new",
                "an entry invalidated after the snapshot is never served"
            );
        }
        if a.stats().hits > 0 && b.stats().hits > 1 {
            break;
        }
        assert!(Instant::now() < deadline, "caching never resumed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ------------------------------------------------- #[cache_evict] waits

#[cache_evict(tags = ["t"], cache = cache, skip(cache))]
async fn rename(cache: &Cache) {}

/// A `#[cache_evict]` call whose invalidation fails waits for its retry to
/// land before it returns (up to `evict_wait`): once it has returned, no
/// instance serves the removed entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evict_waits_for_the_invalidation_to_land() {
    let server = RedisServer::start();
    let a = redis_cache(&server, "ew").await;
    let b = redis_cache(&server, "ew").await;
    let opts = CacheOptions::new()
        .ttl(Duration::from_secs(60))
        .tags(["t"])
        .tenant("p");
    assert_eq!(read(&b, "k", &opts, "old").await, "old");
    server.pause();
    let evicting = tokio::spawn({
        let a = a.clone();
        async move { cacheable::tenant::scope("p", rename(&a)).await }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !evicting.is_finished(),
        "the call has not returned while its invalidation cannot land"
    );
    server.resume();
    evicting.await.unwrap();
    assert_eq!(
        read(&b, "k", &opts, "new").await,
        "new",
        "once the call returned, the other instance serves no removed entry"
    );
}

// ------------------------------------------------- result tags (`{ret}`)

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Article {
    slug: String,
    author: u64,
    body: String,
}

/// Holds a computation after it started until the test lets it finish.
struct Gate {
    started: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    go: tokio::sync::Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
}

impl Gate {
    /// The gate, the receiver told when the computation started, and the
    /// sender that lets it finish.
    fn new() -> (
        Arc<Gate>,
        tokio::sync::oneshot::Receiver<()>,
        tokio::sync::oneshot::Sender<()>,
    ) {
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let (go_tx, go_rx) = tokio::sync::oneshot::channel();
        let gate = Gate {
            started: std::sync::Mutex::new(Some(started_tx)),
            go: tokio::sync::Mutex::new(Some(go_rx)),
        };
        (Arc::new(gate), started_rx, go_tx)
    }

    async fn pass(&self) {
        let started = self.started.lock().unwrap().take();
        if let Some(tx) = started {
            tx.send(()).unwrap();
        }
        let go = self.go.lock().await.take();
        if let Some(rx) = go {
            rx.await.unwrap();
        }
    }
}

/// Article `id`, written by author 5, with `body`: its tags come from the
/// result only.
#[cacheable::cacheable(
    ttl = 60,
    tags = ["author:{ret.author}", "article:{ret.slug.to_lowercase()}"],
    cache = cache,
    skip(gate, body)
)]
async fn article(
    cache: &Cache,
    gate: Option<Arc<Gate>>,
    id: u64,
    body: &str,
) -> Result<Article, String> {
    if let Some(gate) = gate {
        gate.pass().await;
    }
    Ok(Article {
        slug: format!("A{id}"),
        author: 5,
        body: body.to_owned(),
    })
}

async fn article_body(cache: &Cache, id: u64, body: &str) -> String {
    cacheable::tenant::scope("t", article(cache, None, id, body))
        .await
        .unwrap()
        .body
}

/// The result tag `author:5` is invalidated (by `invalidate`) while the
/// article is computed; once the invalidation returned, the value computed
/// before it is never served. Returns what the next call served.
async fn result_tag_race(cache: &Cache, invalidate: impl AsyncFnOnce(&Cache)) -> String {
    // Another entry with author 5 creates the tag's counter first.
    assert_eq!(article_body(cache, 2, "other").await, "other");
    let (gate, started, go) = Gate::new();
    let slow = tokio::spawn({
        let cache = cache.clone();
        async move {
            cacheable::tenant::scope("t", article(&cache, Some(gate), 1, "old"))
                .await
                .unwrap()
                .body
        }
    });
    started.await.unwrap();
    invalidate(cache).await;
    go.send(()).unwrap();
    assert_eq!(slow.await.unwrap(), "old", "the slow caller gets its value");
    article_body(cache, 1, "new").await
}

/// Step 6 of the protocol: a result tag's version is read after the body,
/// so the tag epoch snapshotted before it must catch an invalidation that
/// landed meanwhile, in the tenant and across all tenants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_tag_invalidated_during_a_computation() {
    let server = RedisServer::start();
    for cache in [Cache::memory(), redis_cache(&server, "rt").await] {
        let served = result_tag_race(&cache, async |c: &Cache| {
            c.delete_by_tags(&["author:5"], Some("t")).await.unwrap();
        })
        .await;
        assert_eq!(served, "new", "a value computed before the invalidation");
        cache.clear().await.unwrap();
        let served = result_tag_race(&cache, async |c: &Cache| {
            c.delete_by_tags_all_tenants(&["article:a1"]).await.unwrap();
        })
        .await;
        assert_eq!(served, "new", "all tenants: a value computed before it");
    }
}

/// The negative control: with the epoch check disabled (reading the result
/// tags' versions after the body, as a naive implementation would), the
/// same race serves the value computed before the invalidation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_tag_race_without_the_epoch_serves_stale_values() {
    let server = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .prefix("naive")
        .unchecked_result_tags_for_tests()
        .build()
        .await
        .unwrap();
    let served = result_tag_race(&cache, async |c: &Cache| {
        c.delete_by_tags(&["author:5"], Some("t")).await.unwrap();
    })
    .await;
    assert_eq!(served, "old", "the race the epoch closes");
}

/// Invalidating a tag that only the result carried evicts the entry, and
/// only that tag's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_tags_invalidate_the_entry() {
    let server = RedisServer::start();
    for cache in [Cache::memory(), redis_cache(&server, "rti").await] {
        assert_eq!(article_body(&cache, 7, "v1").await, "v1");
        assert_eq!(article_body(&cache, 7, "v2").await, "v1", "cached");
        cache
            .delete_by_tags(&["author:6"], Some("t"))
            .await
            .unwrap();
        assert_eq!(article_body(&cache, 7, "v3").await, "v1", "another author");
        cache
            .delete_by_tags(&["author:5"], Some("t"))
            .await
            .unwrap();
        assert_eq!(article_body(&cache, 7, "v4").await, "v4", "evicted");
        assert_eq!(article_body(&cache, 7, "v5").await, "v4", "cached again");
        cache
            .delete_by_tags(&["article:a7"], Some("t"))
            .await
            .unwrap();
        assert_eq!(article_body(&cache, 7, "v6").await, "v6", "method tag");
    }
}

#[cacheable::cacheable(ttl = 60, tags = ["article:{slug}"], cache = cache, skip(body))]
async fn by_slug(cache: &Cache, slug: &str, body: &str) -> Result<Article, String> {
    Ok(Article {
        slug: slug.to_owned(),
        author: 1,
        body: body.to_owned(),
    })
}

/// Renames article `id` to `slug`: evicts the entries of the new slug.
#[cache_evict(tags = ["article:{ret.slug}"], cache = cache)]
async fn rename_article(cache: &Cache, id: u64, slug: &str) -> Result<Article, String> {
    if slug.is_empty() {
        return Err("empty slug".into());
    }
    Ok(Article {
        slug: slug.to_owned(),
        author: id,
        body: String::new(),
    })
}

/// `#[cache_evict]` renders `{ret..}` from the `Ok` value after the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_evict_tags_from_the_result() {
    let server = RedisServer::start();
    for cache in [Cache::memory(), redis_cache(&server, "rte").await] {
        let body = async |slug: &str, body: &str| by_slug(&cache, slug, body).await.unwrap().body;
        assert_eq!(body("new", "v1").await, "v1");
        assert_eq!(body("new", "v2").await, "v1", "cached");
        assert!(rename_article(&cache, 1, "").await.is_err());
        assert_eq!(body("new", "v3").await, "v1", "an `Err` evicts nothing");
        rename_article(&cache, 1, "new").await.unwrap();
        assert_eq!(
            body("new", "v4").await,
            "v4",
            "the new slug's entry is evicted"
        );
    }
}

static NONE_RUNS: AtomicU64 = AtomicU64::new(0);

#[cacheable::cacheable(ttl = 60, tags = ["article:{ret.slug}"], cache = cache, cache_none)]
async fn maybe_article(cache: &Cache, id: u64) -> Option<Article> {
    NONE_RUNS.fetch_add(1, Ordering::Relaxed);
    (id > 0).then(|| Article {
        slug: format!("a{id}"),
        author: 1,
        body: String::new(),
    })
}

/// `cache_none` with result tags: a `None` has no tags to carry, so it is
/// not stored (it could never be invalidated by them); `Some` is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_with_result_tags_is_not_stored() {
    let cache = Cache::memory();
    let runs = || NONE_RUNS.load(Ordering::Relaxed);
    let before = runs();
    assert_eq!(maybe_article(&cache, 0).await, None);
    assert_eq!(maybe_article(&cache, 0).await, None);
    assert_eq!(runs() - before, 2, "`None` is recomputed");
    assert!(maybe_article(&cache, 3).await.is_some());
    assert!(maybe_article(&cache, 3).await.is_some());
    assert_eq!(runs() - before, 3, "`Some` is cached");
}
