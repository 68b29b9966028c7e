package tests

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/redlock-go/redlock"
	"github.com/redlock-go/redlock/tests/harness"
)

// Top-up (redlock.WithTopUp, default on): a lock won on a bare majority
// goes on to take the free nodes in the background, so that one node that
// forgets the key early no longer hands the lock to the next contender.
// Contenders are stood in for by foreign keys set behind the library's
// back; a contender's release is a DEL plus the release notification that
// release.lua publishes (or a bare DEL, for the timer path).

const topUpBound = 2 * time.Second // "within a short bound"; the top-up takes a free node within milliseconds

// topUpForeign sets key to a foreign token on d for ttl.
func topUpForeign(t *testing.T, d *coreDB, key, token string, ttl time.Duration) {
	t.Helper()
	d.do(t, "SET", key, token, "PX", ttl.Milliseconds())
}

// topUpFree deletes key on d, announcing the release as release.lua does
// when announce is set.
func topUpFree(t *testing.T, d *coreDB, key string, announce bool) {
	t.Helper()
	d.do(t, "DEL", key)
	if announce {
		d.do(t, "PUBLISH", redlock.ReleaseChannelPrefix+key, "1")
	}
}

// topUpSettle returns once every node has run the Lock's acquire: Lock
// returns at the quorum, and an acquire still on its way to a node whose
// foreign key the test then deletes would take that node itself. Inspect
// runs after it on every node (one pipelined connection per node) and
// waits for all of them.
func topUpSettle(t *testing.T, m *redlock.Manager, key string) {
	t.Helper()
	_, err := m.Inspect(context.Background(), key)
	require.NoError(t, err)
}

// topUpWaitHeld waits until l is held on want nodes, by NodesHeld and by
// the keys on the servers.
func topUpWaitHeld(t *testing.T, dbs []*coreDB, l *redlock.Lock, want int) time.Duration {
	t.Helper()
	start := time.Now()
	harness.WaitFor(t, topUpBound, func() bool {
		if l.NodesHeld() != want {
			return false
		}
		for _, r := range l.Resources() {
			if coreHolders(t, dbs, r, l.Token()) != want {
				return false
			}
		}
		return true
	}, "lock should come to be held on %d nodes (NodesHeld %d)", want, l.NodesHeld())
	return time.Since(start)
}

// TestTopUpTakesTheFreeNodes: Lock, LockMulti and a fenced Lock, each won
// on nodes 0-2 while "contenders" hold nodes 3 and 4, come to hold all five
// once those keys go (node 3 announces its release, node 4 does not: the
// timer finds it). The topped-up keys expire no later than the lock's keys
// and its validity plus the drift allowance; a fenced lock raises the
// topped-up nodes' counters to its token; Unlock deletes every key.
func TestTopUpTakesTheFreeNodes(t *testing.T) {
	servers := harness.StartN(t, 5, harness.Options{})
	dbs := coreDBs(t, servers)
	ignore := goleak.IgnoreCurrent()
	for _, tc := range []struct {
		name    string
		keys    []string
		fencing bool
	}{
		{"Lock", []string{"topup-one"}, false},
		{"LockMulti", []string{"topup-a", "topup-b"}, false},
		{"fenced", []string{"topup-fenced"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var opts []redlock.Option
			if tc.fencing {
				opts = append(opts, redlock.WithFencing())
			}
			m := coreNew(t, coreAddrs(servers), opts...)
			ctx := coreCtx(t, 10*time.Second)
			ttl := 5 * time.Second
			for _, k := range tc.keys[:1] { // one foreign key per node is enough to refuse a LockMulti there
				topUpForeign(t, dbs[3], k, "contender-3", time.Minute)
				topUpForeign(t, dbs[4], k, "contender-4", time.Minute)
			}
			var l *redlock.Lock
			var err error
			if len(tc.keys) == 1 {
				l, err = m.Lock(ctx, tc.keys[0], ttl)
			} else {
				l, err = m.LockMulti(ctx, tc.keys, ttl)
			}
			require.NoError(t, err)
			topUpSettle(t, m, tc.keys[0])
			harness.WaitFor(t, time.Second, func() bool { return l.NodesHeld() == 3 }, "NodesHeld should settle at 3, is %d", l.NodesHeld())

			topUpFree(t, dbs[3], tc.keys[0], true)
			took := topUpWaitHeld(t, dbs[:4], l, 4)
			t.Logf("%s: node 3 taken %v after its release was announced", tc.name, took)
			topUpFree(t, dbs[4], tc.keys[0], false)
			took = topUpWaitHeld(t, dbs, l, 5)
			t.Logf("%s: node 4 taken %v after its key went (no announcement)", tc.name, took)

			// No topped-up key outlives the lock. A key lives from when its
			// node ran the script, so the node's PTTL exceeds the client's
			// figure by the time the request took to get there (and the
			// acquired keys' PTTLs do the same): slack for that, under the
			// race detector on a busy machine.
			const slack = 10 * time.Millisecond
			limit := time.Until(l.Until()) + time.Duration(float64(ttl)*redlock.DefaultDriftFactor) + 2*time.Millisecond + slack
			for _, k := range tc.keys {
				for i := 3; i < 5; i++ {
					p := time.Duration(dbs[i].pttl(t, k)) * time.Millisecond
					require.Greater(t, p, time.Duration(0), "node %d key %q", i, k)
					require.LessOrEqual(t, p, limit, "node %d: a topped-up key must expire by the lock's validity plus the drift allowance", i)
					require.LessOrEqual(t, p, time.Duration(dbs[0].pttl(t, k))*time.Millisecond+slack, "node %d: a topped-up key must not outlive the acquired ones", i)
				}
			}
			if tc.fencing {
				for i, d := range dbs {
					v, err := redis.Int64(d.do(t, "GET", redlock.FenceKeyPrefix+tc.keys[0]), nil)
					require.NoError(t, err)
					require.Equal(t, l.Fence(), v, "node %d's fencing counter", i)
				}
			}
			require.NoError(t, l.Unlock(ctx))
			require.Equal(t, 0, l.NodesHeld(), "after Unlock")
			for _, k := range tc.keys {
				coreWaitGone(t, dbs, k, "Unlock deletes the topped-up keys too")
			}
			coreClose(t, m, 3*time.Second)
		})
	}
	coreNoLeak(t, ignore)
}

