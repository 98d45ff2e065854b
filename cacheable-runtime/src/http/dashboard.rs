//! [`dashboard`]: a live monitoring page for one cache (feature `axum`),
//! an embedded HTML file (`dashboard.html`) and the JSON feed it polls
//! (`api/snapshot`), built from small view structs of this module.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::cache::{Cache, Health};
use crate::monitor::{AlertEvent, AlertState, Latency, MemoryReport};

/// The page: one self-contained file, no external assets.
const PAGE: &str = include_str!("dashboard.html");

/// How long a memory report is reused: it scans keys (see `Cache::memory_report`).
pub const MEMORY_REPORT_TTL: Duration = Duration::from_secs(5);
/// How long a health check (one `PING`) is reused.
const HEALTH_TTL: Duration = Duration::from_secs(1);
/// Samples of the hit-ratio series kept (one per poll, at least
/// `SAMPLE_SPACING` apart): 10 minutes at one poll a second.
pub const SERIES_LEN: usize = 600;
/// The least time between two samples of the series.
const SAMPLE_SPACING: Duration = Duration::from_millis(900);

/// A live monitoring page for `cache`, as a [`Router`] to mount where the
/// app likes, e.g. `.nest("/_cache", dashboard(cache))`:
///
/// - `GET /` (so `/_cache`; axum 0.8's `nest` does not match `/_cache/`,
///   add a redirect if you want it): one self-contained HTML page (inline CSS and
///   JS, plots drawn on `<canvas>`; no CDN, works offline);
/// - `GET /api/snapshot`: the JSON the page polls every second: totals and
///   a bounded series of ([`SERIES_LEN`]) hit/miss samples for the hit
///   ratio over time, per-function counts and quantiles (hit time, query
///   time), per-route latency quantiles (from
///   [`MetricsLayer`](super::MetricsLayer)), Redis health and breaker
///   state, the memory report (reused for [`MEMORY_REPORT_TTL`], since it
///   scans keys), rate-limit totals and admissions and denials per limiter
///   (`rate_limit.limiters`, see [`RateLimitStats::limiters`](crate::RateLimitStats::limiters)),
///   and the alerts firing.
///
/// # Security
///
/// **The dashboard is off unless mounted, and protecting it is the app's
/// job**: it has no authentication of its own. It shows function and route
/// names, tenant ids and their memory, and error messages of the store;
/// mount it behind the app's admin authentication (the `tenant-api`
/// example puts it behind an operator token), or on a listener only
/// operators reach. Polling costs one `stats()` snapshot per request, one
/// `PING` a second at most and one memory report per
/// [`MEMORY_REPORT_TTL`] at most, however many pages are open.
///
/// ```
/// use axum::Router;
/// use cacheable_runtime::Cache;
/// use cacheable_runtime::http::dashboard;
///
/// let cache = Cache::memory();
/// let app: Router = Router::new().nest("/_cache", dashboard(cache));
/// ```
pub fn dashboard(cache: Cache) -> Router {
    let state = Arc::new(Dash {
        cache,
        memory: tokio::sync::Mutex::new(None),
        health: tokio::sync::Mutex::new(None),
        series: Mutex::new(VecDeque::with_capacity(SERIES_LEN)),
    });
    Router::new()
        .route("/", get(page))
        .route("/api/snapshot", get(snapshot))
        .with_state(state)
}

/// The dashboard's state: the cache and what is reused between polls.
struct Dash {
    cache: Cache,
    /// The last memory report and when it was made. An async mutex: one
    /// poll makes a new report while the others wait for it.
    memory: tokio::sync::Mutex<Option<(Instant, MemoryReport)>>,
    health: tokio::sync::Mutex<Option<(Instant, HealthView)>>,
    series: Mutex<VecDeque<Sample>>,
}

async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
}

/// One point of the hit-ratio series: cumulative counts at a time.
#[derive(Debug, Clone, Copy, Serialize)]
struct Sample {
    /// Unix time, milliseconds.
    t: u64,
    hits: u64,
    misses: u64,
    denied: u64,
}

