// `#[cache_evict(strict)]`: a `Result` output whose error converts from
// `CacheError`, on a free fn and a method with `all_tenants`; `?` in the body.
use cacheable::{Cache, CacheError, cache_evict};

#[derive(Debug)]
enum AppError {
    Parse,
    Cache(CacheError),
}

impl From<CacheError> for AppError {
    fn from(e: CacheError) -> Self {
        AppError::Cache(e)
    }
}

#[cache_evict(tags = ["user:{id}"], strict)]
async fn rename(id: u64, name: &str) -> Result<u64, AppError> {
    let n: u64 = name.parse().map_err(|_| AppError::Parse)?;
    Ok(id + n)
}

struct Plans {
    cache: Cache,
}

impl Plans {
    #[cache_evict(tags = ["plans"], all_tenants, strict, cache = self.cache)]
    async fn reset(&self) -> Result<(), AppError> {
        Ok(())
    }
}

fn assert_send<T: Send>(_: T) {}

fn main() {
    assert_send(rename(1, "2"));
    let plans = Plans { cache: Cache::memory() };
    assert_send(plans.reset());
}
