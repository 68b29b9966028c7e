-- two_words: a script whose name needs camel case in Go.
-- KEYS[1] key: a key
-- returns: 0 always
return 0
