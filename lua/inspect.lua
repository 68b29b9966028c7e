-- inspect: read who holds a lock key and for how long, without changing anything.
-- KEYS[1] key: the lock key
-- returns: {holder, pttl} holder is the stored token ("" when the key is free); pttl is the remaining time to live in milliseconds (-2 free, -1 no expiry)
local v = redis.call('GET', KEYS[1])
if not v then
  return {'', -2}
end
return {v, redis.call('PTTL', KEYS[1])}
