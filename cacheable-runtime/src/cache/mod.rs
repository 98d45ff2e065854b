//! The cache service and the cache-aside engine behind `#[cacheable]`.
//!
//! # Consistency (guarantee 2)
//!
//! Invalidation is O(1) and never scans: every tag has a version counter per
//! tenant (and one across all tenants), every tenant a generation counter,
//! every service-API key one of its own. The protocol, step by step, with the
//! test that breaks when a step is removed (`tests/cache.rs` unless named):
//!
//! 1. **Read.** A read fetches the entry and the current versions it depends
//!    on in one `MGET` and serves the entry only if every recorded version
//!    equals the current one. A missing or unreadable counter (expired,
//!    evicted, lost in a restart, garbage) is no version: it matches nothing.
//!    Tests: `evicted_counters_never_match` (allkeys-lru), `garbage_in_a_counter_is_repaired`.
//! 2. **Snapshot before computing.** A miss records the versions it read
//!    *before* the function runs; counters it found missing are created at a
//!    fresh version first (`ENSURE`), so the snapshot is always of real
//!    versions. A value whose computation overlapped an invalidation carries
//!    the old version and is never served after it (the stale-set race).
//!    Tests: `stale_set_race_*` in the suite.
//! 3. **Counters never repeat.** A counter is created at a fresh version
//!    (`envelope::fresh_version`: time in µs × 1000 plus a random part), never
//!    at 0, and invalidations only increment existing counters. One that
//!    expires and comes back cannot return to a value a computation
//!    snapshotted (no ABA). Tests: `counter_expiry_during_a_computation`,
//!    `counters_lost_in_a_restart_never_match`.
//! 4. **Writes check their snapshot.** The write script refuses an entry when
//!    a version key in its slot no longer holds the snapshotted version; the
//!    others are checked on every read (step 1). Writes are also
//!    compare-and-set on the entry bytes the miss observed.
//! 5. **Failed invalidations are kept** (see the `invalidation` module): retried
//!    until they land, and until then this process serves nothing from the
//!    store. Test: `failed_invalidation_is_retried_and_blocks_reads`.
//! 6. **Result tags are checked by a tag epoch.** A tag that names the
//!    result (`{ret.author}`) is known only after the body, too late for
//!    step 2. Each namespace (a tenant, the global space, all tenants) has a
//!    tag epoch (`{ns}:v:e`) that every tag invalidation increments in the
//!    same `BUMP` as the tag (same slot, one script). A call site with
//!    result tags snapshots both epochs of its entry (its namespace's and
//!    the all-tenants one) with its versions in step 2. After the body it
//!    reads the result tags' versions with one `ENSURE` per namespace,
//!    which also reads that namespace's epoch atomically: if the epoch has
//!    not moved since the snapshot, no tag of the namespace was invalidated
//!    in between, so the versions read are those of the snapshot, and the
//!    entry records them as ordinary dependencies (checked on every read,
//!    one more `MGET` on a hit). If either epoch moved (or expired and was
//!    recreated at a fresh version, step 3) the value is not stored.
//!    The check needs atomicity within one slot only (each namespace's tags
//!    and epoch share its hash tag), so it holds on Redis Cluster too, for
//!    the all-tenants epoch as well: no epoch is recorded as a dependency.
//!    The epochs themselves are not dependencies: an invalidation of
//!    another tag after the write costs nothing. The cost is that one
//!    computation overlapping any tag invalidation of its tenant, or any
//!    all-tenants one, is not stored. An output without a value (`Err`,
//!    `None` under `cache_none`) has no result tags and is not stored.
//!    Tests (`tests/invalidation.rs`): `result_tag_invalidated_during_a_computation`,
//!    and its negative control `result_tag_race_without_the_epoch_serves_stale_values`
//!    (the same race with the check off serves the stale value).
//!
//! None of this depends on clocks or TTLs: the write guard (the longest
//! computation whose value is stored, measured from the snapshot) is a
//! policy, not a safety margin. Counters never grow without bound: a version
//! key lives as long as the longest-lived entry that refers to it (writes
//! extend it), and invalidations never create one.
//!
//! A Redis that comes back with older data (restored from a snapshot, or
//! a replica promoted before an invalidation reached it) is detected by its
//! `run_id` and cleared before the next read (see `crate::invalidation`); a
//! Redis Cluster's shards are not checked, so run it without persistence.
//!
//! # Layout
//!
//! This file owns the `Cache` handle, its shared state and the types one
//! call passes between the steps, plus the read/write service API (`get`,
//! `set`, `get_or_compute`, `stats`, `health`). The steps live beside it:
//! `builder` (configuration), `spec` (what a call resolves to), `read`
//! (lookup, dependency check, early refresh), `fill` (the cache-aside
//! engine, single flight, leases), `write` (compute, snapshot, store,
//! dependency collector), `invalidate` (invalidations, retries, server
//! checks), `global`, `report` (`explain_key`, `memory_report`, `alerts`)
//! and `alerts` (the alert evaluator's task). It is over 400 lines because the protocol above is
//! written down here, next to the state it governs.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::breaker::{Breaker, BreakerState, Pass};
use crate::codec;
use crate::context;
use crate::envelope::{self, Dep, DepRef, KIND_VALUE, now_ms};
use crate::error::CacheError;
use crate::flight::{Flight, FlightGuard, Flights, LeaseGuard, Outcome};
use crate::key::{self, KeyHasher};
use crate::log_limit::LogLimiter;
use crate::options::{CacheOptions, TtlPolicy};
use crate::site::{Adapter, Plain, ResultOf, Site, Ttl};
use crate::stats::{Counters, Registry, Stats};
use crate::store::cluster::ClusterStore;
use crate::store::memory::MemoryStore;
use crate::store::redis::{RedisStore, TlsSettings};
use crate::store::{AnyStore, Expect, Put, Quota, Store, parse_version};
use crate::tenant::{self, TenantId};
use serde::Serialize;
use serde::de::DeserializeOwned;

