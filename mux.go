package redlock

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"
)

// A mux is the transport of one node whose pool redlock built: ONE
// connection that every concurrent caller shares. Commands are queued, a
// writer goroutine sends whatever is queued and flushes once (automatic
// pipelining), and a reader goroutine matches replies to callers in order.
//
// Why: a lock cycle costs one script per node, so the cost per command is
// what matters. Pipelining turns N concurrent callers into one write and one
// read syscall per batch instead of N of each, and a connection pool into a
// single socket per node.
//
// Faults: no command is waited for longer than the node timeout: a
// watchdog completes older ones with errNoReply (their replies, if they ever
// come, are read and dropped in order). When the oldest command in flight
// has waited twice the node timeout, the node counts as stalled (paused,
// overloaded or cut off) and new commands fail at once; after three node
// timeouts the connection is closed and the next command dials a new one
// (with backoff; while a redial follows a failure, commands fail at once
// instead of waiting for it). A reply that says the node cannot write
// (READONLY, LOADING, MASTERDOWN: a failover) closes the connection too, so
// the next dial asks Sentinel again. Commands on one connection run in the
// order they were queued, which is what lets a failed Lock release a key
// right after an acquire whose reply is late, and Unlock follow the lock's
// own acquire. Asynchronous calls queued while the first connection is
// dialled wait for it, in order, within the node timeout.
type mux struct {
	dial       func(ctx context.Context) (redis.Conn, error)
	base       context.Context // cancelled by Manager.Close
	stallAfter time.Duration   // the node timeout

	mu       sync.Mutex    // protects the fields below
	conn     *muxConn      // current connection; nil or broken: dial
	dialing  chan struct{} // closed when the dial in progress ends
	dialErr  error         // last dial error, returned until nextDial
	nextDial time.Time
	backoff  time.Duration
	later    []*call // asynchronous calls queued while the connection is dialled
	closed   bool
	watching bool           // the watchdog runs
	stop     chan struct{}  // closed by close: ends the watchdog
	wg       sync.WaitGroup // dialer, readers, writers
}

// errStalled is the vote of a node whose oldest command went unanswered for
// longer than the node timeout.
var errStalled = errors.New("redlock: node not answering (commands in flight past the node timeout)")

// errMuxClosed fails the commands of a connection closed by Manager.Close.
var errMuxClosed = errors.New("redlock: connection closed")

const (
	minDialBackoff = 20 * time.Millisecond
	maxDialBackoff = time.Second
	maxInFlight    = 1 << 14 // queued + unanswered commands per node
)

func newMux(base context.Context, stallAfter time.Duration, dial func(ctx context.Context) (redis.Conn, error)) *mux {
	return &mux{dial: dial, base: base, stallAfter: stallAfter, stop: make(chan struct{})}
}

// startWatch starts the watchdog on first use (a Manager never used runs
// no goroutine); m.mu is held.
func (m *mux) startWatch() {
	if !m.watching {
		m.watching = true
		m.wg.Add(1)
		go m.watch()
	}
}

// watch is the mux's watchdog: every quarter of the node timeout it gives
// up on commands that waited longer than the node timeout (they complete
// with errNoReply, so no caller and no Close waits longer than that for a
// hung node) and closes a connection stalled for three node timeouts.
func (m *mux) watch() {
	defer m.wg.Done()
	t := time.NewTicker(max(m.stallAfter/4, 5*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case now := <-t.C:
			m.expire(now)
		}
	}
}

// expire completes, with errNoReply, every command queued longer than the
// node timeout.
func (m *mux) expire(now time.Time) {
	var late []*call
	m.mu.Lock()
	keep := m.later[:0]
	for _, cl := range m.later {
		if now.Sub(cl.queued) > m.stallAfter {
			late = append(late, cl) // never sent: simply dropped
		} else {
			keep = append(keep, cl)
		}
	}
	clear(m.later[len(keep):])
	m.later = keep
	c := m.conn
	m.mu.Unlock()
	if c != nil {
		late = append(late, c.expire(now)...)
		c.healthy() // closes it if stalled for long
	}
	failCalls(late, errNoReply)
}

// expire marks the commands queued longer than the node timeout as
// abandoned and returns them for completion. They stay in the pipeline
// (the reply still has to be read in order) but nobody waits for them.
func (mc *muxConn) expire(now time.Time) []*call {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	var late []*call
	for _, q := range [][]*call{mc.pending, mc.queue} {
		for _, cl := range q {
			if !cl.abandoned && now.Sub(cl.queued) > mc.m.stallAfter {
				cl.abandoned = true
				late = append(late, cl)
			}
		}
	}
	return late
}

