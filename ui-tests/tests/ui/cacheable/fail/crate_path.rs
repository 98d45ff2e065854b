// `crate = ".."` is where the generated code looks for the runtime: a path
// that leads nowhere is an unresolved path, on every attribute.
use cacheable::{cache_evict, cacheable, rate_limit};

#[cacheable(crate = "no_such_crate", ttl = 60)]
async fn unresolved(id: u64) -> u64 {
    id
}

#[cache_evict(crate = "no_such_crate", tags = ["a"])]
async fn evict() {}

#[rate_limit(crate = "no_such_crate::cache", points = 1)]
async fn limited() -> Result<(), cacheable::RateLimited> {
    Ok(())
}

fn main() {}
