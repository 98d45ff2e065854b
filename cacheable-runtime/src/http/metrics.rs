//! [`MetricsLayer`]: response times per method, matched route and status
//! class, with the cache outcome of the handler's cached call, into
//! `Cache::stats()` (`Stats::routes`) and the `metrics` facade.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use axum::extract::MatchedPath;
use http::{Method, Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::notes::RequestNotes;
use crate::cache::Cache;
use crate::context::{self, CacheNote, CallObserver, RateLimitNote};
use crate::monitor::routes::{OVERFLOW_ROUTE, Outcome, RouteTable, UNMATCHED_ROUTE};

/// The default cap on (method, route) pairs tracked.
pub const DEFAULT_MAX_ROUTES: usize = 1000;

/// A tower [`Layer`] (axum 0.8) that times every request and records it by
/// method, **matched route** (axum's [`MatchedPath`], never the raw path, so
/// `/users/1` and `/users/2` are one series) and status class, and whether
/// the handler's cached call was a hit or a miss:
///
/// - into [`Cache::stats`]: [`Stats::route`](crate::Stats::route) gives the
///   count, p50/p95/p99 and max, and the same for hits and misses apart;
/// - with feature `metrics`, into the histogram
///   `cacheable_http_request_duration_seconds` (labels `method`, `route`,
///   `status` = `2xx`…, `cache` = `hit`/`miss`/`none`).
///
/// Add it with `Router::layer` (or `route_layer`), where the route is known;
/// a request no route matched is recorded as [`UNMATCHED_ROUTE`]. At most
/// [`max_routes`](Self::max_routes) pairs are tracked; later ones are
/// recorded as [`OVERFLOW_ROUTE`]. Methods outside the standard nine are
/// recorded as `OTHER`.
///
/// The hit or miss is the one the handler's outermost cached call reported,
/// through the request context: put the layer inside `ContextLayer`
/// (`.layer(MetricsLayer::new()).layer(ContextLayer::new())`) or outside it;
/// both work.
///
/// ```
/// use axum::{Router, routing::get};
/// use cacheable_runtime::http::{ContextLayer, MetricsLayer};
///
/// let app: Router = Router::new()
///     .route("/users/{id}", get(|| async { "user" }))
///     .layer(MetricsLayer::new())
///     .layer(ContextLayer::new());
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct MetricsLayer {
    cache: Option<Cache>,
    max_routes: usize,
    /// Where routes are counted when there is no cache (for the label cap).
    fallback: Arc<RouteTable>,
}

impl Default for MetricsLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl MetricsLayer {
    /// Records into the global cache's statistics (`cacheable::global()`,
    /// looked up per request), and into the `metrics` facade.
    pub fn new() -> Self {
        Self {
            cache: None,
            max_routes: DEFAULT_MAX_ROUTES,
            fallback: Arc::default(),
        }
    }

    /// Records into this cache's statistics instead of the global one's.
    pub fn cache(mut self, cache: Cache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The most (method, route) pairs tracked (default
    /// [`DEFAULT_MAX_ROUTES`]); later ones count as [`OVERFLOW_ROUTE`].
    pub fn max_routes(mut self, max: usize) -> Self {
        self.max_routes = max;
        self
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`MetricsLayer`].
#[derive(Clone, Debug)]
pub struct MetricsService<S> {
    inner: S,
    layer: MetricsLayer,
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// The `metrics` call site of the request histogram (what the
/// `histogram!` macro would make in this module).
#[cfg(feature = "metrics")]
static METADATA: metrics::Metadata<'static> =
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// Forwards the handler's notes to the observer already in the context (the
/// `ContextLayer`'s) and keeps the last cache outcome.
#[derive(Debug)]
struct Tee {
    next: Option<Arc<dyn CallObserver>>,
    /// 0: none, 1: hit, 2: miss (the last note wins: the outermost call).
    outcome: AtomicU8,
}

impl CallObserver for Tee {
    fn record_rate_limit(&self, note: RateLimitNote) {
        if let Some(next) = &self.next {
            next.record_rate_limit(note);
        }
    }
    fn record_cache(&self, note: CacheNote) {
        self.outcome.store(if note.hit { 1 } else { 2 }, Relaxed);
        if let Some(next) = &self.next {
            next.record_cache(note);
        }
    }
}

impl<S, B, ResBody> Service<Request<B>> for MetricsService<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let started = Instant::now();
        let method = method_label(req.method());
        // A clone of axum's `Arc<str>`, not a copy of the string.
        let matched = req.extensions().get::<MatchedPath>().cloned();
        // Inside a `ContextLayer`: its notes observe the handler's calls.
        let notes = req
            .extensions()
            .get::<RequestNotes>()
            .map(|n| Arc::clone(&n.0));
        let layer = self.layer.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let (res, observed) = match notes {
                Some(notes) => (fut.await?, notes.cache().map(|n| n.hit)),
                None => {
                    // The context is read here, in the future: an outer
                    // `ContextLayer` polls it inside its scope.
                    let ctx = context::current().unwrap_or_default();
                    let tee = Arc::new(Tee {
                        next: ctx.observer().cloned(),
                        outcome: AtomicU8::new(0),
                    });
                    let ctx = ctx.with_observer(Arc::clone(&tee) as Arc<dyn CallObserver>);
                    let res = context::scope(ctx, fut).await?;
                    let observed = match tee.outcome.load(Relaxed) {
                        1 => Some(true),
                        2 => Some(false),
                        _ => None,
                    };
                    (res, observed)
                }
            };
            let elapsed = started.elapsed();
            // An inner `ContextLayer` replaced the context: it leaves the
            // outcome in the response extensions.
            let hit = res
                .extensions()
                .get::<CacheNote>()
                .map(|note| note.hit)
                .or(observed);
            let outcome = match hit {
                Some(true) => Outcome::Hit,
                Some(false) => Outcome::Miss,
                None => Outcome::None,
            };
            let status = res.status().as_u16();
            let cache = layer.cache.clone().or_else(crate::global);
            let table = cache
                .as_ref()
                .map_or(&*layer.fallback, |c| &c.inner().stats.routes);
            let route = matched
                .as_ref()
                .map_or(UNMATCHED_ROUTE, MatchedPath::as_str);
            let recorded = table.record(method, route, status, outcome, elapsed, layer.max_routes);
            #[cfg(feature = "metrics")]
            {
                let label = if recorded.tracked {
                    route
                } else {
                    OVERFLOW_ROUTE
                };
                let key = recorded
                    .counters
                    .histogram_key(method, label, status, outcome);
                metrics::with_recorder(|r| {
                    r.register_histogram(key, &METADATA)
                        .record(elapsed.as_secs_f64());
                });
            }
            #[cfg(not(feature = "metrics"))]
            let _ = recorded;
            Ok(res)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(
            method_label(&Method::from_bytes(b"PURGE").unwrap()),
            "OTHER"
        );
        assert_eq!(Outcome::Miss.label(), "miss");
    }
}
