// Package redlock implements the Redlock distributed-lock algorithm over N
// independent Redis masters, on redigo.
//
// A Manager holds one connection pool per node. Lock sends the acquire
// script to every node at once and succeeds when a quorum (N/2+1) took the
// lock within its validity: ttl minus the time spent minus a clock-drift
// margin. Every failed attempt releases what it may have taken on every
// node. Extend and Unlock only touch keys that hold the lock's token; Extend
// never re-creates a key that lapsed.
//
// Every atomic operation on a node is one of the Lua scripts in lua/*.lua
// (see Scripts), sent with EVALSHA. The key on each node is the resource
// name itself and the value is the lock's token, as in aioredlock and
// redsync.
//
//	m, err := redlock.New([]redlock.Instance{
//		redlock.Addr("localhost:6379"),
//		redlock.Endpoint{Addr: "localhost:6379", DB: 1},
//		redlock.URL("redis://localhost:6379/2"),
//	})
//	lock, err := m.Lock(ctx, "resource_name", 10*time.Second)
//	...
//	err = lock.Unlock(ctx)
package redlock

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gomodule/redigo/redis"
)

// Defaults, as in aioredlock where it has the setting.
const (
	DefaultRetryCount    = 3                      // total attempts per Lock
	DefaultRetryDelayMin = 100 * time.Millisecond // shortest wait between attempts
	DefaultRetryDelayMax = 300 * time.Millisecond // longest wait between attempts
	DefaultDriftFactor   = 0.01                   // drift = ttl*factor + 2ms
	DefaultTTL           = 10 * time.Second       // aioredlock's internal_lock_timeout
	DefaultNodeTimeout   = 500 * time.Millisecond // bound on one command on one node

	// MaxResourceLen is the longest resource name accepted, in bytes.
	MaxResourceLen = 64 << 10

	// MaxInstances is the most nodes a Manager takes (Redlock deployments
	// use 3, 5 or 7).
	MaxInstances = 64

	driftFixed = 2 * time.Millisecond
)

// config is what the options set; New validates it.
type config struct {
	retryCount   int
	retryMin     time.Duration
	retryMax     time.Duration
	drift        float64
	defaultTTL   time.Duration
	nodeTimeout  time.Duration
	fencing      bool
	restartGuard bool
}

// Option configures a Manager. Options are checked by New: an invalid value
// makes New fail with an error wrapping ErrInvalidArgument.
type Option func(*config)

// WithRetryCount sets the TOTAL number of attempts a Lock call makes
// (aioredlock's retry_count). Default 3. n < 1 is invalid.
func WithRetryCount(n int) Option { return func(c *config) { c.retryCount = n } }

// WithRetryDelay sets the wait between two attempts of a Lock call: uniform
// jitter in [min, max] (aioredlock's retry_delay_min/max). Default
// 100ms..300ms. Negative values or min > max are invalid.
func WithRetryDelay(min, max time.Duration) Option {
	return func(c *config) { c.retryMin, c.retryMax = min, max }
}

// WithDriftFactor sets the clock-drift allowance: a lock's validity is
// ttl − elapsed − (ttl·f + 2ms). Default 0.01. f < 0 is invalid.
func WithDriftFactor(f float64) Option { return func(c *config) { c.drift = f } }

// WithDefaultTTL sets the TTL used when a call passes ttl == 0 (aioredlock's
// internal_lock_timeout). Default 10s. d < 0 is invalid; 0 keeps the default.
func WithDefaultTTL(d time.Duration) Option { return func(c *config) { c.defaultTTL = d } }

// WithNodeTimeout bounds every command sent to a node, including getting a
// connection and dialling it. A node that does not answer in time counts as
// a failed vote; the call itself returns as soon as the quorum is decided.
// Default 500ms. d < 0 is invalid; 0 keeps the default.
func WithNodeTimeout(d time.Duration) Option { return func(c *config) { c.nodeTimeout = d } }

func (c *config) validate() error {
	switch {
	case c.retryCount < 1:
		return invalidf("retry count %d: want at least 1 attempt", c.retryCount)
	case c.retryMin < 0 || c.retryMax < 0:
		return invalidf("negative retry delay")
	case c.retryMin > c.retryMax:
		return invalidf("retry delay min %v > max %v", c.retryMin, c.retryMax)
	case c.drift < 0 || c.drift != c.drift || c.drift >= 1:
		return invalidf("drift factor %v: want 0 <= f < 1", c.drift)
	case c.defaultTTL < 0:
		return invalidf("negative default TTL %v", c.defaultTTL)
	case c.nodeTimeout < 0:
		return invalidf("negative node timeout %v", c.nodeTimeout)
	}
	if c.defaultTTL == 0 {
		c.defaultTTL = DefaultTTL
	}
	if c.nodeTimeout == 0 {
		c.nodeTimeout = DefaultNodeTimeout
	}
	return nil
}

// Manager takes, extends and releases locks over a fixed set of nodes. It is
// safe for concurrent use. Close it when done: it waits for background work
// (late node replies, cleanups, Do's extensions) and closes the pools it
// owns.
type Manager struct {
	nodes  []*node
	quorum int
	cfg    config

	mu      sync.RWMutex   // protects closed; held while adding to wg
	closed  bool           // set once by Close
	closing chan struct{}  // closed by Close
	wg      sync.WaitGroup // every call in progress and every goroutine it started
	maxTTL  atomic.Int64   // longest ttl used, for the restart guard

	base       context.Context // for background dials; cancelled by Close
	cancelBase context.CancelFunc
	notify     *notifier // wakes Lock calls waiting for a release
}

