-- extend: reset the time to live of every lock key that still holds the token, all or nothing.
-- KEYS[1..n] keys: the lock keys, one per resource
-- ARGV[1] token string: the lock's token
-- ARGV[2] ttl_ms int: new time to live in milliseconds (> 0)
-- returns: 1 extended: every key held the token and now expires in ttl_ms
-- returns: 0 not held: some key is missing or holds another token; nothing changed, no key is created
local token = ARGV[1]
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) ~= token then
    return 0
  end
end
for i = 1, #KEYS do
  redis.call('PEXPIRE', KEYS[i], ARGV[2])
end
return 1
