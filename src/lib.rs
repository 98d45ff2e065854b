#![doc = include_str!("../README.md")]

#[doc(inline)]
pub use cacheable_macros::{cache_evict, cacheable, rate_limit};
/// Carries the tenant and user into a future given to `tokio::spawn`:
/// `tokio::spawn(fut.in_current_context())`. Also at `cacheable::context::WithContext`.
pub use cacheable_runtime::context::WithContext;

// The public API, listed by name (a glob would make every runtime item
// public by accident).
pub use cacheable_runtime::{Alert, AlertEvent, AlertState, Latency, MemoryReport, RouteStats};
pub use cacheable_runtime::{
    Algorithm, BreakerState, Cache, CacheBuilder, CacheError, CacheOptions, Decision,
    FunctionStats, HashError, Health, KeyHasher, LimiterStats, MAX_TTL, OnError, RateLimitOptions,
    RateLimitStats, RateLimited, RateLimiter, Stats, TtlPolicy, global, set_global,
};
pub use cacheable_runtime::{clock, context, debug, events, monitor, rate_limit, tenant};

/// The axum integration: layers, extractors, headers (feature `axum`).
#[cfg(feature = "axum")]
pub use cacheable_runtime::http;

#[doc(hidden)]
pub mod __private {
    pub use cacheable_runtime::private::*;
}
