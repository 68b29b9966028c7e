package redlock

import (
	"context"
	"errors"
	"time"
)

// The Lock calls of one Manager that wait for the same resource queue
// locally, first come first served: only the head of the queue contends on
// the nodes, as a Lock call alone would, and the others wait for their
// turn without sending anything. Without the queue, K goroutines waiting
// for one resource all retry at once after each release: they split the
// nodes' votes between them, the losers release and wait out the retry
// delay, and the wait grows faster than K (bench/ BenchmarkWaiters).
//
// The head's attempts count for everyone behind it: each attempt it makes
// is one of theirs too (theirs would have met the same holder), so a queued
// Lock still makes at most its retry count of attempts, own or shared, and
// ctx still ends its wait at once. When the head gets the lock or gives up,
// the next waiter becomes the head. An Unlock wakes the Manager's head for
// that resource directly, besides the release notification every Manager
// gets. LockMulti does not queue.

// lockQueue is the local state of one resource while Lock calls of this
// Manager for it are in progress; m.qmu protects it.
type lockQueue struct {
	holder  *Lock         // this Manager's lock on the resource, taken by a former head, until its Unlock
	wake    chan struct{} // the head's release wake-up, once it waits for one (nil before)
	waiters []*ticket     // behind the head, in arrival order
	tries   int           // attempts made by the heads so far
	last    *QuorumError  // the last of them that failed
}

// ticket is one queued Lock call.
type ticket struct {
	turn chan struct{} // closed when it is the head, or out of attempts (then err is set)
	base int           // the queue's tries when it joined
	err  *QuorumError  // its last shared attempt's error, when it ran out of attempts
}

// join registers a Lock call for key and returns, once it is the head, the
// attempts already made for it (0 when nobody was ahead). A call that ran
// out of shared attempts or whose ctx ended first gets an error and is
// not the head.
func (m *Manager) join(ctx context.Context, key string) (int, error) {
	m.qmu.Lock()
	q, busy := m.queues[key]
	if !busy {
		if m.queues == nil {
			m.queues = make(map[string]*lockQueue)
		}
		m.queues[key] = nil // the head, alone: no allocation on the uncontended path
		m.qmu.Unlock()
		return 0, nil
	}
	if q == nil {
		q = &lockQueue{}
		m.queues[key] = q
	}
	t := &ticket{turn: make(chan struct{}), base: q.tries}
	q.waiters = append(q.waiters, t)
	m.qmu.Unlock()

	select {
	case <-t.turn:
	case <-ctx.Done():
	case <-m.closing:
	}
	m.qmu.Lock()
	defer m.qmu.Unlock()
	select {
	case <-t.turn:
		if t.err != nil {
			return 0, t.err
		}
		return m.queues[key].tries - t.base, nil // the head now
	default:
	}
	// Still waiting: leave the queue.
	q = m.queues[key]
	for i, w := range q.waiters {
		if w == t {
			q.waiters = append(q.waiters[:i], q.waiters[i+1:]...)
			break
		}
	}
	qe := &QuorumError{Op: "lock", Resource: key, Needed: m.quorum, extra: []error{ErrNotAcquired}}
	if q.last != nil {
		qe = q.last.clone() // matches ErrNotAcquired already
	}
	if err := ctx.Err(); err != nil {
		qe.extra = append(qe.extra, err)
	} else {
		qe.extra = append(qe.extra, ErrClosed)
	}
	return 0, qe
}

// tried records a failed attempt of key's head: the waiters that now ran
// out of attempts leave the queue with its error.
func (m *Manager) tried(key string, qe *QuorumError) {
	m.qmu.Lock()
	defer m.qmu.Unlock()
	q := m.queues[key]
	if q == nil {
		return // alone
	}
	q.tries++
	q.last = qe.clone()
	kept := q.waiters[:0]
	for _, t := range q.waiters {
		if q.tries-t.base >= m.cfg.retryCount {
			t.err = q.last.clone()
			close(t.turn)
			continue
		}
		kept = append(kept, t)
	}
	clear(q.waiters[len(kept):])
	q.waiters = kept
}

// waitWake records the head's release wake-up, for Unlock.
func (m *Manager) waitWake(key string, wake chan struct{}) {
	m.qmu.Lock()
	q, ok := m.queues[key]
	if ok {
		if q == nil {
			q = &lockQueue{}
			m.queues[key] = q
		}
		q.wake = wake
	}
	m.qmu.Unlock()
}

// leave ends the head's turn, with the lock it took (nil if none): the
// next waiter becomes the head, or the resource's local state goes.
func (m *Manager) leave(key string, l *Lock) {
	m.qmu.Lock()
	defer m.qmu.Unlock()
	q := m.queues[key]
	if q == nil || len(q.waiters) == 0 {
		delete(m.queues, key)
		return
	}
	next := q.waiters[0]
	q.waiters[0] = nil
	q.waiters = q.waiters[1:]
	q.wake = nil
	if l != nil {
		q.holder = l
	}
	close(next.turn)
}

// heldHere returns the lock this Manager holds on key, taken by a former
// head of the queue, while it is valid, and makes wake the head's wake-up
// (in one step, so that an Unlock in between is not missed): the head need
// not ask the nodes before that lock's Unlock or the end of its validity.
// Only queued calls look; a call alone in its queue finds nothing.
func (m *Manager) heldHere(key string, queued bool, wake *chan struct{}) *Lock {
	if !queued {
		return nil
	}
	m.qmu.Lock()
	defer m.qmu.Unlock()
	q := m.queues[key]
	if q == nil || q.holder == nil {
		return nil
	}
	if !q.holder.Valid() {
		q.holder = nil
		return nil
	}
	if *wake == nil {
		*wake = make(chan struct{}, 1)
	}
	q.wake = *wake
	return q.holder
}

// released tells key's queue that this Manager just released l: the head
// waiting for it, if any, is woken.
func (m *Manager) released(key string, l *Lock) {
	m.qmu.Lock()
	defer m.qmu.Unlock()
	q := m.queues[key]
	if q == nil {
		return
	}
	if q.holder == l {
		q.holder = nil
	}
	if q.wake != nil {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
}

// errHeldHere is the vote of an attempt a queued Lock did not send: the
// resource is held by another Lock of the same Manager.
var errHeldHere = errors.New("redlock: resource is held by another lock of this Manager")

// localAttempt is an attempt that was not sent: the resource is held by
// h, another lock of this Manager. It waits for h's Unlock (wake), at most
// one retry delay or until h's validity ends, and returns the attempt's
// error and false if ctx ended or the Manager closes first.
func (m *Manager) localAttempt(ctx context.Context, h *Lock, key string, wake chan struct{}) (*QuorumError, bool) {
	qe := &QuorumError{Op: "lock", Resource: key, Needed: m.quorum, extra: []error{ErrNotAcquired, ErrLocked, errHeldHere}}
	d := min(m.retryDelay(), time.Until(h.Until()))
	ok := m.sleep(ctx, max(d, 0), wake)
	return qe, ok
}

// clone copies qe, so that each caller gets its own (callers append to
// extra).
func (qe *QuorumError) clone() *QuorumError {
	c := *qe
	c.Nodes = append([]NodeError(nil), qe.Nodes...)
	c.extra = append([]error(nil), qe.extra...)
	return &c
}
