package tests

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/redlock-go/redlock"
	"github.com/redlock-go/redlock/tests/harness"
)

// readState is what one node looks like to an IsLocked call.
type readState string

const (
	readFree    readState = "F"  // live, key absent
	readHeld    readState = "H"  // live, key held by a foreign token
	readDown    readState = "D"  // nothing listens: connection refused
	readPaused  readState = "P"  // connected, then SIGSTOPped: never answers
	readQFree   readState = "QF" // restarted since the Manager saw it (quarantined), key absent
	readQHeld   readState = "QH" // restarted since the Manager saw it (quarantined), key set again
	readForeign           = "read-foreign-token"
)

var readStates = []readState{readFree, readHeld, readDown, readPaused, readQFree, readQHeld}

// readNodeTimeout bounds each command of the read matrix: a paused node
// costs this much to a call that needs its answer.
const readNodeTimeout = 300 * time.Millisecond

// readOutcome is the answer the rule gives for a combination.
type readOutcome string

const (
	readTrue  readOutcome = "true"
	readFalse readOutcome = "false"
	readUndec readOutcome = "error"
)

// readExpect applies the rule to states: true when a quorum answers "held"
// (a quarantined node's "held" counts), false when more than N-quorum
// non-quarantined nodes answer "free", the error otherwise. early reports
// whether the answers of the nodes other than the paused ones already fix
// the outcome, whatever the paused nodes would say.
func readExpect(states []readState) (want readOutcome, early bool) {
	n := len(states)
	q := n/2 + 1
	held, free, paused := 0, 0, 0
	for _, s := range states {
		switch s {
		case readHeld, readQHeld:
			held++
		case readFree:
			free++
		case readPaused:
			paused++
		}
	}
	switch {
	case held >= q:
		return readTrue, true
	case free > n-q:
		return readFalse, true
	}
	return readUndec, held+paused < q && free+paused <= n-q
}

// readCombo is one combination of the matrix with the Manager that reads it.
type readCombo struct {
	states   []readState
	resource string
	m        *redlock.Manager
}

func (c *readCombo) name() string {
	parts := make([]string, len(c.states))
	for i, s := range c.states {
		parts[i] = string(s)
	}
	return fmt.Sprintf("N%d/%s", len(c.states), strings.Join(parts, "-"))
}

func (c *readCombo) has(states ...readState) bool {
	for _, s := range c.states {
		for _, x := range states {
			if s == x {
				return true
			}
		}
	}
	return false
}

// readCombos returns every assignment of the states to 3 nodes and, for 5
// nodes, one assignment per multiset of states (their order shuffled with a
// fixed seed, so that every state meets every slot).
func readCombos() [][]readState {
	var out [][]readState
	for k := 0; k < 6*6*6; k++ {
		out = append(out, []readState{readStates[k%6], readStates[k/6%6], readStates[k/36]})
	}
	var multisets func(from int, prefix []readState)
	multisets = func(from int, prefix []readState) {
		if len(prefix) == 5 {
			out = append(out, append([]readState(nil), prefix...))
			return
		}
		for i := from; i < len(readStates); i++ {
			multisets(i, append(prefix, readStates[i]))
		}
	}
	multisets(0, nil)
	rng := rand.New(rand.NewPCG(1, 2))
	for _, s := range out[216:] {
		rng.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
	}
	return out
}

// readParallel runs f on every combination with workers goroutines and
// returns the errors it reported, prefixed with the combination.
func readParallel(combos []*readCombo, workers int, f func(c *readCombo) error) []string {
	var (
		mu   sync.Mutex
		errs []string
		wg   sync.WaitGroup
	)
	work := make(chan *readCombo)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range work {
				if err := f(c); err != nil {
					mu.Lock()
					errs = append(errs, c.name()+": "+err.Error())
					mu.Unlock()
				}
			}
		}()
	}
	for _, c := range combos {
		work <- c
	}
	close(work)
	wg.Wait()
	return errs
}

