package redlock

import (
	"container/heap"
	"context"
	"sort"
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"
)

// The keep-alive of Do and Hold: one scheduler per Manager, not a goroutine
// and a timer per lock. Each held lock is due for an extension a third of
// its ttl after the last one; the scheduler wakes at the earliest, takes
// every lock due within the next sixth of its ttl as well, and extends them
// together: per node ONE extend_many.lua call for up to keepBatchKeys keys,
// each key with its own token and result. So 20,000 locks with a 1 s ttl
// cost a few dozen script calls per node and second, not 60,000, and their
// extensions are spread over the safe part of each interval instead of
// bursting on the same ticks.
//
// A lock is extended when a quorum of nodes extended every one of its keys
// within the new validity, exactly as Extend; it is lost when so many nodes
// said "not held" (or failed) that no quorum can, or when its validity ends
// first. A batch that is cut short (its deadline is the earliest validity
// end among the held locks) retries the undecided locks right away.

const (
	keepBatchKeys = 1000                  // keys per extend_many call
	keepRetry     = 10 * time.Millisecond // after an undecided extension
)

// keeper is the Manager's keep-alive scheduler; mu protects its fields.
type keeper struct {
	mu      sync.Mutex
	due     keepHeap      // by at
	running bool          // the scheduler goroutine runs
	kick    chan struct{} // cap 1: an entry came in earlier than the timer
}

// keepEntry is one lock kept alive.
type keepEntry struct {
	l     *Lock
	lost  func(cause error) // cancels the function's ctx
	at    time.Time         // when the next extension is due
	index int               // in the heap; -1 when out of it
	gone  bool              // removed by unkeep (mu)
}

// keep starts keeping l alive; lost is called once if it is lost. The
// returned entry goes back to unkeep.
func (m *Manager) keep(l *Lock, lost func(error)) *keepEntry {
	e := &keepEntry{l: l, lost: lost, at: time.Now().Add(l.ttl / 3), index: -1}
	k := &m.keeper
	k.mu.Lock()
	heap.Push(&k.due, e)
	start := !k.running
	first := k.due[0] == e
	if start {
		if m.enter() != nil { // closing
			heap.Remove(&k.due, e.index)
			k.mu.Unlock()
			e.gone = true
			m.lost(l, ErrClosed)
			lost(ErrLockLost)
			return e
		}
		k.running = true
		if k.kick == nil {
			k.kick = make(chan struct{}, 1)
		}
	}
	kick := k.kick
	k.mu.Unlock()
	if start {
		go m.keepLoop()
	} else if first {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	return e
}

// unkeep stops keeping e's lock alive.
func (m *Manager) unkeep(e *keepEntry) {
	k := &m.keeper
	k.mu.Lock()
	if e.index >= 0 {
		heap.Remove(&k.due, e.index)
	}
	e.gone = true
	k.mu.Unlock()
}

// keepLoop is the scheduler: it runs while some lock is kept alive.
func (m *Manager) keepLoop() {
	defer m.wg.Done()
	k := &m.keeper
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		k.mu.Lock()
		if len(k.due) == 0 {
			k.running = false
			k.mu.Unlock()
			return
		}
		next := k.due[0].at
		k.mu.Unlock()
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(time.Until(next))
		select {
		case <-t.C:
		case <-k.kick:
			continue
		case <-m.closing:
			m.keepClose()
			return
		}
		m.extendBatch(m.takeDue())
	}
}

// takeDue pops every entry due now or within the next sixth of its ttl.
func (m *Manager) takeDue() []*keepEntry {
	k := &m.keeper
	now := time.Now()
	k.mu.Lock()
	defer k.mu.Unlock()
	var batch []*keepEntry
	// The heap is ordered by at; an entry due soon enough is taken
	// early. Entries are popped in order, so one with a long ttl (and a
	// wide window) behind one with a short ttl waits for the next batch.
	for len(k.due) > 0 {
		e := k.due[0]
		if e.at.Sub(now) > e.l.ttl/6 {
			break
		}
		heap.Pop(&k.due)
		batch = append(batch, e)
	}
	return batch
}

// requeue puts e back, due at at, unless it was removed meanwhile.
func (m *Manager) requeue(e *keepEntry, at time.Time) {
	k := &m.keeper
	k.mu.Lock()
	if !e.gone {
		e.at = at
		heap.Push(&k.due, e)
	}
	k.mu.Unlock()
}

// keepClose ends every keep-alive: the Manager closes.
func (m *Manager) keepClose() {
	k := &m.keeper
	k.mu.Lock()
	entries := append([]*keepEntry(nil), k.due...)
	for _, e := range entries {
		e.gone, e.index = true, -1
	}
	k.due = k.due[:0]
	k.running = false
	k.mu.Unlock()
	for _, e := range entries {
		m.lost(e.l, ErrClosed)
		e.lost(ErrLockLost)
	}
}

// keepSpan is one lock's keys in a batch: keys[lo:hi].
type keepSpan struct {
	e      *keepEntry
	lo, hi int
}

