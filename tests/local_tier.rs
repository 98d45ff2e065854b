//! The local in-process tier (`CacheBuilder::local_cache`) against a real
//! `redis-server`: local hits and their counts, the opt-out, and guarantee 2
//! across instances under each failure path of the protocol in the
//! runtime's `local` module docs (a killed subscription, a paused instance
//! in a child process, a restarted Redis), with a checker and its negative
//! control.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cacheable::{Cache, CacheError, cacheable};
use cacheable_test_support::{DelayProxy, RedisCluster, RedisServer};

const LEASE: Duration = Duration::from_secs(1);

async fn plain(server: &RedisServer, prefix: &str) -> Cache {
    Cache::builder()
        .redis_url(server.url())
        .prefix(prefix)
        .build()
        .await
        .unwrap()
}

async fn local(server: &RedisServer, prefix: &str) -> Cache {
    Cache::builder()
        .redis_url(server.url())
        .prefix(prefix)
        .local_cache(10_000, Duration::from_secs(60))
        .local_cache_lease(LEASE)
        .build()
        .await
        .unwrap()
}

/// The "database" of the tests: one value per record.
struct Db(Vec<AtomicU64>);

impl Db {
    fn new() -> Arc<Self> {
        Arc::new(Self((0..8).map(|_| AtomicU64::new(1)).collect()))
    }
}

#[cacheable(name = "local.load", ttl = 60, tags = ["r{r}"], global, cache = cache, skip(cache, db))]
async fn load(cache: &Cache, db: &Db, r: usize) -> u64 {
    db.0[r].load(Ordering::SeqCst)
}

#[cacheable(name = "local.remote", ttl = 60, tags = ["r{r}"], global, local = false, cache = cache, skip(cache, db))]
async fn load_remote(cache: &Cache, db: &Db, r: usize) -> u64 {
    db.0[r].load(Ordering::SeqCst)
}