// readAnswered inspects c until every node whose slot is in states answers
// (Inspect waits for every node, and a node answers only on a connection
// whose hello, the restart guard's INFO server, has run), within bound.
func readAnswered(c *readCombo, bound time.Duration, states ...readState) error {
	deadline := time.Now().Add(bound)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		nodes, err := c.m.Inspect(ctx, "read-warm-up")
		cancel()
		if err != nil {
			return err
		}
		var missing []string
		for i, s := range c.states {
			for _, x := range states {
				if s == x && nodes[i].Err != nil {
					missing = append(missing, fmt.Sprintf("slot %d (%s): %v", i, s, nodes[i].Err))
				}
			}
		}
		if len(missing) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nodes still not answering after %v: %s", bound, strings.Join(missing, "; "))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestIsLockedDecidesFromTheAnswersInTime runs IsLocked on real servers for
// N=3 (every assignment of free / held / down / paused / quarantined-free /
// quarantined-held to the nodes) and N=5 (one assignment per multiset of
// those states). With q = N/2+1 it must return true when at least q nodes
// hold the key (a quarantined node's "held" counts), false when more than
// N-q nodes that are not quarantined answer "free", and otherwise an error
// matching ErrUnavailable that is a *QuorumError with Op "is_locked". It
// must return within about the node timeout, and well before it whenever
// the nodes other than the paused ones already decide the answer. GetLock
// for the foreign token follows the same rule for "held by this token": it
// succeeds when a quorum holds the token, otherwise it fails with
// ErrNotHeld.
//
// The states are cheap to combine: slot i is live server i (free, or held
// after a direct SET), dead address i, paused server i, or quarantined
// server i. Every combination has its own Manager and resource. All the
// Managers first talk to every node (so they know the old run_ids), then
// the quarantined servers are killed -9 and restarted once for all of
// them, the held keys set again on them, every Manager reconnects (its
// hello reads the new run_id: quarantine for one max TTL, 60s here), and
// only then are the paused servers stopped, so that "paused" is a
// connected node that never answers.
func TestIsLockedDecidesFromTheAnswersInTime(t *testing.T) {
	live := harness.StartN(t, 5, harness.Options{})
	quar := harness.StartN(t, 5, harness.Options{})
	paused := harness.StartN(t, 5, harness.Options{})
	dead := make([]string, 5)
	for i := range dead {
		dead[i] = coreDeadAddr(t)
	}
	liveDBs := coreDBs(t, live)
	ignore := goleak.IgnoreCurrent()

	var combos []*readCombo
	for k, states := range readCombos() {
		c := &readCombo{states: states}
		c.resource = fmt.Sprintf("read/%d/%s", k, c.name())
		instances := make([]redlock.Instance, len(states))
		for i, s := range states {
			switch s {
			case readFree, readHeld:
				instances[i] = redlock.Addr(live[i].Addr())
				if s == readHeld {
					liveDBs[i].do(t, "SET", c.resource, readForeign, "PX", 120000)
				}
			case readDown:
				instances[i] = redlock.Addr(dead[i])
			case readPaused:
				instances[i] = redlock.Addr(paused[i].Addr())
			case readQFree, readQHeld:
				instances[i] = redlock.Addr(quar[i].Addr())
			}
		}
		c.m = coreNew(t, instances, redlock.WithNodeTimeout(readNodeTimeout), redlock.WithDefaultTTL(60*time.Second),
			redlock.WithRestartGuard(true), redlock.WithRetryCount(1))
		combos = append(combos, c)
	}
	require.Len(t, combos, 216+252, "combinations: 6^3 assignments for N=3, C(10,5) multisets for N=5")
	setupStart := time.Now()

	// 1. Every Manager sees every live node, so it knows the quarantined
	// servers' run_ids from before their restart.
	errs := readParallel(combos, 16, func(c *readCombo) error {
		return readAnswered(c, 5*time.Second, readFree, readHeld, readPaused, readQFree, readQHeld)
	})
	require.Empty(t, errs, "warm-up: the Managers could not reach their live nodes")

	// 2. kill -9 and restart the quarantined servers: they come back empty,
	// with a new run_id. Then the QH keys are set again.
	var wg sync.WaitGroup
	restartErrs := make([]error, len(quar))
	for i, s := range quar {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Kill(); err != nil {
				restartErrs[i] = err
				return
			}
			restartErrs[i] = s.Restart()
		}()
	}
	wg.Wait()
	for i, err := range restartErrs {
		require.NoError(t, err, "kill -9 and restart %s", quar[i])
	}
	restarted := time.Now()
	quarDBs := coreDBs(t, quar)
	for _, c := range combos {
		for i, s := range c.states {
			if s == readQHeld {
				quarDBs[i].do(t, "SET", c.resource, readForeign, "PX", 120000)
			}
		}
	}

	// 3. Every Manager with a quarantined slot reconnects to it: its hello
	// reads the new run_id, which starts the quarantine.
	var withQ []*readCombo
	for _, c := range combos {
		if c.has(readQFree, readQHeld) {
			withQ = append(withQ, c)
		}
	}
	errs = readParallel(withQ, 16, func(c *readCombo) error {
		return readAnswered(c, 5*time.Second, readQFree, readQHeld)
	})
	require.Empty(t, errs, "the Managers did not reconnect to the restarted servers")

	// 4. Pause: the Managers' connections to the paused servers stay open,
	// nothing is answered on them.
	for _, s := range paused {
		require.NoError(t, s.Pause(), "pause %s", s)
	}
	t.Logf("setup: warm-up, restart and reconnect of %d Managers in %v", len(combos), time.Since(setupStart).Round(time.Millisecond))

	var (
		mu                  sync.Mutex
		outcomes            = map[readOutcome]int{}
		slowestEarly        time.Duration
		fastestLate         = time.Hour
		slowestLate         time.Duration
		earlyCount, lateCnt int
		earlySlow           int // early calls slower than half the node timeout
	)
	runStart := time.Now()
	work := make(chan *readCombo)
	var runners sync.WaitGroup
	for w := 0; w < 8; w++ { // few: the early returns are timed
		runners.Add(1)
		go func() {
			defer runners.Done()
			for c := range work {
				t.Run(c.name(), func(t *testing.T) {
					want, early, d := readCheckCombo(t, c)
					mu.Lock()
					defer mu.Unlock()
					outcomes[want]++
					if early {
						earlyCount++
						slowestEarly = max(slowestEarly, d)
						if d >= readNodeTimeout/2 {
							earlySlow++
						}
					} else {
						lateCnt++
						fastestLate = min(fastestLate, d)
						slowestLate = max(slowestLate, d)
					}
				})
			}
		}()
	}
	for _, c := range combos {
		work <- c
	}
	close(work)
	runners.Wait()
	require.Less(t, time.Since(restarted), 50*time.Second, "the matrix outlasted the quarantine (60s) it relies on")
	t.Logf("%d combinations in %v: %d true, %d false, %d errors; %d decided without the paused nodes (slowest %v, %d over half the node timeout), %d waited for them (%v..%v)",
		len(combos), time.Since(runStart).Round(time.Millisecond), outcomes[readTrue], outcomes[readFalse], outcomes[readUndec],
		earlyCount, slowestEarly.Round(time.Microsecond), earlySlow, lateCnt, fastestLate.Round(time.Microsecond), slowestLate.Round(time.Microsecond))

	for _, s := range paused {
		require.NoError(t, s.Resume(), "resume %s", s)
	}
	errs = readParallel(combos, 16, func(c *readCombo) error { return c.m.Close() })
	require.Empty(t, errs, "Manager.Close")
	if err := goleak.Find(ignore, goleak.IgnoreAnyFunction("github.com/redlock-go/redlock/tests/harness.(*processNode).start.func1")); err != nil {
		t.Errorf("goroutines left after Manager.Close: %v", err)
	}
}

