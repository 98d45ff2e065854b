//! The dashboard (`cacheable::http::dashboard`) in a real browser: the
//! example service `examples/tenant-api` (its `service`, with the admin
//! token) on a Redis of its own, bound to 127.0.0.1:0, loaded in headless
//! Debian `chromium`; the rendered DOM must show the functions and the hit
//! ratio `stats()` reports. Also the admin guard in front of it.
//!
//! Needs `/usr/bin/chromium` (or `CHROMIUM=/path`): the test fails, with the
//! install command, when it is missing. `.ci/run` installs it.
//!
//! The screenshot in the README (`docs/dashboard.png`) is made by the
//! ignored test `dashboard_screenshot` (`scripts/dashboard-screenshot.sh`).

#[path = "../examples/tenant-api/src/lib.rs"]
#[allow(dead_code)]
mod tenant_api;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use cacheable::{Alert, Cache};
use cacheable_test_support::{RedisServer, ScratchDir};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

use tenant_api::{AdminToken, AppState, connect_database, service};

const TOKEN: &str = "test-admin-token-0123456789";

fn chromium() -> PathBuf {
    let path =
        std::env::var_os("CHROMIUM").map_or_else(|| "/usr/bin/chromium".into(), PathBuf::from);
    assert!(
        path.exists(),
        "the browser test needs Debian's chromium at {}: install it with \
         `apt-get update && apt-get install -y chromium` (or set CHROMIUM=/path/to/chromium)",
        path.display()
    );
    path
}

/// The service on a Redis of its own, listening; returns its router (for
/// in-process calls), its address and the cache.
struct Running {
    router: Router,
    addr: SocketAddr,
    cache: Cache,
    _redis: RedisServer,
    _dir: ScratchDir,
}

