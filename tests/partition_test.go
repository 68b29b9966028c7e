package tests

import (
	"fmt"
	"regexp"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/redlock-go/redlock"
	"github.com/redlock-go/redlock/tests/harness"
)

// Network partitions: a node's container is disconnected from the
// harness's Docker network (docker network disconnect), as when its host
// or its link disappears. These tests always run their servers as
// containers (Options.Backend), whatever REDLOCK_TEST_BACKEND says: a
// partition needs them, and the harness fails the test with what to do
// when the Docker engine cannot be reached.

// partitionTimeout is the node timeout of these tests: every call must
// come back within it (plus scheduling), however the partitioned node
// behaves.
const partitionTimeout = 300 * time.Millisecond

// TestPartitionOneOfFiveNodes: with one of five nodes partitioned, 8
// goroutines cycling Lock, Extend and Unlock all succeed, no call takes
// much longer than the node timeout, and goroutines do not pile up on the
// node that does not answer; once the node is connected again, locks are
// held on it again (the node is used again without a new Manager).
func TestPartitionOneOfFiveNodes(t *testing.T) {
	servers := harness.StartN(t, 5, harness.Options{Backend: harness.BackendDocker})
	dbs := coreDBs(t, servers)
	cut := servers[4]
	t.Cleanup(func() { cut.Heal() })
	ignore := goleak.IgnoreCurrent()
	baseline := runtime.NumGoroutine()
	m := coreNew(t, coreAddrs(servers), redlock.WithNodeTimeout(partitionTimeout))
	ctx := coreCtx(t, 60*time.Second)
	require.NoError(t, ownedCycle(ctx, m, "partition-warm-up", time.Second))

	require.NoError(t, cut.Partition(), "docker network disconnect node 4")
	const workers = 8
	var goroutines ownedMax
	stopG := ownedSample(2*time.Millisecond, func() { goroutines.see(int64(coreGoroutines(baseline + workers + 20))) })
	var (
		mu      sync.Mutex
		slowest time.Duration
		errs    []error
		cycles  int
	)
	timed := func(f func() error) error {
		start := time.Now()
		err := f()
		d := time.Since(start)
		mu.Lock()
		slowest = max(slowest, d)
		mu.Unlock()
		return err
	}
	end := time.Now().Add(4 * time.Second)
	var wg sync.WaitGroup
	for g := 0; g < workers; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			resource := fmt.Sprintf("partition-%d", g)
			for time.Now().Before(end) {
				var l *redlock.Lock
				err := timed(func() (err error) { l, err = m.Lock(ctx, resource, 2*time.Second); return err })
				if err == nil {
					err = timed(func() error { return l.Extend(ctx, 2*time.Second) })
					if uerr := timed(func() error { return l.Unlock(ctx) }); err == nil {
						err = uerr
					}
				}
				mu.Lock()
				cycles++
				if err != nil {
					errs = append(errs, err)
				}
				mu.Unlock()
			}
		}(g)
	}
	wg.Wait()
	stopG()
	t.Logf("node 4 partitioned: %d Lock+Extend+Unlock cycles on %d goroutines, slowest call %v (node timeout %v); goroutines: baseline %d, max %d",
		cycles, workers, slowest.Round(time.Millisecond), partitionTimeout, baseline, goroutines.get())
	require.Empty(t, errs, "with one of five nodes partitioned, four answer: every call must succeed")
	require.Greater(t, cycles, 3*workers, "the cycles went on while the node was cut off")
	assert.Less(t, slowest, 4*partitionTimeout, "a call waited on the partitioned node far longer than the node timeout")
	assert.Less(t, goroutines.get(), int64(baseline+workers+50), "goroutines pile up on the partitioned node")

	// Healed: the node holds locks again.
	require.NoError(t, cut.Heal(), "docker network connect node 4")
	healed := time.Now()
	harness.WaitFor(t, 20*time.Second, func() bool {
		l, err := m.Lock(ctx, "partition-healed", 5*time.Second)
		if err != nil {
			return false
		}
		defer l.Unlock(ctx)
		for wait := time.Now().Add(2 * time.Second); l.NodesHeld() < 5 && time.Now().Before(wait); {
			time.Sleep(10 * time.Millisecond) // a late answer, or the top-up
		}
		return l.NodesHeld() == 5 && coreHolders(t, dbs, "partition-healed", l.Token()) == 5
	}, "after Heal, node 4 should hold locks again")
	t.Logf("node 4 used again %v after Heal", time.Since(healed).Round(time.Millisecond))
	coreClose(t, m, 3*time.Second)
	coreNoLeak(t, ignore)
}

