//! `CacheBuilder`: configuration, its validation, and building a `Cache`.
//!
//! Over 400 lines: one setter per option of the public contract, each with
//! its docs, and the range checks that keep every configuration from
//! panicking; splitting them would scatter one concern.

use super::*;

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
    unchecked_epochs: bool,
    tls: TlsSettings,
    memory_capacity: u64,
    alerts: Vec<crate::monitor::Alert>,
    on_alert: Vec<crate::monitor::AlertCallback>,
    alert_interval: Duration,
    clock: crate::clock::AnyClock,
    enabled: bool,
    /// `local_cache(max_entries, ttl)`.
    local: Option<(u64, Duration)>,
    local_bytes: Option<u64>,
    local_lease: Duration,
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
            .field("enabled", &self.enabled)
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
            unchecked_epochs: false,
            tls: TlsSettings::default(),
            memory_capacity: crate::store::memory::DEFAULT_CAPACITY,
            alerts: Vec::new(),
            on_alert: Vec::new(),
            alert_interval: Duration::from_secs(1),
            clock: crate::clock::AnyClock::System,
            enabled: true,
            local: None,
            local_bytes: None,
            local_lease: Duration::from_secs(2),
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

    /// A local in-process tier in front of Redis (moka): at most
    /// `max_entries` entries, each kept at most `ttl` (and never past its own
    /// expiry), bounded in bytes too by
    /// [`local_cache_bytes`](Self::local_cache_bytes) (default 64 MiB). A
    /// local hit costs no round trip.
    ///
    /// Invalidations stay consistent across instances (guarantee 2): once
    /// `delete`, `delete_by_tags`, `delete_by_tenant`, `clear` or a
    /// `#[cache_evict]` call has returned on any instance, no instance serves
    /// a value computed before it from its local tier. Each instance with a
    /// tier subscribes to an invalidation channel and holds a lease in Redis
    /// ([`local_cache_lease`](Self::local_cache_lease)); an invalidation
    /// returns once every live instance acknowledged it, or at worst after
    /// one lease when one does not answer (paused, partitioned). An instance
    /// that loses its subscription or lease stops serving locally at once and
    /// drops its whole tier when it is back. The protocol and what it relies
    /// on are written down in the crate's `local` module docs.
    ///
    /// With [`redis_url`](Self::redis_url) or
    /// [`redis_cluster`](Self::redis_cluster) (on a cluster, the registry
    /// lives in one slot and the subscription is to its master; see the
    /// module docs for what a failover of that slot means); the memory store
    /// is a [`CacheError::Config`]. Call sites
    /// opt out with `#[cacheable(local = false)]`. Zero entries or a zero ttl
    /// is a [`CacheError::Config`].
    pub fn local_cache(mut self, max_entries: u64, ttl: Duration) -> Self {
        self.local = Some((max_entries, ttl));
        self
    }

    /// The most bytes the local tier holds (key, envelope bytes and about
    /// 100 bytes of bookkeeping per entry; default 64 MiB). Needs
    /// [`local_cache`](Self::local_cache).
    pub fn local_cache_bytes(mut self, bytes: u64) -> Self {
        self.local_bytes = Some(bytes);
        self
    }

    /// The lease of an instance's local tier in Redis (default 2 s; 100 ms to
    /// one hour): an instance serves locally only while it holds it, and an
    /// invalidation waits at most about one lease (plus 250 ms) for an
    /// instance that does not acknowledge it.
    pub fn local_cache_lease(mut self, lease: Duration) -> Self {
        self.local_lease = lease;
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

    /// **Breaks guarantee 2; for tests only.** Skips the tag-epoch check of
    /// result tags (step 6 of the protocol in the docs of `cache`), so that
    /// a test can show the race that the check closes.
    #[doc(hidden)]
    pub fn unchecked_result_tags_for_tests(mut self) -> Self {
        self.unchecked_epochs = true;
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

    /// Watches a threshold (see [`Alert`](crate::monitor::Alert) and the
    /// `monitor::alerts` docs): with at least one alert, `build` starts a
    /// background task (it needs a tokio runtime) that evaluates them every
    /// [`alert_interval`](Self::alert_interval) and stops when the cache is
    /// dropped. Firing alerts are listed by [`Cache::alerts`].
    pub fn alert(mut self, alert: crate::monitor::Alert) -> Self {
        self.alerts.push(alert);
        self
    }

    /// Called once per alert transition (firing or resolved), from the
    /// evaluator task: keep it short, and hand slow work to a task of your own.
    pub fn on_alert(
        mut self,
        callback: impl Fn(&crate::monitor::AlertEvent) + Send + Sync + 'static,
    ) -> Self {
        self.on_alert.push(Arc::new(callback));
        self
    }

    /// How often alerts are evaluated (default 1 s; from 1 ms to an hour).
    pub fn alert_interval(mut self, interval: Duration) -> Self {
        self.alert_interval = interval;
        self
    }

    /// The clock of the cache's in-process timers (default
    /// [`SystemClock`](crate::clock::SystemClock)): breaker cool-downs,
    /// soft expiry and the `stale` window, early refresh, the memory store's
    /// expiry, local rate-limit windows. Tests pass a
    /// [`FakeClock`](crate::clock::FakeClock) and advance it instead of
    /// sleeping. Redis' own TTLs stay on the server's clock (see
    /// [`clock`](crate::clock)).
    pub fn clock(mut self, clock: impl crate::clock::Clock) -> Self {
        self.clock = crate::clock::AnyClock::new(clock);
        self
    }

    /// `false` builds a disabled cache (see [`Cache::disabled`]): every call
    /// runs its body, nothing touches a store, rate limits are decided in
    /// the process. For switching caching off by configuration:
    /// `Cache::builder().redis_url(url).enabled(config.cache_enabled)`.
    /// The rest of the configuration is still validated, but no store is
    /// built: a disabled cache needs no store (`redis_url`, `memory`), and
    /// a Redis URL given is not parsed. Default `true`.
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
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
        if !self.alerts.is_empty() {
            within("alert_interval", self.alert_interval, false, HOUR)?;
        }
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

    /// The local tier's configuration, checked.
    fn local_config(&self) -> Result<Option<crate::local::LocalConfig>, String> {
        let Some((max_entries, ttl)) = self.local else {
            if self.local_bytes.is_some() {
                return Err("local_cache_bytes needs local_cache(max_entries, ttl)".into());
            }
            return Ok(None);
        };
        if !matches!(self.backend, Some(Backend::Redis(_) | Backend::Cluster(_))) {
            return Err(
                "local_cache needs Redis (redis_url or redis_cluster); the memory store has \
                 no local tier"
                    .into(),
            );
        }
        if max_entries == 0 {
            return Err("local_cache max_entries must be greater than zero".into());
        }
        if ttl.is_zero() || ttl > crate::options::MAX_TTL {
            return Err("local_cache ttl must be greater than zero and at most MAX_TTL".into());
        }
        let max_bytes = self.local_bytes.unwrap_or(crate::local::DEFAULT_BYTES);
        if max_bytes == 0 {
            return Err("local_cache_bytes must be greater than zero".into());
        }
        if self.local_lease < Duration::from_millis(100)
            || self.local_lease > Duration::from_secs(3600)
        {
            return Err("local_cache_lease must be between 100 ms and one hour".into());
        }
        Ok(Some(crate::local::LocalConfig {
            max_entries,
            max_bytes,
            ttl,
            lease: self.local_lease,
        }))
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
        let local = match self.local_config() {
            Ok(local) => local,
            Err(m) => return config(m),
        };
        // Disabled: a store that is never used for caching (the rate limiter
        // decides in the process, as on the memory store); the smallest one.
        let backend = if self.enabled {
            self.backend
        } else {
            Some(Backend::Memory)
        };
        let memory_capacity = if self.enabled {
            self.memory_capacity
        } else {
            1
        };
        let store = Arc::new(match backend {
            None => return config("no store: call .redis_url(..) or .memory()".into()),
            Some(Backend::Memory) => {
                AnyStore::Memory(MemoryStore::with_clock(memory_capacity, self.clock.clone()))
            }
            Some(Backend::Redis(url)) => {
                AnyStore::Redis(RedisStore::new(&url, self.op_timeout, &self.tls)?)
            }
            Some(Backend::Cluster(urls)) => AnyStore::Cluster(Arc::new(ClusterStore::new(
                &urls,
                self.op_timeout,
                &self.tls,
            )?)),
        });
        let rate_limiter = crate::rate_limit::RateLimiter::new(
            Arc::clone(&store) as Arc<dyn crate::store::ScriptHost>,
            self.prefix.clone(),
            self.op_timeout,
            &self.clock,
        );
        let alerts = (!self.alerts.is_empty()).then(|| {
            Arc::new(crate::monitor::alerts::Alerts::new(
                self.alerts,
                self.on_alert,
                self.alert_interval,
            ))
        });
        let runtime = match &alerts {
            Some(_) => match tokio::runtime::Handle::try_current() {
                Ok(handle) => Some(handle),
                Err(_) => {
                    return config("alerts need a tokio runtime to build the cache in".into());
                }
            },
            None => None,
        };
        let cache = Cache {
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
                )
                .with_clock(self.clock.clone()),
                stats: Registry::default(),
                flights: Flights::default(),
                log: LogLimiter::new(Duration::from_secs(10)),
                lease_ttl: self.lease_ttl,
                lease_wait: self.lease_wait,
                write_guard: self.write_guard,
                evict_wait: self.evict_wait,
                tenant_quota: self.tenant_quota,
                require_tenant: self.require_tenant,
                rate_limiter,
                unchecked_epochs: self.unchecked_epochs,
                pending: crate::invalidation::Pending::default(),
                server: crate::invalidation::ServerCheck::default(),
                alerts,
                clock: self.clock,
                disabled: !self.enabled,
                local: local
                    .filter(|_| self.enabled)
                    .map(|c| Arc::new(crate::local::LocalTier::new(c))),
                acks: Arc::default(),
            }),
        };
        if let Some(handle) = runtime {
            super::alerts::spawn(Arc::downgrade(&cache.inner), &handle);
        }
        Ok(cache)
    }
}
