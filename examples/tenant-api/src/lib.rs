//! A multi-tenant users API: axum + sqlx + `cacheable`.
//!
//! Purpose: shows `#[cacheable]` on axum handlers (reads cached per tenant,
//! with tags), `#[cache_evict]` on writes, `#[rate_limit]` by role on login
//! and writes, query-result caching with `Cache::get_or_compute`, the
//! `ContextLayer` (tenant from `x-tenant-id`, user and role from the bearer
//! token), tower-http compression (gzip, br, zstd), `ETag`/`304` from the
//! `ConditionalLayer`, sparse fieldsets (`?fields=id,name`) and `/health`.
//!
//! Prerequisites: none.
//! - Database: SQLite in a file under the system temp dir, created and seeded
//!   on startup; `DATABASE_URL=postgres://user@host/db` uses Postgres instead
//!   (tables are created and seeded there the same way). On Postgres the
//!   service installs a trigger (`sql/notify.sql`) and listens for its
//!   `NOTIFY`s (`cacheable::events::postgres`): an `UPDATE users ..` in
//!   `psql` is visible through the API at once.
//! - Cache: Redis at `REDIS_URL` when set, else at 127.0.0.1:6379 when it
//!   answers `PING`, else the in-process store (`Cache::memory()`);
//!   `CACHE_ENABLED=false` turns caching off (`Cache::disabled()`: every
//!   handler runs its query; rate limits still apply, in the process).
//! - Listens on 127.0.0.1:3000, or `PORT`.
//!
//! Run: `cargo run -p tenant-api` (this file is the service; `main.rs`
//! adds the Prometheus recorder, a stderr logger and the listener).
//!
//! Endpoints (every one takes the tenant in `x-tenant-id`):
//! - `POST /login` `{"email", "password"}` → `{"token", "user"}`; 5 tries per
//!   minute per e-mail.
//! - `GET /users`, `GET /users/{id}`: cached 60 s, tags `users`, `user:{id}`.
//!   `GET /users?name_prefix=Al&limit=10` filters the list; each filter is
//!   its own entry (the `Query` is part of the key).
//! - `GET /users/by-email/{email}`: cached 60 s under the tag `user:{ret.id}`,
//!   rendered from the result, so a rename of that user refreshes it.
//! - `PUT /users/{id}` `{"name"}` with `Authorization: Bearer <token>`: admins
//!   may rename anyone (30 writes a minute), others themselves (3 a minute).
//! - `GET /stats`: an ad-hoc aggregate query cached with `get_or_compute`
//!   under the tag `users`, so the same writes invalidate it.
//! - `GET /health`: the cache's health and the database backend.
//! - `GET /cache/stats` with an admin's bearer token: the cache's counters
//!   (`Json(cache.stats())`: hits, misses, errors, per function; durations
//!   in milliseconds).
//!
//! Operator endpoints, behind the admin token (`CACHE_ADMIN_TOKEN`, or a
//! random one printed at startup), see [`require_admin`]:
//! - `GET /_cache`: the live dashboard (`cacheable::http::dashboard`);
//!   open `/_cache?token=<token>` once in a browser (it sets a cookie);
//! - `GET /metrics`: Prometheus text format (`Authorization: Bearer <token>`).
//!
//! Monitoring: `MetricsLayer` times every request by matched route (into
//! `stats()` and the `metrics` facade); sqlx logs statements slower than
//! [`SLOW_STATEMENT`] at warn level.
//!
//! Layer order, outermost first: `MetricsLayer` (times the whole request)
//! → `ConditionalLayer` (tags the bytes sent) →
//! `CompressionLayer` → `FieldsLayer` (filters before compressing) → auth
//! (puts the `Identity` in the request) → `ContextLayer` (reads it, sets the
//! tenant context, writes cache and rate-limit headers) → handlers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use cacheable::http::{
    ConditionalLayer, ContextLayer, FieldsLayer, Identity, MetricsLayer, dashboard,
};
use cacheable::{Cache, CacheOptions, RateLimited, cache_evict, cacheable, rate_limit};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions as _, Row};
use tokio::net::TcpListener;
use tower_http::compression::CompressionLayer;

