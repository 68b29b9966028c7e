package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redlock-go/redlock"
)

const (
	demoNodes    = 5
	demoResource = "redlock-demo"
	demoDownNode = 2 // index of the node taken down midway
)

type demoOptions struct {
	real        bool
	workers     int
	duration    time.Duration
	ttl         time.Duration
	hold        time.Duration
	nodeTimeout time.Duration
	quiet       bool
}

var demoCommand = &command{
	name:     "demo",
	summary:  "watch Redlock work: five embedded servers, contending workers, a node failure",
	fixed:    -1,
	synopsis: "[--real] [--workers 6] [--duration 8s] [--ttl 2s]",
	about: `
Start five Redis-compatible servers in this process (miniredis, with keys
expiring in real time), or five redis-server processes on free 127.0.0.1
ports with --real. Then run --workers goroutines, each with its own Manager
over the five nodes, contending for one resource: each takes the lock, spends
about --hold in a critical section watched by an overlap checker, releases it,
and tries again a little later.

A third of the way through, node 3 goes down (the embedded server is closed;
a real one is paused with SIGSTOP) and two thirds of the way through it comes
back, so the log shows locking going on with 4 of 5 nodes (quorum 3).

Every event is printed to stderr as it happens; the final table goes to
stdout: acquisitions, failed attempts (contention and node errors), the
handoff latency from one worker's release to the next worker's acquisition,
and overlaps, counted twice: by a counter of holders inside the section and
by intersecting the recorded [entry, exit] intervals. Both must be 0.

Exit codes: 0 no overlap; 1 overlaps seen or no lock ever acquired; 64 usage
error; 69 the servers could not be started (e.g. --real without
redis-server); 130 interrupted.`,
	examples: `  # The README's first command, from the repository root:
  go run ./cmd/redlock demo

  # Longer, more contention, quiet log:
  redlock demo --workers 12 --duration 20s --quiet

  # Against real redis-server processes (apt-get install -y redis-server):
  redlock demo --real`,
	flags: func(fs *flag.FlagSet) any {
		o := &demoOptions{}
		fs.BoolVar(&o.real, "real", false, "run real redis-server processes instead of embedded servers")
		fs.IntVar(&o.workers, "workers", 6, "contending workers, each with its own Manager")
		fs.DurationVar(&o.duration, "duration", 8*time.Second, "how long the workers run")
		fs.DurationVar(&o.ttl, "ttl", 2*time.Second, "lock time to live")
		fs.DurationVar(&o.hold, "hold", 60*time.Millisecond, "average time in the critical section")
		fs.DurationVar(&o.nodeTimeout, "node-timeout", redlock.DefaultNodeTimeout, "bound on each command sent to one node")
		fs.BoolVar(&o.quiet, "quiet", false, "print only node events and the final table")
		return o
	},
	run: runDemo,
}

