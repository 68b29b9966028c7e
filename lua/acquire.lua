-- acquire: take every lock key for one token, all or nothing.
-- KEYS[1..n] keys: the lock keys, one per resource
-- ARGV[1] token string: the lock's token (the value stored in every key)
-- ARGV[2] ttl_ms int: time to live in milliseconds (> 0)
-- returns: {1, ttl_ms} acquired: every key now holds the token and expires in ttl_ms
-- returns: {0, pttl} held by another token: nothing changed; pttl is the longest remaining time to live among the foreign keys in milliseconds (-1: a foreign key has no expiry)
local token = ARGV[1]
local ttl = tonumber(ARGV[2])
local longest = nil
for i = 1, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if v and v ~= token then
    local pttl = redis.call('PTTL', KEYS[i])
    if pttl == -1 then
      longest = -1
    elseif longest ~= -1 and (longest == nil or pttl > longest) then
      longest = pttl
    end
  end
end
if longest ~= nil then
  return {0, longest}
end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], token, 'PX', ttl)
end
return {1, ttl}
