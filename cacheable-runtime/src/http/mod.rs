//! axum integration (feature `axum`).

pub mod cache_headers;
pub mod conditional;
pub mod fields;

pub use cache_headers::CacheHeaderOptions;
pub use conditional::ConditionalLayer;
pub use fields::{Fields, FieldsLayer};
