-- Drop a session's stale Redis copy (it is restored from PostgreSQL on its next load), keeping
-- its highest seq as a floor: turns numbered by this copy may still wait in the outbox, and the
-- restored copy must number new turns after them.
-- KEYS: meta, msgs, ctx, floor
-- ARGV: 1 ttl (ms)
-- Returns 1 when there was a copy to drop.
local seq = redis.call('HGET', KEYS[1], 'seq')
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
if not seq then
  return 0
end
local floor = tonumber(redis.call('GET', KEYS[4]) or '0')
if tonumber(seq) > floor then
  redis.call('SET', KEYS[4], seq, 'PX', ARGV[1])
end
return 1
