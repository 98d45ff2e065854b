//! Support tooling: which Redis keys a call uses, and the key layout.
//!
//! Two ways to find the keys behind a value:
//!
//! - [`Cache::explain_key`](crate::Cache::explain_key) for the service API
//!   (`get`, `set`, `delete`, `get_or_compute`): the entry key and version
//!   keys of a key under [`CacheOptions`](crate::CacheOptions), computed
//!   without touching the store.
//! - [`capture_keys`] for `#[cacheable]` call sites, whose keys hash the
//!   call's identity and arguments: run the call inside it and get the
//!   [`KeyInfo`] of every cached call it made (nested ones included).
//!
//! ```
//! # use cacheable_runtime as cacheable;
//! use cacheable::{Cache, CacheOptions, debug};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let cache = Cache::memory();
//! let opts = CacheOptions::new().tenant("acme").tags(["users"]);
//! let info = cache.explain_key("users.stats", &opts).unwrap();
//! assert_eq!(info.entry, "cacheable:{t:acme}:k:users.stats");
//!
//! let (value, keys) = debug::capture_keys(async {
//!     cache.get_or_compute("users.stats", &opts, || async { Ok::<_, ()>(42) }).await
//! })
//! .await;
//! assert_eq!(value, Ok(42));
//! assert_eq!(keys[0].entry, info.entry);
//! assert_eq!(keys[0].version_keys, info.version_keys);
//! # }
//! ```
//!
//! Then `EXISTS`, `PTTL`, `GET` or `MEMORY USAGE` on those keys in
//! `redis-cli`. A `capture_keys` that runs costs each cached call inside it a
//! few allocations; outside one, a cached call pays one relaxed atomic load.
//! The capture follows the future it wraps, not tasks it spawns (as the
//! tenant context does). A disabled cache computes no key and records none.
//!
//! # Key layout
//!
//! Every key a cache writes, at key schema [`SCHEMA`](crate::SCHEMA) 2.
//! `<ns>` is the namespace of an entry: `{prefix}:{t:<tenant>}` in a tenant,
//! `{prefix}:{g}` for `global` entries and calls outside any tenant.
//!
//! ```text
//! <ns>:e:<function>:<version>:h<hash>        entry of a #[cacheable] call (default key)
//! <ns>:e:<function>:<version>:t<identity>:<key>
//!                                            entry of a #[cacheable(key = "..")] call
//! <ns>:k:<key>                               entry of the service API (cache.set, get_or_compute)
//! <ns>:v:g                                   the tenant's generation (delete_by_tenant)
//! <ns>:v:t:<tag>                             a tag's version in the namespace (delete_by_tags)
//! {prefix}:{a}:v:t:<tag>                     a tag's version across tenants (all_tenants)
//! <ns>:v:k:<key>                             a service-API key's version (cache.delete)
//! <entry>:l:<16 hex>                         a stampede lease on an entry (seconds long)
//! {prefix}:{t:<tenant>}:q:<window>           a tenant's written bytes (tenant_quota_bytes)
//! {prefix}:{t:<tenant>}:rl<a>:<name>:<who>   a rate limit; <a> = g (GCRA), s (sliding
//!                                            window), f (fixed window); {g} outside a tenant
//! ```
//!
//! `<tenant>`, `<key>`, `<tag>` and `<function>` are escaped: `[A-Za-z0-9_.-]`
//! stay, every other byte becomes `%XX` (so `acme:eu` is `acme%3Aeu`).
//! `<hash>` is 32 hex digits (xxh3-128 of the site's identity and its
//! arguments), `<identity>` 16.
//!
//! **What you may rely on**, in this major version:
//!
//! - **Prefix scoping.** Every key starts with `{prefix}:{` (the builder's
//!   `prefix`, default `cacheable`, then a hash tag).
//!   [`Cache::clear`](crate::Cache::clear) deletes exactly the keys matching `{prefix}:{*`, and a Redis ACL user
//!   whose key pattern is `~{prefix}:*` can use every key the cache needs.
//! - **Tenant hash tags.** All keys of a tenant carry `{t:<escaped tenant>}`,
//!   so they share one Redis Cluster slot, and `SCAN MATCH
//!   {prefix}:{t:acme}:*` lists one tenant's keys (escape `[`, `?`, `*` in
//!   the pattern as usual; the escape never produces them).
//! - **Entry vs. version keys.** Entries are `:e:` or `:k:` keys, versions
//!   `:v:` keys: deleting entries is always safe (a miss); deleting or
//!   editing a version key by hand is also safe (a missing counter matches
//!   nothing, so its entries read as misses), never a stale read.
//!
//! **What may change** with the schema byte ([`SCHEMA`](crate::SCHEMA), in
//! every stored envelope): the parts after the namespace, the hash function
//! and the escape. A change bumps the schema and the CHANGELOG says so; a
//! process of the new schema then reads the old keys as misses, never as
//! values. Lease, quota and rate-limit keys are internal and may change in
//! any release (they are short-lived).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use crate::tenant::TenantId;

