-- Load a session in one round trip.
-- KEYS: meta, msgs, ctx
-- ARGV: known version ("" when none), window size, ttl (ms)
-- Returns {0} when the session is absent, {1, version} when the caller's copy is current,
-- otherwise {2, version, meta (flat), window (oldest first), context (flat)}.
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  return {0}
end
local version = epoch .. ':' .. redis.call('HGET', KEYS[1], 'version')
for i = 1, 3 do
  redis.call('PEXPIRE', KEYS[i], ARGV[3])
end
if version == ARGV[1] then
  return {1, version}
end
local n = tonumber(ARGV[2])
local window = {}
if n > 0 then
  window = redis.call('LRANGE', KEYS[2], -n, -1)
end
return {2, version, redis.call('HGETALL', KEYS[1]), window, redis.call('HGETALL', KEYS[3])}
