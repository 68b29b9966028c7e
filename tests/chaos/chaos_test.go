package chaos

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/redlock-go/redlock"
	"github.com/redlock-go/redlock/tests/harness"
)

// profileEnv selects the profile: unset or "short" for CI (the whole package
// in under a minute), "long" for `make chaos-long`.
const profileEnv = "REDLOCK_CHAOS"

func TestMain(m *testing.M) {
	// Nodes whose clock a test controls run with an LD_PRELOAD clock shim
	// built on this machine: always local processes (newCluster's clock).
	// The others follow the selected backend: with
	// REDLOCK_TEST_BACKEND=docker, TestChaosSafety and the restart-guard
	// test run on containers, with network partitions among the faults.
	code := harness.Main(m).Run()
	removeShim()
	os.Exit(code)
}

// onDocker reports whether the nodes without clock control are containers.
func onDocker() bool { return harness.SelectedBackend() == harness.BackendDocker }

// isLong reports whether the long profile was asked for.
func isLong(t *testing.T) bool {
	t.Helper()
	switch v := os.Getenv(profileEnv); v {
	case "", "short":
		return false
	case "long":
		return true
	default:
		t.Fatalf("%s=%q: want \"short\" (the default) or \"long\"", profileEnv, v)
		return false
	}
}

// checkLeaks fails the test if a goroutine started by it outlives its
// cleanups. Call it first: cleanups run last-registered first.
//
// toxiproxy's own goroutines are ignored: toxiproxy v2.5.0 leaks the
// goroutines of a connection whose toxic chain was cut while data was in
// flight (a timeout or reset_peer toxic that closed its stub, a latency toxic
// holding data for a connection that closed): the stub in front blocks for
// ever on a channel send that nobody receives, and so does the link's reader
// behind it (link.go, toxics/noop.go, latency.go, timeout.go,
// reset_peer.go). Proxies themselves are not ignored: a proxy left running
// still fails the check. See link for how the suite keeps that leak from
// hanging the nemesis.
func checkLeaks(t *testing.T) {
	opts := []goleak.Option{
		goleak.IgnoreCurrent(),
		goleak.IgnoreAnyFunction("github.com/Shopify/toxiproxy/v2/toxics.(*ToxicStub).Run"),
		goleak.IgnoreAnyFunction("github.com/Shopify/toxiproxy/v2.(*ToxicLink).read"),
		goleak.IgnoreAnyFunction("github.com/Shopify/toxiproxy/v2.(*ToxicLink).write"),
	}
	t.Cleanup(func() { goleak.VerifyNone(t, opts...) })
}

// seedEnv replays a run's random choices (faults, nodes, hold times); the
// timing of a run still differs.
const seedEnv = "REDLOCK_CHAOS_SEED"

// seed returns the run's seed: seedEnv, or the clock. It is logged.
func seed(t *testing.T) uint64 {
	s := uint64(time.Now().UnixNano())
	if v := os.Getenv(seedEnv); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: want a number", seedEnv, v)
		}
		s = n
	}
	t.Logf("seed %d (%s=%d replays its choices)", s, seedEnv, s)
	return s
}

// allFaults is every kind of fault of the safety profile, by short name.
var allFaults = map[string]faultKind{
	"kill": faultKill, "pause": faultPause, "latency": faultLatency, "drop": faultBlackhole,
	"refuse": faultRefuse, "reset": faultReset, "clock": faultClock, "jump": faultJump,
	"drift": faultDrift, "partition": faultPartition,
}

// faultsEnv restricts the nemesis to some kinds, e.g. "kill,pause".
const faultsEnv = "REDLOCK_CHAOS_FAULTS"