// noteTTL records ttl for the restart guard's quarantine length.
func (m *Manager) noteTTL(ttl time.Duration) {
	for {
		cur := m.maxTTL.Load()
		if int64(ttl) <= cur || m.maxTTL.CompareAndSwap(cur, int64(ttl)) {
			return
		}
	}
}

// New returns a Manager for the given nodes. With no instances it uses
// Addr("localhost:6379"), as aioredlock. It validates every instance and
// option and fails with an error wrapping ErrInvalidArgument (which never
// contains a password); it does not contact the servers: connections are
// made on first use.
func New(instances []Instance, opts ...Option) (*Manager, error) {
	cfg := config{
		retryCount:   DefaultRetryCount,
		retryMin:     DefaultRetryDelayMin,
		retryMax:     DefaultRetryDelayMax,
		drift:        DefaultDriftFactor,
		defaultTTL:   DefaultTTL,
		restartGuard: true,
	}
	for _, o := range opts {
		if o == nil {
			return nil, invalidf("nil option")
		}
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if len(instances) == 0 {
		instances = []Instance{Addr("localhost:6379")}
	}
	if len(instances) > MaxInstances {
		return nil, invalidf("%d instances: at most %d", len(instances), MaxInstances)
	}
	m := &Manager{cfg: cfg, quorum: len(instances)/2 + 1, closing: make(chan struct{})}
	m.base, m.cancelBase = context.WithCancel(context.Background())
	m.maxTTL.Store(int64(cfg.defaultTTL))
	for i, inst := range instances {
		if inst == nil {
			m.shutdownNodes()
			return nil, invalidf("instance %d is nil", i)
		}
		n, err := inst.newNode()
		if err != nil {
			m.shutdownNodes()
			return nil, fmt.Errorf("instance %d: %w", i, err)
		}
		if cfg.restartGuard {
			n.watch(func() time.Duration { return time.Duration(m.maxTTL.Load()) })
		}
		if n.owned {
			n.mux = newMux(m.base, cfg.nodeTimeout, n.pool.DialContext)
		}
		m.nodes = append(m.nodes, n)
	}
	m.notify = newNotifier(m.base, m.nodes)
	return m, nil
}

// Quorum returns how many nodes must agree: N/2+1.
func (m *Manager) Quorum() int { return m.quorum }

// Nodes returns the nodes' addresses, passwords redacted, in order.
func (m *Manager) Nodes() []string {
	out := make([]string, len(m.nodes))
	for i, n := range m.nodes {
		out[i] = n.name
	}
	return out
}

// Close stops the Manager: later calls fail with ErrClosed, Do's automatic
// extensions stop (cancelling their functions' ctx with ErrLockLost), and
// Close waits for the work in progress — bounded by the node timeout — before
// closing the pools it owns (never a caller's Pool). It is aioredlock's
// destroy(). Locks still held are not released: they expire with their TTL.
// Close is idempotent.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	close(m.closing)
	m.mu.Unlock()
	m.wg.Wait()
	return m.shutdownNodes()
}

func (m *Manager) shutdownNodes() error {
	m.cancelBase()
	if m.notify != nil {
		m.notify.close()
	}
	var errs []error
	for _, n := range m.nodes {
		errs = append(errs, n.shutdown())
	}
	return errors.Join(errs...)
}

// enter registers a call in progress; the caller must call m.wg.Done.
func (m *Manager) enter() error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return ErrClosed
	}
	m.wg.Add(1)
	return nil
}

// LoadScripts sends SCRIPT LOAD for every script to every node and checks
// the digests. It is optional: every connection the Manager opens loads the
// scripts itself, and a node that answers NOSCRIPT anyway (after a SCRIPT
// FLUSH, or through a caller-owned Pool) gets the full script once (see
// Scripts). Use it to warm caller-owned Pools up or to check, before
// locking, that every node is reachable and runs the scripts redlock
// expects. It fails, joining the per-node errors, if any node could not
// load them or returned a digest other than Script.SHA1.
func (m *Manager) LoadScripts(ctx context.Context) error {
	loads, err := m.LoadScriptsReport(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, l := range loads {
		switch {
		case l.Err != nil:
			errs = append(errs, NodeError{Node: l.Node, Err: fmt.Errorf("script %s: %w", l.Script, l.Err)})
		case l.SHA1 != scriptRegistry[l.index].SHA1:
			errs = append(errs, NodeError{Node: l.Node, Err: fmt.Errorf("script %s: node returned digest %s, want %s",
				l.Script, l.SHA1, scriptRegistry[l.index].SHA1)})
		}
	}
	return errors.Join(errs...)
}

// ScriptLoad is one node's answer to SCRIPT LOAD of one script.
type ScriptLoad struct {
	Node   string // the node's address, password redacted
	Script string // the script's name (Script.Name)
	SHA1   string // the digest the node returned; "" when Err is set
	Err    error  // the node could not be reached or refused the script

	index int // into scriptRegistry
}

// LoadScriptsReport is LoadScripts that reports what every node answered:
// one ScriptLoad per node and script, in node order, then in Scripts()
// order, for auditing (compare SHA1 with Script.SHA1). Each node gets the
// node timeout. Only a closed Manager is an error.
func (m *Manager) LoadScriptsReport(ctx context.Context) ([]ScriptLoad, error) {
	if err := m.enter(); err != nil {
		return nil, err
	}
	defer m.wg.Done()
	k := len(scriptRegistry)
	out := make([]ScriptLoad, len(m.nodes)*k)
	m.eachNode(ctx, func(ctx context.Context, i int, n *node) {
		loads := out[i*k : (i+1)*k]
		for j, sc := range scriptRegistry {
			loads[j] = ScriptLoad{Node: n.name, Script: sc.Name, index: j}
		}
		err := n.do(ctx, func(c redis.Conn) error {
			for j := range loads {
				sum, err := redis.String(redis.DoContext(c, ctx, "SCRIPT", "LOAD", scriptRegistry[j].Source))
				if err != nil {
					return err
				}
				loads[j].SHA1 = sum
			}
			return nil
		})
		for j := range loads {
			if err != nil && loads[j].SHA1 == "" {
				loads[j].Err = err
			}
		}
	})
	return out, nil
}

// eachNode runs fn on every node at once, each within the node timeout,
// and waits for all of them (for calls that want every node's answer).
func (m *Manager) eachNode(ctx context.Context, fn func(ctx context.Context, i int, n *node)) {
	var wg sync.WaitGroup
	for i, n := range m.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nctx, cancel := context.WithTimeout(ctx, m.cfg.nodeTimeout)
			defer cancel()
			fn(nctx, i, n)
		}()
	}
	wg.Wait()
}