mod alerts;
mod builder;
mod fill;
mod global;
mod invalidate;
mod local;
mod read;
mod report;
mod spec;
mod write;

pub use builder::CacheBuilder;
use fill::note_cache;
pub(crate) use global::warn_no_cache;
pub use global::{global, set_global};
use write::{collecting, mark_incomplete, report_deps};

// `Stats` scales hit times back by the same sampling rate.
const _: () = assert!(fill::HIT_SAMPLE == crate::stats::HIT_SAMPLE);

tokio::task_local! {
    /// Dependencies reported by cached calls made while a value is computed.
    static DEPS: Arc<Mutex<Collected>>;
}

/// What the cached calls made during one computation reported.
#[derive(Default)]
struct Collected {
    deps: DepSet,
    /// A nested cached call ran uncached: its dependencies are unknown, so
    /// the enclosing value must not be stored (guarantee 8).
    incomplete: bool,
}

/// Dependencies without repeats (the first version seen of a key is kept):
/// a linear scan while short, a hash index of the keys past
/// [`DepSet::LINEAR`] entries, so that a computation making thousands of
/// nested cached calls does not compare every pair.
#[derive(Default)]
struct DepSet {
    deps: Vec<Dep>,
    /// The keys of `deps`, once there are more than `LINEAR` of them.
    index: std::collections::HashSet<String>,
}

impl DepSet {
    const LINEAR: usize = 16;

    /// Adds `d` unless its key is already there.
    fn push(&mut self, d: Dep) {
        if self.deps.len() < Self::LINEAR {
            if !self.deps.iter().any(|x| x.key == d.key) {
                self.deps.push(d);
            }
            return;
        }
        if self.index.is_empty() {
            self.index = self.deps.iter().map(|x| x.key.clone()).collect();
        }
        if self.index.insert(d.key.clone()) {
            self.deps.push(d);
        }
    }

    fn as_slice(&self) -> &[Dep] {
        &self.deps
    }

    fn into_vec(self) -> Vec<Dep> {
        self.deps
    }
}

