-- fence: raise the resource's fencing counter to the new token while the lock is still held (phase 2 of WithFencing).
-- KEYS[1] key: the lock key
-- KEYS[2] counter_key: the resource's fencing counter (no expiry)
-- ARGV[1] token string: the lock's token
-- ARGV[2] fence int: the new fencing token (max of the quorum's counters + 1)
-- returns: 1 recorded: the key holds the token and the counter is now at least fence
-- returns: 0 not held: the key is missing or holds another token; the counter is unchanged
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local fence = tonumber(ARGV[2])
if tonumber(redis.call('GET', KEYS[2]) or '0') < fence then
  redis.call('SET', KEYS[2], ARGV[2])
end
return 1
