package tests

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/redlock-go/redlock"
	"github.com/redlock-go/redlock/tests/harness"
)

// TestLockCtxErrorsSayWhy checks the error contract when the caller's ctx
// ends first: the error matches ErrNotAcquired, the ctx's own error, and
// ErrLocked or ErrUnavailable as the nodes justify — never none of them —
// and Lock returns promptly, not after the node timeout or the retries.
func TestLockCtxErrorsSayWhy(t *testing.T) {
	live := harness.StartN(t, 3, harness.Options{})
	paused := harness.StartN(t, 3, harness.Options{})
	for _, s := range paused {
		require.NoError(t, s.Pause())
	}
	more := harness.StartN(t, 3, harness.Options{})
	dbs := coreDBs(t, live)
	ignore := goleak.IgnoreCurrent()

	t.Run("deadline on paused nodes", func(t *testing.T) {
		m := coreNew(t, coreAddrs(paused), redlock.WithNodeTimeout(3*time.Second), redlock.WithRetryCount(1))
		ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := m.Lock(ctx, "ctx/paused", 5*time.Second)
		took := time.Since(start)
		require.Error(t, err)
		require.Less(t, took, 2*time.Second, "Lock must return when ctx ends, not after the 3s node timeout")
		require.ErrorIs(t, err, redlock.ErrNotAcquired)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.ErrorIs(t, err, redlock.ErrUnavailable, "nodes that had not answered when ctx ended count as unavailable: %v", err)
		require.NotErrorIs(t, err, redlock.ErrLocked)
		qe := coreQuorumError(t, err)
		require.Len(t, qe.Nodes, 3, "one NodeError per silent node: %v", err)
		for i, ne := range qe.Nodes {
			require.Contains(t, ne.Node, paused[i].Addr(), "NodeErrors in node order")
			require.ErrorIs(t, ne, context.DeadlineExceeded)
		}
		coreClose(t, m, 5*time.Second)
	})

	t.Run("cancel while waiting for a held resource", func(t *testing.T) {
		for _, d := range dbs {
			d.do(t, "SET", "ctx/held", "foreign-token", "PX", 60000)
		}
		m := coreNew(t, coreAddrs(live), redlock.WithRetryCount(1000))
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(300*time.Millisecond, cancel)
		start := time.Now()
		_, err := m.Lock(ctx, "ctx/held", 5*time.Second)
		require.Less(t, time.Since(start), 2*time.Second, "Lock must stop retrying when ctx is cancelled")
		require.ErrorIs(t, err, redlock.ErrNotAcquired)
		require.ErrorIs(t, err, context.Canceled)
		require.ErrorIs(t, err, redlock.ErrLocked, "%v", err)
		coreClose(t, m, 3*time.Second)
		for _, d := range dbs {
			v, _ := d.get(t, "ctx/held")
			require.Equal(t, "foreign-token", v, "the holder's key on %s must be untouched", d)
		}
	})

	t.Run("an attempt cut short keeps the contention seen before", func(t *testing.T) {
		// Attempts 1 and 2 meet the holder; then every node stops
		// answering, so ctx ends in the middle of attempt 3. The error
		// must still say "locked" (what the decided attempts saw), not
		// only "unavailable".
		for _, d := range coreDBs(t, more) {
			d.do(t, "SET", "ctx/cut", "foreign-token", "PX", 60000)
		}
		m := coreNew(t, coreAddrs(more), redlock.WithRetryCount(1000),
			redlock.WithRetryDelay(500*time.Millisecond, 500*time.Millisecond), redlock.WithNodeTimeout(5*time.Second))
		ctx, cancel := context.WithTimeout(context.Background(), 1200*time.Millisecond)
		defer cancel()
		time.AfterFunc(200*time.Millisecond, func() {
			for _, s := range more {
				_ = s.Pause()
			}
		})
		_, err := m.Lock(ctx, "ctx/cut", 5*time.Second)
		for _, s := range more {
			require.NoError(t, s.Resume())
		}
		require.ErrorIs(t, err, redlock.ErrNotAcquired)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.ErrorIs(t, err, redlock.ErrLocked, "%v", err)
		qe := coreQuorumError(t, err)
		require.Len(t, qe.Nodes, 2, "the decided attempt's votes (quorum impossible after 2 of 3): %v", err)
		coreClose(t, m, 6*time.Second)
		for _, d := range coreDBs(t, more) {
			d.do(t, "DEL", "ctx/cut")
		}
	})

	t.Run("already cancelled", func(t *testing.T) {
		m := coreNew(t, coreAddrs(live))
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		l, err := m.Lock(ctx, "ctx/cancelled", 5*time.Second)
		if err == nil {
			// The nodes may answer before the select sees ctx: a lock
			// taken then is a real lock, and must be releasable.
			require.NoError(t, m.Unlock(context.Background(), l))
		} else {
			require.ErrorIs(t, err, redlock.ErrNotAcquired)
			require.ErrorIs(t, err, context.Canceled)
			require.True(t, errors.Is(err, redlock.ErrUnavailable) || errors.Is(err, redlock.ErrLocked), "%v", err)
		}
		coreClose(t, m, 3*time.Second)
		coreRequireGone(t, dbs, "ctx/cancelled", "after a Lock with a cancelled ctx and Close")
	})

	t.Run("extend and unlock on paused nodes", func(t *testing.T) {
		m := coreNew(t, coreAddrs(more), redlock.WithNodeTimeout(3*time.Second))
		l, err := m.Lock(context.Background(), "ctx/extend", 5*time.Second)
		require.NoError(t, err)
		// Two of three nodes stop answering: Extend and Unlock cannot
		// reach a quorum and must stop with ctx.
		for _, s := range more[1:] {
			require.NoError(t, s.Pause())
		}
		for _, op := range []struct {
			name string
			call func(context.Context) error
		}{
			{"Extend", func(ctx context.Context) error { return l.Extend(ctx, 0) }},
			{"Unlock", func(ctx context.Context) error { return l.Unlock(ctx) }},
		} {
			ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
			start := time.Now()
			err := op.call(ctx)
			cancel()
			require.Less(t, time.Since(start), 2*time.Second, "%s must return when ctx ends", op.name)
			require.ErrorIs(t, err, redlock.ErrNotHeld, op.name)
			require.ErrorIs(t, err, context.DeadlineExceeded, op.name)
			require.ErrorIs(t, err, redlock.ErrUnavailable, "%s: %v", op.name, err)
			qe := coreQuorumError(t, err)
			require.Len(t, qe.Nodes, 2, "%s: the two silent nodes: %v", op.name, err)
		}
		for _, s := range more[1:] {
			require.NoError(t, s.Resume())
		}
		coreClose(t, m, 5*time.Second)
	})
	coreNoLeak(t, ignore)
}
