-- release: delete the lock keys that hold the token, leave every other key alone, and announce each deletion.
-- KEYS[1..n] keys: the lock keys, one per resource
-- ARGV[1] token string: the lock's token
-- returns: n the number of keys deleted; equal to the number of KEYS when the token held them all, 0 when it held none; each deleted key is published on channel "redlock:released:<key>" so that waiters retry at once
local token = ARGV[1]
local deleted = 0
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == token then
    redis.call('DEL', KEYS[i])
    redis.call('PUBLISH', 'redlock:released:' .. KEYS[i], '1')
    deleted = deleted + 1
  end
end
return deleted
