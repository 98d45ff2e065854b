//! Invalidations that failed, kept and retried until they land.
//!
//! # Protocol (guarantee 2 under faults)
//!
//! An invalidation is one `BUMP` script: every version counter it names is
//! incremented. When it fails (Redis paused, unreachable, out of memory
//! without `allow-oom`, the breaker open, a timeout after which the script
//! may or may not have run), it is not dropped:
//!
//! 1. Its keys are added to this process' pending set *before* the caller
//!    sees the error. The service API (`delete_by_tags`, …) and
//!    `#[cache_evict(strict)]` then return the error: the invalidation has
//!    not returned, and nothing is promised until it does. `#[cache_evict]`
//!    without `strict` waits for the retry to land, up to
//!    `CacheBuilder::evict_wait` (2 s by default), so that when it returns the
//!    invalidation holds on every instance; only an outage longer than that
//!    lets it return first (logged, counted). Tests:
//!    `failed_invalidation_is_retried_and_blocks_reads`,
//!    `evict_waits_for_the_invalidation_to_land`, and the fault checker in
//!    `tests/stale.rs`.
//! 2. While the set is not empty, this process reads no entry from the
//!    store and writes none: every cached call runs its function
//!    ([`CacheError::InvalidationPending`] is counted). So no read of this
//!    process that starts after the failed invalidation returned can serve a
//!    value it should have removed. Same test.
//! 3. A background task retries the pending bumps (10 ms, doubling to 250 ms)
//!    until one succeeds, then drops them from the set. Bumps commute and an
//!    extra one only costs a miss, so a retry of a bump that did run after
//!    all is harmless. Test: same, and the fault checker in `tests/stale.rs`.
//! 4. The set is bounded ([`MAX_PENDING_KEYS`]): past it, the pending work
//!    becomes one `clear()` of the whole prefix, a superset of every
//!    invalidation. Test: `pending_invalidations_are_bounded`.
//!
//! # A Redis that comes back with old data
//!
//! A Redis restarted from a snapshot (RDB or AOF) taken before an
//! invalidation, or a replica promoted before it received one (replication
//! is asynchronous), brings back counters and entries that the invalidation
//! had moved past. Every instance checks the server's identity (`run_id`)
//! before its first read and again before the first read after any
//! connection error or timeout ([`ServerCheck`]): a new `run_id` means the
//! data may have gone back in time, and the instance clears its prefix
//! (`SCAN` + `UNLINK`, a superset of every invalidation) before it reads.
//! Until the check passes the instance serves nothing from the store.
//! Test: `a_restored_snapshot_never_serves_invalidated_entries`. A restart of a
//! Redis without persistence loses every counter together with every entry
//! and is safe without the check; with it, it costs one `SCAN` of a nearly
//! empty keyspace. Not covered: Redis Cluster (each shard's failover is
//! not tracked; run it without persistence and accept the asynchronous
//! replication window), and a server swapped under a proxy that keeps the
//! connection open.
//!
//! Not covered: a process that dies with invalidations pending loses them
//! (other instances keep serving the entries they should have removed until
//! their TTL); other instances may serve such entries between the failure
//! and the retry when they can reach Redis and this process cannot. Callers
//! that prefer an error to that window use `#[cache_evict(strict)]` or the
//! service API, which return the error (the retry still runs).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

/// Pending version keys beyond which the pending work becomes a `clear()`.
pub(crate) const MAX_PENDING_KEYS: usize = 10_000;

/// The invalidations of one cache that failed and wait for a retry.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// Number of pending keys, plus one while a clear is pending; read on
    /// every lookup (one relaxed load when nothing is pending).
    count: AtomicUsize,
    state: Mutex<State>,
    /// A retry task is running.
    pub(crate) retrying: AtomicBool,
    /// Woken whenever pending work lands.
    landed: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct State {
    keys: HashSet<String>,
    clear: bool,
}

/// What a retry should do.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Work {
    pub(crate) keys: Vec<String>,
    pub(crate) clear: bool,
}

impl Work {
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty() && !self.clear
    }
}

impl Pending {
    /// Whether any invalidation is pending.
    pub(crate) fn active(&self) -> bool {
        self.count.load(Ordering::Acquire) > 0
    }

