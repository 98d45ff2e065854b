//! The Redis store: one multiplexed `ConnectionManager` (reconnects by itself),
//! created lazily so that an unreachable server is not a build error.
//! Scripts run by `EVALSHA`, falling back to `EVAL` on `NOSCRIPT` ([`Lua`]).
//! The cache wraps every call in its own timeout and circuit breaker.

use std::fmt;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};

use super::{Expect, Put, Store};
use crate::error::CacheError;

/// Compare-and-set write of an entry.
///
/// `KEYS[1]` the entry, then `ARGV[5]` quota keys, then the version keys the
/// entry depends on (those in its slot); `ARGV[7..]` the versions the value
/// was computed under, in the same order. A version key that no longer holds
/// its version refuses the write (an invalidation ran during the computation,
/// or the counter expired or was evicted: the entry could never be read
/// anyway). Version keys are never created here, only kept alive as long as
/// the entry.
pub(super) const PUT: &str = r"
local q = tonumber(ARGV[5])
for i = 2 + q, #KEYS do
  if redis.pcall('GET', KEYS[i]) ~= ARGV[5 + i - q] then return 0 end
end
local cur = redis.call('GET', KEYS[1])
local exp = ARGV[3]
if exp ~= '*' then
  if cur then
    if exp == '' or string.sub(cur, 2, 17) ~= string.sub(exp, 2) then return 0 end
  elseif exp ~= '' then
    return 0
  end
end
if q > 0 then
  local size = string.len(ARGV[1])
  local used = redis.call('INCRBY', KEYS[2], size)
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[6]) * 2)
  if used + tonumber(redis.call('GET', KEYS[3]) or '0') > tonumber(ARGV[4]) then
    redis.call('DECRBY', KEYS[2], size)
    return -1
  end
end
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
for i = 2 + q, #KEYS do
  local p = redis.call('PTTL', KEYS[i])
  if p >= 0 and p < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
end
return 1
";

/// Snapshots version counters: the value of every key, after setting a
/// missing or unreadable one to `ARGV[1]` (a fresh version, see
/// `envelope::fresh_version`) with a life of `ARGV[2]` ms.
pub(super) const ENSURE: &str = r"
local out = {}
for i = 1, #KEYS do
  local v = redis.pcall('GET', KEYS[i])
  if type(v) ~= 'string' or string.len(v) > 19 or not string.match(v, '^[1-9]%d*$') then
    redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
    v = ARGV[1]
  end
  out[i] = v
end
return out
";

/// A Lua script run by `EVALSHA`, falling back to `EVAL` on `NOSCRIPT`.
///
/// redis-rs' `Script` answers `NOSCRIPT` with a `SCRIPT LOAD` that a cluster
/// connection sends to every node, and fails while one node is down (right
/// after a failover, when the promoted replica has no scripts yet). `EVAL`
/// goes to the key's shard only and caches the script there.
pub(crate) struct Lua {
    src: &'static str,
    sha: String,
}

impl Lua {
    pub(crate) fn new(src: &'static str) -> Self {
        Self {
            src,
            sha: Script::new(src).get_hash().to_owned(),
        }
    }

    /// Runs the script with `keys` (all in one slot) and `args`.
    pub(crate) async fn run<T: redis::FromRedisValue>(
        &self,
        conn: &mut impl redis::aio::ConnectionLike,
        keys: &[&str],
        args: &[&[u8]],
    ) -> redis::RedisResult<T> {
        let cmd = |verb: &str, body: &str| {
            let mut c = redis::cmd(verb);
            c.arg(body).arg(keys.len()).arg(keys);
            for a in args {
                c.arg(*a);
            }
            c
        };
        match cmd("EVALSHA", &self.sha).query_async(conn).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                cmd("EVAL", self.src).query_async(conn).await
            }
            other => other,
        }
    }

    /// Runs the script with integer `args` (sent in decimal) and reads the
    /// reply as an array of integers (`Store::eval_script`).
    pub(super) async fn run_ints(
        &self,
        conn: &mut impl redis::aio::ConnectionLike,
        keys: &[&str],
        args: &[i64],
    ) -> Result<Vec<i64>, CacheError> {
        let args: Vec<String> = args.iter().map(i64::to_string).collect();
        let args: Vec<&[u8]> = args.iter().map(String::as_bytes).collect();
        Ok(self.run(conn, keys, &args).await?)
    }
}

impl fmt::Debug for Lua {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lua").field("sha", &self.sha).finish()
    }
}

