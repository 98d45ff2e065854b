//! The Redis Cluster store.
//!
//! Keys of one tenant share a hash tag (`{t:<tenant>}`), so an entry, its
//! tenant generation and its tag versions live in one slot: reads are one
//! `MGET` (redis-rs splits multi-slot `MGET`s for the rare cross-slot
//! dependency) and the compare-and-set write is one script on one shard.
//! Dependencies in other slots (all-tenant tag versions, nested calls of
//! another tenant) are kept alive by a second script on their own shard.
//! The connection is created on first use, follows `MOVED`/`ASK` and
//! refreshes the slot map after a failover.
//!
//! Over 400 lines: the `Store` implementation routes each operation by slot
//! (entry shard, then the other shards' dependencies), and those methods
//! read best side by side with the slot grouping they share.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Value};

use super::redis::{
    BUMP, ENSURE, Lua, PUT, PutArgs, RELEASE, TlsSettings, ensured_versions, glob_escape, mask_url,
    ms, put_outcome, set_px, used_memory_of,
};
use super::{Put, Store};
use crate::error::CacheError;

/// Extends existing version keys to at least ARGV[1] ms (never creates one:
/// a missing version matches nothing).
const TOUCH: &str = r"
local ttl = tonumber(ARGV[1])
for i = 1, #KEYS do
  local p = redis.call('PTTL', KEYS[i])
  if p >= 0 and p < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
end
return #KEYS
";

pub(crate) struct ClusterStore {
    client: ClusterClient,
    conn: std::sync::OnceLock<ClusterConnection>,
    /// The connect in progress, shared by the callers (see `connection`).
    connecting:
        tokio::sync::Mutex<Option<tokio::task::JoinHandle<redis::RedisResult<ClusterConnection>>>>,
    /// The first node's connection settings (credentials, TLS) and the
    /// builder's certificates, for connections to one node (the local
    /// tier's subscription).
    first: redis::ConnectionInfo,
    tls: TlsSettings,
    display: String,
    put: Lua,
    touch: Lua,
    bump: Lua,
    ensure: Lua,
    release: Lua,
}

impl fmt::Debug for ClusterStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterStore")
            .field("nodes", &self.display)
            .finish_non_exhaustive()
    }
}

