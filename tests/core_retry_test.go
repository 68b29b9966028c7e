package tests

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/redlock-go/redlock"
	"github.com/redlock-go/redlock/tests/harness"
)

// TestFailedAttemptCleanupNeverReleasesLaterAttempt checks that the
// background cleanup of a failed attempt cannot delete the keys of a later,
// successful attempt of the same Lock call.
//
// Deterministic set-up on three real nodes A, B, C (scripts preloaded):
//   - A: CLIENT PAUSE 400 WRITE, so every script sent to A in the first
//     400ms is answered only after the pause, in arrival order;
//   - B refuses until t=200ms, then accepts;
//   - C refuses throughout.
//
// B and C refuse either with a foreign key (contention) or with a password
// the Manager does not have (a node failure: the retry then follows the
// plain retry delay, without waiting for a release notification).
//
// Every attempt before t=200ms fails at once on B and C, leaving its
// goroutine for A waiting. The attempt made after t=200ms gets B, is refused
// by C and waits for A. At t=400ms A answers every queued attempt in order;
// the pending one can succeed with {A, B}, and the earlier attempts, whose
// votes on A arrive at the same moment, send their cleanup release to A. If
// the attempts share a token and that release reaches A after the
// successful acquire, it deletes the lock's key on A: the "held" lock
// stands on B alone and, once C accepts, a second client takes A and C —
// two holders at once. Whatever the outcome, a lock returned must stay held
// on a quorum while it is Valid and refuse a rival; a refused Lock must leave
// no key behind.
//
// Both transports are covered: the library's own pools (one pipelined
// connection per node) and caller-owned redigo pools (a connection per
// command).
func TestFailedAttemptCleanupNeverReleasesLaterAttempt(t *testing.T) {
	servers := harness.StartN(t, 3, harness.Options{})
	dbs := coreDBs(t, servers)
	// Connections made before any password is set stay authenticated.
	admin := []redis.Conn{servers[0].Conn(t), servers[1].Conn(t), servers[2].Conn(t)}
	ignore := goleak.IgnoreCurrent()

	for _, sc := range redlock.Scripts() {
		for i := range admin {
			_, err := admin[i].Do("SCRIPT", "LOAD", sc.Source)
			require.NoError(t, err, "SCRIPT LOAD %s on %s", sc.Name, servers[i])
		}
	}
	// Each run gets fresh connections: one made before a password was set
	// would stay authenticated.
	callerPools := func(t *testing.T) []redlock.Instance {
		out := make([]redlock.Instance, len(servers))
		for i, s := range servers {
			p := &redis.Pool{
				DialContext: func(ctx context.Context) (redis.Conn, error) { return redis.DialContext(ctx, "tcp", s.Addr()) },
				MaxIdle:     8,
			}
			t.Cleanup(func() { p.Close() })
			out[i] = redlock.Pool(p)
		}
		return out
	}
	transports := []struct {
		name      string
		instances func(t *testing.T) []redlock.Instance
	}{{"Addr", func(*testing.T) []redlock.Instance { return coreAddrs(servers) }}, {"caller Pool", callerPools}}

	for _, refusal := range []string{"foreign key", "password"} {
		for _, tr := range transports {
			for _, withToken := range []bool{false, true} {
				name := refusal + "/" + tr.name + "/random token"
				var lockOpts []redlock.LockOption
				if withToken {
					name = refusal + "/" + tr.name + "/WithToken"
					lockOpts = append(lockOpts, redlock.WithToken("my-fixed-token"))
				}
				t.Run(name, func(t *testing.T) {
					coreRetryScenario(t, tr.instances(t), servers, admin, dbs, refusal == "password", lockOpts)
				})
			}
		}
	}
	coreNoLeak(t, ignore)
}

