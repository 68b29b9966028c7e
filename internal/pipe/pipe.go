// Package pipe is redlock's transport: one pipelined connection per node,
// shared by every concurrent caller.
//
// Requests are queued; a writer goroutine sends whatever is queued and
// flushes once (automatic pipelining), and a reader goroutine hands each
// reply to its request, in order. The pipe knows nothing of what the
// commands mean: it delivers replies, and its caller decides.
//
// Faults: no request waits longer than the timeout for its reply: a
// watchdog completes older ones with ErrNoReply (their replies, if they
// ever come, are read and dropped in order). When the oldest request in
// flight has waited twice the timeout, the connection counts as stalled and
// new requests fail at once; a stalled connection is dropped and the next
// request dials a new one (with backoff; while a redial follows a failure,
// requests fail at once instead of waiting for it). Requests on one pipe
// run on the node in the order they were submitted, also across a redial.
package pipe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"
)

// A Request is one command for the pipe.
type Request interface {
	// Command returns the command, its arguments (which the caller must not
	// change afterwards) and whether the reply needs the barrier (see
	// Options.Barrier). Submit reads it once.
	Command() (cmd string, args []interface{}, ack bool)
	// Done receives the reply, exactly once, from the pipe's goroutines or
	// from Submit itself. For a request with ack, ack holds the barrier's
	// reply (or an error) when reply is not an error; it is nil otherwise.
	Done(reply interface{}, err error, ack interface{})
}

// Options configure a pipe.
type Options struct {
	// Dial returns a new connection: dialled for the pipe, or borrowed
	// from a caller's redis.Pool (Close then gives it back).
	Dial func(ctx context.Context) (redis.Conn, error)
	// Hello runs on every new connection before any request, within
	// HelloTimeout; an error drops the connection like a failed dial.
	Hello        func(ctx context.Context, c redis.Conn) error
	HelloTimeout time.Duration
	// Timeout bounds the wait for one reply (the node timeout).
	Timeout time.Duration
	// Interruptible says that closing a connection from another goroutine
	// unblocks its reader and writer: true for connections redigo dialled
	// for the pipe. A caller's pooled connection is not (redigo's pooled
	// Close must not race its reader): a broken one is given back to the
	// pool once its reader stopped, which takes at most twice Timeout (the
	// read deadline), and the next connection is borrowed after that.
	Interruptible bool
	// Fatal reports error replies after which the connection must not be
	// used again (e.g. a server that stopped being a writable master).
	Fatal func(redis.Error) bool
	// Barrier, when set, is sent after every batch that holds a request
	// with ack; its reply is handed to each such request of the batch.
	Barrier func() (cmd string, args []interface{})
}

// Errors of requests that got no reply from the node.
var (
	// ErrNoReply: no reply within the timeout.
	ErrNoReply = fmt.Errorf("redlock: no reply within the node timeout: %w", context.DeadlineExceeded)
	// ErrStalled: the connection has requests unanswered for longer than
	// twice the timeout.
	ErrStalled = errors.New("redlock: node not answering (commands in flight past the node timeout)")
	// ErrClosed: the pipe was closed.
	ErrClosed = errors.New("redlock: connection closed")
	// errOrphan: a reply came with no request waiting for it.
	errOrphan = errors.New("redlock: reply without a command (protocol error)")
)

const (
	minDialBackoff = 20 * time.Millisecond
	maxDialBackoff = time.Second
	maxInFlight    = 1 << 14 // queued + unanswered requests per pipe
)

// Pipe is the transport of one node. It is safe for concurrent use.
type Pipe struct {
	o    Options
	base context.Context // ends the dial in progress when the pipe closes
	stop context.CancelFunc

	mu       sync.Mutex    // protects the fields below
	conn     *conn         // current connection; nil or broken: dial
	dialing  bool          // a dial is in progress
	dialErr  error         // last dial error, returned until nextDial
	nextDial time.Time     // no dial before this (backoff)
	backoff  time.Duration // wait after the next failed dial
	later    []entry       // requests queued while a connection is dialled
	released chan struct{} // closed once the previous connection was given up
	closed   bool
	watching bool           // the watchdog runs
	wg       sync.WaitGroup // dialer, watchdog, readers, writers
}

