package bench

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/redlock-go/redlock"
)

// BenchmarkHeldLocks is scenario i: what a held lock costs the process.
// One Manager on the five nodes takes H locks (ttl 60 s, distinct
// resources, 64 goroutines), and the live heap after a GC is compared with
// the heap before; then every lock is unlocked and the heap measured
// again. One op is one Lock+Unlock of the set; the figures are per held
// lock: heap-B/lock while held, left-B/lock after Unlock (0: all back),
// and the goroutines more than before while they are held (0).
func BenchmarkHeldLocks(b *testing.B) {
	for _, h := range []int{1_000, 10_000, 50_000} {
		b.Run(fmt.Sprintf("h%d", h), func(b *testing.B) {
			insts := addrInstances()
			m, err := redlock.New(insts, redlock.WithNodeTimeout(nodeTimeout), redlock.WithRetryCount(1))
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			names := resourceNames(fmt.Sprintf("held%d", h), h)
			ctx := context.Background()
			locks := make([]*redlock.Lock, h)
			var held, left, goroutines float64
			warm(b, &redlockClient{m: m}, 1) // the connections, before the baseline
			b.ResetTimer()
			b.StartTimer() // warm stopped it
			for i := 0; i < b.N; i++ {
				base, g0 := liveHeap(), runtime.NumGoroutine()
				parallel(h, func(j int) error {
					l, err := m.Lock(ctx, names[j], time.Minute)
					locks[j] = l
					return err
				}, b)
				during := liveHeap()
				goroutines = float64(runtime.NumGoroutine() - g0)
				parallel(h, func(j int) error { return locks[j].Unlock(ctx) }, b)
				clear(locks)
				time.Sleep(50 * time.Millisecond) // the releases' last nodes answer
				after := liveHeap()
				held = float64(during-base) / float64(h)
				left = float64(after-base) / float64(h)
			}
			b.StopTimer()
			b.ReportMetric(held, "heap-B/lock")
			b.ReportMetric(max(left, 0), "left-B/lock")
			b.ReportMetric(goroutines, "goroutines")
		})
	}
}

// liveHeap returns the live heap after two GCs.
func liveHeap() int64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// parallel runs f(0..n-1) on 64 goroutines; an error fails the benchmark.
func parallel(n int, f func(int) error, b *testing.B) {
	var (
		wg   sync.WaitGroup
		next = make(chan int)
		mu   sync.Mutex
		err  error
	)
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range next {
				if e := f(j); e != nil {
					mu.Lock()
					err = e
					mu.Unlock()
				}
			}
		}()
	}
	for j := 0; j < n; j++ {
		next <- j
	}
	close(next)
	wg.Wait()
	if err != nil {
		b.Fatalf("held locks: %v", err)
	}
}
