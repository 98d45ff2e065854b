//! Rate-limit decisions per second at 64 concurrent: `RateLimiter::check`
//! with GCRA and with the exact sliding window, against the original
//! sliding-log script (quoted in issue 3) run through raw redis-rs `Script`,
//! in one run on one `redis-server` started for the bench (never the one on
//! port 6379). Then prints `MEMORY USAGE` of one GCRA key.
//!
//! Run: `cargo bench --bench rate_limit`
//! Every call is admitted (100 points per minute per identity, spread over
//! 65 536 identities), so each one is a full Redis decision, never a cached
//! denial.
//! The ratio is the original's time / ours (above 1.0 = faster than it). On
//! a busy machine criterion's sequential groups drift with the load; the
//! interleaved line printed at the end alternates the three and is the one
//! to quote.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cacheable::{Algorithm, Cache, RateLimitOptions, RateLimiter};
use cacheable_test_support::RedisServer;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use redis::Script;
use redis::aio::ConnectionManager;
use tokio::task::JoinSet;

const CONCURRENCY: u64 = 64;
const IDENTITIES: u64 = 65_536;
/// One policy for all three: 100 points per minute per identity, a typical
/// API limit. 65 536 identities absorb 6.5 million admissions a minute, far
/// above what one machine sends, so every call is admitted; each original
/// sorted set then holds a realistic few dozen members.
const POINTS: u32 = 100;
const WINDOW_SECS: u64 = 60;
const INTERLEAVED_ROUNDS: u32 = 10;

#[path = "common/original.rs"]
mod original;

static NEXT: AtomicU64 = AtomicU64::new(0);

fn identity() -> String {
    format!(
        "bench:u:{}",
        NEXT.fetch_add(1, Ordering::Relaxed) % IDENTITIES
    )
}