// coreRetryScenario runs TestFailedAttemptCleanupNeverReleasesLaterAttempt's
// scenario once over instances (A, B, C).
func coreRetryScenario(t *testing.T, instances []redlock.Instance, servers []*harness.Server, admin []redis.Conn, dbs []*coreDB, byPassword bool, lockOpts []redlock.LockOption) {
	const resource = "retried"
	ctx := coreCtx(t, 30*time.Second)
	var adminMu sync.Mutex // the admin connections are used from a timer too
	adminDo := func(i int, cmd string, args ...interface{}) error {
		adminMu.Lock()
		defer adminMu.Unlock()
		_, err := admin[i].Do(cmd, args...)
		return err
	}
	mustAdmin := func(i int, cmd string, args ...interface{}) {
		t.Helper()
		require.NoError(t, adminDo(i, cmd, args...), "%s %v on %s", cmd, args, servers[i])
	}
	for i := range servers {
		adminDo(i, "DEL", resource)
	}
	var openC func()
	if byPassword {
		mustAdmin(1, "CONFIG", "SET", "requirepass", "pw-of-B")
		mustAdmin(2, "CONFIG", "SET", "requirepass", "pw-of-C")
		t.Cleanup(func() {
			adminDo(1, "CONFIG", "SET", "requirepass", "")
			adminDo(2, "CONFIG", "SET", "requirepass", "")
		})
		openC = func() { mustAdmin(2, "CONFIG", "SET", "requirepass", "") }
	} else {
		mustAdmin(1, "SET", resource, "foreign", "PX", 200)
		mustAdmin(2, "SET", resource, "foreign", "PX", 60000)
		openC = func() { mustAdmin(2, "DEL", resource) }
	}
	// Built after the passwords were set: its connections are not
	// authenticated on B and C.
	m := coreNew(t, instances, redlock.WithNodeTimeout(2*time.Second),
		redlock.WithRetryCount(20), redlock.WithRetryDelay(100*time.Millisecond, 100*time.Millisecond))
	rival := coreNew(t, coreAddrs(servers), redlock.WithRetryCount(1))
	mustAdmin(0, "CLIENT", "PAUSE", 400, "WRITE")
	if byPassword {
		opened := make(chan error, 1)
		time.AfterFunc(200*time.Millisecond, func() { opened <- adminDo(1, "CONFIG", "SET", "requirepass", "") })
		t.Cleanup(func() { <-opened })
	}

	start := time.Now()
	l, err := m.Lock(ctx, resource, 10*time.Second, lockOpts...)
	if err != nil {
		// Refusing is safe (e.g. an earlier attempt's late key on A
		// blocks the later ones); no key may be left behind.
		t.Logf("Lock refused after %v: %v", time.Since(start).Round(time.Millisecond), err)
		require.ErrorIs(t, err, redlock.ErrNotAcquired)
		coreClose(t, m, 5*time.Second)
		coreClose(t, rival, 5*time.Second)
		openC()
		for _, d := range dbs[:2] {
			v, ok := d.get(t, resource)
			require.False(t, ok, "a failed Lock left %q on %s", v, d)
		}
		return
	}
	require.True(t, l.Valid())
	t.Logf("Lock succeeded after %v", time.Since(start).Round(time.Millisecond))
	// Let the earlier attempts' cleanup land (sent as A answers them).
	time.Sleep(300 * time.Millisecond)
	openC()
	holders := coreHolders(t, dbs, resource, l.Token())
	require.True(t, l.Valid(), "the 10s lock is no longer valid")
	assert.GreaterOrEqual(t, holders, 2,
		"Lock succeeded, but while the lock is still Valid only %d of 3 nodes hold its token: "+
			"the cleanup of an earlier failed attempt deleted the successful attempt's key", holders)

	// C accepts now: a rival must still be refused while our lock is Valid.
	r, err := rival.Lock(ctx, resource, 10*time.Second)
	if err == nil {
		t.Errorf("two holders at once: a rival took %q (token %s) while our lock (token %s) is Valid=%t", resource, r.Token(), l.Token(), l.Valid())
	} else {
		require.ErrorIs(t, err, redlock.ErrLocked, "the rival must be refused for contention")
	}
	assert.NoError(t, m.Unlock(ctx, l), "Unlock of a lock that is still Valid")
	if r != nil {
		require.NoError(t, rival.Unlock(ctx, r))
	}
	coreClose(t, m, 5*time.Second)
	coreClose(t, rival, 5*time.Second)
}
