//! A `#[cacheable]` hit against the `cached` crate's Redis store
//! (`#[concurrent_cached]` on an `AsyncRedisCache` over a redis-rs
//! `ConnectionManager`, its client-side caching off) returning the same
//! ~200-byte `Profile`, sequentially and at 64 concurrent, in one run on one
//! `redis-server` started for the bench (never the one on port 6379). Hits
//! only: every side is filled before it is timed, and each side asserts at
//! the end that none of its measured calls was a miss.
//!
//! Two `#[cacheable]` sides:
//! - Redis-only: a `Cache` without a local tier, one `GET` per hit, like
//!   `cached`'s store (which sends a one-command pipeline).
//! - with local tier: a `Cache` built with `CacheBuilder::local_cache`,
//!   whose hits are served in-process while it holds its lease.
//!
//! Raw redis-rs `GET` + `serde_json` decode of the same value runs in the
//! same rounds, as the floor both Redis sides pay.
//!
//! Run: `cargo bench --bench hit` at the repository root (runs this and
//! `benches/hit.rs`), or this alone: `cargo bench -p cacheable-bench-peers --bench hit`.
//! The `interleaved` line printed at the end is the figure to quote: the
//! ratio is `cached` time / `#[cacheable]` time (1.0 = as fast as `cached`;
//! goal of issue 13: at least 1.3x at 64 concurrent).

use std::hint::black_box;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cacheable::{Cache, cacheable};
use cacheable_test_support::RedisServer;
use cached::AsyncRedisCache;
use cached::macros::concurrent_cached;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use redis::aio::ConnectionManager;
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

#[path = "../common/mod.rs"]
mod common;
use common::{Profile, profile_value};

/// The bench's `redis-server`, for `cached`'s store (built on first call).
static REDIS_URL: OnceLock<String> = OnceLock::new();
/// The `Cache` with a local tier.
static LOCAL: OnceLock<Cache> = OnceLock::new();
/// Body runs of [`cached_profile`]: 1 after the fill, whatever the bench did.
static CACHED_MISSES: AtomicU64 = AtomicU64::new(0);

/// Redis-only: the global `Cache` has no local tier.
#[cacheable(ttl = 3600, name = "bench.peer.profile")]
async fn profile(id: u64) -> Profile {
    profile_value(id)
}

/// The same value on the `Cache` with a local tier.
#[cacheable(ttl = 3600, name = "bench.peer.profile_local", cache = local())]
async fn profile_local(id: u64) -> Profile {
    profile_value(id)
}

fn local() -> &'static Cache {
    LOCAL
        .get()
        .expect("the local-tier cache is built before the first call")
}

/// `cached`'s peer: the same value in its async Redis store, one hour ttl,
/// on a redis-rs `ConnectionManager` like the `Cache`'s.
#[concurrent_cached(
    ty = "AsyncRedisCache<u64, Profile>",
    create = {
        AsyncRedisCache::builder("bench_peer_profile")
            .ttl(Duration::from_secs(3600))
            .connection_manager(true)
            .connection_string(REDIS_URL.get().expect("set before the first call"))
            .build()
            .await
            .expect("cached's AsyncRedisCache")
    },
    map_error = |e| format!("{e:?}")
)]
async fn cached_profile(id: u64) -> Result<Profile, String> {
    CACHED_MISSES.fetch_add(1, Ordering::Relaxed);
    Ok(profile_value(id))
}

async fn cached_hit() -> Profile {
    cached_profile(42).await.expect("cached hit")
}

async fn raw_get(mut conn: ConnectionManager) -> Profile {
    let bytes: Vec<u8> = redis::cmd("GET")
        .arg(common::RAW_KEY)
        .query_async(&mut conn)
        .await
        .expect("GET");
    serde_json::from_slice(&bytes).expect("decode")
}

/// The four sides, in the order of the printed figures.
#[derive(Clone, Copy)]
enum Side {
    Cacheable,
    CacheableLocal,
    Cached,
    Raw,
}

const SIDES: [Side; 4] = [
    Side::Cacheable,
    Side::CacheableLocal,
    Side::Cached,
    Side::Raw,
];

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Cacheable => "cacheable",
            Side::CacheableLocal => "cacheable_local_tier",
            Side::Cached => "cached_redis",
            Side::Raw => "raw_redis",
        }
    }

    /// One hit of this side, `'static` so that it can be spawned.
    fn call(
        self,
        conn: &ConnectionManager,
    ) -> std::pin::Pin<Box<dyn Future<Output = Profile> + Send>> {
        match self {
            Side::Cacheable => Box::pin(profile(42)),
            Side::CacheableLocal => Box::pin(profile_local(42)),
            Side::Cached => Box::pin(cached_hit()),
            Side::Raw => Box::pin(raw_get(conn.clone())),
        }
    }
}

