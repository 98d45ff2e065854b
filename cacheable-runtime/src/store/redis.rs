//! The Redis store: one multiplexed `ConnectionManager` (reconnects by itself),
//! created lazily so that an unreachable server is not a build error.
//! Scripts run by `EVALSHA`, falling back to `EVAL` on `NOSCRIPT` ([`Lua`]).
//! The cache wraps every call in its own timeout and circuit breaker.
//!
//! This file holds the Lua scripts and reply helpers, shared with the
//! cluster store; `redis/connection.rs` holds [`RedisStore`] itself, its TLS
//! settings and its `Store` implementation.

use std::fmt;
use std::time::Duration;

use redis::Script;

use super::{Expect, Put};
use crate::error::CacheError;

mod connection;

pub(crate) use connection::{RedisStore, TlsSettings, mask_url};

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
    /// reply as integers (`Store::eval_script`): an array of integers, or
    /// one integer as a one-element vector (the GCRA script's reply).
    pub(super) async fn run_ints(
        &self,
        conn: &mut impl redis::aio::ConnectionLike,
        keys: &[&str],
        args: &[i64],
    ) -> Result<Vec<i64>, CacheError> {
        let args: Vec<String> = args.iter().map(i64::to_string).collect();
        let args: Vec<&[u8]> = args.iter().map(String::as_bytes).collect();
        match self.run(conn, keys, &args).await? {
            redis::Value::Int(n) => Ok(vec![n]),
            other => Ok(redis::from_redis_value(other)?),
        }
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

/// The values of an `MGET` reply, each bulk string moved out of the reply
/// (redis-rs's generic conversion goes through more steps per element).
fn mget_reply(reply: redis::Value) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
    let redis::Value::Array(items) = reply else {
        return Err(CacheError::Store(format!(
            "MGET answered {}, not an array",
            reply_kind(&reply)
        )));
    };
    items
        .into_iter()
        .map(|item| match item {
            redis::Value::BulkString(bytes) => Ok(Some(bytes)),
            redis::Value::Nil => Ok(None),
            other => Err(CacheError::Store(format!(
                "MGET answered {} for a key",
                reply_kind(&other)
            ))),
        })
        .collect()
}

/// The kind of a reply, for an error message (never its content).
fn reply_kind(v: &redis::Value) -> &'static str {
    match v {
        redis::Value::Nil => "nil",
        redis::Value::Int(_) => "an integer",
        redis::Value::BulkString(_) => "a bulk string",
        redis::Value::Array(_) => "an array",
        redis::Value::SimpleString(_) => "a simple string",
        redis::Value::Okay => "OK",
        redis::Value::ServerError(_) => "an error",
        _ => "another reply type",
    }
}

#[cfg(test)]
mod tests {
    use super::mget_reply;
    use redis::Value;

    /// Values and missing keys come through; any other reply is a typed
    /// error, never a panic or a value.
    #[test]
    fn mget_replies_are_read_or_refused() {
        let ok = mget_reply(Value::Array(vec![
            Value::BulkString(b"v".to_vec()),
            Value::Nil,
        ]));
        assert_eq!(ok.unwrap(), vec![Some(b"v".to_vec()), None]);
        assert!(mget_reply(Value::Array(vec![Value::Int(1)])).is_err());
        assert!(mget_reply(Value::Nil).is_err());
        assert_eq!(mget_reply(Value::Array(Vec::new())).unwrap(), Vec::new());
    }
}