// get returns a healthy connection, dialling one if needed, within ctx.
func (m *mux) get(ctx context.Context) (*muxConn, error) {
	for {
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			return nil, ErrClosed
		}
		m.startWatch()
		if c := m.conn; c != nil {
			if c.healthy() {
				m.mu.Unlock()
				return c, nil
			}
			if c.brokenBy(errStalled) && m.dialErr == nil {
				// It hung: treat the redial like one after a failed dial
				// (callers fail at once instead of waiting for it).
				m.dialErr = errStalled
			}
		}
		if m.dialing == nil {
			if time.Now().Before(m.nextDial) {
				err := m.dialErr
				m.mu.Unlock()
				return nil, err
			}
			m.dialing = make(chan struct{})
			m.wg.Add(1)
			go m.redial(m.dialing)
		}
		if m.dialErr != nil {
			// The last dial failed too: callers fail at once rather than
			// pile up behind a dial to a node that may hang. (The first
			// dial, and the first redial after a broken connection, e.g.
			// to a newly promoted master, are waited for within ctx.)
			err := m.dialErr
			m.mu.Unlock()
			return nil, err
		}
		wait := m.dialing
		m.mu.Unlock()
		select {
		case <-wait:
			m.mu.Lock()
			c, err := m.conn, m.dialErr
			m.mu.Unlock()
			if c == nil || !c.healthy() {
				if err == nil {
					err = errStalled
				}
				return nil, err
			}
			return c, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// redial dials a connection in the background and publishes it.
func (m *mux) redial(done chan struct{}) {
	defer m.wg.Done()
	raw, err := m.dial(m.base)
	if err == nil {
		ctx, cancel := context.WithTimeout(m.base, DefaultDialTimeout) // bounded even on a paused node
		err = loadScripts(ctx, raw)
		cancel()
		if err != nil {
			raw.Close()
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	defer close(done)
	m.dialing = nil
	if err == nil && m.closed {
		raw.Close()
		err = ErrClosed
	}
	later := m.later
	m.later = nil
	if err != nil {
		m.backoff = min(max(2*m.backoff, minDialBackoff), maxDialBackoff)
		m.dialErr, m.nextDial = err, time.Now().Add(m.backoff)
		failCalls(later, err)
		return
	}
	m.backoff, m.dialErr = 0, nil
	m.conn = newMuxConn(m, raw)
	// Queued before anything that comes after the new connection is
	// published: per node, commands keep their order.
	for _, cl := range later {
		cl.conn = m.conn
		if err := m.conn.enqueue(cl); err != nil {
			failCalls([]*call{cl}, err)
		}
	}
}

// submit queues an asynchronous call without waiting: on the connection,
// or, while one is being dialled, until it is up (then in order). It fails
// at once when the node is closed, backing off after a failed dial, or
// being redialled after a failure. On error cl is the caller's again.
func (m *mux) submit(cl *call) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	m.startWatch()
	if c := m.conn; c != nil {
		if c.healthy() {
			cl.conn = c
			return c.enqueue(cl)
		}
		if c.brokenBy(errStalled) && m.dialErr == nil {
			m.dialErr = errStalled
		}
	}
	if m.dialing == nil {
		if time.Now().Before(m.nextDial) {
			return m.dialErr
		}
		m.dialing = make(chan struct{})
		m.wg.Add(1)
		go m.redial(m.dialing)
	}
	if m.dialErr != nil {
		return m.dialErr
	}
	if len(m.later) >= maxInFlight {
		return errStalled
	}
	cl.queued = time.Now()
	m.later = append(m.later, cl)
	return nil
}

// failCalls completes calls that will never be sent.
func failCalls(calls []*call, err error) {
	for _, cl := range calls {
		cl.reply, cl.err = nil, err
		cl.complete()
	}
}

// close fails everything in flight and waits for the goroutines.
func (m *mux) close() {
	m.mu.Lock()
	m.closed = true
	c := m.conn
	close(m.stop)
	m.mu.Unlock()
	if c != nil {
		c.fail(errMuxClosed)
	}
	m.wg.Wait()
}

// muxConn is one pipelined connection.
type muxConn struct {
	m    *mux
	c    redis.Conn
	wake chan struct{} // cap 1: there is something to write

	mu      sync.Mutex // protects the fields below
	queue   []*call    // waiting to be written
	pending []*call    // written, waiting for their reply, oldest first
	pendBuf []*call    // the array under pending, reused once pending is empty
	broken  error      // set once; then the connection is closed
}

// call is one command and, once answered, its reply.
type call struct {
	cmd  string
	args []interface{}
	sent time.Time // written to the connection
	// queued is when the caller handed it over; abandoned is set (under the
	// connection's mutex) once the watchdog gave up on it: the reader then
	// drops its reply, and the call is never reused.
	queued    time.Time
	abandoned bool
	reply     interface{}
	err       error
	done      chan struct{} // cap 1: signalled on completion (synchronous callers)

	// Asynchronous calls (see round.submit) have onDone instead, run by
	// the reader (or by fail) with the reply; they carry their context.
	onDone  func(cl *call)
	conn    *muxConn   // where it was queued, to resend after NOSCRIPT
	r       *round     // the round it votes in
	node    int        // the node's index in the round
	script  *luaScript // for the EVAL fallback
	decode  func(reply interface{}, err error) nodeVote
	guarded bool            // see fanout
	wg      *sync.WaitGroup // fire-and-forget calls (a release): Done when answered
}

// complete hands a finished call to its owner.
func (cl *call) complete() {
	if cl.onDone != nil {
		cl.onDone(cl)
		return
	}
	cl.done <- struct{}{}
}

var callPool = sync.Pool{New: func() interface{} { return &call{done: make(chan struct{}, 1)} }}

func newMuxConn(m *mux, c redis.Conn) *muxConn {
	mc := &muxConn{m: m, c: c, wake: make(chan struct{}, 1)}
	m.wg.Add(2)
	go mc.writeLoop()
	go mc.readLoop()
	return mc
}

// healthy reports whether new commands may be queued; it closes a
// connection stalled for three node timeouts.
func (mc *muxConn) healthy() bool {
	mc.mu.Lock()
	broken := mc.broken != nil
	stalled := len(mc.pending) > 0 && time.Since(mc.pending[0].sent) > 3*mc.m.stallAfter
	mc.mu.Unlock()
	if stalled {
		mc.fail(errStalled)
		return false
	}
	return !broken
}

// brokenBy reports whether the connection was broken by err.
func (mc *muxConn) brokenBy(err error) bool {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	return mc.broken == err
}

// do queues one command and waits for its reply within ctx.
func (mc *muxConn) do(ctx context.Context, cmd string, args []interface{}) (interface{}, error) {
	cl := callPool.Get().(*call)
	cl.cmd, cl.args = cmd, args
	if err := mc.enqueue(cl); err != nil {
		callPool.Put(cl)
		return nil, err
	}
	select {
	case <-cl.done:
		reply, err := cl.reply, cl.err
		if !cl.abandoned { // an abandoned call is still in the pipeline: never reuse it
			*cl = call{done: cl.done}
			callPool.Put(cl)
		}
		return reply, err
	case <-ctx.Done():
		return nil, ctx.Err() // cl is abandoned; the reader still owns it
	}
}

// enqueue queues cl for the writer without waiting. On error cl was not
// queued and is the caller's again.
func (mc *muxConn) enqueue(cl *call) error {
	mc.mu.Lock()
	switch {
	case mc.broken != nil:
		err := mc.broken
		mc.mu.Unlock()
		return err
	case len(mc.pending) > 0 && time.Since(mc.pending[0].sent) > 2*mc.m.stallAfter,
		len(mc.pending)+len(mc.queue) >= maxInFlight:
		mc.mu.Unlock()
		return errStalled
	}
	if cl.queued.IsZero() {
		cl.queued = time.Now()
	}
	mc.queue = append(mc.queue, cl)
	mc.mu.Unlock()
	select {
	case mc.wake <- struct{}{}:
	default:
	}
	return nil
}

func (mc *muxConn) writeLoop() {
	defer mc.m.wg.Done()
	var batch []*call
	type command struct {
		cmd  string
		args []interface{}
	}
	// The writer sends copies taken under mc.mu: once a call is in
	// pending, fail or the reader may complete it and its caller may reuse
	// it, so the writer must not read it after unlocking.
	var out []command
	for {
		<-mc.wake
		mc.mu.Lock()
		busy := len(mc.pending) > 0
		mc.mu.Unlock()
		if busy {
			// Commands in flight: let the other callers of this moment
			// queue too, so that one write carries many commands. (Idle:
			// send at once, for the lowest latency.)
			runtime.Gosched()
		}
		mc.mu.Lock()
		if mc.broken != nil {
			mc.mu.Unlock()
			return
		}
		batch, mc.queue = mc.queue, batch[:0]
		now := time.Now()
		out = out[:0]
		for _, cl := range batch {
			cl.sent = now
			out = append(out, command{cl.cmd, cl.args})
		}
		if len(mc.pending) == 0 {
			mc.pending = mc.pendBuf[:0]
		}
		if before := cap(mc.pending); len(mc.pending)+len(batch) > before {
			mc.pending = append(mc.pending, batch...)
			mc.pendBuf = mc.pending[:0] // a new array: reuse it from its start
		} else {
			mc.pending = append(mc.pending, batch...)
		}
		mc.mu.Unlock()
		clear(batch)
		var err error
		for _, c := range out {
			if err = mc.c.Send(c.cmd, c.args...); err != nil {
				break
			}
		}
		if err == nil {
			err = mc.c.Flush()
		}
		clear(out)
		if err != nil {
			mc.fail(err)
			return
		}
	}
}

func (mc *muxConn) readLoop() {
	defer mc.m.wg.Done()
	for {
		reply, err := mc.c.Receive()
		rerr, replyErr := err.(redis.Error) // an error reply, not a broken link
		if err != nil && !replyErr {
			mc.fail(err)
			return
		}
		mc.mu.Lock()
		if len(mc.pending) == 0 {
			mc.mu.Unlock()
			mc.fail(errors.New("redlock: reply without a command (protocol error)"))
			return
		}
		cl := mc.pending[0]
		mc.pending[0] = nil
		mc.pending = mc.pending[1:]
		abandoned := cl.abandoned // its owner has moved on: complete nothing
		mc.mu.Unlock()
		if replyErr && cannotWrite(rerr) {
			// Break the connection before the caller sees the reply, so
			// that its retry dials again (and asks Sentinel anew).
			mc.fail(fmt.Errorf("redlock: node cannot take writes: %w", rerr))
			if !abandoned {
				cl.reply, cl.err = reply, err
				cl.complete()
			}
			return
		}
		if !abandoned {
			cl.reply, cl.err = reply, err
			cl.complete()
		}
	}
}

// cannotWrite reports replies after which this connection must not be
// used again: the server is no longer (or not yet) a writable master.
func cannotWrite(e redis.Error) bool {
	s := string(e)
	return strings.HasPrefix(s, "READONLY") || strings.HasPrefix(s, "LOADING") || strings.HasPrefix(s, "MASTERDOWN")
}

// fail breaks the connection once: it is closed, and every command queued
// or in flight gets err.
func (mc *muxConn) fail(err error) {
	mc.mu.Lock()
	if mc.broken != nil {
		mc.mu.Unlock()
		return
	}
	mc.broken = err
	calls := append(mc.pending, mc.queue...)
	mc.pending, mc.queue = nil, nil
	mc.mu.Unlock()
	mc.c.Close()
	select { // let the writer see broken and exit
	case mc.wake <- struct{}{}:
	default:
	}
	for _, cl := range calls {
		if !cl.abandoned { // read without the lock: set before fail took the calls, never reset
			cl.reply, cl.err = nil, err
			cl.complete()
		}
	}
}

// muxHandle lets the generated script wrappers (which take a redis.Conn)
// run on a mux: only DoContext and Do are supported.
type muxHandle struct{ m *mux }

var errMuxUnsupported = errors.New("redlock: only Do and DoContext are supported on a shared connection")

func (h muxHandle) DoContext(ctx context.Context, cmd string, args ...interface{}) (interface{}, error) {
	c, err := h.m.get(ctx)
	if err != nil {
		return nil, err
	}
	return c.do(ctx, cmd, args)
}

func (h muxHandle) Do(cmd string, args ...interface{}) (interface{}, error) {
	return h.DoContext(h.m.base, cmd, args...)
}

func (h muxHandle) Close() error                      { return nil }
func (h muxHandle) Err() error                        { return nil }
func (h muxHandle) Send(string, ...interface{}) error { return errMuxUnsupported }
func (h muxHandle) Flush() error                      { return errMuxUnsupported }
func (h muxHandle) Receive() (interface{}, error)     { return nil, errMuxUnsupported }
func (h muxHandle) ReceiveContext(context.Context) (interface{}, error) {
	return nil, errMuxUnsupported
}
