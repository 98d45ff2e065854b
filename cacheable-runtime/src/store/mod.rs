//! Stores: where entries and version counters live.
//!
//! One trait, [`Store`], with a Redis implementation and an in-process memory
//! implementation that keeps the same semantics (compare-and-set writes,
//! version counters with expiry, leases). Both pass the same behaviour tests.
//!
//! Server-side scripts of other modules (the rate limiter's) are [`Lua`]
//! values that a store runs with [`Store::eval_script`]; the memory store
//! runs none ([`Store::runs_scripts`] is `false`). [`ScriptHost`] is the
//! object-safe view of that part of a store, for holders that must not know
//! which store they hold.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::error::CacheError;

pub(crate) mod cluster;
pub(crate) mod memory;
pub(crate) mod redis;

pub(crate) use self::redis::Lua;

/// What a write expects to find at the entry key: compare-and-set on the
/// stamp (bytes 1..17 of the stored value) observed before computing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Expect {
    /// Write whatever is there.
    Any,
    /// The key must be absent.
    Absent,
    /// The stored value's bytes 1..17 must equal these (possibly fewer for a
    /// shorter, garbage value).
    Stamp(Vec<u8>),
}

impl Expect {
    /// The expectation that matches `raw` as it was read.
    pub(crate) fn from_read(raw: Option<&[u8]>) -> Self {
        match raw {
            None => Self::Absent,
            Some(raw) => Self::Stamp(stamp_of(raw).to_vec()),
        }
    }

    /// Whether `current` satisfies the expectation.
    pub(crate) fn matches(&self, current: Option<&[u8]>) -> bool {
        match (self, current) {
            (Self::Any, _) | (Self::Absent, None) => true,
            (Self::Stamp(s), Some(cur)) => stamp_of(cur) == s.as_slice(),
            _ => false,
        }
    }
}

/// Bytes 1..17 of a stored value (what the Lua script compares: `string.sub(v, 2, 17)`).
pub(crate) fn stamp_of(raw: &[u8]) -> &[u8] {
    raw.get(1..raw.len().min(17)).unwrap_or(&[])
}

/// One compare-and-set write of an entry.
#[derive(Debug)]
pub(crate) struct Put<'a> {
    pub key: &'a str,
    pub value: &'a [u8],
    pub ttl: Duration,
    pub expect: Expect,
    /// Version keys the entry depends on, and the versions it was computed
    /// under (same order). A version key in the entry's slot that no longer
    /// holds its version (bumped, expired, evicted, garbage) refuses the write;
    /// the others are checked on every read. Existing version keys are kept
    /// alive at least `ttl`; missing ones are never created here.
    pub deps: &'a [String],
    pub versions: &'a [u64],
    /// The tenant's write budget, when `tenant_quota_bytes` is configured.
    pub quota: Option<Quota>,
}

/// A tenant's byte budget: two window counters (current and previous) in
/// the tenant's slot. A write that would take the two over `limit` is
/// refused, so a tenant holds at most about `limit` bytes of entries written
/// in the last window, and never more than `2 × limit` live.
#[derive(Debug, Clone)]
pub(crate) struct Quota {
    /// The current window's counter, then the previous one's.
    pub keys: [String; 2],
    pub limit: u64,
    pub window: Duration,
}

