//! The example service `examples/tenant-api`, on a real SQLite file:
//! through its `Router` (tower `oneshot`, in-process cache) and bound to
//! 127.0.0.1:0 with a real HTTP/1.1 client (hyper) on a Redis of its own.

#[path = "../examples/tenant-api/src/lib.rs"]
#[allow(dead_code)]
mod tenant_api;

use std::io::Read as _;
use std::net::SocketAddr;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use cacheable::Cache;
use cacheable_test_support::{RedisServer, ScratchDir};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use tenant_api::{AppState, app, connect_database, serve};

type Reply = (StatusCode, HeaderMap, Bytes);

async fn state(dir: &ScratchDir, cache: Cache) -> AppState {
    let url = format!("sqlite://{}/api.sqlite3?mode=rwc", dir.path().display());
    let (db, database) = connect_database(&url).await.expect("sqlite");
    AppState {
        db,
        cache,
        database,
    }
}

fn request(
    method: &Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Request<Body> {
    let mut b = Request::builder().method(method.clone()).uri(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    match body {
        Some(v) => b
            .header("content-type", "application/json")
            .body(Body::from(v.to_string())),
        None => b.body(Body::empty()),
    }
    .expect("request")
}

/// How a test talks to the service: in process or over TCP.
trait Client {
    async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Reply;
}

impl Client for Router {
    async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Reply {
        // As a real server does (`into_make_service_with_connect_info`): the
        // client's address, so that anonymous calls are rate-limited by IP.
        let mut req = request(&method, path, headers, body);
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(SocketAddr::from((
                [127, 0, 0, 1],
                40_000,
            ))));
        let res = self.clone().oneshot(req).await.expect("infallible");
        let (parts, body) = res.into_parts();
        (
            parts.status,
            parts.headers,
            body.collect().await.expect("body").to_bytes(),
        )
    }
}

/// A real HTTP/1.1 client: hyper over a TCP connection per request.
struct Http(SocketAddr);

impl Client for Http {
    async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Reply {
        let stream = tokio::net::TcpStream::connect(self.0)
            .await
            .expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.0.to_string());
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let content = match body {
            Some(v) => {
                b = b.header("content-type", "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let res = sender
            .send_request(b.body(Full::new(content)).expect("request"))
            .await
            .expect("response");
        let (parts, body) = res.into_parts();
        (
            parts.status,
            parts.headers,
            body.collect().await.expect("body").to_bytes(),
        )
    }
}

fn h<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn json_of(bytes: &Bytes) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)))
}

const ACME: (&str, &str) = ("x-tenant-id", "acme");
const GLOBEX: (&str, &str) = ("x-tenant-id", "globex");

