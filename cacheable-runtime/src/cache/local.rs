//! The engine's hooks into the local tier (`crate::local`, whose module
//! docs hold the protocol): a local hit before the Redis read, keeping a
//! Redis hit in the tier, and the invalidation's bump, publish and wait for
//! acknowledgements (which every Redis cache runs, with a tier or not).

use super::*;
use crate::local::acks::Waiter;
use crate::local::channel::{Conn, Link};
use crate::local::scripts::{self, Drop as What, Keys};
use crate::local::{LocalTier, channel};

/// How long an invalidation waits for acknowledgements before it evicts
/// the instances that did not answer and waits for their leases instead.
const ACK_TIMEOUT: Duration = Duration::from_millis(250);

/// What the local tier said about a read.
pub(super) enum LocalRead<V> {
    /// Served locally.
    Hit(Hit<V>),
    /// Not there (or not servable): read Redis, and keep a hit under this
    /// read epoch (0: the tier is off for this call).
    Miss(u64),
}

impl Cache {
    /// The tier, with its subscription task started (on first use, on the
    /// caller's runtime).
    fn local_tier(&self) -> Option<&Arc<LocalTier>> {
        let tier = self.inner.local.as_ref()?;
        if !tier.task.started() {
            self.start_local(tier);
        }
        Some(tier)
    }

    fn start_local(&self, tier: &Arc<LocalTier>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Some((link, keys)) = self.local_link() else {
            return;
        };
        let Some(rx) = tier.task.start() else {
            return;
        };
        let wiring = channel::Wiring {
            link,
            keys,
            op_timeout: self.inner.op_timeout,
        };
        runtime.spawn(channel::run(Arc::downgrade(tier), wiring, rx));
    }

    /// The Redis the protocol runs on and its names (`None` on the memory store).
    fn local_link(&self) -> Option<(Link, Keys)> {
        let prefix = &self.inner.prefix;
        match &*self.inner.store {
            AnyStore::Redis(store) => Some((
                Link::Single(store.client(), store.connection()),
                Keys::new(prefix),
            )),
            AnyStore::Cluster(store) => {
                Some((Link::Cluster(Arc::clone(store)), Keys::cluster(prefix)))
            }
            AnyStore::Memory(_) => None,
        }
    }

    /// A fresh local hit, or the read epoch for the Redis read that follows.
    /// A stale, expired or early-refresh entry falls through to Redis,
    /// which handles those.
    pub(super) fn local_read<V: DeserializeOwned>(
        &self,
        spec: &Spec,
        early_refresh: bool,
    ) -> LocalRead<V> {
        if !spec.local {
            return LocalRead::Miss(0);
        }
        let Some(tier) = self.local_tier() else {
            return LocalRead::Miss(0);
        };
        // Before the Redis read (step 3): what is read after this epoch may
        // be kept.
        let epoch = tier.floors.begin();
        let Some(entry) = tier.get(&spec.keys[0]) else {
            return LocalRead::Miss(epoch);
        };
        // Kept by a call with other version keys (a tag rendered from a
        // skipped argument): not this call's entry. Redis decides, and a
        // current hit there replaces it.
        if entry.call != spec.call {
            return LocalRead::Miss(epoch);
        }
        let Ok(env) = envelope::decode(&entry.raw) else {
            tier.remove(&spec.keys[0]);
            return LocalRead::Miss(epoch);
        };
        let now = now_ms();
        if now >= env.fresh_until_ms
            || (early_refresh && read::xfetch_due(now, env.fresh_until_ms, env.compute_us))
        {
            return LocalRead::Miss(epoch);
        }
        let Ok(value) = codec::decode::<V>(env.payload) else {
            tier.remove(&spec.keys[0]);
            return LocalRead::Miss(epoch);
        };
        LocalRead::Hit(Hit::of(value, now, &env, spec, true))
    }

