//! The local in-process tier (`CacheBuilder::local_cache`) on one
//! `redis-server` started for the bench (never the one on port 6379), each
//! figure against a raw peer in the same run, interleaved:
//!
//! - `local_hit`: a `#[cacheable]` local hit (key built from the arguments,
//!   lease and floor checks, moka lookup, envelope decode, `serde_json`
//!   decode of the ~200-byte value, stats) against a raw
//!   `moka::sync::Cache::get` of the same JSON bytes under a prebuilt key
//!   plus the same `serde_json` decode. Goal: at most 2x the raw time.
//! - `mix_*`: 95% reads over Zipf-distributed keys (s = 1, 1000 keys), 5%
//!   writes, alternating over two `Cache`s with local tiers: reads are
//!   `#[cacheable]` calls, writes `delete_by_tags` of the key's tag (which
//!   waits for the other instance's acknowledgement); against the same
//!   operation sequence on raw redis-rs (`GET` + decode, `SET` of the
//!   encoded value). Sequential and 16 concurrent. Goal: 10x raw throughput.
//! - `invalidation`: `delete_by_tags` on one instance while another holds a
//!   local tier, from the call to its return, against a raw `INCR` round
//!   trip (a floor); p50/p99 printed from a sample vector, idle and under
//!   read load. Goal: p99 at most 10 ms on loopback.
//!
//! The mix's structural bound (counts printed at the end of a run, from
//! `INFO commandstats` and `INFO cpu`): a pass of 1000 ops has 54 writes.
//! Raw: 1000 commands, 1000 round trips. Cacheable: ~410 client requests
//! (~280 scripts: per write a bump-and-publish, two acknowledgements (the
//! other instance's and the invalidator's own, which nobody waits for) and
//! a `WAIT`; per re-fill a lease `SET NX`, a `PUT` and a release; ~95
//! `MGET`s), ~1500 commands counting the scripts' own. An invalidating
//! write's critical path is bump, delivery, the other instance's ack,
//! delivery of the push, `WAIT`: three round trips and two pub/sub hops,
//! then about four more for the first re-fill. Sequentially that is ~360
//! round trips and ~110 hops against raw's 1000: at most ~2x, and under
//! 5x even with free reads and no re-fills. At 16 tasks raw pipelines on
//! one connection and both sides are CPU-bound on a small machine: per
//! pass ~7 ms of this process and ~4 ms of redis-server against raw's ~3
//! and ~1, so the ratio tends to raw's CPU over cacheable's (~0.4x).
//!
//! Run: `cargo bench --bench local_tier -- --warm-up-time 1 --measurement-time 3`
//! The `interleaved` lines printed at the end are the figures to quote.
//!
//! Over 400 lines on purpose: the three comparisons share one server, two
//! warmed instances and the interleaved loop; split, each file would repeat them.

use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cacheable::{Cache, cacheable};
use cacheable_test_support::RedisServer;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

mod common;
use common::{Profile, profile_value};

#[cacheable(name = "bench.local", ttl = 3600, global, tags = ["item:{id}"], cache = cache, skip(cache))]
async fn item(cache: &Cache, id: u64) -> Profile {
    profile_value(id)
}

/// Keys of the mix.
const KEYS: u64 = 1000;
/// Operations per pass of the mix.
const OPS: usize = 1000;

/// A Zipf(s) sampler over `1..=n` by inverse CDF (binary search).
struct Zipf(Vec<f64>);

impl Zipf {
    #[allow(clippy::cast_precision_loss)]
    fn new(n: u64, s: f64) -> Self {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|k| {
                acc += 1.0 / (k as f64).powf(s);
                acc
            })
            .collect();
        for c in &mut cdf {
            *c /= acc;
        }
        Self(cdf)
    }
    fn sample(&self, u: f64) -> u64 {
        self.0.partition_point(|&c| c < u) as u64 + 1
    }
}

/// xorshift64*: a uniform in [0, 1).
struct Rng(u64);

