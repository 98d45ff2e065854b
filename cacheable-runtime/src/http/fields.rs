//! Sparse fieldsets: `?fields=id,name` trims JSON responses to the fields a
//! client asked for.
//!
//! Opt-in, two ways:
//!
//! - [`FieldsLayer`]: every `200` JSON answer (`application/json` or `+json`)
//!   of a request with a `fields` query parameter is filtered. The handler and
//!   its cache are untouched: a `#[cacheable]` handler caches the whole value
//!   once and each client gets the fields it asked for.
//! - the [`Fields`] extractor, for handlers that filter by themselves
//!   ([`Fields::filter`] on a `serde_json::Value`, or [`Fields::json`]).
//!
//! # Semantics
//!
//! - `fields` is a comma-separated list of names; repeated parameters add up
//!   (`?fields=id&fields=name`). A dotted name selects inside an object
//!   (`address.city`); a name and its dotted children together select the
//!   whole field. Names are percent-decoded. No parameter, or an empty one,
//!   means every field.
//! - An object keeps only the listed keys (unknown names are ignored). An array
//!   is filtered element by element, at the top and at every selected level.
//!   Anything else (a string, a number) is returned unchanged.
//! - The layer leaves alone: non-`200` answers, non-JSON answers, answers that
//!   are already content-encoded, bodies larger than
//!   [`FieldsLayer::max_body_bytes`] (default 1 MiB, streamed on unfiltered)
//!   and bodies that do not parse as JSON. A filtered answer loses the
//!   handler's own `ETag` (it described the whole document) and its
//!   `Content-Length`.
//!
//! # Layer order
//!
//! Inside [`ConditionalLayer`](super::ConditionalLayer) and the compression
//! layer, so that the tag and the compression see the filtered body:
//!
//! ```
//! # use axum::{Router, routing::get, Json};
//! use cacheable_runtime::http::{ConditionalLayer, FieldsLayer};
//! let app: Router = Router::new()
//!     .route("/users", get(|| async { Json(serde_json::json!([{"id": 1, "name": "a", "bio": "…"}])) }))
//!     .layer(FieldsLayer::new())
//!     // .layer(tower_http::compression::CompressionLayer::new())
//!     .layer(ConditionalLayer::new());
//! ```

use std::collections::BTreeMap;
use std::convert::Infallible;

use axum::body::Body;
use axum::extract::FromRequestParts;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body::Body as _;
use serde_json::Value;
use tower_layer::Layer;

use super::service::{AfterResponse, ResponseStep, buffer};

/// The fields a client asked for (`?fields=..`). See the [module docs](self).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fields {
    /// `None`: every field.
    tree: Option<Tree>,
}

/// Selected names; a `None` child keeps the whole field.
type Tree = BTreeMap<String, Option<Node>>;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Node(Tree);

impl Fields {
    /// Every field: filtering is a no-op.
    pub fn all() -> Self {
        Self::default()
    }

    /// Parses a comma-separated list (`"id,name,address.city"`).
    pub fn parse(list: &str) -> Self {
        let mut fields = Self::all();
        fields.add_list(list);
        fields
    }

    /// The fields of the query string `query` (without `?`) under the
    /// parameter `param`.
    pub fn from_query(query: &str, param: &str) -> Self {
        let mut fields = Self::all();
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if percent_decode(k) == param {
                fields.add_list(&percent_decode(v));
            }
        }
        fields
    }

    fn add_list(&mut self, list: &str) {
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let tree = self.tree.get_or_insert_with(Tree::new);
            let path: Vec<&str> = name.split('.').filter(|p| !p.is_empty()).collect();
            insert_path(tree, &path);
        }
    }

    /// Whether every field is kept.
    pub fn is_all(&self) -> bool {
        self.tree.is_none()
    }

    /// Keeps only the selected fields of `value` (per element for arrays).
    pub fn filter(&self, value: &mut Value) {
        if let Some(tree) = &self.tree {
            filter_value(tree, value);
        }
    }

    /// `value` serialized and filtered, as an axum `Json` answer.
    ///
    /// # Errors
    /// When `value` does not serialize.
    pub fn json<T: serde::Serialize>(
        &self,
        value: &T,
    ) -> Result<axum::Json<Value>, serde_json::Error> {
        let mut v = serde_json::to_value(value)?;
        self.filter(&mut v);
        Ok(axum::Json(v))
    }
}

fn insert_path(tree: &mut Tree, path: &[&str]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        // The whole field: replaces any finer selection.
        tree.insert((*first).to_owned(), None);
        return;
    }
    // A `None` entry already selects the whole field.
    if let Some(node) = tree
        .entry((*first).to_owned())
        .or_insert_with(|| Some(Node(Tree::new())))
    {
        insert_path(&mut node.0, rest);
    }
}

