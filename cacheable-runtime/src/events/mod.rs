//! Event-based invalidation: between services that share the cache's Redis,
//! and from the database (`postgres` feature: [`postgres`]).
//!
//! # Between services
//!
//! Services whose caches use the same Redis and the same `prefix`
//! invalidate each other's entries, Redis entries and local tiers
//! (`CacheBuilder::local_cache`) alike, with no extra setup: every
//! invalidation of a Redis cache ([`Cache::delete`],
//! [`Cache::delete_by_tags`], [`Cache::delete_by_tags_all_tenants`],
//! [`Cache::delete_by_tenant`], [`Cache::clear`], `#[cache_evict]`) bumps
//! the version keys and announces them on the prefix's invalidation
//! channel, and returns once every live local tier has dropped what
//! depends on them. The other services' configuration (TTLs, codecs, local
//! tier or not) does not matter. A Rust service without the tag macros
//! uses those same methods: `delete_by_tags` *is* the event API.
//!
//! ## From another language
//!
//! An invalidation is one script call that bumps version counters and
//! publishes, then (for strict guarantee 2 with local tiers) a wait for
//! acknowledgements. A bare `PUBLISH` is not enough: Redis readers would
//! still see the old entries, whose version counters did not move.
//!
//! **Version keys** (the key layout is in [`crate::debug`]), with `<p>` the
//! prefix (default `cacheable`) and `<tenant>`, `<tag>`, `<key>` escaped
//! (`[A-Za-z0-9_.-]` stay, every other byte becomes `%XX`, upper-case hex):
//!
//! ```text
//! <p>:{t:<tenant>}:v:t:<tag>   tag <tag> in one tenant        (delete_by_tags)
//! <p>:{g}:v:t:<tag>            tag <tag> outside any tenant
//! <p>:{a}:v:t:<tag>            tag <tag> in every tenant      (delete_by_tags_all_tenants)
//! <p>:{t:<tenant>}:v:g         everything of one tenant       (delete_by_tenant)
//! <p>:{t:<tenant>}:v:k:<key>   a service-API key              (delete)
//! ```
//!
//! **Bump semantics**: `INCR` only a counter that exists (a missing counter
//! already matches no entry; creating it would be harmless but wasteful); a
//! counter that is not an integer is deleted.
//!
//! **Channel**: `<p>:local:invalidations`. **Registry** of live local tiers:
//! the sorted set `<p>:local:instances` (member: instance id, score: lease
//! expiry in Redis server time, ms).
//!
//! **Message**: a JSON object, `{"v":1,"id":"<id>","keys":["<version key>",..]}`
//! naming exactly the keys bumped, or `{"v":1,"id":"<id>","all":true}` to
//! drop whole tiers (after deleting `<p>:{*` keys, as [`Cache::clear`]
//! does). `id`: 1 to 64 characters, fresh per message (32 random hex
//! digits). Optional `"reply":"<reply id>"` (1 to 64 of `[0-9A-Za-z_-]`):
//! the publisher listens on `<p>:local:acks:<reply id>` for pushed
//! acknowledgements (below); a publisher that polls leaves it out.
//! Optional `"from":"<instance id>"`: the publisher's own registration,
//! which applied the message itself and is not waited for; the instance
//! with that id does not acknowledge (a service without a local tier leaves
//! it out). A receiver that cannot parse a message drops its whole tier.
//!
//! **Step 1, bump and publish** in one atomic script, [`INVALIDATE_SCRIPT`]:
//! `KEYS` = the version keys, then the registry; `ARGV[1]` = the channel,
//! `ARGV[2]` = the message. It returns the ids of the live instances. With
//! `redis-cli` (prefix `app`, tag `users` of tenant `acme`):
//!
//! ```sh
//! SCRIPT=$(cat <<'LUA'
//! #!lua flags=allow-oom
//! for i = 1, #KEYS - 1 do
//!   if redis.call('EXISTS', KEYS[i]) == 1 then
//!     local r = redis.pcall('INCR', KEYS[i])
//!     if type(r) ~= 'number' then redis.call('DEL', KEYS[i]) end
//!   end
//! end
//! local t = redis.call('TIME')
//! local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
//! local live = redis.call('ZRANGEBYSCORE', KEYS[#KEYS], '(' .. now, '+inf')
//! redis.call('PUBLISH', ARGV[1], ARGV[2])
//! return live
//! LUA
//! )
//! ID=$(openssl rand -hex 16)
//! redis-cli EVAL "$SCRIPT" 2 'app:{t:acme}:v:t:users' app:local:instances \
//!   app:local:invalidations "{\"v\":1,\"id\":\"$ID\",\"keys\":[\"app:{t:acme}:v:t:users\"]}"
//! ```
//!
//! Once the script returned, no Redis reader serves an entry of those
//! keys. **Step 2, wait for the acknowledgements**, so that no local tier
//! does either: each live instance, after dropping the entries, runs
//! `SADD <p>:local:ack:<id> <instance id>` and then, if the message named a
//! `reply`, `PUBLISH <p>:local:acks:<reply id> <id>` (in the same script,
//! after the `SADD`). The set is the acknowledgement; the `PUBLISH` only
//! tells a waiting publisher to look now. Wait until every id returned by
//! step 1 is in that set or no longer has a lease (its score in the
//! registry is missing or not above Redis' `TIME` in ms); [`WAIT_SCRIPT`]
//! does that check atomically (`KEYS` = registry, ack set; `ARGV` = the ids
//! still awaited; it returns those still missing). Run it when a pushed
//! acknowledgement arrives (subscribe to your reply channel *before*
//! publishing) and on a timer in any case, since an instance may only do
//! the `SADD`: the engine re-checks after 1 ms, growing to every 5 ms, or,
//! without a reply channel of its own, polls back to back for 2 ms, then
//! with the same pauses. After 250 ms it adds the ids still missing to the
//! sorted set `<p>:local:evicted` (score: their registry score), which
//! refuses their next renewal, and sleeps until the latest of their scores
//! (an instance stops serving locally before its lease runs out). Evicted
//! ids stay in the registry until their lease runs out: a publisher that
//! only waits (no eviction) still waits for them. A publisher that
//! skips step 2 leaves local tiers stale for the channel's delivery delay
//! (well under a millisecond on a LAN, unbounded under a partition). An
//! instance in another language that holds a local tier acknowledges the
//! same way: `SADD`, and the `PUBLISH` when it can.
//!
//! **On a Redis Cluster** the version keys span slots, so step 1 is two
//! steps: bump the counters (the same bump semantics, one script per
//! slot), and once they have
//! all returned, run [`INVALIDATE_SCRIPT`] with the registry as its only
//! key (it then bumps nothing, reads the registry and publishes). The
//! registry, the evicted ids and the acknowledgement sets share a hash tag
//! there: `<p>:local:{<p>.local}:instances`, `<p>:local:{<p>.local}:evicted`
//! and `<p>:local:{<p>.local}:ack:<id>`;
//! the channel is the same.
//!
//! # From the database
//!
//! With the `postgres` feature, [`postgres::listen`] turns `NOTIFY`
//! messages into [`Cache::delete_by_tags`] calls; a trigger then
//! invalidates on writes made outside the application. See [`postgres`].
//!
//! [`Cache::delete`]: crate::Cache::delete
//! [`Cache::delete_by_tags`]: crate::Cache::delete_by_tags
//! [`Cache::delete_by_tags_all_tenants`]: crate::Cache::delete_by_tags_all_tenants
//! [`Cache::delete_by_tenant`]: crate::Cache::delete_by_tenant
//! [`Cache::clear`]: crate::Cache::clear

