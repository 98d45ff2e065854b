//! The Lua scripts: one script per decision, run by the store
//! (`Store::eval_script`: `EVALSHA`, falling back to `EVAL` on `NOSCRIPT`,
//! which also works on a cluster right after a failover, when redis-rs'
//! `SCRIPT LOAD` to every node would fail). The limiter owns the scripts;
//! the store only runs them.
//!
//! Every script
//! - reads the time from Redis `TIME` (no application-server clock),
//! - returns an explicit allowed flag: GCRA as the sign of one integer (see
//!   [`GCRA`]), the others as `{allowed, remaining, reset_after_us,
//!   retry_after_us}`,
//! - writes nothing when it denies,
//! - leaves its key with an expiry (`PX`) that ends when the key no longer
//!   matters.
//!
//! `ARGV` is, for the windows, `points`, the window in microseconds and
//! `cost`; for GCRA, the burst and the increment in microseconds.

use std::sync::LazyLock;

use crate::store::Lua;

/// GCRA (generic cell rate algorithm, the virtual-scheduling form).
///
/// The key holds one integer, the theoretical arrival time (TAT) in
/// microseconds of Redis time, stored as a plain integer string (Redis keeps
/// it in the object header: no allocation besides the key). The client
/// passes the constants it derives from the policy (`gcra_args`): `ARGV[1]`
/// the burst `points × period` and `ARGV[2]` the increment `cost × period`,
/// where the emission interval `period` is an integer number of
/// microseconds (`ceil(window / points)`), so every sum is exact in Lua's
/// doubles: a full burst of exactly `points` passes at one instant and the
/// next one is refused.
///
/// The reply is **one integer** (`decode_gcra` reads it): when admitted,
/// `new_tat - now` (at least the increment, at most the burst); when
/// denied, `-1 - (tat - now)` (negative). The client derives `remaining`,
/// `reset_after` and `retry_after` from it and the constants: a reply array
/// would cost the server an array to build and the client thousands of
/// instructions to parse.
///
/// Numbers go to `PSETEX` (`SET .. PX` without the option parsing) through
/// `string.format('%d')`, which truncates: exact for every integer below
/// 2^53 (Lua's `tostring` keeps 14 digits), plain decimal whatever the
/// server's own number formatting (`%.17g` in Redis 7.0), and cheaper on the
/// server than passing the number itself; `(d + 999) / 1000` truncated is
/// the TTL `ceil(d / 1000)` in milliseconds without a `math.ceil` call.
/// Server instructions per admitted decision (callgrind on `redis-server`,
/// `evalShaCommand` inclusive): 39 000, against 52 200 for the previous
/// GCRA script and 59 800 for the original sliding log.
pub(super) static GCRA: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r"
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + ARGV[2]
if new_tat - ARGV[1] > now then return now - tat - 1 end
local f = string.format
redis.call('PSETEX', KEYS[1], f('%d', (new_tat - now + 999) / 1000), f('%d', new_tat))
return new_tat - now
",
    )
});

/// Exact sliding window: a sorted set with one member per admitted point,
/// scored (and named) by its Redis time in microseconds. Members are unique:
/// `ZADD NX` takes the next free microsecond when two calls share one.
/// A call is admitted iff the points in `(now - window, +inf)` plus its cost
/// fit in `points`, so no window of that length ever holds more than
/// `points`. A denial only reads; an admission trims what left the window,
/// so the set never holds more than `points` members.
///
/// Admission costs `TIME`, `ZCOUNT`, `ZREMRANGEBYSCORE`, `ZADD`, `PEXPIRE`.
pub(super) static SLIDING_WINDOW: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r"
local points = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local edge = string.format('%d', now - window)
local count = redis.call('ZCOUNT', KEYS[1], '(' .. edge, '+inf')
if count + cost > points then
  local need = count + cost - points
  local retry = window
  if need <= count then
    local e = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. edge, '+inf', 'WITHSCORES', 'LIMIT', need - 1, 1)
    retry = tonumber(e[2]) + window - now
  end
  local reset = 0
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  if last[2] then reset = tonumber(last[2]) + window - now end
  local left = points - count
  if left < 0 then left = 0 end
  return {0, left, reset, retry}
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', edge)
local seq = now
for i = 1, cost do
  local m = string.format('%d', seq)
  while redis.call('ZADD', KEYS[1], 'NX', m, m) == 0 do
    seq = seq + 1
    m = string.format('%d', seq)
  end
  seq = seq + 1
end
local reset = seq - 1 + window - now
redis.call('PEXPIRE', KEYS[1], math.ceil(reset / 1000))
return {1, points - count - cost, reset, 0}
",
    )
});

/// Fixed windows aligned on the Unix epoch (a one-day window resets at 00:00
/// UTC). The key holds `<window index>:<count>` and expires with its window.
pub(super) static FIXED_WINDOW: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r"
local points = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local idx = math.floor(now / window)
local reset = (idx + 1) * window - now
local count = 0
local v = redis.call('GET', KEYS[1])
if v then
  local sep = string.find(v, ':', 1, true)
  if sep and tonumber(string.sub(v, 1, sep - 1)) == idx then
    count = tonumber(string.sub(v, sep + 1)) or 0
  end
end
if count + cost > points then
  local left = points - count
  if left < 0 then left = 0 end
  return {0, left, reset, reset}
end
count = count + cost
redis.call('SET', KEYS[1], string.format('%d:%d', idx, count), 'PX', math.ceil(reset / 1000))
return {1, points - count, reset, 0}
",
    )
});