/// The operations the cache needs from a store. Futures are `Send`.
pub(crate) trait Store: Send + Sync + 'static {
    /// `MGET`: values of `keys`, `None` where absent.
    fn mget(
        &self,
        keys: &[String],
    ) -> impl Future<Output = Result<Vec<Option<Vec<u8>>>, CacheError>> + Send;
    /// Compare-and-set write; `Ok(false)` when the expectation failed.
    fn put(&self, put: &Put<'_>) -> impl Future<Output = Result<bool, CacheError>> + Send;
    /// Invalidates: increments every existing version counter. A missing
    /// counter is left missing (nothing can match it); an unreadable one is
    /// deleted. Runs even when Redis is out of memory (`allow-oom`).
    fn bump(&self, keys: &[String]) -> impl Future<Output = Result<(), CacheError>> + Send;
    /// Snapshots version counters before a computation: returns the current
    /// version of every key, first setting a missing or unreadable counter to
    /// `fresh` (which lives `ttl`).
    fn ensure(
        &self,
        keys: &[String],
        fresh: u64,
        ttl: Duration,
    ) -> impl Future<Output = Result<Vec<u64>, CacheError>> + Send;
    /// Deletes every key that starts with `{prefix}:{`; returns how many.
    fn clear(&self, prefix: &str) -> impl Future<Output = Result<u64, CacheError>> + Send;
    /// `SET key token NX PX ttl`: whether the lease was taken.
    fn try_lease(
        &self,
        key: &str,
        token: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, CacheError>> + Send;
    /// Deletes the lease if it still holds `token`.
    fn release(
        &self,
        key: &str,
        token: &str,
    ) -> impl Future<Output = Result<(), CacheError>> + Send;
    /// A round trip, for health checks.
    fn ping(&self) -> impl Future<Output = Result<(), CacheError>> + Send;
    /// The identity of the server process (Redis `run_id`), where one
    /// server holds all the data; `None` for the memory store and a cluster.
    fn server_id(&self) -> impl Future<Output = Result<Option<String>, CacheError>> + Send;
    /// Bytes used by the store, when it can tell.
    fn used_memory(&self) -> impl Future<Output = Result<Option<u64>, CacheError>> + Send;
    /// Whether [`eval_script`](Store::eval_script) runs scripts on a server:
    /// `false` for the memory store, whose callers decide in the process
    /// instead. Known without I/O.
    fn runs_scripts(&self) -> bool;
    /// Runs `script` (`EVALSHA`, `EVAL` on `NOSCRIPT`) with `keys`, all in
    /// one slot, and `args` as decimal integers; the reply is the script's
    /// array of integers. No timeout here: the caller wraps it, as every
    /// store call. The memory store answers [`CacheError::Unsupported`].
    fn eval_script(
        &self,
        script: &Lua,
        keys: &[&str],
        args: &[i64],
    ) -> impl Future<Output = Result<Vec<i64>, CacheError>> + Send;
}

/// A boxed store future (the object-safe form of [`ScriptHost`]).
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The part of a [`Store`] that runs scripts, object safe: a holder (the
/// rate limiter) keeps an `Arc<dyn ScriptHost>` and never learns which store
/// it is. Implemented for [`AnyStore`] (not for each store, so the two
/// traits' methods never meet on one type). A Redis call pays one box for its
/// future (tens of nanoseconds beside a round trip); `runs_scripts` pays none.
pub(crate) trait ScriptHost: Send + Sync + std::fmt::Debug + 'static {
    /// [`Store::runs_scripts`].
    fn runs_scripts(&self) -> bool;
    /// [`Store::eval_script`].
    fn eval_script<'a>(
        &'a self,
        script: &'a Lua,
        keys: &'a [&'a str],
        args: &'a [i64],
    ) -> BoxFuture<'a, Result<Vec<i64>, CacheError>>;
    /// [`Store::ping`], for circuit-breaker probes.
    fn ping(&self) -> BoxFuture<'_, Result<(), CacheError>>;
}

impl ScriptHost for AnyStore {
    fn runs_scripts(&self) -> bool {
        Store::runs_scripts(self)
    }
    fn eval_script<'a>(
        &'a self,
        script: &'a Lua,
        keys: &'a [&'a str],
        args: &'a [i64],
    ) -> BoxFuture<'a, Result<Vec<i64>, CacheError>> {
        Box::pin(Store::eval_script(self, script, keys, args))
    }
    fn ping(&self) -> BoxFuture<'_, Result<(), CacheError>> {
        Box::pin(Store::ping(self))
    }
}

