-- Restore a user's profile into Redis from PostgreSQL, only if it is still absent (two loaders
-- may race; one wins). A user without facts is seeded too, so the next load need not ask again.
-- KEYS: profile
-- ARGV: 1 ttl (ms), 2 epoch, then fact, value (JSON) pairs
-- Returns 1 when this call wrote the profile, 0 when it already existed.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'epoch', ARGV[2], 'version', 0)
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[1], 'f:' .. ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
