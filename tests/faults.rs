//! The cost of a miss when Redis stops answering part way through it.

use std::time::{Duration, Instant};

use cacheable::{Cache, CacheOptions};
use cacheable_test_support::RedisServer;

/// `CLIENT PAUSE WRITE` lets the miss's read through and stalls every write
/// after it (version snapshot, lease, entry, lease release): the miss costs
/// one `op_timeout`, not one per step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_with_redis_stalling_costs_one_op_timeout() {
    let server = RedisServer::start();
    let timeout = Duration::from_millis(300);
    let cache = Cache::builder()
        .redis_url(server.url())
        .op_timeout(timeout)
        // Keep the breaker out of it: every step would otherwise time out.
        .circuit_breaker(1000, Duration::from_millis(250), Duration::from_millis(500))
        .build()
        .await
        .unwrap();
    for (case, key) in [("counters exist", "warm"), ("counters missing", "cold")] {
        let opts = CacheOptions::new()
            .ttl(Duration::from_secs(60))
            .tags([format!("t-{key}")])
            .tenant("acme");
        if key == "warm" {
            // Create the entry and its version counters, then drop the entry
            // alone: the miss below finds every counter and goes on to the
            // lease and the write.
            cache
                .get_or_compute(key, &opts, || async { Ok::<_, ()>(0u8) })
                .await
                .unwrap();
            server.command(&[b"DEL", b"cacheable:{t:acme}:k:warm"]);
        }
        server.command(&[b"CLIENT", b"PAUSE", b"2000", b"WRITE"]);
        let started = Instant::now();
        let got = cache
            .get_or_compute(key, &opts, || async { Ok::<_, ()>(7u8) })
            .await
            .unwrap();
        let took = started.elapsed();
        server.command(&[b"CLIENT", b"UNPAUSE"]);
        assert_eq!(got, 7);
        assert!(
            took < timeout * 2,
            "{case}: a miss took {took:?} with an op timeout of {timeout:?}"
        );
    }
}
