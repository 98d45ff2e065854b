//! The rate limiter against a real `redis-server`: exactness under
//! concurrency from several processes' worth of caches (each on its own
//! runtime and connection), the sliding window's invariant, roles, tenants,
//! cost, every `on_error` mode with Redis down, the denial cache, and
//! `#[rate_limit]` end to end.

use std::num::NonZeroU32;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use cacheable::context::{self, Context};
use cacheable::rate_limit::Source;
use cacheable::{Algorithm, Cache, OnError, RateLimitOptions, RateLimited, rate_limit};
use cacheable_test_support::RedisServer;

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

async fn cache_on(server: &RedisServer) -> Cache {
    Cache::builder()
        .redis_url(server.url())
        .op_timeout(Duration::from_millis(500))
        .build()
        .await
        .unwrap()
}

/// The integer of a RESP reply (`:42\r\n`), or of an `INFO` field.
fn resp_int(reply: &[u8]) -> i64 {
    let s = String::from_utf8_lossy(reply);
    s.trim_start_matches(':')
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("not an integer reply: {s}"))
}

fn info_field(server: &RedisServer, section: &str, field: &str) -> u64 {
    let reply = server.command(&[b"INFO", section.as_bytes()]);
    let text = String::from_utf8_lossy(&reply);
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `{field}` in INFO {section}"))
}

/// `threads` caches, each on its own OS thread, runtime and connection, fire
/// `per_thread` concurrent checks at once on one key. Returns how many passed.
fn fire(
    server: &RedisServer,
    threads: usize,
    per_thread: usize,
    key: &str,
    opts: &RateLimitOptions,
) -> usize {
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let url = server.url();
            let barrier = Arc::clone(&barrier);
            let key = key.to_owned();
            let opts = opts.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let cache = Cache::builder()
                        .redis_url(url)
                        .op_timeout(Duration::from_secs(2))
                        .build()
                        .await
                        .unwrap();
                    let rl = cache.rate_limiter();
                    // Connect (and load the script) before the race starts.
                    let _ = cache.health().await;
                    barrier.wait();
                    let tasks: Vec<_> = (0..per_thread)
                        .map(|_| {
                            let rl = rl.clone();
                            let key = key.clone();
                            let opts = opts.clone();
                            tokio::spawn(async move { rl.check(&key, &opts).await.unwrap() })
                        })
                        .collect();
                    let mut allowed = 0;
                    for t in tasks {
                        let d = t.await.unwrap();
                        assert!(
                            matches!(d.source, Source::Redis | Source::DenialCache),
                            "{d:?}"
                        );
                        allowed += usize::from(d.allowed);
                    }
                    assert_eq!(rl.stats().errors, 0);
                    allowed
                })
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).sum()
}

#[test]
fn exactly_the_limit_passes_under_concurrency_from_several_caches() {
    let server = RedisServer::start();
    for (i, alg) in [
        Algorithm::Gcra,
        Algorithm::SlidingWindow,
        Algorithm::FixedWindow,
    ]
    .into_iter()
    .enumerate()
    {
        // A long window: nothing refills while the race runs.
        let opts = RateLimitOptions::new(nz(50), Duration::from_secs(3600)).algorithm(alg);
        let key = format!("race:{i}");
        let allowed = fire(&server, 4, 40, &key, &opts);
        assert_eq!(allowed, 50, "{alg:?}: 160 calls on a budget of 50");
        // The budget is spent: another round admits nothing.
        let again = fire(&server, 2, 10, &key, &opts);
        assert_eq!(again, 0, "{alg:?}");
    }
}