/// Shared by every handler: the pool and the cache.
#[derive(Clone)]
pub struct AppState {
    /// The database (SQLite or Postgres through sqlx's `Any` driver).
    pub db: AnyPool,
    /// The cache (Redis or in-process).
    pub cache: Cache,
    /// `"sqlite"` or `"postgres"`, for `/health`.
    pub database: &'static str,
}

/// A user of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Id, unique within the tenant.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// Login e-mail.
    pub email: String,
    /// `admin` or `member`.
    pub role: String,
}

/// The body of `POST /login`.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    email: String,
    password: String,
}

/// The query of `GET /users`: `?name_prefix=..&limit=..`. `Serialize`, so
/// that the handler's cache key holds it: two filters, two entries.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct UserFilter {
    /// Only users whose name starts with this (as the database's `LIKE`
    /// compares: ASCII case-insensitive on SQLite, exact on Postgres).
    pub name_prefix: Option<String>,
    /// At most this many users (1 to 100; default 100).
    pub limit: Option<u32>,
}

/// The body of `PUT /users/{id}`.
#[derive(Debug, Deserialize)]
pub struct Rename {
    name: String,
}

/// Errors of the API, as JSON responses.
#[derive(Debug)]
pub enum ApiError {
    /// No `x-tenant-id` header.
    NoTenant,
    /// Missing or unknown bearer token, or bad credentials.
    Unauthorized,
    /// Not allowed for this role.
    Forbidden,
    /// No such user in this tenant.
    NotFound,
    /// Invalid input.
    BadRequest(&'static str),
    /// The rate limit refused the call: 429 with `Retry-After`.
    Limited(RateLimited),
    /// The database failed.
    Db(sqlx::Error),
}

impl From<RateLimited> for ApiError {
    fn from(r: RateLimited) -> Self {
        ApiError::Limited(r)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Db(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::Limited(r) => return r.into_response(),
            ApiError::NoTenant => (StatusCode::BAD_REQUEST, "x-tenant-id is required"),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not found"),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::Db(e) => {
                eprintln!("database error: {e}");
                (StatusCode::INTERNAL_SERVER_ERROR, "database error")
            }
        };
        (status, Json(json!({ "error": message }))).into_response()
    }
}

// ----- database -----

const SCHEMA: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS users (
        tenant TEXT NOT NULL,
        id BIGINT NOT NULL,
        name TEXT NOT NULL,
        email TEXT NOT NULL,
        role TEXT NOT NULL,
        password TEXT NOT NULL,
        PRIMARY KEY (tenant, id)
    )",
    "CREATE TABLE IF NOT EXISTS sessions (
        token TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        user_id BIGINT NOT NULL,
        role TEXT NOT NULL
    )",
];

/// Seed data: `(tenant, id, name, email, role)`. Every password is `demo`
/// (stored in clear: a demo; real code stores a password hash such as argon2).
const SEED: [(&str, i64, &str, &str, &str); 5] = [
    ("acme", 1, "Alice", "alice@acme.test", "admin"),
    ("acme", 2, "Bob", "bob@acme.test", "member"),
    ("acme", 3, "Carol", "carol@acme.test", "member"),
    ("globex", 1, "Gina", "gina@globex.test", "admin"),
    ("globex", 2, "Hank", "hank@globex.test", "member"),
];

/// The default database: a SQLite file under the system temp dir.
pub fn default_database_url() -> String {
    let path = std::env::temp_dir().join("cacheable-tenant-api.sqlite3");
    format!("sqlite://{}?mode=rwc", path.display())
}

/// Statements slower than this are logged by sqlx at warn level (target
/// `sqlx::query`, with the statement and its time): the query time behind a
/// cached function's misses, next to the cache's own `compute_latency`.
pub const SLOW_STATEMENT: Duration = Duration::from_millis(100);

