//! Cache headers (`Cache-Control`, `Age`, `X-Cache`, `Vary`) from what cached
//! handlers recorded.
//!
//! The `ContextLayer` calls [`apply`] after the handler returned, with the
//! [`CacheNote`] that the outermost `#[cacheable]` function of the request
//! recorded. The rules, in order:
//!
//! 1. No note (the request ran no cached function): nothing is added.
//! 2. `X-Cache: hit` or `X-Cache: miss` is added (unless switched off with
//!    [`CacheHeaderOptions::x_cache`]). It is diagnostic only and no cache acts
//!    on it.
//! 3. Only `200 OK` and `203` get freshness headers. Any other status comes
//!    from a value that was not cached (an `Err` of a cached handler becomes a
//!    404, a 429, a 500 …): a `max-age` on it would make clients keep an error
//!    that the server-side cache never held (a 404 that outlives the `POST`
//!    creating the resource).
//! 4. A response that already carries `Cache-Control` is left alone: the
//!    handler's own choice always wins.
//! 5. A response that carries `Set-Cookie` is **never** made cacheable: it gets
//!    `Cache-Control: private, no-store` and no `Age`. A cookie is per client;
//!    a shared cache that stored it would hand one client's session to the
//!    next. (`no-store` rather than merely leaving the header out: without any
//!    `Cache-Control` a cache may still store the response heuristically.)
//! 6. Otherwise: `Cache-Control: private, max-age=N` or `public, max-age=N`,
//!    plus `Age: A`, and for private responses the request headers that
//!    select the tenant are added to `Vary` (default `x-tenant-id`), so even a
//!    browser cache never answers tenant B with tenant A's response.
//!
//! # `public` or `private`: fail closed
//!
//! A shared cache (a CDN) that stores a personalised response hands it to the
//! next client. So `public` is the exception, given only when nothing says the
//! response is personal; `private` when any of these holds:
//!
//! - the request carried `Authorization`, `Cookie` or an
//!   [`Identity`](super::Identity), or ran under a tenant (the `ContextLayer`
//!   calls [`ResponseNotes::mark_private`]);
//! - **any** cached call made for the request was tenant- or user-scoped
//!   ([`CacheNote::private`]), not only the outermost: a `global` handler whose
//!   value was computed from a tenant-scoped call is that tenant's response
//!   ([`ResponseNotes::is_private`]).
//!
//! # `max-age` and `Age`
//!
//! A cache computes the remaining freshness of a response as
//! `max-age − current_age`, where `current_age` starts at the `Age` header
//! (RFC 9111 §4.2.3). So that clients end up with exactly the remaining TTL of
//! the entry, `max-age` is the entry's age plus its remaining TTL (its whole
//! lifetime, whole seconds) and `Age` its age: `max-age − Age` is the remaining
//! TTL. On a miss `Age` is `0` and `max-age` the TTL. Sending the remaining TTL
//! in `max-age` *and* an `Age` would subtract the age twice.
//!
//! A value served stale (`stale = ..`) gets `max-age=0`: clients revalidate.

use std::time::Duration;

use http::StatusCode;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::notes::ResponseNotes;
use crate::context::CacheNote;

/// The `X-Cache` header.
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// How the `ContextLayer` turns cache notes into response headers.
///
/// ```
/// use cacheable_runtime::http::cache_headers::CacheHeaderOptions;
/// let opts = CacheHeaderOptions::default().x_cache(false).vary(["x-tenant-id", "x-org"]);
/// assert!(!opts.x_cache);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CacheHeaderOptions {
    /// Add `X-Cache: hit|miss` (default true).
    pub x_cache: bool,
    /// Request headers added to `Vary` on private responses (default
    /// `x-tenant-id`, the `ContextLayer`'s default tenant header).
    pub vary: Vec<HeaderName>,
}

impl Default for CacheHeaderOptions {
    fn default() -> Self {
        Self {
            x_cache: true,
            vary: vec![HeaderName::from_static("x-tenant-id")],
        }
    }
}

