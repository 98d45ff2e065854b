//! The HTTP layer through an axum `Router` (tower `oneshot`): `ETag`/304 with
//! `ConditionalLayer`, compression by tower-http in front of it, sparse
//! fieldsets.

use std::collections::VecDeque;
use std::io::Read as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use cacheable::http::{ConditionalLayer, Fields, FieldsLayer};
use http_body::Frame;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;
use tower_http::compression::CompressionLayer;

const DOC: &str = "the quick brown fox jumps over the lazy dog, again and again and again";
const LAST_MODIFIED: &str = "Sun, 06 Nov 1994 08:49:37 GMT";

fn strong_tag(body: &[u8]) -> String {
    format!("\"{:032x}\"", xxhash_rust::xxh3::xxh3_128(body))
}

/// A body of `n` chunks of `size` bytes with no size hint (a stream).
struct Chunks(VecDeque<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

fn chunks(n: usize, size: usize) -> Body {
    Body::new(Chunks(
        (0..n)
            .map(|i| Bytes::from(vec![b'a' + (i % 26) as u8; size]))
            .collect(),
    ))
}

fn app(max: usize) -> Router {
    Router::new()
        .route("/doc", get(|| async { DOC }).post(|| async { DOC }))
        .route(
            "/dated",
            get(|| async { ([(header::LAST_MODIFIED, LAST_MODIFIED)], DOC) }),
        )
        .route(
            "/own-etag",
            get(|| async { ([(header::ETAG, "W/\"v7\"")], DOC) }),
        )
        .route(
            "/no-store",
            get(|| async { ([(header::CACHE_CONTROL, "no-store")], DOC) }),
        )
        .route(
            "/cookie",
            get(|| async { ([(header::SET_COOKIE, "sid=secret; HttpOnly")], DOC) }),
        )
        .route(
            "/meta",
            get(|| async {
                (
                    [
                        (header::CACHE_CONTROL, "public, max-age=60"),
                        (header::VARY, "x-tenant-id"),
                        (header::CONTENT_LANGUAGE, "en"),
                    ],
                    DOC,
                )
            }),
        )
        .route("/missing", get(|| async { (StatusCode::NOT_FOUND, DOC) }))
        .route("/stream", get(|| async { chunks(8, 1000) }))
        .route("/announced", get(|| async { vec![b'x'; 5000] }))
        .layer(ConditionalLayer::new().max_body_bytes(max))
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, HeaderMap, Bytes) {
    let res = app.clone().oneshot(req).await.expect("infallible");
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    (parts.status, parts.headers, bytes)
}

fn req(method: Method, uri: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Body::empty()).expect("request")
}

fn h<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().expect("ascii header"))
}

#[tokio::test]
async fn get_gets_a_strong_etag_of_the_body() {
    let app = app(1 << 20);
    let (status, headers, body) = send(&app, req(Method::GET, "/doc", &[])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, DOC.as_bytes());
    assert_eq!(
        h(&headers, "etag"),
        Some(strong_tag(DOC.as_bytes()).as_str())
    );
    // HEAD: same tag, no body.
    let (status, head_headers, body) = send(&app, req(Method::HEAD, "/doc", &[])).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_empty());
    assert_eq!(h(&head_headers, "etag"), h(&headers, "etag"));
    // Not for POST, not for a 404.
    let (_, headers, _) = send(&app, req(Method::POST, "/doc", &[])).await;
    assert!(headers.get("etag").is_none());
    let (status, headers, _) = send(&app, req(Method::GET, "/missing", &[])).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(headers.get("etag").is_none());
}

