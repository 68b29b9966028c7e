package redlock

import (
	"context"
	"math/bits"
	"sync/atomic"
	"time"
)

// WithTopUp turns top-up on or off. Default on.
//
// Redlock is won on a quorum, and under contention the winner often holds
// a bare majority: the other contenders held the remaining nodes for a
// moment. A lock held on exactly a quorum is lost, for mutual exclusion, as
// soon as ONE of its nodes forgets the key early (a clock that runs fast or
// jumps forward, a restart without persistence): the next contender takes
// that node and the free ones. With top-up, a Lock (or LockMulti, fenced or
// not) that succeeded on fewer than all nodes goes on, in the background
// and only while the lock is valid, to take the others where the key is
// free: on the release notification of the resource (the contenders' failed
// attempts release their keys within milliseconds), and otherwise after a
// short delay that doubles (5 ms up to 100 ms, at most a twentieth of the
// ttl), at most 64 times per Lock or Extend. A node whose answer was a
// node failure (down, unreachable, timed out) is not tried again by the
// top-up, so a dead or paused node costs nothing more: the next Extend,
// which asks every node, takes it back once it answers. It
// uses the acquire script, so a key held by another token is never taken,
// with the time that remains of the lock's keys as their expiry, so no
// topped-up key outlives the lock. A successful Extend re-takes the same way
// the nodes where the key is free (restarted, or expired early); a lock
// that lost its quorum is never topped up. Unlock deletes the keys on every
// node, topped-up ones included.
//
// A lock held on k nodes tolerates k − quorum of them forgetting it early:
// with five nodes, a topped-up lock (k = 5) survives two such nodes where a
// bare majority survives none. Lock.NodesHeld reports k.
//
// Cost: none on a lock that took every node (no goroutine, no request);
// otherwise one goroutine per such lock while it tops up, and one acquire
// per missing node and try. A Lock call never waits for it; Close waits for
// a running top-up's requests (at most the node timeout).
func WithTopUp(enabled bool) Option { return func(c *config) { c.topUp = enabled } }

const (
	topUpTries    = 64                     // tries per Lock or Extend, at most
	topUpDelay    = 5 * time.Millisecond   // before the first try without a release; doubles per try
	topUpMaxDelay = 100 * time.Millisecond // the longest wait between tries (at most ttl/20)
)

// NodesHeld returns on how many nodes the lock's token is held as far as
// this process saw: the nodes whose acquire (or last Extend) said yes, the
// answers that came after the call returned, and the nodes a top-up took
// since. It is 0 once the lock is not Valid. Right after Lock it may still
// rise while the last answers arrive (see WithTopUp).
func (l *Lock) NodesHeld() int {
	if !l.Valid() {
		return 0
	}
	return bits.OnesCount64(l.held.Load())
}

// saw records node i's answer to one of l's requests: a yes marks it as
// holding l; a node failure (a connection error, a timeout, a stalled or
// hung node) marks it gone, so that top-up does not try it again (the next
// Extend, which asks every node, does); any answer clears gone.
func (l *Lock) saw(i int, ok, failed bool) {
	if ok {
		setBit(&l.held, i, true)
	}
	setBit(&l.gone, i, failed)
}

// setBit sets or clears bit i of a (atomic.Uint64.Or needs Go 1.23).
func setBit(a *atomic.Uint64, i int, on bool) {
	for {
		old := a.Load()
		v := old &^ (1 << i)
		if on {
			v = old | 1<<i
		}
		if v == old || a.CompareAndSwap(old, v) {
			return
		}
	}
}

// missing returns the nodes a top-up of l may still take: those that do
// not hold it, except those whose last answer was a node failure.
func (m *Manager) missing(l *Lock) uint64 { return m.all &^ l.held.Load() &^ l.gone.Load() }

