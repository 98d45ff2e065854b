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
use std::sync::{Arc, Mutex, PoisonError};
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
    notes: Option<Arc<ResponseNotes>>,
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

    /// Attaches a sink for response notes (used by the axum `ContextLayer`).
    #[must_use]
    pub fn with_notes(mut self, notes: Arc<ResponseNotes>) -> Self {
        self.notes = Some(notes);
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

    /// The response-notes sink, if the request runs under the axum `ContextLayer`.
    pub fn notes(&self) -> Option<&Arc<ResponseNotes>> {
        self.notes.as_ref()
    }
}

/// Runs `future` with `ctx` as the current context.
pub async fn scope<F: Future>(ctx: Context, future: F) -> F::Output {
    CONTEXT.scope(ctx, future).await
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

/// What the macros learned while handling a request, for the HTTP layer to turn
/// into response headers (rate-limit headers, `Cache-Control`, `Age`, `X-Cache`).
#[derive(Debug, Default)]
pub struct ResponseNotes {
    inner: Mutex<NotesInner>,
}

#[derive(Debug, Default, Clone)]
struct NotesInner {
    rate_limit: Option<RateLimitNote>,
    cache: Option<CacheNote>,
    /// The response is personal: the request carried credentials, or some
    /// cached call made for it was tenant- or user-scoped. Never reset.
    private: bool,
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

impl ResponseNotes {
    /// Records a rate-limit decision; keeps the one with the fewest points left.
    pub fn record_rate_limit(&self, note: RateLimitNote) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        match &inner.rate_limit {
            Some(old) if old.remaining <= note.remaining => {}
            _ => inner.rate_limit = Some(note),
        }
    }

    /// Records how a cached function was served. The last record wins: the
    /// outermost cached function (the handler) finishes last.
    ///
    /// A private note also makes the response private for good (see
    /// [`is_private`](Self::is_private)): a public outer call whose value was
    /// computed from a tenant's data is still that tenant's response.
    pub fn record_cache(&self, note: CacheNote) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.private |= note.private;
        inner.cache = Some(note);
    }

    /// Marks the response as personal (the request carried `Authorization`,
    /// a cookie or an identity): it is never made `public`.
    pub fn mark_private(&self) {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .private = true;
    }

    /// Whether the response is personal: [`mark_private`](Self::mark_private)
    /// was called, or any cached call recorded a private note.
    pub fn is_private(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .private
    }

    /// The recorded rate-limit decision.
    pub fn rate_limit(&self) -> Option<RateLimitNote> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .rate_limit
            .clone()
    }

    /// The recorded cache outcome.
    pub fn cache(&self) -> Option<CacheNote> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .cache
            .clone()
    }
}
