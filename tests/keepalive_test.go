package tests

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/redlock-go/redlock"
	"github.com/redlock-go/redlock/tests/harness"
)

// keepCalls is the number of script calls node d ran.
func keepCalls(t *testing.T, d *coreDB) int {
	c := coreCommandCalls(t, d)
	return c["evalsha"] + c["eval"]
}

// TestKeepAliveBatchesExtensions: 300 concurrent Do (ttl 600 ms, fn 1.5 s)
// all return nil, while each node runs a few dozen extend_many calls, not
// one extend per lock and tick (about 2,000), and the library runs a
// handful of goroutines, not one per Do.
func TestKeepAliveBatchesExtensions(t *testing.T) {
	servers := harness.StartN(t, 3, harness.Options{})
	dbs := coreDBs(t, servers)
	m := coreNew(t, coreAddrs(servers))
	ctx := coreCtx(t, 30*time.Second)
	_, err := m.IsLocked(ctx, "keep-warm") // connections up before the baseline
	require.NoError(t, err)
	before, g0 := keepCalls(t, dbs[0]), runtime.NumGoroutine()
	const n = 300
	var wg sync.WaitGroup
	errs := make([]error, n)
	var peak int
	var mu sync.Mutex
	started := make(chan struct{}, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs[i] = m.Do(ctx, fmt.Sprintf("keep-batch-%d", i), 600*time.Millisecond, func(ctx context.Context) error {
				started <- struct{}{}
				select {
				case <-time.After(1500 * time.Millisecond):
					return nil
				case <-ctx.Done():
					return context.Cause(ctx)
				}
			})
		}(i)
	}
	for i := 0; i < n; i++ {
		<-started
	}
	for i := 0; i < 10; i++ { // while every fn runs
		mu.Lock()
		peak = max(peak, coreGoroutines(g0+n+10)-g0-n) // n: the callers' own goroutines
		mu.Unlock()
		time.Sleep(100 * time.Millisecond)
	}
	wg.Wait()
	for i, e := range errs {
		require.NoError(t, e, "Do %d", i)
	}
	calls := keepCalls(t, dbs[0]) - before - 2*n // minus the acquires and releases
	t.Logf("%d Do: node 0 ran %d extension calls (unbatched: about %d); library goroutines beyond the callers: at most %d", n, calls, n*1500/200, peak)
	require.Less(t, calls, n*1500/200/10, "extensions are batched")
	require.LessOrEqual(t, peak, 20, "no goroutine per Do")
}

// TestKeepAliveLosesExactlyTheDeletedLocks: in one batch, the locks whose
// keys were deleted behind the library's back are lost (their fn's ctx is
// cancelled with ErrLockLost, Do returns ErrLockLost), and the others are
// extended and return nil.
func TestKeepAliveLosesExactlyTheDeletedLocks(t *testing.T) {
	servers := harness.StartN(t, 3, harness.Options{})
	dbs := coreDBs(t, servers)
	m := coreNew(t, coreAddrs(servers))
	ctx := coreCtx(t, 30*time.Second)
	const n = 20
	var wg sync.WaitGroup
	errs := make([]error, n)
	started := make(chan struct{}, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs[i] = m.Do(ctx, fmt.Sprintf("keep-lose-%d", i), 900*time.Millisecond, func(ctx context.Context) error {
				started <- struct{}{}
				select {
				case <-time.After(1500 * time.Millisecond):
					return nil
				case <-ctx.Done():
					require.ErrorIs(t, context.Cause(ctx), redlock.ErrLockLost)
					return nil
				}
			})
		}(i)
	}
	for i := 0; i < n; i++ {
		<-started
	}
	for i := 0; i < n; i += 4 { // 5 of the 20
		for _, d := range dbs {
			d.do(t, "DEL", fmt.Sprintf("keep-lose-%d", i))
		}
	}
	wg.Wait()
	for i, e := range errs {
		if i%4 == 0 {
			require.ErrorIs(t, e, redlock.ErrLockLost, "Do %d: its keys were deleted", i)
		} else {
			require.NoError(t, e, "Do %d: its keys were there", i)
		}
	}
}

// TestKeepAliveCloseWithTenThousandDo: Close while 10,000 Do hold their
// locks cancels every fn with ErrLockLost, returns within the bound, and
// leaves no goroutine behind.
func TestKeepAliveCloseWithTenThousandDo(t *testing.T) {
	servers := harness.StartN(t, 3, harness.Options{})
	ignore := goleak.IgnoreCurrent()
	m, err := redlock.New(coreAddrs(servers))
	require.NoError(t, err)
	ctx := coreCtx(t, 60*time.Second)
	const n = 10_000
	var wg sync.WaitGroup
	var mu sync.Mutex
	lost, other := 0, 0
	started := make(chan struct{}, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			err := m.Do(ctx, fmt.Sprintf("keep-close-%d", i), 5*time.Second, func(ctx context.Context) error {
				started <- struct{}{}
				<-ctx.Done()
				return nil
			})
			mu.Lock()
			if errors.Is(err, redlock.ErrLockLost) {
				lost++
			} else {
				other++
			}
			mu.Unlock()
		}(i)
	}
	for i := 0; i < n; i++ {
		<-started
	}
	took := coreClose(t, m, 5*time.Second)
	wg.Wait()
	t.Logf("Close with %d Do holding: %v; %d lost, %d other", n, took, lost, other)
	require.Equal(t, n, lost, "every fn sees its lock lost at Close")
	coreNoLeak(t, ignore)
}
