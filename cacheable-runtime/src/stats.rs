//! In-process counters behind `Cache::stats()`: relaxed atomics, a few
//! nanoseconds per call. Per-function counters are looked up once per call in
//! a read-locked map keyed by the function's static name.
//!
//! Bounds: the per-function map holds at most [`MAX_FUNCTIONS`] names (its
//! keys are static names of call sites, so a real binary stays far below).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use crate::monitor::routes::{RouteStats, RouteTable};
use crate::monitor::sketch::{Latency, Sketch};
use crate::serde_ms::millis;

/// One hit in this many is timed (see `cache::fill`, which asserts it uses
/// the same number): `hit_time` receives the sampled time scaled up by it.
pub(crate) const HIT_SAMPLE: u32 = 16;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub hits: AtomicU64,
    pub local_hits: AtomicU64,
    pub misses: AtomicU64,
    pub errors: AtomicU64,
    pub stale_served: AtomicU64,
    pub compute_nanos: AtomicU64,
    pub computes: AtomicU64,
    pub hit_nanos: AtomicU64,
    /// Computation times (misses), for quantiles.
    pub compute_sketch: Sketch,
    /// Hit times of the sampled hits, for quantiles.
    pub hit_sketch: Sketch,
    /// This function's `metrics` keys, built on its first call.
    #[cfg(feature = "metrics")]
    keys: std::sync::OnceLock<FunctionKeys>,
}

/// The `metrics` call site of every per-function metric (what the
/// `counter!` macros would make in this module).
#[cfg(feature = "metrics")]
static METADATA: metrics::Metadata<'static> =
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// The `metrics` keys of one function (label `function`), built once and
/// retained (`Key::to_retained`: labels behind an `Arc`): a call then costs
/// the recorder's lookup of a pre-hashed key, not a label vector's
/// allocation, hashing and (in the Prometheus recorder) a copy of it.
#[cfg(feature = "metrics")]
#[derive(Debug)]
struct FunctionKeys {
    name: &'static str,
    hits: metrics::Key,
    stale_served: metrics::Key,
    local_hits: metrics::Key,
    hit_seconds: metrics::Key,
    misses: metrics::Key,
    compute_seconds: metrics::Key,
}

#[cfg(feature = "metrics")]
impl FunctionKeys {
    /// `retain`: for keys kept across calls (a one-off is not worth the `Arc`).
    fn new(name: &'static str, retain: bool) -> Self {
        let key = |metric: &'static str| {
            let key = metrics::Key::from_parts(metric, vec![metrics::Label::new("function", name)]);
            if retain { key.to_retained() } else { key }
        };
        Self {
            name,
            hits: key("cacheable_hits_total"),
            stale_served: key("cacheable_stale_served_total"),
            local_hits: key("cacheable_local_hits_total"),
            hit_seconds: key("cacheable_hit_seconds"),
            misses: key("cacheable_misses_total"),
            compute_seconds: key("cacheable_compute_seconds"),
        }
    }
}

#[cfg(feature = "metrics")]
impl Counters {
    /// Runs `f` with the keys of `name` and the current recorder (the
    /// thread's local one, else the global one, as the macros do). The
    /// shared overflow record serves many names: its keys are built per call.
    fn record_metrics(
        &self,
        name: &'static str,
        f: impl FnOnce(&FunctionKeys, &dyn metrics::Recorder),
    ) {
        let keys = self.keys.get_or_init(|| FunctionKeys::new(name, true));
        if std::ptr::eq(keys.name, name) || keys.name == name {
            metrics::with_recorder(|r| f(keys, r));
        } else {
            let keys = FunctionKeys::new(name, false);
            metrics::with_recorder(|r| f(&keys, r));
        }
    }
}

