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