/// `SET key value PX ttl` (with `NX` when `only_new`): whether it was set.
pub(super) async fn set_px(
    conn: &mut impl redis::aio::ConnectionLike,
    key: &str,
    value: &[u8],
    ttl: Duration,
    only_new: bool,
) -> Result<bool, CacheError> {
    let mut cmd = redis::cmd("SET");
    cmd.arg(key).arg(value).arg("PX").arg(ms(ttl));
    if only_new {
        cmd.arg("NX");
    }
    let reply: Option<String> = cmd.query_async(conn).await?;
    Ok(reply.is_some())
}

/// `used_memory` from an `INFO memory` reply.
pub(super) fn used_memory_of(info: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Interprets the PUT script's reply.
pub(super) fn put_outcome(reply: i64, put: &Put<'_>) -> Result<bool, CacheError> {
    match reply {
        1 => Ok(true),
        -1 => Err(CacheError::Quota {
            limit: put.quota.as_ref().map_or(0, |q| q.limit),
        }),
        _ => Ok(false),
    }
}

/// The ARGV of the PUT script, owned: ttl, expectation, quota (limit, key
/// count, window), then the dependency versions as decimal.
pub(super) struct PutArgs {
    head: [Vec<u8>; 5],
    versions: Vec<String>,
}

impl PutArgs {
    /// The arguments of `put`, with `versions` for its version keys.
    pub(super) fn new(put: &Put<'_>, versions: &[u64]) -> Self {
        let [limit, count, window] = quota_args(put);
        Self {
            head: [
                ms(put.ttl).to_string().into_bytes(),
                encode_expect(&put.expect),
                limit.into_bytes(),
                count.into_bytes(),
                window.into_bytes(),
            ],
            versions: versions.iter().map(u64::to_string).collect(),
        }
    }

    /// `ARGV`: the value, then the rest.
    pub(super) fn with_value<'a>(&'a self, value: &'a [u8]) -> Vec<&'a [u8]> {
        let mut args = Vec::with_capacity(6 + self.versions.len());
        args.push(value);
        args.extend(self.head.iter().map(Vec::as_slice));
        args.extend(self.versions.iter().map(String::as_bytes));
        args
    }
}

/// The versions an ENSURE script returned: one valid version per key, or a
/// store error for a reply of another shape (never a panic).
pub(super) fn ensured_versions(reply: &[Vec<u8>], expected: usize) -> Result<Vec<u64>, CacheError> {
    if reply.len() != expected {
        return Err(CacheError::Store(format!(
            "version snapshot: {} values for {expected} keys",
            reply.len()
        )));
    }
    reply
        .iter()
        .map(|raw| {
            super::parse_version(Some(raw))
                .ok_or_else(|| CacheError::Store("version snapshot: not a version".into()))
        })
        .collect()
}

/// ARGV[4..=6] of the PUT script: quota limit, number of quota keys, window ms.
pub(super) fn quota_args(put: &Put<'_>) -> [String; 3] {
    match &put.quota {
        Some(q) => [
            q.limit.to_string(),
            "2".to_owned(),
            ms(q.window).to_string(),
        ],
        None => ["0".to_owned(), "0".to_owned(), "0".to_owned()],
    }
}

/// Invalidates: increments every version counter that exists; deletes one
/// that cannot be incremented (garbage, a wrong type). A missing counter
/// stays missing: no entry can match it, and creating it here would only
/// grow the keyspace. `allow-oom`: an invalidation must land even when Redis
/// is out of memory under `noeviction` (it never grows memory).
pub(super) const BUMP: &str = r"#!lua flags=allow-oom
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local r = redis.pcall('INCR', KEYS[i])
    if type(r) ~= 'number' then redis.call('DEL', KEYS[i]) end
  end
end
return #KEYS
";

pub(super) const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

pub(crate) struct RedisStore {
    conn: ConnectionManager,
    /// For the dedicated connections of the local tier's subscription
    /// (boxed: a client is large, and the store sits in every cache).
    client: std::sync::Arc<Client>,
    display_url: String,
    put: Lua,
    bump: Lua,
    ensure: Lua,
    release: Lua,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.display_url)
            .finish_non_exhaustive()
    }
}