impl Counters {
    pub(crate) fn add(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    pub(crate) fn add_time(c: &AtomicU64, d: Duration) {
        c.fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    fn snapshot(&self) -> FunctionStats {
        FunctionStats {
            hits: self.hits.load(Relaxed),
            local_hits: self.local_hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            errors: self.errors.load(Relaxed),
            stale_served: self.stale_served.load(Relaxed),
            computes: self.computes.load(Relaxed),
            compute_time: Duration::from_nanos(self.compute_nanos.load(Relaxed)),
            hit_time: Duration::from_nanos(self.hit_nanos.load(Relaxed)),
            compute_latency: self.compute_sketch.latency(),
            hit_latency: self.hit_sketch.latency(),
        }
    }
}

/// FNV-1a for the per-function map: its keys are short static names looked
/// up on every call, where SipHash's flood resistance buys nothing.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Fnv;

impl std::hash::BuildHasher for Fnv {
    type Hasher = FnvHasher;
    fn build_hasher(&self) -> FnvHasher {
        FnvHasher(0xcbf2_9ce4_8422_2325)
    }
}

pub(crate) struct FnvHasher(u64);

impl std::hash::Hasher for FnvHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The most functions with counters of their own. Past it, a new name's
/// calls count in the totals only (through one shared overflow record that
/// `Stats::functions` does not list), so the map never grows without bound.
pub(crate) const MAX_FUNCTIONS: usize = 1024;

/// Which [`Registry`] a site's remembered counters belong to (see
/// [`Registry::site`]): unique in the process, never 0.
#[derive(Debug)]
pub(crate) struct RegistryId(u64);

impl Default for RegistryId {
    fn default() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Relaxed))
    }
}

/// A call site's counters in one [`Registry`] (see [`Registry::site`]),
/// kept in the site's static.
#[derive(Debug)]
pub(crate) struct SiteCounters(OnceLock<(u64, Arc<Counters>)>);

impl SiteCounters {
    pub(crate) const fn new() -> Self {
        Self(OnceLock::new())
    }

    /// The remembered counters, if they are those of `registry`.
    fn get(&self, registry: u64) -> Option<&Arc<Counters>> {
        self.0
            .get()
            .filter(|(id, _)| *id == registry)
            .map(|(_, c)| c)
    }

    /// Remembers `counters` as the site's in `registry`, unless the site
    /// already remembers another registry's.
    fn remember(&self, registry: u64, counters: &Arc<Counters>) {
        let _ = self.0.set((registry, Arc::clone(counters)));
    }
}

#[derive(Debug, Default)]
pub(crate) struct Registry {
    id: RegistryId,
    pub total: Counters,
    pub invalidations: AtomicU64,
    /// At most [`MAX_FUNCTIONS`] entries.
    functions: RwLock<HashMap<&'static str, Arc<Counters>, Fnv>>,
    /// Counters of the functions past [`MAX_FUNCTIONS`].
    overflow: Arc<Counters>,
    /// Per-route request statistics (the axum `MetricsLayer`), bounded by its `max_routes`.
    pub routes: RouteTable,
}

impl Registry {
    /// The counters of a call site named `name`: [`Registry::function`] of
    /// its name, remembered in the site's static (`memo`) for the first
    /// registry that asks (the only one, unless a process builds several
    /// caches), so that a call takes no lock and hashes no name. Functions
    /// are never removed from the map, so the remembered counters stay the
    /// map's.
    pub(crate) fn site(&self, name: &'static str, memo: &SiteCounters) -> Arc<Counters> {
        if let Some(c) = memo.get(self.id.0) {
            return Arc::clone(c);
        }
        let c = self.function(name);
        memo.remember(self.id.0, &c);
        c
    }

    pub(crate) fn function(&self, name: &'static str) -> Arc<Counters> {
        if let Some(c) = self
            .functions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
        {
            return Arc::clone(c);
        }
        let mut map = self
            .functions
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_FUNCTIONS && !map.contains_key(name) {
            return Arc::clone(&self.overflow);
        }
        Arc::clone(map.entry(name).or_default())
    }

    /// A value served from the cache (fresh, or `stale` while refreshing).
    pub(crate) fn hit(&self, f: &Counters, name: &'static str, stale: bool) {
        Counters::add(&self.total.hits);
        Counters::add(&f.hits);
        if stale {
            Counters::add(&self.total.stale_served);
            Counters::add(&f.stale_served);
        }
        #[cfg(feature = "metrics")]
        f.record_metrics(name, |k, r| {
            r.register_counter(&k.hits, &METADATA).increment(1);
            if stale {
                r.register_counter(&k.stale_served, &METADATA).increment(1);
            }
        });
        #[cfg(not(feature = "metrics"))]
        let _ = name;
    }

    /// A hit served from the local tier (counted in `hits` too).
    pub(crate) fn local_hit(&self, f: &Counters, name: &'static str) {
        Counters::add(&self.total.local_hits);
        Counters::add(&f.local_hits);
        #[cfg(feature = "metrics")]
        f.record_metrics(name, |k, r| {
            r.register_counter(&k.local_hits, &METADATA).increment(1);
        });
        #[cfg(not(feature = "metrics"))]
        let _ = name;
    }

