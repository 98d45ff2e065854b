// Template placeholders beyond `{param}`: `Debug` with `:?`, method calls
// with no or literal arguments, and `{ret..}` (the result) in tags of
// `#[cacheable]` and `#[cache_evict]`, mixed with parameters.
#![deny(warnings)]

use cacheable::{CacheError, cache_evict, cacheable};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
enum Kind {
    Draft,
}

#[derive(Serialize, Deserialize)]
struct User {
    org_id: u64,
    name: String,
}

impl User {
    fn id(&self) -> u64 {
        self.org_id * 10
    }
}

#[cacheable(
    ttl = 60,
    tags = ["kind:{kind:?}", "user:{user.id()}", "name:{name.to_lowercase()}", "p:{name.split_once(':'):?}"],
    key = "{kind:?}:{name.trim_start_matches('x')}:{user.name.len()}"
)]
async fn tagged(kind: Kind, user: User, name: String) -> u64 {
    let _ = (kind, name);
    user.org_id
}

#[cacheable(ttl = 60, tags = ["user:{ret.id()}", "org:{ret.org_id}", "lookup:{name}:{ret.name:?}"])]
async fn by_name(name: String) -> Result<Option<User>, std::io::Error> {
    Ok(Some(User { org_id: 1, name }))
}

#[cacheable(ttl = 60, tags = ["n:{ret}"], cache_none)]
async fn plain(n: u32) -> Option<u32> {
    n.checked_sub(1)
}

#[cache_evict(tags = ["user:{id}", "org:{ret.org_id}"])]
async fn rename(id: u64, name: String) -> Result<User, std::io::Error> {
    Ok(User { org_id: id, name })
}

#[derive(Debug)]
struct AppError;

impl From<CacheError> for AppError {
    fn from(_: CacheError) -> Self {
        AppError
    }
}

#[cache_evict(tags = ["org:{ret}"], strict, all_tenants)]
async fn move_org(id: u64) -> Result<u64, AppError> {
    Ok(id + 1)
}

fn main() {
    let _ = (tagged, by_name, plain, rename, move_org);
}
