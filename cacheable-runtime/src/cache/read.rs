//! The read path: one `MGET` of the entry and its versions, the
//! dependency check, and XFetch early refresh (steps 1 and 2 of the
//! protocol in the module docs of `cache`).

use super::*;

/// XFetch (probabilistic early refresh, Vattani et al.): a hit turns into a
/// refresh with a probability that grows as expiry nears, scaled by how long
/// the value took to compute, so hot keys are recomputed by one caller
/// before they expire instead of by a stampede after.
pub(super) fn xfetch_due(now_ms: u64, fresh_until_ms: u64, compute_us: u32) -> bool {
    if compute_us == 0 {
        return false;
    }
    #[allow(clippy::cast_precision_loss)]
    let remaining = fresh_until_ms.saturating_sub(now_ms) as f64;
    let compute_ms = f64::from(compute_us) / 1000.0;
    // P(refresh) = exp(-remaining / compute): below e^-40 it is never worth
    // drawing a random number (the common case on a hot path).
    if remaining > 40.0 * compute_ms {
        return false;
    }
    let stamp = envelope::new_stamp();
    let bits = u64::from_le_bytes(stamp[..8].try_into().unwrap_or_default()) >> 11;
    #[allow(clippy::cast_precision_loss)]
    let uniform = (bits as f64 + 1.0) / (1u64 << 53) as f64;
    compute_ms * -uniform.ln() >= remaining
}

impl Cache {
    // ----- the read path -----

    /// Reads the entry and its versions. With `early_refresh`, a fresh value
    /// may come back as `Stale` (XFetch) so that this caller refreshes it.
    pub(super) async fn lookup<V: DeserializeOwned>(
        &self,
        spec: &Spec,
        early_refresh: bool,
    ) -> Result<Lookup<V>, CacheError> {
        if self.inner.pending.active() {
            return Err(CacheError::InvalidationPending);
        }
        if self.inner.server.suspect() {
            self.check_server().await?;
        }
        let epoch = match self.local_read::<V>(spec, early_refresh) {
            local::LocalRead::Hit(hit) => return Ok(Lookup::Hit(hit)),
            local::LocalRead::Miss(epoch) => epoch,
        };
        let store = &self.inner.store;
        let at = self.inner.clock.now();
        let values = self.op_in(spec, store.mget(&spec.keys)).await?;
        if values.len() != spec.keys.len() {
            return Err(CacheError::Store(format!(
                "MGET of {} keys answered {} values",
                spec.keys.len(),
                values.len()
            )));
        }
        let mut values = values.into_iter();
        let raw = values.next().flatten();
        let versions: Vec<Option<u64>> = values.map(|v| parse_version(v.as_deref())).collect();
        let miss = |raw: Option<&[u8]>, versions: Vec<Option<u64>>| Miss {
            expect: Expect::from_read(raw),
            versions,
            at,
        };
        let Some(raw) = raw else {
            return Ok(Lookup::Miss(miss(None, versions)));
        };
        let env = match envelope::decode(&raw) {
            Ok(env) => env,
            Err(e) => {
                self.report(Some(&spec.counters), "decode", &e);
                return Ok(Lookup::Miss(miss(Some(&raw), versions)));
            }
        };
        if !self.deps_current(spec, &env.deps, &versions).await? {
            return Ok(Lookup::Miss(miss(Some(&raw), versions)));
        }
        let now = self.inner.clock.unix_ms();
        let stale_until = env
            .fresh_until_ms
            .saturating_add(u64::try_from(spec.stale.as_millis()).unwrap_or(u64::MAX));
        if now >= stale_until {
            return Ok(Lookup::Miss(miss(Some(&raw), versions)));
        }
        let value = match codec::decode::<V>(env.payload) {
            Ok(v) => v,
            Err(e) => {
                self.report(Some(&spec.counters), "decode", &e);
                return Ok(Lookup::Miss(miss(Some(&raw), versions)));
            }
        };
        if now >= env.fresh_until_ms
            || (early_refresh && xfetch_due(now, env.fresh_until_ms, env.compute_us))
        {
            return Ok(Lookup::Stale {
                value,
                miss: miss(Some(&raw), versions),
            });
        }
        self.local_keep(spec, epoch, &raw, &env.deps);
        Ok(Lookup::Hit(Hit::of(value, now, &env, spec, false)))
    }

    /// Whether every dependency of an entry is still at its recorded version.
    /// The call's own version keys were fetched with the entry; dependencies
    /// inherited from nested cached calls are fetched with one more `MGET`.
    pub(super) async fn deps_current(
        &self,
        spec: &Spec,
        deps: &[DepRef<'_>],
        versions: &[Option<u64>],
    ) -> Result<bool, CacheError> {
        let known = spec.dep_keys();
        let mut extra: Vec<(String, u64)> = Vec::new();
        for (i, dep) in deps.iter().enumerate() {
            let current = if known.get(i).is_some_and(|k| *k == dep.key) {
                Some(versions[i])
            } else {
                known
                    .iter()
                    .position(|k| *k == dep.key)
                    .map(|p| versions[p])
            };
            match current {
                // A missing or unreadable counter matches no version.
                Some(v) if v != Some(dep.version) => return Ok(false),
                Some(_) => {}
                None => extra.push((dep.key.to_owned(), dep.version)),
            }
        }
        // Every version key of the call itself must be among the entry's deps
        // (an entry written under other tags is not this call's entry).
        if known.iter().any(|k| !deps.iter().any(|d| d.key == *k)) {
            return Ok(false);
        }
        if extra.is_empty() {
            return Ok(true);
        }
        let keys: Vec<String> = extra.iter().map(|(k, _)| k.clone()).collect();
        let current = self.op_in(spec, self.inner.store.mget(&keys)).await?;
        Ok(current.len() == extra.len()
            && current
                .iter()
                .zip(&extra)
                .all(|(raw, (_, v))| parse_version(raw.as_deref()) == Some(*v)))
    }
}
