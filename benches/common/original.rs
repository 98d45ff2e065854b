//! The original design's rate-limit script, verbatim (it never denies, see
//! issue 3), and one decision by it: shared by `benches/rate_limit.rs` and
//! `benches/decision_calls.rs` (`#[path]` module), so both run the same.

use std::time::{SystemTime, UNIX_EPOCH};

use redis::Script;
use redis::aio::ConnectionManager;

pub const SCRIPT: &str = r"
local key = KEYS[1]
local points = tonumber(ARGV[1])
local duration = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, 0, now - duration * 1000)
local count = redis.call('ZCARD', key)
local allowed = count < points
if allowed then
  redis.call('ZADD', key, now, now)
end
redis.call('EXPIRE', key, duration)
return {tostring(points - count - (allowed and 1 or 0)), tostring(now + duration * 1000)}
";

/// One decision of [`SCRIPT`] on `key`: `points` per `window_secs`, at the
/// client's clock in ms, as the original passed it.
pub async fn decide(
    conn: &mut ConnectionManager,
    script: &Script,
    key: &str,
    points: u32,
    window_secs: u64,
) -> (String, String) {
    let now = u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    script
        .key(key)
        .arg(points)
        .arg(window_secs)
        .arg(now)
        .invoke_async(conn)
        .await
        .expect("original script")
}