impl CacheHeaderOptions {
    /// The defaults: `X-Cache` on, `Vary: x-tenant-id` on private responses.
    pub fn new() -> Self {
        Self::default()
    }

    /// Switches the `X-Cache: hit|miss` header on or off.
    #[must_use]
    pub fn x_cache(mut self, on: bool) -> Self {
        self.x_cache = on;
        self
    }

    /// The request headers that select the tenant or user, added to `Vary` on
    /// private responses. Invalid header names are ignored.
    #[must_use]
    pub fn vary<I, S>(mut self, headers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.vary = headers
            .into_iter()
            .filter_map(|h| HeaderName::from_bytes(h.as_ref().as_bytes()).ok())
            .collect();
        self
    }
}

/// The statuses that get freshness headers: those of a served value.
fn cacheable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 200 | 203)
}

/// Adds the cache headers for `notes` to a response with `status` and `headers`.
///
/// See the [module docs](self) for the rules.
pub fn apply_with_status(
    notes: &ResponseNotes,
    status: StatusCode,
    headers: &mut HeaderMap,
    opts: &CacheHeaderOptions,
) {
    let Some(note) = notes.cache() else {
        return;
    };
    if opts.x_cache {
        headers.insert(
            X_CACHE,
            HeaderValue::from_static(if note.hit { "hit" } else { "miss" }),
        );
    }
    if !cacheable_status(status) || headers.contains_key(header::CACHE_CONTROL) {
        return;
    }
    if headers.contains_key(header::SET_COOKIE) {
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-store"),
        );
        headers.remove(header::AGE);
        return;
    }
    let (max_age, age) = freshness(&note);
    // Fail closed: public only when neither the request nor any cached call
    // made for it was personal.
    let private = note.private || notes.is_private();
    let scope = if private { "private" } else { "public" };
    if let Ok(v) = HeaderValue::from_str(&format!("{scope}, max-age={max_age}")) {
        headers.insert(header::CACHE_CONTROL, v);
    }
    headers.insert(header::AGE, HeaderValue::from(age));
    if private {
        add_vary(headers, &opts.vary);
    }
}

/// Adds the cache headers for `notes` to `headers`, for a `200 OK` response.
///
/// Prefer [`apply_with_status`]: it leaves error responses without freshness.
pub fn apply(notes: &ResponseNotes, headers: &mut HeaderMap, opts: &CacheHeaderOptions) {
    apply_with_status(notes, StatusCode::OK, headers, opts);
}

/// Adds the cache headers for `notes` to `response`, honouring its status.
pub fn apply_to_response<B>(
    notes: &ResponseNotes,
    response: &mut http::Response<B>,
    opts: &CacheHeaderOptions,
) {
    let status = response.status();
    apply_with_status(notes, status, response.headers_mut(), opts);
}

/// `(max-age, Age)` in whole seconds, so that `max-age − Age` is the whole
/// seconds of freshness left.
fn freshness(note: &CacheNote) -> (u64, u64) {
    let age = if note.hit { note.age } else { Duration::ZERO };
    let age = age.as_secs();
    (age.saturating_add(note.max_age.as_secs()), age)
}

