//! A `#[cacheable]` hit against raw redis-rs `GET` + `serde_json` decode of
//! the same ~200-byte value, sequentially and at 64 concurrent, in one run on
//! one `redis-server` started for the bench (never the one on port 6379).
//!
//! Run: `cargo bench --bench hit`
//! Each pair of lines (`cacheable` / `raw_redis`) is one comparison: the ratio
//! is raw time / cacheable time (1.0 = as fast as raw redis-rs).

use std::hint::black_box;

use cacheable::{Cache, cacheable};
use cacheable_test_support::RedisServer;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Profile {
    id: u64,
    name: String,
    email: String,
    bio: String,
    roles: Vec<String>,
}

fn profile_value(id: u64) -> Profile {
    Profile {
        id,
        name: "Ada Lovelace".into(),
        email: "ada@analytical-engines.example".into(),
        bio: "Wrote the first published algorithm for a machine; enjoys notes on notes.".into(),
        roles: vec!["admin".into(), "author".into(), "reviewer".into()],
    }
}

#[cacheable(ttl = 3600, name = "bench.profile")]
async fn profile(id: u64) -> Profile {
    profile_value(id)
}

async fn raw_get(conn: &mut ConnectionManager) -> Profile {
    let bytes: Vec<u8> = redis::cmd("GET")
        .arg("raw:profile:42")
        .query_async(conn)
        .await
        .expect("GET");
    serde_json::from_slice(&bytes).expect("decode")
}

fn bench(c: &mut Criterion) {
    let server = RedisServer::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (cache, conn) = rt.block_on(async {
        let cache = Cache::builder()
            .redis_url(server.url())
            .build()
            .await
            .unwrap();
        let client = redis::Client::open(server.url()).unwrap();
        let mut conn = ConnectionManager::new(client).await.unwrap();
        let json = serde_json::to_vec(&profile_value(42)).unwrap();
        assert!(
            (150..=260).contains(&json.len()),
            "value is about 200 bytes: {}",
            json.len()
        );
        let () = redis::cmd("SET")
            .arg("raw:profile:42")
            .arg(json)
            .query_async(&mut conn)
            .await
            .unwrap();
        (cache, conn)
    });
    cacheable::set_global(cache.clone());
    rt.block_on(profile(42)); // the miss that fills the entry
    assert_eq!(cache.stats().misses, 1);

    let mut seq = c.benchmark_group("hit_sequential");
    seq.throughput(Throughput::Elements(1));
    seq.bench_function("cacheable", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(profile(42).await) })
    });
    seq.bench_function("raw_redis", |b| {
        b.to_async(&rt).iter(|| {
            let mut conn = conn.clone();
            async move { black_box(raw_get(&mut conn).await) }
        });
    });
    seq.finish();

    let mut par = c.benchmark_group("hit_64_concurrent");
    par.throughput(Throughput::Elements(64));
    par.bench_function("cacheable", |b| {
        b.to_async(&rt).iter(|| async {
            let mut set = JoinSet::new();
            for _ in 0..64 {
                set.spawn(profile(42));
            }
            while let Some(r) = set.join_next().await {
                black_box(r.unwrap());
            }
        });
    });
    par.bench_function("raw_redis", |b| {
        b.to_async(&rt).iter(|| async {
            let mut set = JoinSet::new();
            for _ in 0..64 {
                let mut conn = conn.clone();
                set.spawn(async move { raw_get(&mut conn).await });
            }
            while let Some(r) = set.join_next().await {
                black_box(r.unwrap());
            }
        });
    });
    par.finish();
    interleaved(&rt, &conn);
    let stats = cache.stats();
    assert_eq!(stats.misses, 1, "every measured call was a hit: {stats:?}");
    drop(server);
}

/// The same comparisons interleaved: rounds of (cacheable, raw) batches, so
/// that a load change on a shared machine hits both alike. Prints the ratios
/// (raw time / cacheable time: 1.0 = as fast as raw redis-rs).
fn interleaved(rt: &tokio::runtime::Runtime, conn: &ConnectionManager) {
    const ROUNDS: u32 = 20;
    const SEQ: u32 = 500;
    const PAR: u32 = 40;
    let time = |f: &dyn Fn()| {
        let t = std::time::Instant::now();
        f();
        t.elapsed()
    };
    let (mut seq_c, mut seq_r, mut par_c, mut par_r) = Default::default();
    for _ in 0..ROUNDS {
        seq_c += time(&|| {
            rt.block_on(async {
                for _ in 0..SEQ {
                    black_box(profile(42).await);
                }
            })
        });
        seq_r += time(&|| {
            rt.block_on(async {
                let mut conn = conn.clone();
                for _ in 0..SEQ {
                    black_box(raw_get(&mut conn).await);
                }
            })
        });
        par_c += time(&|| {
            rt.block_on(async {
                for _ in 0..PAR {
                    let mut set = JoinSet::new();
                    for _ in 0..64 {
                        set.spawn(profile(42));
                    }
                    while let Some(r) = set.join_next().await {
                        black_box(r.unwrap());
                    }
                }
            })
        });
        par_r += time(&|| {
            rt.block_on(async {
                for _ in 0..PAR {
                    let mut set = JoinSet::new();
                    for _ in 0..64 {
                        let mut conn = conn.clone();
                        set.spawn(async move { raw_get(&mut conn).await });
                    }
                    while let Some(r) = set.join_next().await {
                        black_box(r.unwrap());
                    }
                }
            })
        });
    }
    let per = |d: std::time::Duration, n: u32| d / (ROUNDS * n);
    let (sc, sr): (std::time::Duration, std::time::Duration) = (seq_c, seq_r);
    let (pc, pr): (std::time::Duration, std::time::Duration) = (par_c, par_r);
    println!(
        "interleaved: sequential cacheable {:?}/call, raw {:?}/call, ratio {:.2}x; \
         64 concurrent cacheable {:?}/batch, raw {:?}/batch, ratio {:.2}x",
        per(sc, SEQ),
        per(sr, SEQ),
        sr.as_secs_f64() / sc.as_secs_f64(),
        per(pc, PAR),
        per(pr, PAR),
        pr.as_secs_f64() / pc.as_secs_f64(),
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).warm_up_time(std::time::Duration::from_secs(1)).measurement_time(std::time::Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);