/// The key part of a cached call.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// xxh3-128 of the arguments.
    Hash(u128),
    /// A rendered `key = ".."` template, identity included and escaped.
    Template(String),
}

/// A cache: a store plus configuration. Cheap to clone; every operation takes
/// `&self` and is safe to call from many tasks and threads.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("store", &self.inner.store)
            .field("prefix", &self.inner.prefix)
            .field("default_ttl", &self.inner.default_ttl)
            .field("enabled", &!self.inner.disabled)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    /// Shared with the rate limiter, which sees it only as a `ScriptHost`.
    pub(crate) store: Arc<AnyStore>,
    pub(crate) prefix: String,
    default_ttl: Duration,
    policies: HashMap<String, TtlPolicy>,
    pub(crate) op_timeout: Duration,
    breaker: Breaker,
    pub(crate) stats: Registry,
    /// Single flight in this process (see `flight`): at most `MAX_FLIGHTS` entries.
    flights: Flights,
    log: LogLimiter,
    lease_ttl: Duration,
    lease_wait: Duration,
    write_guard: Duration,
    evict_wait: Duration,
    tenant_quota: Option<u64>,
    /// A non-global call needs a tenant (see `CacheBuilder::require_tenant`).
    require_tenant: bool,
    /// The rate limiter on this cache's store; it owns its state (see
    /// `rate_limit`) and is handed out by [`Cache::rate_limiter`].
    rate_limiter: crate::rate_limit::RateLimiter,
    /// Test hook: result tags skip the epoch check (see the builder).
    unchecked_epochs: bool,
    /// Invalidations that failed and are retried.
    pending: crate::invalidation::Pending,
    /// Whether the server must be checked before the next read.
    server: crate::invalidation::ServerCheck,
    /// The clock of the in-process timers (see `crate::clock`).
    pub(crate) clock: crate::clock::AnyClock,
    /// Configured alerts and their state (`None`: no alerts, no evaluator task).
    alerts: Option<Arc<crate::monitor::alerts::Alerts>>,
    /// Built disabled (`Cache::disabled`, `CacheBuilder::enabled(false)`):
    /// every cached call runs its body, the store is never used.
    pub(crate) disabled: bool,
    /// The local in-process tier, when configured (see `crate::local`).
    local: Option<Arc<crate::local::LocalTier>>,
    /// Pushed acknowledgements of this cache's invalidations (see
    /// `crate::local::acks`); its listener starts on the first wait.
    acks: Arc<crate::local::acks::Acks>,
}

impl Inner {
    /// Bytes held by the local tier (0 without one).
    pub(crate) fn local_bytes(&self) -> u64 {
        self.local.as_ref().map_or(0, |l| l.weighted_size())
    }

    /// The configured alerts, if any.
    pub(crate) fn alerts(&self) -> Option<&Arc<crate::monitor::alerts::Alerts>> {
        self.alerts.as_ref()
    }

    /// The circuit breaker's state.
    pub(crate) fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }
}

/// The result of a health check.
///
/// Serializes (serde) with `latency` as `latency_ms`, a float number of
/// milliseconds (`null` when there was no answer), and `breaker` as
/// `"closed"`, `"open"` or `"half_open"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Health {
    /// The cache is disabled ([`Cache::disabled`]): there is no store, so
    /// `reachable` is `false` and `error` is `None`; see [`Health::is_ok`].
    pub disabled: bool,
    /// The store answered a `PING`.
    pub reachable: bool,
    /// The round trip of that `PING`.
    #[serde(rename = "latency_ms", serialize_with = "crate::serde_ms::opt_millis")]
    pub latency: Option<Duration>,
    /// The circuit breaker's state.
    pub breaker: BreakerState,
    /// `"memory"`, `"redis"`, `"redis-cluster"` or `"disabled"`.
    pub backend: &'static str,
    /// Memory used by the store (Redis `used_memory`), when it answered.
    pub used_memory: Option<u64>,
    /// Why it is not reachable.
    pub error: Option<String>,
}

