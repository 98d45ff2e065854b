//! Runtime of [`cacheable`](https://docs.rs/cacheable): the cache service,
//! Redis and memory stores, tenant context, invalidation and statistics.
//!
//! Users depend on the `cacheable` facade, which re-exports this crate and the
//! attribute macros.

mod breaker;
mod cache;
pub mod clock;
mod codec;
pub mod context;
pub mod debug;
mod envelope;
mod error;
pub mod events;
mod flight;
#[cfg(feature = "axum")]
pub mod http;
mod identity;
mod invalidation;
mod key;
mod local;
mod log_limit;
pub mod monitor;
mod options;
#[doc(hidden)]
pub mod private;
pub mod rate_limit;
mod serde_ms;
mod site;
mod stats;
mod store;
pub mod tenant;
mod tenant_id;

pub use breaker::BreakerState;
pub use cache::{Cache, CacheBuilder, Health, KeySource, global, set_global};
pub use error::CacheError;
pub use key::{HashError, KeyHasher, SCHEMA};
pub use monitor::{Alert, AlertEvent, AlertState, Latency, MemoryReport, RouteStats};
pub use options::{CacheOptions, MAX_TTL, TtlPolicy};
pub use rate_limit::{
    Algorithm, Decision, LimiterStats, OnError, RateLimitOptions, RateLimitStats, RateLimited,
    RateLimiter,
};
pub use stats::{FunctionStats, Stats};
