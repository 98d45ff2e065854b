// `crate = ".."` for a renamed dependency (`extern crate .. as ..`, as a
// `Cargo.toml` rename would give) and for a re-export inside another crate's
// module: every attribute, with tags and key templates, reaches the runtime
// through the given path.
#![deny(warnings, clippy::pedantic)]

extern crate cacheable as my_cache;

mod deps {
    pub use ::cacheable as cache;
}

use my_cache::{RateLimited, cache_evict, cacheable, rate_limit};

#[derive(serde::Serialize, serde::Deserialize)]
struct User {
    id: u64,
}

#[cacheable(crate = "my_cache", ttl = 60, tags = ["user:{id}"])]
async fn get_user(id: u64) -> Result<Option<User>, String> {
    Ok(Some(User { id }))
}

#[cacheable(key = "{id}", crate = "crate::deps::cache", cache_none)]
async fn find(id: u64) -> Option<axum::Json<User>> {
    Some(axum::Json(User { id }))
}

#[cache_evict(crate = "my_cache", tags = ["user:{id}"], strict)]
async fn rename(id: u64) -> Result<(), my_cache::CacheError> {
    let _ = id;
    Ok(())
}

#[rate_limit(crate = "::my_cache", points = 5, key = "{id}")]
async fn limited(id: u64) -> Result<u64, RateLimited> {
    Ok(id)
}

fn main() {
    drop(get_user(1));
    drop(find(1));
    drop(rename(1));
    drop(limited(1));
}