// LockOption configures one Lock or LockMulti call.
type LockOption func(*lockOptions)

type lockOptions struct {
	token string
}

// WithToken makes the lock use the given token instead of 128 random bits,
// e.g. to take over a lock across a process restart. The token must be
// unique to its holder: two holders with one token share the lock.
//
// Every attempt of a Lock call uses this one token, so before it retries,
// Lock waits until the failed attempt has released the token on every node
// (at most twice the node timeout, or until ctx is done). After a call
// returns, its background work (a failed Lock's release, Unlock on slow
// nodes) may still release the token for up to twice the node timeout:
// taking the same token again sooner may lose the new lock on those nodes.
func WithToken(token string) LockOption { return func(o *lockOptions) { o.token = token } }

// applyLockOptions applies opts; without options nothing escapes to the
// heap (the common Lock call allocates no lockOptions).
func applyLockOptions(opts []LockOption) lockOptions {
	if len(opts) == 0 {
		return lockOptions{}
	}
	o := new(lockOptions)
	for _, opt := range opts {
		if opt != nil {
			opt(o)
		}
	}
	return *o
}

// Lock acquires resource for ttl (0: the default TTL) and returns the held
// Lock. It makes up to the retry count of attempts, waiting a jittered retry
// delay in between, and stops early when ctx is done. Every failed attempt
// releases the token on all nodes.
//
// On failure the error matches ErrNotAcquired and is (or wraps) a
// *QuorumError. It also matches ErrLocked when at least one node reported
// another holder, ErrUnavailable when at least one node failed, had not
// answered when ctx ended, or the quorum came too late — both when the last
// attempt met both — and ctx.Err() when ctx ended. The QuorumError is the
// last attempt's, or, when ctx cut that attempt short, the last one decided
// before it. Invalid input (empty or oversized resource, ttl < 0, a ttl that
// rounds to 0ms) matches ErrInvalidArgument. After Close: ErrClosed.
func (m *Manager) Lock(ctx context.Context, resource string, ttl time.Duration, opts ...LockOption) (*Lock, error) {
	return m.lock(ctx, []string{resource}, ttl, opts)
}

// LockMulti acquires several resources as one lock, all or nothing on each
// node: a node votes yes only if it took every key. Errors as Lock.
func (m *Manager) LockMulti(ctx context.Context, resources []string, ttl time.Duration, opts ...LockOption) (*Lock, error) {
	return m.lock(ctx, append([]string(nil), resources...), ttl, opts)
}

// lock is Lock and LockMulti; keys is the caller's copy.
func (m *Manager) lock(ctx context.Context, keys []string, ttl time.Duration, opts []LockOption) (*Lock, error) {
	resources := keys
	o := applyLockOptions(opts)
	ttl, err := m.checkCall(resources, ttl)
	if err == nil && m.cfg.fencing && len(resources) > 1 {
		err = invalidf("WithFencing supports single-resource locks, got %d resources", len(resources))
	}
	custom := o.token != ""
	if err == nil && !custom {
		o.token, err = newToken()
	}
	if err == nil && len(o.token) > MaxResourceLen {
		err = invalidf("token over %d bytes", MaxResourceLen)
	}
	if err != nil {
		return nil, errors.Join(ErrNotAcquired, err)
	}
	if err := m.enter(); err != nil {
		return nil, errors.Join(ErrNotAcquired, err)
	}
	defer m.wg.Done()
	m.noteTTL(ttl)
	var last *QuorumError
	token := o.token
	var w *waiter // set once the resource was found held by another
	defer func() {
		if w != nil {
			w.done()
		}
	}()
	for attempt := 1; ; attempt++ {
		l, qe, r := m.tryLock(ctx, keys, token, ttl)
		if qe == nil {
			return l, nil
		}
		if last == nil || !errors.Is(qe, errNoAnswerYet) {
			// An attempt cut short by ctx says less than a decided one
			// before it (contention, node errors): keep that one.
			last = qe
		}
		if attempt >= m.cfg.retryCount || ctx.Err() != nil {
			break
		}
		delay := m.retryDelay()
		if w == nil && errors.Is(qe, ErrLocked) {
			// Contention: listen for the holder's release, then retry at
			// once, so that a release between the attempt and the
			// subscription is not missed.
			w = m.notify.wait(keys)
			if !m.sleep(ctx, m.cfg.nodeTimeout, w.ready) {
				break
			}
			delay = 0
		}
		var wake chan struct{}
		if w != nil {
			wake = w.wake
		}
		if delay > 0 && !m.sleep(ctx, delay, wake) {
			break
		}
		// The failed attempt is still releasing its token in the background
		// on slow nodes; that release must never delete the next attempt's
		// keys. A random token is fresh per attempt; a caller's token waits
		// for the release to end.
		if !custom {
			if token, err = newToken(); err != nil {
				last.extra = append(last.extra, err)
				break
			}
		} else if !m.waitRound(ctx, r) {
			break
		}
	}
	if err := ctx.Err(); err != nil {
		last.extra = append(last.extra, err)
	}
	return nil, last
}