// extendBatch extends the batch's locks, grouped by ttl, in script calls of
// up to keepBatchKeys keys per node, all queued at once.
func (m *Manager) extendBatch(batch []*keepEntry) {
	if len(batch) == 0 {
		return
	}
	sort.Slice(batch, func(i, j int) bool { return batch[i].l.ttl < batch[j].l.ttl })
	deadline := m.keepDeadline(batch)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	type call struct {
		r     *round
		ttl   time.Duration
		spans []keepSpan
		start time.Time
	}
	var calls []call
	for lo := 0; lo < len(batch); {
		ttl := batch[lo].l.ttl
		var keys, tokens []string
		var spans []keepSpan
		hi := lo
		for hi < len(batch) && batch[hi].l.ttl == ttl && len(keys)+len(batch[hi].l.keys) <= max(keepBatchKeys, len(batch[hi].l.keys)) {
			l := batch[hi].l
			spans = append(spans, keepSpan{e: batch[hi], lo: len(keys), hi: len(keys) + len(l.keys)})
			for _, key := range l.keys {
				keys = append(keys, key)
				tokens = append(tokens, l.token)
			}
			hi++
		}
		lo = hi
		r := m.newRound(every, len(m.nodes))
		args, n := extendManyArgs(keys, tokens, ttl.Milliseconds()), len(keys)
		decode := func(reply interface{}, err error) nodeVote {
			vals, err := extendManyReply(reply, err, n)
			if err != nil {
				return nodeVote{err: err}
			}
			return nodeVote{ok: true, many: vals}
		}
		start := time.Now()
		for i := range m.nodes {
			m.submit(r, i, "EVALSHA", args, &extendManyScript, decode, write, 0)
		}
		calls = append(calls, call{r: r, ttl: ttl, spans: spans, start: start})
	}
	for _, c := range calls {
		c.r.collect(ctx)
		for _, s := range c.spans {
			m.kept(c.r, s, c.ttl, c.start)
		}
		c.r.release()
	}
	m.expireKept()
}

// keepDeadline is the earliest validity end among the kept locks: a batch
// must not keep the scheduler from noticing it.
func (m *Manager) keepDeadline(batch []*keepEntry) time.Time {
	d := time.Now().Add(m.cfg.nodeTimeout)
	for _, e := range batch {
		if u := e.l.Until(); u.Before(d) {
			d = u
		}
	}
	k := &m.keeper
	k.mu.Lock()
	for _, e := range k.due {
		if u := e.l.Until(); u.Before(d) {
			d = u
		}
	}
	k.mu.Unlock()
	return d
}

// kept applies round r's answers to one lock of the batch.
func (m *Manager) kept(r *round, s keepSpan, ttl time.Duration, start time.Time) {
	e, l := s.e, s.e.l
	ok, against := 0, 0
	var held, gone uint64
	var nodes []NodeError
	for _, v := range r.votes {
		if v.err != nil {
			if v.failed() {
				gone |= 1 << v.node
			}
			against++
			nodes = append(nodes, NodeError{Node: m.nodes[v.node].name, Err: v.err})
			continue
		}
		all := true
		for _, f := range v.many[s.lo:s.hi] {
			if n, err := redis.Int64(f, nil); err != nil || n != 1 {
				all = false
			}
		}
		if all {
			ok++
			held |= 1 << v.node
		} else {
			against++
			nodes = append(nodes, NodeError{Node: m.nodes[v.node].name, Err: ErrNotHeld})
		}
	}
	now := time.Now()
	switch {
	case l.isReleased():
		return
	case ok >= m.quorum && ttl-now.Sub(start)-m.drift(ttl) > 0:
		l.extended(start.Add(ttl), start.Add(ttl-m.drift(ttl)))
		l.held.Store(held)
		l.gone.Store(gone)
		m.settled(l) // nodes that lost the key are topped up
		if m.observed() {
			m.emit(Event{Kind: EventKeepAlive, Resource: l.keys[0]})
		}
		m.requeue(e, start.Add(ttl/3))
	case against > len(m.nodes)-m.quorum:
		qe := &QuorumError{Op: "extend", Resource: l.keys[0], Needed: m.quorum, Votes: ok, Nodes: nodes, extra: []error{ErrNotHeld}}
		l.invalidate()
		m.loseKept(e, lostError{qe})
	case !now.Before(l.Until()):
		m.loseKept(e, errValidityEnded)
	default: // undecided in time: nodes slow, the batch cut short
		m.requeue(e, now.Add(keepRetry))
	}
}

// loseKept reports e's lock lost, unless it was removed meanwhile.
func (m *Manager) loseKept(e *keepEntry, cause error) {
	k := &m.keeper
	k.mu.Lock()
	gone := e.gone
	if !gone && e.index >= 0 {
		heap.Remove(&k.due, e.index)
	}
	e.gone = true
	k.mu.Unlock()
	if gone {
		return
	}
	m.lost(e.l, cause)
	if _, ok := cause.(lostError); ok {
		e.lost(cause)
		return
	}
	e.lost(ErrLockLost)
}

// expireKept reports lost every kept lock whose validity ended.
func (m *Manager) expireKept() {
	now := time.Now()
	k := &m.keeper
	k.mu.Lock()
	var ended []*keepEntry
	for _, e := range k.due {
		if !now.Before(e.l.Until()) {
			ended = append(ended, e)
		}
	}
	k.mu.Unlock()
	for _, e := range ended {
		m.loseKept(e, errValidityEnded)
	}
}

// keepHeap orders entries by when they are due.
type keepHeap []*keepEntry

func (h keepHeap) Len() int           { return len(h) }
func (h keepHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h keepHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *keepHeap) Push(x interface{}) {
	e := x.(*keepEntry)
	e.index = len(*h)
	*h = append(*h, e)
}
func (h *keepHeap) Pop() interface{} {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	e.index = -1
	*h = old[:len(old)-1]
	return e
}