#[test]
fn a_cost_never_overdraws_the_budget_under_concurrency() {
    let server = RedisServer::start();
    // 4 × 20 calls of cost 3 on 100 points: exactly 33 pass (99 points).
    let opts = RateLimitOptions::new(nz(100), Duration::from_secs(3600)).cost(nz(3));
    assert_eq!(fire(&server, 4, 20, "cost-race", &opts), 33);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sliding_window_never_admits_more_than_points_in_any_window() {
    let server = RedisServer::start();
    let window = Duration::from_millis(1000);
    let opts = RateLimitOptions::new(nz(5), window).algorithm(Algorithm::SlidingWindow);
    let limiters = [
        cache_on(&server).await.rate_limiter(),
        cache_on(&server).await.rate_limiter(),
    ];
    let started = Instant::now();
    let mut admitted: Vec<Duration> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(15));
    while started.elapsed() < Duration::from_millis(2600) {
        tick.tick().await;
        // Two clients at once, on separate connections.
        let (a, b) = tokio::join!(
            limiters[0].check("sw", &opts),
            limiters[1].check("sw", &opts)
        );
        let at = started.elapsed();
        for d in [a.unwrap(), b.unwrap()] {
            if d.allowed {
                admitted.push(at);
            } else {
                assert!(d.retry_after > Duration::ZERO && d.retry_after <= window);
            }
        }
    }
    // Client-side check, with a margin for the round trip (each admission is
    // timed after its reply, up to a few ms after Redis decided).
    let margin = Duration::from_millis(40);
    for (i, &t) in admitted.iter().enumerate() {
        let in_window = admitted[i..]
            .iter()
            .filter(|&&u| u < t + window - margin)
            .count();
        assert!(
            in_window <= 5,
            "{in_window} admissions within one window from {t:?}: {admitted:?}"
        );
    }
    // Progress: about 5 per window over 2.6 windows.
    assert!(admitted.len() >= 12, "{admitted:?}");
    // Server-side check on the members themselves: unique, and never more
    // than 5 in one window.
    let reply = server.command(&[b"ZRANGE", b"cacheable:{g}:rls:sw", b"0", b"-1"]);
    let text = String::from_utf8_lossy(&reply);
    let members: Vec<u64> = text
        .lines()
        .filter(|l| !l.starts_with('*') && !l.starts_with('$'))
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert!(!members.is_empty() && members.len() <= 5, "{members:?}");
    let span = members.last().unwrap() - members.first().unwrap();
    assert!(span < 1_000_000, "members span {span} µs");
}

#[tokio::test]
async fn gcra_refills_at_points_per_duration_and_a_denial_writes_nothing() {
    let server = RedisServer::start();
    let cache = cache_on(&server).await;
    let rl = cache.rate_limiter();
    let opts = RateLimitOptions::new(nz(2), Duration::from_secs(1)).name("api");
    let first = rl.check("u:1", &opts).await.unwrap();
    assert!(first.allowed);
    assert_eq!((first.limit, first.remaining), (2, 1));
    assert_eq!(first.policy, "api");
    assert!(rl.check("u:1", &opts).await.unwrap().allowed);
    let key = rl.redis_key("u:1", &opts);
    let before = server.command(&[b"GET", key.as_bytes()]);
    rl.clear_denial_cache();
    let denied = rl.check("u:1", &opts).await.unwrap();
    assert!(!denied.allowed);
    assert_eq!(denied.source, Source::Redis);
    assert_eq!(denied.remaining, 0);
    // One point comes back every 500 ms.
    assert!(
        denied.retry_after > Duration::from_millis(400)
            && denied.retry_after <= Duration::from_millis(500),
        "{denied:?}"
    );
    assert!(
        denied.reset_after > Duration::from_millis(900)
            && denied.reset_after <= Duration::from_secs(1),
        "{denied:?}"
    );
    assert_eq!(
        server.command(&[b"GET", key.as_bytes()]),
        before,
        "a denial writes nothing"
    );
    let pttl = resp_int(&server.command(&[b"PTTL", key.as_bytes()]));
    assert!(
        pttl > 0 && pttl <= 1000,
        "the key expires when the budget is full again: {pttl}"
    );
    tokio::time::sleep(denied.retry_after + Duration::from_millis(20)).await;
    let after = rl.check("u:1", &opts).await.unwrap();
    assert!(after.allowed, "{after:?}");
    // O(1) memory: the key is one small integer string.
    let usage = resp_int(&server.command(&[b"MEMORY", b"USAGE", key.as_bytes()]));
    assert!(usage <= 128, "MEMORY USAGE of a GCRA key is {usage} bytes");
}

#[tokio::test]
async fn fixed_window_resets_at_the_window_end() {
    let server = RedisServer::start();
    let cache = cache_on(&server).await;
    let rl = cache.rate_limiter();
    let opts =
        RateLimitOptions::new(nz(2), Duration::from_secs(1)).algorithm(Algorithm::FixedWindow);
    let mut denied = None;
    for _ in 0..3 {
        let d = rl.check("quota", &opts).await.unwrap();
        if !d.allowed {
            denied = Some(d);
        }
    }
    // Two pass in the window (unless the window turned over in between: then all three).
    let Some(denied) = denied else { return };
    assert!(denied.retry_after <= Duration::from_secs(1));
    assert_eq!(denied.retry_after, denied.reset_after);
    let key = rl.redis_key("quota", &opts);
    let pttl = resp_int(&server.command(&[b"PTTL", key.as_bytes()]));
    assert!(pttl > 0 && pttl <= 1000, "{pttl}");
    tokio::time::sleep(denied.retry_after + Duration::from_millis(20)).await;
    let d = rl.check("quota", &opts).await.unwrap();
    assert!(d.allowed);
    assert_eq!(d.remaining, 1);
}

