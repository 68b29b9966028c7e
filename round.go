package redlock

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/redlock-go/redlock/internal/pipe"
)

// round is one fan-out: the same request queued on every node's transport
// at once, and the votes collected until the answer is decided. It is the
// only way the Manager talks to its nodes. No goroutine is started: the
// transports' readers deliver the votes, and the one that decides the
// round wakes the caller (once per round, not once per vote).
type round struct {
	m    *Manager
	rule rule
	want int           // requests the round waits for at most
	refs atomic.Int32  // the caller's and every request's not yet answered; see release
	done chan struct{} // cap 1: signalled once the rule decided the round

	mu      sync.Mutex  // protects the fields below until closed is set; then they are the caller's
	closed  bool        // decided, or the caller stopped waiting: later votes are not recorded
	votes   []nodeVote  // answers received before the round was closed
	ok      int         // votes with ok
	failed  int         // votes against
	clean   int         // votes against without an error (inspect: free)
	cut     error       // the caller's ctx ended before the round was decided
	voteBuf [5]nodeVote // votes' array for up to five nodes

	// For the rounds of a held lock (its acquire, an Extend, a top-up);
	// protected by mu, also after closed: see track.
	heard  int    // requests answered
	lateOK uint64 // nodes that voted ok after the round was closed, before track
	lateNo uint64 // nodes that answered with a node failure after the round was closed, before track
	holder *Lock  // set by track: later ok votes (seq 0) mark their node as holding
	settle bool   // once every request answered, holder is topped up if needed

	background bool // nobody waits for it (a failed attempt's release, a top-up): observers get its node failures
}

// rule says when a round is decided.
type rule uint8

const (
	// quorum: a quorum voted ok, or can no longer do so (writes).
	quorum rule = iota
	// either: a quorum voted ok, or a quorum voted a clean no (reads: the
	// answer is known either way), or neither can happen any more.
	either
	// every: every request answered (Inspect, LoadScripts, a release that
	// a caller's token waits for).
	every
)

// nodeVote is one node's answer in a round.
type nodeVote struct {
	node    int
	seq     int // which of the node's requests (rounds with several per node)
	ok      bool
	err     error         // nil for ok and for a clean no (inspect: free); ErrLocked, ErrNotHeld, or a node failure
	pttl    int64         // acquire: the foreign holder's PTTL; inspect: the key's PTTL
	counter int64         // acquire_fenced: the node's fencing counter
	text    string        // inspect: the token found; SCRIPT LOAD: the digest
	many    []interface{} // extend_many: one flag per key
}

// failed reports whether the vote is a node failure (down, timed out,
// stalled, a transport or server error), not an answer: neither a yes nor
// a refusal because of another token or a missing key.
func (v nodeVote) failed() bool { return v.err != nil && isNodeFailure(v.err) }

// fanout queues cmd with args on every node and returns once the round is
// decided by its rule, ctx ends, or the node timeout passes; the other
// nodes answer in the background (Close waits for them).
func (m *Manager) fanout(ctx context.Context, rl rule, cmd string, s *luaScript, args []interface{},
	decode func(interface{}, error) nodeVote, kind callKind) *round {
	r := m.newRound(rl, len(m.nodes))
	for i := range m.nodes {
		m.submit(r, i, cmd, args, s, decode, kind, 0)
	}
	r.collect(ctx)
	return r
}

// newRound returns a round of requests requests; the caller submits them
// (m.submit), collects, and releases the round when done with its votes.
//
// Rounds, their vote arrays and channels are recycled: that is two
// allocations less per call, four per Lock+Unlock cycle (bench/
// BenchmarkCycle, allocs/op).
func (m *Manager) newRound(rl rule, requests int) *round {
	r := roundPool.Get().(*round)
	r.m, r.rule, r.want = m, rl, requests
	if requests <= len(r.voteBuf) {
		r.votes = r.voteBuf[:0]
	} else {
		r.votes = make([]nodeVote, 0, requests)
	}
	if r.done == nil {
		r.done = make(chan struct{}, 1)
	}
	r.refs.Store(1)
	return r
}

var roundPool = sync.Pool{New: func() interface{} { return new(round) }}

// release drops the caller's reference: once every request has answered
// too, the round is recycled. Nothing of r may be used after release.
func (r *round) release() {
	if r.refs.Add(-1) != 0 {
		return
	}
	select { // a decision the caller did not wait for
	case <-r.done:
	default:
	}
	done := r.done
	clear(r.voteBuf[:])
	*r = round{done: done}
	roundPool.Put(r)
}

