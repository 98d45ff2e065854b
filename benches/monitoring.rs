//! What monitoring costs, on vs off in the same run, interleaved, on one
//! `redis-server` started for the bench (never the one on port 6379):
//!
//! - `redis_hit`: a `#[cacheable]` Redis hit of a ~200-byte value. *On*: a
//!   `metrics` recorder installed (metrics-util's `DebuggingRecorder`, whose
//!   registry is the one the Prometheus exporter uses) and five alerts
//!   configured (hit ratio, p99, reachability, memory, denials; evaluated by
//!   a background task every second, the default). *Off*: no recorder, no
//!   alert. Both sides keep what cannot be turned off: the `Stats` counters
//!   and the per-function hit sketch (fed by one hit in 16), and the
//!   `metrics` feature is compiled in on both (the `counter!` calls go to
//!   the no-op recorder on the off side). Goal: at most 3% slower.
//! - `request`: a `GET /users/42` through an axum `Router` (in process,
//!   `oneshot`, body collected) whose handler does the same hit. *On*:
//!   `MetricsLayer` inside `ContextLayer`, with the recorder and the alerts.
//!   *Off*: the bare router. Between them, `context_only` (`ContextLayer`
//!   alone, no recorder) separates the `MetricsLayer`'s share. Goal: at
//!   most 5% slower.
//!
//! Each side runs on a current-thread runtime of its own (so an alert task
//! runs only while its side is measured), the recorder is installed with
//! `metrics::with_local_recorder` around the on side only.
//!
//! Run: `cargo bench --bench monitoring -- --warm-up-time 1 --measurement-time 3`
//! The `interleaved` lines printed at the end are the figures to quote.

use std::hint::black_box;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::Request;
use axum::routing::get;
use cacheable::http::{ContextLayer, MetricsLayer};
use cacheable::monitor::Alert;
use cacheable::{Cache, cacheable};
use cacheable_test_support::RedisServer;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::BodyExt as _;
use metrics_util::debugging::DebuggingRecorder;
use tokio::runtime::Runtime;
use tower::ServiceExt as _;

mod common;
use common::{Profile, profile_value};

#[cacheable(name = "bench.monitored", ttl = 3600, global, cache = cache, skip(cache))]
async fn profile(cache: &Cache, id: u64) -> Profile {
    profile_value(id)
}

async fn user(State(cache): State<Cache>, Path(id): Path<u64>) -> axum::Json<Profile> {
    axum::Json(profile(&cache, id).await)
}

fn router(cache: &Cache) -> Router {
    Router::new()
        .route("/users/{id}", get(user))
        .with_state(cache.clone())
}

async fn request(app: &Router) {
    let res = app
        .clone()
        .oneshot(Request::get("/users/42").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert!(res.status().is_success());
    black_box(res.into_body().collect().await.unwrap().to_bytes());
}

/// One side of a comparison: its runtime, cache, app and (on) recorder.
struct Side {
    rt: Runtime,
    cache: Cache,
    app: Router,
    recorder: Option<DebuggingRecorder>,
}

impl Side {
    fn new(server: &RedisServer, prefix: &str, on: bool, context: bool) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let cache = rt.block_on(async {
            let mut b = Cache::builder().redis_url(server.url()).prefix(prefix);
            if on {
                b = b
                    .alert(Alert::hit_ratio_below(0.5))
                    .alert(Alert::p99_above(Duration::from_millis(50)))
                    .alert(Alert::redis_unreachable())
                    .alert(Alert::memory_above(0.9))
                    .alert(Alert::denials_above(1000.0));
            }
            let cache = b.build().await.unwrap();
            profile(&cache, 42).await; // the miss that fills the entry
            cache
        });
        let app = match (on, context) {
            (true, _) => router(&cache)
                .layer(MetricsLayer::new().cache(cache.clone()))
                .layer(ContextLayer::new()),
            (false, true) => router(&cache).layer(ContextLayer::new()),
            (false, false) => router(&cache),
        };
        let recorder = on.then(DebuggingRecorder::new);
        Self {
            rt,
            cache,
            app,
            recorder,
        }
    }

    /// Runs `f` on this side's runtime, under its recorder if any.
    fn run<T>(&self, f: impl Future<Output = T>) -> T {
        match &self.recorder {
            Some(r) => metrics::with_local_recorder(r, || self.rt.block_on(f)),
            None => self.rt.block_on(f),
        }
    }

    fn hits(&self, n: u64) -> Duration {
        self.run(async {
            let t = Instant::now();
            for _ in 0..n {
                black_box(profile(&self.cache, 42).await);
            }
            t.elapsed()
        })
    }

    fn requests(&self, n: u64) -> Duration {
        self.run(async {
            let t = Instant::now();
            for _ in 0..n {
                request(&self.app).await;
            }
            t.elapsed()
        })
    }
}