#[tokio::test]
async fn cost_weights_a_call_and_a_cheaper_call_still_fits() {
    let server = RedisServer::start();
    let cache = cache_on(&server).await;
    let rl = cache.rate_limiter();
    for alg in [
        Algorithm::Gcra,
        Algorithm::SlidingWindow,
        Algorithm::FixedWindow,
    ] {
        let heavy = RateLimitOptions::new(nz(10), Duration::from_secs(3600))
            .algorithm(alg)
            .cost(nz(4));
        let light = RateLimitOptions::new(nz(10), Duration::from_secs(3600)).algorithm(alg);
        assert_eq!(rl.check("c", &heavy).await.unwrap().remaining, 6);
        assert_eq!(rl.check("c", &heavy).await.unwrap().remaining, 2);
        let d = rl.check("c", &heavy).await.unwrap();
        assert!(!d.allowed, "{alg:?}");
        assert_eq!(d.remaining, 2);
        // The cached denial is for cost 4: cost 1 still asks Redis and passes twice.
        assert!(rl.check("c", &light).await.unwrap().allowed);
        assert!(rl.check("c", &light).await.unwrap().allowed);
        let d = rl.check("c", &light).await.unwrap();
        assert!(!d.allowed, "{alg:?}");
        assert_eq!(d.source, Source::Redis);
    }
}

#[tokio::test]
async fn tenants_have_separate_budgets_that_crafted_ids_cannot_reach() {
    let server = RedisServer::start();
    let cache = cache_on(&server).await;
    let rl = cache.rate_limiter();
    let base = RateLimitOptions::new(nz(2), Duration::from_secs(3600));
    for t in ["a", "b", "a:b", "{a}", "a}:{b", "*"] {
        let opts = base.clone().tenant(t);
        assert!(rl.check("login", &opts).await.unwrap().allowed, "{t}");
        assert!(rl.check("login", &opts).await.unwrap().allowed, "{t}");
        assert!(!rl.check("login", &opts).await.unwrap().allowed, "{t}");
    }
    // The current tenant (task-local) is used when the options name none.
    let d = cacheable::tenant::scope("c", rl.check("login", &base))
        .await
        .unwrap();
    assert!(d.allowed);
    let key = cacheable::tenant::scope("c", async { rl.redis_key("login", &base) }).await;
    assert_eq!(key, "cacheable:{t:c}:rlg:login");
    let keys = server.command(&[b"KEYS", b"*"]);
    assert_eq!(
        String::from_utf8_lossy(&keys).matches(":rlg:login").count(),
        7
    );
}