// checkCall validates resources and ttl and returns the effective ttl.
func (m *Manager) checkCall(resources []string, ttl time.Duration) (time.Duration, error) {
	if len(resources) == 0 {
		return 0, invalidf("no resource")
	}
	seen := make(map[string]struct{}, len(resources))
	for _, r := range resources {
		if r == "" {
			return 0, invalidf("empty resource name")
		}
		if len(r) > MaxResourceLen {
			return 0, invalidf("resource name of %d bytes: the limit is %d", len(r), MaxResourceLen)
		}
		if _, dup := seen[r]; dup {
			return 0, invalidf("resource %q given twice", r)
		}
		seen[r] = struct{}{}
	}
	if ttl < 0 {
		return 0, invalidf("negative ttl %v", ttl)
	}
	if ttl == 0 {
		ttl = m.cfg.defaultTTL
	}
	if ttl < time.Millisecond {
		return 0, invalidf("ttl %v: Redis expiries are whole milliseconds", ttl)
	}
	return ttl, nil
}

func newToken() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("redlock: reading random token: %w", err)
	}
	var out [22]byte // base64url of 16 bytes, unpadded
	base64.RawURLEncoding.Encode(out[:], b[:])
	return string(out[:]), nil
}

func (m *Manager) retryDelay() time.Duration {
	lo, hi := m.cfg.retryMin, m.cfg.retryMax
	if hi <= lo {
		return lo
	}
	return lo + mrand.N(hi-lo+1)
}

// sleep waits d or until wake fires; it returns false if ctx ended or the
// Manager is closing first.
func (m *Manager) sleep(ctx context.Context, d time.Duration, wake <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-wake:
		return true
	case <-ctx.Done():
		return false
	case <-m.closing:
		return false
	}
}

// drift is the clock-drift allowance for a ttl.
func (m *Manager) drift(ttl time.Duration) time.Duration {
	return time.Duration(float64(ttl)*m.cfg.drift) + driftFixed
}

// tryLock is one attempt of the algorithm.
func (m *Manager) tryLock(ctx context.Context, keys []string, token string, ttl time.Duration) (*Lock, *QuorumError, *round) {
	start := time.Now()
	ttlMS := ttl.Milliseconds()
	fenced := m.cfg.fencing
	var aop *asyncOp
	if !fenced {
		aop = &asyncOp{script: &acquireScript, args: scriptArgs(&acquireScript, keys, token, ttlMS), decode: voteAcquire, guarded: true}
	}
	var op func(ctx context.Context, c redis.Conn) nodeVote
	var cleanup func(ctx context.Context, n *node, v nodeVote)
	if fenced || !m.allAsync(nil) {
		op = func(ctx context.Context, c redis.Conn) nodeVote {
			if fenced {
				return acquireFenced(ctx, c, keys[0], token, ttlMS)
			}
			return voteAcquire(evalAcquire(ctx, c, keys, token, ttlMS))
		}
		cleanup = func(ctx context.Context, n *node, v nodeVote) {
			if errors.Is(v.err, ErrLocked) {
				return // the script changed nothing on this node
			}
			// The key may be set even if the reply was lost: release it.
			_ = n.do(ctx, func(c redis.Conn) error {
				_, err := evalRelease(ctx, c, keys, token)
				return err
			})
		}
	}
	r := m.fanoutAfter(ctx, true, nil, aop, op, cleanup)

	var fence int64
	failed := r // the round that decides the error
	if fenced && r.ok >= m.quorum {
		for _, v := range r.votes {
			if v.ok && v.counter > fence {
				fence = v.counter
			}
		}
		fence++
		if f := m.fence(ctx, keys[0], token, fence); f.ok < m.quorum {
			failed = f
		}
	}
	validity := ttl - time.Since(start) - m.drift(ttl)
	success := failed == r && r.ok >= m.quorum && validity > 0
	if !success && !fenced {
		r.release = scriptArgs(&releaseScript, keys, token) // for the async nodes (see decide)
	}
	r.decide(success)
	if success {
		return &Lock{m: m, keys: keys, token: token, ttl: ttl, fenceToken: fence, acquired: r, boxed: boxedArgs(aop), until: start.Add(ttl - m.drift(ttl))}, nil, r
	}
	qe := failed.quorumError("lock", keys[0], ErrNotAcquired)
	if failed.ok >= m.quorum {
		qe.extra = append(qe.extra, errTooSlow)
	}
	return nil, qe, r
}

