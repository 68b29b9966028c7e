package tests

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/redlock-go/redlock"
	"github.com/redlock-go/redlock/tests/harness"
)

// Tests of nodes given as caller-owned redigo pools, redlock.Pool(p). Such a
// node runs on the same pipelined transport as every other node: the
// Manager borrows ONE connection from p and holds it (replacing it through
// p when it breaks), borrows a second one for release wake-ups (Pub/Sub)
// only while some Lock waits, reads the run_id of every new connection for
// the restart guard, and gives everything back at Close without closing p.
// The pool does the dialling (AUTH, SELECT, client name...).
//
// Helpers of this file start with "owned".

// ownedAdminName is the client name of the test's own connections, so that
// counts of the Manager's connections (CLIENT LIST) can leave them out.
const ownedAdminName = "redlock-test-admin"

// ownedPool is a caller-owned redigo pool to one real server, built as a
// user would build it, whose Dial also counts the connections it opens.
type ownedPool struct {
	*redis.Pool
	srv  *harness.Server
	name string // CLIENT SETNAME of every connection the pool dials

	dials   atomic.Int64 // connections dialled successfully so far
	open    atomic.Int64 // being dialled, or dialled and not closed yet
	maxOpen ownedMax     // most connections open (or being dialled) at once
}

// ownedFullConn is what redigo's own connections implement; the pool needs
// the context and timeout methods to carry a ctx to the command.
type ownedFullConn interface {
	redis.ConnWithContext
	redis.ConnWithTimeout
}

// ownedCountedConn is a dialled connection that tells its pool when it is
// closed for good (the pool closes it when it drops it).
type ownedCountedConn struct {
	ownedFullConn
	p    *ownedPool
	once sync.Once
}

func (c *ownedCountedConn) Close() error {
	c.once.Do(func() { c.p.open.Add(-1) })
	return c.ownedFullConn.Close()
}

// newOwnedPool returns a pool to s whose connections carry the client name
// name and the extra dial options (e.g. redis.DialDatabase(3)); MaxActive
// and Wait as given. It is closed at t.Cleanup, after the Managers built
// later in the test.
func newOwnedPool(t testing.TB, s *harness.Server, name string, maxActive int, wait bool, extra ...redis.DialOption) *ownedPool {
	t.Helper()
	p := &ownedPool{srv: s, name: name}
	opts := append(s.DialOptions(),
		redis.DialReadTimeout(5*time.Second),
		redis.DialWriteTimeout(5*time.Second),
		redis.DialClientName(name))
	opts = append(opts, extra...)
	p.Pool = &redis.Pool{
		DialContext: func(ctx context.Context) (redis.Conn, error) {
			// Counted from the start of the dial: a dial to a paused
			// server is an open TCP connection that waits for the
			// answer to CLIENT SETNAME.
			p.maxOpen.see(p.open.Add(1))
			c, err := redis.DialContext(ctx, "tcp", s.Addr(), opts...)
			if err != nil {
				p.open.Add(-1)
				return nil, err
			}
			fc, ok := c.(ownedFullConn)
			if !ok {
				p.open.Add(-1)
				c.Close()
				return nil, fmt.Errorf("redigo connection %T does not support contexts and timeouts", c)
			}
			p.dials.Add(1)
			return &ownedCountedConn{ownedFullConn: fc, p: p}, nil
		},
		MaxIdle:   4,
		MaxActive: maxActive,
		Wait:      wait,
	}
	t.Cleanup(func() { p.Pool.Close() })
	return p
}

// ownedPools returns one pool per server; the client names are prefix-i.
func ownedPools(t testing.TB, servers []*harness.Server, prefix string, maxActive int, wait bool, extra ...redis.DialOption) []*ownedPool {
	t.Helper()
	out := make([]*ownedPool, len(servers))
	for i, s := range servers {
		out[i] = newOwnedPool(t, s, fmt.Sprintf("%s-%d", prefix, i), maxActive, wait, extra...)
	}
	return out
}

// ownedInstances returns redlock.Pool of every pool.
func ownedInstances(pools []*ownedPool) []redlock.Instance {
	out := make([]redlock.Instance, len(pools))
	for i, p := range pools {
		out[i] = redlock.Pool(p.Pool)
	}
	return out
}

