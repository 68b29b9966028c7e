package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/redlock-go/redlock"
)

// workloadConfig describes the clients of a run.
type workloadConfig struct {
	name        string        // profile name, for the summary
	duration    time.Duration // how long clients run (the nemesis too)
	managers    int           // Managers, each with its own connections
	perManager  int           // client goroutines per Manager
	resources   []string
	ttl         time.Duration
	nodeTimeout time.Duration
	retries     int
	retryDelay  [2]time.Duration
	opts        []redlock.Option // more Manager options (WithRestartGuard(false)...)
	noHold      bool             // write at once: no work in the critical section (tight loop)
	longHold    float64          // share of sections that hold for 30-90% of their validity
	stall       float64          // share of sections that stall past their lease before writing
	target      int              // stop once this many acquisitions were made (0: run for duration)
	seed        uint64
}

// stats are the clients' counters.
type stats struct {
	calls       atomic.Int64 // Lock calls that ran to their end
	acquired    atomic.Int64
	locked      atomic.Int64    // failed: ErrLocked only (contention)
	unavailable atomic.Int64    // failed: ErrUnavailable only (node errors, too slow)
	both        atomic.Int64    // failed: both
	other       atomic.Int64    // failed otherwise (a bug if ever non-zero)
	stalls      atomic.Int64    // sections stalled past their lease
	unlockFails atomic.Int64    // Unlock errors (expected under faults)
	heldAtEnd   [6]atomic.Int64 // sections by Lock.NodesHeld at their end (0..5 nodes)
}

// run is one workload run and everything it recorded.
type run struct {
	cfg     workloadConfig
	hist    history
	regs    map[string]*register
	st      stats
	nm      *nemesis
	elapsed time.Duration
	otherEx []string // a few unexpected Lock errors, for the report
	mu      sync.Mutex
}

// runWorkload runs cfg's clients over c while nm (if not nil) injects
// faults, and returns when every client and the nemesis stopped and every
// node was healed.
func runWorkload(t *testing.T, c *cluster, cfg workloadConfig, nm *nemesis) *run {
	t.Helper()
	r := &run{cfg: cfg, regs: map[string]*register{}, nm: nm}
	for _, res := range cfg.resources {
		r.regs[res] = &register{}
	}
	opts := append([]redlock.Option{
		redlock.WithFencing(),
		redlock.WithDefaultTTL(cfg.ttl), // the restart guard's quarantine: one max TTL
		redlock.WithNodeTimeout(cfg.nodeTimeout),
		redlock.WithRetryCount(cfg.retries),
		redlock.WithRetryDelay(cfg.retryDelay[0], cfg.retryDelay[1]),
	}, cfg.opts...)
	managers := make([]*redlock.Manager, cfg.managers)
	for i := range managers {
		managers[i] = c.newManager(t, opts...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.duration)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	if nm != nil {
		wg.Add(1)
		go func() { defer wg.Done(); nm.run(ctx) }()
	}
	for i := 0; i < cfg.managers*cfg.perManager; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.client(ctx, cancel, i, managers[i%cfg.managers], rand.New(rand.NewPCG(cfg.seed, uint64(i))))
		}()
	}
	stopped := make(chan struct{})
	go func() { wg.Wait(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(cfg.duration + 30*time.Second):
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Fatalf("chaos: clients or nemesis still running 30s after the end of the run; goroutines:\n%s", buf)
	}
	r.elapsed = time.Since(start)
	for _, m := range managers {
		m.Close()
	}
	return r
}

// chaosRun runs cfg's clients over c while a nemesis with ncfg injects
// faults, fails the test if the nemesis could not inject or heal a fault,
// and returns the run, what the checker found and the nemesis. With report,
// the summary is printed (see run.report).
func chaosRun(t *testing.T, c *cluster, cfg workloadConfig, ncfg nemesisConfig, report bool) (*run, result, *nemesis) {
	t.Helper()
	nm := newNemesis(c, ncfg)
	r := runWorkload(t, c, cfg, nm)
	if err := nm.err(); err != nil {
		t.Fatalf("the nemesis failed: %v", err)
	}
	res := r.check()
	if report {
		r.report(t, res)
	}
	return r, res, nm
}

// contended is the workload of the safety and clock tests: twelve clients
// on three Managers contend for a few resources with a 1s TTL; 5% of the
// sections hold for most of their validity, 2% stall past their lease.
func contended(t *testing.T, name string, d time.Duration, resources ...string) workloadConfig {
	return workloadConfig{
		name:        name,
		duration:    d,
		managers:    3,
		perManager:  4,
		resources:   resources,
		ttl:         time.Second,
		nodeTimeout: 150 * time.Millisecond,
		retries:     3,
		retryDelay:  [2]time.Duration{5 * time.Millisecond, 20 * time.Millisecond},
		longHold:    0.05,
		stall:       0.02,
		seed:        seed(t),
	}
}

