package tests

import (
	"fmt"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/redlock-go/redlock"
	"github.com/redlock-go/redlock/tests/harness"
)

// TestLockMultiIsAllOrNothing locks three resources as one lock. A node
// votes yes only if it could take every key: where one key is foreign-held
// the node takes none of them. With the foreign key on a quorum the lock
// fails and leaves no key of ours anywhere; with it on one node of three it
// succeeds, that node holds nothing of ours, and Unlock removes every key we
// set without touching the foreign one.
func TestLockMultiIsAllOrNothing(t *testing.T) {
	servers := harness.StartN(t, 3, harness.Options{})
	dbs := coreDBs(t, servers)
	ignore := goleak.IgnoreCurrent()
	m := coreNew(t, coreAddrs(servers), redlock.WithRetryCount(1))
	ctx := coreCtx(t, 30*time.Second)
	resources := []string{"multi/a", "multi/b", "multi/c"}

	// b is foreign-held on nodes 0 and 1: a quorum refuses.
	dbs[0].do(t, "SET", "multi/b", "foreign", "PX", 60000)
	dbs[1].do(t, "SET", "multi/b", "foreign", "PX", 60000)
	_, err := m.LockMulti(ctx, resources, 10*time.Second)
	require.ErrorIs(t, err, redlock.ErrNotAcquired, "LockMulti with one resource held on a quorum")
	require.ErrorIs(t, err, redlock.ErrLocked)
	coreClose(t, m, 3*time.Second) // waits for the cleanup of node 2
	for i, d := range dbs {
		for _, r := range resources {
			v, ok := d.get(t, r)
			if r == "multi/b" && i < 2 {
				require.Equal(t, "foreign", v, "foreign key changed on %s", d)
				continue
			}
			require.False(t, ok, "a failed LockMulti left %s = %q on %s", r, v, d)
		}
	}

	// b is foreign-held on node 0 only: nodes 1 and 2 form the quorum.
	dbs[1].do(t, "DEL", "multi/b")
	m = coreNew(t, coreAddrs(servers), redlock.WithRetryCount(1))
	l, err := m.LockMulti(ctx, resources, 10*time.Second)
	require.NoError(t, err, "LockMulti with one resource held on one node of three")
	require.Equal(t, resources, l.Resources())
	require.Equal(t, "multi/a", l.Resource())
	harness.WaitFor(t, 2*time.Second, func() bool {
		for _, r := range resources {
			if coreHolders(t, dbs[1:], r, l.Token()) != 2 {
				return false
			}
		}
		return true
	}, "nodes 1 and 2 do not hold every resource")
	for _, r := range []string{"multi/a", "multi/c"} {
		v, ok := dbs[0].get(t, r)
		require.False(t, ok, "node 0 refused (b is foreign there) but took %s = %q: not all-or-nothing", r, v)
	}
	require.NoError(t, l.Extend(ctx, 0), "Extend of a multi-resource lock")
	require.NoError(t, l.Unlock(ctx), "Unlock of a multi-resource lock")
	coreClose(t, m, 3*time.Second)
	for _, r := range resources {
		for i, d := range dbs {
			v, ok := d.get(t, r)
			if r == "multi/b" && i == 0 {
				require.Equal(t, "foreign", v, "Unlock touched the foreign key on %s", d)
				continue
			}
			require.False(t, ok, "Unlock left %s = %q on %s", r, v, d)
		}
	}
	coreNoLeak(t, ignore)
}

