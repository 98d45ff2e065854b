//! What a call resolves to (`Spec`): its tenant, its keys (entry and version
//! keys), TTL and stale window, from a call site or from service-API options.

use super::*;

impl Cache {
    // ----- keys -----

    /// The tenant of a call: the explicit one, else the current one, none for
    /// `global`. Under `require_tenant`, a non-global call without a tenant is
    /// [`CacheError::NoTenant`] rather than the shared no-tenant space.
    pub(super) fn resolve_tenant(
        &self,
        explicit: Option<&TenantId>,
        global: bool,
    ) -> Result<Option<TenantId>, CacheError> {
        if global {
            return Ok(None);
        }
        match explicit.cloned().or_else(tenant::current) {
            None if self.inner.require_tenant => Err(CacheError::NoTenant),
            t => Ok(t),
        }
    }

    /// The version keys an entry depends on: its tenant's generation (the
    /// global space has none: nothing invalidates it by tenant) and its tags
    /// in the tenant and across tenants. A global, untagged entry depends on
    /// nothing and is read with a single `GET`.
    pub(super) fn dep_keys_into(
        &self,
        keys: &mut Vec<String>,
        ns: &str,
        tags: &[String],
        tenant_scoped: bool,
    ) {
        if tenant_scoped {
            keys.push(key::generation_key(ns));
        }
        // Each tag is escaped once: its all-tenants key copies it from its
        // key in `ns`.
        let first = keys.len();
        for t in tags {
            keys.push(key::tag_key(ns, t));
        }
        for i in first..first + tags.len() {
            let all = key::all_tenants_tag_key(&self.inner.prefix, ns, &keys[i]);
            keys.push(all);
        }
    }

    /// The tenant's byte budget for a write of this entry, if configured.
    pub(super) fn quota_for(&self, spec: &Spec) -> Option<Quota> {
        let limit = self.inner.tenant_quota.filter(|_| spec.tenant_scoped)?;
        let ns = &spec.ns;
        let window = self.inner.default_ttl;
        let n = now_ms() / u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        Some(Quota {
            keys: [
                key::quota_key(ns, n),
                key::quota_key(ns, n.saturating_sub(1)),
            ],
            limit,
            window,
        })
    }

    pub(super) fn policy_ttl(&self, name: &str, seed: &str) -> Option<(Duration, Duration)> {
        let p = self.inner.policies.get(name)?;
        Some((
            p.jittered(xxhash_rust::xxh3::xxh3_64(seed.as_bytes())),
            p.stale.unwrap_or_default(),
        ))
    }

    pub(super) fn unknown_policy(&self, name: &str) {
        self.report(
            None,
            "policy",
            &CacheError::Config(format!(
                "unknown ttl policy `{name}`; using the default ttl"
            )),
        );
    }

    pub(super) fn site_spec(
        &self,
        site: &'static Site,
        key: &KeySource,
        tags: &[String],
        result_tags: bool,
    ) -> Result<Spec, CacheError> {
        let tenant = self.resolve_tenant(None, site.global)?;
        let ns = key::namespace(&self.inner.prefix, tenant.as_ref());
        let entry = match key {
            KeySource::Hash(h) => key::entry_key_hashed(&ns, site.name, site.version, *h),
            // Already escaped, with the site's identity (`__private::template_key`).
            KeySource::Template(t) => {
                let mut s = String::with_capacity(t.len() + 1);
                s.push('t');
                s.push_str(t);
                key::entry_key(&ns, site.name, site.version, &s)
            }
        };
        let mut keys = Vec::with_capacity(4 + 2 * tags.len());
        keys.push(entry);
        self.dep_keys_into(&mut keys, &ns, tags, tenant.is_some());
        // Result tags: the tag epochs of both namespaces whose tags the
        // entry carries, snapshotted with the other versions (step 6).
        let epochs = if result_tags {
            keys.push(key::epoch_key(&ns));
            keys.push(key::all_tenants_epoch_key(&self.inner.prefix));
            2
        } else {
            0
        };
        let (ttl, stale) = match site.ttl {
            Ttl::Default => (self.inner.default_ttl, Duration::ZERO),
            Ttl::Secs(s) => (Duration::from_secs(s), Duration::ZERO),
            Ttl::Policy(name) => self.policy_ttl(name, &keys[0]).unwrap_or_else(|| {
                self.unknown_policy(name);
                (self.inner.default_ttl, Duration::ZERO)
            }),
        };
        let stale = if site.stale_secs > 0 {
            Duration::from_secs(site.stale_secs)
        } else {
            stale
        };
        let spec = Spec {
            tenant_scoped: tenant.is_some(),
            ns,
            keys,
            epochs,
            ttl,
            stale,
            cache_none: site.cache_none,
            private: tenant.is_some(),
            local: site.local,
            name: site.name,
            counters: self.inner.stats.function(site.name),
            degraded: std::sync::atomic::AtomicBool::new(false),
        };
        // `debug::capture_keys`: one relaxed load unless a capture runs.
        crate::debug::record(&spec.keys, spec.name, tenant.as_ref());
        Ok(spec)
    }

    /// The tenant, namespace and keys of a service-API key: `keys[0]` is the
    /// entry, then the key's own version, then the versions of
    /// `dep_keys_into`. Also behind `Cache::explain_key`.
    pub(crate) fn user_keys(
        &self,
        key: &str,
        opts: &CacheOptions,
    ) -> Result<(Option<TenantId>, String, Vec<String>), CacheError> {
        let tenant = self.resolve_tenant(opts.tenant.as_ref(), opts.global)?;
        let ns = key::namespace(&self.inner.prefix, tenant.as_ref());
        let mut keys = Vec::with_capacity(3 + 2 * opts.tags.len());
        keys.push(key::user_entry_key(&ns, key));
        // The key's own version: `delete` bumps it.
        keys.push(key::user_key_version(&ns, key));
        self.dep_keys_into(&mut keys, &ns, &opts.tags, tenant.is_some());
        Ok((tenant, ns, keys))
    }

    pub(super) fn user_spec(
        &self,
        key: &str,
        opts: &CacheOptions,
        name: &'static str,
    ) -> Result<Spec, CacheError> {
        let (tenant, ns, keys) = match self.user_keys(key, opts) {
            Ok(resolved) => resolved,
            Err(e) => {
                self.report(Some(&self.inner.stats.function(name)), "tenant", &e);
                return Err(e);
            }
        };
        let (ttl, stale) = match (&opts.ttl, &opts.policy) {
            (Some(ttl), _) => (*ttl, Duration::ZERO),
            (None, Some(p)) => self.policy_ttl(p, &keys[0]).unwrap_or_else(|| {
                self.unknown_policy(p);
                (self.inner.default_ttl, Duration::ZERO)
            }),
            (None, None) => (self.inner.default_ttl, Duration::ZERO),
        };
        let spec = Spec {
            tenant_scoped: tenant.is_some(),
            ns,
            keys,
            epochs: 0,
            ttl,
            stale: opts.stale.unwrap_or(stale),
            cache_none: false,
            private: tenant.is_some(),
            local: true,
            name,
            counters: self.inner.stats.function(name),
            degraded: std::sync::atomic::AtomicBool::new(false),
        };
        // `debug::capture_keys`: one relaxed load unless a capture runs.
        crate::debug::record(&spec.keys, spec.name, tenant.as_ref());
        Ok(spec)
    }
}