// vote records one request's answer (from the transport's goroutines) and
// wakes the caller if it decides the round.
func (r *round) vote(v nodeVote) {
	r.mu.Lock()
	r.heard++
	failed := v.failed()
	if v.seq == 0 {
		switch {
		case r.holder != nil:
			r.holder.saw(v.node, v.ok, failed)
		case r.closed && v.ok:
			r.lateOK |= 1 << v.node
		case r.closed && failed:
			r.lateNo |= 1 << v.node
		}
	}
	settle := r.settle && r.heard == r.want
	if failed && (r.closed || r.background) && r.m.observed() {
		r.m.emit(Event{Kind: EventLateError, Node: r.m.nodes[v.node].name, Err: v.err})
	}
	if !r.closed {
		r.votes = append(r.votes, v)
		if v.ok {
			r.ok++
		} else {
			r.failed++
			if v.err == nil {
				r.clean++
			}
		}
		if r.decided() {
			r.closed = true
			r.done <- struct{}{} // cap 1, sent once
		}
	}
	holder := r.holder
	r.mu.Unlock()
	if settle {
		r.m.settled(holder)
	}
	r.release()
}

// track makes r's ok votes (seq 0) the nodes that hold l: those recorded,
// and those that answer later, as they come. With settle, once every node
// answered, l is topped up (topup.go) if some node does not hold it. It is
// called once the caller's lock is decided (after collect).
func (r *round) track(l *Lock, settle bool) {
	r.mu.Lock()
	mask, gone := r.lateOK, r.lateNo
	for _, v := range r.votes {
		switch {
		case v.seq != 0:
		case v.ok:
			mask |= 1 << v.node
		case v.failed():
			gone |= 1 << v.node
		}
	}
	l.held.Store(mask)
	l.gone.Store(gone)
	r.holder, r.settle = l, settle
	now := settle && r.heard == r.want
	r.mu.Unlock()
	if now {
		r.m.settled(l)
	}
}

// decided applies the round's rule to the votes so far; r.mu is held.
func (r *round) decided() bool {
	if len(r.votes) >= r.want {
		return true
	}
	n, q := len(r.m.nodes), r.m.quorum
	left := n - len(r.votes)
	switch r.rule {
	case quorum:
		return r.ok >= q || r.failed > n-q
	case either:
		return r.ok >= q || r.clean > n-q || (r.ok+left < q && r.clean+left <= n-q)
	}
	return false
}

// collect waits until the rule decides the round, ctx ends or the node
// timeout passes. Then the votes are the caller's: later ones are not
// recorded.
func (r *round) collect(ctx context.Context) {
	if r.want == 0 {
		return
	}
	t := getTimer(r.m.cfg.nodeTimeout)
	defer putTimer(t)
	var cut error
	timedOut := false
	select {
	case <-r.done:
	case <-ctx.Done():
		cut = ctx.Err() // the caller adds ctx.Err() to its error
	case <-t.C:
		timedOut = true
	}
	r.mu.Lock()
	decided := r.closed
	r.closed = true
	r.mu.Unlock()
	if decided { // decided just as ctx ended or the timer fired: the decision stands
		return
	}
	r.cut = cut
	if timedOut {
		r.timedOut()
	}
}

// timedOut records the nodes that did not answer within the node
// timeout, in node order (as if one by one), as far as the rule needs.
func (r *round) timedOut() {
	var answered uint64
	for _, v := range r.votes {
		answered |= 1 << v.node
	}
	for i := range r.m.nodes {
		if answered&(1<<i) == 0 && r.rule != every && r.failed <= len(r.m.nodes)-r.m.quorum {
			r.votes = append(r.votes, nodeVote{node: i, err: pipe.ErrNoReply})
			r.failed++
		}
	}
}

// unanswered is the error of a request that had not answered when the
// round ended: the caller's ctx ended first, or the node timeout passed.
func (r *round) unanswered() error {
	if r.cut != nil {
		return fmt.Errorf("%w: %w", errNoAnswerYet, r.cut)
	}
	return pipe.ErrNoReply
}

