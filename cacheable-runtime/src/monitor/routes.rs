//! Per-route request statistics behind `Stats::routes()`: what the axum
//! `MetricsLayer` records (latency by method and matched route, status
//! class, and the cache outcome of the handler's call).
//!
//! Bounded: at most the layer's `max_routes` (method, route) pairs have
//! statistics of their own; later pairs count under the route
//! [`OVERFLOW_ROUTE`]. Each pair costs up to three sketches (all requests,
//! hits, misses) of 9 KiB each, allocated on first use: 1,000 routes of
//! cached handlers are at most about 28 MiB, plain routes a third of that.

#![cfg_attr(not(feature = "axum"), allow(dead_code))]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use super::sketch::{Latency, Sketch};

/// The route label of requests no route matched (404s, the fallback).
pub const UNMATCHED_ROUTE: &str = "<unmatched>";
/// The route label of requests past the cap on routes tracked.
pub const OVERFLOW_ROUTE: &str = "<other>";

/// How the cached call behind a request was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// No cached call reported.
    None,
    Hit,
    Miss,
}

impl Outcome {
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Hit => "hit",
            Self::Miss => "miss",
        }
    }
}

/// The counters of one (method, route) pair.
#[derive(Debug, Default)]
pub(crate) struct RouteCounters {
    all: Sketch,
    hit: Sketch,
    miss: Sketch,
    /// Responses by status class: 1xx..5xx (anything else counts as 5xx).
    status: [AtomicU64; 5],
    /// The `metrics` histogram keys of this pair, by status class and
    /// outcome, each built on first use.
    #[cfg(feature = "metrics")]
    keys: [[std::sync::OnceLock<metrics::Key>; 3]; 5],
}

impl RouteCounters {
    /// The key of `cacheable_http_request_duration_seconds` for this pair
    /// (labels `method`, `route`, `status`, `cache`), built once and
    /// retained: a request then costs the recorder's lookup of a pre-hashed
    /// key, not four labels' allocation, hashing and copy.
    #[cfg(feature = "metrics")]
    pub(crate) fn histogram_key(
        &self,
        method: &'static str,
        route: &str,
        status: u16,
        outcome: Outcome,
    ) -> &metrics::Key {
        let class = status_class(status);
        self.keys[class][outcome as usize].get_or_init(|| {
            let labels = vec![
                metrics::Label::new("method", method),
                metrics::Label::new("route", route.to_owned()),
                metrics::Label::new("status", STATUS_LABELS[class]),
                metrics::Label::new("cache", outcome.label()),
            ];
            metrics::Key::from_parts("cacheable_http_request_duration_seconds", labels)
                .to_retained()
        })
    }
}

/// The `status` label of each status class.
#[cfg(feature = "metrics")]
const STATUS_LABELS: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// 0..=4 for 1xx..5xx (anything else counts as 5xx; below 100 as 1xx).
fn status_class(status: u16) -> usize {
    usize::from(status / 100).clamp(1, 5) - 1
}

