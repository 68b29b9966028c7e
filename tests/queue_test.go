package tests

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/redlock-go/redlock"
	"github.com/redlock-go/redlock/tests/harness"
)

// queueStart starts n Lock calls of m on resource, one after the other
// (each after the previous one has queued), each holding the lock for hold
// and recording its index when it got the lock; ctxs[i] (or Background)
// bounds call i. It returns the order and the calls' errors once all end.
func queueStart(t *testing.T, m *redlock.Manager, resource string, n int, hold time.Duration, ctxs map[int]context.Context) (func() ([]int, []error), []chan struct{}) {
	t.Helper()
	var mu sync.Mutex
	var order []int
	errs := make([]error, n)
	started := make([]chan struct{}, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		started[i] = make(chan struct{})
		ctx := ctxs[i]
		if ctx == nil {
			ctx = context.Background()
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			close(started[i])
			l, err := m.Lock(ctx, resource, 10*time.Second)
			if err != nil {
				errs[i] = err
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			time.Sleep(hold)
			errs[i] = l.Unlock(context.Background())
		}(i)
		<-started[i]
		time.Sleep(20 * time.Millisecond) // in the queue before the next one comes
	}
	return func() ([]int, []error) { wg.Wait(); return order, errs }, started
}

// TestLocalWaitersAreServedInOrder: Lock calls of one Manager waiting for
// a resource another Manager holds get it first come, first served, once
// it is released; a queued call whose ctx ends leaves at once and the
// others keep their order.
func TestLocalWaitersAreServedInOrder(t *testing.T) {
	servers := harness.StartN(t, 3, harness.Options{})
	ignore := goleak.IgnoreCurrent()
	holder := coreNew(t, coreAddrs(servers))
	m := coreNew(t, coreAddrs(servers), redlock.WithRetryCount(1000), redlock.WithRetryDelay(50*time.Millisecond, 100*time.Millisecond))
	ctx := coreCtx(t, 30*time.Second)

	h, err := holder.Lock(ctx, "queue-fifo", 10*time.Second)
	require.NoError(t, err)
	cctx, cancel := context.WithCancel(ctx)
	wait, _ := queueStart(t, m, "queue-fifo", 6, 5*time.Millisecond, map[int]context.Context{3: cctx})
	cancelled := time.Now()
	cancel()
	require.NoError(t, h.Unlock(ctx))
	order, errs := wait()
	require.ErrorIs(t, errs[3], redlock.ErrNotAcquired, "the cancelled waiter")
	require.ErrorIs(t, errs[3], context.Canceled)
	var qe *redlock.QuorumError
	require.True(t, errors.As(errs[3], &qe), "a queued Lock's error is a *QuorumError: %v", errs[3])
	for i, e := range errs {
		if i != 3 {
			require.NoError(t, e, "waiter %d", i)
		}
	}
	require.Equal(t, []int{0, 1, 2, 4, 5}, order, "first come, first served; the cancelled one left its place")
	t.Logf("6 queued waiters served in order %v after the release (waiter 3 cancelled %v before)", order, time.Since(cancelled).Round(time.Millisecond))
	coreClose(t, m, 3*time.Second)
	coreClose(t, holder, 3*time.Second)
	coreNoLeak(t, ignore)
}

// TestQueuedWaiterKeepsItsRetryCount: a waiter behind another of the same
// Manager counts the head's attempts as its own, so it gives up after its
// retry count of attempts, like a Lock alone, and not when the holder
// releases; its ctx ends its wait at once.
func TestQueuedWaiterKeepsItsRetryCount(t *testing.T) {
	servers := harness.StartN(t, 3, harness.Options{})
	holder := coreNew(t, coreAddrs(servers))
	m := coreNew(t, coreAddrs(servers), redlock.WithRetryCount(3), redlock.WithRetryDelay(100*time.Millisecond, 100*time.Millisecond))
	ctx := coreCtx(t, 30*time.Second)
	h, err := holder.Lock(ctx, "queue-retries", 20*time.Second)
	require.NoError(t, err)

	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, 3)
	took := make([]time.Duration, 3)
	for i := range errs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, errs[i] = m.Lock(ctx, "queue-retries", time.Second)
			took[i] = time.Since(start)
		}(i)
		time.Sleep(10 * time.Millisecond)
	}
	wg.Wait()
	for i, e := range errs {
		require.ErrorIs(t, e, redlock.ErrLocked, "waiter %d", i)
		require.ErrorIs(t, e, redlock.ErrNotAcquired)
		// Three attempts, two retry delays of 100 ms: well under a second,
		// though the holder keeps the lock for 20 s.
		require.Less(t, took[i], 2*time.Second, "waiter %d waited past its retry count", i)
	}
	t.Logf("three waiters with 3 attempts each gave up after %v", took)
	require.NoError(t, h.Unlock(ctx))

	// ctx ends a queued waiter's wait at once.
	h, err = holder.Lock(ctx, "queue-ctx", 20*time.Second)
	require.NoError(t, err)
	patient := coreNew(t, coreAddrs(servers), redlock.WithRetryCount(1000))
	go func() { _, _ = patient.Lock(ctx, "queue-ctx", time.Second) }() // the head
	time.Sleep(50 * time.Millisecond)
	qctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = patient.Lock(qctx, "queue-ctx", time.Second)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(start), time.Second, "a queued waiter returns when its ctx ends")
	require.NoError(t, h.Unlock(ctx))
}