// New returns a pipe; it dials on first use.
func New(o Options) *Pipe {
	p := &Pipe{o: o, released: make(chan struct{})}
	close(p.released)
	p.base, p.stop = context.WithCancel(context.Background())
	return p
}

// entry is one request in a queue.
type entry struct {
	req       Request // nil for a barrier
	cmd       string
	args      []interface{}
	ack       bool
	queued    time.Time // submitted
	sent      time.Time // written to the connection
	abandoned bool      // completed by the watchdog; the reply is dropped
	bar       *barrier  // ack requests: the barrier after them; a barrier: itself
}

// barrier collects the ack requests of one batch whose reply came in.
type barrier struct {
	abandoned bool
	waiting   []answered
}

type answered struct {
	req   Request
	reply interface{}
}

// Submit queues r without waiting: on the connection, or, while one is
// dialled, until it is up. When the pipe is closed, backing off after a
// failed dial, or stalled, r.Done runs at once with the error.
func (p *Pipe) Submit(r Request) {
	cmd, args, ack := r.Command()
	e := entry{req: r, cmd: cmd, args: args, ack: ack, queued: time.Now()}
	p.mu.Lock()
	err, stalled, idle := p.submitLocked(e)
	p.mu.Unlock()
	switch {
	case stalled != nil:
		stalled.fail(ErrStalled) // outside p.mu: Done may submit again
	case idle != nil:
		idle.writeQueued()
	}
	if err != nil {
		r.Done(nil, err, nil)
	}
}

// submitLocked queues e; p.mu is held. It returns a connection that it
// found stalled, for the caller to fail once p.mu is released, or an idle
// one that e was queued on, for the caller to write to (see enqueue).
func (p *Pipe) submitLocked(e entry) (err error, stalled, idle *conn) {
	if p.closed {
		return ErrClosed, nil, nil
	}
	if !p.watching {
		p.watching = true
		p.wg.Add(1)
		go p.watch()
	}
	if c := p.conn; c != nil {
		broken, isStalled := c.state(e.queued)
		if broken == nil && !isStalled {
			write, err := c.enqueue(e, true)
			if write {
				idle = c
			}
			return err, nil, idle
		}
		if isStalled {
			stalled = c
		}
		if (isStalled || broken == ErrStalled) && p.dialErr == nil {
			// It hung: treat the redial like one after a failed dial
			// (requests fail at once instead of waiting for it).
			p.dialErr = ErrStalled
		}
	}
	if !p.dialing {
		if time.Now().Before(p.nextDial) {
			return p.dialErr, stalled, nil
		}
		p.dialing = true
		p.wg.Add(1)
		go p.redial(p.released)
	}
	if p.dialErr != nil {
		// The last dial failed too: fail at once rather than pile up
		// behind a dial to a node that may hang. (The first dial, and the
		// first redial after a broken connection, e.g. to a newly
		// promoted master, are waited for, within the timeout.)
		return p.dialErr, stalled, nil
	}
	if len(p.later) >= maxInFlight {
		return ErrStalled, stalled, nil
	}
	p.later = append(p.later, e)
	return nil, stalled, nil
}

