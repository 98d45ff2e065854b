//! Unit tests of `store::memory` (the in-process store).

use super::*;
use crate::clock::FakeClock;
use crate::store::Expect;

const MIB: u64 = 1024 * 1024;

async fn write(store: &MemoryStore, key: &str, value: &[u8]) -> bool {
    store
        .put(&Put {
            key,
            value,
            ttl: Duration::from_secs(60),
            expect: Expect::Any,
            deps: &[],
            versions: &[],
            quota: None,
        })
        .await
        .unwrap()
}

/// The value written at key `i`: its index in every byte run, so a read
/// that returned another key's bytes is told apart.
fn value(i: u64, len: usize) -> Vec<u8> {
    i.to_le_bytes().iter().copied().cycle().take(len).collect()
}

fn rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test]
async fn ten_times_the_capacity_stays_within_it() {
    let store = MemoryStore::new(MIB);
    let n = 10 * 1024;
    for i in 0..n {
        assert!(write(&store, &format!("p:{{t}}:k{i}"), &value(i, 1024)).await);
    }
    let used = store.used_memory().await.unwrap().unwrap();
    assert!(used <= MIB, "{used} bytes used, capacity {MIB}");
    assert!(used > MIB / 2, "the store still holds entries: {used}");
    let keys: Vec<String> = (0..n).map(|i| format!("p:{{t}}:k{i}")).collect();
    let read = store.mget(&keys).await.unwrap();
    let mut found = 0;
    for (i, v) in (0..n).zip(&read) {
        if let Some(v) = v {
            assert_eq!(*v, value(i, 1024), "key {i} read another value");
            found += 1;
        }
    }
    assert!(found > 100, "only {found} entries left");
    // The most recent writes are kept (least recently used go first).
    assert!(read[n as usize - 1].is_some());
}

#[tokio::test]
async fn a_million_keys_in_a_small_store() {
    let store = MemoryStore::new(MIB);
    let before = rss_kib();
    for i in 0..1_000_000u64 {
        write(&store, &format!("p:{{t}}:key{i:08}"), &value(i, 16)).await;
    }
    let used = store.weighed_size();
    let after = rss_kib();
    println!(
        "1,000,000 keys into a 1 MiB memory store: VmRSS {before:?} KiB before, {after:?} KiB \
         after; {used} bytes weighed, {} keys",
        store.keys.entry_count()
    );
    assert!(used <= MIB, "{used} bytes used, capacity {MIB}");
    // The HashMap store this replaces held all of them (over 100 MiB).
    // RSS is printed, not asserted: it is the whole test process's, and
    // other tests of this binary run beside this one.
    assert!(
        store.keys.entry_count() < 100_000,
        "{} keys kept",
        store.keys.entry_count()
    );
    let last = format!("p:{{t}}:key{:08}", 999_999);
    let read = store.mget(&[last]).await.unwrap();
    assert_eq!(read[0].as_deref(), Some(&value(999_999, 16)[..]));
}

/// Measures what a full store costs the process, against its capacity
/// (what [`ENTRY_OVERHEAD`] is chosen for): with small keys, the
/// bookkeeping is most of it. Run alone:
/// `cargo test -p cacheable-runtime --lib memory_store_overhead_per_key -- --ignored --nocapture`
#[tokio::test]
#[ignore = "a measurement, not a check: run alone"]
async fn memory_store_overhead_per_key() {
    let capacity = 64 * MIB;
    let store = MemoryStore::new(capacity);
    let before = rss_kib().unwrap();
    for i in 0..1_000_000u64 {
        write(&store, &format!("p:{{t}}:key{i:08}"), &value(i, 16)).await;
    }
    let used = store.weighed_size();
    let keys = store.keys.entry_count();
    let after = rss_kib().unwrap();
    let grown = (after - before) * 1024;
    println!(
        "1,000,000 keys of 20 + 16 bytes into {capacity} bytes: VmRSS {before} -> {after} KiB \
         ({grown} bytes, {} per key kept), {used} bytes weighed, {keys} keys kept",
        grown / keys
    );
    assert!(grown <= capacity + 8 * MIB, "grew {grown} for {capacity}");
}

#[tokio::test]
async fn clear_removes_only_the_prefix() {
    let store = MemoryStore::new(MIB);
    write(&store, "a:{t}:1", b"x").await;
    write(&store, "a:{t}:2", b"y").await;
    write(&store, "ab:{t}:1", b"z").await;
    assert_eq!(store.clear("a").await.unwrap(), 2);
    let read = store
        .mget(&["a:{t}:1".into(), "ab:{t}:1".into()])
        .await
        .unwrap();
    assert_eq!(read, vec![None, Some(b"z".to_vec())]);
}

fn short(ttl: Duration) -> Put<'static> {
    Put {
        key: "s",
        value: b"1",
        ttl,
        expect: Expect::Any,
        deps: &[],
        versions: &[],
        quota: None,
    }
}

#[tokio::test]
async fn each_key_expires_on_its_own_deadline() {
    let clock = FakeClock::new();
    let store = MemoryStore::with_clock(MIB, AnyClock::new(clock.clone()));
    assert!(store.put(&short(Duration::from_millis(30))).await.unwrap());
    assert!(write(&store, "l", b"2").await);
    clock.advance(Duration::from_millis(29));
    let read = store.mget(&["s".into(), "l".into()]).await.unwrap();
    assert_eq!(read, vec![Some(b"1".to_vec()), Some(b"2".to_vec())]);
    clock.advance(Duration::from_millis(1));
    let read = store.mget(&["s".into(), "l".into()]).await.unwrap();
    assert_eq!(read, vec![None, Some(b"2".to_vec())]);
    // An expired lease can be taken again.
    assert!(
        store
            .try_lease("lease", "a", Duration::from_secs(5))
            .await
            .unwrap()
    );
    assert!(
        !store
            .try_lease("lease", "b", Duration::from_secs(5))
            .await
            .unwrap()
    );
    clock.advance(Duration::from_secs(5));
    assert!(
        store
            .try_lease("lease", "b", Duration::from_secs(5))
            .await
            .unwrap()
    );
}

/// Under a fake clock, moka's real-time expiry is off: real time running
/// ahead of the fake clock drops nothing.
#[tokio::test]
async fn real_time_does_not_expire_keys_under_a_fake_clock() {
    let clock = FakeClock::new();
    let store = MemoryStore::with_clock(MIB, AnyClock::new(clock));
    assert!(store.put(&short(Duration::from_millis(10))).await.unwrap());
    std::thread::sleep(Duration::from_millis(20));
    assert!(store.keys.get("s").is_some(), "moka kept the key");
    let read = store.mget(&["s".into()]).await.unwrap();
    assert_eq!(read, vec![Some(b"1".to_vec())]);
}

/// The system clock: moka drops an expired key by itself (one short
/// real sleep).
#[tokio::test]
async fn keys_expire_in_real_time_on_the_system_clock() {
    let store = MemoryStore::new(MIB);
    assert!(store.put(&short(Duration::from_millis(10))).await.unwrap());
    std::thread::sleep(Duration::from_millis(20));
    assert!(store.keys.get("s").is_none(), "moka expired the key itself");
    assert_eq!(store.mget(&["s".into()]).await.unwrap(), vec![None]);
}