func runDemo(a *app, ctx context.Context, c *command, opts any, args []string) int {
	o := opts.(*demoOptions)
	switch {
	case len(args) > 0:
		return a.usageError(c, fmt.Sprintf("unexpected argument %q", args[0]))
	case o.workers < 1 || o.workers > 1000:
		return a.usageError(c, "--workers must be between 1 and 1000")
	case o.duration < 300*time.Millisecond:
		return a.usageError(c, "--duration must be at least 300ms")
	case o.hold <= 0 || o.nodeTimeout <= 0:
		return a.usageError(c, "--hold and --node-timeout must be positive")
	case o.ttl < 10*o.hold:
		return a.usageError(c, fmt.Sprintf("--ttl %v is too short for --hold %v: make it at least 10 times longer", o.ttl, o.hold))
	}
	realBin := ""
	if o.real {
		var err error
		if realBin, err = exec.LookPath("redis-server"); err != nil {
			fmt.Fprintln(a.stderr, "redlock demo: --real needs redis-server on PATH; install it with: apt-get install -y redis-server redis-sentinel (or run without --real)")
			return exitUnavailable
		}
	}

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	log := &eventLog{w: a.stderr, start: start}

	kind := "embedded miniredis servers"
	if realBin != "" {
		kind = "redis-server processes (" + realBin + ")"
	}
	servers, err := startServers(ctx, demoNodes, realBin)
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(a.stderr, "redlock demo: interrupted")
			return exitSignalBase + int(syscall.SIGINT)
		}
		fmt.Fprintf(a.stderr, "redlock demo: %v\n", err)
		return exitUnavailable
	}
	defer func() {
		for _, s := range servers {
			s.Close()
		}
	}()
	addrs := make([]string, len(servers))
	instances := make([]redlock.Instance, len(servers))
	for i, s := range servers {
		addrs[i] = s.Addr()
		instances[i] = redlock.Addr(s.Addr())
	}
	log.printf("started %d %s: %s", len(servers), kind, strings.Join(addrs, " "))
	log.printf("%d workers contend for %q for %v (ttl %v, quorum %d of %d); node %d goes down at %v, back at %v",
		o.workers, demoResource, o.duration, o.ttl, demoNodes/2+1, demoNodes, demoDownNode+1,
		(o.duration / 3).Round(time.Millisecond), (2 * o.duration / 3).Round(time.Millisecond))

	checker := newOverlapChecker()
	stats := newDemoStats(o.workers)
	runCtx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()

	managers := make([]*redlock.Manager, o.workers)
	for i := range managers {
		m, err := redlock.New(instances,
			redlock.WithRetryCount(1), // the worker retries itself, to count attempts
			redlock.WithFencing(),
			redlock.WithNodeTimeout(o.nodeTimeout),
			redlock.WithDefaultTTL(o.ttl))
		if err != nil {
			fmt.Fprintf(a.stderr, "redlock demo: %v\n", err)
			return exitSoftware
		}
		defer m.Close()
		managers[i] = m
	}

	var wg sync.WaitGroup
	for i, m := range managers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &demoWorker{id: i, m: m, o: o, checker: checker, stats: stats, log: log}
			w.run(runCtx)
		}()
	}

	var downFor time.Duration
	wg.Add(1)
	go func() {
		defer wg.Done()
		downFor = chaos(runCtx, o.duration, servers[demoDownNode], stats, log)
	}()
	wg.Wait()

	if ctx.Err() != nil {
		fmt.Fprintln(a.stderr, "redlock demo: interrupted; servers stopped")
		return exitSignalBase + int(syscall.SIGINT)
	}

	res := demoResult{
		header: fmt.Sprintf("redlock demo: %d %s, quorum %d; %d workers for %v; ttl %v, hold ~%v",
			demoNodes, kind, demoNodes/2+1, o.workers, o.duration, o.ttl, o.hold),
		downNode:         demoDownNode + 1,
		downFor:          downFor,
		whileDown:        stats.whileDown,
		handoffs:         stats.handoffs,
		maxInside:        checker.maxInside,
		counterOverlaps:  checker.entered,
		intervalOverlaps: checker.intervalOverlaps(),
		lateExits:        stats.lateExits,
		firstFence:       checker.firstFence,
		lastFence:        checker.lastFence,
		fenceRegressions: checker.regressions,
		workers:          stats.workers,
	}
	for _, ws := range stats.workers {
		res.acquisitions += ws.acquired
		res.contention += ws.contention
		res.nodeErrors += ws.nodeErrors
	}
	log.printf("done in %v", time.Since(start).Round(time.Millisecond))
	res.print(a.stdout)
	switch {
	case !res.safe():
		return exitFalse
	case res.acquisitions == 0:
		fmt.Fprintln(a.stderr, "redlock demo: no worker ever acquired the lock")
		return exitFalse
	}
	return exitOK
}

