//! Rate limiting on Redis: [`RateLimiter`] (from
//! [`Cache::rate_limiter`](crate::Cache::rate_limiter)) and what
//! `#[rate_limit]` calls.
//!
//! # Algorithms
//!
//! | [`Algorithm`] | admits | memory per key | use for |
//! |---|---|---|---|
//! | [`Gcra`](Algorithm::Gcra) (default) | a burst of `points`, then `points` per `duration`, evenly | one integer | API limits |
//! | [`SlidingWindow`](Algorithm::SlidingWindow) | never more than `points` in any `duration` | one sorted-set member per point | small limits (logins) |
//! | [`FixedWindow`](Algorithm::FixedWindow) | `points` per window aligned on the Unix epoch (UTC) | one short string | quotas per day/month |
//!
//! Each decision is **one Lua script** (`EVALSHA`, reloaded on `NOSCRIPT`)
//! that reads the time from Redis `TIME`, so application servers' clocks
//! never matter, and returns an explicit allowed flag with `remaining`,
//! `reset_after` and `retry_after`. A denial writes nothing. Keys expire as
//! soon as they no longer hold a budget. `cost` weights a call.
//!
//! # Keys
//!
//! ```text
//! {prefix}:{t:<tenant>}:rl<a>:<key>     a = g (GCRA), s (sliding window), f (fixed window)
//! {prefix}:{g}:rl<a>:<key>              outside any tenant (or `by = "global"`)
//! ```
//!
//! The tenant is escaped as in every other key (see the key module), so a
//! tenant id can never reach another tenant's limits. The key given to
//! [`RateLimiter::check`] is escaped too (`{`, `}` and non-ASCII bytes become
//! `%XX`; `:` is kept as a separator). `#[rate_limit]` builds its key as
//! `<name>:<caller>`: the name's `::`-separated segments escaped with the
//! tenant escape (no `:` or `/` survives) and joined by `/`, so
//! `name = "a.b"` (`a.b`) and fn `b` of module `a` (`a/b`) never share a
//! budget; the caller part is `u:<user>`, `ip:<v4>`, `ip6:<64 bits>`,
//! `anon`, `t`, `g`, or `k:<key>` where a `key = ".."` template is rendered
//! injectively (each part escaped on its own, joined by `:`, so
//! `"{a}:{b}"` never gives `("x:y", "z")` and `("x", "y:z")` one budget).
//! A GCRA key holds one integer, which
//! Redis keeps inside the object header: `MEMORY USAGE` of
//! `cacheable:{t:acme}:rlg:login:u:42` is 88 bytes, of
//! `cacheable:{t:acme}:rlg:my_app/handlers/login:u:user-1234567` (the
//! `#[rate_limit]` default name) 104 bytes (Redis 7.0, `benches/rate_limit.rs`).
//!
//! # When Redis fails
//!
//! [`OnError`] decides: an in-process limiter (default), allow, or deny; each
//! outcome is counted in [`RateLimitStats`]. Calls go through a circuit
//! breaker and the cache's operation timeout, so a dead Redis costs
//! microseconds per decision, not a timeout; the breaker probes with a
//! background `PING`, so no call waits for a probe.
//!
//! The in-process fallback is conservative. Each process runs the same
//! algorithm on its share of the points, `points / expected instances`
//! (floored; [`RateLimiter::set_expected_instances`], default
//! [`DEFAULT_EXPECTED_INSTANCES`]), and a key starts from the fewer of that
//! share and the points Redis last reported left for it (every Redis answer
//! below the share is mirrored locally), never from a full budget. A
//! decision that timed out may have run in Redis; it is charged locally like
//! any other call. **The bound while Redis is unreachable**: `N` processes
//! together admit at most `N × share` points per key per `duration`, on top
//! of what Redis admitted in that window: at most `2 × points` while `N` is at
//! most the expected instances, and nothing more for a key that Redis last
//! reported exhausted to each process. `tests/rate_limit_faults.rs` checks it
//! with four instances and Redis stopped mid-run, for every algorithm.
//!
//! # Unidentified callers
//!
//! A `#[rate_limit]` call limited by user or IP with neither known is refused
//! (admitted with `on_error = "allow"`), counted in
//! [`RateLimitStats::unidentified`] and logged once per function, instead of
//! sharing one silent budget among all such callers. `by = "global"` is the
//! explicit shared budget.
//!
//! # Denial cache
//!
//! A denial is remembered in the process until its retry time: a flood from
//! one identity is answered locally and stops reaching Redis. Only time
//! refills a budget, so the cached answer is the one Redis would give.
//!
//! # Layout
//!
//! The limiter owns its state and knows the cache only by what the cache
//! hands it when it builds it (`RateLimiter::new`): the store, the key
//! prefix and the operation timeout. The cache builder creates one
//! [`RateLimiter`] per cache; [`Cache::rate_limiter`](crate::Cache::rate_limiter)
//! clones it (one `Arc`). Nothing here names the cache or a concrete store,
//! so the dependency runs one way, `cache` → `rate_limit` → `store`.
//!
//! - `types.rs`: the public types (options, decisions, counters).
//! - `mod.rs`: the per-cache state behind [`RateLimiter`]: the store as a
//!   `ScriptHost` (the object-safe part of the `Store` trait that runs
//!   scripts), the circuit breaker, counters,
//!   the local limiter and the denial cache. A decision asks the store
//!   whether it runs scripts (no I/O): the Redis and cluster stores do, and
//!   the decision is one `Store::eval_script` call under the breaker and the
//!   timeout; the memory store does not, and the local limiter decides with
//!   the whole budget (counted as a decision, not as a failure).
//! - `scripts.rs`: the Lua of each algorithm; stores only run it.
//! - `reply.rs`: the scripts' replies decoded (GCRA's one integer, the
//!   windows' arrays); a reply out of range is an error, never a panic.
//! - `limiters.rs`: the counters per limiter name, bounded at
//!   [`MAX_LIMITERS`] names.
//! - `local.rs`: the bounded in-process limiter; `denials.rs`: the denial
//!   cache.
//! - `private.rs`: what `#[rate_limit]` calls, on a [`RateLimiter`]; the
//!   crate's `private` module turns the macro's cache into one.
//! - `tests.rs`: unit tests.
//!
//! This file is over 400 lines because these docs (the contract: algorithms,
//! keys, the bound while Redis fails) take over a hundred, written next to
//! the limiter that keeps them.
//!
//! # Memory
//!
//! The local limiter is bounded at 64 MiB, the denial cache at 8 MiB,
//! counted in bytes (key, entry, table slot). Eviction takes expired state
//! first, then the least recently used keys that still have budget, never an
//! exhausted one: no amount of sprayed identities gives a denied key a fresh
//! budget. When only exhausted keys are left, a new key is refused and
//! counted in [`RateLimitStats::local_overflow`].

