//! `ETag` and conditional requests: [`ConditionalLayer`].
//!
//! The layer gives `200 OK` answers to `GET` and `HEAD` a strong `ETag`, the
//! xxh3-128 of the body as 32 hex digits in quotes, and answers the request's
//! `If-None-Match` / `If-Modified-Since` with `304 Not Modified` and no body
//! (RFC 9110 §13.1.2, §13.1.3, §13.2.2, §15.4.5).
//!
//! # What it touches
//!
//! - Only `GET` and `HEAD` requests answered with `200 OK`.
//! - Not a response with `Set-Cookie`: a cookie belongs to one client, so such
//!   a response gets no `ETag` (which shared caches would use to hand the same
//!   stored response to others) and is never turned into a `304`.
//! - Not a response with `Cache-Control: no-store`.
//! - A response that has its own `ETag` keeps it unchanged and is not buffered;
//!   the request's preconditions are still evaluated against that `ETag` (a
//!   match gives a `304`), as RFC 9110 requires of any origin that sends one.
//! - The body is buffered up to [`ConditionalLayer::max_body_bytes`] (default
//!   1 MiB). A body announced larger (`Content-Length`, size hint) is not read
//!   at all; a body that turns out larger is streamed on untouched: the bytes
//!   read so far, then the rest of the stream, with no `ETag`.
//!
//! # Preconditions
//!
//! `If-None-Match` takes precedence: when present, `If-Modified-Since` is
//! ignored. It is a list of entity tags (or `*`, which matches any current
//! representation) compared with the **weak** comparison: `W/"a"` matches
//! `"a"`. `If-Modified-Since` (IMF-fixdate, RFC 850 and asctime forms) is
//! compared with the response's `Last-Modified`; without one it never matches.
//!
//! A `304` keeps every header of the `200` except the representation metadata
//! (`Content-Type`, `Content-Encoding`, …; RFC 9110 §15.4.5): `ETag`,
//! `Cache-Control`, `Vary`, `Expires`, `Date`, `Last-Modified`, `Age`,
//! `Content-Location` and headers such as `X-Cache` or the rate-limit fields
//! stay. `Content-Length` is set to the length the `200` would have had, as
//! RFC 9110 §8.6 allows, so that no later layer claims a zero length.
//!
//! # Layer order
//!
//! Put it **outside** `tower_http::compression::CompressionLayer`: the tag is
//! then computed over the bytes actually sent, so the gzip, br, zstd and
//! identity representations each get their own strong tag (RFC 9110 §8.8.3:
//! a strong validator changes with the content coding) and a revalidation with
//! the tag a client received is answered with a `304`. In axum the layer added
//! last is the outermost:
//!
//! ```
//! # use axum::{Router, routing::get};
//! use cacheable_runtime::http::ConditionalLayer;
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     // .layer(tower_http::compression::CompressionLayer::new())
//!     .layer(ConditionalLayer::new().max_body_bytes(256 * 1024));
//! ```

use axum::body::Body;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body as _, SizeHint};
use tower_layer::Layer;

pub use super::date::http_date;
use super::date::parse_http_date;
use super::service::{AfterResponse, ResponseStep, buffer};

/// Default buffering limit: 1 MiB.
const DEFAULT_MAX_BODY: usize = 1024 * 1024;

/// Adds strong `ETag`s to `200` answers of `GET`/`HEAD` and answers conditional
/// requests with `304 Not Modified`. See the [module docs](self).
#[derive(Clone, Debug)]
#[must_use]
pub struct ConditionalLayer {
    max_body_bytes: usize,
}

impl Default for ConditionalLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl ConditionalLayer {
    /// A layer that buffers bodies up to 1 MiB.
    pub fn new() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY,
        }
    }

    /// The largest body that is buffered and tagged; larger bodies pass
    /// through untouched, streamed.
    pub fn max_body_bytes(mut self, max: usize) -> Self {
        self.max_body_bytes = max;
        self
    }
}

impl<S> Layer<S> for ConditionalLayer {
    type Service = Conditional<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AfterResponse::new(
            inner,
            ConditionalStep {
                max_body_bytes: self.max_body_bytes,
            },
        )
    }
}

/// The service of [`ConditionalLayer`].
pub type Conditional<S> = AfterResponse<S, ConditionalStep>;

/// What [`ConditionalLayer`] does around the inner service: reads the
/// request's preconditions, then tags (and may answer `304` to) the response.
#[derive(Clone, Debug)]
pub struct ConditionalStep {
    max_body_bytes: usize,
}

impl ResponseStep for ConditionalStep {
    type Seen = Option<Preconditions>;

    fn see<B>(&self, req: &Request<B>) -> Self::Seen {
        Preconditions::from_request(req.method(), req.headers())
    }

    async fn after(self, pre: Self::Seen, res: Response<Body>) -> Response<Body> {
        match pre {
            Some(pre) => finish(&pre, res, self.max_body_bytes).await,
            None => res,
        }
    }
}

/// What the request asked for, read before the request moves on.
#[derive(Debug)]
pub struct Preconditions {
    head: bool,
    /// The `If-None-Match` lines, joined with `,`.
    if_none_match: Option<String>,
    /// `If-Modified-Since`, seconds since the epoch (ignored when invalid).
    if_modified_since: Option<u64>,
}

impl Preconditions {
    /// `None` for methods other than `GET` and `HEAD`.
    fn from_request(method: &Method, headers: &HeaderMap) -> Option<Self> {
        if method != Method::GET && method != Method::HEAD {
            return None;
        }
        let inm: Vec<&str> = headers
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let mut ims = headers.get_all(header::IF_MODIFIED_SINCE).iter();
        let if_modified_since = match (ims.next(), ims.next()) {
            (Some(v), None) => v.to_str().ok().and_then(parse_http_date),
            _ => None,
        };
        Some(Self {
            head: method == Method::HEAD,
            if_none_match: (!inm.is_empty()).then(|| inm.join(",")),
            if_modified_since,
        })
    }