// ownedAdmin returns a direct connection to s named ownedAdminName, closed
// at t.Cleanup.
func ownedAdmin(t testing.TB, s *harness.Server) redis.Conn {
	t.Helper()
	c, err := s.Dial(redis.DialClientName(ownedAdminName))
	require.NoError(t, err, "dial %s", s)
	t.Cleanup(func() { c.Close() })
	return c
}

// ownedClient is one line of CLIENT LIST.
type ownedClient struct{ id, name, cmd string }

func (c ownedClient) String() string { return fmt.Sprintf("id=%s name=%q cmd=%s", c.id, c.name, c.cmd) }

// ownedClients returns the clients connected to the server of c, except
// the test's own (named ownedAdminName).
func ownedClients(c redis.Conn) ([]ownedClient, error) {
	list, err := redis.String(c.Do("CLIENT", "LIST"))
	if err != nil {
		return nil, err
	}
	var out []ownedClient
	for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
		var cl ownedClient
		for _, f := range strings.Fields(line) {
			k, v, _ := strings.Cut(f, "=")
			switch k {
			case "id":
				cl.id = v
			case "name":
				cl.name = v
			case "cmd":
				cl.cmd = v
			}
		}
		if cl.id != "" && cl.name != ownedAdminName {
			out = append(out, cl)
		}
	}
	return out, nil
}

// ownedMax is a maximum that goroutines update.
type ownedMax struct{ v atomic.Int64 }

func (m *ownedMax) see(n int64) {
	for {
		old := m.v.Load()
		if n <= old || m.v.CompareAndSwap(old, n) {
			return
		}
	}
}

func (m *ownedMax) get() int64 { return m.v.Load() }

// ownedSample runs probe every interval in a goroutine until the returned
// stop is called; stop waits for the goroutine to end.
func ownedSample(interval time.Duration, probe func()) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			probe()
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}

// ownedErrs collects the errors of concurrent workers: how many, and the
// first few.
type ownedErrs struct {
	mu    sync.Mutex
	n     int
	first []error
}

func (e *ownedErrs) add(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.n++
	if len(e.first) < 3 {
		e.first = append(e.first, err)
	}
}

func (e *ownedErrs) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n
}

func (e *ownedErrs) String() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return fmt.Sprintf("%d failed, first: %v", e.n, errors.Join(e.first...))
}

// ownedHandoff unlocks h after 100ms while waiter (whose retry delay is
// seconds) waits for resource, and requires the waiter to get the lock
// within 1s: it was woken by the release. why says what a failure means.
func ownedHandoff(t *testing.T, ctx context.Context, h *redlock.Lock, waiter *redlock.Manager, resource, why string) {
	t.Helper()
	unlocked := make(chan error, 1)
	time.AfterFunc(100*time.Millisecond, func() { unlocked <- h.Unlock(ctx) })
	// Bounded: without a wake-up the waiter would sleep its retry delay.
	wctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel()
	start := time.Now()
	l, err := waiter.Lock(wctx, resource, 10*time.Second)
	elapsed := time.Since(start)
	select {
	case uerr := <-unlocked:
		require.NoError(t, uerr, "holder's Unlock")
	case <-time.After(5 * time.Second):
		t.Fatal("holder's Unlock has not returned after 5s")
	}
	require.NoError(t, err, "the waiter's Lock %s did not get the lock within %v, though the holder released it after 100ms: it was not woken by the release",
		why, elapsed.Round(time.Millisecond))
	require.Less(t, elapsed, time.Second, "the waiter took %v (release after 100ms): it waited its retry delay instead of being woken by the release", elapsed)
	require.NoError(t, l.Unlock(ctx), "waiter's Unlock")
}

// ownedRun runs workers goroutines that cycle Lock+Unlock on resources
// prefix-<g> while more(i) says so for their i-th cycle, records the
// failures in errs and returns how many cycles ran.
func ownedRun(ctx context.Context, m *redlock.Manager, workers int, prefix string, ttl time.Duration,
	more func(i int) bool, errs *ownedErrs) int64 {
	var cycles atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < workers; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; more(i) && ctx.Err() == nil; i++ {
				if err := ownedCycle(ctx, m, fmt.Sprintf("%s-%d", prefix, g), ttl); err != nil {
					errs.add(err)
				}
				cycles.Add(1)
			}
		}(g)
	}
	wg.Wait()
	return cycles.Load()
}

