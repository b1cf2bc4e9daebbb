-- Create or restore a session, only if it is still absent (two loaders may race; one wins).
-- KEYS: meta, msgs, ctx, outbox, floor (the highest seq of a dropped stale copy)
-- ARGV: 1 ttl (ms), 2 epoch, 3 last seq ("clock": unknown, PostgreSQL could not be read: numbering
--       then starts from Redis's clock in microseconds, above any seq the session may have),
--       4 tokens used, 5 message count, 6 created_at,
--       7 updated_at, 8 "1" to announce a new session on the outbox, 9 outbox payload,
--       10 number of context pairs N, then N field/value pairs, then the messages (oldest first)
-- Returns 1 when this call wrote the session, 0 when it already existed.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('DEL', KEYS[2], KEYS[3])
local seq = tonumber(ARGV[3])
if not seq then
  local t = redis.call('TIME')
  seq = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local floor = tonumber(redis.call('GET', KEYS[5]) or '0')
if floor > seq then
  seq = floor
end
redis.call('HSET', KEYS[1], 'epoch', ARGV[2], 'version', 0, 'seq', string.format('%d', seq),
  'tokens_used', ARGV[4], 'message_count', ARGV[5], 'created_at', ARGV[6], 'updated_at', ARGV[7])
local pairs_n = tonumber(ARGV[10])
local first_msg = 11 + 2 * pairs_n
if pairs_n > 0 then
  redis.call('HSET', KEYS[3], unpack(ARGV, 11, first_msg - 1))
end
-- In chunks: unpack() of thousands of values would overflow Lua's stack.
for i = first_msg, #ARGV, 500 do
  redis.call('RPUSH', KEYS[2], unpack(ARGV, i, math.min(i + 499, #ARGV)))
end
if ARGV[8] == '1' then
  redis.call('XADD', KEYS[4], '*', 'kind', 'session', 'seq', 0, 'data', ARGV[9])
end
for i = 1, 3 do
  redis.call('PEXPIRE', KEYS[i], ARGV[1])
end
return 1
