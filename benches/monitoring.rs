//! What monitoring costs, on vs off in the same run, interleaved, on one
//! `redis-server` started for the bench (never the one on port 6379).
//!
//! *Monitoring* is what an app turns on to watch the cache: a `metrics`
//! recorder, alerts and, for requests, `MetricsLayer`. The recorder is the
//! one a production app installs, `metrics-exporter-prometheus`'s (recorder
//! only, as in `examples/tenant-api`); metrics-util's `DebuggingRecorder`, a
//! heavier test recorder, is a second line in callgrind mode (`*_debug`).
//!
//! - `redis_hit`: a `#[cacheable]` Redis hit of a ~200-byte value. *On*: the
//!   recorder and five alerts (hit ratio, p99, reachability, memory,
//!   denials; evaluated by a background task every second, the default).
//!   *Off*: no recorder, no alert. Both sides keep what cannot be turned
//!   off: the `Stats` counters and the per-function hit sketch (fed by one
//!   hit in 16), and the `metrics` feature is compiled in on both (the
//!   counters go to the no-op recorder on the off side). Goal: at most 3%
//!   slower.
//! - `request`: a `GET /users/42` through an axum `Router` (in process,
//!   `oneshot`, body collected) whose handler does the same hit. `ContextLayer`
//!   is the tenant/user context, which the app has with or without
//!   monitoring, so *off* is `ContextLayer` alone (`context_only`) and *on*
//!   adds `MetricsLayer` inside it, the recorder and the alerts. Goal: at
//!   most 5% slower. The bare router (`bare_router`) is printed beside them:
//!   on vs bare is monitoring plus the context.
//!
//! Each side runs on a current-thread runtime of its own (so an alert task
//! runs only while its side is measured); the recorder is installed with
//! `metrics::with_local_recorder` around the on side only, and its
//! histograms are drained (`run_upkeep`, what the exporter's upkeep task
//! does) after each batch, outside the timing.
//!
//! Run: `cargo bench --bench monitoring -- --warm-up-time 1 --measurement-time 3`
//! The `interleaved` lines printed at the end are the figures to quote.
//! Callgrind: `CACHEABLE_BENCH_CALLS=<kind>:<n>` runs `n` calls of one kind
//! (`hit_off`, `hit_on`, `hit_debug`, `req_off`, `req_ctx`, `req_on`,
//! `req_debug`) inside `measured` and exits.

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
use metrics::Recorder;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
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

/// The recorder of an on side.
enum Rec {
    Prometheus(PrometheusRecorder, PrometheusHandle),
    Debugging(DebuggingRecorder),
}

impl Rec {
    fn prometheus() -> Self {
        let r = PrometheusBuilder::new().build_recorder();
        let h = r.handle();
        Self::Prometheus(r, h)
    }

    fn recorder(&self) -> &dyn Recorder {
        match self {
            Self::Prometheus(r, _) => r,
            Self::Debugging(r) => r,
        }
    }

    /// What the exporter's upkeep task does: drains histogram samples.
    fn upkeep(&self) {
        if let Self::Prometheus(_, h) = self {
            h.run_upkeep();
        }
    }
}

/// One side of a comparison: its runtime, cache, app and (on) recorder.
struct Side {
    rt: Runtime,
    cache: Cache,
    app: Router,
    recorder: Option<Rec>,
}

impl Side {
    /// `recorder`: `None` for an off side, else the on side's recorder
    /// (with the alerts and `MetricsLayer`).
    fn new(server: &RedisServer, prefix: &str, recorder: Option<Rec>, context: bool) -> Self {
        let on = recorder.is_some();
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
            Some(r) => metrics::with_local_recorder(r.recorder(), || self.rt.block_on(f)),
            None => self.rt.block_on(f),
        }
    }

    /// `n` hits, timed; then the recorder's upkeep, untimed.
    fn hits(&self, n: u64) -> Duration {
        let d = self.hits_only(n);
        self.upkeep();
        d
    }

    /// `n` requests, timed; then the recorder's upkeep, untimed.
    fn requests(&self, n: u64) -> Duration {
        let d = self.requests_only(n);
        self.upkeep();
        d
    }

    fn upkeep(&self) {
        if let Some(r) = &self.recorder {
            r.upkeep();
        }
    }

    fn hits_only(&self, n: u64) -> Duration {
        self.run(async {
            let t = Instant::now();
            for _ in 0..n {
                black_box(profile(&self.cache, 42).await);
            }
            t.elapsed()
        })
    }

    fn requests_only(&self, n: u64) -> Duration {
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
    let on = Side::new(&server, "mon_on", Some(Rec::prometheus()), true);
    let off = Side::new(&server, "mon_off", None, false);
    let ctx = Side::new(&server, "mon_ctx", None, true);
    if let Some((side, n)) = callgrind_mode() {
        let debug = || {
            let rec = Rec::Debugging(DebuggingRecorder::new());
            Side::new(&server, "mon_debug", Some(rec), true)
        };
        let d = match side.as_str() {
            "hit_on" => measured(|| on.hits_only(n)),
            "hit_debug" => {
                let debug = debug();
                measured(|| debug.hits_only(n))
            }
            "hit_off" => measured(|| off.hits_only(n)),
            "req_on" => measured(|| on.requests_only(n)),
            "req_debug" => {
                let debug = debug();
                measured(|| debug.requests_only(n))
            }
            "req_ctx" => measured(|| ctx.requests_only(n)),
            "req_off" => measured(|| off.requests_only(n)),
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
    g.bench_function("monitoring_off", |b| b.iter_custom(|n| ctx.requests(n)));
    g.bench_function("monitoring_on", |b| b.iter_custom(|n| on.requests(n)));
    g.finish();

    for side in [&on, &off, &ctx] {
        let s = side.cache.stats();
        assert_eq!(s.misses, 1, "every measured call was a hit: {s:?}");
    }
    if profiling() {
        return;
    }
    interleaved(&off, &ctx, &on);
    let Some(Rec::Prometheus(_, handle)) = &on.recorder else {
        unreachable!("the on side records into Prometheus")
    };
    let text = handle.render();
    assert!(
        text.contains("cacheable_hits_total")
            && text.contains("cacheable_http_request_duration_seconds"),
        "the on side recorded hit and request metrics: {text}"
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
        "interleaved request: off (context only) {:?}, on {:?}: monitoring {:+.1}% (goal <= 5%); \
         bare router {:?}: on vs bare {:+.1}%",
        per(t[3], REQS),
        per(t[4], REQS),
        pct(t[4], t[3]),
        per(t[2], REQS),
        pct(t[4], t[2]),
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
