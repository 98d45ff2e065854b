//! Cache headers (`Cache-Control`, `Age`, `X-Cache`) from what cached handlers recorded.

use crate::context::ResponseNotes;

/// How the `ContextLayer` turns cache notes into response headers.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CacheHeaderOptions {
    /// Add `X-Cache: hit|miss` (default true).
    pub x_cache: bool,
}

impl Default for CacheHeaderOptions {
    fn default() -> Self {
        Self { x_cache: true }
    }
}

/// Adds the cache headers for `notes` to `headers` (filled in by the HTTP issue).
pub(crate) fn apply(
    _notes: &ResponseNotes,
    _headers: &mut http::HeaderMap,
    _opts: &CacheHeaderOptions,
) {
}
