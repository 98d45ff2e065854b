//! Monitoring against real parts: `MetricsLayer` behind an axum `Router`
//! (matched routes, status classes, hit and miss latency, the route cap),
//! compute-time quantiles, `memory_report` on a real `redis-server` with a
//! `maxmemory`, and alerts that fire and resolve once.
#![cfg(feature = "axum")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{Request, StatusCode};
use axum::routing::get;
use cacheable::http::{ContextLayer, MetricsLayer};
use cacheable::monitor::{Alert, AlertEvent, AlertState, OVERFLOW_ROUTE, UNMATCHED_ROUTE};
use cacheable::{Cache, CacheOptions, RateLimitOptions};
use cacheable_test_support::RedisServer;
use tower::ServiceExt as _;

/// How long a miss of `/users/{id}` computes: long enough that a hit (a
/// Redis round trip) stays below it on a loaded 2-core machine (with 20 ms,
/// a hit's p99 once exceeded a miss's p50 under a load average of ~20).
const MISS: Duration = Duration::from_millis(100);

async fn user(State(cache): State<Cache>, Path(id): Path<u64>) -> Result<String, StatusCode> {
    let opts = CacheOptions::new().ttl(Duration::from_secs(60));
    cache
        .get_or_compute(&format!("user:{id}"), &opts, || async move {
            tokio::time::sleep(MISS).await;
            Ok::<_, StatusCode>(format!("user {id}"))
        })
        .await
}

fn app(cache: &Cache, layer: MetricsLayer, metrics_inside: bool) -> Router {
    let router = Router::new()
        .route("/users/{id}", get(user))
        .route("/boom", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
        .with_state(cache.clone());
    if metrics_inside {
        router.layer(layer).layer(ContextLayer::new())
    } else {
        router.layer(ContextLayer::new()).layer(layer)
    }
}

async fn get_status(app: &Router, uri: &str) -> StatusCode {
    app.clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap()
        .status()
}

async fn routes_and_hits(metrics_inside: bool) {
    let cache = Cache::memory();
    let app = app(
        &cache,
        MetricsLayer::new().cache(cache.clone()),
        metrics_inside,
    );
    // Three users, each a miss then two hits: the raw paths differ, the route does not.
    for id in 1..=3 {
        for _ in 0..3 {
            assert_eq!(
                get_status(&app, &format!("/users/{id}")).await,
                StatusCode::OK
            );
        }
    }
    assert_eq!(
        get_status(&app, "/boom").await,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(get_status(&app, "/nowhere/42").await, StatusCode::NOT_FOUND);
    let stats = cache.stats();
    let r = stats
        .route("GET", "/users/{id}")
        .expect("the matched route");
    assert_eq!((r.requests(), r.status_2xx), (9, 9));
    assert_eq!((r.hit.count, r.miss.count), (6, 3));
    // A miss waits for the computation; a hit does not (the sketch reports
    // within 1.6 % of the exact quantile).
    assert!(r.miss.p50 >= MISS * 98 / 100, "{r:?}");
    assert!(r.hit.p99 < r.miss.p50, "{r:?}");
    assert!(r.latency.max >= r.latency.p99 && r.latency.p99 >= r.latency.p50);
    assert!(
        stats.routes().all(|r| !r.route.starts_with("/users/1")),
        "raw path recorded"
    );
    let boom = stats.route("GET", "/boom").unwrap();
    assert_eq!(
        (boom.status_5xx, boom.hit.count, boom.miss.count),
        (1, 0, 0)
    );
    let lost = stats.route("GET", UNMATCHED_ROUTE).unwrap();
    assert_eq!((lost.requests(), lost.status_4xx), (1, 1));
    // The computation's quantiles, per function.
    let f = stats
        .function("cache.get_or_compute")
        .expect("function stats");
    assert_eq!(f.compute_latency.count, 3);
    assert!(f.compute_latency.p50 >= Duration::from_millis(19), "{f:?}");
}

#[tokio::test]
async fn metrics_layer_inside_context_layer_records_routes_and_hits() {
    routes_and_hits(true).await;
}

#[tokio::test]
async fn metrics_layer_outside_context_layer_records_routes_and_hits() {
    routes_and_hits(false).await;
}

#[tokio::test]
async fn the_route_cap_sends_later_routes_to_one_overflow_label() {
    let cache = Cache::memory();
    let mut router = Router::new();
    for i in 0..20 {
        router = router.route(&format!("/r{i}"), get(|| async { "ok" }));
    }
    let app = router.layer(MetricsLayer::new().cache(cache.clone()).max_routes(5));
    for i in 0..20 {
        assert_eq!(get_status(&app, &format!("/r{i}")).await, StatusCode::OK);
    }
    let stats = cache.stats();
    let routes: Vec<_> = stats.routes().collect();
    assert_eq!(routes.len(), 6, "{routes:?}");
    assert_eq!(stats.route("GET", OVERFLOW_ROUTE).unwrap().requests(), 15);
}

#[test]
fn metrics_reach_the_metrics_facade_with_bounded_labels() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let cache = Cache::memory();
    let app = app(&cache, MetricsLayer::new().cache(cache.clone()), true);
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            get_status(&app, "/users/7").await;
            get_status(&app, "/users/7").await;
        });
    });
    let mut seen = Vec::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        if key.key().name() != "cacheable_http_request_duration_seconds" {
            continue;
        }
        let labels: Vec<String> = key
            .key()
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let DebugValue::Histogram(samples) = value else {
            panic!("not a histogram")
        };
        seen.push((labels.join(","), samples.len()));
    }
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (
                "method=GET,route=/users/{id},status=2xx,cache=hit".to_owned(),
                1
            ),
            (
                "method=GET,route=/users/{id},status=2xx,cache=miss".to_owned(),
                1
            ),
        ]
    );
}