/// Reads record `r` on `cache` until a read is a local hit (the instance
/// registered and the entry is in its tier).
async fn until_local(cache: &Cache, db: &Db, r: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let before = cache.stats().local_hits;
    while cache.stats().local_hits == before {
        assert!(
            Instant::now() < deadline,
            "no local hit: {:?}",
            cache.stats()
        );
        load(cache, db, r).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Bumps the version of tag `r{r}` behind every cache's back: an
/// invalidation that does not go through the channel (the naive local tier).
fn raw_bump(server: &RedisServer, prefix: &str, r: usize) {
    let key = format!("{prefix}:{{a}}:v:t:r{r}");
    server.command(&[b"INCR", key.as_bytes()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_hits_are_counted_and_local_false_opts_out() {
    let server = RedisServer::start();
    let b = local(&server, "lt1").await;
    let db = Db::new();
    until_local(&b, &db, 0).await;
    let s = b.stats();
    let f = s.function("local.load").unwrap();
    assert!(f.local_hits >= 1 && f.local_hits <= f.hits, "{f:?}");
    assert_eq!(s.local_hits, f.local_hits);
    assert!(b.local_entries() >= 1);
    for _ in 0..20 {
        assert_eq!(load_remote(&b, &db, 0).await, 1);
    }
    let s = b.stats();
    let f = s.function("local.remote").unwrap();
    assert_eq!(
        f.local_hits, 0,
        "`local = false` is never served locally: {f:?}"
    );
    assert!(f.hits >= 18, "{f:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_instance_invalidation_is_immediate() {
    let server = RedisServer::start();
    let b = local(&server, "lt2").await;
    let db = Db::new();
    until_local(&b, &db, 1).await;
    db.0[1].store(2, Ordering::SeqCst);
    b.delete_by_tags(&["r1"], None).await.unwrap();
    assert_eq!(load(&b, &db, 1).await, 2);
    until_local(&b, &db, 1).await;
    db.0[1].store(3, Ordering::SeqCst);
    b.clear().await.unwrap();
    assert_eq!(load(&b, &db, 1).await, 3);
}

/// Its tag comes from a skipped argument: calls that differ only in `group`
/// share one entry key but depend on different tags.
#[cacheable(name = "local.grouped", ttl = 60, tags = ["g{group}"], global, cache = cache, skip(cache, group))]
async fn grouped(cache: &Cache, group: u32, r: usize) -> u32 {
    let _ = r;
    group
}

/// The Redis read refuses an entry recorded under other tags than the
/// call's (`deps_current`); a local hit must refuse it too, else a call
/// would be served a value that its own tags' invalidations never reach.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_entry_is_not_served_to_a_call_with_other_tags() {
    let server = RedisServer::start();
    let b = local(&server, "lt8").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let before = b.stats().local_hits;
    while b.stats().local_hits == before {
        assert!(Instant::now() < deadline, "no local hit: {:?}", b.stats());
        assert_eq!(grouped(&b, 1, 0).await, 1);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for _ in 0..3 {
        assert_eq!(
            grouped(&b, 2, 0).await,
            2,
            "the entry of tag g1 served to a call tagged g2"
        );
        assert_eq!(grouped(&b, 1, 0).await, 1);
    }
    // Once group 2's entry is the one held (and local), it is still
    // invalidated by its own tag.
    let before = b.stats().local_hits;
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.stats().local_hits == before {
        assert!(Instant::now() < deadline, "no local hit: {:?}", b.stats());
        assert_eq!(grouped(&b, 2, 0).await, 2);
    }
    let computed = b.stats().misses;
    b.delete_by_tags(&["g2"], None).await.unwrap();
    assert_eq!(grouped(&b, 2, 0).await, 2);
    assert_eq!(b.stats().misses, computed + 1, "g2 invalidated the entry");
}

/// Readers on `b` (local tier) and a writer on `a` that updates the database
/// and invalidates (through the cache, or, for the negative control, behind
/// its back); counts reads that started after an invalidation returned and
/// still saw an older value.
async fn checker(
    raw_bump: impl Fn(usize),
    a: Cache,
    b: Cache,
    through_channel: bool,
) -> (u64, u64) {
    let db = Db::new();
    let floor: Arc<Vec<AtomicU64>> = Arc::new((0..8).map(|_| AtomicU64::new(1)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let (reads, violations) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    until_local(&b, &db, 0).await;
    let mut tasks = Vec::new();
    for k in 0..3u64 {
        let (b, db, floor, stop) = (b.clone(), db.clone(), floor.clone(), stop.clone());
        let (reads, violations) = (reads.clone(), violations.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = k;
            while !stop.load(Ordering::SeqCst) {
                i = i.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let r = usize::try_from(i >> 61).unwrap();
                let min = floor[r].load(Ordering::SeqCst);
                if load(&b, &db, r).await < min {
                    violations.fetch_add(1, Ordering::SeqCst);
                }
                reads.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        }));
    }
    let started = Instant::now();
    let mut i = 7u64;
    let mut latencies = Vec::new();
    while started.elapsed() < Duration::from_secs(3) {
        i = i.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let r = usize::try_from(i >> 61).unwrap();
        let v = db.0[r].fetch_add(1, Ordering::SeqCst) + 1;
        if through_channel {
            let t = Instant::now();
            a.delete_by_tags_all_tenants(&[&format!("r{r}")])
                .await
                .unwrap();
            latencies.push(t.elapsed());
        } else {
            raw_bump(r);
        }
        floor[r].fetch_max(v, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    stop.store(true, Ordering::SeqCst);
    if !latencies.is_empty() {
        latencies.sort_unstable();
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
        eprintln!(
            "{} invalidations across instances: p50 {:?}, p99 {:?}, max {:?}",
            latencies.len(),
            at(0.5),
            at(0.99),
            at(1.0)
        );
    }
    for t in tasks {
        t.await.unwrap();
    }
    (
        reads.load(Ordering::SeqCst),
        violations.load(Ordering::SeqCst),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_invalidation_on_one_instance_is_seen_by_another() {
    let server = RedisServer::start();
    // The invalidator has no tier of its own: it waits for B all the same.
    let a = plain(&server, "lt3").await;
    let b = local(&server, "lt3").await;
    let (reads, violations) = checker(|r| raw_bump(&server, "lt3", r), a, b.clone(), true).await;
    eprintln!(
        "through the channel: {reads} reads, {violations} stale; {:?}",
        b.stats()
    );
    assert!(reads > 1000, "{reads} reads");
    assert!(b.stats().local_hits > 1000, "{:?}", b.stats());
    assert_eq!(violations, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn negative_control_an_invalidation_that_skips_the_channel_is_stale() {
    let server = RedisServer::start();
    let a = plain(&server, "lt4").await;
    let b = local(&server, "lt4").await;
    let (reads, violations) = checker(|r| raw_bump(&server, "lt4", r), a, b, false).await;
    eprintln!("behind the channel: {reads} reads, {violations} stale");
    assert!(violations > 0, "the checker sees stale local reads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_subscription_stops_local_hits_and_drops_everything() {
    let server = RedisServer::start();
    let b = local(&server, "lt5").await;
    let db = Db::new();
    until_local(&b, &db, 2).await;
    assert!(b.local_entries() > 0);
    let killed = server.command(&[b"CLIENT", b"KILL", b"TYPE", b"pubsub"]);
    assert_eq!(killed, b":1\r\n", "one subscription killed");
    after_a_killed_subscription(&b, &db, || raw_bump(&server, "lt5", 2)).await;
}

/// After `b`'s subscription was killed: it drops its tier, and a bump of
/// record 2 behind the channel's back (`bump`) is never missed by a read;
/// it serves locally again afterwards.
async fn after_a_killed_subscription(b: &Cache, db: &Db, bump: impl FnOnce()) {
    // The instance learns of the kill when its connection reads the close:
    // until then an invalidation still waits for its acknowledgement (or its
    // lease), so only a bump behind the channel's back could be missed. Wait
    // until it has seen the close and dropped its tier.
    let noticed = Instant::now() + Duration::from_secs(5);
    while b.local_entries() > 0 {
        assert!(Instant::now() < noticed, "the tier was never dropped");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Behind the channel's back: only a tier that dropped everything on
    // reconnecting (and did not serve while it was down) reads 2.
    db.0[2].store(2, Ordering::SeqCst);
    bump();
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        assert_eq!(load(b, db, 2).await, 2);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    until_local(b, db, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_redis_drops_everything() {
    let mut server = RedisServer::start();
    let b = local(&server, "lt6").await;
    let db = Db::new();
    until_local(&b, &db, 3).await;
    db.0[3].store(2, Ordering::SeqCst);
    // No persistence: the new server has no entry and no version, and no
    // invalidation ever reaches B's tier.
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        assert_eq!(load(&b, &db, 3).await, 2);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    until_local(&b, &db, 3).await;
}

/// An instance that one invalidation evicted (it did not acknowledge in
/// time) still serves locally until its lease runs out: an invalidation
/// published meanwhile by another invalidator must wait for it too, not
/// find it gone from the registry and return at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_evicted_by_one_invalidation_is_still_waited_for_by_the_next() {
    let server = RedisServer::start();
    let proxy = DelayProxy::start(server.port(), Duration::ZERO);
    // A long operation timeout: B's renewals and pings wait out the delay
    // below instead of ending its session early; B serves locally until its
    // refused renewal comes back (at least 1.2 s after the delay is set).
    let b = Cache::builder()
        .redis_url(proxy.redis_url())
        .prefix("lt7")
        .local_cache(10_000, Duration::from_secs(60))
        .local_cache_lease(Duration::from_secs(2))
        .op_timeout(Duration::from_secs(3))
        .build()
        .await
        .unwrap();
    let (a1, a2) = (plain(&server, "lt7").await, plain(&server, "lt7").await);
    let db = Db::new();
    until_local(&b, &db, 4).await;
    until_local(&b, &db, 5).await;
    // B's acknowledgements now take longer than the acknowledgement timeout.
    proxy.set_delay(Duration::from_millis(600));
    let first = tokio::spawn(async move { a1.delete_by_tags(&["r4"], None).await });
    // Past the first invalidation's eviction of B.
    tokio::time::sleep(Duration::from_millis(400)).await;
    db.0[5].store(2, Ordering::SeqCst);
    let started = Instant::now();
    a2.delete_by_tags(&["r5"], None).await.unwrap();
    let took = started.elapsed();
    // The queued bytes still arrive in order; only the read below is quicker.
    proxy.set_delay(Duration::ZERO);
    assert_eq!(
        load(&b, &db, 5).await,
        2,
        "B served the old value after an invalidation returned (in {took:?})"
    );
    first.await.unwrap().unwrap();
}

/// The node a stand-in instance talks to, and the protocol's names there
/// (`Keys` in the runtime's `local::scripts`).
#[derive(Clone)]
struct Node {
    url: String,
    channel: String,
    registry: String,
    /// The acknowledgement set's name, before the message id.
    ack: String,
    /// The reply channel's name, before the reply id.
    replies: String,
}

impl Node {
    fn single(server: &RedisServer, prefix: &str) -> Self {
        Self {
            url: server.url(),
            channel: format!("{prefix}:local:invalidations"),
            registry: format!("{prefix}:local:instances"),
            ack: format!("{prefix}:local:ack:"),
            replies: format!("{prefix}:local:acks:"),
        }
    }

    /// The master of the registry's slot, where the acknowledgement sets
    /// live too (a classic `PUBLISH` reaches every node).
    fn cluster(cluster: &RedisCluster, prefix: &str) -> Self {
        let home = &cluster.nodes()[cluster.master_of(&registry(prefix))];
        Self {
            url: home.url(),
            channel: format!("{prefix}:local:invalidations"),
            registry: registry(prefix),
            ack: format!("{prefix}:local:{{{prefix}.local}}:ack:"),
            replies: format!("{prefix}:local:acks:"),
        }
    }

    /// `PUBSUB CHANNELS` on this node matching `pattern`.
    fn channels(&self, pattern: &str) -> String {
        let mut conn = redis::Client::open(self.url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        let names: Vec<String> = redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .arg(pattern)
            .query(&mut conn)
            .unwrap();
        names.join(" ")
    }
}

/// A stand-in for another instance, on a plain thread with redis-rs and
/// nothing of this crate: it subscribes, registers as `fake` (a lease far in
/// the future), and acknowledges message `n` after `delay(n)` exactly as the
/// format in `cacheable::events` says: `SADD` to the acknowledgement set,
/// then, when `push` and the message names a `reply`, `PUBLISH` the message
/// id on `<p>:local:acks:<reply>`. Without `push` it is an instance of an
/// older version or another language, found only by polling. Returns the
/// thread and, per message, when its `SADD` was about to be sent (the
/// invalidator's `WAIT` script cannot find the acknowledgement earlier).
fn fake_acker(
    at: &Node,
    push: bool,
    delay: fn(usize) -> Duration,
    stop: Arc<AtomicBool>,
) -> (std::thread::JoinHandle<usize>, Arc<Mutex<Vec<Instant>>>) {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let acked_by = Arc::clone(&acked);
    let client = redis::Client::open(at.url.as_str()).unwrap();
    let Node {
        channel,
        registry,
        ack,
        replies,
        ..
    } = at.clone();
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let mut sub = client.get_connection().unwrap();
        let mut conn = client.get_connection().unwrap();
        let mut pubsub = sub.as_pubsub();
        pubsub.subscribe(&channel).unwrap();
        pubsub
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let () = redis::cmd("ZADD")
            .arg(&registry)
            .arg(9_000_000_000_000_000_i64)
            .arg("fake")
            .query::<i64>(&mut conn)
            .map(drop)
            .unwrap();
        ready_tx.send(()).unwrap();
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) {
            let Ok(msg) = pubsub.get_message() else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_slice(msg.get_payload_bytes()).unwrap();
            let id = v["id"].as_str().unwrap();
            std::thread::sleep(delay(n));
            n += 1;
            // Recorded before the `SADD` is sent: the invalidator cannot
            // see the acknowledgement earlier (after it, a poll may find
            // the acknowledgement before this thread has its reply).
            acked_by.lock().unwrap().push(Instant::now());
            redis::cmd("SADD")
                .arg(format!("{ack}{id}"))
                .arg("fake")
                .query::<i64>(&mut conn)
                .unwrap();
            if let (true, Some(reply)) = (push, v["reply"].as_str()) {
                redis::cmd("PUBLISH")
                    .arg(format!("{replies}{reply}"))
                    .arg(id)
                    .query::<i64>(&mut conn)
                    .unwrap();
            }
        }
        n
    });
    ready.recv().unwrap();
    (handle, acked)
}

/// The acknowledgement delay of message `n`: 10 to 29 ms, spread so that
/// an acknowledgement lands at any phase of a poll.
fn spread_delay(n: usize) -> Duration {
    Duration::from_millis(10 + (n as u64 * 7) % 20)
}

/// Invalidates on `a` `n` times (after one that starts its listener) and
/// returns, sorted, how long each call took to return once its
/// acknowledgement was sent (`acked`, from [`fake_acker`]).
async fn excess_over_ack(
    at: &Node,
    a: &Cache,
    acked: &Mutex<Vec<Instant>>,
    n: usize,
) -> Vec<Duration> {
    a.delete_by_tags(&["r0"], None).await.unwrap();
    // The invalidator listens once it has waited for someone (on a
    // cluster: on the node of the registry's slot).
    let deadline = Instant::now() + Duration::from_secs(5);
    let pattern = format!("{}*", at.replies);
    while !at.channels(&pattern).contains(":local:acks:") {
        assert!(Instant::now() < deadline, "the invalidator never listened");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut excess = Vec::new();
    for i in 1..=n {
        let t = Instant::now();
        a.delete_by_tags(&["r0"], None).await.unwrap();
        let returned = Instant::now();
        let delay = spread_delay(i);
        assert!(
            returned - t >= delay,
            "returned before the acknowledgement: {:?} < {delay:?}",
            returned - t
        );
        let acked = acked.lock().unwrap()[i];
        assert!(returned > acked, "returned before the acknowledgement");
        excess.push(returned - acked);
    }
    excess.sort_unstable();
    excess
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_acknowledgement_ends_the_wait_at_once() {
    let server = RedisServer::start();
    let stop = Arc::new(AtomicBool::new(false));
    let at = Node::single(&server, "lt7");
    let (acker, acked) = fake_acker(&at, true, spread_delay, stop.clone());
    // No tier of its own: it listens for acknowledgements all the same.
    let a = plain(&server, "lt7").await;
    let excess = excess_over_ack(&at, &a, &acked, 20).await;
    stop.store(true, Ordering::SeqCst);
    assert_eq!(acker.join().unwrap(), 21);
    eprintln!("beyond the acknowledgement: {excess:?}");
    // A poll finds an acknowledgement up to 5 ms late (a median of 2.5 ms
    // plus the round trips; 3.7 ms measured on a loaded machine with only
    // the `SADD`); a push wakes the wait at once (1.2 ms there, debug build).
    assert!(
        excess[excess.len() / 2] < Duration::from_millis(2),
        "the median wait beyond the acknowledgement: {:?}",
        excess[excess.len() / 2]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_only_adds_to_the_ack_set_is_found_by_polling() {
    let server = RedisServer::start();
    let stop = Arc::new(AtomicBool::new(false));
    let at = Node::single(&server, "lt8");
    let (acker, acked) = fake_acker(&at, false, spread_delay, stop.clone());
    let a = plain(&server, "lt8").await;
    let excess = excess_over_ack(&at, &a, &acked, 5).await;
    stop.store(true, Ordering::SeqCst);
    assert_eq!(acker.join().unwrap(), 6);
    eprintln!("beyond the acknowledgement: {excess:?}");
    // Found by the fallback poll, well before the acknowledgement timeout
    // would have evicted it (250 ms, then a wait for a lease that never
    // ends here): it is still registered.
    assert!(
        excess[excess.len() - 1] < Duration::from_millis(100),
        "{excess:?}"
    );
    let score = server.command(&[b"ZSCORE", b"lt8:local:instances", b"fake"]);
    assert!(
        !score.starts_with(b"$-1") && !score.starts_with(b"_"),
        "evicted: {score:?}"
    );
}

/// An instance does not acknowledge its own invalidation: it applied it
/// itself (step 6) and names its registration in the message's `from`, so
/// nobody waits for that acknowledgement. Two instances: A's invalidation
/// is acknowledged by B alone, also well after it returned (A's own
/// subscription got the message too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_does_not_acknowledge_its_own_invalidation() {
    let server = RedisServer::start();
    let (a, b) = (local(&server, "lt9").await, local(&server, "lt9").await);
    let db = Db::new();
    until_local(&a, &db, 0).await;
    until_local(&b, &db, 0).await;
    a.delete_by_tags(&["r0"], None).await.unwrap();
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let mut checks = 0;
    let deadline = Instant::now() + Duration::from_millis(300);
    while Instant::now() < deadline {
        let sets: Vec<String> = redis::cmd("KEYS")
            .arg("lt9:local:ack:*")
            .query(&mut conn)
            .unwrap();
        assert_eq!(sets.len(), 1, "one invalidation, one acknowledgement set");
        let acked: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&sets[0])
            .query(&mut conn)
            .unwrap();
        assert_eq!(acked.len(), 1, "acknowledged by B alone: {acked:?}");
        checks += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(checks > 5, "{checks} checks");
    // B's invalidation is acknowledged by A, the other way round.
    b.delete_by_tags(&["r1"], None).await.unwrap();
    let sets: Vec<String> = redis::cmd("KEYS")
        .arg("lt9:local:ack:*")
        .query(&mut conn)
        .unwrap();
    assert_eq!(sets.len(), 2);
}

#[tokio::test]
async fn local_cache_configuration_errors() {
    let bad = [
        Cache::builder()
            .memory()
            .local_cache(10, Duration::from_secs(1)),
        Cache::builder()
            .redis_url("redis://127.0.0.1:1/")
            .local_cache(0, Duration::from_secs(1)),
        Cache::builder()
            .redis_url("redis://127.0.0.1:1/")
            .local_cache(10, Duration::ZERO),
        Cache::builder()
            .redis_url("redis://127.0.0.1:1/")
            .local_cache_bytes(100),
        Cache::builder()
            .redis_url("redis://127.0.0.1:1/")
            .local_cache(10, Duration::from_secs(1))
            .local_cache_lease(Duration::from_millis(1)),
    ];
    for builder in bad {
        assert!(matches!(builder.build().await, Err(CacheError::Config(_))));
    }
}

// A paused instance (SIGSTOP of a child process holding a local tier): an
// invalidation returns within about one lease, and the child, resumed,
// never serves the old value to a read that starts after it returned.

const CHILD: &str = env!("CARGO_BIN_EXE_cacheable-test-child");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_instance_delays_an_invalidation_by_at_most_a_lease() {
    let server = RedisServer::start();
    let a = plain(&server, "ltchild").await;
    paused_child(&["local".into(), server.url()], a).await;
}

/// Runs the child with `args` (and its scratch dir), pauses it once it hits
/// locally, invalidates its record on `a`, resumes it and checks that no
/// read after the invalidation returned saw the old value.
async fn paused_child(args: &[String], a: Cache) {
    use std::io::BufRead;
    let dir = cacheable_test_support::ScratchDir::new("local-tier");
    let (value, mark) = (dir.path().join("value"), dir.path().join("mark"));
    std::fs::write(&value, "1").unwrap();
    std::fs::write(&mark, "0").unwrap();
    let mut child = std::process::Command::new(CHILD)
        .args(args)
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let out = child.stdout.take().unwrap();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let seen = |want: &str| lines.lock().unwrap().iter().any(|l| l == want);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen("M=0 V=1 LOCAL=1") {
        assert!(Instant::now() < deadline, "the child never hit locally");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pid = child.id().to_string();
    let kill = |sig: &str| {
        assert!(
            std::process::Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    kill("-STOP");
    std::fs::write(&value, "2").unwrap();
    let started = Instant::now();
    a.delete_by_tags(&["rec"], None).await.unwrap();
    let took = started.elapsed();
    std::fs::write(&mark, "1").unwrap();
    kill("-CONT");
    eprintln!("invalidation with a paused instance took {took:?}");
    assert!(
        took >= Duration::from_millis(200),
        "it waited for the paused instance: {took:?}"
    );
    assert!(
        took < LEASE + Duration::from_millis(800),
        "at most about one lease: {took:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen("M=1 V=2 LOCAL=1") {
        assert!(
            Instant::now() < deadline,
            "the child never hit locally again"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let lines = lines.lock().unwrap();
    let stale = lines.iter().filter(|l| l.starts_with("M=1 V=1")).count();
    assert_eq!(
        stale, 0,
        "reads after the invalidation returned saw the old value"
    );
}

// The same protocol on a Redis Cluster: the registry and the acknowledgement
// sets in one slot, the subscription on that slot's master, bumps per slot
// and then the publish (see the runtime's `local` module docs).

async fn on_cluster(cluster: &RedisCluster, prefix: &str, tier: bool) -> Cache {
    let builder = Cache::builder()
        .redis_cluster(cluster.urls())
        .prefix(prefix);
    let builder = if tier {
        builder
            .local_cache(10_000, Duration::from_secs(60))
            .local_cache_lease(LEASE)
    } else {
        builder
    };
    builder.build().await.unwrap()
}

/// The registry's key on a cluster (its slot's master holds the subscriptions).
fn registry(prefix: &str) -> String {
    format!("{prefix}:local:{{{prefix}.local}}:instances")
}

/// [`raw_bump`] on the master that serves the version key now.
fn raw_bump_cluster(cluster: &RedisCluster, prefix: &str, r: usize) {
    let key = format!("{prefix}:{{a}}:v:t:r{r}");
    // Any live node, then the one its `-MOVED <slot> <host>:<port>` names:
    // right also while a failover is under way.
    let live = cluster.nodes().iter().find(|n| n.pid().is_some()).unwrap();
    let mut reply = live.command(&[b"INCR", key.as_bytes()]);
    if let Some(moved) = reply.strip_prefix(b"-MOVED ") {
        let text = String::from_utf8_lossy(moved).into_owned();
        let port: u16 = text.trim().rsplit(':').next().unwrap().parse().unwrap();
        let node = cluster.nodes().iter().find(|n| n.port() == port).unwrap();
        reply = node.command(&[b"INCR", key.as_bytes()]);
    }
    assert_eq!(
        reply.first(),
        Some(&b':'),
        "{}",
        String::from_utf8_lossy(&reply)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_an_invalidation_on_one_instance_is_seen_by_another() {
    let cluster = RedisCluster::start(3, 0);
    let a = on_cluster(&cluster, "lc3", false).await;
    let b = on_cluster(&cluster, "lc3", true).await;
    let bump = |r| raw_bump_cluster(&cluster, "lc3", r);
    let (reads, violations) = checker(bump, a, b.clone(), true).await;
    eprintln!(
        "cluster, through the channel: {reads} reads, {violations} stale; {:?}",
        b.stats()
    );
    assert!(reads > 1000, "{reads} reads");
    assert!(b.stats().local_hits > 1000, "{:?}", b.stats());
    assert_eq!(violations, 0);
    // Same instance, on the cluster too.
    let db = Db::new();
    until_local(&b, &db, 1).await;
    db.0[1].store(2, Ordering::SeqCst);
    b.delete_by_tags_all_tenants(&["r1"]).await.unwrap();
    assert_eq!(load(&b, &db, 1).await, 2);
    until_local(&b, &db, 1).await;
    db.0[1].store(3, Ordering::SeqCst);
    b.clear().await.unwrap();
    assert_eq!(load(&b, &db, 1).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_negative_control_an_invalidation_that_skips_the_channel_is_stale() {
    let cluster = RedisCluster::start(3, 0);
    let a = on_cluster(&cluster, "lc4", false).await;
    let b = on_cluster(&cluster, "lc4", true).await;
    let bump = |r| raw_bump_cluster(&cluster, "lc4", r);
    let (reads, violations) = checker(bump, a, b, false).await;
    eprintln!("cluster, behind the channel: {reads} reads, {violations} stale");
    assert!(violations > 0, "the checker sees stale local reads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_killed_subscription_stops_local_hits_and_drops_everything() {
    let cluster = RedisCluster::start(3, 0);
    let b = on_cluster(&cluster, "lc5", true).await;
    let db = Db::new();
    until_local(&b, &db, 2).await;
    assert!(b.local_entries() > 0);
    let home = &cluster.nodes()[cluster.master_of(&registry("lc5"))];
    let killed = home.command(&[b"CLIENT", b"KILL", b"TYPE", b"pubsub"]);
    assert_eq!(
        killed, b":1\r\n",
        "the subscription is on the registry's master"
    );
    after_a_killed_subscription(&b, &db, || raw_bump_cluster(&cluster, "lc5", 2)).await;
}

/// The registry's master dies and its replica takes over, possibly without
/// the registration (replication is asynchronous): the instance saw its
/// subscription close, stopped serving locally, and on the promoted master
/// subscribes and registers again, with an empty tier. A bump behind the
/// channel's back after the failover stands for an invalidator that found
/// the registry empty: no local read may miss it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_failover_of_the_registry_drops_everything() {
    let mut cluster = RedisCluster::start(3, 1);
    let b = on_cluster(&cluster, "lc6", true).await;
    let db = Db::new();
    until_local(&b, &db, 3).await;
    let before = b.stats().local_hits;
    let victim = cluster.master_of(&registry("lc6"));
    cluster.kill(victim);
    db.0[3].store(2, Ordering::SeqCst);
    // Serving stops at once (the subscription closed), long before the
    // replica is promoted: the value read is the entry's in Redis or a
    // computation, never a local hit.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped = b.stats().local_hits;
    for _ in 0..50 {
        load(&b, &db, 3).await;
    }
    assert_eq!(
        b.stats().local_hits,
        stopped,
        "no local hit while the registry's master is down"
    );
    let noticed = Instant::now() + Duration::from_secs(30);
    while b.local_entries() > 0 {
        assert!(Instant::now() < noticed, "the tier was never dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.wait_ok(Duration::from_secs(30));
    raw_bump_cluster(&cluster, "lc6", 3);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        assert_eq!(load(&b, &db, 3).await, 2);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    until_local(&b, &db, 3).await;
    assert!(b.stats().local_hits > before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_paused_instance_delays_an_invalidation_by_at_most_a_lease() {
    let cluster = RedisCluster::start(3, 0);
    let a = on_cluster(&cluster, "ltchild", false).await;
    paused_child(&["local-cluster".into(), cluster.urls().join(",")], a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_pushed_acknowledgement_ends_the_wait_at_once() {
    let cluster = RedisCluster::start(3, 0);
    let at = Node::cluster(&cluster, "lc8");
    let stop = Arc::new(AtomicBool::new(false));
    let (acker, acked) = fake_acker(&at, true, spread_delay, stop.clone());
    let a = on_cluster(&cluster, "lc8", false).await;
    let excess = excess_over_ack(&at, &a, &acked, 20).await;
    stop.store(true, Ordering::SeqCst);
    assert_eq!(acker.join().unwrap(), 21);
    eprintln!("cluster, beyond the acknowledgement: {excess:?}");
    // As on a single Redis (`a_pushed_acknowledgement_ends_the_wait_at_once`):
    // a poll finds an acknowledgement ~2.5 ms late at the median, a push at once.
    assert!(
        excess[excess.len() / 2] < Duration::from_millis(2),
        "the median wait beyond the acknowledgement: {:?}",
        excess[excess.len() / 2]
    );
}