/// `n` hits of `side`, one after the other.
async fn sequential(side: Side, conn: &ConnectionManager, n: u32) {
    for _ in 0..n {
        black_box(side.call(conn).await);
    }
}

/// `n` batches of 64 concurrent hits of `side`.
async fn concurrent(side: Side, conn: &ConnectionManager, n: u32) {
    for _ in 0..n {
        let mut set = JoinSet::new();
        for _ in 0..64 {
            set.spawn(side.call(conn));
        }
        while let Some(r) = set.join_next().await {
            black_box(r.unwrap());
        }
    }
}

fn bench(c: &mut Criterion) {
    let server = RedisServer::start();
    REDIS_URL.set(server.url()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (cache, conn) = rt.block_on(common::hit_sides(&server.url()));
    cacheable::set_global(cache.clone());
    let local_cache = rt.block_on(
        Cache::builder()
            .redis_url(server.url())
            .prefix("benchpeer")
            .local_cache(10_000, Duration::from_secs(3600))
            .build(),
    );
    LOCAL.set(local_cache.unwrap()).unwrap();
    // The misses that fill the entries; then wait for the local tier's lease.
    rt.block_on(async {
        profile(42).await;
        cached_hit().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while local().stats().local_hits == 0 {
            assert!(
                Instant::now() < deadline,
                "no local hit: {:?}",
                local().stats()
            );
            profile_local(42).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    assert_eq!(CACHED_MISSES.load(Ordering::Relaxed), 1);
    let local_before = local().stats();

    let mut seq = c.benchmark_group("hit_peer_sequential");
    seq.throughput(Throughput::Elements(1));
    for side in SIDES {
        seq.bench_function(side.name(), |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(side.call(&conn).await) });
        });
    }
    seq.finish();

    let mut par = c.benchmark_group("hit_peer_64_concurrent");
    par.throughput(Throughput::Elements(64));
    for side in SIDES {
        par.bench_function(side.name(), |b| {
            b.to_async(&rt).iter(|| concurrent(side, &conn, 1));
        });
    }
    par.finish();

    interleaved(&rt, &conn);

    assert_eq!(
        cache.stats().misses,
        1,
        "Redis-only: every measured call was a hit"
    );
    assert_eq!(
        CACHED_MISSES.load(Ordering::Relaxed),
        1,
        "cached: every measured call was a hit"
    );
    let local_after = local().stats();
    assert_eq!(
        local_after.misses, 1,
        "local tier: every measured call was a hit"
    );
    let (hits, local_hits) = (
        local_after.hits - local_before.hits,
        local_after.local_hits - local_before.local_hits,
    );
    println!("local tier: {local_hits} of {hits} measured hits served in-process");
    assert!(
        local_hits * 10 >= hits * 9,
        "the local-tier side measured Redis hits: {local_hits} of {hits} local"
    );
    drop(server);
}

/// The comparisons interleaved: rounds of one sequential and one concurrent
/// batch per side, rotating which side goes first, so that a load change on
/// a shared machine hits all alike. Prints `cached` time / `#[cacheable]`
/// time, Redis-only and with the local tier, and raw time / `cached` time.
fn interleaved(rt: &Runtime, conn: &ConnectionManager) {
    const ROUNDS: usize = 20;
    const SEQ: u32 = 500;
    const PAR: u32 = 40;
    let mut seq = [Duration::ZERO; 4];
    let mut par = [Duration::ZERO; 4];
    for round in 0..ROUNDS {
        for k in 0..SIDES.len() {
            let i = (round + k) % SIDES.len();
            let t = Instant::now();
            rt.block_on(sequential(SIDES[i], conn, SEQ));
            seq[i] += t.elapsed();
            let t = Instant::now();
            rt.block_on(concurrent(SIDES[i], conn, PAR));
            par[i] += t.elapsed();
        }
    }
    let ratio = |num: Duration, den: Duration| num.as_secs_f64() / den.as_secs_f64();
    let [ours, local, cached, raw] = [0, 1, 2, 3];
    println!(
        "interleaved ratios (cached time / cacheable time): sequential: Redis-only {:.2}x, \
         local tier {:.2}x; 64 concurrent: Redis-only {:.2}x, local tier {:.2}x \
         (raw time / cached time: sequential {:.2}x, 64 concurrent {:.2}x)",
        ratio(seq[cached], seq[ours]),
        ratio(seq[cached], seq[local]),
        ratio(par[cached], par[ours]),
        ratio(par[cached], par[local]),
        ratio(seq[raw], seq[cached]),
        ratio(par[raw], par[cached]),
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);
