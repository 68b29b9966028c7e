-- acquire_fenced: take a lock key for one token and read the resource's fencing counter (phase 1 of WithFencing).
-- KEYS[1] key: the lock key
-- KEYS[2] counter_key: the resource's fencing counter (no expiry)
-- ARGV[1] token string: the lock's token
-- ARGV[2] ttl_ms int: time to live in milliseconds (> 0)
-- returns: {1, counter} acquired: the key holds the token and expires in ttl_ms; counter is the stored fencing counter (0 when none)
-- returns: {0, pttl} held by another token: nothing changed; pttl is its remaining time to live in milliseconds (-1: no expiry)
local v = redis.call('GET', KEYS[1])
if v and v ~= ARGV[1] then
  return {0, redis.call('PTTL', KEYS[1])}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, tonumber(redis.call('GET', KEYS[2]) or '0')}
