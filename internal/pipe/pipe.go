// Package pipe is redlock's transport: one pipelined connection per node,
// shared by every concurrent caller.
//
// Requests are queued; a writer goroutine sends whatever is queued and
// flushes once (automatic pipelining), and a reader goroutine hands each
// reply to its request, in order. On an idle connection the submitting
// goroutine writes its one small command itself (the socket's buffers are
// empty, so it cannot block). With a barrier (Options.Barrier, Redis WAIT)
// one barrier follows each batch that holds requests that want it, and no
// batch is written while a barrier is unanswered: everything queued
// meanwhile leaves as the next batch, with one barrier. The pipe knows
// nothing of what the commands mean: it delivers replies, and its caller
// decides.
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
	maxDialBackoff = 250 * time.Millisecond // a failed-over node is found again within this of its promotion
	maxInFlight    = 1 << 14                // queued + unanswered requests per pipe
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
	// redialWanted: a request failed at once because the pipe is failing;
	// the watchdog dials again after the backoff.
	redialWanted bool
	released     chan struct{} // closed once the previous connection was given up
	closed       bool
	watching     bool           // the watchdog runs
	wg           sync.WaitGroup // dialer, watchdog, readers, writers
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
		if p.dialErr != nil {
			// Failing: the watchdog dials again once the backoff is over,
			// on its own goroutine (a node that stays down costs no
			// goroutine per attempt); requests fail at once meanwhile.
			p.redialWanted = true
			return p.dialErr, stalled, nil
		}
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
	p.dial(prev)
}

// dial dials, runs Hello and publishes the connection (see redial).
func (p *Pipe) dial(prev <-chan struct{}) {
	var raw redis.Conn
	err := ErrClosed
	select {
	case <-prev:
		raw, err = p.o.Dial(p.base)
		if err == nil && p.o.Hello != nil {
			ctx, cancel := context.WithTimeout(p.base, p.o.HelloTimeout) // bounded even on a paused node
			stop := func() bool { return false }
			if p.o.Interruptible {
				stop = context.AfterFunc(p.base, func() { raw.Close() }) // Close does not wait for a hung Hello
			}
			err = p.o.Hello(ctx, raw)
			stop()
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
			p.mu.Lock()
			again := p.redialWanted && !p.dialing && !p.closed && !now.Before(p.nextDial)
			if again {
				p.redialWanted, p.dialing = false, true
			}
			prev := p.released
			p.mu.Unlock()
			if again {
				p.dial(prev) // nothing waits in later meanwhile: requests fail at once
			}
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