// TestSentinelSplitBrain partitions the master of a Sentinel group from
// its replicas and Sentinels, but not from every client (harness
// Server.Isolate): a split brain inside one group. The Redlock nodes are
// that group (through Sentinel) and two plain servers, all containers.
//
// It shows, and prints the figures of:
//   - the old master keeps accepting writes from a client that still
//     reaches it, for as long as it is cut off (nothing in its
//     configuration makes it stop: see min-replicas-to-write), and loses
//     them when it comes back and the Sentinels make it a replica;
//   - the Sentinels promote a replica; the Manager, which discovers the
//     master through the Sentinels, keeps its lock (Extend, Unlock) and
//     takes new ones there; the restart guard does not count the promoted
//     master's yes votes while it is new (its run_id changed), so those
//     locks rest on the two plain nodes meanwhile;
//   - a stale client that still talks to the old master cannot take a
//     lock that the Manager holds (the plain nodes refuse it), but can take
//     a free resource on the old master plus the plain nodes: that key on
//     the old master is lost at the heal, which is why a lock needs a
//     quorum of independent nodes, not one group;
//   - once healed and demoted, the old master answers writes with
//     READONLY: a client still addressing it directly is refused there;
//     the Manager, which follows the Sentinels, writes nothing to it.
func TestSentinelSplitBrain(t *testing.T) {
	g := sentinelStart(t, "split-brain", harness.SentinelOptions{Replicas: 2, Backend: harness.BackendDocker})
	plain := harness.StartN(t, 2, harness.Options{Backend: harness.BackendDocker})
	plainDBs := coreDBs(t, plain)
	oldMaster := g.Master
	oldAddr := oldMaster.Addr()
	ctx := coreCtx(t, 120*time.Second)
	nodes := append([]redlock.Instance{sentinelOf(g)}, coreAddrs(plain)...)
	m := coreNew(t, nodes, redlock.WithNodeTimeout(partitionTimeout), redlock.WithRetryCount(1))

	held, err := m.Lock(ctx, "split-held", 30*time.Second)
	require.NoError(t, err)
	harness.WaitFor(t, 5*time.Second, func() bool { // Lock returns at the quorum: the master's answer may be on its way
		for _, r := range append([]*harness.Server{oldMaster}, g.Replicas...) {
			if v, _ := redis.String(r.Do(t, "GET", "split-held"), nil); v != held.Token() {
				return false
			}
		}
		return true
	}, "the master and its replicas should have the lock's key before the split")

	// Split: the old master is cut off from its replicas and Sentinels;
	// the test (a client on its side) still reaches it at side.
	side, err := oldMaster.Isolate()
	require.NoError(t, err, "isolate the master")
	t.Cleanup(func() { oldMaster.Heal() })
	split := time.Now()
	stale := coreNew(t, append([]redlock.Instance{redlock.Addr(side.Addr())}, coreAddrs(plain)...),
		redlock.WithNodeTimeout(partitionTimeout), redlock.WithRetryCount(1))

	// Writes to the old master go on until the Sentinels promote another.
	oldConn, err := side.Dial(redis.DialReadTimeout(time.Second), redis.DialWriteTimeout(time.Second))
	require.NoError(t, err)
	defer oldConn.Close()
	accepted := 0
	var newAddr string
	promoted := make(chan string, 1)
	go func() { promoted <- g.WaitForFailover(t, oldAddr, 30*time.Second) }()
writes:
	for i := 0; ; i++ {
		select {
		case newAddr = <-promoted:
			break writes
		default:
		}
		if _, err := oldConn.Do("SET", fmt.Sprintf("split-write-%d", i), i); err == nil {
			accepted++
		}
		time.Sleep(10 * time.Millisecond)
	}
	tookOver := time.Since(split)
	newMaster := g.ServerByAddr(newAddr)
	require.NotNil(t, newMaster)
	t.Logf("split brain: %s cut off; %s promoted after %v; meanwhile the old master accepted %d of the stale client's writes",
		oldAddr, newAddr, tookOver.Round(time.Millisecond), accepted)
	require.Greater(t, accepted, 0, "the isolated master kept accepting writes")
	for i := 0; i < 5; i++ { // and still does, after the promotion
		_, err := oldConn.Do("SET", fmt.Sprintf("split-after-%d", i), i)
		require.NoError(t, err, "the old master does not know it was replaced")
	}

	// The Manager keeps its lock and takes new ones.
	require.NoError(t, held.Extend(ctx, 30*time.Second), "Extend after the failover (the plain nodes, and the promoted master that has the key)")
	l, err := m.Lock(ctx, "split-new", 10*time.Second)
	require.NoError(t, err, "Lock after the failover")
	t.Logf("after the failover: the held lock extended on %d of 3 nodes; a new lock held on %d of 3", held.NodesHeld(), l.NodesHeld())
	require.NoError(t, l.Unlock(ctx))

	// The stale client: a lock held by the Manager is refused; a free
	// resource is taken, with a key on the old master that will be lost.
	_, err = stale.Lock(ctx, "split-held", 5*time.Second)
	require.ErrorIs(t, err, redlock.ErrNotAcquired, "the plain nodes hold the Manager's lock")
	ghost, err := stale.Lock(ctx, "split-ghost", 30*time.Second)
	require.NoError(t, err, "the stale client's Lock of a free resource (old master + plain nodes)")
	harness.WaitFor(t, 5*time.Second, func() bool { v, _ := getOK(t, side, "split-ghost"); return v == ghost.Token() },
		"the stale client's key should be on the old master")

	// Heal: the Sentinels turn the old master into a replica of the new
	// one; what it accepted meanwhile is gone.
	require.NoError(t, oldMaster.Heal())
	healed := time.Now()
	harness.WaitFor(t, 30*time.Second, func() bool {
		// The Sentinels kill the clients of the instance they reconfigure:
		// a reset connection here means "not yet".
		c, err := oldMaster.Dial(redis.DialReadTimeout(time.Second))
		if err != nil {
			return false
		}
		defer c.Close()
		text, err := redis.String(c.Do("INFO", "replication"))
		if err != nil {
			return false
		}
		info := infoFields(text)
		return info["role"] == "slave" && info["master_link_status"] == "up" && info["master_sync_in_progress"] == "0"
	}, "the old master should become a replica of %s after the heal", newAddr)
	lost := 0
	for i := 0; i < accepted; i++ {
		if _, ok := getOK(t, oldMaster, fmt.Sprintf("split-write-%d", i)); !ok {
			lost++
		}
	}
	_, ghostKept := getOK(t, oldMaster, "split-ghost")
	t.Logf("healed: the old master was a replica again %v later; %d of its %d accepted writes lost; the stale client's lock key there kept: %t (on the plain nodes: %d)",
		time.Since(healed).Round(time.Millisecond), lost, accepted, ghostKept, coreHolders(t, plainDBs, "split-ghost", ghost.Token()))
	require.Equal(t, accepted, lost, "the writes accepted by the cut-off master are lost when it rejoins as a replica")
	require.False(t, ghostKept)

	// A client that still addresses the old master directly now meets
	// READONLY there: its writes are refused.
	direct := coreNew(t, []redlock.Instance{redlock.Addr(oldAddr)}, redlock.WithNodeTimeout(partitionTimeout), redlock.WithRetryCount(1))
	_, err = direct.Lock(ctx, "split-readonly", 5*time.Second)
	require.ErrorIs(t, err, redlock.ErrNotAcquired)
	t.Logf("a client addressing the demoted master directly: %v", err)
	require.Contains(t, err.Error(), "READONLY", "the demoted master refuses writes")

	coreClose(t, direct, 3*time.Second) // its failed attempt's release (a read there) is answered

	// The Manager goes on, on the new master. A request it sent on its
	// connection to the old master while that hung may still arrive, by
	// TCP retransmission, once the link is back: it meets a replica, and
	// fails there. No script call succeeds on the old master.
	oldMaster.Do(t, "CONFIG", "RESETSTAT")
	for i := 0; i < 5; i++ {
		l, err := m.Lock(ctx, fmt.Sprintf("split-after-heal-%d", i), 5*time.Second)
		require.NoError(t, err)
		require.NoError(t, l.Unlock(ctx))
	}
	require.NoError(t, held.Unlock(ctx))
	calls, failed := splitScriptCalls(t, oldMaster)
	t.Logf("after the heal: %d script calls reached the old master (a replica now), %d of them refused", calls, failed)
	require.Equal(t, calls, failed, "after the heal no write of the Manager succeeded on the old master")
	_ = ghost.Unlock(ctx)
	coreClose(t, stale, 3*time.Second)
	coreClose(t, m, 3*time.Second)
}

// splitScriptCalls returns the EVAL and EVALSHA calls s counted since its
// last CONFIG RESETSTAT, and how many of them failed or were rejected.
func splitScriptCalls(t *testing.T, s *harness.Server) (calls, failed int) {
	t.Helper()
	info, err := redis.String(s.Do(t, "INFO", "commandstats"), nil)
	require.NoError(t, err)
	re := regexp.MustCompile(`(?m)^cmdstat_(?:eval|evalsha):calls=(\d+),.*?rejected_calls=(\d+),failed_calls=(\d+)`)
	for _, m := range re.FindAllStringSubmatch(info, -1) {
		c, _ := strconv.Atoi(m[1])
		r, _ := strconv.Atoi(m[2])
		f, _ := strconv.Atoi(m[3])
		calls, failed = calls+c+r, failed+f+r
	}
	return calls, failed
}

// getOK returns the value of key on s and whether it exists.
func getOK(t *testing.T, s *harness.Server, key string) (string, bool) {
	t.Helper()
	v, err := redis.String(s.Do(t, "GET", key), nil)
	if err == redis.ErrNil {
		return "", false
	}
	require.NoError(t, err)
	return v, true
}
