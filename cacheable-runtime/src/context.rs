//! The request context: tenant, user, role and client IP.
//!
//! The context is a tokio task-local set by [`scope`] (or by the axum
//! `ContextLayer`). It is **not** inherited by `tokio::spawn`: a spawned future
//! runs without a context (no tenant, no user) unless it carries one. Carry
//! the current one with [`WithContext::in_current_context`], in the manner of
//! tracing's `Instrument`:
//!
//! ```
//! # async fn demo() {
//! use cacheable_runtime::context::WithContext;
//! tokio::spawn(async { /* sees the same tenant and user */ }.in_current_context());
//! # }
//! ```
//!
//! or another one with [`WithContext::with_context`] (or [`scope`]). Without
//! it, a cached call in the spawned task runs in the shared no-tenant space;
//! build the cache with `CacheBuilder::require_tenant()` to make such a call
//! run uncached (and count a `no_tenant` error) instead.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::task::futures::TaskLocalFuture;

use crate::tenant_id::TenantId;

tokio::task_local! {
    static CONTEXT: Context;
}

/// Who is calling: tenant, user, role and client IP. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Context {
    tenant: Option<TenantId>,
    user: Option<Arc<str>>,
    role: Option<Arc<str>>,
    client_ip: Option<IpAddr>,
    observer: Option<Arc<dyn CallObserver>>,
}

impl Context {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the tenant.
    #[must_use]
    pub fn tenant(mut self, tenant: impl Into<TenantId>) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    /// Sets the user id.
    #[must_use]
    pub fn user(mut self, user: impl AsRef<str>) -> Self {
        self.user = Some(Arc::from(user.as_ref()));
        self
    }

    /// Sets the role.
    #[must_use]
    pub fn role(mut self, role: impl AsRef<str>) -> Self {
        self.role = Some(Arc::from(role.as_ref()));
        self
    }

    /// Sets the client IP.
    #[must_use]
    pub fn client_ip(mut self, ip: IpAddr) -> Self {
        self.client_ip = Some(ip);
        self
    }

    /// Attaches an observer of the calls made under this context (the axum
    /// `ContextLayer` attaches its response notes).
    #[must_use]
    pub fn with_observer(mut self, observer: Arc<dyn CallObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The tenant, if any.
    pub fn tenant_id(&self) -> Option<&TenantId> {
        self.tenant.as_ref()
    }

    /// The user id, if any.
    pub fn user_id(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The role, if any.
    pub fn role_name(&self) -> Option<&str> {
        self.role.as_deref()
    }

    /// The client IP, if any.
    pub fn ip(&self) -> Option<IpAddr> {
        self.client_ip
    }

    /// The observer of the calls made under this context, if any.
    pub fn observer(&self) -> Option<&Arc<dyn CallObserver>> {
        self.observer.as_ref()
    }
}

/// Runs `future` with `ctx` as the current context.
///
/// Not an `async fn`: the task-local's own future is returned as is, so the
/// caller's future is not moved into one more state machine on its first
/// poll (a copy of the whole future per call, on the hit path).
pub fn scope<F: Future>(ctx: Context, future: F) -> impl Future<Output = F::Output> {
    CONTEXT.scope(ctx, future)
}

/// The current context, if the calling task runs inside [`scope`].
pub fn current() -> Option<Context> {
    CONTEXT.try_with(Clone::clone).ok()
}

/// Carries a context into a future that runs elsewhere, typically one given to
/// `tokio::spawn`, which does not inherit task-locals. Implemented for every
/// future.
///
/// ```
/// # async fn demo() {
/// use cacheable_runtime::context::WithContext;
/// use cacheable_runtime::tenant;
///
/// tenant::scope("acme", async {
///     let seen = tokio::spawn(async { tenant::current() }.in_current_context())
///         .await
///         .unwrap();
///     assert_eq!(seen.unwrap().as_str(), "acme");
/// })
/// .await;
/// # }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo());
/// ```
pub trait WithContext: Future + Sized {
    /// Runs this future with the context current now (tenant, user, role,
    /// client IP), or with none if there is none, wherever it is polled.
    fn in_current_context(self) -> Scoped<Self> {
        Scoped::new(current(), self)
    }

    /// Runs this future with `ctx` as the current context.
    fn with_context(self, ctx: Context) -> Scoped<Self> {
        Scoped::new(Some(ctx), self)
    }
}

impl<F: Future> WithContext for F {}

pin_project_lite::pin_project! {
    /// A future that runs with a given context: see [`WithContext`].
    #[must_use = "futures do nothing unless polled"]
    pub struct Scoped<F: Future> {
        #[pin]
        inner: ScopedInner<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = ScopedProj]
    enum ScopedInner<F: Future> {
        With { #[pin] future: TaskLocalFuture<Context, F> },
        Without { #[pin] future: F },
    }
}

impl<F: Future> Scoped<F> {
    fn new(ctx: Option<Context>, future: F) -> Self {
        let inner = match ctx {
            Some(ctx) => ScopedInner::With {
                future: CONTEXT.scope(ctx, future),
            },
            None => ScopedInner::Without { future },
        };
        Self { inner }
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        match self.project().inner.project() {
            ScopedProj::With { future } => future.poll(cx),
            ScopedProj::Without { future } => future.poll(cx),
        }
    }
}

impl<F: Future> std::fmt::Debug for Scoped<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scoped").finish_non_exhaustive()
    }
}

/// Calls `f` with the current context without cloning it.
pub(crate) fn with_current<R>(f: impl FnOnce(Option<&Context>) -> R) -> R {
    let mut f = Some(f);
    match CONTEXT.try_with(|c| (f.take().expect("called once"))(Some(c))) {
        Ok(r) => r,
        Err(_) => (f.take().expect("not called yet"))(None),
    }
}

/// Receives what the cached and rate-limited calls of a request decided.
///
/// The engine reports through this trait only; the axum `ContextLayer`
/// implements it (`cacheable::http::ResponseNotes`) to turn the notes into
/// response headers. So the engine knows nothing of HTTP.
pub trait CallObserver: Send + Sync + std::fmt::Debug + 'static {
    /// A rate-limit decision was taken.
    fn record_rate_limit(&self, note: RateLimitNote);
    /// A cached function was served (from the cache or computed).
    fn record_cache(&self, note: CacheNote);
}

/// The most restrictive rate-limit decision taken for the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitNote {
    /// Points allowed per window.
    pub limit: u64,
    /// Points left.
    pub remaining: u64,
    /// Time until the budget is full again (or the window resets).
    pub reset_after: Duration,
    /// The window, for `RateLimit-Policy`.
    pub window: Duration,
    /// The policy's name.
    pub policy: String,
}

/// How the outermost cached handler of the request was served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheNote {
    /// Served from the cache.
    pub hit: bool,
    /// How long the entry stays fresh from now.
    pub max_age: Duration,
    /// How old the served value is.
    pub age: Duration,
    /// The key holds a tenant or a user: the response must not be stored by shared caches.
    pub private: bool,
}
