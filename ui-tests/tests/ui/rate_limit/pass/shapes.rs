// Every accepted shape: `Result<T, E>` with `E: From<RateLimited>` (own
// error, `Box<dyn Error>`, `RateLimited` itself), `R: From<RateLimited>`
// (axum `Response`), methods with `cache = self.cache`, `key` templates over
// extractor patterns, and user shadowing of `Result`, `Option`, `String`,
// `core`. Handlers must stay `Send` (axum checks it).
#![deny(warnings, clippy::pedantic)]

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use cacheable::{Cache, RateLimited, rate_limit};

#[derive(serde::Deserialize)]
struct Login {
    email: String,
}

#[derive(Debug)]
enum AppError {
    Limited,
}

impl From<RateLimited> for AppError {
    fn from(_: RateLimited) -> Self {
        AppError::Limited
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        "limited".into_response()
    }
}

#[rate_limit(points = 10, duration = "1m", key = "{form.email}", name = "login", algorithm = "sliding_window")]
async fn login(Json(form): Json<Login>) -> Result<&'static str, AppError> {
    let _ = form.email;
    Ok("ok")
}

#[rate_limit(points = 5, roles(admin = 100, free = 1), on_error = "deny", cache = cache)]
async fn handler(State(cache): State<Cache>) -> Response {
    let _ = cache;
    "ok".into_response()
}

#[rate_limit(points = 1, duration = 86400, algorithm = "fixed_window", by = "tenant", cost = 1)]
async fn boxed() -> Result<u8, Box<dyn std::error::Error + Send + Sync>> {
    Ok(1)
}

#[rate_limit(points = 3, by = "global", on_error = "allow")]
async fn plain() -> Result<(), RateLimited> {
    Ok(())
}

struct Service {
    cache: Cache,
}

impl Service {
    #[rate_limit(points = 2, by = "user", cache = self.cache)]
    async fn method(&self, n: u32) -> Result<u32, RateLimited> {
        Ok(n)
    }
}

mod shadowing {
    #![allow(dead_code, non_camel_case_types)]
    use cacheable::{RateLimited, rate_limit};
    struct Result;
    struct Option;
    struct String;
    struct core;

    #[rate_limit(points = 2, key = "{n}")]
    pub async fn f(n: u32) -> ::core::result::Result<u32, RateLimited> {
        ::core::result::Result::Ok(n)
    }
}

fn main() {
    let _: axum::Router<Cache> = axum::Router::new()
        .route("/login", post(login))
        .route("/h", post(handler));
    let _ = (boxed(), plain(), shadowing::f(1));
    let s = Service {
        cache: Cache::memory(),
    };
    let _ = s.method(1);
}
