//! The authenticated caller, as the application's auth middleware knows it.

/// Who is calling, put into the request extensions by the application's
/// authentication middleware (before [`ContextLayer`](super::ContextLayer)
/// runs). The layer copies it into the [`Context`](crate::context::Context):
/// `#[rate_limit]` then limits by `user_id` and picks points by `role`.
///
/// ```
/// use cacheable_runtime::http::Identity;
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(Identity::new("u42").role("admin"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The user's stable id.
    pub user_id: String,
    /// The user's role (`roles(..)` of `#[rate_limit]`), if any.
    pub role: Option<String>,
}

impl Identity {
    /// A user without a role.
    pub fn new(user_id: impl Into<String>) -> Self {
        Self {
            user_id: user_id.into(),
            role: None,
        }
    }

    /// Sets the role.
    #[must_use]
    pub fn role(mut self, role: impl Into<String>) -> Self {
        self.role = Some(role.into());
        self
    }
}
