//! N rate-limit decisions of one kind, for instruction counts under
//! callgrind (`benches/callgrind-limiter.sh` runs it): `RateLimiter::check`
//! with GCRA (the `#[rate_limit]` default), or the original sliding-log
//! script (issue 3) through raw redis-rs `Script::invoke_async` on a
//! `ConnectionManager`, the baseline of `benches/rate_limit.rs`.
//!
//! Run: `decision_calls <gcra|original> <N>`. It starts its own
//! `redis-server`, warms up with N decisions, then makes N more inside
//! `measured`, the only function callgrind collects in
//! (`--toggle-collect`), so instructions / N is the client's cost of one
//! decision (the server is another process, not counted). Every decision is
//! admitted (100 points a minute over 4096 identities), so each one is a
//! full script call, never a cached denial. Single-threaded runtime:
//! callgrind serialises threads anyway.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::Duration;

use cacheable::{Cache, RateLimitOptions, RateLimiter};
use cacheable_test_support::RedisServer;
use redis::Script;
use redis::aio::ConnectionManager;

const POINTS: u32 = 100;
const WINDOW_SECS: u64 = 60;
const IDENTITIES: usize = 4096;

#[path = "common/original.rs"]
mod original;

#[derive(Clone, Copy)]
enum Kind {
    Gcra,
    Original,
}

struct Sides {
    rl: RateLimiter,
    opts: RateLimitOptions,
    conn: ConnectionManager,
    script: Script,
    keys: Vec<String>,
    orig_keys: Vec<String>,
}

async fn original(s: &Sides, key: &str) {
    let r = original::decide(&mut s.conn.clone(), &s.script, key, POINTS, WINDOW_SECS).await;
    black_box(r);
}

async fn calls(kind: Kind, from: usize, n: usize, s: &Sides) {
    for i in from..from + n {
        match kind {
            Kind::Gcra => {
                let d = s.rl.check(&s.keys[i % IDENTITIES], &s.opts).await;
                assert!(d.expect("check").allowed);
            }
            Kind::Original => original(s, &s.orig_keys[i % IDENTITIES]).await,
        }
    }
}

/// The measured calls: callgrind collects only inside this function.
#[inline(never)]
fn measured(rt: &tokio::runtime::Runtime, kind: Kind, from: usize, n: usize, s: &Sides) {
    rt.block_on(calls(kind, from, n, s));
}

fn main() {
    let mut args = std::env::args().skip(1);
    let kind = match args.next().as_deref() {
        Some("gcra") => Kind::Gcra,
        Some("original") => Kind::Original,
        // `cargo bench` runs every bench binary with `--bench`: nothing to do.
        _ => return,
    };
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let server = RedisServer::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sides = rt.block_on(async {
        let cache = Cache::builder()
            .redis_url(server.url())
            .op_timeout(Duration::from_secs(2))
            .build()
            .await
            .unwrap();
        let conn = ConnectionManager::new(redis::Client::open(server.url()).unwrap())
            .await
            .unwrap();
        Sides {
            rl: cache.rate_limiter(),
            opts: RateLimitOptions::new(
                NonZeroU32::new(POINTS).unwrap(),
                Duration::from_secs(WINDOW_SECS),
            ),
            conn,
            script: Script::new(original::SCRIPT),
            keys: (0..IDENTITIES).map(|i| format!("bench:u:{i}")).collect(),
            orig_keys: (0..IDENTITIES)
                .map(|i| format!("orig:bench:u:{i}"))
                .collect(),
        }
    });
    // The warm-up: one `block_on` per call, code unlike `measured` so that
    // the compiler cannot fold the two together.
    for i in 0..n {
        rt.block_on(calls(kind, i, 1, &sides));
    }
    measured(&rt, kind, n, n, &sides);
    drop(server);
}
