//! The write path: running the body under the dependency collector,
//! the version snapshot before it (steps 2 and 4 of the protocol), and the
//! compare-and-set write of the entry.

use super::*;

impl Cache {
    /// Runs the body under a dependency collector and stores its result with
    /// the versions observed before it started.
    pub(super) async fn compute<A, O, F>(
        &self,
        spec: &Spec,
        miss: Miss,
        ret_tags: Option<&RetTags<'_, O>>,
        body: F,
    ) -> O
    where
        A: Adapter<O>,
        F: Future<Output = O>,
    {
        self.inner.stats.miss(&spec.counters, spec.name);
        let versions = match self.snapshot(spec, &miss).await {
            Ok(v) => Some(v),
            Err(e) => {
                self.report(Some(&spec.counters), "snapshot", &e);
                None
            }
        };
        let collector = Arc::new(Mutex::new(Collected::default()));
        // On the cache's clock: the compute time is stored with the value
        // (XFetch scales by it) and the write guard runs from the snapshot.
        let clock = &self.inner.clock;
        let started = clock.now();
        let out = DEPS.scope(Arc::clone(&collector), body).await;
        let elapsed = clock.now().saturating_duration_since(started);
        self.inner
            .stats
            .computed(&spec.counters, spec.name, elapsed);
        let collected =
            std::mem::take(&mut *collector.lock().unwrap_or_else(PoisonError::into_inner));
        note_cache(
            spec.private,
            false,
            u64::try_from(spec.ttl.as_millis()).unwrap_or(u64::MAX),
            0,
        );
        let Some(versions) = versions.filter(|_| !collected.incomplete) else {
            // Without a snapshot, or with a nested call whose dependencies
            // are unknown (it ran uncached), the value cannot be checked
            // later: it is not stored, and neither is an enclosing one.
            mark_incomplete();
            return out;
        };
        let dep_keys = spec.dep_keys();
        let (dep_versions, epochs) = versions.split_at(dep_keys.len().min(versions.len()));
        let mut deps = DepSet::default();
        for (k, version) in dep_keys.iter().zip(dep_versions) {
            deps.push(Dep {
                key: k.clone(),
                version: *version,
            });
        }
        for d in collected.deps.into_vec() {
            deps.push(d);
        }
        if let Some(render) = ret_tags {
            let Some(tags) = render(&out) else {
                // No value to name (`Err`, `None`): the result tags cannot
                // be rendered, so nothing is stored, even under `cache_none`.
                report_deps(deps.as_slice());
                return out;
            };
            match self.result_tag_deps(spec, &tags, epochs).await {
                Ok(Some(found)) => {
                    for d in found {
                        deps.push(d);
                    }
                }
                Ok(None) => {
                    tracing::debug!(key = %spec.keys[0], "a tag was invalidated during the computation; its result tags cannot be checked; not stored");
                    mark_incomplete();
                    return out;
                }
                Err(e) => {
                    self.report(Some(&spec.counters), "snapshot", &e);
                    mark_incomplete();
                    return out;
                }
            }
        }
        let deps = deps.into_vec();
        report_deps(&deps);
        if !spec.tenant_scoped && deps.iter().any(|d| key::is_tenant_key(&d.key)) {
            // A `global` value computed from a tenant's cached data would be
            // served to every tenant: not stored (guarantee 1).
            self.report(Some(&spec.counters), "write", &CacheError::TenantDependency);
            return out;
        }
        let since_snapshot = clock.now().saturating_duration_since(miss.at);
        if since_snapshot >= self.inner.write_guard {
            tracing::debug!(key = %spec.keys[0], ?since_snapshot, "computation outlived the write guard; not stored");
            return out;
        }
        if let Some(view) = A::view(&out, spec.cache_none) {
            self.store_value(spec, &view, miss.expect, elapsed, &deps)
                .await;
        }
        out
    }