// ownedFor is ownedRun's more for a run of d from now.
func ownedFor(d time.Duration) func(int) bool {
	deadline := time.Now().Add(d)
	return func(int) bool { return time.Now().Before(deadline) }
}

// ownedCycle takes and releases resource once; an error names the step.
func ownedCycle(ctx context.Context, m *redlock.Manager, resource string, ttl time.Duration) error {
	l, err := m.Lock(ctx, resource, ttl)
	if err != nil {
		return fmt.Errorf("Lock %q: %w", resource, err)
	}
	if err := l.Unlock(ctx); err != nil {
		return fmt.Errorf("Unlock %q: %w", resource, err)
	}
	return nil
}

// ownedActiveSampler records the largest ActiveCount of each pool.
func ownedActiveSampler(pools []*ownedPool) (maxes []*ownedMax, stop func()) {
	maxes = make([]*ownedMax, len(pools))
	for i := range maxes {
		maxes[i] = &ownedMax{}
	}
	stop = ownedSample(time.Millisecond, func() {
		for i, p := range pools {
			maxes[i].see(int64(p.ActiveCount()))
		}
	})
	return maxes, stop
}

// TestCallerPoolIsNeverClosedAndGetsItsConnectionsBack: a Manager over
// three caller pools, used concurrently with and without contention (so
// that waiting Locks borrow a Pub/Sub connection), never has more than two
// connections of a pool open at once, gives every borrowed connection back
// at Close and leaves every pool open.
func TestCallerPoolIsNeverClosedAndGetsItsConnectionsBack(t *testing.T) {
	servers := harness.StartN(t, 3, harness.Options{})
	pools := ownedPools(t, servers, "redlock-owned", 0, false)
	ignore := goleak.IgnoreCurrent()

	m := coreNew(t, ownedInstances(pools),
		redlock.WithRetryCount(200), redlock.WithRetryDelay(5*time.Millisecond, 20*time.Millisecond))
	ctx := coreCtx(t, 30*time.Second)
	maxActive, stop := ownedActiveSampler(pools)
	defer stop()

	var errs ownedErrs
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ { // no contention: one resource each
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				if err := ownedCycle(ctx, m, fmt.Sprintf("owned-free-%d", g), 2*time.Second); err != nil {
					errs.add(err)
				}
			}
		}(g)
	}
	for g := 0; g < 4; g++ { // contention: the waiters need release wake-ups
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				l, err := m.Lock(ctx, "owned-shared", 2*time.Second)
				if err != nil {
					errs.add(fmt.Errorf("contended Lock: %w", err))
					continue
				}
				time.Sleep(2 * time.Millisecond)
				if err := l.Unlock(ctx); err != nil {
					errs.add(fmt.Errorf("contended Unlock: %w", err))
				}
			}
		}()
	}
	wg.Wait()
	stop()
	require.Zero(t, errs.count(), "Lock+Unlock cycles over caller pools failed: %s", &errs)

	coreClose(t, m, 5*time.Second)
	for i, p := range pools {
		t.Logf("pool of %s: %d dials, at most %d open at once (sampled ActiveCount max %d)",
			servers[i], p.dials.Load(), p.maxOpen.get(), maxActive[i].get())
		require.Equal(t, p.IdleCount(), p.ActiveCount(),
			"pool of %s: %d connections still borrowed after Manager.Close (ActiveCount %d, IdleCount %d): Close must give back every connection it borrowed",
			servers[i], p.ActiveCount()-p.IdleCount(), p.ActiveCount(), p.IdleCount())
		c := p.Get()
		_, err := c.Do("PING")
		c.Close()
		require.NoError(t, err, "pool of %s no longer works after Manager.Close: the caller-owned pool must stay open", servers[i])
	}
	for i, p := range pools {
		assert.LessOrEqual(t, p.maxOpen.get(), int64(2),
			"pool of %s had %d connections open at once during the run (want at most 2: one held, one for Pub/Sub while a Lock waits): the Manager does not hold one connection per caller pool",
			servers[i], p.maxOpen.get())
		assert.LessOrEqual(t, maxActive[i].get(), int64(2),
			"pool of %s: ActiveCount reached %d during the run (want at most 2)", servers[i], maxActive[i].get())
	}
	coreNoLeak(t, ignore)
}