use std::borrow::Cow;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::breaker::{Breaker, Pass};
use crate::error::CacheError;
use crate::key;
use crate::store::ScriptHost;
use crate::tenant;

mod denials;
mod limiters;
mod local;
pub mod private;
mod reply;
mod scripts;
mod types;

use denials::DenialCache;
pub use limiters::{MAX_LIMITERS, OTHER_LIMITER};
use local::{LocalLimiter, Policy};
#[cfg(feature = "axum")] // `Retry-After` and `RateLimit` headers
pub(crate) use types::ceil_secs;
pub use types::{
    Algorithm, Decision, LimiterStats, OnError, RateLimitOptions, RateLimitStats, RateLimited,
    Source,
};

#[derive(Debug, Default)]
struct Counters {
    allowed: AtomicU64,
    denied: AtomicU64,
    denied_cached: AtomicU64,
    errors: AtomicU64,
    fallback_local: AtomicU64,
    fallback_allowed: AtomicU64,
    fallback_denied: AtomicU64,
    unidentified: AtomicU64,
}

/// Per-cache rate-limiter state, owned by this module: the store it asks
/// (seen only as a [`ScriptHost`]), the key prefix and operation timeout,
/// the local limiters, the denial cache, the breaker in front of Redis,
/// counters. The cache builds it once (`RateLimiter::new`) and hands out
/// clones of the [`RateLimiter`] that holds it.
#[derive(Debug)]
struct State {
    /// The cache's store: runs the scripts, or says it runs none (memory).
    store: Arc<dyn ScriptHost>,
    /// The cache's key prefix.
    prefix: String,
    /// The cache's operation timeout, around every script call.
    op_timeout: Duration,
    local: LocalLimiter,
    denials: DenialCache,
    breaker: Breaker,
    counters: Counters,
    /// The same counters by limiter name (bounded).
    limiters: limiters::Limiters,
    log: crate::log_limit::LogLimiter,
    /// The processes expected to share a limit: the local fallback admits
    /// `points / expected_instances` of it.
    expected_instances: AtomicU32,
}