/// A version counter as stored: 1 to 19 decimal digits without a leading
/// zero (what `INCR` can still increment, and what the `ENSURE` script
/// accepts). Anything else, or a missing key, is no version at all: it never
/// matches a recorded version.
pub(crate) fn parse_version(raw: Option<&[u8]>) -> Option<u64> {
    let raw = raw?;
    if raw.is_empty() || raw.len() > 19 || raw[0] == b'0' {
        return None;
    }
    // At most 19 digits: no overflow (u64::MAX has 20). No `str` parse:
    // three of these run on every tagged tenant hit.
    let mut n: u64 = 0;
    for &b in raw {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(b - b'0');
    }
    Some(n)
}

/// The configured store. An enum rather than `dyn Store`: no boxing on the hot path.
#[derive(Debug)]
pub(crate) enum AnyStore {
    Memory(memory::MemoryStore),
    Redis(redis::RedisStore),
    Cluster(std::sync::Arc<cluster::ClusterStore>),
}

impl AnyStore {
    pub(crate) fn backend(&self) -> &'static str {
        match self {
            Self::Memory(_) => "memory",
            Self::Redis(_) => "redis",
            Self::Cluster(_) => "redis-cluster",
        }
    }
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AnyStore::Memory($s) => $e.await,
            AnyStore::Redis($s) => $e.await,
            // Boxed: cluster futures are large and would size every caller's future.
            AnyStore::Cluster($s) => Box::pin($e).await,
        }
    };
}

impl Store for AnyStore {
    async fn mget(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        dispatch!(self, s => s.mget(keys))
    }
    async fn put(&self, put: &Put<'_>) -> Result<bool, CacheError> {
        dispatch!(self, s => s.put(put))
    }
    async fn bump(&self, keys: &[String]) -> Result<(), CacheError> {
        dispatch!(self, s => s.bump(keys))
    }
    async fn ensure(
        &self,
        keys: &[String],
        fresh: u64,
        ttl: Duration,
    ) -> Result<Vec<u64>, CacheError> {
        dispatch!(self, s => s.ensure(keys, fresh, ttl))
    }
    async fn clear(&self, prefix: &str) -> Result<u64, CacheError> {
        dispatch!(self, s => s.clear(prefix))
    }
    async fn try_lease(&self, key: &str, token: &str, ttl: Duration) -> Result<bool, CacheError> {
        dispatch!(self, s => s.try_lease(key, token, ttl))
    }
    async fn release(&self, key: &str, token: &str) -> Result<(), CacheError> {
        dispatch!(self, s => s.release(key, token))
    }
    async fn ping(&self) -> Result<(), CacheError> {
        dispatch!(self, s => s.ping())
    }
    async fn server_id(&self) -> Result<Option<String>, CacheError> {
        dispatch!(self, s => s.server_id())
    }
    async fn used_memory(&self) -> Result<Option<u64>, CacheError> {
        dispatch!(self, s => s.used_memory())
    }
    fn runs_scripts(&self) -> bool {
        match self {
            Self::Memory(s) => s.runs_scripts(),
            Self::Redis(s) => s.runs_scripts(),
            Self::Cluster(s) => s.runs_scripts(),
        }
    }
    async fn eval_script(
        &self,
        script: &Lua,
        keys: &[&str],
        args: &[i64],
    ) -> Result<Vec<i64>, CacheError> {
        dispatch!(self, s => s.eval_script(script, keys, args))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// The limiter's view of `Cache::memory()`'s store: no server scripts,
    /// said without I/O, and a script call that is refused with a typed
    /// error, never run or faked.
    #[tokio::test]
    async fn the_memory_store_runs_no_scripts() {
        let store: Arc<dyn ScriptHost> = Arc::new(AnyStore::Memory(memory::MemoryStore::new(
            memory::DEFAULT_CAPACITY,
        )));
        assert!(!store.runs_scripts());
        let script = Lua::new("return {1, 2, 3, 4}");
        let err = store
            .eval_script(&script, &["k"], &[1, 2, 3])
            .await
            .unwrap_err();
        assert!(matches!(err, CacheError::Unsupported(_)), "{err:?}");
        assert!(!err.is_availability(), "not a store failure: {err:?}");
        store.ping().await.unwrap();
    }
}
