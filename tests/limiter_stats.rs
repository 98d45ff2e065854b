//! Rate-limit counts per limiter against a real `redis-server`: two
//! `#[rate_limit]` functions counted apart (by `name = ".."` and by
//! module path + fn), denials from the denial cache, unidentified callers,
//! `on_error` fallbacks with Redis gone, and the dashboard's
//! `/api/snapshot` carrying the same figures.
#![cfg(feature = "axum")]

use std::num::NonZeroU32;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use cacheable::context::{self, Context};
use cacheable::http::dashboard;
use cacheable::{Cache, RateLimitOptions, RateLimited, rate_limit};
use cacheable_test_support::RedisServer;
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

#[rate_limit(points = 2, duration = 60, name = "login", cache = cache)]
async fn login(cache: &Cache) -> Result<(), RateLimited> {
    Ok(())
}

#[rate_limit(points = 5, duration = 60, on_error = "deny", cache = cache)]
async fn search(cache: &Cache) -> Result<(), RateLimited> {
    Ok(())
}

/// `search`'s limiter name: its module path and fn name.
const SEARCH: &str = concat!(module_path!(), "::search");

async fn snapshot(app: &Router) -> serde_json::Value {
    let res = app
        .clone()
        .oneshot(Request::get("/api/snapshot").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

/// The dashboard's row of limiter `name`.
fn row<'a>(snap: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    snap["rate_limit"]["limiters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("no row for `{name}` in {snap}"))
}

#[tokio::test]
async fn two_limiters_are_counted_apart_and_shown_on_the_dashboard() {
    let mut server = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(server.url())
        .op_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let app = dashboard(cache.clone());
    let user = |u: &str| Context::new().tenant("acme").user(u);

    // login: 2 points; the 3rd call is refused by Redis, the 4th by the
    // denial cache, without Redis.
    for _ in 0..4 {
        let _ = context::scope(user("ann"), login(&cache)).await;
    }
    // search: 5 points, 3 calls, all admitted.
    for _ in 0..3 {
        assert!(context::scope(user("ann"), search(&cache)).await.is_ok());
    }
    // Nobody to limit by: refused, counted as unidentified under `login`.
    assert!(context::scope(Context::new(), login(&cache)).await.is_err());

    let s = cache.rate_limiter().stats();
    let l = s.limiter("login").expect("login counted");
    assert_eq!(
        (
            l.allowed,
            l.denied,
            l.denied_cached,
            l.unidentified,
            l.fallbacks
        ),
        (2, 3, 1, 1, 0)
    );
    let q = s
        .limiter(SEARCH)
        .expect("search counted under its module path");
    assert_eq!((q.allowed, q.denied), (3, 0));
    assert_eq!(s.limiters().count(), 2, "{s:?}");
    assert_eq!((s.allowed, s.denied), (5, 3));

    let snap = snapshot(&app).await;
    let l = row(&snap, "login");
    assert_eq!(l["allowed"], 2);
    assert_eq!(l["denied"], 3);
    assert_eq!(l["denied_cached"], 1);
    assert_eq!(l["unidentified"], 1);
    assert!(
        (l["denial_rate"].as_f64().unwrap() - 0.6).abs() < 1e-9,
        "{l}"
    );
    let q = row(&snap, SEARCH);
    assert_eq!(
        (q["allowed"].as_u64(), q["denied"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(q["denial_rate"], 0.0);

    // Redis gone: `search` (on_error = "deny") refuses, counted as a
    // fallback of `search` only.
    server.kill();
    for _ in 0..2 {
        assert!(context::scope(user("bob"), search(&cache)).await.is_err());
    }
    // A `RateLimiter::check` counts under its options' name.
    let opts = RateLimitOptions::new(NonZeroU32::MIN, Duration::from_secs(60)).name("api");
    cache.rate_limiter().check("k", &opts).await.unwrap();
    let snap = snapshot(&app).await;
    let q = row(&snap, SEARCH);
    assert_eq!(
        (
            q["allowed"].as_u64(),
            q["denied"].as_u64(),
            q["fallbacks"].as_u64()
        ),
        (Some(3), Some(2), Some(2))
    );
    assert_eq!(row(&snap, "login")["fallbacks"], 0);
    assert_eq!(row(&snap, "api")["fallbacks"], 1);
}