async fn login(c: &impl Client, tenant: (&str, &str), email: &str) -> String {
    let (status, _, body) = c
        .call(
            Method::POST,
            "/login",
            &[tenant],
            Some(&json!({"email": email, "password": "demo"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    json_of(&body)["token"].as_str().expect("token").to_owned()
}

/// The README's session: a miss, a hit, an update, a fresh read, a 304, a 429.
async fn session(c: &impl Client) {
    let (status, miss, body) = c.call(Method::GET, "/users/2", &[ACME], None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&body)["name"], "Bob");
    assert_eq!(h(&miss, "x-cache"), Some("miss"));
    assert_eq!(h(&miss, "cache-control"), Some("private, max-age=60"));
    let (_, hit, again) = c.call(Method::GET, "/users/2", &[ACME], None).await;
    assert_eq!(h(&hit, "x-cache"), Some("hit"));
    assert_eq!(again, body);
    assert_eq!(h(&hit, "etag"), h(&miss, "etag"));

    // Another tenant, same path: its own user 2.
    let (_, other, globex) = c.call(Method::GET, "/users/2", &[GLOBEX], None).await;
    assert_eq!(json_of(&globex)["name"], "Hank");
    assert_eq!(h(&other, "x-cache"), Some("miss"));

    let token = login(c, ACME, "bob@acme.test").await;
    let auth = format!("Bearer {token}");
    let rename = |name: &str| json!({ "name": name });
    let (status, written, body) = c
        .call(
            Method::PUT,
            "/users/2",
            &[ACME, ("authorization", &auth)],
            Some(&rename("Bobby")),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json_of(&body)["name"], "Bobby");
    assert_eq!(h(&written, "x-ratelimit-limit"), Some("3"));
    assert_eq!(h(&written, "x-ratelimit-remaining"), Some("2"));

    // Fresh read: the write evicted `user:2`.
    let (_, fresh, body) = c.call(Method::GET, "/users/2", &[ACME], None).await;
    assert_eq!(h(&fresh, "x-cache"), Some("miss"));
    assert_eq!(json_of(&body)["name"], "Bobby");
    let tag = h(&fresh, "etag").expect("etag").to_owned();
    assert_ne!(Some(tag.as_str()), h(&miss, "etag"));
    // ... and the list (tag `users`) too; the other tenant is untouched.
    let (_, list, body) = c.call(Method::GET, "/users", &[ACME], None).await;
    assert_eq!(json_of(&body)[1]["name"], "Bobby");
    assert_eq!(h(&list, "x-cache"), Some("miss"));
    let (_, other, _) = c.call(Method::GET, "/users/2", &[GLOBEX], None).await;
    assert_eq!(h(&other, "x-cache"), Some("hit"));

    // Revalidation: 304, no body, tag and cache headers kept.
    let (status, not_modified, empty) = c
        .call(
            Method::GET,
            "/users/2",
            &[ACME, ("if-none-match", &tag)],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(empty.is_empty());
    assert_eq!(h(&not_modified, "etag"), Some(tag.as_str()));
    assert!(h(&not_modified, "cache-control").is_some_and(|v| v.starts_with("private, max-age=")));

    // Bob (a member) has 3 writes a minute: two more pass, the next is refused.
    for name in ["Bob 2", "Bob 3"] {
        let (status, _, _) = c
            .call(
                Method::PUT,
                "/users/2",
                &[ACME, ("authorization", &auth)],
                Some(&rename(name)),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, limited, _) = c
        .call(
            Method::PUT,
            "/users/2",
            &[ACME, ("authorization", &auth)],
            Some(&rename("Bob 4")),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = h(&limited, "retry-after")
        .expect("retry-after")
        .parse()
        .expect("secs");
    assert!((1..=60).contains(&retry));
    // The refused write changed nothing.
    let (_, _, body) = c.call(Method::GET, "/users/2", &[ACME], None).await;
    assert_eq!(json_of(&body)["name"], "Bob 3");
}

#[tokio::test]
async fn readme_session_through_the_router() {
    let dir = ScratchDir::new("tenant-api-router");
    let router = app(state(&dir, Cache::memory()).await);
    session(&router).await;
}

#[tokio::test]
async fn readme_session_over_tcp_on_redis() {
    let redis = RedisServer::start();
    let cache = Cache::builder()
        .redis_url(redis.url())
        .prefix("tenant_api_test")
        .build()
        .await
        .expect("cache");
    let dir = ScratchDir::new("tenant-api-tcp");
    let state = state(&dir, cache).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(serve(listener, state));
    let client = Http(addr);
    session(&client).await;

    let (status, _, body) = client.call(Method::GET, "/health", &[], None).await;
    assert_eq!(status, StatusCode::OK);
    let health = json_of(&body);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["cache"]["backend"], "redis");
    assert_eq!(health["cache"]["reachable"], true);
    assert_eq!(health["database"]["backend"], "sqlite");
    // The entries are in this test's Redis, under the tenant's namespace.
    let keys = redis.command(&[b"KEYS", b"tenant_api_test:*"]);
    assert!(
        keys.starts_with(b"*") && !keys.starts_with(b"*0\r\n"),
        "{keys:?}"
    );
    server.abort();
}

#[tokio::test]
async fn writes_and_logins_are_limited_by_role_and_email() {
    let dir = ScratchDir::new("tenant-api-roles");
    let router = app(state(&dir, Cache::memory()).await);
    // Alice is an admin: 30 writes a minute, and she may rename others.
    let token = login(&router, ACME, "alice@acme.test").await;
    let auth = format!("Bearer {token}");
    for i in 0..6 {
        let (status, hdrs, _) = router
            .call(
                Method::PUT,
                "/users/3",
                &[ACME, ("authorization", &auth)],
                Some(&json!({"name": format!("Carol {i}")})),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(h(&hdrs, "x-ratelimit-limit"), Some("30"));
    }
    // A member may not rename others; a token is only valid in its tenant;
    // no token, no write.
    let bob = format!("Bearer {}", login(&router, ACME, "bob@acme.test").await);
    let (status, _, _) = router
        .call(
            Method::PUT,
            "/users/1",
            &[ACME, ("authorization", &bob)],
            Some(&json!({"name": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = router
        .call(
            Method::PUT,
            "/users/2",
            &[GLOBEX, ("authorization", &bob)],
            Some(&json!({"name": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = router
        .call(
            Method::PUT,
            "/users/2",
            &[ACME],
            Some(&json!({"name": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Logins: 5 a minute per e-mail (sliding window), wrong passwords count.
    // (Alice logged in once above.)
    for _ in 0..4 {
        let (status, _, _) = router
            .call(
                Method::POST,
                "/login",
                &[ACME],
                Some(&json!({"email": "alice@acme.test", "password": "wrong"})),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, hdrs, _) = router
        .call(
            Method::POST,
            "/login",
            &[ACME],
            Some(&json!({"email": "alice@acme.test", "password": "demo"})),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(hdrs.contains_key("retry-after"));
    // Another e-mail, or the same e-mail in another tenant, has its own budget.
    login(&router, ACME, "carol@acme.test").await;
    let (status, _, _) = router
        .call(
            Method::POST,
            "/login",
            &[GLOBEX],
            Some(&json!({"email": "alice@acme.test", "password": "demo"})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "no such user in globex, but not limited"
    );
}

#[tokio::test]
async fn query_results_are_invalidated_by_the_handlers_tags() {
    let dir = ScratchDir::new("tenant-api-stats");
    let state = state(&dir, Cache::memory()).await;
    let db = state.db.clone();
    let router = app(state);
    let (_, _, body) = router.call(Method::GET, "/stats", &[ACME], None).await;
    assert_eq!(json_of(&body), json!({"users": 3, "admins": 1}));
    // A row added behind the service's back: the cached aggregate stays.
    sqlx::query("INSERT INTO users (tenant, id, name, email, role, password) VALUES ('acme', 4, 'Dan', 'dan@acme.test', 'admin', 'demo')")
        .execute(&db)
        .await
        .expect("insert");
    let (_, _, body) = router.call(Method::GET, "/stats", &[ACME], None).await;
    assert_eq!(json_of(&body), json!({"users": 3, "admins": 1}));
    // Another tenant has its own entry.
    let (_, _, body) = router.call(Method::GET, "/stats", &[GLOBEX], None).await;
    assert_eq!(json_of(&body), json!({"users": 2, "admins": 1}));
    // A write through `#[cache_evict(tags = ["users", ..])]` invalidates the
    // `get_or_compute` entry tagged `users` as well.
    let token = login(&router, ACME, "alice@acme.test").await;
    let (status, _, _) = router
        .call(
            Method::PUT,
            "/users/1",
            &[ACME, ("authorization", &format!("Bearer {token}"))],
            Some(&json!({"name": "Alicia"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, _, body) = router.call(Method::GET, "/stats", &[ACME], None).await;
    assert_eq!(json_of(&body), json!({"users": 4, "admins": 2}));
}

/// `GET /users?name_prefix=..&limit=..`: the `Query` is part of the key,
/// so each filter has its own entry and equal filters hit.
#[tokio::test]
async fn list_filters_are_cached_apart() {
    let dir = ScratchDir::new("tenant-api-filters");
    let router = app(state(&dir, Cache::memory()).await);
    let names = |body: &Bytes| -> Vec<String> {
        json_of(body)
            .as_array()
            .expect("array")
            .iter()
            .map(|u| u["name"].as_str().expect("name").to_owned())
            .collect()
    };
    let (status, a, body) = router
        .call(Method::GET, "/users?name_prefix=A", &[ACME], None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(names(&body), ["Alice"]);
    assert_eq!(h(&a, "x-cache"), Some("miss"));
    let (_, b, body) = router
        .call(Method::GET, "/users?name_prefix=B", &[ACME], None)
        .await;
    assert_eq!(names(&body), ["Bob"], "another filter is another entry");
    assert_eq!(h(&b, "x-cache"), Some("miss"));
    let (_, limited, body) = router
        .call(Method::GET, "/users?limit=2", &[ACME], None)
        .await;
    assert_eq!(names(&body), ["Alice", "Bob"]);
    assert_eq!(h(&limited, "x-cache"), Some("miss"));
    let (_, all, body) = router.call(Method::GET, "/users", &[ACME], None).await;
    assert_eq!(names(&body), ["Alice", "Bob", "Carol"]);
    assert_eq!(h(&all, "x-cache"), Some("miss"));
    // The same filter again: a hit with the same users.
    let (_, again, body) = router
        .call(Method::GET, "/users?name_prefix=A", &[ACME], None)
        .await;
    assert_eq!(names(&body), ["Alice"]);
    assert_eq!(h(&again, "x-cache"), Some("hit"));
    // `%` and `_` in the prefix are literal, not wildcards.
    let (_, _, body) = router
        .call(Method::GET, "/users?name_prefix=%25", &[ACME], None)
        .await;
    assert_eq!(names(&body), Vec::<String>::new());
    let (status, _, _) = router
        .call(Method::GET, "/users?limit=0", &[ACME], None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn compression_fieldsets_and_revalidation() {
    let dir = ScratchDir::new("tenant-api-gzip");
    let router = app(state(&dir, Cache::memory()).await);
    let (_, plain, body) = router.call(Method::GET, "/users", &[ACME], None).await;
    let users = json_of(&body);
    let gzip = [ACME, ("accept-encoding", "gzip")];
    let (status, zipped, body) = router.call(Method::GET, "/users", &gzip, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h(&zipped, "content-encoding"), Some("gzip"));
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(body.as_ref())
        .read_to_end(&mut decoded)
        .expect("gzip");
    assert_eq!(
        serde_json::from_slice::<Value>(&decoded).expect("json"),
        users
    );
    let tag = h(&zipped, "etag").expect("etag").to_owned();
    assert_ne!(Some(tag.as_str()), h(&plain, "etag"));
    let (status, _, empty) = router
        .call(
            Method::GET,
            "/users",
            &[ACME, ("accept-encoding", "gzip"), ("if-none-match", &tag)],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(empty.is_empty());

    let (_, _, body) = router
        .call(Method::GET, "/users?fields=id,name", &[ACME], None)
        .await;
    assert_eq!(
        json_of(&body),
        json!([{"id": 1, "name": "Alice"}, {"id": 2, "name": "Bob"}, {"id": 3, "name": "Carol"}])
    );

    let (status, _, body) = router.call(Method::GET, "/health", &[], None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&body)["cache"]["backend"], "memory");
    let (status, _, _) = router.call(Method::GET, "/users/99", &[ACME], None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = router.call(Method::GET, "/users", &[], None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn cache_stats_are_json_for_admins_only() {
    let dir = ScratchDir::new("tenant-api-cache-stats");
    let router = app(state(&dir, Cache::memory()).await);
    for _ in 0..2 {
        let (status, _, _) = router.call(Method::GET, "/users/2", &[ACME], None).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, _, _) = router
        .call(Method::GET, "/cache/stats", &[ACME], None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let member = format!("Bearer {}", login(&router, ACME, "bob@acme.test").await);
    let (status, _, _) = router
        .call(
            Method::GET,
            "/cache/stats",
            &[ACME, ("authorization", &member)],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let admin = format!("Bearer {}", login(&router, ACME, "alice@acme.test").await);
    let (status, headers, body) = router
        .call(
            Method::GET,
            "/cache/stats",
            &[ACME, ("authorization", &admin)],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h(&headers, "content-type"), Some("application/json"));
    let stats = json_of(&body);
    assert_eq!(stats["disabled"], false);
    assert_eq!(stats["hits"], 1, "{stats}");
    assert_eq!(stats["misses"], 1, "{stats}");
    let get = &stats["functions"]["users.get"];
    assert_eq!(get["hits"], 1, "{stats}");
    assert_eq!(get["computes"], 1, "{stats}");
    // Durations are float milliseconds under `_ms` names.
    assert!(
        get["compute_time_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{stats}"
    );
    assert!(stats.get("compute_time").is_none(), "{stats}");
}

#[tokio::test]
async fn a_disabled_cache_serves_every_read_fresh_and_still_limits_writes() {
    let dir = ScratchDir::new("tenant-api-disabled");
    let router = app(state(&dir, Cache::disabled()).await);
    for _ in 0..3 {
        let (status, headers, body) = router.call(Method::GET, "/users/2", &[ACME], None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json_of(&body)["name"], "Bob");
        assert_ne!(h(&headers, "x-cache"), Some("hit"));
    }
    let (status, _, body) = router.call(Method::GET, "/health", &[], None).await;
    assert_eq!(status, StatusCode::OK);
    let health = json_of(&body);
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["cache"]["enabled"], false, "{health}");
    assert_eq!(health["cache"]["backend"], "disabled", "{health}");

    // Rate limits stay on: a member's 3 writes a minute, then 429.
    let auth = format!("Bearer {}", login(&router, ACME, "bob@acme.test").await);
    for (i, expected) in [
        StatusCode::OK,
        StatusCode::OK,
        StatusCode::OK,
        StatusCode::TOO_MANY_REQUESTS,
    ]
    .into_iter()
    .enumerate()
    {
        let (status, _, _) = router
            .call(
                Method::PUT,
                "/users/2",
                &[ACME, ("authorization", &auth)],
                Some(&json!({ "name": format!("Bob {i}") })),
            )
            .await;
        assert_eq!(status, expected, "write {i}");
    }
    // No cache: the read after a write sees it at once.
    let (_, _, body) = router.call(Method::GET, "/users/2", &[ACME], None).await;
    assert_eq!(json_of(&body)["name"], "Bob 2");
}

/// A tag rendered from the result: the by-email lookup only learns the
/// user's id from its row, and tags its entry `user:{ret.id}`; a rename
/// through `PUT /users/{id}` (which evicts `user:{id}`) refreshes it.
#[tokio::test]
async fn a_tag_from_the_result_lets_a_rename_refresh_the_lookup_by_email() {
    let dir = ScratchDir::new("tenant-api-ret-tags");
    let router = app(state(&dir, Cache::memory()).await);
    let by_email = "/users/by-email/bob@acme.test";
    let (status, first, body) = router.call(Method::GET, by_email, &[ACME], None).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json_of(&body)["name"], "Bob");
    assert_eq!(h(&first, "x-cache"), Some("miss"));
    let (_, again, _) = router.call(Method::GET, by_email, &[ACME], None).await;
    assert_eq!(h(&again, "x-cache"), Some("hit"));

    let admin = format!("Bearer {}", login(&router, ACME, "alice@acme.test").await);
    let (status, _, _) = router
        .call(
            Method::PUT,
            "/users/2",
            &[ACME, ("authorization", &admin)],
            Some(&json!({ "name": "Robert" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, after, body) = router.call(Method::GET, by_email, &[ACME], None).await;
    assert_eq!(
        json_of(&body)["name"],
        "Robert",
        "the rename is visible at once"
    );
    assert_eq!(h(&after, "x-cache"), Some("miss"));
}
