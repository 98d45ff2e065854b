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

    /// The version keys an entry depends on, after the entry key in `keys`
    /// (whose first `ns_len` bytes are its namespace): its tenant's generation (the
    /// global space has none: nothing invalidates it by tenant) and its tags
    /// in the tenant and across tenants. A global, untagged entry depends on
    /// nothing and is read with a single `GET`.
    pub(super) fn dep_keys_into(
        &self,
        keys: &mut Vec<String>,
        ns_len: usize,
        tags: &[String],
        tenant_scoped: bool,
    ) {
        // `keys[0]`, the entry key, starts with the namespace.
        if tenant_scoped {
            let k = key::generation_key(&keys[0][..ns_len]);
            keys.push(k);
        }
        // Each tag is escaped once: its all-tenants key copies it from its
        // key in the namespace.
        let first = keys.len();
        for t in tags {
            let k = key::tag_key(&keys[0][..ns_len], t);
            keys.push(k);
        }
        for i in first..first + tags.len() {
            let all = key::all_tenants_tag_key(&self.inner.prefix, &keys[0][..ns_len], &keys[i]);
            keys.push(all);
        }
    }

    /// The tenant's byte budget for a write of this entry, if configured.
    pub(super) fn quota_for(&self, spec: &Spec) -> Option<Quota> {
        let limit = self.inner.tenant_quota.filter(|_| spec.tenant_scoped)?;
        let ns = spec.ns();
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

    /// The first half of a call site's spec: tenant, namespace, entry key,
    /// TTL and the fingerprint of the call's dependencies, but none of its
    /// version keys (`keys` holds the entry only), which a local hit never
    /// reads. [`Cache::site_deps`] adds them before anything else reads the
    /// spec.
    pub(super) fn site_entry(
        &self,
        site: &'static Site,
        key: &KeySource,
        tags: &[String],
    ) -> Result<Spec, CacheError> {
        let tenant = self.resolve_tenant(None, site.global)?;
        // The namespace is the start of the entry key: built once, in place.
        let (entry, ns_len) = match key {
            KeySource::Hash(h) => key::site_entry_key(
                &self.inner.prefix,
                tenant.as_ref(),
                site.name,
                site.version,
                *h,
                None,
            ),
            // Already escaped, with the site's identity (`__private::template_key`).
            KeySource::Template(t) => key::site_entry_key(
                &self.inner.prefix,
                tenant.as_ref(),
                site.name,
                site.version,
                0,
                Some(t),
            ),
        };
        let (ttl, stale) = match site.ttl {
            Ttl::Default => (self.inner.default_ttl, Duration::ZERO),
            Ttl::Secs(s) => (Duration::from_secs(s), Duration::ZERO),
            Ttl::Policy(name) => self.policy_ttl(name, &entry).unwrap_or_else(|| {
                self.unknown_policy(name);
                (self.inner.default_ttl, Duration::ZERO)
            }),
        };
        let stale = if site.stale_secs > 0 {
            Duration::from_secs(site.stale_secs)
        } else {
            stale
        };
        // The entry, the generation, each tag twice, two epochs.
        let mut keys = Vec::with_capacity(4 + 2 * tags.len());
        keys.push(entry);
        Ok(Spec {
            tenant_scoped: tenant.is_some(),
            ns_len,
            keys,
            epochs: 0,
            call: call_fingerprint(tags),
            ttl,
            stale,
            cache_none: site.cache_none,
            private: tenant.is_some(),
            local: site.local,
            name: site.name,
            counters: self.inner.stats.site(site.name, &site.state.counters),
            degraded: std::sync::atomic::AtomicBool::new(false),
            tenant,
        })
    }

    /// The second half of a call site's spec: the version keys after the
    /// entry key (`dep_keys_into`) and, for a site with result tags, the
    /// tag epochs of both namespaces whose tags the entry carries,
    /// snapshotted with the other versions (step 6). Records the keys in a
    /// running `debug::capture_keys`.
    pub(super) fn site_deps(&self, spec: &mut Spec, tags: &[String], result_tags: bool) {
        debug_assert_eq!(spec.keys.len(), 1, "the dependencies are added once");
        self.dep_keys_into(&mut spec.keys, spec.ns_len, tags, spec.tenant_scoped);
        if result_tags {
            let epoch = key::epoch_key(spec.ns());
            spec.keys.push(epoch);
            spec.keys
                .push(key::all_tenants_epoch_key(&self.inner.prefix));
            spec.epochs = 2;
        }
        // `debug::capture_keys`: one relaxed load unless a capture runs.
        crate::debug::record(&spec.keys, spec.name, spec.tenant.as_ref());
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
        self.dep_keys_into(&mut keys, ns.len(), &opts.tags, tenant.is_some());
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
            // The service API's entry key starts with the namespace too.
            ns_len: ns.len(),
            keys,
            epochs: 0,
            call: call_fingerprint(&opts.tags),
            ttl,
            stale: opts.stale.unwrap_or(stale),
            cache_none: false,
            private: tenant.is_some(),
            local: true,
            name,
            counters: self.inner.stats.function(name),
            degraded: std::sync::atomic::AtomicBool::new(false),
            tenant,
        };
        // `debug::capture_keys`: one relaxed load unless a capture runs.
        crate::debug::record(&spec.keys, spec.name, spec.tenant.as_ref());
        Ok(spec)
    }
}

/// The fingerprint of a call's dependency set ([`Spec::call`]): xxh3 over
/// its rendered tags, each framed by its length. The rest of a call's
/// version keys follows from its entry key (the namespace, and for the
/// service API the key itself), and the tag keys from the tags (the escape
/// is injective), so two calls of one entry key with equal fingerprints
/// have the same version keys, but for a 64-bit collision.
pub(super) fn call_fingerprint(tags: &[String]) -> u64 {
    let mut h = tags.len() as u64;
    for t in tags {
        h = xxhash_rust::xxh3::xxh3_64_with_seed(t.as_bytes(), h ^ t.len() as u64);
    }
    h
}