fn filter_value(tree: &Tree, value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|k, _| tree.contains_key(k));
            for (k, v) in map.iter_mut() {
                if let Some(Some(node)) = tree.get(k) {
                    filter_value(&node.0, v);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                filter_value(tree, item);
            }
        }
        _ => {}
    }
}

/// Decodes `%XX` escapes and `+` (as a space) of a query component.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h << 4) | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

impl<S: Send + Sync> FromRequestParts<S> for Fields {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::from_query(parts.uri.query().unwrap_or(""), "fields"))
    }
}

/// Filters JSON answers by the request's `fields` parameter. See the
/// [module docs](self).
#[derive(Clone, Debug)]
#[must_use]
pub struct FieldsLayer {
    param: String,
    max_body_bytes: usize,
}

impl Default for FieldsLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl FieldsLayer {
    /// Filters by `?fields=`, bodies up to 1 MiB.
    pub fn new() -> Self {
        Self {
            param: "fields".to_owned(),
            max_body_bytes: 1024 * 1024,
        }
    }

    /// The query parameter to read (default `fields`).
    pub fn param(mut self, name: impl Into<String>) -> Self {
        self.param = name.into();
        self
    }

    /// The largest body that is filtered; larger ones pass through unfiltered.
    pub fn max_body_bytes(mut self, max: usize) -> Self {
        self.max_body_bytes = max;
        self
    }
}

impl<S> Layer<S> for FieldsLayer {
    type Service = FieldsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AfterResponse::new(
            inner,
            FieldsStep {
                layer: self.clone(),
            },
        )
    }
}

/// The service of [`FieldsLayer`].
pub type FieldsService<S> = AfterResponse<S, FieldsStep>;

/// What [`FieldsLayer`] does around the inner service: reads the requested
/// fields from the query, then filters a JSON response to them.
#[derive(Clone, Debug)]
pub struct FieldsStep {
    layer: FieldsLayer,
}

impl ResponseStep for FieldsStep {
    type Seen = Fields;

    fn see<B>(&self, req: &Request<B>) -> Fields {
        Fields::from_query(req.uri().query().unwrap_or(""), &self.layer.param)
    }

    async fn after(self, fields: Fields, res: Response<Body>) -> Response<Body> {
        let max = self.layer.max_body_bytes;
        if fields.is_all() || !filterable(res.status(), res.headers()) {
            return res;
        }
        let (mut parts, body) = res.into_parts();
        if body.size_hint().lower() > max as u64 {
            return Response::from_parts(parts, body);
        }
        let bytes = match buffer(body, max).await {
            Ok(bytes) => bytes,
            Err(replay) => return Response::from_parts(parts, Body::new(replay)),
        };
        let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else {
            return Response::from_parts(parts, Body::from(bytes));
        };
        fields.filter(&mut value);
        let Ok(out) = serde_json::to_vec(&value) else {
            return Response::from_parts(parts, Body::from(bytes));
        };
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.remove(header::ETAG);
        Response::from_parts(parts, Body::from(out))
    }
}

fn filterable(status: StatusCode, headers: &HeaderMap) -> bool {
    status == StatusCode::OK
        && !headers.contains_key(header::CONTENT_ENCODING)
        && headers
            .get(header::CONTENT_TYPE)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| m.trim().to_ascii_lowercase())
            .is_some_and(|m| m == "application/json" || m.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_arrays_and_nesting() {
        let f = Fields::parse("id, name,address.city");
        let mut v = json!([
            {"id": 1, "name": "a", "email": "x", "address": {"city": "c", "zip": "z"}},
            {"id": 2, "secret": true},
            7
        ]);
        f.filter(&mut v);
        assert_eq!(
            v,
            json!([{"id": 1, "name": "a", "address": {"city": "c"}}, {"id": 2}, 7])
        );
        let mut o = json!({"id": 1, "tags": [{"a": 1, "b": 2}]});
        Fields::parse("tags.a,tags").filter(&mut o);
        assert_eq!(o, json!({"tags": [{"a": 1, "b": 2}]}));
        let mut o = json!({"id": 1, "tags": [{"a": 1, "b": 2}]});
        Fields::parse("tags.a").filter(&mut o);
        assert_eq!(o, json!({"tags": [{"a": 1}]}));
    }

    #[test]
    fn query_parsing() {
        let f = Fields::from_query("x=1&fields=id%2Cname&fields=a+b&fieldsx=no", "fields");
        assert_eq!(f, Fields::parse("id,name,a b"));
        assert!(Fields::from_query("fields=", "fields").is_all());
        assert!(Fields::from_query("", "fields").is_all());
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%C3%A9"), "é");
    }
}