impl State {
    /// The same state, with its local windows, denials and breaker timed by
    /// `clock` (see `crate::clock`; the Redis scripts use server time).
    pub(crate) fn with_clock(mut self, clock: &crate::clock::AnyClock) -> Self {
        self.local = self.local.with_clock(clock.clone());
        self.denials = self.denials.with_clock(clock.clone());
        self.breaker = self.breaker.with_clock(clock.clone());
        self
    }
}

/// The default of [`RateLimiter::set_expected_instances`].
pub const DEFAULT_EXPECTED_INSTANCES: u32 = 4;

impl State {
    fn new(store: Arc<dyn ScriptHost>, prefix: String, op_timeout: Duration) -> Self {
        Self {
            store,
            prefix,
            op_timeout,
            local: LocalLimiter::default(),
            denials: DenialCache::default(),
            breaker: Breaker::new(5, Duration::from_millis(250), Duration::from_millis(500)),
            counters: Counters::default(),
            limiters: limiters::Limiters::default(),
            log: crate::log_limit::LogLimiter::new(Duration::from_secs(10)),
            expected_instances: AtomicU32::new(DEFAULT_EXPECTED_INSTANCES),
        }
    }
}

/// The raw answer of an algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub allowed: bool,
    pub remaining: u64,
    pub reset_after_us: u64,
    pub retry_after_us: u64,
}

/// The rate limiter of a [`Cache`](crate::Cache) (from
/// [`Cache::rate_limiter`](crate::Cache::rate_limiter)): decisions on the
/// cache's Redis (or, for `Cache::memory()`, in the process). Cheap to
/// clone; every clone shares one state.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    state: Arc<State>,
}

impl RateLimiter {
    /// The limiter of a cache: decisions by `store`'s scripts (in the
    /// process when it runs none), keys under `prefix`, each script call
    /// bounded by `op_timeout`. Built once per cache, by its builder.
    pub(crate) fn new(
        store: Arc<dyn ScriptHost>,
        prefix: String,
        op_timeout: Duration,
        clock: &crate::clock::AnyClock,
    ) -> Self {
        Self {
            state: Arc::new(State::new(store, prefix, op_timeout).with_clock(clock)),
        }
    }

    /// The Redis key of `key` under `opts` (tenant, algorithm).
    pub fn redis_key(&self, key: &str, opts: &RateLimitOptions) -> String {
        // The one escape of every key part (`key::escape_into`): no `{`, `}`
        // or `:` of a caller can move the hash tag or split a part.
        let mut escaped = String::with_capacity(key.len());
        key::escape_into(&mut escaped, key);
        self.redis_key_raw(&escaped, opts)
    }

    /// The Redis key of an already escaped key part.
    pub(crate) fn redis_key_raw(&self, escaped: &str, opts: &RateLimitOptions) -> String {
        let tenant = if opts.global {
            None
        } else {
            opts.tenant.clone().or_else(tenant::current)
        };
        // The namespace of `key::namespace`, built in place (one allocation).
        let prefix = self.state.prefix.as_str();
        let mut k = String::with_capacity(
            prefix.len() + tenant.as_ref().map_or(0, |t| t.as_str().len()) + escaped.len() + 16,
        );
        k.push_str(prefix);
        match &tenant {
            Some(t) => {
                k.push_str(":{t:");
                key::escape_into(&mut k, t.as_str());
                k.push_str("}:");
            }
            None => k.push_str(":{g}:"),
        }
        k.push_str(opts.algorithm.tag());
        k.push(':');
        k.push_str(escaped);
        k
    }

    /// Decides whether one call of `opts.cost` under `key` passes.
    ///
    /// Redis failures never surface: `opts.on_error` decides and the outcome
    /// is counted (see [`RateLimitStats`]).
    ///
    /// # Errors
    /// [`CacheError::Config`] when the duration is zero.
    pub async fn check(&self, key: &str, opts: &RateLimitOptions) -> Result<Decision, CacheError> {
        let full = self.redis_key(key, opts);
        self.check_full(&full, opts).await
    }