// TestCallerPoolHoldsOneConnectionUnderLoad: 64 goroutines cycling
// Lock+Unlock over five caller pools without a MaxActive limit; each server
// sees at most two connections from the Manager at any time.
func TestCallerPoolHoldsOneConnectionUnderLoad(t *testing.T) {
	servers := harness.StartN(t, 5, harness.Options{})
	pools := ownedPools(t, servers, "redlock-owned", 0, false)
	admins := make([]redis.Conn, len(servers))
	for i, s := range servers {
		admins[i] = ownedAdmin(t, s)
	}
	m := coreNew(t, ownedInstances(pools))
	ctx := coreCtx(t, 30*time.Second)

	clients := make([]*ownedMax, len(servers))
	for i := range clients {
		clients[i] = &ownedMax{}
	}
	var sampleErrs ownedErrs
	stop := ownedSample(5*time.Millisecond, func() {
		for i, c := range admins {
			cl, err := ownedClients(c)
			if err != nil {
				sampleErrs.add(fmt.Errorf("CLIENT LIST on %s: %w", servers[i], err))
				continue
			}
			clients[i].see(int64(len(cl)))
		}
	})
	defer stop()

	const workers = 64
	var errs ownedErrs
	cycles := ownedRun(ctx, m, workers, "owned-load", 5*time.Second, ownedFor(1500*time.Millisecond), &errs)
	stop()
	coreClose(t, m, 5*time.Second)
	t.Logf("%d cycles by %d goroutines", cycles, workers)
	require.Zero(t, sampleErrs.count(), "sampling CLIENT LIST: %s", &sampleErrs)
	for i, s := range servers {
		t.Logf("%s: at most %d connections from the Manager, pool dialled %d", s, clients[i].get(), pools[i].dials.Load())
		assert.LessOrEqual(t, clients[i].get(), int64(2),
			"%s saw %d connections from one Manager at once under %d concurrent callers (want at most 2: one held and pipelined, one for Pub/Sub): the caller pool is used a connection per command",
			s, clients[i].get(), workers)
	}
	assert.Zero(t, errs.count(), "Lock+Unlock cycles over caller pools failed: %s", &errs)
}

// TestCallerPoolMaxActiveTwoIsEnough: pools limited to two connections
// (Wait true) are enough for concurrent Lock/Unlock and for a contended
// Lock whose waiter is woken by the release.
func TestCallerPoolMaxActiveTwoIsEnough(t *testing.T) {
	servers := harness.StartN(t, 3, harness.Options{})
	holderPools := ownedPools(t, servers, "redlock-holder", 2, true)
	waiterPools := ownedPools(t, servers, "redlock-waiter", 2, true)
	holder := coreNew(t, ownedInstances(holderPools))
	waiter := coreNew(t, ownedInstances(waiterPools),
		redlock.WithRetryCount(3), redlock.WithRetryDelay(3*time.Second, 3*time.Second))
	dbs := coreDBs(t, servers)
	ctx := coreCtx(t, 30*time.Second)

	var errs ownedErrs
	ownedRun(ctx, holder, 8, "owned-two", 2*time.Second, func(i int) bool { return i < 20 }, &errs)
	require.Zero(t, errs.count(), "Lock+Unlock over pools with MaxActive 2 failed: %s", &errs)

	h, err := holder.Lock(ctx, "owned-two-shared", 10*time.Second)
	require.NoError(t, err, "holder's Lock on free nodes")
	harness.WaitFor(t, 2*time.Second, func() bool { return coreHolders(t, dbs, "owned-two-shared", h.Token()) == 3 },
		"the holder's key did not reach every node")
	ownedHandoff(t, ctx, h, waiter, "owned-two-shared",
		"over pools with MaxActive 2 (a third connection needed, or no Pub/Sub on caller pools; the retry delay is 3s)")

	coreClose(t, holder, 5*time.Second)
	coreClose(t, waiter, 5*time.Second)
	for i, p := range append(holderPools, waiterPools...) {
		require.Equal(t, p.IdleCount(), p.ActiveCount(), "pool %d (%s): connections still borrowed after Close", i, p.name)
	}
}

