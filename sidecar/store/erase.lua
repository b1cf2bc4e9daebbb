-- Delete a session for good, stamped with Redis's clock: the one clock every replica shares.
-- KEYS: meta, msgs, ctx, tombstone, floor
-- ARGV: 1 tombstone ttl (ms), 2 deletion time (ms) when the caller already chose it, else ""
-- Returns the deletion time (ms since the epoch, Redis's clock).
local at = tonumber(ARGV[2])
if not at then
  local t = redis.call('TIME')
  at = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[5])
redis.call('SET', KEYS[4], at, 'PX', ARGV[1])
return at
