//! Per-call options and TTL policies.

use std::time::Duration;

use crate::tenant::TenantId;

/// The longest TTL or stale window: 10 years. `CacheBuilder::build` refuses a
/// longer configured one with `CacheError::Config`; a longer one given per
/// call ([`CacheOptions::ttl`], [`CacheOptions::stale`]) is capped to it, so
/// that no deadline computed from it can overflow.
pub const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

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

    /// Time to live of the entry (capped at [`MAX_TTL`], 10 years).
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl.min(MAX_TTL));
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

    /// Serve a value up to `window` past its expiry while one caller
    /// refreshes it (capped at [`MAX_TTL`]).
    #[must_use]
    pub fn stale(mut self, window: Duration) -> Self {
        self.stale = Some(window.min(MAX_TTL));
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
    /// written together do not expire together. Clamped to `0.0..=0.5`; NaN
    /// and infinities mean no jitter.
    #[must_use]
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_finite() {
            fraction.clamp(0.0, 0.5)
        } else {
            0.0
        };
        self
    }

    /// Serve values up to `window` past expiry while one caller refreshes
    /// (capped at [`MAX_TTL`]).
    #[must_use]
    pub fn stale(mut self, window: Duration) -> Self {
        self.stale = Some(window.min(MAX_TTL));
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
        // Checked: `mul_f64` panics when the product overflows (a TTL near
        // `Duration::MAX`, which `build` refuses but `TtlPolicy` holds).
        Duration::try_from_secs_f64(self.ttl.as_secs_f64() * factor.max(0.01)).unwrap_or(self.ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extreme_values_never_panic() {
        assert_eq!(CacheOptions::new().ttl(Duration::MAX).ttl, Some(MAX_TTL));
        assert_eq!(
            CacheOptions::new().stale(Duration::MAX).stale,
            Some(MAX_TTL)
        );
        for jitter in [
            f64::NAN,
            -1.0,
            -0.0,
            0.3,
            2.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e300,
        ] {
            let p = TtlPolicy::new(Duration::MAX).jitter(jitter);
            assert!((0.0..=0.5).contains(&p.jitter), "{jitter} -> {}", p.jitter);
            for seed in [0, 1, 9_999, u64::MAX] {
                let _ = p.jittered(seed);
                let _ = TtlPolicy::new(Duration::ZERO).jitter(jitter).jittered(seed);
                let d = TtlPolicy::new(Duration::from_secs(100))
                    .jitter(jitter)
                    .jittered(seed);
                assert!(d >= Duration::from_secs(50) && d <= Duration::from_secs(150));
            }
        }
    }
}
