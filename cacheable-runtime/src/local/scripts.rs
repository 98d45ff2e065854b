//! The local tier's Redis side: key names, the Lua scripts of the protocol
//! (steps 1, 2, 4 and 5 in the module docs of `local`) and the message format.
//!
//! The keys live under `{prefix}:local:`, outside `{prefix}:{…`, so that
//! `clear()` (which deletes `{prefix}:{*`) never drops the registry. On a
//! Redis Cluster the registry, the evicted ids and the acknowledgement sets carry one hash
//! tag, `{<prefix>.local}` (after `:local:`, so still outside `{prefix}:{…`),
//! which puts them in one slot for the `WAIT` and `EVICT` scripts.

use std::sync::OnceLock;

use crate::store::redis::Lua;

/// The names of one prefix's registry, evicted ids, channel,
/// acknowledgement sets and acknowledgement reply channels.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    pub registry: String,
    /// Ids evicted from renewing (score: their lease expiry), which stay
    /// in the registry until their lease runs out.
    pub evicted: String,
    pub channel: String,
    ack_prefix: String,
    reply_prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            registry: format!("{prefix}:local:instances"),
            evicted: format!("{prefix}:local:evicted"),
            channel: format!("{prefix}:local:invalidations"),
            ack_prefix: format!("{prefix}:local:ack:"),
            reply_prefix: format!("{prefix}:local:acks:"),
        }
    }

    /// The names on a Redis Cluster: the registry, the evicted ids and the
    /// acknowledgement sets share the hash tag `{<prefix>.local}` (a prefix
    /// has no braces); the channels are the single node's (a classic
    /// `PUBLISH` reaches every node of a cluster, whatever its name).
    pub(crate) fn cluster(prefix: &str) -> Self {
        Self {
            registry: format!("{prefix}:local:{{{prefix}.local}}:instances"),
            evicted: format!("{prefix}:local:{{{prefix}.local}}:evicted"),
            channel: format!("{prefix}:local:invalidations"),
            ack_prefix: format!("{prefix}:local:{{{prefix}.local}}:ack:"),
            reply_prefix: format!("{prefix}:local:acks:"),
        }
    }

    /// The channel an invalidator listens on for pushed acknowledgements
    /// under `reply` (a message's `reply` field): always inside the prefix,
    /// whatever a message names.
    pub(crate) fn reply_channel(&self, reply: &str) -> String {
        format!("{}{reply}", self.reply_prefix)
    }

    /// The acknowledgement set of message `id`.
    pub(crate) fn ack(&self, id: &str) -> String {
        format!("{}{id}", self.ack_prefix)
    }
}

/// Redis server time in ms, as every script reads it (a macro, for `concat!`).
macro_rules! now {
    () => {
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"
    };
}
const NOW: &str = now!();

/// `KEYS[1]` registry; `ARGV[1]` id, `ARGV[2]` lease ms. Registers (after
/// dropping expired registrations); returns 1.
const REGISTER: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
if redis.call('PTTL', KEYS[1]) < 2 * tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[2]))
end
return 1
";

/// `KEYS[1]` registry, `KEYS[2]` evicted ids; `ARGV[1]` id, `ARGV[2]`
/// lease ms. Renews a lease that has not run out and was not evicted; 0
/// otherwise (the instance must register again with a new id, dropping its
/// tier). An evicted id stays in the registry: the instance serves until
/// this refusal reaches it, and invalidations meanwhile must wait for it.
const RENEW: &str = r"
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) > now then
  if redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  if redis.call('PTTL', KEYS[1]) < 2 * tonumber(ARGV[2]) then
    redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[2]))
  end
  return 1
end
redis.call('ZREM', KEYS[1], ARGV[1])
return 0
";