/// The Redis keys of one cached call (or of one service-API key).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct KeyInfo {
    /// The function: its `name = ".."` or `module::fn`, or `cache.get`,
    /// `cache.set`, `cache.get_or_compute`, `cache.explain_key` for the
    /// service API.
    pub function: String,
    /// The tenant of the call; `None` for the global space.
    pub tenant: Option<String>,
    /// The entry's key: where the value lives (`GET` it to see the envelope).
    pub entry: String,
    /// The version keys the entry depends on, in the order they are read:
    /// a service-API key's own version, the tenant generation, the tags in
    /// the tenant, then across tenants. A global untagged entry has none.
    pub version_keys: Vec<String>,
}

impl KeyInfo {
    pub(crate) fn new(keys: &[String], function: &str, tenant: Option<&TenantId>) -> Self {
        Self {
            function: function.to_owned(),
            tenant: tenant.map(|t| t.as_str().to_owned()),
            entry: keys.first().cloned().unwrap_or_default(),
            version_keys: keys.get(1..).unwrap_or_default().to_vec(),
        }
    }
}

tokio::task_local! {
    static CAPTURE: Arc<Mutex<Vec<KeyInfo>>>;
}

/// Captures running now, in any task: while zero, [`record`] is one load.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);

/// Runs `fut` and returns its output with the keys of every cached call it
/// made, in call order: `#[cacheable]` calls (nested ones too) and the
/// service API's `get`, `set` and `get_or_compute`. Calls made by tasks
/// that `fut` spawns are not seen. See the [module docs](self).
pub async fn capture_keys<F: Future>(fut: F) -> (F::Output, Vec<KeyInfo>) {
    struct Active;
    impl Drop for Active {
        fn drop(&mut self) {
            ACTIVE.fetch_sub(1, Relaxed);
        }
    }
    let keys = Arc::new(Mutex::new(Vec::new()));
    ACTIVE.fetch_add(1, Relaxed);
    let active = Active;
    let out = CAPTURE.scope(Arc::clone(&keys), fut).await;
    drop(active);
    let keys = std::mem::take(&mut *keys.lock().unwrap_or_else(PoisonError::into_inner));
    (out, keys)
}

/// Whether a capture runs (in any task): calls then build every key to
/// record it.
pub(crate) fn capturing() -> bool {
    ACTIVE.load(Relaxed) != 0
}

/// Records the keys of a call in the running capture, if any.
pub(crate) fn record(keys: &[String], function: &str, tenant: Option<&TenantId>) {
    if ACTIVE.load(Relaxed) == 0 {
        return;
    }
    let _ = CAPTURE.try_with(|c| {
        c.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(KeyInfo::new(keys, function, tenant));
    });
}
