//! The stored value: a binary header, then the JSON payload.
//!
//! ```text
//! byte  0      schema (1)
//! bytes 1..17  stamp: unique per write; compare-and-set compares it
//! byte  17     kind: 0 value (schema 1 also had 1, a tombstone)
//! bytes 18..26 stored at, unix ms (little endian)
//! bytes 26..34 fresh until, unix ms: after it the value is stale
//! bytes 34..38 compute time of the value, µs
//! bytes 38..40 number of dependencies n
//! n ×          u16 key length, key bytes, u64 version
//! rest         payload (serde_json)
//! ```
//!
//! Pinned by a golden test: changing it bumps [`SCHEMA`](crate::key::SCHEMA).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::CacheError;
use crate::key::SCHEMA;

pub(crate) const KIND_VALUE: u8 = 0;
const HEADER: usize = 40;

/// A dependency: a version key and the version the value was computed under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dep {
    pub key: String,
    pub version: u64,
}

/// A dependency as decoded, borrowing the stored bytes (no allocation on hits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DepRef<'a> {
    pub key: &'a str,
    pub version: u64,
}

impl DepRef<'_> {
    pub(crate) fn owned(self) -> Dep {
        Dep {
            key: self.key.to_owned(),
            version: self.version,
        }
    }
}

/// A decoded header; the payload stays borrowed.
#[derive(Debug)]
pub(crate) struct Envelope<'a> {
    pub stored_at_ms: u64,
    pub fresh_until_ms: u64,
    pub compute_us: u32,
    pub deps: Vec<DepRef<'a>>,
    pub payload: &'a [u8],
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A stamp unique to this write: xxh3 of process id, time and a counter.
pub(crate) fn new_stamp() -> [u8; 16] {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut seed = [0u8; 28];
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    seed[..4].copy_from_slice(&PID.get_or_init(std::process::id).to_le_bytes());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    seed[4..20].copy_from_slice(&nanos.to_le_bytes());
    seed[20..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    xxhash_rust::xxh3::xxh3_128(&seed).to_le_bytes()
}

/// Encodes a value envelope stored at `now` (unix ms, from the cache's clock).
pub(crate) fn encode(
    kind: u8,
    now: u64,
    fresh_for: Duration,
    compute: Duration,
    deps: &[Dep],
    payload: &[u8],
) -> Result<Vec<u8>, CacheError> {
    let n = u16::try_from(deps.len())
        .map_err(|_| CacheError::Codec("more than 65535 dependencies".into()))?;
    let deps_len: usize = deps.iter().map(|d| 10 + d.key.len()).sum();
    let mut out = Vec::with_capacity(HEADER + deps_len + payload.len());
    out.push(SCHEMA);
    out.extend_from_slice(&new_stamp());
    out.push(kind);
    out.extend_from_slice(&now.to_le_bytes());
    out.extend_from_slice(
        &now.saturating_add(u64::try_from(fresh_for.as_millis()).unwrap_or(u64::MAX))
            .to_le_bytes(),
    );
    out.extend_from_slice(
        &u32::try_from(compute.as_micros())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    out.extend_from_slice(&n.to_le_bytes());
    for d in deps {
        let len = u16::try_from(d.key.len())
            .map_err(|_| CacheError::Codec("dependency key over 64 KiB".into()))?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(d.key.as_bytes());
        out.extend_from_slice(&d.version.to_le_bytes());
    }
    out.extend_from_slice(payload);
    Ok(out)
}

/// A fresh version for a counter that is missing or unreadable: the current
/// time in microseconds × 1000, plus three digits from a unique stamp.
///
/// Version counters never repeat a value: a counter that expired, was
/// evicted or lost in a restart comes back at a fresh version, above every
/// value an earlier incarnation could have reached (that would take more
/// than 1000 invalidations per microsecond of its life), so no recorded
/// version can match it again. Clocks of different instances may differ:
/// an instance whose clock is behind creates lower fresh versions, and a
/// repeat would still take a billion invalidations per second of skew.
/// Decimal with 19 digits until the year 2262, so Redis can `INCR` it.
///
/// Always the system clock, never the cache's (`crate::clock`): this is a
/// uniqueness source, not a timer. A fake clock stands still or is set back
/// to a new one's start, and a counter recreated from it could repeat a
/// version that a stored value recorded.
pub(crate) fn fresh_version() -> u64 {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    let spread = u64::from_le_bytes(new_stamp()[..8].try_into().unwrap_or([0; 8])) % 1000;
    micros
        .saturating_mul(1000)
        .saturating_add(spread)
        .clamp(1_000_000_000_000_000_000, i64::MAX as u64 / 2)
}

fn take<const N: usize>(raw: &[u8], at: usize) -> Option<[u8; N]> {
    raw.get(at..at + N)?.try_into().ok()
}

/// Decodes a stored value; garbage is a codec error, never a panic.
pub(crate) fn decode(raw: &[u8]) -> Result<Envelope<'_>, CacheError> {
    let bad = || CacheError::Codec("stored value is not a cacheable envelope".into());
    if raw.len() < HEADER || raw[0] != SCHEMA {
        return Err(bad());
    }
    let kind = raw[17];
    if kind != KIND_VALUE {
        return Err(bad());
    }
    let stored_at_ms = u64::from_le_bytes(take(raw, 18).ok_or_else(bad)?);
    let fresh_until_ms = u64::from_le_bytes(take(raw, 26).ok_or_else(bad)?);
    let compute_us = u32::from_le_bytes(take(raw, 34).ok_or_else(bad)?);
    let n = u16::from_le_bytes(take(raw, 38).ok_or_else(bad)?);
    let mut at = HEADER;
    let mut deps = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        let len = usize::from(u16::from_le_bytes(take(raw, at).ok_or_else(bad)?));
        let key = raw.get(at + 2..at + 2 + len).ok_or_else(bad)?;
        let key = std::str::from_utf8(key).map_err(|_| bad())?;
        let version = u64::from_le_bytes(take(raw, at + 2 + len).ok_or_else(bad)?);
        deps.push(DepRef { key, version });
        at += 10 + len;
    }
    Ok(Envelope {
        stored_at_ms,
        fresh_until_ms,
        compute_us,
        deps,
        payload: &raw[at..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let deps = vec![
            Dep {
                key: "p:{t:a}:g".into(),
                version: 7,
            },
            Dep {
                key: "p:{t:a}:tag:x".into(),
                version: 0,
            },
        ];
        let raw = encode(
            KIND_VALUE,
            now_ms(),
            Duration::from_secs(60),
            Duration::from_micros(1500),
            &deps,
            b"{\"a\":1}",
        )
        .unwrap();
        let env = decode(&raw).unwrap();
        assert_eq!(env.deps.iter().map(|d| d.owned()).collect::<Vec<_>>(), deps);
        assert_eq!(env.payload, b"{\"a\":1}");
        assert_eq!(env.compute_us, 1500);
        assert_eq!(env.fresh_until_ms - env.stored_at_ms, 60_000);
    }

    #[test]
    fn golden_header_layout() {
        let raw = encode(
            KIND_VALUE,
            now_ms(),
            Duration::from_millis(5),
            Duration::from_micros(9),
            &[Dep {
                key: "k".into(),
                version: 3,
            }],
            b"1",
        )
        .unwrap();
        assert_eq!(raw[0], 2, "schema byte");
        assert_eq!(raw[17], 0, "kind byte");
        assert_eq!(
            u64::from_le_bytes(raw[26..34].try_into().unwrap())
                - u64::from_le_bytes(raw[18..26].try_into().unwrap()),
            5
        );
        assert_eq!(&raw[34..38], &9u32.to_le_bytes());
        assert_eq!(&raw[38..40], &1u16.to_le_bytes());
        assert_eq!(&raw[40..], &[1, 0, b'k', 3, 0, 0, 0, 0, 0, 0, 0, b'1']);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for raw in [&b""[..], b"garbage", &[1u8; 39], &[1u8; 200], &[0xFF; 64]] {
            let _ = decode(raw);
        }
        let mut raw = encode(
            KIND_VALUE,
            now_ms(),
            Duration::ZERO,
            Duration::ZERO,
            &[Dep {
                key: "abc".into(),
                version: 1,
            }],
            b"x",
        )
        .unwrap();
        raw[40] = 0xFF; // dependency key length past the end
        assert!(decode(&raw).is_err());
    }

    #[test]
    fn stamps_differ() {
        assert_ne!(new_stamp(), new_stamp());
    }
}
