package main

import (
	"fmt"
	"io"
	"math"
	"sort"
	"sync"
	"text/tabwriter"
	"time"
)

// overlapChecker watches the demo's critical section in two independent
// ways: a counter of holders inside right now (an overlap is an entry that
// finds someone inside), and the list of [entry, exit] intervals, checked
// after the run for any two that intersect. It also checks that fencing
// tokens strictly increase from one holder to the next, as a storage
// guarded by them would.
type overlapChecker struct {
	mu          sync.Mutex
	inside      int    // holders in the section now
	maxInside   int    // most holders ever inside at once
	entered     int    // entries that found someone inside
	spans       []span // every finished stay, for the interval check
	open        map[int]time.Time
	firstFence  int64 // fencing token of the first holder
	lastFence   int64 // largest fencing token seen
	regressions int   // holders whose token was not above every earlier one
}

type span struct {
	worker      int
	enter, exit time.Time // monotonic
}

func newOverlapChecker() *overlapChecker {
	return &overlapChecker{open: map[int]time.Time{}}
}

// enter records worker w entering the section with fencing token fence; it
// reports whether someone else was inside and whether the token failed to
// increase.
func (c *overlapChecker) enter(w int, fence int64) (overlap, regression bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if fence <= c.lastFence {
		c.regressions++
		regression = true
	}
	if c.firstFence == 0 {
		c.firstFence = fence
	}
	c.lastFence = max(c.lastFence, fence)
	c.inside++
	c.maxInside = max(c.maxInside, c.inside)
	c.open[w] = time.Now()
	if c.inside > 1 {
		c.entered++
		overlap = true
	}
	return overlap, regression
}

// exit records worker w leaving the section.
func (c *overlapChecker) exit(w int) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inside--
	c.spans = append(c.spans, span{worker: w, enter: c.open[w], exit: now})
	delete(c.open, w)
}

// intervalOverlaps counts the stays that began before an earlier stay
// ended.
func (c *overlapChecker) intervalOverlaps() int {
	c.mu.Lock()
	spans := append([]span(nil), c.spans...)
	c.mu.Unlock()
	sort.Slice(spans, func(i, j int) bool { return spans[i].enter.Before(spans[j].enter) })
	n := 0
	var lastExit time.Time
	for i, s := range spans {
		if i > 0 && s.enter.Before(lastExit) {
			n++
		}
		if s.exit.After(lastExit) {
			lastExit = s.exit
		}
	}
	return n
}

// workerStats is one worker's counts.
type workerStats struct {
	acquired   int
	contention int             // failed attempts where another holder had it
	nodeErrors int             // failed attempts for want of available nodes
	waits      []time.Duration // from wanting the lock to holding it
}

// demoStats collects the counts of all workers.
type demoStats struct {
	mu          sync.Mutex
	workers     []workerStats
	handoffs    []time.Duration // release by one worker -> acquisition by another
	lastRelease time.Time
	lastBy      int // worker of lastRelease; -1 before the first
	whileDown   int // acquisitions while a node was down
	nodeDown    bool
	lateExits   int // sections that ended after the lock's validity
}

func newDemoStats(workers int) *demoStats {
	return &demoStats{workers: make([]workerStats, workers), lastBy: -1}
}

func (s *demoStats) failed(w int, contention bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if contention {
		s.workers[w].contention++
	} else {
		s.workers[w].nodeErrors++
	}
}

// acquired records worker w taking the lock at now after waiting wait, and
// returns the handoff latency when the previous holder was someone else.
func (s *demoStats) acquired(w int, now time.Time, wait time.Duration) (handoff time.Duration, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ws := &s.workers[w]
	ws.acquired++
	ws.waits = append(ws.waits, wait)
	if s.nodeDown {
		s.whileDown++
	}
	if s.lastBy >= 0 && s.lastBy != w {
		handoff, ok = now.Sub(s.lastRelease), true
		s.handoffs = append(s.handoffs, handoff)
	}
	return handoff, ok
}

// released records worker w giving the lock up at now (before its Unlock
// round trip).
func (s *demoStats) released(w int, now time.Time, late bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastRelease, s.lastBy = now, w
	if late {
		s.lateExits++
	}
}

func (s *demoStats) setNodeDown(down bool) {
	s.mu.Lock()
	s.nodeDown = down
	s.mu.Unlock()
}

// percentile returns the nearest-rank p-th percentile of ds (0 if empty).
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

// demoResult is everything the final table shows.
type demoResult struct {
	header           string
	downNode         int // 1-based
	downFor          time.Duration
	acquisitions     int
	contention       int
	nodeErrors       int
	whileDown        int
	handoffs         []time.Duration
	maxInside        int
	counterOverlaps  int
	intervalOverlaps int
	lateExits        int
	firstFence       int64
	lastFence        int64
	fenceRegressions int
	workers          []workerStats
}

func (r demoResult) overlaps() int { return max(r.counterOverlaps, r.intervalOverlaps) }

// safe reports whether mutual exclusion held: no overlap, fencing tokens
// always increasing.
func (r demoResult) safe() bool { return r.overlaps() == 0 && r.fenceRegressions == 0 }

func (r demoResult) print(w io.Writer) {
	ms := func(d time.Duration) string {
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	}
	fmt.Fprintf(w, "\n%s\n\n", r.header)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "worker\tacquisitions\tcontention\tnode errors\twait p50\twait max\t")
	for i, ws := range r.workers {
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%s\t%s\t\n", i+1, ws.acquired, ws.contention, ws.nodeErrors,
			ms(percentile(ws.waits, 50)), ms(percentile(ws.waits, 100)))
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k string, v any) { fmt.Fprintf(tw, "%s\t%v\n", k, v) }
	row("acquisitions", r.acquisitions)
	row(fmt.Sprintf("  while node %d was down (%v, 4 of 5 up)", r.downNode, r.downFor.Round(10*time.Millisecond)), r.whileDown)
	row("failed attempts: contention", r.contention)
	row("failed attempts: too few nodes", r.nodeErrors)
	row("handoffs (release -> other worker)", len(r.handoffs))
	row("handoff latency p50", ms(percentile(r.handoffs, 50)))
	row("handoff latency p99", ms(percentile(r.handoffs, 99)))
	row("fencing tokens (first .. last)", fmt.Sprintf("%d .. %d, %d out of order", r.firstFence, r.lastFence, r.fenceRegressions))
	row("most holders inside at once", r.maxInside)
	row("sections ending after validity", r.lateExits)
	row("overlaps (counter / intervals)", fmt.Sprintf("%d / %d", r.counterOverlaps, r.intervalOverlaps))
	tw.Flush()
	if r.safe() {
		fmt.Fprintln(w, "\nOK: 0 overlaps; mutual exclusion held throughout, also with one node down.")
	} else {
		fmt.Fprintf(w, "\nFAIL: %d overlapping holders, %d fencing tokens out of order.\n", r.overlaps(), r.fenceRegressions)
	}
}
