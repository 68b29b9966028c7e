package redlock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/redlock-go/redlock/internal/pipe"
)

// node is one Redlock node as the Manager sees it: how to reach it, a name
// that is safe to print, and its transport once the Manager built it.
type node struct {
	name string // address with any password redacted
	// dial returns a new connection to the node: dialled (interruptible:
	// Close unblocks its reader) or borrowed from a caller's pool.
	dial          func(ctx context.Context) (redis.Conn, error)
	interruptible bool
	close         func() error // releases what the instance built (the Sentinel client); may be nil

	// Sentinel groups only: failover replies are retried once on the new
	// master, and writes wait for MinReplicaAcks (see Sentinel).
	sentinel   bool
	acks       int
	ackTimeout time.Duration

	wire  wire          // the pipelined transport; set by New
	guard *restartGuard // nil: restart guard off

	events func(Event)   // the Manager's observers (observe.go); nil without
	down   atomic.Bool   // the last connection attempt failed (EventNodeDown sent)
	sn     *sentinelNode // Sentinel groups: reports failovers to events
}

// wire is the transport of one node (internal/pipe): it queues requests,
// keeps their order, and hands each its reply exactly once.
type wire interface {
	Submit(r pipe.Request)
	Close()
}

// connect builds n's transport for m.
func (n *node) connect(m *Manager) {
	dial := n.dial
	if n.events != nil {
		dial = func(ctx context.Context) (redis.Conn, error) {
			c, err := n.dial(ctx)
			if err != nil {
				n.failed(err)
			}
			return c, err
		}
		if n.sn != nil {
			n.sn.report = func(old, cur string) {
				n.events(Event{Kind: EventFailover, Node: n.name, Detail: old + " -> " + cur})
			}
		}
	}
	o := pipe.Options{
		Dial:          dial,
		Hello:         n.hello,
		HelloTimeout:  DefaultDialTimeout,
		Timeout:       m.cfg.nodeTimeout,
		Interruptible: n.interruptible,
		Fatal:         func(e redis.Error) bool { return isFailoverReply(e) },
	}
	if n.acks > 0 {
		ms := min(n.ackTimeout, m.cfg.nodeTimeout-m.cfg.nodeTimeout/5).Milliseconds()
		args := []interface{}{n.acks, max(ms, 1)} // WAIT n 0 would block for ever
		o.Barrier = func() (string, []interface{}) { return "WAIT", args }
	}
	n.wire = pipe.New(o)
}

// shutdown releases what the Manager holds for this node.
func (n *node) shutdown() error {
	if n.wire != nil {
		n.wire.Close()
	}
	if n.close != nil {
		return n.close()
	}
	return nil
}

// hello runs on every new connection of the node's transport, before any
// other command, in one round trip: SCRIPT LOAD of every script, then
// INFO server for the restart guard.
//
// Loading first is what keeps commands in order on a node. A request
// answered NOSCRIPT is resent as EVAL behind whatever was pipelined after
// it, so on a server that knew release.lua but not acquire.lua, the release
// queued by a failed Lock would run before the acquire it cleans up, and
// the key would stay until its TTL. With every script loaded when the
// connection opens, NOSCRIPT can only follow a SCRIPT FLUSH while the
// connection is in use; then, at worst, such a key outlives its release
// until its TTL (liveness, never mutual exclusion: a resent acquire or
// extend never overrides another token).
//
// Error replies (an ACL user without +script or +info) are ignored: the
// NOSCRIPT fallback still works, and the guard has nothing to watch. A
// transport error fails the connection.
func (n *node) hello(ctx context.Context, c redis.Conn) error {
	for _, s := range scriptRegistry {
		if err := c.Send("SCRIPT", "LOAD", s.Source); err != nil {
			return err
		}
	}
	if err := c.Send("INFO", "server"); err != nil {
		return err
	}
	// DoWithTimeout, not DoContext: a read deadline bounds it without a
	// goroutine per dial (a paused node is redialled over and over).
	timeout := DefaultDialTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(d), time.Millisecond)
	}
	reply, err := redis.DoWithTimeout(c, timeout, "")
	if err != nil && err.Error() == "redis: connection does not support ConnWithTimeout" {
		reply, err = redis.DoContext(c, ctx, "") // a pooled connection of a wrapping Dial
	}
	replies, err := redis.Values(reply, err)
	if err != nil {
		n.failed(err)
		return err
	}
	if len(replies) != len(scriptRegistry)+1 {
		return fmt.Errorf("redlock: %d replies to %d commands", len(replies), len(scriptRegistry)+1)
	}
	if info, err := redis.String(replies[len(scriptRegistry)], nil); err == nil {
		if n.guard.observe(infoField(info, "run_id")) && n.events != nil {
			n.events(Event{Kind: EventQuarantine, Node: n.name})
		}
	}
	if n.events != nil && n.down.Swap(false) {
		n.events(Event{Kind: EventNodeUp, Node: n.name})
	}
	return nil
}