// TestTopUpNeverTouchesAForeignKey: the node whose contender keeps its key
// is tried and left alone, through all of the top-up's tries and Unlock.
func TestTopUpNeverTouchesAForeignKey(t *testing.T) {
	servers := harness.StartN(t, 5, harness.Options{})
	dbs := coreDBs(t, servers)
	m := coreNew(t, coreAddrs(servers))
	ctx := coreCtx(t, 10*time.Second)
	key := "topup-foreign"
	topUpForeign(t, dbs[3], key, "contender-3", time.Minute)
	topUpForeign(t, dbs[4], key, "contender-4", time.Minute)
	l, err := m.Lock(ctx, key, 10*time.Second)
	require.NoError(t, err)
	topUpSettle(t, m, key)
	topUpFree(t, dbs[3], key, true)
	topUpWaitHeld(t, dbs[:4], l, 4)
	before := coreCommandCalls(t, dbs[4])["evalsha"]
	time.Sleep(1500 * time.Millisecond) // the top-up goes on trying node 4 meanwhile
	tries := coreCommandCalls(t, dbs[4])["evalsha"] - before
	t.Logf("node 4 (foreign key) was tried %d more times in 1.5 s after node 3 was taken", tries)
	require.Greater(t, tries, 0, "the top-up keeps trying the refused node")
	v, ok := dbs[4].get(t, key)
	require.True(t, ok && v == "contender-4", "node 4's foreign key must stay: got %q %v", v, ok)
	require.Greater(t, dbs[4].pttl(t, key), int64(50_000), "and keep its own expiry")
	require.Equal(t, 4, l.NodesHeld())
	require.NoError(t, l.Unlock(ctx))
	coreWaitGone(t, dbs[:4], key, "after Unlock")
	v, ok = dbs[4].get(t, key)
	require.True(t, ok && v == "contender-4", "Unlock must not delete the foreign key: got %q %v", v, ok)
}

