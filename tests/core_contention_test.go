package tests

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/redlock-go/redlock"
	"github.com/redlock-go/redlock/tests/harness"
)

// TestNoOverlapUnderContention has 32 goroutines, spread over two Managers
// on the same three nodes, take one resource 2,000 times in total with a
// short TTL and a tight retry loop. A shared checker counts the goroutines
// inside the critical section: it must never see two, every section must
// end with its lock still Valid, and every Unlock must succeed.
func TestNoOverlapUnderContention(t *testing.T) {
	servers := harness.StartN(t, 3, harness.Options{})
	ignore := goleak.IgnoreCurrent()
	opts := []redlock.Option{redlock.WithRetryCount(1000), redlock.WithRetryDelay(time.Millisecond, 5*time.Millisecond)}
	managers := []*redlock.Manager{coreNew(t, coreAddrs(servers), opts...), coreNew(t, coreAddrs(servers), opts...)}
	ctx := coreCtx(t, 120*time.Second)
	const (
		goroutines = 32
		target     = 2000
		resource   = "contended"
		ttl        = 500 * time.Millisecond
	)

	var (
		inside    atomic.Int32 // goroutines in the critical section now
		acquired  atomic.Int64 // critical sections entered
		overlaps  atomic.Int64 // sections that found another one running
		holder    atomic.Value // token of the current holder
		refused   atomic.Int64 // Lock calls that gave up (retries exhausted)
		errMu     sync.Mutex   // protects firstErr
		firstErr  error        // first unexpected error
		perWorker [goroutines]int64
	)
	fail := func(err error) {
		errMu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		errMu.Unlock()
	}
	start := time.Now()
	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := managers[g%len(managers)]
			for acquired.Load() < target && ctx.Err() == nil {
				l, err := m.Lock(ctx, resource, ttl)
				got := time.Now()
				if err != nil {
					if errors.Is(err, redlock.ErrNotAcquired) && ctx.Err() == nil {
						refused.Add(1)
						continue
					}
					fail(err)
					return
				}
				if inside.Add(1) != 1 {
					overlaps.Add(1)
				}
				holder.Store(l.Token())
				acquired.Add(1)
				perWorker[g]++
				time.Sleep(50 * time.Microsecond) // give an overlap a chance to show
				if holder.Load() != l.Token() {
					overlaps.Add(1)
				}
				if !l.Valid() {
					fail(errors.New("lock no longer Valid at the end of its critical section"))
				}
				inside.Add(-1)
				callStart := time.Now()
				if err := l.Unlock(ctx); err != nil {
					fail(fmt.Errorf("%w (lock age at Unlock %v, Until - Unlock start = %v, Until - Unlock end = %v)", err, callStart.Sub(got), l.Until().Sub(callStart), l.Until().Sub(time.Now())))
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	for _, m := range managers {
		coreClose(t, m, 3*time.Second)
	}
	busy := 0
	for _, n := range perWorker {
		if n > 0 {
			busy++
		}
	}
	t.Logf("%d critical sections by %d of %d goroutines in %v (%.0f/s), %d Lock calls gave up after their retries",
		acquired.Load(), busy, goroutines, elapsed.Round(time.Millisecond), float64(acquired.Load())/elapsed.Seconds(), refused.Load())
	require.NoError(t, firstErr, "unexpected error under contention")
	require.NoError(t, ctx.Err(), "the contention run did not finish in time")
	require.GreaterOrEqual(t, acquired.Load(), int64(target), "fewer acquisitions than the target")
	require.Zero(t, overlaps.Load(), "overlapping critical sections: the lock was held twice at once")
	coreNoLeak(t, ignore)
}