/// Connects to `url` (SQLite or Postgres), creates the tables and seeds them
/// (rows that exist are kept). Slow statements are logged (see
/// [`SLOW_STATEMENT`]).
///
/// # Errors
/// When the database cannot be reached or the statements fail.
pub async fn connect_database(url: &str) -> Result<(AnyPool, &'static str), sqlx::Error> {
    sqlx::any::install_default_drivers();
    let database = if url.starts_with("postgres") {
        "postgres"
    } else {
        "sqlite"
    };
    let options: AnyConnectOptions = url.parse()?;
    let options = options.log_slow_statements(log::LevelFilter::Warn, SLOW_STATEMENT);
    let db = AnyPoolOptions::new()
        .max_connections(5)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await?;
    for statement in SCHEMA {
        sqlx::query(statement).execute(&db).await?;
    }
    for (tenant, id, name, email, role) in SEED {
        sqlx::query(
            "INSERT INTO users (tenant, id, name, email, role, password)
             VALUES ($1, $2, $3, $4, $5, 'demo') ON CONFLICT DO NOTHING",
        )
        .bind(tenant)
        .bind(id)
        .bind(name)
        .bind(email)
        .bind(role)
        .execute(&db)
        .await?;
    }
    Ok((db, database))
}

fn user_of(row: &sqlx::any::AnyRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        email: row.try_get("email")?,
        role: row.try_get("role")?,
    })
}

/// The tenant of the request (the `ContextLayer` put it in the context).
fn tenant() -> Result<String, ApiError> {
    cacheable::tenant::current()
        .map(|t| t.as_str().to_owned())
        .ok_or(ApiError::NoTenant)
}

// ----- cache -----

/// Whether a Redis answers `PING` at `addr` within 300 ms.
async fn redis_answers(addr: &str) -> bool {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(b"PING\r\n").await.ok()?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await.ok()?;
        // `+PONG`, or `-NOAUTH` from a Redis with a password: it answers.
        (n > 0 && matches!(buf[0], b'+' | b'-')).then_some(())
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(300), probe).await,
        Ok(Some(()))
    )
}

/// The cache: Redis at `REDIS_URL`, else at 127.0.0.1:6379 if it answers,
/// else in-process. Returns the cache and a description for the logs.
///
/// # Errors
/// When `REDIS_URL` is not a valid Redis URL.
pub async fn cache_from_env() -> Result<(Cache, String), cacheable::CacheError> {
    if std::env::var("CACHE_ENABLED").is_ok_and(|v| v == "false" || v == "0") {
        return Ok((
            Cache::disabled(),
            "disabled (CACHE_ENABLED=false)".to_owned(),
        ));
    }
    let url = match std::env::var("REDIS_URL") {
        Ok(url) => Some(url),
        Err(_) if redis_answers("127.0.0.1:6379").await => {
            Some("redis://127.0.0.1:6379".to_owned())
        }
        Err(_) => None,
    };
    match url {
        Some(url) => {
            let cache = Cache::builder()
                .redis_url(&url)
                .prefix("tenant_api")
                .build()
                .await?;
            let shown = url.split('@').next_back().unwrap_or(&url).to_owned();
            Ok((cache, format!("redis ({shown})")))
        }
        None => Ok((Cache::memory(), "in-process memory".to_owned())),
    }
}

// ----- handlers -----