    pub(crate) async fn check_full(
        &self,
        full: &str,
        opts: &RateLimitOptions,
    ) -> Result<Decision, CacheError> {
        if opts.duration.is_zero() {
            return Err(CacheError::Config("rate limit duration must be > 0".into()));
        }
        let state = &*self.state;
        let policy = opts.policy();
        let (verdict, source, fell_back) = if let Some(v) = state.denials.get(full, &policy) {
            state.counters.denied_cached.fetch_add(1, Relaxed);
            (v, Source::DenialCache, false)
        } else if state.store.runs_scripts() {
            self.redis_or_fallback(full, &policy, opts).await
        } else {
            // A store without server scripts (`Cache::memory()`): the
            // in-process limiter is the limit, with the whole budget.
            (state.local.check(full, &policy), Source::Local, false)
        };
        Ok(self.finish(verdict, source, fell_back, opts))
    }

    /// The decision of `v`, counted in the totals and under the limiter's
    /// name; `fell_back` when Redis failed and `on_error` decided.
    fn finish(
        &self,
        v: Verdict,
        source: Source,
        fell_back: bool,
        opts: &RateLimitOptions,
    ) -> Decision {
        let c = &self.state.counters;
        if v.allowed {
            c.allowed.fetch_add(1, Relaxed);
        } else {
            c.denied.fetch_add(1, Relaxed);
        }
        let site;
        let limiter = match opts.limiter {
            Some(name) => {
                site = Cow::Borrowed(name);
                &site
            }
            None => &opts.name,
        };
        self.state.limiters.count(limiter, |l| {
            if v.allowed {
                l.allowed.fetch_add(1, Relaxed);
            } else {
                l.denied.fetch_add(1, Relaxed);
            }
            if source == Source::DenialCache {
                l.denied_cached.fetch_add(1, Relaxed);
            }
            if fell_back {
                l.fallbacks.fetch_add(1, Relaxed);
            }
        });
        Decision {
            allowed: v.allowed,
            limit: u64::from(opts.points.get()),
            remaining: v.remaining,
            reset_after: Duration::from_micros(v.reset_after_us),
            retry_after: if v.allowed {
                Duration::ZERO
            } else {
                Duration::from_micros(v.retry_after_us.max(1))
            },
            window: opts.duration,
            policy: opts.name.clone(),
            source,
        }
    }

    async fn redis_or_fallback(
        &self,
        full: &str,
        policy: &Policy,
        opts: &RateLimitOptions,
    ) -> (Verdict, Source, bool) {
        let state = &*self.state;
        match self.ask_redis(full, policy).await {
            Ok(v) => {
                state.denials.put(full, policy, &v);
                if opts.on_error == OnError::Local
                    && let Some(share) = state.local_share(policy)
                {
                    state.local.observe(full, &share, v.remaining);
                }
                (v, Source::Redis, false)
            }
            Err(e) => {
                state.counters.errors.fetch_add(1, Relaxed);
                if let Some(suppressed) = state.log.admit(e.kind()) {
                    tracing::warn!(error = %e, suppressed, on_error = ?opts.on_error,
                        "rate limiter could not reach redis; deciding by on_error");
                }
                let (v, source) = fallback(state, full, policy, opts.on_error);
                (v, source, true)
            }
        }
    }

    /// One script call (`Store::eval_script`), under the cache's operation
    /// timeout and the limiter's circuit breaker.
    async fn ask_redis(&self, full: &str, p: &Policy) -> Result<Verdict, CacheError> {
        let state = &*self.state;
        let breaker = &state.breaker;
        match breaker.enter() {
            Pass::Go => {}
            Pass::Refused => return Err(CacheError::CircuitOpen),
            Pass::Probe => {
                let state = Arc::clone(&self.state);
                crate::breaker::spawn_probe(async move {
                    let s = &*state;
                    s.breaker.probe(s.op_timeout, || s.store.ping()).await;
                });
                return Err(CacheError::CircuitOpen);
            }
        }
        let call = async {
            let script = match p.algorithm {
                Algorithm::Gcra => {
                    // One integer each way (see `scripts::GCRA`).
                    let g = reply::Gcra::of(p);
                    let reply = state
                        .store
                        .eval_script(&scripts::GCRA, &[full], &g.args())
                        .await?;
                    return g.decode(&reply);
                }
                Algorithm::SlidingWindow => &*scripts::SLIDING_WINDOW,
                Algorithm::FixedWindow => &*scripts::FIXED_WINDOW,
            };
            let args = [
                i64::from(p.points),
                i64::try_from(p.script_time_us()).unwrap_or(i64::MAX),
                i64::from(p.cost),
            ];
            let reply = state.store.eval_script(script, &[full], &args).await?;
            reply::decode_window(&reply)
        };
        let result = match tokio::time::timeout(state.op_timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(CacheError::Timeout(state.op_timeout)),
        };
        match &result {
            Err(e) if e.is_availability() => breaker.failure(),
            _ => breaker.success(),
        }
        result
    }

