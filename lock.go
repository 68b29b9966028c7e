package redlock

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

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
	return m.lock(ctx, resources, ttl, opts)
}

// lock is Lock and LockMulti, observed.
func (m *Manager) lock(ctx context.Context, keys []string, ttl time.Duration, opts []LockOption) (*Lock, error) {
	ctx, or := m.opStart(ctx, OpLock, firstOf(keys))
	l, err := m.acquire(ctx, keys, ttl, opts, or)
	m.lockEnd(ctx, or, l, err)
	return l, err
}

// firstOf returns the first resource, "" when there is none.
func firstOf(keys []string) string {
	if len(keys) == 0 {
		return ""
	}
	return keys[0]
}

// acquire is Lock and LockMulti; or (nil without observers) gets the
// attempts and the deciding round. keys is only read: the Lock keeps a
// copy.
func (m *Manager) acquire(ctx context.Context, keys []string, ttl time.Duration, opts []LockOption, or *opRun) (*Lock, error) {
	o := applyLockOptions(opts)
	ttl, err := m.checkCall(keys, ttl)
	if err == nil && m.cfg.fencing && len(keys) > 1 {
		err = invalidf("WithFencing supports single-resource locks, got %d resources", len(keys))
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
	var cleanup *round // a caller's token: the failed attempt's release, waited for before the next one
	defer func() {
		if cleanup != nil {
			cleanup.release()
		}
	}()
	first := 1
	queued := len(keys) == 1 // see queue.go
	var got *Lock
	var local chan struct{} // wakes the head when this Manager's own lock is released
	if queued {
		shared, err := m.join(ctx, keys[0])
		if err != nil {
			return nil, err
		}
		defer func() { m.leave(keys[0], got) }()
		first += shared
	}
	for attempt := first; ; attempt++ {
		if or != nil {
			or.end.Attempts = attempt
		}
		if h := m.heldHere(keys[0], queued, &local); h != nil {
			// Held by this Manager: wait for its Unlock instead of asking
			// the nodes; the wait counts as an attempt.
			qe, alive := m.localAttempt(ctx, h, keys[0], local)
			m.tried(keys[0], qe)
			last = qe
			if !alive || attempt >= m.cfg.retryCount {
				break
			}
			continue
		}
		l, qe, rel := m.tryLock(ctx, keys, token, ttl, or)
		if qe == nil {
			got = l
			return l, nil
		}
		if queued {
			m.tried(keys[0], qe)
		}
		if or != nil {
			or.failed(qe)
		}
		if custom {
			cleanup = rel
		} else {
			rel.release()
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
		locked := errors.Is(qe, ErrLocked)
		split := locked && qe.Votes > 0 && w != nil
		if w == nil && locked {
			// Contention: listen for the holder's release, then retry at
			// once, so that a release between the attempt and the
			// subscription is not missed.
			w = m.notify.wait(keys)
			if queued {
				m.waitWake(keys[0], w.wake)
			}
			if !m.sleep(ctx, m.cfg.nodeTimeout, w.ready) {
				break
			}
			delay = 0
		}
		var wake chan struct{}
		if w != nil {
			wake = w.wake
		}
		if split {
			// The votes were split with other contenders, all woken by
			// the same release: the nodes are free again the moment the
			// losers' releases land. A short random wait breaks the tie,
			// instead of a full retry delay or another retry at once.
			delay, wake = splitJitter(m.cfg.retryMin), nil
		}
		if delay > 0 && !m.sleep(ctx, delay, wake) {
			break
		}
		// The failed attempt's release may still be on its way to slow
		// nodes; it must never delete the next attempt's keys. A random
		// token is fresh per attempt; a caller's token waits for the
		// release to end.
		if !custom {
			if token, err = newToken(); err != nil {
				last.extra = append(last.extra, err)
				break
			}
			continue
		}
		cleanup.collect(ctx)
		cut := cleanup.cut != nil
		cleanup.release()
		cleanup = nil
		if cut {
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
	var seen map[string]struct{} // only for several resources: a Lock allocates no map
	for _, r := range resources {
		if r == "" {
			return 0, invalidf("empty resource name")
		}
		if len(r) > MaxResourceLen {
			return 0, invalidf("resource name of %d bytes: the limit is %d", len(r), MaxResourceLen)
		}
		if len(resources) > 1 {
			if seen == nil {
				seen = make(map[string]struct{}, len(resources))
			}
			if _, dup := seen[r]; dup {
				return 0, invalidf("resource %q given twice", r)
			}
			seen[r] = struct{}{}
		}
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

// splitJitter is the wait after split votes: 1-5 ms, at most the retry
// delay.
func splitJitter(retryMin time.Duration) time.Duration {
	return min(time.Millisecond+mrand.N(4*time.Millisecond), max(retryMin, time.Millisecond))
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

// tryLock is one attempt of the algorithm. A failed attempt returns the
// round of its release, which a caller-chosen token waits for.
func (m *Manager) tryLock(ctx context.Context, keys []string, token string, ttl time.Duration, or *opRun) (*Lock, *QuorumError, *round) {
	start := time.Now()
	ttlMS := ttl.Milliseconds()
	var r *round
	if m.cfg.fencing {
		r = m.fanout(ctx, quorum, "EVALSHA", &acquireFencedScript, acquireFencedArgs(keys[0], fenceKey(keys[0]), token, ttlMS), voteAcquireFenced, write)
	} else {
		r = m.fanout(ctx, quorum, "EVALSHA", &acquireScript, acquireArgs(keys, token, ttlMS), voteAcquire, write)
	}
	defer r.release()
	var fence int64
	failed := r // the round that decides the error
	if m.cfg.fencing && r.ok >= m.quorum {
		var f *round
		fence, f = m.fence(ctx, r, keys[0], token)
		defer f.release()
		if f.ok < m.quorum {
			failed = f
		}
	}
	validity := ttl - time.Since(start) - m.drift(ttl)
	if failed == r && r.ok >= m.quorum && validity > 0 {
		l := newLock(m, keys, token, ttl, fence, start.Add(ttl), start.Add(ttl-m.drift(ttl)))
		r.track(l, true)
		or.round(r)
		return l, nil, nil
	}
	cleanup := m.releaseAfter(r, keys, token)
	if m.observed() {
		m.emit(Event{Kind: EventCleanup, Resource: keys[0]})
	}
	qe := failed.quorumError("lock", keys[0], ErrNotAcquired)
	if failed.ok >= m.quorum {
		qe.extra = append(qe.extra, errTooSlow)
	}
	return nil, qe, cleanup
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
	ctx, or := m.opStart(ctx, OpExtend, lockResource(l))
	err := m.extend(ctx, l, ttl, or)
	if or != nil {
		if err != nil && l != nil && l.m == m && !l.Valid() && l.uncount() {
			or.end.Held = -1 // lost
		}
		m.opEnd(ctx, or, err)
	}
	return err
}

// lockResource is l's first resource, "" for a nil lock.
func lockResource(l *Lock) string {
	if l == nil {
		return ""
	}
	return l.keys[0]
}

// extend is Extend; or is nil without observers.
func (m *Manager) extend(ctx context.Context, l *Lock, ttl time.Duration, or *opRun) error {
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
	// On every node the extend is queued behind the lock's own acquire,
	// even when that acquire's reply is still on its way.
	r := m.fanout(ctx, quorum, "EVALSHA", &extendScript, extendArgs(l.keys, l.token, ttl.Milliseconds()), voteExtend, write)
	defer r.release()
	validity := ttl - time.Since(start) - m.drift(ttl)
	if r.ok >= m.quorum && validity > 0 {
		l.extended(start.Add(ttl), start.Add(ttl-m.drift(ttl)))
		r.track(l, true) // the nodes that lost the key are topped up again
		or.round(r)
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
	ctx, or := m.opStart(ctx, OpUnlock, lockResource(l))
	err := m.unlock(ctx, l, or)
	if or != nil {
		if l != nil && l.m == m && l.isReleased() && l.uncount() {
			or.end.Held = -1
		}
		m.opEnd(ctx, or, err)
	}
	return err
}

// unlock is Unlock; or is nil without observers.
func (m *Manager) unlock(ctx context.Context, l *Lock, or *opRun) error {
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
	// Under l.order, so that a top-up either was queued before this
	// release on every node (and its keys are deleted with the others) or
	// sees the lock released and queues nothing.
	l.order.Lock()
	l.markUnlocked()
	l.order.Unlock()
	r := m.fanout(ctx, quorum, "EVALSHA", &releaseScript, releaseArgs(l.keys, l.token), voteRelease(len(l.keys)), unguarded)
	defer r.release()
	if len(l.keys) == 1 {
		// This Manager's next Lock of the resource may go now. Not
		// sooner: the other Managers' waiters hear of the release when
		// it has run on the nodes, and the first to try should not
		// always be ours.
		m.released(l.keys[0], l)
	}
	if r.ok >= m.quorum {
		or.round(r)
		return nil
	}
	qe := r.quorumError("unlock", l.keys[0], ErrNotHeld)
	if err := ctx.Err(); err != nil {
		qe.extra = append(qe.extra, err)
	}
	return qe
}

// Lock is a held lock. Its methods are safe for concurrent use.
type Lock struct {
	m          *Manager
	keys       []string  // resources, in the order given
	one        [1]string // keys' array for a single resource (one allocation less per Lock: bench/ BenchmarkCycle)
	token      string
	ttl        time.Duration
	fenceToken int64 // with WithFencing; 0 otherwise

	held  atomic.Uint64 // bit i: node i holds the token, as the last operation saw (see NodesHeld)
	gone  atomic.Uint64 // bit i: node i's last answer was a node failure (down, hung): left to the next Extend, not topped up
	order sync.Mutex    // orders a top-up's requests before Unlock's (topup.go)

	mu       sync.Mutex // protects the fields below
	until    time.Time  // local validity deadline, monotonic
	expires  time.Time  // the keys' expiry: until plus the drift allowance
	released bool
	counted  bool // an observer counted it as held (observe.go: OpEnd.Held)
	topping  bool // a top-up runs (topup.go)
	again    bool // an Extend asked the running top-up for another round of tries
}

// newLock returns a held lock of a copy of keys whose keys expire at
// expires and whose validity ends at until.
func newLock(m *Manager, keys []string, token string, ttl time.Duration, fence int64, expires, until time.Time) *Lock {
	l := &Lock{m: m, token: token, ttl: ttl, fenceToken: fence, expires: expires, until: until}
	if len(keys) == 1 {
		l.one[0] = keys[0]
		l.keys = l.one[:]
	} else {
		l.keys = append([]string(nil), keys...)
	}
	return l
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

func (l *Lock) markUnlocked() {
	l.mu.Lock()
	l.released = true
	l.mu.Unlock()
}

func (l *Lock) invalidate() {
	l.mu.Lock()
	l.until = time.Time{}
	l.mu.Unlock()
}

func (l *Lock) extended(expires, until time.Time) {
	l.mu.Lock()
	l.expires, l.until = expires, until
	l.mu.Unlock()
}

// count marks the lock as counted held by the observers.
func (l *Lock) count() {
	l.mu.Lock()
	l.counted = true
	l.mu.Unlock()
}

// uncount reports whether the lock was counted held, and clears it: true
// once per counted lock.
func (l *Lock) uncount() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	was := l.counted
	l.counted = false
	return was
}
