//! The current tenant.
//!
//! The tenant lives in the task-local [`Context`](crate::context::Context).
//! Like every task-local, it is **not** inherited by `tokio::spawn`: a spawned
//! future runs without a tenant unless it carries the context, with
//! `tokio::spawn(fut.in_current_context())`
//! ([`WithContext`](crate::context::WithContext)), or is wrapped in [`scope`]
//! again. A cache built with `CacheBuilder::require_tenant()` runs a
//! non-global call without a tenant uncached (and counts a `no_tenant` error)
//! instead of sharing the no-tenant space between tenants.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::context;

/// A tenant identifier. Any string is valid (empty, `"a:b"`, `"*"`, 10 KB,
/// non-ASCII): keys encode it so that no id can reach another tenant's keys.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Arc<str>);

impl TenantId {
    /// The id as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for TenantId {
    fn from(s: &str) -> Self {
        Self(Arc::from(s))
    }
}

impl From<String> for TenantId {
    fn from(s: String) -> Self {
        Self(Arc::from(s))
    }
}

impl From<&String> for TenantId {
    fn from(s: &String) -> Self {
        Self(Arc::from(s.as_str()))
    }
}

impl AsRef<str> for TenantId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Runs `future` with `tenant` as the current tenant. The rest of the current
/// context (user, role, client IP), if any, is kept.
pub async fn scope<F: Future>(tenant: impl Into<TenantId>, future: F) -> F::Output {
    let ctx = context::current().unwrap_or_default().tenant(tenant);
    context::scope(ctx, future).await
}

/// The current tenant, if the calling task runs inside a tenant scope.
pub fn current() -> Option<TenantId> {
    context::with_current(|c| c.and_then(|c| c.tenant_id().cloned()))
}