impl Rng {
    #[allow(clippy::cast_precision_loss)]
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One operation of the mix: a write (invalidation) or a read of a key.
#[derive(Clone, Copy)]
struct Op {
    write: bool,
    key: u64,
}

fn ops() -> Arc<Vec<Op>> {
    let zipf = Zipf::new(KEYS, 1.0);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    Arc::new(
        (0..OPS)
            .map(|_| Op {
                write: rng.next() < 0.05,
                key: zipf.sample(rng.next()),
            })
            .collect(),
    )
}

async fn local_cache(server: &RedisServer) -> Cache {
    Cache::builder()
        .redis_url(server.url())
        .prefix("benchlt")
        .local_cache(10_000, Duration::from_secs(60))
        .build()
        .await
        .unwrap()
}

fn raw_key(k: u64) -> String {
    format!("raw:item:{k}")
}

/// One operation on cacheable instance `c`.
async fn cacheable_op(c: &Cache, op: Op) {
    if op.write {
        let tag = format!("item:{}", op.key);
        c.delete_by_tags(&[&tag], None).await.unwrap();
    } else {
        black_box(item(c, op.key).await);
    }
}

/// The same operation on raw redis-rs.
async fn raw_op(conn: &mut ConnectionManager, op: Op) {
    if op.write {
        let json = serde_json::to_vec(&profile_value(op.key)).unwrap();
        let () = redis::cmd("SET")
            .arg(raw_key(op.key))
            .arg(json)
            .query_async(conn)
            .await
            .unwrap();
    } else {
        let bytes: Vec<u8> = redis::cmd("GET")
            .arg(raw_key(op.key))
            .query_async(conn)
            .await
            .unwrap();
        black_box(serde_json::from_slice::<Profile>(&bytes).unwrap());
    }
}

/// One pass of the mix with `tasks` concurrent tasks (task `t` runs ops
/// `t, t + tasks, ..`; op `i` goes to instance `i % 2`).
async fn mix_cacheable(insts: &[Cache; 2], ops: &Arc<Vec<Op>>, tasks: usize) {
    if tasks == 1 {
        for (i, op) in ops.iter().enumerate() {
            cacheable_op(&insts[i % 2], *op).await;
        }
        return;
    }
    let mut set = JoinSet::new();
    for t in 0..tasks {
        let (insts, ops) = (insts.clone(), ops.clone());
        set.spawn(async move {
            for i in (t..ops.len()).step_by(tasks) {
                cacheable_op(&insts[i % 2], ops[i]).await;
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
}

async fn mix_raw(conn: &ConnectionManager, ops: &Arc<Vec<Op>>, tasks: usize) {
    if tasks == 1 {
        let mut conn = conn.clone();
        for op in ops.iter() {
            raw_op(&mut conn, *op).await;
        }
        return;
    }
    let mut set = JoinSet::new();
    for t in 0..tasks {
        let (mut conn, ops) = (conn.clone(), ops.clone());
        set.spawn(async move {
            for i in (t..ops.len()).step_by(tasks) {
                raw_op(&mut conn, ops[i]).await;
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
}

/// Reads `id` on `c` until a read is a local hit.
async fn until_local(c: &Cache, id: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let before = c.stats().local_hits;
    while c.stats().local_hits == before {
        assert!(Instant::now() < deadline, "no local hit: {:?}", c.stats());
        item(c, id).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `delete_by_tags` on `a` timed `n` times (tags over the Zipf keys), with
/// `readers` tasks reading on both instances meanwhile.
async fn invalidation_samples(insts: &[Cache; 2], n: usize, readers: usize) -> Vec<Duration> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut set = JoinSet::new();
    for r in 0..readers {
        let (c, stop, ops) = (insts[r % 2].clone(), stop.clone(), ops());
        set.spawn(async move {
            let mut i = r;
            while !stop.load(Ordering::Relaxed) {
                black_box(item(&c, ops[i % ops.len()].key).await);
                i += 1;
                tokio::task::yield_now().await;
            }
        });
    }
    let ops = ops();
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let tag = format!("item:{}", ops[i % ops.len()].key);
        let t = Instant::now();
        insts[0].delete_by_tags(&[&tag], None).await.unwrap();
        samples.push(t.elapsed());
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    samples.sort_unstable();
    samples
}

/// `EVALSHA` + `EVAL` calls the server has run (the invalidation's bump,
/// its acknowledgement polls and the reads' fills).
fn script_calls(server: &RedisServer) -> u64 {
    let info = server.command(&[b"INFO", b"commandstats"]);
    let info = String::from_utf8_lossy(&info);
    info.lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

fn quantiles(label: &str, s: &[Duration]) {
    let at = |q: f64| {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let i = ((s.len() - 1) as f64 * q).round() as usize;
        s[i]
    };
    println!(
        "interleaved invalidation latency ({label}, {} samples): p50 {:?}, p99 {:?}, max {:?}",
        s.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
}

fn bench(c: &mut Criterion) {
    let server = RedisServer::start();
    let rt: Runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let json = serde_json::to_vec(&profile_value(42)).unwrap();
    let moka: moka::sync::Cache<String, Arc<[u8]>> = moka::sync::Cache::builder()
        .max_capacity(10_000)
        .time_to_live(Duration::from_secs(60))
        .build();
    let moka_key = "benchlt:{g}:e:bench.local:42".to_owned();
    moka.insert(moka_key.clone(), json.as_slice().into());
    let ops = ops();
    let (insts, conn) = rt.block_on(async {
        let insts = [local_cache(&server).await, local_cache(&server).await];
        let client = redis::Client::open(server.url()).unwrap();
        // No response timeout, as the cache's own connection: on a loaded
        // machine 16 tasks' replies can take longer than the default.
        let config = ConnectionManagerConfig::new().set_response_timeout(None);
        let mut conn = ConnectionManager::new_with_config(client, config)
            .await
            .unwrap();
        for k in 1..=KEYS {
            raw_op(
                &mut conn,
                Op {
                    write: true,
                    key: k,
                },
            )
            .await;
            for c in &insts {
                item(c, k).await;
            }
        }
        for c in &insts {
            until_local(c, 42).await;
        }
        mix_cacheable(&insts, &ops, 1).await; // the steady state
        (insts, conn)
    });
    let a = insts[0].clone();
    let local_before = a.stats().local_hits;
    if let Some((side, n)) = callgrind_mode() {
        measured(|| {
            rt.block_on(async {
                for _ in 0..n {
                    if side == "local" {
                        black_box(item(&a, 42).await);
                    } else {
                        let bytes = moka.get(black_box(moka_key.as_str())).unwrap();
                        black_box(serde_json::from_slice::<Profile>(&bytes).unwrap());
                    }
                }
            });
        });
        let s = a.stats();
        println!(
            "{side}: {n} calls; local hits {}",
            s.local_hits - local_before
        );
        return;
    }

    let mut g = c.benchmark_group("local_hit");
    g.throughput(Throughput::Elements(1));
    g.bench_function("cacheable_local", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(item(&a, 42).await) });
    });
    g.bench_function("raw_moka_get_decode", |b| {
        b.to_async(&rt).iter(|| async {
            let bytes = moka.get(black_box(moka_key.as_str())).unwrap();
            black_box(serde_json::from_slice::<Profile>(&bytes).unwrap())
        });
    });
    g.finish();
    let s = a.stats();
    assert!(
        s.local_hits > local_before && s.local_hits * 10 >= s.hits * 9,
        "the measured hits were local: {s:?}"
    );

    for tasks in [1, 16] {
        let mut g = c.benchmark_group(format!("mix_{tasks}_tasks"));
        g.throughput(Throughput::Elements(OPS as u64));
        g.sample_size(10);
        g.bench_function("cacheable_2_local_tiers", |b| {
            b.to_async(&rt).iter(|| mix_cacheable(&insts, &ops, tasks));
        });
        g.bench_function("raw_redis", |b| {
            b.to_async(&rt).iter(|| mix_raw(&conn, &ops, tasks));
        });
        g.finish();
    }

    let mut g = c.benchmark_group("invalidation");
    g.bench_function("delete_by_tags_2_instances", |b| {
        b.to_async(&rt).iter(|| async {
            insts[0].delete_by_tags(&["item:7"], None).await.unwrap();
        });
    });
    g.bench_function("raw_incr", |b| {
        b.to_async(&rt).iter(|| {
            let mut conn = conn.clone();
            async move {
                let _: i64 = redis::cmd("INCR")
                    .arg("raw:counter")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
            }
        });
    });
    g.finish();

    if !profiling() {
        interleaved(&rt, &insts, &conn, &moka, &moka_key);
        for tasks in [1, 16] {
            let before = script_calls(&server);
            rt.block_on(mix_cacheable(&insts, &ops, tasks));
            let writes = ops.iter().filter(|o| o.write).count();
            #[allow(clippy::cast_precision_loss)]
            let per = (script_calls(&server) - before) as f64 / writes as f64;
            println!("mix, {tasks} tasks: {per:.1} script calls per invalidating write");
        }
        // Where a pass's time goes: wall, this process's CPU and the
        // server's CPU per pass (20 passes a side; two cores shared by all).
        for tasks in [1, 16] {
            let mut line = format!("mix, {tasks} tasks, per pass over 20:");
            for side in ["cacheable", "raw"] {
                let (cpu, srv, t) = (process_cpu(), server_cpu(&server), Instant::now());
                for _ in 0..20 {
                    if side == "raw" {
                        rt.block_on(mix_raw(&conn, &ops, tasks));
                    } else {
                        rt.block_on(mix_cacheable(&insts, &ops, tasks));
                    }
                }
                let _ = write!(
                    line,
                    " {side} wall {:?}, process cpu {:?}, redis-server cpu {:?};",
                    t.elapsed() / 20,
                    process_cpu().saturating_sub(cpu) / 20,
                    server_cpu(&server).saturating_sub(srv) / 20,
                );
            }
            println!("{line}");
        }
        // The structural bound: every command of one pass, both sides
        // (the tiers' subscriptions and acknowledgements included).
        for tasks in [1, 16] {
            let before = commandstats(&server);
            rt.block_on(mix_cacheable(&insts, &ops, tasks));
            println!(
                "mix, {tasks} tasks, one pass: cacheable runs {} commands",
                cmd_delta(&server, &before)
            );
            let before = commandstats(&server);
            rt.block_on(mix_raw(&conn, &ops, tasks));
            println!(
                "mix, {tasks} tasks, one pass: raw runs {} commands",
                cmd_delta(&server, &before)
            );
        }
    }
    drop(server);
}

/// Every `cmdstat_*` line: command -> calls.
fn commandstats(server: &RedisServer) -> std::collections::BTreeMap<String, u64> {
    let info = server.command(&[b"INFO", b"commandstats"]);
    String::from_utf8_lossy(&info)
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// This process's CPU time (user + system, all threads; Linux, 10 ms
/// ticks), zero elsewhere.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

/// The server's CPU time (`used_cpu_user` + `used_cpu_sys` of `INFO cpu`).
fn server_cpu(server: &RedisServer) -> Duration {
    let info = server.command(&[b"INFO", b"cpu"]);
    let secs: f64 = String::from_utf8_lossy(&info)
        .lines()
        .filter(|l| l.starts_with("used_cpu_user:") || l.starts_with("used_cpu_sys:"))
        .filter_map(|l| l.split_once(':')?.1.trim().parse::<f64>().ok())
        .sum();
    Duration::from_secs_f64(secs)
}

/// The commands run since `before` (`INFO` aside): the total, then each.
fn cmd_delta(server: &RedisServer, before: &std::collections::BTreeMap<String, u64>) -> String {
    let mut total = 0;
    let mut each = String::new();
    for (k, v) in &commandstats(server) {
        let d = v - before.get(k).copied().unwrap_or(0);
        if d > 0 && k != "info" {
            total += d;
            let _ = write!(each, " {k}={d}");
        }
    }
    format!("{total} ({each} )")
}

/// The comparisons interleaved in rounds with a rotating order, so that a
/// load change on a shared machine hits both sides alike; prints ratios.
fn interleaved(
    rt: &Runtime,
    insts: &[Cache; 2],
    conn: &ConnectionManager,
    moka: &moka::sync::Cache<String, Arc<[u8]>>,
    moka_key: &str,
) {
    const ROUNDS: usize = 10;
    const HITS: u32 = 20_000;
    let ops = ops();
    let timed = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        t.elapsed()
    };
    // [local hit, raw moka, mix1, raw1, mix16, raw16]
    let mut t = [Duration::ZERO; 6];
    for round in 0..ROUNDS {
        for k in 0..2 {
            if (round + k) % 2 == 0 {
                t[0] += timed(&mut || {
                    rt.block_on(async {
                        for _ in 0..HITS {
                            black_box(item(&insts[0], 42).await);
                        }
                    });
                });
                t[2] += timed(&mut || rt.block_on(mix_cacheable(insts, &ops, 1)));
                t[4] += timed(&mut || rt.block_on(mix_cacheable(insts, &ops, 16)));
            } else {
                t[1] += timed(&mut || {
                    rt.block_on(async {
                        for _ in 0..HITS {
                            let bytes = moka.get(black_box(moka_key)).unwrap();
                            black_box(serde_json::from_slice::<Profile>(&bytes).unwrap());
                        }
                    });
                });
                t[3] += timed(&mut || rt.block_on(mix_raw(conn, &ops, 1)));
                t[5] += timed(&mut || rt.block_on(mix_raw(conn, &ops, 16)));
            }
        }
    }
    let per = |d: Duration, n: usize| d / u32::try_from(n).unwrap();
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    let hits = ROUNDS * HITS as usize;
    println!(
        "interleaved local hit: cacheable {:?}, raw moka get+decode {:?}: {:.2}x raw time (goal <= 2x)",
        per(t[0], hits),
        per(t[1], hits),
        ratio(t[0], t[1]),
    );
    println!(
        "interleaved mix (95% Zipf reads, 5% invalidating writes, 2 instances): \
         sequential {:.2}x raw throughput, 16 tasks {:.2}x (goal >= 10x); per op: {:?} vs {:?}, {:?} vs {:?}",
        ratio(t[3], t[2]),
        ratio(t[5], t[4]),
        per(t[2], ROUNDS * OPS),
        per(t[3], ROUNDS * OPS),
        per(t[4], ROUNDS * OPS),
        per(t[5], ROUNDS * OPS),
    );
    let s = insts[0].stats();
    println!(
        "instance 0 after the run: hits {}, local hits {}, misses {}",
        s.hits, s.local_hits, s.misses
    );
    quantiles("idle", &rt.block_on(invalidation_samples(insts, 1000, 0)));
    quantiles(
        "4 readers on 2 instances",
        &rt.block_on(invalidation_samples(insts, 1000, 4)),
    );
}

/// `CACHEABLE_BENCH_CALLS=<local|moka>:<n>`: run `n` calls of one side
/// inside [`measured`] and nothing else, for
/// `valgrind --tool=callgrind --toggle-collect='*measured*'` (instructions
/// per call = the collected total / n).
fn callgrind_mode() -> Option<(String, u64)> {
    let v = std::env::var("CACHEABLE_BENCH_CALLS").ok()?;
    let (side, n) = v.split_once(':')?;
    Some((side.to_owned(), n.parse().ok()?))
}

#[inline(never)]
fn measured(f: impl FnOnce()) {
    f();
}

/// Under `--profile-time` (callgrind) only the filtered group runs.
fn profiling() -> bool {
    std::env::args().any(|a| a == "--profile-time")
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
