//! Invalidation from Postgres `NOTIFY` (feature `postgres`): a background
//! task that `LISTEN`s on a channel and turns each notification into a
//! [`Cache::delete_by_tags`] call, so writes made outside the application
//! (an admin's SQL, a migration, another service) invalidate the cache.
//!
//! ```no_run
//! # use cacheable_runtime as cacheable;
//! # async fn run(cache: cacheable::Cache) {
//! let listener = cacheable::events::postgres::listen(&cache, "postgres://app@db/app", "cache_invalidation");
//! # }
//! ```
//!
//! # Payload
//!
//! `{"tenant": "acme", "tags": ["user:42", "users"]}`: the tags are
//! invalidated in that tenant ([`Cache::delete_by_tags`]). A `tenant` that
//! is `null` or absent invalidates them in every tenant and outside any
//! ([`Cache::delete_by_tags_all_tenants`]). Anything else (not JSON, no
//! `tags`, an empty list, a tag that is not a string) is a
//! [`PayloadError`]: counted, logged at most every 10 s, and ignored.
//! Postgres caps a payload at 8000 bytes.
//!
//! # The trigger
//!
//! For a table `users(tenant_id, id, ..)`: every `INSERT`, `UPDATE` and
//! `DELETE` notifies the rows' tenant and tags (the old row's too when an
//! `UPDATE` moves it). The notification is delivered when the transaction
//! commits, never for one rolled back.
//!
//! ```sql
//! CREATE OR REPLACE FUNCTION cacheable_notify_users() RETURNS trigger
//! LANGUAGE plpgsql AS $$
//! BEGIN
//!   IF TG_OP <> 'INSERT' THEN
//!     PERFORM pg_notify('cache_invalidation', json_build_object(
//!       'tenant', OLD.tenant_id, 'tags', json_build_array('user:' || OLD.id, 'users'))::text);
//!   END IF;
//!   IF TG_OP <> 'DELETE' THEN
//!     PERFORM pg_notify('cache_invalidation', json_build_object(
//!       'tenant', NEW.tenant_id, 'tags', json_build_array('user:' || NEW.id, 'users'))::text);
//!   END IF;
//!   RETURN NULL;
//! END $$;
//!
//! DROP TRIGGER IF EXISTS cacheable_notify ON users;
//! CREATE TRIGGER cacheable_notify AFTER INSERT OR UPDATE OR DELETE ON users
//!   FOR EACH ROW EXECUTE FUNCTION cacheable_notify_users();
//! ```
//!
//! (Postgres drops a notification identical to one already queued in the
//! same transaction, so the `UPDATE` that keeps the row's tenant and id
//! sends one.)
//!
//! # Lost notifications and the conservative invalidation
//!
//! `NOTIFY` is not durable: a notification sent while the listener is not
//! connected is lost, and a lost invalidation would break guarantee 2. So
//! each time the listener (re)connects, once its `LISTEN` is confirmed, it
//! calls [`Cache::clear`] (every key under the cache's prefix; every local
//! tier drops everything). Writes before the `LISTEN` are covered by the
//! clear, writes after it by their notification. A clear that fails is
//! retried until it lands, and until then the cache serves nothing from the
//! store (as every failed invalidation). The first connection clears too,
//! since writes may have happened while no listener ran;
//! [`Listener::clear_on_first_connect`] turns that off for a fleet where
//! other instances listen all the time. Reconnection backs off from
//! 50 ms to [`Listener::max_backoff`] (5 s by default).
//!
//! Not covered: a connection that goes silent without closing (a network
//! partition with no reset) is only noticed by the kernel's TCP keepalive.
//!
//! Invalidation happens when the notification arrives, after the commit:
//! until then, readers may see the value from before the write, as for any
//! write made outside the cache. Once the listener's `delete_by_tags` has
//! returned, guarantee 2 holds on every instance.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};

use crate::Cache;

/// A notification payload that is not an invalidation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// Not JSON of the form `{"tenant": "..", "tags": [".."]}`.
    #[error("payload is not {{\"tenant\": string|null, \"tags\": [string, ..]}}: {0}")]
    Json(#[from] serde_json::Error),
    /// `tags` is empty: nothing would be invalidated.
    #[error("payload has no tags")]
    NoTags,
}

