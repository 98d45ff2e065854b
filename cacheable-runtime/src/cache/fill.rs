//! The cache-aside engine: a call site's lookup, then on a miss the single
//! flight and the cross-process lease (see `crate::flight`), serving hits
//! and stale values, and the response notes for HTTP.

use super::*;

impl Cache {
    // ----- the cache-aside engine -----

    pub(crate) async fn run_site<A, O, F>(
        &self,
        site: &'static Site,
        key: Result<KeySource, crate::key::HashError>,
        tags: Vec<String>,
        ret_tags: Option<&RetTags<'_, O>>,
        body: F,
    ) -> O
    where
        A: Adapter<O>,
        F: Future<Output = O>,
    {
        let key = match key {
            Ok(k) => k,
            Err(e) => {
                let counters = self.inner.stats.site(site.name, &site.state.counters);
                self.report(Some(&counters), "key", &CacheError::Codec(e.to_string()));
                self.inner.stats.miss(&counters, site.name);
                mark_incomplete();
                return body.await;
            }
        };
        let mut spec = match self.site_entry(site, &key, &tags) {
            Ok(spec) => spec,
            Err(e) => {
                let counters = self.inner.stats.site(site.name, &site.state.counters);
                self.report(Some(&counters), "tenant", &e);
                self.inner.stats.miss(&counters, site.name);
                return body.await;
            }
        };
        // Hit latency is timed on one hit in HIT_SAMPLE: two clock reads on
        // every hit would cost more than the rest of the bookkeeping.
        let started = sample_hit().then(Instant::now);
        // A local hit reads the entry key only: the version keys (two per
        // tag) are built when it misses.
        if let Some(hit) = self.local_first::<A::Value>(&spec) {
            return self.serve_timed_hit::<A, O>(&spec, started, hit);
        }
        self.site_deps(&mut spec, &tags, ret_tags.is_some());
        self.lookup_and_fill::<A, O, F>(&spec, started, ret_tags, body)
            .await
    }

    /// The lookup, then a hit served or the miss filled; `started` is the
    /// start of a sampled hit's timing.
    pub(super) async fn lookup_and_fill<A, O, F>(
        &self,
        spec: &Spec,
        started: Option<Instant>,
        ret_tags: Option<&RetTags<'_, O>>,
        body: F,
    ) -> O
    where
        A: Adapter<O>,
        F: Future<Output = O>,
    {
        match self.lookup::<A::Value>(spec, true).await {
            Ok(Lookup::Hit(hit)) => self.serve_timed_hit::<A, O>(spec, started, hit),
            // The miss path is boxed: it runs once per computation, and keeping
            // its state out of line keeps every caller's future small (nested
            // cached calls would otherwise grow it by the whole engine each).
            Ok(Lookup::Stale { value, miss }) => {
                Box::pin(self.fill::<A, O, F>(spec, miss, Some(value), ret_tags, body)).await
            }
            Ok(Lookup::Miss(miss)) => {
                Box::pin(self.fill::<A, O, F>(spec, miss, None, ret_tags, body)).await
            }
            Err(e) => self.fail_open(spec, "read", &e, body).await,
        }
    }

    /// [`Cache::serve_hit`], with the hit's time when it is sampled.
    fn serve_timed_hit<A: Adapter<O>, O>(
        &self,
        spec: &Spec,
        started: Option<Instant>,
        hit: Hit<A::Value>,
    ) -> O {
        if let Some(started) = started {
            let elapsed = started.elapsed() * HIT_SAMPLE;
            self.inner
                .stats
                .hit_time(&spec.counters, spec.name, elapsed);
        }
        self.serve_hit::<A, O>(spec, hit)
    }

    /// A store step of this call failed: counts and logs it, counts the miss,
    /// and runs the body uncached.
    pub(super) async fn fail_open<O, F: Future<Output = O>>(
        &self,
        spec: &Spec,
        op: &'static str,
        e: &CacheError,
        body: F,
    ) -> O {
        self.report(Some(&spec.counters), op, e);
        self.inner.stats.miss(&spec.counters, spec.name);
        self.uncached(spec, body).await
    }

    /// Runs the body without the cache (the store failed), still timing it:
    /// the time spent in queries is reported whether or not Redis answers.
    pub(super) async fn uncached<O, F: Future<Output = O>>(&self, spec: &Spec, body: F) -> O {
        mark_incomplete();
        let started = Instant::now();
        let out = body.await;
        self.inner
            .stats
            .computed(&spec.counters, spec.name, started.elapsed());
        out
    }