impl Health {
    /// Nothing is wrong: the store is reachable, or the cache is disabled on
    /// purpose (a readiness probe should not fail because caching is off).
    pub fn is_ok(&self) -> bool {
        self.disabled || self.reachable
    }
}

/// Everything one cached call needs, resolved once.
struct Spec {
    /// The function's name, for per-function statistics.
    name: &'static str,
    /// The length of the namespace (tenant or global) of the entry, which
    /// starts its key (`keys[0]`): see [`Spec::ns`].
    ns_len: usize,
    /// The entry belongs to a tenant (not the global space).
    tenant_scoped: bool,
    /// `keys[0]` is the entry; then the version keys it depends on
    /// ([`Spec::dep_keys`]); then, for a site with result tags, the tag
    /// epochs of its namespace and of the all-tenants namespace (read and
    /// snapshotted with the versions, never recorded as dependencies).
    keys: Vec<String>,
    /// How many keys at the end of `keys` are tag epochs (0 or 2).
    epochs: usize,
    /// The fingerprint of the call's version keys (`spec::call_fingerprint`
    /// of its tags). A local entry is kept with the fingerprint of the call
    /// whose Redis read found it current, and served only to calls of the
    /// same fingerprint: the local form of `deps_current`'s "every version
    /// key of the call is among the entry's dependencies", checked without
    /// building those keys.
    call: u64,
    /// The call's tenant (`None`: the global space).
    tenant: Option<TenantId>,
    ttl: Duration,
    stale: Duration,
    cache_none: bool,
    private: bool,
    /// The local tier may hold this call's entry (`#[cacheable(local = false)]`
    /// opts out).
    local: bool,
    counters: Arc<Counters>,
    /// One of this call's store operations failed for availability: skip
    /// the rest (see `op_in`).
    degraded: std::sync::atomic::AtomicBool,
}

impl Spec {
    /// The namespace (tenant or global) of the entry.
    fn ns(&self) -> &str {
        &self.keys[0][..self.ns_len]
    }

    /// The version keys the entry depends on (`keys` without the entry and
    /// the epochs).
    fn dep_keys(&self) -> &[String] {
        &self.keys[1..self.keys.len() - self.epochs]
    }
}

/// Renders a call's result tags from its output: `None` when the output
/// has no value to name (`Err`, `None`). See `__private::cached_ret`.
pub(crate) type RetTags<'a, O> = dyn Fn(&O) -> Option<Vec<String>> + Sync + 'a;

/// A value served from the cache.
struct Hit<V> {
    value: V,
    /// The time of the lookup (unix ms), read once per hit.
    now_ms: u64,
    deps: Vec<Dep>,
    stored_at_ms: u64,
    fresh_until_ms: u64,
    /// The value depends on a tenant's data (its own key, or a nested call
    /// recorded in its dependencies): an HTTP response built from it is
    /// personal.
    private: bool,
    /// Served from the local tier.
    local: bool,
}

impl<V> Hit<V> {
    /// The hit of `value`, decoded from `env` at `now_ms` (from Redis or,
    /// with `local`, from the local tier). It is private when the call or
    /// any dependency is tenant-scoped; its dependencies are kept only for
    /// an enclosing computation that collects them.
    fn of(value: V, now_ms: u64, env: &envelope::Envelope<'_>, spec: &Spec, local: bool) -> Self {
        Hit {
            value,
            now_ms,
            stored_at_ms: env.stored_at_ms,
            fresh_until_ms: env.fresh_until_ms,
            private: spec.private || env.deps.iter().any(|d| key::is_tenant_key(d.key)),
            deps: if collecting() {
                env.deps.iter().map(|d| d.owned()).collect()
            } else {
                Vec::new()
            },
            local,
        }
    }
}

enum Lookup<V> {
    Hit(Hit<V>),
    Stale { value: V, miss: Miss },
    Miss(Miss),
}

/// What a miss observed: the compare-and-set expectation, the versions
/// (`None`: missing or unreadable, to be created before computing) and when.
struct Miss {
    expect: Expect,
    versions: Vec<Option<u64>>,
    /// When the versions were read: the write guard runs from here.
    at: Instant,
}