#[test]
fn each_recorder_counts_what_was_recorded_under_it() {
    // The metric keys of a function and of a route are built once per
    // cache; the recorder is looked up on every call. A second recorder
    // (each test's local one, or a global one installed later) must get
    // its own counts, not the first one's handles.
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let cache = Cache::memory();
    let app = app(&cache, MetricsLayer::new().cache(cache.clone()), true);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let counted = |requests: usize| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            rt.block_on(async {
                for _ in 0..requests {
                    get_status(&app, "/users/7").await;
                }
            });
        });
        let (mut hits, mut samples) = (0, 0);
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            match (key.key().name(), value) {
                ("cacheable_hits_total", DebugValue::Counter(n)) => hits += n,
                ("cacheable_http_request_duration_seconds", DebugValue::Histogram(s)) => {
                    samples += s.len();
                }
                _ => {}
            }
        }
        (hits, samples)
    };
    assert_eq!(counted(3), (2, 3), "a miss then two hits");
    assert_eq!(counted(2), (2, 2), "the second recorder's own");
    assert_eq!(counted(1), (1, 1), "and the third's");
}

#[tokio::test]
async fn memory_report_reads_redis_with_maxmemory_and_samples_tenants() {
    let server =
        RedisServer::start_with(&["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"]);
    let cache = Cache::builder()
        .redis_url(server.url())
        .prefix("mr")
        .build()
        .await
        .unwrap();
    let opts = |t: &str| CacheOptions::new().tenant(t);
    for i in 0..50 {
        cache
            .set(&format!("k{i}"), &"x".repeat(1000), &opts("big"))
            .await
            .unwrap();
    }
    for i in 0..5 {
        cache
            .set(&format!("k{i}"), &"y", &opts("small"))
            .await
            .unwrap();
    }
    // A key of someone else: not counted.
    server.command(&[b"SET", b"other:key", b"v"]);
    let report = cache.memory_report().await;
    assert_eq!(report.backend, "redis");
    assert_eq!(report.redis_max_bytes, Some(64 * 1024 * 1024));
    assert!(report.redis_used_bytes.is_some_and(|u| u > 0));
    assert_eq!(report.evictions, Some(0));
    assert!(report.keys_exact);
    let dbsize = report.servers[0].db_keys.unwrap();
    assert_eq!(report.keys, Some(dbsize - 1), "{report:?}");
    assert_eq!(report.tenants[0].tenant, "big");
    assert_eq!(report.tenants[1].tenant, "small");
    assert!(report.tenants[0].bytes > 50 * 1000, "{report:?}");
    assert!(report.used_fraction().is_some_and(|f| f > 0.0 && f < 1.0));
    if cfg!(target_os = "linux") {
        assert!(report.process_rss_bytes.is_some());
    }
    assert_eq!(report.local_bytes, 0);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["redis_max_bytes"], 64 * 1024 * 1024);
    // Without maxmemory: unlimited.
    server.command(&[b"CONFIG", b"SET", b"maxmemory", b"0"]);
    assert_eq!(cache.memory_report().await.redis_max_bytes, None);
}

