-- multi: take any number of keys.
-- KEYS[1..n] keys: the keys
-- ARGV[1] token string: a token
-- ARGV[2] ttl_ms int: a ttl
-- returns: {1, ttl} done
-- returns: {0, pttl} not done
return {1, ARGV[2]}