// TestGetLockRebuildsHandleInAnotherManager is aioredlock's get_lock: a
// second Manager (another process) rebuilds the handle of a held lock from
// its resource and token, then extends and releases it; the first handle is
// then no longer held.
func TestGetLockRebuildsHandleInAnotherManager(t *testing.T) {
	servers := harness.StartN(t, 3, harness.Options{})
	dbs := coreDBs(t, servers)
	ignore := goleak.IgnoreCurrent()
	m1 := coreNew(t, coreAddrs(servers))
	m2 := coreNew(t, coreAddrs(servers))
	ctx := coreCtx(t, 30*time.Second)
	const resource = "handed-over"

	l1, err := m1.Lock(ctx, resource, 10*time.Second)
	require.NoError(t, err)
	l2, err := m2.GetLock(ctx, resource, l1.Token())
	require.NoError(t, err, "GetLock with the holder's token")
	require.Equal(t, resource, l2.Resource())
	require.Equal(t, l1.Token(), l2.Token())
	require.True(t, l2.Valid(), "rebuilt handle not valid")
	require.False(t, l2.Until().After(l1.Until().Add(50*time.Millisecond)),
		"rebuilt handle claims more validity (%v) than the lock has (%v)", time.Until(l2.Until()), time.Until(l1.Until()))
	require.True(t, time.Until(l2.Until()) > 8*time.Second, "rebuilt handle's validity %v is far below the key's PTTL", time.Until(l2.Until()))

	require.NoError(t, l2.Extend(ctx, 20*time.Second), "Extend through the rebuilt handle")
	// Extend returns at quorum; the last node may answer a moment later.
	harness.WaitFor(t, 2*time.Second, func() bool {
		for _, d := range dbs {
			if d.pttl(t, resource) < 15000 {
				return false
			}
		}
		return true
	}, "some node's PTTL was not raised to ~20s by Extend through the rebuilt handle")
	require.NoError(t, l2.Unlock(ctx), "Unlock through the rebuilt handle")
	coreWaitGone(t, dbs, resource, "after Unlock through the rebuilt handle")
	require.ErrorIs(t, l1.Extend(ctx, 0), redlock.ErrNotHeld, "the original handle after the rebuilt one released the lock")

	_, err = m2.GetLock(ctx, resource, l1.Token())
	require.ErrorIs(t, err, redlock.ErrNotHeld, "GetLock of a released lock")
	// Held on a minority only: not rebuilt.
	dbs[0].do(t, "SET", resource, "minority-token", "PX", 60000)
	_, err = m2.GetLock(ctx, resource, "minority-token")
	require.ErrorIs(t, err, redlock.ErrNotHeld, "GetLock of a token held on one node of three")
	coreClose(t, m1, 3*time.Second)
	coreClose(t, m2, 3*time.Second)
	coreNoLeak(t, ignore)
}

// TestWithTokenUsesGivenToken checks that WithToken's token is the value
// stored on every node and the lock's Token, and that a different token is
// refused while it is held.
func TestWithTokenUsesGivenToken(t *testing.T) {
	servers := harness.StartN(t, 3, harness.Options{})
	dbs := coreDBs(t, servers)
	ignore := goleak.IgnoreCurrent()
	m := coreNew(t, coreAddrs(servers), redlock.WithRetryCount(1))
	ctx := coreCtx(t, 30*time.Second)
	const resource, token = "custom", "my-token-123"

	l, err := m.Lock(ctx, resource, 10*time.Second, redlock.WithToken(token))
	require.NoError(t, err)
	require.Equal(t, token, l.Token(), "Lock.Token with WithToken")
	harness.WaitFor(t, 2*time.Second, func() bool { return coreHolders(t, dbs, resource, token) == 3 },
		"the given token is not the value stored on every node")
	_, err = m.Lock(ctx, resource, 10*time.Second, redlock.WithToken("another-token"))
	require.ErrorIs(t, err, redlock.ErrLocked, "another token while %q holds the resource", token)
	require.NoError(t, l.Unlock(ctx))
	coreWaitGone(t, dbs, resource, "after Unlock")
	coreClose(t, m, 3*time.Second)
	coreNoLeak(t, ignore)
}