// faultKinds returns the kinds named by faultsEnv, or def when it is unset.
func faultKinds(t *testing.T, def ...string) []faultKind {
	names := def
	if v := os.Getenv(faultsEnv); v != "" {
		names = strings.Split(v, ",")
	}
	var out []faultKind
	for _, n := range names {
		k, ok := allFaults[strings.TrimSpace(n)]
		if !ok {
			t.Fatalf("%s: unknown fault %q (known: kill, pause, latency, drop, refuse, reset, drift, clock, jump, partition)", faultsEnv, n)
		}
		out = append(out, k)
	}
	return out
}

// TestChaosSafety is the fault suite: clients on several Managers take
// fenced locks on a few resources over five nodes while the nemesis keeps up
// to two of them faulty at once: kill -9 and restart without persistence,
// SIGSTOP, latency, three kinds of cut link, and clock drift within the
// drift allowance. With the restart guard on (the default) no two clients
// may hold one resource at once by their own validity windows, and no fenced
// register may accept a stale write.
//
// The nodes persist nothing, so a restart loses the fencing counters too:
// fence inversions are reported here, not asserted (WithFencing needs
// persistence; TestChaosFencingTokensIncreaseUnderFaults asserts them on
// persistent nodes). Clock faults beyond the allowance are measured by
// TestChaosClockFaultOnOneNode.
func TestChaosSafety(t *testing.T) {
	checkLeaks(t)
	cfg := contended(t, "short (CI)", 16*time.Second, "chaos:a", "chaos:b", "chaos:c")
	if isLong(t) {
		cfg.name = "long"
		cfg.duration = 4 * time.Minute
		cfg.managers, cfg.perManager = 4, 6
		cfg.resources = []string{"chaos:a", "chaos:b", "chaos:c", "chaos:d", "chaos:e"}
	}
	// On processes, the clocks drift within the allowance too; on
	// containers (no clock shim there) a node is also cut off the network.
	kinds := []string{"kill", "pause", "latency", "drop", "refuse", "reset", "drift"}
	if onDocker() {
		kinds = []string{"kill", "pause", "latency", "drop", "refuse", "reset", "partition"}
		cfg.name += ", docker: partitions, no clock faults"
	}
	ncfg := nemesisConfig{
		kinds:     faultKinds(t, kinds...),
		maxFaulty: 2,
		gap:       [2]time.Duration{100 * time.Millisecond, 400 * time.Millisecond},
		length:    [2]time.Duration{300 * time.Millisecond, 2 * time.Second},
		latencyMS: [2]int{20, 150},
		clockPPM:  [2]int64{2 * rateNormal, 4 * rateNormal},
		jump:      cfg.ttl,
		seed:      cfg.seed,
	}
	r, res, nm := chaosRun(t, newCluster(t, 5, false, !onDocker()), cfg, ncfg, true)
	if nm.maxAt > ncfg.maxFaulty {
		t.Errorf("the nemesis had %d nodes faulty at once, more than %d", nm.maxAt, ncfg.maxFaulty)
	}
	if len(res.inversions) > 0 {
		t.Logf("%d fence inversions: restarts without persistence lost fencing counters (the WithFencing caveat)", len(res.inversions))
	}
	if len(res.overlaps) > 0 || res.reg.acceptedStale > 0 {
		t.Errorf("safety violated with at most %d of 5 nodes faulty:\n%s", ncfg.maxFaulty, violations(result{overlaps: res.overlaps, reg: registerStats{acceptedStale: res.reg.acceptedStale}}))
		for i, o := range res.overlaps {
			if i == 3 {
				break
			}
			t.Logf("faults from 2 TTLs before %v to its end:\n%s", o, nm.eventLog(o.a.acquired.Add(-2*cfg.ttl), o.b.acquired))
		}
	}
	if r.st.other.Load() > 0 {
		t.Errorf("Lock failed with errors that match neither ErrLocked nor ErrUnavailable: %v", r.otherEx)
	}
	if r.st.acquired.Load() < 50 {
		t.Errorf("only %d acquisitions in %v: the suite checked almost nothing", r.st.acquired.Load(), r.elapsed)
	}
}