/// Appends `names` to `Vary` unless already listed (or `Vary: *`).
fn add_vary(headers: &mut HeaderMap, names: &[HeaderName]) {
    let listed: Vec<String> = headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    if listed.iter().any(|s| s == "*") {
        return;
    }
    for name in names {
        if !listed.iter().any(|s| s == name.as_str()) {
            headers.append(header::VARY, HeaderValue::from_name(name.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notes(hit: bool, max_age: u64, age: u64, private: bool) -> ResponseNotes {
        let n = ResponseNotes::default();
        n.record_cache(CacheNote {
            hit,
            max_age: Duration::from_millis(max_age),
            age: Duration::from_millis(age),
            private,
        });
        n
    }

    fn get<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
        h.get(name).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn no_note_adds_nothing() {
        let mut h = HeaderMap::new();
        apply(
            &ResponseNotes::default(),
            &mut h,
            &CacheHeaderOptions::default(),
        );
        assert!(h.is_empty());
    }

    #[test]
    fn private_hit_counts_age_once() {
        let mut h = HeaderMap::new();
        apply(
            &notes(true, 42_900, 17_200, true),
            &mut h,
            &CacheHeaderOptions::default(),
        );
        assert_eq!(get(&h, "cache-control"), Some("private, max-age=59"));
        assert_eq!(get(&h, "age"), Some("17"));
        assert_eq!(get(&h, "x-cache"), Some("hit"));
        assert_eq!(get(&h, "vary"), Some("x-tenant-id"));
    }

    #[test]
    fn public_miss() {
        let mut h = HeaderMap::new();
        apply(
            &notes(false, 60_000, 0, false),
            &mut h,
            &CacheHeaderOptions::default(),
        );
        assert_eq!(get(&h, "cache-control"), Some("public, max-age=60"));
        assert_eq!(get(&h, "age"), Some("0"));
        assert_eq!(get(&h, "x-cache"), Some("miss"));
        assert!(h.get("vary").is_none());
    }

    #[test]
    fn a_private_inner_call_makes_a_public_outer_call_private() {
        let n = ResponseNotes::default();
        let inner = CacheNote {
            hit: false,
            max_age: Duration::from_secs(60),
            age: Duration::ZERO,
            private: true,
        };
        n.record_cache(inner.clone());
        // The outermost (global) call records last.
        n.record_cache(CacheNote {
            private: false,
            ..inner
        });
        let mut h = HeaderMap::new();
        apply(&n, &mut h, &CacheHeaderOptions::default());
        assert_eq!(get(&h, "cache-control"), Some("private, max-age=60"));
        assert_eq!(get(&h, "vary"), Some("x-tenant-id"));
    }

    #[test]
    fn a_request_marked_private_is_never_public() {
        let n = notes(false, 60_000, 0, false);
        n.mark_private();
        let mut h = HeaderMap::new();
        apply(&n, &mut h, &CacheHeaderOptions::default());
        assert_eq!(get(&h, "cache-control"), Some("private, max-age=60"));
    }

    #[test]
    fn handler_cache_control_wins() {
        let mut h = HeaderMap::new();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        apply(
            &notes(true, 60_000, 0, true),
            &mut h,
            &CacheHeaderOptions::default(),
        );
        assert_eq!(get(&h, "cache-control"), Some("no-cache"));
        assert!(h.get("age").is_none());
    }

    #[test]
    fn set_cookie_is_never_cacheable() {
        let mut h = HeaderMap::new();
        h.insert(header::SET_COOKIE, HeaderValue::from_static("sid=1"));
        apply(
            &notes(true, 60_000, 3_000, false),
            &mut h,
            &CacheHeaderOptions::default(),
        );
        assert_eq!(get(&h, "cache-control"), Some("private, no-store"));
        assert!(h.get("age").is_none());
    }

    #[test]
    fn x_cache_switch_and_errors() {
        let mut h = HeaderMap::new();
        let opts = CacheHeaderOptions::default().x_cache(false);
        for status in [StatusCode::NOT_FOUND, StatusCode::INTERNAL_SERVER_ERROR] {
            apply_with_status(&notes(false, 60_000, 0, true), status, &mut h, &opts);
            assert!(h.is_empty());
        }
        let mut h = HeaderMap::new();
        apply_with_status(
            &notes(false, 60_000, 0, true),
            StatusCode::NOT_FOUND,
            &mut h,
            &CacheHeaderOptions::default(),
        );
        assert_eq!(get(&h, "x-cache"), Some("miss"));
        assert!(h.get("cache-control").is_none());
    }

    #[test]
    fn vary_is_merged() {
        let mut h = HeaderMap::new();
        h.insert(
            header::VARY,
            HeaderValue::from_static("accept-encoding, X-Tenant-Id"),
        );
        let opts = CacheHeaderOptions::default().vary(["x-tenant-id", "x-org"]);
        apply(&notes(false, 1_000, 0, true), &mut h, &opts);
        let all: Vec<_> = h
            .get_all("vary")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(all, ["accept-encoding, X-Tenant-Id", "x-org"]);
    }
}
