//! axum integration (feature `axum`).

pub mod cache_headers;
pub mod conditional;
mod context_layer;
mod dashboard;
mod date;
pub mod fields;
mod identity;
mod metrics;
mod notes;
mod rate_limited;
pub mod service;

pub use cache_headers::CacheHeaderOptions;
pub use conditional::ConditionalLayer;
pub use context_layer::{ContextLayer, ContextService, InvalidHeaderName};
pub use dashboard::{MEMORY_REPORT_TTL, SERIES_LEN, dashboard};
pub use fields::{Fields, FieldsLayer};
pub use identity::Identity;
pub use metrics::{DEFAULT_MAX_ROUTES, MetricsLayer, MetricsService};
pub use notes::ResponseNotes;
pub use rate_limited::{
    RATELIMIT, RATELIMIT_POLICY, X_RATELIMIT_LIMIT, X_RATELIMIT_REMAINING, X_RATELIMIT_RESET,
};
