package tests

import (
	"context"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/require"

	"github.com/redlock-go/redlock"
	"github.com/redlock-go/redlock/tests/harness"
)

// script returns the named script from the public registry.
func script(t *testing.T, name string) redlock.Script {
	t.Helper()
	for _, s := range redlock.Scripts() {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no script %q in redlock.Scripts()", name)
	return redlock.Script{}
}

// evalsha runs a script the way a reuser would: EVALSHA after SCRIPT LOAD.
func evalsha(t *testing.T, c redis.Conn, s redlock.Script, keys []string, args ...interface{}) interface{} {
	t.Helper()
	cmd := []interface{}{s.SHA1, len(keys)}
	for _, k := range keys {
		cmd = append(cmd, k)
	}
	reply, err := c.Do("EVALSHA", append(cmd, args...)...)
	require.NoError(t, err, "EVALSHA %s", s.Name)
	return reply
}

// TestScriptSemanticsOnRealRedis runs every script directly on a real
// redis-server over the situations the header promises.
func TestScriptSemanticsOnRealRedis(t *testing.T) {
	srv := harness.Start(t, harness.Options{})
	c := srv.Conn(t)
	for _, s := range redlock.Scripts() {
		_, err := c.Do("SCRIPT", "LOAD", s.Source)
		require.NoError(t, err)
	}
	acquire, extend, release, inspect := script(t, "acquire"), script(t, "extend"), script(t, "release"), script(t, "inspect")
	get := func(k string) interface{} { v, _ := c.Do("GET", k); return v }
	pttl := func(k string) int64 { v, err := redis.Int64(c.Do("PTTL", k)); require.NoError(t, err); return v }
	values := func(r interface{}) []int64 {
		vs, err := redis.Int64s(r, nil)
		require.NoError(t, err)
		return vs
	}
	set := func(k, v string, px int) {
		_, err := c.Do("SET", k, v, "PX", px)
		require.NoError(t, err)
	}

	t.Run("acquire free key sets token and TTL", func(t *testing.T) {
		require.Equal(t, []int64{1, 5000}, values(evalsha(t, c, acquire, []string{"free"}, "tok", 5000)))
		require.Equal(t, []byte("tok"), get("free"))
		p := pttl("free")
		require.True(t, p > 4000 && p <= 5000, "PTTL %d not within (4000, 5000]", p)
	})
	t.Run("acquire own key refreshes TTL", func(t *testing.T) {
		set("own", "tok", 1000)
		require.Equal(t, []int64{1, 8000}, values(evalsha(t, c, acquire, []string{"own"}, "tok", 8000)))
		require.Greater(t, pttl("own"), int64(7000))
	})
	t.Run("acquire foreign key changes nothing and reports its PTTL", func(t *testing.T) {
		set("foreign", "other", 3000)
		got := values(evalsha(t, c, acquire, []string{"foreign"}, "tok", 9000))
		require.Equal(t, int64(0), got[0])
		require.True(t, got[1] > 2000 && got[1] <= 3000, "reported PTTL %d is not the foreign key's", got[1])
		require.Equal(t, []byte("other"), get("foreign"))
		require.LessOrEqual(t, pttl("foreign"), int64(3000))
	})
	t.Run("acquire foreign key without expiry reports -1", func(t *testing.T) {
		_, err := c.Do("SET", "forever", "other")
		require.NoError(t, err)
		require.Equal(t, []int64{0, -1}, values(evalsha(t, c, acquire, []string{"forever"}, "tok", 9000)))
	})
	t.Run("acquire expired key succeeds", func(t *testing.T) {
		set("expired", "other", 30)
		time.Sleep(80 * time.Millisecond)
		require.Equal(t, []int64{1, 2000}, values(evalsha(t, c, acquire, []string{"expired"}, "tok", 2000)))
		require.Equal(t, []byte("tok"), get("expired"))
	})
	t.Run("acquire three keys with one foreign changes nothing", func(t *testing.T) {
		set("m2", "other", 4000)
		got := values(evalsha(t, c, acquire, []string{"m1", "m2", "m3"}, "tok", 9000))
		require.Equal(t, int64(0), got[0])
		require.Nil(t, get("m1"), "m1 was set although m2 is foreign")
		require.Nil(t, get("m3"), "m3 was set although m2 is foreign")
		require.Equal(t, []byte("other"), get("m2"))
	})
	t.Run("extend own key resets TTL", func(t *testing.T) {
		set("ext", "tok", 500)
		require.Equal(t, int64(1), evalsha(t, c, extend, []string{"ext"}, "tok", 7000))
		require.Greater(t, pttl("ext"), int64(6000))
	})
	t.Run("extend never recreates a missing key", func(t *testing.T) {
		require.Equal(t, int64(0), evalsha(t, c, extend, []string{"missing"}, "tok", 7000))
		require.Nil(t, get("missing"))
	})
	t.Run("extend foreign key changes nothing", func(t *testing.T) {
		set("extf", "other", 2000)
		require.Equal(t, int64(0), evalsha(t, c, extend, []string{"extf"}, "tok", 9000))
		require.LessOrEqual(t, pttl("extf"), int64(2000))
	})
	t.Run("extend three keys with one lapsed changes nothing", func(t *testing.T) {
		set("e1", "tok", 1000)
		set("e3", "tok", 1000)
		require.Equal(t, int64(0), evalsha(t, c, extend, []string{"e1", "e2", "e3"}, "tok", 9000))
		require.LessOrEqual(t, pttl("e1"), int64(1000))
		require.Nil(t, get("e2"))
	})
	t.Run("release deletes own keys only", func(t *testing.T) {
		set("r1", "tok", 5000)
		set("r2", "other", 5000)
		require.Equal(t, int64(1), evalsha(t, c, release, []string{"r1", "r2", "r3"}, "tok"))
		require.Nil(t, get("r1"))
		require.Equal(t, []byte("other"), get("r2"), "release touched a foreign key")
		require.Greater(t, pttl("r2"), int64(4000))
	})
	t.Run("release of a foreign key leaves it alone", func(t *testing.T) {
		set("rf", "other", 5000)
		require.Equal(t, int64(0), evalsha(t, c, release, []string{"rf"}, "tok"))
		require.Equal(t, []byte("other"), get("rf"))
	})
	t.Run("inspect reports holder and PTTL", func(t *testing.T) {
		set("ins", "holder", 5000)
		vs, err := redis.Values(evalsha(t, c, inspect, []string{"ins"}), nil)
		require.NoError(t, err)
		require.Equal(t, []byte("holder"), vs[0])
		require.Greater(t, vs[1].(int64), int64(4000))
		vs, err = redis.Values(evalsha(t, c, inspect, []string{"nobody"}), nil)
		require.NoError(t, err)
		require.Equal(t, []interface{}{[]byte(""), int64(-2)}, vs)
	})
}

// commandCalls reads calls=N for one command from INFO commandstats.
func commandCalls(t *testing.T, srv *harness.Server, cmd string) int {
	t.Helper()
	info, err := redis.String(srv.Do(t, "INFO", "commandstats"), nil)
	require.NoError(t, err)
	m := regexp.MustCompile(`cmdstat_` + regexp.QuoteMeta(cmd) + `:calls=(\d+)`).FindStringSubmatch(info)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestEvalshaFallsBackAfterScriptFlush proves the scripts reach a node both
// ways. A new connection loads every script first (SCRIPT LOAD), so a
// Manager's first calls on a flushed server are EVALSHA only. After a
// SCRIPT FLUSH under an open connection a call answers NOSCRIPT, falls back
// to EVAL and succeeds, and the next call is EVALSHA again (the EVAL cached
// the script).
func TestEvalshaFallsBackAfterScriptFlush(t *testing.T) {
	srv := harness.Start(t, harness.Options{})
	m, err := redlock.New([]redlock.Instance{redlock.Addr(srv.Addr())}, redlock.WithRetryCount(1))
	require.NoError(t, err)
	defer m.Close()
	ctx := context.Background()

	cycle := func(resource string) {
		l, err := m.Lock(ctx, resource, time.Second)
		require.NoError(t, err, "Lock of %s", resource)
		require.NoError(t, l.Extend(ctx, 0), "Extend of %s", resource)
		require.NoError(t, l.Unlock(ctx), "Unlock of %s", resource)
	}
	srv.Do(t, "SCRIPT", "FLUSH")
	srv.Do(t, "CONFIG", "RESETSTAT")
	cycle("cold")
	require.Equal(t, len(redlock.Scripts()), commandCalls(t, srv, "script|load"), "the new connection loads every script once")
	require.Equal(t, 3, commandCalls(t, srv, "evalsha"), "acquire, extend, release by EVALSHA")
	require.Equal(t, 0, commandCalls(t, srv, "eval"), "no NOSCRIPT fallback on a connection that loaded the scripts")

	srv.Do(t, "SCRIPT", "FLUSH") // under the open connection
	srv.Do(t, "CONFIG", "RESETSTAT")
	cycle("flushed")
	require.Equal(t, 3, commandCalls(t, srv, "evalsha"), "acquire, extend, release each sent EVALSHA first (answered NOSCRIPT)")
	require.Equal(t, 3, commandCalls(t, srv, "eval"), "each NOSCRIPT fell back to exactly one EVAL")

	srv.Do(t, "CONFIG", "RESETSTAT")
	cycle("flushed-again")
	require.Equal(t, 0, commandCalls(t, srv, "eval"), "after the fallback the scripts are cached: no more EVAL")
	require.Equal(t, 3, commandCalls(t, srv, "evalsha"), "acquire, extend, release all by EVALSHA")
}