// nodeVote is one node's answer in a round.
type nodeVote struct {
	node    int
	ok      bool
	err     error  // nil when ok; ErrLocked, ErrNotHeld, or a node failure
	pttl    int64  // acquire: the foreign holder's PTTL; inspect: the key's PTTL
	counter int64  // acquire_fenced: the node's fencing counter
	holder  string // inspect: the token found
}

// round is one fan-out to every node.
type round struct {
	m        *Manager
	votes    []nodeVote // answers received before the quorum was decided
	ok       int        // votes with ok
	decided  chan struct{}
	success  atomic.Bool
	done     sync.WaitGroup     // every node's goroutine, cleanup included
	finished atomic.Uint64      // bit i: node i's command was queued or its attempt ended (see fanoutAfter)
	cancel   context.CancelFunc // releases the round's deadline once every node finished
	left     atomic.Int32       // goroutines still running their command
	ch       chan nodeVote      // votes, buffered for every node
	async    uint64             // nodes on the asynchronous path (bit i: node i)
	release  []interface{}      // a failed acquire round: release arguments for its async nodes
	cut      error              // the caller's ctx ended before the round was decided
	voteBuf  [5]nodeVote        // votes' array for up to five nodes
}

// waitRound waits until every goroutine of r ended; it returns false if
// ctx ended or the Manager is closing first.
func (m *Manager) waitRound(ctx context.Context, r *round) bool {
	done := make(chan struct{})
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		r.done.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	case <-m.closing:
		return false
	}
}

// fanout runs op on every node at once, each within the node timeout, and
// returns as soon as a quorum voted ok or can no longer do so. The other
// nodes finish in the background. If cleanup is not nil, every node's
// goroutine waits for r.decide and, when the round failed, calls cleanup with
// a ctx that survives the caller's cancellation; the caller MUST then call
// r.decide exactly once.
//
// When guarded, the ok vote of a node under the restart guard's quarantine
// is turned into a failed vote (see WithRestartGuard); its write still
// happened.
func (m *Manager) fanout(ctx context.Context, guarded bool, op func(ctx context.Context, c redis.Conn) nodeVote,
	cleanup func(ctx context.Context, n *node, v nodeVote)) *round {
	return m.fanoutAfter(ctx, guarded, nil, nil, op, cleanup)
}

// fanoutAfter is fanout with per-node ordering, and with the asynchronous
// path (see async.go) when aop is not nil. If after is not nil, the command
// for node i is sent only once after.finished[i] is set: Unlock and Extend
// pass the lock's acquire round, so that their command reaches a node after
// the lock's own acquire, even when that acquire was a straggler. (On one
// node, commands run in the order they are queued: once the acquire was
// queued, or its attempt ended, it runs before us or never.) r.finished
// records that for every round.
func (m *Manager) fanoutAfter(ctx context.Context, guarded bool, after *round, aop *asyncOp,
	op func(ctx context.Context, c redis.Conn) nodeVote, cleanup func(ctx context.Context, n *node, v nodeVote)) *round {
	r := &round{m: m}
	if len(m.nodes) <= len(r.voteBuf) {
		r.votes = r.voteBuf[:0] // one allocation less per round
	} else {
		r.votes = make([]nodeVote, 0, len(m.nodes))
	}
	r.ch = make(chan nodeVote, len(m.nodes))
	goroutines := len(m.nodes)
	for i, n := range m.nodes {
		if aop != nil && n.mux != nil && n.sentinel == nil && (after == nil || op == nil || after.isFinished(i)) {
			r.submit(i, n, aop)
			r.async |= 1 << i
			goroutines--
			r.finished.Add(1 << i) // queued: whatever is queued later runs after it (each bit is set once)
		}
	}
	if goroutines > 0 && cleanup != nil {
		r.decided = make(chan struct{})
	}
	if goroutines > 0 {
		// One deadline for the goroutines. It is not cancelled with the
		// caller's ctx: a straggler still reaches its node (and a failed
		// round's cleanup still runs), bounded by the node timeout; the
		// caller stops waiting at once (below). The last one releases it.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.nodeTimeout)
		r.cancel = cancel
		r.left.Store(int32(goroutines))
		for i, n := range m.nodes {
			if r.async&(1<<i) == 0 {
				m.wg.Add(1)
				r.done.Add(1)
				go r.run(ctx, rctx, i, n, guarded, after, op, cleanup, r.ch) // a call, not a closure: no allocation
			}
		}
	}
	var deadline <-chan time.Time
	if r.async != 0 {
		t := getTimer(m.cfg.nodeTimeout)
		defer putTimer(t)
		deadline = t.C
	}
	failed := 0
	var answered uint64
	for range m.nodes {
		var v nodeVote
		select {
		case v = <-r.ch:
		case <-ctx.Done():
			r.cut = ctx.Err() // the caller adds ctx.Err() to its error
			return r
		case <-deadline:
			// The silent async nodes timed out together; count them in node
			// order until the quorum is out of reach, as if one by one.
			for i := range m.nodes {
				if r.async&(1<<i) != 0 && answered&(1<<i) == 0 && failed <= len(m.nodes)-m.quorum {
					r.votes = append(r.votes, nodeVote{node: i, err: errNoReply})
					failed++
				}
			}
			return r
		}
		if v.node < 64 {
			answered |= 1 << v.node
		}
		r.votes = append(r.votes, v)
		if v.ok {
			r.ok++
		} else {
			failed++
		}
		if r.ok >= m.quorum || failed > len(m.nodes)-m.quorum {
			break
		}
	}
	return r
}

