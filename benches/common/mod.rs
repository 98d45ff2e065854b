//! The value every benchmark caches: a ~200-byte profile, the same on the
//! cached side and the raw redis-rs or moka side of each comparison.

use serde::{Deserialize, Serialize};

/// A user profile of about 200 bytes in JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Profile {
    pub id: u64,
    pub name: String,
    pub email: String,
    pub bio: String,
    pub roles: Vec<String>,
}

/// The profile of `id`.
pub fn profile_value(id: u64) -> Profile {
    Profile {
        id,
        name: "Ada Lovelace".into(),
        email: "ada@analytical-engines.example".into(),
        bio: "Wrote the first published algorithm for a machine; enjoys notes on notes.".into(),
        roles: vec!["admin".into(), "author".into(), "reviewer".into()],
    }
}

/// The raw redis-rs key holding [`profile_value`]`(42)` as JSON.
#[allow(dead_code)] // used by the benches that compare against a raw GET
pub const RAW_KEY: &str = "raw:profile:42";

/// A cache on `url` and a raw redis-rs connection to the same server, with
/// [`RAW_KEY`] set: the two sides of a hit comparison.
#[allow(dead_code)] // the local-tier and monitoring benches set up their own
pub async fn hit_sides(url: &str) -> (cacheable::Cache, redis::aio::ConnectionManager) {
    let cache = cacheable::Cache::builder()
        .redis_url(url)
        .build()
        .await
        .unwrap();
    let client = redis::Client::open(url).unwrap();
    let mut conn = redis::aio::ConnectionManager::new(client).await.unwrap();
    let json = serde_json::to_vec(&profile_value(42)).unwrap();
    assert!(
        (150..=260).contains(&json.len()),
        "value is about 200 bytes: {}",
        json.len()
    );
    let () = redis::cmd("SET")
        .arg(RAW_KEY)
        .arg(json)
        .query_async(&mut conn)
        .await
        .unwrap();
    (cache, conn)
}
