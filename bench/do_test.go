package bench

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redlock-go/redlock"
)

// keepCounter counts the keep-alive extensions a Manager makes (an
// Observer that only counts events).
type keepCounter struct{ extended, lost atomic.Int64 }

func (k *keepCounter) Start(ctx context.Context, _ redlock.Op, _ string) context.Context { return ctx }
func (k *keepCounter) End(context.Context, *redlock.OpEnd)                               {}
func (k *keepCounter) Event(e redlock.Event) {
	switch e.Kind {
	case redlock.EventKeepAlive:
		k.extended.Add(1)
	case redlock.EventLockLost:
		k.lost.Add(1)
	}
}

// BenchmarkManyDo is scenario j: D concurrent Do on one Manager (ttl 1 s,
// each fn sleeps 4 s, distinct resources), D = 5,000 / 20,000. One op is
// the whole set. Metrics: the share of Do that returned nil, the library's
// goroutines per Do while they run (the D callers excluded), script calls
// per node and second while they run, and the keys per extend_many call
// (extensions ÷ extension calls).
func BenchmarkManyDo(b *testing.B) {
	for _, d := range []int{5_000, 20_000} {
		b.Run(fmt.Sprintf("d%d", d), func(b *testing.B) {
			kc := &keepCounter{}
			m, err := redlock.New(addrInstances(), redlock.WithNodeTimeout(nodeTimeout), redlock.WithRetryCount(1), redlock.WithObserver(kc))
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			warm(b, &redlockClient{m: m}, 1)
			var okShare, perDo, callsPerSec, batch float64
			b.ResetTimer()
			b.StartTimer() // warm stopped it
			for i := 0; i < b.N; i++ {
				names := resourceNames(fmt.Sprintf("do%d", d), d)
				g0 := runtime.NumGoroutine()
				var wg sync.WaitGroup
				var ok atomic.Int64
				started := make(chan struct{}, d)
				for j := 0; j < d; j++ {
					wg.Add(1)
					go func(j int) {
						defer wg.Done()
						err := m.Do(context.Background(), names[j], time.Second, func(ctx context.Context) error {
							started <- struct{}{}
							select {
							case <-time.After(4 * time.Second):
								return nil
							case <-ctx.Done():
								return context.Cause(ctx)
							}
						})
						if err == nil {
							ok.Add(1)
						}
						if errors.Is(err, redlock.ErrNotAcquired) {
							started <- struct{}{} // never started: counted as not nil
						}
					}(j)
				}
				for j := 0; j < d; j++ {
					<-started // every lock held: count from here
				}
				s0, e0, t0 := scriptCalls(b), kc.extended.Load(), time.Now()
				time.Sleep(2 * time.Second)
				extra := runtime.NumGoroutine() - g0 - d
				s1, e1, t1 := scriptCalls(b), kc.extended.Load(), time.Now()
				wg.Wait()
				okShare = 100 * float64(ok.Load()) / float64(d)
				perDo = float64(max(extra, 0)) / float64(d)
				// Only extensions run between t0 and t1 (every Lock was
				// done, no fn had returned): one call per node and batch.
				calls := float64(s1-s0) / float64(len(addrs))
				callsPerSec = calls / t1.Sub(t0).Seconds()
				batch = float64(e1-e0) / max(calls, 1)
			}
			b.StopTimer()
			b.ReportMetric(okShare, "nil-%")
			b.ReportMetric(perDo, "goroutines/do")
			b.ReportMetric(callsPerSec, "calls/node/s")
			b.ReportMetric(callsPerSec/float64(d), "calls/node/s/do")
			b.ReportMetric(batch, "keys/call")
		})
	}
}
