//! Quickstart: cached functions, hits and misses, tag and tenant invalidation.
//!
//! Prerequisites: none. With `REDIS_URL` set, or a Redis answering on
//! 127.0.0.1:6379, it uses that Redis (keys under the prefix
//! `cacheable-quickstart`, cleared at the end); otherwise the embedded
//! in-memory store.
//!
//! Run: `cargo run --example quickstart`

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cacheable::{Cache, cache_evict, cacheable, tenant};
use serde::{Deserialize, Serialize};

/// Stands in for a database: counts the queries it answers.
struct Db {
    queries: AtomicU32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
    tenant: String,
}

#[derive(Debug)]
struct DbError;

#[cacheable(ttl = 60, tags = ["users", "user:{id}"], skip(db))]
async fn get_user(db: &Db, id: u64) -> Result<User, DbError> {
    db.queries.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(20)).await; // the query
    let tenant = tenant::current().map_or_else(|| "-".to_owned(), |t| t.to_string());
    Ok(User {
        id,
        name: format!("user {id}"),
        tenant,
    })
}

#[cache_evict(tags = ["user:{id}"], skip(db))]
async fn rename_user(db: &Db, id: u64, name: String) -> Result<(), DbError> {
    let _ = (db, name);
    Ok(())
}

/// `REDIS_URL`, else a Redis answering on 127.0.0.1:6379, else none.
fn find_redis() -> Option<String> {
    if let Ok(url) = std::env::var("REDIS_URL") {
        return Some(url);
    }
    let mut s =
        TcpStream::connect_timeout(&"127.0.0.1:6379".parse().ok()?, Duration::from_millis(200))
            .ok()?;
    s.set_read_timeout(Some(Duration::from_millis(200))).ok()?;
    s.write_all(b"PING\r\n").ok()?;
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).ok()?;
    buf[..n]
        .starts_with(b"+PONG")
        .then(|| "redis://127.0.0.1:6379/".to_owned())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let builder = Cache::builder().prefix("cacheable-quickstart");
    let cache = match find_redis() {
        Some(url) => {
            println!(
                "store: redis at {}",
                url.split('@').next_back().unwrap_or(&url)
            );
            builder.redis_url(url).build().await?
        }
        None => {
            println!(
                "store: embedded memory (set REDIS_URL or start a Redis on 127.0.0.1:6379 to use Redis)"
            );
            builder.memory().build().await?
        }
    };
    let health = cache.health().await;
    println!(
        "health: reachable={} latency={:?}",
        health.reachable, health.latency
    );
    if let Some(e) = &health.error {
        println!("        {e}: every call runs uncached (and still answers)");
    }
    cacheable::set_global(cache.clone());
    let db = Db {
        queries: AtomicU32::new(0),
    };

    // Runs one call and says whether it reached the database.
    let step = |label: &'static str, tenant: &'static str| {
        let db = &db;
        async move {
            let before = db.queries.load(Ordering::Relaxed);
            let user = tenant::scope(tenant, get_user(db, 1))
                .await
                .map_err(|_| "db")?;
            let queries = db.queries.load(Ordering::Relaxed);
            let outcome = if queries > before { "miss" } else { "hit " };
            println!(
                "{tenant:<6} {outcome}  {label:<45} -> {} (queries so far: {queries})",
                user.name
            );
            Ok::<_, &str>(())
        }
    };
    let report = |what: &str, r: Result<(), cacheable::CacheError>| {
        if let Err(e) = r {
            println!("       {what} failed: {e} (the calls still answer, uncached)");
        }
    };

    step("get_user(1)", "acme").await?;
    step("get_user(1) again", "acme").await?;
    tenant::scope("acme", rename_user(&db, 1, "Ann".into()))
        .await
        .map_err(|_| "db")?;
    step("after rename_user (evicts tag user:1)", "acme").await?;
    step("get_user(1): another tenant, another entry", "globex").await?;
    report(
        "delete_by_tags",
        cache.delete_by_tags(&["users"], Some("acme")).await,
    );
    step("after delete_by_tags([users]) in acme", "acme").await?;
    step("untouched by acme's invalidation", "globex").await?;
    report("delete_by_tenant", cache.delete_by_tenant("globex").await);
    step("after delete_by_tenant(globex)", "globex").await?;

    let stats = cache.stats();
    println!(
        "stats: hits={} misses={} errors={} hit_ratio={:.2} time in queries={:?}",
        stats.hits,
        stats.misses,
        stats.errors,
        stats.hit_ratio(),
        stats.compute_time
    );
    report("clear", cache.clear().await);
    Ok(())
}
