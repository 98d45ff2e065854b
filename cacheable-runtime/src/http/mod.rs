//! axum integration (feature `axum`).

pub mod cache_headers;
