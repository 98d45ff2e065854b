//! Per-call options and TTL policies.

use std::time::Duration;

use crate::tenant::TenantId;

/// Options of one service-API call (`get`, `set`, `delete`, `get_or_compute`).
///
/// The tenant defaults to the current context's tenant; `global()` shares one
/// entry across all tenants.
#[derive(Clone, Debug, Default)]
pub struct CacheOptions {
    pub(crate) ttl: Option<Duration>,
    pub(crate) policy: Option<String>,
    pub(crate) tags: Vec<String>,
    pub(crate) tenant: Option<TenantId>,
    pub(crate) global: bool,
    pub(crate) stale: Option<Duration>,
}

impl CacheOptions {
    /// Options with the cache's default TTL, no tags and the current tenant.
    pub fn new() -> Self {
        Self::default()
    }

    /// Time to live of the entry.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// A named TTL policy configured on the cache (`CacheBuilder::policy`).
    #[must_use]
    pub fn policy(mut self, name: impl Into<String>) -> Self {
        self.policy = Some(name.into());
        self
    }

    /// Tags of the entry, for `delete_by_tags`.
    #[must_use]
    pub fn tags<I, S>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }

    /// The tenant, instead of the current context's.
    #[must_use]
    pub fn tenant(mut self, tenant: impl Into<TenantId>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// One entry shared by all tenants.
    #[must_use]
    pub fn global(mut self) -> Self {
        self.global = true;
        self
    }

    /// Serve a value up to `window` past its expiry while one caller refreshes it.
    #[must_use]
    pub fn stale(mut self, window: Duration) -> Self {
        self.stale = Some(window);
        self
    }
}

/// A named TTL policy: TTL, jitter and stale window for one kind of data.
#[derive(Clone, Debug, PartialEq)]
pub struct TtlPolicy {
    pub(crate) ttl: Duration,
    pub(crate) jitter: f64,
    pub(crate) stale: Option<Duration>,
}

impl TtlPolicy {
    /// A policy with this TTL, no jitter and no stale window.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            jitter: 0.0,
            stale: None,
        }
    }

    /// Spread expiries by up to `fraction` of the TTL (0.1 = ±10 %), so entries
    /// written together do not expire together. Clamped to `0.0..=0.5`.
    #[must_use]
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_finite() {
            fraction.clamp(0.0, 0.5)
        } else {
            0.0
        };
        self
    }

    /// Serve values up to `window` past expiry while one caller refreshes.
    #[must_use]
    pub fn stale(mut self, window: Duration) -> Self {
        self.stale = Some(window);
        self
    }

    /// The TTL.
    pub fn ttl_duration(&self) -> Duration {
        self.ttl
    }

    /// The TTL with jitter applied, from a 64-bit seed (the key's hash), so the
    /// same key gets the same spread everywhere.
    pub(crate) fn jittered(&self, seed: u64) -> Duration {
        if self.jitter <= 0.0 {
            return self.ttl;
        }
        #[allow(clippy::cast_precision_loss)]
        let unit = (seed % 10_000) as f64 / 10_000.0 * 2.0 - 1.0;
        let factor = 1.0 + unit * self.jitter;
        self.ttl.mul_f64(factor.max(0.01))
    }
}