fn bench(c: &mut Criterion) {
    let server = RedisServer::start();
    let on = Side::new(&server, "mon_on", true, true);
    let off = Side::new(&server, "mon_off", false, false);
    let ctx = Side::new(&server, "mon_ctx", false, true);
    if let Some((side, n)) = callgrind_mode() {
        let d = match side.as_str() {
            "hit_on" => measured(|| on.hits(n)),
            "hit_off" => measured(|| off.hits(n)),
            "req_on" => measured(|| on.requests(n)),
            "req_ctx" => measured(|| ctx.requests(n)),
            "req_off" => measured(|| off.requests(n)),
            other => panic!("unknown side {other}"),
        };
        println!("{side}: {n} calls in {d:?}");
        return;
    }

    let mut g = c.benchmark_group("redis_hit");
    g.bench_function("monitoring_off", |b| b.iter_custom(|n| off.hits(n)));
    g.bench_function("monitoring_on", |b| b.iter_custom(|n| on.hits(n)));
    g.finish();

    let mut g = c.benchmark_group("request");
    g.bench_function("bare_router", |b| b.iter_custom(|n| off.requests(n)));
    g.bench_function("context_only", |b| b.iter_custom(|n| ctx.requests(n)));
    g.bench_function("metrics_and_context", |b| {
        b.iter_custom(|n| on.requests(n));
    });
    g.finish();

    for side in [&on, &off, &ctx] {
        let s = side.cache.stats();
        assert_eq!(s.misses, 1, "every measured call was a hit: {s:?}");
    }
    if profiling() {
        return;
    }
    interleaved(&off, &ctx, &on);
    let recorded = on.recorder.as_ref().unwrap().snapshotter().snapshot();
    assert!(
        recorded.into_vec().len() >= 2,
        "the on side recorded hit and request metrics"
    );
    assert!(
        on.cache.stats().route("GET", "/users/{id}").is_some(),
        "the MetricsLayer recorded the route"
    );
    drop(server);
}

/// Rounds of batches with a rotating order; prints the on/off overheads.
fn interleaved(off: &Side, ctx: &Side, on: &Side) {
    const ROUNDS: usize = 12;
    const HITS: u64 = 2000;
    const REQS: u64 = 1000;
    let mut t = [Duration::ZERO; 5]; // hit off, hit on, req off, req ctx, req on
    for round in 0..ROUNDS {
        for k in 0..3 {
            match (round + k) % 3 {
                0 => {
                    t[0] += off.hits(HITS);
                    t[2] += off.requests(REQS);
                }
                1 => t[3] += ctx.requests(REQS),
                _ => {
                    t[1] += on.hits(HITS);
                    t[4] += on.requests(REQS);
                }
            }
        }
    }
    let pct = |on: Duration, off: Duration| (on.as_secs_f64() / off.as_secs_f64() - 1.0) * 100.0;
    let per = |d: Duration, n: u64| d / u32::try_from(n * ROUNDS as u64).unwrap();
    println!(
        "interleaved redis hit: off {:?}, on {:?}: monitoring {:+.1}% (goal <= 3%)",
        per(t[0], HITS),
        per(t[1], HITS),
        pct(t[1], t[0]),
    );
    println!(
        "interleaved request: bare {:?}, context only {:?}, metrics+context+recorder {:?}: \
         on vs bare {:+.1}% (goal <= 5%), MetricsLayer+recorder vs context only {:+.1}%",
        per(t[2], REQS),
        per(t[3], REQS),
        per(t[4], REQS),
        pct(t[4], t[2]),
        pct(t[4], t[3]),
    );
}

/// `CACHEABLE_BENCH_CALLS=<side>:<n>`: run `n` calls of one side inside
/// [`measured`] and nothing else, for
/// `valgrind --tool=callgrind --toggle-collect='*measured*'` (instructions
/// per call = the collected total / n).
fn callgrind_mode() -> Option<(String, u64)> {
    let v = std::env::var("CACHEABLE_BENCH_CALLS").ok()?;
    let (side, n) = v.split_once(':')?;
    Some((side.to_owned(), n.parse().ok()?))
}

#[inline(never)]
fn measured(f: impl FnOnce() -> Duration) -> Duration {
    f()
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
