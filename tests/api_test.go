package tests

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/redlock-go/redlock"
	"github.com/redlock-go/redlock/tests/harness"
)

func TestInspectReportsEveryNode(t *testing.T) {
	servers := harness.StartN(t, 3, harness.Options{})
	m := newManager(t, servers)
	ctx := context.Background()
	l, err := m.Lock(ctx, "inspected", 5*time.Second)
	require.NoError(t, err)
	// Lock returns at the quorum: the last node's acquire may still be on
	// its way. It must land (the straggler is not cancelled).
	harness.WaitFor(t, 2*time.Second, func() bool {
		states, err := m.Inspect(ctx, "inspected")
		return err == nil && states[0].Holder == l.Token() && states[1].Holder == l.Token() && states[2].Holder == l.Token()
	}, "the lock never reached all three nodes")
	require.NoError(t, servers[2].Kill())

	states, err := m.Inspect(ctx, "inspected")
	require.NoError(t, err)
	require.Len(t, states, 3)
	for i, st := range states[:2] {
		require.NoError(t, st.Err, "node %d", i)
		require.Equal(t, l.Token(), st.Holder, "node %d holder", i)
		require.True(t, st.TTL > 4*time.Second && st.TTL <= 5*time.Second, "node %d TTL %v", i, st.TTL)
		require.Equal(t, "redis://"+servers[i].Addr(), st.Node)
	}
	require.Error(t, states[2].Err, "a dead node reports its error")

	states, err = m.Inspect(ctx, "nobody-holds-this")
	require.NoError(t, err)
	require.Equal(t, "", states[0].Holder)
	require.Zero(t, states[0].TTL)
	_, err = m.Inspect(ctx, "")
	require.ErrorIs(t, err, redlock.ErrInvalidArgument)
}

// TestHoldKeepsAnAcquiredLockAlive: the wait and the work get different
// contexts; the lock outlives several TTLs while fn runs and is released
// afterwards.
func TestHoldKeepsAnAcquiredLockAlive(t *testing.T) {
	servers := harness.StartN(t, 3, harness.Options{})
	m := newManager(t, servers)
	waitCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	l, err := m.Lock(waitCtx, "held", 600*time.Millisecond)
	cancel() // the wait is over; the work must not depend on its ctx
	require.NoError(t, err)

	err = m.Hold(context.Background(), l, func(ctx context.Context) error {
		select {
		case <-time.After(1500 * time.Millisecond): // 2.5 TTLs
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		states, err := m.Inspect(ctx, "held")
		require.NoError(t, err)
		for _, st := range states {
			require.Equal(t, l.Token(), st.Holder, "still held on %s after 2.5 TTLs", st.Node)
		}
		return nil
	})
	require.NoError(t, err)
	require.False(t, l.Valid(), "released after fn")
	locked, err := m.IsLocked(context.Background(), "held")
	require.NoError(t, err)
	require.False(t, locked)

	require.ErrorIs(t, m.Hold(context.Background(), nil, func(context.Context) error { return nil }), redlock.ErrInvalidArgument)
	require.ErrorIs(t, m.Hold(context.Background(), l, nil), redlock.ErrInvalidArgument)
}

// TestRestartGuardToleratesUsersWithoutInfo: an ACL user that may not run
// INFO can still lock (the node is simply not watched).
func TestRestartGuardToleratesUsersWithoutInfo(t *testing.T) {
	servers := harness.StartN(t, 3, harness.Options{})
	var insts []redlock.Instance
	for _, s := range servers {
		s.Do(t, "ACL", "SETUSER", "locker", "on", ">lockerpw", "~*", "&*", "+@all", "-info")
		insts = append(insts, redlock.Endpoint{Addr: s.Addr(), Username: "locker", Password: "lockerpw"})
	}
	m, err := redlock.New(insts)
	require.NoError(t, err)
	defer m.Close()
	ctx := context.Background()
	l, err := m.Lock(ctx, "acl", time.Second)
	require.NoError(t, err, "an ACL user without +info must be able to lock with the default restart guard")
	require.NoError(t, l.Unlock(ctx))
	c := servers[0].Conn(t)
	_, err = c.Do("AUTH", "locker", "lockerpw")
	require.NoError(t, err)
	_, err = c.Do("INFO", "server")
	require.ErrorContains(t, err, "NOPERM", "the setup must really forbid INFO to this user")
}

// TestLockTTLIsTheTTLItWasTakenWith: TTL reports the ttl given to Lock (the
// default TTL for 0 and for a handle rebuilt by GetLock); an Extend with
// another ttl moves Until but not TTL, which Extend(ctx, 0) keeps using.
func TestLockTTLIsTheTTLItWasTakenWith(t *testing.T) {
	servers := harness.StartN(t, 3, harness.Options{})
	dbs := coreDBs(t, servers)
	m := coreNew(t, coreAddrs(servers), redlock.WithDefaultTTL(7*time.Second))
	ctx := coreCtx(t, 10*time.Second)

	l, err := m.Lock(ctx, "ttl/given", 3*time.Second)
	require.NoError(t, err)
	require.Equal(t, 3*time.Second, l.TTL())
	require.NoError(t, l.Extend(ctx, 20*time.Second))
	require.Equal(t, 3*time.Second, l.TTL(), "Extend with another ttl does not change TTL")
	require.Greater(t, time.Until(l.Until()), 15*time.Second, "Extend(20s) moved Until")
	require.NoError(t, l.Extend(ctx, 0))
	require.Less(t, time.Until(l.Until()), 3*time.Second, "Extend(0) uses the lock's own ttl")
	for _, d := range dbs {
		require.LessOrEqual(t, d.pttl(t, "ttl/given"), int64(3000), "%s: Extend(0) set the key's ttl back to 3s", d)
	}
	require.NoError(t, l.Unlock(ctx))

	def, err := m.Lock(ctx, "ttl/default", 0)
	require.NoError(t, err)
	require.Equal(t, 7*time.Second, def.TTL(), "ttl 0 means the default TTL")
	got, err := m.GetLock(ctx, "ttl/default", def.Token())
	require.NoError(t, err)
	require.Equal(t, 7*time.Second, got.TTL(), "a rebuilt handle uses the default TTL")
	require.NoError(t, got.Unlock(ctx))
	coreClose(t, m, 3*time.Second)
}