// run is node i's part of a round (see fanoutAfter).
func (r *round) run(ctx, rctx context.Context, i int, n *node, guarded bool, after *round,
	op func(ctx context.Context, c redis.Conn) nodeVote, cleanup func(ctx context.Context, n *node, v nodeVote), ch chan<- nodeVote) {
	m := r.m
	defer m.wg.Done()
	defer r.done.Done()
	var v nodeVote
	if after != nil {
		v.err = after.waitFinished(rctx, i)
	}
	switch {
	case v.err != nil: // the lock's acquire on this node is still under way
	case n.mux != nil && n.sentinel == nil:
		v = op(rctx, muxHandle{n.mux})
	default:
		if err := n.do(rctx, func(c redis.Conn) error { v = op(rctx, c); return nil }); err != nil {
			v = nodeVote{err: err}
		}
	}
	r.finished.Add(1 << i) // each bit is set once: by submit or here
	if r.left.Add(-1) == 0 {
		r.cancel()
	}
	v.node = i
	if guarded && v.err == nil && n.guard.quarantined() {
		v.ok, v.err = false, errRestarted
	}
	ch <- v
	if cleanup == nil {
		return
	}
	<-r.decided
	if !r.success.Load() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.nodeTimeout)
		cleanup(cctx, n, v)
		cancel()
	}
}

// timers recycles the rounds' deadline timers.
var timers sync.Pool

func getTimer(d time.Duration) *time.Timer {
	if t, ok := timers.Get().(*time.Timer); ok {
		t.Reset(d)
		return t
	}
	return time.NewTimer(d)
}

func putTimer(t *time.Timer) {
	if !t.Stop() {
		select { // drain a fired timer (needed before Go 1.23 timer semantics)
		case <-t.C:
		default:
		}
	}
	timers.Put(t)
}

// allAsync reports whether every node of a round would take the
// asynchronous path, so that the goroutine path's closures need not exist.
func (m *Manager) allAsync(after *round) bool {
	for i, n := range m.nodes {
		if n.mux == nil || n.sentinel != nil || (after != nil && !after.isFinished(i)) {
			return false
		}
	}
	return true
}

func (r *round) isFinished(i int) bool { return r.finished.Load()&(1<<i) != 0 }

// waitFinished waits until node i's attempt of r ended, or ctx does. It
// polls: the wait only happens when an Unlock or Extend overtakes the
// lock's own straggling acquire, which is rare and short.
func (r *round) waitFinished(ctx context.Context, i int) error {
	for !r.isFinished(i) {
		if err := ctx.Err(); err != nil {
			return err
		}
		time.Sleep(100 * time.Microsecond)
	}
	return nil
}

// decide publishes the outcome to the nodes' goroutines (see fanout).
func (r *round) decide(success bool) {
	r.success.Store(success)
	if r.decided != nil {
		close(r.decided)
	}
	if success || r.release == nil {
		return
	}
	// The goroutine nodes clean up themselves (see run). On the async
	// nodes the release is queued behind the acquire on the same
	// connection, so it runs after it even if the acquire's reply is late.
	for i, n := range r.m.nodes {
		if r.async&(1<<i) == 0 || r.refused(i) {
			continue
		}
		releaseAsync(n.mux, &r.m.wg, r.release)
	}
}

// refused reports whether node i answered that another token holds the
// key: its acquire changed nothing and needs no release.
func (r *round) refused(i int) bool {
	for _, v := range r.votes {
		if v.node == i {
			return errors.Is(v.err, ErrLocked)
		}
	}
	return false
}

// quorumError builds the error for a failed round: one NodeError per node
// that voted against, in node order. When the caller's ctx ended first, the
// nodes that had not answered count as unavailable, so that a failed Lock
// still says why.
func (r *round) quorumError(op, resource string, sentinel error) *QuorumError {
	qe := &QuorumError{Op: op, Resource: resource, Needed: r.m.quorum, Votes: r.ok, extra: []error{sentinel}}
	sort.Slice(r.votes, func(i, j int) bool { return r.votes[i].node < r.votes[j].node })
	next := 0 // r.votes[next] is the first vote of node i or later
	for i, n := range r.m.nodes {
		switch {
		case next < len(r.votes) && r.votes[next].node == i:
			if v := r.votes[next]; !v.ok && v.err != nil {
				qe.Nodes = append(qe.Nodes, NodeError{Node: n.name, Err: v.err})
			}
			next++
		case r.cut != nil:
			qe.Nodes = append(qe.Nodes, NodeError{Node: n.name, Err: fmt.Errorf("%w: %w", errNoAnswerYet, r.cut)})
		}
	}
	return qe
}

