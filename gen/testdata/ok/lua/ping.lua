-- ping: echo a key's value with a `backtick` in the source.
-- KEYS[1] key: any key
-- KEYS[2] other_key: another key
-- ARGV[1] label string: a label
-- returns: 1 always
return 1