// TestTopUpSurvivesANodeThatForgets is the case top-up exists for: a lock
// won on a bare majority, whose node 0 then loses the key (a DEL standing
// in for a clock jump). With top-up the lock holds all five nodes by then,
// and a second Manager cannot take it; without, the second Manager takes
// nodes 0, 3 and 4 while the first still holds a valid lock.
func TestTopUpSurvivesANodeThatForgets(t *testing.T) {
	servers := harness.StartN(t, 5, harness.Options{})
	dbs := coreDBs(t, servers)
	for _, on := range []bool{true, false} {
		t.Run("topup="+strconv.FormatBool(on), func(t *testing.T) {
			key := "topup-forget-" + strconv.FormatBool(on)
			a := coreNew(t, coreAddrs(servers), redlock.WithTopUp(on))
			b := coreNew(t, coreAddrs(servers), redlock.WithRetryCount(1))
			ctx := coreCtx(t, 10*time.Second)
			topUpForeign(t, dbs[3], key, "contender-3", time.Minute)
			topUpForeign(t, dbs[4], key, "contender-4", time.Minute)
			la, err := a.Lock(ctx, key, 10*time.Second)
			require.NoError(t, err)
			topUpSettle(t, a, key)
			topUpFree(t, dbs[3], key, true)
			topUpFree(t, dbs[4], key, true)
			if on {
				topUpWaitHeld(t, dbs, la, 5)
			} else {
				time.Sleep(1500 * time.Millisecond) // as long as a top-up would have had
				require.Equal(t, 3, la.NodesHeld(), "top-up off: the bare majority stays")
				require.Equal(t, 3, coreHolders(t, dbs, key, la.Token()))
			}
			dbs[0].do(t, "DEL", key) // node 0 forgets the key early

			lb, err := b.Lock(ctx, key, 10*time.Second)
			if on {
				require.ErrorIs(t, err, redlock.ErrLocked, "top-up on: four nodes still hold A's lock")
				require.True(t, la.Valid())
				require.NoError(t, la.Unlock(ctx))
				return
			}
			require.NoError(t, err, "top-up off: B takes nodes 0, 3 and 4")
			require.True(t, la.Valid() && lb.Valid(), "two valid holders: the hazard top-up removes")
			require.NoError(t, lb.Unlock(ctx))
			_ = la.Unlock(ctx)
		})
	}
}

// TestExtendRetakesFreeNodes: nodes that lost the key (a restart, an early
// expiry) are taken again after a successful Extend, but a node where
// another token took the key is not, and a lock that lost its quorum is
// never re-created.
func TestExtendRetakesFreeNodes(t *testing.T) {
	servers := harness.StartN(t, 5, harness.Options{})
	dbs := coreDBs(t, servers)
	m := coreNew(t, coreAddrs(servers))
	ctx := coreCtx(t, 20*time.Second)

	key := "topup-extend"
	l, err := m.Lock(ctx, key, 5*time.Second)
	require.NoError(t, err)
	topUpWaitHeld(t, dbs, l, 5)
	dbs[1].do(t, "DEL", key)
	topUpForeign(t, dbs[2], key, "other", time.Minute)
	require.NoError(t, l.Extend(ctx, 8*time.Second))
	topUpWaitHeld(t, dbs, l, 4) // node 1 again, on top of 0, 3, 4 (2 holds another token)
	require.Equal(t, 4, coreHolders(t, dbs, key, l.Token()))
	v, _ := dbs[2].get(t, key)
	require.Equal(t, "other", v, "another token's key is never taken")
	p := time.Duration(dbs[1].pttl(t, key)) * time.Millisecond
	require.Greater(t, p, 5*time.Second, "node 1 retaken with the extended expiry")
	require.LessOrEqual(t, p, time.Duration(dbs[0].pttl(t, key))*time.Millisecond+3*time.Millisecond, "no later than the extended keys (slack: latency, rounding)")
	require.NoError(t, l.Unlock(ctx))
	coreWaitGone(t, append([]*coreDB{dbs[0], dbs[1]}, dbs[3:]...), key, "after Unlock")

	// Quorum lost: the failed Extend re-creates nothing, now or later.
	key = "topup-lapsed"
	l, err = m.Lock(ctx, key, 5*time.Second)
	require.NoError(t, err)
	topUpWaitHeld(t, dbs, l, 5)
	for _, d := range dbs[:3] {
		d.do(t, "DEL", key)
	}
	require.ErrorIs(t, l.Extend(ctx, 0), redlock.ErrNotHeld)
	require.Equal(t, 0, l.NodesHeld())
	for _, d := range dbs[3:] {
		d.do(t, "DEL", key)
	}
	time.Sleep(1500 * time.Millisecond)
	coreRequireGone(t, dbs, key, "a lock that lost its quorum is never topped up")
}