/// TLS settings of the builder: a root certificate to trust instead of the
/// system's, and a client certificate for mutual TLS (feature `tls`).
#[derive(Clone, Default)]
pub(crate) struct TlsSettings {
    #[cfg(feature = "tls")]
    pub root_cert: Option<Vec<u8>>,
    #[cfg(feature = "tls")]
    pub client_cert: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsSettings {
    #[cfg(feature = "tls")]
    pub(crate) fn certificates(&self) -> Option<redis::TlsCertificates> {
        if self.root_cert.is_none() && self.client_cert.is_none() {
            return None;
        }
        Some(redis::TlsCertificates {
            client_tls: self.client_cert.clone().map(|(client_cert, client_key)| {
                redis::ClientTlsConfig {
                    client_cert,
                    client_key,
                }
            }),
            root_cert: self.root_cert.clone(),
        })
    }

    fn client(&self, url: &str) -> redis::RedisResult<Client> {
        #[cfg(feature = "tls")]
        if let Some(certs) = self.certificates() {
            return Client::build_with_tls(url, certs);
        }
        Client::open(url)
    }
}

/// `redis://user:secret@host/` → `redis://user:***@host/`: the form of a URL
/// that may be printed (`Debug`, errors, logs).
///
/// The URL is parsed with the `url` crate, as redis-rs parses it, so the
/// password is exactly what redis-rs would send, whatever it contains (`/`,
/// `@`, `:`, `#`, `?`, percent-escapes). A password, a user name given without
/// a password (redis-rs may send it as the password), query parameters other
/// than `db`, `protocol` and `insecure` (`redis+unix:///s.sock?pass=..`) and
/// the fragment are replaced with `***`. A URL that does not parse, or that
/// parses only as something redis-rs cannot use (no host, a path that is not
/// a database number: where a raw `/` or `@` split a password), is printed as
/// `<unparsable url>`, never raw.
pub(crate) fn mask_url(url: &str) -> String {
    const MASK: &str = "***";
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "<unparsable url>".to_owned();
    };
    // A TCP URL without a host (`redis:/user:pw@h`, one slash) parses, with
    // the credentials in its path: not a URL redis-rs can use, never printed.
    let unix = matches!(parsed.scheme(), "unix" | "redis+unix");
    if !unix && parsed.host_str().is_none_or(str::is_empty) {
        return "<unparsable url>".to_owned();
    }
    // `set_password`/`set_username` fail only on URLs without a host
    // (`cannot-be-a-base`); such a URL is not printed at all.
    let masked_userinfo = if parsed.password().is_some() {
        parsed.set_password(Some(MASK))
    } else if parsed.username().is_empty() {
        Ok(())
    } else {
        parsed.set_username(MASK)
    };
    if masked_userinfo.is_err() {
        return "<unparsable url>".to_owned();
    }
    // The path of a TCP URL is the database number; anything else there is
    // a piece of a malformed URL (a raw `/` or `@` in a password).
    if !unix
        && !parsed
            .path()
            .trim_start_matches('/')
            .bytes()
            .all(|b| b.is_ascii_digit())
    {
        return "<unparsable url>".to_owned();
    }
    if parsed.query().is_some() {
        // Only known, harmless parameters are shown; any other (`pass`,
        // or a piece of a malformed URL) is masked, name and value.
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| match &*k {
                "db" | "protocol" | "insecure" => (k.into_owned(), v.into_owned()),
                _ => (MASK.to_owned(), MASK.to_owned()),
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    if parsed.fragment().is_some() {
        parsed.set_fragment(Some(MASK));
    }
    parsed.to_string()
}

impl RedisStore {
    /// Parses the URL and prepares a lazy connection; no I/O happens here.
    pub(crate) fn new(
        url: &str,
        op_timeout: Duration,
        tls: &TlsSettings,
    ) -> Result<Self, CacheError> {
        let display_url = mask_url(url);
        let client = tls
            .client(url)
            .map_err(|e| CacheError::Config(format!("redis url `{display_url}`: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(op_timeout.max(Duration::from_millis(200))))
            // No response timeout here: the cache wraps every call in its own
            // (one timer per call, not two).
            .set_response_timeout(None)
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| CacheError::Config(format!("redis connection manager: {e}")))?;
        Ok(Self {
            conn,
            client: std::sync::Arc::new(client),
            display_url,
            put: Lua::new(PUT),
            bump: Lua::new(BUMP),
            ensure: Lua::new(ENSURE),
            release: Lua::new(RELEASE),
        })
    }

    /// The client, for dedicated connections (the local tier's subscription).
    pub(crate) fn client(&self) -> std::sync::Arc<Client> {
        std::sync::Arc::clone(&self.client)
    }

    /// A clone of the multiplexed connection (cheap), for the memory
    /// report's `INFO` and `SCAN` (`monitor::memory`).
    pub(crate) fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }
}

/// The compare-and-set expectation as the PUT script reads it (ARGV[3]).
pub(super) fn encode_expect(expect: &Expect) -> Vec<u8> {
    match expect {
        Expect::Any => b"*".to_vec(),
        Expect::Absent => Vec::new(),
        Expect::Stamp(s) => {
            let mut v = Vec::with_capacity(s.len() + 1);
            v.push(b'=');
            v.extend_from_slice(s);
            v
        }
    }
}

pub(super) fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

pub(super) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl Store for RedisStore {
    async fn mget(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        let mut conn = self.conn.clone();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        if let [key] = keys {
            // A single key is a GET: redis-rs parses a bulk reply far faster
            // than an array (callgrind: ~4k instructions less per call).
            return Ok(vec![
                redis::cmd("GET").arg(key).query_async(&mut conn).await?,
            ]);
        }
        Ok(redis::cmd("MGET").arg(keys).query_async(&mut conn).await?)
    }

    async fn put(&self, put: &Put<'_>) -> Result<bool, CacheError> {
        let mut keys = vec![put.key];
        if let Some(q) = &put.quota {
            keys.extend(q.keys.iter().map(String::as_str));
        }
        keys.extend(put.deps.iter().map(String::as_str));
        let args = PutArgs::new(put, put.versions);
        let reply: i64 = self
            .put
            .run(&mut self.conn.clone(), &keys, &args.with_value(put.value))
            .await?;
        put_outcome(reply, put)
    }

    async fn bump(&self, keys: &[String]) -> Result<(), CacheError> {
        if keys.is_empty() {
            return Ok(());
        }
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let _: i64 = self.bump.run(&mut self.conn.clone(), &keys, &[]).await?;
        Ok(())
    }

    async fn ensure(
        &self,
        keys: &[String],
        fresh: u64,
        ttl: Duration,
    ) -> Result<Vec<u64>, CacheError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let (fresh, ttl) = (fresh.to_string(), ms(ttl).to_string());
        let reply: Vec<Vec<u8>> = self
            .ensure
            .run(
                &mut self.conn.clone(),
                &keys,
                &[fresh.as_bytes(), ttl.as_bytes()],
            )
            .await?;
        ensured_versions(&reply, keys.len())
    }

    async fn clear(&self, prefix: &str) -> Result<u64, CacheError> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}:{{*", glob_escape(prefix));
        let mut cursor: u64 = 0;
        let mut removed = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                let n: u64 = redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await?;
                removed += n;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }

    async fn try_lease(&self, key: &str, token: &str, ttl: Duration) -> Result<bool, CacheError> {
        set_px(&mut self.conn.clone(), key, token.as_bytes(), ttl, true).await
    }

    async fn release(&self, key: &str, token: &str) -> Result<(), CacheError> {
        let _: i64 = self
            .release
            .run(&mut self.conn.clone(), &[key], &[token.as_bytes()])
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), CacheError> {
        let mut conn = self.conn.clone();
        let pong: String = redis::cmd("PING").query_async(&mut conn).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(CacheError::Store(format!("unexpected PING reply `{pong}`")))
        }
    }

    async fn server_id(&self) -> Result<Option<String>, CacheError> {
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut self.conn.clone())
            .await?;
        info.lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .map(|id| Some(id.trim().to_owned()))
            .ok_or_else(|| CacheError::Store("INFO server has no run_id".into()))
    }