// TestCallerPoolSelectsItsDB: the pool's Dial selects DB 3; the lock's key
// lands in DB 3 of every server and never in DB 0.
func TestCallerPoolSelectsItsDB(t *testing.T) {
	servers := harness.StartN(t, 3, harness.Options{})
	pools := ownedPools(t, servers, "redlock-db3", 0, false, redis.DialDatabase(3))
	m := coreNew(t, ownedInstances(pools))
	db3 := make([]*coreDB, len(servers))
	for i, s := range servers {
		db3[i] = coreDBOf(t, s, 3)
	}
	db0 := coreDBs(t, servers)
	ctx := coreCtx(t, 20*time.Second)
	const resource = "owned-db-three"

	l, err := m.Lock(ctx, resource, 10*time.Second)
	require.NoError(t, err, "Lock over caller pools that select DB 3")
	harness.WaitFor(t, 2*time.Second, func() bool { return coreHolders(t, db3, resource, l.Token()) == 3 },
		"the lock's key is not in DB 3 of every server, the database the caller pool's Dial selects")
	for _, d := range db0 {
		v, ok := d.get(t, resource)
		require.False(t, ok, "the lock's key landed in %s (value %q): the caller pool's database was not used", d, v)
	}
	locked, err := m.IsLocked(ctx, resource)
	require.NoError(t, err)
	require.True(t, locked, "IsLocked over caller pools on DB 3")
	require.NoError(t, m.Unlock(ctx, l), "Unlock over caller pools on DB 3")
	coreWaitGone(t, db3, resource, "after Unlock over caller pools on DB 3")
	coreClose(t, m, 5*time.Second)
}

// TestCallerPoolReleaseWakesWaiter: a Lock waiting for a resource held by
// another Manager, over caller pools, is woken by the release (Pub/Sub on a
// borrowed connection) instead of sleeping its 5s retry delay.
func TestCallerPoolReleaseWakesWaiter(t *testing.T) {
	servers := harness.StartN(t, 3, harness.Options{})
	holderPools := ownedPools(t, servers, "redlock-holder", 0, false)
	waiterPools := ownedPools(t, servers, "redlock-waiter", 0, false)
	holder := coreNew(t, ownedInstances(holderPools))
	waiter := coreNew(t, ownedInstances(waiterPools),
		redlock.WithRetryDelay(5*time.Second, 5*time.Second), redlock.WithRetryCount(3))
	dbs := coreDBs(t, servers)
	ctx := coreCtx(t, 20*time.Second)
	const resource = "owned-handoff"

	h, err := holder.Lock(ctx, resource, 10*time.Second)
	require.NoError(t, err, "holder's Lock on free nodes")
	harness.WaitFor(t, 2*time.Second, func() bool { return coreHolders(t, dbs, resource, h.Token()) == 3 },
		"the holder's key did not reach every node")
	ownedHandoff(t, ctx, h, waiter, resource, "over caller pools (no Pub/Sub wake-up for caller pools; its retry delay is 5s)")
	coreClose(t, holder, 5*time.Second)
	coreClose(t, waiter, 5*time.Second)
	for _, p := range append(holderPools, waiterPools...) {
		require.Equal(t, p.IdleCount(), p.ActiveCount(), "pool %s: connections (the Pub/Sub one?) still borrowed after Close", p.name)
	}
}

// ownedRunID returns the run_id of s.
func ownedRunID(t testing.TB, s *harness.Server) string {
	t.Helper()
	info, err := redis.String(s.Do(t, "INFO", "server"), nil)
	require.NoError(t, err)
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(line, "run_id:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no run_id in INFO server of %s", s)
	return ""
}

