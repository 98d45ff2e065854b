//! The public types of rate limiting: what a check is asked
//! ([`RateLimitOptions`], [`Algorithm`], [`OnError`]), what it answers
//! ([`Decision`], [`Source`], [`RateLimited`]) and the counters
//! ([`RateLimitStats`]). The limiter that uses them is `mod.rs`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use super::local::Policy;
use crate::tenant::TenantId;

/// Which algorithm decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Algorithm {
    /// Generic cell rate algorithm: a burst of `points`, refilled at
    /// `points / duration`. O(1) memory per key. The default.
    #[default]
    Gcra,
    /// Exact sliding window: never more than `points` in any `duration`.
    /// Memory grows with `points`: for small limits such as logins.
    SlidingWindow,
    /// Fixed windows aligned on the Unix epoch (UTC): quotas per day or month.
    FixedWindow,
}

impl Algorithm {
    pub(super) fn tag(self) -> &'static str {
        match self {
            Self::Gcra => "rlg",
            Self::SlidingWindow => "rls",
            Self::FixedWindow => "rlf",
        }
    }
}

/// What a decision does when Redis cannot be asked (down, slow, breaker open).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnError {
    /// Decide with an in-process limiter (the default), conservatively: each
    /// process runs the same algorithm with a share of the points
    /// (`points / expected instances`, floored; see
    /// [`RateLimiter::set_expected_instances`](super::RateLimiter::set_expected_instances)),
    /// and a key starts from the fewer of that share and the points Redis
    /// last reported left for it, never from a full budget. A call whose decision timed out (the script
    /// may have run) is charged to that budget like any other.
    ///
    /// The bound while Redis is unreachable: `N` processes together admit at
    /// most `N × share` points per key per `duration` on top of what Redis
    /// admitted, so at most `2 × points` in any window when `N` is at most
    /// the expected instances (and nothing more for a key that Redis last
    /// reported exhausted to every process).
    #[default]
    Local,
    /// Admit every call (fail open).
    Allow,
    /// Refuse every call (fail closed).
    Deny,
}

/// The policy of one check: points per duration, algorithm, cost, fallback.
#[derive(Debug, Clone)]
#[must_use]
pub struct RateLimitOptions {
    pub(super) points: NonZeroU32,
    pub(super) duration: Duration,
    pub(super) algorithm: Algorithm,
    pub(super) cost: u32,
    pub(super) on_error: OnError,
    pub(super) name: Cow<'static, str>,
    pub(super) tenant: Option<TenantId>,
    pub(super) global: bool,
    /// The name counted in [`RateLimitStats::limiters`] when not `name`:
    /// the `#[rate_limit]` site's key name (`module::fn` or `name = ".."`).
    pub(super) limiter: Option<&'static str>,
}

impl RateLimitOptions {
    /// `points` per `duration`, GCRA, cost 1, local fallback, policy name `default`.
    pub fn new(points: NonZeroU32, duration: Duration) -> Self {
        Self {
            points,
            duration,
            algorithm: Algorithm::Gcra,
            cost: 1,
            on_error: OnError::Local,
            name: Cow::Borrowed("default"),
            tenant: None,
            global: false,
            limiter: None,
        }
    }

    /// The algorithm (default [`Algorithm::Gcra`]).
    pub fn algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// The weight of this call (default 1). A cost above `points` is always denied.
    pub fn cost(mut self, cost: NonZeroU32) -> Self {
        self.cost = cost.get();
        self
    }

    /// What happens when Redis cannot be asked (default [`OnError::Local`]).
    pub fn on_error(mut self, on_error: OnError) -> Self {
        self.on_error = on_error;
        self
    }

    /// The policy's name in `RateLimit-Policy` / `RateLimit` headers and
    /// in [`RateLimitStats::limiters`] (default `default`).
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = name.into();
        self
    }

    /// The tenant whose budget this is (default: the current tenant).
    pub fn tenant(mut self, tenant: impl Into<TenantId>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// One budget across all tenants (the key lives outside any tenant).
    pub fn global(mut self) -> Self {
        self.global = true;
        self
    }

    /// Points per window.
    pub fn points(&self) -> u32 {
        self.points.get()
    }

    /// The window.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    pub(super) fn policy(&self) -> Policy {
        Policy {
            points: self.points.get(),
            window: self.duration,
            cost: self.cost,
            algorithm: self.algorithm,
        }
    }
}

/// Who answered a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// The Redis script.
    Redis,
    /// A denial remembered in this process until its retry time.
    DenialCache,
    /// The in-process limiter: the cache is `Cache::memory()`, or Redis failed
    /// and `on_error` is `local`.
    Local,
    /// Redis failed and `on_error` is `allow`.
    FailOpen,
    /// Redis failed and `on_error` is `deny`.
    FailClosed,
}

