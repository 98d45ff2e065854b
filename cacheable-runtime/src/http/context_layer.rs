//! [`ContextLayer`]: fills the request [`Context`] (tenant, user, role,
//! client IP) and turns what the handler's macros recorded into response
//! headers.
//!
//! Over 400 lines: the builder's options and the request parsing they
//! configure (tenant header, trusted proxies, client IP) share the private
//! `Config`, so they stay in one file; the unit tests are in
//! `context_layer_tests.rs`.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use axum::extract::ConnectInfo;
use http::{HeaderName, Request, Response, StatusCode, header};
use tower_layer::Layer;
use tower_service::Service;

use super::cache_headers::{self, CacheHeaderOptions};
use super::identity::Identity;
use super::notes::{RequestNotes, ResponseNotes};
use super::rate_limited;
use crate::context::{self, Context};
use crate::tenant::{self, InvalidTenant, MAX_TENANT_LEN};

type TenantFn = dyn Fn(&http::request::Parts) -> Option<String> + Send + Sync;

#[derive(Clone)]
enum TenantSource {
    Header(HeaderName),
    Func(Arc<TenantFn>),
}

/// A trusted proxy: an address or a CIDR range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let bits = u32::from(self.prefix.min(32));
                let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let bits = u32::from(self.prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

#[derive(Clone)]
struct Config {
    tenant: TenantSource,
    trusted: Vec<Net>,
    cache_headers: CacheHeaderOptions,
    /// The longest tenant id accepted, in bytes.
    max_tenant_len: usize,
    /// A request without a tenant is refused (400).
    require_tenant: bool,
    /// The layer was misconfigured (an invalid tenant header name): every
    /// request is refused (500) rather than run without its tenant.
    misconfigured: Option<String>,
}

/// Why a request is refused before the handler runs.
enum Refusal {
    BadRequest(String),
    Misconfigured,
}

/// A tower [`Layer`] (axum 0.8) that runs every request inside a
/// [`Context`]:
///
/// - **tenant** from the header `x-tenant-id` (or [`tenant_header`](Self::tenant_header),
///   or a closure with [`tenant_from`](Self::tenant_from));
/// - **user and role** from an [`Identity`] in the request extensions (put
///   there by the application's auth middleware, which must run first, i.e.
///   be layered *outside* this one);
/// - **client IP** from axum's `ConnectInfo<SocketAddr>` (serve with
///   `into_make_service_with_connect_info::<SocketAddr>()`). `X-Forwarded-For`
///   is used only when that peer is one of the [`trusted_proxies`](Self::trusted_proxies):
///   the list is read from the right, trusted proxies are skipped, and the first
///   untrusted address is the client. A client can prepend anything to the
///   header, but cannot forge what your own proxies appended.
///   (`#[rate_limit]` groups IPv6 clients by their /64.)
///
/// After the handler, the rate-limit headers (`RateLimit-Policy`,
/// `RateLimit`, `X-RateLimit-*`) of the most restrictive decision taken for
/// the request are added to the response, successful ones too, and the
/// cache headers (`Cache-Control`, `Age`, `X-Cache`) of cached handlers.
///
/// # Refused requests (fail closed)
///
/// The tenant id comes from the client, so it is checked before the handler
/// runs; a request that fails a check gets `400 Bad Request` with a short
/// plain-text reason (which never quotes the id):
///
/// - a tenant id over [`max_tenant_len`](Self::max_tenant_len) bytes
///   (default [`MAX_TENANT_LEN`], 256), not valid UTF-8, with a control
///   character, or given in two header lines (always);
/// - no tenant, or an empty one, with [`require_tenant`](Self::require_tenant):
///   a multi-tenant service never falls into the shared no-tenant space.
///
/// ```
/// use cacheable_runtime::http::ContextLayer;
/// let layer = ContextLayer::new()
///     .tenant_header("x-org")
///     .trusted_proxies(["10.0.0.1".parse().unwrap()]);
/// // Router::new().route(..).layer(layer)
/// # let _ = layer;
/// ```
#[derive(Clone)]
#[must_use]
pub struct ContextLayer {
    config: Arc<Config>,
}

impl fmt::Debug for ContextLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tenant = match &self.config.tenant {
            TenantSource::Header(h) => h.as_str().to_owned(),
            TenantSource::Func(_) => "<fn>".to_owned(),
        };
        f.debug_struct("ContextLayer")
            .field("tenant", &tenant)
            .field("trusted_proxies", &self.config.trusted)
            .finish_non_exhaustive()
    }
}

