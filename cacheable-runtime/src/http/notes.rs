//! [`ResponseNotes`]: what the cached and rate-limited calls of one request
//! decided, collected through the engine's `CallObserver` interface and
//! turned into headers by the `ContextLayer`.

use std::sync::{Arc, Mutex, PoisonError};

use crate::context::{CacheNote, CallObserver, RateLimitNote};

/// What the macros learned while handling a request, for the HTTP layer to turn
/// into response headers (rate-limit headers, `Cache-Control`, `Age`, `X-Cache`).
#[derive(Debug, Default)]
pub struct ResponseNotes {
    inner: Mutex<NotesInner>,
}

#[derive(Debug, Default, Clone)]
struct NotesInner {
    rate_limit: Option<RateLimitNote>,
    cache: Option<CacheNote>,
    /// The response is personal: the request carried credentials, or some
    /// cached call made for it was tenant- or user-scoped. Never reset.
    private: bool,
}

impl ResponseNotes {
    /// Records a rate-limit decision; keeps the one with the fewest points left.
    pub fn record_rate_limit(&self, note: RateLimitNote) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        match &inner.rate_limit {
            Some(old) if old.remaining <= note.remaining => {}
            _ => inner.rate_limit = Some(note),
        }
    }

    /// Records how a cached function was served. The last record wins: the
    /// outermost cached function (the handler) finishes last.
    ///
    /// A private note also makes the response private for good (see
    /// [`is_private`](Self::is_private)): a public outer call whose value was
    /// computed from a tenant's data is still that tenant's response.
    pub fn record_cache(&self, note: CacheNote) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.private |= note.private;
        inner.cache = Some(note);
    }

    /// Marks the response as personal (the request carried `Authorization`,
    /// a cookie or an identity): it is never made `public`.
    pub fn mark_private(&self) {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .private = true;
    }

    /// Whether the response is personal: [`mark_private`](Self::mark_private)
    /// was called, or any cached call recorded a private note.
    pub fn is_private(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .private
    }

    /// The recorded rate-limit decision.
    pub fn rate_limit(&self) -> Option<RateLimitNote> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .rate_limit
            .clone()
    }

    /// The recorded cache outcome.
    pub fn cache(&self) -> Option<CacheNote> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .cache
            .clone()
    }
}

/// The `ContextLayer`'s notes of a request, put in its extensions: an inner
/// `MetricsLayer` reads the cache outcome from them rather than observing
/// the handler's calls through a context and an observer of its own.
#[derive(Clone, Debug)]
pub(crate) struct RequestNotes(pub(crate) Arc<ResponseNotes>);

impl CallObserver for ResponseNotes {
    fn record_rate_limit(&self, note: RateLimitNote) {
        ResponseNotes::record_rate_limit(self, note);
    }

    fn record_cache(&self, note: CacheNote) {
        ResponseNotes::record_cache(self, note);
    }
}