    /// A local hit for a call whose spec holds its entry key only
    /// (`Cache::site_entry`): the version keys are built only when this
    /// misses. `None` whenever `lookup` would not read the tier first (an
    /// invalidation pending, a server to check) or a `debug::capture_keys`
    /// runs (it records every key of the call, so they are built).
    pub(super) fn local_first<V: DeserializeOwned>(&self, spec: &Spec) -> Option<Hit<V>> {
        if !spec.local
            || self.inner.local.is_none()
            || self.inner.pending.active()
            || self.inner.server.suspect()
            || crate::debug::capturing()
        {
            return None;
        }
        match self.local_read::<V>(spec, true) {
            LocalRead::Hit(hit) => Some(hit),
            LocalRead::Miss(_) => None,
        }
    }

    /// Keeps a current Redis hit read at `epoch` in the tier.
    pub(super) fn local_keep(&self, spec: &Spec, epoch: u64, raw: &[u8], deps: &[DepRef<'_>]) {
        if epoch == 0 {
            return;
        }
        if let Some(tier) = &self.inner.local {
            tier.insert_call(
                &spec.keys[0],
                epoch,
                raw,
                deps.iter().map(|d| d.key),
                spec.call,
            );
        }
    }

    /// Drops this instance's whole tier (the server changed).
    pub(super) fn local_drop_all(&self) {
        if let Some(tier) = &self.inner.local {
            tier.drop_all();
        }
    }

    /// Entries in this cache's local tier (0 without one).
    pub fn local_entries(&self) -> u64 {
        self.inner.local.as_ref().map_or(0, |t| t.len())
    }

    /// A store operation, through the breaker or (retries) only bounded by
    /// the operation timeout.
    async fn step<T>(
        &self,
        through_breaker: bool,
        fut: impl Future<Output = Result<T, CacheError>>,
    ) -> Result<T, CacheError> {
        if through_breaker {
            self.op(fut).await
        } else {
            tokio::time::timeout(self.inner.op_timeout, fut)
                .await
                .map_err(|_| CacheError::Timeout(self.inner.op_timeout))?
        }
    }

    /// Bumps `keys` and, on Redis, tells every instance's local tier before
    /// returning (steps 2, 4 and 6).
    pub(super) async fn bump_announced(
        &self,
        keys: &[String],
        through_breaker: bool,
    ) -> Result<(), CacheError> {
        match &*self.inner.store {
            // No local tier runs on the memory store.
            store @ AnyStore::Memory(_) => self.step(through_breaker, store.bump(keys)).await,
            _ => {
                self.announce(keys, What::Keys(keys.to_vec()), through_breaker)
                    .await
            }
        }
    }

    /// After a `clear`: every instance drops its whole tier.
    pub(super) async fn announce_all(&self, through_breaker: bool) -> Result<(), CacheError> {
        match &*self.inner.store {
            AnyStore::Memory(_) => Ok(()),
            _ => self.announce(&[], What::All, through_breaker).await,
        }
    }

    /// Step 2: bump, then publish. On a single Redis, one script does both;
    /// on a Redis Cluster the version keys span slots, so the per-slot bumps
    /// run first and, once they have all returned, the same script runs on
    /// the registry's slot with no version key: it reads the registrations
    /// and publishes. Either way the message follows its bump and names
    /// exactly the instances registered when it was published. A retry
    /// (`crate::invalidation`) runs all of it again, the publish included.
    async fn announce(
        &self,
        bump: &[String],
        what: What,
        through_breaker: bool,
    ) -> Result<(), CacheError> {
        let s = scripts::scripts();
        let Some((link, names)) = self.local_link() else {
            return Ok(());
        };
        let msg_id = scripts::new_id();
        // Registered before the publish: a push that comes before the wait
        // starts is kept (see `crate::local::acks`).
        let waiter = self.inner.acks.waiter(&msg_id);
        // This instance's registration, named in the message so that its
        // own subscription does not acknowledge what nobody waits for.
        // Read once, for the message and the wait alike: whichever
        // registration it is, this instance applies the message itself (step
        // 6), so not waiting for it is safe.
        let me = self.inner.local.as_ref().and_then(|tier| tier.id());
        let message = scripts::message(
            &msg_id,
            waiter.as_ref().map(Waiter::reply),
            me.as_deref(),
            &what,
        );
        let args = [names.channel.as_bytes(), message.as_bytes()];
        let mut keys: Vec<&str> = Vec::with_capacity(bump.len() + 1);
        if let Link::Cluster(store) = &link {
            if !bump.is_empty() {
                self.step(through_breaker, store.bump(bump)).await?;
            }
        } else {
            keys.extend(bump.iter().map(String::as_str));
        }
        keys.push(&names.registry);
        // Not through the breaker: no I/O but the cluster's first connect,
        // and the script just below is.
        let mut conn = self.step(false, link.conn()).await?;
        let live: Vec<String> = self
            .step(through_breaker, async {
                Ok(s.bump_announce.run(&mut conn, &keys, &args).await?)
            })
            .await?;
        // Step 6: this instance at once, without its own acknowledgement.
        if let Some(tier) = &self.inner.local {
            match &what {
                What::Keys(keys) => tier.floors.raise(keys.iter().map(String::as_str)),
                What::All => tier.drop_all(),
            }
        }
        let waiting: Vec<String> = live
            .into_iter()
            .filter(|id| Some(id) != me.as_ref())
            .collect();
        if waiting.is_empty() {
            return Ok(());
        }
        // Someone to wait for: listen for pushed acknowledgements from now
        // on (this wait polls if the listener is not subscribed yet).
        self.inner.acks.start(&link, &names, self.inner.op_timeout);
        self.await_acks(&mut conn, &names, &msg_id, waiting, waiter, through_breaker)
            .await
    }

    /// Step 4: until every instance in `waiting` acknowledged or its lease
    /// ran out; past [`ACK_TIMEOUT`], evicts the others and waits their
    /// leases out. Each check is the `WAIT` script (the acknowledgement
    /// set is the truth); with a `waiter`, a check runs when a pushed
    /// acknowledgement wakes it, else on a fallback timer.
    async fn await_acks(
        &self,
        conn: &mut Conn,
        names: &Keys,
        msg_id: &str,
        mut waiting: Vec<String>,
        waiter: Option<Waiter>,
        through_breaker: bool,
    ) -> Result<(), CacheError> {
        let s = scripts::scripts();
        let ack_key = names.ack(msg_id);
        let keys = [names.registry.as_str(), ack_key.as_str()];
        let started = Instant::now();
        let deadline = started + ACK_TIMEOUT;
        let mut pause = Duration::from_millis(1);
        loop {
            if let Some(w) = &waiter {
                // Pushed: an acknowledgement takes a delivery and a round
                // trip (~0.1 ms on loopback) and wakes this at once; the
                // timer only finds instances that do just the `SADD`.
                tokio::select! {
                    () = w.notified() => {}
                    () = tokio::time::sleep(pause) => {
                        pause = (pause * 2).min(Duration::from_millis(5));
                    }
                }
            } else if started.elapsed() < Duration::from_millis(2) {
                // Polled: back to back for the first 2 ms (the timer's
                // resolution is 1 ms), then with growing pauses.
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(5));
            }
            let args: Vec<&[u8]> = waiting.iter().map(String::as_bytes).collect();
            waiting = self
                .step(through_breaker, async {
                    Ok(s.wait.run(&mut *conn, &keys, &args).await?)
                })
                .await?;
            if waiting.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        let args: Vec<&[u8]> = waiting.iter().map(String::as_bytes).collect();
        let evict_keys = [keys[0], keys[1], names.evicted.as_str()];
        let wait_ms: i64 = self
            .step(through_breaker, async {
                Ok(s.evict.run(&mut *conn, &evict_keys, &args).await?)
            })
            .await?;
        if let Some(log) = self.inner.log.admit("local_ack") {
            tracing::warn!(
                instances = waiting.len(),
                wait_ms,
                suppressed = log,
                "instances did not acknowledge an invalidation in time: evicted from the \
                 registry; the invalidation returns once their leases have run out"
            );
        }
        if let Ok(ms) = u64::try_from(wait_ms)
            && ms > 0
        {
            tokio::time::sleep(Duration::from_millis(ms + 1)).await;
        }
        Ok(())
    }
}
