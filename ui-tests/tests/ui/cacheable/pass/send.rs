// The future of a cached fn is `Send` when its body is: it can be spawned.
use cacheable::{cache_evict, cacheable};

fn assert_send<T: Send>(t: T) -> T {
    t
}

#[cacheable(ttl = 60, tags = ["n:{n}"])]
async fn cached(n: u64) -> Result<u64, String> {
    tokio::task::yield_now().await;
    Ok(n)
}

#[cache_evict(tags = ["n:{n}"])]
async fn evicting(n: u64) -> Result<(), String> {
    tokio::task::yield_now().await;
    let _ = n;
    Ok(())
}

struct Service {
    cache: cacheable::Cache,
}

impl Service {
    #[cacheable(ttl = 60, cache = self.cache)]
    async fn method(&self, n: u64) -> Option<u64> {
        tokio::task::yield_now().await;
        Some(n)
    }
}

#[tokio::main]
async fn main() {
    cacheable::set_global(cacheable::Cache::memory());
    let _ = assert_send(cached(1));
    let _ = assert_send(evicting(1));
    let service = Service {
        cache: cacheable::Cache::memory(),
    };
    let _ = assert_send(service.method(1));
    // Spawned on the multi-threaded runtime: a miss, then a hit.
    for _ in 0..2 {
        assert_eq!(tokio::spawn(cached(2)).await.unwrap(), Ok(2));
    }
    assert_eq!(tokio::spawn(evicting(2)).await.unwrap(), Ok(()));
}
