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

// TestDoCancelsFnWhenLockDeletedBehindItsBack deletes Do's key on every node
// while fn runs: the next automatic extension (every ttl/3 = 300ms) fails,
// so fn's ctx is cancelled with cause ErrLockLost (wrapping the extension's
// ErrNotHeld, which proves it was the extension and not the local expiry at
// ~900ms) within one extension interval, and Do reports ErrLockLost although
// fn returned nil. Also: Do releases the lock when fn returns, returns fn's
// error, and releases the lock when fn panics.
func TestDoCancelsFnWhenLockDeletedBehindItsBack(t *testing.T) {
	servers := harness.StartN(t, 3, harness.Options{})
	dbs := coreDBs(t, servers)
	ignore := goleak.IgnoreCurrent()
	m := coreNew(t, coreAddrs(servers))
	ctx := coreCtx(t, 30*time.Second)
	const ttl = 900 * time.Millisecond
	const interval = ttl / 3

	t.Run("key deleted behind fn's back", func(t *testing.T) {
		const resource = "do/deleted"
		var cancelledAfter time.Duration
		var cause error
		err := m.Do(ctx, resource, ttl, func(fctx context.Context) error {
			// Lock returned at quorum; let the last node's acquire land too,
			// so that the DEL below removes the key everywhere.
			harness.WaitFor(t, 2*time.Second, func() bool {
				v, _ := dbs[0].get(t, resource)
				return v != "" && coreHolders(t, dbs, resource, v) == 3
			}, "the lock is not held on every node while fn runs")
			deleted := time.Now()
			for _, d := range dbs {
				d.do(t, "DEL", resource)
			}
			select {
			case <-fctx.Done():
				cancelledAfter = time.Since(deleted)
			case <-time.After(2 * time.Second):
				t.Fatalf("fn's ctx was not cancelled within 2s of deleting the key on every node")
			}
			cause = context.Cause(fctx)
			return nil
		})
		t.Logf("fn's ctx cancelled %v after the key was deleted (extension interval %v); cause: %v", cancelledAfter, interval, cause)
		require.ErrorIs(t, cause, redlock.ErrLockLost, "context.Cause of fn's ctx")
		require.ErrorIs(t, cause, redlock.ErrNotHeld, "the cancellation must come from the failed extension, not the local expiry")
		require.Less(t, cancelledAfter, 2*time.Second, "cancellation took longer than the test bound")
		require.Error(t, err, "Do must report the lost lock even though fn returned nil")
		require.ErrorIs(t, err, redlock.ErrLockLost, "Do's error after the lock was lost")
		coreWaitGone(t, dbs, resource, "after Do returned")
	})

	t.Run("fn keeps the lock past its ttl", func(t *testing.T) {
		const resource = "do/long"
		err := m.Do(ctx, resource, 300*time.Millisecond, func(fctx context.Context) error {
			time.Sleep(700 * time.Millisecond) // more than twice the ttl
			require.NoError(t, fctx.Err(), "fn's ctx cancelled although the extensions succeed (cause %v)", context.Cause(fctx))
			v, ok := dbs[0].get(t, resource)
			require.True(t, ok, "the key lapsed while fn ran: Do did not extend it")
			require.GreaterOrEqual(t, coreHolders(t, dbs, resource, v), 2, "fewer than a quorum hold the extended key")
			return nil
		})
		require.NoError(t, err)
		// The last extension was at most ttl/3 ago: only a release frees it now.
		locked, err := m.IsLocked(ctx, resource)
		require.NoError(t, err)
		require.False(t, locked, "resource still locked right after Do returned: Do did not release it")
		coreWaitGone(t, dbs, resource, "after Do returned")
	})

	t.Run("fn returns an error", func(t *testing.T) {
		const resource = "do/error"
		errFn := errors.New("fn failed")
		// A 10s ttl: the key vanishing within coreWaitGone's 3s is Do's
		// release, not the expiry.
		err := m.Do(ctx, resource, 10*time.Second, func(context.Context) error {
			requireQuorumHolds(t, dbs, resource) // Lock returns at the quorum: a straggler may still be on its way
			return errFn
		})
		require.ErrorIs(t, err, errFn, "Do must return fn's error")
		require.NotErrorIs(t, err, redlock.ErrLockLost)
		coreWaitGone(t, dbs, resource, "after fn returned an error")
	})

	t.Run("fn panics", func(t *testing.T) {
		const resource = "do/panic"
		var recovered interface{}
		func() {
			defer func() { recovered = recover() }()
			_ = m.Do(ctx, resource, 10*time.Second, func(context.Context) error {
				requireQuorumHolds(t, dbs, resource) // Lock returns at the quorum: a straggler may still be on its way
				panic("boom")
			})
		}()
		require.Equal(t, "boom", recovered, "Do must let fn's panic through")
		coreWaitGone(t, dbs, resource, "after fn panicked")
		locked, err := m.IsLocked(ctx, resource)
		require.NoError(t, err)
		require.False(t, locked, "resource still locked after fn panicked")
	})

	t.Run("held resource", func(t *testing.T) {
		const resource = "do/held"
		for _, d := range dbs {
			d.do(t, "SET", resource, "other", "PX", 60000)
		}
		ran := false
		err := m.Do(ctx, resource, ttl, func(context.Context) error { ran = true; return nil })
		require.False(t, ran, "Do ran fn without the lock")
		require.ErrorIs(t, err, redlock.ErrNotAcquired)
		require.ErrorIs(t, err, redlock.ErrLocked)
		for _, d := range dbs {
			v, _ := d.get(t, resource)
			require.Equal(t, "other", v, "Do changed the foreign key on %s", d)
		}
	})

	coreClose(t, m, 3*time.Second)
	coreNoLeak(t, ignore)
}