/// The hash tag of a key (`{…}` with content), or the whole key: keys with
/// the same tag are in the same slot.
pub(crate) fn hash_tag(key: &str) -> &str {
    if let Some(open) = key.find('{')
        && let Some(len) = key[open + 1..].find('}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

/// The `host:port` of the live master that owns `slot` in a `CLUSTER NODES` reply.
fn master_of_slot(nodes: &str, slot: u16) -> Option<(String, u16)> {
    nodes.lines().find_map(|line| {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() < 9 || !f[2].split(',').any(|x| x == "master") || f[2].contains("fail") {
            return None;
        }
        let owns = f[8..].iter().any(|r| match r.split_once('-') {
            Some((a, b)) => {
                a.parse::<u16>().is_ok_and(|a| a <= slot)
                    && b.parse::<u16>().is_ok_and(|b| slot <= b)
            }
            None => r.parse::<u16>().is_ok_and(|s| s == slot),
        });
        if !owns {
            return None;
        }
        let addr = f[1].split(['@', ',']).next()?;
        let (host, port) = addr.rsplit_once(':')?;
        Some((host.to_owned(), port.parse().ok()?))
    })
}

fn group_by_slot<'a>(
    keys: impl IntoIterator<Item = &'a String>,
) -> BTreeMap<&'a str, Vec<&'a String>> {
    let mut groups: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
    for k in keys {
        groups.entry(hash_tag(k)).or_default().push(k);
    }
    groups
}

impl ClusterStore {
    pub(crate) fn new(
        urls: &[String],
        op_timeout: Duration,
        tls: &TlsSettings,
    ) -> Result<Self, CacheError> {
        let display = urls
            .iter()
            .map(|u| mask_url(u))
            .collect::<Vec<_>>()
            .join(",");
        if urls.is_empty() {
            return Err(CacheError::Config(
                "redis_cluster needs at least one node url".into(),
            ));
        }
        let builder = ClusterClientBuilder::new(urls.to_vec())
            .connection_timeout(op_timeout.max(Duration::from_millis(200)))
            .response_timeout(op_timeout)
            .retries(2);
        #[cfg(feature = "tls")]
        let builder = match tls.certificates() {
            Some(certs) => builder.certs(certs),
            None => builder,
        };
        #[cfg(not(feature = "tls"))]
        let _ = tls;
        let client = builder
            .build()
            .map_err(|e| CacheError::Config(format!("redis cluster `{display}`: {e}")))?;
        let first = redis::IntoConnectionInfo::into_connection_info(urls[0].as_str())
            .map_err(|e| CacheError::Config(format!("redis cluster `{display}`: {e}")))?;
        Ok(Self {
            client,
            conn: std::sync::OnceLock::new(),
            connecting: tokio::sync::Mutex::new(None),
            first,
            tls: tls.clone(),
            display,
            put: Lua::new(PUT),
            touch: Lua::new(TOUCH),
            bump: Lua::new(BUMP),
            ensure: Lua::new(ENSURE),
            release: Lua::new(RELEASE),
        })
    }

    /// The cluster connection, connecting on first use (a failed connect is
    /// retried by the next call).
    ///
    /// The connect runs in a task of its own that callers share: a caller
    /// that gives up (the operation timeout) leaves it running, and the next
    /// one waits for the same attempt. Setting up is several round trips to
    /// several nodes; were it cancelled with each caller, a setup slower
    /// than the operation timeout (a distant or loaded cluster) would start
    /// over with every call and never finish.
    pub(crate) async fn connection(&self) -> Result<ClusterConnection, CacheError> {
        if let Some(conn) = self.conn.get() {
            return Ok(conn.clone());
        }
        let mut connecting = self.connecting.lock().await;
        if let Some(conn) = self.conn.get() {
            return Ok(conn.clone());
        }
        let task = connecting.get_or_insert_with(|| {
            let client = self.client.clone();
            tokio::spawn(async move { client.get_async_connection().await })
        });
        let done = task.await;
        *connecting = None;
        let conn = done.map_err(|e| CacheError::Store(format!("cluster connect: {e}")))??;
        Ok(self.conn.get_or_init(|| conn).clone())
    }

    /// A connection whose every command goes to the node at `host:port`
    /// (for per-master reports: `INFO`, `SCAN`).
    pub(crate) async fn node_connection(
        &self,
        host: &str,
        port: u16,
    ) -> Result<NodeConnection, CacheError> {
        Ok(NodeConnection {
            conn: self.connection().await?,
            host: host.to_owned(),
            port,
        })
    }

    /// The address of the master that serves `key`'s slot, as a node of
    /// the cluster sees it now (`CLUSTER KEYSLOT`, then `CLUSTER NODES`; a
    /// random node, so that a dead former master is no obstacle).
    pub(crate) async fn master_of(&self, key: &str) -> Result<(String, u16), CacheError> {
        let mut conn = self.connection().await?;
        let random = || RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
        let slot: u16 = redis::from_redis_value(
            conn.route_command(
                Cmd::new().arg("CLUSTER").arg("KEYSLOT").arg(key).clone(),
                random(),
            )
            .await?,
        )?;
        let nodes: String = redis::from_redis_value(
            conn.route_command(Cmd::new().arg("CLUSTER").arg("NODES").clone(), random())
                .await?,
        )?;
        master_of_slot(&nodes, slot)
            .ok_or_else(|| CacheError::Store(format!("no live master serves slot {slot}")))
    }

    /// A client for the single node at `host:port`, with the credentials
    /// and TLS settings of the first configured node.
    pub(crate) fn node_client(&self, host: &str, port: u16) -> redis::RedisResult<redis::Client> {
        use redis::ConnectionAddr;
        let addr = match self.first.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host: host.to_owned(),
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host.to_owned(), port),
        };
        self.tls.client(self.first.clone().set_addr(addr))
    }

    pub(crate) async fn masters(
        &self,
        conn: &mut ClusterConnection,
    ) -> Result<Vec<(String, u16)>, CacheError> {
        let nodes = conn
            .route_command(
                Cmd::new().arg("CLUSTER").arg("NODES").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await?;
        let text: String = redis::from_redis_value(nodes)?;
        let mut masters = Vec::new();
        for line in text.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if fields.len() < 8
                || !fields[2].split(',').any(|f| f == "master")
                || fields[2].contains("fail")
            {
                continue;
            }
            let addr = fields[1].split('@').next().unwrap_or_default();
            if let Some((host, port)) = addr.rsplit_once(':')
                && let Ok(port) = port.parse()
            {
                masters.push((host.to_owned(), port));
            }
        }
        Ok(masters)
    }
}

