package bench

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkCycle is scenario a: uncontended Lock+Unlock cycles, each on a
// new resource, one attempt per Lock, all five nodes up; by one goroutine
// (p1) and by 64 (p64). One op is one cycle. Failed cycles are logged and
// counted in success-%.
func BenchmarkCycle(b *testing.B) {
	benchmarkCycles(b, contenders, []int{1, 64})
}

// BenchmarkFencedCycle is scenario e: the cycles of scenario a at p64 with
// WithFencing(), every Lock carrying a fencing token (a cycle whose lock
// has none counts as failed). The report divides its cycles/s by the
// unfenced BenchmarkCycle of the same contender in the same run.
func BenchmarkFencedCycle(b *testing.B) {
	benchmarkCycles(b, fencedContenders, []int{64})
}

// benchmarkCycles runs scenario a's sub-benchmarks {lib}/p{par}.
func benchmarkCycles(b *testing.B, libs []contender, pars []int) {
	for _, lib := range libs {
		for _, par := range pars {
			b.Run(fmt.Sprintf("%s/p%d", lib.name, par), func(b *testing.B) {
				pools := newNodePools()
				defer pools.close()
				c := lib.open(b, pools, 1)
				defer c.close()
				warm(b, c, par)
				names := resourceNames("cycle", b.N)
				b.ReportAllocs()
				r := runCycles(b, c, par, names)
				if r.fails > 0 {
					// A metric, not a test failure, so that the run's
					// numbers stay in the output and the report's table.
					b.Logf("%d of %d cycles failed with every node up; first: %v", r.fails, b.N, r.firstErr)
				}
				reportCycles(b, r)
			})
		}
	}
}

// pausedNode is the node scenario b stops with SIGSTOP.
const pausedNode = nodeCount - 1

// BenchmarkPausedNode is scenario b: the cycles of scenario a with one of
// the five nodes paused (SIGSTOP) for the whole measurement, by 1 and 16
// goroutines. Besides throughput and latency it reports the success rate,
// the peak number of goroutines above the count before the run (the
// workers included) and the peak number of established connections to the
// paused node, whoever opened them (redlock's own transport, the redigo
// pools of redlock-pool and redsync). redsync-failfast
// (WithFailFast(true), not redsync's default) runs too, for information.
func BenchmarkPausedNode(b *testing.B) {
	for _, lib := range append(contenders[:len(contenders):len(contenders)], redsyncFailFast) {
		for _, par := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/p%d", lib.name, par), func(b *testing.B) {
				pools := newNodePools()
				defer pools.close()
				c := lib.open(b, pools, 1)
				defer c.close()
				warm(b, c, par)
				names := resourceNames("paused", b.N)
				s := servers[pausedNode]
				if err := s.pause(); err != nil {
					b.Fatalf("SIGSTOP: %v", err)
				}
				resumed := false
				resume := func() {
					if !resumed {
						resumed = true
						if err := s.resume(); err != nil {
							b.Fatalf("SIGCONT: %v", err)
						}
						// Let it answer again before the next run warms up.
						if err := s.waitReady(10 * time.Second); err != nil {
							b.Fatalf("after SIGCONT: %v", err)
						}
					}
				}
				defer resume()
				b.ReportAllocs()
				peaks := samplePeaks(s.port)
				r := runCycles(b, c, par, names)
				peaks.stopSampling()
				resume()
				if peaks.connErr != nil {
					b.Logf("counting connections: %v", peaks.connErr)
				}
				reportCycles(b, r)
				b.ReportMetric(float64(peaks.goroutines), "peak-goroutines")
				b.ReportMetric(float64(peaks.conns), "peak-conns")
			})
		}
	}
}
