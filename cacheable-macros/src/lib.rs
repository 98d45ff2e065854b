//! Attribute macros of `cacheable`. Use them through the `cacheable` crate,
//! which re-exports them beside the runtime they call.
//!
//! Layout: [`args`] parses each attribute's arguments, [`input`] the accepted
//! fn shape, [`template`] the `{arg}` templates, [`expand`] generates code,
//! and [`ctxt`] collects every error so that one compile reports them all.
//! Nothing but the entry points below touches `proc_macro::TokenStream`, so
//! everything else is unit-tested on `proc_macro2`.

use proc_macro::TokenStream;

mod args;
mod ctxt;
mod expand;
mod input;
mod rate_limit;
mod template;

/// Caches the result of an async fn (docs below are completed in lib docs).
#[proc_macro_attribute]
pub fn cacheable(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::cacheable(attr.into(), item.into()).into()
}

/// Invalidates tags after an async fn succeeds.
#[proc_macro_attribute]
pub fn cache_evict(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::cache_evict(attr.into(), item.into()).into()
}

/// Rate-limits an async fn (placeholder until the expansion lands).
#[proc_macro_attribute]
pub fn rate_limit(attr: TokenStream, item: TokenStream) -> TokenStream {
    rate_limit::expand(attr.into(), item.into()).into()
}