/// Quantiles in milliseconds.
#[derive(Debug, Serialize)]
struct LatencyView {
    count: u64,
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl From<&Latency> for LatencyView {
    fn from(l: &Latency) -> Self {
        Self {
            count: l.count,
            p50: ms(l.p50),
            p95: ms(l.p95),
            p99: ms(l.p99),
            max: ms(l.max),
        }
    }
}

#[derive(Debug, Serialize)]
struct FunctionView {
    name: String,
    hits: u64,
    misses: u64,
    errors: u64,
    stale_served: u64,
    hit_ratio: f64,
    /// Time of a hit (from the one hit in 16 that is timed).
    hit: LatencyView,
    /// Time of the computation on a miss: the query.
    compute: LatencyView,
}

#[derive(Debug, Serialize)]
struct RouteView {
    method: String,
    route: String,
    all: LatencyView,
    hit: LatencyView,
    miss: LatencyView,
    status_2xx: u64,
    status_4xx: u64,
    status_5xx: u64,
}

#[derive(Debug, Clone, Serialize)]
struct HealthView {
    backend: &'static str,
    reachable: bool,
    latency_ms: Option<f64>,
    breaker: &'static str,
    error: Option<String>,
}

impl From<&Health> for HealthView {
    fn from(h: &Health) -> Self {
        Self {
            backend: h.backend,
            reachable: h.reachable,
            latency_ms: h.latency.map(ms),
            breaker: match h.breaker {
                crate::BreakerState::Closed => "closed",
                crate::BreakerState::Open => "open",
                crate::BreakerState::HalfOpen => "half-open",
            },
            error: h.error.clone(),
        }
    }
}

/// Rate-limit totals of the cache's limiter, and the same per limiter.
#[derive(Debug, Serialize)]
struct RateLimitView {
    allowed: u64,
    denied: u64,
    denied_cached: u64,
    errors: u64,
    fallback_local: u64,
    unidentified: u64,
    /// By name, in name order (at most `rate_limit::MAX_LIMITERS` and `<other>`).
    limiters: Vec<LimiterView>,
}

/// One limiter's figures (`RateLimitStats::limiters`).
#[derive(Debug, Serialize)]
struct LimiterView {
    name: String,
    allowed: u64,
    denied: u64,
    denied_cached: u64,
    fallbacks: u64,
    unidentified: u64,
    /// Denied over allowed + denied; 0 before any decision.
    denial_rate: f64,
}

#[derive(Debug, Serialize)]
struct AlertView {
    alert: String,
    firing: bool,
    value: f64,
    threshold: f64,
    /// Unix time of the transition, milliseconds.
    since_ms: u64,
}

impl From<&AlertEvent> for AlertView {
    fn from(a: &AlertEvent) -> Self {
        Self {
            alert: a.alert.clone(),
            firing: a.state == AlertState::Firing,
            value: a.value,
            threshold: a.threshold,
            since_ms: unix_ms(a.at),
        }
    }
}

#[derive(Debug, Serialize)]
struct MemoryView {
    /// How old the report is (it is reused for a few seconds).
    age_ms: u64,
    used_fraction: Option<f64>,
    #[serde(flatten)]
    report: MemoryReport,
}

/// The JSON of `api/snapshot`.
#[derive(Debug, Serialize)]
struct Snapshot {
    /// Unix time of the snapshot, milliseconds.
    now_ms: u64,
    prefix: String,
    hits: u64,
    misses: u64,
    errors: u64,
    stale_served: u64,
    computes: u64,
    invalidations: u64,
    /// Hits over hits + misses since the cache was built (`Stats::hit_ratio`).
    hit_ratio: f64,
    series: Vec<Sample>,
    functions: Vec<FunctionView>,
    routes: Vec<RouteView>,
    health: HealthView,
    memory: MemoryView,
    rate_limit: RateLimitView,
    alerts: Vec<AlertView>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Dash {
    async fn memory(&self) -> MemoryView {
        let mut slot = self.memory.lock().await;
        let fresh = slot
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < MEMORY_REPORT_TTL);
        if !fresh {
            *slot = Some((Instant::now(), self.cache.memory_report().await));
        }
        let (at, report) = slot.as_ref().expect("filled above");
        MemoryView {
            age_ms: u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX),
            used_fraction: report.used_fraction(),
            report: report.clone(),
        }
    }

    async fn health(&self) -> HealthView {
        let mut slot = self.health.lock().await;
        match slot.as_ref() {
            Some((at, h)) if at.elapsed() < HEALTH_TTL => h.clone(),
            _ => {
                let h = HealthView::from(&self.cache.health().await);
                *slot = Some((Instant::now(), h.clone()));
                h
            }
        }
    }

