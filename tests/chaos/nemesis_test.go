package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"
)

// faultKind is one kind of fault the nemesis injects on a node.
type faultKind string

const (
	faultKill      faultKind = "kill -9 + restart"  // SIGKILL, down a while, restart with no data
	faultPause     faultKind = "SIGSTOP pause"      // SIGSTOP, SIGCONT later
	faultLatency   faultKind = "latency"            // +latency ± jitter on both directions of its link
	faultBlackhole faultKind = "cut link (drop)"    // its link drops everything; connections hang
	faultRefuse    faultKind = "cut link (refuse)"  // its proxy is disabled: connections closed, dials refused
	faultReset     faultKind = "cut link (reset)"   // every connection is reset as soon as it carries data
	faultClock     faultKind = "fast clock"         // its clocks run 2-4x as fast as real time
	faultJump      faultKind = "clock jump forward" // its clocks jump forward by a TTL at once
	faultDrift     faultKind = "clock drift x1.005" // its clocks run 0.5% fast: within the drift allowance
	faultPartition faultKind = "network partition"  // docker network disconnect: the node's host is gone from the network
)

// driftPPM is faultDrift's rate: half of redlock's default drift factor
// (1%), which the validity computation allows for.
const driftPPM = rateNormal + rateNormal/200

// nemesisConfig says what the nemesis does.
type nemesisConfig struct {
	kinds     []faultKind   // drawn uniformly
	maxFaulty int           // nodes counted as faulty at once: a minority for safety
	cooldown  time.Duration // a healed node still counts as faulty this long
	gap       [2]time.Duration
	length    [2]time.Duration // how long one fault lasts
	latencyMS [2]int           // added delay per direction
	clockPPM  [2]int64         // fast clock rate, parts per million
	jump      time.Duration    // clock jump size
	seed      uint64
}

// fault is one fault in progress (or cooling down).
type fault struct {
	node   int
	kind   faultKind
	healAt time.Time // when to undo it
	freeAt time.Time // when the node stops counting as faulty
	healed bool
}

// nemesis injects faults into a cluster from one goroutine. Its counters are
// read after run returns.
type nemesis struct {
	cfg nemesisConfig
	c   *cluster
	rng *rand.Rand

	mu     sync.Mutex
	counts map[faultKind]int
	errs   []error
	events []event // what happened when, for a failure report
	maxAt  int     // most nodes counted as faulty at once
}

func newNemesis(c *cluster, cfg nemesisConfig) *nemesis {
	return &nemesis{cfg: cfg, c: c, rng: rand.New(rand.NewPCG(cfg.seed, 0x6e656d)), counts: map[faultKind]int{}}
}

func (nm *nemesis) between(r [2]time.Duration) time.Duration {
	if r[1] <= r[0] {
		return r[0]
	}
	return r[0] + time.Duration(nm.rng.Int64N(int64(r[1]-r[0])))
}

// event is one line of the nemesis's log.
type event struct {
	at   time.Time
	what string
}

func (e event) String() string { return e.at.Format("15:04:05.000000") + " " + e.what }

func (nm *nemesis) logf(format string, args ...interface{}) {
	nm.mu.Lock()
	defer nm.mu.Unlock()
	nm.events = append(nm.events, event{time.Now(), fmt.Sprintf(format, args...)})
}

