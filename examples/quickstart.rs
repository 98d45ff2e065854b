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
    Ok(User { id, name: format!("user {id}"), tenant })
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
    let mut s = TcpStream::connect_timeout(&"127.0.0.1:6379".parse().ok()?, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(200))).ok()?;
    s.write_all(b"PING\r\n").ok()?;
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).ok()?;
    buf[..n].starts_with(b"+PONG").then(|| "redis://127.0.0.1:6379/".to_owned())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let builder = Cache::builder().prefix("cacheable-quickstart");
    let cache = match find_redis() {
        Some(url) => {
            println!("store: redis at {}", url.split('@').next_back().unwrap_or(&url));
            builder.redis_url(url).build().await?
        }
        None => {
            println!("store: embedded memory (set REDIS_URL or start a Redis on 127.0.0.1:6379 to use Redis)");
            builder.memory().build().await?
        }
    };
    let health = cache.health().await;
    println!("health: reachable={} latency={:?}", health.reachable, health.latency);
    cacheable::set_global(cache.clone());
    let db = Db { queries: AtomicU32::new(0) };
    let queries = || db.queries.load(Ordering::Relaxed);

    tenant::scope("acme", async {
        let u = get_user(&db, 1).await.map_err(|_| "db")?;
        println!("acme  get_user(1) -> {u:?}  (miss: queries={})", queries());
        get_user(&db, 1).await.map_err(|_| "db")?;
        println!("acme  get_user(1) again           (hit:  queries={})", queries());
        rename_user(&db, 1, "Ann".into()).await.map_err(|_| "db")?;
        get_user(&db, 1).await.map_err(|_| "db")?;
        println!("acme  after rename_user (evicts user:1) (miss: queries={})", queries());
        Ok::<_, &str>(())
    })
    .await?;

    tenant::scope("globex", async {
        get_user(&db, 1).await.map_err(|_| "db")?;
        println!("globex get_user(1): another tenant, another entry (miss: queries={})", queries());
        Ok::<_, &str>(())
    })
    .await?;

    cache.delete_by_tags(&["users"], Some("acme")).await?;
    tenant::scope("acme", get_user(&db, 1)).await.map_err(|_| "db")?;
    println!("acme  after delete_by_tags([users]) (miss: queries={})", queries());
    tenant::scope("globex", get_user(&db, 1)).await.map_err(|_| "db")?;
    println!("globex untouched by acme's invalidation (hit: queries={})", queries());

    cache.delete_by_tenant("globex").await?;
    tenant::scope("globex", get_user(&db, 1)).await.map_err(|_| "db")?;
    println!("globex after delete_by_tenant (miss: queries={})", queries());

    let stats = cache.stats();
    println!(
        "stats: hits={} misses={} errors={} hit_ratio={:.2} time in queries={:?}",
        stats.hits,
        stats.misses,
        stats.errors,
        stats.hit_ratio(),
        stats.compute_time
    );
    cache.clear().await?;
    Ok(())
}