// settled is called once every node answered a round that l tracks: if
// some node does not hold l, a top-up starts (or the running one gets
// another round of tries).
func (m *Manager) settled(l *Lock) {
	if !m.cfg.topUp || m.missing(l) == 0 {
		return
	}
	l.mu.Lock()
	if l.released || !time.Now().Before(l.until) {
		l.mu.Unlock()
		return
	}
	if l.topping {
		l.again = true
		l.mu.Unlock()
		return
	}
	l.topping = true
	l.mu.Unlock()
	if m.enter() != nil { // closing
		l.mu.Lock()
		l.topping = false
		l.mu.Unlock()
		return
	}
	go m.topUp(l)
}

// topUp tries to take the nodes that do not hold l, until every node does,
// the lock is released or no longer valid, the Manager closes, or the
// tries are spent (and no Extend asked for more).
func (m *Manager) topUp(l *Lock) {
	defer m.wg.Done()
	w := m.notify.watch(l.keys)
	defer w.done()
	for m.topUpTries(l, w.wake) {
		l.mu.Lock()
		again := l.again
		l.again, l.topping = false, again
		l.mu.Unlock()
		if !again {
			return
		}
	}
	l.mu.Lock()
	l.topping, l.again = false, false
	l.mu.Unlock()
}

// topUpTries makes up to topUpTries tries, each at once after a release
// of the resource (the node it came from is free at that moment), or after
// a delay that doubles from topUpDelay to the smaller of topUpMaxDelay and
// a twentieth of the lock's ttl. Under heavy contention the free nodes are
// taken and released by the contenders' attempts all the time, so the
// tries go on for as long as the lock is valid. It returns false when the
// top-up is over for good (released, invalid, closing) and true when the
// tries are spent or every node holds l.
func (m *Manager) topUpTries(l *Lock, wake <-chan struct{}) bool {
	delay, most := topUpDelay, min(topUpMaxDelay, max(l.ttl/20, topUpDelay))
	for try := 0; try < topUpTries; try++ {
		if !m.sleep(context.Background(), delay, wake) {
			return false
		}
		delay = min(2*delay, most)
		missing := m.missing(l)
		if missing == 0 {
			return true
		}
		before := l.held.Load()
		r := m.topUpRound(l, missing)
		if r == nil {
			return false
		}
		r.collect(context.Background()) // bounded by the node timeout
		r.release()
		if now := l.held.Load(); now != before && m.observed() {
			m.emit(Event{Kind: EventTopUp, Resource: l.keys[0], Held: bits.OnesCount64(now)})
		}
		if m.missing(l) == 0 {
			return true
		}
	}
	return true
}

// topUpRound queues the acquire of l's keys on the missing nodes, with the
// keys' remaining time as their expiry, and, for a fenced lock, behind it
// the raise of the node's fencing counter to the lock's token. Each node
// that takes the keys is marked as holding l as its answer comes. It
// returns nil, queuing nothing, when l is released or no longer valid.
//
// An Extend may run at the same time: a top-up acquire that reaches a node
// after the Extend there sets the keys' older expiry, which is shorter
// (never longer) than the lock's; the next Extend corrects it.
func (m *Manager) topUpRound(l *Lock, missing uint64) *round {
	l.order.Lock() // see Unlock
	defer l.order.Unlock()
	l.mu.Lock()
	released, until, expires := l.released, l.until, l.expires
	l.mu.Unlock()
	now := time.Now()
	left := expires.Sub(now).Milliseconds() // rounded down: never past the lock's keys
	if released || !now.Before(until) || left < 1 {
		return nil
	}
	per := 1
	var fenceArg []interface{}
	if m.cfg.fencing {
		per = 2
		fenceArg = fenceArgs(l.keys[0], fenceKey(l.keys[0]), l.token, l.fenceToken)
	}
	r := m.newRound(every, per*bits.OnesCount64(missing))
	r.holder, r.background = l, true
	args := acquireArgs(l.keys, l.token, left)
	for i := range m.nodes {
		if missing&(1<<i) == 0 {
			continue
		}
		m.submit(r, i, "EVALSHA", args, &acquireScript, voteAcquire, write, 0)
		if fenceArg != nil {
			m.submit(r, i, "EVALSHA", fenceArg, &fenceScript, voteNone, unguarded, 1)
		}
	}
	return r
}