impl Cache {
    /// The shared state, for the monitoring views (`monitor`, `http::metrics`),
    /// which read it and change nothing.
    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// A builder.
    pub fn builder() -> CacheBuilder {
        CacheBuilder::default()
    }

    /// A cache on the embedded in-process store, with default settings.
    pub fn memory() -> Cache {
        CacheBuilder::default()
            .memory()
            .build_sync()
            .expect("the default memory configuration is valid")
    }

    /// A disabled cache: every `#[cacheable]` call runs its body, with no
    /// key hashing, no tag rendering, no store and no warning (the "no cache
    /// configured" warning is for a cache that is missing, not one turned
    /// off). `set_global(Cache::disabled())` turns caching off for every
    /// function that names no cache. See [`CacheBuilder::enabled`] to switch
    /// by configuration.
    ///
    /// The rest of the API agrees: [`get`](Self::get) finds nothing
    /// (`Ok(None)`), [`set`](Self::set), the deletes and
    /// [`clear`](Self::clear) succeed and do nothing,
    /// [`get_or_compute`](Self::get_or_compute) runs its closure,
    /// `#[cache_evict]` (also `strict`) runs its body and succeeds.
    /// [`stats`](Self::stats) and [`health`](Self::health) report
    /// `disabled: true`; stats count nothing.
    ///
    /// **Rate limits stay enforced.** `#[rate_limit]` and
    /// [`rate_limiter`](Self::rate_limiter) decide in this process (the
    /// in-process limiter that `Cache::memory()` uses, with the full
    /// `points`): turning caching off by configuration must not turn off
    /// login or abuse limits. With several instances each one admits
    /// `points`; build an enabled cache for limits shared across processes.
    pub fn disabled() -> Cache {
        CacheBuilder::default()
            .enabled(false)
            .build_sync()
            .expect("the default disabled configuration is valid")
    }

    /// Whether this cache caches: `false` for [`Cache::disabled`] and
    /// `CacheBuilder::enabled(false)`.
    pub fn is_enabled(&self) -> bool {
        !self.inner.disabled
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The rate limiter on this cache's store (cheap: one `Arc` clone).
    pub fn rate_limiter(&self) -> crate::rate_limit::RateLimiter {
        self.inner.rate_limiter.clone()
    }

    /// The cache behind a weak reference, while a clone lives (background tasks).
    pub(crate) fn from_weak(weak: &std::sync::Weak<Inner>) -> Option<Cache> {
        weak.upgrade().map(|inner| Cache { inner })
    }

    // ----- store access with timeout and breaker -----

    async fn op<T>(
        &self,
        fut: impl Future<Output = Result<T, CacheError>>,
    ) -> Result<T, CacheError> {
        let inner = &self.inner;
        match inner.breaker.enter() {
            Pass::Go => {}
            Pass::Refused => return Err(CacheError::CircuitOpen),
            Pass::Probe => {
                // A background PING probes: no call waits for its timeout.
                let cache = self.clone();
                crate::breaker::spawn_probe(async move {
                    let inner = &cache.inner;
                    inner
                        .breaker
                        .probe(inner.op_timeout, || inner.store.ping())
                        .await;
                });
                return Err(CacheError::CircuitOpen);
            }
        }
        match tokio::time::timeout(inner.op_timeout, fut).await {
            Ok(Ok(v)) => {
                inner.breaker.success();
                Ok(v)
            }
            Ok(Err(e)) => {
                if e.is_availability() {
                    inner.server.distrust();
                    inner.breaker.failure();
                } else {
                    inner.breaker.success();
                }
                Err(e)
            }
            Err(_) => {
                inner.server.distrust();
                inner.breaker.failure();
                Err(CacheError::Timeout(inner.op_timeout))
            }
        }
    }

    /// A store operation of one call. Once one of the call's operations failed
    /// for availability (a timeout, a broken connection), its remaining ones
    /// are skipped: a miss with Redis unresponsive costs one `op_timeout`, not
    /// one per step (snapshot, lease, write, release).
    async fn op_in<T>(
        &self,
        spec: &Spec,
        fut: impl Future<Output = Result<T, CacheError>>,
    ) -> Result<T, CacheError> {
        use std::sync::atomic::Ordering;
        if spec.degraded.load(Ordering::Relaxed) {
            return Err(CacheError::CircuitOpen);
        }
        let result = self.op(fut).await;
        if let Err(e) = &result
            && (e.is_availability() || matches!(e, CacheError::CircuitOpen))
        {
            spec.degraded.store(true, Ordering::Relaxed);
        }
        result
    }

    /// Counts and logs (rate-limited) an error that the caller will not see.
    fn report(&self, counters: Option<&Counters>, op: &'static str, e: &CacheError) {
        self.inner.stats.error(counters, e.kind());
        if let Some(suppressed) = self.inner.log.admit(e.kind()) {
            if op == "evict" {
                tracing::warn!(op, error = %e, suppressed,
                    "invalidation failed; it is retried until it lands, and this process serves no cached value until then");
            } else {
                tracing::warn!(op, error = %e, suppressed, "cache operation failed; the call runs uncached");
            }
        }
    }
}

impl Cache {
    // ----- the service API -----