#[tokio::test]
async fn memory_report_of_an_unreachable_redis_has_no_figures() {
    let mut server = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .op_timeout(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    server.kill();
    let report = cache.memory_report().await;
    assert_eq!((report.redis_used_bytes, report.keys), (None, None));
}

type Events = Arc<Mutex<Vec<AlertEvent>>>;

fn recorder() -> (Events, impl Fn(&AlertEvent) + Send + Sync + 'static) {
    let events: Events = Arc::default();
    let sink = Arc::clone(&events);
    (events, move |e: &AlertEvent| {
        sink.lock().unwrap().push(e.clone());
    })
}

fn states(events: &Events) -> Vec<AlertState> {
    events.lock().unwrap().iter().map(|e| e.state).collect()
}

/// Waits until `cond` holds, polling every 10 ms, for up to 5 s.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

const TICK: Duration = Duration::from_millis(20);
const WINDOW: Duration = Duration::from_millis(100);

#[tokio::test]
async fn hit_ratio_alert_fires_once_and_resolves_once() {
    let (events, cb) = recorder();
    let cache = Cache::builder()
        .memory()
        .alert(Alert::hit_ratio_below(0.5).for_(WINDOW))
        .alert_interval(TICK)
        .on_alert(cb)
        .build()
        .await
        .unwrap();
    let opts = CacheOptions::new();
    // Misses only, for several windows.
    let misses = async {
        for i in 0..40 {
            let _: Option<u64> = cache.get(&format!("absent{i}"), &opts).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    misses.await;
    assert_eq!(states(&events), vec![AlertState::Firing]);
    assert_eq!(cache.alerts().len(), 1);
    assert_eq!(cache.alerts()[0].alert, "hit_ratio_below(0.5)");
    cache.set("k", &1u64, &opts).await.unwrap();
    for _ in 0..40 {
        let _: Option<u64> = cache.get("k", &opts).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        states(&events),
        vec![AlertState::Firing, AlertState::Resolved]
    );
    assert!(cache.alerts().is_empty());
}

#[tokio::test]
async fn a_flapping_hit_ratio_never_fires() {
    let (events, cb) = recorder();
    let cache = Cache::builder()
        .memory()
        .alert(Alert::hit_ratio_below(0.5).for_(Duration::from_millis(300)))
        .alert_interval(TICK)
        .on_alert(cb)
        .build()
        .await
        .unwrap();
    let opts = CacheOptions::new();
    cache.set("k", &1u64, &opts).await.unwrap();
    // Alternate 60 ms of misses and 60 ms of hits for a second.
    for round in 0..8 {
        for i in 0..6 {
            let key = if round % 2 == 0 {
                format!("absent{i}")
            } else {
                "k".to_owned()
            };
            let _: Option<u64> = cache.get(&key, &opts).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert!(events.lock().unwrap().is_empty(), "{events:?}");
}

#[tokio::test]
async fn redis_unreachable_fires_and_resolves() {
    let server = RedisServer::start();
    let (events, cb) = recorder();
    let cache = Cache::builder()
        .redis_url(server.url())
        .op_timeout(Duration::from_millis(50))
        .alert(Alert::redis_unreachable().for_(WINDOW))
        .alert_interval(TICK)
        .on_alert(cb)
        .build()
        .await
        .unwrap();
    tokio::time::sleep(WINDOW * 2).await;
    assert!(states(&events).is_empty());
    server.pause();
    eventually("firing", || states(&events) == vec![AlertState::Firing]).await;
    server.resume();
    eventually("resolving", || states(&events).len() == 2).await;
    tokio::time::sleep(WINDOW * 2).await;
    assert_eq!(
        states(&events),
        vec![AlertState::Firing, AlertState::Resolved]
    );
    drop(cache);
}

#[tokio::test]
async fn memory_above_fires_when_redis_fills_up() {
    let server = RedisServer::start_with(&["--maxmemory", "8mb"]);
    let (events, cb) = recorder();
    let cache = Cache::builder()
        .redis_url(server.url())
        .alert(Alert::memory_above(0.5).for_(WINDOW))
        .alert_interval(TICK)
        .on_alert(cb)
        .build()
        .await
        .unwrap();
    tokio::time::sleep(WINDOW * 2).await;
    assert!(
        states(&events).is_empty(),
        "an empty Redis is under half full"
    );
    // 6 MB of someone's data.
    let blob = vec![b'x'; 1024 * 1024];
    for i in 0..6 {
        server.command(&[b"SET", format!("blob{i}").as_bytes(), &blob]);
    }
    eventually("firing", || states(&events) == vec![AlertState::Firing]).await;
    server.command(&[b"FLUSHALL"]);
    eventually("resolving", || states(&events).len() == 2).await;
    drop(cache);
}

#[tokio::test]
async fn denials_above_fires_under_a_flood_and_resolves_after() {
    let server = RedisServer::start();
    let (events, cb) = recorder();
    let cache = Cache::builder()
        .redis_url(server.url())
        .alert(Alert::denials_above(50.0).for_(WINDOW))
        .alert_interval(TICK)
        .on_alert(cb)
        .build()
        .await
        .unwrap();
    let limiter = cache.rate_limiter();
    let opts = RateLimitOptions::new(std::num::NonZeroU32::MIN, Duration::from_secs(60));
    let flood = async {
        for _ in 0..300 {
            let _ = limiter.check("flood", &opts).await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    flood.await;
    eventually("firing", || states(&events) == vec![AlertState::Firing]).await;
    eventually("resolving", || states(&events).len() == 2).await;
    assert_eq!(
        states(&events),
        vec![AlertState::Firing, AlertState::Resolved]
    );
}

#[tokio::test]
async fn function_p99_alert_fires_on_slow_computations() {
    let (events, cb) = recorder();
    let cache = Cache::builder()
        .memory()
        .alert(
            Alert::p99_above(Duration::from_millis(5))
                .function("cache.get_or_compute")
                .for_(WINDOW),
        )
        .alert_interval(TICK)
        .on_alert(cb)
        .build()
        .await
        .unwrap();
    let opts = CacheOptions::new();
    for i in 0..20 {
        let _ = cache
            .get_or_compute(&format!("slow{i}"), &opts, || async {
                tokio::time::sleep(Duration::from_millis(15)).await;
                Ok::<_, ()>(1u8)
            })
            .await;
    }
    assert_eq!(states(&events), vec![AlertState::Firing]);
    // No samples: no data, the alert stays; fast ones resolve it.
    for i in 0..40 {
        let _ = cache
            .get_or_compute(&format!("fast{i}"), &opts, || async { Ok::<_, ()>(1u8) })
            .await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        states(&events),
        vec![AlertState::Firing, AlertState::Resolved]
    );
}

#[tokio::test]
async fn the_evaluator_stops_when_the_cache_is_dropped() {
    let (events, cb) = recorder();
    let cache = Cache::builder()
        .memory()
        .alert(Alert::hit_ratio_below(0.5).for_(WINDOW))
        .alert_interval(TICK)
        .on_alert(cb)
        .build()
        .await
        .unwrap();
    // The callback (which the evaluator's Alerts own) is freed once the
    // cache is dropped and the task ends.
    drop(cache);
    eventually("the evaluator to end", || Arc::strong_count(&events) == 1).await;
}

#[test]
fn alerts_without_a_runtime_are_a_config_error() {
    let built = std::thread::spawn(|| {
        futures_lite_block_on(
            Cache::builder()
                .memory()
                .alert(Alert::redis_unreachable())
                .build(),
        )
    })
    .join()
    .unwrap();
    assert!(matches!(built, Err(cacheable::CacheError::Config(_))));
}

/// Polls a future that never waits to completion without a runtime.
fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}