/// `KEYS[1]` registry, `KEYS[2]` acknowledgement set; `ARGV` ids. Returns
/// the ids that neither acknowledged nor have a lease that ran out.
/// Public as `events::WAIT_SCRIPT`, for publishers in other languages.
pub(crate) const WAIT_FULL: &str = concat!(
    now!(),
    r"
local out = {}
for i = 1, #ARGV do
  if redis.call('SISMEMBER', KEYS[2], ARGV[i]) == 0 then
    local s = redis.call('ZSCORE', KEYS[1], ARGV[i])
    if s and tonumber(s) > now then out[#out + 1] = ARGV[i] end
  end
end
return out
"
);

/// Like `WAIT` (`KEYS[3]` evicted ids), but evicts the ids still missing:
/// their next renewal is refused, and they stay in the registry until their
/// lease runs out, so that every invalidation published meanwhile waits
/// for them too (they still serve locally until the refusal reaches
/// them). Returns the ms until the last of their leases runs out (0 when
/// none).
const EVICT: &str = r"
local wait = 0
for i = 1, #ARGV do
  if redis.call('SISMEMBER', KEYS[2], ARGV[i]) == 0 then
    local s = redis.call('ZSCORE', KEYS[1], ARGV[i])
    if s and tonumber(s) > now then
      redis.call('ZADD', KEYS[3], s, ARGV[i])
      if tonumber(s) - now > wait then wait = tonumber(s) - now end
    end
  end
end
if wait > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('PTTL', KEYS[3]) < wait + 1000 then
    redis.call('PEXPIRE', KEYS[3], wait + 1000)
  end
end
return wait
";

/// `KEYS[1]` acknowledgement set; `ARGV[1]` id, `ARGV[2]` life ms; when the
/// message named a reply, `ARGV[3]` its channel and `ARGV[4]` the message
/// id. The `SADD` (the durable acknowledgement the `WAIT` script reads)
/// comes first; the `PUBLISH` only wakes the invalidator, which then runs
/// `WAIT` and finds the `SADD` done.
const ACK: &str = r"
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if ARGV[3] then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
return 1
";

/// The invalidation script of a Redis cache: `KEYS[1..n-1]` version keys
/// bumped exactly as the store's `BUMP`, `KEYS[n]` the registry; `ARGV[1]`
/// the channel, `ARGV[2]` the message. Publishes, and returns the ids whose
/// lease runs (step 2). On a Redis Cluster, where the version keys span
/// slots, it runs with the registry as its only key, after the per-slot
/// bumps have returned: then it only reads the registry and publishes. `allow-oom`, as `BUMP`: an invalidation lands even
/// when Redis is out of memory. Public as `events::INVALIDATE_SCRIPT`: other
/// services run it as it is (the recipe is in the docs of `events`).
pub(crate) const BUMP_ANNOUNCE: &str = r"#!lua flags=allow-oom
for i = 1, #KEYS - 1 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local r = redis.pcall('INCR', KEYS[i])
    if type(r) ~= 'number' then redis.call('DEL', KEYS[i]) end
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local live = redis.call('ZRANGEBYSCORE', KEYS[#KEYS], '(' .. now, '+inf')
redis.call('PUBLISH', ARGV[1], ARGV[2])
return live
";

/// The scripts, hashed once per process.
pub(crate) struct Scripts {
    pub register: Lua,
    pub renew: Lua,
    pub wait: Lua,
    pub evict: Lua,
    pub ack: Lua,
    pub bump_announce: Lua,
}

fn with_now(body: &str) -> &'static str {
    Box::leak(format!("{NOW}{body}").into_boxed_str())
}

/// The scripts (built on first use; a handful of static strings).
pub(crate) fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        register: Lua::new(with_now(REGISTER)),
        renew: Lua::new(with_now(RENEW)),
        wait: Lua::new(WAIT_FULL),
        evict: Lua::new(with_now(EVICT)),
        ack: Lua::new(ACK),
        bump_announce: Lua::new(BUMP_ANNOUNCE),
    })
}

/// A fresh random id (32 hex digits), for messages and registrations.
pub(crate) fn new_id() -> String {
    format!("{:032x}", u128::from_le_bytes(crate::envelope::new_stamp()))
}

/// What a message asks receivers to drop.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Drop {
    /// Entries depending on these version keys.
    Keys(Vec<String>),
    /// Everything.
    All,
}

/// The message of invalidation `id`, naming the invalidator's `reply` id
/// when it listens for pushed acknowledgements, and its own registration
/// (`from`) when it has one, which it does not wait for (see the format in
/// the module docs of `local`).
pub(crate) fn message(id: &str, reply: Option<&str>, from: Option<&str>, drop: &Drop) -> String {
    let mut body = match drop {
        Drop::Keys(keys) => serde_json::json!({ "v": 1, "id": id, "keys": keys }),
        Drop::All => serde_json::json!({ "v": 1, "id": id, "all": true }),
    };
    if let Some(reply) = reply {
        body["reply"] = reply.into();
    }
    if let Some(from) = from {
        body["from"] = from.into();
    }
    body.to_string()
}