    /// Reads `key` (in the options' tenant, or the current one).
    ///
    /// # Errors
    /// Store, timeout, breaker or codec errors. Use [`Cache::get_or_compute`]
    /// for cache-aside that never fails on cache errors.
    pub async fn get<T: DeserializeOwned>(
        &self,
        key: &str,
        opts: &CacheOptions,
    ) -> Result<Option<T>, CacheError> {
        if self.inner.disabled {
            return Ok(None);
        }
        let spec = self.user_spec(key, opts, "cache.get")?;
        let found = match self.lookup::<T>(&spec, false).await? {
            Lookup::Hit(hit) => {
                report_deps(&hit.deps);
                if hit.local {
                    self.inner.stats.local_hit(&spec.counters, spec.name);
                }
                Some(hit.value)
            }
            Lookup::Stale { .. } | Lookup::Miss(_) => None,
        };
        if found.is_some() {
            self.inner.stats.hit(&spec.counters, spec.name, false);
        } else {
            self.inner.stats.miss(&spec.counters, spec.name);
        }
        Ok(found)
    }

    /// Writes `value` under `key`, tagged with the options' tags.
    ///
    /// # Errors
    /// Store, timeout, breaker or codec errors; [`CacheError::Lossy`] for a
    /// value that would not read back as written (NaN, `Some(None)`).
    pub async fn set<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        opts: &CacheOptions,
    ) -> Result<(), CacheError> {
        if self.inner.disabled {
            return Ok(());
        }
        let spec = self.user_spec(key, opts, "cache.set")?;
        if self.inner.pending.active() {
            return Err(CacheError::InvalidationPending);
        }
        let ttl = spec.ttl.saturating_add(spec.stale);
        let versions: Vec<u64> = self
            .op(self
                .inner
                .store
                .ensure(&spec.keys[1..], envelope::fresh_version(), ttl))
            .await?;
        let deps: Vec<Dep> = spec
            .dep_keys()
            .iter()
            .zip(&versions)
            .map(|(k, v)| Dep {
                key: k.clone(),
                version: *v,
            })
            .collect();
        let payload = codec::encode(value)?;
        let raw = envelope::encode(
            KIND_VALUE,
            self.inner.clock.unix_ms(),
            spec.ttl,
            Duration::ZERO,
            &deps,
            &payload,
        )?;
        let dep_keys = spec.dep_keys();
        let put = Put {
            key: &spec.keys[0],
            value: &raw,
            ttl,
            expect: Expect::Any,
            deps: dep_keys,
            versions: &versions,
            quota: self.quota_for(&spec),
        };
        self.op(self.inner.store.put(&put)).await?;
        Ok(())
    }

