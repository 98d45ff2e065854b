//! Invalidation: `delete`, tags, tenants, `clear`, `#[cache_evict]`; the
//! retry of failed invalidations and the check of the server after a
//! connection error (see `crate::invalidation`).

use super::*;

impl Cache {
    /// Deletes `key`: bumps the key's own version, so the entry, and any value
    /// of this key whose computation was in flight, is never served again.
    ///
    /// # Errors
    /// Store, timeout or breaker errors. A failed delete is retried in the
    /// background until it lands, and until then this process serves nothing
    /// from the store (see the module docs of `invalidation`).
    pub async fn delete(&self, key: &str, opts: &CacheOptions) -> Result<(), CacheError> {
        if self.inner.disabled {
            return Ok(());
        }
        let tenant = self.resolve_tenant(opts.tenant.as_ref(), opts.global)?;
        let ns = key::namespace(&self.inner.prefix, tenant.as_ref());
        self.invalidate(vec![key::user_key_version(&ns, key)], "delete")
            .await
    }

    /// Invalidates every entry carrying one of `tags` in `tenant` (`None`: the
    /// current tenant, or the global space outside any tenant). O(1) per tag.
    ///
    /// # Errors
    /// Store, timeout or breaker errors; the invalidation is then retried as
    /// for [`Cache::delete`].
    pub async fn delete_by_tags(
        &self,
        tags: &[&str],
        tenant: Option<&str>,
    ) -> Result<(), CacheError> {
        if self.inner.disabled {
            return Ok(());
        }
        let tenant = match tenant {
            Some(t) => Some(TenantId::from(t)),
            None => tenant::current(),
        };
        self.invalidate(self.tag_keys(tags, tenant.as_ref()), "tags")
            .await
    }

    /// The version keys of `tags` in `tenant` (`None`: the global space),
    /// and the namespace's tag epoch.
    pub(super) fn tag_keys(&self, tags: &[&str], tenant: Option<&TenantId>) -> Vec<String> {
        let ns = key::namespace(&self.inner.prefix, tenant);
        with_epoch(&ns, tags)
    }

    /// Invalidates every entry carrying one of `tags`, in every tenant. O(1) per tag.
    ///
    /// # Errors
    /// Store, timeout or breaker errors; the invalidation is then retried as
    /// for [`Cache::delete`].
    pub async fn delete_by_tags_all_tenants(&self, tags: &[&str]) -> Result<(), CacheError> {
        if self.inner.disabled {
            return Ok(());
        }
        self.invalidate(self.all_tenant_tag_keys(tags), "tags")
            .await
    }

    pub(super) fn all_tenant_tag_keys(&self, tags: &[&str]) -> Vec<String> {
        let ns = key::all_tenants_namespace(&self.inner.prefix);
        with_epoch(&ns, tags)
    }

    /// Invalidates every entry of `tenant`. O(1).
    ///
    /// # Errors
    /// Store, timeout or breaker errors; the invalidation is then retried as
    /// for [`Cache::delete`].
    pub async fn delete_by_tenant(&self, tenant: &str) -> Result<(), CacheError> {
        if self.inner.disabled {
            return Ok(());
        }
        let ns = key::namespace(&self.inner.prefix, Some(&TenantId::from(tenant)));
        self.invalidate(vec![key::generation_key(&ns)], "tenant")
            .await
    }

    /// Bumps version keys; on failure keeps them for the retry task before
    /// returning the error (see the `invalidation` module).
    pub(super) async fn invalidate(
        &self,
        keys: Vec<String>,
        what: &'static str,
    ) -> Result<(), CacheError> {
        match self.bump_announced(&keys, true).await {
            Ok(()) => {
                self.inner.stats.invalidation(what);
                Ok(())
            }
            Err(e) => {
                self.inner.pending.add(&keys);
                self.retry_pending();
                Err(e)
            }
        }
    }

