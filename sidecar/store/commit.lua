-- Record one turn atomically: both messages or neither.
-- KEYS: meta, msgs, ctx, outbox, idempotency key, deletion tombstone
--       [, the user's profile, the user's deletion tombstone] (a user's session: same slot)
-- ARGV: 1 ttl (ms), 2 max stored messages, 3 now (ISO 8601), 4 user message, 5 assistant message
--       (JSON arrays without their leading seq: '[...' + rest), 6 total tokens, 7 model,
--       8 use idempotency ("1"/"0"), 9 idempotency ttl (ms), 10 outbox payload (JSON),
--       11 when the turn was asked (ms since the epoch, Redis's clock), 12 number of profile facts P,
--       then P fact, value (JSON) pairs, then the context patch as field, value pairs
-- Returns {1, version, first seq}, {0, earlier result} for a repeated idempotency key,
-- {-2} when the session (or its user) was deleted after the turn was asked (nothing is
-- recorded), or {-1} when the session is absent (the caller restores it and tries again).
local asked = tonumber(ARGV[11])
local deleted = redis.call('GET', KEYS[6])
if deleted and asked <= tonumber(deleted) then
  return {-2}
end
if #KEYS >= 8 then
  local user_deleted = redis.call('GET', KEYS[8])
  if user_deleted and asked <= tonumber(user_deleted) then
    return {-2}
  end
end
if ARGV[8] == '1' then
  local seen = redis.call('GET', KEYS[5])
  if seen then
    return {0, seen}
  end
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {-1}
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 2) - 1
redis.call('RPUSH', KEYS[2],
  '[' .. seq .. ',' .. string.sub(ARGV[4], 2),
  '[' .. (seq + 1) .. ',' .. string.sub(ARGV[5], 2))
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
local tokens = tonumber(ARGV[6])
redis.call('HINCRBY', KEYS[1], 'tokens_used', tokens)
if ARGV[7] ~= '' then
  redis.call('HINCRBY', KEYS[1], 'model:' .. ARGV[7], tokens)
end
redis.call('HINCRBY', KEYS[1], 'message_count', 2)
redis.call('HSET', KEYS[1], 'updated_at', ARGV[3])
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
local facts_end = 12 + 2 * tonumber(ARGV[12])
-- A profile absent here was dropped since the load (a flush): the facts still reach PostgreSQL
-- with the turn, and the next load restores the profile from there.
if facts_end > 12 and #KEYS >= 7 and redis.call('EXISTS', KEYS[7]) == 1 then
  for i = 13, facts_end, 2 do
    redis.call('HSET', KEYS[7], 'f:' .. ARGV[i], ARGV[i + 1])
  end
  redis.call('HINCRBY', KEYS[7], 'version', 1)
  redis.call('PEXPIRE', KEYS[7], ARGV[1])
end
if #ARGV > facts_end + 1 then
  redis.call('HSET', KEYS[3], unpack(ARGV, facts_end + 1, #ARGV))
end
redis.call('XADD', KEYS[4], '*', 'kind', 'turn', 'seq', seq, 'asked', ARGV[11], 'data', ARGV[10])
local full = redis.call('HGET', KEYS[1], 'epoch') .. ':' .. version
if ARGV[8] == '1' then
  redis.call('SET', KEYS[5], full .. '|' .. seq, 'PX', ARGV[9])
end
for i = 1, 3 do
  redis.call('PEXPIRE', KEYS[i], ARGV[1])
end
return {1, full, seq}
