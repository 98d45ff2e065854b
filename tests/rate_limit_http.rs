//! `#[rate_limit]` handlers behind an axum `Router` with `ContextLayer`, on a
//! real `redis-server`: the rate-limit fields on successful responses, `429`
//! with `Retry-After`, budgets per user / tenant / role from `Identity`, and
//! client IPs from `X-Forwarded-For` only through trusted proxies.
#![cfg(feature = "axum")]

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cacheable::http::{ContextLayer, Identity};
use cacheable::{Cache, RateLimited, rate_limit};
use cacheable_test_support::RedisServer;
use tower::ServiceExt as _;

#[rate_limit(points = 3, duration = 60, name = "search", roles(admin = 6), cache = cache)]
async fn search(State(cache): State<Cache>) -> Result<String, RateLimited> {
    Ok("results".to_owned())
}

#[rate_limit(points = 1, duration = "1m", by = "ip", cache = cache)]
async fn ping(State(cache): State<Cache>) -> Response {
    "pong".into_response()
}

async fn app(server: &RedisServer) -> Router {
    let cache = Cache::builder()
        .redis_url(server.url())
        .build()
        .await
        .unwrap();
    // One instance: the local fallback may admit the whole limit (the default
    // assumes 4 and gives each a quarter).
    cache
        .rate_limiter()
        .set_expected_instances(std::num::NonZeroU32::new(1).unwrap());
    Router::new()
        .route("/search", get(search))
        .route("/ping", get(ping))
        .with_state(cache)
        .layer(
            ContextLayer::new()
                .trusted_proxies(["10.0.0.1".parse().unwrap()])
                .trusted_proxy_range("192.168.0.0".parse().unwrap(), 16),
        )
        // The app's auth middleware (outside the ContextLayer): `x-user` and
        // `x-role` stand in for a verified token.
        .layer(tower::util::MapRequestLayer::new(
            |mut req: Request<Body>| {
                let h = req.headers();
                let id = h.get("x-user").and_then(|v| v.to_str().ok()).map(|u| {
                    let id = Identity::new(u);
                    match req.headers().get("x-role").and_then(|v| v.to_str().ok()) {
                        Some(r) => id.role(r),
                        None => id,
                    }
                });
                if let Some(id) = id {
                    req.extensions_mut().insert(id);
                }
                req
            },
        ))
}

struct Call<'a> {
    path: &'a str,
    peer: &'a str,
    headers: Vec<(&'a str, &'a str)>,
}

async fn call(app: &Router, c: Call<'_>) -> Response {
    let mut b = Request::builder().uri(c.path);
    for (k, v) in c.headers {
        b = b.header(k, v);
    }
    let mut req = b.body(Body::empty()).unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(c.peer.parse::<SocketAddr>().unwrap()));
    app.clone().oneshot(req).await.unwrap()
}

fn user<'a>(tenant: &'a str, user: &'a str) -> Call<'a> {
    Call {
        path: "/search",
        peer: "203.0.113.1:5000",
        headers: vec![("x-tenant-id", tenant), ("x-user", user)],
    }
}

fn header<'a>(r: &'a Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no `{name}` in {:?}", r.headers()))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn successful_responses_carry_the_fields_and_the_fourth_call_gets_429() {
    let server = RedisServer::start();
    let app = app(&server).await;
    for remaining in [2, 1, 0] {
        let r = call(&app, user("acme", "alice")).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "ratelimit-policy"), r#""search";q=3;w=60"#);
        // One point refills every 20 s; t is the time until the budget is full.
        let full = 20 * (3 - remaining);
        assert_eq!(
            header(&r, "ratelimit"),
            format!(r#""search";r={remaining};t={full}"#)
        );
        assert_eq!(header(&r, "x-ratelimit-limit"), "3");
        assert_eq!(header(&r, "x-ratelimit-remaining"), remaining.to_string());
        assert_eq!(header(&r, "x-ratelimit-reset"), full.to_string());
        assert!(r.headers().get("retry-after").is_none());
    }
    let r = call(&app, user("acme", "alice")).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    // The next point is 20 s away (a little less by now, rounded up).
    assert_eq!(header(&r, "retry-after"), "20");
    assert_eq!(header(&r, "ratelimit"), r#""search";r=0;t=20"#);
    assert_eq!(header(&r, "ratelimit-policy"), r#""search";q=3;w=60"#);
    assert_eq!(header(&r, "x-ratelimit-remaining"), "0");
    assert_eq!(header(&r, "x-ratelimit-reset"), "20");
    let body = axum::body::to_bytes(r.into_body(), 1024).await.unwrap();
    assert!(String::from_utf8_lossy(&body).contains("rate limit `search` exceeded"));

    // Another user, the same user in another tenant: their own budgets.
    assert_eq!(
        call(&app, user("acme", "bob")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        call(&app, user("globex", "alice")).await.status(),
        StatusCode::OK
    );
    // A crafted tenant header does not reach acme's keys.
    assert_eq!(
        call(&app, user("acme}:{x", "alice")).await.status(),
        StatusCode::OK
    );

    // The role from Identity picks the points.
    let mut ok = 0;
    for _ in 0..8 {
        let mut c = user("acme", "root");
        c.headers.push(("x-role", "admin"));
        let r = call(&app, c).await;
        if r.status() == StatusCode::OK {
            ok += 1;
            assert_eq!(header(&r, "x-ratelimit-limit"), "6");
        }
    }
    assert_eq!(ok, 6);
}

fn via(peer: &str, xff: Option<&'static str>) -> Call<'static> {
    let peer: &'static str = Box::leak(peer.to_owned().into_boxed_str());
    Call {
        path: "/ping",
        peer,
        headers: xff.map(|x| ("x-forwarded-for", x)).into_iter().collect(),
    }
}

#[tokio::test]
async fn forwarded_for_counts_only_through_trusted_proxies() {
    let server = RedisServer::start();
    let app = app(&server).await;
    // Through the trusted proxies (10.0.0.1, then 192.168.x.x): the client is
    // the right-most untrusted hop; the spoofed left part is ignored.
    let r = call(
        &app,
        via("10.0.0.1:1", Some("6.6.6.6, 198.51.100.7, 192.168.3.3")),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "x-ratelimit-remaining"), "0");
    let r = call(&app, via("10.0.0.1:1", Some("1.1.1.1, 198.51.100.7"))).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "same client");
    assert_eq!(header(&r, "retry-after"), "60");
    let r = call(&app, via("10.0.0.1:1", Some("198.51.100.8"))).await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "another client behind the proxy"
    );

    // An untrusted peer cannot pick its identity with the header.
    let r = call(&app, via("203.0.113.5:1", Some("198.51.100.9"))).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = call(&app, via("203.0.113.5:2", Some("198.51.100.10"))).await;
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "limited as 203.0.113.5"
    );

    // IPv6 clients share their /64.
    assert_eq!(
        call(&app, via("[2001:db8:5:6::1]:1", None)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        call(&app, via("[2001:db8:5:6:ffff::2]:1", None))
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        call(&app, via("[2001:db8:5:7::1]:1", None)).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn redis_down_falls_back_to_the_local_limiter_behind_the_layer() {
    let mut server = RedisServer::start();
    let app = app(&server).await;
    server.kill();
    let started = std::time::Instant::now();
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(call(&app, user("acme", "carol")).await.status().as_u16());
    }
    assert_eq!(codes, [200, 200, 200, 429]);
    assert!(started.elapsed() < Duration::from_secs(3));
}