impl Default for ContextLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl ContextLayer {
    /// Tenant from `x-tenant-id`, no trusted proxies, default cache headers.
    pub fn new() -> Self {
        Self {
            config: Arc::new(Config {
                tenant: TenantSource::Header(HeaderName::from_static("x-tenant-id")),
                trusted: Vec::new(),
                cache_headers: CacheHeaderOptions::default(),
                max_tenant_len: MAX_TENANT_LEN,
                require_tenant: false,
                misconfigured: None,
            }),
        }
    }

    fn config(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// Reads the tenant from this header instead of `x-tenant-id`.
    ///
    /// Never panics. An invalid header name is a configuration error that
    /// fails closed: it is logged (`tracing::error!`) and the layer answers
    /// every request with `500 Internal Server Error`, rather than reading
    /// the tenant from another header or running requests without their
    /// tenant (which would share one tenant's entries with the others). Use
    /// [`try_tenant_header`](Self::try_tenant_header) to handle the error at
    /// start-up instead.
    pub fn tenant_header(self, name: &str) -> Self {
        match self.clone().try_tenant_header(name) {
            Ok(layer) => layer,
            Err(e) => {
                tracing::error!(
                    error = %e,
                    "ContextLayer::tenant_header: every request will be refused with 500"
                );
                let mut layer = self;
                layer.config().misconfigured = Some(e.to_string());
                layer
            }
        }
    }

    /// Reads the tenant from this header instead of `x-tenant-id`.
    ///
    /// # Errors
    /// If `name` is not a valid header name.
    pub fn try_tenant_header(mut self, name: &str) -> Result<Self, InvalidHeaderName> {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| InvalidHeaderName {
            name: name.chars().take(64).collect(),
        })?;
        let config = self.config();
        // Responses vary by the tenant: by this header now, not the default one.
        let default = HeaderName::from_static("x-tenant-id");
        if let Some(v) = config
            .cache_headers
            .vary
            .iter_mut()
            .find(|v| **v == default)
        {
            *v = name.clone();
        }
        config.tenant = TenantSource::Header(name);
        config.misconfigured = None;
        Ok(self)
    }

    /// The longest tenant id accepted, in bytes (default [`MAX_TENANT_LEN`],
    /// 256). A longer one is answered with `400 Bad Request`.
    pub fn max_tenant_len(mut self, bytes: usize) -> Self {
        self.config().max_tenant_len = bytes;
        self
    }

    /// Refuses a request without a tenant (header missing or empty, or the
    /// [`tenant_from`](Self::tenant_from) closure returned `None` or `""`)
    /// with `400 Bad Request`, so that a multi-tenant service never serves a
    /// request from the shared no-tenant space.
    pub fn require_tenant(mut self) -> Self {
        self.config().require_tenant = true;
        self
    }

    /// Computes the tenant from the request head (host, path, a claim …).
    pub fn tenant_from<F>(mut self, f: F) -> Self
    where
        F: Fn(&http::request::Parts) -> Option<String> + Send + Sync + 'static,
    {
        self.config().tenant = TenantSource::Func(Arc::new(f));
        self
    }

    /// Trusts `X-Forwarded-For` when the peer is one of these addresses.
    pub fn trusted_proxies(mut self, proxies: impl IntoIterator<Item = IpAddr>) -> Self {
        let nets = proxies.into_iter().map(|addr| Net {
            addr: addr.to_canonical(),
            prefix: if addr.to_canonical().is_ipv4() {
                32
            } else {
                128
            },
        });
        self.config().trusted.extend(nets);
        self
    }

    /// Trusts `X-Forwarded-For` from a whole network (`10.0.0.0/8`).
    pub fn trusted_proxy_range(mut self, network: IpAddr, prefix_len: u8) -> Self {
        self.config().trusted.push(Net {
            addr: network.to_canonical(),
            prefix: prefix_len,
        });
        self
    }

    /// How cache headers are written (see [`CacheHeaderOptions`]).
    pub fn cache_headers(mut self, options: CacheHeaderOptions) -> Self {
        self.config().cache_headers = options;
        self
    }
}

impl<S> Layer<S> for ContextLayer {
    type Service = ContextService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ContextService {
            inner,
            config: Arc::clone(&self.config),
        }
    }
}

/// An invalid header name given to [`ContextLayer::try_tenant_header`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{name}` is not a valid header name")]
pub struct InvalidHeaderName {
    name: String,
}

/// The service made by [`ContextLayer`].
#[derive(Clone)]
pub struct ContextService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> fmt::Debug for ContextService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextService").finish_non_exhaustive()
    }
}

