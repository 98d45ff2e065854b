//! Single flight within a process, and the lease that extends it across
//! processes (guarantee 5, stampede control).
//!
//! This module owns the in-process flights map and the two drop guards of a
//! computing caller; the protocol that uses them is `Cache::fill` (cache.rs).
//!
//! # Protocol
//!
//! 1. A miss joins the flight of `(entry key, versions it read)`. The first
//!    caller becomes the leader; the others follow. Versions are part of the
//!    flight's identity, so a caller that read newer versions (an invalidation
//!    returned between the two reads) never waits on, nor takes the value of, a
//!    computation that started before that invalidation: it leads a flight of
//!    its own. Test: `flight::a_caller_after_an_invalidation_does_not_join_an_older_flight`.
//! 2. Followers in the same process wait for a live leader **without a
//!    timeout**, however long it computes: slow computations are what
//!    stampede control is for. Test: `flight::*_slow_computation_runs_once`.
//! 3. The leader takes the Redis lease `SET NX PX` (its key also carries the
//!    versions). When another process holds it, the leader serves the stale
//!    value if it has one, else polls for that process's value for at most
//!    `lease_wait`, then computes (cross-process waits are bounded: another
//!    process may die without a trace).
//! 4. The leader stores its value, then completes the flight; followers read
//!    the entry. If it is not there under the versions they read (the value was
//!    not cacheable, e.g. an `Err`), they compute themselves, concurrently; if
//!    the versions moved on (an invalidation overlapped the flight), they go
//!    back to step 1 with the versions they read now.
//! 5. A leader that panics, or whose future is dropped (client disconnect,
//!    timeout, abort), abandons the flight: its [`FlightGuard`] removes the
//!    entry and wakes the followers with [`Outcome::Abandoned`]; they go back
//!    to step 1, so the first of them to get there leads and the others follow
//!    it: exactly one takes over. Tests: `flight::leader_panic_*`,
//!    `flight::leader_dropped_*`.
//! 6. The leader's [`LeaseGuard`] releases the Redis lease when the leader
//!    finishes, and also when its future is dropped: the release is then
//!    spawned on the current tokio runtime (if there is none, the lease
//!    expires after its TTL). Test: `flight::leader_dropped_releases_the_lease`.
//!
//! # Bound
//!
//! The flights map holds one entry per computation running in this process
//! under single flight, never more than [`MAX_FLIGHTS`]; beyond that a miss
//! computes without joining a flight (it still takes the Redis lease). An
//! entry is removed by its leader's guard when the leader completes, panics or
//! is dropped, so the map is empty whenever no computation runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;

use crate::store::{AnyStore, Store};

/// The most flights tracked at once in one process (one entry each).
pub(crate) const MAX_FLIGHTS: usize = 65_536;

/// A flight's identity: the entry key and the versions its leader read.
/// `None`: a version counter found missing (created before computing).
type FlightKey = (String, Vec<Option<u64>>);

/// The map shared by [`Flights`] and the guards of its leaders.
type Map = Arc<Mutex<HashMap<FlightKey, watch::Receiver<State>>>>;

/// The computations running in this process, by entry key and versions.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    map: Map,
}

/// The lease (key, token) an abandoning leader held: the follower that takes
/// over releases it before taking its own, rather than racing the release that
/// the dropped [`LeaseGuard`] spawned (and waiting `lease_wait` if it lost).
pub(crate) type DeadLease = Arc<(String, String)>;

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Running,
    Done,
    Abandoned(Option<DeadLease>),
}

/// How a flight ended, as a follower sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The leader finished (and stored its value if it was cacheable).
    Done,
    /// The leader panicked or its future was dropped, holding this lease.
    Abandoned(Option<DeadLease>),
}

/// The role of a caller in a flight.
pub(crate) enum Flight {
    /// Compute, then [`FlightGuard::complete`].
    Leader(FlightGuard),
    /// Wait with [`Follower::wait`].
    Follower(Follower),
}

/// A follower's view of a running flight.
pub(crate) struct Follower(watch::Receiver<State>);

impl Follower {
    /// Waits, without a timeout, until the leader completes or abandons.
    pub(crate) async fn wait(mut self) -> Outcome {
        match self.0.wait_for(|s| *s != State::Running).await {
            Ok(s) => match &*s {
                State::Abandoned(lease) => Outcome::Abandoned(lease.clone()),
                _ => Outcome::Done,
            },
            Err(_) => Outcome::Abandoned(None),
        }
    }
}

impl Flights {
    /// Joins the flight of `key` under `versions`, or starts it.
    pub(crate) fn join(&self, key: &str, versions: &[Option<u64>]) -> Flight {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let id = (key.to_owned(), versions.to_vec());
        if let Some(rx) = map.get(&id) {
            return Flight::Follower(Follower(rx.clone()));
        }
        let (tx, rx) = watch::channel(State::Running);
        let tracked = map.len() < MAX_FLIGHTS;
        if tracked {
            map.insert(id.clone(), rx);
        }
        Flight::Leader(FlightGuard {
            map: tracked.then(|| Arc::clone(&self.map)),
            id,
            tx,
            lease: None,
        })
    }

