package tests

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/redlock-go/redlock"
	"github.com/redlock-go/redlock/tests/harness"
)

// Helpers shared by the core_*_test.go files. Every name starts with "core"
// so that it cannot collide with the helpers of other test files in this
// package.

// coreDB is a direct view of one database of one real server, for the
// checks a test makes behind the library's back (GET, PTTL, DEL...). It is
// safe for concurrent use.
type coreDB struct {
	srv  *harness.Server
	db   int
	pool *redis.Pool
}

// coreDBOf returns a coreDB for database db of s, closed at t.Cleanup.
func coreDBOf(t testing.TB, s *harness.Server, db int) *coreDB {
	t.Helper()
	p := &redis.Pool{
		Dial:      func() (redis.Conn, error) { return s.Dial(redis.DialDatabase(db)) },
		MaxIdle:   16,
		MaxActive: 64,
		Wait:      true,
	}
	t.Cleanup(func() { p.Close() })
	return &coreDB{srv: s, db: db, pool: p}
}

// coreDBs returns database 0 of every server.
func coreDBs(t testing.TB, servers []*harness.Server) []*coreDB {
	t.Helper()
	out := make([]*coreDB, len(servers))
	for i, s := range servers {
		out[i] = coreDBOf(t, s, 0)
	}
	return out
}

func (d *coreDB) String() string { return fmt.Sprintf("%s db %d", d.srv.Addr(), d.db) }

// do sends one command and fails the test on any error.
func (d *coreDB) do(t testing.TB, cmd string, args ...interface{}) interface{} {
	t.Helper()
	c := d.pool.Get()
	defer c.Close()
	reply, err := c.Do(cmd, args...)
	require.NoError(t, err, "%s %v on %s", cmd, args, d)
	return reply
}

// get returns the value of key and whether it exists.
func (d *coreDB) get(t testing.TB, key string) (string, bool) {
	t.Helper()
	v, err := redis.String(d.do(t, "GET", key), nil)
	if errors.Is(err, redis.ErrNil) {
		return "", false
	}
	require.NoError(t, err, "GET %q on %s", key, d)
	return v, true
}

// exists reports whether key exists.
func (d *coreDB) exists(t testing.TB, key string) bool {
	t.Helper()
	n, err := redis.Int(d.do(t, "EXISTS", key), nil)
	require.NoError(t, err)
	return n == 1
}

// pttl returns the key's remaining time to live in milliseconds (-2: no key).
func (d *coreDB) pttl(t testing.TB, key string) int64 {
	t.Helper()
	n, err := redis.Int64(d.do(t, "PTTL", key), nil)
	require.NoError(t, err)
	return n
}

// coreHolders counts the databases where key holds token.
func coreHolders(t testing.TB, dbs []*coreDB, key, token string) int {
	t.Helper()
	n := 0
	for _, d := range dbs {
		if v, ok := d.get(t, key); ok && v == token {
			n++
		}
	}
	return n
}

// coreRequireGone fails unless key is absent from every database.
func coreRequireGone(t testing.TB, dbs []*coreDB, key, why string) {
	t.Helper()
	for _, d := range dbs {
		v, ok := d.get(t, key)
		require.False(t, ok, "%s: key %q still exists on %s with value %q", why, key, d, v)
	}
}

// coreWaitGone waits (up to 3s) until key is absent from every database:
// calls that return at quorum may still be releasing on the last nodes.
func coreWaitGone(t testing.TB, dbs []*coreDB, key, why string) {
	t.Helper()
	harness.WaitFor(t, 3*time.Second, func() bool {
		for _, d := range dbs {
			if d.exists(t, key) {
				return false
			}
		}
		return true
	}, "%s: key %q still exists on some node", why, key)
}

// coreAddrs returns Addr instances for the servers.
func coreAddrs(servers []*harness.Server) []redlock.Instance {
	out := make([]redlock.Instance, len(servers))
	for i, s := range servers {
		out[i] = redlock.Addr(s.Addr())
	}
	return out
}

// coreNew builds a Manager and fails the test if New refuses.
func coreNew(t testing.TB, instances []redlock.Instance, opts ...redlock.Option) *redlock.Manager {
	t.Helper()
	m, err := redlock.New(instances, opts...)
	require.NoError(t, err, "redlock.New")
	t.Cleanup(func() { // when the test stopped early; Close is idempotent
		done := make(chan struct{})
		go func() { m.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Errorf("Manager.Close (at cleanup) has not returned after 30s")
		}
	})
	return m
}

// coreClose closes m and fails the test if Close fails or takes more than
// bound. A Close that hangs fails the test (with the goroutines that hold
// it) instead of hanging the test binary.
func coreClose(t testing.TB, m *redlock.Manager, bound time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- m.Close() }()
	select {
	case err := <-done:
		require.NoError(t, err, "Manager.Close")
	case <-time.After(bound + 10*time.Second):
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Fatalf("Manager.Close has not returned after %v (bound %v): it hangs. Goroutines:\n%s", time.Since(start), bound, buf)
	}
	d := time.Since(start)
	require.Less(t, d, bound, "Close took %v: it must be bounded by the node timeout, not wait for a hung node", d)
	return d
}

// coreNoLeak fails the test when goroutines other than those in ignore
// (taken with goleak.IgnoreCurrent after the servers started, since the
// harness holds goroutines of its own) are still running.
func coreNoLeak(t testing.TB, ignore goleak.Option) {
	t.Helper()
	if err := goleak.Find(ignore); err != nil {
		t.Errorf("goroutines left after Manager.Close: %v", err)
	}
}

// coreCtx returns a context bounded by d, cancelled at t.Cleanup.
func coreCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// coreQuorumError extracts the *QuorumError from err or fails the test.
func coreQuorumError(t testing.TB, err error) *redlock.QuorumError {
	t.Helper()
	var qe *redlock.QuorumError
	require.True(t, errors.As(err, &qe), "error %v (%T) is not a *redlock.QuorumError", err, err)
	return qe
}

// coreMustNotContain fails when s contains secret.
func coreMustNotContain(t testing.TB, s, secret, what string) {
	t.Helper()
	require.False(t, strings.Contains(s, secret), "%s leaks the password: %s", what, s)
}

// coreGoroutines returns the number of live goroutines, for the tests that
// bound them. runtime.NumGoroutine is allglen minus the free lists, read
// without a lock; while the GC frees the stacks of exited goroutines it
// holds them in neither list, so the reading can exceed the live count by
// every goroutine that ever exited: after the tests that run 10,000 Do, it
// read 10,025 at a moment when the goroutine profile listed 28. A reading
// above limit is therefore checked against the goroutine profile (taken
// with the world stopped, it lists the live goroutines one by one).
func coreGoroutines(limit int) int {
	n := runtime.NumGoroutine()
	if n <= limit {
		return n
	}
	var b bytes.Buffer
	if err := pprof.Lookup("goroutine").WriteTo(&b, 1); err != nil {
		return n
	}
	// The first line is "goroutine profile: total N".
	line, _, _ := strings.Cut(b.String(), "\n")
	if live, err := strconv.Atoi(strings.TrimPrefix(line, "goroutine profile: total ")); err == nil {
		return live
	}
	return n
}
