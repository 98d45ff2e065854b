//! The process-wide cache that `#[cacheable]` functions use when they name
//! none (`set_global`, `global`), and the warning when there is none.

use super::*;

static GLOBAL: RwLock<Option<Cache>> = RwLock::new(None);

/// Sets the cache that `#[cacheable]` functions use when they name none.
pub fn set_global(cache: Cache) {
    *GLOBAL.write().unwrap_or_else(PoisonError::into_inner) = Some(cache);
}

/// The global cache, if one was set.
pub fn global() -> Option<Cache> {
    GLOBAL
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// Logs, at most once a minute, that a cached function ran without a cache.
pub(crate) fn warn_no_cache(site: &str) {
    static LOG: std::sync::LazyLock<LogLimiter> =
        std::sync::LazyLock::new(|| LogLimiter::new(Duration::from_secs(60)));
    if let Some(suppressed) = LOG.admit("no_cache") {
        tracing::warn!(
            site,
            suppressed,
            "no cache configured (call cacheable::set_global or pass `cache = ..`); running uncached"
        );
    }
}