/// A parsed notification payload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notification {
    /// The tenant whose tags to invalidate; `None`: every tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// The tags to invalidate.
    pub tags: Vec<String>,
}

impl Notification {
    /// Parses a payload (see the [module docs](self)).
    ///
    /// # Errors
    /// [`PayloadError`] when it is not an invalidation.
    pub fn parse(payload: &str) -> Result<Self, PayloadError> {
        let n: Self = serde_json::from_str(payload)?;
        if n.tags.is_empty() {
            return Err(PayloadError::NoTags);
        }
        Ok(n)
    }

    /// Invalidates the notification's tags on `cache`.
    ///
    /// # Errors
    /// As [`Cache::delete_by_tags`] (the invalidation is then retried).
    pub async fn apply(&self, cache: &Cache) -> Result<(), crate::CacheError> {
        let tags: Vec<&str> = self.tags.iter().map(String::as_str).collect();
        match &self.tenant {
            Some(t) => cache.delete_by_tags(&tags, Some(t)).await,
            None => cache.delete_by_tags_all_tenants(&tags).await,
        }
    }
}

/// Configures a listener; [`Listener::spawn`] starts it.
#[derive(Debug, Clone)]
pub struct Listener {
    cache: Cache,
    url: String,
    channel: String,
    max_backoff: Duration,
    clear_on_first_connect: bool,
}

/// Starts a listener with the defaults: `Listener::new(cache, url, channel).spawn()`.
///
/// # Panics
/// Outside a Tokio runtime.
pub fn listen(cache: &Cache, url: &str, channel: &str) -> ListenerHandle {
    Listener::new(cache, url, channel).spawn()
}

impl Listener {
    /// A listener of `channel` (the exact name given to `pg_notify`) on
    /// the database at `url` (`postgres://..`), invalidating `cache`.
    pub fn new(cache: &Cache, url: impl Into<String>, channel: impl Into<String>) -> Self {
        Self {
            cache: cache.clone(),
            url: url.into(),
            channel: channel.into(),
            max_backoff: Duration::from_secs(5),
            clear_on_first_connect: true,
        }
    }

    /// The longest pause between reconnection attempts (5 s by default).
    #[must_use]
    pub fn max_backoff(mut self, max: Duration) -> Self {
        self.max_backoff = max.max(Duration::from_millis(50));
        self
    }

    /// Whether the first connection clears the cache as every reconnection
    /// does (default `true`; see the [module docs](self)).
    #[must_use]
    pub fn clear_on_first_connect(mut self, clear: bool) -> Self {
        self.clear_on_first_connect = clear;
        self
    }

    /// Starts the listener on the current Tokio runtime. It runs until
    /// [`ListenerHandle::stop`] (dropping the handle leaves it running).
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn spawn(self) -> ListenerHandle {
        let status = Arc::new(Status::default());
        let task = tokio::spawn(run(self, Arc::clone(&status)));
        ListenerHandle { task, status }
    }
}

#[derive(Debug, Default)]
struct Status {
    connections: AtomicU64,
    invalidations: AtomicU64,
    malformed: AtomicU64,
}

/// A running listener.
#[derive(Debug)]
pub struct ListenerHandle {
    task: tokio::task::JoinHandle<()>,
    status: Arc<Status>,
}

impl ListenerHandle {
    /// Sessions started: each one a confirmed `LISTEN` followed by its
    /// conservative invalidation (a `clear`, attempted).
    pub fn connections(&self) -> u64 {
        self.status.connections.load(Ordering::SeqCst)
    }

    /// Notifications applied (their invalidation returned, or failed and
    /// was left to the retry).
    pub fn invalidations(&self) -> u64 {
        self.status.invalidations.load(Ordering::SeqCst)
    }

    /// Notifications ignored because their payload was malformed.
    pub fn malformed(&self) -> u64 {
        self.status.malformed.load(Ordering::SeqCst)
    }

    /// Stops the listener (its connection closes).
    pub fn stop(self) {
        self.task.abort();
    }
}

