package redlock

import (
	"context"
	"fmt"
	"sync"

	"github.com/gomodule/redigo/redis"
)

// The asynchronous path: on nodes whose connection redlock owns (a mux) and
// that is up, a round does not start a goroutine per node. It queues the
// same EVALSHA on every node's pipelined connection and the readers hand
// each reply to the round (asyncDone). This is the hot path of Lock, Extend
// and Unlock: no goroutine, context or argument slice per node, and a
// paused node costs a queued command, not a parked goroutine. Nodes without
// a ready connection (first use, redial, Sentinel, caller-owned Pool) take
// the goroutine path with the generated wrappers; both paths build their
// arguments with scriptArgs and fall back to EVAL on NOSCRIPT the same way.

// asyncOp is one script sent alike to every node of a round.
type asyncOp struct {
	script  *luaScript
	args    []interface{} // EVALSHA arguments, shared by all nodes: never written to
	decode  func(reply interface{}, err error) nodeVote
	guarded bool // see fanout
}

// errNoReply is the vote of a node that did not answer within the node
// timeout on the asynchronous path.
var errNoReply = fmt.Errorf("redlock: no reply within the node timeout: %w", context.DeadlineExceeded)

// scriptArgs builds EVALSHA's arguments: digest, key count, keys, argv.
func scriptArgs(s *luaScript, keys []string, argv ...interface{}) []interface{} {
	args := make([]interface{}, 0, 2+len(keys)+len(argv))
	args = append(args, s.sha1Arg, len(keys))
	for _, k := range keys {
		args = append(args, k)
	}
	return append(args, argv...)
}

// boxedArgs keeps an acquire's arguments for the lock's later calls.
func boxedArgs(op *asyncOp) []interface{} {
	if op == nil {
		return nil
	}
	return op.args
}

// args builds the arguments of extend.lua (ttlMS >= 0) or release.lua
// (ttlMS < 0) for l, reusing the keys, token and ttl the acquire already
// boxed: one allocation instead of one per argument.
func (l *Lock) args(s *luaScript, ttlMS int64) []interface{} {
	n := len(l.keys)
	if l.boxed == nil {
		if ttlMS < 0 {
			return scriptArgs(s, l.keys, l.token)
		}
		return scriptArgs(s, l.keys, l.token, ttlMS)
	}
	// l.boxed: digest, key count, keys..., token, ttl
	size := 3 + n
	if ttlMS >= 0 {
		size++
	}
	out := make([]interface{}, size)
	out[0] = s.sha1Arg
	copy(out[1:], l.boxed[1:3+n])
	if ttlMS >= 0 {
		if ttlMS == l.ttl.Milliseconds() {
			out[3+n] = l.boxed[3+n]
		} else {
			out[3+n] = ttlMS
		}
	}
	return out
}

// evalArgs turns EVALSHA arguments into EVAL's, for the NOSCRIPT fallback.
func evalArgs(s *luaScript, args []interface{}) []interface{} {
	out := make([]interface{}, len(args))
	copy(out, args)
	out[0] = s.source
	return out
}

// submit queues op on node i's pipelined connection (see mux.submit); a
// node that cannot take it votes at once with the error.
func (r *round) submit(i int, n *node, op *asyncOp) {
	cl := callPool.Get().(*call)
	cl.cmd, cl.args, cl.onDone = "EVALSHA", op.args, asyncDone
	cl.r, cl.node, cl.script, cl.decode, cl.guarded = r, i, op.script, op.decode, op.guarded
	cl.wg = &r.m.wg // Close waits for the stragglers too
	r.m.wg.Add(1)
	r.done.Add(1)
	if err := n.mux.submit(cl); err != nil {
		cl.err = err
		asyncDone(cl)
	}
}

// release queues a release of keys/token on node i and forgets it; wg
// tracks it until the node answered (Manager.Close waits for it).
func releaseAsync(m *mux, wg *sync.WaitGroup, args []interface{}) {
	cl := callPool.Get().(*call)
	cl.cmd, cl.args, cl.onDone = "EVALSHA", args, asyncDone
	cl.script, cl.wg = &releaseScript, wg
	wg.Add(1)
	if err := m.submit(cl); err != nil {
		cl.err = err
		asyncDone(cl)
	}
}

// asyncDone finishes an asynchronous call: the reader (or fail) runs it
// with the reply.
func asyncDone(cl *call) {
	if cl.err != nil && cl.cmd == "EVALSHA" && isNoScript(cl.err) {
		cl.cmd, cl.args, cl.reply, cl.err = "EVAL", evalArgs(cl.script, cl.args), nil, nil
		if err := cl.conn.enqueue(cl); err == nil {
			return // asyncDone runs again with the EVAL's reply
		} else {
			cl.err = err
		}
	}
	r, i, wg := cl.r, cl.node, cl.wg
	var v nodeVote
	if r != nil {
		v = cl.decode(cl.reply, cl.err)
		v.node = i
		if cl.guarded && v.err == nil && r.m.nodes[i].guard.quarantined() {
			v.ok, v.err = false, errRestarted
		}
	}
	if !cl.abandoned { // an abandoned call is still in the pipeline: never reuse it
		*cl = call{done: cl.done}
		callPool.Put(cl)
	}
	if r != nil {
		r.ch <- v // buffered for every node: never blocks
		r.done.Done()
	}
	if wg != nil {
		wg.Done()
	}
}

// voteAcquire reads the reply of acquire.lua or acquire_fenced.lua as a
// vote: {1, n} is ok with counter n (the fencing counter; acquire.lua's ttl,
// unused), {0, pttl} is ErrLocked.
func voteAcquire(reply interface{}, err error) nodeVote {
	vals, err := redis.Values(reply, err)
	if err != nil {
		return nodeVote{err: err}
	}
	ok, pttl, err := decodeAcquire(vals)
	switch {
	case err != nil:
		return nodeVote{err: err}
	case !ok:
		return nodeVote{err: ErrLocked, pttl: pttl}
	}
	return nodeVote{ok: true, counter: pttl}
}

// voteHeld returns a decoder of a reply that counts the keys our token
// held: extend.lua and fence.lua answer 1 or 0, release.lua the keys it
// deleted. A node agrees when the count is want (every key).
func voteHeld(want int64) func(reply interface{}, err error) nodeVote {
	if want == 1 {
		return voteHeld1
	}
	return heldVoter(want)
}

// voteHeld1 is voteHeld(1), made once.
var voteHeld1 = heldVoter(1)

func heldVoter(want int64) func(reply interface{}, err error) nodeVote {
	return func(reply interface{}, err error) nodeVote {
		n, err := redis.Int64(reply, err)
		switch {
		case err != nil:
			return nodeVote{err: err}
		case n != want:
			return nodeVote{err: ErrNotHeld}
		}
		return nodeVote{ok: true}
	}
}
