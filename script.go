package redlock

import (
	"errors"
	"strings"

	"github.com/gomodule/redigo/redis"
)

// Script describes one of the Lua scripts in lua/*.lua, the single source of
// truth for every atomic operation redlock performs on a node. It is exported
// so that the scripts can be audited and reused by other clients: Source is
// the file byte for byte and SHA1 is the digest Redis computes for it, so
// `EVALSHA <SHA1>` works on any node where the script was loaded.
type Script struct {
	Name     string   // "acquire", "extend", "release", ...
	File     string   // "lua/acquire.lua"
	Summary  string   // the header's first line
	Source   string   // the Lua source, exactly as sent to Redis
	SHA1     string   // lowercase hex SHA1 of Source
	KeyCount int      // number of KEYS; -1 when the script takes any number (KEYS[1..n])
	Keys     []string // header lines describing KEYS
	Args     []string // header lines describing ARGV, in order
	Returns  []string // header lines describing every possible reply
}

// Scripts returns every script redlock runs, sorted by name. The returned
// slice is a copy: changing it changes nothing in the library.
func Scripts() []Script {
	out := make([]Script, len(scriptRegistry))
	for i, s := range scriptRegistry {
		s.Keys = append([]string(nil), s.Keys...)
		s.Args = append([]string(nil), s.Args...)
		s.Returns = append([]string(nil), s.Returns...)
		out[i] = s
	}
	return out
}

// luaScript is the immutable runtime form of one script; the generator
// declares one per file (acquireScript, ...).
type luaScript struct {
	name     string
	source   string
	sha1     string
	sha1Arg  interface{} // sha1, boxed once (not on every call)
	keyCount int         // -1: any number of keys
}

// evalArgs turns EVALSHA's arguments into EVAL's, for the NOSCRIPT
// fallback: the source replaces the digest. A node answers NOSCRIPT when it
// restarted, was flushed, or a Sentinel failover promoted a replica that
// never saw SCRIPT LOAD; EVAL also caches the script, so the next call is
// EVALSHA again.
func evalArgs(s *luaScript, args []interface{}) []interface{} {
	out := make([]interface{}, len(args))
	copy(out, args)
	out[0] = s.source
	return out
}

// isNoScript reports whether err is Redis's NOSCRIPT reply.
func isNoScript(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && strings.HasPrefix(string(re), "NOSCRIPT")
}
