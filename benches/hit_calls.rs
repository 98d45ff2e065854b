//! N cache hits of one kind, for instruction counts under callgrind
//! (`benches/callgrind.sh` runs it): a global `#[cacheable]` hit, a
//! tenant-scoped tagged hit (`tenant::scope("acme", tenant_profile(42))`) or
//! a raw redis-rs `GET` (on a `ConnectionManager`, as the cache's store) + `serde_json` decode of the same ~200-byte value.
//!
//! Run: `hit_calls <global|tenant|raw> <N>`. It starts its own
//! `redis-server`, fills the entries, warms up with N calls, then makes N
//! more inside `measured`, the only function callgrind collects in
//! (`--toggle-collect`), so instructions / N is the cost of one call.
//! Single-threaded runtime: callgrind serialises threads anyway.

use std::hint::black_box;

use cacheable::{cacheable, tenant};
use cacheable_test_support::RedisServer;
use redis::aio::ConnectionManager;

mod common;
use common::{Profile, profile_value};

#[cacheable(ttl = 3600, name = "bench.profile")]
async fn profile(id: u64) -> Profile {
    profile_value(id)
}

#[cacheable(ttl = 3600, name = "bench.tenant_profile", tags = ["user:{id}"])]
async fn tenant_profile(id: u64) -> Profile {
    profile_value(id)
}

async fn raw_get(conn: &mut ConnectionManager) -> Profile {
    let bytes: Vec<u8> = redis::cmd("GET")
        .arg(common::RAW_KEY)
        .query_async(conn)
        .await
        .expect("GET");
    serde_json::from_slice(&bytes).expect("decode")
}

#[derive(Clone, Copy)]
enum Kind {
    Global,
    Tenant,
    Raw,
}

async fn calls(kind: Kind, n: u64, conn: &ConnectionManager) {
    for _ in 0..n {
        match kind {
            Kind::Global => black_box(profile(42).await),
            Kind::Tenant => black_box(tenant::scope("acme", tenant_profile(42)).await),
            Kind::Raw => black_box(raw_get(&mut conn.clone()).await),
        };
    }
}

/// The measured calls: callgrind collects only inside this function.
#[inline(never)]
fn measured(rt: &tokio::runtime::Runtime, kind: Kind, n: u64, conn: &ConnectionManager) {
    rt.block_on(calls(kind, n, conn));
}

fn main() {
    let mut args = std::env::args().skip(1);
    let kind = match args.next().as_deref() {
        Some("global") => Kind::Global,
        Some("tenant") => Kind::Tenant,
        Some("raw") => Kind::Raw,
        // `cargo bench` runs every bench binary with `--bench`: nothing to do.
        _ => return,
    };
    let n: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let server = RedisServer::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (cache, conn) = rt.block_on(common::hit_sides(&server.url()));
    cacheable::set_global(cache.clone());
    // The fill, then the warm-up: one `block_on` per call, code unlike
    // `measured` so that the compiler cannot fold the two together.
    for _ in 0..n {
        rt.block_on(calls(kind, 1, &conn));
    }
    measured(&rt, kind, n, &conn);
    let stats = cache.stats();
    assert!(
        stats.misses <= 1,
        "every measured call was a hit: {stats:?}"
    );
    drop(server);
}
