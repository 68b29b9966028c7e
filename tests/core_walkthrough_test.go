package tests

import (
	"context"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/redlock-go/redlock"
	"github.com/redlock-go/redlock/tests/harness"
)

// TestSeedWalkthrough runs the whole aioredlock README walk-through against
// five real servers, each given in one of the seed's forms (host:port, the
// dict form as an Endpoint with DB 1, a redis:// URL with DB 2) or one of
// the other forms (a URL with ?db=, ParseInstance, a caller-owned pool), and
// checks that every node stores the key in the database its form names.
func TestSeedWalkthrough(t *testing.T) {
	servers := harness.StartN(t, 5, harness.Options{})
	callerPool := &redis.Pool{
		DialContext: func(ctx context.Context) (redis.Conn, error) {
			return redis.DialContext(ctx, "tcp", servers[4].Addr(), redis.DialDatabase(4))
		},
		MaxIdle: 4,
	}
	t.Cleanup(func() { callerPool.Close() })
	parsed, err := redlock.ParseInstance("redis://" + servers[3].Addr() + "/3")
	require.NoError(t, err, "ParseInstance of a redis:// URL")
	instances := []redlock.Instance{
		redlock.Addr(servers[0].Addr()),                  // ('localhost', 6379)
		redlock.Endpoint{Addr: servers[1].Addr(), DB: 1}, // {'host': ..., 'port': ..., 'db': 1}
		redlock.URL("redis://" + servers[2].Addr() + "/2"),
		parsed,
		redlock.Pool(callerPool),
	}
	// Where each form must put the key.
	dbs := []*coreDB{
		coreDBOf(t, servers[0], 0),
		coreDBOf(t, servers[1], 1),
		coreDBOf(t, servers[2], 2),
		coreDBOf(t, servers[3], 3),
		coreDBOf(t, servers[4], 4),
	}
	ignore := goleak.IgnoreCurrent()

	ctx := coreCtx(t, 30*time.Second)
	m := coreNew(t, instances)
	require.Equal(t, 3, m.Quorum(), "quorum of 5 nodes")
	const resource = "resource_name"

	// assert not await lock_manager.is_locked("resource_name")
	locked, err := m.IsLocked(ctx, resource)
	require.NoError(t, err, "IsLocked on five free nodes")
	require.False(t, locked, "IsLocked before any lock")

	// lock = await lock_manager.lock("resource_name", lock_timeout=10)
	start := time.Now()
	lock, err := m.Lock(ctx, resource, 10*time.Second)
	require.NoError(t, err, "Lock on five free nodes")
	require.Equal(t, resource, lock.Resource())
	require.GreaterOrEqual(t, len(lock.Token()), 22, "token %q is shorter than 128 bits in base64url", lock.Token())
	// assert lock.valid; assert await lock_manager.is_locked("resource_name")
	require.True(t, lock.Valid(), "lock is not valid right after Lock")
	require.True(t, lock.Until().After(time.Now()), "Until is in the past")
	require.False(t, lock.Until().After(start.Add(10*time.Second)), "Until %v is later than the start of Lock plus the ttl", lock.Until())
	locked, err = m.IsLocked(ctx, resource)
	require.NoError(t, err)
	require.True(t, locked, "IsLocked after Lock")
	// Each form took the key in its own database.
	harness.WaitFor(t, 2*time.Second, func() bool { return coreHolders(t, dbs, resource, lock.Token()) == 5 },
		"the token is not stored in the database each instance form names (want 5 of 5 nodes)")
	for _, s := range servers {
		if v, ok := coreDBOf(t, s, 9).get(t, resource); ok {
			t.Fatalf("key found in unrelated DB 9 of %s: %q", s, v)
		}
	}
	require.True(t, !coreDBOf(t, servers[1], 0).exists(t, resource), "Endpoint{DB: 1} wrote to DB 0")

	// await lock_manager.extend(lock, lock_timeout=10)
	before := lock.Until()
	time.Sleep(20 * time.Millisecond)
	// (20s rather than the seed's 10 so that the new expiry is visible.)
	require.NoError(t, m.Extend(ctx, lock, 20*time.Second), "Extend a held lock")
	require.True(t, lock.Until().After(before.Add(5*time.Second)), "Extend(20s) did not move Until (%v -> %v)", before, lock.Until())
	pttls := func(ok func(ms int64) bool) func() bool {
		return func() bool {
			for _, d := range dbs {
				if !ok(d.pttl(t, resource)) {
					return false
				}
			}
			return true
		}
	}
	// Extend returns at quorum; the last nodes may answer a moment later.
	harness.WaitFor(t, 2*time.Second, pttls(func(ms int64) bool { return ms > 15000 }), "Extend(20s) did not raise the PTTL on every node")
	// lock.extend() without a timeout: the lock's own ttl (10s) again.
	require.NoError(t, lock.Extend(ctx, 0), "lock.Extend, the alias of lock_manager.extend(lock)")
	harness.WaitFor(t, 2*time.Second, pttls(func(ms int64) bool { return ms > 0 && ms <= 10000 }), "Extend(0) did not reset every node's PTTL to the lock's ttl")

	// await lock_manager.unlock(lock); assert not lock.valid; assert not is_locked
	require.NoError(t, m.Unlock(ctx, lock), "Unlock a held lock")
	require.False(t, lock.Valid(), "lock still valid after Unlock")
	locked, err = m.IsLocked(ctx, resource)
	require.NoError(t, err)
	require.False(t, locked, "IsLocked after Unlock")
	coreWaitGone(t, dbs, resource, "after Unlock")

	// async with await lock_manager.lock("resource_name") as lock: ...
	ran := false
	err = m.Do(ctx, resource, 0, func(ctx context.Context) error {
		ran = true
		require.NoError(t, ctx.Err(), "fn's ctx is already done")
		locked, err := m.IsLocked(ctx, resource)
		require.NoError(t, err)
		require.True(t, locked, "IsLocked inside Do's fn")
		var token string
		for _, d := range dbs {
			if v, ok := d.get(t, resource); ok {
				token = v
			}
		}
		require.NotEmpty(t, token, "no node holds the key inside Do's fn")
		require.GreaterOrEqual(t, coreHolders(t, dbs, resource, token), 3, "fewer than a quorum hold the key inside Do's fn")
		p := dbs[0].pttl(t, resource)
		require.True(t, p > 9000, "Do with ttl 0 must use the default TTL of 10s; PTTL is %dms", p)
		return nil
	})
	require.NoError(t, err, "Do")
	require.True(t, ran, "Do did not run fn")
	locked, err = m.IsLocked(ctx, resource)
	require.NoError(t, err)
	require.False(t, locked, "IsLocked after Do returned")
	coreWaitGone(t, dbs, resource, "after Do returned")

	// await lock_manager.destroy()
	coreClose(t, m, 5*time.Second)
	require.NoError(t, m.Close(), "second Close must be a no-op")
	_, err = m.Lock(ctx, resource, time.Second)
	require.ErrorIs(t, err, redlock.ErrClosed, "Lock after Close")
	// Close leaves the caller's pool open.
	c := callerPool.Get()
	_, err = c.Do("PING")
	c.Close()
	require.NoError(t, err, "the caller-owned pool was closed by Manager.Close")
	coreNoLeak(t, ignore)
}
