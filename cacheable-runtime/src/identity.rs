//! Conflicting call-site identities (guarantee 11), reported at run time.
//!
//! Two distinct `#[cacheable]` sites whose identity and version are equal
//! (the same explicit `name = ".."` on two fns, say) would read each other's
//! entries. The macro cannot see other sites, so the first call of each
//! (site, identity) pair registers it in a process-wide map from
//! (identity, version) to the addresses of the sites that produced it. A
//! second, different site under the same pair is a conflict: one error log
//! line, and [`Stats::identity_conflicts`](crate::Stats::identity_conflicts)
//! counts it. The instantiations of one generic site are one site (one
//! static), so they never conflict with each other.
//!
//! Cost: each site remembers the last identity it registered, so a call
//! whose identity is the remembered one (every call of a non-generic fn
//! after its first) pays one relaxed atomic load. Bound: one map entry per
//! (site, instantiation) that ran, a number fixed by the program's code.
//! Addresses are compared in process only; they never reach a key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{LazyLock, OnceLock, PoisonError, RwLock};

use crate::stats::SiteCounters;

use crate::key::Identity;

/// Per-site run-time state, in the site's static: the identity it
/// registered, and its counters in the first cache it ran on.
#[derive(Debug)]
pub struct SiteState {
    /// The last identity registered by this site (0: none yet; an identity
    /// that is 0 always takes the slow path).
    last: AtomicU64,
    /// The site's counters in one stats registry (see `Registry::site`).
    pub(crate) counters: SiteCounters,
    /// The identity computed from one source string (its address and
    /// length): see `__private::site_identity`.
    identity: OnceLock<(usize, usize, Identity)>,
}

impl SiteState {
    /// Nothing registered yet.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            last: AtomicU64::new(0),
            counters: SiteCounters::new(),
            identity: OnceLock::new(),
        }
    }

    /// The identity that `make` computes from `source`, computed once per
    /// site: remembered with the address and length of `source`, so that a
    /// generic site (one static for every instantiation) whose source
    /// differs by instantiation recomputes it for the others. Equal address
    /// and length mean equal bytes, hence an equal identity.
    pub(crate) fn identity(
        &self,
        source: &'static str,
        make: impl FnOnce(&'static str) -> Identity,
    ) -> Identity {
        let at = (source.as_ptr() as usize, source.len());
        if let Some((p, l, id)) = self.identity.get()
            && (*p, *l) == at
        {
            return *id;
        }
        let id = make(source);
        let _ = self.identity.set((at.0, at.1, id));
        id
    }
}

impl Default for SiteState {
    fn default() -> Self {
        Self::new()
    }
}

type Registry = HashMap<(u64, u32), Vec<usize>>;

static REGISTRY: LazyLock<RwLock<Registry>> = LazyLock::new(RwLock::default);
static CONFLICTS: AtomicU64 = AtomicU64::new(0);

/// Conflicts seen in this process.
pub(crate) fn conflicts() -> u64 {
    CONFLICTS.load(Relaxed)
}

/// Registers `(id, version)` as produced by the site at `site` (its static's
/// address); reports a conflict when another site produced it first.
pub(crate) fn register(state: &SiteState, site: usize, name: &str, id: Identity, version: u32) {
    if id.0 != 0 && state.last.load(Relaxed) == id.0 {
        return;
    }
    let key = (id.0, version);
    let known = REGISTRY
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&key)
        .is_some_and(|sites| sites.contains(&site));
    if !known {
        let mut map = REGISTRY.write().unwrap_or_else(PoisonError::into_inner);
        let sites = map.entry(key).or_default();
        if !sites.contains(&site) {
            sites.push(site);
            if sites.len() > 1 {
                CONFLICTS.fetch_add(1, Relaxed);
                tracing::error!(
                    function = name,
                    version,
                    "two different #[cacheable] functions have the same identity and share cache \
                     entries; give each its own `name = \"..\"` (or drop `name` to use the module path)"
                );
            }
        }
    }
    state.last.store(id.0, Relaxed);
}
