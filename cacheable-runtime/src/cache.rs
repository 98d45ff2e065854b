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
//!
//! None of this depends on clocks or TTLs: the write guard (the longest
//! computation whose value is stored, measured from the snapshot) is a
//! policy, not a safety margin. Counters never grow without bound: a version
//! key lives as long as the longest-lived entry that refers to it (writes
//! extend it), and invalidations never create one.
//!
//! What is not covered: a Redis restarted from a snapshot (RDB/AOF) taken
//! before an invalidation brings back the old counters with the old entries,
//! and a failover to a replica that had not yet received an invalidation
//! (replication is asynchronous) loses it. Run the cache's Redis without
//! persistence (`save ""`, `appendonly no`); a restart of such a Redis
//! loses every counter with every entry and is safe (step 3).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::breaker::{Breaker, BreakerState, Pass};
use crate::codec;
use crate::context;
use crate::envelope::{self, Dep, DepRef, KIND_VALUE, now_ms};
use crate::error::CacheError;
use crate::flight::{Flight, Flights, LeaseGuard, Outcome};
use crate::key::{self, KeyHasher};
use crate::options::{CacheOptions, TtlPolicy};
use crate::private::{Adapter, Plain, ResultOf, Site, Ttl};
use crate::stats::{Counters, LogLimiter, Registry, Stats};
use crate::store::cluster::ClusterStore;
use crate::store::memory::MemoryStore;
use crate::store::redis::{RedisStore, TlsSettings};
use crate::store::{AnyStore, Expect, Put, Quota, Store, parse_version};
use crate::tenant::{self, TenantId};
use serde::Serialize;
use serde::de::DeserializeOwned;

tokio::task_local! {
    /// Dependencies reported by cached calls made while a value is computed.
    static DEPS: Arc<Mutex<Collected>>;
}

/// What the cached calls made during one computation reported.
#[derive(Default)]
struct Collected {
    deps: Vec<Dep>,
    /// A nested cached call ran uncached: its dependencies are unknown, so
    /// the enclosing value must not be stored (guarantee 8).
    incomplete: bool,
}

static GLOBAL: RwLock<Option<Cache>> = RwLock::new(None);

/// Sets the cache that `#[cacheable]` functions use when they name none.
pub fn set_global(cache: Cache) {
    *GLOBAL.write().unwrap_or_else(PoisonError::into_inner) = Some(cache);
}

/// The global cache, if one was set.
pub fn global() -> Option<Cache> {
    GLOBAL
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
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
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) store: AnyStore,
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
    /// Rate-limiter state of this cache (see `rate_limit`).
    pub(crate) rate_state: crate::rate_limit::State,
    /// Invalidations that failed and are retried.
    pending: crate::invalidation::Pending,
    /// Whether the server must be checked before the next read.
    server: crate::invalidation::ServerCheck,
}

/// Builds a [`Cache`]. `build()` fails only on invalid configuration: an
/// unreachable Redis is reported by [`Cache::health`], and every call then
/// degrades to running the function uncached.
#[derive(Clone)]
#[must_use]
pub struct CacheBuilder {
    backend: Option<Backend>,
    prefix: String,
    default_ttl: Duration,
    policies: HashMap<String, TtlPolicy>,
    op_timeout: Duration,
    breaker_threshold: u32,
    breaker_cooldown: (Duration, Duration),
    lease_ttl: Duration,
    lease_wait: Duration,
    write_guard: Duration,
    evict_wait: Duration,
    tenant_quota: Option<u64>,
    require_tenant: bool,
    tls: TlsSettings,
    memory_capacity: u64,
}

#[derive(Clone)]
enum Backend {
    Memory,
    Redis(String),
    Cluster(Vec<String>),
}

impl std::fmt::Debug for CacheBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match &self.backend {
            None => "none".to_owned(),
            Some(Backend::Memory) => "memory".to_owned(),
            Some(Backend::Redis(url)) => crate::store::redis::mask_url(url),
            Some(Backend::Cluster(urls)) => urls
                .iter()
                .map(|u| crate::store::redis::mask_url(u))
                .collect::<Vec<_>>()
                .join(","),
        };
        f.debug_struct("CacheBuilder")
            .field("backend", &backend)
            .field("prefix", &self.prefix)
            .field("default_ttl", &self.default_ttl)
            .field("op_timeout", &self.op_timeout)
            .finish_non_exhaustive()
    }
}

impl Default for CacheBuilder {
    fn default() -> Self {
        Self {
            backend: None,
            prefix: "cacheable".to_owned(),
            default_ttl: Duration::from_secs(300),
            policies: HashMap::new(),
            op_timeout: Duration::from_millis(250),
            breaker_threshold: 5,
            breaker_cooldown: (Duration::from_millis(250), Duration::from_millis(500)),
            lease_ttl: Duration::from_secs(5),
            lease_wait: Duration::from_secs(1),
            write_guard: Duration::from_secs(60),
            evict_wait: Duration::from_secs(2),
            tenant_quota: None,
            require_tenant: false,
            tls: TlsSettings::default(),
            memory_capacity: crate::store::memory::DEFAULT_CAPACITY,
        }
    }
}

