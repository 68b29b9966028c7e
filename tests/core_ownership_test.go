package tests

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/redlock-go/redlock"
	"github.com/redlock-go/redlock/tests/harness"
)

// TestExpiredLockCannotBeExtendedOrRecreated takes a 300ms lock and lets it
// lapse: Valid turns false exactly when Until passes (sampled every
// millisecond), and once the keys expired on the servers Extend fails with
// ErrNotHeld and a *QuorumError without re-creating the key, although
// nobody else took the resource.
func TestExpiredLockCannotBeExtendedOrRecreated(t *testing.T) {
	servers := harness.StartN(t, 3, harness.Options{})
	dbs := coreDBs(t, servers)
	ignore := goleak.IgnoreCurrent()
	m := coreNew(t, coreAddrs(servers))
	ctx := coreCtx(t, 30*time.Second)
	const resource, ttl = "expiring", 300 * time.Millisecond

	start := time.Now()
	l, err := m.Lock(ctx, resource, ttl)
	require.NoError(t, err, "Lock")
	until := l.Until()
	require.True(t, l.Valid(), "lock not valid right after Lock")
	require.True(t, until.After(time.Now()), "Until already passed right after Lock")
	require.False(t, until.After(start.Add(ttl)), "Until %v is later than the start of Lock plus the ttl", until.Sub(start))
	drift := time.Duration(float64(ttl)*redlock.DefaultDriftFactor) + 2*time.Millisecond
	require.False(t, until.Before(start.Add(ttl-drift-time.Since(start))), "Until is earlier than ttl - drift - elapsed")

	// Sample Valid until it flips: it must be true whenever the sample was
	// taken wholly before Until and false whenever wholly after.
	var flipped time.Time
	for flipped.IsZero() {
		before := time.Now()
		valid := l.Valid()
		after := time.Now()
		if after.Before(until) {
			require.True(t, valid, "Valid() false %v before Until", until.Sub(after))
		}
		if !before.Before(until) {
			require.False(t, valid, "Valid() still true %v after Until", before.Sub(until))
		}
		if !valid {
			flipped = after
		}
		require.Less(t, time.Since(until), time.Second, "Valid() still true a second after Until")
		time.Sleep(time.Millisecond)
	}
	t.Logf("Valid() turned false %v after Until (sampling every ~1ms)", flipped.Sub(until))

	// Past the TTL on the servers too.
	harness.WaitFor(t, 2*time.Second, func() bool {
		for _, d := range dbs {
			if d.exists(t, resource) {
				return false
			}
		}
		return true
	}, "the key did not expire on the servers within 2s of a %v TTL", ttl)

	err = m.Extend(ctx, l, 10*time.Second)
	require.Error(t, err, "Extend of a lapsed lock must fail")
	require.ErrorIs(t, err, redlock.ErrNotHeld, "Extend of a lapsed lock")
	require.NotErrorIs(t, err, redlock.ErrUnavailable, "every node answered: not an availability failure")
	qe := coreQuorumError(t, err)
	require.Equal(t, "extend", qe.Op)
	require.Equal(t, 0, qe.Votes, "no node may agree to extend a lapsed lock")
	require.False(t, l.Valid(), "lock valid after a failed Extend")
	require.ErrorIs(t, l.Extend(ctx, 0), redlock.ErrNotHeld, "second Extend of a lapsed lock")

	coreClose(t, m, 3*time.Second) // waits for the Extend stragglers
	for _, d := range dbs {
		require.False(t, d.exists(t, resource), "Extend re-created the lapsed key on %s (PTTL %dms)", d, d.pttl(t, resource))
	}
	coreNoLeak(t, ignore)
}