// Extend resets the lock's expiry to ttl (0: the ttl it was taken with) on
// every node that still holds its token, and succeeds when a quorum did
// within the new validity; Until moves accordingly. It never re-creates a key
// that lapsed or was taken by another holder. On failure the lock becomes
// invalid (Valid reports false) and the error matches ErrNotHeld (and
// ErrUnavailable when nodes failed) and is a *QuorumError; a released lock
// fails at once with ErrNotHeld. A nil lock or ttl < 0 matches
// ErrInvalidArgument.
func (m *Manager) Extend(ctx context.Context, l *Lock, ttl time.Duration) error {
	if l == nil {
		return invalidf("nil lock")
	}
	if ttl == 0 {
		ttl = l.ttl
	}
	ttl, err := m.checkCall(l.keys, ttl)
	if err != nil {
		return err
	}
	if l.m != m {
		return invalidf("lock belongs to another Manager")
	}
	if l.isReleased() {
		return fmt.Errorf("%w: %q was unlocked", ErrNotHeld, l.keys[0])
	}
	if err := m.enter(); err != nil {
		return err
	}
	defer m.wg.Done()
	m.noteTTL(ttl)
	start := time.Now()
	ttlMS := ttl.Milliseconds()
	aop := &asyncOp{script: &extendScript, args: l.args(&extendScript, ttlMS), decode: voteHeld1, guarded: true}
	var op func(ctx context.Context, c redis.Conn) nodeVote
	if !m.allAsync(l.acquired) {
		op = func(ctx context.Context, c redis.Conn) nodeVote {
			return voteHeld1(evalExtend(ctx, c, l.keys, l.token, ttlMS))
		}
	}
	r := m.fanoutAfter(ctx, true, l.acquired, aop, op, nil)
	validity := ttl - time.Since(start) - m.drift(ttl)
	if r.ok >= m.quorum && validity > 0 {
		l.extended(start.Add(ttl - m.drift(ttl)))
		return nil
	}
	l.invalidate()
	qe := r.quorumError("extend", l.keys[0], ErrNotHeld)
	if r.ok >= m.quorum {
		qe.extra = append(qe.extra, errTooSlow)
	}
	if err := ctx.Err(); err != nil {
		qe.extra = append(qe.extra, err)
	}
	return qe
}

// Unlock releases the lock: every node deletes the keys that hold its
// token, and no other key. The lock is invalid from the start of the call.
// It returns when a quorum confirmed the release (the other nodes finish in
// the background, within the node timeout). If fewer than a quorum held the
// token (it expired or was taken over), the error matches ErrNotHeld and is
// a *QuorumError. A nil lock matches ErrInvalidArgument.
func (m *Manager) Unlock(ctx context.Context, l *Lock) error {
	if l == nil {
		return invalidf("nil lock")
	}
	if l.m != m {
		return invalidf("lock belongs to another Manager")
	}
	if err := m.enter(); err != nil {
		return err
	}
	defer m.wg.Done()
	l.release()
	vote := voteHeld(int64(len(l.keys)))
	aop := &asyncOp{script: &releaseScript, args: l.args(&releaseScript, -1), decode: vote}
	var op func(ctx context.Context, c redis.Conn) nodeVote
	if !m.allAsync(l.acquired) {
		op = func(ctx context.Context, c redis.Conn) nodeVote {
			return vote(evalRelease(ctx, c, l.keys, l.token))
		}
	}
	r := m.fanoutAfter(ctx, false, l.acquired, aop, op, nil)
	if r.ok >= m.quorum {
		return nil
	}
	qe := r.quorumError("unlock", l.keys[0], ErrNotHeld)
	if err := ctx.Err(); err != nil {
		qe.extra = append(qe.extra, err)
	}
	return qe
}

// inspect asks every node who holds resource. It returns the round after
// the quorum is decided for want (see IsLocked and GetLock).
func (m *Manager) inspect(ctx context.Context, resource string, want func(holder string) bool) *round {
	return m.fanout(ctx, true, func(ctx context.Context, c redis.Conn) nodeVote {
		reply, err := evalInspect(ctx, c, resource)
		if err != nil {
			return nodeVote{err: err}
		}
		holder, pttl, err := decodeInspect(reply)
		if err != nil {
			return nodeVote{err: err}
		}
		return nodeVote{ok: want(holder), holder: holder, pttl: pttl}
	}, nil)
}

// NodeState is what one node says about a resource (see Inspect).
type NodeState struct {
	Node   string        // the node's address, password redacted
	Holder string        // the token stored in the key; "" when free
	TTL    time.Duration // remaining time to live; -1 without expiry; 0 when free
	Err    error         // the node could not be asked; the other fields are zero
}

// Inspect asks every node, at once and each within the node timeout, who
// holds resource and for how long: for status pages and the CLI. It waits
// for every node (unlike the locking calls, which stop at the quorum) and
// changes nothing. Only invalid input is an error.
func (m *Manager) Inspect(ctx context.Context, resource string) ([]NodeState, error) {
	if _, err := m.checkCall([]string{resource}, time.Millisecond); err != nil {
		return nil, err
	}
	if err := m.enter(); err != nil {
		return nil, err
	}
	defer m.wg.Done()
	out := make([]NodeState, len(m.nodes))
	m.eachNode(ctx, func(ctx context.Context, i int, n *node) {
		st := NodeState{Node: n.name}
		st.Err = n.do(ctx, func(c redis.Conn) error {
			reply, err := evalInspect(ctx, c, resource)
			if err != nil {
				return err
			}
			holder, pttl, err := decodeInspect(reply)
			switch {
			case err != nil:
				return err
			case pttl == -1:
				st.TTL = -1
			case pttl > 0:
				st.TTL = time.Duration(pttl) * time.Millisecond
			}
			st.Holder = holder
			return nil
		})
		out[i] = st
	})
	return out, nil
}