// readCheckCombo runs IsLocked for one combination and checks its answer
// and timing; it returns the expected outcome, whether it is decided
// without the paused nodes, and how long IsLocked took.
func readCheckCombo(t *testing.T, c *readCombo) (readOutcome, bool, time.Duration) {
	want, early := readExpect(c.states)
	n := len(c.states)
	q := n/2 + 1
	ctx := coreCtx(t, 10*time.Second)
	start := time.Now()
	locked, err := c.m.IsLocked(ctx, c.resource)
	d := time.Since(start)

	switch want {
	case readTrue:
		require.NoError(t, err, "%s: a quorum (%d) holds the key: IsLocked must answer true", c.name(), q)
		require.True(t, locked, "%s: a quorum (%d) holds the key: IsLocked answered false", c.name(), q)
	case readFalse:
		require.NoError(t, err, "%s: more than N-q = %d non-quarantined nodes are free: IsLocked must answer false", c.name(), n-q)
		require.False(t, locked, "%s: more than N-q = %d non-quarantined nodes are free: IsLocked answered true", c.name(), n-q)
	case readUndec:
		require.Error(t, err, "%s: the answers cannot decide it (quarantined free does not count): IsLocked must fail, it answered %t", c.name(), locked)
		require.False(t, locked, "%s: IsLocked returned true with an error", c.name())
		require.ErrorIs(t, err, redlock.ErrUnavailable, "%s: an undecided IsLocked must match ErrUnavailable", c.name())
		qe := coreQuorumError(t, err)
		require.Equal(t, "is_locked", qe.Op, "%s: QuorumError.Op", c.name())
		require.Equal(t, c.resource, qe.Resource, "%s: QuorumError.Resource", c.name())
		require.Equal(t, q, qe.Needed, "%s: QuorumError.Needed must be N/2+1", c.name())
		require.Less(t, qe.Votes, q, "%s: QuorumError.Votes", c.name())
		require.NotEmpty(t, qe.Nodes, "%s: an undecided IsLocked must say which nodes failed", c.name())
		names := c.m.Nodes()
		for _, ne := range qe.Nodes {
			slot := -1
			for i, name := range names {
				if name == ne.Node {
					slot = i
				}
			}
			require.GreaterOrEqual(t, slot, 0, "%s: NodeError names unknown node %q", c.name(), ne.Node)
			switch st := c.states[slot]; st {
			case readQFree:
				require.Contains(t, ne.Err.Error(), "restart guard", "%s: slot %d (quarantined, free) must be reported as ignored by the restart guard: %v", c.name(), slot, ne.Err)
			case readDown, readPaused:
				require.ErrorIs(t, ne, redlock.ErrUnavailable, "%s: slot %d (%s): %v", c.name(), slot, st, ne.Err)
			default:
				t.Fatalf("%s: slot %d (%s) answered, yet is reported as failed: %v", c.name(), slot, st, ne.Err)
			}
		}
	}

	require.Less(t, d, readNodeTimeout+400*time.Millisecond, "%s: IsLocked took %v: it must return within about the node timeout (%v)", c.name(), d, readNodeTimeout)
	if early {
		// A paused node's "answer" is the node timeout: any return clearly
		// before it did not wait for one. (Usually it is a few ms; a loaded
		// machine stretches some calls, see the slowest in the log.)
		require.Less(t, d, readNodeTimeout-25*time.Millisecond, "%s: IsLocked took %v although the nodes other than the paused ones decide it (%s): it waited for a paused node", c.name(), d, want)
	} else {
		require.GreaterOrEqual(t, d, readNodeTimeout-5*time.Millisecond, "%s: IsLocked returned after %v, before the node timeout, although a paused node's answer could still decide it", c.name(), d)
	}
	readCheckGetLock(t, c)
	return want, early, d
}

