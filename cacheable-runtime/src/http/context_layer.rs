//! [`ContextLayer`]: fills the request [`Context`] (tenant, user, role,
//! client IP) and turns what the handler's macros recorded into response
//! headers.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use axum::extract::ConnectInfo;
use http::{HeaderName, Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::cache_headers::{self, CacheHeaderOptions};
use super::identity::Identity;
use super::rate_limited;
use crate::context::{self, Context, ResponseNotes};

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
            }),
        }
    }

    fn config(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// Reads the tenant from this header instead of `x-tenant-id`.
    ///
    /// # Panics
    /// If `name` is not a valid header name (a programming error).
    pub fn tenant_header(mut self, name: &str) -> Self {
        let name = HeaderName::from_bytes(name.as_bytes())
            .unwrap_or_else(|_| panic!("`{name}` is not a valid header name"));
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

    fn context(&self, parts: &http::request::Parts, notes: Arc<ResponseNotes>) -> Context {
        let mut ctx = Context::new().with_notes(notes);
        let tenant = match &self.tenant {
            TenantSource::Header(name) => parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
            TenantSource::Func(f) => f(parts),
        };
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
        ctx
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
        let (parts, body) = req.into_parts();
        let ctx = config.context(&parts, Arc::clone(&notes));
        let req = Request::from_parts(parts, body);
        Box::pin(async move {
            let mut response = context::scope(ctx, inner.call(req)).await?;
            if let Some(note) = notes.rate_limit() {
                rate_limited::apply_note(response.headers_mut(), &note);
            }
            cache_headers::apply_to_response(&notes, &mut response, &config.cache_headers);
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(peer: &str, xff: &[&str]) -> http::request::Parts {
        let mut b = Request::builder();
        for x in xff {
            b = b.header("x-forwarded-for", *x);
        }
        let mut req = b.body(()).unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        req.into_parts().0
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_custom_tenant_header_is_what_responses_vary_by() {
        let layer = ContextLayer::new().tenant_header("x-org");
        assert_eq!(
            layer.config.cache_headers.vary,
            vec![HeaderName::from_static("x-org")]
        );
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let layer = ContextLayer::new()
            .trusted_proxies([ip("10.0.0.1")])
            .trusted_proxy_range(ip("192.168.0.0"), 16);
        let c = &layer.config;
        // Untrusted peer: the header is ignored.
        assert_eq!(
            c.client_ip(&parts("203.0.113.9:1", &["1.1.1.1"])),
            Some(ip("203.0.113.9"))
        );
        // Trusted peer: right-most untrusted hop, spoofed prefix ignored.
        assert_eq!(
            c.client_ip(&parts(
                "10.0.0.1:1",
                &["6.6.6.6, 198.51.100.7", "192.168.4.4"]
            )),
            Some(ip("198.51.100.7"))
        );
        // Only proxies: the left-most one.
        assert_eq!(
            c.client_ip(&parts("10.0.0.1:1", &["192.168.1.1"])),
            Some(ip("192.168.1.1"))
        );
        // Garbage stops the walk at the last good hop.
        assert_eq!(
            c.client_ip(&parts("10.0.0.1:1", &["1.2.3.4, junk, 192.168.9.9"])),
            Some(ip("192.168.9.9"))
        );
        // Ports and brackets.
        assert_eq!(
            c.client_ip(&parts("[::ffff:10.0.0.1]:1", &["[2001:db8::5]:443"])),
            Some(ip("2001:db8::5"))
        );
    }

    #[test]
    fn networks_match_by_prefix() {
        let n = Net {
            addr: ip("10.1.0.0"),
            prefix: 16,
        };
        assert!(n.contains(ip("10.1.200.3")));
        assert!(!n.contains(ip("10.2.0.1")));
        let all = Net {
            addr: ip("::"),
            prefix: 0,
        };
        assert!(all.contains(ip("2001:db8::1")));
        assert!(!all.contains(ip("1.2.3.4")));
    }
}
