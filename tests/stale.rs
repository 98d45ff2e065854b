//! The stale-read checker (guarantee 2): writers update versioned records and
//! invalidate them; readers assert that no read which started after an
//! invalidation returned sees an older version. It runs 10 s in each of
//! three setups and must count 0 violations; a negative control (writers
//! that skip the invalidation) shows the checker does count them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cacheable::{Cache, cache_evict, cacheable};
use cacheable_test_support::RedisServer;

const RECORDS: usize = 8;
const RUN: Duration = Duration::from_secs(10);

/// The "database": one version per record, and for each record the highest
/// version whose invalidation has returned (a read that starts later must
/// see at least that).
struct World {
    db: Vec<AtomicU64>,
    floor: Vec<AtomicU64>,
    reads: AtomicU64,
    violations: AtomicU64,
    stop: AtomicBool,
}

impl World {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            db: (0..RECORDS).map(|_| AtomicU64::new(0)).collect(),
            floor: (0..RECORDS).map(|_| AtomicU64::new(0)).collect(),
            reads: AtomicU64::new(0),
            violations: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        })
    }
}

/// A tiny, varying delay inside computations, to widen race windows.
async fn jitter(seed: u64) {
    match seed % 4 {
        0 => {}
        1 => tokio::task::yield_now().await,
        _ => tokio::time::sleep(Duration::from_micros(200 * (seed % 7))).await,
    }
}

#[cacheable(ttl = 60, tags = ["rec:{r}"], cache = cache, skip(cache, world))]
async fn load(cache: &Cache, world: &World, r: usize) -> u64 {
    let v = world.db[r].load(Ordering::SeqCst);
    jitter(v.wrapping_add(r as u64)).await;
    v
}

/// `#[cache_evict]` without `strict`: waits for a failed invalidation's
/// retry up to `evict_wait`.
#[cache_evict(tags = ["rec:{r}"], cache = cache, skip(cache))]
async fn invalidate_record(cache: &Cache, r: usize) {}

/// How a writer invalidates.
#[derive(Clone, Copy, PartialEq)]
enum Evict {
    /// Errors are swallowed (as `#[cache_evict]` without `strict`): the
    /// invalidation counts as returned when the call returns.
    Default,
    /// The error is returned (as `strict`): only an `Ok` counts as returned.
    Strict,
    /// Negative control: no invalidation at all.
    Skip,
}