/// The methods seen on one route, each with its counters (a handful: a
/// scan beats a second map).
type Methods = Vec<(&'static str, Arc<RouteCounters>)>;

/// The (method, route) pairs seen, each with its counters.
///
/// Keyed by route, then method: a request looks its route up by `&str`,
/// without building an owned key.
#[derive(Debug, Default)]
pub(crate) struct RouteTable {
    map: RwLock<HashMap<Arc<str>, Methods>>,
    /// Pairs in `map` other than the overflow ones (changed under its write lock).
    tracked: std::sync::atomic::AtomicUsize,
}

/// What [`RouteTable::record`] recorded into.
pub(crate) struct Recorded {
    /// The pair's counters (the overflow pair's when not `tracked`).
    pub counters: Arc<RouteCounters>,
    /// Whether the route has counters of its own; if not, it was recorded
    /// under [`OVERFLOW_ROUTE`], `max_routes` pairs being tracked already.
    pub tracked: bool,
}

fn find(methods: &Methods, method: &str) -> Option<Arc<RouteCounters>> {
    methods
        .iter()
        .find(|(m, _)| *m == method)
        .map(|(_, c)| Arc::clone(c))
}

impl RouteTable {
    /// Records one request under `route`, or under [`OVERFLOW_ROUTE`] when
    /// `max_routes` pairs are tracked already.
    pub(crate) fn record(
        &self,
        method: &'static str,
        route: &str,
        status: u16,
        outcome: Outcome,
        elapsed: Duration,
        max_routes: usize,
    ) -> Recorded {
        let recorded = self.counters(method, route, max_routes);
        let counters = &recorded.counters;
        counters.all.record(elapsed);
        match outcome {
            Outcome::Hit => counters.hit.record(elapsed),
            Outcome::Miss => counters.miss.record(elapsed),
            Outcome::None => {}
        }
        counters.status[status_class(status)].fetch_add(1, Relaxed);
        recorded
    }

    fn counters(&self, method: &'static str, route: &str, max_routes: usize) -> Recorded {
        let found = |counters| Recorded {
            counters,
            tracked: true,
        };
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = map.get(route).and_then(|m| find(m, method)) {
            return found(c);
        }
        drop(map);
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = map.get(route).and_then(|m| find(m, method)) {
            return found(c);
        }
        // The overflow pair itself does not count against the cap.
        if self.tracked.load(Relaxed) >= max_routes {
            let over = map.entry(Arc::from(OVERFLOW_ROUTE)).or_default();
            let counters = find(over, method).unwrap_or_else(|| {
                let c = Arc::<RouteCounters>::default();
                over.push((method, Arc::clone(&c)));
                c
            });
            return Recorded {
                counters,
                tracked: false,
            };
        }
        self.tracked.fetch_add(1, Relaxed);
        let c = Arc::<RouteCounters>::default();
        map.entry(Arc::from(route))
            .or_default()
            .push((method, Arc::clone(&c)));
        found(c)
    }

    /// Every (method, route, counters), for the readers.
    fn pairs(&self) -> Vec<(&'static str, Arc<str>, Arc<RouteCounters>)> {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .flat_map(|(route, methods)| {
                methods
                    .iter()
                    .map(|(m, c)| (*m, Arc::clone(route), Arc::clone(c)))
            })
            .collect()
    }

    /// The latency histogram of every pair, named `"GET /route"`, for
    /// windowed quantiles (alerts).
    pub(crate) fn counts(&self) -> Vec<(String, Vec<u64>)> {
        self.pairs()
            .into_iter()
            .map(|(m, r, c)| (format!("{m} {r}"), c.all.counts()))
            .collect()
    }

    pub(crate) fn snapshot(&self) -> BTreeMap<(String, String), RouteStats> {
        self.pairs()
            .into_iter()
            .map(|(method, route, c)| {
                let status = |i: usize| c.status[i].load(Relaxed);
                let stats = RouteStats {
                    method: (*method).to_owned(),
                    route: route.to_string(),
                    latency: c.all.latency(),
                    hit: c.hit.latency(),
                    miss: c.miss.latency(),
                    status_1xx: status(0),
                    status_2xx: status(1),
                    status_3xx: status(2),
                    status_4xx: status(3),
                    status_5xx: status(4),
                };
                ((route.to_string(), (*method).to_owned()), stats)
            })
            .collect()
    }
}

/// Request statistics of one method and matched route (see
/// `cacheable::http::MetricsLayer`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct RouteStats {
    /// The HTTP method (`GET`, …; `OTHER` for extension methods).
    pub method: String,
    /// The matched route (`/users/{id}`), [`UNMATCHED_ROUTE`] or [`OVERFLOW_ROUTE`].
    pub route: String,
    /// Latency of every request (its `count` is the number of requests).
    pub latency: Latency,
    /// Latency of the requests whose cached handler call was a hit.
    pub hit: Latency,
    /// Latency of the requests whose cached handler call was a miss.
    pub miss: Latency,
    /// Responses 100–199.
    pub status_1xx: u64,
    /// Responses 200–299.
    pub status_2xx: u64,
    /// Responses 300–399.
    pub status_3xx: u64,
    /// Responses 400–499.
    pub status_4xx: u64,
    /// Responses 500 and up.
    pub status_5xx: u64,
}

impl RouteStats {
    /// Requests recorded.
    pub fn requests(&self) -> u64 {
        self.latency.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(feature = "metrics")]
    fn status_labels_are_bounded() {
        assert_eq!(STATUS_LABELS[status_class(204)], "2xx");
        assert_eq!(STATUS_LABELS[status_class(999)], "5xx");
        let c = RouteCounters::default();
        let key = c.histogram_key("GET", "/r", 404, Outcome::Hit);
        let labels: Vec<_> = key.labels().map(|l| (l.key(), l.value())).collect();
        assert_eq!(
            labels,
            [
                ("method", "GET"),
                ("route", "/r"),
                ("status", "4xx"),
                ("cache", "hit")
            ]
        );
        assert!(std::ptr::eq(
            key,
            c.histogram_key("GET", "/r", 404, Outcome::Hit)
        ));
    }

    #[test]
    fn the_cap_sends_new_routes_to_the_overflow_label() {
        let t = RouteTable::default();
        let ms = Duration::from_millis(1);
        for i in 0..10 {
            let tracked = t.record("GET", &format!("/r{i}"), 200, Outcome::None, ms, 4);
            assert_eq!(tracked.tracked, i < 4, "route {i}");
        }
        // A tracked route stays tracked.
        assert!(t.record("GET", "/r0", 500, Outcome::Hit, ms, 4).tracked);
        let s = t.snapshot();
        assert_eq!(s.len(), 5);
        let over = &s[&(OVERFLOW_ROUTE.to_owned(), "GET".to_owned())];
        assert_eq!(over.requests(), 6);
        let r0 = &s[&("/r0".to_owned(), "GET".to_owned())];
        assert_eq!((r0.requests(), r0.status_2xx, r0.status_5xx), (2, 1, 1));
        assert_eq!((r0.hit.count, r0.miss.count), (1, 0));
    }
}