    /// The time of a sampled hit (lookup and decode), scaled by
    /// [`HIT_SAMPLE`] to estimate the time of all hits.
    pub(crate) fn hit_time(&self, f: &Counters, name: &'static str, elapsed: Duration) {
        Counters::add_time(&self.total.hit_nanos, elapsed);
        Counters::add_time(&f.hit_nanos, elapsed);
        // The quantiles and the histogram take the one hit's own time.
        let one = elapsed / HIT_SAMPLE;
        f.hit_sketch.record(one);
        #[cfg(feature = "metrics")]
        f.record_metrics(name, |k, r| {
            r.register_histogram(&k.hit_seconds, &METADATA)
                .record(one.as_secs_f64());
        });
        #[cfg(not(feature = "metrics"))]
        let _ = name;
    }

    /// A read that found nothing usable.
    pub(crate) fn miss(&self, f: &Counters, name: &'static str) {
        Counters::add(&self.total.misses);
        Counters::add(&f.misses);
        #[cfg(feature = "metrics")]
        f.record_metrics(name, |k, r| {
            r.register_counter(&k.misses, &METADATA).increment(1);
        });
        #[cfg(not(feature = "metrics"))]
        let _ = name;
    }

    /// A computation on a miss (the database query) and how long it took.
    pub(crate) fn computed(&self, f: &Counters, name: &'static str, elapsed: Duration) {
        Counters::add(&self.total.computes);
        Counters::add(&f.computes);
        Counters::add_time(&self.total.compute_nanos, elapsed);
        Counters::add_time(&f.compute_nanos, elapsed);
        f.compute_sketch.record(elapsed);
        #[cfg(feature = "metrics")]
        f.record_metrics(name, |k, r| {
            r.register_histogram(&k.compute_seconds, &METADATA)
                .record(elapsed.as_secs_f64());
        });
        #[cfg(not(feature = "metrics"))]
        let _ = name;
    }

    /// An error the caller did not see.
    pub(crate) fn error(&self, f: Option<&Counters>, kind: &'static str) {
        Counters::add(&self.total.errors);
        if let Some(f) = f {
            Counters::add(&f.errors);
        }
        #[cfg(feature = "metrics")]
        metrics::counter!("cacheable_errors_total", "kind" => kind).increment(1);
        #[cfg(not(feature = "metrics"))]
        let _ = kind;
    }

    /// An invalidation (`delete`, tags, tenant, `clear`, evict).
    pub(crate) fn invalidation(&self, what: &'static str) {
        Counters::add(&self.invalidations);
        #[cfg(feature = "metrics")]
        metrics::counter!("cacheable_invalidations_total", "kind" => what).increment(1);
        #[cfg(not(feature = "metrics"))]
        let _ = what;
    }

    /// The computation-time histogram of every function, for windowed
    /// quantiles (alerts).
    pub(crate) fn compute_counts(&self) -> Vec<(String, Vec<u64>)> {
        self.functions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.compute_sketch.counts()))
            .collect()
    }

    /// The counters of this registry; `identity_conflicts` (process-wide)
    /// and `disabled` are filled in by `Cache::stats`.
    pub(crate) fn snapshot(&self) -> Stats {
        let t = self.total.snapshot();
        let functions = self
            .functions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.snapshot()))
            .collect();
        Stats {
            hits: t.hits,
            local_hits: t.local_hits,
            misses: t.misses,
            errors: t.errors,
            stale_served: t.stale_served,
            invalidations: self.invalidations.load(Relaxed),
            compute_time: t.compute_time,
            computes: t.computes,
            hit_time: t.hit_time,
            identity_conflicts: 0,
            disabled: false,
            functions,
            routes: self.routes.snapshot(),
        }
    }
}