// TestCallerPoolRestartGuard: a caller pool's node that restarted without
// persistence (new run_id, seen on the connection the pool dials after the
// restart) has its vote ignored for one max TTL; with WithRestartGuard(false)
// the same Lock succeeds.
func TestCallerPoolRestartGuard(t *testing.T) {
	servers := harness.StartN(t, 3, harness.Options{})
	guardedPools := ownedPools(t, servers, "redlock-guarded", 0, false)
	unguardedPools := ownedPools(t, servers, "redlock-unguarded", 0, false)
	guarded := coreNew(t, ownedInstances(guardedPools), redlock.WithRetryCount(1))
	unguarded := coreNew(t, ownedInstances(unguardedPools), redlock.WithRetryCount(1), redlock.WithRestartGuard(false))
	dbs := coreDBs(t, servers)
	ctx := coreCtx(t, 30*time.Second)
	const resource = "owned-job"

	// Both Managers see every node's run_id.
	for name, m := range map[string]*redlock.Manager{"guarded": guarded, "unguarded": unguarded} {
		require.NoError(t, ownedCycle(ctx, m, "owned-warm-up", time.Second), "%s Manager before the restart", name)
	}
	before := ownedRunID(t, servers[0])
	require.NoError(t, servers[0].Kill(), "kill -9 node 0")
	require.NoError(t, servers[0].Restart(), "restart node 0 with no data")
	require.NotEqual(t, before, ownedRunID(t, servers[0]), "node 0 kept its run_id across a restart")
	// Let each Manager meet its broken connection to node 0 and get a new
	// one through the pool. IsLocked decides on the first two answers, so
	// node 0's reset may come after it returns: wait for the new dial.
	for name, mp := range map[string]struct {
		m     *redlock.Manager
		pools []*ownedPool
	}{"guarded": {guarded, guardedPools}, "unguarded": {unguarded, unguardedPools}} {
		dials := mp.pools[0].dials.Load()
		harness.WaitFor(t, 5*time.Second, func() bool {
			mp.m.IsLocked(ctx, "owned-warm-up")
			return mp.pools[0].dials.Load() > dials
		}, "after node 0 restarted, the %s Manager did not get a new connection to it through the caller's pool", name)
	}

	// Only nodes 0 and 2 can agree.
	servers[1].Do(t, "SET", resource, "someone-else", "PX", 60000)
	l, err := guarded.Lock(ctx, resource, time.Second)
	if err == nil {
		l.Unlock(ctx)
		t.Fatalf("Lock %q succeeded with the votes of nodes 0 and 2, but node 0 restarted (its run_id changed) and the restart guard must ignore its vote for one max TTL: the caller pool's new connections are not watched", resource)
	}
	require.ErrorIs(t, err, redlock.ErrNotAcquired)
	require.Contains(t, err.Error(), "restart guard", "node 0's vote must be refused by the restart guard: %v", err)

	// The failed attempt's cleanup may still be releasing on nodes 0 and 2.
	coreWaitGone(t, []*coreDB{dbs[0], dbs[2]}, resource, "after the guarded Manager's failed Lock")
	l, err = unguarded.Lock(ctx, resource, time.Second)
	require.NoError(t, err, "with WithRestartGuard(false), nodes 0 and 2 must grant the lock over caller pools")
	require.NoError(t, l.Unlock(ctx))
	coreClose(t, guarded, 5*time.Second)
	coreClose(t, unguarded, 5*time.Second)
}

// TestCallerPoolPausedNodeDoesNotPileUp: with one of five caller-pool nodes
// paused (SIGSTOP), 16 goroutines cycling Lock+Unlock all succeed, the
// paused node's pool never has more than two connections open and the
// goroutines stay bounded; after Resume and Close nothing is left running.
func TestCallerPoolPausedNodeDoesNotPileUp(t *testing.T) {
	servers := harness.StartN(t, 5, harness.Options{})
	pools := ownedPools(t, servers, "redlock-owned", 0, false)
	paused := servers[4]
	t.Cleanup(func() { paused.Resume() }) // runs before the harness stops it
	ignore := goleak.IgnoreCurrent()
	baseline := runtime.NumGoroutine()

	m := coreNew(t, ownedInstances(pools))
	ctx := coreCtx(t, 30*time.Second)
	require.NoError(t, ownedCycle(ctx, m, "owned-paused-warm-up", time.Second), "Lock+Unlock before the pause")
	require.NoError(t, paused.Pause(), "SIGSTOP node 4")

	const workers = 16
	maxActive, stopActive := ownedActiveSampler(pools[4:])
	defer stopActive()
	var goroutines ownedMax
	stopG := ownedSample(2*time.Millisecond, func() { goroutines.see(int64(coreGoroutines(baseline + workers + 20))) })
	defer stopG()

	var errs ownedErrs
	cycles := ownedRun(ctx, m, workers, "owned-paused", 5*time.Second, ownedFor(2*time.Second), &errs)
	stopActive()
	stopG()
	require.NoError(t, paused.Resume(), "SIGCONT node 4")
	coreClose(t, m, 5*time.Second)

	t.Logf("%d cycles; paused node's pool: %d dials, at most %d open (sampled ActiveCount max %d); goroutines: baseline %d, max %d",
		cycles, pools[4].dials.Load(), pools[4].maxOpen.get(), maxActive[0].get(), baseline, goroutines.get())
	assert.Zero(t, errs.count(), "with one of five nodes paused, Lock+Unlock cycles failed (four live nodes are a quorum): %s", &errs)
	assert.LessOrEqual(t, pools[4].maxOpen.get(), int64(2),
		"the paused node's pool had %d connections open at once (want at most 2): calls pile up connections on a node that does not answer",
		pools[4].maxOpen.get())
	assert.LessOrEqual(t, maxActive[0].get(), int64(2),
		"the paused node's pool reached ActiveCount %d (want at most 2)", maxActive[0].get())
	assert.Less(t, goroutines.get(), int64(baseline+workers+50),
		"%d goroutines at the peak with %d workers (baseline %d): goroutines pile up on the paused node", goroutines.get(), workers, baseline)
	coreNoLeak(t, ignore)
}

