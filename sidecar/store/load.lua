-- Load a session in one round trip (and, for a user's session, the user's profile with it).
-- KEYS: meta, msgs, ctx[, profile]
-- ARGV: known version ("" when none), window size, ttl (ms)[, known profile version]
-- Returns {0} when the session is absent, {1, version, P} when the caller's copy is current,
-- otherwise {2, version, meta (flat), window (oldest first), context (flat), P}.
-- P, the profile: {} when not asked, {0} when absent, {1, version} when the caller's copy is
-- current, otherwise {2, version, profile hash (flat)}.
-- (One HMGET per hash rather than a call per field: the turn's client waits for the script.)
local head = redis.call('HMGET', KEYS[1], 'epoch', 'version')
if not head[1] then
  return {0}
end
local version = head[1] .. ':' .. head[2]
for i = 1, 3 do
  redis.call('PEXPIRE', KEYS[i], ARGV[3])
end
local profile = {}
if #KEYS >= 4 then
  local p_head = redis.call('HMGET', KEYS[4], 'epoch', 'version')
  if not p_head[1] then
    profile = {0}
  else
    redis.call('PEXPIRE', KEYS[4], ARGV[3])
    local p_version = p_head[1] .. ':' .. p_head[2]
    if p_version == ARGV[4] then
      profile = {1, p_version}
    else
      profile = {2, p_version, redis.call('HGETALL', KEYS[4])}
    end
  end
end
if version == ARGV[1] then
  return {1, version, profile}
end
local n = tonumber(ARGV[2])
local window = {}
if n > 0 then
  window = redis.call('LRANGE', KEYS[2], -n, -1)
end
return {2, version, redis.call('HGETALL', KEYS[1]), window, redis.call('HGETALL', KEYS[3]), profile}