async fn writer(cache: Cache, world: Arc<World>, evict: Evict, seed: u64) {
    let mut i = seed;
    while !world.stop.load(Ordering::SeqCst) {
        i = i.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let r = usize::try_from(i >> 33).unwrap() % RECORDS;
        let v = world.db[r].fetch_add(1, Ordering::SeqCst) + 1;
        let tag = format!("rec:{r}");
        let returned = match evict {
            Evict::Skip => true,
            Evict::Default => {
                invalidate_record(&cache, r).await;
                true
            }
            Evict::Strict => cache.delete_by_tags(&[&tag], None).await.is_ok(),
        };
        if returned {
            world.floor[r].fetch_max(v, Ordering::SeqCst);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn reader(cache: Cache, world: Arc<World>, seed: u64) {
    let mut i = seed;
    while !world.stop.load(Ordering::SeqCst) {
        i = i.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let r = usize::try_from(i >> 33).unwrap() % RECORDS;
        let floor = world.floor[r].load(Ordering::SeqCst);
        let got = load(&cache, &world, r).await;
        world.reads.fetch_add(1, Ordering::Relaxed);
        if got < floor {
            world.violations.fetch_add(1, Ordering::SeqCst);
        }
        if i.is_multiple_of(16) {
            tokio::task::yield_now().await;
        }
    }
}

/// Runs writers and readers on `caches` (one writer and three readers each)
/// for `run`, with `during` running beside them; returns (reads, violations).
async fn check(
    caches: &[(Cache, Evict)],
    run: Duration,
    during: impl std::future::Future<Output = ()>,
) -> (u64, u64) {
    let world = World::new();
    let mut tasks = Vec::new();
    for (n, (cache, evict)) in caches.iter().enumerate() {
        let n = n as u64;
        tasks.push(tokio::spawn(writer(
            cache.clone(),
            world.clone(),
            *evict,
            n + 1,
        )));
        for k in 0..3 {
            tasks.push(tokio::spawn(reader(
                cache.clone(),
                world.clone(),
                100 * (n + 1) + k,
            )));
        }
    }
    let started = Instant::now();
    during.await;
    if let Some(rest) = run.checked_sub(started.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    world.stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    (
        world.reads.load(Ordering::SeqCst),
        world.violations.load(Ordering::SeqCst),
    )
}

async fn redis_cache(server: &RedisServer, op_timeout: Duration) -> Cache {
    Cache::builder()
        .redis_url(server.url())
        .prefix("stale")
        .op_timeout(op_timeout)
        .circuit_breaker(3, Duration::from_millis(100), Duration::from_millis(400))
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_stale_reads_two_instances_on_one_redis() {
    let server = RedisServer::start();
    let a = redis_cache(&server, Duration::from_millis(500)).await;
    let b = redis_cache(&server, Duration::from_millis(500)).await;
    let (reads, violations) = check(
        &[(a.clone(), Evict::Default), (b.clone(), Evict::Default)],
        RUN,
        async {},
    )
    .await;
    eprintln!(
        "two instances: {reads} reads, {violations} stale; {:?}",
        a.stats()
    );
    assert!(reads > 1000, "the checker ran: {reads} reads");
    assert!(
        a.stats().hits > 100,
        "the cache served hits: {:?}",
        a.stats()
    );
    assert_eq!(violations, 0, "stale reads with two instances on one Redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_stale_reads_memory_store() {
    let cache = Cache::memory();
    let (reads, violations) = check(
        &[
            (cache.clone(), Evict::Default),
            (cache.clone(), Evict::Default),
        ],
        RUN,
        async {},
    )
    .await;
    eprintln!(
        "memory: {reads} reads, {violations} stale; {:?}",
        cache.stats()
    );
    assert!(reads > 1000, "the checker ran: {reads} reads");
    assert!(cache.stats().hits > 100);
    assert_eq!(violations, 0, "stale reads on the memory store");
}

/// Redis is frozen (SIGSTOP) for a second, then paused for writes
/// (`CLIENT PAUSE WRITE`) for a second, then killed (-9) and restarted, while
/// version counters are deleted and overwritten with garbage behind the
/// cache's back (as `allkeys-lru` eviction and a stray writer would), and
/// three instances read and write: one evicting with `#[cache_evict]`, two in
/// strict mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_stale_reads_while_redis_is_paused_and_killed() {
    let mut server = RedisServer::start();
    let timeout = Duration::from_millis(100);
    let caches = [
        (redis_cache(&server, timeout).await, Evict::Default),
        (redis_cache(&server, timeout).await, Evict::Strict),
        (redis_cache(&server, timeout).await, Evict::Strict),
    ];
    let pid = server.pid();
    let port = server.port();
    let chaos_stop = Arc::new(AtomicBool::new(false));
    let chaos = std::thread::spawn({
        let stop = chaos_stop.clone();
        move || chaos(port, &stop)
    });
    let faults = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        server.pause();
        tokio::time::sleep(Duration::from_secs(1)).await;
        server.resume();
        tokio::time::sleep(Duration::from_secs(1)).await;
        server.command(&[b"CLIENT", b"PAUSE", b"1000", b"WRITE"]);
        tokio::time::sleep(Duration::from_secs(2)).await;
        server.kill();
        tokio::time::sleep(Duration::from_millis(500)).await;
        server.restart();
    };
    let (reads, violations) = check(&caches, RUN, faults).await;
    chaos_stop.store(true, Ordering::SeqCst);
    let poked = chaos.join().unwrap();
    assert!(poked > 50, "the chaos thread ran: {poked}");
    let stats: Vec<_> = caches.iter().map(|(c, _)| c.stats()).collect();
    eprintln!("faults: {reads} reads, {violations} stale; {stats:?}");
    assert!(pid.is_some());
    assert!(reads > 1000, "the checker ran: {reads} reads");
    assert!(
        stats.iter().all(|s| s.errors > 0),
        "the faults were felt by every instance: {stats:?}"
    );
    assert!(
        stats.iter().all(|s| s.hits > 10),
        "caching resumed after the faults: {stats:?}"
    );
    assert_eq!(violations, 0, "stale reads through SIGSTOP and kill -9");
}

/// Negative control: writers that do not invalidate must be caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_checker_catches_missing_invalidations() {
    let server = RedisServer::start();
    let a = redis_cache(&server, Duration::from_millis(500)).await;
    let b = redis_cache(&server, Duration::from_millis(500)).await;
    let (reads, violations) = check(
        &[(a, Evict::Skip), (b, Evict::Skip)],
        Duration::from_secs(2),
        async {},
    )
    .await;
    assert!(reads > 100);
    assert!(violations > 0, "the checker must see stale reads here");
    let memory = Cache::memory();
    let (_, violations) = check(&[(memory, Evict::Skip)], Duration::from_secs(1), async {}).await;
    assert!(violations > 0, "and on the memory store");
}

/// Every few milliseconds, deletes a record's version counters or writes
/// garbage into them, over its own connection (errors while Redis is down
/// are ignored). Both key layouts are poked (schema 1 used `:tag:`), so the
/// checker exercises either. Returns how many pokes were sent.
fn chaos(port: u16, stop: &AtomicBool) -> u64 {
    use std::io::{Read, Write};
    let mut n = 0u64;
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(15));
        let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            continue;
        };
        let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
        let r = usize::try_from(n).unwrap() % RECORDS;
        for ns in ["{g}:v:t:", "{a}:v:t:", "{g}:tag:", "{a}:tag:"] {
            let key = format!("stale:{ns}rec%3A{r}");
            let cmd = if n.is_multiple_of(3) {
                format!(
                    "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$7\r\ngarbage\r\n",
                    key.len()
                )
            } else {
                format!("*2\r\n$3\r\nDEL\r\n${}\r\n{key}\r\n", key.len())
            };
            if conn.write_all(cmd.as_bytes()).is_err() || conn.read(&mut buf).is_err() {
                break;
            }
        }
        n += 1;
    }
    n
}