    /// Adds a sample unless the last one is too recent; returns the series.
    fn sample(&self, s: Sample) -> Vec<Sample> {
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let spacing = u64::try_from(SAMPLE_SPACING.as_millis()).unwrap_or(u64::MAX);
        if series.back().is_none_or(|last| s.t >= last.t + spacing) {
            if series.len() == SERIES_LEN {
                series.pop_front();
            }
            series.push_back(s);
        }
        series.iter().copied().collect()
    }
}

async fn snapshot(State(dash): State<Arc<Dash>>) -> impl IntoResponse {
    let cache = &dash.cache;
    let stats = cache.stats();
    let limits = cache.rate_limiter().stats();
    let now_ms = unix_ms(SystemTime::now());
    let series = dash.sample(Sample {
        t: now_ms,
        hits: stats.hits,
        misses: stats.misses,
        denied: limits.denied,
    });
    let functions = stats
        .functions()
        .map(|(name, f)| FunctionView {
            name: name.to_owned(),
            hits: f.hits,
            misses: f.misses,
            errors: f.errors,
            stale_served: f.stale_served,
            hit_ratio: f.hit_ratio(),
            hit: (&f.hit_latency).into(),
            compute: (&f.compute_latency).into(),
        })
        .collect();
    let routes = stats
        .routes()
        .map(|r| RouteView {
            method: r.method.clone(),
            route: r.route.clone(),
            all: (&r.latency).into(),
            hit: (&r.hit).into(),
            miss: (&r.miss).into(),
            status_2xx: r.status_2xx,
            status_4xx: r.status_4xx,
            status_5xx: r.status_5xx,
        })
        .collect();
    let (health, memory) = tokio::join!(dash.health(), dash.memory());
    let body = Snapshot {
        now_ms,
        prefix: cache.prefix().to_owned(),
        hits: stats.hits,
        misses: stats.misses,
        errors: stats.errors,
        stale_served: stats.stale_served,
        computes: stats.computes,
        invalidations: stats.invalidations,
        hit_ratio: stats.hit_ratio(),
        series,
        functions,
        routes,
        health,
        memory,
        rate_limit: RateLimitView {
            allowed: limits.allowed,
            denied: limits.denied,
            denied_cached: limits.denied_cached,
            errors: limits.errors,
            fallback_local: limits.fallback_local,
            unidentified: limits.unidentified,
            limiters: limits
                .limiters()
                .map(|(name, l)| LimiterView {
                    name: name.to_owned(),
                    allowed: l.allowed,
                    denied: l.denied,
                    denied_cached: l.denied_cached,
                    fallbacks: l.fallbacks,
                    unidentified: l.unidentified,
                    denial_rate: l.denial_rate(),
                })
                .collect(),
        },
        alerts: cache.alerts().iter().map(AlertView::from).collect(),
    };
    ([(header::CACHE_CONTROL, "no-store")], Json(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_series_is_bounded_and_spaced() {
        let dash = Dash {
            cache: Cache::memory(),
            memory: tokio::sync::Mutex::new(None),
            health: tokio::sync::Mutex::new(None),
            series: Mutex::new(VecDeque::new()),
        };
        let s = |t| Sample {
            t,
            hits: t,
            misses: 0,
            denied: 0,
        };
        // Too close to the previous sample: not kept.
        assert_eq!(dash.sample(s(1_000)).len(), 1);
        assert_eq!(dash.sample(s(1_100)).len(), 1);
        for i in 1..=2 * SERIES_LEN as u64 {
            dash.sample(s(1_000 + i * 1_000));
        }
        let series = dash.sample(s(10_000_000));
        assert_eq!(series.len(), SERIES_LEN);
        assert_eq!(series.last().map(|x| x.t), Some(10_000_000));
    }

    #[test]
    fn the_page_is_self_contained() {
        // No external scripts, styles, fonts or images: it works offline.
        for needle in ["src=\"http", "href=\"http", "url(http", "@import", "//cdn"] {
            assert!(!PAGE.contains(needle), "the page loads `{needle}`");
        }
        assert!(PAGE.contains("api/snapshot"));
    }
}
