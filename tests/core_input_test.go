package tests

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/redlock-go/redlock"
	"github.com/redlock-go/redlock/tests/harness"
)

// coreNoPanic runs f and turns a panic into a test failure naming what.
func coreNoPanic(t *testing.T, what string, f func() error) (err error) {
	t.Helper()
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("%s panicked: %v", what, p)
		}
	}()
	return f()
}

// TestBadInputNeverPanics feeds every kind of bad input to New,
// ParseInstance and the Manager's calls: each must fail with an error
// matching ErrInvalidArgument (and ErrNotAcquired for Lock), never panic,
// and send nothing to the node.
func TestBadInputNeverPanics(t *testing.T) {
	srv := harness.Start(t, harness.Options{})
	db := coreDBOf(t, srv, 0)
	ignore := goleak.IgnoreCurrent()
	ctx := coreCtx(t, 30*time.Second)

	t.Run("instance specs", func(t *testing.T) {
		specs := []string{
			"redis://:@",                   // no host: an error, never localhost
			"redis://host:notaport",        // non-numeric port
			"ftp://x",                      // unknown scheme
			"redis://h:6379/-1",            // negative DB
			"redis://h:6379/abc",           // non-numeric DB
			"",                             // empty
			"host",                         // no port
			"redis://h:0",                  // port out of range
			"redis://h:65536",              // port out of range
			"redis://h:6379?db=-2",         // negative DB in the query
			":6379",                        // no host
			"redis+sentinel://h1:26379/0",  // no master
			"redis+sentinel:///0?master=m", // no sentinel address
		}
		for _, spec := range specs {
			_, err := redlock.ParseInstance(spec)
			require.ErrorIs(t, err, redlock.ErrInvalidArgument, "ParseInstance(%q)", spec)
			if strings.Contains(spec, "://") {
				m, err := redlock.New([]redlock.Instance{redlock.URL(spec)})
				require.Nil(t, m, "New returned a Manager for URL(%q)", spec)
				require.ErrorIs(t, err, redlock.ErrInvalidArgument, "New([URL(%q)])", spec)
			}
		}
		for i, inst := range []redlock.Instance{
			redlock.Addr(""),
			redlock.Addr("host"),
			redlock.Addr("host:notaport"),
			redlock.Endpoint{},
			redlock.Endpoint{Addr: ":6379"},
			redlock.Endpoint{Addr: srv.Addr(), DB: -1},
			redlock.URL(""),
			redlock.URL("host"),
			redlock.Pool(nil),
			redlock.Sentinel{Master: "m"},                        // no addresses
			redlock.Sentinel{Addrs: []string{"127.0.0.1:26379"}}, // no master
			redlock.SentinelURL("ftp://h:26379/0?master=m"),
			nil,
		} {
			var m *redlock.Manager
			err := coreNoPanic(t, fmt.Sprintf("New with bad instance #%d", i), func() (err error) {
				m, err = redlock.New([]redlock.Instance{redlock.Addr(srv.Addr()), inst})
				return err
			})
			require.Nil(t, m, "New accepted bad instance #%d (%v)", i, inst)
			require.ErrorIs(t, err, redlock.ErrInvalidArgument, "New with bad instance #%d (%v)", i, inst)
		}
	})

	t.Run("options", func(t *testing.T) {
		for name, opt := range map[string]redlock.Option{
			"WithRetryCount(0)":        redlock.WithRetryCount(0),
			"WithRetryCount(-1)":       redlock.WithRetryCount(-1),
			"WithRetryDelay(2s, 1s)":   redlock.WithRetryDelay(2*time.Second, time.Second),
			"WithRetryDelay(-1ms, 1s)": redlock.WithRetryDelay(-time.Millisecond, time.Second),
			"WithRetryDelay(0, -1ms)":  redlock.WithRetryDelay(0, -time.Millisecond),
			"WithDriftFactor(-0.01)":   redlock.WithDriftFactor(-0.01),
			"WithDefaultTTL(-1s)":      redlock.WithDefaultTTL(-time.Second),
			"WithNodeTimeout(-1ms)":    redlock.WithNodeTimeout(-time.Millisecond),
			"nil option":               nil,
		} {
			m, err := redlock.New([]redlock.Instance{redlock.Addr(srv.Addr())}, opt)
			require.Nil(t, m, "New accepted %s", name)
			require.ErrorIs(t, err, redlock.ErrInvalidArgument, "New with %s", name)
		}
	})

	t.Run("calls", func(t *testing.T) {
		m := coreNew(t, []redlock.Instance{redlock.Addr(srv.Addr())})
		tooLong := strings.Repeat("r", redlock.MaxResourceLen+1)
		var nilLock *redlock.Lock
		cases := map[string]func() error{
			"Lock empty resource":      func() error { _, err := m.Lock(ctx, "", time.Second); return err },
			"Lock 64 KiB+1 resource":   func() error { _, err := m.Lock(ctx, tooLong, time.Second); return err },
			"Lock ttl < 0":             func() error { _, err := m.Lock(ctx, "r", -time.Second); return err },
			"LockMulti no resources":   func() error { _, err := m.LockMulti(ctx, nil, time.Second); return err },
			"LockMulti empty resource": func() error { _, err := m.LockMulti(ctx, []string{"a", ""}, time.Second); return err },
			"LockMulti duplicate":      func() error { _, err := m.LockMulti(ctx, []string{"a", "a"}, time.Second); return err },
			"Do empty resource":        func() error { return m.Do(ctx, "", time.Second, func(context.Context) error { return nil }) },
			"Do ttl < 0":               func() error { return m.Do(ctx, "r", -1, func(context.Context) error { return nil }) },
			"Do nil fn":                func() error { return m.Do(ctx, "r", time.Second, nil) },
			"IsLocked empty resource":  func() error { _, err := m.IsLocked(ctx, ""); return err },
			"IsLocked 64 KiB+1":        func() error { _, err := m.IsLocked(ctx, tooLong); return err },
			"GetLock empty resource":   func() error { _, err := m.GetLock(ctx, "", "tok"); return err },
			"GetLock empty token":      func() error { _, err := m.GetLock(ctx, "r", ""); return err },
			"m.Extend(ctx, nil, 0)":    func() error { return m.Extend(ctx, nil, 0) },
			"m.Unlock(ctx, nil)":       func() error { return m.Unlock(ctx, nil) },
			"(*Lock)(nil).Unlock":      func() error { return nilLock.Unlock(ctx) },
			"(*Lock)(nil).Extend":      func() error { return nilLock.Extend(ctx, 0) },
		}
		for name, f := range cases {
			err := coreNoPanic(t, name, f)
			require.ErrorIs(t, err, redlock.ErrInvalidArgument, name)
			if strings.HasPrefix(name, "Lock") || strings.HasPrefix(name, "Do ") {
				require.ErrorIs(t, err, redlock.ErrNotAcquired, "%s: a failed Lock must match ErrNotAcquired", name)
			}
		}
		// Extend with ttl < 0 on a real lock.
		l, err := m.Lock(ctx, "r", time.Second)
		require.NoError(t, err)
		require.ErrorIs(t, coreNoPanic(t, "Extend ttl < 0", func() error { return l.Extend(ctx, -time.Second) }),
			redlock.ErrInvalidArgument, "Extend with ttl < 0")
		require.True(t, l.Valid(), "a rejected Extend must not invalidate the lock")
		require.NoError(t, l.Unlock(ctx))
		// The limit itself is accepted.
		exact := strings.Repeat("x", redlock.MaxResourceLen)
		l, err = m.Lock(ctx, exact, time.Second)
		require.NoError(t, err, "a 64 KiB resource is within the limit")
		require.NoError(t, l.Unlock(ctx))
		// A lock of another Manager is refused, not used.
		m2 := coreNew(t, []redlock.Instance{redlock.Addr(srv.Addr())})
		l, err = m2.Lock(ctx, "other", time.Second)
		require.NoError(t, err)
		require.ErrorIs(t, m.Unlock(ctx, l), redlock.ErrInvalidArgument, "Unlock through another Manager")
		require.NoError(t, l.Unlock(ctx))
		coreClose(t, m, 3*time.Second)
		coreClose(t, m2, 3*time.Second)
		keys, err := redisStrings(db.do(t, "KEYS", "*"))
		require.NoError(t, err)
		require.Empty(t, keys, "bad calls left keys on the node")
	})
	coreNoLeak(t, ignore)
}

