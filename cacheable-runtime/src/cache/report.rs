//! What a cache says about itself beyond `stats` and `health`: the keys of a
//! service-API call ([`Cache::explain_key`], for `debug`), where its memory
//! goes ([`Cache::memory_report`]) and the alerts firing now
//! ([`Cache::alerts`]). The work is done by `debug` and `monitor`, which
//! know nothing of `Cache`; these methods hand them the cache's parts.

use super::Cache;
use crate::debug::KeyInfo;
use crate::error::CacheError;
use crate::monitor::{self, AlertEvent, MemoryReport};
use crate::options::CacheOptions;

impl Cache {
    /// The keys a service-API call (`get`, `set`, `delete`,
    /// `get_or_compute`) with `key` and `opts` uses now: in the options'
    /// tenant, else the current one. Computed only; the store is not read.
    /// See the [`debug`](crate::debug) module.
    ///
    /// # Errors
    /// [`CacheError::NoTenant`] under `require_tenant` with no tenant, as
    /// the call itself would.
    pub fn explain_key(&self, key: &str, opts: &CacheOptions) -> Result<KeyInfo, CacheError> {
        let (tenant, _, keys) = self.user_keys(key, opts)?;
        Ok(KeyInfo::new(&keys, "cache.explain_key", tenant.as_ref()))
    }

    /// Where this cache's memory goes: Redis `used_memory`, `maxmemory` and
    /// evictions (per master on a cluster), this cache's keys under its
    /// prefix and the top tenants by bytes (bounded sampling, never
    /// `KEYS`), the local tier and the process RSS. See
    /// [`MemoryReport`]; each field's cost is in the `monitor::memory` docs.
    ///
    /// A server that does not answer (within `op_timeout` per command)
    /// leaves its fields `None`; the report itself never fails.
    pub async fn memory_report(&self) -> MemoryReport {
        let inner = self.inner();
        // The local tier's weigher total counts each entry at least
        // `local_cache_bytes / max_entries`; 0 without a local tier.
        let local_bytes = inner.local_bytes();
        monitor::memory::report(&inner.store, &inner.prefix, inner.op_timeout, local_bytes).await
    }

    /// The alerts firing now (see `CacheBuilder::alert`); empty without alerts.
    pub fn alerts(&self) -> Vec<AlertEvent> {
        self.inner()
            .alerts()
            .map(|a| a.firing())
            .unwrap_or_default()
    }
}
