//! Counters per limiter name, behind [`RateLimitStats::limiters`]: a
//! read-locked map from the name to relaxed atomics, bounded at
//! [`MAX_LIMITERS`] names (later names count under [`OTHER_LIMITER`]).
//! A decision under a name already seen takes the read lock, hashes the
//! name and bumps one or two atomics: no allocation.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{PoisonError, RwLock};

use super::types::LimiterStats;
use crate::stats::Fnv;

/// The most limiter names with counters of their own. Decisions under a
/// name past it count under [`OTHER_LIMITER`], so the map never grows
/// without bound (names are call sites for `#[rate_limit]`, but
/// [`RateLimitOptions::name`](super::RateLimitOptions::name) may be anything).
pub const MAX_LIMITERS: usize = 256;

/// The name under which decisions of limiters past [`MAX_LIMITERS`] count.
pub const OTHER_LIMITER: &str = "<other>";

/// One limiter's counters.
#[derive(Debug, Default)]
pub(super) struct Counts {
    pub allowed: AtomicU64,
    pub denied: AtomicU64,
    pub denied_cached: AtomicU64,
    pub fallbacks: AtomicU64,
    pub unidentified: AtomicU64,
}

impl Counts {
    fn snapshot(&self) -> LimiterStats {
        LimiterStats {
            allowed: self.allowed.load(Relaxed),
            denied: self.denied.load(Relaxed),
            denied_cached: self.denied_cached.load(Relaxed),
            fallbacks: self.fallbacks.load(Relaxed),
            unidentified: self.unidentified.load(Relaxed),
        }
    }
}

/// The counters of every limiter name seen, at most [`MAX_LIMITERS`] of
/// them plus [`OTHER_LIMITER`].
#[derive(Debug, Default)]
pub(super) struct Limiters {
    map: RwLock<HashMap<Cow<'static, str>, Counts, Fnv>>,
    /// The limiters past [`MAX_LIMITERS`].
    other: Counts,
}

impl Limiters {
    /// Runs `f` on the counters of `name` (created on first sight while
    /// there is room, else those of [`OTHER_LIMITER`]).
    #[allow(clippy::ptr_arg)] // cloned on first sight: a borrowed name stays borrowed
    pub(super) fn count(&self, name: &Cow<'static, str>, f: impl FnOnce(&Counts)) {
        {
            let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(c) = map.get(name.as_ref()) {
                return f(c);
            }
            if map.len() >= MAX_LIMITERS {
                return f(&self.other);
            }
        }
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_LIMITERS && !map.contains_key(name.as_ref()) {
            return f(&self.other);
        }
        // First sight: a borrowed name (every `#[rate_limit]` site) is not copied.
        f(map.entry(name.clone()).or_default());
    }

    /// A snapshot by name; [`OTHER_LIMITER`] only once something counted there.
    pub(super) fn snapshot(&self) -> BTreeMap<String, LimiterStats> {
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        let mut out: BTreeMap<String, LimiterStats> = map
            .iter()
            .map(|(k, c)| (k.as_ref().to_owned(), c.snapshot()))
            .collect();
        let other = self.other.snapshot();
        if other != LimiterStats::default() {
            // A real limiter may be named `<other>`: add, never replace.
            let e = out.entry(OTHER_LIMITER.to_owned()).or_default();
            e.allowed += other.allowed;
            e.denied += other.denied;
            e.denied_cached += other.denied_cached;
            e.fallbacks += other.fallbacks;
            e.unidentified += other.unidentified;
        }
        out
    }
}
