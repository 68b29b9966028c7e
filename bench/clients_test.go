package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-redsync/redsync/v4"
	redsyncredis "github.com/go-redsync/redsync/v4/redis"
	redsyncredigo "github.com/go-redsync/redsync/v4/redis/redigo"
	"github.com/gomodule/redigo/redis"

	"github.com/redlock-go/redlock"
)

// The settings every contender gets, so that every difference measured is
// the library's.
const (
	// poolSize is the most connections per node of the redigo pools that
	// redsync and redlock-pool run on; redlock.Addr nodes have no pool (one
	// pipelined connection each). How many connections a library actually
	// opens is part of what is measured.
	poolSize = 64
	// nodeTimeout bounds one command on one node: redlock's
	// WithNodeTimeout, and the redigo pools' connect/read/write timeouts
	// (redsync's only per-command bound: it sends commands without a ctx).
	nodeTimeout = 500 * time.Millisecond
	// lockTTL is every lock's TTL (redsync's default expiry).
	lockTTL = 8 * time.Second
)

// client is one library connected to the benchmark's nodes.
type client interface {
	// lock takes resource for lockTTL, with the attempts the client was
	// opened with and the library's default delay between them.
	lock(ctx context.Context, resource string) (held, error)
	// close closes what the client opened; never the nodePools it was
	// given.
	close()
}

// held is a lock taken by a client.
type held interface {
	unlock(ctx context.Context) error
}

// contender is a library under test and how to open it. open gets the
// redigo pools the benchmark made for this run (see nodePools); a
// contender that reaches the nodes otherwise ignores them.
type contender struct {
	name string
	open func(tb testing.TB, pools nodePools, tries int) client
}

// contenders are the libraries every scenario runs, ours first: redlock on
// redlock.Addr nodes (its own transport), redlock on redlock.Pool over
// redigo pools made exactly as redsync's (see nodePools), and redsync.
var contenders = []contender{
	{"redlock-addr", func(tb testing.TB, _ nodePools, tries int) client {
		return openRedlock(tb, addrInstances(), tries, false)
	}},
	{"redlock-pool", func(tb testing.TB, pools nodePools, tries int) client {
		return openRedlock(tb, pools.instances(), tries, false)
	}},
	{"redsync", func(_ testing.TB, pools nodePools, tries int) client { return openRedsync(pools, tries) }},
}

// fencedContenders are the redlock contenders with WithFencing(); redsync
// has no fencing tokens.
var fencedContenders = []contender{
	{"redlock-addr", func(tb testing.TB, _ nodePools, tries int) client {
		return openRedlock(tb, addrInstances(), tries, true)
	}},
	{"redlock-pool", func(tb testing.TB, pools nodePools, tries int) client {
		return openRedlock(tb, pools.instances(), tries, true)
	}},
}

// redsyncFailFast is redsync with WithFailFast(true), which returns at
// quorum instead of waiting for every node; the paused-node scenario runs
// it too, as information (it is not redsync's default).
var redsyncFailFast = contender{"redsync-failfast", func(_ testing.TB, pools nodePools, tries int) client {
	return openRedsync(pools, tries, redsync.WithFailFast(true))
}}

// nodePools are redigo pools, one per node in addrs' order, with the
// settings redsync gets. Every benchmark run (each call of a benchmark's
// body) makes one set with newNodePools, hands it to the contender it runs
// (redsync and redlock-pool run on it; redlock-addr ignores it) and closes
// it after the contender: libraries never close them. A fresh set per run
// keeps one contender's idle connections out of the next one's
// connection counts and warm-up.
type nodePools []*redis.Pool

func newNodePools() nodePools {
	pools := make(nodePools, len(addrs))
	for i, a := range addrs {
		pools[i] = &redis.Pool{
			MaxIdle:     poolSize,
			MaxActive:   poolSize,
			Wait:        true,
			IdleTimeout: 4 * time.Minute,
			Dial: func() (redis.Conn, error) {
				return redis.Dial("tcp", a,
					redis.DialConnectTimeout(nodeTimeout),
					redis.DialReadTimeout(nodeTimeout),
					redis.DialWriteTimeout(nodeTimeout))
			},
		}
	}
	return pools
}

// instances returns a redlock.Pool instance per pool.
func (ps nodePools) instances() []redlock.Instance {
	insts := make([]redlock.Instance, len(ps))
	for i, p := range ps {
		insts[i] = redlock.Pool(p)
	}
	return insts
}

func (ps nodePools) close() {
	for _, p := range ps {
		_ = p.Close()
	}
}

// addrInstances returns a redlock.Addr instance per node.
func addrInstances() []redlock.Instance {
	insts := make([]redlock.Instance, len(addrs))
	for i, a := range addrs {
		insts[i] = redlock.Addr(a)
	}
	return insts
}

// redlockClient is ours: one Manager over the given instances.
type redlockClient struct {
	m      *redlock.Manager
	fenced bool // opened WithFencing: every Lock must carry a token
}

// redlockHeld is a *redlock.Lock with the held method; the conversion from
// *redlock.Lock allocates nothing.
type redlockHeld redlock.Lock

// errNoFence is a Lock of a fenced Manager without a fencing token.
var errNoFence = errors.New("redlock: fenced Manager returned a lock with Fence() == 0")