// IsLocked reports whether a quorum of nodes holds resource, whoever the
// holder is (aioredlock's is_locked). It returns false when enough nodes
// answered that the key is free; when too many nodes failed to tell either
// way it returns an error matching ErrUnavailable (a *QuorumError with Op
// "is_locked").
func (m *Manager) IsLocked(ctx context.Context, resource string) (bool, error) {
	if _, err := m.checkCall([]string{resource}, time.Millisecond); err != nil {
		return false, err
	}
	if err := m.enter(); err != nil {
		return false, err
	}
	defer m.wg.Done()
	r := m.inspect(ctx, resource, func(holder string) bool { return holder != "" })
	if r.ok >= m.quorum {
		return true, nil
	}
	free := 0
	for _, v := range r.votes {
		if v.err == nil && !v.ok {
			free++
		}
	}
	if free > len(m.nodes)-m.quorum {
		return false, nil
	}
	qe := r.quorumError("is_locked", resource, ErrUnavailable)
	if err := ctx.Err(); err != nil {
		qe.extra = append(qe.extra, err)
	}
	return false, qe
}

// GetLock rebuilds the handle of a lock held by token, e.g. in another
// process (aioredlock's get_lock). It succeeds when a quorum holds the
// token; the handle's Until is what that quorum still guarantees, its TTL
// for Extend(0) is the Manager's default TTL. Otherwise the error matches
// ErrNotHeld and is a *QuorumError with Op "get".
func (m *Manager) GetLock(ctx context.Context, resource, token string) (*Lock, error) {
	if _, err := m.checkCall([]string{resource}, time.Millisecond); err != nil {
		return nil, err
	}
	if token == "" {
		return nil, invalidf("empty token")
	}
	if err := m.enter(); err != nil {
		return nil, err
	}
	defer m.wg.Done()
	start := time.Now()
	r := m.inspect(ctx, resource, func(holder string) bool { return holder == token })
	if r.ok < m.quorum {
		for i := range r.votes {
			if r.votes[i].err == nil && !r.votes[i].ok {
				r.votes[i].err = ErrNotHeld
			}
		}
		qe := r.quorumError("get", resource, ErrNotHeld)
		if err := ctx.Err(); err != nil {
			qe.extra = append(qe.extra, err)
		}
		return nil, qe
	}
	ttl := m.cfg.defaultTTL
	var pttls []time.Duration
	for _, v := range r.votes {
		if v.ok {
			d := time.Duration(v.pttl) * time.Millisecond
			if v.pttl < 0 {
				d = ttl
			}
			pttls = append(pttls, d)
		}
	}
	// The quorum guarantees the smallest remaining ttl among its members.
	sort.Slice(pttls, func(i, j int) bool { return pttls[i] > pttls[j] })
	left := pttls[m.quorum-1]
	return &Lock{m: m, keys: []string{resource}, token: token, ttl: ttl, until: start.Add(left - m.drift(left))}, nil
}

// Lock is a held lock. Its methods are safe for concurrent use.
type Lock struct {
	m     *Manager
	keys  []string // resources, in the order given
	token string
	ttl   time.Duration

	fenceToken int64         // with WithFencing; 0 otherwise
	acquired   *round        // the acquire round, to order Unlock/Extend after it (nil for GetLock)
	boxed      []interface{} // the acquire's arguments: keys, token and ttl already boxed (nil: build anew)

	mu       sync.Mutex // protects until and released
	until    time.Time  // local validity deadline, monotonic
	released bool
}

// Resource returns the lock's resource (the first one of a LockMulti).
func (l *Lock) Resource() string { return l.keys[0] }

// Resources returns every resource the lock holds.
func (l *Lock) Resources() []string { return append([]string(nil), l.keys...) }

// Token returns the value stored in the lock's keys: 128 random bits from
// crypto/rand, base64url-encoded, unless set with WithToken.
func (l *Lock) Token() string { return l.token }

// TTL returns the ttl the lock was taken with.
func (l *Lock) TTL() time.Duration { return l.ttl }

// Until returns the local validity deadline: the lock's ttl from the start
// of the successful attempt minus the drift allowance, on the monotonic
// clock. A successful Extend moves it.
func (l *Lock) Until() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.until
}

// Valid reports whether the lock is still held as far as this process can
// tell: false after Unlock, after a failed Extend, and once Until has passed.
func (l *Lock) Valid() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.released && time.Now().Before(l.until)
}

// Extend is m.Extend(ctx, l, ttl) for the lock's Manager.
func (l *Lock) Extend(ctx context.Context, ttl time.Duration) error {
	if l == nil {
		return invalidf("nil lock")
	}
	return l.m.Extend(ctx, l, ttl)
}

// Unlock is m.Unlock(ctx, l) for the lock's Manager.
func (l *Lock) Unlock(ctx context.Context) error {
	if l == nil {
		return invalidf("nil lock")
	}
	return l.m.Unlock(ctx, l)
}

// String describes the lock without its token.
func (l *Lock) String() string {
	return fmt.Sprintf("redlock.Lock{%q valid=%t}", l.keys[0], l.Valid())
}

func (l *Lock) isReleased() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.released
}

func (l *Lock) release() {
	l.mu.Lock()
	l.released = true
	l.mu.Unlock()
}

func (l *Lock) invalidate() {
	l.mu.Lock()
	l.until = time.Time{}
	l.mu.Unlock()
}

func (l *Lock) extended(until time.Time) {
	l.mu.Lock()
	l.until = until
	l.mu.Unlock()
}
