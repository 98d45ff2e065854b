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

use std::future::Future;

use crate::context;
pub use crate::tenant_id::TenantId;

/// The longest tenant id, in bytes, that the HTTP `ContextLayer` accepts from
/// a request by default (`ContextLayer::max_tenant_len` changes it).
///
/// The cache itself accepts any id (keys encode it), but a tenant id from a
/// request is attacker-controlled: every key, log line and metric label of
/// the request carries it, so it is bounded where it enters.
pub const MAX_TENANT_LEN: usize = 256;

/// Why a tenant id taken from a request was refused (see [`check`]).
///
/// The message never quotes the id: it is attacker-controlled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidTenant {
    /// Longer than the limit.
    #[error("tenant id is {len} bytes long, over the limit of {max} bytes")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// Not valid UTF-8.
    #[error("tenant id is not valid UTF-8")]
    NotUtf8,
    /// Contains a control character (C0, DEL or C1).
    #[error("tenant id contains a control character")]
    ControlCharacter,
    /// Given more than once (two tenant headers).
    #[error("more than one tenant id in the request")]
    Ambiguous,
}

/// Checks a tenant id taken from untrusted input: at most `max_len` bytes and
/// no control characters. (Not UTF-8 is checked where the bytes are decoded:
/// see [`check_bytes`].)
///
/// # Errors
/// [`InvalidTenant::TooLong`] or [`InvalidTenant::ControlCharacter`].
pub fn check(id: &str, max_len: usize) -> Result<(), InvalidTenant> {
    if id.len() > max_len {
        return Err(InvalidTenant::TooLong {
            len: id.len(),
            max: max_len,
        });
    }
    if id.chars().any(char::is_control) {
        return Err(InvalidTenant::ControlCharacter);
    }
    Ok(())
}

/// Decodes and checks a tenant id given as bytes (an HTTP header value).
///
/// # Errors
/// As [`check`], and [`InvalidTenant::NotUtf8`].
pub fn check_bytes(id: &[u8], max_len: usize) -> Result<&str, InvalidTenant> {
    // The length first: never decode megabytes to refuse them.
    if id.len() > max_len {
        return Err(InvalidTenant::TooLong {
            len: id.len(),
            max: max_len,
        });
    }
    let id = std::str::from_utf8(id).map_err(|_| InvalidTenant::NotUtf8)?;
    check(id, max_len)?;
    Ok(id)
}

/// Runs `future` with `tenant` as the current tenant. The rest of the current
/// context (user, role, client IP), if any, is kept.
pub async fn scope<F: Future>(tenant: impl Into<TenantId>, future: F) -> F::Output {
    // Read when first polled (the context current then), as before.
    let ctx = context::current().unwrap_or_default().tenant(tenant);
    context::scope(ctx, future).await
}

/// The current tenant, if the calling task runs inside a tenant scope.
pub fn current() -> Option<TenantId> {
    context::with_current(|c| c.and_then(|c| c.tenant_id().cloned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_ids_are_bounded_and_printable() {
        assert_eq!(check("acme", MAX_TENANT_LEN), Ok(()));
        assert_eq!(check("a:b*{x}ü", MAX_TENANT_LEN), Ok(()));
        assert_eq!(check(&"é".repeat(128), MAX_TENANT_LEN), Ok(()));
        assert_eq!(
            check(&"é".repeat(129), MAX_TENANT_LEN),
            Err(InvalidTenant::TooLong { len: 258, max: 256 })
        );
        for bad in ["a\tb", "a\u{7f}", "a\u{85}", "\0"] {
            assert_eq!(check(bad, 256), Err(InvalidTenant::ControlCharacter));
        }
        assert_eq!(check_bytes(b"ok", 2), Ok("ok"));
        assert_eq!(check_bytes(b"\xff\xfe", 256), Err(InvalidTenant::NotUtf8));
        assert!(matches!(
            check_bytes(&[b'a'; 3], 2),
            Err(InvalidTenant::TooLong { len: 3, max: 2 })
        ));
    }
}