    /// Starts the task that retries pending invalidations, unless it runs.
    pub(super) fn retry_pending(&self) {
        use std::sync::atomic::Ordering;
        if self.inner.pending.retrying.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to retry on: the next invalidation on one starts it.
            self.inner.pending.retrying.store(false, Ordering::Release);
            return;
        };
        let cache = self.clone();
        runtime.spawn(async move { cache.retry_until_done().await });
    }

    pub(super) async fn retry_until_done(self) {
        const FIRST: Duration = Duration::from_millis(10);
        let inner = &self.inner;
        let mut pause = FIRST;
        loop {
            let work = inner.pending.work();
            if work.is_empty() {
                if inner.pending.stop_retrying() {
                    return;
                }
                continue;
            }
            let landed = if work.clear {
                self.clear_prefix().await.is_ok() && self.announce_all(false).await.is_ok()
            } else {
                self.bump_announced(&work.keys, false).await.is_ok()
            };
            if landed {
                inner.pending.done(&work);
                inner.breaker.success();
                inner.stats.invalidation("retried");
                tracing::info!(
                    keys = work.keys.len(),
                    clear = work.clear,
                    "a failed invalidation landed on retry; cached reads resume"
                );
                pause = FIRST;
            } else {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(250));
            }
        }
    }

    /// Checks that the server is the one this cache last talked to; if it
    /// is another (a restart, a failover), clears this cache's prefix first,
    /// since the new server may hold data from before an invalidation. One
    /// check at a time; concurrent readers wait for it.
    pub(super) async fn check_server(&self) -> Result<(), CacheError> {
        let inner = &self.inner;
        let mut known = inner.server.lock().await;
        if !inner.server.suspect() {
            return Ok(());
        }
        let id = self.op(inner.store.server_id()).await?;
        if let (Some(before), Some(now)) = (known.as_deref(), id.as_deref())
            && before != now
        {
            self.clear_prefix().await?;
            self.local_drop_all();
            inner.stats.invalidation("server_changed");
            tracing::warn!(
                "the Redis server changed (restart or failover): cleared this cache's keys, \
                 which may predate an invalidation"
            );
        }
        *known = id;
        inner.server.trust();
        Ok(())
    }

    /// `SCAN` + `UNLINK` of this cache's prefix, bypassing the breaker. A scan
    /// is many round trips: bounded as a whole, generously (40 operation
    /// timeouts, at least 10 s).
    async fn clear_prefix(&self) -> Result<(), CacheError> {
        let inner = &self.inner;
        let limit = (inner.op_timeout * 40).max(Duration::from_secs(10));
        tokio::time::timeout(limit, inner.store.clear(&inner.prefix))
            .await
            .map_err(|_| CacheError::Timeout(limit))?
            .map(drop)
    }

    /// Invalidations that failed and wait for their retry (version keys; a
    /// pending `clear` counts one). While it is above zero this process
    /// serves nothing from the store.
    pub fn pending_invalidations(&self) -> usize {
        self.inner.pending.len()
    }

    /// Deletes every key under this cache's prefix (`SCAN` + `UNLINK`, never
    /// `FLUSHDB`); other keys in the database are untouched. Bounded by 40
    /// operation timeouts (at least 10 s) as a whole.
    ///
    /// # Errors
    /// Store or breaker errors.
    pub async fn clear(&self) -> Result<(), CacheError> {
        if self.inner.disabled {
            return Ok(());
        }
        let result = if self.inner.breaker.allow() {
            match self.clear_prefix().await {
                Ok(()) => self.announce_all(true).await,
                Err(e) => Err(e),
            }
        } else {
            Err(CacheError::CircuitOpen)
        };
        match result {
            Ok(_) => {
                self.inner.stats.invalidation("clear");
                Ok(())
            }
            Err(e) => {
                // Retried until it lands, like every invalidation.
                self.inner.pending.add_clear();
                self.retry_pending();
                Err(e)
            }
        }
    }

    /// Invalidation after a `#[cache_evict]` call without `strict`: a failed
    /// invalidation is retried, and the call waits for it to land up to
    /// `evict_wait`; past that it returns, and the error is counted and logged
    /// (the retry goes on in the background).
    pub(crate) async fn evict_after_call(&self, tags: &[String], all_tenants: bool) {
        if self.inner.disabled {
            return;
        }
        let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
        let keys = if all_tenants {
            self.all_tenant_tag_keys(&tags)
        } else {
            match self.resolve_tenant(None, false) {
                Ok(tenant) => self.tag_keys(&tags, tenant.as_ref()),
                // `require_tenant` and no tenant: an eviction meant for a
                // tenant must not hit the shared space silently.
                Err(e) => return self.report(None, "evict", &e),
            }
        };
        if let Err(e) = self.invalidate(keys.clone(), "evict").await
            && !self
                .inner
                .pending
                .wait_landed(&keys, self.inner.evict_wait)
                .await
        {
            self.report(None, "evict", &e);
        }
    }
}

/// The version keys of `tags` in `ns`, then the namespace's tag epoch (none
/// for no tags). One `BUMP` increments them together: the epoch shares the
/// tags' slot, so no computation can see a tag's new version with the old
/// epoch (step 6 of the protocol in the module docs of `cache`).
fn with_epoch(ns: &str, tags: &[&str]) -> Vec<String> {
    let mut keys: Vec<String> = tags.iter().map(|t| key::tag_key(ns, t)).collect();
    if !keys.is_empty() {
        keys.push(key::epoch_key(ns));
    }
    keys
}