    /// Number of pending version keys (a pending clear counts one).
    pub(crate) fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, state: &State) {
        self.count.store(
            state.keys.len() + usize::from(state.clear),
            Ordering::Release,
        );
    }

    /// Adds failed bumps.
    pub(crate) fn add(&self, keys: &[String]) {
        let mut state = self.lock();
        if !state.clear {
            state.keys.extend(keys.iter().cloned());
            if state.keys.len() > MAX_PENDING_KEYS {
                state.keys = HashSet::new();
                state.clear = true;
            }
        }
        self.publish(&state);
    }

    /// Adds a failed `clear()`: it covers every bump.
    pub(crate) fn add_clear(&self) {
        let mut state = self.lock();
        state.keys = HashSet::new();
        state.clear = true;
        self.publish(&state);
    }

    /// What is pending now.
    pub(crate) fn work(&self) -> Work {
        let state = self.lock();
        let mut keys: Vec<String> = state.keys.iter().cloned().collect();
        keys.sort_unstable();
        Work {
            keys,
            clear: state.clear,
        }
    }

    /// Drops `done` (it landed); work added since stays.
    pub(crate) fn done(&self, done: &Work) {
        let mut state = self.lock();
        if done.clear {
            state.clear = false;
        }
        for k in &done.keys {
            state.keys.remove(k);
        }
        self.publish(&state);
        drop(state);
        self.landed.notify_waiters();
    }

    /// Whether any of `keys` still waits for its retry.
    fn covers_any(&self, keys: &[String]) -> bool {
        let state = self.lock();
        state.clear || keys.iter().any(|k| state.keys.contains(k))
    }

    /// Waits until none of `keys` is pending any more, at most `within`;
    /// whether they landed.
    pub(crate) async fn wait_landed(&self, keys: &[String], within: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now()
            .checked_add(within)
            .unwrap_or_else(|| tokio::time::Instant::now() + std::time::Duration::from_secs(3600));
        loop {
            let notified = self.landed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.covers_any(keys) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return !self.covers_any(keys);
            }
        }
    }

    /// Ends the retry task if nothing is pending; `false` if work arrived.
    pub(crate) fn stop_retrying(&self) -> bool {
        let state = self.lock();
        if state.keys.is_empty() && !state.clear {
            self.retrying.store(false, Ordering::Release);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_collapses_into_a_clear() {
        let p = Pending::default();
        assert!(!p.active());
        let keys: Vec<String> = (0..MAX_PENDING_KEYS).map(|i| format!("k{i}")).collect();
        p.add(&keys);
        p.add(&keys[..10]);
        assert_eq!(p.len(), MAX_PENDING_KEYS, "duplicates are not added twice");
        p.add(&["one more".to_owned()]);
        assert_eq!(
            p.work(),
            Work {
                keys: Vec::new(),
                clear: true
            }
        );
        assert_eq!(p.len(), 1);
        p.add(&["after".to_owned()]);
        assert_eq!(p.len(), 1, "a pending clear covers later bumps");
        p.done(&p.work());
        assert!(!p.active());
    }

    #[test]
    fn work_added_during_a_retry_stays() {
        let p = Pending::default();
        p.add(&["a".to_owned()]);
        let w = p.work();
        p.add(&["b".to_owned()]);
        p.done(&w);
        assert_eq!(p.work().keys, ["b"]);
        assert!(!p.stop_retrying());
        p.done(&p.work());
        assert!(p.stop_retrying());
    }
}

/// Whether the server is known to be the one this cache last talked to.
///
/// Suspect at start and after every connection error or timeout; cleared
/// by a check of the server's `run_id` (see the module docs).
#[derive(Debug)]
pub(crate) struct ServerCheck {
    suspect: AtomicBool,
    /// The `run_id` last verified; one check at a time.
    known: tokio::sync::Mutex<Option<String>>,
}

impl Default for ServerCheck {
    fn default() -> Self {
        Self {
            suspect: AtomicBool::new(true),
            known: tokio::sync::Mutex::new(None),
        }
    }
}

impl ServerCheck {
    /// Whether a check is due before the next read.
    pub(crate) fn suspect(&self) -> bool {
        self.suspect.load(Ordering::Acquire)
    }

    /// The connection failed: check the server before the next read.
    pub(crate) fn distrust(&self) {
        self.suspect.store(true, Ordering::Release);
    }

    /// The server's identity, locked for one check.
    pub(crate) async fn lock(&self) -> tokio::sync::MutexGuard<'_, Option<String>> {
        self.known.lock().await
    }

    /// The check passed.
    pub(crate) fn trust(&self) {
        self.suspect.store(false, Ordering::Release);
    }
}
