// One pipelined connection: its writer, its reader, and how it breaks.

package pipe

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"
)

// conn is one pipelined connection.
type conn struct {
	p        *Pipe
	c        redis.Conn
	wake     chan struct{} // cap 1: there is something to write
	readable chan struct{} // cap 1: there is something to read
	released chan struct{} // closed once c is given up
	exited   int           // loops that ended (under mu); see done
	gone     bool          // c was given up (under mu)

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
	last := mc.done() // the loops ended while we wrote (the connection broke)
	mc.mu.Unlock()
	if last {
		mc.giveUp()
	}
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

// exit ends one of the two loops; the second gives the connection up,
// unless a caller is still writing on it (writeQueued then does).
func (mc *conn) exit() {
	mc.mu.Lock()
	mc.exited++
	last := mc.done()
	mc.mu.Unlock()
	if last {
		mc.giveUp()
	}
	mc.p.wg.Done()
}

// done reports, once, that nothing uses c any more: both loops ended and
// no caller writes; mc.mu is held.
func (mc *conn) done() bool {
	if mc.exited < 2 || mc.writing || mc.gone {
		return false
	}
	mc.gone = true
	return true
}

// giveUp closes c (a pooled connection goes back to its pool).
func (mc *conn) giveUp() {
	mc.c.Close()
	close(mc.released)
}