// TestTopUpStopsAtUnlockAndClose: a lock unlocked (or a Manager closed)
// while its top-up waits for contended nodes leaves no key behind when the
// contenders go, and no goroutine; an uncontended lock that took every node
// sends no request besides its acquire and release.
func TestTopUpStopsAtUnlockAndClose(t *testing.T) {
	servers := harness.StartN(t, 5, harness.Options{})
	dbs := coreDBs(t, servers)
	ignore := goleak.IgnoreCurrent()
	m := coreNew(t, coreAddrs(servers))
	ctx := coreCtx(t, 20*time.Second)

	key := "topup-unlocked"
	topUpForeign(t, dbs[3], key, "contender-3", time.Minute)
	topUpForeign(t, dbs[4], key, "contender-4", time.Minute)
	l, err := m.Lock(ctx, key, 10*time.Second)
	require.NoError(t, err)
	require.NoError(t, l.Unlock(ctx))
	topUpFree(t, dbs[3], key, true)
	topUpFree(t, dbs[4], key, true)
	time.Sleep(1500 * time.Millisecond)
	coreRequireGone(t, dbs, key, "no top-up after Unlock")

	key = "topup-closed"
	topUpForeign(t, dbs[3], key, "contender-3", time.Minute)
	l, err = m.Lock(ctx, key, 10*time.Second)
	require.NoError(t, err)
	harness.WaitFor(t, time.Second, func() bool { return l.NodesHeld() == 4 }, "NodesHeld 4")
	took := coreClose(t, m, 2*time.Second)
	t.Logf("Close with a top-up waiting: %v", took)
	topUpFree(t, dbs[3], key, true)
	time.Sleep(300 * time.Millisecond)
	_, ok := dbs[3].get(t, key)
	require.False(t, ok, "no top-up after Close")
	coreNoLeak(t, ignore)

	// Uncontended: exactly one acquire and one release per node and cycle.
	m = coreNew(t, coreAddrs(servers))
	for _, d := range dbs {
		d.do(t, "CONFIG", "RESETSTAT")
	}
	const cycles = 50
	for i := 0; i < cycles; i++ {
		l, err := m.Lock(ctx, "topup-uncontended", time.Second)
		require.NoError(t, err)
		require.NoError(t, l.Unlock(ctx))
	}
	coreClose(t, m, 3*time.Second) // the last releases are answered
	for i, d := range dbs {
		calls := coreCommandCalls(t, d)
		require.Equal(t, 2*cycles, calls["evalsha"]+calls["eval"], "node %d: an uncontended lock costs its acquire and release only", i)
	}
	coreNoLeak(t, ignore)
}

// TestNodesHeldUncontended: NodesHeld settles at every node.
func TestNodesHeldUncontended(t *testing.T) {
	servers := harness.StartN(t, 3, harness.Options{})
	m := coreNew(t, coreAddrs(servers))
	ctx := context.Background()
	l, err := m.Lock(ctx, "topup-nodes-held", time.Second)
	require.NoError(t, err)
	harness.WaitFor(t, time.Second, func() bool { return l.NodesHeld() == 3 }, "NodesHeld should reach 3, is %d", l.NodesHeld())
	require.NoError(t, l.Unlock(ctx))
	require.Equal(t, 0, l.NodesHeld())
}

// TestTopUpLeavesADownNodeToExtend: a lock won while one of five nodes is
// paused (its acquire times out) is not topped up on that node: no request
// goes to it besides the lock's own, however long the lock is held (a top-up
// would fail on it up to 64 times, each a goroutine's work while the lock is
// held). Once the node answers again, the next Extend takes it back.
func TestTopUpLeavesADownNodeToExtend(t *testing.T) {
	servers := harness.StartN(t, 5, harness.Options{})
	dbs := coreDBs(t, servers)
	paused := servers[4]
	t.Cleanup(func() { paused.Resume() })
	obs := &obsRecorder{}
	m := coreNew(t, coreAddrs(servers), redlock.WithObserver(obs), redlock.WithNodeTimeout(100*time.Millisecond))
	ctx := coreCtx(t, 20*time.Second)
	require.NoError(t, m.LoadScripts(ctx))
	require.NoError(t, paused.Pause())

	key := "topup-down-node"
	l, err := m.Lock(ctx, key, 10*time.Second)
	require.NoError(t, err)
	time.Sleep(1500 * time.Millisecond) // a top-up would have tried node 4 about 30 times by now
	obs.mu.Lock()
	var lateOnPaused, topUps int
	for _, e := range obs.events {
		switch {
		case e.Kind == redlock.EventLateError && e.Node == m.Nodes()[4]:
			lateOnPaused++
		case e.Kind == redlock.EventTopUp:
			topUps++
		}
	}
	obs.mu.Unlock()
	t.Logf("while held with node 4 paused: %d late errors from node 4, %d top-ups", lateOnPaused, topUps)
	require.LessOrEqual(t, lateOnPaused, 1, "only the lock's own acquire may fail on the paused node: the top-up must not retry a node that failed")
	require.Zero(t, topUps)
	require.Equal(t, 4, l.NodesHeld())

	require.NoError(t, paused.Resume())
	harness.WaitFor(t, 5*time.Second, func() bool {
		return l.Extend(ctx, 10*time.Second) == nil && l.NodesHeld() == 5 && coreHolders(t, dbs, key, l.Token()) == 5
	}, "after node 4 resumed, an Extend should take it back (NodesHeld %d)", l.NodesHeld())
	require.NoError(t, l.Unlock(ctx))
	coreWaitGone(t, dbs, key, "after Unlock")
}