async fn start(label: &str, alerts: Vec<Alert>) -> Running {
    let redis = RedisServer::start_with(&["--maxmemory", "64mb"]);
    let mut builder = Cache::builder()
        .redis_url(redis.url())
        .prefix("dash_test")
        .alert_interval(Duration::from_millis(200));
    for a in alerts {
        builder = builder.alert(a);
    }
    let cache = builder.build().await.expect("cache");
    let dir = ScratchDir::new(label);
    let url = format!("sqlite://{}/api.sqlite3?mode=rwc", dir.path().display());
    let (db, database) = connect_database(&url).await.expect("sqlite");
    let state = AppState {
        db,
        cache: cache.clone(),
        database,
    };
    let router = service(state, AdminToken::new(TOKEN), Router::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let served = router.clone();
    tokio::spawn(async move {
        axum::serve(
            listener,
            served.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    Running {
        router,
        addr,
        cache,
        _redis: redis,
        _dir: dir,
    }
}

/// One request through the router in process, as the server would run it.
async fn call(
    router: &Router,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, String) {
    let mut b = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    if !body.is_empty() {
        b = b.header(header::CONTENT_TYPE, "application/json");
    }
    let mut req = b.body(Body::from(body.to_owned())).expect("request");
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(SocketAddr::from((
            [127, 0, 0, 1],
            40_000,
        ))));
    let res = router.clone().oneshot(req).await.expect("infallible");
    let status = res.status();
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// Cached reads of three functions: misses, then hits.
async fn traffic(router: &Router) {
    let acme = [("x-tenant-id", "acme")];
    for path in [
        "/users", "/users", "/users", "/users/1", "/users/1", "/users/2", "/stats", "/stats",
    ] {
        let (status, body) = call(router, Method::GET, path, &acme, "").await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
}

/// Runs chromium headless on `url` with `args`; returns its stdout.
async fn browse(url: &str, args: &[&str]) -> String {
    let profile = ScratchDir::new("chromium-profile");
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless=new",
        "--disable-gpu",
        "--no-sandbox",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--virtual-time-budget=6000",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(args)
    .arg(url);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of `attr` on the first element whose opening tag contains `marker`.
fn attr_of(dom: &str, marker: &str, attr: &str) -> Option<String> {
    let at = dom.find(marker)?;
    let start = dom[..at].rfind('<')?;
    let tag = &dom[start..start + dom[start..].find('>')?];
    let key = format!("{attr}=\"");
    let v = &tag[tag.find(&key)? + key.len()..];
    Some(v[..v.find('"')?].to_owned())
}

/// The text of the element with `id` (no nested tags).
fn text_of(dom: &str, id: &str) -> Option<String> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let open = at + dom[at..].find('>')? + 1;
    Some(dom[open..open + dom[open..].find('<')?].to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_live_functions_and_the_hit_ratio_of_stats() {
    let chromium = chromium(); // fail early, before starting anything
    let _ = chromium;
    let s = start("dashboard-browser", Vec::new()).await;
    traffic(&s.router).await;
    let stats = s.cache.stats();
    assert_eq!((stats.hits, stats.misses), (4, 4), "{stats:?}");
    // One limiter: one call admitted, two refused.
    let opts = cacheable::RateLimitOptions::new(std::num::NonZeroU32::MIN, Duration::from_secs(60))
        .name("api.search");
    for _ in 0..3 {
        s.cache
            .rate_limiter()
            .check("k", &opts)
            .await
            .expect("check");
    }

    let url = format!("http://{}/_cache?token={TOKEN}", s.addr);
    let dom = browse(&url, &["--dump-dom"]).await;

    // The feed answered at least twice: the page is live, not a one-off.
    let polls: u32 = attr_of(&dom, "id=\"updated\"", "data-polls")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no poll counter in the page:\n{dom}"));
    assert!(polls >= 2, "the page polled {polls} times:\n{dom}");
    assert!(
        !dom.contains("id=\"feed-error\" class=\"bad badge\">"),
        "feed error:\n{dom}"
    );

    // The hit ratio is the one `stats()` reports, as data and as text.
    let stats = s.cache.stats();
    let shown: f64 = attr_of(&dom, "id=\"hit-ratio\"", "data-value")
        .and_then(|v| v.parse().ok())
        .expect("a hit ratio");
    assert_eq!(
        shown,
        stats.hit_ratio(),
        "page {shown} vs stats {}",
        stats.hit_ratio()
    );
    assert_eq!(
        text_of(&dom, "hit-ratio").as_deref(),
        Some(format!("{:.1}%", 100.0 * stats.hit_ratio()).as_str())
    );

    // Every function `stats()` knows has its row, with its counts.
    let names: Vec<&str> = stats.functions().map(|(n, _)| n).collect();
    assert!(
        names.contains(&"users.list") && names.contains(&"users.get"),
        "{names:?}"
    );
    for (name, f) in stats.functions() {
        let marker = format!("data-function=\"{name}\"");
        assert_eq!(
            attr_of(&dom, &marker, "data-hits"),
            Some(f.hits.to_string()),
            "{name}"
        );
        assert_eq!(
            attr_of(&dom, &marker, "data-misses"),
            Some(f.misses.to_string()),
            "{name}"
        );
    }
    // Rate limits by limiter: the row of `api.search`, with its counts.
    let marker = "data-limiter=\"api.search\"";
    assert_eq!(
        attr_of(&dom, marker, "data-allowed").as_deref(),
        Some("1"),
        "{dom}"
    );
    assert_eq!(
        attr_of(&dom, marker, "data-denied").as_deref(),
        Some("2"),
        "{dom}"
    );
    // Routes (MetricsLayer), Redis health and the breaker.
    assert!(dom.contains("data-route=\"GET /users/{id}\""), "{dom}");
    assert_eq!(
        attr_of(&dom, "id=\"redis-health\"", "data-reachable").as_deref(),
        Some("true")
    );
    assert_eq!(
        attr_of(&dom, "id=\"breaker-state\"", "data-state").as_deref(),
        Some("closed")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_needs_the_admin_token() {
    let s = start("dashboard-auth", Vec::new()).await;
    let r = &s.router;
    for path in ["/_cache", "/_cache/api/snapshot"] {
        let (status, _) = call(r, Method::GET, path, &[], "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        let (status, _) = call(
            r,
            Method::GET,
            path,
            &[("authorization", "Bearer wrong")],
            "",
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        let (status, _) = call(r, Method::GET, &format!("{path}?token=x{TOKEN}"), &[], "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
    // A user session of a tenant, even an admin's, is not the operator token.
    let acme = [("x-tenant-id", "acme")];
    let form = r#"{"email":"alice@acme.test","password":"demo"}"#;
    let (status, login) = call(r, Method::POST, "/login", &acme, form).await;
    assert_eq!(status, StatusCode::OK, "{login}");
    let login: serde_json::Value = serde_json::from_str(&login).expect("json");
    let session = format!("Bearer {}", login["token"].as_str().expect("token"));
    let (status, _) = call(
        r,
        Method::GET,
        "/_cache",
        &[acme[0], ("authorization", &session)],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The link with the token sets the cookie and drops the token from the URL.
    let res = r
        .clone()
        .oneshot(
            Request::get(format!("/_cache?token={TOKEN}"))
                .body(Body::empty())
                .expect("req"),
        )
        .await
        .expect("infallible");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()[header::LOCATION], "/_cache");
    let cookie = res.headers()[header::SET_COOKIE].to_str().expect("ascii");
    assert!(
        cookie.starts_with(&format!("cacheable_admin={TOKEN};")) && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let bearer = format!("Bearer {TOKEN}");
    let (status, page) = call(r, Method::GET, "/_cache", &[("authorization", &bearer)], "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("id=\"hit-ratio\""));
    // With a trailing slash, a redirect to the page.
    let (status, _) = call(
        r,
        Method::GET,
        "/_cache/",
        &[("authorization", &bearer)],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    traffic(r).await;
    let (status, feed) = call(
        r,
        Method::GET,
        "/_cache/api/snapshot",
        &[("cookie", &format!("a=b; cacheable_admin={TOKEN}"))],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{feed}");
    let feed: serde_json::Value = serde_json::from_str(&feed).expect("json");
    assert_eq!(feed["hits"], 4);
    assert_eq!(
        feed["hit_ratio"].as_f64(),
        Some(s.cache.stats().hit_ratio())
    );
    assert_eq!(feed["health"]["breaker"], "closed");
    assert!(
        feed["memory"]["redis_max_bytes"].as_u64().is_some(),
        "{feed}"
    );
}

/// Writes `docs/dashboard.png` (the README's screenshot). Run with
/// `scripts/dashboard-screenshot.sh`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes docs/dashboard.png; run scripts/dashboard-screenshot.sh"]
async fn dashboard_screenshot() {
    let s = start(
        "dashboard-screenshot",
        vec![Alert::hit_ratio_below(0.9).for_(Duration::from_millis(100))],
    )
    .await;
    let acme = [("x-tenant-id", "acme")];
    let globex = [("x-tenant-id", "globex")];
    for round in 0..6 {
        traffic(&s.router).await;
        for id in 1..=3 {
            call(&s.router, Method::GET, &format!("/users/{id}"), &acme, "").await;
        }
        call(&s.router, Method::GET, "/users", &globex, "").await;
        call(&s.router, Method::GET, "/users/2", &globex, "").await;
        // Wrong passwords: the login limiter denies after five.
        let form = r#"{"email":"bob@acme.test","password":"nope"}"#;
        call(&s.router, Method::POST, "/login", &acme, form).await;
        if round % 2 == 0 {
            // A write invalidates the tenant's `users` tag: new misses.
            let (_, login) = call(
                &s.router,
                Method::POST,
                "/login",
                &globex,
                r#"{"email":"gina@globex.test","password":"demo"}"#,
            )
            .await;
            let token = serde_json::from_str::<serde_json::Value>(&login)
                .ok()
                .and_then(|v| v["token"].as_str().map(str::to_owned));
            if let Some(token) = token {
                let auth = format!("Bearer {token}");
                call(
                    &s.router,
                    Method::PUT,
                    "/users/2",
                    &[globex[0], ("authorization", &auth)],
                    r#"{"name":"Hank"}"#,
                )
                .await;
            }
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
        // The series samples when the feed is read.
        call(
            &s.router,
            Method::GET,
            "/_cache/api/snapshot",
            &[("authorization", &format!("Bearer {TOKEN}"))],
            "",
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let png = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/dashboard.png");
    std::fs::create_dir_all(png.parent().expect("docs")).expect("docs dir");
    let url = format!("http://{}/_cache?token={TOKEN}", s.addr);
    browse(
        &url,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,1250",
            "--hide-scrollbars",
        ],
    )
    .await;
    assert!(std::fs::metadata(&png).expect("png written").len() > 10_000);
}
