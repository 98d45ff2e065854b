#![doc = include_str!("../README.md")]

#[doc(inline)]
pub use cacheable_macros::{cache_evict, cacheable, rate_limit};
/// Carries the tenant and user into a future given to `tokio::spawn`:
/// `tokio::spawn(fut.in_current_context())`. Also at `cacheable::context::WithContext`.
pub use cacheable_runtime::context::WithContext;
pub use cacheable_runtime::*;

#[doc(hidden)]
pub mod __private {
    pub use cacheable_runtime::private::*;
}
