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