// TestCallerPoolBrokenConnectionIsReplacedThroughThePool: when the server
// kills the Manager's connection (CLIENT KILL), the next operations still
// work and the node votes again on a new connection that the caller's pool
// dialled; nothing reaches the server except through the pool.
func TestCallerPoolBrokenConnectionIsReplacedThroughThePool(t *testing.T) {
	servers := harness.StartN(t, 3, harness.Options{})
	pools := ownedPools(t, servers, "redlock-owned", 0, false)
	admin := ownedAdmin(t, servers[0])
	m := coreNew(t, ownedInstances(pools))
	ctx := coreCtx(t, 20*time.Second)
	const resource = "owned-replaced"
	named := func() map[string]bool {
		t.Helper()
		cl, err := ownedClients(admin)
		require.NoError(t, err, "CLIENT LIST on %s", servers[0])
		ids := map[string]bool{}
		for _, c := range cl {
			if c.name == pools[0].name {
				ids[c.id] = true
			}
		}
		return ids
	}

	require.NoError(t, ownedCycle(ctx, m, resource, 10*time.Second), "Lock+Unlock before the kill")
	killed := named()
	require.NotEmpty(t, killed, "no connection named %q on %s after a Lock: the Manager holds none from the caller pool", pools[0].name, servers[0])
	dials := pools[0].dials.Load()
	for id := range killed {
		_, err := admin.Do("CLIENT", "KILL", "ID", id)
		require.NoError(t, err, "CLIENT KILL ID %s on %s", id, servers[0])
	}

	for i := 1; i <= 3; i++ {
		require.NoError(t, ownedCycle(ctx, m, resource, 10*time.Second),
			"Lock+Unlock %d after the Manager's connection to %s was killed", i, servers[0])
	}
	// Lock returns at quorum: node 0's vote may come a moment later.
	votes := false
	for i := 0; i < 5 && !votes; i++ {
		l, err := m.Lock(ctx, resource, 10*time.Second)
		require.NoError(t, err, "Lock after the connection was replaced")
		start := time.Now()
		for !votes && time.Since(start) < 500*time.Millisecond {
			v, err := redis.String(admin.Do("GET", resource))
			votes = err == nil && v == l.Token()
			time.Sleep(5 * time.Millisecond)
		}
		require.NoError(t, l.Unlock(ctx))
	}
	require.True(t, votes, "after its connection was killed, %s never took a lock's key again (5 tries): the broken connection was not replaced", servers[0])

	require.Greater(t, pools[0].dials.Load(), dials,
		"%s votes again, but the caller pool's Dial was not called: the replacement did not come from the pool", servers[0])
	now := named()
	require.NotEmpty(t, now, "no connection named %q on %s after the replacement", pools[0].name, servers[0])
	for id := range now {
		require.False(t, killed[id], "connection id=%s was killed but is still listed", id)
	}
	cl, err := ownedClients(admin)
	require.NoError(t, err)
	for _, c := range cl {
		require.Equal(t, pools[0].name, c.name,
			"%s has a connection the caller's pool did not dial (%v): the Manager must reach a Pool node only through the pool", servers[0], c)
	}
	coreClose(t, m, 5*time.Second)
}