    /// Whether the answer is `304 Not Modified` (RFC 9110 §13.2.2 steps 3–4).
    fn not_modified(&self, etag: Option<&[u8]>, last_modified: Option<u64>) -> bool {
        if let Some(inm) = &self.if_none_match {
            return if_none_match_matches(inm, etag);
        }
        match (self.if_modified_since, last_modified) {
            (Some(since), Some(modified)) => modified <= since,
            _ => false,
        }
    }
}

/// Whether `field` (an `If-None-Match` value) matches `etag` with the weak
/// comparison. `*` matches any current representation, even one without a tag.
fn if_none_match_matches(field: &str, etag: Option<&[u8]>) -> bool {
    if field.trim() == "*" {
        return true;
    }
    let Some(current) = etag.and_then(|e| parse_entity_tags(e).and_then(|t| t.first().copied()))
    else {
        return false;
    };
    parse_entity_tags(field.as_bytes())
        .is_some_and(|tags| tags.iter().any(|t| t.opaque == current.opaque))
}

/// One entity tag; `opaque` includes its quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EntityTag<'a> {
    weak: bool,
    opaque: &'a [u8],
}

/// Parses `#entity-tag` (RFC 9110 §8.8.3): a comma-separated list whose
/// opaque tags may themselves contain commas. `None` when malformed.
fn parse_entity_tags(mut s: &[u8]) -> Option<Vec<EntityTag<'_>>> {
    let mut tags = Vec::new();
    loop {
        while let [b' ' | b'\t' | b',', rest @ ..] = s {
            s = rest;
        }
        if s.is_empty() {
            return (!tags.is_empty()).then_some(tags);
        }
        let weak = s.starts_with(b"W/");
        if weak {
            s = &s[2..];
        }
        if s.first() != Some(&b'"') {
            return None;
        }
        let end = 1 + s[1..].iter().position(|&b| b == b'"')?;
        let opaque = &s[..=end];
        if opaque[1..end]
            .iter()
            .any(|&b| !(b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80))
        {
            return None;
        }
        tags.push(EntityTag { weak, opaque });
        s = &s[end + 1..];
        while let [b' ' | b'\t', rest @ ..] = s {
            s = rest;
        }
        if !(s.is_empty() || s[0] == b',') {
            return None;
        }
    }
}

/// Whether `Cache-Control` carries `no-store`.
fn has_no_store(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| d.trim().eq_ignore_ascii_case("no-store"))
}

fn last_modified(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date)
}

async fn finish(pre: &Preconditions, res: Response<Body>, max: usize) -> Response<Body> {
    let headers = res.headers();
    if res.status() != StatusCode::OK
        || headers.contains_key(header::SET_COOKIE)
        || has_no_store(headers)
    {
        return res;
    }
    let modified = last_modified(headers);
    if let Some(own) = headers.get(header::ETAG) {
        if pre.not_modified(Some(own.as_bytes()), modified) {
            let length = declared_length(&res);
            return not_modified(res.into_parts().0, length);
        }
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let declared = declared_length_of(&parts.headers, &body.size_hint());
    // A HEAD answer whose body was already taken away cannot be hashed.
    let headless = pre.head && body.is_end_stream() && declared.is_some_and(|n| n > 0);
    let too_large =
        declared.is_some_and(|n| n > max as u64) || body.size_hint().lower() > max as u64;
    if headless || too_large {
        if pre.not_modified(None, modified) {
            return not_modified(parts, declared);
        }
        return Response::from_parts(parts, body);
    }
    match buffer(body, max).await {
        Ok(bytes) => {
            let etag = etag_of(&bytes);
            let length = Some(bytes.len() as u64);
            if pre.not_modified(Some(etag.as_bytes()), modified) {
                parts.headers.insert(header::ETAG, etag);
                return not_modified(parts, length);
            }
            parts.headers.insert(header::ETAG, etag);
            Response::from_parts(parts, Body::from(bytes))
        }
        Err(replay) => {
            if pre.not_modified(None, modified) {
                return not_modified(parts, declared);
            }
            Response::from_parts(parts, Body::new(replay))
        }
    }
}

/// The strong entity tag of `body`: xxh3-128 as 32 hex digits, quoted.
pub fn etag_of(body: &[u8]) -> HeaderValue {
    let hex = format!("\"{:032x}\"", xxhash_rust::xxh3::xxh3_128(body));
    HeaderValue::from_str(&hex).expect("hex digits in quotes are a valid header value")
}

fn declared_length(res: &Response<Body>) -> Option<u64> {
    declared_length_of(res.headers(), &res.body().size_hint())
}

fn declared_length_of(headers: &HeaderMap, hint: &SizeHint) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .or_else(|| hint.exact())
}

/// A `304 Not Modified` from the `200`'s parts: no body, no representation
/// metadata, `Content-Length` of the `200` when known.
fn not_modified(mut parts: http::response::Parts, length: Option<u64>) -> Response<Body> {
    parts.status = StatusCode::NOT_MODIFIED;
    let drop: Vec<header::HeaderName> = parts
        .headers
        .keys()
        .filter(|k| {
            let k = k.as_str();
            (k.starts_with("content-") && k != "content-location") || k == "transfer-encoding"
        })
        .cloned()
        .collect();
    for k in drop {
        parts.headers.remove(k);
    }
    if let Some(n) = length {
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    Response::from_parts(parts, Body::empty())
}

#[cfg(test)]
#[path = "conditional_tests.rs"]
mod tests;
