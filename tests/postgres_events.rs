//! Invalidation from Postgres `NOTIFY` (`cacheable::events::postgres`)
//! against a real PostgreSQL and a real Redis that the tests start: the
//! tenant-api example's trigger (`examples/tenant-api/sql/notify.sql`)
//! invalidates on an `UPDATE`, per tenant and for all tenants; malformed
//! payloads are ignored; a killed listener connection reconnects and
//! invalidates conservatively.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cacheable::events::postgres::{self, ListenerHandle};
use cacheable::{Cache, CacheOptions};
use cacheable_test_support::{PostgresServer, RedisServer};
use sqlx::PgPool;

const CHANNEL: &str = "cache_invalidation";

struct World {
    _redis: RedisServer,
    _pg: PostgresServer,
    db: PgPool,
    cache: Cache,
    listener: ListenerHandle,
    computes: Arc<AtomicU64>,
}

async fn world(prefix: &str) -> World {
    let redis = RedisServer::start();
    let pg = PostgresServer::start();
    let db = PgPool::connect(&pg.url()).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE users (tenant TEXT NOT NULL, id BIGINT NOT NULL, name TEXT NOT NULL,
           PRIMARY KEY (tenant, id));
         INSERT INTO users VALUES ('acme', 1, 'Alice'), ('globex', 1, 'Gina');",
    )
    .execute(&db)
    .await
    .unwrap();
    sqlx::raw_sql(include_str!("../examples/tenant-api/sql/notify.sql"))
        .execute(&db)
        .await
        .unwrap();
    let cache = Cache::builder()
        .redis_url(redis.url())
        .prefix(prefix)
        .local_cache(1000, Duration::from_secs(60))
        .build()
        .await
        .unwrap();
    let listener = postgres::listen(&cache, &pg.url(), CHANNEL);
    wait_for("the first connection", || listener.connections() >= 1).await;
    World {
        _redis: redis,
        _pg: pg,
        db,
        cache,
        listener,
        computes: Arc::new(AtomicU64::new(0)),
    }
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

impl World {
    /// The name of user 1 of `tenant`, cached with the handlers' tags.
    async fn name(&self, tenant: &str) -> String {
        let opts = CacheOptions::new()
            .tenant(tenant)
            .tags(["users", "user:1"])
            .ttl(Duration::from_secs(60));
        let (db, computes) = (self.db.clone(), Arc::clone(&self.computes));
        let tenant = tenant.to_owned();
        self.cache
            .get_or_compute("user.name", &opts, move || async move {
                computes.fetch_add(1, Ordering::SeqCst);
                sqlx::query_scalar::<_, String>(
                    "SELECT name FROM users WHERE tenant = $1 AND id = 1",
                )
                .bind(tenant)
                .fetch_one(&db)
                .await
            })
            .await
            .unwrap()
    }

    fn computes(&self) -> u64 {
        self.computes.load(Ordering::SeqCst)
    }

    /// Reads both tenants' entries into the cache; returns the computes so far.
    async fn warm(&self) -> u64 {
        self.name("acme").await;
        self.name("globex").await;
        let n = self.computes();
        self.name("acme").await;
        self.name("globex").await;
        assert_eq!(self.computes(), n, "both entries are cached");
        n
    }

    async fn sql(&self, statement: &str) {
        sqlx::raw_sql(statement).execute(&self.db).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_invalidates_per_tenant_and_a_null_tenant_everywhere() {
    let w = world("pg1").await;
    let before = w.warm().await;
    let applied = w.listener.invalidations();
    w.sql("UPDATE users SET name = 'Alicia' WHERE tenant = 'acme' AND id = 1")
        .await;
    wait_for("the trigger's notification", || {
        w.listener.invalidations() > applied
    })
    .await;
    assert_eq!(w.name("acme").await, "Alicia");
    assert_eq!(w.computes(), before + 1, "acme's entry was recomputed");
    assert_eq!(w.name("globex").await, "Gina");
    assert_eq!(w.computes(), before + 1, "globex's entry stayed cached");

    // A null tenant: the tags in every tenant.
    let before = w.warm().await;
    let applied = w.listener.invalidations();
    w.sql(
        r#"UPDATE users SET name = 'Gigi' WHERE tenant = 'globex';
             SELECT pg_notify('cache_invalidation', '{"tenant": null, "tags": ["users"]}')"#,
    )
    .await;
    wait_for("the notifications", || {
        w.listener.invalidations() >= applied + 2
    })
    .await;
    assert_eq!(w.name("acme").await, "Alicia");
    assert_eq!(w.name("globex").await, "Gigi");
    assert_eq!(w.computes(), before + 2, "both entries were recomputed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_notify_is_ignored_without_harm() {
    let w = world("pg2").await;
    let before = w.warm().await;
    for bad in [
        "not json",
        r#"{"tags": "users"}"#,
        r#"{"tenant": "acme", "tags": []}"#,
        "",
    ] {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(bad)
            .execute(&w.db)
            .await
            .unwrap();
    }
    wait_for("the malformed payloads", || w.listener.malformed() == 4).await;
    w.warm().await;
    assert_eq!(w.computes(), before, "nothing was invalidated");
    assert_eq!(
        w.listener.connections(),
        1,
        "the listener kept its connection"
    );
    // It still listens.
    w.sql("DELETE FROM users WHERE tenant = 'acme'").await;
    wait_for("the delete's notification", || {
        w.listener.invalidations() >= 1
    })
    .await;
    let opts = CacheOptions::new().tenant("acme").tags(["users", "user:1"]);
    let gone = w
        .cache
        .get_or_compute("user.name", &opts, || async {
            Err::<String, _>("the row is gone")
        })
        .await;
    assert!(gone.is_err(), "the entry was invalidated: {gone:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_listener_connection_reconnects_and_invalidates_conservatively() {
    let w = world("pg3").await;
    let before = w.warm().await;
    let applied = w.listener.invalidations();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE application_name = 'cacheable-events'",
    )
    .fetch_all(&w.db)
    .await
    .unwrap();
    assert_eq!(killed, [true], "one listener connection");
    // Probably lost: sent while the listener reconnects.
    w.sql("UPDATE users SET name = 'Alicia' WHERE tenant = 'acme' AND id = 1")
        .await;
    wait_for("the reconnection", || w.listener.connections() >= 2).await;
    // The clear after reconnecting dropped both entries, whether or not the
    // notification was heard.
    assert_eq!(w.name("acme").await, "Alicia");
    assert_eq!(w.name("globex").await, "Gina");
    assert!(
        w.computes() == before + 2,
        "both recomputed (applied {} of 1 notification)",
        w.listener.invalidations() - applied
    );
    // And it listens again.
    let before = w.warm().await;
    let applied = w.listener.invalidations();
    w.sql("UPDATE users SET name = 'Ginette' WHERE tenant = 'globex'")
        .await;
    wait_for("a notification after the reconnection", || {
        w.listener.invalidations() > applied
    })
    .await;
    assert_eq!(w.name("globex").await, "Ginette");
    assert_eq!(w.computes(), before + 1);
}