// chaos takes the node down a third of the way through and brings it back
// at two thirds; it returns how long the node was down.
func chaos(ctx context.Context, duration time.Duration, s demoServer, stats *demoStats, log *eventLog) time.Duration {
	t := time.NewTimer(duration / 3)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return 0
	case <-t.C:
	}
	how, err := s.Down()
	if err != nil {
		log.printf("node %d (%s): could not take it down: %v", demoDownNode+1, s.Addr(), err)
		return 0
	}
	downAt := time.Now()
	stats.setNodeDown(true)
	log.printf("NODE %d DOWN (%s): %s; locking goes on with 4 of 5 nodes", demoDownNode+1, s.Addr(), how)
	t.Reset(duration / 3)
	select {
	case <-ctx.Done(): // interrupted: Close stops the node
	case <-t.C:
	}
	stats.setNodeDown(false)
	down := time.Since(downAt)
	how, err = s.Up()
	if err != nil {
		log.printf("node %d (%s): could not bring it back: %v", demoDownNode+1, s.Addr(), err)
		return down
	}
	log.printf("NODE %d BACK (%s) after %v: %s", demoDownNode+1, s.Addr(), down.Round(time.Millisecond), how)
	return down
}

// demoWorker is one contender.
type demoWorker struct {
	id      int
	m       *redlock.Manager
	o       *demoOptions
	checker *overlapChecker
	stats   *demoStats
	log     *eventLog
}

// run takes the lock, holds it briefly, releases it, rests, and again,
// until ctx is done.
func (w *demoWorker) run(ctx context.Context) {
	for ctx.Err() == nil {
		want := time.Now()
		tries := 0
		var lock *redlock.Lock
		for lock == nil {
			tries++
			l, err := w.m.Lock(ctx, demoResource, 0)
			if err == nil {
				lock = l
				break
			}
			if ctx.Err() != nil {
				return
			}
			w.stats.failed(w.id, errors.Is(err, redlock.ErrLocked))
			if !sleepCtx(ctx, jitter(10*time.Millisecond, 40*time.Millisecond)) {
				return
			}
		}
		now := time.Now()
		handoff, isHandoff := w.stats.acquired(w.id, now, now.Sub(want))
		if !w.o.quiet {
			msg := fmt.Sprintf("worker %d acquired (fence %d) after %v, %d %s", w.id+1, lock.Fence(),
				now.Sub(want).Round(100*time.Microsecond), tries, plural(tries, "try", "tries"))
			if isHandoff {
				msg += fmt.Sprintf(", handoff %v", handoff.Round(100*time.Microsecond))
			}
			w.log.printf("%s", msg)
		}

		overlap, regression := w.checker.enter(w.id, lock.Fence())
		if overlap {
			w.log.printf("OVERLAP: worker %d entered while another holder was inside", w.id+1)
		}
		if regression {
			w.log.printf("FENCE: worker %d got fencing token %d, not above an earlier holder's", w.id+1, lock.Fence())
		}
		time.Sleep(jitter(w.o.hold/2, w.o.hold*3/2)) // the critical section
		late := !lock.Valid()
		w.checker.exit(w.id)
		w.stats.released(w.id, time.Now(), late)
		if late {
			w.log.printf("worker %d: the lock's validity ran out inside the section", w.id+1)
		}

		// Logged before Unlock, so that the next holder's line comes after.
		if !w.o.quiet {
			w.log.printf("worker %d releases", w.id+1)
		}
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*w.o.nodeTimeout)
		err := lock.Unlock(uctx)
		cancel()
		var qe *redlock.QuorumError
		switch {
		case w.o.quiet, err == nil:
		case errors.As(err, &qe):
			// E.g. the lock was on 3 nodes, one of which went down since.
			w.log.printf("worker %d: unlock confirmed by only %d of %d nodes; its other keys expire within %v",
				w.id+1, qe.Votes, qe.Needed, w.o.ttl)
		default:
			w.log.printf("worker %d: unlock: %v", w.id+1, err)
		}
		if !sleepCtx(ctx, jitter(w.o.hold/2, w.o.hold)) { // let the others have a go
			return
		}
	}
}

// eventLog prints one timestamped line per event.
type eventLog struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
}

func (l *eventLog) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, "[%6.3fs] %s\n", time.Since(l.start).Seconds(), fmt.Sprintf(format, args...))
}

func jitter(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + mrand.N(hi-lo)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