    /// The versions of result tags, read after the body (step 6): one
    /// `ENSURE` of each namespace's result tag keys with its tag epoch (the
    /// same slot: one script), checked against the epochs snapshotted
    /// before the body. An unmoved epoch means no tag of that namespace was
    /// invalidated since the snapshot, so the versions read now are those
    /// of the snapshot; a moved one (or a counter that expired meanwhile,
    /// recreated at a fresh version) gives `None`: not stored.
    async fn result_tag_deps(
        &self,
        spec: &Spec,
        tags: &[String],
        epochs: &[u64],
    ) -> Result<Option<Vec<Dep>>, CacheError> {
        let &[ns_epoch, all_epoch] = epochs else {
            return Err(CacheError::Store(
                "result tags without an epoch snapshot".into(),
            ));
        };
        let n = spec.keys.len();
        let all = key::all_tenants_namespace(&self.inner.prefix);
        let mut keys = Vec::with_capacity(2 * tags.len() + 2);
        keys.extend(tags.iter().map(|t| key::tag_key(spec.ns(), t)));
        keys.push(spec.keys[n - 2].clone());
        keys.extend(tags.iter().map(|t| key::tag_key(&all, t)));
        keys.push(spec.keys[n - 1].clone());
        let ttl = spec.ttl.saturating_add(spec.stale);
        let versions = self
            .op_in(
                spec,
                self.inner
                    .store
                    .ensure(&keys, envelope::fresh_version(), ttl),
            )
            .await?;
        let t = tags.len();
        if versions.len() != keys.len() {
            return Err(CacheError::Store("version snapshot incomplete".into()));
        }
        if (versions[t] != ns_epoch || versions[2 * t + 1] != all_epoch)
            && !self.inner.unchecked_epochs
        {
            return Ok(None);
        }
        Ok(Some(
            keys.into_iter()
                .zip(versions)
                .enumerate()
                .filter(|(i, _)| *i != t && *i != 2 * t + 1)
                .map(|(_, (key, version))| Dep { key, version })
                .collect(),
        ))
    }

    /// `miss` with every missing or unreadable counter created at a fresh
    /// version (one `ENSURE` round trip, only when one was missing).
    pub(super) async fn complete(&self, spec: &Spec, mut miss: Miss) -> Result<Miss, CacheError> {
        if miss.versions.iter().all(Option::is_some) {
            return Ok(miss);
        }
        let versions = self.snapshot(spec, &miss).await?;
        miss.versions = versions.into_iter().map(Some).collect();
        Ok(miss)
    }

    /// The versions a computation runs under: those the miss read, with
    /// every missing or unreadable counter created at a fresh version first
    /// (one `ENSURE` round trip, only when one was missing).
    pub(super) async fn snapshot(&self, spec: &Spec, miss: &Miss) -> Result<Vec<u64>, CacheError> {
        let missing: Vec<String> = spec.keys[1..]
            .iter()
            .zip(&miss.versions)
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        if missing.is_empty() {
            return Ok(miss.versions.iter().flatten().copied().collect());
        }
        let ttl = spec.ttl.saturating_add(spec.stale);
        let mut created = self
            .op_in(
                spec,
                self.inner
                    .store
                    .ensure(&missing, envelope::fresh_version(), ttl),
            )
            .await?
            .into_iter();
        miss.versions
            .iter()
            .map(|v| {
                v.or_else(|| created.next())
                    .ok_or_else(|| CacheError::Store("version snapshot incomplete".into()))
            })
            .collect()
    }

    pub(super) async fn store_value<T: Serialize + ?Sized>(
        &self,
        spec: &Spec,
        value: &T,
        expect: Expect,
        compute: Duration,
        deps: &[Dep],
    ) {
        let payload = match codec::encode(value) {
            Ok(p) => p,
            Err(e) => return self.report(Some(&spec.counters), "encode", &e),
        };
        let raw = match envelope::encode(
            KIND_VALUE,
            self.inner.clock.unix_ms(),
            spec.ttl,
            compute,
            deps,
            &payload,
        ) {
            Ok(r) => r,
            Err(e) => return self.report(Some(&spec.counters), "encode", &e),
        };
        if self.inner.pending.active() {
            return;
        }
        let dep_keys: Vec<String> = deps.iter().map(|d| d.key.clone()).collect();
        let versions: Vec<u64> = deps.iter().map(|d| d.version).collect();
        let put = Put {
            key: &spec.keys[0],
            value: &raw,
            ttl: spec.ttl.saturating_add(spec.stale),
            expect,
            deps: &dep_keys,
            versions: &versions,
            quota: self.quota_for(spec),
        };
        if let Err(e) = self.op_in(spec, self.inner.store.put(&put)).await {
            self.report(Some(&spec.counters), "write", &e);
        }
    }
}

/// Whether this call runs inside the computation of another cached value.
pub(super) fn collecting() -> bool {
    DEPS.try_with(|_| ()).is_ok()
}

/// Adds `deps` to the computation that encloses this call, if any.
pub(super) fn report_deps(deps: &[Dep]) {
    let _ = DEPS.try_with(|c| {
        let mut c = c.lock().unwrap_or_else(PoisonError::into_inner);
        for d in deps {
            c.deps.push(d.clone());
        }
    });
}

/// Tells the enclosing computation, if any, that a nested cached call ran
/// without the cache: the enclosing value must not be stored.
pub(super) fn mark_incomplete() {
    let _ = DEPS.try_with(|c| c.lock().unwrap_or_else(PoisonError::into_inner).incomplete = true);
}
