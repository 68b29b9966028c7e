package bench

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"
)

// Hold times of scenario c: the holder keeps the lock holdMin plus a
// uniform jitter of up to holdJitter, so that the release falls at a random
// point of the waiter's retry cycle, and the waiter has made its first
// attempt before the release.
const (
	holdMin    = 10 * time.Millisecond
	holdJitter = 40 * time.Millisecond
	// waiterTries is a waiter's attempt budget: in effect unbounded.
	waiterTries = 1 << 20
)

// BenchmarkHandoff is scenario c: a holder (one client) holds a resource
// while a waiter (another client, many attempts, the library's default
// retry delay) is blocked in Lock on it; the holder unlocks, and the
// handoff latency is the time from the holder's Unlock returning to the
// waiter's Lock returning (0 when the waiter got in first). One op is one
// whole handoff: the holder's Lock, the hold, the handoff and the waiter's
// Unlock, so ns/op is not the handoff latency; p50-ms and p99-ms are.
func BenchmarkHandoff(b *testing.B) { benchmarkHandoff(b, contenders) }

// benchmarkHandoff runs scenario c's sub-benchmarks {lib}.
func benchmarkHandoff(b *testing.B, libs []contender) {
	for _, lib := range libs {
		b.Run(lib.name, func(b *testing.B) {
			// Two independent clients, each on its own pools.
			holderPools, waiterPools := newNodePools(), newNodePools()
			defer holderPools.close()
			defer waiterPools.close()
			holder := lib.open(b, holderPools, 1)
			defer holder.close()
			waiter := lib.open(b, waiterPools, waiterTries)
			defer waiter.close()
			warm(b, holder, 1)
			warm(b, waiter, 1)
			names := resourceNames("handoff", b.N)
			lat := make([]time.Duration, b.N)
			ctx := context.Background()
			type acquired struct {
				h   held
				at  time.Time
				err error
			}
			got := make(chan acquired, 1)
			b.ReportAllocs()
			b.ResetTimer()
			b.StartTimer()
			for i, name := range names {
				h, err := holder.lock(ctx, name)
				if err != nil {
					b.Fatalf("holder: Lock on a free resource: %v", err)
				}
				go func() {
					wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
					defer cancel()
					w, err := waiter.lock(wctx, name)
					got <- acquired{w, time.Now(), err}
				}()
				time.Sleep(holdMin + rand.N(holdJitter))
				if err := h.unlock(ctx); err != nil {
					b.Fatalf("holder: Unlock: %v", err)
				}
				released := time.Now()
				a := <-got
				if a.err != nil {
					b.Fatalf("waiter: Lock after the holder's release: %v", a.err)
				}
				lat[i] = max(a.at.Sub(released), 0)
				if err := a.h.unlock(ctx); err != nil {
					b.Fatalf("waiter: Unlock: %v", err)
				}
			}
			b.StopTimer()
			b.ReportMetric(ms(percentile(lat, 0.50)), "p50-ms")
			b.ReportMetric(ms(percentile(lat, 0.99)), "p99-ms")
		})
	}
}
