//! [`Cache::memory_report`](crate::Cache::memory_report): where this cache's memory goes (Redis, each
//! cluster master, this cache's keys, the tenants holding the most, the
//! local tier, the process).
//!
//! # Cost of each field
//!
//! One report costs, per Redis server (each master of a cluster):
//!
//! | field | how | cost |
//! |---|---|---|
//! | `redis_used_bytes`, `redis_max_bytes` | `INFO memory` | one round trip, O(1) on the server |
//! | `evictions` | `INFO stats` (`evicted_keys`) | one round trip, O(1) |
//! | `keys`, `tenants` | `DBSIZE`, then at most [`SCAN_CALLS`] × `SCAN COUNT` [`SCAN_COUNT`] | at most 5 round trips and ~2,500 key names read; never `KEYS` |
//! | `tenants` bytes | `MEMORY USAGE key SAMPLES 0` on at most [`USAGE_KEYS`] sampled tenant keys, pipelined | one round trip, O(1) per key |
//! | `local_bytes` | the local tier's weighed size | O(1), in process (0 until a local tier exists) |
//! | `process_rss_bytes` | `/proc/self/status` (Linux; `None` elsewhere) | one small file read |
//!
//! The scan and `MEMORY USAGE` figures are **estimates** when the scan does
//! not reach the end of the keyspace: the fraction of sampled keys under
//! this cache's prefix, times `DBSIZE`; tenant bytes scaled the same way.
//! `keys_exact` says which. Tenants come from sampling, not from the
//! `tenant_quota_bytes` counters: those count bytes written per window,
//! not bytes held.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{Cmd, FromRedisValue};

use crate::error::CacheError;
use crate::store::AnyStore;

/// `SCAN` calls per server per report.
pub const SCAN_CALLS: usize = 5;
/// The `COUNT` of each `SCAN`.
pub const SCAN_COUNT: usize = 500;
/// Sampled tenant keys measured with `MEMORY USAGE`, per server.
pub const USAGE_KEYS: usize = 256;
/// Tenants listed in [`MemoryReport::tenants`].
pub const TOP_TENANTS: usize = 10;

/// Where the memory of a cache goes; see
/// [`Cache::memory_report`](crate::Cache::memory_report) and the
/// `monitor::memory` docs for what each field costs.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct MemoryReport {
    /// `"memory"`, `"redis"` or `"redis-cluster"`.
    pub backend: &'static str,
    /// Redis `used_memory` (summed over a cluster's masters); the weighed
    /// size for the memory store. `None` when it did not answer.
    pub redis_used_bytes: Option<u64>,
    /// Redis `maxmemory` (summed over masters); `None` when unlimited (0) on
    /// any server, or it did not answer. The capacity for the memory store.
    pub redis_max_bytes: Option<u64>,
    /// Keys evicted by Redis since it started (`evicted_keys`, summed).
    pub evictions: Option<u64>,
    /// Keys under this cache's prefix (sampled, see `keys_exact`).
    pub keys: Option<u64>,
    /// Whether `keys` and `tenants` are exact counts (the scan covered the
    /// whole keyspace) rather than estimates.
    pub keys_exact: bool,
    /// Bytes of the in-process local tier (0 while there is none).
    pub local_bytes: u64,
    /// Resident set size of this process (Linux only).
    pub process_rss_bytes: Option<u64>,
    /// The tenants holding the most bytes, largest first (at most
    /// 10), escaped as in keys.
    pub tenants: Vec<TenantBytes>,
    /// One line per Redis server (each master of a cluster).
    pub servers: Vec<ServerMemory>,
}

impl MemoryReport {
    /// `redis_used_bytes / redis_max_bytes`, when both are known.
    #[allow(clippy::cast_precision_loss)]
    pub fn used_fraction(&self) -> Option<f64> {
        match (self.redis_used_bytes, self.redis_max_bytes) {
            (Some(used), Some(max)) if max > 0 => Some(used as f64 / max as f64),
            _ => None,
        }
    }
}

/// Bytes held by one tenant's keys.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct TenantBytes {
    /// The tenant id as it appears in keys (escaped).
    pub tenant: String,
    /// Bytes (`MEMORY USAGE`), estimated from the sample.
    pub bytes: u64,
}