/// At most one line per `kind` every 10 s, with the count of lines skipped.
#[derive(Default)]
struct Throttle(Vec<(&'static str, Instant, u64)>);

impl Throttle {
    fn admit(&mut self, kind: &'static str) -> Option<u64> {
        const EVERY: Duration = Duration::from_secs(10);
        match self.0.iter_mut().find(|(k, ..)| *k == kind) {
            Some((_, last, skipped)) if last.elapsed() < EVERY => {
                *skipped += 1;
                None
            }
            Some((_, last, skipped)) => {
                *last = Instant::now();
                Some(std::mem::take(skipped))
            }
            None => {
                self.0.push((kind, Instant::now(), 0));
                Some(0)
            }
        }
    }
}

async fn connect(l: &Listener) -> Result<PgListener, sqlx::Error> {
    let options: PgConnectOptions = l.url.parse()?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options.application_name("cacheable-events"))
        .await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.ignore_pool_close_event(true);
    // A lost connection ends the session here; the next one is ours to make.
    listener.eager_reconnect(false);
    listener.listen(&l.channel).await?;
    Ok(listener)
}

async fn run(l: Listener, status: Arc<Status>) {
    const FIRST: Duration = Duration::from_millis(50);
    let mut log = Throttle::default();
    let mut pause = FIRST;
    let mut first = true;
    loop {
        let listener = tokio::time::timeout(Duration::from_secs(15), connect(&l)).await;
        let mut listener = match listener {
            Ok(Ok(listener)) => listener,
            failed => {
                if let Some(skipped) = log.admit("connect") {
                    let error = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".to_owned(),
                    };
                    tracing::warn!(%error, skipped, channel = %l.channel,
                        "cache invalidation listener cannot connect to Postgres; retrying");
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(l.max_backoff);
                continue;
            }
        };
        pause = FIRST;
        // Notifications sent before the LISTEN above are lost: invalidate
        // everything they could have named.
        let clear = !first || l.clear_on_first_connect;
        if clear
            && let Err(e) = l.cache.clear().await
            && let Some(skipped) = log.admit("clear")
        {
            tracing::warn!(error = %e, skipped,
                "cache invalidation listener: the clear after (re)connecting failed; \
                 it is retried, and the cache serves nothing from the store until it lands");
        }
        first = false;
        status.connections.fetch_add(1, Ordering::SeqCst);
        let why = loop {
            let n = match listener.try_recv().await {
                Ok(Some(n)) => n,
                Ok(None) => break "connection lost".to_owned(),
                Err(e) => break e.to_string(),
            };
            match Notification::parse(n.payload()) {
                Ok(n) => {
                    if let Err(e) = n.apply(&l.cache).await
                        && let Some(skipped) = log.admit("apply")
                    {
                        tracing::warn!(error = %e, skipped,
                            "cache invalidation from Postgres failed; it is retried");
                    }
                    status.invalidations.fetch_add(1, Ordering::SeqCst);
                }
                Err(e) => {
                    status.malformed.fetch_add(1, Ordering::SeqCst);
                    if let Some(skipped) = log.admit("payload") {
                        tracing::warn!(error = %e, skipped, channel = %l.channel,
                            "ignored a malformed cache invalidation notification");
                    }
                }
            }
        };
        if let Some(skipped) = log.admit("lost") {
            tracing::warn!(
                why,
                skipped,
                "cache invalidation listener lost its Postgres \
                connection; reconnecting (and clearing the cache once listening again)"
            );
        }
        tokio::time::sleep(FIRST).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads() {
        let n = Notification::parse(r#"{"tenant":"acme","tags":["user:1","users"]}"#).unwrap();
        assert_eq!(n.tenant.as_deref(), Some("acme"));
        assert_eq!(n.tags, ["user:1", "users"]);
        let n = Notification::parse(r#"{"tenant":null,"tags":["users"]}"#).unwrap();
        assert_eq!(n.tenant, None);
        assert_eq!(
            Notification::parse(r#"{"tags":["users"]}"#).unwrap().tenant,
            None
        );
        for bad in [
            "",
            "users",
            r#"{"tenant":"a"}"#,
            r#"{"tenant":"a","tags":"users"}"#,
            r#"{"tenant":"a","tags":[1]}"#,
            r#"{"tenant":7,"tags":["users"]}"#,
            r#"{"tenant":"a","tags":["x"],"tag":"typo"}"#,
        ] {
            assert!(
                matches!(Notification::parse(bad), Err(PayloadError::Json(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            Notification::parse(r#"{"tenant":"a","tags":[]}"#),
            Err(PayloadError::NoTags)
        ));
    }
}
