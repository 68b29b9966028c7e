package tests

import (
	"crypto/sha1"
	"encoding/hex"
	"testing"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/require"

	"github.com/redlock-go/redlock"
	"github.com/redlock-go/redlock/tests/harness"
)

// TestScriptSHA1MatchesRedisScriptLoad proves that the digest the generator
// wrote for every script is the one a real redis-server computes, so that
// EVALSHA with the generated constant hits the script loaded by SCRIPT LOAD.
func TestScriptSHA1MatchesRedisScriptLoad(t *testing.T) {
	srv := harness.Start(t, harness.Options{})
	scripts := redlock.Scripts()
	require.NotEmpty(t, scripts, "redlock.Scripts() is empty")
	for _, s := range scripts {
		got, err := redis.String(srv.Do(t, "SCRIPT", "LOAD", s.Source), nil)
		require.NoError(t, err, "SCRIPT LOAD %s", s.Name)
		require.Equal(t, s.SHA1, got, "script %s (%s): generated SHA1 differs from redis-server's SCRIPT LOAD; run go generate ./...", s.Name, s.File)
		sum := sha1.Sum([]byte(s.Source))
		require.Equal(t, hex.EncodeToString(sum[:]), s.SHA1, "script %s: SHA1 is not the digest of Source", s.Name)
		exists, err := redis.Ints(srv.Do(t, "SCRIPT", "EXISTS", s.SHA1), nil)
		require.NoError(t, err)
		require.Equal(t, []int{1}, exists, "script %s: EVALSHA digest unknown to the server after SCRIPT LOAD", s.Name)
	}
}