// redial dials a connection in the background and publishes it. It waits
// until the previous connection was given up, so that a pipe never holds
// two connections to its node.
func (p *Pipe) redial(prev <-chan struct{}) {
	defer p.wg.Done()
	var raw redis.Conn
	err := ErrClosed
	select {
	case <-prev:
		raw, err = p.o.Dial(p.base)
		if err == nil && p.o.Hello != nil {
			ctx, cancel := context.WithTimeout(p.base, p.o.HelloTimeout) // bounded even on a paused node
			err = p.o.Hello(ctx, raw)
			cancel()
			if err != nil {
				raw.Close()
			}
		}
	case <-p.base.Done():
	}
	p.mu.Lock()
	p.dialing = false
	if err == nil && p.closed {
		raw.Close()
		err = ErrClosed
	}
	later := p.later
	p.later = nil
	if err != nil {
		p.backoff = min(max(2*p.backoff, minDialBackoff), maxDialBackoff)
		p.dialErr, p.nextDial = err, time.Now().Add(p.backoff)
		p.mu.Unlock()
		failEntries(later, err)
		return
	}
	p.backoff, p.dialErr = 0, nil
	p.released = make(chan struct{})
	p.conn = p.newConn(raw, p.released)
	// Queued before anything submitted after the connection is published:
	// per node, requests keep their order. All at once: queued one by one,
	// they could see the connection break on the first one's reply (e.g.
	// READONLY), and the rest would fail with ErrStalled and be resubmitted
	// ahead of the first one's retry (TestFatalReplyMovesFollowersToTheNextConnection).
	c := p.conn
	c.mu.Lock()
	err = c.broken // it broke at once (the node closed it): nothing was sent
	if err == nil {
		c.queue = append(c.queue, later...)
		later = nil
	}
	c.mu.Unlock()
	signal(c.wake)
	p.mu.Unlock()
	failEntries(later, err)
}

// failEntries completes requests that will never be sent.
func failEntries(es []entry, err error) {
	for _, e := range es {
		e.req.Done(nil, err, nil)
	}
}

// Close fails every request in flight, gives the connection up (back to
// its pool when it came from one) and waits for the pipe's goroutines.
func (p *Pipe) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	c := p.conn
	later := p.later
	p.later = nil
	p.mu.Unlock()
	p.stop()
	failEntries(later, ErrClosed)
	if c != nil {
		c.fail(ErrClosed)
	}
	p.wg.Wait()
}

// watch is the pipe's watchdog: every quarter of the timeout it gives up
// on requests that waited longer than the timeout, so that no caller waits
// longer than that for a hung node, and drops a stalled connection.
func (p *Pipe) watch() {
	defer p.wg.Done()
	t := time.NewTicker(max(p.o.Timeout/4, 5*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-p.base.Done():
			return
		case now := <-t.C:
			p.expire(now)
		}
	}
}

// expire completes, with ErrNoReply, every request waiting longer than
// the timeout.
func (p *Pipe) expire(now time.Time) {
	var late []entry
	p.mu.Lock()
	keep := p.later[:0]
	for _, e := range p.later {
		if now.Sub(e.queued) > p.o.Timeout {
			late = append(late, e) // never sent: simply dropped
		} else {
			keep = append(keep, e)
		}
	}
	clear(p.later[len(keep):])
	p.later = keep
	c := p.conn
	p.mu.Unlock()
	failEntries(late, ErrNoReply)
	if c != nil {
		c.expire(now)
		if _, stalled := c.state(now); stalled {
			c.fail(ErrStalled)
		}
	}
}

// conn is one pipelined connection.
type conn struct {
	p        *Pipe
	c        redis.Conn
	wake     chan struct{} // cap 1: there is something to write
	readable chan struct{} // cap 1: there is something to read
	released chan struct{} // closed once c is given up
	exited   int           // loops that ended (under mu); the second one gives c up

	mu         sync.Mutex // protects the fields below
	queue      []entry    // waiting to be written
	pending    []entry    // written, waiting for their reply, oldest first
	pendBuf    []entry    // the array under pending, reused once pending is empty
	broken     error      // set once; then the connection is given up
	noDeadline bool       // c cannot take a read deadline (a wrapped pooled connection)
	barriers   int        // barriers written and not yet answered: the writer waits
	writing    bool       // a goroutine is writing: the writer, or a caller on an idle connection
}

