-- extend_many: reset the time to live of each lock key that still holds its own token, each on its own (the keep-alive of many locks in one call).
-- KEYS[1..n] keys: the lock keys, one per lock (a lock of several keys gives each of them)
-- ARGV[1..n] tokens string: the token of each key, in the keys' order
-- ARGV[n+1] ttl_ms int: new time to live in milliseconds (> 0), for every key
-- returns: {flag_1, ..., flag_n} flag_i is 1 when KEYS[i] held ARGV[i] and now expires in ttl_ms, 0 when it was missing or held another token (then it is unchanged and no key is created)
local n = #KEYS
local ttl = ARGV[n + 1]
local out = {}
for i = 1, n do
  if redis.call('GET', KEYS[i]) == ARGV[i] then
    redis.call('PEXPIRE', KEYS[i], ttl)
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