// run injects faults until ctx is done, then heals every node: no node is
// left down, paused, cut off or with a wrong clock.
func (nm *nemesis) run(ctx context.Context) {
	var active []*fault
	defer func() {
		for _, f := range active {
			if !f.healed {
				nm.heal(f)
			}
		}
	}()
	next := time.Now().Add(nm.between(nm.cfg.gap))
	for {
		now := time.Now()
		// Heal what is due and forget what cooled down.
		keep := active[:0]
		for _, f := range active {
			if !f.healed && !now.Before(f.healAt) {
				nm.heal(f)
			}
			if !f.healed || now.Before(f.freeAt) {
				keep = append(keep, f)
			}
		}
		active = keep
		if !now.Before(next) {
			next = now.Add(nm.between(nm.cfg.gap))
			if f := nm.inject(active); f != nil {
				active = append(active, f)
			}
		}
		wake := next
		for _, f := range active {
			if !f.healed && f.healAt.Before(wake) {
				wake = f.healAt
			}
		}
		t := time.NewTimer(time.Until(wake))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// inject starts one fault on a node that is not faulty, if the budget
// allows.
func (nm *nemesis) inject(active []*fault) *fault {
	busy := map[int]bool{}
	for _, f := range active {
		busy[f.node] = true
	}
	if len(busy) >= nm.cfg.maxFaulty {
		return nil
	}
	var free []int
	for i := range nm.c.nodes {
		if !busy[i] {
			free = append(free, i)
		}
	}
	i := free[nm.rng.IntN(len(free))]
	kind := nm.cfg.kinds[nm.rng.IntN(len(nm.cfg.kinds))]
	length := nm.between(nm.cfg.length)
	node, link := nm.c.nodes[i], nm.c.links[i]
	var err error
	detail := ""
	switch kind {
	case faultClock, faultJump, faultDrift:
		if !node.hasClock() {
			nm.fail(fmt.Errorf("inject %s on %s: its clocks are not controlled (a container: clock faults need newCluster's clock, on processes)", kind, node))
			return nil
		}
	}
	switch kind {
	case faultKill:
		err = node.Kill()
		length /= 4 // restarted soon: the dangerous case for a lock
	case faultPause:
		err = node.Pause()
	case faultLatency:
		ms := nm.cfg.latencyMS[0] + nm.rng.IntN(nm.cfg.latencyMS[1]-nm.cfg.latencyMS[0]+1)
		detail = fmt.Sprintf(" +%dms±%dms", ms, ms/4)
		err = link.latency(ms, ms/4)
	case faultBlackhole:
		err = link.blackhole()
	case faultRefuse:
		link.disable()
	case faultReset:
		err = link.resetPeer()
	case faultClock:
		ppm := nm.cfg.clockPPM[0] + nm.rng.Int64N(nm.cfg.clockPPM[1]-nm.cfg.clockPPM[0]+1)
		detail = fmt.Sprintf(" x%.1f", float64(ppm)/rateNormal)
		node.SetClockRate(ppm)
	case faultJump:
		detail = fmt.Sprintf(" +%v", nm.cfg.jump)
		node.JumpClock(nm.cfg.jump)
		length = 0
	case faultDrift:
		node.SetClockRate(driftPPM)
	case faultPartition:
		err = node.Partition()
	}
	if err != nil {
		nm.fail(fmt.Errorf("inject %s on %s: %w", kind, node, err))
		return nil
	}
	now := time.Now()
	f := &fault{node: i, kind: kind, healAt: now.Add(length), freeAt: now.Add(length + nm.cfg.cooldown)}
	nm.mu.Lock()
	nm.counts[kind]++
	if len(busy)+1 > nm.maxAt {
		nm.maxAt = len(busy) + 1
	}
	nm.mu.Unlock()
	nm.logf("%s: %s%s for %v", node.name, kind, detail, length.Round(time.Millisecond))
	return f
}

// heal undoes f.
func (nm *nemesis) heal(f *fault) {
	f.healed = true
	node, link := nm.c.nodes[f.node], nm.c.links[f.node]
	var err error
	switch f.kind {
	case faultKill:
		// Another process may have taken the port for a moment: retry.
		for try := 0; try < 3; try++ {
			if err = node.Restart(); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	case faultPause:
		err = node.Resume()
	case faultLatency, faultBlackhole, faultReset, faultRefuse:
		err = link.heal()
	case faultClock, faultDrift:
		node.SetClockRate(rateNormal)
	case faultPartition:
		err = node.Heal()
	}
	if err != nil {
		nm.fail(fmt.Errorf("heal %s on %s: %w", f.kind, node, err))
	}
	nm.logf("%s: healed %s", node.name, f.kind)
}

func (nm *nemesis) fail(err error) {
	nm.mu.Lock()
	nm.errs = append(nm.errs, err)
	nm.mu.Unlock()
}

// err returns every injection or healing error.
func (nm *nemesis) err() error {
	nm.mu.Lock()
	defer nm.mu.Unlock()
	return errors.Join(nm.errs...)
}

// total is the number of faults injected.
func (nm *nemesis) total() int {
	nm.mu.Lock()
	defer nm.mu.Unlock()
	n := 0
	for _, c := range nm.counts {
		n += c
	}
	return n
}

// countsTable returns "kind: n" lines, sorted by kind.
func (nm *nemesis) countLines() []string {
	nm.mu.Lock()
	defer nm.mu.Unlock()
	var out []string
	for k, n := range nm.counts {
		out = append(out, fmt.Sprintf("%s\t%d", k, n))
	}
	sort.Strings(out)
	return out
}

// eventLog returns the events between from and to.
func (nm *nemesis) eventLog(from, to time.Time) string {
	nm.mu.Lock()
	defer nm.mu.Unlock()
	var lines []string
	for _, e := range nm.events {
		if !e.at.Before(from) && !e.at.After(to) {
			lines = append(lines, "  "+e.String())
		}
	}
	return strings.Join(lines, "\n")
}