impl CacheBuilder {
    /// Use the Redis at `url` (`redis://[user:password@]host:port/db`,
    /// `rediss://` for TLS where enabled). AUTH/ACL credentials come from the URL.
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.backend = Some(Backend::Redis(url.into()));
        self
    }

    /// Use a Redis Cluster, discovered from one or more node URLs.
    pub fn redis_cluster<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.backend = Some(Backend::Cluster(urls.into_iter().map(Into::into).collect()));
        self
    }

    /// Use the embedded in-process store (no Redis), bounded by
    /// [`memory_capacity`](Self::memory_capacity).
    pub fn memory(mut self) -> Self {
        self.backend = Some(Backend::Memory);
        self
    }

    /// The most the embedded store holds, in bytes (default 64 MiB; 0 is a
    /// [`CacheError::Config`]): each key weighs its key and value bytes plus
    /// 480 bytes of bookkeeping (measured: a full store costs the process its
    /// capacity), and the least recently used keys are evicted
    /// past the capacity (moka, applied in batches: at most a few hundred
    /// keys over between two). Evicting is always safe: an evicted entry is a
    /// miss, an evicted version counter matches nothing. Only used with
    /// [`memory`](Self::memory).
    pub fn memory_capacity(mut self, bytes: u64) -> Self {
        self.memory_capacity = bytes;
        self
    }

    /// The prefix of every key (default `cacheable`): `[A-Za-z0-9_.:-]`, not empty.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// TTL of entries that name none (default 300 s).
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// A named TTL policy for `#[cacheable(policy = "name")]` and `CacheOptions::policy`.
    pub fn policy(mut self, name: impl Into<String>, policy: TtlPolicy) -> Self {
        self.policies.insert(name.into(), policy);
        self
    }

    /// Timeout of every store operation (default 250 ms).
    pub fn op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = timeout;
        self
    }

    /// Consecutive failures that open the circuit breaker (default 5), and its
    /// cool-down range (default 250 ms, doubling up to 500 ms; a longer maximum
    /// is capped at 500 ms, since a probe is one background `PING`).
    pub fn circuit_breaker(
        mut self,
        failures: u32,
        min_cooldown: Duration,
        max_cooldown: Duration,
    ) -> Self {
        self.breaker_threshold = failures;
        self.breaker_cooldown = (min_cooldown, max_cooldown);
        self
    }

    /// Stampede control across processes: the lease a computing caller holds
    /// (default 5 s) and how long others wait for its value before computing
    /// themselves (default 1 s).
    pub fn stampede(mut self, lease_ttl: Duration, wait: Duration) -> Self {
        self.lease_ttl = lease_ttl;
        self.lease_wait = wait;
        self
    }

    /// The longest time from a miss's version snapshot to its write for the
    /// value to be stored (default 60 s): a policy against storing values of
    /// very slow computations, not a safety margin (consistency does not
    /// depend on it).
    pub fn write_guard(mut self, guard: Duration) -> Self {
        self.write_guard = guard;
        self
    }

    /// How long a `#[cache_evict]` call (without `strict`) whose invalidation
    /// failed waits for the background retry to land before it returns
    /// anyway (default 2 s; zero: never wait). While it waits, the
    /// invalidation has not returned; once it lands, no instance serves what
    /// it removed. A Redis outage longer than this lets the call return first:
    /// other instances may then serve the removed entries until the retry
    /// lands (this instance serves nothing from Redis until then). Use
    /// `#[cache_evict(strict)]` to get the error instead.
    pub fn evict_wait(mut self, wait: Duration) -> Self {
        self.evict_wait = wait;
        self
    }

    /// Trust this PEM root certificate (instead of the system's) for
    /// `rediss://` connections.
    #[cfg(feature = "tls")]
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls.root_cert = Some(pem.into());
        self
    }

    /// Present this PEM client certificate and key (mutual TLS).
    #[cfg(feature = "tls")]
    pub fn tls_client_certificate(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.tls.client_cert = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// Caps the bytes each tenant may write per `default_ttl` window (entries
    /// of the global space are not counted). A write over the cap is refused:
    /// the function's result is returned uncached and a `Quota` error is
    /// counted. Two window counters live in the tenant's slot, so a tenant
    /// holds at most about `bytes` written in the last window, and never more
    /// than twice that when its entries live no longer than `default_ttl`.
    pub fn tenant_quota_bytes(mut self, bytes: u64) -> Self {
        self.tenant_quota = Some(bytes);
        self
    }

    /// No tenant context is not a tenant: a non-`global` call made outside any
    /// tenant scope (typically in a future passed to `tokio::spawn` without
    /// [`in_current_context`](crate::context::WithContext::in_current_context))
    /// no longer uses the shared no-tenant space, where one tenant's value
    /// would be served to another. Such a `#[cacheable]` call or
    /// [`Cache::get_or_compute`] runs its function uncached, counts a
    /// `no_tenant` error and logs it (rate-limited); [`Cache::get`] and
    /// [`Cache::set`] return [`CacheError::NoTenant`]. `global` functions and
    /// [`CacheOptions::global`] calls are unaffected.
    pub fn require_tenant(mut self) -> Self {
        self.require_tenant = true;
        self
    }

    /// The ranges `build` accepts: every duration is bounded (TTLs by
    /// [`MAX_TTL`](crate::MAX_TTL), timeouts and waits by an hour),
    /// counts are at least 1, and the settings that must act are not zero.
    fn check_ranges(&self) -> Result<(), String> {
        const HOUR: Duration = Duration::from_secs(3600);
        let max_ttl = crate::options::MAX_TTL;
        let within = |what: &str, d: Duration, zero_ok: bool, max: Duration| {
            if d.is_zero() && !zero_ok {
                Err(format!("{what} must be greater than zero"))
            } else if d > max {
                Err(format!("{what} of {d:?} is over the maximum of {max:?}"))
            } else {
                Ok(())
            }
        };
        within("default_ttl", self.default_ttl, false, max_ttl)?;
        within("op_timeout", self.op_timeout, false, HOUR)?;
        within("stampede lease ttl", self.lease_ttl, false, HOUR)?;
        within("stampede wait", self.lease_wait, false, HOUR)?;
        within("write_guard", self.write_guard, false, max_ttl)?;
        within("evict_wait", self.evict_wait, true, HOUR)?;
        within(
            "circuit breaker min cooldown",
            self.breaker_cooldown.0,
            false,
            HOUR,
        )?;
        within(
            "circuit breaker max cooldown",
            self.breaker_cooldown.1,
            false,
            HOUR,
        )?;
        if self.breaker_cooldown.1 < self.breaker_cooldown.0 {
            return Err("circuit breaker max cooldown is below its min cooldown".into());
        }
        if self.breaker_threshold == 0 {
            return Err("circuit breaker failures must be at least 1".into());
        }
        if self.tenant_quota == Some(0) {
            return Err("tenant_quota_bytes must be greater than zero".into());
        }
        for (name, p) in &self.policies {
            within(&format!("policy `{name}` ttl"), p.ttl, false, max_ttl)?;
            if let Some(stale) = p.stale {
                within(&format!("policy `{name}` stale"), stale, true, max_ttl)?;
            }
        }
        Ok(())
    }

    /// Validates the configuration and builds the cache. No I/O happens here.
    ///
    /// # Errors
    /// [`CacheError::Config`] for: no store chosen, a bad prefix, a zero TTL or
    /// timeout, a zero memory capacity, a zero-TTL policy, an unparsable
    /// Redis URL, and any value out of range: a TTL over 10 years, a timeout,
    /// wait or cool-down over an hour, a zero lease or breaker threshold, a
    /// zero quota.
    #[allow(clippy::unused_async)]
    pub async fn build(self) -> Result<Cache, CacheError> {
        self.build_sync()
    }

    pub(crate) fn build_sync(self) -> Result<Cache, CacheError> {
        let config = |m: String| Err(CacheError::Config(m));
        if self.prefix.is_empty()
            || !self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
        {
            return config(format!(
                "prefix `{}` must be non-empty and use only [A-Za-z0-9_.:-]",
                self.prefix
            ));
        }
        if self.default_ttl.is_zero() {
            return config("default_ttl must be greater than zero".into());
        }
        if self.op_timeout.is_zero() {
            return config("op_timeout must be greater than zero".into());
        }
        if self.write_guard.is_zero() || self.lease_ttl.is_zero() {
            return config("write_guard and lease ttl must be greater than zero".into());
        }
        if let Some((name, _)) = self.policies.iter().find(|(_, p)| p.ttl.is_zero()) {
            return config(format!("policy `{name}` has a zero ttl"));
        }
        // No configuration can cause a panic: every duration the engine adds
        // to an `Instant` or multiplies is bounded here (see `check_ranges`).
        if let Err(m) = self.check_ranges() {
            return config(m);
        }
        if self.memory_capacity == 0 {
            return config("memory_capacity must be greater than zero".into());
        }
        let store = match self.backend {
            None => return config("no store: call .redis_url(..) or .memory()".into()),
            Some(Backend::Memory) => AnyStore::Memory(MemoryStore::new(self.memory_capacity)),
            Some(Backend::Redis(url)) => {
                AnyStore::Redis(RedisStore::new(&url, self.op_timeout, &self.tls)?)
            }
            Some(Backend::Cluster(urls)) => AnyStore::Cluster(Box::new(ClusterStore::new(
                &urls,
                self.op_timeout,
                &self.tls,
            )?)),
        };
        Ok(Cache {
            inner: Arc::new(Inner {
                store,
                prefix: self.prefix,
                default_ttl: self.default_ttl,
                policies: self.policies,
                op_timeout: self.op_timeout,
                breaker: Breaker::new(
                    self.breaker_threshold,
                    self.breaker_cooldown.0,
                    self.breaker_cooldown.1,
                ),
                stats: Registry::default(),
                flights: Flights::default(),
                log: LogLimiter::new(Duration::from_secs(10)),
                lease_ttl: self.lease_ttl,
                lease_wait: self.lease_wait,
                write_guard: self.write_guard,
                evict_wait: self.evict_wait,
                tenant_quota: self.tenant_quota,
                require_tenant: self.require_tenant,
                rate_state: crate::rate_limit::State::default(),
                pending: crate::invalidation::Pending::default(),
                server: crate::invalidation::ServerCheck::default(),
            }),
        })
    }
}

