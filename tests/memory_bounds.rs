//! The embedded memory store is bounded: ten times its capacity written
//! through `Cache::set` and through `#[cacheable]` leaves it within the
//! capacity, and every read still returns the value written under its key or
//! nothing.

use std::sync::atomic::{AtomicUsize, Ordering};

use cacheable::{Cache, CacheError, CacheOptions, cacheable};

const MIB: u64 = 1024 * 1024;

/// A 1 KiB value that names its key, so a read of another key's value shows.
fn blob(i: u64) -> String {
    format!("{i:016}").repeat(64)
}

async fn small_store() -> Cache {
    Cache::builder()
        .memory()
        .memory_capacity(MIB)
        .build()
        .await
        .expect("valid configuration")
}

async fn used_bytes(cache: &Cache) -> u64 {
    let h = cache.health().await;
    assert_eq!(h.backend, "memory");
    h.used_memory.expect("the memory store reports its size")
}

#[tokio::test]
async fn a_zero_capacity_is_a_config_error() {
    let err = Cache::builder()
        .memory()
        .memory_capacity(0)
        .build()
        .await
        .expect_err("zero capacity");
    assert!(matches!(err, CacheError::Config(_)), "{err:?}");
}

#[tokio::test]
async fn set_ten_times_the_capacity_stays_within_it() {
    let cache = small_store().await;
    let opts = CacheOptions::new();
    let n = 10 * 1024;
    for i in 0..n {
        cache.set(&format!("k{i}"), &blob(i), &opts).await.unwrap();
    }
    let used = used_bytes(&cache).await;
    assert!(used <= MIB, "{used} bytes used, capacity {MIB}");
    let mut found = 0;
    // Newest first: these are the keys an LRU store keeps.
    for i in (0..n).rev() {
        if let Some(v) = cache.get::<String>(&format!("k{i}"), &opts).await.unwrap() {
            assert_eq!(v, blob(i), "k{i} returned another key's value");
            found += 1;
        }
    }
    assert!(found > 100, "only {found} of {n} entries readable");
    let last = cache.get::<String>(&format!("k{}", n - 1), &opts).await;
    assert_eq!(last.unwrap(), Some(blob(n - 1)));
    assert!(used_bytes(&cache).await <= MIB);
}

static COMPUTED: AtomicUsize = AtomicUsize::new(0);

#[cacheable(ttl = 60, cache = cache)]
async fn page(cache: &Cache, i: u64) -> String {
    COMPUTED.fetch_add(1, Ordering::SeqCst);
    blob(i)
}

#[tokio::test]
async fn cacheable_ten_times_the_capacity_stays_within_it() {
    let cache = small_store().await;
    let n = 10 * 1024;
    for i in 0..n {
        assert_eq!(page(&cache, i).await, blob(i));
    }
    let used = used_bytes(&cache).await;
    assert!(used <= MIB, "{used} bytes used, capacity {MIB}");
    assert_eq!(COMPUTED.load(Ordering::SeqCst), n as usize);
    // The most recent calls are still cached...
    for i in (n - 100..n).rev() {
        assert_eq!(page(&cache, i).await, blob(i));
    }
    let recomputed = COMPUTED.load(Ordering::SeqCst) - n as usize;
    assert!(
        recomputed < 10,
        "{recomputed} of the last 100 calls recomputed"
    );
    // ...and no call, hit or miss, returns another argument's value.
    for i in (0..n).rev() {
        assert_eq!(page(&cache, i).await, blob(i));
    }
    assert!(used_bytes(&cache).await <= MIB);
}
