package tests

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/require"

	"github.com/redlock-go/redlock"
	"github.com/redlock-go/redlock/tests/harness"
)

func instancesOf(servers []*harness.Server) []redlock.Instance {
	out := make([]redlock.Instance, len(servers))
	for i, s := range servers {
		out[i] = redlock.Addr(s.Addr())
	}
	return out
}

func newManager(t *testing.T, servers []*harness.Server, opts ...redlock.Option) *redlock.Manager {
	t.Helper()
	m, err := redlock.New(instancesOf(servers), opts...)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

// fencedStore is the storage a fenced lock protects: it accepts a write only
// if its token is at least the largest one it accepted before.
type fencedStore struct {
	mu       sync.Mutex
	max      int64
	accepted int
	rejected int
}

func (s *fencedStore) write(fence int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if fence < s.max {
		s.rejected++
		return false
	}
	s.max = fence
	s.accepted++
	return true
}

func TestFencingTokensStrictlyIncreaseAcrossHolders(t *testing.T) {
	servers := harness.StartN(t, 5, harness.Options{})
	m1 := newManager(t, servers, redlock.WithFencing())
	m2 := newManager(t, servers, redlock.WithFencing())
	plain := newManager(t, servers)
	ctx := context.Background()

	var last int64
	for i := 0; i < 200; i++ {
		m := m1
		if i%2 == 1 {
			m = m2
		}
		l, err := m.Lock(ctx, "fenced", time.Second)
		require.NoError(t, err, "lock %d", i)
		require.Greater(t, l.Fence(), last, "lock %d: fencing token did not increase", i)
		last = l.Fence()
		require.NoError(t, l.Unlock(ctx))
	}
	// Unlock returns at quorum, so a node may still hold the previous lock
	// when the next one is taken and miss that phase 2: a quorum has the
	// last token, and no node has more.
	atLast := 0
	for _, s := range servers {
		got, err := redis.Int64(s.Do(t, "GET", redlock.FenceKeyPrefix+"fenced"), nil)
		require.NoError(t, err)
		require.LessOrEqual(t, got, last, "%s: counter above the last token handed out", s.Addr())
		if got == last {
			atLast++
		}
	}
	require.GreaterOrEqual(t, atLast, 3, "a quorum of nodes must hold the last token")
	l, err := plain.Lock(ctx, "unfenced", time.Second)
	require.NoError(t, err)
	require.Zero(t, l.Fence(), "without WithFencing Fence() is 0")
	require.NoError(t, l.Unlock(ctx))

	_, err = m1.LockMulti(ctx, []string{"a", "b"}, time.Second)
	require.ErrorIs(t, err, redlock.ErrInvalidArgument, "fencing with several resources is rejected")
}

// TestFencedStoreRejectsPausedHolder: a holder that stalls past its lease
// (its goroutine is held past the TTL) writes with an old token after a new
// holder wrote; the fenced store rejects it.
func TestFencedStoreRejectsPausedHolder(t *testing.T) {
	servers := harness.StartN(t, 3, harness.Options{})
	m := newManager(t, servers, redlock.WithFencing(), redlock.WithRetryCount(50), redlock.WithRetryDelay(10*time.Millisecond, 20*time.Millisecond))
	ctx := context.Background()
	store := &fencedStore{}

	stale, err := m.Lock(ctx, "account", 300*time.Millisecond)
	require.NoError(t, err)
	resume := make(chan struct{})
	staleWrote := make(chan bool)
	go func() {
		<-resume // the "GC pause": nothing runs until the lease is long gone
		staleWrote <- store.write(stale.Fence())
	}()

	time.Sleep(400 * time.Millisecond)
	require.False(t, stale.Valid(), "lease must have run out")
	fresh, err := m.Lock(ctx, "account", time.Second)
	require.NoError(t, err, "a new holder gets the lapsed lock")
	require.Greater(t, fresh.Fence(), stale.Fence())
	require.True(t, store.write(fresh.Fence()), "the current holder's write is accepted")

	close(resume)
	require.False(t, <-staleWrote, "the stalled holder's write with fence %d must be rejected (store max %d)", stale.Fence(), fresh.Fence())
	require.Equal(t, 1, store.rejected)
	require.NoError(t, fresh.Unlock(ctx))
}

// splitBrainSetup leaves lock A held on nodes 0 and 1 only and then
// restarts node 0 without persistence: only node 1 still remembers A.
// The holder must have top-up off (WithTopUp(false)), or it would take
// node 2 once it is free: the setup is the bare majority top-up removes.
func splitBrainSetup(t *testing.T, servers []*harness.Server, holder *redlock.Manager, observers ...*redlock.Manager) *redlock.Lock {
	ctx := context.Background()
	for _, m := range observers { // the observers know every node's run_id
		_, err := m.IsLocked(ctx, "warm-up")
		require.NoError(t, err)
	}
	servers[2].Do(t, "SET", "job", "someone-else", "PX", 60000)
	a, err := holder.Lock(ctx, "job", 20*time.Second)
	require.NoError(t, err, "A takes the lock on nodes 0 and 1")
	// Lock returned at the quorum; A's acquire on node 2 may still be on its
	// way. Inspect waits for every node, and on each node it runs after A's
	// acquire (one pipelined connection per node): after it, node 2 has
	// refused A for good.
	_, err = holder.Inspect(ctx, "job")
	require.NoError(t, err)
	servers[2].Do(t, "DEL", "job")

	require.NoError(t, servers[0].Kill())
	require.NoError(t, servers[0].Restart(), "restart node 0 with no data")
	for _, m := range observers { // let each observer notice the broken connections and redial
		for i := 0; i < 3; i++ {
			m.IsLocked(ctx, "warm-up")
		}
	}
	return a
}

func TestRestartGuardIgnoresRestartedNodeVotes(t *testing.T) {
	servers := harness.StartN(t, 3, harness.Options{})
	holder := newManager(t, servers, redlock.WithTopUp(false)) // see splitBrainSetup
	guarded := newManager(t, servers, redlock.WithRetryCount(1), redlock.WithDefaultTTL(1500*time.Millisecond))
	a := splitBrainSetup(t, servers, holder, guarded)
	ctx := context.Background()

	_, err := guarded.Lock(ctx, "job", time.Second)
	require.ErrorIs(t, err, redlock.ErrNotAcquired, "B must not get a lock A still holds, though node 0 forgot it")
	require.Contains(t, err.Error(), "restart guard", "node 0's vote must be ignored by the restart guard: %v", err)
	require.True(t, a.Valid())

	// After one max TTL (here 20s was used by A's Manager, but the guarded
	// Manager only knows its own: 1.5s) node 0 votes again.
	// A's Manager meets node 0's broken connection (EOF) and node 2 never
	// held A: the release is confirmed by node 1 only. Its key is gone.
	_ = a.Unlock(ctx)
	require.Equal(t, int64(0), mustInt(t, servers[1].Do(t, "EXISTS", "job")), "A's release deleted its key on node 1")
	time.Sleep(1600 * time.Millisecond)
	l, err := guarded.Lock(ctx, "job", time.Second)
	require.NoError(t, err, "after the quarantine the node counts again")
	require.NoError(t, l.Unlock(ctx))
}

// TestWithoutRestartGuardTheHazardIsReal is the negative test: with the
// guard off, a node restarted without persistence lets a second holder in
// while the first still holds the lock, and the checker sees it.
func TestWithoutRestartGuardTheHazardIsReal(t *testing.T) {
	servers := harness.StartN(t, 3, harness.Options{})
	holder := newManager(t, servers, redlock.WithTopUp(false)) // see splitBrainSetup
	unguarded := newManager(t, servers, redlock.WithRetryCount(1), redlock.WithRestartGuard(false))
	a := splitBrainSetup(t, servers, holder, unguarded)
	ctx := context.Background()

	b, err := unguarded.Lock(ctx, "job", time.Second)
	require.NoError(t, err, "without the guard, nodes 0 and 2 grant B the lock")
	overlap := a.Valid() && b.Valid()
	require.True(t, overlap, "the checker must see two valid holders at once: that is the hazard the guard prevents")
	require.NoError(t, b.Unlock(ctx))
	err = a.Unlock(ctx)
	require.True(t, err == nil || errors.Is(err, redlock.ErrNotHeld))
}

func mustInt(t *testing.T, reply interface{}) int64 {
	n, err := redis.Int64(reply, nil)
	require.NoError(t, err)
	return n
}

func TestRestartGuardDefaultOnAndFirstSightTrusted(t *testing.T) {
	servers := harness.StartN(t, 3, harness.Options{})
	require.NoError(t, servers[0].Kill())
	require.NoError(t, servers[0].Restart())
	m := newManager(t, servers, redlock.WithRetryCount(1))
	l, err := m.Lock(context.Background(), "fresh", time.Second)
	require.NoError(t, err, "a node restarted before the Manager first saw it is trusted")
	require.NoError(t, l.Unlock(context.Background()))
	require.False(t, strings.Contains(l.String(), l.Token()), "String must not print the token")
}