impl Store for ClusterStore {
    async fn mget(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        // One MGET per slot, ourselves: redis-rs' own multi-slot MGET
        // splitting returned mismatched replies after a failover. The first
        // key's slot (the entry's) and the others are fetched concurrently.
        let mut conn = self.connection().await?;
        let Some(first) = keys.first() else {
            return Ok(Vec::new());
        };
        let tag = hash_tag(first);
        let (mine, others): (Vec<usize>, Vec<usize>) =
            (0..keys.len()).partition(|&i| hash_tag(&keys[i]) == tag);
        let mut other_conn = conn.clone();
        let own = async {
            let ks: Vec<&String> = mine.iter().map(|&i| &keys[i]).collect();
            redis::cmd("MGET")
                .arg(ks)
                .query_async::<Vec<Option<Vec<u8>>>>(&mut conn)
                .await
        };
        let rest = async {
            let mut out = Vec::with_capacity(others.len());
            let refs: Vec<&String> = others.iter().map(|&i| &keys[i]).collect();
            for group in group_by_slot(refs.iter().copied()).values() {
                let vals: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
                    .arg(group)
                    .query_async(&mut other_conn)
                    .await?;
                out.extend(group.iter().map(|k| (*k).clone()).zip(vals));
            }
            Ok::<_, redis::RedisError>(out)
        };
        let (own, rest) = tokio::try_join!(own, rest)?;
        let mut result = vec![None; keys.len()];
        for (i, v) in mine.into_iter().zip(own) {
            result[i] = v;
        }
        let mut rest: std::collections::HashMap<String, Option<Vec<u8>>> =
            rest.into_iter().collect();
        for i in others {
            result[i] = rest.remove(&keys[i]).flatten();
        }
        Ok(result)
    }

    async fn put(&self, put: &Put<'_>) -> Result<bool, CacheError> {
        let mut conn = self.connection().await?;
        let ttl = ms(put.ttl).to_string();
        let entry_tag = hash_tag(put.key);
        // Versions in the entry's slot are checked by the write itself; the
        // others (all-tenant tags, nested calls of another tenant) are only
        // kept alive here and checked on every read.
        let (mine, others): (Vec<usize>, Vec<usize>) =
            (0..put.deps.len()).partition(|&i| hash_tag(&put.deps[i]) == entry_tag);
        for group in group_by_slot(others.iter().map(|&i| &put.deps[i])).values() {
            let keys: Vec<&str> = group.iter().map(|k| k.as_str()).collect();
            let _: i64 = self.touch.run(&mut conn, &keys, &[ttl.as_bytes()]).await?;
        }
        let mut keys = vec![put.key];
        if let Some(q) = &put.quota {
            keys.extend(q.keys.iter().map(String::as_str));
        }
        keys.extend(mine.iter().map(|&i| put.deps[i].as_str()));
        let versions: Vec<u64> = mine.iter().map(|&i| put.versions[i]).collect();
        let args = PutArgs::new(put, &versions);
        let reply: i64 = self
            .put
            .run(&mut conn, &keys, &args.with_value(put.value))
            .await?;
        put_outcome(reply, put)
    }

    async fn bump(&self, keys: &[String]) -> Result<(), CacheError> {
        let mut conn = self.connection().await?;
        for group in group_by_slot(keys).values() {
            let keys: Vec<&str> = group.iter().map(|k| k.as_str()).collect();
            let _: i64 = self.bump.run(&mut conn, &keys, &[]).await?;
        }
        Ok(())
    }

    async fn ensure(
        &self,
        keys: &[String],
        fresh: u64,
        ttl: Duration,
    ) -> Result<Vec<u64>, CacheError> {
        let mut conn = self.connection().await?;
        let (fresh, ttl) = (fresh.to_string(), ms(ttl).to_string());
        let mut found = std::collections::HashMap::new();
        for group in group_by_slot(keys).values() {
            let ks: Vec<&str> = group.iter().map(|k| k.as_str()).collect();
            let reply: Vec<Vec<u8>> = self
                .ensure
                .run(&mut conn, &ks, &[fresh.as_bytes(), ttl.as_bytes()])
                .await?;
            for (k, v) in ks.into_iter().zip(ensured_versions(&reply, group.len())?) {
                found.insert(k, v);
            }
        }
        keys.iter()
            .map(|k| {
                found
                    .get(k.as_str())
                    .copied()
                    .ok_or_else(|| CacheError::Store("version snapshot incomplete".into()))
            })
            .collect()
    }