// violations lists what the checker found (at most 10 of each).
func violations(res result) string {
	var b strings.Builder
	for i, o := range res.overlaps {
		if i == 10 {
			fmt.Fprintf(&b, "  ... %d overlaps in all\n", len(res.overlaps))
			break
		}
		fmt.Fprintf(&b, "  overlap: %v\n", o)
	}
	for i, s := range res.inversions {
		if i == 10 {
			fmt.Fprintf(&b, "  ... %d inversions in all\n", len(res.inversions))
			break
		}
		fmt.Fprintf(&b, "  fence inversion: %s\n", s)
	}
	for i, s := range res.reg.rejectedValid {
		if i == 10 {
			break
		}
		fmt.Fprintf(&b, "  register: %s\n", s)
	}
	if res.reg.acceptedStale > 0 {
		fmt.Fprintf(&b, "  register accepted %d stale writes\n", res.reg.acceptedStale)
	}
	return b.String()
}

// TestChaosClockFaultOnOneNode measures what Redlock alone does not
// survive: a clock that runs fast or jumps forward, on ONE node at a time.
// Redlock assumes every node's clock runs at nearly the right rate; a fast
// node lets a lock's key expire early. Under contention a winner often holds
// a bare majority (the other contenders took the remaining nodes for a
// moment, then released them), so one node losing the key early is enough
// for a second holder. Top-up (WithTopUp, the default) takes those nodes as
// soon as the contenders release them, so that a lock held on k nodes
// tolerates k - quorum nodes that forget it.
//
// The same fault schedule runs with top-up on, where at most 0.1% of the
// acquisitions may overlap another holder, and off, where the rate is
// measured and reported. Both assert what fencing keeps: tokens in strict
// order, and no stale write accepted by the fenced registers.
func TestChaosClockFaultOnOneNode(t *testing.T) {
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprintf("topup=%t", on), func(t *testing.T) {
			checkLeaks(t)
			cfg := contended(t, fmt.Sprintf("clock faults, one node at a time, top-up %t", on), 6*time.Second, "clock:a", "clock:b", "clock:c")
			if isLong(t) {
				cfg.duration = 2 * time.Minute
			}
			cfg.opts = []redlock.Option{redlock.WithTopUp(on)}
			ncfg := nemesisConfig{
				kinds:     faultKinds(t, "clock", "jump"),
				maxFaulty: 1,
				cooldown:  cfg.ttl, // and a whole lock lifetime before the next node
				gap:       [2]time.Duration{100 * time.Millisecond, 400 * time.Millisecond},
				length:    [2]time.Duration{300 * time.Millisecond, 1500 * time.Millisecond},
				clockPPM:  [2]int64{2 * rateNormal, 4 * rateNormal},
				jump:      cfg.ttl,
				seed:      cfg.seed,
			}
			r, res, nm := chaosRun(t, newCluster(t, 5, false, true), cfg, ncfg, true)
			acquired := r.st.acquired.Load()
			rate := float64(len(res.overlaps)) / float64(max(1, acquired))
			t.Logf("clock faults on one node at a time, top-up %t: %d overlaps in %d acquisitions (%.2f%%) under %d faults; fencing rejected %d writes of holders that still believed they held the lock",
				on, len(res.overlaps), acquired, 100*rate, nm.total(), len(res.reg.rejectedValid))
			if len(res.inversions) > 0 || res.reg.acceptedStale > 0 {
				t.Errorf("fencing broke under clock faults:\n%s", violations(result{inversions: res.inversions, reg: registerStats{acceptedStale: res.reg.acceptedStale}}))
			}
			if acquired < 50 {
				t.Errorf("only %d acquisitions in %v: the suite checked almost nothing", acquired, r.elapsed)
			}
			if on && rate > 0.001 {
				t.Errorf("top-up on: %d overlaps in %d acquisitions (%.2f%%), more than 0.1%%:\n%s", len(res.overlaps), acquired, 100*rate, violations(result{overlaps: res.overlaps}))
				for i, o := range res.overlaps {
					if i == 3 {
						break
					}
					t.Logf("faults from 2 TTLs before %v to its end:\n%s", o, nm.eventLog(o.a.acquired.Add(-2*cfg.ttl), o.b.acquired))
				}
			}
		})
	}
}

