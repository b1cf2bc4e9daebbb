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
--
-- The script runs while the turn's client waits, and each redis.call costs about as much as a
-- small command: values are read with one call per key and written back with one, rather than
-- a call per counter.
local asked = tonumber(ARGV[11])
local user = #KEYS >= 8
local guards = redis.call('MGET', KEYS[6], KEYS[5], user and KEYS[8] or KEYS[6])
if (guards[1] and asked <= tonumber(guards[1])) or (user and guards[3] and asked <= tonumber(guards[3])) then
  return {-2}
end
if ARGV[8] == '1' and guards[2] then
  return {0, guards[2]}
end
local model = ARGV[7] ~= '' and ('model:' .. ARGV[7]) or 'tokens_used'
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'seq', 'version', 'tokens_used', 'message_count', model)
if not meta[1] then
  return {-1}
end
-- Seqs may be microseconds since the epoch (seed.lua): past 10^14, where Lua's own number
-- formatting turns to exponents. '%d' writes every digit.
local seq = string.format('%d', (tonumber(meta[2]) or 0) + 1)
local next_seq = string.format('%d', tonumber(seq) + 1)
local version = (tonumber(meta[3]) or 0) + 1
local tokens = tonumber(ARGV[6])
local n = redis.call('RPUSH', KEYS[2],
  '[' .. seq .. ',' .. string.sub(ARGV[4], 2),
  '[' .. next_seq .. ',' .. string.sub(ARGV[5], 2))
local max = tonumber(ARGV[2])
if n > max then
  redis.call('LTRIM', KEYS[2], -max, -1)
end
local fields = {
  'seq', next_seq,
  'version', version,
  'tokens_used', (tonumber(meta[4]) or 0) + tokens,
  'message_count', (tonumber(meta[5]) or 0) + 2,
  'updated_at', ARGV[3],
}
if ARGV[7] ~= '' then
  fields[#fields + 1] = model
  fields[#fields + 1] = (tonumber(meta[6]) or 0) + tokens
end
redis.call('HSET', KEYS[1], unpack(fields))
local facts_end = 12 + 2 * tonumber(ARGV[12])
-- A profile absent here was dropped since the load (a flush): the facts still reach PostgreSQL
-- with the turn, and the next load restores the profile from there.
if facts_end > 12 and #KEYS >= 7 and redis.call('EXISTS', KEYS[7]) == 1 then
  local facts = {}
  for i = 13, facts_end, 2 do
    facts[#facts + 1] = 'f:' .. ARGV[i]
    facts[#facts + 1] = ARGV[i + 1]
  end
  redis.call('HSET', KEYS[7], unpack(facts))
  redis.call('HINCRBY', KEYS[7], 'version', 1)
  redis.call('PEXPIRE', KEYS[7], ARGV[1])
end
if #ARGV > facts_end + 1 then
  redis.call('HSET', KEYS[3], unpack(ARGV, facts_end + 1, #ARGV))
end
redis.call('XADD', KEYS[4], '*', 'kind', 'turn', 'seq', seq, 'asked', ARGV[11], 'data', ARGV[10])
local full = meta[1] .. ':' .. version
if ARGV[8] == '1' then
  redis.call('SET', KEYS[5], full .. '|' .. seq, 'PX', ARGV[9])
end
for i = 1, 3 do
  redis.call('PEXPIRE', KEYS[i], ARGV[1])
end
return {1, full, tonumber(seq)}
