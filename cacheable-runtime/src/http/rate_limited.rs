//! Rate-limit response headers and `RateLimited` as a `429` response.
//!
//! # Fields
//!
//! `RateLimit-Policy` and `RateLimit` follow the IETF httpapi draft
//! [draft-ietf-httpapi-ratelimit-headers-10] ("RateLimit header fields for
//! HTTP", the revision current when this was written; the field syntax is
//! unchanged since -09): both are Structured Field Lists whose items are a
//! String naming the policy with parameters,
//!
//! ```text
//! RateLimit-Policy: "login";q=10;w=60      quota q per window w seconds
//! RateLimit: "login";r=0;t=42              r units remaining, t seconds
//! ```
//!
//! plus the widespread legacy fields `X-RateLimit-Limit`,
//! `X-RateLimit-Remaining` and `X-RateLimit-Reset`. All times are **delta
//! seconds** (rounded up), never timestamps, so clients' clocks do not matter.
//!
//! On an admitted request `t` and `X-RateLimit-Reset` are the seconds until
//! the budget is full again (or the fixed window resets). On a `429` they
//! are the seconds to wait before the refused call can pass, the same value
//! as `Retry-After` (whole seconds, at least 1).
//!
//! [draft-ietf-httpapi-ratelimit-headers-10]: https://datatracker.ietf.org/doc/draft-ietf-httpapi-ratelimit-headers/

use std::fmt::Write as _;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};

use crate::context::RateLimitNote;
use crate::rate_limit::{RateLimited, ceil_secs};

/// `RateLimit-Policy`.
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`.
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// `X-RateLimit-Limit`.
pub static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `X-RateLimit-Remaining`.
pub static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// `X-RateLimit-Reset`.
pub static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// A Structured Field String: printable ASCII, `"` and `\` escaped; any
/// other byte becomes `_` (policy names come from code, not from users).
fn sf_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('_'),
        }
    }
    out.push('"');
}

fn value(s: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(s).ok()
}

/// Sets the five rate-limit fields. `reset_secs` is `t` / `X-RateLimit-Reset`.
fn set_fields(
    headers: &mut HeaderMap,
    policy: &str,
    limit: u64,
    remaining: u64,
    window: Duration,
    reset_secs: u64,
) {
    let mut p = String::with_capacity(policy.len() + 24);
    sf_string(&mut p, policy);
    let mut r = p.clone();
    let _ = write!(p, ";q={limit};w={}", ceil_secs(window).max(1));
    let _ = write!(r, ";r={remaining};t={reset_secs}");
    if let Some(v) = value(&p) {
        headers.insert(RATELIMIT_POLICY.clone(), v);
    }
    if let Some(v) = value(&r) {
        headers.insert(RATELIMIT.clone(), v);
    }
    headers.insert(X_RATELIMIT_LIMIT.clone(), HeaderValue::from(limit));
    headers.insert(X_RATELIMIT_REMAINING.clone(), HeaderValue::from(remaining));
    headers.insert(X_RATELIMIT_RESET.clone(), HeaderValue::from(reset_secs));
}

/// Adds the headers of an admitted request's decision, unless the response
/// already carries rate-limit fields (a `429` built from [`RateLimited`]).
pub(crate) fn apply_note(headers: &mut HeaderMap, note: &RateLimitNote) {
    if headers.contains_key(&RATELIMIT) {
        return;
    }
    set_fields(
        headers,
        &note.policy,
        note.limit,
        note.remaining,
        note.window,
        ceil_secs(note.reset_after),
    );
}

impl RateLimited {
    /// Adds `Retry-After`, `RateLimit-Policy`, `RateLimit` and the
    /// `X-RateLimit-*` fields of this refusal to `headers`.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        let retry = self.retry_after_secs();
        headers.insert(header::RETRY_AFTER, HeaderValue::from(retry));
        set_fields(
            headers,
            &self.policy,
            self.limit,
            self.remaining,
            self.window,
            retry,
        );
    }
}

/// `429 Too Many Requests` with the rate-limit fields and a short text body.
impl IntoResponse for RateLimited {
    fn into_response(self) -> Response {
        let mut response = (StatusCode::TOO_MANY_REQUESTS, self.to_string()).into_response();
        self.write_headers(response.headers_mut());
        response
    }
}

/// Lets a handler returning `Response` use `#[rate_limit]`.
impl From<RateLimited> for Response {
    fn from(limited: RateLimited) -> Self {
        limited.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_headers() {
        let r = RateLimited {
            limit: 10,
            remaining: 0,
            reset_after: Duration::from_secs(60),
            retry_after: Duration::from_millis(41_200),
            window: Duration::from_secs(60),
            policy: "log\"in".into(),
        };
        let resp = r.into_response();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        let h = resp.headers();
        assert_eq!(h["retry-after"], "42");
        assert_eq!(h["ratelimit-policy"], r#""log\"in";q=10;w=60"#);
        assert_eq!(h["ratelimit"], r#""log\"in";r=0;t=42"#);
        assert_eq!(h["x-ratelimit-limit"], "10");
        assert_eq!(h["x-ratelimit-remaining"], "0");
        assert_eq!(h["x-ratelimit-reset"], "42");
    }

    #[test]
    fn sub_second_retry_is_one_second() {
        let r = RateLimited {
            limit: 1,
            remaining: 0,
            reset_after: Duration::from_millis(5),
            retry_after: Duration::from_millis(5),
            window: Duration::from_millis(500),
            policy: "p\u{e9}".into(),
        };
        let resp = r.into_response();
        assert_eq!(resp.headers()["retry-after"], "1");
        assert_eq!(resp.headers()["ratelimit-policy"], r#""p_";q=1;w=1"#);
    }
}
