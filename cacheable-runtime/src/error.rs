//! The runtime's error type.

use std::time::Duration;

/// Everything that can go wrong inside the cache.
///
/// A `CacheError` never reaches the caller of a `#[cacheable]` function: the
/// function runs and its result is returned (guarantee 3). The service API
/// (`Cache::get`, `Cache::set`, …) returns it so that direct users can decide.
///
/// `Display` and `Debug` never contain cached values or secrets (URL passwords
/// are masked before they get here).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The store could not be reached or the connection broke.
    #[error("cache connection failed: {0}")]
    Connection(String),
    /// The store did not answer within the operation timeout.
    #[error("cache operation timed out after {0:?}")]
    Timeout(Duration),
    /// The circuit breaker is open: the store failed repeatedly and is not asked
    /// again until a probe succeeds.
    #[error("cache circuit breaker is open")]
    CircuitOpen,
    /// A value could not be serialized, or a stored value could not be decoded
    /// (garbage bytes, a changed type without a `version` bump).
    #[error("cache value codec error: {0}")]
    Codec(String),
    /// The value was not cached because it would not read back as written
    /// (guarantee 10): a NaN or infinite float, or `Some` of a value written as
    /// `null` such as `Some(None)`. The call still returns the value.
    #[error("value not cached, it would not read back as written: {0}")]
    Lossy(&'static str),
    /// The tenant's stored bytes would exceed its quota.
    #[error("tenant is over its cache quota of {limit} bytes")]
    Quota {
        /// The configured quota in bytes.
        limit: u64,
    },
    /// The configuration is invalid (returned by `CacheBuilder::build` only).
    #[error("invalid cache configuration: {0}")]
    Config(String),
    /// The store answered with an error or an unexpected reply.
    #[error("cache store error: {0}")]
    Store(String),
    /// An invalidation of this process has not reached the store yet (it
    /// failed and is retried in the background): until it lands, this
    /// process serves no cached value, so that it never serves one the
    /// invalidation should have removed.
    #[error("an invalidation is pending; no cached value is served until it reaches the store")]
    InvalidationPending,
    /// A `global` value (or one outside any tenant) was computed from
    /// tenant-scoped cached calls: it is not stored, so that one tenant's data
    /// never reaches another through the shared entry.
    #[error("a global value computed from tenant-scoped cached calls is not cached")]
    TenantDependency,
    /// The operation needs a capability this store does not have.
    #[error("not supported by this store: {0}")]
    Unsupported(&'static str),
    /// A tenant-scoped (not `global`) call ran outside any tenant scope on a
    /// cache built with `require_tenant()`. Usually a future given to
    /// `tokio::spawn` without `.in_current_context()`: task-locals are not
    /// inherited.
    #[error(
        "no tenant in the current context for a non-global cache call (require_tenant is set); \
         wrap spawned futures with `.in_current_context()` or `tenant::scope`"
    )]
    NoTenant,
}

impl CacheError {
    /// A short, stable name of the error kind, used in logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Connection(_) => "connection",
            Self::Timeout(_) => "timeout",
            Self::CircuitOpen => "circuit_open",
            Self::Codec(_) => "codec",
            Self::Lossy(_) => "lossy",
            Self::Quota { .. } => "quota",
            Self::Config(_) => "config",
            Self::Store(_) => "store",
            Self::InvalidationPending => "invalidation_pending",
            Self::TenantDependency => "tenant_dependency",
            Self::Unsupported(_) => "unsupported",
            Self::NoTenant => "no_tenant",
        }
    }

    /// A codec error from serde_json, reduced to its category and position.
    ///
    /// serde_json's messages quote the input (`invalid type: string
    /// "secret", expected u64`), and codec errors are logged and displayed:
    /// a cached value must never reach either. The category and position are
    /// enough to tell a changed type (bump `version`) from garbage.
    pub(crate) fn codec(e: &serde_json::Error) -> Self {
        use serde_json::error::Category;
        let what = match e.classify() {
            Category::Io => "i/o error",
            Category::Syntax => "syntax error",
            Category::Data => "data error (the value and the type do not match)",
            Category::Eof => "unexpected end of input",
        };
        if e.line() == 0 {
            Self::Codec(what.to_owned())
        } else {
            Self::Codec(format!("{what} at line {} column {}", e.line(), e.column()))
        }
    }

    /// Whether this error says the store is unhealthy (it feeds the breaker).
    pub(crate) fn is_availability(&self) -> bool {
        matches!(self, Self::Connection(_) | Self::Timeout(_))
    }
}

impl From<redis::RedisError> for CacheError {
    fn from(e: redis::RedisError) -> Self {
        if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_timeout()
        {
            Self::Connection(e.to_string())
        } else {
            Self::Store(e.to_string())
        }
    }
}

impl From<redis::ParsingError> for CacheError {
    fn from(e: redis::ParsingError) -> Self {
        Self::Store(format!("unexpected reply: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::CacheError;

    #[test]
    fn codec_errors_never_quote_the_value() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Session {
            user: u64,
        }
        let cases = [
            serde_json::from_str::<u64>("\"hunter2-secret\"").unwrap_err(),
            serde_json::from_str::<Session>("{\"user\":\"hunter2-secret\"}").unwrap_err(),
            serde_json::from_str::<Session>("{\"hunter2-secret\":1}").unwrap_err(),
            serde_json::from_str::<bool>("hunter2-secret").unwrap_err(),
            serde_json::from_str::<String>("\"hunter2-secret").unwrap_err(),
        ];
        for e in cases {
            // The premise: serde_json's own message may quote the input.
            let raw = e.to_string();
            let err = CacheError::codec(&e);
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains("hunter2"), "{shown} (serde_json: {raw})");
            assert!(shown.contains("line 1 column"), "{shown}");
        }
        let quoted = serde_json::from_str::<u64>("\"hunter2-secret\"").unwrap_err();
        assert!(quoted.to_string().contains("hunter2"), "the premise holds");
    }
}
