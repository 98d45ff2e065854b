//! The Lua scripts: one script per decision, run by the store
//! (`Store::eval_script`: `EVALSHA`, falling back to `EVAL` on `NOSCRIPT`,
//! which also works on a cluster right after a failover, when redis-rs'
//! `SCRIPT LOAD` to every node would fail). The limiter owns the scripts;
//! the store only runs them.
//!
//! Every script
//! - reads the time from Redis `TIME` (no application-server clock),
//! - returns `{allowed, remaining, reset_after_us, retry_after_us}` with an
//!   explicit allowed flag,
//! - writes nothing when it denies,
//! - leaves its key with an expiry (`PX`) that ends when the key no longer
//!   matters.
//!
//! `ARGV` is `points`, a time value in microseconds (the GCRA emission
//! interval, or the window), and `cost`.

use std::sync::LazyLock;

use crate::store::Lua;

/// GCRA (generic cell rate algorithm, the virtual-scheduling form).
///
/// The key holds one integer, the theoretical arrival time (TAT) in
/// microseconds of Redis time, stored as a plain integer string (Redis keeps
/// it in the object header: no allocation besides the key). The emission
/// interval `period` is an integer number of microseconds (`ceil(window /
/// points)`), so every sum is exact in Lua's doubles: a full burst of exactly
/// `points` passes at one instant and the next one is refused.
pub(super) static GCRA: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r"
local points = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local burst = points * period
local v = redis.call('GET', KEYS[1])
local tat = now
if v then
  local stored = tonumber(v)
  if stored and stored > now then tat = stored end
end
local new_tat = tat + cost * period
local allow_at = new_tat - burst
if allow_at > now then
  local left = math.floor((now + burst - tat) / period)
  if left < 0 then left = 0 end
  return {0, left, tat - now, allow_at - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((now + burst - new_tat) / period), new_tat - now, 0}
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