/// `GET /users?name_prefix=..&limit=..`: the users of the tenant, by id.
/// Cached per tenant (the tenant is part of every key) and per filter (the
/// `Query` extractor is keyed by the `UserFilter` it carries), tagged
/// `users`.
#[cacheable(ttl = 60, name = "users.list", tags = ["users"], cache = app.cache)]
pub async fn list_users(
    State(app): State<AppState>,
    filter: Query<UserFilter>,
) -> Result<Json<Vec<User>>, ApiError> {
    let limit = filter.limit.unwrap_or(100);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::BadRequest("limit must be from 1 to 100"));
    }
    // `%`, `_` and `\` in the prefix match themselves.
    let mut pattern = String::new();
    for c in filter.name_prefix.as_deref().unwrap_or_default().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    let rows = sqlx::query(
        "SELECT id, name, email, role FROM users
         WHERE tenant = $1 AND name LIKE $2 ESCAPE '\\' ORDER BY id LIMIT $3",
    )
    .bind(tenant()?)
    .bind(pattern)
    .bind(i64::from(limit))
    .fetch_all(&app.db)
    .await?;
    Ok(Json(rows.iter().map(user_of).collect::<Result<_, _>>()?))
}

/// `GET /users/{id}`: one user. The key is the id (the `State` extractor is
/// left out of keys); tags `users` and `user:{id}`.
#[cacheable(ttl = 60, name = "users.get", tags = ["users", "user:{id}"], cache = app.cache)]
pub async fn get_user(
    State(app): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<User>, ApiError> {
    let row = sqlx::query("SELECT id, name, email, role FROM users WHERE tenant = $1 AND id = $2")
        .bind(tenant()?)
        .bind(id)
        .fetch_optional(&app.db)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(user_of(&row)?))
}

/// `GET /users/by-email/{email}`: one user, found by e-mail. Its id is only
/// known from the row, so the tag `user:{ret.id}` is rendered from the result
/// (`ret` is the `Ok` value, here the `User` inside the `Json`): a
/// `PUT /users/{id}`, which invalidates `user:{id}`, refreshes this entry too.
#[cacheable(ttl = 60, name = "users.by_email", tags = ["user:{ret.id}"], cache = app.cache)]
pub async fn get_user_by_email(
    State(app): State<AppState>,
    Path(email): Path<String>,
) -> Result<Json<User>, ApiError> {
    let row =
        sqlx::query("SELECT id, name, email, role FROM users WHERE tenant = $1 AND email = $2")
            .bind(tenant()?)
            .bind(email)
            .fetch_optional(&app.db)
            .await?
            .ok_or(ApiError::NotFound)?;
    Ok(Json(user_of(&row)?))
}

/// `PUT /users/{id}`: renames a user. Rate-limited per user by role (admins
/// 30 writes a minute, everyone else 3); on success the tags `users` and
/// `user:{id}` of the tenant are invalidated, so the next read is fresh.
#[rate_limit(points = 3, duration = 60, roles(admin = 30), name = "users.write", cache = app.cache)]
#[cache_evict(tags = ["users", "user:{id}"], cache = app.cache)]
pub async fn update_user(
    State(app): State<AppState>,
    Path(id): Path<i64>,
    me: Option<Extension<Identity>>,
    Json(body): Json<Rename>,
) -> Result<Json<User>, ApiError> {
    let Some(Extension(me)) = me else {
        return Err(ApiError::Unauthorized);
    };
    if me.role.as_deref() != Some("admin") && me.user_id != id.to_string() {
        return Err(ApiError::Forbidden);
    }
    let name = body.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError::BadRequest("name must have 1 to 100 bytes"));
    }
    let row = sqlx::query(
        "UPDATE users SET name = $1 WHERE tenant = $2 AND id = $3
         RETURNING id, name, email, role",
    )
    .bind(name)
    .bind(tenant()?)
    .bind(id)
    .fetch_optional(&app.db)
    .await?
    .ok_or(ApiError::NotFound)?;
    Ok(Json(user_of(&row)?))
}