// coreCommandCalls returns the calls of every command in INFO commandstats.
func coreCommandCalls(t *testing.T, d *coreDB) map[string]int {
	t.Helper()
	info, err := redis.String(d.do(t, "INFO", "commandstats"), nil)
	require.NoError(t, err)
	out := map[string]int{}
	for _, m := range regexp.MustCompile(`(?m)^cmdstat_([^:]+):calls=(\d+)`).FindAllStringSubmatch(info, -1) {
		n, _ := strconv.Atoi(m[2])
		out[m[1]] = n
	}
	return out
}

// TestLoadScriptsThenOnlyEvalsha preloads the scripts, resets the command
// statistics and runs 100 lock/extend/unlock cycles: every node then counts
// EVALSHA calls and not a single EVAL. Without preloading, the same check
// sees EVAL (the NOSCRIPT fallback), so it can tell the difference.
func TestLoadScriptsThenOnlyEvalsha(t *testing.T) {
	servers := harness.StartN(t, 3, harness.Options{})
	dbs := coreDBs(t, servers)
	ignore := goleak.IgnoreCurrent()
	ctx := coreCtx(t, 60*time.Second)
	for _, d := range dbs {
		d.do(t, "SCRIPT", "FLUSH")
	}

	m := coreNew(t, coreAddrs(servers))
	require.NoError(t, m.LoadScripts(ctx), "LoadScripts")
	for _, s := range redlock.Scripts() {
		for _, d := range dbs {
			ex, err := redis.Ints(d.do(t, "SCRIPT", "EXISTS", s.SHA1), nil)
			require.NoError(t, err)
			require.Equal(t, []int{1}, ex, "script %s not loaded on %s", s.Name, d)
		}
	}
	for _, d := range dbs {
		d.do(t, "CONFIG", "RESETSTAT")
	}
	const cycles = 100
	for i := 0; i < cycles; i++ {
		l, err := m.Lock(ctx, fmt.Sprintf("cycle/%d", i), 5*time.Second)
		require.NoError(t, err, "cycle %d: Lock", i)
		require.NoError(t, l.Extend(ctx, 0), "cycle %d: Extend", i)
		require.NoError(t, l.Unlock(ctx), "cycle %d: Unlock", i)
	}
	coreClose(t, m, 3*time.Second)
	for _, d := range dbs {
		calls := coreCommandCalls(t, d)
		t.Logf("%s after %d cycles: %v", d, cycles, calls)
		require.GreaterOrEqual(t, calls["evalsha"], 3*cycles, "%s: EVALSHA calls (one per Lock, Extend and Unlock)", d)
		_, eval := calls["eval"]
		require.False(t, eval, "%s sent EVAL %d times after LoadScripts: steady state must be EVALSHA only", d, calls["eval"])
	}

	// Control: after a flush under open connections, the fallback shows up
	// as EVAL. (A new connection loads the scripts itself: flush after the
	// first cycle opened them.)
	m = coreNew(t, coreAddrs(servers))
	l, err := m.Lock(ctx, "control-warmup", 5*time.Second)
	require.NoError(t, err)
	require.NoError(t, l.Unlock(ctx))
	// Lock and Unlock return at the quorum: the last node's connection may
	// still be opening (a container's, slower). Inspect waits for every
	// node, so every connection is open before the flush.
	_, err = m.Inspect(ctx, "control-warmup")
	require.NoError(t, err)
	for _, d := range dbs {
		d.do(t, "SCRIPT", "FLUSH")
		d.do(t, "CONFIG", "RESETSTAT")
	}
	l, err = m.Lock(ctx, "control", 5*time.Second)
	require.NoError(t, err)
	require.NoError(t, l.Unlock(ctx))
	coreClose(t, m, 3*time.Second)
	for _, d := range dbs {
		require.Greater(t, coreCommandCalls(t, d)["eval"], 0, "%s: the NOSCRIPT fallback did not show as EVAL: the check above proves nothing", d)
	}
	coreNoLeak(t, ignore)
}