#[cfg(feature = "postgres")]
pub mod postgres;

/// The bump-and-publish script of an invalidation, as every Redis cache
/// runs it (step 1 in the [module docs](self)): `KEYS` = version keys, then
/// the registry `<p>:local:instances`; `ARGV[1]` = the channel
/// `<p>:local:invalidations`, `ARGV[2]` = the message. Returns the ids of
/// the instances whose local tiers must acknowledge.
pub const INVALIDATE_SCRIPT: &str = crate::local::scripts::BUMP_ANNOUNCE;

/// The acknowledgement check (step 2 in the [module docs](self)): `KEYS[1]`
/// = the registry, `KEYS[2]` = `<p>:local:ack:<message id>`; `ARGV` = the
/// instance ids still awaited. Returns those that neither acknowledged nor
/// lost their lease.
pub const WAIT_SCRIPT: &str = crate::local::scripts::WAIT_FULL;

#[cfg(test)]
mod tests {
    /// The recipe in the docs is the script the engine runs, line by line.
    #[test]
    fn the_documented_script_is_the_one_that_runs() {
        let docs: String = include_str!("mod.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("//! "))
            .collect::<Vec<_>>()
            .join("\n");
        for line in super::INVALIDATE_SCRIPT.lines().filter(|l| !l.is_empty()) {
            assert!(docs.contains(line), "not in the docs: {line}");
        }
    }
}