    /// Flights running now.
    pub(crate) fn len(&self) -> usize {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// Held by a flight's leader. Removes the flight when dropped and tells the
/// followers whether it completed ([`complete`](Self::complete)) or was
/// abandoned (dropped without it: a panic or a dropped future).
pub(crate) struct FlightGuard {
    /// `None` when the flight is not tracked (the map was full).
    map: Option<Map>,
    id: FlightKey,
    tx: watch::Sender<State>,
    lease: Option<DeadLease>,
}

impl FlightGuard {
    /// Records the Redis lease this leader holds, for a follower to release
    /// if the leader abandons.
    pub(crate) fn hold_lease(&mut self, key: &str, token: &str) {
        self.lease = Some(Arc::new((key.to_owned(), token.to_owned())));
    }

    /// The leader stored its value (or found it not cacheable): wake the
    /// followers to read it.
    pub(crate) fn complete(self) {
        self.tx.send_replace(State::Done);
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        // Remove first: a follower woken by `Abandoned` that joins again must
        // start a new flight, not find this one.
        if let Some(map) = &self.map {
            map.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&self.id);
        }
        let lease = self.lease.take();
        self.tx.send_if_modified(|s| {
            if *s == State::Running {
                *s = State::Abandoned(lease);
                true
            } else {
                false
            }
        });
    }
}

/// The Redis key of the lease for `entry` under `versions`: a caller that read
/// other versions computes another value and does not wait on this lease.
pub(crate) fn lease_key(entry: &str, versions: &[Option<u64>]) -> String {
    let mut bytes = Vec::with_capacity(versions.len() * 8);
    for v in versions {
        // 0 is never a version (fresh versions have 19 digits).
        bytes.extend_from_slice(&v.unwrap_or(0).to_le_bytes());
    }
    format!("{entry}:l:{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes))
}

/// A held cross-process lease. Released by [`release`](Self::release), or, if
/// the leader's future is dropped first, by a release spawned on the current
/// tokio runtime (without one, the lease expires after its TTL).
pub(crate) struct LeaseGuard {
    store: Arc<AnyStore>,
    /// The cache's `op_timeout`, for the spawned release.
    timeout: Duration,
    key: String,
    token: String,
    held: bool,
}

impl LeaseGuard {
    pub(crate) fn new(store: Arc<AnyStore>, timeout: Duration, key: String, token: String) -> Self {
        Self {
            store,
            timeout,
            key,
            token,
            held: true,
        }
    }

    /// The lease's key.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// The token that proves this caller holds the lease.
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// The lease was released: nothing to do on drop. Call it after the
    /// release, so that a future dropped during the release still releases.
    pub(crate) fn disarm(mut self) {
        self.held = false;
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = Arc::clone(&self.store);
        let timeout = self.timeout;
        let key = std::mem::take(&mut self.key);
        let token = std::mem::take(&mut self.token);
        runtime.spawn(async move {
            let _ = tokio::time::timeout(timeout, store.release(&key, &token)).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_are_removed_on_complete_and_on_drop() {
        let flights = Flights::default();
        let Flight::Leader(guard) = flights.join("k", &[Some(1)]) else {
            panic!("first caller leads");
        };
        let Flight::Follower(follower) = flights.join("k", &[Some(1)]) else {
            panic!("second caller follows");
        };
        assert!(
            matches!(flights.join("k", &[Some(2)]), Flight::Leader(_)),
            "other versions, other flight"
        );
        assert_eq!(
            flights.len(),
            1,
            "the dropped leader of [2] removed its entry"
        );
        guard.complete();
        assert_eq!(flights.len(), 0);
        assert_eq!(follower.wait().await, Outcome::Done);

        let Flight::Leader(guard) = flights.join("k", &[Some(1)]) else {
            panic!("a new flight");
        };
        let Flight::Follower(follower) = flights.join("k", &[Some(1)]) else {
            panic!("follows");
        };
        drop(guard);
        assert_eq!(flights.len(), 0);
        assert_eq!(follower.wait().await, Outcome::Abandoned(None));
    }

    #[test]
    fn lease_keys_differ_by_versions() {
        assert_ne!(
            lease_key("e", &[Some(1), Some(2)]),
            lease_key("e", &[Some(1), Some(3)])
        );
        assert_eq!(
            lease_key("e", &[Some(1), Some(2)]),
            lease_key("e", &[Some(1), Some(2)])
        );
        assert!(lease_key("p:{t:x}:e", &[]).starts_with("p:{t:x}:e:l:"));
    }
}
