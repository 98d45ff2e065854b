//! The embedded in-process store behind `Cache::memory()`.
//!
//! Same semantics as the Redis store (compare-and-set, version counters with
//! expiry, leases), under one mutex. Expired keys are dropped when touched and
//! by a sweep every few thousand writes, so memory stays bounded by live keys.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::{Put, Store, parse_version};
use crate::error::CacheError;

#[derive(Debug, Default)]
pub(crate) struct MemoryStore {
    map: Mutex<Map>,
}

#[derive(Debug, Default)]
struct Map {
    keys: HashMap<String, Slot>,
    writes: u64,
}

#[derive(Debug)]
struct Slot {
    value: Vec<u8>,
    expires: Option<Instant>,
}

impl Slot {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| e > now)
    }
}

impl Map {
    fn get(&self, key: &str, now: Instant) -> Option<&Slot> {
        self.keys.get(key).filter(|s| s.live(now))
    }

    fn insert(&mut self, key: &str, value: Vec<u8>, expires: Option<Instant>, now: Instant) {
        self.writes += 1;
        if self.writes.is_multiple_of(4096) {
            self.keys.retain(|_, s| s.live(now));
        }
        self.keys.insert(key.to_owned(), Slot { value, expires });
    }

    fn counter(&self, key: &str, now: Instant) -> u64 {
        self.get(key, now)
            .and_then(|s| std::str::from_utf8(&s.value).ok()?.parse().ok())
            .unwrap_or(0)
    }

    /// The version stored at `key`, if it is a valid one (as Redis' scripts
    /// judge it: see [`parse_version`]).
    fn version(&self, key: &str, now: Instant) -> Option<u64> {
        parse_version(self.get(key, now).map(|s| s.value.as_slice()))
    }
}

impl MemoryStore {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Map> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store for MemoryStore {
    async fn mget(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        let now = Instant::now();
        let map = self.lock();
        Ok(keys
            .iter()
            .map(|k| map.get(k, now).map(|s| s.value.clone()))
            .collect())
    }

    async fn put(&self, put: &Put<'_>) -> Result<bool, CacheError> {
        let now = Instant::now();
        let mut map = self.lock();
        // A version that moved, expired or went bad since the snapshot: the
        // entry could never be read, so it is not written.
        if put
            .deps
            .iter()
            .zip(put.versions)
            .any(|(k, v)| map.version(k, now) != Some(*v))
        {
            return Ok(false);
        }
        if !put
            .expect
            .matches(map.get(put.key, now).map(|s| s.value.as_slice()))
        {
            return Ok(false);
        }
        if let Some(q) = &put.quota {
            let size = put.value.len() as u64;
            let used = map.counter(&q.keys[0], now) + size;
            if used + map.counter(&q.keys[1], now) > q.limit {
                return Err(CacheError::Quota { limit: q.limit });
            }
            map.insert(
                &q.keys[0],
                used.to_string().into_bytes(),
                Some(deadline(now, q.window.saturating_mul(2))),
                now,
            );
        }
        map.insert(
            put.key,
            put.value.to_vec(),
            Some(deadline(now, put.ttl)),
            now,
        );
        let min_expiry = deadline(now, put.ttl);
        for dep in put.deps {
            if let Some(slot) = map.keys.get_mut(dep.as_str())
                && let Some(e) = slot.expires
                && e < min_expiry
            {
                slot.expires = Some(min_expiry);
            }
        }
        Ok(true)
    }

    async fn bump(&self, keys: &[String]) -> Result<(), CacheError> {
        let now = Instant::now();
        let mut map = self.lock();
        for key in keys {
            let Some(slot) = map.get(key, now) else {
                continue;
            };
            let expires = slot.expires;
            // Redis' INCR stops at i64::MAX; so does this.
            match map.version(key, now).filter(|v| *v < i64::MAX as u64) {
                Some(v) => map.insert(key, (v + 1).to_string().into_bytes(), expires, now),
                None => {
                    map.keys.remove(key.as_str());
                }
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
        let now = Instant::now();
        let mut map = self.lock();
        Ok(keys
            .iter()
            .map(|key| {
                map.version(key, now).unwrap_or_else(|| {
                    map.insert(
                        key,
                        fresh.to_string().into_bytes(),
                        Some(deadline(now, ttl)),
                        now,
                    );
                    fresh
                })
            })
            .collect())
    }

    async fn clear(&self, prefix: &str) -> Result<u64, CacheError> {
        let head = format!("{prefix}:{{");
        let mut map = self.lock();
        let before = map.keys.len();
        map.keys.retain(|k, _| !k.starts_with(&head));
        Ok((before - map.keys.len()) as u64)
    }

    async fn try_lease(&self, key: &str, token: &str, ttl: Duration) -> Result<bool, CacheError> {
        let now = Instant::now();
        let mut map = self.lock();
        if map.get(key, now).is_some() {
            return Ok(false);
        }
        map.insert(
            key,
            token.as_bytes().to_vec(),
            Some(deadline(now, ttl)),
            now,
        );
        Ok(true)
    }

    async fn release(&self, key: &str, token: &str) -> Result<(), CacheError> {
        let now = Instant::now();
        let mut map = self.lock();
        if map
            .get(key, now)
            .is_some_and(|s| s.value == token.as_bytes())
        {
            map.keys.remove(key);
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
        let map = self.lock();
        Ok(Some(
            map.keys
                .iter()
                .map(|(k, s)| (k.len() + s.value.len() + 48) as u64)
                .sum(),
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