async fn ours(rl: RateLimiter, opts: RateLimitOptions) {
    let mut set = JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (rl, opts) = (rl.clone(), opts.clone());
        set.spawn(async move {
            let d = rl.check(&identity(), &opts).await.expect("check");
            assert!(d.allowed);
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("task");
    }
}

async fn original(conn: ConnectionManager, script: Script) {
    let mut set = JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (mut conn, script) = (conn.clone(), script.clone());
        set.spawn(async move {
            let key = format!("orig:{}", identity());
            let r = original::decide(&mut conn, &script, &key, POINTS, WINDOW_SECS).await;
            black_box(r);
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("task");
    }
}

fn memory_usage(rt: &tokio::runtime::Runtime, conn: &ConnectionManager, key: &str) -> i64 {
    let mut conn = conn.clone();
    rt.block_on(async {
        redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("MEMORY USAGE")
    })
}

fn bench(c: &mut Criterion) {
    let server = RedisServer::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (rl, conn) = rt.block_on(async {
        let cache = Cache::builder()
            .redis_url(server.url())
            .op_timeout(Duration::from_secs(2))
            .build()
            .await
            .unwrap();
        let client = redis::Client::open(server.url()).unwrap();
        let conn = ConnectionManager::new(client).await.unwrap();
        (cache.rate_limiter(), conn)
    });
    let window = Duration::from_secs(WINDOW_SECS);
    let points = NonZeroU32::new(POINTS).unwrap();
    let gcra = RateLimitOptions::new(points, window);
    let sliding = RateLimitOptions::new(points, window).algorithm(Algorithm::SlidingWindow);
    let script = Script::new(original::SCRIPT);

    let mut g = c.benchmark_group("rate_limit_64_concurrent");
    g.throughput(Throughput::Elements(CONCURRENCY));
    g.bench_function("gcra", |b| {
        b.to_async(&rt).iter(|| ours(rl.clone(), gcra.clone()));
    });
    g.bench_function("sliding_window", |b| {
        b.to_async(&rt).iter(|| ours(rl.clone(), sliding.clone()));
    });
    g.bench_function("original_sliding_log", |b| {
        b.to_async(&rt)
            .iter(|| original(conn.clone(), script.clone()));
    });
    g.finish();

    // The same comparison, interleaved: rounds of A, B, C batches, so that a
    // load change on a shared machine hits all three alike. Prints the ratios.
    let (mut t_gcra, mut t_sw, mut t_orig) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let batches = 100u32;
    for round in 0..INTERLEAVED_ROUNDS {
        // Rotate the order every round: whichever runs first after a pause
        // pays for waking the runtime, and must not always be the same one.
        for k in 0..3 {
            let t = std::time::Instant::now();
            match (round as usize + k) % 3 {
                0 => {
                    rt.block_on(async {
                        for _ in 0..batches {
                            ours(rl.clone(), gcra.clone()).await;
                        }
                    });
                    t_gcra += t.elapsed();
                }
                1 => {
                    rt.block_on(async {
                        for _ in 0..batches {
                            ours(rl.clone(), sliding.clone()).await;
                        }
                    });
                    t_sw += t.elapsed();
                }
                _ => {
                    rt.block_on(async {
                        for _ in 0..batches {
                            original(conn.clone(), script.clone()).await;
                        }
                    });
                    t_orig += t.elapsed();
                }
            }
        }
    }
    let n = f64::from(INTERLEAVED_ROUNDS * batches) * CONCURRENCY as f64;
    let rate = |t: Duration| n / t.as_secs_f64();
    println!(
        "interleaved decisions/s: gcra {:.0}, sliding_window {:.0}, original {:.0}; \
         ratio to original: gcra {:.2}x, sliding_window {:.2}x",
        rate(t_gcra),
        rate(t_sw),
        rate(t_orig),
        t_orig.as_secs_f64() / t_gcra.as_secs_f64(),
        t_orig.as_secs_f64() / t_sw.as_secs_f64(),
    );

    // Redis CPU per decision (`INFO commandstats`, usec_per_call of EVALSHA):
    // what each script costs the server, independent of the client's load.
    let per_call = |label: &str, run: &dyn Fn()| {
        let mut c = conn.clone();
        rt.block_on(async {
            let () = redis::cmd("CONFIG")
                .arg("RESETSTAT")
                .query_async(&mut c)
                .await
                .unwrap();
        });
        run();
        let info: String = rt.block_on(async {
            redis::cmd("INFO")
                .arg("commandstats")
                .query_async(&mut c)
                .await
                .unwrap()
        });
        let usec = info
            .lines()
            .find(|l| l.starts_with("cmdstat_evalsha:"))
            .and_then(|l| l.split("usec_per_call=").nth(1))
            .and_then(|v| v.split(',').next())
            .unwrap_or("?")
            .to_owned();
        println!("redis server time per decision, {label}: {usec} µs");
        usec.parse::<f64>().unwrap_or(f64::NAN)
    };
    let batches = |f: &dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>| {
        rt.block_on(async {
            for _ in 0..200 {
                f().await;
            }
        });
    };
    let g_us = per_call("gcra", &|| {
        batches(&|| Box::pin(ours(rl.clone(), gcra.clone())));
    });
    let s_us = per_call("sliding_window", &|| {
        batches(&|| Box::pin(ours(rl.clone(), sliding.clone())));
    });
    let o_us = per_call("original", &|| {
        batches(&|| Box::pin(original(conn.clone(), script.clone())));
    });
    println!(
        "redis server cost ratio (original / ours): gcra {:.2}x, sliding_window {:.2}x",
        o_us / g_us,
        o_us / s_us
    );

    // Memory of one GCRA key, as `#[rate_limit]` names it (tenant, default
    // name from the module path, user id) and as a short hand-made key.
    let cases = [
        ("acme", "my_app.handlers.login:u:user-1234567"),
        ("acme", "login:u:42"),
    ];
    for (tenant, key) in cases {
        let opts = RateLimitOptions::new(NonZeroU32::new(10).unwrap(), window).tenant(tenant);
        rt.block_on(rl.check(key, &opts)).unwrap();
        let full = rl.redis_key(key, &opts);
        let bytes = memory_usage(&rt, &conn, &full);
        println!(
            "MEMORY USAGE {full} ({} byte key) = {bytes} bytes",
            full.len()
        );
    }
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench
}
criterion_main!(benches);
