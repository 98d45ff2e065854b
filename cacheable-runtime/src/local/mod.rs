//! The local in-process tier (`CacheBuilder::local_cache`): a moka cache of
//! envelope bytes in front of Redis that stays consistent across instances.
//!
//! This module owns the tier's state (entries, the invalidation floors, the
//! serving deadline) and its protocol; `channel` runs the subscription and
//! the lease of one instance, `acks` the invalidator's listener for pushed
//! acknowledgements, `scripts` holds the Lua scripts, keys and the
//! message format. The hooks into the engine are in `cache/local.rs`.
//!
//! # What the tier holds
//!
//! Keyed by the full entry key: the envelope bytes a Redis hit returned,
//! the *read epoch* (the value of this tier's epoch counter loaded before
//! the `MGET` that returned them) and the floor slots of every version key
//! the envelope depends on (its own and those inherited from nested calls).
//! A local hit re-checks the envelope's soft and hard expiry; a stale or
//! expired entry falls through to Redis. Bounded by entries and bytes (a
//! weigher, see [`LocalConfig`]) and by the configured time to live.
//!
//! # Guarantee 2 across instances: the protocol
//!
//! Once an invalidation has returned on any instance, no instance serves a
//! value computed before it from its local tier. The steps, each with the
//! test in `tests/local_tier.rs` that breaks when the step is removed:
//!
//! 1. **Subscribe, then register, then serve.** An instance with a tier
//!    subscribes to `{prefix}:local:invalidations` (a dedicated pub/sub
//!    connection), waits for the subscription's confirmation, drops its
//!    whole tier, and only then registers a fresh id in the sorted set
//!    `{prefix}:local:instances` with a lease (score: expiry in Redis
//!    server time). It serves locally only after the registration returned.
//!    An invalidator that sees the registration therefore publishes to a
//!    channel the instance already hears. Test:
//!    `a_killed_subscription_stops_local_hits_and_drops_everything` (and
//!    `cluster_…` of the same name).
//! 2. **Bump, then publish, in one script.** Every invalidation of a Redis
//!    cache (`delete`, tags, tenant, `#[cache_evict]`, `clear`, and their
//!    retries), with or without a tier of its own, bumps the versions and,
//!    in the same script, reads the live registrations and publishes the
//!    message naming the bumped version keys. The set of instances to wait
//!    for is exactly those registered when the message was published.
//!    Test: `an_invalidation_on_one_instance_is_seen_by_another` (a checker
//!    with a negative control that skips the channel). On a Redis Cluster
//!    see "On a Redis Cluster" below: the bumps return first, then one
//!    script publishes.
//! 3. **Apply, then acknowledge.** An instance receiving a message raises
//!    the floor of every named version key to a new epoch (`Floors`), then
//!    adds its id to the message's acknowledgement set. An entry is served
//!    only if no floor of its dependencies is above its read epoch. An entry
//!    whose `MGET` was sent before the message was applied has a smaller
//!    read epoch, so it is refused even when it is inserted after the
//!    acknowledgement (the in-flight race); an entry read after it was
//!    applied was read after the bump (the publish follows the bump), so it
//!    is current. Same test, and the unit test
//!    `an_entry_read_before_a_raise_is_refused_even_when_inserted_after`.
//! 4. **Wait for every live instance.** The invalidator returns once each
//!    instance registered at publish time has acknowledged, or its lease has
//!    run out (server time), or it deregistered. An instance that has not
//!    acknowledged within the acknowledgement timeout (250 ms) is evicted:
//!    its id goes into `{prefix}:local:evicted`, which refuses its next
//!    renewal, and the invalidator waits until its lease has run out. An
//!    evicted id stays in the registry until then, since the instance
//!    serves locally until the refusal reaches it: an invalidation
//!    published meanwhile (by another invalidator) waits for it too.
//!    Only the acknowledgement sets and the registry decide (the `WAIT`
//!    and `EVICT` scripts); *when* the invalidator looks is a matter of
//!    latency: an instance that acknowledges also publishes the message id
//!    to the invalidator's reply channel (see `acks`), which wakes the waiting invalidation to run `WAIT`
//!    at once, and a fallback timer (1 ms growing to 5 ms) finds
//!    acknowledgements that were not pushed.
//!    Tests: `a_paused_instance_delays_an_invalidation_by_at_most_a_lease`,
//!    `an_instance_evicted_by_one_invalidation_is_still_waited_for_by_the_next`,
//!    `a_pushed_acknowledgement_ends_the_wait_at_once`,
//!    `an_instance_that_only_adds_to_the_ack_set_is_found_by_polling`,
//!    and the multi-process checker in `tests/local_tier_processes.rs`.
//! 5. **No lease, no local hits.** An instance serves locally only before a
//!    local monotonic deadline: the time it *sent* its last successful
//!    renewal plus three quarters of the lease. Redis sets the lease expiry
//!    when it runs the renewal, later, to its time plus the whole lease, so
//!    the deadline passes at least a quarter lease (the margin for clock
//!    rates) before the expiry an invalidator waits for. A renewal is
//!    refused once the lease has run out or the id was evicted: the
//!    instance then goes back to step 1 with a new id (dropping everything).
//!    A closed subscription (killed connection, Redis restart) ends the
//!    session at once: the instance stops serving locally and reconnects.
//!    Tests: `a_killed_subscription_stops_local_hits_and_drops_everything`,
//!    `a_paused_instance_delays_an_invalidation_by_at_most_a_lease`, `no_lease_no_hits`,
//!    `a_restarted_redis_drops_everything`,
//!    `cluster_a_failover_of_the_registry_drops_everything`.
//! 6. **Same instance: immediate.** An invalidation applies its floors to the
//!    invalidator's own tier before it returns (before it waits for others),
//!    and does not wait for its own acknowledgement. A failed invalidation
//!    is pending (see `crate::invalidation`): while one is, the tier serves
//!    nothing, as the store serves nothing. Test: `same_instance_invalidation_is_immediate`.
//!
//! The protocol relies on: Redis running each script atomically and
//! delivering a connection's pub/sub messages in order, after the script
//! that published them; the server's clock (`TIME`) and the instances'
//! monotonic clocks running at rates within a quarter of each other over
//! one lease, and the server's clock not stepping back by more than the
//! margin; the kernel closing an instance's subscription when the Redis
//! process dies, before a restarted server answers an invalidation.
//!
//! Not covered (written here so nobody relies on it): the registry key
//! lost while an instance's subscription stays up (evicted under an
//! `allkeys-*` policy, a `FLUSHDB`): until that instance's next renewal
//! (at most a quarter lease) an invalidation does not wait for it (it
//! still receives the message).
//!
//! # On a Redis Cluster
//!
//! The same steps, with three changes, each keeping the argument above:
//!
//! - **Names.** The registry and the acknowledgement sets carry one hash
//!   tag, `{<prefix>.local}` (`<prefix>:local:{<prefix>.local}:instances`,
//!   `<prefix>:local:{<prefix>.local}:ack:<id>`), so the wait and evict
//!   scripts (step 4) read both in one slot. The channel keeps its name: a
//!   classic `PUBLISH` on a cluster node reaches subscribers on every node.
//! - **Bump, then publish, in two steps** (step 2). The version keys span
//!   slots, so no one script can bump them and publish. The per-slot bumps
//!   (the store's `bump`) run first; once every one has returned, the
//!   invalidation script runs on the registry's slot with the registry as
//!   its only key: it reads the live registrations and publishes. What
//!   step 3 needs still holds: the message is published after every bump
//!   it names has been applied by its master, so a read sent after the
//!   message was applied sees the bumps; and the set waited for is still
//!   exactly the instances registered when it was published. An
//!   invalidator that dies between the bumps and the publish never
//!   returned, so nothing was promised; one that fails there keeps the
//!   keys pending (`crate::invalidation`), and the retry runs the bumps and
//!   the publish again. Test: `cluster_an_invalidation_on_one_instance_is_seen_by_another`
//!   and its negative control.
//! - **The subscription is on the registry's master** (step 1), resolved
//!   again for every session (`CLUSTER KEYSLOT` and `CLUSTER NODES` on a
//!   live node). Losing that master loses the registry (a restart without
//!   persistence, a replica promoted without the latest registrations:
//!   replication is asynchronous), and it also closes the subscription, so
//!   the instance stops serving locally before any invalidator can see the
//!   smaller registry, exactly as a restarted single Redis. The scripts go
//!   through the cluster connection, routed by key. When the subscription
//!   is on another node than the registry (a failover between the two
//!   steps of a session start), messages still arrive through the cluster
//!   bus; a message that does not is an unacknowledged one, handled by
//!   step 4. Tests: `cluster_a_killed_subscription_stops_local_hits_and_drops_everything`,
//!   `cluster_a_failover_of_the_registry_drops_everything`,
//!   `cluster_a_paused_instance_delays_an_invalidation_by_at_most_a_lease`.
//!
//! Relied on in addition: the kernel closing the subscription when the
//! registry's master dies, before its replica is promoted. When the master's
//! machine dies or is partitioned away, no close arrives; the instance then
//! stops serving at its lease deadline (at most three quarters of a lease
//! after its last renewal, sent before the failure), and the promoted
//! replica answers no invalidation before `cluster-node-timeout` has
//! passed. So keep `cluster-node-timeout` at or above three quarters of
//! the lease (Redis' default 15 s against the default 2 s lease); with a
//! shorter timeout, an invalidation landing on a promoted replica that
//! lost a registration may return while that instance still serves. Not
//! covered: a partition that leaves the registry's old master reachable by
//! some instances while the other side promotes its replica (the old master
//! keeps renewing their leases until it notices, after
//! `cluster-node-timeout`; those renewals never reach the promoted replica),
//! an asynchronous failover as in guarantee 2's list. While
//! the registry's slot has no master, every invalidation fails and stays
//! pending (retried until the failover), as an invalidation of a slot
//! without a master does.
//!
//! # Message format
//!
//! A JSON object on `{prefix}:local:invalidations`, published by the bump
//! script: `{"v":1,"id":"<32 hex>","keys":["<version key>",..]}` for
//! versions bumped, `{"v":1,"id":"<32 hex>","all":true}` for a `clear`,
//! each with an optional `"reply":"<reply id>"` (1 to 64 of
//! `[0-9A-Za-z_-]`) when the invalidator listens for pushed
//! acknowledgements, and an optional `"from":"<instance id>"` naming the
//! invalidator's own registration (it applies the message itself, step 6,
//! and does not wait for that id; the instance with that id does not
//! acknowledge). Receivers acknowledge with
//! `SADD {prefix}:local:ack:<id> <instance id>` (on a cluster:
//! `{prefix}:local:{<prefix>.local}:ack:<id>`) and then, when the message
//! has a `reply`, `PUBLISH {prefix}:local:acks:<reply id> <id>` (one
//! script, `ACK`). The `SADD` is the acknowledgement; the `PUBLISH` only
//! wakes the invalidator, so a receiver that skips it (an older version,
//! another language) is still waited for correctly, found by the fallback
//! poll. A message that does not parse drops the receiver's whole tier; a
//! `reply` that is not a valid id is ignored.
//!
//! Other services publish the same way (step 2 is one script: bump only
//! existing counters, read the registry, publish; then step 4's wait; on a
//! cluster, the bumps per slot first and then the script with the registry
//! as its only key). A
//! bare `PUBLISH` would reach local tiers but not Redis readers, whose
//! version counters did not move. The public recipe, for any language
//! (key names, escaping, the script, a `redis-cli EVAL` example, the
//! wait), is in the docs of `crate::events`, whose `INVALIDATE_SCRIPT` and
//! `WAIT_SCRIPT` are the scripts here; a unit test there keeps the
//! documented script equal to the one that runs. Test: `tests/events.rs`.

