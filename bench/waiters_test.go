package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// waiterHold is how long each acquisition of scenario h holds the lock.
const waiterHold = time.Millisecond

// BenchmarkWaiters is scenario h: K goroutines take turns on ONE resource
// (Lock, hold 1 ms, Unlock, again), each with an unbounded attempt budget
// and the library's default retry delay, until b.N acquisitions were made;
// k2, k8, k32 on one client (one Manager, for redlock), m4k32 with the 32
// goroutines spread over four clients. One op is one acquisition. Metrics:
// the wait (a Lock call's duration) p50/p99/max, the spread of
// acquisitions per goroutine (max ÷ min: 1 is fair), and the scripts the
// nodes ran per acquisition (EVALSHA + EVAL calls of INFO commandstats,
// averaged over the five nodes; a lone cycle is 2: acquire and release).
func BenchmarkWaiters(b *testing.B) {
	for _, lib := range []contender{contenders[0], contenders[2]} { // redlock-addr, redsync
		for _, sc := range []struct {
			name             string
			clients, workers int
		}{{"k2", 1, 2}, {"k8", 1, 8}, {"k32", 1, 32}, {"m4k32", 4, 32}} {
			b.Run(fmt.Sprintf("%s/%s", lib.name, sc.name), func(b *testing.B) {
				clients := make([]client, sc.clients)
				for i := range clients {
					pools := newNodePools()
					defer pools.close()
					clients[i] = lib.open(b, pools, waiterTries)
					defer clients[i].close()
					warm(b, clients[i], 1)
				}
				resource := resourceNames("waiters", 1)[0]
				before := scriptCalls(b)
				r := runWaiters(b, clients, sc.workers, resource)
				after := scriptCalls(b)
				if r.err != nil {
					b.Fatalf("%v", r.err)
				}
				b.ReportMetric(float64(b.N)/r.elapsed.Seconds(), "acq/s")
				b.ReportMetric(ms(percentile(r.waits, 0.50)), "wait-p50-ms")
				b.ReportMetric(ms(percentile(r.waits, 0.99)), "wait-p99-ms")
				b.ReportMetric(ms(percentile(r.waits, 1)), "wait-max-ms")
				lo, hi := r.perWorker[0], r.perWorker[0]
				for _, n := range r.perWorker {
					lo, hi = min(lo, n), max(hi, n)
				}
				b.ReportMetric(float64(hi)/float64(max(lo, 1)), "max/min")
				b.ReportMetric(float64(after-before)/float64(len(addrs))/float64(b.N), "scripts/acq/node")
			})
		}
	}
}

// waitersResult is what runWaiters measured.
type waitersResult struct {
	elapsed   time.Duration
	waits     []time.Duration // every successful Lock call's duration
	perWorker []int64         // acquisitions per goroutine
	err       error           // the first failure: every Lock must succeed
}

// runWaiters runs workers goroutines, spread over clients, taking resource
// in turns until b.N acquisitions were made.
func runWaiters(b *testing.B, clients []client, workers int, resource string) waitersResult {
	r := waitersResult{perWorker: make([]int64, workers)}
	var (
		total   atomic.Int64
		mu      sync.Mutex
		errOnce sync.Once
		wg      sync.WaitGroup
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.ResetTimer()
	b.StartTimer()
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c := clients[w%len(clients)]
			var mine []time.Duration
			defer func() { mu.Lock(); r.waits = append(r.waits, mine...); mu.Unlock() }()
			for ctx.Err() == nil {
				t0 := time.Now()
				h, err := c.lock(ctx, resource)
				if ctx.Err() != nil {
					if err == nil {
						_ = h.unlock(context.Background())
					}
					return
				}
				if err != nil {
					errOnce.Do(func() { r.err = fmt.Errorf("worker %d: Lock: %w", w, err) })
					cancel()
					return
				}
				mine = append(mine, time.Since(t0))
				r.perWorker[w]++
				time.Sleep(waiterHold)
				if err := h.unlock(context.Background()); err != nil {
					errOnce.Do(func() { r.err = fmt.Errorf("worker %d: Unlock: %w", w, err) })
					cancel()
					return
				}
				if total.Add(1) >= int64(b.N) {
					cancel()
					return
				}
			}
		}(w)
	}
	wg.Wait()
	r.elapsed = time.Since(start)
	b.StopTimer()
	return r
}

// scriptCalls sums EVALSHA and EVAL calls over the five nodes.
func scriptCalls(b *testing.B) int64 {
	var n int64
	for _, a := range addrs {
		calls, err := commandCalls(a)
		if err != nil {
			b.Fatalf("INFO commandstats on %s: %v", a, err)
		}
		n += calls["evalsha"] + calls["eval"]
	}
	return n
}
