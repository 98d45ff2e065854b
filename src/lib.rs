//! Attribute macros for tenant-aware caching and rate limiting on Redis.
//!
//! See the README for an overview.

#[doc(inline)]
pub use cacheable_macros::{cache_evict, cacheable, rate_limit};
pub use cacheable_runtime::*;

#[doc(hidden)]
pub mod __private {
    pub use cacheable_runtime::private::*;
}