// requireQuorumHolds checks that a quorum of nodes has the key.
func requireQuorumHolds(t *testing.T, dbs []*coreDB, resource string) {
	t.Helper()
	n := 0
	for _, d := range dbs {
		if d.exists(t, resource) {
			n++
		}
	}
	require.GreaterOrEqual(t, n, len(dbs)/2+1, "key absent on a quorum of nodes while fn runs")
}

// TestDoCancelsFnWhenValidityEndsDuringASlowExtension pauses two of three
// nodes while fn runs, with a node timeout (5s) far longer than the lock's
// ttl (600ms). The extension at ttl/3 cannot reach a quorum and would wait
// the node timeout; fn's ctx must still be cancelled, with cause
// ErrLockLost, when the lock's validity ends (~600ms), not when the
// extension gives up (~5.2s).
func TestDoCancelsFnWhenValidityEndsDuringASlowExtension(t *testing.T) {
	servers := harness.StartN(t, 3, harness.Options{})
	ignore := goleak.IgnoreCurrent()
	m := coreNew(t, coreAddrs(servers), redlock.WithNodeTimeout(5*time.Second))
	ctx := coreCtx(t, 30*time.Second)
	const ttl = 600 * time.Millisecond

	var lostAfter time.Duration
	var cause error
	err := m.Do(ctx, "do/slow-extension", ttl, func(fctx context.Context) error {
		start := time.Now()
		for _, s := range servers[1:] {
			require.NoError(t, s.Pause())
		}
		select {
		case <-fctx.Done():
			lostAfter = time.Since(start)
		case <-time.After(4 * time.Second):
			t.Errorf("fn's ctx was not cancelled within 4s, although the lock's validity was %v", ttl)
		}
		cause = context.Cause(fctx)
		for _, s := range servers[1:] { // so that Do's release does not wait for them
			require.NoError(t, s.Resume())
		}
		return nil
	})
	t.Logf("fn's ctx cancelled %v after the pause; cause: %v", lostAfter, cause)
	require.Less(t, lostAfter, 2*time.Second, "the loss must be seen when the validity ends, not after the 5s node timeout")
	require.ErrorIs(t, cause, redlock.ErrLockLost)
	require.ErrorIs(t, err, redlock.ErrLockLost, "Do reports the lost lock")
	coreClose(t, m, 12*time.Second)
	coreNoLeak(t, ignore)
}