    /// Counters since the cache was built, totals and per limiter
    /// ([`RateLimitStats::limiters`]).
    pub fn stats(&self) -> RateLimitStats {
        let c = &self.state.counters;
        RateLimitStats {
            allowed: c.allowed.load(Relaxed),
            denied: c.denied.load(Relaxed),
            denied_cached: c.denied_cached.load(Relaxed),
            errors: c.errors.load(Relaxed),
            fallback_local: c.fallback_local.load(Relaxed),
            fallback_allowed: c.fallback_allowed.load(Relaxed),
            fallback_denied: c.fallback_denied.load(Relaxed),
            local_overflow: self.state.local.overflow.load(Relaxed),
            unidentified: c.unidentified.load(Relaxed),
            limiters: self.state.limiters.snapshot(),
        }
    }

    /// Calls denied so far (the total of [`stats`](Self::stats), without
    /// the per-limiter snapshot): read by the alert evaluator every tick.
    pub(crate) fn denied(&self) -> u64 {
        self.state.counters.denied.load(Relaxed)
    }

    /// Counts a call of the `#[rate_limit]` site `limiter` that had nobody
    /// to limit.
    pub(crate) fn count_unidentified(&self, limiter: &'static str, refused: bool) {
        let c = &self.state.counters;
        c.unidentified.fetch_add(1, Relaxed);
        if refused {
            c.denied.fetch_add(1, Relaxed);
        } else {
            c.allowed.fetch_add(1, Relaxed);
        }
        self.state.limiters.count(&Cow::Borrowed(limiter), |l| {
            l.unidentified.fetch_add(1, Relaxed);
            if refused {
                l.denied.fetch_add(1, Relaxed);
            } else {
                l.allowed.fetch_add(1, Relaxed);
            }
        });
    }

    /// How many processes are expected to share each limit (default
    /// [`DEFAULT_EXPECTED_INSTANCES`]). With `on_error = "local"` and Redis
    /// unreachable, this process admits `points / n` (floored) of a limit;
    /// see [`OnError::Local`] for the bound. `n = 1` lets every process admit
    /// the whole limit on its own.
    pub fn set_expected_instances(&self, n: NonZeroU32) {
        self.state.expected_instances.store(n.get(), Relaxed);
    }

    /// Forgets the denials remembered in this process (they otherwise last
    /// until their retry time).
    pub fn clear_denial_cache(&self) {
        self.state.denials.clear();
    }
}

impl State {
    /// The policy of the local fallback: this process's share of the points,
    /// or `None` when the share is below one point.
    fn local_share(&self, p: &Policy) -> Option<Policy> {
        let n = self.expected_instances.load(Relaxed).max(1);
        let points = p.points / n;
        (points > 0).then_some(Policy { points, ..*p })
    }
}

fn fallback(state: &State, full: &str, p: &Policy, on_error: OnError) -> (Verdict, Source) {
    let c = &state.counters;
    match on_error {
        OnError::Local => {
            c.fallback_local.fetch_add(1, Relaxed);
            let v = match state.local_share(p) {
                Some(share) => state.local.check(full, &share),
                // A share below one point: nothing is admitted locally.
                None => Verdict {
                    allowed: false,
                    remaining: 0,
                    reset_after_us: 1_000_000,
                    retry_after_us: 1_000_000,
                },
            };
            (v, Source::Local)
        }
        OnError::Allow => {
            c.fallback_allowed.fetch_add(1, Relaxed);
            let v = Verdict {
                allowed: true,
                remaining: u64::from(p.points.saturating_sub(p.cost)),
                reset_after_us: 0,
                retry_after_us: 0,
            };
            (v, Source::FailOpen)
        }
        OnError::Deny => {
            c.fallback_denied.fetch_add(1, Relaxed);
            // Clients are told to come back after a second: Redis may be back.
            let v = Verdict {
                allowed: false,
                remaining: 0,
                reset_after_us: 1_000_000,
                retry_after_us: 1_000_000,
            };
            (v, Source::FailClosed)
        }
    }
}

#[cfg(test)]
mod tests;