// openRedlock opens a Manager over insts with the shared settings, and
// WithFencing when fenced, and preloads the scripts.
func openRedlock(tb testing.TB, insts []redlock.Instance, tries int, fenced bool, extra ...redlock.Option) client {
	opts := append([]redlock.Option{redlock.WithNodeTimeout(nodeTimeout), redlock.WithRetryCount(tries)}, extra...)
	if fenced {
		opts = append(opts, redlock.WithFencing())
	}
	return openManager(tb, insts, fenced, opts...)
}

// openManager opens a Manager over insts with opts and preloads the
// scripts; fenced says whether opts include WithFencing.
func openManager(tb testing.TB, insts []redlock.Instance, fenced bool, opts ...redlock.Option) *redlockClient {
	m, err := redlock.New(insts, opts...)
	if err != nil {
		tb.Fatalf("redlock.New: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.LoadScripts(ctx); err != nil {
		_ = m.Close()
		tb.Fatalf("redlock LoadScripts: %v", err)
	}
	return &redlockClient{m: m, fenced: fenced}
}

func (c *redlockClient) lock(ctx context.Context, resource string) (held, error) {
	l, err := c.m.Lock(ctx, resource, lockTTL)
	if err != nil {
		return nil, err
	}
	if c.fenced && l.Fence() <= 0 {
		_ = l.Unlock(ctx)
		return nil, errNoFence
	}
	return (*redlockHeld)(l), nil
}

func (c *redlockClient) close() { _ = c.m.Close() }

func (h *redlockHeld) unlock(ctx context.Context) error { return (*redlock.Lock)(h).Unlock(ctx) }

// redsyncClient is go-redsync/redsync v4 with its redigo driver over the
// benchmark's nodePools; a Mutex per lock, as redsync is used.
type redsyncClient struct {
	rs   *redsync.Redsync
	opts []redsync.Option
}

// redsyncHeld is a *redsync.Mutex with the held method.
type redsyncHeld redsync.Mutex

// errNotReleased is redsync's Unlock reporting false without an error.
var errNotReleased = errors.New("redsync: unlock: not released on a quorum")

func openRedsync(pools nodePools, tries int, extra ...redsync.Option) client {
	c := &redsyncClient{opts: append([]redsync.Option{redsync.WithExpiry(lockTTL), redsync.WithTries(tries)}, extra...)}
	rp := make([]redsyncredis.Pool, len(pools))
	for i, p := range pools {
		rp[i] = redsyncredigo.NewPool(p)
	}
	c.rs = redsync.New(rp...)
	return c
}

func (c *redsyncClient) lock(ctx context.Context, resource string) (held, error) {
	m := c.rs.NewMutex(resource, c.opts...)
	if err := m.LockContext(ctx); err != nil {
		return nil, err
	}
	return (*redsyncHeld)(m), nil
}

// close has nothing to close: the pools are the benchmark's.
func (c *redsyncClient) close() {}

func (h *redsyncHeld) unlock(ctx context.Context) error {
	ok, err := (*redsync.Mutex)(h).UnlockContext(ctx)
	if err == nil && !ok {
		err = errNotReleased
	}
	return err
}

// runSeq numbers the benchmark runs of this process, so that every run
// locks resources no earlier run used.
var runSeq atomic.Int64

// resourceNames returns n distinct resource names for one benchmark run,
// built before the timer starts so that both libraries get the same
// strings for free.
func resourceNames(scenario string, n int) []string {
	prefix := fmt.Sprintf("bench:%d:%s:", runSeq.Add(1), scenario)
	names := make([]string, n)
	for i := range names {
		names[i] = prefix + fmt.Sprint(i)
	}
	return names
}

// cycleResult is what runCycles measured.
type cycleResult struct {
	elapsed  time.Duration
	lat      []time.Duration // per cycle, in resource order; failed cycles included
	lockLat  []time.Duration // the Lock call of each cycle, likewise
	fails    int64           // cycles whose Lock or Unlock failed
	firstErr error
}

// runCycles runs one Lock+Unlock cycle per name, by workers goroutines (the
// calling goroutine when workers is 1), and times each. It resets the
// benchmark timer at the start and stops it at the end.
func runCycles(b *testing.B, c client, workers int, names []string) cycleResult {
	r := cycleResult{lat: make([]time.Duration, len(names)), lockLat: make([]time.Duration, len(names))}
	var (
		next    atomic.Int64
		fails   atomic.Int64
		errOnce sync.Once
	)
	ctx := context.Background()
	work := func() {
		for {
			i := next.Add(1) - 1
			if i >= int64(len(names)) {
				return
			}
			t0 := time.Now()
			h, err := c.lock(ctx, names[i])
			r.lockLat[i] = time.Since(t0)
			if err == nil {
				err = h.unlock(ctx)
			}
			r.lat[i] = time.Since(t0)
			if err != nil {
				fails.Add(1)
				errOnce.Do(func() { r.firstErr = err })
			}
		}
	}
	b.ResetTimer()
	b.StartTimer() // warm stopped it
	start := time.Now()
	if workers == 1 {
		work()
	} else {
		var wg sync.WaitGroup
		for range workers {
			wg.Add(1)
			go func() { defer wg.Done(); work() }()
		}
		wg.Wait()
	}
	r.elapsed = time.Since(start)
	b.StopTimer()
	r.fails = fails.Load()
	return r
}

// warm runs a few cycles at the given parallelism before measuring, so
// that pools hold connections and scripts are cached on every node. All
// nodes must be up.
func warm(b *testing.B, c client, workers int) {
	r := runCycles(b, c, workers, resourceNames("warm", 4*workers+16))
	if r.fails > 0 {
		b.Fatalf("warm-up: %d cycles failed, first: %v", r.fails, r.firstErr)
	}
}