/// The result of a health check.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// The store answered a `PING`.
    pub reachable: bool,
    /// The round trip of that `PING`.
    pub latency: Option<Duration>,
    /// The circuit breaker's state.
    pub breaker: BreakerState,
    /// `"memory"`, `"redis"` or `"redis-cluster"`.
    pub backend: &'static str,
    /// Memory used by the store (Redis `used_memory`), when it answered.
    pub used_memory: Option<u64>,
    /// Why it is not reachable.
    pub error: Option<String>,
}

/// Everything one cached call needs, resolved once.
struct Spec {
    /// The function's name, for per-function statistics.
    name: &'static str,
    /// The namespace (tenant or global) of the entry.
    ns: String,
    /// The entry belongs to a tenant (not the global space).
    tenant_scoped: bool,
    /// `keys[0]` is the entry; `keys[1..]` the version keys it depends on.
    keys: Vec<String>,
    ttl: Duration,
    stale: Duration,
    cache_none: bool,
    private: bool,
    counters: Arc<Counters>,
    /// One of this call's store operations failed for availability: skip
    /// the rest (see `op_in`).
    degraded: std::sync::atomic::AtomicBool,
}

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
}

/// XFetch (probabilistic early refresh, Vattani et al.): a hit turns into a
/// refresh with a probability that grows as expiry nears, scaled by how long
/// the value took to compute, so hot keys are recomputed by one caller
/// before they expire instead of by a stampede after.
fn xfetch_due(now_ms: u64, fresh_until_ms: u64, compute_us: u32) -> bool {
    if compute_us == 0 {
        return false;
    }
    #[allow(clippy::cast_precision_loss)]
    let remaining = fresh_until_ms.saturating_sub(now_ms) as f64;
    let compute_ms = f64::from(compute_us) / 1000.0;
    // P(refresh) = exp(-remaining / compute): below e^-40 it is never worth
    // drawing a random number (the common case on a hot path).
    if remaining > 40.0 * compute_ms {
        return false;
    }
    let stamp = envelope::new_stamp();
    let bits = u64::from_le_bytes(stamp[..8].try_into().unwrap_or_default()) >> 11;
    #[allow(clippy::cast_precision_loss)]
    let uniform = (bits as f64 + 1.0) / (1u64 << 53) as f64;
    compute_ms * -uniform.ln() >= remaining
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

/// Logs, at most once a minute, that a cached function ran without a cache.
pub(crate) fn warn_no_cache(site: &str) {
    static LOG: std::sync::LazyLock<LogLimiter> =
        std::sync::LazyLock::new(|| LogLimiter::new(Duration::from_secs(60)));
    if let Some(suppressed) = LOG.admit("no_cache") {
        tracing::warn!(
            site,
            suppressed,
            "no cache configured (call cacheable::set_global or pass `cache = ..`); running uncached"
        );
    }
}

impl Cache {
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

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
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

    // ----- keys -----

    /// The tenant of a call: the explicit one, else the current one, none for
    /// `global`. Under `require_tenant`, a non-global call without a tenant is
    /// [`CacheError::NoTenant`] rather than the shared no-tenant space.
    fn resolve_tenant(
        &self,
        explicit: Option<&TenantId>,
        global: bool,
    ) -> Result<Option<TenantId>, CacheError> {
        if global {
            return Ok(None);
        }
        match explicit.cloned().or_else(tenant::current) {
            None if self.inner.require_tenant => Err(CacheError::NoTenant),
            t => Ok(t),
        }
    }

    /// The version keys an entry depends on: its tenant's generation (the
    /// global space has none: nothing invalidates it by tenant) and its tags
    /// in the tenant and across tenants. A global, untagged entry depends on
    /// nothing and is read with a single `GET`.
    fn dep_keys_into(
        &self,
        keys: &mut Vec<String>,
        ns: &str,
        tags: &[String],
        tenant_scoped: bool,
    ) {
        if tenant_scoped {
            keys.push(key::generation_key(ns));
        }
        if !tags.is_empty() {
            let all = key::all_tenants_namespace(&self.inner.prefix);
            for t in tags {
                keys.push(key::tag_key(ns, t));
            }
            for t in tags {
                keys.push(key::tag_key(&all, t));
            }
        }
    }

    /// The tenant's byte budget for a write of this entry, if configured.
    fn quota_for(&self, spec: &Spec) -> Option<Quota> {
        let limit = self.inner.tenant_quota.filter(|_| spec.tenant_scoped)?;
        let ns = &spec.ns;
        let window = self.inner.default_ttl;
        let n = now_ms() / u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        Some(Quota {
            keys: [
                key::quota_key(ns, n),
                key::quota_key(ns, n.saturating_sub(1)),
            ],
            limit,
            window,
        })
    }

    fn policy_ttl(&self, name: &str, seed: &str) -> Option<(Duration, Duration)> {
        let p = self.inner.policies.get(name)?;
        Some((
            p.jittered(xxhash_rust::xxh3::xxh3_64(seed.as_bytes())),
            p.stale.unwrap_or_default(),
        ))
    }

    fn unknown_policy(&self, name: &str) {
        self.report(
            None,
            "policy",
            &CacheError::Config(format!(
                "unknown ttl policy `{name}`; using the default ttl"
            )),
        );
    }

    fn site_spec(
        &self,
        site: &'static Site,
        key: &KeySource,
        tags: &[String],
    ) -> Result<Spec, CacheError> {
        let tenant = self.resolve_tenant(None, site.global)?;
        let ns = key::namespace(&self.inner.prefix, tenant.as_ref());
        let hash = match key {
            KeySource::Hash(h) => key::hash_part(*h),
            // Already escaped, with the site's identity (`__private::template_key`).
            KeySource::Template(t) => {
                let mut s = String::with_capacity(t.len() + 1);
                s.push('t');
                s.push_str(t);
                s
            }
        };
        let mut keys = Vec::with_capacity(2 + 2 * tags.len());
        keys.push(key::entry_key(&ns, site.name, site.version, &hash));
        self.dep_keys_into(&mut keys, &ns, tags, tenant.is_some());
        let (ttl, stale) = match site.ttl {
            Ttl::Default => (self.inner.default_ttl, Duration::ZERO),
            Ttl::Secs(s) => (Duration::from_secs(s), Duration::ZERO),
            Ttl::Policy(name) => self.policy_ttl(name, &keys[0]).unwrap_or_else(|| {
                self.unknown_policy(name);
                (self.inner.default_ttl, Duration::ZERO)
            }),
        };
        let stale = if site.stale_secs > 0 {
            Duration::from_secs(site.stale_secs)
        } else {
            stale
        };
        Ok(Spec {
            tenant_scoped: tenant.is_some(),
            ns,
            keys,
            ttl,
            stale,
            cache_none: site.cache_none,
            private: tenant.is_some(),
            name: site.name,
            counters: self.inner.stats.function(site.name),
            degraded: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn user_spec(
        &self,
        key: &str,
        opts: &CacheOptions,
        name: &'static str,
    ) -> Result<Spec, CacheError> {
        let tenant = match self.resolve_tenant(opts.tenant.as_ref(), opts.global) {
            Ok(t) => t,
            Err(e) => {
                self.report(Some(&self.inner.stats.function(name)), "tenant", &e);
                return Err(e);
            }
        };
        let ns = key::namespace(&self.inner.prefix, tenant.as_ref());
        let mut keys = Vec::with_capacity(3 + 2 * opts.tags.len());
        keys.push(key::user_entry_key(&ns, key));
        // The key's own version: `delete` bumps it.
        keys.push(key::user_key_version(&ns, key));
        self.dep_keys_into(&mut keys, &ns, &opts.tags, tenant.is_some());
        let (ttl, stale) = match (&opts.ttl, &opts.policy) {
            (Some(ttl), _) => (*ttl, Duration::ZERO),
            (None, Some(p)) => self.policy_ttl(p, &keys[0]).unwrap_or_else(|| {
                self.unknown_policy(p);
                (self.inner.default_ttl, Duration::ZERO)
            }),
            (None, None) => (self.inner.default_ttl, Duration::ZERO),
        };
        Ok(Spec {
            tenant_scoped: tenant.is_some(),
            ns,
            keys,
            ttl,
            stale: opts.stale.unwrap_or(stale),
            cache_none: false,
            private: tenant.is_some(),
            name,
            counters: self.inner.stats.function(name),
            degraded: std::sync::atomic::AtomicBool::new(false),
        })
    }

    // ----- the read path -----

    /// Reads the entry and its versions. With `early_refresh`, a fresh value
    /// may come back as `Stale` (XFetch) so that this caller refreshes it.
    async fn lookup<V: DeserializeOwned>(
        &self,
        spec: &Spec,
        early_refresh: bool,
    ) -> Result<Lookup<V>, CacheError> {
        if self.inner.pending.active() {
            return Err(CacheError::InvalidationPending);
        }
        if self.inner.server.suspect() {
            self.check_server().await?;
        }
        let store = &self.inner.store;
        let at = Instant::now();
        let values = self.op_in(spec, store.mget(&spec.keys)).await?;
        if values.len() != spec.keys.len() {
            return Err(CacheError::Store(format!(
                "MGET of {} keys answered {} values",
                spec.keys.len(),
                values.len()
            )));
        }
        let mut values = values.into_iter();
        let raw = values.next().flatten();
        let versions: Vec<Option<u64>> = values.map(|v| parse_version(v.as_deref())).collect();
        let miss = |raw: Option<&[u8]>, versions: Vec<Option<u64>>| Miss {
            expect: Expect::from_read(raw),
            versions,
            at,
        };
        let Some(raw) = raw else {
            return Ok(Lookup::Miss(miss(None, versions)));
        };
        let env = match envelope::decode(&raw) {
            Ok(env) => env,
            Err(e) => {
                self.report(Some(&spec.counters), "decode", &e);
                return Ok(Lookup::Miss(miss(Some(&raw), versions)));
            }
        };
        if !self.deps_current(spec, &env.deps, &versions).await? {
            return Ok(Lookup::Miss(miss(Some(&raw), versions)));
        }
        let now = now_ms();
        let stale_until = env
            .fresh_until_ms
            .saturating_add(u64::try_from(spec.stale.as_millis()).unwrap_or(u64::MAX));
        if now >= stale_until {
            return Ok(Lookup::Miss(miss(Some(&raw), versions)));
        }
        let value = match codec::decode::<V>(env.payload) {
            Ok(v) => v,
            Err(e) => {
                self.report(Some(&spec.counters), "decode", &e);
                return Ok(Lookup::Miss(miss(Some(&raw), versions)));
            }
        };
        if now >= env.fresh_until_ms
            || (early_refresh && xfetch_due(now, env.fresh_until_ms, env.compute_us))
        {
            return Ok(Lookup::Stale {
                value,
                miss: miss(Some(&raw), versions),
            });
        }
        Ok(Lookup::Hit(Hit {
            value,
            now_ms: now,
            stored_at_ms: env.stored_at_ms,
            fresh_until_ms: env.fresh_until_ms,
            private: spec.private || env.deps.iter().any(|d| key::is_tenant_key(d.key)),
            deps: if collecting() {
                env.deps.iter().map(|d| d.owned()).collect()
            } else {
                Vec::new()
            },
        }))
    }

    /// Whether every dependency of an entry is still at its recorded version.
    /// The call's own version keys were fetched with the entry; dependencies
    /// inherited from nested cached calls are fetched with one more `MGET`.
    async fn deps_current(
        &self,
        spec: &Spec,
        deps: &[DepRef<'_>],
        versions: &[Option<u64>],
    ) -> Result<bool, CacheError> {
        let known = &spec.keys[1..];
        let mut extra: Vec<(String, u64)> = Vec::new();
        for (i, dep) in deps.iter().enumerate() {
            let current = if known.get(i).is_some_and(|k| *k == dep.key) {
                Some(versions[i])
            } else {
                known
                    .iter()
                    .position(|k| *k == dep.key)
                    .map(|p| versions[p])
            };
            match current {
                // A missing or unreadable counter matches no version.
                Some(v) if v != Some(dep.version) => return Ok(false),
                Some(_) => {}
                None => extra.push((dep.key.to_owned(), dep.version)),
            }
        }
        // Every version key of the call itself must be among the entry's deps
        // (an entry written under other tags is not this call's entry).
        if known.iter().any(|k| !deps.iter().any(|d| d.key == *k)) {
            return Ok(false);
        }
        if extra.is_empty() {
            return Ok(true);
        }
        let keys: Vec<String> = extra.iter().map(|(k, _)| k.clone()).collect();
        let current = self.op_in(spec, self.inner.store.mget(&keys)).await?;
        Ok(current.len() == extra.len()
            && current
                .iter()
                .zip(&extra)
                .all(|(raw, (_, v))| parse_version(raw.as_deref()) == Some(*v)))
    }

    // ----- the cache-aside engine -----

    pub(crate) async fn run_site<A, O, F>(
        &self,
        site: &'static Site,
        key: Result<KeySource, crate::key::HashError>,
        tags: Vec<String>,
        body: F,
    ) -> O
    where
        A: Adapter<O>,
        F: Future<Output = O>,
    {
        let key = match key {
            Ok(k) => k,
            Err(e) => {
                let counters = self.inner.stats.function(site.name);
                self.report(Some(&counters), "key", &CacheError::Codec(e.to_string()));
                mark_incomplete();
                return body.await;
            }
        };
        let spec = match self.site_spec(site, &key, &tags) {
            Ok(spec) => spec,
            Err(e) => {
                let counters = self.inner.stats.function(site.name);
                self.report(Some(&counters), "tenant", &e);
                self.inner.stats.miss(&counters, site.name);
                return body.await;
            }
        };
        self.cache_aside::<A, O, F>(&spec, body).await
    }

    async fn cache_aside<A, O, F>(&self, spec: &Spec, body: F) -> O
    where
        A: Adapter<O>,
        F: Future<Output = O>,
    {
        // Hit latency is timed on one hit in HIT_SAMPLE: two clock reads on
        // every hit would cost more than the rest of the bookkeeping.
        let started = sample_hit().then(Instant::now);
        match self.lookup::<A::Value>(spec, true).await {
            Ok(Lookup::Hit(hit)) => {
                if let Some(started) = started {
                    let elapsed = started.elapsed() * HIT_SAMPLE;
                    self.inner
                        .stats
                        .hit_time(&spec.counters, spec.name, elapsed);
                }
                self.serve_hit::<A, O>(spec, hit)
            }
            // The miss path is boxed: it runs once per computation, and keeping
            // its state out of line keeps every caller's future small (nested
            // cached calls would otherwise grow it by the whole engine each).
            Ok(Lookup::Stale { value, miss }) => {
                Box::pin(self.fill::<A, O, F>(spec, miss, Some(value), body)).await
            }
            Ok(Lookup::Miss(miss)) => Box::pin(self.fill::<A, O, F>(spec, miss, None, body)).await,
            Err(e) => {
                self.report(Some(&spec.counters), "read", &e);
                self.inner.stats.miss(&spec.counters, spec.name);
                self.uncached(spec, body).await
            }
        }
    }

    /// Runs the body without the cache (the store failed), still timing it:
    /// the time spent in queries is reported whether or not Redis answers.
    async fn uncached<O, F: Future<Output = O>>(&self, spec: &Spec, body: F) -> O {
        mark_incomplete();
        let started = Instant::now();
        let out = body.await;
        self.inner
            .stats
            .computed(&spec.counters, spec.name, started.elapsed());
        out
    }

    /// A miss (or a stale hit): one caller per process computes (single
    /// flight), one process per key holds a lease; the others wait for its
    /// value, or take the stale value at once. The steps, and the tests that
    /// break when one is removed, are in the `flight` module's docs.
    async fn fill<A, O, F>(
        &self,
        spec: &Spec,
        mut miss: Miss,
        mut stale: Option<A::Value>,
        body: F,
    ) -> O
    where
        A: Adapter<O>,
        F: Future<Output = O>,
    {
        // Flights are keyed by versions: create missing counters first, so
        // that callers arriving before and after the leader's snapshot
        // agree on them and join one flight.
        miss = match self.complete(spec, miss).await {
            Ok(m) => m,
            Err(e) => {
                self.report(Some(&spec.counters), "snapshot", &e);
                self.inner.stats.miss(&spec.counters, spec.name);
                return self.uncached(spec, body).await;
            }
        };
        // The lease of a leader of this process that abandoned the flight
        // this caller now takes over.
        let mut dead_lease = None;
        let mut guard = loop {
            let follower = match self.inner.flights.join(&spec.keys[0], &miss.versions) {
                Flight::Leader(guard) => break guard,
                Flight::Follower(follower) => follower,
            };
            if let Some(value) = stale.take() {
                return self.serve_stale::<A, O>(spec, value);
            }
            // A live leader in this process: wait for it however long it takes.
            match follower.wait().await {
                // Join again: the first follower to get there leads.
                Outcome::Abandoned(lease) => dead_lease = lease,
                Outcome::Done => match self.lookup::<A::Value>(spec, false).await {
                    Ok(Lookup::Hit(hit)) => return self.serve_hit::<A, O>(spec, hit),
                    Ok(Lookup::Stale { value, .. }) => {
                        return self.serve_stale::<A, O>(spec, value);
                    }
                    // The versions moved on: the leader's value predates an
                    // invalidation. Join (or lead) the flight of the new ones.
                    Ok(Lookup::Miss(m)) if m.versions != miss.versions => {
                        miss = match self.complete(spec, m).await {
                            Ok(m) => m,
                            Err(e) => {
                                self.report(Some(&spec.counters), "snapshot", &e);
                                self.inner.stats.miss(&spec.counters, spec.name);
                                return self.uncached(spec, body).await;
                            }
                        };
                    }
                    // The leader's value was not cacheable (an `Err`, a failed
                    // write): compute, as it did.
                    Ok(Lookup::Miss(m)) => return self.compute::<A, O, F>(spec, m, body).await,
                    Err(e) => {
                        self.report(Some(&spec.counters), "read", &e);
                        return self.uncached(spec, body).await;
                    }
                },
            }
        };
        let lease_key = crate::flight::lease_key(&spec.keys[0], &miss.versions);
        if let Some(dead) = dead_lease.filter(|d| d.0 == lease_key)
            && let Err(e) = self
                .op_in(spec, self.inner.store.release(&dead.0, &dead.1))
                .await
        {
            self.report(Some(&spec.counters), "release", &e);
        }
        let token = format!("{:032x}", u128::from_le_bytes(envelope::new_stamp()));
        let (lease, held_elsewhere) = match self
            .op_in(
                spec,
                self.inner
                    .store
                    .try_lease(&lease_key, &token, self.inner.lease_ttl),
            )
            .await
        {
            Ok(true) => {
                guard.hold_lease(&lease_key, &token);
                let lease = LeaseGuard::new(Arc::clone(&self.inner), lease_key, token);
                (Some(lease), false)
            }
            Ok(false) => (None, true),
            Err(e) => {
                self.report(Some(&spec.counters), "lease", &e);
                (None, false)
            }
        };
        if held_elsewhere {
            if let Some(value) = stale {
                guard.complete();
                return self.serve_stale::<A, O>(spec, value);
            }
            // Another process computes this key: wait for its value, bounded
            // (that process may be gone).
            let deadline = Instant::now() + self.inner.lease_wait;
            let mut pause = Duration::from_millis(5);
            while Instant::now() < deadline {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(50));
                match self.lookup::<A::Value>(spec, false).await {
                    Ok(Lookup::Hit(hit)) => {
                        guard.complete();
                        return self.serve_hit::<A, O>(spec, hit);
                    }
                    Ok(Lookup::Stale { miss: m, .. } | Lookup::Miss(m)) => miss = m,
                    Err(_) => break,
                }
            }
        }
        let out = self.compute::<A, O, F>(spec, miss, body).await;
        guard.complete();
        if let Some(lease) = lease {
            if let Err(e) = self
                .op_in(spec, self.inner.store.release(lease.key(), lease.token()))
                .await
            {
                self.report(Some(&spec.counters), "release", &e);
            }
            lease.disarm();
        }
        out
    }

    fn serve_hit<A: Adapter<O>, O>(&self, spec: &Spec, hit: Hit<A::Value>) -> O {
        self.inner.stats.hit(&spec.counters, spec.name, false);
        report_deps(&hit.deps);
        note_cache(
            hit.private,
            true,
            hit.fresh_until_ms.saturating_sub(hit.now_ms),
            hit.now_ms.saturating_sub(hit.stored_at_ms),
        );
        A::rebuild(hit.value)
    }

    fn serve_stale<A: Adapter<O>, O>(&self, spec: &Spec, value: A::Value) -> O {
        self.inner.stats.hit(&spec.counters, spec.name, true);
        // Its dependencies were not looked at: private, to be safe.
        note_cache(true, true, 0, 0);
        A::rebuild(value)
    }

    /// Runs the body under a dependency collector and stores its result with
    /// the versions observed before it started.
    async fn compute<A, O, F>(&self, spec: &Spec, miss: Miss, body: F) -> O
    where
        A: Adapter<O>,
        F: Future<Output = O>,
    {
        self.inner.stats.miss(&spec.counters, spec.name);
        let versions = match self.snapshot(spec, &miss).await {
            Ok(v) => Some(v),
            Err(e) => {
                self.report(Some(&spec.counters), "snapshot", &e);
                None
            }
        };
        let collector = Arc::new(Mutex::new(Collected::default()));
        let started = Instant::now();
        let out = DEPS.scope(Arc::clone(&collector), body).await;
        let elapsed = started.elapsed();
        self.inner
            .stats
            .computed(&spec.counters, spec.name, elapsed);
        let collected =
            std::mem::take(&mut *collector.lock().unwrap_or_else(PoisonError::into_inner));
        note_cache(
            spec.private,
            false,
            u64::try_from(spec.ttl.as_millis()).unwrap_or(u64::MAX),
            0,
        );
        let Some(versions) = versions.filter(|_| !collected.incomplete) else {
            // Without a snapshot, or with a nested call whose dependencies
            // are unknown (it ran uncached), the value cannot be checked
            // later: it is not stored, and neither is an enclosing one.
            mark_incomplete();
            return out;
        };
        let mut deps: Vec<Dep> = spec.keys[1..]
            .iter()
            .zip(versions)
            .map(|(k, version)| Dep {
                key: k.clone(),
                version,
            })
            .collect();
        for d in collected.deps {
            if !deps.iter().any(|x| x.key == d.key) {
                deps.push(d);
            }
        }
        report_deps(&deps);
        if !spec.tenant_scoped && deps.iter().any(|d| key::is_tenant_key(&d.key)) {
            // A `global` value computed from a tenant's cached data would be
            // served to every tenant: not stored (guarantee 1).
            self.report(Some(&spec.counters), "write", &CacheError::TenantDependency);
            return out;
        }
        let since_snapshot = miss.at.elapsed();
        if since_snapshot >= self.inner.write_guard {
            tracing::debug!(key = %spec.keys[0], ?since_snapshot, "computation outlived the write guard; not stored");
            return out;
        }
        if let Some(view) = A::view(&out, spec.cache_none) {
            self.store_value(spec, &view, miss.expect, elapsed, &deps)
                .await;
        }
        out
    }

    /// `miss` with every missing or unreadable counter created at a fresh
    /// version (one `ENSURE` round trip, only when one was missing).
    async fn complete(&self, spec: &Spec, mut miss: Miss) -> Result<Miss, CacheError> {
        if miss.versions.iter().all(Option::is_some) {
            return Ok(miss);
        }
        let versions = self.snapshot(spec, &miss).await?;
        miss.versions = versions.into_iter().map(Some).collect();
        Ok(miss)
    }

    /// The versions a computation runs under: those the miss read, with
    /// every missing or unreadable counter created at a fresh version first
    /// (one `ENSURE` round trip, only when one was missing).
    async fn snapshot(&self, spec: &Spec, miss: &Miss) -> Result<Vec<u64>, CacheError> {
        let missing: Vec<String> = spec.keys[1..]
            .iter()
            .zip(&miss.versions)
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        if missing.is_empty() {
            return Ok(miss.versions.iter().flatten().copied().collect());
        }
        let ttl = spec.ttl.saturating_add(spec.stale);
        let mut created = self
            .op_in(
                spec,
                self.inner
                    .store
                    .ensure(&missing, envelope::fresh_version(), ttl),
            )
            .await?
            .into_iter();
        miss.versions
            .iter()
            .map(|v| {
                v.or_else(|| created.next())
                    .ok_or_else(|| CacheError::Store("version snapshot incomplete".into()))
            })
            .collect()
    }

    async fn store_value<T: Serialize + ?Sized>(
        &self,
        spec: &Spec,
        value: &T,
        expect: Expect,
        compute: Duration,
        deps: &[Dep],
    ) {
        let payload = match codec::encode(value) {
            Ok(p) => p,
            Err(e) => return self.report(Some(&spec.counters), "encode", &e),
        };
        let raw = match envelope::encode(KIND_VALUE, spec.ttl, compute, deps, &payload) {
            Ok(r) => r,
            Err(e) => return self.report(Some(&spec.counters), "encode", &e),
        };
        if self.inner.pending.active() {
            return;
        }
        let dep_keys: Vec<String> = deps.iter().map(|d| d.key.clone()).collect();
        let versions: Vec<u64> = deps.iter().map(|d| d.version).collect();
        let put = Put {
            key: &spec.keys[0],
            value: &raw,
            ttl: spec.ttl.saturating_add(spec.stale),
            expect,
            deps: &dep_keys,
            versions: &versions,
            quota: self.quota_for(spec),
        };
        if let Err(e) = self.op_in(spec, self.inner.store.put(&put)).await {
            self.report(Some(&spec.counters), "write", &e);
        }
    }

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
        let spec = self.user_spec(key, opts, "cache.get")?;
        let found = match self.lookup::<T>(&spec, false).await? {
            Lookup::Hit(hit) => {
                report_deps(&hit.deps);
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
        let deps: Vec<Dep> = spec.keys[1..]
            .iter()
            .zip(&versions)
            .map(|(k, v)| Dep {
                key: k.clone(),
                version: *v,
            })
            .collect();
        let payload = codec::encode(value)?;
        let raw = envelope::encode(KIND_VALUE, spec.ttl, Duration::ZERO, &deps, &payload)?;
        let dep_keys = &spec.keys[1..];
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

    /// Deletes `key`: bumps the key's own version, so the entry, and any value
    /// of this key whose computation was in flight, is never served again.
    ///
    /// # Errors
    /// Store, timeout or breaker errors. A failed delete is retried in the
    /// background until it lands, and until then this process serves nothing
    /// from the store (see the module docs of `invalidation`).
    pub async fn delete(&self, key: &str, opts: &CacheOptions) -> Result<(), CacheError> {
        let tenant = self.resolve_tenant(opts.tenant.as_ref(), opts.global)?;
        let ns = key::namespace(&self.inner.prefix, tenant.as_ref());
        self.invalidate(vec![key::user_key_version(&ns, key)], "delete")
            .await
    }

    /// Invalidates every entry carrying one of `tags` in `tenant` (`None`: the
    /// current tenant, or the global space outside any tenant). O(1) per tag.
    ///
    /// # Errors
    /// Store, timeout or breaker errors; the invalidation is then retried as
    /// for [`Cache::delete`].
    pub async fn delete_by_tags(
        &self,
        tags: &[&str],
        tenant: Option<&str>,
    ) -> Result<(), CacheError> {
        let tenant = match tenant {
            Some(t) => Some(TenantId::from(t)),
            None => tenant::current(),
        };
        self.invalidate(self.tag_keys(tags, tenant.as_ref()), "tags")
            .await
    }

    /// The version keys of `tags` in `tenant` (`None`: the global space).
    fn tag_keys(&self, tags: &[&str], tenant: Option<&TenantId>) -> Vec<String> {
        let ns = key::namespace(&self.inner.prefix, tenant);
        tags.iter().map(|t| key::tag_key(&ns, t)).collect()
    }

    /// Invalidates every entry carrying one of `tags`, in every tenant. O(1) per tag.
    ///
    /// # Errors
    /// Store, timeout or breaker errors; the invalidation is then retried as
    /// for [`Cache::delete`].
    pub async fn delete_by_tags_all_tenants(&self, tags: &[&str]) -> Result<(), CacheError> {
        self.invalidate(self.all_tenant_tag_keys(tags), "tags")
            .await
    }

    fn all_tenant_tag_keys(&self, tags: &[&str]) -> Vec<String> {
        let ns = key::all_tenants_namespace(&self.inner.prefix);
        tags.iter().map(|t| key::tag_key(&ns, t)).collect()
    }

    /// Invalidates every entry of `tenant`. O(1).
    ///
    /// # Errors
    /// Store, timeout or breaker errors; the invalidation is then retried as
    /// for [`Cache::delete`].
    pub async fn delete_by_tenant(&self, tenant: &str) -> Result<(), CacheError> {
        let ns = key::namespace(&self.inner.prefix, Some(&TenantId::from(tenant)));
        self.invalidate(vec![key::generation_key(&ns)], "tenant")
            .await
    }

    /// Bumps version keys; on failure keeps them for the retry task before
    /// returning the error (see the `invalidation` module).
    async fn invalidate(&self, keys: Vec<String>, what: &'static str) -> Result<(), CacheError> {
        match self.op(self.inner.store.bump(&keys)).await {
            Ok(()) => {
                self.inner.stats.invalidation(what);
                Ok(())
            }
            Err(e) => {
                self.inner.pending.add(&keys);
                self.retry_pending();
                Err(e)
            }
        }
    }

    /// Starts the task that retries pending invalidations, unless it runs.
    fn retry_pending(&self) {
        use std::sync::atomic::Ordering;
        if self.inner.pending.retrying.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to retry on: the next invalidation on one starts it.
            self.inner.pending.retrying.store(false, Ordering::Release);
            return;
        };
        let cache = self.clone();
        runtime.spawn(async move { cache.retry_until_done().await });
    }

    async fn retry_until_done(self) {
        const FIRST: Duration = Duration::from_millis(10);
        let inner = &self.inner;
        let mut pause = FIRST;
        loop {
            let work = inner.pending.work();
            if work.is_empty() {
                if inner.pending.stop_retrying() {
                    return;
                }
                continue;
            }
            let landed = if work.clear {
                let limit = (inner.op_timeout * 40).max(Duration::from_secs(10));
                tokio::time::timeout(limit, inner.store.clear(&inner.prefix))
                    .await
                    .is_ok_and(|r| r.is_ok())
            } else {
                tokio::time::timeout(inner.op_timeout, inner.store.bump(&work.keys))
                    .await
                    .is_ok_and(|r| r.is_ok())
            };
            if landed {
                inner.pending.done(&work);
                inner.breaker.success();
                inner.stats.invalidation("retried");
                tracing::info!(
                    keys = work.keys.len(),
                    clear = work.clear,
                    "a failed invalidation landed on retry; cached reads resume"
                );
                pause = FIRST;
            } else {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(250));
            }
        }
    }

    /// Checks that the server is the one this cache last talked to; if it
    /// is another (a restart, a failover), clears this cache's prefix first,
    /// since the new server may hold data from before an invalidation. One
    /// check at a time; concurrent readers wait for it.
    async fn check_server(&self) -> Result<(), CacheError> {
        let inner = &self.inner;
        let mut known = inner.server.lock().await;
        if !inner.server.suspect() {
            return Ok(());
        }
        let id = self.op(inner.store.server_id()).await?;
        if let (Some(before), Some(now)) = (known.as_deref(), id.as_deref())
            && before != now
        {
            let limit = (inner.op_timeout * 40).max(Duration::from_secs(10));
            tokio::time::timeout(limit, inner.store.clear(&inner.prefix))
                .await
                .map_err(|_| CacheError::Timeout(limit))??;
            inner.stats.invalidation("server_changed");
            tracing::warn!(
                "the Redis server changed (restart or failover): cleared this cache's keys, \
                 which may predate an invalidation"
            );
        }
        *known = id;
        inner.server.trust();
        Ok(())
    }

    /// Invalidations that failed and wait for their retry (version keys; a
    /// pending `clear` counts one). While it is above zero this process
    /// serves nothing from the store.
    pub fn pending_invalidations(&self) -> usize {
        self.inner.pending.len()
    }

    /// Deletes every key under this cache's prefix (`SCAN` + `UNLINK`, never
    /// `FLUSHDB`); other keys in the database are untouched. Bounded by 40
    /// operation timeouts (at least 10 s) as a whole.
    ///
    /// # Errors
    /// Store or breaker errors.
    pub async fn clear(&self) -> Result<(), CacheError> {
        let result = if self.inner.breaker.allow() {
            // A scan is many round trips: bounded as a whole, generously.
            let limit = (self.inner.op_timeout * 40).max(Duration::from_secs(10));
            tokio::time::timeout(limit, self.inner.store.clear(&self.inner.prefix))
                .await
                .map_err(|_| CacheError::Timeout(limit))
                .and_then(|r| r)
        } else {
            Err(CacheError::CircuitOpen)
        };
        match result {
            Ok(_) => {
                self.inner.stats.invalidation("clear");
                Ok(())
            }
            Err(e) => {
                // Retried until it lands, like every invalidation.
                self.inner.pending.add_clear();
                self.retry_pending();
                Err(e)
            }
        }
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
        let Ok(spec) = self.user_spec(key, opts, "cache.get_or_compute") else {
            // No tenant under `require_tenant` (counted and logged): uncached.
            return compute().await;
        };
        self.cache_aside::<ResultOf<Plain>, Result<T, E>, _>(&spec, async move { compute().await })
            .await
    }

    /// Invalidation after a `#[cache_evict]` call without `strict`: a failed
    /// invalidation is retried, and the call waits for it to land up to
    /// `evict_wait`; past that it returns, and the error is counted and logged
    /// (the retry goes on in the background).
    pub(crate) async fn evict_after_call(&self, tags: &[String], all_tenants: bool) {
        let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
        let keys = if all_tenants {
            self.all_tenant_tag_keys(&tags)
        } else {
            match self.resolve_tenant(None, false) {
                Ok(tenant) => self.tag_keys(&tags, tenant.as_ref()),
                // `require_tenant` and no tenant: an eviction meant for a
                // tenant must not hit the shared space silently.
                Err(e) => return self.report(None, "evict", &e),
            }
        };
        if let Err(e) = self.invalidate(keys.clone(), "evict").await
            && !self
                .inner
                .pending
                .wait_landed(&keys, self.inner.evict_wait)
                .await
        {
            self.report(None, "evict", &e);
        }
    }

    /// Computations this process runs now under single flight (one per key
    /// and version snapshot; bounded, and zero when none runs).
    pub fn in_flight(&self) -> usize {
        self.inner.flights.len()
    }

    /// Counters since the cache was built.
    pub fn stats(&self) -> Stats {
        self.inner.stats.snapshot()
    }

    /// Pings the store (bypassing the breaker) and reports reachability,
    /// latency, breaker state and memory use.
    pub async fn health(&self) -> Health {
        let inner = &self.inner;
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

/// Whether this call runs inside the computation of another cached value.
fn collecting() -> bool {
    DEPS.try_with(|_| ()).is_ok()
}

/// Adds `deps` to the computation that encloses this call, if any.
fn report_deps(deps: &[Dep]) {
    let _ = DEPS.try_with(|c| {
        let mut c = c.lock().unwrap_or_else(PoisonError::into_inner);
        for d in deps {
            if !c.deps.iter().any(|x| x.key == d.key) {
                c.deps.push(d.clone());
            }
        }
    });
}

/// Tells the enclosing computation, if any, that a nested cached call ran
/// without the cache: the enclosing value must not be stored.
fn mark_incomplete() {
    let _ = DEPS.try_with(|c| c.lock().unwrap_or_else(PoisonError::into_inner).incomplete = true);
}

/// One hit in this many is timed (its time, scaled, goes into `hit_time`).
const HIT_SAMPLE: u32 = 16;

fn sample_hit() -> bool {
    thread_local! {
        static HITS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }
    HITS.with(|h| {
        let n = h.get().wrapping_add(1);
        h.set(n);
        n % HIT_SAMPLE == 0
    })
}

fn note_cache(private: bool, hit: bool, max_age_ms: u64, age_ms: u64) {
    context::with_current(|c| {
        if let Some(notes) = c.and_then(context::Context::notes) {
            notes.record_cache(context::CacheNote {
                hit,
                max_age: Duration::from_millis(max_age_ms),
                age: Duration::from_millis(age_ms),
                private,
            });
        }
    });
}