// TestForeignTokenNeverTouchesHolder checks that handles with a foreign or
// stale token can neither extend nor release the key of the current holder:
// its value and PTTL stay as they were, and the holder keeps a working lock.
func TestForeignTokenNeverTouchesHolder(t *testing.T) {
	servers := harness.StartN(t, 3, harness.Options{})
	dbs := coreDBs(t, servers)
	ignore := goleak.IgnoreCurrent()
	m1 := coreNew(t, coreAddrs(servers))
	m2 := coreNew(t, coreAddrs(servers))
	ctx := coreCtx(t, 30*time.Second)

	// requireIntact checks the holder's key on every node: its token, and a
	// PTTL that only went down since snapshot (an Extend would reset it).
	snapshot := func(resource, token string) []int64 {
		t.Helper()
		// Lock returned at quorum: wait for the last node's acquire too.
		harness.WaitFor(t, 2*time.Second, func() bool { return coreHolders(t, dbs, resource, token) == len(dbs) },
			"the holder's token is not on every node")
		out := make([]int64, len(dbs))
		for i, d := range dbs {
			out[i] = d.pttl(t, resource)
		}
		return out
	}
	requireIntact := func(resource, token string, before []int64, what string) {
		t.Helper()
		for i, d := range dbs {
			v, ok := d.get(t, resource)
			require.True(t, ok, "%s deleted the holder's key on %s", what, d)
			require.Equal(t, token, v, "%s changed the holder's key on %s", what, d)
			p := d.pttl(t, resource)
			require.True(t, p > 0 && p <= before[i], "%s changed the holder's PTTL on %s: %dms, was %dms", what, d, p, before[i])
		}
	}

	t.Run("GetLock with a wrong token", func(t *testing.T) {
		holder, err := m1.Lock(ctx, "A", 10*time.Second)
		require.NoError(t, err)
		_, err = m2.GetLock(ctx, "A", "not-the-token")
		require.ErrorIs(t, err, redlock.ErrNotHeld, "GetLock with a token nobody holds")
		require.Equal(t, "get", coreQuorumError(t, err).Op)
		require.NoError(t, holder.Unlock(ctx))
	})

	t.Run("stale handle after the lock lapsed and was re-taken", func(t *testing.T) {
		stale, err := m1.Lock(ctx, "B", 200*time.Millisecond)
		require.NoError(t, err)
		coreWaitGone(t, dbs, "B", "waiting for the 200ms lock to lapse")
		holder, err := m2.Lock(ctx, "B", 10*time.Second)
		require.NoError(t, err, "new holder takes the lapsed resource")
		require.NotEqual(t, stale.Token(), holder.Token())
		before := snapshot("B", holder.Token())

		err = stale.Extend(ctx, 200*time.Millisecond)
		require.ErrorIs(t, err, redlock.ErrNotHeld, "Extend with a stale token")
		require.Equal(t, 0, coreQuorumError(t, err).Votes, "a node extended a key held by another token")
		requireIntact("B", holder.Token(), before, "Extend with a stale token")

		err = stale.Unlock(ctx)
		require.ErrorIs(t, err, redlock.ErrNotHeld, "Unlock with a stale token")
		require.Equal(t, 0, coreQuorumError(t, err).Votes, "a node released a key held by another token")
		requireIntact("B", holder.Token(), before, "Unlock with a stale token")

		require.True(t, holder.Valid(), "the holder's lock became invalid")
		require.NoError(t, holder.Extend(ctx, 0), "the holder can still extend")
		require.NoError(t, holder.Unlock(ctx), "the holder can still unlock")
		coreWaitGone(t, dbs, "B", "after the holder's Unlock")
	})

	t.Run("released handle after another holder took over", func(t *testing.T) {
		old, err := m1.Lock(ctx, "C", 10*time.Second)
		require.NoError(t, err)
		require.NoError(t, old.Unlock(ctx))
		coreWaitGone(t, dbs, "C", "after Unlock")
		holder, err := m2.Lock(ctx, "C", 10*time.Second)
		require.NoError(t, err)
		before := snapshot("C", holder.Token())
		require.ErrorIs(t, old.Extend(ctx, 0), redlock.ErrNotHeld, "Extend of a released lock")
		require.ErrorIs(t, old.Unlock(ctx), redlock.ErrNotHeld, "second Unlock of a released lock")
		requireIntact("C", holder.Token(), before, "a released handle")
		require.NoError(t, holder.Unlock(ctx))
	})

	t.Run("custom token handle on a resource held by another token", func(t *testing.T) {
		holder, err := m1.Lock(ctx, "D", 10*time.Second, redlock.WithToken("holder-token"))
		require.NoError(t, err)
		before := snapshot("D", holder.Token())
		_, err = m2.Lock(ctx, "D", time.Second, redlock.WithToken("intruder-token"))
		require.ErrorIs(t, err, redlock.ErrLocked, "Lock of a held resource with another token")
		requireIntact("D", "holder-token", before, "a refused Lock with another token")
		require.NoError(t, holder.Unlock(ctx))
	})

	coreClose(t, m1, 3*time.Second)
	coreClose(t, m2, 3*time.Second)
	coreNoLeak(t, ignore)
}
