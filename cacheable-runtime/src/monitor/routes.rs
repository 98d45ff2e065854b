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

#[derive(Debug, Default)]
struct RouteCounters {
    all: Sketch,
    hit: Sketch,
    miss: Sketch,
    /// Responses by status class: 1xx..5xx (anything else counts as 5xx).
    status: [AtomicU64; 5],
}

/// (method, matched route).
type RouteKey = (&'static str, Arc<str>);

/// The (method, route) pairs seen, each with its counters.
#[derive(Debug, Default)]
pub(crate) struct RouteTable {
    map: RwLock<HashMap<RouteKey, Arc<RouteCounters>>>,
    /// Pairs in `map` other than the overflow ones (changed under its write lock).
    tracked: std::sync::atomic::AtomicUsize,
}

impl RouteTable {
    /// The route label this request is recorded under: `route` itself, or
    /// [`OVERFLOW_ROUTE`] when `max_routes` pairs are tracked already.
    pub(crate) fn record(
        &self,
        method: &'static str,
        route: &str,
        status: u16,
        outcome: Outcome,
        elapsed: Duration,
        max_routes: usize,
    ) -> bool {
        let (counters, tracked) = self.counters(method, route, max_routes);
        counters.all.record(elapsed);
        match outcome {
            Outcome::Hit => counters.hit.record(elapsed),
            Outcome::Miss => counters.miss.record(elapsed),
            Outcome::None => {}
        }
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        counters.status[class].fetch_add(1, Relaxed);
        tracked
    }

    fn counters(
        &self,
        method: &'static str,
        route: &str,
        max_routes: usize,
    ) -> (Arc<RouteCounters>, bool) {
        let key = (method, Arc::<str>::from(route));
        if let Some(c) = self
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return (Arc::clone(c), true);
        }
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = map.get(&key) {
            return (Arc::clone(c), true);
        }
        // The overflow pair itself does not count against the cap.
        if self.tracked.load(Relaxed) >= max_routes {
            let over = map.entry((method, Arc::from(OVERFLOW_ROUTE))).or_default();
            return (Arc::clone(over), false);
        }
        self.tracked.fetch_add(1, Relaxed);
        (Arc::clone(map.entry(key).or_default()), true)
    }

    /// The latency histogram of every pair, named `"GET /route"`, for
    /// windowed quantiles (alerts).
    pub(crate) fn counts(&self) -> Vec<(String, Vec<u64>)> {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|((m, r), c)| (format!("{m} {r}"), c.all.counts()))
            .collect()
    }

    pub(crate) fn snapshot(&self) -> BTreeMap<(String, String), RouteStats> {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|((method, route), c)| {
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
    fn the_cap_sends_new_routes_to_the_overflow_label() {
        let t = RouteTable::default();
        let ms = Duration::from_millis(1);
        for i in 0..10 {
            let tracked = t.record("GET", &format!("/r{i}"), 200, Outcome::None, ms, 4);
            assert_eq!(tracked, i < 4, "route {i}");
        }
        // A tracked route stays tracked.
        assert!(t.record("GET", "/r0", 500, Outcome::Hit, ms, 4));
        let s = t.snapshot();
        assert_eq!(s.len(), 5);
        let over = &s[&(OVERFLOW_ROUTE.to_owned(), "GET".to_owned())];
        assert_eq!(over.requests(), 6);
        let r0 = &s[&("/r0".to_owned(), "GET".to_owned())];
        assert_eq!((r0.requests(), r0.status_2xx, r0.status_5xx), (2, 1, 1));
        assert_eq!((r0.hit.count, r0.miss.count), (1, 0));
    }
}