#[tokio::test]
async fn every_on_error_mode_with_redis_down_is_decided_and_counted() {
    let mut server = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .op_timeout(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    let rl = cache.rate_limiter();
    // One instance: the local fallback may admit the whole limit.
    rl.set_expected_instances(nz(1));
    let opts = RateLimitOptions::new(nz(3), Duration::from_secs(60));
    assert_eq!(rl.check("k", &opts).await.unwrap().source, Source::Redis);
    server.kill();

    let started = Instant::now();
    let local = opts.clone().on_error(OnError::Local);
    let mut passed = 0;
    for _ in 0..5 {
        let d = rl.check("k", &local).await.unwrap();
        assert_eq!(d.source, Source::Local);
        passed += usize::from(d.allowed);
    }
    // The local limiter applies the same policy, from the 2 points Redis
    // reported left, not from a full budget.
    assert_eq!(
        passed, 2,
        "the local limiter starts from what redis reported"
    );

    let allow = opts.clone().on_error(OnError::Allow);
    for _ in 0..5 {
        let d = rl.check("k2", &allow).await.unwrap();
        assert!(d.allowed);
        assert_eq!(d.source, Source::FailOpen);
    }
    let deny = opts.clone().on_error(OnError::Deny);
    for _ in 0..5 {
        let d = rl.check("k3", &deny).await.unwrap();
        assert!(!d.allowed);
        assert_eq!(d.source, Source::FailClosed);
        let limited = d.into_result().unwrap_err();
        assert_eq!(limited.retry_after_secs(), 1);
    }
    // The breaker opens after a few failures: 15 decisions cost far less than
    // 15 timeouts.
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "{:?}",
        started.elapsed()
    );
    let s = rl.stats();
    assert_eq!(s.errors, 15);
    assert_eq!(
        (s.fallback_local, s.fallback_allowed, s.fallback_denied),
        (5, 5, 5)
    );

    // Redis back: decisions go to Redis again once the breaker lets a probe through.
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let d = rl.check("k4", &opts).await.unwrap();
        if d.source == Source::Redis {
            break;
        }
        assert!(Instant::now() < deadline, "redis never used again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_flood_of_denials_stops_reaching_redis() {
    let server = RedisServer::start();
    let cache = cache_on(&server).await;
    let rl = cache.rate_limiter();
    let opts = RateLimitOptions::new(nz(2), Duration::from_secs(60));
    assert!(rl.check("flood", &opts).await.unwrap().allowed);
    assert!(rl.check("flood", &opts).await.unwrap().allowed);
    let first = rl.check("flood", &opts).await.unwrap();
    assert_eq!(first.source, Source::Redis);
    assert!(!first.allowed);
    let before = info_field(&server, "stats", "total_commands_processed");
    for _ in 0..500 {
        let d = rl.check("flood", &opts).await.unwrap();
        assert!(!d.allowed);
        assert_eq!(d.source, Source::DenialCache);
        assert!(d.retry_after <= first.retry_after);
    }
    let after = info_field(&server, "stats", "total_commands_processed");
    // Only the two INFO commands themselves (and nothing of the flood).
    assert!(
        after - before <= 2,
        "{} commands reached redis",
        after - before
    );
    assert_eq!(rl.stats().denied_cached, 500);
    // Another identity is not affected.
    assert!(rl.check("other", &opts).await.unwrap().allowed);
}

#[tokio::test]
async fn scripts_are_reloaded_after_script_flush() {
    let server = RedisServer::start();
    let cache = cache_on(&server).await;
    let rl = cache.rate_limiter();
    let opts = RateLimitOptions::new(nz(5), Duration::from_secs(60));
    assert!(rl.check("s", &opts).await.unwrap().allowed);
    server.command(&[b"SCRIPT", b"FLUSH"]);
    let d = rl.check("s", &opts).await.unwrap();
    assert_eq!((d.allowed, d.remaining, d.source), (true, 3, Source::Redis));
}

/// The calls of one command so far (`INFO commandstats`), 0 before the first.
fn command_calls(server: &RedisServer, command: &str) -> u64 {
    let reply = server.command(&[b"INFO", b"commandstats"]);
    let text = String::from_utf8_lossy(&reply);
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|v| v.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// Both store paths of a decision: on Redis, one script call (`EVALSHA`)
/// per decision and nothing counted as a failure; on `Cache::memory()`,
/// whose store runs no scripts, the in-process limiter with the whole
/// budget, counted as a local decision, not as a Redis failure or fallback
/// (which would cut the budget to `points / 4` here: nothing).
#[tokio::test]
async fn redis_decides_by_one_script_and_memory_in_process() {
    let server = RedisServer::start();
    let rl = cache_on(&server).await.rate_limiter();
    let opts = RateLimitOptions::new(nz(3), Duration::from_secs(60));
    let before = command_calls(&server, "evalsha");
    for left in [2, 1, 0] {
        let d = rl.check("both", &opts).await.unwrap();
        assert_eq!(
            (d.allowed, d.remaining, d.source),
            (true, left, Source::Redis)
        );
    }
    let denied = rl.check("both", &opts).await.unwrap();
    assert_eq!((denied.allowed, denied.source), (false, Source::Redis));
    assert_eq!(command_calls(&server, "evalsha") - before, 4);
    let s = rl.stats();
    assert_eq!(
        (s.allowed, s.denied, s.errors, s.fallback_local),
        (3, 1, 0, 0)
    );

    let mem = Cache::memory().rate_limiter();
    for left in [2, 1, 0] {
        let d = mem.check("both", &opts).await.unwrap();
        assert_eq!(
            (d.allowed, d.remaining, d.source),
            (true, left, Source::Local)
        );
    }
    let denied = mem.check("both", &opts).await.unwrap();
    assert_eq!((denied.allowed, denied.source), (false, Source::Local));
    let s = mem.stats();
    assert_eq!(
        (s.allowed, s.denied, s.errors, s.fallback_local),
        (3, 1, 0, 0)
    );
}

// ----- #[rate_limit] end to end -----

#[derive(Debug, PartialEq)]
enum AppError {
    Limited(u64),
}

impl From<RateLimited> for AppError {
    fn from(r: RateLimited) -> Self {
        AppError::Limited(r.retry_after_secs())
    }
}

#[rate_limit(points = 2, duration = 60, roles(admin = 5, free = 1), cache = cache)]
async fn search(cache: &Cache, q: &str) -> Result<String, AppError> {
    Ok(format!("results for {q}"))
}

#[rate_limit(points = 3, duration = "1h", key = "{email}", name = "login", algorithm = "sliding_window", cache = cache)]
async fn login(cache: &Cache, email: String, _password: String) -> Result<(), AppError> {
    let _ = email;
    Ok(())
}

#[rate_limit(points = 10, duration = 60, cost = 4, by = "tenant", cache = cache)]
async fn export(cache: &Cache) -> Result<u32, RateLimited> {
    Ok(7)
}

#[rate_limit(points = 1, duration = 60, by = "global", on_error = "deny", cache = cache)]
async fn reindex(cache: &Cache) -> Result<(), RateLimited> {
    Ok(())
}

async fn count_ok<F: std::future::Future<Output = bool>>(
    n: usize,
    mut f: impl FnMut() -> F,
) -> usize {
    let mut ok = 0;
    for _ in 0..n {
        ok += usize::from(f().await);
    }
    ok
}

#[tokio::test]
async fn the_attribute_limits_by_user_role_ip_key_tenant_and_globally() {
    let server = RedisServer::start();
    let cache = cache_on(&server).await;
    let ctx = |user: Option<&str>, role: Option<&str>| {
        let mut c = Context::new()
            .tenant("acme")
            .client_ip("2001:db8:1:2::7".parse().unwrap());
        if let Some(u) = user {
            c = c.user(u);
        }
        if let Some(r) = role {
            c = c.role(r);
        }
        c
    };
    // Roles: admin 5, free 1, no role → points (2).
    let admin = count_ok(8, || {
        context::scope(ctx(Some("ann"), Some("admin")), async {
            search(&cache, "x").await.is_ok()
        })
    })
    .await;
    let free = count_ok(8, || {
        context::scope(ctx(Some("fred"), Some("free")), async {
            search(&cache, "x").await.is_ok()
        })
    })
    .await;
    let plain = count_ok(8, || {
        context::scope(ctx(Some("pat"), None), async {
            search(&cache, "x").await.is_ok()
        })
    })
    .await;
    assert_eq!((admin, free, plain), (5, 1, 2));
    // Anonymous callers are limited by IP, an IPv6 /64 shares one budget.
    let anon = count_ok(4, || {
        context::scope(ctx(None, None), async { search(&cache, "x").await.is_ok() })
    })
    .await;
    assert_eq!(anon, 2);
    let neighbour = Context::new()
        .tenant("acme")
        .client_ip("2001:db8:1:2::99".parse().unwrap());
    let r = context::scope(neighbour, search(&cache, "x")).await;
    assert!(matches!(r, Err(AppError::Limited(s)) if s >= 1), "{r:?}");
    // The refusal is `Err(E::from(RateLimited))` with whole seconds to wait.
    let r = context::scope(ctx(Some("pat"), None), search(&cache, "x")).await;
    assert!(
        matches!(r, Err(AppError::Limited(s)) if (1..=30).contains(&s)),
        "{r:?}"
    );

    // key = "{email}": per e-mail, whoever calls.
    for i in 0..3 {
        let c = ctx(Some(&format!("user{i}")), None);
        assert!(
            context::scope(c, login(&cache, "a@x.io".into(), "pw".into()))
                .await
                .is_ok()
        );
    }
    let r = context::scope(ctx(None, None), login(&cache, "a@x.io".into(), "pw".into())).await;
    assert!(r.is_err());
    let r = context::scope(ctx(None, None), login(&cache, "b@x.io".into(), "pw".into())).await;
    assert!(r.is_ok());
    let key = String::from_utf8_lossy(&server.command(&[b"KEYS", b"*login*"])).into_owned();
    assert!(
        key.contains("cacheable:{t:acme}:rls:login:k:a%40x.io"),
        "{key}"
    );

    // by = "tenant" with cost 4: two calls per tenant.
    for t in ["t1", "t2"] {
        let n = count_ok(4, || {
            cacheable::tenant::scope(t, async { export(&cache).await.is_ok() })
        })
        .await;
        assert_eq!(n, 2, "{t}");
    }
    // by = "global": one budget across tenants.
    assert!(
        cacheable::tenant::scope("t1", reindex(&cache))
            .await
            .is_ok()
    );
    let r = cacheable::tenant::scope("t2", reindex(&cache)).await;
    let limited = r.unwrap_err();
    assert_eq!((limited.limit, limited.remaining), (1, 0));
    assert!(
        limited
            .to_string()
            .contains("rate limit `reindex` exceeded"),
        "{limited}"
    );
}

#[tokio::test]
async fn the_attribute_without_any_cache_limits_in_process() {
    #[rate_limit(points = 1, duration = 60)]
    async fn once() -> Result<(), RateLimited> {
        Ok(())
    }
    assert!(
        context::scope(Context::new().user("solo"), once())
            .await
            .is_ok()
    );
    assert!(
        context::scope(Context::new().user("solo"), once())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn exact_on_a_real_redis_cluster_with_tenants_on_several_slots() {
    let cluster = cacheable_test_support::RedisCluster::start(3, 0);
    let cache = Cache::builder()
        .redis_cluster(cluster.urls())
        .op_timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    let rl = cache.rate_limiter();
    for alg in [
        Algorithm::Gcra,
        Algorithm::SlidingWindow,
        Algorithm::FixedWindow,
    ] {
        // Tenants hash to different slots (and so, masters).
        for tenant in ["acme", "globex", "initech", "umbrella"] {
            let opts = RateLimitOptions::new(nz(3), Duration::from_secs(3600))
                .algorithm(alg)
                .tenant(tenant);
            let mut passed = 0;
            for _ in 0..5 {
                let d = rl.check("login:u:1", &opts).await.unwrap();
                assert!(
                    matches!(d.source, Source::Redis | Source::DenialCache),
                    "{alg:?} {tenant}: {d:?}"
                );
                passed += usize::from(d.allowed);
            }
            assert_eq!(passed, 3, "{alg:?} {tenant}");
        }
    }
    assert_eq!(rl.stats().errors, 0);
}

#[tokio::test]
async fn sliding_window_keeps_its_history_when_points_change() {
    let server = RedisServer::start();
    let rl = cache_on(&server).await.rate_limiter();
    let window = Duration::from_secs(60);
    let five = RateLimitOptions::new(nz(5), window).algorithm(Algorithm::SlidingWindow);
    let three = RateLimitOptions::new(nz(3), window).algorithm(Algorithm::SlidingWindow);
    let ten = RateLimitOptions::new(nz(10), window).algorithm(Algorithm::SlidingWindow);
    for _ in 0..5 {
        assert!(rl.check("role-change", &five).await.unwrap().allowed);
    }
    rl.clear_denial_cache();
    // Down to 3 points (a role change): the 5 recent admissions still count.
    let d = rl.check("role-change", &three).await.unwrap();
    assert!(!d.allowed && d.remaining == 0, "{d:?}");
    // Up to 10 points: the 5 recent admissions are carried over, 5 remain.
    rl.clear_denial_cache();
    let mut admitted = 0;
    for _ in 0..8 {
        if rl.check("role-change", &ten).await.unwrap().allowed {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 5);
}

#[rate_limit(points = 100, duration = 60, cache = cache)]
async fn open_search(cache: &Cache) -> Result<(), RateLimited> {
    Ok(())
}

#[rate_limit(points = 100, duration = 60, on_error = "allow", cache = cache)]
async fn lenient_search(cache: &Cache) -> Result<(), RateLimited> {
    Ok(())
}

/// No user and no client IP: the call is refused and counted, never limited
/// by one budget that every unidentified caller shares (before, 100 calls
/// passed on one anonymous bucket). `on_error = "allow"` admits it.
#[tokio::test]
async fn a_call_with_nobody_to_limit_is_refused_and_counted() {
    let server = RedisServer::start();
    let cache = cache_on(&server).await;
    let nobody = || Context::new().tenant("acme");
    for _ in 0..3 {
        let r = context::scope(nobody(), open_search(&cache)).await;
        assert!(r.is_err(), "an unidentified call was admitted");
    }
    assert!(
        context::scope(nobody(), lenient_search(&cache))
            .await
            .is_ok()
    );
    let s = cache.rate_limiter().stats();
    assert_eq!((s.unidentified, s.denied, s.allowed), (4, 3, 1));
    // Nothing was written to Redis for them.
    let keys = String::from_utf8_lossy(&server.command(&[b"KEYS", b"*anon*"])).into_owned();
    assert!(!keys.contains("anon"), "{keys}");
}