#[tokio::test]
async fn if_none_match_lists_star_and_weak_comparison() {
    let app = app(1 << 20);
    let tag = strong_tag(DOC.as_bytes());
    let weak = format!("W/{tag}");
    let list = format!("\"nope\", {weak} , \"x,y\"");
    for (inm, expect) in [
        (tag.as_str(), StatusCode::NOT_MODIFIED),
        (weak.as_str(), StatusCode::NOT_MODIFIED),
        (list.as_str(), StatusCode::NOT_MODIFIED),
        ("*", StatusCode::NOT_MODIFIED),
        ("\"other\"", StatusCode::OK),
        ("garbage", StatusCode::OK),
    ] {
        for method in [Method::GET, Method::HEAD] {
            let (status, headers, body) =
                send(&app, req(method.clone(), "/doc", &[("if-none-match", inm)])).await;
            assert_eq!(status, expect, "{method} If-None-Match: {inm}");
            assert_eq!(h(&headers, "etag"), Some(tag.as_str()));
            if expect == StatusCode::NOT_MODIFIED {
                assert!(body.is_empty());
                assert!(headers.get("content-type").is_none());
            }
        }
    }
    // Two header lines form one list.
    let mut r = req(Method::GET, "/doc", &[("if-none-match", "\"a\"")]);
    r.headers_mut()
        .append("if-none-match", tag.parse().expect("value"));
    assert_eq!(send(&app, r).await.0, StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn not_modified_keeps_validators_and_cache_headers() {
    let app = app(1 << 20);
    let (_, full, body) = send(&app, req(Method::GET, "/meta", &[])).await;
    let tag = h(&full, "etag").expect("etag").to_owned();
    let (status, headers, empty) =
        send(&app, req(Method::GET, "/meta", &[("if-none-match", &tag)])).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(empty.is_empty());
    assert_eq!(h(&headers, "etag"), Some(tag.as_str()));
    assert_eq!(h(&headers, "cache-control"), Some("public, max-age=60"));
    assert_eq!(h(&headers, "vary"), Some("x-tenant-id"));
    // Representation metadata goes; Content-Length, if any, is the 200's.
    assert!(headers.get("content-type").is_none());
    assert!(headers.get("content-language").is_none());
    let len = body.len().to_string();
    assert_eq!(h(&headers, "content-length"), Some(len.as_str()));
}

#[tokio::test]
async fn if_modified_since_against_last_modified() {
    let app = app(1 << 20);
    let later = "Mon, 07 Nov 1994 08:49:37 GMT";
    let earlier = "Sat, 05 Nov 1994 08:49:37 GMT";
    let cases: [(&[(&str, &str)], StatusCode); 6] = [
        (
            &[("if-modified-since", LAST_MODIFIED)],
            StatusCode::NOT_MODIFIED,
        ),
        (&[("if-modified-since", later)], StatusCode::NOT_MODIFIED),
        // RFC 850 and asctime forms.
        (
            &[("if-modified-since", "Sunday, 06-Nov-94 08:49:37 GMT")],
            StatusCode::NOT_MODIFIED,
        ),
        (&[("if-modified-since", earlier)], StatusCode::OK),
        (&[("if-modified-since", "not a date")], StatusCode::OK),
        // If-None-Match takes precedence over If-Modified-Since.
        (
            &[("if-none-match", "\"other\""), ("if-modified-since", later)],
            StatusCode::OK,
        ),
    ];
    for (headers, expect) in cases {
        let (status, _, _) = send(&app, req(Method::GET, "/dated", headers)).await;
        assert_eq!(status, expect, "{headers:?}");
    }
    // No Last-Modified: If-Modified-Since never matches.
    let (status, _, _) = send(
        &app,
        req(Method::GET, "/doc", &[("if-modified-since", later)]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn own_etag_no_store_and_set_cookie_are_left_alone() {
    let app = app(1 << 20);
    let (_, headers, body) = send(&app, req(Method::GET, "/own-etag", &[])).await;
    assert_eq!(h(&headers, "etag"), Some("W/\"v7\""));
    assert_eq!(body, DOC.as_bytes());
    // Preconditions still hold against the handler's own tag.
    let (status, headers, _) = send(
        &app,
        req(Method::GET, "/own-etag", &[("if-none-match", "\"v7\"")]),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(h(&headers, "etag"), Some("W/\"v7\""));

    let (status, headers, body) = send(
        &app,
        req(Method::GET, "/no-store", &[("if-none-match", "*")]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get("etag").is_none());
    assert_eq!(body, DOC.as_bytes());

    // A response that sets a cookie never gets a shared tag, nor a 304.
    for inm in [None, Some("*".to_owned()), Some(strong_tag(DOC.as_bytes()))] {
        let hdrs: Vec<(&str, &str)> = inm
            .as_deref()
            .map(|v| vec![("if-none-match", v)])
            .unwrap_or_default();
        let (status, headers, body) = send(&app, req(Method::GET, "/cookie", &hdrs)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(headers.get("etag").is_none());
        assert_eq!(h(&headers, "set-cookie"), Some("sid=secret; HttpOnly"));
        assert_eq!(body, DOC.as_bytes());
    }
}

#[tokio::test]
async fn large_bodies_stream_through_untouched() {
    // 8 chunks of 1000 bytes, no size hint: found too large after 3 chunks.
    let app = app(2500);
    let (status, headers, body) = send(&app, req(Method::GET, "/stream", &[])).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get("etag").is_none());
    let expected: Vec<u8> = (0..8)
        .flat_map(|i| std::iter::repeat_n(b'a' + i as u8, 1000))
        .collect();
    assert_eq!(body.as_ref(), expected.as_slice());
    // Announced larger than the limit: not read, no tag.
    let (_, headers, body) = send(&app, req(Method::GET, "/announced", &[])).await;
    assert!(headers.get("etag").is_none());
    assert_eq!(body.len(), 5000);
    // `*` still matches a current representation without a tag.
    let (status, _, _) = send(&app, req(Method::GET, "/stream", &[("if-none-match", "*")])).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    // Under a larger limit the same bodies are tagged.
    let bigger = self::app(1 << 20);
    let (_, headers, body) = send(&bigger, req(Method::GET, "/stream", &[])).await;
    assert_eq!(h(&headers, "etag"), Some(strong_tag(&body).as_str()));
}

fn compressed_app() -> Router {
    let big: String = (0..200).map(|i| format!("row {i}: {DOC}\n")).collect();
    Router::new()
        .route("/big", get(move || async move { big }))
        // Order: Conditional outside Compression (the layer added last is the
        // outermost), so each encoding gets its own strong tag.
        .layer(CompressionLayer::new())
        .layer(ConditionalLayer::new())
}

#[tokio::test]
async fn compression_then_revalidation_gives_304() {
    let app = compressed_app();
    let (_, identity, plain) = send(&app, req(Method::GET, "/big", &[])).await;
    assert!(identity.get("content-encoding").is_none());
    assert_eq!(h(&identity, "etag"), Some(strong_tag(&plain).as_str()));

    let (status, gz, body) = send(
        &app,
        req(Method::GET, "/big", &[("accept-encoding", "gzip")]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h(&gz, "content-encoding"), Some("gzip"));
    assert!(
        body.len() < plain.len() / 4,
        "{} vs {}",
        body.len(),
        plain.len()
    );
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(body.as_ref())
        .read_to_end(&mut decoded)
        .expect("valid gzip");
    assert_eq!(decoded, plain.as_ref());
    // The tag is that of the bytes sent, so it differs from the identity tag.
    let gz_tag = h(&gz, "etag").expect("etag").to_owned();
    assert_eq!(gz_tag, strong_tag(&body));
    assert_ne!(Some(gz_tag.as_str()), h(&identity, "etag"));
    assert!(
        gz.get_all("vary")
            .iter()
            .any(|v| v.to_str().unwrap().contains("accept-encoding"))
    );

    let mut tags = vec![gz_tag.clone()];
    for enc in ["br", "zstd"] {
        let (_, hdrs, body) =
            send(&app, req(Method::GET, "/big", &[("accept-encoding", enc)])).await;
        assert_eq!(h(&hdrs, "content-encoding"), Some(enc));
        assert!(body.len() < plain.len() / 4);
        let tag = h(&hdrs, "etag").expect("etag").to_owned();
        assert!(!tags.contains(&tag));
        tags.push(tag.clone());
        let (status, hdrs, empty) = send(
            &app,
            req(
                Method::GET,
                "/big",
                &[("accept-encoding", enc), ("if-none-match", &tag)],
            ),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_MODIFIED, "{enc}");
        assert!(empty.is_empty());
        assert_eq!(h(&hdrs, "etag"), Some(tag.as_str()));
    }

    // Revalidation with the gzip tag: 304, no body, Vary kept.
    let (status, hdrs, empty) = send(
        &app,
        req(
            Method::GET,
            "/big",
            &[("accept-encoding", "gzip"), ("if-none-match", &gz_tag)],
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(empty.is_empty());
    assert_eq!(h(&hdrs, "etag"), Some(gz_tag.as_str()));
    assert!(hdrs.get("content-encoding").is_none());
    assert!(hdrs.get("vary").is_some());
    // The gzip tag does not validate the identity representation.
    let (status, _, _) = send(
        &app,
        req(Method::GET, "/big", &[("if-none-match", &gz_tag)]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

fn users() -> Value {
    json!([
        {"id": 1, "name": "Ada", "email": "ada@example.com", "address": {"city": "London", "zip": "N1"}},
        {"id": 2, "name": "Linus", "email": "linus@example.com", "address": {"city": "Helsinki", "zip": "00100"}}
    ])
}

fn fields_app() -> Router {
    Router::new()
        .route("/users", get(|| async { Json(users()) }))
        .route("/users/1", get(|| async { Json(users()[0].clone()) }))
        .route("/text", get(|| async { "id,name" }))
        .route(
            "/by-hand",
            get(|fields: Fields| async move { fields.json(&users()).expect("serializes") }),
        )
        .route("/echo", post(|Json(v): Json<Value>| async move { Json(v) }))
        .layer(FieldsLayer::new())
        .layer(ConditionalLayer::new())
}

async fn json_of(app: &Router, uri: &str) -> (HeaderMap, Value) {
    let (status, headers, body) = send(app, req(Method::GET, uri, &[])).await;
    assert_eq!(status, StatusCode::OK, "{uri}");
    (headers, serde_json::from_slice(&body).expect("json"))
}

#[tokio::test]
async fn sparse_fieldsets() {
    let app = fields_app();
    let (full_headers, full) = json_of(&app, "/users").await;
    assert_eq!(full, users());
    let (headers, sparse) = json_of(&app, "/users?fields=id,name").await;
    assert_eq!(
        sparse,
        json!([{"id": 1, "name": "Ada"}, {"id": 2, "name": "Linus"}])
    );
    assert_eq!(h(&headers, "content-type"), Some("application/json"));
    // The tag describes the filtered body.
    assert_ne!(h(&headers, "etag"), h(&full_headers, "etag"));
    let (_, one) = json_of(&app, "/users/1?fields=id&fields=address.city").await;
    assert_eq!(one, json!({"id": 1, "address": {"city": "London"}}));
    let (_, encoded) = json_of(&app, "/users?fields=id%2Cemail").await;
    assert_eq!(encoded[1], json!({"id": 2, "email": "linus@example.com"}));
    let (_, empty) = json_of(&app, "/users?fields=").await;
    assert_eq!(empty, users());
    // Not JSON: untouched.
    let (_, _, text) = send(&app, req(Method::GET, "/text?fields=id", &[])).await;
    assert_eq!(text, "id,name");
    // The extractor.
    let (_, by_hand) = json_of(&app, "/by-hand?fields=name").await;
    assert_eq!(by_hand, json!([{"name": "Ada"}, {"name": "Linus"}]));
}

#[tokio::test]
async fn compressed_sparse_fieldsets() {
    let app = Router::new()
        .route(
            "/users",
            get(|| async {
                let many: Vec<Value> = (0..100)
                    .map(|i| json!({"id": i, "name": format!("user {i}"), "bio": DOC}))
                    .collect();
                Json(many).into_response()
            }),
        )
        .layer(FieldsLayer::new())
        .layer(CompressionLayer::new())
        .layer(ConditionalLayer::new());
    let (_, headers, body) = send(
        &app,
        req(
            Method::GET,
            "/users?fields=id",
            &[("accept-encoding", "gzip")],
        ),
    )
    .await;
    assert_eq!(h(&headers, "content-encoding"), Some("gzip"));
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(body.as_ref())
        .read_to_end(&mut decoded)
        .expect("valid gzip");
    let v: Value = serde_json::from_slice(&decoded).expect("json");
    assert_eq!(v.as_array().map(Vec::len), Some(100));
    assert_eq!(v[7], json!({"id": 7}));
}

// ----- cached handlers behind the ContextLayer -----

mod cached {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use axum::extract::{Path, Query, State};
    use axum::http::{Method, StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::get;
    use axum::{Json, Router};
    use cacheable::http::{CacheHeaderOptions, ConditionalLayer, ContextLayer};
    use cacheable::{Cache, cacheable};
    use serde::{Deserialize, Serialize};

    use super::{h, req, send};

    #[derive(Clone)]
    struct App {
        cache: Cache,
        calls: Arc<AtomicUsize>,
    }

    #[derive(Debug, Serialize, Deserialize)]
    struct Item {
        id: u64,
        tenant: String,
        computed: usize,
    }

    /// Per-tenant value: the tenant is in the key.
    #[cacheable(ttl = 60, name = "http.item", tags = ["item:{id}"], cache = app.cache)]
    async fn item(State(app): State<App>, Path(id): Path<u64>) -> Json<Item> {
        let computed = app.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let tenant = cacheable::tenant::current().map(|t| t.as_str().to_owned());
        Json(Item {
            id,
            tenant: tenant.unwrap_or_default(),
            computed,
        })
    }

    /// Shared by every tenant: `global`.
    #[cacheable(ttl = 30, name = "http.config", global, cache = app.cache)]
    async fn config(State(app): State<App>) -> Json<Vec<String>> {
        app.calls.fetch_add(1, Ordering::SeqCst);
        Json(vec!["a".into(), "b".into()])
    }

    /// `global`, but computed from a tenant-scoped call: the response is that
    /// tenant's.
    #[cacheable(ttl = 30, name = "http.summary", global, cache = app.cache)]
    async fn summary(State(app): State<App>) -> Json<String> {
        let Json(first) = item(State(app), Path(1)).await;
        Json(format!("first item of {}", first.tenant))
    }

    /// `Err` is never cached.
    #[cacheable(ttl = 60, name = "http.maybe", cache = app.cache)]
    async fn maybe(State(app): State<App>, Path(id): Path<u64>) -> Result<Json<u64>, StatusCode> {
        app.calls.fetch_add(1, Ordering::SeqCst);
        if id == 0 {
            Err(StatusCode::NOT_FOUND)
        } else {
            Ok(Json(id))
        }
    }

    #[derive(Debug, Deserialize)]
    struct Search {
        term: String,
        #[serde(default)]
        page: u32,
    }

    /// A key from a template over a `Query` extractor's fields.
    #[cacheable(ttl = 60, name = "http.search", key = "{q.term}:{q.page}", tags = ["search"], cache = app.cache)]
    async fn search(State(app): State<App>, Query(q): Query<Search>) -> Json<Vec<String>> {
        app.calls.fetch_add(1, Ordering::SeqCst);
        Json(vec![format!("{} p{}", q.term, q.page)])
    }

    fn router(app: &App, context: ContextLayer) -> Router {
        Router::new()
            .route("/items/{id}", get(item))
            .route("/search", get(search))
            .route("/config", get(config))
            .route("/summary", get(summary))
            .route("/maybe/{id}", get(maybe))
            // The handler sets its own Cache-Control: kept.
            .route(
                "/own-cc/{id}",
                get(|state: State<App>, id: Path<u64>| async move {
                    ([(header::CACHE_CONTROL, "no-cache")], item(state, id).await)
                }),
            )
            // A cached value served with a cookie: never cacheable, no ETag.
            .route(
                "/with-cookie/{id}",
                get(|state: State<App>, id: Path<u64>| async move {
                    (
                        [(header::SET_COOKIE, "seen=1; HttpOnly")],
                        item(state, id).await,
                    )
                        .into_response()
                }),
            )
            .layer(context)
            .layer(ConditionalLayer::new())
            .with_state(app.clone())
    }

    fn app() -> App {
        App {
            cache: Cache::memory(),
            calls: Arc::new(AtomicUsize::new(0)),
        }
    }

    async fn get_json(
        r: &Router,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let (status, hdrs, body) = send(r, req(Method::GET, uri, headers)).await;
        let v = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        (status, hdrs, v)
    }

    #[tokio::test]
    async fn tenants_are_isolated_by_header() {
        let app = app();
        let r = router(&app, ContextLayer::new());
        let acme = [("x-tenant-id", "acme")];
        let globex = [("x-tenant-id", "globex")];
        let (_, h1, a1) = get_json(&r, "/items/7", &acme).await;
        let (_, h2, g1) = get_json(&r, "/items/7", &globex).await;
        let (_, h3, a2) = get_json(&r, "/items/7", &acme).await;
        let (_, h4, g2) = get_json(&r, "/items/7", &globex).await;
        assert_eq!(
            app.calls.load(Ordering::SeqCst),
            2,
            "one computation per tenant"
        );
        assert_eq!(a1["tenant"], "acme");
        assert_eq!(g1["tenant"], "globex");
        assert_eq!(a1, a2);
        assert_eq!(g1, g2);
        assert_ne!(a1["computed"], g1["computed"]);
        assert_eq!(
            [&h1, &h2, &h3, &h4].map(|x| h(x, "x-cache")),
            [Some("miss"), Some("miss"), Some("hit"), Some("hit")]
        );
        // A crafted tenant id is just another tenant.
        let (_, _, crafted) = get_json(&r, "/items/7", &[("x-tenant-id", "acme:*")]).await;
        assert_eq!(crafted["tenant"], "acme:*");
        assert_eq!(app.calls.load(Ordering::SeqCst), 3);
        // Invalidation in one tenant leaves the other cached.
        app.cache
            .delete_by_tags(&["item:7"], Some("acme"))
            .await
            .expect("invalidate");
        let (_, ha, _) = get_json(&r, "/items/7", &acme).await;
        let (_, hg, _) = get_json(&r, "/items/7", &globex).await;
        assert_eq!(h(&ha, "x-cache"), Some("miss"));
        assert_eq!(h(&hg, "x-cache"), Some("hit"));
    }

    #[tokio::test]
    async fn cache_control_age_and_x_cache() {
        // Age is read on the cache's clock: advanced, not slept.
        let clock = cacheable::clock::FakeClock::new();
        let app = App {
            cache: Cache::builder()
                .memory()
                .clock(clock.clone())
                .build()
                .await
                .unwrap(),
            ..app()
        };
        let r = router(&app, ContextLayer::new());
        let acme = [("x-tenant-id", "acme")];
        let (_, miss, _) = get_json(&r, "/items/1", &acme).await;
        assert_eq!(h(&miss, "x-cache"), Some("miss"));
        assert_eq!(h(&miss, "cache-control"), Some("private, max-age=60"));
        assert_eq!(h(&miss, "age"), Some("0"));
        assert_eq!(h(&miss, "vary"), Some("x-tenant-id"));
        clock.advance(Duration::from_millis(7300));
        let (_, hit, _) = get_json(&r, "/items/1", &acme).await;
        assert_eq!(h(&hit, "x-cache"), Some("hit"));
        let age: u64 = h(&hit, "age").expect("age").parse().expect("number");
        assert_eq!(age, 7, "whole seconds, floored");
        let cc = h(&hit, "cache-control").expect("cache-control");
        let max_age: u64 = cc
            .strip_prefix("private, max-age=")
            .expect("private max-age")
            .parse()
            .expect("number");
        // max-age − Age is the remaining TTL: 52.7 s, floored; max-age is
        // the age plus that (both floored).
        assert_eq!((max_age, max_age - age), (59, 52), "{cc}, age {age}");
        // The tag is the same on a miss and a hit (same body).
        assert_eq!(h(&miss, "etag"), h(&hit, "etag"));

        // Outside any tenant, or `global`: public.
        let (_, public, _) = get_json(&r, "/items/1", &[]).await;
        assert_eq!(h(&public, "cache-control"), Some("public, max-age=60"));
        assert!(public.get("vary").is_none());
        let (_, global, _) = get_json(&r, "/config", &acme).await;
        assert_eq!(h(&global, "cache-control"), Some("public, max-age=30"));

        // A handler's own Cache-Control wins.
        let (_, own, _) = get_json(&r, "/own-cc/1", &acme).await;
        assert_eq!(h(&own, "cache-control"), Some("no-cache"));
        assert_eq!(h(&own, "x-cache"), Some("hit"));
        assert!(own.get("age").is_none());

        // X-Cache switched off.
        let quiet = router(
            &app,
            ContextLayer::new().cache_headers(CacheHeaderOptions::new().x_cache(false)),
        );
        let (_, q, _) = get_json(&quiet, "/items/1", &acme).await;
        assert!(q.get("x-cache").is_none());
        assert!(h(&q, "cache-control").is_some_and(|v| v.starts_with("private, max-age=")));

        // No cache headers without a cached call.
        let (_, none, _) = get_json(&r, "/nowhere", &acme).await;
        assert!(none.get("cache-control").is_none() && none.get("x-cache").is_none());
    }

    #[tokio::test]
    async fn errors_are_not_cached_nor_given_freshness() {
        let app = app();
        let r = router(&app, ContextLayer::new());
        let acme = [("x-tenant-id", "acme")];
        for _ in 0..2 {
            let (status, hdrs, _) = get_json(&r, "/maybe/0", &acme).await;
            assert_eq!(status, StatusCode::NOT_FOUND);
            assert_eq!(h(&hdrs, "x-cache"), Some("miss"));
            assert!(hdrs.get("cache-control").is_none());
            assert!(hdrs.get("etag").is_none());
        }
        assert_eq!(app.calls.load(Ordering::SeqCst), 2);
        let (_, _, v) = get_json(&r, "/maybe/5", &acme).await;
        let (_, hit, _) = get_json(&r, "/maybe/5", &acme).await;
        assert_eq!(v, serde_json::json!(5));
        assert_eq!(h(&hit, "x-cache"), Some("hit"));
        assert_eq!(app.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn set_cookie_responses_are_never_cacheable_nor_tagged() {
        let app = app();
        let r = router(&app, ContextLayer::new());
        let acme = [("x-tenant-id", "acme")];
        // Warm the entry: the cookie response is then served from the cache...
        let (_, plain, _) = get_json(&r, "/items/3", &acme).await;
        let tag = h(&plain, "etag").expect("etag").to_owned();
        for inm in ["*", tag.as_str()] {
            let (status, hdrs, v) = get_json(
                &r,
                "/with-cookie/3",
                &[("x-tenant-id", "acme"), ("if-none-match", inm)],
            )
            .await;
            // ...but never marked cacheable, never tagged, never a 304.
            assert_eq!(status, StatusCode::OK);
            assert_eq!(v["id"], 3);
            assert_eq!(h(&hdrs, "set-cookie"), Some("seen=1; HttpOnly"));
            assert_eq!(h(&hdrs, "cache-control"), Some("private, no-store"));
            assert!(hdrs.get("age").is_none());
            assert!(hdrs.get("etag").is_none());
            assert_eq!(h(&hdrs, "x-cache"), Some("hit"));
        }
    }

    #[tokio::test]
    async fn query_extractor_keys_from_a_template() {
        let app = app();
        let r = router(&app, ContextLayer::new());
        let acme = [("x-tenant-id", "acme")];
        let (_, first, v) = get_json(&r, "/search?term=rust&page=2", &acme).await;
        assert_eq!(v, serde_json::json!(["rust p2"]));
        assert_eq!(h(&first, "x-cache"), Some("miss"));
        // Same fields in another order, plus a parameter the key ignores: a hit.
        let (_, again, v) = get_json(&r, "/search?page=2&utm=x&term=rust", &acme).await;
        assert_eq!(v, serde_json::json!(["rust p2"]));
        assert_eq!(h(&again, "x-cache"), Some("hit"));
        let (_, other, v) = get_json(&r, "/search?term=rust", &acme).await;
        assert_eq!(v, serde_json::json!(["rust p0"]));
        assert_eq!(h(&other, "x-cache"), Some("miss"));
        assert_eq!(app.calls.load(Ordering::SeqCst), 2);
        app.cache
            .delete_by_tags(&["search"], Some("acme"))
            .await
            .expect("invalidate");
        let (_, after, _) = get_json(&r, "/search?term=rust&page=2", &acme).await;
        assert_eq!(h(&after, "x-cache"), Some("miss"));
    }

    /// A CDN must never store a personalised response: credentials on the
    /// request, or a tenant-scoped call anywhere under the handler, make the
    /// response `private`, whatever the outermost cached call was.
    #[tokio::test]
    async fn personal_responses_are_never_public() {
        let app = app();
        let r = router(&app, ContextLayer::new());
        // The control: a global value with no credentials is public.
        let (_, public, _) = get_json(&r, "/config", &[]).await;
        assert_eq!(h(&public, "cache-control"), Some("public, max-age=30"));
        for creds in [
            ("authorization", "Bearer secret-token"),
            ("cookie", "sid=1"),
            ("proxy-authorization", "Basic eDp5"),
        ] {
            let (status, hdrs, _) = get_json(&r, "/config", &[creds]).await;
            assert_eq!(status, StatusCode::OK);
            // A hit: max-age is the entry's whole lifetime, in whole seconds.
            assert!(
                h(&hdrs, "cache-control").is_some_and(|v| v.starts_with("private, max-age=")),
                "{}: {:?}",
                creds.0,
                h(&hdrs, "cache-control")
            );
            assert_eq!(h(&hdrs, "vary"), Some("x-tenant-id"));
        }
        // An identity put there by the auth middleware.
        let mut with_identity = req(Method::GET, "/config", &[]);
        with_identity
            .extensions_mut()
            .insert(cacheable::http::Identity {
                user_id: "u1".into(),
                role: None,
            });
        let (_, hdrs, _) = send(&r, with_identity).await;
        assert!(h(&hdrs, "cache-control").is_some_and(|v| v.starts_with("private, max-age=")));
        // A global handler computed from a tenant-scoped call.
        let (_, hdrs, v) = get_json(&r, "/summary", &[("x-tenant-id", "acme")]).await;
        assert_eq!(v, serde_json::json!("first item of acme"));
        assert_eq!(h(&hdrs, "x-cache"), Some("miss"));
        assert_eq!(h(&hdrs, "cache-control"), Some("private, max-age=30"));
        // That global value is never stored: another tenant gets its own,
        // and the response is still private.
        let (_, hdrs, v) = get_json(&r, "/summary", &[("x-tenant-id", "globex")]).await;
        assert_eq!(v, serde_json::json!("first item of globex"));
        assert_eq!(h(&hdrs, "cache-control"), Some("private, max-age=30"));
    }

    /// The tenant comes from the client: an over-long, malformed or doubled
    /// tenant header is a 400 and the handler never runs.
    #[tokio::test]
    async fn malformed_and_overlong_tenants_are_refused() {
        let app = app();
        let r = router(&app, ContextLayer::new());
        let long = "t".repeat(cacheable::tenant::MAX_TENANT_LEN + 1);
        let max = "t".repeat(cacheable::tenant::MAX_TENANT_LEN);
        let (status, _, v) = get_json(&r, "/items/1", &[("x-tenant-id", &max)]).await;
        assert_eq!(status, StatusCode::OK, "256 bytes are accepted");
        assert_eq!(v["tenant"], max.as_str());
        let calls = app.calls.load(Ordering::SeqCst);
        let bad: Vec<(&str, Vec<Vec<u8>>)> = vec![
            ("over-long", vec![long.into_bytes()]),
            ("not UTF-8", vec![b"caf\xe9".to_vec()]),
            ("tab", vec![b"ac\tme".to_vec()]),
            ("C1 control", vec!["ac\u{85}me".as_bytes().to_vec()]),
            ("two headers", vec![b"acme".to_vec(), b"globex".to_vec()]),
        ];
        for (what, values) in bad {
            let mut request = req(Method::GET, "/items/1", &[]);
            for v in values {
                request.headers_mut().append(
                    "x-tenant-id",
                    axum::http::HeaderValue::from_bytes(&v).expect("valid header bytes"),
                );
            }
            let (status, hdrs, body) = send(&r, request).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{what}");
            let body = String::from_utf8_lossy(&body);
            assert!(body.starts_with("invalid tenant: "), "{what}: {body}");
            assert!(!body.contains("acme") && !body.contains("ttt"), "{body}");
            assert_eq!(h(&hdrs, "cache-control"), Some("no-store"));
        }
        assert_eq!(app.calls.load(Ordering::SeqCst), calls, "no handler ran");
        // The limit is configurable.
        let short = router(&app, ContextLayer::new().max_tenant_len(4));
        let (status, _, _) = get_json(&short, "/items/1", &[("x-tenant-id", "acme")]).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _, _) = get_json(&short, "/items/1", &[("x-tenant-id", "acme2")]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    /// `require_tenant()`: no tenant is a 400, never the shared space.
    #[tokio::test]
    async fn require_tenant_refuses_requests_without_one() {
        let app = app();
        let r = router(&app, ContextLayer::new().require_tenant());
        for headers in [
            &[][..],
            &[("x-tenant-id", "")][..],
            &[("x-tenant-id", "  ")][..],
        ] {
            let (status, _, body) = send(&r, req(Method::GET, "/items/1", headers)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{headers:?}");
            assert!(String::from_utf8_lossy(&body).contains("requires a tenant"));
        }
        assert_eq!(app.calls.load(Ordering::SeqCst), 0);
        let (status, _, v) = get_json(&r, "/items/1", &[("x-tenant-id", "acme")]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["tenant"], "acme");
        // Without it, no tenant is the shared space (the default).
        let open = router(&app, ContextLayer::new());
        let (status, _, v) = get_json(&open, "/items/1", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["tenant"], "");
        // A custom header that is not a header name: every request is a 500,
        // never a request without its tenant.
        let broken = router(&app, ContextLayer::new().tenant_header("x org"));
        let (status, _, _) = get_json(&broken, "/items/1", &[("x-org", "acme")]).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
