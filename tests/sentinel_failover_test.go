package tests

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/redlock-go/redlock"
	"github.com/redlock-go/redlock/tests/harness"
)

// sentinelThreeGroups starts three independent Sentinel groups: three
// Redlock nodes.
func sentinelThreeGroups(t *testing.T, prefix string) ([]*harness.SentinelGroup, []redlock.Instance) {
	t.Helper()
	groups := make([]*harness.SentinelGroup, 3)
	insts := make([]redlock.Instance, 3)
	for i := range groups {
		groups[i] = sentinelStart(t, fmt.Sprintf("%s-%d", prefix, i), harness.SentinelOptions{})
		insts[i] = sentinelOf(groups[i])
	}
	return groups, insts
}

// sentinelKillMaster kills g's master and waits for the Sentinels to
// promote its replica; it returns the old master, the new one and how long
// the failover took from the kill.
func sentinelKillMaster(t *testing.T, g *harness.SentinelGroup) (oldMaster, newMaster *harness.Server, took time.Duration) {
	t.Helper()
	oldAddr := g.MasterAddr(t)
	oldMaster = g.ServerByAddr(oldAddr)
	require.NotNil(t, oldMaster)
	require.NoError(t, oldMaster.Kill())
	killed := time.Now()
	newAddr := g.WaitForFailover(t, oldAddr, 30*time.Second)
	took = time.Since(killed)
	t.Logf("group %s: master %s killed, %s promoted after %v", g.Name, oldAddr, newAddr, took.Round(time.Millisecond))
	return oldMaster, g.ServerByAddr(newAddr), took
}

// TestSentinelFailoverWhileLocked holds a 20s lock on three Sentinel
// groups, kills the master of one and waits for the promotion. Then, with
// no manual step:
//   - Extend and Unlock of the held lock succeed (2 of 3);
//   - a new Lock succeeds and its key is on the promoted master (the node
//     takes part again; the scripts, never loaded there before, were
//     loaded by the new connection, so no EVALSHA met NOSCRIPT);
//   - the old master, restarted and turned into a replica of the new one,
//     is never written to by the client: after CONFIG RESETSTAT and more
//     lock cycles its commandstats show no eval/evalsha, and every key it
//     holds is one replicated from the new master.
func TestSentinelFailoverWhileLocked(t *testing.T) {
	groups, insts := sentinelThreeGroups(t, "sentinel-locked")
	ignore := goleak.IgnoreCurrent()
	m, err := redlock.New(insts, redlock.WithNodeTimeout(2*time.Second)) // a busy machine must not fail Extend
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	lock, err := m.Lock(ctx, "sentinel-held", 20*time.Second)
	require.NoError(t, err)
	g := groups[0]
	harness.WaitFor(t, 5*time.Second, func() bool {
		v, ok := sentinelGet(t, g.Replicas[0], 0, "sentinel-held")
		return ok && v == lock.Token()
	}, "the lock key never reached the replica of %s", g.Name)
	exists, err := redis.Ints(g.Replicas[0].Do(t, "SCRIPT", "EXISTS", sentinelScriptSHA(t, "acquire"), sentinelScriptSHA(t, "extend")), nil)
	require.NoError(t, err)
	require.Equal(t, []int{0, 0}, exists, "scripts are not replicated: the replica must not know them before the failover")

	oldMaster, newMaster, took := sentinelKillMaster(t, g)

	start := time.Now()
	require.NoError(t, lock.Extend(ctx, 20*time.Second), "Extend after the failover must succeed on 2 of 3 nodes")
	require.True(t, lock.Valid())
	require.NoError(t, lock.Unlock(ctx), "Unlock after the failover must succeed on 2 of 3 nodes")
	t.Logf("Extend+Unlock right after the failover took %v", time.Since(start).Round(time.Millisecond))

	after, err := m.Lock(ctx, "sentinel-after-failover", 20*time.Second)
	require.NoError(t, err, "a new Lock after the failover must succeed with no manual step")
	harness.WaitFor(t, 5*time.Second, func() bool {
		v, ok := sentinelGet(t, newMaster, 0, "sentinel-after-failover")
		return ok && v == after.Token()
	}, "the post-failover lock key is not on the promoted master %s: the failed-over node did not take part", newMaster)
	require.NotEmpty(t, sentinelStat(t, newMaster, "commandstats", "cmdstat_script|load", "calls"),
		"the client must load the scripts on the promoted master (its script cache was empty)")
	require.Empty(t, sentinelStat(t, newMaster, "errorstats", "errorstat_NOSCRIPT", "count"),
		"the scripts were loaded when the connection opened: no EVALSHA may meet NOSCRIPT")
	require.NoError(t, after.Unlock(ctx))

	// The old master comes back (empty: no persistence) and is made a
	// replica of the promoted one; Sentinel would do the same a little
	// later. The client must never write to it, before or after.
	require.NoError(t, oldMaster.Restart())
	oldMaster.Do(t, "CONFIG", "RESETSTAT")
	sentinelLockCycles(t, ctx, m, "sentinel-restarted-a", 5)
	oldMaster.Do(t, "REPLICAOF", newMaster.Host(), newMaster.Port())
	harness.WaitFor(t, 15*time.Second, func() bool {
		info := sentinelInfo(t, oldMaster, "replication")
		return info["role"] == "slave" && info["master_link_status"] == "up" && info["master_sync_in_progress"] == "0"
	}, "restarted %s never became an in-sync replica of %s", oldMaster, newMaster)
	sentinelLockCycles(t, ctx, m, "sentinel-restarted-b", 10)
	held, err := m.Lock(ctx, "sentinel-restarted-held", 20*time.Second)
	require.NoError(t, err)

	for _, cmd := range []string{"cmdstat_evalsha", "cmdstat_eval", "cmdstat_script|load"} {
		require.Empty(t, sentinelStat(t, oldMaster, "commandstats", cmd, "calls"),
			"the restarted old master %s received %s from the client", oldMaster, cmd)
	}
	// Wait until the replica has everything the master has, then compare.
	c, err := newMaster.Dial()
	require.NoError(t, err)
	_, err = c.Do("SET", "sentinel-sync-marker", "1")
	require.NoError(t, err)
	acked, err := redis.Int(c.Do("WAIT", 1, 5000))
	c.Close()
	require.NoError(t, err)
	require.Equal(t, 1, acked, "the restarted old master does not replicate from %s", newMaster)
	onOld, onNew := sentinelKeys(t, oldMaster), sentinelKeys(t, newMaster)
	for k, v := range onOld {
		require.Equal(t, onNew[k], v, "key %q on the restarted old master is not a replica of the promoted master's", k)
	}
	require.Equal(t, held.Token(), onOld["sentinel-restarted-held"], "the held lock must have been replicated to the old master")
	require.NoError(t, held.Unlock(ctx))
	require.NoError(t, m.Close())
	sentinelNoLeak(t, ignore)
	t.Logf("failover window of %s: %v (down-after %v, failover-timeout %v)", g.Name, took.Round(time.Millisecond), sentinelDownAfter, sentinelFailoverTimeout)
}