// readCheckGetLock runs GetLock for the foreign token, right after
// IsLocked (so that the paused nodes' connections are not yet dropped as
// stalled). It must succeed when a quorum holds the token (a quarantined
// node's "held" counts), fail with ErrNotHeld (a *QuorumError with Op
// "get") otherwise, and return before the node timeout when the nodes
// other than the paused ones decide it.
func readCheckGetLock(t *testing.T, c *readCombo) {
	n := len(c.states)
	q := n/2 + 1
	held, paused := 0, 0
	for _, s := range c.states {
		switch s {
		case readHeld, readQHeld:
			held++
		case readPaused:
			paused++
		}
	}
	early := held >= q || held+paused < q
	ctx := coreCtx(t, 10*time.Second)
	start := time.Now()
	l, err := c.m.GetLock(ctx, c.resource, readForeign)
	d := time.Since(start)
	if held >= q {
		require.NoError(t, err, "%s: a quorum (%d) holds the token: GetLock must succeed", c.name(), q)
		require.Equal(t, readForeign, l.Token(), "%s: GetLock's handle has the wrong token", c.name())
		require.True(t, l.Valid(), "%s: GetLock's handle is not valid although the keys have a minute to live", c.name())
	} else {
		require.Error(t, err, "%s: only %d nodes hold the token (quorum %d): GetLock must fail", c.name(), held, q)
		require.Nil(t, l, "%s: a failed GetLock returned a handle", c.name())
		require.ErrorIs(t, err, redlock.ErrNotHeld, "%s: a failed GetLock must match ErrNotHeld", c.name())
		qe := coreQuorumError(t, err)
		require.Equal(t, "get", qe.Op, "%s: QuorumError.Op", c.name())
		require.Equal(t, q, qe.Needed, "%s: QuorumError.Needed", c.name())
		require.Less(t, qe.Votes, q, "%s: QuorumError.Votes", c.name())
	}
	require.Less(t, d, readNodeTimeout+400*time.Millisecond, "%s: GetLock took %v: it must return within about the node timeout (%v)", c.name(), d, readNodeTimeout)
	if early {
		require.Less(t, d, readNodeTimeout-25*time.Millisecond, "%s: GetLock took %v although the nodes other than the paused ones decide it: it waited for a paused node", c.name(), d)
	} else {
		// The paused node's request may fail as stalled a little before
		// GetLock's own timer (two node timeouts after IsLocked's request).
		require.GreaterOrEqual(t, d, readNodeTimeout-50*time.Millisecond, "%s: GetLock returned after %v, before the node timeout, although a paused node's answer could still decide it", c.name(), d)
	}
}