// releaseAfter queues a release of keys/token on every node of a failed
// acquire round r, except those that answered that another token holds
// the key (their acquire changed nothing). On each node the release is
// queued behind the acquire, so it runs after it even when the acquire's
// reply is late or lost. Nobody waits for it; Close does.
//
// It returns the release's own round, for callers that must wait for it.
func (m *Manager) releaseAfter(r *round, keys []string, token string) *round {
	args := releaseArgs(keys, token)
	todo := 0
	for i := range m.nodes {
		if !r.refused(i) {
			todo++
		}
	}
	rr := m.newRound(every, todo)
	rr.background = true
	for i := range m.nodes {
		if !r.refused(i) {
			m.submit(rr, i, "EVALSHA", args, &releaseScript, voteNone, unguarded, 0)
		}
	}
	return rr
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

// The decoders below turn a script's reply into a vote; the generated
// xxxReply functions check the reply's shape first.

// voteAcquire reads acquire.lua's or acquire_fenced.lua's reply: {1, n} is
// ok with counter n (the fencing counter; acquire.lua's ttl, unused),
// {0, pttl} is ErrLocked.
func voteAcquire(reply interface{}, err error) nodeVote {
	vals, err := acquireReply(reply, err)
	if err != nil {
		return nodeVote{err: err}
	}
	return acquireVote(vals)
}

func voteAcquireFenced(reply interface{}, err error) nodeVote {
	vals, err := acquireFencedReply(reply, err)
	if err != nil {
		return nodeVote{err: err}
	}
	return acquireVote(vals)
}

func acquireVote(vals []interface{}) nodeVote {
	ok, n, err := decodeAcquire(vals)
	switch {
	case err != nil:
		return nodeVote{err: err}
	case !ok:
		return nodeVote{err: ErrLocked, pttl: n}
	}
	return nodeVote{ok: true, counter: n}
}

// decodeAcquire reads an acquire reply {flag, n}: flag 1 or 0.
func decodeAcquire(reply []interface{}) (acquired bool, n int64, err error) {
	if len(reply) != 2 {
		return false, 0, fmt.Errorf("redlock: acquire: unexpected reply of %d elements", len(reply))
	}
	flag, err := redis.Int64(reply[0], nil)
	if err != nil || (flag != 0 && flag != 1) {
		return false, 0, fmt.Errorf("redlock: acquire: unexpected reply %v", reply[0])
	}
	n, err = redis.Int64(reply[1], nil)
	if err != nil {
		return false, 0, fmt.Errorf("redlock: acquire: unexpected ttl %v", reply[1])
	}
	return flag == 1, n, nil
}

// voteExtend and voteFence: 1 is ok, 0 is ErrNotHeld.
func voteExtend(reply interface{}, err error) nodeVote {
	n, err := extendReply(reply, err)
	return countVote(n, err, 1)
}

func voteFence(reply interface{}, err error) nodeVote {
	n, err := fenceReply(reply, err)
	return countVote(n, err, 1)
}

// voteRelease returns the decoder of release.lua's reply for a lock of
// keys keys: the node agrees when it deleted every key.
func voteRelease(keys int) func(reply interface{}, err error) nodeVote {
	if keys == 1 {
		return voteRelease1
	}
	return func(reply interface{}, err error) nodeVote {
		n, err := releaseReply(reply, err)
		return countVote(n, err, int64(keys))
	}
}

// voteRelease1 is voteRelease(1).
func voteRelease1(reply interface{}, err error) nodeVote {
	n, err := releaseReply(reply, err)
	return countVote(n, err, 1)
}

// voteNone ignores the reply (a cleanup nobody waits for), but keeps a
// failure for the observers.
func voteNone(_ interface{}, err error) nodeVote { return nodeVote{err: err} }

// countVote reads a count of keys our token held: the node agrees when
// the count is want (every key).
func countVote(n int64, err error, want int64) nodeVote {
	switch {
	case err != nil:
		return nodeVote{err: err}
	case n != want:
		return nodeVote{err: ErrNotHeld}
	}
	return nodeVote{ok: true}
}

// inspectVoter returns the decoder of inspect.lua's reply: ok when
// held(holder).
func inspectVoter(held func(holder string) bool) func(reply interface{}, err error) nodeVote {
	return func(reply interface{}, err error) nodeVote {
		vals, err := inspectReply(reply, err)
		if err != nil {
			return nodeVote{err: err}
		}
		holder, pttl, err := decodeInspect(vals)
		if err != nil {
			return nodeVote{err: err}
		}
		return nodeVote{ok: held(holder), text: holder, pttl: pttl}
	}
}

// decodeInspect reads inspect.lua's reply {holder, pttl}.
func decodeInspect(reply []interface{}) (holder string, pttl int64, err error) {
	if len(reply) != 2 {
		return "", 0, fmt.Errorf("redlock: inspect: unexpected reply of %d elements", len(reply))
	}
	holder, err = redis.String(reply[0], nil)
	if err != nil {
		return "", 0, fmt.Errorf("redlock: inspect: unexpected holder %v", reply[0])
	}
	pttl, err = redis.Int64(reply[1], nil)
	if err != nil {
		return "", 0, fmt.Errorf("redlock: inspect: unexpected ttl %v", reply[1])
	}
	return holder, pttl, nil
}

// voteDigest reads SCRIPT LOAD's reply: the script's SHA1.
func voteDigest(reply interface{}, err error) nodeVote {
	sum, err := redis.String(reply, err)
	if err != nil {
		return nodeVote{err: err}
	}
	return nodeVote{ok: true, text: sum}
}