/// `POST /login`: checks the credentials and opens a session. Five tries a
/// minute per e-mail (exact sliding window), within the tenant.
#[rate_limit(points = 5, duration = 60, key = "{form.email}", name = "login", algorithm = "sliding_window", cache = app.cache)]
pub async fn login(
    State(app): State<AppState>,
    Json(form): Json<LoginForm>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant = tenant()?;
    let row = sqlx::query(
        "SELECT id, name, email, role FROM users
         WHERE tenant = $1 AND email = $2 AND password = $3",
    )
    .bind(&tenant)
    .bind(&form.email)
    .bind(&form.password)
    .fetch_optional(&app.db)
    .await?
    .ok_or(ApiError::Unauthorized)?;
    let user = user_of(&row)?;
    let token = new_token();
    sqlx::query("INSERT INTO sessions (token, tenant, user_id, role) VALUES ($1, $2, $3, $4)")
        .bind(&token)
        .bind(&tenant)
        .bind(user.id)
        .bind(&user.role)
        .execute(&app.db)
        .await?;
    Ok(Json(json!({ "token": token, "user": user })))
}

/// `GET /stats`: an ad-hoc aggregate, cached with `get_or_compute` under the
/// same `users` tag as the handlers, so a rename invalidates it too.
pub async fn stats(State(app): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let tenant = tenant()?;
    let opts = CacheOptions::new()
        .ttl(Duration::from_secs(60))
        .tags(["users"]);
    let (users, admins): (i64, i64) = app
        .cache
        .get_or_compute("users.stats", &opts, || async {
            let row = sqlx::query(
                "SELECT COUNT(*) AS users,
                        COALESCE(SUM(CASE WHEN role = 'admin' THEN 1 ELSE 0 END), 0) AS admins
                 FROM users WHERE tenant = $1",
            )
            .bind(&tenant)
            .fetch_one(&app.db)
            .await?;
            Ok::<_, ApiError>((row.try_get("users")?, row.try_get("admins")?))
        })
        .await?;
    Ok(Json(json!({ "users": users, "admins": admins })))
}

/// `GET /health`: the cache's health and the database backend.
pub async fn health(State(app): State<AppState>) -> Json<serde_json::Value> {
    let h = app.cache.health().await;
    let db_ok = sqlx::query("SELECT 1").execute(&app.db).await.is_ok();
    Json(json!({
        "status": if h.is_ok() && db_ok { "ok" } else { "degraded" },
        "database": { "backend": app.database, "reachable": db_ok },
        "cache": {
            "backend": h.backend,
            "enabled": !h.disabled,
            "reachable": h.reachable,
            "latency_us": h.latency.map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
            "breaker": format!("{:?}", h.breaker),
            "error": h.error,
        },
    }))
}

/// `GET /cache/stats`: the cache's counters, for admins only (they name
/// the functions and show traffic). `Stats` implements `Serialize`.
pub async fn cache_stats(
    State(app): State<AppState>,
    me: Option<Extension<Identity>>,
) -> Result<Json<cacheable::Stats>, ApiError> {
    match me {
        None => Err(ApiError::Unauthorized),
        Some(Extension(me)) if me.role.as_deref() != Some("admin") => Err(ApiError::Forbidden),
        Some(_) => Ok(Json(app.cache.stats())),
    }
}

/// A random session token: 128 bits from the standard library's per-process
/// random hasher keys (no extra dependency for a demo).
fn new_token() -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    let word = || {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        h.finish()
    };
    format!("{:016x}{:016x}", word(), word())
}

