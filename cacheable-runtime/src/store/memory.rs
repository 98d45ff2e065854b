//! The embedded in-process store behind `Cache::memory()`.
//!
//! Same semantics as the Redis store (compare-and-set writes that check the
//! snapshotted dependency versions, version counters with expiry, leases,
//! the tenant quota), on a [`moka`] cache bounded in bytes.
//!
//! # Bound
//!
//! Every key is weighed as `key.len() + value.len() +` [`ENTRY_OVERHEAD`]
//! bytes, and moka keeps the sum under the capacity
//! (`CacheBuilder::memory_capacity`, default [`DEFAULT_CAPACITY`]) by evicting
//! the least recently used keys. Moka applies writes to its eviction policy
//! in batches: between two batches the weighed size can run over by at most
//! the pending writes (a few hundred keys); every write past that point runs
//! the batch inline, so a flood never grows the store beyond that.
//! `used_memory` reports the weighed size after running the pending batch.
//!
//! Each key expires on its own deadline (moka's [`Expiry`], from the deadline
//! stored in the slot); reads check the deadline too, so an expired key is
//! never seen even before moka drops it.
//!
//! Deadlines are read on the cache's clock (`crate::clock`). Moka's own
//! expiry runs on the real clock, so under a custom clock (a test's fake
//! one) it is turned off: an expired key is then invisible to reads (its
//! deadline is checked) and stays until the capacity evicts it, and no key
//! is dropped early because real time ran ahead of the fake clock.
//!
//! # Why evicting any key is safe
//!
//! Eviction needs no coordination with the consistency protocol (`cache`
//! module docs): an evicted entry is a miss; an evicted version counter is no
//! version, which matches nothing (step 1), and is recreated at a fresh
//! version that never repeats an old one (step 3); a write whose dependency
//! counter was evicted since its snapshot is refused (step 4); an evicted
//! lease lets a second caller compute (stampede control degrades, never
//! correctness); an evicted quota counter forgets part of a tenant's
//! window, as Redis' `allkeys-lru` would. So plain size-based eviction, which
//! Redis itself does under `maxmemory`, is all this needs.
//!
//! LRU rather than moka's default TinyLFU: TinyLFU may refuse to admit a new
//! key that is colder than the victims, and a store that drops a counter it
//! was just asked to create (`ensure`) would refuse the very write that
//! follows (step 4) for every new tag while the store is full. Like Redis, a
//! write here is always kept until it is the least recently used.
//!
//! # Atomicity
//!
//! Multi-key operations (`put`, `bump`, `ensure`, `clear`, `try_lease`,
//! `release`) are serialized by one writer mutex held around their
//! read-check-write: each is atomic with respect to the others, as Redis runs
//! each script alone. Moka's per-key entry API would not do: `put` checks
//! several keys (the dependency counters, the entry, the quota counters)
//! before writing several. The mutex is held for microseconds and never
//! across an `.await`.
//!
//! Reads (`mget`) take no lock and read each key atomically, not all keys at
//! one instant. That is enough: a reader serves an entry only if every
//! dependency counter it reads after the entry holds the entry's version.
//! An invalidation that returned before the read started has changed (or
//! removed) a counter before the reader reads it, so the reader sees a
//! mismatch; a read that overlaps an invalidation may see it partly, which
//! is allowed (it has not returned). A write that a reader sees half done
//! (the quota counter updated, the entry not yet, or the entry written and
//! its dependency counters not yet kept alive longer) is a state the reader
//! could have read at one instant anyway.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;

use super::{Put, Store, parse_version};
use crate::clock::AnyClock;
use crate::error::CacheError;

/// Default capacity of the memory store: 64 MiB.
pub(crate) const DEFAULT_CAPACITY: u64 = 64 * 1024 * 1024;

