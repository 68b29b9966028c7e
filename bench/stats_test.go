package bench

import (
	"math"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

// percentile returns the nearest-rank p-quantile (0 < p <= 1) of d, which
// it sorts in place; 0 for no data.
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	if !slices.IsSorted(d) {
		slices.Sort(d)
	}
	i := int(math.Ceil(p*float64(len(d)))) - 1
	return d[max(i, 0)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// reportCycles reports the throughput, latency and success metrics of a
// cycle run.
func reportCycles(b *testing.B, r cycleResult) {
	b.ReportMetric(float64(len(r.lat))/r.elapsed.Seconds(), "cycles/s")
	b.ReportMetric(ms(percentile(r.lat, 0.50)), "p50-ms")
	b.ReportMetric(ms(percentile(r.lat, 0.99)), "p99-ms")
	b.ReportMetric(100*float64(int64(len(r.lat))-r.fails)/float64(len(r.lat)), "success-%")
}

// connBuf is the samplers' receive buffer (one sampler runs at a time).
var connBuf []byte

// peakSampler samples, while a benchmark runs, the goroutine count and the
// number of established connections to one port, and keeps the peaks.
type peakSampler struct {
	conn connCounter

	stop chan struct{}
	done sync.WaitGroup

	base       int // goroutines before start
	goroutines int // peak runtime.NumGoroutine() - base
	conns      int // peak connections to the port
	connErr    error
}

// samplePeaks starts sampling: goroutines every 2ms, connections to port
// every 10ms (asking the kernel costs more; a connection to a paused node
// lives for a node timeout at least). Call stopSampling before
// reading the peaks.
func samplePeaks(port int) *peakSampler {
	// The buffer is allocated before the benchmark's timer restarts, and
	// kept from one sampler to the next, so that it is not counted in the
	// benchmark's B/op.
	if connBuf == nil {
		connBuf = make([]byte, 64<<10)
	}
	s := &peakSampler{conn: connCounter{port: port, buf: connBuf}, stop: make(chan struct{}), base: runtime.NumGoroutine()}
	s.done.Add(1)
	go func() {
		defer s.done.Done()
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for tick := 0; ; tick++ {
			s.goroutines = max(s.goroutines, runtime.NumGoroutine()-s.base-1) // -1: this one
			if tick%5 == 0 && s.connErr == nil {
				n, err := s.conn.count()
				s.conns, s.connErr = max(s.conns, n), err
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// stopSampling stops the sampler; the peaks are final after it returns.
func (s *peakSampler) stopSampling() {
	close(s.stop)
	s.done.Wait()
	connBuf = s.conn.buf
}