/// Auth: `Authorization: Bearer <token>` of a session of the request's
/// tenant puts an [`Identity`] (user id and role) in the request for the
/// `ContextLayer`. An unknown token is refused; no token is anonymous.
async fn authenticate(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(token) = bearer(req.headers()) else {
        return next.run(req).await;
    };
    let tenant = req
        .headers()
        .get("x-tenant-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let session =
        sqlx::query("SELECT user_id, role FROM sessions WHERE token = $1 AND tenant = $2")
            .bind(token)
            .bind(tenant)
            .fetch_optional(&app.db)
            .await;
    match session {
        Ok(Some(row)) => {
            let (Ok(user_id), Ok(role)) = (
                row.try_get::<i64, _>("user_id"),
                row.try_get::<String, _>("role"),
            ) else {
                return ApiError::Unauthorized.into_response();
            };
            req.extensions_mut().insert(Identity {
                user_id: user_id.to_string(),
                role: Some(role),
            });
            next.run(req).await
        }
        Ok(None) => ApiError::Unauthorized.into_response(),
        Err(e) => ApiError::Db(e).into_response(),
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// The whole service. See the module docs for the layer order.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/users", get(list_users))
        .route("/users/{id}", get(get_user).put(update_user))
        .route("/users/by-email/{email}", get(get_user_by_email))
        .route("/login", post(login))
        .route("/stats", get(stats))
        .route("/health", get(health))
        .route("/cache/stats", get(cache_stats))
        .layer(ContextLayer::new())
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(FieldsLayer::new())
        .layer(CompressionLayer::new())
        .layer(ConditionalLayer::new())
        .layer(MetricsLayer::new().cache(state.cache.clone()))
        .with_state(state)
}

// ----- operators: dashboard and metrics -----

/// The cookie that carries the admin token for the dashboard's page and feed.
pub const ADMIN_COOKIE: &str = "cacheable_admin";

/// The operator token that guards `/_cache` and `/metrics`. Not a user
/// session: the dashboard shows every tenant.
#[derive(Clone)]
pub struct AdminToken(Arc<str>);

impl AdminToken {
    /// This token (use URL-safe characters: it may be sent in a query).
    pub fn new(token: impl Into<Arc<str>>) -> Self {
        Self(token.into())
    }

    /// `CACHE_ADMIN_TOKEN`, or a new random token when it is unset or empty:
    /// the dashboard is never open by default.
    pub fn from_env() -> Self {
        match std::env::var("CACHE_ADMIN_TOKEN") {
            Ok(t) if !t.is_empty() => Self::new(t),
            _ => Self::new(new_token()),
        }
    }

    /// The token.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Compares in time independent of where the first difference is.
    fn matches(&self, given: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), given.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// Admits a request carrying the admin token: `Authorization: Bearer
/// <token>` (Prometheus, scripts), or the [`ADMIN_COOKIE`] cookie. A `GET`
/// with `?token=<token>` sets that cookie (`HttpOnly`, `SameSite=Strict`)
/// and redirects to the same path without the token, so a browser opens
/// the dashboard with one link. Anything else: `401`.
pub async fn require_admin(State(token): State<AdminToken>, req: Request, next: Next) -> Response {
    if bearer(req.headers()).is_some_and(|t| token.matches(&t)) {
        return next.run(req).await;
    }
    let cookie = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .any(|(k, v)| k == ADMIN_COOKIE && token.matches(v));
    if cookie {
        return next.run(req).await;
    }
    let query = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")));
    if query.is_some_and(|t| token.matches(t)) {
        let set = format!(
            "{ADMIN_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
            token.as_str()
        );
        let to = req.uri().path().to_owned();
        return (
            StatusCode::SEE_OTHER,
            [(header::SET_COOKIE, set), (header::LOCATION, to)],
        )
            .into_response();
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(json!({ "error": "admin token required" })),
    )
        .into_response()
}

/// The service with its operator endpoints: [`app`], plus the dashboard
/// at `/_cache` (`/_cache/` redirects there) and the routes of `admin_extra` (`main` adds `/metrics`),
/// all behind [`require_admin`]. The dashboard's own polling is not timed
/// by the `MetricsLayer` (it is outside the app's layers).
pub fn service(state: AppState, admin: AdminToken, admin_extra: Router) -> Router {
    let ops = Router::new()
        .nest("/_cache", dashboard(state.cache.clone()))
        .route("/_cache/", get(|| async { Redirect::permanent("/_cache") }))
        .merge(admin_extra)
        .layer(middleware::from_fn_with_state(admin, require_admin));
    app(state).merge(ops)
}

/// Serves `app(state)` on `listener` (with the peer address for the
/// `ContextLayer`'s client IP) until the process ends.
///
/// # Errors
/// When accepting connections fails.
pub async fn serve(listener: TcpListener, state: AppState) -> std::io::Result<()> {
    axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}