/// A parsed message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Message {
    /// The id to acknowledge, when there is one.
    pub id: Option<String>,
    /// Where to push the acknowledgement (see [`Keys::reply_channel`]), when
    /// the invalidator listens.
    pub reply: Option<String>,
    /// The registration of the invalidator, when it names one: that
    /// instance applied the message itself and does not wait for its own
    /// acknowledgement.
    pub from: Option<String>,
    /// What to drop.
    pub drop: Drop,
}

/// An id field: 1 to 64 characters; a reply id also only `[0-9A-Za-z_-]`
/// (it becomes part of a channel name).
fn id_field(v: &serde_json::Value, name: &str, strict: bool) -> Option<String> {
    v.get(name)
        .and_then(serde_json::Value::as_str)
        .filter(|id| !id.is_empty() && id.len() <= 64)
        .filter(|id| {
            !strict
                || id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
        .map(str::to_owned)
}

/// Parses a message: its id (to acknowledge, when there is one), its reply
/// id and what to drop. Anything unexpected drops everything (an unusable
/// `reply` only costs the invalidator its wake-up: it polls).
pub(crate) fn parse(raw: &[u8]) -> Message {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(raw) else {
        return Message {
            id: None,
            reply: None,
            from: None,
            drop: Drop::All,
        };
    };
    let id = id_field(&v, "id", false);
    let reply = id_field(&v, "reply", true);
    let from = id_field(&v, "from", false);
    let keys = v
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .and_then(|a| {
            a.iter()
                .map(|k| k.as_str().map(str::to_owned))
                .collect::<Option<Vec<String>>>()
        });
    let drop = match keys {
        Some(keys) if v.get("all").is_none() => Drop::Keys(keys),
        _ => Drop::All,
    };
    Message {
        id,
        reply,
        from,
        drop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_share_one_slot_outside_what_clear_deletes() {
        use crate::store::cluster::hash_tag;
        let k = Keys::cluster("app.v1");
        assert_eq!(k.registry, "app.v1:local:{app.v1.local}:instances");
        assert_eq!(hash_tag(&k.registry), "app.v1.local");
        assert_eq!(hash_tag(&k.ack("ab")), hash_tag(&k.registry));
        assert_eq!(hash_tag(&k.evicted), hash_tag(&k.registry));
        for name in [&k.registry, &k.evicted, &k.ack("ab"), &k.channel] {
            assert!(!name.starts_with("app.v1:{"), "{name} is not cleared");
        }
        let single = Keys::new("app.v1");
        assert_eq!(single.registry, "app.v1:local:instances");
        assert_eq!(single.channel, k.channel);
    }

    #[test]
    fn messages_round_trip_and_garbage_drops_everything() {
        let msg = |id: Option<&str>, reply: Option<&str>, drop| Message {
            id: id.map(str::to_owned),
            reply: reply.map(str::to_owned),
            from: None,
            drop,
        };
        let keys = || Drop::Keys(vec!["p:{t:61}:g".into(), "p:{a}:t:x\"y".into()]);
        let m = message("ab", None, None, &keys());
        assert_eq!(parse(m.as_bytes()), msg(Some("ab"), None, keys()));
        let m = message("ab", Some("r1"), None, &keys());
        assert_eq!(parse(m.as_bytes()), msg(Some("ab"), Some("r1"), keys()));
        let m = message("ab", Some("r1"), Some("i-7"), &keys());
        assert_eq!(
            parse(m.as_bytes()),
            Message {
                from: Some("i-7".into()),
                ..msg(Some("ab"), Some("r1"), keys())
            }
        );
        assert_eq!(
            parse(message("cd", None, None, &Drop::All).as_bytes()),
            msg(Some("cd"), None, Drop::All)
        );
        assert_eq!(parse(b"not json"), msg(None, None, Drop::All));
        assert_eq!(
            parse(br#"{"id":"x","keys":[1]}"#),
            msg(Some("x"), None, Drop::All)
        );
        // A reply that would leave the prefix's channels is ignored, the
        // message is not.
        assert_eq!(
            parse(br#"{"v":1,"id":"x","reply":"a:b*","keys":[]}"#),
            msg(Some("x"), None, Drop::Keys(vec![]))
        );
    }
}