/// A snapshot of a cache's counters since it was built.
///
/// # Serialization
///
/// `Stats` and [`FunctionStats`] implement `serde::Serialize`, so a stats
/// endpoint is `Json(cache.stats())`. The format is stable: counters are
/// integers under their field names; every duration is a float number of
/// milliseconds under the field name with `_ms` appended (`compute_time_ms`,
/// `hit_time_ms`); `functions` is an object from each function's name to
/// its counters. New fields may be added; none is renamed or removed
/// without a CHANGELOG entry.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// Reads served from the cache (the local tier's included).
    pub hits: u64,
    /// Of `hits`, those served from the local in-process tier without a
    /// Redis round trip (see `CacheBuilder::local_cache`).
    pub local_hits: u64,
    /// Reads that ran the function (or found nothing, for `get`).
    pub misses: u64,
    /// Store errors and codec errors (each one made the call run uncached).
    pub errors: u64,
    /// Stale values served while another caller refreshed.
    pub stale_served: u64,
    /// Invalidations (delete, tags, tenant, evict).
    pub invalidations: u64,
    /// Time spent computing values on misses: the database queries.
    #[serde(rename = "compute_time_ms", serialize_with = "millis")]
    pub compute_time: Duration,
    /// Number of computations behind `compute_time`.
    pub computes: u64,
    /// Time spent serving hits (lookup and decode), estimated from one hit in
    /// 16 (timing every hit would cost more than the rest of the bookkeeping).
    #[serde(rename = "hit_time_ms", serialize_with = "millis")]
    pub hit_time: Duration,
    /// Distinct `#[cacheable]` functions found sharing one identity (the same
    /// `name` and `version` on two fns), in this process: each would read the
    /// other's entries. Process-wide, so every cache reports the same number.
    pub identity_conflicts: u64,
    /// The cache is disabled ([`Cache::disabled`](crate::Cache::disabled)):
    /// its calls ran uncached and counted nothing.
    pub disabled: bool,
    functions: BTreeMap<String, FunctionStats>,
    /// By (route, method). Serialized as a list of [`RouteStats`] (each
    /// names its route and method): JSON objects cannot have pair keys.
    #[serde(serialize_with = "routes_as_list")]
    routes: BTreeMap<(String, String), RouteStats>,
}

/// The routes of [`Stats`] as a JSON-friendly list, ordered by route then
/// method.
fn routes_as_list<S: serde::Serializer>(
    routes: &BTreeMap<(String, String), RouteStats>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(routes.values())
}

impl Stats {
    /// Hits over hits + misses; 0 when there were no reads.
    pub fn hit_ratio(&self) -> f64 {
        ratio(self.hits, self.misses)
    }

    /// Counters of one cached function, by its name (`name = ".."` or `module::fn`).
    pub fn function(&self, name: &str) -> Option<&FunctionStats> {
        self.functions.get(name)
    }

    /// All per-function counters, by name.
    pub fn functions(&self) -> impl Iterator<Item = (&str, &FunctionStats)> {
        self.functions.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Request statistics of one method and matched route (`"GET"`,
    /// `"/users/{id}"`), recorded by `cacheable::http::MetricsLayer`.
    pub fn route(&self, method: &str, route: &str) -> Option<&RouteStats> {
        self.routes.get(&(route.to_owned(), method.to_owned()))
    }

    /// Request statistics of every route, by route then method.
    pub fn routes(&self) -> impl Iterator<Item = &RouteStats> {
        self.routes.values()
    }
}

/// The counters of one cached function. Serialized as [`Stats`] is
/// (durations as float milliseconds, `compute_time_ms`, `hit_time_ms`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct FunctionStats {
    /// Hits (the local tier's included).
    pub hits: u64,
    /// Of `hits`, those served from the local tier.
    pub local_hits: u64,
    /// Misses.
    pub misses: u64,
    /// Errors.
    pub errors: u64,
    /// Stale values served.
    pub stale_served: u64,
    /// Computations (misses that ran the function).
    pub computes: u64,
    /// Total time of those computations.
    #[serde(rename = "compute_time_ms", serialize_with = "millis")]
    pub compute_time: Duration,
    /// Total time serving hits.
    #[serde(rename = "hit_time_ms", serialize_with = "millis")]
    pub hit_time: Duration,
    /// Quantiles of the computation times (misses that ran the function:
    /// the database query), within 1.6 %.
    pub compute_latency: Latency,
    /// Quantiles of the hit times, from the one hit in 16 that is timed.
    pub hit_latency: Latency,
}

impl FunctionStats {
    /// Hits over hits + misses.
    pub fn hit_ratio(&self) -> f64 {
        ratio(self.hits, self.misses)
    }

    /// Mean time of one computation (a miss's database query).
    pub fn mean_compute_time(&self) -> Option<Duration> {
        (self.computes > 0)
            .then(|| self.compute_time / u32::try_from(self.computes).unwrap_or(u32::MAX))
    }
}

#[allow(clippy::cast_precision_loss)]
fn ratio(hits: u64, misses: u64) -> f64 {
    let total = hits + misses;
    if total == 0 {
        0.0
    } else {
        hits as f64 / total as f64
    }
}

#[cfg(test)]
#[path = "stats_tests.rs"]
mod tests;