// TestIsLockedAfterSentinelFailoverDiscountsThePromotedMastersFree runs a
// real failover of one of three Sentinel groups (its master is killed; its
// Sentinels promote the replica, which has a new run_id and does not hold
// keys the dead master held unreplicated). For a Manager that knew the old
// master, the promoted one is quarantined: its "free" does not count. So
// with the two other groups free IsLocked answers false (2 of 3 free
// decide it), with one of them held and the other free it fails (1 held +
// 1 free + 1 quarantined free: undecided), and with both held it answers
// true.
//
// It also measures, for docs/sentinel.md, the failover window (kill to the
// first Lock that succeeds through that group alone, restart guard off,
// retried every 20ms) and how long the restart guard keeps the promoted
// master from voting (a Manager with only that group, guard on, default
// TTL 2s: from its first vote ignored by the guard to its first Lock).
func TestIsLockedAfterSentinelFailoverDiscountsThePromotedMastersFree(t *testing.T) {
	groups, insts := sentinelThreeGroups(t, "read-failover")
	ignore := goleak.IgnoreCurrent()
	const (
		guardTTL = 2 * time.Second
		slack    = 2500 * time.Millisecond // sentinel polling, redial backoff (max 1s), a busy 2-core machine
	)
	reader, err := redlock.New(insts, redlock.WithDefaultTTL(60*time.Second), redlock.WithNodeTimeout(time.Second))
	require.NoError(t, err)
	guarded, err := redlock.New(insts[:1], redlock.WithDefaultTTL(guardTTL), redlock.WithRetryCount(1))
	require.NoError(t, err)
	probe, err := redlock.New(insts[:1], redlock.WithRestartGuard(false), redlock.WithRetryCount(1))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Every Manager talks to group 0's master first: it knows its run_id.
	nodes, err := reader.Inspect(ctx, "read-failover-warm-up")
	require.NoError(t, err)
	for i, ns := range nodes {
		require.NoError(t, ns.Err, "warm-up: group %d does not answer", i)
	}
	for _, m := range []*redlock.Manager{guarded, probe} {
		l, err := m.Lock(ctx, "read-failover-warm-up", time.Second)
		require.NoError(t, err, "warm-up Lock through group 0 alone")
		require.NoError(t, l.Unlock(ctx))
	}

	type firstLock struct {
		at, guardSeen time.Time // first success; start of the first attempt whose vote the restart guard ignored
		attempts      int
		lastErr       error
	}
	retry := func(m *redlock.Manager, resource string) <-chan firstLock {
		out := make(chan firstLock, 1)
		go func() {
			var r firstLock
			defer func() { out <- r }()
			for ctx.Err() == nil {
				r.attempts++
				began := time.Now() // the hello that starts a quarantine runs within the attempt
				l, err := m.Lock(ctx, resource, time.Second)
				if err == nil {
					r.at = time.Now()
					_ = l.Unlock(ctx)
					return
				}
				r.lastErr = err
				if r.guardSeen.IsZero() && strings.Contains(err.Error(), "restart guard") {
					r.guardSeen = began
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
		return out
	}

	g := groups[0]
	oldAddr := g.MasterAddr(t)
	require.NoError(t, g.ServerByAddr(oldAddr).Kill(), "kill -9 the master of %s", g.Name)
	kill := time.Now()
	probeC := retry(probe, "read-failover-probe")
	guardC := retry(guarded, "read-failover-guarded")
	newAddr := g.WaitForFailover(t, oldAddr, 30*time.Second)
	promoted := time.Since(kill)
	newMaster := g.ServerByAddr(newAddr)

	// The reader reconnects to group 0 (now the promoted master): Inspect
	// waits for every node and is not subject to the guard.
	harness.WaitFor(t, 10*time.Second, func() bool {
		nodes, err := reader.Inspect(ctx, "read-failover-warm-up")
		return err == nil && nodes[0].Err == nil
	}, "the reader never reconnected to the promoted master %s of %s", newAddr, g.Name)
	reconnected := time.Since(kill)

	// groups 1 and 2 free: 2 of 3 free decide it, though group 0's free
	// does not count.
	locked, err := reader.IsLocked(ctx, "read-failover-free")
	require.NoError(t, err, "two of three groups free must decide IsLocked (false) despite the quarantined promoted master")
	require.False(t, locked, "IsLocked with no group holding the key")

	// group 1 held, group 2 free, group 0 quarantined free: undecided.
	groups[1].Master.Do(t, "SET", "read-failover-split", readForeign, "PX", 60000)
	locked, err = reader.IsLocked(ctx, "read-failover-split")
	require.Error(t, err, "1 held + 1 free + 1 quarantined free cannot decide IsLocked; it answered %t: the promoted master's free was counted", locked)
	require.ErrorIs(t, err, redlock.ErrUnavailable)
	qe := coreQuorumError(t, err)
	require.Equal(t, "is_locked", qe.Op)
	require.Equal(t, 2, qe.Needed)
	require.Equal(t, 1, qe.Votes, "group 1's held is the only vote for true")
	require.Len(t, qe.Nodes, 1, "only the quarantined group failed: %v", err)
	require.Equal(t, reader.Nodes()[0], qe.Nodes[0].Node, "the failed node must be the failed-over group: %v", err)
	require.Contains(t, qe.Nodes[0].Err.Error(), "restart guard", "the promoted master's free must be ignored by the restart guard: %v", err)

	// groups 1 and 2 held: true.
	groups[2].Master.Do(t, "SET", "read-failover-split", readForeign, "PX", 60000)
	locked, err = reader.IsLocked(ctx, "read-failover-split")
	require.NoError(t, err, "two of three groups hold the key")
	require.True(t, locked, "IsLocked with groups 1 and 2 holding the key")
	_, ok := sentinelGet(t, newMaster, 0, "read-failover-split")
	require.False(t, ok, "the promoted master must not hold the key (it was set on groups 1 and 2 only)")

	var pr, gr firstLock
	for _, c := range []struct {
		ch  <-chan firstLock
		dst *firstLock
	}{{probeC, &pr}, {guardC, &gr}} {
		select {
		case *c.dst = <-c.ch:
		case <-time.After(40 * time.Second):
			t.Fatalf("a Lock retry loop on %s did not finish within 40s", g.Name)
		}
	}
	require.False(t, pr.at.IsZero(), "no Lock through %s alone (guard off) succeeded after the failover in %d attempts: %v", g.Name, pr.attempts, pr.lastErr)
	require.False(t, gr.at.IsZero(), "no Lock through %s alone (guard on) succeeded after the failover in %d attempts: %v", g.Name, gr.attempts, gr.lastErr)
	require.False(t, gr.guardSeen.IsZero(), "the restart guard never ignored the promoted master's vote (%d attempts)", gr.attempts)
	window := pr.at.Sub(kill)
	quarantine := gr.at.Sub(gr.guardSeen)
	t.Logf("failover of %s (down-after %v, failover-timeout %v): master %s killed; Sentinels agree on %s after %v; reader reconnected after %v",
		g.Name, sentinelDownAfter, sentinelFailoverTimeout, oldAddr, newAddr, promoted.Round(time.Millisecond), reconnected.Round(time.Millisecond))
	t.Logf("failover window (kill -> first Lock through the group alone, guard off, retried every 20ms): %v (%d attempts)",
		window.Round(time.Millisecond), pr.attempts)
	t.Logf("restart guard (default TTL %v): first vote ignored at kill%+v, first Lock at kill%+v (%v after the unguarded one): promoted master kept from voting for %v (%d attempts)",
		guardTTL, gr.guardSeen.Sub(kill).Round(time.Millisecond), gr.at.Sub(kill).Round(time.Millisecond), gr.at.Sub(pr.at).Round(time.Millisecond),
		quarantine.Round(time.Millisecond), gr.attempts)
	require.LessOrEqual(t, window, promoted+slack, "the group took Locks again only %v after the kill, long after the promotion (%v)", window, promoted)
	// The quarantine starts when the new connection's hello reads the new
	// run_id. That connection may have been dialled during an earlier
	// attempt, which failed at once with the previous dial error: hence
	// the 100ms of tolerance below one max TTL.
	require.GreaterOrEqual(t, quarantine, guardTTL-100*time.Millisecond, "the quarantine (%v) was shorter than one max TTL (%v)", quarantine, guardTTL)
	require.LessOrEqual(t, quarantine, guardTTL+slack, "the quarantine (%v) outlasted one max TTL (%v) plus slack", quarantine, guardTTL)
	require.GreaterOrEqual(t, gr.at.Sub(pr.at), guardTTL-time.Second-50*time.Millisecond,
		"the guarded Manager locked %v after the unguarded one: the guard hardly delayed it", gr.at.Sub(pr.at))

	for _, m := range []*redlock.Manager{reader, guarded, probe} {
		require.NoError(t, m.Close())
	}
	sentinelNoLeak(t, ignore)
}