/// Bytes counted per key beyond its key and value: moka's entry (the key's
/// `Arc`, the value entry with its timestamps and order-queue nodes, the
/// hash-table slot) plus this store's slot and its heap allocations. Chosen
/// so that the capacity is what the process pays: the
/// `memory_store_overhead_per_key` test fills a 64 MiB store with a million
/// 20-byte keys of 16-byte values and the resident set grows by 64.2 MiB
/// (about 514 bytes per key kept).
pub(crate) const ENTRY_OVERHEAD: u64 = 480;

#[derive(Debug)]
struct Slot {
    value: Box<[u8]>,
    expires: Instant,
}

impl Slot {
    fn live(&self, now: Instant) -> bool {
        self.expires > now
    }
}

/// Expires each key at the deadline in its slot.
struct Deadline;

impl Expiry<String, Arc<Slot>> for Deadline {
    fn expire_after_create(&self, _: &String, slot: &Arc<Slot>, now: Instant) -> Option<Duration> {
        Some(slot.expires.saturating_duration_since(now))
    }

    fn expire_after_update(
        &self,
        _: &String,
        slot: &Arc<Slot>,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(slot.expires.saturating_duration_since(now))
    }
}

fn weigh(key: &str, slot: &Slot) -> u32 {
    u32::try_from(key.len() as u64 + slot.value.len() as u64 + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
}

pub(crate) struct MemoryStore {
    keys: Cache<String, Arc<Slot>>,
    /// Serializes the multi-key operations (see the module docs).
    writer: Mutex<()>,
    capacity: u64,
    clock: AnyClock,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("capacity", &self.capacity)
            .field("keys", &self.keys.entry_count())
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// A store that holds at most `capacity` weighed bytes (see the module docs).
    #[cfg(test)]
    pub(crate) fn new(capacity: u64) -> Self {
        Self::with_clock(capacity, AnyClock::System)
    }

    /// The same, with its deadlines on `clock`.
    pub(crate) fn with_clock(capacity: u64, clock: AnyClock) -> Self {
        let mut keys = Cache::builder()
            .max_capacity(capacity)
            .weigher(|k: &String, s: &Arc<Slot>| weigh(k, s))
            .eviction_policy(EvictionPolicy::lru());
        if clock.is_system() {
            keys = keys.expire_after(Deadline);
        }
        Self {
            keys: keys.build(),
            writer: Mutex::new(()),
            capacity,
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, key: &str, now: Instant) -> Option<Arc<Slot>> {
        self.keys.get(key).filter(|s| s.live(now))
    }

    fn insert(&self, key: &str, value: Box<[u8]>, expires: Instant) {
        self.keys
            .insert(key.to_owned(), Arc::new(Slot { value, expires }));
    }

    fn counter(&self, key: &str, now: Instant) -> u64 {
        self.get(key, now)
            .and_then(|s| std::str::from_utf8(&s.value).ok()?.parse().ok())
            .unwrap_or(0)
    }

    /// The version stored at `key`, if it is a valid one (as Redis' scripts
    /// judge it: see [`parse_version`]).
    fn version(&self, key: &str, now: Instant) -> Option<u64> {
        parse_version(self.get(key, now).as_deref().map(|s| &*s.value))
    }

    /// The weighed size once moka's pending writes are applied: at most the
    /// capacity.
    pub(crate) fn weighed_size(&self) -> u64 {
        self.keys.run_pending_tasks();
        self.keys.weighted_size()
    }

    /// The capacity in weighed bytes.
    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }
}

impl Store for MemoryStore {
    async fn mget(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        let now = self.clock.now();
        Ok(keys
            .iter()
            .map(|k| self.get(k, now).map(|s| s.value.to_vec()))
            .collect())
    }

    async fn put(&self, put: &Put<'_>) -> Result<bool, CacheError> {
        let _writer = self.lock();
        let now = self.clock.now();
        // A version that moved, expired or went bad since the snapshot: the
        // entry could never be read, so it is not written.
        if put
            .deps
            .iter()
            .zip(put.versions)
            .any(|(k, v)| self.version(k, now) != Some(*v))
        {
            return Ok(false);
        }
        if !put
            .expect
            .matches(self.get(put.key, now).as_deref().map(|s| &*s.value))
        {
            return Ok(false);
        }
        if let Some(q) = &put.quota {
            let size = put.value.len() as u64;
            let used = self.counter(&q.keys[0], now) + size;
            if used + self.counter(&q.keys[1], now) > q.limit {
                return Err(CacheError::Quota { limit: q.limit });
            }
            self.insert(
                &q.keys[0],
                used.to_string().into_bytes().into(),
                deadline(now, q.window.saturating_mul(2)),
            );
        }
        let expires = deadline(now, put.ttl);
        self.insert(put.key, put.value.into(), expires);
        // Keep every dependency counter alive at least as long as the entry.
        for dep in put.deps {
            if let Some(slot) = self.get(dep, now)
                && slot.expires < expires
            {
                self.insert(dep, slot.value.clone(), expires);
            }
        }
        Ok(true)
    }

    async fn bump(&self, keys: &[String]) -> Result<(), CacheError> {
        let _writer = self.lock();
        let now = self.clock.now();
        for key in keys {
            let Some(slot) = self.get(key, now) else {
                continue;
            };
            // Redis' INCR stops at i64::MAX; so does this.
            match parse_version(Some(&slot.value)).filter(|v| *v < i64::MAX as u64) {
                Some(v) => self.insert(key, (v + 1).to_string().into_bytes().into(), slot.expires),
                None => self.keys.invalidate(key.as_str()),
            }
        }
        Ok(())
    }

    async fn ensure(
        &self,
        keys: &[String],
        fresh: u64,
        ttl: Duration,
    ) -> Result<Vec<u64>, CacheError> {
        let _writer = self.lock();
        let now = self.clock.now();
        Ok(keys
            .iter()
            .map(|key| {
                self.version(key, now).unwrap_or_else(|| {
                    self.insert(
                        key,
                        fresh.to_string().into_bytes().into(),
                        deadline(now, ttl),
                    );
                    fresh
                })
            })
            .collect())
    }

    async fn clear(&self, prefix: &str) -> Result<u64, CacheError> {
        let head = format!("{prefix}:{{");
        let _writer = self.lock();
        let now = self.clock.now();
        let mut removed = 0;
        for (key, _) in &self.keys {
            if key.starts_with(&head) && self.keys.remove(key.as_str()).is_some_and(|s| s.live(now))
            {
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn try_lease(&self, key: &str, token: &str, ttl: Duration) -> Result<bool, CacheError> {
        let _writer = self.lock();
        let now = self.clock.now();
        if self.get(key, now).is_some() {
            return Ok(false);
        }
        self.insert(key, token.as_bytes().into(), deadline(now, ttl));
        Ok(true)
    }

    async fn release(&self, key: &str, token: &str) -> Result<(), CacheError> {
        let _writer = self.lock();
        if self
            .get(key, self.clock.now())
            .is_some_and(|s| &*s.value == token.as_bytes())
        {
            self.keys.invalidate(key);
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), CacheError> {
        Ok(())
    }

    async fn server_id(&self) -> Result<Option<String>, CacheError> {
        Ok(None)
    }

    async fn used_memory(&self) -> Result<Option<u64>, CacheError> {
        Ok(Some(self.weighed_size()))
    }

    /// No server here: callers decide in the process (the rate limiter's
    /// local limiter is what `Cache::memory()` limits with).
    fn runs_scripts(&self) -> bool {
        false
    }

    async fn eval_script(
        &self,
        _script: &super::Lua,
        _keys: &[&str],
        _args: &[i64],
    ) -> Result<Vec<i64>, CacheError> {
        Err(CacheError::Unsupported(
            "server-side scripts (the memory store runs none)",
        ))
    }
}

/// `now + ttl`, saturating: `Instant + Duration` panics on overflow, and a
/// TTL is configuration (capped at `MAX_TTL` by the builder and the options,
/// but the store does not rely on it). 100 years is "never" here.
fn deadline(now: Instant, ttl: Duration) -> Instant {
    now.checked_add(ttl)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

#[cfg(test)]
#[path = "memory_tests.rs"]
mod tests;
