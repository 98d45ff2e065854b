//! The alert evaluator's task: once per tick it reads this cache's counters
//! (and, when an alert needs them, a `PING` and the memory fraction) into
//! plain `monitor::alerts::Figures` and lets `monitor::alerts` move the
//! alerts. See the `monitor::alerts` docs for how an alert moves.

use std::sync::Weak;

use tokio::time::Instant;

use super::{Cache, Inner};
use crate::breaker::BreakerState;
use crate::monitor::alerts::{Figures, Previous, Wants};
use crate::store::{AnyStore, Store};

/// This tick's figures. The counters are read before the first await, the
/// `PING` and memory after.
#[allow(clippy::cast_precision_loss)]
fn measure(cache: &Cache, wants: &Wants) -> impl Future<Output = Figures> {
    let inner = cache.inner();
    let at = Instant::now();
    let s = cache.stats();
    let denied = cache.rate_limiter().denied();
    let histograms = if wants.p99 {
        inner
            .stats
            .compute_counts()
            .into_iter()
            .map(|(k, v)| (format!("f:{k}"), v))
            .chain(inner.stats.routes.counts())
            .collect()
    } else {
        Vec::new()
    };
    let mut figures = Figures {
        at,
        hits: s.hits,
        misses: s.misses,
        denied,
        histograms,
        unreachable: None,
        memory: None,
    };
    let (want_ping, want_memory) = (wants.ping, wants.memory);
    let cache = cache.clone();
    async move {
        let inner = cache.inner();
        if want_ping {
            let breaker_open = inner.breaker_state() != BreakerState::Closed;
            let ping = tokio::time::timeout(inner.op_timeout, inner.store.ping()).await;
            figures.unreachable = Some(breaker_open || !matches!(ping, Ok(Ok(()))));
        }
        if want_memory {
            figures.memory = match &*inner.store {
                AnyStore::Memory(m) => Some(m.weighed_size() as f64 / m.capacity().max(1) as f64),
                _ => tokio::time::timeout(inner.op_timeout * 4, cache.memory_fraction())
                    .await
                    .ok()
                    .flatten(),
            };
        }
        figures
    }
}

/// The evaluator task: see the `monitor::alerts` docs. Runs until the cache
/// is dropped; holds it only while measuring.
pub(crate) fn spawn(weak: Weak<Inner>, handle: &tokio::runtime::Handle) {
    handle.spawn(async move {
        let mut prev = Previous::default();
        let interval = match weak.upgrade() {
            Some(inner) => match inner.alerts() {
                Some(a) => a.interval(),
                None => return,
            },
            None => return,
        };
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let Some(cache) = Cache::from_weak(&weak) else {
                return;
            };
            let Some(alerts) = cache.inner().alerts().cloned() else {
                return;
            };
            let figures = measure(&cache, &alerts.wants()).await;
            // Not held across the next sleep: the cache can drop meanwhile.
            drop(cache);
            alerts.evaluate(&mut prev, figures, Instant::now());
        }
    });
}

impl Cache {
    /// `used_memory / maxmemory` of the Redis servers (`None`: unlimited or no answer).
    async fn memory_fraction(&self) -> Option<f64> {
        // The full report scans keys; this needs INFO only, but one code
        // path is easier to keep right: servers' INFO comes first in it.
        self.memory_report().await.used_fraction()
    }
}