// TestClockJumpOnOneNodeBreaksMutualExclusion is the deterministic form of
// the clock hazard: a lock held on a bare majority (nodes 0-2; 3 and 4 were
// busy at the time, and top-up is off) loses its key on node 2 when that
// node's clock jumps forward, and a second client gets nodes 2-4 while the
// first still holds a valid lock. Fencing still orders them: the first
// holder's write is rejected. With top-up on, the first lock holds all five
// nodes once 3 and 4 are free, and the same jump leaves it four: the second
// client is refused.
func TestClockJumpOnOneNodeBreaksMutualExclusion(t *testing.T) {
	checkLeaks(t)
	c := newCluster(t, 5, false, true)
	ctx := context.Background()
	ttl := 5 * time.Second
	opts := []redlock.Option{redlock.WithFencing(), redlock.WithDefaultTTL(ttl), redlock.WithRetryCount(1)}
	for _, on := range []bool{false, true} {
		key := fmt.Sprintf("jump-%t", on)
		m1 := c.newManager(t, append(opts, redlock.WithTopUp(on))...)
		m2 := c.newManager(t, opts...)
		for _, n := range c.nodes[3:] {
			_, err := n.Do("SET", key, "another-contender", "PX", 60000)
			require.NoError(t, err)
		}
		a, err := m1.Lock(ctx, key, ttl)
		require.NoError(t, err, "A takes nodes 0, 1 and 2")
		for _, n := range c.nodes[3:] {
			_, err := n.Do("DEL", key)
			require.NoError(t, err)
		}
		if on {
			harness.WaitFor(t, 2*time.Second, func() bool { return a.NodesHeld() == 5 }, "top-up: A should come to hold all five nodes (holds %d)", a.NodesHeld())
		}
		c.nodes[2].JumpClock(2 * ttl)
		b, err := m2.Lock(ctx, key, ttl)
		if on {
			require.ErrorIs(t, err, redlock.ErrLocked, "top-up on: A still holds four nodes after node 2's clock jumped")
			require.True(t, a.Valid())
			require.NoError(t, a.Unlock(ctx))
			continue
		}
		require.NoError(t, err, "B gets nodes 2, 3 and 4: node 2's clock jumped past A's expiry")
		require.True(t, a.Valid() && b.Valid(), "two valid holders at once: the hazard of a clock jump on one node")
		require.Greater(t, b.Fence(), a.Fence(), "fencing still orders the holders")
		reg := &register{}
		require.True(t, reg.write(b.Fence(), b.Token(), b.Until()))
		require.False(t, reg.write(a.Fence(), a.Token(), a.Until()), "the fenced register rejects the first holder's write")
		require.NoError(t, b.Unlock(ctx))
		_ = a.Unlock(ctx)
	}
}

