#![doc = include_str!("../README.md")]

#[doc(inline)]
pub use cacheable_macros::{cache_evict, cacheable, rate_limit};
pub use cacheable_runtime::*;

#[doc(hidden)]
pub mod __private {
    pub use cacheable_runtime::private::*;
}
