//! Serde helpers shared by the serializable figures (`Stats`, `Latency`,
//! `Health`): durations as float milliseconds. A leaf: it names nothing else
//! in the crate, so `stats` and `monitor` can both use it.

use std::time::Duration;

/// A duration as a float number of milliseconds (the serialized form of
/// every duration in `Stats`, `FunctionStats` and `Health`): sub-millisecond
/// hit times stay visible, and JSON consumers need no `{secs, nanos}` pair.
#[allow(clippy::trivially_copy_pass_by_ref)] // serde's `serialize_with` passes `&T`
pub(crate) fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

/// [`millis`] of an optional duration (`null` when absent).
#[allow(clippy::ref_option)] // serde's `serialize_with` passes `&T`
pub(crate) fn opt_millis<S: serde::Serializer>(
    d: &Option<Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&(d.as_secs_f64() * 1000.0)),
        None => s.serialize_none(),
    }
}