// fencingRun is the tight loop of the fencing tests: fenced locks on two
// resources while the nemesis injects every kind of fault on up to two nodes
// at once (the restart guard on).
func fencingRun(t *testing.T, name string, persist bool, target int, limit time.Duration) (*run, result) {
	ttl := 500 * time.Millisecond
	cfg := workloadConfig{
		name:        name,
		duration:    limit,
		target:      target,
		managers:    2,
		perManager:  2,
		resources:   []string{"fence:a", "fence:b"},
		ttl:         ttl,
		nodeTimeout: 100 * time.Millisecond,
		retries:     1,
		retryDelay:  [2]time.Duration{time.Millisecond, 3 * time.Millisecond},
		noHold:      true,
		stall:       0.01,
		seed:        seed(t),
	}
	ncfg := nemesisConfig{
		kinds:     faultKinds(t, "kill", "pause", "latency", "drop", "refuse", "reset", "drift", "clock", "jump"),
		maxFaulty: 2,
		gap:       [2]time.Duration{100 * time.Millisecond, 300 * time.Millisecond},
		length:    [2]time.Duration{200 * time.Millisecond, time.Second},
		latencyMS: [2]int{10, 80},
		clockPPM:  [2]int64{2 * rateNormal, 4 * rateNormal},
		jump:      ttl,
		seed:      cfg.seed,
	}
	r, res, _ := chaosRun(t, newCluster(t, 5, persist, true), cfg, ncfg, true)
	return r, res
}

// TestChaosFencingTokensIncreaseUnderFaults checks that fencing tokens
// strictly increase per resource in acquisition order, and that each fenced
// register only ever accepted increasing tokens, under every kind of fault —
// clock faults included, which break the lock itself but not the order of
// its tokens. The nodes persist their data (appendonly, fsync always), as
// WithFencing requires: a kill -9 then loses nothing. The long profile makes
// 10,000 acquisitions; the CI profile, under the race detector on a small
// machine, makes 1,500 or what 12 seconds allow (at least 300).
func TestChaosFencingTokensIncreaseUnderFaults(t *testing.T) {
	checkLeaks(t)
	target, minimum, limit := 1500, 300, 12*time.Second
	if isLong(t) {
		target, minimum, limit = 10_000, 10_000, 10*time.Minute
	}
	r, res := fencingRun(t, "fencing, tight loop, persistent nodes", true, target, limit)
	if n := r.st.acquired.Load(); n < int64(minimum) {
		t.Errorf("only %d fenced acquisitions in %v, want at least %d", n, r.elapsed, minimum)
	}
	if len(res.inversions) > 0 || res.reg.acceptedStale > 0 {
		t.Errorf("fencing tokens out of order under faults:\n%s", violations(result{inversions: res.inversions, reg: res.reg}))
	}
}

// TestChaosFencingWithoutPersistence measures the caveat of WithFencing: the
// same run on nodes that persist nothing. A node restarted by kill -9 forgets
// its counters; the restart guard keeps its votes out for one TTL, and a
// restarted node catches up on a resource as soon as it takes part in one
// acquisition of it, but a resource nobody could lock meanwhile keeps a lost
// counter, and two such nodes plus one that missed the last tokens make a
// quorum that hands out an old token again. Long profile only: it reports,
// it does not assert.
func TestChaosFencingWithoutPersistence(t *testing.T) {
	if !isLong(t) {
		t.Skipf("measured in the long profile only (%s=long)", profileEnv)
	}
	checkLeaks(t)
	r, res := fencingRun(t, "fencing, tight loop, nodes without persistence", false, 10_000, 10*time.Minute)
	t.Logf("without persistence: %d fence inversions in %d acquisitions", len(res.inversions), r.st.acquired.Load())
}

// restartSchedule is how the negative test's nemesis restarts nodes.
type restartSchedule struct {
	name string
	cfg  nemesisConfig
}

// restartSchedules are the negative test's schedules. In both, one node at
// most is down at any moment; each restart is a SIGKILL and an immediate
// restart without persistence.
var restartSchedules = []restartSchedule{
	{
		// A restart every 100-250ms: a lock meets several restarts of
		// different nodes during its TTL.
		name: "dense: one node at a time, every 100-250ms",
		cfg: nemesisConfig{
			kinds:     []faultKind{faultKill},
			maxFaulty: 1,
			gap:       [2]time.Duration{100 * time.Millisecond, 250 * time.Millisecond},
			length:    [2]time.Duration{0, 200 * time.Millisecond}, // down for a quarter of it
		},
	},
	{
		// A restart, then one TTL before the next: at most one node is
		// faulty during any lock's lifetime. Under contention a winner
		// often holds a bare majority (the other contenders had the
		// remaining nodes for a moment), so one restarted holder is
		// enough.
		name: "sparse: one node per TTL",
		cfg: nemesisConfig{
			kinds:     []faultKind{faultKill},
			maxFaulty: 1,
			cooldown:  time.Second, // the TTL
			gap:       [2]time.Duration{50 * time.Millisecond, 200 * time.Millisecond},
			length:    [2]time.Duration{0, 200 * time.Millisecond},
		},
	},
}