    /// Cache-aside for query results: returns the cached value of `key`, or
    /// runs `compute` and caches its `Ok` value with the options' tags and TTL.
    /// Cache errors never fail the call.
    ///
    /// # Errors
    /// Only the errors of `compute`.
    pub async fn get_or_compute<T, E, F, Fut>(
        &self,
        key: &str,
        opts: &CacheOptions,
        compute: F,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        if self.inner.disabled {
            return compute().await;
        }
        let Ok(spec) = self.user_spec(key, opts, "cache.get_or_compute") else {
            // No tenant under `require_tenant` (counted and logged): uncached.
            return compute().await;
        };
        // Hit latency is timed on one hit in HIT_SAMPLE (see `run_site`).
        let started = fill::sample_hit().then(Instant::now);
        self.lookup_and_fill::<ResultOf<Plain>, Result<T, E>, _>(&spec, started, None, async move {
            compute().await
        })
        .await
    }

    /// Computations this process runs now under single flight (one per key
    /// and version snapshot; bounded, and zero when none runs).
    pub fn in_flight(&self) -> usize {
        self.inner.flights.len()
    }

    /// Counters since the cache was built.
    pub fn stats(&self) -> Stats {
        let mut stats = self.inner.stats.snapshot();
        stats.identity_conflicts = crate::identity::conflicts();
        stats.disabled = self.inner.disabled;
        stats
    }

    /// Pings the store (bypassing the breaker) and reports reachability,
    /// latency, breaker state and memory use. A disabled cache pings nothing
    /// and reports `disabled: true`.
    pub async fn health(&self) -> Health {
        let inner = &self.inner;
        if inner.disabled {
            return Health {
                disabled: true,
                reachable: false,
                latency: None,
                breaker: BreakerState::Closed,
                backend: "disabled",
                used_memory: None,
                error: None,
            };
        }
        let started = Instant::now();
        let ping = tokio::time::timeout(inner.op_timeout, inner.store.ping()).await;
        let latency = started.elapsed();
        let error = match ping {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(CacheError::Timeout(inner.op_timeout).to_string()),
        };
        let used_memory = if error.is_none() {
            tokio::time::timeout(inner.op_timeout, inner.store.used_memory())
                .await
                .ok()
                .and_then(Result::ok)
                .flatten()
        } else {
            None
        };
        Health {
            disabled: false,
            reachable: error.is_none(),
            latency: error.is_none().then_some(latency),
            breaker: inner.breaker.state(),
            backend: inner.store.backend(),
            used_memory,
            error,
        }
    }

    /// Hashes arguments the way `#[cacheable]` does, for building keys by hand.
    pub fn hash_args(
        f: impl FnOnce(&mut KeyHasher) -> Result<(), crate::key::HashError>,
    ) -> Option<String> {
        let mut h = KeyHasher::new();
        f(&mut h).ok()?;
        Some(h.finish_hex())
    }
}

#[cfg(test)]
mod dep_set_tests {
    use super::{Dep, DepSet};

    fn dep(key: &str, version: u64) -> Dep {
        Dep {
            key: key.to_owned(),
            version,
        }
    }

    #[test]
    fn repeats_are_dropped_before_and_after_the_index_and_the_first_version_wins() {
        let mut set = DepSet::default();
        for round in 0..3u64 {
            for i in 0..200u64 {
                set.push(dep(&format!("k{i}"), round * 1000 + i));
            }
        }
        let deps = set.into_vec();
        assert_eq!(deps.len(), 200);
        for (i, d) in deps.iter().enumerate() {
            assert_eq!(d.key, format!("k{i}"), "insertion order is kept");
            assert_eq!(d.version, i as u64, "the first version seen is kept");
        }
    }

    #[test]
    fn a_key_seen_before_the_index_existed_is_still_a_repeat_after() {
        let mut set = DepSet::default();
        set.push(dep("early", 1));
        for i in 0..(DepSet::LINEAR as u64 + 5) {
            set.push(dep(&format!("k{i}"), i));
        }
        set.push(dep("early", 2));
        let deps = set.into_vec();
        assert_eq!(deps.iter().filter(|d| d.key == "early").count(), 1);
        assert_eq!(deps[0].version, 1);
    }
}