// redisStrings converts a multi-bulk reply of strings.
func redisStrings(reply interface{}) ([]string, error) {
	vs, ok := reply.([]interface{})
	if !ok {
		return nil, fmt.Errorf("reply %T is not an array", reply)
	}
	out := make([]string, len(vs))
	for i, v := range vs {
		b, ok := v.([]byte)
		if !ok {
			return nil, fmt.Errorf("element %T is not a bulk string", v)
		}
		out[i] = string(b)
	}
	return out, nil
}

// TestUnavailableErrorsNeverLeakPassword points a Manager at password-
// protected servers with a wrong password in every spec form: Lock fails
// with ErrUnavailable and per-node errors, and neither the error (in any
// format), the instances' String nor Manager.Nodes contain the password.
// With the right password the same servers lock fine. Unreachable nodes
// fail with ErrUnavailable too.
func TestUnavailableErrorsNeverLeakPassword(t *testing.T) {
	const right, wrong = "RIGHTsecretPW", "WRONGsecretPW"
	servers := harness.StartN(t, 3, harness.Options{Password: right})
	dead := []string{coreDeadAddr(t), coreDeadAddr(t), coreDeadAddr(t)}
	ignore := goleak.IgnoreCurrent()
	ctx := coreCtx(t, 30*time.Second)
	forms := func(pw string) []redlock.Instance {
		return []redlock.Instance{
			redlock.URL("redis://:" + pw + "@" + servers[0].Addr() + "/0"),
			redlock.Endpoint{Addr: servers[1].Addr(), Password: pw},
			redlock.URL("redis://default:" + pw + "@" + servers[2].Addr()),
		}
	}
	requireNoSecret := func(err error, what string, secrets ...string) {
		t.Helper()
		for _, s := range secrets {
			coreMustNotContain(t, err.Error(), s, what+": Error()")
			coreMustNotContain(t, fmt.Sprintf("%v", err), s, what+": %v")
			coreMustNotContain(t, fmt.Sprintf("%+v", err), s, what+": %+v")
			coreMustNotContain(t, fmt.Sprintf("%#v", err), s, what+": %#v")
		}
	}

	t.Run("wrong password", func(t *testing.T) {
		instances := forms(wrong)
		for _, inst := range instances {
			coreMustNotContain(t, inst.String(), wrong, "Instance.String")
			coreMustNotContain(t, fmt.Sprintf("%v %+v", inst, inst), wrong, "formatted Instance")
		}
		inst, err := redlock.ParseInstance("redis://:" + wrong + "@" + servers[0].Addr())
		require.NoError(t, err)
		coreMustNotContain(t, inst.String(), wrong, "ParseInstance(...).String")

		m := coreNew(t, instances, redlock.WithRetryCount(1))
		for _, n := range m.Nodes() {
			coreMustNotContain(t, n, wrong, "Manager.Nodes")
		}
		_, err = m.Lock(ctx, "guarded", time.Second)
		require.Error(t, err, "Lock with a wrong password must fail")
		require.ErrorIs(t, err, redlock.ErrNotAcquired)
		require.ErrorIs(t, err, redlock.ErrUnavailable, "an authentication failure is a node failure")
		require.NotErrorIs(t, err, redlock.ErrLocked)
		qe := coreQuorumError(t, err)
		require.NotEmpty(t, qe.Nodes, "no per-node errors")
		for _, ne := range qe.Nodes {
			require.ErrorIs(t, ne, redlock.ErrUnavailable, "node %s", ne.Node)
			require.Contains(t, ne.Error(), "WRONGPASS", "node %s: the error should say that authentication failed", ne.Node)
			coreMustNotContain(t, ne.Node, wrong, "NodeError.Node")
			coreMustNotContain(t, ne.Error(), wrong, "NodeError.Error")
		}
		requireNoSecret(err, "Lock error", wrong, right)
		t.Logf("wrong password: %v", err)

		_, err = m.IsLocked(ctx, "guarded")
		require.ErrorIs(t, err, redlock.ErrUnavailable, "IsLocked with a wrong password")
		requireNoSecret(err, "IsLocked error", wrong, right)
		coreClose(t, m, 3*time.Second)
	})

	t.Run("bad spec with a password", func(t *testing.T) {
		for _, spec := range []string{
			"redis://:" + wrong + "@host:notaport",
			"redis://user:" + wrong + "@:6379",
			"redis://:" + wrong + "@h:6379/abc",
			"ftp://:" + wrong + "@h:21",
		} {
			_, err := redlock.ParseInstance(spec)
			require.ErrorIs(t, err, redlock.ErrInvalidArgument, "ParseInstance of a bad spec")
			requireNoSecret(err, "ParseInstance error", wrong)
			_, err = redlock.New([]redlock.Instance{redlock.URL(spec)})
			require.ErrorIs(t, err, redlock.ErrInvalidArgument, "New of a bad spec")
			requireNoSecret(err, "New error", wrong)
		}
	})

	t.Run("right password", func(t *testing.T) {
		m := coreNew(t, forms(right))
		l, err := m.Lock(ctx, "guarded", 5*time.Second)
		require.NoError(t, err, "Lock with the right password in every form")
		require.NoError(t, l.Extend(ctx, 0))
		require.NoError(t, l.Unlock(ctx))
		coreClose(t, m, 3*time.Second)
	})

	t.Run("unreachable nodes", func(t *testing.T) {
		m := coreNew(t, []redlock.Instance{redlock.Addr(dead[0]), redlock.Addr(dead[1]), redlock.Addr(dead[2])}, redlock.WithRetryCount(2),
			redlock.WithRetryDelay(time.Millisecond, time.Millisecond))
		start := time.Now()
		_, err := m.Lock(ctx, "r", time.Second)
		took := time.Since(start)
		require.ErrorIs(t, err, redlock.ErrNotAcquired)
		require.ErrorIs(t, err, redlock.ErrUnavailable, "unreachable nodes")
		require.NotErrorIs(t, err, redlock.ErrLocked)
		qe := coreQuorumError(t, err)
		require.NotEmpty(t, qe.Nodes)
		for _, ne := range qe.Nodes {
			require.ErrorIs(t, ne, redlock.ErrUnavailable, "node %s", ne.Node)
		}
		require.Less(t, took, 2*time.Second, "refused connections must fail fast")
		t.Logf("unreachable nodes (%v): %v", took, err)
		_, err = m.IsLocked(ctx, "r")
		require.ErrorIs(t, err, redlock.ErrUnavailable, "IsLocked on unreachable nodes")
		coreClose(t, m, 3*time.Second)
	})
	coreNoLeak(t, ignore)
}