// TestChaosWithoutRestartGuardOverlaps is the probabilistic negative test:
// clients on two Managers contend for one resource and often hold it for
// most of its TTL while the nemesis restarts nodes without persistence, one
// at a time. With the restart guard off a lock forgotten by its restarted
// nodes goes to a second client while the first still holds it. The test
// runs rounds, reports the share of rounds with an overlap, then runs the
// same schedule with the guard on (the default) and asserts that nobody
// overlapped. CI runs the dense schedule; the long profile both. (The
// deterministic negative test is TestWithoutRestartGuardTheHazardIsReal in
// tests/fence_guard_test.go.)
func TestChaosWithoutRestartGuardOverlaps(t *testing.T) {
	checkLeaks(t)
	long := isLong(t)
	rounds, roundLen, schedules := 3, 2*time.Second, restartSchedules[:1]
	if long {
		rounds, roundLen, schedules = 20, 3*time.Second, restartSchedules
	}
	c := newCluster(t, 5, false, false)
	base := workloadConfig{
		duration:    roundLen,
		managers:    2,
		perManager:  2,
		ttl:         time.Second,
		nodeTimeout: 150 * time.Millisecond,
		retries:     1,
		retryDelay:  [2]time.Duration{time.Millisecond, 5 * time.Millisecond},
		longHold:    0.5,
	}
	s := seed(t)
	for k, sched := range schedules {
		hits, overlaps, acquired, restarts := 0, 0, int64(0), 0
		for i := 0; i < rounds; i++ {
			cfg := base
			cfg.name = fmt.Sprintf("guard off, %s, round %d", sched.name, i+1)
			cfg.resources = []string{fmt.Sprintf("noguard:%d:%d", k, i)}
			cfg.opts = []redlock.Option{redlock.WithRestartGuard(false)}
			cfg.seed = s + uint64(100*k+i)
			ncfg := sched.cfg
			ncfg.seed = cfg.seed
			r, res, nm := chaosRun(t, c, cfg, ncfg, false)
			if len(res.overlaps) > 0 {
				hits++
			}
			overlaps += len(res.overlaps)
			acquired += r.st.acquired.Load()
			restarts += nm.total()
		}
		line := fmt.Sprintf("restart guard OFF, %s: overlaps in %d of %d rounds (%.0f%%); %d overlaps in %d acquisitions; %d restarts",
			sched.name, hits, rounds, 100*float64(hits)/float64(rounds), overlaps, acquired, restarts)
		if testing.Verbose() {
			fmt.Printf("--- %s: %s\n", t.Name(), line)
		} else {
			t.Log(line)
		}

		// The control: the same schedule with the guard on.
		cfg := base
		cfg.name = "guard on (control), " + sched.name
		cfg.duration = 2 * roundLen
		if long {
			cfg.duration = 30 * time.Second
		}
		cfg.resources = []string{fmt.Sprintf("guard:control:%d", k)}
		cfg.seed = s + uint64(100*k+99)
		ncfg := sched.cfg
		ncfg.seed = cfg.seed
		_, res, _ := chaosRun(t, c, cfg, ncfg, true)
		if len(res.overlaps) > 0 {
			t.Errorf("with the restart guard on, the same restarts must not let two holders in:\n%s", violations(result{overlaps: res.overlaps}))
		}
	}
}
