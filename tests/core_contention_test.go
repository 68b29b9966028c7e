package tests

import (
	"context"
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

// coreContention is the result of one contention run.
type coreContention struct {
	acquired int64         // critical sections entered
	overlaps int64         // sections that saw another section running
	refused  int64         // Lock calls that gave up after all their retries
	busy     int           // goroutines that got the lock at least once
	elapsed  time.Duration // wall time of the run
	err      error         // first unexpected error
}

// coreContend has goroutines, spread round-robin over managers, take
// resource until target critical sections ran. A shared checker counts the
// goroutines inside the critical section and records the holder's token:
// a section that finds another one inside, or finds the holder changed when
// it ends, is an overlap. Every section must end with its lock Valid, and
// every Unlock must succeed. hold runs inside each section.
func coreContend(ctx context.Context, managers []*redlock.Manager, goroutines int, target int64, resource string, ttl time.Duration, hold func()) coreContention {
	var (
		inside   atomic.Int32 // goroutines in the critical section now
		acquired atomic.Int64
		overlaps atomic.Int64
		refused  atomic.Int64
		holder   atomic.Value // token of the latest holder
		errMu    sync.Mutex   // protects firstErr
		firstErr error
		busy     atomic.Int32
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
			got := false
			for acquired.Load() < target && ctx.Err() == nil {
				l, err := m.Lock(ctx, resource, ttl)
				if err != nil {
					if errors.Is(err, redlock.ErrNotAcquired) && ctx.Err() == nil {
						refused.Add(1)
						continue
					}
					fail(err)
					return
				}
				taken := time.Now()
				if inside.Add(1) != 1 {
					overlaps.Add(1)
				}
				holder.Store(l.Token())
				acquired.Add(1)
				if !got {
					got = true
					busy.Add(1)
				}
				hold()
				if holder.Load() != l.Token() {
					overlaps.Add(1)
				}
				if !l.Valid() {
					fail(fmt.Errorf("lock no longer Valid at the end of its critical section (%v after Lock returned)", time.Since(taken)))
				}
				inside.Add(-1)
				unlockStart := time.Now()
				if err := l.Unlock(ctx); err != nil {
					fail(fmt.Errorf("%w (Unlock %v after Lock returned; Until was %v after the start of Unlock)", err, unlockStart.Sub(taken), l.Until().Sub(unlockStart)))
					return
				}
			}
		}()
	}
	wg.Wait()
	return coreContention{
		acquired: acquired.Load(), overlaps: overlaps.Load(), refused: refused.Load(),
		busy: int(busy.Load()), elapsed: time.Since(start), err: firstErr,
	}
}

// TestNoOverlapUnderContention has 32 goroutines, spread over two Managers
// on the same three nodes, take one resource 2,000 times in total with a
// 500ms TTL and a tight retry loop: the shared checker must record zero
// overlapping critical sections, every section must end with a Valid lock
// and every Unlock must succeed.
//
// A control run first proves that the checker sees overlaps when there are
// some: two Managers on disjoint nodes hold "the same" resource
// independently, so their critical sections do overlap.
func TestNoOverlapUnderContention(t *testing.T) {
	servers := harness.StartN(t, 6, harness.Options{})
	ignore := goleak.IgnoreCurrent()
	ctx := coreCtx(t, 120*time.Second)
	opts := []redlock.Option{redlock.WithRetryCount(1000), redlock.WithRetryDelay(10*time.Millisecond, 30*time.Millisecond)}

	t.Run("control: independent locks overlap", func(t *testing.T) {
		managers := []*redlock.Manager{
			coreNew(t, coreAddrs(servers[:3]), opts...),
			coreNew(t, coreAddrs(servers[3:]), opts...),
		}
		res := coreContend(ctx, managers, 4, 100, "control", 500*time.Millisecond, func() { time.Sleep(2 * time.Millisecond) })
		for _, m := range managers {
			coreClose(t, m, 3*time.Second)
		}
		require.NoError(t, res.err)
		t.Logf("control: %d sections, %d overlaps in %v", res.acquired, res.overlaps, res.elapsed.Round(time.Millisecond))
		require.Positive(t, res.overlaps, "the checker saw no overlap between two independent locks: it cannot prove anything")
	})

	t.Run("one resource, two Managers, 32 goroutines", func(t *testing.T) {
		managers := []*redlock.Manager{coreNew(t, coreAddrs(servers[:3]), opts...), coreNew(t, coreAddrs(servers[:3]), opts...)}
		const goroutines, target = 32, 2000
		res := coreContend(ctx, managers, goroutines, target, "contended", 500*time.Millisecond, func() { time.Sleep(10 * time.Microsecond) })
		for _, m := range managers {
			coreClose(t, m, 3*time.Second)
		}
		t.Logf("%d critical sections by %d of %d goroutines in %v (%.0f/s), %d Lock calls gave up after their retries",
			res.acquired, res.busy, goroutines, res.elapsed.Round(time.Millisecond), float64(res.acquired)/res.elapsed.Seconds(), res.refused)
		require.NoError(t, res.err, "unexpected error under contention")
		require.NoError(t, ctx.Err(), "the contention run did not finish in time")
		require.GreaterOrEqual(t, res.acquired, int64(target), "fewer acquisitions than the target")
		require.Zero(t, res.overlaps, "overlapping critical sections: the lock was held twice at once")
	})
	coreNoLeak(t, ignore)
}
