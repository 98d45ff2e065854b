// `strict` needs a `Result` output whose error converts from `CacheError`.
use cacheable::cache_evict;

#[cache_evict(tags = ["users"], strict)]
async fn plain() -> u64 {
    1
}

#[cache_evict(tags = ["users"], strict)]
async fn unit() {}

#[cache_evict(tags = ["users"], strict, strict)]
async fn twice() -> Result<(), String> {
    Ok(())
}

#[cache_evict(tags = ["users"], strict = true)]
async fn valued() -> Result<(), String> {
    Ok(())
}

#[derive(Debug)]
struct NotFromCacheError;

#[cache_evict(tags = ["users"], strict)]
async fn wrong_error() -> Result<(), NotFromCacheError> {
    Ok(())
}

fn main() {}