/// Memory of one Redis server.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ServerMemory {
    /// `host:port`, or `"default"` for a single Redis.
    pub address: String,
    /// `used_memory`.
    pub used_bytes: Option<u64>,
    /// `maxmemory` (`None`: 0, unlimited).
    pub max_bytes: Option<u64>,
    /// `evicted_keys`.
    pub evictions: Option<u64>,
    /// `DBSIZE`.
    pub db_keys: Option<u64>,
}

/// A field of an `INFO` reply.
fn info_field(info: &str, name: &str) -> Option<u64> {
    info.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|v| v.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// The resident set size of this process, from `/proc/self/status`.
pub(crate) fn process_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// What one server's sample found.
#[derive(Default)]
struct Sample {
    server: ServerMemory,
    /// Keys read by the scan, and of those under the prefix.
    scanned: u64,
    matched: u64,
    complete: bool,
    /// Bytes per tenant of the measured keys, and how many keys were measured
    /// out of the tenant keys sampled.
    tenant_bytes: HashMap<String, u64>,
    tenant_keys_sampled: u64,
    tenant_keys_measured: u64,
}

async fn query<T: FromRedisValue, C: ConnectionLike + Send>(
    conn: &mut C,
    cmd: &Cmd,
) -> Result<T, CacheError> {
    Ok(cmd.query_async(conn).await?)
}

/// Samples one server through `conn` (a connection to that server alone).
async fn sample<C: ConnectionLike + Send>(
    conn: &mut C,
    address: String,
    prefix: &str,
) -> Result<Sample, CacheError> {
    let mut s = Sample::default();
    let mem: String = query(conn, redis::cmd("INFO").arg("memory")).await?;
    let stats: String = query(conn, redis::cmd("INFO").arg("stats")).await?;
    s.server = ServerMemory {
        address,
        used_bytes: info_field(&mem, "used_memory"),
        max_bytes: info_field(&mem, "maxmemory").filter(|m| *m > 0),
        evictions: info_field(&stats, "evicted_keys"),
        db_keys: Some(query(conn, &redis::cmd("DBSIZE")).await?),
    };
    let own = format!("{prefix}:{{");
    let tenant_ns = format!("{prefix}:{{t:");
    let mut tenant_keys: Vec<(String, String)> = Vec::new();
    let mut cursor: u64 = 0;
    for _ in 0..SCAN_CALLS {
        let (next, keys): (u64, Vec<String>) = query(
            conn,
            redis::cmd("SCAN").arg(cursor).arg("COUNT").arg(SCAN_COUNT),
        )
        .await?;
        s.scanned += keys.len() as u64;
        for k in keys {
            if !k.starts_with(&own) {
                continue;
            }
            s.matched += 1;
            if let Some(rest) = k.strip_prefix(&tenant_ns)
                && let Some((tenant, _)) = rest.split_once('}')
            {
                s.tenant_keys_sampled += 1;
                if tenant_keys.len() < USAGE_KEYS {
                    tenant_keys.push((tenant.to_owned(), k.clone()));
                }
            }
        }
        if next == 0 {
            s.complete = true;
            break;
        }
        cursor = next;
    }
    if !tenant_keys.is_empty() {
        let mut pipe = redis::pipe();
        for (_, k) in &tenant_keys {
            pipe.cmd("MEMORY").arg("USAGE").arg(k).arg("SAMPLES").arg(0);
        }
        let sizes: Vec<Option<u64>> = pipe.query_async(conn).await?;
        for ((tenant, _), size) in tenant_keys.iter().zip(sizes) {
            *s.tenant_bytes.entry(tenant.clone()).or_default() += size.unwrap_or(0);
        }
        s.tenant_keys_measured = tenant_keys.len() as u64;
    }
    Ok(s)
}

/// `x × num / den`, rounded, without overflow.
fn scale(x: u64, num: u64, den: u64) -> u64 {
    if den == 0 {
        return x;
    }
    u64::try_from(u128::from(x) * u128::from(num) / u128::from(den)).unwrap_or(u64::MAX)
}

fn sum<'a>(xs: impl Iterator<Item = &'a Option<u64>>, all: bool) -> Option<u64> {
    let mut total = 0u64;
    let mut any = false;
    for x in xs {
        match x {
            Some(v) => {
                total = total.saturating_add(*v);
                any = true;
            }
            None if all => return None,
            None => {}
        }
    }
    any.then_some(total)
}