pub(crate) mod acks;
pub(crate) mod channel;
pub(crate) mod scripts;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Floor slots: version keys hash into this many (a collision only drops
/// more than needed). 32 KiB per tier.
const SLOTS: usize = 4096;

/// The tier's configuration, from the builder.
#[derive(Debug, Clone)]
pub(crate) struct LocalConfig {
    /// The most entries held.
    pub max_entries: u64,
    /// The most bytes held (key, envelope and bookkeeping of each entry).
    pub max_bytes: u64,
    /// How long an entry stays in the tier at most.
    pub ttl: Duration,
    /// The registration lease.
    pub lease: Duration,
}

/// Default byte bound when only `local_cache` is set: 64 MiB.
pub(crate) const DEFAULT_BYTES: u64 = 64 << 20;

/// Bookkeeping bytes counted per entry beside its key and envelope.
const ENTRY_OVERHEAD: u64 = 96;

/// One entry of the tier.
pub(crate) struct Entry {
    pub raw: Box<[u8]>,
    /// The fingerprint of the version keys of the call that read it from
    /// Redis (`Spec::call` in `cache`): served only to calls of the same.
    pub call: u64,
    read_epoch: u64,
    slots: Box<[u16]>,
}

/// Invalidation floors: a global epoch counter, a floor per slot of version
/// keys and one for everything. See step 3 of the protocol.
pub(crate) struct Floors {
    epoch: AtomicU64,
    all: AtomicU64,
    slots: Box<[AtomicU64]>,
}

impl Floors {
    fn new() -> Self {
        Self {
            epoch: AtomicU64::new(1),
            all: AtomicU64::new(0),
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The read epoch of a lookup starting now.
    pub(crate) fn begin(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    fn next(&self) -> u64 {
        self.epoch.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Every entry read before now that depends on one of `keys` is refused.
    pub(crate) fn raise<'a>(&self, keys: impl IntoIterator<Item = &'a str>) {
        let e = self.next();
        for k in keys {
            self.slots[usize::from(slot(k))].fetch_max(e, Ordering::SeqCst);
        }
    }

    /// Every entry read before now is refused.
    pub(crate) fn raise_all(&self) {
        let e = self.next();
        self.all.fetch_max(e, Ordering::SeqCst);
    }

    fn valid(&self, entry: &Entry) -> bool {
        self.all.load(Ordering::SeqCst) <= entry.read_epoch
            && entry
                .slots
                .iter()
                .all(|s| self.slots[usize::from(*s)].load(Ordering::SeqCst) <= entry.read_epoch)
    }
}

fn slot(key: &str) -> u16 {
    #[allow(clippy::cast_possible_truncation)]
    let s = (xxhash_rust::xxh3::xxh3_64(key.as_bytes()) % SLOTS as u64) as u16;
    s
}

/// The local tier of one cache.
pub(crate) struct LocalTier {
    entries: moka::sync::Cache<String, Arc<Entry>>,
    pub(crate) floors: Floors,
    pub(crate) config: LocalConfig,
    base: Instant,
    /// Local hits are served only while `base.elapsed()` (ms) is below this.
    serving_until_ms: AtomicU64,
    /// This instance's registration id while registered.
    id: Mutex<Option<String>>,
    /// The subscription task: started on first use, told to deregister
    /// and end when the tier is dropped.
    pub(crate) task: Background,
}

impl std::fmt::Debug for LocalTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalTier")
            .field("config", &self.config)
            .field("entries", &self.entries.entry_count())
            .finish_non_exhaustive()
    }
}

impl LocalTier {
    pub(crate) fn new(config: LocalConfig) -> Self {
        // Each entry weighs at least `max_bytes / max_entries`: the byte
        // bound then also bounds the number of entries.
        let min_weight = (config.max_bytes / config.max_entries.max(1)).max(1);
        let entries = moka::sync::Cache::builder()
            .max_capacity(config.max_bytes)
            .time_to_live(config.ttl)
            .weigher(move |k: &String, e: &Arc<Entry>| {
                let bytes = k.len() as u64 + e.raw.len() as u64 + 2 * e.slots.len() as u64;
                u32::try_from((bytes + ENTRY_OVERHEAD).max(min_weight)).unwrap_or(u32::MAX)
            })
            .build();
        Self {
            entries,
            floors: Floors::new(),
            config,
            base: Instant::now(),
            serving_until_ms: AtomicU64::new(0),
            id: Mutex::new(None),
            task: Background::default(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether local hits may be served now (step 5).
    pub(crate) fn serving(&self) -> bool {
        self.now_ms() < self.serving_until_ms.load(Ordering::SeqCst)
    }

    /// A renewal sent at `sent` succeeded: serve until three quarters of the
    /// lease after it.
    pub(crate) fn serve_from(&self, sent: Instant) {
        let sent_ms = u64::try_from(sent.saturating_duration_since(self.base).as_millis())
            .unwrap_or(u64::MAX);
        let lease = self.config.lease;
        let until = sent_ms
            .saturating_add(u64::try_from((lease - lease / 4).as_millis()).unwrap_or(u64::MAX));
        self.serving_until_ms.store(until, Ordering::SeqCst);
    }

    pub(crate) fn stop_serving(&self) {
        self.serving_until_ms.store(0, Ordering::SeqCst);
    }

    pub(crate) fn set_id(&self, id: Option<String>) {
        *self.id.lock().unwrap_or_else(PoisonError::into_inner) = id;
    }

    pub(crate) fn id(&self) -> Option<String> {
        self.id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The entry of `key`, if it may be served: the instance holds its lease
    /// and no invalidation applied here since its read names a dependency.
    pub(crate) fn get(&self, key: &str) -> Option<Arc<Entry>> {
        if !self.serving() {
            return None;
        }
        let entry = self.entries.get(key)?;
        if self.floors.valid(&entry) {
            Some(entry)
        } else {
            self.entries.invalidate(key);
            None
        }
    }

    /// [`LocalTier::insert_call`] for a call of fingerprint 0.
    #[cfg(test)]
    pub(crate) fn insert<'a>(
        &self,
        key: &str,
        read_epoch: u64,
        raw: &[u8],
        deps: impl Iterator<Item = &'a str>,
    ) {
        self.insert_call(key, read_epoch, raw, deps, 0);
    }

    /// Keeps the envelope `raw` of `key`, read at `read_epoch` by a call of
    /// fingerprint `call`, depending on `deps`.
    pub(crate) fn insert_call<'a>(
        &self,
        key: &str,
        read_epoch: u64,
        raw: &[u8],
        deps: impl Iterator<Item = &'a str>,
        call: u64,
    ) {
        let entry = Entry {
            raw: raw.into(),
            call,
            read_epoch,
            slots: deps.map(slot).collect(),
        };
        // Already refused: not worth a slot.
        if self.floors.valid(&entry) {
            self.entries.insert(key.to_owned(), Arc::new(entry));
        }
    }

    /// Drops an entry that turned out unusable (expired, undecodable).
    pub(crate) fn remove(&self, key: &str) {
        self.entries.invalidate(key);
    }

    /// Drops everything (reconnection, `clear`, a changed server).
    pub(crate) fn drop_all(&self) {
        self.floors.raise_all();
        self.entries.invalidate_all();
    }

    /// Entries held (approximate, as moka counts).
    pub(crate) fn len(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }

    /// Bytes held by the weigher's count (the memory report's `local_bytes`).
    pub(crate) fn weighted_size(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }
}

/// A background task of its owner (the tier's subscription, the
/// acknowledgement listener): started once, and told to end when the owner
/// is dropped.
#[derive(Debug, Default)]
pub(crate) struct Background {
    started: AtomicBool,
    closed: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl Background {
    pub(crate) fn started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// For the first caller only: the receiver the task ends on, which
    /// fires when this is dropped.
    pub(crate) fn start(&self) -> Option<tokio::sync::oneshot::Receiver<()>> {
        if self.started.swap(true, Ordering::AcqRel) {
            return None;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        *self.closed.lock().unwrap_or_else(PoisonError::into_inner) = Some(tx);
        Some(rx)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(tx) = self
            .closed
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = tx.send(());
        }
    }
}

#[cfg(test)]
mod tests;
