//! A `#[cacheable]` hit against raw redis-rs `GET` + `serde_json` decode of
//! the same ~200-byte value, sequentially and at 64 concurrent, in one run on
//! one `redis-server` started for the bench (never the one on port 6379).
//!
//! Run: `cargo bench --bench hit`
//! Each pair of lines (`cacheable` / `raw_redis`) is one comparison: the ratio
//! is raw time / cacheable time (1.0 = as fast as raw redis-rs).

use std::hint::black_box;

use cacheable::{cacheable, tenant};
use cacheable_test_support::RedisServer;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use redis::aio::ConnectionManager;
use tokio::task::JoinSet;

mod common;
use common::{Profile, profile_value};

#[cacheable(ttl = 3600, name = "bench.profile")]
async fn profile(id: u64) -> Profile {
    profile_value(id)
}

/// The same value in a tenant's namespace with a tag: the read fetches the
/// entry, the tenant generation and the tag's two versions in one `MGET`.
#[cacheable(ttl = 3600, name = "bench.tenant_profile", tags = ["user:{id}"])]
async fn tenant_profile(id: u64) -> Profile {
    profile_value(id)
}

async fn tenant_hit() -> Profile {
    tenant::scope("acme", tenant_profile(42)).await
}

async fn raw_get(conn: &mut ConnectionManager) -> Profile {
    let bytes: Vec<u8> = redis::cmd("GET")
        .arg(common::RAW_KEY)
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
    let (cache, conn) = rt.block_on(common::hit_sides(&server.url()));
    cacheable::set_global(cache.clone());
    rt.block_on(profile(42)); // the misses that fill the entries
    rt.block_on(tenant_hit());
    assert_eq!(cache.stats().misses, 2);

    let mut seq = c.benchmark_group("hit_sequential");
    seq.throughput(Throughput::Elements(1));
    seq.bench_function("cacheable", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(profile(42).await) });
    });
    seq.bench_function("cacheable_tenant_tagged", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(tenant_hit().await) });
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
    par.bench_function("cacheable_tenant_tagged", |b| {
        b.to_async(&rt).iter(|| async {
            let mut set = JoinSet::new();
            for _ in 0..64 {
                set.spawn(tenant_hit());
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
    assert_eq!(stats.misses, 2, "every measured call was a hit: {stats:?}");
    drop(server);
}

/// The same comparisons interleaved: rounds of (global, tenant, raw)
/// batches, so that a load change on a shared machine hits all alike.
/// Prints the ratios (raw time / cacheable time: 1.0 = as fast as raw).
fn interleaved(rt: &tokio::runtime::Runtime, conn: &ConnectionManager) {
    const ROUNDS: u32 = 20;
    const SEQ: u32 = 500;
    const PAR: u32 = 40;
    let timed = |f: &dyn Fn()| {
        let t = std::time::Instant::now();
        f();
        t.elapsed()
    };
    let seq = |call: &dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Profile>>>| {
        timed(&|| {
            rt.block_on(async {
                for _ in 0..SEQ {
                    black_box(call().await);
                }
            });
        })
    };
    let par = |spawn: &dyn Fn(&mut JoinSet<Profile>)| {
        timed(&|| {
            rt.block_on(async {
                for _ in 0..PAR {
                    let mut set = JoinSet::new();
                    for _ in 0..64 {
                        spawn(&mut set);
                    }
                    while let Some(r) = set.join_next().await {
                        black_box(r.unwrap());
                    }
                }
            });
        })
    };
    let raw = |set: &mut JoinSet<Profile>| {
        let mut conn = conn.clone();
        set.spawn(async move { raw_get(&mut conn).await });
    };
    let mut t = [std::time::Duration::ZERO; 6];
    for round in 0..ROUNDS {
        // Rotate the order every round: whichever runs first after a pause
        // pays for waking the runtime, and must not always be the same one.
        for k in 0..3 {
            match (round as usize + k) % 3 {
                0 => {
                    t[0] += seq(&|| Box::pin(profile(42)));
                    t[3] += par(&|set| {
                        set.spawn(profile(42));
                    });
                }
                1 => {
                    t[1] += seq(&|| Box::pin(tenant_hit()));
                    t[4] += par(&|set| {
                        set.spawn(tenant_hit());
                    });
                }
                _ => {
                    t[2] += seq(&|| {
                        let mut conn = conn.clone();
                        Box::pin(async move { raw_get(&mut conn).await })
                    });
                    t[5] += par(&raw);
                }
            }
        }
    }
    let ratio = |raw: std::time::Duration, ours: std::time::Duration| {
        raw.as_secs_f64() / ours.as_secs_f64()
    };
    println!(
        "interleaved ratios (raw time / cacheable time): sequential: global {:.2}x, tenant+tag {:.2}x; \
         64 concurrent: global {:.2}x, tenant+tag {:.2}x",
        ratio(t[2], t[0]),
        ratio(t[2], t[1]),
        ratio(t[5], t[3]),
        ratio(t[5], t[4]),
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).warm_up_time(std::time::Duration::from_secs(1)).measurement_time(std::time::Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);