func (p *Pipe) newConn(c redis.Conn, released chan struct{}) *conn {
	mc := &conn{p: p, c: c, wake: make(chan struct{}, 1), readable: make(chan struct{}, 1), released: released}
	p.wg.Add(2)
	go mc.writeLoop()
	go mc.readLoop()
	return mc
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// state returns what broke the connection, if anything, and whether it is
// stalled: its oldest request went unanswered for three timeouts, so it
// must be dropped (by the caller, with fail).
func (mc *conn) state(now time.Time) (broken error, stalled bool) {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	stalled = mc.broken == nil && len(mc.pending) > 0 && now.Sub(mc.pending[0].sent) > 3*mc.p.o.Timeout
	return mc.broken, stalled
}

// enqueue queues e for the writer. On error e was not queued. With direct,
// it may instead report that the connection is idle: the caller must then
// call writeQueued, holding no lock.
func (mc *conn) enqueue(e entry, direct bool) (write bool, err error) {
	mc.mu.Lock()
	switch {
	case mc.broken != nil:
		err := mc.broken
		mc.mu.Unlock()
		return false, err
	case len(mc.pending) > 0 && e.queued.Sub(mc.pending[0].sent) > 2*mc.p.o.Timeout,
		len(mc.pending)+len(mc.queue) >= maxInFlight:
		mc.mu.Unlock()
		return false, ErrStalled
	}
	mc.queue = append(mc.queue, e)
	if !direct || mc.writing || len(mc.pending) > 0 || len(mc.queue) > 1 || mc.barriers > 0 || !small(e.args) {
		mc.mu.Unlock()
		signal(mc.wake)
		return false, nil
	}
	// The connection is idle: nothing in flight, so the socket's buffers
	// are empty and one small command cannot block. The caller writes it
	// itself (writeQueued), saving the writer goroutine's wake-up: the
	// latency of an uncontended Lock (bench/ BenchmarkCycle p1).
	mc.writing = true
	mc.mu.Unlock()
	return true, nil
}

// writeQueued writes what is queued on the caller's goroutine, after
// enqueue reported an idle connection (and set writing); no lock is held.
func (mc *conn) writeQueued() {
	var buf [2]wireCmd
	mc.mu.Lock()
	out := mc.take(buf[:0], time.Now())
	mc.mu.Unlock()
	err := mc.write(out)
	mc.mu.Lock()
	mc.writing = false
	more := len(mc.queue) > 0
	mc.mu.Unlock()
	if err != nil {
		mc.fail(err)
	} else if more {
		signal(mc.wake)
	}
}

// small reports whether a command's arguments are a few KiB at most.
func small(args []interface{}) bool {
	n := 0
	for _, a := range args {
		if s, ok := a.(string); ok {
			n += len(s)
		}
	}
	return n <= 4<<10
}

// wireCmd is one command as the writer sends it.
type wireCmd struct {
	cmd  string
	args []interface{}
}

// take moves the queue to pending, adding a barrier after ack requests,
// and returns the commands to write (appended to out); mc.mu is held and
// writing is set until the caller has written them.
func (mc *conn) take(out []wireCmd, now time.Time) []wireCmd {
	mc.writing = true
	var bar *barrier
	for i := range mc.queue {
		e := &mc.queue[i]
		e.sent = now
		out = append(out, wireCmd{e.cmd, e.args})
		if e.ack && mc.p.o.Barrier != nil {
			if bar == nil {
				bar = &barrier{}
			}
			e.bar = bar
		}
	}
	if len(mc.pending) == 0 {
		mc.pending = mc.pendBuf[:0]
	}
	before := cap(mc.pending)
	mc.pending = append(mc.pending, mc.queue...)
	if bar != nil {
		cmd, args := mc.p.o.Barrier()
		mc.pending = append(mc.pending, entry{cmd: cmd, args: args, queued: now, sent: now, bar: bar})
		out = append(out, wireCmd{cmd, args})
		mc.barriers++
	}
	if cap(mc.pending) > before {
		mc.pendBuf = mc.pending[:0] // a new array: reuse it from its start
	}
	clear(mc.queue)
	mc.queue = mc.queue[:0]
	signal(mc.readable)
	return out
}

// write sends out and flushes once; only the holder of writing calls it.
func (mc *conn) write(out []wireCmd) error {
	for _, c := range out {
		if err := mc.c.Send(c.cmd, c.args...); err != nil {
			return err
		}
	}
	return mc.c.Flush()
}

// expire completes the requests waiting longer than the timeout. They
// stay in the pipeline (the reply still has to be read in order) but
// nobody waits for them any more.
func (mc *conn) expire(now time.Time) {
	type late struct {
		req     Request
		waiting []answered // an abandoned barrier's requests
	}
	var out []late
	mc.mu.Lock()
	for _, q := range [][]entry{mc.pending, mc.queue} {
		for i := range q {
			e := &q[i]
			if e.abandoned || now.Sub(e.queued) <= mc.p.o.Timeout {
				continue
			}
			e.abandoned = true
			if e.req == nil { // a barrier
				e.bar.abandoned = true
				out = append(out, late{waiting: e.bar.waiting})
				e.bar.waiting = nil
			} else {
				out = append(out, late{req: e.req})
			}
		}
	}
	mc.mu.Unlock()
	for _, l := range out {
		if l.req != nil {
			l.req.Done(nil, ErrNoReply, nil)
		}
		for _, a := range l.waiting {
			a.req.Done(a.reply, nil, ErrNoReply)
		}
	}
}

func (mc *conn) writeLoop() {
	defer mc.exit()
	var out []wireCmd
	for {
		<-mc.wake
		mc.mu.Lock()
		busy := len(mc.pending) > 0
		mc.mu.Unlock()
		if busy {
			// Requests in flight: let the other callers of this moment
			// queue too, so that one write carries many commands. (Idle:
			// send at once, for the lowest latency.)
			runtime.Gosched()
		}
		mc.mu.Lock()
		if mc.broken != nil {
			mc.mu.Unlock()
			return
		}
		if mc.barriers > 0 || mc.writing || len(mc.queue) == 0 {
			// A barrier (WAIT) blocks the node's connection until it is
			// answered: everything queued meanwhile waits here instead and
			// leaves as one batch, with one barrier, once it is (the
			// reader wakes us). A caller writing on an idle connection
			// wakes us when it is done.
			mc.mu.Unlock()
			continue
		}
		out = mc.take(out[:0], time.Now())
		mc.mu.Unlock()
		err := mc.write(out)
		clear(out)
		mc.mu.Lock()
		mc.writing = false
		mc.mu.Unlock()
		if err != nil {
			mc.fail(err)
			return
		}
	}
}

// receive reads one reply. A borrowed connection is read within twice the
// timeout when it takes a read deadline (a dialled one is closed by the
// watchdog when it stalls).
func (mc *conn) receive() (interface{}, error) {
	if !mc.p.o.Interruptible && !mc.noDeadline {
		reply, err := redis.ReceiveWithTimeout(mc.c, 2*mc.p.o.Timeout)
		if err == nil || err.Error() != "redis: connection does not support ConnWithTimeout" {
			return reply, err
		}
		mc.noDeadline = true // read by the reader only
	}
	return mc.c.Receive()
}

func (mc *conn) readLoop() {
	defer mc.exit()
	for {
		if !mc.p.o.Interruptible {
			// A borrowed connection is read only while a reply is due, so
			// that Close can give it back without racing a blocked read.
			// (A dialled one is read at once: Close unblocks it.)
			mc.mu.Lock()
			for len(mc.pending) == 0 && mc.broken == nil {
				mc.mu.Unlock()
				<-mc.readable
				mc.mu.Lock()
			}
			if mc.broken != nil && len(mc.pending) == 0 {
				mc.mu.Unlock()
				return
			}
			mc.mu.Unlock()
		}
		reply, err := mc.receive()
		rerr, isReply := err.(redis.Error) // an error reply, not a broken link
		if err != nil && !isReply {
			if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
				// The read deadline (twice the timeout) passed: the node
				// hung, as on a stalled connection, so the redial fails
				// requests at once (TestUnansweredRequestsFailWithinTheTimeout).
				err = ErrStalled
			}
			mc.fail(err)
			return
		}
		mc.mu.Lock()
		if mc.broken != nil && len(mc.pending) == 0 {
			// fail took the requests while we read: nothing to deliver
			mc.mu.Unlock()
			return
		}
		if len(mc.pending) == 0 {
			mc.mu.Unlock()
			mc.fail(errOrphan)
			return
		}
		e := mc.pending[0]
		mc.pending[0] = entry{}
		mc.pending = mc.pending[1:]
		if e.req == nil { // a barrier answered: the writer may go on
			mc.barriers--
			signal(mc.wake)
		}
		fatal := isReply && mc.p.o.Fatal != nil && mc.p.o.Fatal(rerr)
		if fatal && mc.broken == nil {
			// Broken before the request sees its reply, so that what it
			// submits next goes to a new connection, ahead of the
			// requests failed below.
			mc.broken = fmt.Errorf("redlock: node cannot take writes: %w", rerr)
		}
		var waiting []answered
		deliver := !e.abandoned
		switch {
		case e.abandoned:
		case e.req == nil: // the barrier's reply: for every ack request of its batch
			waiting = e.bar.waiting
			e.bar.waiting = nil
		case e.bar != nil && err == nil:
			if !e.bar.abandoned {
				e.bar.waiting = append(e.bar.waiting, answered{e.req, reply})
				deliver = false
			}
		}
		mc.mu.Unlock()
		switch {
		case !deliver:
		case e.req == nil:
			ack := reply
			if err != nil {
				ack = err
			}
			for _, a := range waiting {
				a.req.Done(a.reply, nil, ack)
			}
		case e.bar != nil && err == nil: // its barrier was abandoned
			e.req.Done(reply, nil, ErrNoReply)
		default:
			e.req.Done(reply, err, nil)
		}
		if fatal {
			mc.fail(mc.broken)
			return
		}
	}
}

