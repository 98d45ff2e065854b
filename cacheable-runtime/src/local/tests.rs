//! Unit tests of `local` (the local in-process tier).

use super::*;

fn tier(max_entries: u64, max_bytes: u64) -> LocalTier {
    let t = LocalTier::new(LocalConfig {
        max_entries,
        max_bytes,
        ttl: Duration::from_secs(60),
        lease: Duration::from_secs(4),
    });
    t.serve_from(Instant::now());
    t
}

#[test]
fn an_entry_read_before_a_raise_is_refused_even_when_inserted_after() {
    let t = tier(100, DEFAULT_BYTES);
    let epoch = t.floors.begin();
    t.floors.raise(["v:a"]);
    t.insert("k", epoch, b"x", ["v:a"].into_iter());
    assert!(t.get("k").is_none());
    let epoch = t.floors.begin();
    t.insert("k", epoch, b"x", ["v:a", "v:b"].into_iter());
    assert!(t.get("k").is_some(), "read after the raise: current");
    t.floors.raise(["v:c"]);
    assert!(t.get("k").is_some(), "another key's raise leaves it");
    t.floors.raise(["v:b"]);
    assert!(t.get("k").is_none());
    let epoch = t.floors.begin();
    t.insert("k", epoch, b"x", std::iter::empty());
    t.drop_all();
    assert!(t.get("k").is_none());
}

#[test]
fn no_lease_no_hits() {
    let t = tier(100, DEFAULT_BYTES);
    t.insert("k", t.floors.begin(), b"x", std::iter::empty());
    assert!(t.get("k").is_some());
    t.stop_serving();
    assert!(t.get("k").is_none());
}

#[test]
fn bounded_by_entries_and_by_bytes() {
    let t = tier(50, DEFAULT_BYTES);
    for i in 0..1000 {
        t.insert(&format!("k{i}"), t.floors.begin(), b"x", std::iter::empty());
    }
    assert!(t.len() <= 50, "{} entries", t.len());
    let t = tier(1_000_000, 64 << 10);
    let big = vec![0u8; 4096];
    for i in 0..1000 {
        t.insert(&format!("k{i}"), t.floors.begin(), &big, std::iter::empty());
    }
    assert!(t.weighted_size() <= 64 << 10, "{} bytes", t.weighted_size());
    assert!(t.len() <= 16, "{} entries of 4 KiB", t.len());
}