    async fn clear(&self, prefix: &str) -> Result<u64, CacheError> {
        let mut conn = self.connection().await?;
        let pattern = format!("{}:{{*", glob_escape(prefix));
        let mut removed = 0u64;
        for (host, port) in self.masters(&mut conn).await? {
            let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
            let mut cursor: u64 = 0;
            loop {
                let scan = Cmd::new()
                    .arg("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .clone();
                let (next, keys): (u64, Vec<String>) =
                    redis::from_redis_value(conn.route_command(scan, route.clone()).await?)?;
                for group in group_by_slot(&keys).values() {
                    let n: u64 = redis::cmd("UNLINK")
                        .arg(group)
                        .query_async(&mut conn)
                        .await?;
                    removed += n;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(removed)
    }

    async fn try_lease(&self, key: &str, token: &str, ttl: Duration) -> Result<bool, CacheError> {
        set_px(
            &mut self.connection().await?,
            key,
            token.as_bytes(),
            ttl,
            true,
        )
        .await
    }

    async fn release(&self, key: &str, token: &str) -> Result<(), CacheError> {
        let mut conn = self.connection().await?;
        let _: i64 = self
            .release
            .run(&mut conn, &[key], &[token.as_bytes()])
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), CacheError> {
        let mut conn = self.connection().await?;
        let v = conn
            .route_command(
                Cmd::new().arg("PING").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
            )
            .await?;
        match v {
            Value::SimpleString(s) if s == "PONG" => Ok(()),
            other => Err(CacheError::Store(format!(
                "unexpected PING reply {other:?}"
            ))),
        }
    }

    async fn server_id(&self) -> Result<Option<String>, CacheError> {
        // Not tracked per shard (see the `invalidation` module docs).
        Ok(None)
    }

    async fn used_memory(&self) -> Result<Option<u64>, CacheError> {
        let mut conn = self.connection().await?;
        let mut total = 0u64;
        for (host, port) in self.masters(&mut conn).await? {
            let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
            let info: String = redis::from_redis_value(
                conn.route_command(Cmd::new().arg("INFO").arg("memory").clone(), route)
                    .await?,
            )?;
            total += used_memory_of(&info).unwrap_or(0);
        }
        Ok(Some(total))
    }

    fn runs_scripts(&self) -> bool {
        true
    }

    async fn eval_script(
        &self,
        script: &Lua,
        keys: &[&str],
        args: &[i64],
    ) -> Result<Vec<i64>, CacheError> {
        // One script runs on one shard, routed by its first key: the caller
        // gives keys of one slot (the rate limiter gives one key per
        // decision); others fail with CROSSSLOT, a store error.
        let mut conn = self.connection().await?;
        script.run_ints(&mut conn, keys, args).await
    }
}

/// A cluster connection routed to one node: see [`ClusterStore::node_connection`].
pub(crate) struct NodeConnection {
    conn: ClusterConnection,
    host: String,
    port: u16,
}

impl NodeConnection {
    fn route(&self) -> SingleNodeRoutingInfo {
        SingleNodeRoutingInfo::ByAddress {
            host: self.host.clone(),
            port: self.port,
        }
    }
}

impl redis::aio::ConnectionLike for NodeConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> redis::RedisFuture<'a, Value> {
        let route = RoutingInfo::SingleNode(self.route());
        Box::pin(self.conn.route_command(cmd.clone(), route))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipe: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        let route = self.route();
        Box::pin(self.conn.route_pipeline(pipe.clone(), offset, count, route))
    }

    fn get_db(&self) -> i64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::{hash_tag, master_of_slot};

    #[test]
    fn the_master_of_a_slot_is_read_from_cluster_nodes() {
        let nodes = "\
a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7002@17002 master,fail - 0 0 2 connected 5461-10922
c3 127.0.0.1:7003@17003,host.example master - 0 0 3 connected 10923-16383
d4 127.0.0.1:7004@17004 slave a1 0 0 1 connected
e5 127.0.0.1:7005@17005 master - 0 0 4 connected 7000 [7001->-a1]
";
        assert_eq!(master_of_slot(nodes, 0), Some(("127.0.0.1".into(), 7001)));
        assert_eq!(
            master_of_slot(nodes, 5461),
            None,
            "a failed master serves nothing"
        );
        assert_eq!(
            master_of_slot(nodes, 16383),
            Some(("127.0.0.1".into(), 7003))
        );
        assert_eq!(
            master_of_slot(nodes, 7000),
            Some(("127.0.0.1".into(), 7005))
        );
    }

    #[test]
    fn hash_tags() {
        assert_eq!(hash_tag("p:{t:acme}:e:f:0:h1"), "t:acme");
        assert_eq!(hash_tag("p:{g}:g"), "g");
        assert_eq!(hash_tag("p:{}:x"), "p:{}:x");
        assert_eq!(hash_tag("plain"), "plain");
    }
}
