//! The Redis store's connection side: [`RedisStore`] (one multiplexed
//! `ConnectionManager`, created lazily), its TLS settings, URL masking for
//! logs, and its `Store` implementation. The scripts and reply helpers it
//! runs are the parent `store::redis`, shared with the cluster store.

use std::fmt;
use std::time::Duration;

use redis::Client;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{
    BUMP, ENSURE, Lua, PUT, PutArgs, RELEASE, ensured_versions, glob_escape, ms, put_outcome,
    set_px, used_memory_of,
};
use crate::error::CacheError;
use crate::store::{Put, Store};

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

    /// A client for `info` (a URL or a parsed connection info) with these
    /// certificates (the cluster's local tier connects to one node this way).
    pub(crate) fn client(
        &self,
        info: impl redis::IntoConnectionInfo,
    ) -> redis::RedisResult<Client> {
        #[cfg(feature = "tls")]
        if let Some(certs) = self.certificates() {
            return Client::build_with_tls(info, certs);
        }
        Client::open(info)
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
/// the fragment of a unix URL are replaced with `***` (a TCP URL with a fragment is not printed). A URL that does not parse, or that
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
    // Nor has a TCP URL a fragment: a `#` there is a raw `#` in a password,
    // and the host before it may be a piece of that password.
    if !unix && parsed.fragment().is_some() {
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

impl Store for RedisStore {
    async fn mget(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        let mut conn = self.conn.clone();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        if let [key] = keys {
            // A single key is a GET: redis-rs parses a bulk reply far faster
            // than an array (callgrind: ~4k instructions less per call).
            let mut cmd = redis::Cmd::with_capacity(2, key.len() + 3);
            cmd.arg("GET").arg(key);
            return Ok(vec![cmd.query_async(&mut conn).await?]);
        }
        // Sized up front: growing the command's buffers key by key cost
        // more than building the keys (callgrind).
        let data: usize = keys.iter().map(String::len).sum::<usize>() + 4;
        let mut cmd = redis::Cmd::with_capacity(keys.len() + 1, data);
        cmd.arg("MGET").arg(keys);
        let reply: redis::Value = cmd.query_async(&mut conn).await?;
        super::mget_reply(reply)
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
