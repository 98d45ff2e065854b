//! Monitoring: latency quantiles ([`Latency`], from a bounded sketch),
//! per-route request statistics ([`RouteStats`], recorded by the axum
//! `MetricsLayer`), the memory report ([`MemoryReport`]) and alerts
//! ([`Alert`], evaluated in the background when configured).
//!
//! # Metric names (feature `metrics`)
//!
//! Besides the per-function series of `Cache::stats` (`cacheable_hits_total`,
//! `cacheable_misses_total`, `cacheable_compute_seconds`, `cacheable_hit_seconds`, …):
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `cacheable_http_request_duration_seconds` | histogram | `method`, `route` (matched, `<unmatched>` or `<other>`), `status` (`2xx`…), `cache` (`hit`, `miss`, `none`) |
//!
//! # Cost
//!
//! Nothing here runs on a cache hit beyond what `stats()` did before: the
//! hit-time quantiles are fed by the one hit in 16 that was already timed,
//! and compute-time quantiles by misses. A request through `MetricsLayer`
//! pays two clock reads, a read-locked map lookup and four relaxed atomic
//! adds per sketch.

pub(crate) mod alerts;
pub(crate) mod memory;
pub(crate) mod routes;
pub(crate) mod sketch;

pub use alerts::{Alert, AlertCallback, AlertEvent, AlertState};
pub use memory::{MemoryReport, ServerMemory, TenantBytes};
pub use routes::{OVERFLOW_ROUTE, RouteStats, UNMATCHED_ROUTE};
pub use sketch::Latency;
