//! Attribute macros of `cacheable`. Use them through the `cacheable` crate.

use proc_macro::TokenStream;

// Shared by every attribute (the `rate_limit` module reuses them).
#[allow(dead_code)] // until the expansions land
mod ctxt;
#[allow(dead_code)]
mod input;
mod rate_limit;
#[allow(dead_code)]
mod template;

/// Caches the result of an async fn (placeholder until the expansion lands).
#[proc_macro_attribute]
pub fn cacheable(_attr: TokenStream, item: TokenStream) -> TokenStream {
    item
}

/// Invalidates tags after an async fn succeeds (placeholder until the expansion lands).
#[proc_macro_attribute]
pub fn cache_evict(_attr: TokenStream, item: TokenStream) -> TokenStream {
    item
}

/// Rate-limits an async fn (placeholder until the expansion lands).
#[proc_macro_attribute]
pub fn rate_limit(attr: TokenStream, item: TokenStream) -> TokenStream {
    rate_limit::expand(attr.into(), item.into()).into()
}