/// The outcome of one check. `#[non_exhaustive]`: a field may be added
/// without a breaking change.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Decision {
    /// Whether the call is admitted.
    pub allowed: bool,
    /// Points per window.
    pub limit: u64,
    /// Points left after this call (for a call of cost 1).
    pub remaining: u64,
    /// Time until the budget is full again (GCRA, sliding window) or the
    /// window resets (fixed window).
    pub reset_after: Duration,
    /// When denied, the time until a call of the same cost can pass; zero when allowed.
    pub retry_after: Duration,
    /// The window.
    pub window: Duration,
    /// The policy's name.
    pub policy: Cow<'static, str>,
    /// Who answered.
    pub source: Source,
}

impl Decision {
    /// `Ok(self)` when allowed, else the [`RateLimited`] error to return.
    ///
    /// # Errors
    /// When the call is denied.
    pub fn into_result(self) -> Result<Decision, RateLimited> {
        if self.allowed {
            Ok(self)
        } else {
            Err(RateLimited {
                limit: self.limit,
                remaining: self.remaining,
                reset_after: self.reset_after,
                retry_after: self.retry_after,
                window: self.window,
                policy: self.policy.into_owned(),
            })
        }
    }
}

/// A call refused by a rate limit.
///
/// With the feature `axum` it is an `IntoResponse`: `429 Too Many Requests`
/// with `Retry-After`, `RateLimit-Policy`, `RateLimit`, `X-RateLimit-Limit`,
/// `X-RateLimit-Remaining` and `X-RateLimit-Reset` (see `cacheable::http`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimited {
    /// Points per window.
    pub limit: u64,
    /// Points left (fewer than the refused call's cost).
    pub remaining: u64,
    /// Time until the budget is full again (or the window resets).
    pub reset_after: Duration,
    /// Time until a call of the same cost can pass.
    pub retry_after: Duration,
    /// The window.
    pub window: Duration,
    /// The policy's name.
    pub policy: String,
}

impl RateLimited {
    /// `retry_after` in whole seconds, rounded up, at least 1 (`Retry-After`).
    pub fn retry_after_secs(&self) -> u64 {
        ceil_secs(self.retry_after).max(1)
    }
}

pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rate limit `{}` exceeded ({} per {}s); retry in {}s",
            self.policy,
            self.limit,
            ceil_secs(self.window),
            self.retry_after_secs()
        )
    }
}

impl std::error::Error for RateLimited {}

/// Counters of a cache's rate limiter since it was built: totals, and
/// the same per limiter name ([`limiters`](Self::limiters)).
///
/// Serializes (`serde`) as its fields under their names, with `limiters`
/// an object from each limiter's name to its [`LimiterStats`]. New fields
/// may be added.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct RateLimitStats {
    /// Calls admitted (by any source).
    pub allowed: u64,
    /// Calls denied (by any source).
    pub denied: u64,
    /// Denials answered from the denial cache, without Redis.
    pub denied_cached: u64,
    /// Decisions Redis failed to make (error, timeout, breaker open).
    pub errors: u64,
    /// Of those, decided by the in-process limiter (`on_error = local`).
    pub fallback_local: u64,
    /// Of those, admitted (`on_error = allow`).
    pub fallback_allowed: u64,
    /// Of those, denied (`on_error = deny`).
    pub fallback_denied: u64,
    /// New keys the in-process limiter refused because its memory bound was
    /// reached and only exhausted (denied) state was left to evict.
    pub local_overflow: u64,
    /// `#[rate_limit]` calls with no user and no client IP to limit by
    /// (refused unless `on_error = "allow"`).
    pub unidentified: u64,
    /// By limiter name; see [`limiters`](Self::limiters).
    pub(super) limiters: BTreeMap<String, LimiterStats>,
}

impl RateLimitStats {
    /// The counters of each limiter, by name, in name order.
    ///
    /// The name is the `#[rate_limit]` function's `name = ".."`, else its
    /// `module::path::fn_name`; for [`RateLimiter::check`](super::RateLimiter::check)
    /// it is [`RateLimitOptions::name`] (default `default`). At most
    /// [`MAX_LIMITERS`](super::MAX_LIMITERS) names are kept apart; decisions
    /// under later names count under [`OTHER_LIMITER`](super::OTHER_LIMITER).
    pub fn limiters(&self) -> impl Iterator<Item = (&str, &LimiterStats)> {
        self.limiters.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The counters of one limiter, by name (see [`limiters`](Self::limiters)).
    pub fn limiter(&self, name: &str) -> Option<&LimiterStats> {
        self.limiters.get(name)
    }
}

/// The counters of one limiter (see [`RateLimitStats::limiters`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct LimiterStats {
    /// Calls admitted (by any source).
    pub allowed: u64,
    /// Calls denied (by any source).
    pub denied: u64,
    /// Of `denied`, answered from the denial cache, without Redis.
    pub denied_cached: u64,
    /// Decisions Redis failed to make, decided by `on_error` instead
    /// (in-process limiter, allow or deny).
    pub fallbacks: u64,
    /// Calls with no user and no client IP to limit by.
    pub unidentified: u64,
}

impl LimiterStats {
    /// Denied over allowed + denied; 0 when there were no decisions.
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    pub fn denial_rate(&self) -> f64 {
        let total = self.allowed + self.denied;
        if total == 0 {
            0.0
        } else {
            self.denied as f64 / total as f64
        }
    }
}