// failed reports a failed connection attempt: EventNodeDown once, until
// the node is connected again.
func (n *node) failed(err error) {
	if n.events != nil && !n.down.Swap(true) {
		n.events(Event{Kind: EventNodeDown, Node: n.name, Err: err})
	}
}

// call is one request of a round on one node, and the rules that apply to
// every reply: the NOSCRIPT fallback, the Sentinel retry after a failover,
// the replica acknowledgement, the restart guard. It goes back to callPool
// once its vote is delivered.
type call struct {
	r    *round
	n    *node
	node int // n's index in the Manager
	seq  int // for rounds with several requests per node

	cmd     string // EVALSHA, EVAL, SCRIPT...
	args    []interface{}
	script  *luaScript // for the EVAL fallback; nil for other commands
	decode  func(reply interface{}, err error) nodeVote
	kind    callKind
	ack     bool      // a write that waits for replica acknowledgements
	retried bool      // the Sentinel retry was spent
	sent    time.Time // first submitted, to bound the retry
	wg      *sync.WaitGroup
}

// callKind says how the restart guard treats a node's answer.
type callKind uint8

const (
	unguarded callKind = iota // release, SCRIPT LOAD: every answer counts
	write                     // acquire, extend, fence: a quarantined node's yes does not count
	read                      // inspect: a quarantined node's "not held" does not count
)

var callPool = sync.Pool{New: func() interface{} { return new(call) }}

// Command implements pipe.Request.
func (c *call) Command() (string, []interface{}, bool) { return c.cmd, c.args, c.ack }

// Done implements pipe.Request: it turns the reply into the node's vote.
func (c *call) Done(reply interface{}, err error, ack interface{}) {
	if err != nil && c.script != nil && c.cmd == "EVALSHA" && isNoScript(err) {
		// The node lost its script cache (SCRIPT FLUSH): send the source.
		c.cmd, c.args = "EVAL", evalArgs(c.script, c.args)
		c.n.wire.Submit(c)
		return
	}
	if err != nil && c.n.sentinel && !c.retried && masterMoved(err) && time.Since(c.sent) < c.r.m.cfg.nodeTimeout {
		// The master moved: the transport has dropped the connection, so
		// this goes to the master the sentinels name now. Every script is
		// safe to repeat.
		c.retried = true
		c.n.wire.Submit(c)
		return
	}
	v := c.decode(reply, err)
	v.node, v.seq = c.node, c.seq
	if v.ok && c.ack {
		v = c.acked(v, ack)
	}
	if c.kind != unguarded && v.err == nil && c.n.guard.quarantined() && (c.kind == write || !v.ok) {
		v.ok, v.err = false, errRestarted
	}
	r, wg := c.r, c.wg
	*c = call{}
	callPool.Put(c)
	r.vote(v)
	wg.Done()
}

// acked checks the replica acknowledgement of a successful write.
func (c *call) acked(v nodeVote, ack interface{}) nodeVote {
	n, err := redis.Int(ack, nil)
	if e, ok := ack.(error); ok {
		err = e
	}
	switch {
	case err != nil:
		v.ok, v.err = false, fmt.Errorf("redlock: WAIT for replica acknowledgement: %w", err)
	case n < c.n.acks:
		v.ok, v.err = false, fmt.Errorf("%w: %d of %d replicas acknowledged the write (MinReplicaAcks)", ErrUnavailable, n, c.n.acks)
	}
	return v
}

// submit sends one request of round r to node i; Close waits for it.
func (m *Manager) submit(r *round, i int, cmd string, args []interface{}, s *luaScript,
	decode func(interface{}, error) nodeVote, kind callKind, seq int) {
	n := m.nodes[i]
	c := callPool.Get().(*call)
	*c = call{r: r, n: n, node: i, seq: seq, cmd: cmd, args: args, script: s, decode: decode, kind: kind,
		ack: kind == write && n.acks > 0, wg: &m.wg}
	if n.sentinel {
		c.sent = time.Now() // bounds the retry
	}
	m.wg.Add(1) // Close waits for the stragglers too
	r.refs.Add(1)
	n.wire.Submit(c)
}

// errRestarted is the vote of a quarantined node.
var errRestarted = errors.New("redlock: node restarted recently; its vote is ignored for one max TTL (restart guard)")
