//! [`TenantId`], a leaf: `context` holds one, `tenant` reads it from the
//! context, and neither needs the other to name it.

use std::fmt;
use std::sync::Arc;

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

/// The ids up to this many bytes are remembered per thread (the last one):
/// `tenant::scope("acme", ..)` on every request of a tenant then clones an
/// `Arc` instead of allocating.
const REMEMBERED_LEN: usize = 64;

impl From<&str> for TenantId {
    fn from(s: &str) -> Self {
        thread_local! {
            static LAST: std::cell::RefCell<Option<Arc<str>>> =
                const { std::cell::RefCell::new(None) };
        }
        if s.len() > REMEMBERED_LEN {
            return Self(Arc::from(s));
        }
        LAST.try_with(|last| {
            let mut last = last.borrow_mut();
            match &*last {
                Some(id) if **id == *s => Self(Arc::clone(id)),
                _ => {
                    let id: Arc<str> = Arc::from(s);
                    *last = Some(Arc::clone(&id));
                    Self(id)
                }
            }
        })
        // The thread is exiting: no memory, just the id.
        .unwrap_or_else(|_| Self(Arc::from(s)))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-thread memory of the last id shares it, and never confuses
    /// two ids.
    #[test]
    fn remembered_ids_are_shared_and_never_mixed_up() {
        let a = TenantId::from("acme");
        let again = TenantId::from("acme");
        assert!(Arc::ptr_eq(&a.0, &again.0));
        let b = TenantId::from("acm");
        assert_eq!(b.as_str(), "acm");
        assert_eq!(TenantId::from("acme").as_str(), "acme");
        assert_eq!(TenantId::from("").as_str(), "");
        let long = "x".repeat(REMEMBERED_LEN + 1);
        assert_eq!(TenantId::from(long.as_str()).as_str(), long);
        assert_eq!(a, again);
    }
}