// client takes locks until ctx is done (or the target is reached, when it
// cancels the run).
func (r *run) client(ctx context.Context, stop context.CancelFunc, id int, m *redlock.Manager, rng *rand.Rand) {
	for ctx.Err() == nil {
		res := r.cfg.resources[rng.IntN(len(r.cfg.resources))]
		l, err := m.Lock(ctx, res, r.cfg.ttl)
		if err != nil {
			if ctx.Err() != nil {
				return // cut short by the end of the run: not an outcome
			}
			r.st.calls.Add(1)
			locked, unavailable := errors.Is(err, redlock.ErrLocked), errors.Is(err, redlock.ErrUnavailable)
			switch {
			case locked && unavailable:
				r.st.both.Add(1)
			case locked:
				r.st.locked.Add(1)
			case unavailable:
				r.st.unavailable.Add(1)
			default:
				r.st.other.Add(1)
				r.mu.Lock()
				if len(r.otherEx) < 5 {
					r.otherEx = append(r.otherEx, err.Error())
				}
				r.mu.Unlock()
			}
			// A short pause: no hot loop while a quorum is down, and a
			// light load on a small machine.
			time.Sleep(time.Duration(500+rng.IntN(2500)) * time.Microsecond)
			continue
		}
		s := section{client: id, resource: res, fence: l.Fence(), acquired: time.Now(), until: l.Until()}
		r.st.calls.Add(1)
		if n := r.st.acquired.Add(1); r.cfg.target > 0 && n >= int64(r.cfg.target) {
			stop()
		}
		// The critical section: work for a while, then write to the
		// fenced register.
		time.Sleep(r.holdTime(rng, s.until))
		if rng.Float64() < r.cfg.stall {
			// A "GC pause" past the lease: the write comes late.
			r.st.stalls.Add(1)
			time.Sleep(time.Until(s.until) + time.Duration(10+rng.IntN(40))*time.Millisecond)
		}
		r.regs[res].write(s.fence, l.Token(), s.until)
		r.st.heldAtEnd[min(l.NodesHeld(), len(r.st.heldAtEnd)-1)].Add(1)
		s.released = time.Now()
		uctx, ucancel := context.WithTimeout(context.Background(), 2*r.cfg.nodeTimeout)
		if err := l.Unlock(uctx); err != nil {
			r.st.unlockFails.Add(1)
		}
		ucancel()
		r.hist.add(s)
	}
}

// holdTime draws how long a section works before its write: mostly a few
// milliseconds, sometimes tens, and a share cfg.longHold of most of the
// validity left, so that a lock lost early on a node has time to matter.
func (r *run) holdTime(rng *rand.Rand, until time.Time) time.Duration {
	if r.cfg.noHold {
		return 0
	}
	p := rng.Float64()
	switch {
	case p < r.cfg.longHold:
		left := time.Until(until)
		return time.Duration(float64(left) * (0.3 + 0.6*rng.Float64()))
	case p < r.cfg.longHold+0.2:
		return time.Duration(5+rng.IntN(25)) * time.Millisecond
	default:
		return time.Duration(rng.IntN(3000)) * time.Microsecond
	}
}

// result is what the checker found in a run.
type result struct {
	overlaps   []overlap
	inversions []string
	reg        registerStats
}

func (r *run) check() result {
	return result{overlaps: r.hist.overlaps(), inversions: r.hist.fenceInversions(), reg: sumRegisters(r.regs)}
}

// summary is the run's table.
func (r *run) summary(res result) string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	cfg := r.cfg
	fmt.Fprintf(w, "profile\t%s\n", cfg.name)
	fmt.Fprintf(w, "wall time\t%.1fs\n", r.elapsed.Seconds())
	fmt.Fprintf(w, "clients\t%d Managers x %d goroutines, %d resources, ttl %v, node timeout %v\n",
		cfg.managers, cfg.perManager, len(cfg.resources), cfg.ttl, cfg.nodeTimeout)
	fmt.Fprintf(w, "ops (Lock calls)\t%d\n", r.st.calls.Load())
	fmt.Fprintf(w, "acquisitions\t%d (%.0f/s)\n", r.st.acquired.Load(), float64(r.st.acquired.Load())/r.elapsed.Seconds())
	fmt.Fprintf(w, "failed: ErrLocked only\t%d\n", r.st.locked.Load())
	fmt.Fprintf(w, "failed: ErrUnavailable only\t%d\n", r.st.unavailable.Load())
	fmt.Fprintf(w, "failed: both\t%d\n", r.st.both.Load())
	fmt.Fprintf(w, "failed: other\t%d\n", r.st.other.Load())
	fmt.Fprintf(w, "Unlock errors\t%d\n", r.st.unlockFails.Load())
	var held []string
	for k := range r.st.heldAtEnd {
		if n := r.st.heldAtEnd[k].Load(); n > 0 {
			held = append(held, fmt.Sprintf("%d nodes: %d", k, n))
		}
	}
	fmt.Fprintf(w, "held at the section's end\t%s\n", strings.Join(held, ", "))
	if r.nm != nil {
		fmt.Fprintf(w, "faults injected\t%d (at most %d nodes faulty at once)\n", r.nm.total(), r.nm.maxAt)
		for _, line := range r.nm.countLines() {
			fmt.Fprintf(w, "  %s\n", line)
		}
	}
	fmt.Fprintf(w, "overlaps\t%d\n", len(res.overlaps))
	fmt.Fprintf(w, "fence inversions\t%d\n", len(res.inversions))
	fmt.Fprintf(w, "register writes\t%d\n", res.reg.writes)
	fmt.Fprintf(w, "stale writes rejected\t%d (of %d stalled holders; %d late writes accepted: no newer holder had written)\n",
		res.reg.rejectedLate, r.st.stalls.Load(), res.reg.lateAccepted)
	fmt.Fprintf(w, "valid writes rejected\t%d\n", len(res.reg.rejectedValid))
	fmt.Fprintf(w, "stale writes accepted\t%d\n", res.reg.acceptedStale)
	w.Flush()
	return b.String()
}

// report prints the summary to stdout with -v, and otherwise logs it (go
// test shows it when the test fails).
func (r *run) report(t *testing.T, res result) {
	t.Helper()
	s := r.summary(res)
	if testing.Verbose() {
		fmt.Printf("--- %s summary\n%s\n", t.Name(), s)
		return
	}
	t.Log("\n" + s)
}
