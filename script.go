package redlock

import (
	"context"
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

// evalScript runs a script on a node and waits for the reply (the
// asynchronous path of async.go is the other way; both build arguments
// with scriptArgs and fall back alike). It sends
// EVALSHA; when the node answers NOSCRIPT (it restarted, was flushed, or a
// Sentinel failover promoted a replica that never saw SCRIPT LOAD) it sends
// EVAL with the full source, which also caches the script, so the next call
// is EVALSHA again. The ctx bounds the command itself (redigo DoContext).
func evalScript(ctx context.Context, c redis.Conn, s *luaScript, keys []string, args ...interface{}) (interface{}, error) {
	if s.keyCount >= 0 && len(keys) != s.keyCount {
		return nil, errors.New("redlock: script " + s.name + ": wrong number of keys")
	}
	cmdArgs := scriptArgs(s, keys, args...)
	reply, err := redis.DoContext(c, ctx, "EVALSHA", cmdArgs...)
	if err != nil && isNoScript(err) {
		reply, err = redis.DoContext(c, ctx, "EVAL", evalArgs(s, cmdArgs)...)
	}
	return reply, err
}

// isNoScript reports whether err is Redis's NOSCRIPT reply.
func isNoScript(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && strings.HasPrefix(string(re), "NOSCRIPT")
}

// loadScripts sends SCRIPT LOAD for every script on a new pipelined
// connection (see mux.redial), before any other command, in one round trip.
//
// It is what keeps commands in order on a node. The asynchronous path
// pipelines EVALSHA; a command answered NOSCRIPT is resent as EVAL behind
// whatever was pipelined after it, so on a server that knew release.lua but
// not acquire.lua, the release queued by a failed Lock would run before the
// acquire it cleans up, and the key would stay until its TTL. With every
// script loaded when the connection opens, NOSCRIPT can only follow a
// SCRIPT FLUSH while the connection is in use; then, at worst, such a key
// outlives its release until its TTL (liveness, never mutual exclusion: a
// resent acquire or extend never overrides another token).
//
// Error replies (an ACL user without +script) are ignored: the NOSCRIPT
// fallback still works. A transport error fails the dial.
func loadScripts(ctx context.Context, c redis.Conn) error {
	for _, s := range scriptRegistry {
		if err := c.Send("SCRIPT", "LOAD", s.Source); err != nil {
			return err
		}
	}
	_, err := redis.DoContext(c, ctx, "")
	var refused redis.Error
	if errors.As(err, &refused) {
		return nil
	}
	return err
}