    /// A miss (or a stale hit): one caller per process computes (single
    /// flight), one process per key holds a lease; the others wait for its
    /// value, or take the stale value at once. The steps, and the tests that
    /// break when one is removed, are in the `flight` module's docs.
    pub(super) async fn fill<A, O, F>(
        &self,
        spec: &Spec,
        mut miss: Miss,
        mut stale: Option<A::Value>,
        ret_tags: Option<&RetTags<'_, O>>,
        body: F,
    ) -> O
    where
        A: Adapter<O>,
        F: Future<Output = O>,
    {
        // The lease of a leader of this process that abandoned the flight
        // this caller now takes over.
        let mut dead_lease = None;
        let mut guard = loop {
            // Flights are keyed by versions: create missing counters first
            // (a no-op when none is missing), so that callers arriving before
            // and after the leader's snapshot agree on them and join one flight.
            miss = match self.complete(spec, miss).await {
                Ok(m) => m,
                Err(e) => return self.fail_open(spec, "snapshot", &e, body).await,
            };
            let follower = match self.inner.flights.join(&spec.keys[0], &miss.versions) {
                Flight::Leader(guard) => break guard,
                Flight::Follower(follower) => follower,
            };
            if let Some(value) = stale.take() {
                return self.serve_stale::<A, O>(spec, value);
            }
            // A live leader in this process: wait for it however long it takes.
            match follower.wait().await {
                // Join again: the first follower to get there leads.
                Outcome::Abandoned(lease) => dead_lease = lease,
                Outcome::Done => match self.lookup::<A::Value>(spec, false).await {
                    Ok(Lookup::Hit(hit)) => return self.serve_hit::<A, O>(spec, hit),
                    Ok(Lookup::Stale { value, .. }) => {
                        return self.serve_stale::<A, O>(spec, value);
                    }
                    // The versions moved on: the leader's value predates an
                    // invalidation. Join (or lead) the flight of the new ones.
                    Ok(Lookup::Miss(m)) if m.versions != miss.versions => miss = m,
                    // The leader's value was not cacheable (an `Err`, a failed
                    // write): compute, as it did.
                    Ok(Lookup::Miss(m)) => {
                        return self.compute::<A, O, F>(spec, m, ret_tags, body).await;
                    }
                    Err(e) => return self.fail_open(spec, "read", &e, body).await,
                },
            }
        };
        let lease_key = crate::flight::lease_key(&spec.keys[0], &miss.versions);
        if let Some(dead) = dead_lease.filter(|d| d.0 == lease_key)
            && let Err(e) = self
                .op_in(spec, self.inner.store.release(&dead.0, &dead.1))
                .await
        {
            self.report(Some(&spec.counters), "release", &e);
        }
        let token = format!("{:032x}", u128::from_le_bytes(envelope::new_stamp()));
        let (mut lease, held_elsewhere) =
            match self.take_lease(spec, &mut guard, lease_key, &token).await {
                Ok(Some(lease)) => (Some(lease), false),
                Ok(None) => (None, true),
                Err(e) => {
                    self.report(Some(&spec.counters), "lease", &e);
                    (None, false)
                }
            };
        if held_elsewhere {
            if let Some(value) = stale {
                guard.complete();
                return self.serve_stale::<A, O>(spec, value);
            }
            // Another process computes this key: wait for its value, bounded
            // (that process may be gone).
            let deadline = Instant::now() + self.inner.lease_wait;
            let mut reread = 0;
            while Instant::now() < deadline {
                let pause = lease_pause(reread);
                reread += 1;
                if pause.is_zero() {
                    tokio::task::yield_now().await;
                } else {
                    tokio::time::sleep(pause).await;
                }
                match self.lookup::<A::Value>(spec, false).await {
                    Ok(Lookup::Hit(hit)) => {
                        guard.complete();
                        return self.serve_hit::<A, O>(spec, hit);
                    }
                    Ok(Lookup::Stale { miss: m, .. } | Lookup::Miss(m)) => miss = m,
                    Err(_) => break,
                }
                // Still no value: lead if nobody holds the lease of the
                // versions read now. The holder may be done without a value
                // these versions serve (an invalidation moved them on while
                // it computed, or its value was not cacheable) or gone; its
                // value will never come, and waiting out `lease_wait` for it
                // stalled every reader of a hot key for the whole wait.
                let key = crate::flight::lease_key(&spec.keys[0], &miss.versions);
                match self.take_lease(spec, &mut guard, key, &token).await {
                    Ok(Some(held)) => {
                        // The holder may have written its value and released
                        // between the re-read and this lease: read once more
                        // before computing it again.
                        if let Ok(Lookup::Hit(hit)) = self.lookup::<A::Value>(spec, false).await {
                            self.release_lease(spec, held).await;
                            guard.complete();
                            return self.serve_hit::<A, O>(spec, hit);
                        }
                        lease = Some(held);
                        break;
                    }
                    Ok(None) => {}
                    Err(_) => break,
                }
            }
        }
        let out = self.compute::<A, O, F>(spec, miss, ret_tags, body).await;
        guard.complete();
        if let Some(lease) = lease {
            self.release_lease(spec, lease).await;
        }
        out
    }