/// The memory report of a cache on `store` whose keys start with `prefix`
/// (`Cache::memory_report`, which passes its parts; see it for what the
/// report holds). Commands time out after a few `timeout`s.
pub(crate) async fn report(
    store: &AnyStore,
    prefix: &str,
    timeout: Duration,
    local_bytes: u64,
) -> MemoryReport {
    let mut report = MemoryReport {
        backend: store.backend(),
        local_bytes,
        process_rss_bytes: process_rss(),
        ..MemoryReport::default()
    };
    let samples: Vec<Sample> = match store {
        AnyStore::Memory(m) => {
            report.redis_used_bytes = Some(m.weighed_size());
            report.redis_max_bytes = Some(m.capacity());
            return report;
        }
        AnyStore::Redis(r) => {
            let mut conn = r.connection();
            let fut = sample(&mut conn, "default".to_owned(), prefix);
            // Five scans and a pipeline: give it a few op timeouts.
            match tokio::time::timeout(timeout * 8, fut).await {
                Ok(Ok(s)) => vec![s],
                _ => Vec::new(),
            }
        }
        AnyStore::Cluster(c) => {
            let fut = async {
                let mut conn = c.connection().await?;
                let masters = c.masters(&mut conn).await?;
                let mut out = Vec::new();
                for (host, port) in masters {
                    let mut node = c.node_connection(&host, port).await?;
                    if let Ok(s) = sample(&mut node, format!("{host}:{port}"), prefix).await {
                        out.push(s);
                    }
                }
                Ok::<_, CacheError>(out)
            };
            match tokio::time::timeout(timeout * 16, fut).await {
                Ok(Ok(s)) => s,
                _ => Vec::new(),
            }
        }
    };
    if samples.is_empty() {
        return report;
    }
    let servers: Vec<ServerMemory> = samples.iter().map(|s| s.server.clone()).collect();
    report.redis_used_bytes = sum(servers.iter().map(|s| &s.used_bytes), false);
    report.redis_max_bytes = sum(servers.iter().map(|s| &s.max_bytes), true);
    report.evictions = sum(servers.iter().map(|s| &s.evictions), false);
    report.keys_exact = samples.iter().all(|s| s.complete);
    let mut keys = 0u64;
    let mut tenants: HashMap<String, u64> = HashMap::new();
    for s in &samples {
        let db = s.server.db_keys.unwrap_or(0);
        // Estimated: the share of sampled keys under the prefix, times DBSIZE.
        keys += if s.complete {
            s.matched
        } else {
            scale(s.matched, db, s.scanned)
        };
        // Measured bytes scaled to the tenant keys sampled, then to the keyspace.
        for (t, b) in &s.tenant_bytes {
            let mut b = scale(*b, s.tenant_keys_sampled, s.tenant_keys_measured);
            if !s.complete {
                b = scale(b, db, s.scanned);
            }
            *tenants.entry(t.clone()).or_default() += b;
        }
    }
    report.keys = Some(keys);
    let mut tenants: Vec<TenantBytes> = tenants
        .into_iter()
        .map(|(tenant, bytes)| TenantBytes { tenant, bytes })
        .collect();
    tenants.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.tenant.cmp(&b.tenant)));
    tenants.truncate(TOP_TENANTS);
    report.tenants = tenants;
    report.servers = servers;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields_and_rss() {
        let info = "# Memory\r\nused_memory:1234\r\nused_memory_human:1K\r\nmaxmemory:0\r\n";
        assert_eq!(info_field(info, "used_memory"), Some(1234));
        assert_eq!(info_field(info, "maxmemory"), Some(0));
        assert_eq!(info_field(info, "evicted_keys"), None);
        if cfg!(target_os = "linux") {
            assert!(process_rss().is_some_and(|b| b > 1024 * 1024));
        }
    }

    #[test]
    fn sums_and_scaling() {
        assert_eq!(sum([Some(1), None].iter(), false), Some(1));
        assert_eq!(sum([Some(1), None].iter(), true), None);
        assert_eq!(sum([None].iter(), false), None);
        assert_eq!(scale(10, 1000, 100), 100);
        assert_eq!(scale(10, 5, 0), 10);
        assert_eq!(scale(u64::MAX, u64::MAX, 1), u64::MAX);
    }
}
