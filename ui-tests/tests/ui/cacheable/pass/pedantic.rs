//! Expansions are clean under `deny(warnings, clippy::pedantic)`.
#![deny(warnings, clippy::pedantic)]

use cacheable::{Cache, cache_evict, cacheable};

/// A cached fn with every argument.
#[cacheable(
    ttl = 60,
    tags = ["users", "user:{id}"],
    skip(flag),
    name = "users.get",
    version = 2,
    global,
    stale = "30s",
    cache_none
)]
pub async fn get(id: u64, flag: bool) -> Option<String> {
    if flag { None } else { Some(id.to_string()) }
}

/// Explicit cache and key template.
#[cacheable(policy = "profile", key = "{id}:{lang}", cache = cache)]
pub async fn keyed(cache: &Cache, id: u64, lang: &str) -> Result<String, std::fmt::Error> {
    Ok(format!("{lang}{id}"))
}

/// No arguments at all.
#[cacheable]
pub async fn nothing() -> u8 {
    1
}

/// Evicts.
#[cache_evict(tags = ["user:{id}"], all_tenants, cache = cache)]
pub async fn evict(cache: &Cache, id: u64) -> Result<(), std::fmt::Error> {
    let _ = id;
    Ok(())
}

fn main() {
    let cache = Cache::memory();
    drop(get(1, false));
    drop(keyed(&cache, 1, "en"));
    drop(nothing());
    drop(evict(&cache, 1));
}