    async fn used_memory(&self) -> Result<Option<u64>, CacheError> {
        let mut conn = self.conn.clone();
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut conn)
            .await?;
        Ok(used_memory_of(&info))
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
        script.run_ints(&mut self.conn.clone(), keys, args).await
    }
}

#[cfg(test)]
mod tests {
    use super::mask_url;

    #[test]
    fn masks_passwords() {
        assert_eq!(mask_url("redis://u:secret@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(mask_url("rediss://:secret@h/"), "rediss://:***@h/");
        assert_eq!(mask_url("redis://h:6379/"), "redis://h:6379/");
        assert_eq!(mask_url("redis://secret@h"), "redis://***@h");
    }

    #[test]
    fn masks_passwords_with_delimiters_and_escapes() {
        // `@` in the password: the authority ends at the last `@`.
        assert_eq!(mask_url("redis://u:p@ss@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(mask_url("redis://u:p%2Fw%40d@h/"), "redis://u:***@h/");
        // `/`, `#` or `?` unescaped end the authority: redis-rs cannot use
        // such a URL either; it is never printed.
        for raw in [
            "redis://u:pa/ss@h/",
            "redis://u:pa#ss@h/",
            "redis://u:pa?ss@h/",
            "not a url with secret",
            "redis:/u:secret@h/",
            "redis:u:secret@h",
            "redis://u:x@h/secret@h2/0",
            "",
        ] {
            assert_eq!(mask_url(raw), "<unparsable url>", "{raw}");
        }
        assert_eq!(
            mask_url("redis+unix:///tmp/r.sock?db=1&pass=secret#frag"),
            "redis+unix:///tmp/r.sock?db=1&***=***#***"
        );
    }
}
