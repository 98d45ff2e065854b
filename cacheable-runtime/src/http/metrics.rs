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

fn status_label(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

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
        let route: Arc<str> = req
            .extensions()
            .get::<MatchedPath>()
            .map_or_else(|| Arc::from(UNMATCHED_ROUTE), |m| Arc::from(m.as_str()));
        let layer = self.layer.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            // The context is read here, in the future: an outer
            // `ContextLayer` polls it inside its scope.
            let ctx = context::current().unwrap_or_default();
            let tee = Arc::new(Tee {
                next: ctx.observer().cloned(),
                outcome: AtomicU8::new(0),
            });
            let ctx = ctx.with_observer(Arc::clone(&tee) as Arc<dyn CallObserver>);
            let res = context::scope(ctx, fut).await?;
            let elapsed = started.elapsed();
            // An inner `ContextLayer` replaced the context: it leaves the
            // outcome in the response extensions.
            let outcome = match res.extensions().get::<CacheNote>() {
                Some(note) if note.hit => Outcome::Hit,
                Some(_) => Outcome::Miss,
                None => match tee.outcome.load(Relaxed) {
                    1 => Outcome::Hit,
                    2 => Outcome::Miss,
                    _ => Outcome::None,
                },
            };
            let status = res.status().as_u16();
            let cache = layer.cache.clone().or_else(crate::global);
            let table = cache
                .as_ref()
                .map_or(&*layer.fallback, |c| &c.inner().stats.routes);
            let tracked = table.record(method, &route, status, outcome, elapsed, layer.max_routes);
            let _label = if tracked { &*route } else { OVERFLOW_ROUTE };
            #[cfg(feature = "metrics")]
            metrics::histogram!(
                "cacheable_http_request_duration_seconds",
                "method" => method,
                "route" => _label.to_owned(),
                "status" => status_label(status),
                "cache" => outcome.label(),
            )
            .record(elapsed.as_secs_f64());
            #[cfg(not(feature = "metrics"))]
            let _ = status_label;
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
        assert_eq!(status_label(204), "2xx");
        assert_eq!(status_label(999), "5xx");
        assert_eq!(Outcome::Miss.label(), "miss");
    }
}