    /// Tries the cross-process lease `key` for this call: its guard when
    /// granted (the flight's followers learn it, to release it should this
    /// leader die), `None` when another process holds it.
    async fn take_lease(
        &self,
        spec: &Spec,
        flight: &mut FlightGuard,
        key: String,
        token: &str,
    ) -> Result<Option<LeaseGuard>, CacheError> {
        let granted = self
            .op_in(
                spec,
                self.inner
                    .store
                    .try_lease(&key, token, self.inner.lease_ttl),
            )
            .await?;
        Ok(granted.then(|| {
            flight.hold_lease(&key, token);
            LeaseGuard::new(
                Arc::clone(&self.inner.store),
                self.inner.op_timeout,
                key,
                token.to_owned(),
            )
        }))
    }

    /// Releases a lease this call holds, reporting a failure (the lease
    /// then runs out on its own).
    async fn release_lease(&self, spec: &Spec, lease: LeaseGuard) {
        if let Err(e) = self
            .op_in(spec, self.inner.store.release(lease.key(), lease.token()))
            .await
        {
            self.report(Some(&spec.counters), "release", &e);
        }
        lease.disarm();
    }

    pub(super) fn serve_hit<A: Adapter<O>, O>(&self, spec: &Spec, hit: Hit<A::Value>) -> O {
        self.inner.stats.hit(&spec.counters, spec.name, false);
        if hit.local {
            self.inner.stats.local_hit(&spec.counters, spec.name);
        }
        report_deps(&hit.deps);
        note_cache(
            hit.private,
            true,
            hit.fresh_until_ms.saturating_sub(hit.now_ms),
            hit.now_ms.saturating_sub(hit.stored_at_ms),
        );
        A::rebuild(hit.value)
    }

    pub(super) fn serve_stale<A: Adapter<O>, O>(&self, spec: &Spec, value: A::Value) -> O {
        self.inner.stats.hit(&spec.counters, spec.name, true);
        // Its dependencies were not looked at: private, to be safe.
        note_cache(true, true, 0, 0);
        A::rebuild(value)
    }
}

/// Re-reads of a value whose lease another process holds that come at
/// once (after a yield): a fill is a round trip or two plus the body, so a
/// fast one lands within them.
const REREADS_AT_ONCE: u32 = 2;

/// The pause before re-read `n` (from 0) of a value whose lease another
/// process holds: none for the first [`REREADS_AT_ONCE`], then 1 ms
/// doubling up to 50 ms (that process may be slow or gone: the wait is
/// bounded by `lease_wait` in any case).
pub(super) fn lease_pause(n: u32) -> Duration {
    match n.checked_sub(REREADS_AT_ONCE) {
        None => Duration::ZERO,
        Some(k) => Duration::from_millis(1 << k.min(6)).min(Duration::from_millis(50)),
    }
}

/// One hit in this many is timed (its time, scaled, goes into `hit_time`).
pub(super) const HIT_SAMPLE: u32 = 16;

pub(super) fn sample_hit() -> bool {
    thread_local! {
        static HITS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }
    HITS.with(|h| {
        let n = h.get().wrapping_add(1);
        h.set(n);
        n % HIT_SAMPLE == 0
    })
}

pub(super) fn note_cache(private: bool, hit: bool, max_age_ms: u64, age_ms: u64) {
    context::with_current(|c| {
        if let Some(notes) = c.and_then(context::Context::observer) {
            notes.record_cache(context::CacheNote {
                hit,
                max_age: Duration::from_millis(max_age_ms),
                age: Duration::from_millis(age_ms),
                private,
            });
        }
    });
}
