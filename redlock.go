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
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
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
	topUp        bool
	observers    []Observer // WithObserver, WithLogger
	badObserver  bool       // WithObserver(nil)
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
	case c.badObserver:
		return invalidf("nil Observer")
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
// safe for concurrent use. It holds one pipelined connection per node
// (dialled, or borrowed from a caller's Pool), shared by every call, and a
// second one while some Lock waits for a release. Close it when done: it
// waits for background work (late node replies, cleanups, Do's
// extensions), closes the connections it dialled and gives borrowed ones
// back.
type Manager struct {
	nodes  []*node
	quorum int
	all    uint64 // bit i set for every node i
	cfg    config

	mu      sync.RWMutex   // protects closed; held while adding to wg
	closed  bool           // set once by Close
	closing chan struct{}  // closed by Close
	wg      sync.WaitGroup // every call in progress and every goroutine it started
	maxTTL  atomic.Int64   // longest ttl used, for the restart guard

	base       context.Context // for background dials; cancelled by Close
	cancelBase context.CancelFunc
	notify     *notifier // wakes Lock calls waiting for a release

	keeper keeper // Do's and Hold's keep-alive (keepalive.go)

	qmu    sync.Mutex            // protects queues
	queues map[string]*lockQueue // resource -> its local Lock calls (queue.go); nil value: one call, alone
}

// maxTTLNow is the restart guard's quarantine length.
func (m *Manager) maxTTLNow() time.Duration { return time.Duration(m.maxTTL.Load()) }

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
		topUp:        true,
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
	m.all = ^uint64(0) >> (64 - len(instances)) // MaxInstances is 64
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
		if _, ok := inst.(poolInstance); ok {
			n.name = fmt.Sprintf("pool#%d", i) // tells the caller's pools apart in errors
		}
		if cfg.restartGuard {
			n.guard = &restartGuard{maxTTL: m.maxTTLNow}
		}
		if m.observed() {
			n.events = m.emit
		}
		n.connect(m)
		m.nodes = append(m.nodes, n)
	}
	m.notify = newNotifier(m.base, m.nodes, cfg.nodeTimeout)
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
// closing its connections (those borrowed from a caller's Pool go back to
// it; the Pool itself stays open). On a node that hung, a borrowed
// connection goes back (broken, so the pool drops it) after its read
// deadline: twice the node timeout at most. It is aioredlock's
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