// sentinelLockCycles runs n Lock/Extend/Unlock cycles on distinct resources.
func sentinelLockCycles(t *testing.T, ctx context.Context, m *redlock.Manager, prefix string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		l, err := m.Lock(ctx, fmt.Sprint(prefix, "-", i), 5*time.Second)
		require.NoError(t, err)
		require.NoError(t, l.Extend(ctx, 5*time.Second))
		require.NoError(t, l.Unlock(ctx))
	}
}

// sentinelKeys returns every string key of db 0 on srv with its value.
func sentinelKeys(t *testing.T, srv *harness.Server) map[string]string {
	t.Helper()
	keys, err := redis.Strings(srv.Do(t, "KEYS", "*"), nil)
	require.NoError(t, err)
	out := map[string]string{}
	for _, k := range keys {
		if v, ok := sentinelGet(t, srv, 0, k); ok {
			out[k] = v
		}
	}
	return out
}

// errorSpans records, per source, when errors were seen.
type errorSpans struct {
	mu    sync.Mutex
	times map[string][]time.Time
	last  map[string]error
}

func (e *errorSpans) add(source string, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.times == nil {
		e.times, e.last = map[string][]time.Time{}, map[string]error{}
	}
	e.times[source] = append(e.times[source], time.Now())
	e.last[source] = err
}