// fail breaks the connection once: every request queued or in flight gets
// err, and the connection is given up.
func (mc *conn) fail(err error) {
	mc.mu.Lock()
	if mc.broken != nil && mc.queue == nil && mc.pending == nil {
		mc.mu.Unlock()
		return
	}
	if mc.broken == nil {
		mc.broken = err
	}
	err = mc.broken
	es := append(mc.pending, mc.queue...)
	mc.pending, mc.queue, mc.pendBuf = nil, nil, nil
	var waiting []answered
	for i := range es {
		if e := &es[i]; e.req == nil && !e.abandoned {
			waiting = append(waiting, e.bar.waiting...)
			e.bar.waiting = nil
		}
	}
	mc.mu.Unlock()
	if mc.p.o.Interruptible {
		mc.c.Close() // unblocks the reader and the writer
	}
	signal(mc.wake)
	signal(mc.readable)
	for _, e := range es {
		if !e.abandoned && e.req != nil {
			e.req.Done(nil, err, nil)
		}
	}
	for _, a := range waiting {
		a.req.Done(a.reply, nil, err)
	}
}

// exit ends one of the two loops; the second gives the connection up.
func (mc *conn) exit() {
	mc.mu.Lock()
	mc.exited++
	last := mc.exited == 2
	mc.mu.Unlock()
	if last {
		mc.c.Close() // a pooled connection goes back to its pool
		close(mc.released)
	}
	mc.p.wg.Done()
}