impl Config {
    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|n| n.contains(ip))
    }

    /// The client address: the peer, or, when the peer is a trusted proxy,
    /// the right-most untrusted address of `X-Forwarded-For`.
    fn client_ip(&self, parts: &http::request::Parts) -> Option<IpAddr> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_canonical())?;
        if !self.is_trusted(peer) {
            return Some(peer);
        }
        let mut client = peer;
        let hops = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect::<Vec<_>>();
        for hop in hops.iter().rev() {
            match parse_hop(hop) {
                // Garbage: what is left of it cannot be trusted; the last
                // good hop is the client.
                None => break,
                Some(ip) => {
                    client = ip;
                    if !self.is_trusted(ip) {
                        break;
                    }
                }
            }
        }
        Some(client)
    }

    /// The tenant of the request: `Ok(None)` when there is none (missing or
    /// empty), an error when what is there is unusable.
    fn tenant(&self, parts: &http::request::Parts) -> Result<Option<String>, InvalidTenant> {
        let max = self.max_tenant_len;
        let tenant = match &self.tenant {
            TenantSource::Header(name) => {
                let mut values = parts.headers.get_all(name).iter();
                let Some(value) = values.next() else {
                    return Ok(None);
                };
                if values.next().is_some() {
                    return Err(InvalidTenant::Ambiguous);
                }
                // Bytes, not `to_str`: a UTF-8 id ("café") is a tenant, not
                // "no tenant"; garbage is refused, never ignored.
                let id = tenant::check_bytes(value.as_bytes(), max)?;
                id.trim().to_owned()
            }
            TenantSource::Func(f) => match f(parts) {
                Some(id) => {
                    tenant::check(&id, max)?;
                    id
                }
                None => return Ok(None),
            },
        };
        Ok(Some(tenant).filter(|t| !t.is_empty()))
    }

    fn context(
        &self,
        parts: &http::request::Parts,
        notes: Arc<ResponseNotes>,
    ) -> Result<Context, Refusal> {
        if self.misconfigured.is_some() {
            return Err(Refusal::Misconfigured);
        }
        let tenant = self
            .tenant(parts)
            .map_err(|e| Refusal::BadRequest(format!("invalid tenant: {e}")))?;
        if tenant.is_none() && self.require_tenant {
            return Err(Refusal::BadRequest(
                "this service requires a tenant: the request named none".to_owned(),
            ));
        }
        // Fail closed: a request with credentials gets a personal response,
        // never `Cache-Control: public` (see `cache_headers`).
        if parts.headers.contains_key(header::AUTHORIZATION)
            || parts.headers.contains_key(header::PROXY_AUTHORIZATION)
            || parts.headers.contains_key(header::COOKIE)
            || parts.extensions.get::<Identity>().is_some()
        {
            notes.mark_private();
        }
        let mut ctx = Context::new().with_observer(notes);
        if let Some(t) = tenant {
            ctx = ctx.tenant(t);
        }
        if let Some(id) = parts.extensions.get::<Identity>() {
            ctx = ctx.user(&id.user_id);
            if let Some(role) = &id.role {
                ctx = ctx.role(role);
            }
        }
        if let Some(ip) = self.client_ip(parts) {
            ctx = ctx.client_ip(ip);
        }
        Ok(ctx)
    }
}

impl Refusal {
    fn response<B: From<String>>(self) -> Response<B> {
        let (status, message) = match self {
            Self::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            Self::Misconfigured => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the tenant context is misconfigured".to_owned(),
            ),
        };
        let mut res = Response::new(B::from(message));
        *res.status_mut() = status;
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        res.headers_mut().insert(
            header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-store"),
        );
        res
    }
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `2001:db8::1`, `[2001:db8::1]:443`
/// or `1.2.3.4:8080`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    hop.parse::<SocketAddr>()
        .ok()
        .map(|s| s.ip().to_canonical())
}

impl<S, B, ResBody> Service<Request<B>> for ContextService<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    ResBody: From<String> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The clone is not ready: call the one that was polled ready.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let config = Arc::clone(&self.config);
        let notes = Arc::new(ResponseNotes::default());
        let (mut parts, body) = req.into_parts();
        let ctx = match config.context(&parts, Arc::clone(&notes)) {
            Ok(ctx) => ctx,
            Err(refusal) => {
                let response = refusal.response();
                return Box::pin(async move { Ok(response) });
            }
        };
        // For an inner `MetricsLayer`: the outcome of the handler's cached call.
        parts.extensions.insert(RequestNotes(Arc::clone(&notes)));
        let req = Request::from_parts(parts, body);
        Box::pin(async move {
            let mut response = context::scope(ctx, inner.call(req)).await?;
            if let Some(note) = notes.rate_limit() {
                rate_limited::apply_note(response.headers_mut(), &note);
            }
            cache_headers::apply_to_response(&notes, &mut response, &config.cache_headers);
            // For an outer `MetricsLayer`: how the handler's cached call was served.
            if let Some(note) = notes.cache() {
                response.extensions_mut().insert(note);
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
#[path = "context_layer_tests.rs"]
mod tests;