// span returns the first and last error time of source and their count.
func (e *errorSpans) span(source string) (first, last time.Time, n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ts := e.times[source]
	if len(ts) == 0 {
		return time.Time{}, time.Time{}, 0
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	return ts[0], ts[len(ts)-1], len(ts)
}

// TestSentinelFailoverUnderLoad runs 8 goroutines taking and releasing one
// resource (short TTL) on three Sentinel groups while one group's master is
// killed and replaced. An overlap checker counts the goroutines inside the
// critical section: it must never see two. Errors are timed:
//   - the node errors the load's Manager reports for the failed-over group
//     (other than "locked", "not held" and the restart guard's quarantine)
//     must all fall in one window no longer than the failover itself plus
//     slack, and end by then;
//   - a probe Manager on that group alone (restart guard off, so its votes
//     count as soon as it answers) locks and unlocks every 20ms: its errors
//     too must end within the failover window plus slack.
//
// The load Manager keeps the restart guard on (the default): after the
// failover the group's votes are ignored for one max TTL (the quarantine is
// timed separately and must end within max TTL plus slack of the first
// quarantined vote), during which the two other groups carry the quorum.
func TestSentinelFailoverUnderLoad(t *testing.T) {
	groups, insts := sentinelThreeGroups(t, "sentinel-load")
	ignore := goleak.IgnoreCurrent()
	const (
		workers  = 8
		ttl      = 2 * time.Second
		resource = "sentinel-load"
		slack    = 2500 * time.Millisecond // sentinel polling, redial backoff (max 1s), a busy 2-core machine
	)
	g := groups[0]
	failed := insts[0].String()
	m, err := redlock.New(insts, redlock.WithRetryCount(1), redlock.WithDefaultTTL(ttl))
	require.NoError(t, err)
	probe, err := redlock.New(insts[:1], redlock.WithRetryCount(1), redlock.WithRestartGuard(false))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	var (
		inside, overlaps           atomic.Int32
		acquired, afterKill, stale atomic.Int64
		killedAt                   atomic.Int64 // unix nanos; 0 before the kill
		spans                      errorSpans
		stop                       = make(chan struct{})
		wg                         sync.WaitGroup
	)
	record := func(err error) {
		var qe *redlock.QuorumError
		if !errors.As(err, &qe) {
			spans.add("other", err)
			return
		}
		for _, ne := range qe.Nodes {
			switch {
			case ne.Node != failed,
				errors.Is(ne.Err, redlock.ErrLocked), errors.Is(ne.Err, redlock.ErrNotHeld):
			case strings.Contains(ne.Err.Error(), "restart guard"):
				spans.add("quarantine", ne.Err)
			case killedAt.Load() == 0:
				spans.add("load-before-kill", ne.Err) // a slow node on a busy machine: logged only
			default:
				spans.add("load", ne.Err)
			}
		}
	}
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				l, err := m.Lock(ctx, resource, 0)
				if err != nil {
					record(err)
					time.Sleep(time.Duration(1+w) * time.Millisecond)
					continue
				}
				if inside.Add(1) > 1 {
					overlaps.Add(1)
				}
				acquired.Add(1)
				if killedAt.Load() != 0 {
					afterKill.Add(1)
				}
				time.Sleep(time.Millisecond)
				if !l.Valid() {
					stale.Add(1)
				}
				inside.Add(-1)
				if err := l.Unlock(ctx); err != nil {
					record(err)
				}
			}
		}()
	}
	var probeOK atomic.Int64 // unix nanos of the last probe success
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			l, err := probe.Lock(ctx, "sentinel-probe", time.Second)
			if err == nil {
				err = l.Unlock(ctx)
			}
			if err != nil {
				spans.add("probe", err)
			} else {
				probeOK.Store(time.Now().UnixNano())
			}
		}
	}()

	time.Sleep(time.Second)
	before := acquired.Load()
	oldAddr := g.MasterAddr(t)
	require.NoError(t, g.ServerByAddr(oldAddr).Kill())
	kill := time.Now()
	killedAt.Store(kill.UnixNano())
	newAddr := g.WaitForFailover(t, oldAddr, 30*time.Second)
	failover := time.Since(kill)
	t.Logf("group %s: master %s killed, %s promoted after %v", g.Name, oldAddr, newAddr, failover.Round(time.Millisecond))
	// Run on until the probe has succeeded for a while after the failover.
	harness.WaitFor(t, failover+10*time.Second, func() bool {
		ok := probeOK.Load()
		return ok != 0 && time.Since(time.Unix(0, ok)) < 100*time.Millisecond && time.Since(kill) > failover+2*time.Second
	}, "the probe on %s never recovered after the failover", g.Name)
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()

	require.Zero(t, overlaps.Load(), "two goroutines were inside the critical section at once")
	require.Zero(t, stale.Load(), "a critical section outlived its lock's validity (the overlap check would be unfair)")
	require.Greater(t, before, int64(0), "no lock was taken before the failover")
	require.Greater(t, afterKill.Load(), int64(0), "no lock was taken after the master was killed")
	_, _, others := spans.span("other")
	require.Zero(t, others, "errors that are not quorum errors: %v", spans.last["other"])

	window := failover + slack
	for _, source := range []string{"load", "probe"} {
		first, last, n := spans.span(source)
		if n == 0 {
			t.Logf("%s: no error on %s", source, g.Name)
			continue
		}
		t.Logf("%s: %d errors on %s from kill%+v to kill%+v (%v long); last: %v", source, n, g.Name,
			first.Sub(kill).Round(time.Millisecond), last.Sub(kill).Round(time.Millisecond), last.Sub(first).Round(time.Millisecond), spans.last[source])
		require.LessOrEqual(t, last.Sub(first), window, "%s: errors on %s lasted longer than the failover (%v) plus slack", source, g.Name, failover)
		require.LessOrEqual(t, last.Sub(kill), window, "%s: errors on %s went on after the failover (%v) plus slack", source, g.Name, failover)
	}
	if first, last, n := spans.span("quarantine"); n > 0 {
		t.Logf("restart guard: %d votes of %s ignored from kill%+v to kill%+v", n, g.Name, first.Sub(kill).Round(time.Millisecond), last.Sub(kill).Round(time.Millisecond))
		require.LessOrEqual(t, last.Sub(first), ttl+slack, "the restart guard's quarantine outlasted one max TTL")
	}
	if _, _, n := spans.span("load-before-kill"); n > 0 {
		t.Logf("%d node errors on %s before the kill (busy machine); last: %v", n, g.Name, spans.last["load-before-kill"])
	}
	t.Logf("%d locks taken (%d after the kill), 0 overlaps", acquired.Load(), afterKill.Load())
	require.NoError(t, m.Close())
	require.NoError(t, probe.Close())
	sentinelNoLeak(t, ignore)
}
