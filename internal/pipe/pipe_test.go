package pipe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newTestPipe returns a pipe on n, closed when the test ends; n's faults
// then fail the test.
func newTestPipe(t *testing.T, n *fakeNode, o Options) *Pipe {
	t.Helper()
	o.Dial = n.Dial
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Second
	}
	if o.HelloTimeout == 0 {
		o.HelloTimeout = o.Timeout
	}
	p := New(o)
	t.Cleanup(func() {
		p.Close()
		require.Empty(t, n.faultList(), "the fake node saw the pipe break its contract")
	})
	return p
}

// hangAll is a node that never answers.
func hangAll(*fakeConn, string, []interface{}) answer { return answer{hang: true} }

// requireOrder fails unless got is want, naming the first difference.
func requireOrder(t *testing.T, want, got []string, msg string) {
	t.Helper()
	for i := range want {
		if i >= len(got) || got[i] != want[i] {
			g := "nothing"
			if i < len(got) {
				g = fmt.Sprintf("%q", got[i])
			}
			t.Fatalf("%s: command %d is %s, want %q (%d commands, want %d)", msg, i, g, want[i], len(got), len(want))
		}
	}
	require.Len(t, got, len(want), msg)
}

// eventually waits up to d for cond.
func eventually(t *testing.T, d time.Duration, cond func() bool, format string, args ...interface{}) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf(format, args...)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestConcurrentRequestsCompleteOnceWithTheirOwnReply: requests from many
// goroutines each complete once, with their own reply, on one connection,
// and concurrent callers share flushes.
func TestConcurrentRequestsCompleteOnceWithTheirOwnReply(t *testing.T) {
	n := &fakeNode{beforeFlush: func(*fakeConn, int) { time.Sleep(200 * time.Microsecond) }} // a write takes a while
	p := newTestPipe(t, n, Options{Interruptible: true})

	const callers, each = 32, 50
	var wg sync.WaitGroup
	reqs := make([][]*testReq, callers)
	for g := 0; g < callers; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				r := newReq(p, "GET", fmt.Sprintf("%d/%d", g, i)).submit()
				reqs[g] = append(reqs[g], r)
				<-r.done // a caller waits for its reply before its next request
			}
		}(g)
	}
	wg.Wait()
	for _, rs := range reqs {
		for _, r := range rs {
			res := r.all()
			require.Len(t, res, 1, "request %v: Done must run exactly once", r.args[0])
			require.NoError(t, res[0].err)
			require.Equal(t, r.args[0], res[0].reply, "a request got another request's reply")
		}
	}
	c := n.conn(t, 1)
	sends, flushes := len(c.sent()), c.flushCount()
	require.Equal(t, callers*each, sends)
	require.Equal(t, 1, n.dialCount(), "one connection for every caller")
	t.Logf("%d commands in %d flushes", sends, flushes)
	require.LessOrEqual(t, 4*flushes, sends, "concurrent callers must share flushes (%d commands, %d flushes)", sends, flushes)
}

// TestPipelinedBurstKeepsOrder: requests submitted without waiting reach
// the node in submission order and get their replies in that order.
func TestPipelinedBurstKeepsOrder(t *testing.T) {
	n := &fakeNode{}
	p := newTestPipe(t, n, Options{Interruptible: true})
	var reqs []*testReq
	var want []string
	for i := 0; i < 1000; i++ {
		reqs = append(reqs, newReq(p, "GET", fmt.Sprint(i)).submit())
		want = append(want, fmt.Sprint("GET ", i))
	}
	for _, r := range reqs {
		res := r.wait(t, 5*time.Second)
		require.Equal(t, r.args[0], res.reply, "replies must be matched to requests in order")
	}
	requireOrder(t, want, n.conn(t, 1).sent(), "commands must reach the node in submission order")
}

// TestOrderKeptAcrossRedial: requests submitted while a connection is
// dialled run on it in submission order, before those submitted later,
// for the first dial and for a redial after a broken connection.
func TestOrderKeptAcrossRedial(t *testing.T) {
	gates := []chan struct{}{make(chan struct{}), make(chan struct{})}
	n := &fakeNode{
		beforeDial: func(ctx context.Context, nth int) error {
			if nth <= len(gates) {
				select {
				case <-gates[nth-1]:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return nil
		},
		answer: func(_ *fakeConn, cmd string, args []interface{}) answer {
			if cmd == "BREAK" {
				return answer{broken: io.EOF}
			}
			return answer{reply: args[0]}
		},
	}
	p := newTestPipe(t, n, Options{Interruptible: true})
	run := func(from, to int, gate chan struct{}) ([]*testReq, []string) {
		var reqs []*testReq
		var want []string
		for i := from; i < to; i++ {
			reqs = append(reqs, newReq(p, "GET", fmt.Sprint(i)).submit())
			want = append(want, fmt.Sprint("GET ", i))
			if i == (from+to)/2 {
				close(gate) // the rest race the dial's end
			}
		}
		for _, r := range reqs {
			res := r.wait(t, 5*time.Second)
			require.NoError(t, res.err)
			require.Equal(t, r.args[0], res.reply)
		}
		return reqs, want
	}

	_, want := run(0, 100, gates[0])
	requireOrder(t, want, n.conn(t, 1).sent(), "first dial: requests must run in submission order")

	res := newReq(p, "BREAK").submit().wait(t, time.Second)
	require.ErrorIs(t, res.err, io.EOF)
	_, want = run(100, 200, gates[1])
	requireOrder(t, want, n.conn(t, 2).sent(), "redial: requests must run in submission order")
	require.Equal(t, 2, n.dialCount())
}

// TestUnansweredRequestsFailWithinTheTimeout: on a node that never
// answers, each request fails with ErrNoReply within the timeout plus the
// watchdog's period; once the oldest request waited twice the timeout, new
// requests fail at once with ErrStalled; the stalled connection is dropped
// and the next request dials a new one.
func TestUnansweredRequestsFailWithinTheTimeout(t *testing.T) {
	const timeout = 100 * time.Millisecond
	for _, tc := range []struct{ interruptible, deadline bool }{{true, false}, {true, true}, {false, true}} {
		t.Run(fmt.Sprintf("interruptible %v, read deadline %v", tc.interruptible, tc.deadline), func(t *testing.T) {
			n := &fakeNode{answer: hangAll, deadline: tc.deadline, strict: !tc.interruptible}
			p := newTestPipe(t, n, Options{Interruptible: tc.interruptible, Timeout: timeout})
			start := time.Now()
			var reqs []*testReq
			for i := 0; i < 5; i++ {
				reqs = append(reqs, newReq(p, "GET", i).submit())
				time.Sleep(5 * time.Millisecond)
			}
			for _, r := range reqs {
				res := r.wait(t, 2*timeout)
				require.ErrorIs(t, res.err, ErrNoReply)
				require.ErrorIs(t, res.err, context.DeadlineExceeded)
				waited := res.at.Sub(r.queued)
				require.GreaterOrEqual(t, waited, timeout, "failed before the timeout")
				require.Less(t, waited, timeout+timeout/4+40*time.Millisecond, "failed late: %v", waited)
			}

			time.Sleep(time.Until(start.Add(2*timeout + 10*time.Millisecond)))
			r := newReq(p, "GET", "late").submit()
			require.True(t, r.isDone(), "a request on a connection stalled for twice the timeout must fail at once")
			require.ErrorIs(t, r.last().err, ErrStalled)

			c1 := n.conn(t, 1)
			eventually(t, 3*timeout, func() bool { return c1.closeCount() > 0 }, "the stalled connection was never dropped")
			// A request dials a new connection; until it is up, requests
			// fail at once (the redial follows a hang) instead of waiting.
			for deadline := time.Now().Add(timeout); ; time.Sleep(time.Millisecond) {
				require.True(t, time.Now().Before(deadline), "no new connection after a stall")
				r := newReq(p, "GET", "during").submit()
				if !r.isDone() {
					require.True(t, n.dialCount() == 2 && p.connected(n.conn(t, 2)),
						"a request waited for the redial of a hung node instead of failing at once")
					require.ErrorIs(t, r.wait(t, 2*timeout).err, ErrNoReply)
					break
				}
				require.ErrorIs(t, r.last().err, ErrStalled)
			}
			require.Equal(t, []string{"GET during"}, n.conn(t, 2).sent())
		})
	}
}

// connected reports whether fc is the pipe's current connection.
func (p *Pipe) connected(fc *fakeConn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn == nil {
		return false
	}
	switch c := p.conn.c.(type) {
	case *fakeConn:
		return c == fc
	case deadlineConn:
		return c.fakeConn == fc
	}
	return false
}

// TestHungNodeRedialsAreBounded: a node that takes connections but never
// answers is redialled about once per stall, and a node whose dial fails
// is redialled with backoff, however many requests arrive.
func TestHungNodeRedialsAreBounded(t *testing.T) {
	const timeout = 50 * time.Millisecond
	flood := func(p *Pipe, d time.Duration) {
		var reqs []*testReq
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(2 * time.Millisecond) {
			reqs = append(reqs, newReq(p, "GET", "x").submit())
		}
		for _, r := range reqs {
			r.wait(t, 2*timeout)
		}
	}
	t.Run("hung", func(t *testing.T) {
		for _, interruptible := range []bool{true, false} { // dialled; borrowed (read deadline)
			n := &fakeNode{answer: hangAll, deadline: !interruptible, strict: !interruptible}
			p := newTestPipe(t, n, Options{Interruptible: interruptible, Timeout: timeout})
			flood(p, time.Second)
			dials := n.dialCount()
			t.Logf("interruptible %v: %d dials in 1s", interruptible, dials)
			require.GreaterOrEqual(t, dials, 2, "a stalled connection must be replaced")
			require.LessOrEqual(t, dials, int(time.Second/(2*timeout))+3, "too many dials to a hung node: one per stall at most")
		}
	})
	t.Run("dial fails", func(t *testing.T) {
		n := &fakeNode{beforeDial: func(context.Context, int) error { return errors.New("connection refused") }}
		p := newTestPipe(t, n, Options{Interruptible: true, Timeout: timeout})
		flood(p, time.Second)
		dials := n.dialCount()
		t.Logf("%d dials in 1s", dials)
		require.LessOrEqual(t, dials, 10, "failed dials must back off")
	})
}

// TestNonInterruptibleConnectionIsClosedAfterItsLoops: a connection that
// must not be closed under its reader (a caller's pooled one) is closed
// once, after its reader and writer ended, and the next one is dialled
// only after that.
func TestNonInterruptibleConnectionIsClosedAfterItsLoops(t *testing.T) {
	const timeout = 50 * time.Millisecond
	script := func(_ *fakeConn, cmd string, args []interface{}) answer {
		switch cmd {
		case "BREAK":
			return answer{broken: io.EOF}
		case "FATAL":
			return answer{err: redis.Error("READONLY You can't write against a read only replica.")}
		case "HANG":
			return answer{hang: true}
		}
		return answer{reply: args[0]}
	}
	n := &fakeNode{answer: script, deadline: true, strict: true}
	p := newTestPipe(t, n, Options{Timeout: timeout, Fatal: func(e redis.Error) bool { return strings.HasPrefix(string(e), "READONLY") }})

	// Each way to break a connection, with requests in flight behind it.
	for i, breaker := range []string{"BREAK", "FATAL", "HANG"} {
		var reqs []*testReq
		reqs = append(reqs, newReq(p, breaker, i).submit())
		for j := 0; j < 20; j++ {
			reqs = append(reqs, newReq(p, "GET", j).submit())
		}
		for _, r := range reqs {
			r.wait(t, 4*timeout)
		}
		c := n.conn(t, i+1)
		eventually(t, 4*timeout, func() bool { return c.closeCount() > 0 }, "%s: the broken connection was never closed", breaker)
		// The next request dials a new connection (or fails at once
		// after a hang and triggers the dial).
		eventually(t, 4*timeout, func() bool {
			newReq(p, "GET", "next").submit().wait(t, 2*timeout)
			return n.dialCount() == i+2
		}, "%s: no new connection", breaker)
		require.Equal(t, 1, c.closeCount(), "%s: Close must be called exactly once", breaker)
		n.mu.Lock()
		dialled := n.dials[i+1]
		n.mu.Unlock()
		require.True(t, !dialled.Before(c.closedAt), "%s: the next connection was dialled before the broken one was closed", breaker)
	}
}

// TestHelloRunsFirstOnEveryConnection: Hello runs before any request on
// every new connection, within HelloTimeout; a Hello error fails the dial
// and the requests queued for it.
func TestHelloRunsFirstOnEveryConnection(t *testing.T) {
	errAuth := redis.Error("WRONGPASS invalid username-password pair")
	var hellos []time.Duration
	var mu sync.Mutex
	failFirst := true
	script := func(_ *fakeConn, cmd string, args []interface{}) answer {
		switch cmd {
		case "BREAK":
			return answer{broken: io.EOF}
		case "HELLO":
			return answer{reply: "OK"}
		}
		return answer{reply: args[0]}
	}
	n := &fakeNode{answer: script}
	gate := make(chan struct{})
	n.beforeDial = func(ctx context.Context, nth int) error {
		if nth == 1 {
			<-gate
		}
		return nil
	}
	p := newTestPipe(t, n, Options{Interruptible: true, HelloTimeout: 300 * time.Millisecond,
		Hello: func(ctx context.Context, c redis.Conn) error {
			dl, ok := ctx.Deadline()
			mu.Lock()
			defer mu.Unlock()
			if ok {
				hellos = append(hellos, time.Until(dl))
			}
			if _, err := c.Do("HELLO"); err != nil {
				return err
			}
			if failFirst {
				failFirst = false
				return errAuth
			}
			return nil
		}})

	// The first dial's Hello fails: its queued requests fail with its error.
	queued := []*testReq{newReq(p, "GET", "a").submit(), newReq(p, "GET", "b").submit()}
	close(gate)
	for _, r := range queued {
		require.ErrorIs(t, r.wait(t, time.Second).err, errAuth, "requests queued for a failed Hello must get its error")
	}
	c1 := n.conn(t, 1)
	require.Equal(t, []string{"HELLO"}, c1.sent(), "no request may be sent on a connection whose Hello failed")
	require.Equal(t, 1, c1.closeCount(), "the connection of a failed Hello must be closed")
	// During the backoff, requests fail at once with the same error.
	r := newReq(p, "GET", "c").submit()
	require.True(t, r.isDone())
	require.ErrorIs(t, r.last().err, errAuth)

	// After the backoff (the request that starts the redial still fails at
	// once): Hello first on the new connection, and on the next.
	time.Sleep(2 * minDialBackoff)
	eventually(t, time.Second, func() bool {
		return newReq(p, "GET", "d").submit().wait(t, time.Second).err == nil
	}, "no request succeeded after the backoff")
	require.Equal(t, []string{"HELLO", "GET d"}, n.conn(t, 2).sent())
	require.ErrorIs(t, newReq(p, "BREAK").submit().wait(t, time.Second).err, io.EOF)
	require.Equal(t, "e", newReq(p, "GET", "e").submit().wait(t, time.Second).reply)
	require.Equal(t, []string{"HELLO", "GET e"}, n.conn(t, 3).sent(), "Hello must run first on every new connection")
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, hellos, 3, "Hello's ctx must carry HelloTimeout")
	for _, d := range hellos {
		require.LessOrEqual(t, d, 300*time.Millisecond)
	}
}

// TestFatalReplyMovesFollowersToTheNextConnection: after a Fatal reply the
// request gets its reply and the connection is dropped; what its Done
// submits goes to the next connection before the requests that were queued
// behind it, failed and resubmitted from their own Done.
func TestFatalReplyMovesFollowersToTheNextConnection(t *testing.T) {
	readonly := redis.Error("READONLY You can't write against a read only replica.")
	for _, queued := range []int{3, 2000} {
		t.Run(fmt.Sprint(queued, " queued"), func(t *testing.T) {
			gate := make(chan struct{})
			n := &fakeNode{
				beforeDial: func(ctx context.Context, nth int) error {
					if nth == 1 {
						<-gate
					}
					return nil
				},
				answer: func(c *fakeConn, cmd string, args []interface{}) answer {
					if c.id == 1 && args[0] == "first" {
						return answer{err: readonly}
					}
					if c.id == 1 {
						return answer{hang: true}
					}
					return answer{reply: args[0]}
				},
			}
			p := newTestPipe(t, n, Options{Interruptible: true, Fatal: func(e redis.Error) bool { return strings.HasPrefix(string(e), "READONLY") }})
			once := func(res result) bool { return res.err != nil } // resubmit after a failure, once
			var reqs []*testReq
			var want []string
			for i := 0; i <= queued; i++ {
				name := fmt.Sprint(i)
				if i == 0 {
					name = "first"
				}
				r := newReq(p, "SET", name)
				tries := 0
				r.again = func(res result) bool { tries++; return tries == 1 && once(res) }
				reqs = append(reqs, r.submit())
				want = append(want, "SET "+name)
			}
			close(gate)
			for _, r := range reqs {
				res := r.wait(t, 5*time.Second)
				require.NoError(t, res.err)
				require.Equal(t, r.args[0], res.reply)
			}
			first := reqs[0].all()
			require.Len(t, first, 2)
			require.Equal(t, readonly, first[0].err, "the Fatal request must get its own reply")
			for _, r := range reqs[1:] {
				err := r.all()[0].err
				var re redis.Error
				require.True(t, errors.As(err, &re) && strings.HasPrefix(string(re), "READONLY"),
					"request %v behind a Fatal reply: got %v, want the Fatal reply as the connection's error", r.args[0], err)
			}
			requireOrder(t, want, n.conn(t, 2).sent(), "the Fatal request's resubmission must run first, then the others in order")
			require.GreaterOrEqual(t, n.conn(t, 1).closeCount(), 1, "the connection of a Fatal reply must be closed")
		})
	}
}

// TestBarrierFollowsBatchesWithAckRequests: exactly one barrier follows a
// batch holding ack requests, and each of them gets its own reply with the
// barrier's as ack; a batch without ack requests has no barrier; an
// unanswered barrier completes its requests with ack ErrNoReply.
func TestBarrierFollowsBatchesWithAckRequests(t *testing.T) {
	const timeout = 100 * time.Millisecond
	barrier := func() (string, []interface{}) { return "WAIT", []interface{}{2, 80} }
	// plugged holds the first Flush until released, so that what is
	// submitted meanwhile forms the next batch.
	plugged := func(n *fakeNode) chan struct{} {
		plug := make(chan struct{})
		n.beforeFlush = func(_ *fakeConn, nth int) {
			if nth == 1 {
				<-plug
			}
		}
		return plug
	}

	t.Run("answered", func(t *testing.T) {
		n := &fakeNode{answer: func(_ *fakeConn, cmd string, args []interface{}) answer {
			if cmd == "WAIT" {
				return answer{reply: int64(2)}
			}
			return answer{reply: args[0]}
		}}
		plug := plugged(n)
		p := newTestPipe(t, n, Options{Interruptible: true, Barrier: barrier})
		first := newReq(p, "GET", "plug").submit()
		eventually(t, time.Second, func() bool { return n.conn(t, 1).flushCount() == 1 }, "the first batch was never flushed")
		var reqs []*testReq
		want := []string{"GET plug"}
		for i := 0; i < 10; i++ {
			r := newReq(p, "SET", i)
			r.ack = i%2 == 0
			reqs = append(reqs, r.submit())
			want = append(want, fmt.Sprint("SET ", i))
		}
		close(plug)
		require.Nil(t, first.wait(t, time.Second).ack)
		for _, r := range reqs {
			res := r.wait(t, time.Second)
			require.NoError(t, res.err)
			require.Equal(t, r.args[0], res.reply)
			if r.ack {
				require.Equal(t, int64(2), res.ack, "an ack request must get the barrier's reply")
			} else {
				require.Nil(t, res.ack, "a request without ack gets no ack")
			}
		}
		require.Equal(t, append(want, "WAIT 2 80"), n.conn(t, 1).sent(), "exactly one barrier after the batch, none after the batch without ack")
	})

	t.Run("unanswered", func(t *testing.T) {
		n := &fakeNode{answer: func(_ *fakeConn, cmd string, args []interface{}) answer {
			if cmd == "WAIT" {
				return answer{hang: true}
			}
			return answer{reply: args[0]}
		}}
		plug := plugged(n)
		p := newTestPipe(t, n, Options{Interruptible: true, Barrier: barrier, Timeout: timeout})
		newReq(p, "GET", "plug").submit()
		eventually(t, time.Second, func() bool { return n.conn(t, 1).flushCount() == 1 }, "the first batch was never flushed")
		var reqs []*testReq
		for i := 0; i < 3; i++ {
			r := newReq(p, "SET", i)
			r.ack = true
			reqs = append(reqs, r.submit())
		}
		close(plug)
		for _, r := range reqs {
			res := r.wait(t, 2*timeout)
			require.NoError(t, res.err)
			require.Equal(t, r.args[0], res.reply, "the request's own reply must be kept")
			require.ErrorIs(t, res.ack.(error), ErrNoReply, "an unanswered barrier must give ErrNoReply as ack")
			require.Less(t, res.at.Sub(r.queued), timeout+timeout/4+40*time.Millisecond)
		}
	})
}

// TestCloseFailsQueuedRequestsAndGivesTheConnectionBack: Close fails what
// is queued or in flight with ErrClosed, closes the connection once, and
// later Submits fail with ErrClosed; on a hung connection that cannot be
// interrupted it returns within the read deadline.
func TestCloseFailsQueuedRequestsAndGivesTheConnectionBack(t *testing.T) {
	const timeout = 100 * time.Millisecond
	t.Run("dialling", func(t *testing.T) {
		n := &fakeNode{beforeDial: func(ctx context.Context, _ int) error { <-ctx.Done(); return ctx.Err() }}
		p := newTestPipe(t, n, Options{Interruptible: true})
		r := newReq(p, "GET", "a").submit()
		p.Close()
		require.ErrorIs(t, r.wait(t, time.Second).err, ErrClosed)
		after := newReq(p, "GET", "b").submit()
		require.True(t, after.isDone(), "Submit after Close must fail at once")
		require.ErrorIs(t, after.last().err, ErrClosed)
	})
	for _, interruptible := range []bool{true, false} {
		t.Run(fmt.Sprint("in flight, interruptible ", interruptible), func(t *testing.T) {
			n := &fakeNode{answer: hangAll, deadline: true, strict: !interruptible}
			p := newTestPipe(t, n, Options{Interruptible: interruptible, Timeout: timeout})
			reqs := []*testReq{newReq(p, "GET", "a").submit(), newReq(p, "GET", "b").submit()}
			c := n.conn(t, 1)
			eventually(t, time.Second, func() bool { return len(c.sent()) == 2 }, "requests never sent")
			time.Sleep(timeout / 10)
			start := time.Now()
			p.Close()
			took := time.Since(start)
			for _, r := range reqs {
				res := r.wait(t, time.Second)
				require.ErrorIs(t, res.err, ErrClosed)
				require.Len(t, r.all(), 1)
			}
			require.Less(t, took, 2*timeout+50*time.Millisecond, "Close took %v on a hung connection", took)
			if interruptible {
				require.Less(t, took, timeout/2, "Close must interrupt a dialled connection at once")
				require.GreaterOrEqual(t, c.closeCount(), 1)
				t.Logf("Close called %d times on a dialled connection", c.closeCount())
			} else {
				require.Equal(t, 1, c.closeCount(), "a borrowed connection must be given back exactly once")
			}
			after := newReq(p, "GET", "c").submit()
			require.True(t, after.isDone(), "Submit after Close must fail at once")
			require.ErrorIs(t, after.last().err, ErrClosed)
		})
	}
}

// TestDoneMaySubmitFromEveryPath: a Done that submits a request (as the
// NOSCRIPT fallback does) never deadlocks, whichever goroutine runs it.
func TestDoneMaySubmitFromEveryPath(t *testing.T) {
	const timeout = 50 * time.Millisecond
	// chain returns a request whose Done submits a follow-up request whose
	// Done submits another one.
	chain := func(p *Pipe, cmd string, ack ...bool) (*testReq, func(t *testing.T)) {
		var follow []*testReq
		var mu sync.Mutex
		var mk func(depth int) *testReq
		mk = func(depth int) *testReq {
			r := newReq(p, cmd, depth)
			r.ack = len(ack) > 0 && ack[0]
			if depth < 2 {
				r.then = func(result) {
					f := mk(depth + 1)
					mu.Lock()
					follow = append(follow, f)
					mu.Unlock()
					f.submit()
				}
			}
			return r
		}
		root := mk(0)
		return root, func(t *testing.T) {
			root.wait(t, 2*time.Second)
			for i := 0; i < 2; i++ {
				eventually(t, 2*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(follow) > i }, "follow-up %d never submitted", i)
				mu.Lock()
				f := follow[i]
				mu.Unlock()
				f.wait(t, 2*time.Second)
			}
		}
	}
	script := func(_ *fakeConn, cmd string, args []interface{}) answer {
		switch cmd {
		case "BREAK":
			return answer{broken: io.EOF}
		case "HANG", "WAIT":
			return answer{hang: true}
		}
		return answer{reply: args[0]}
	}
	for _, tc := range []struct {
		name string
		node *fakeNode
		run  func(t *testing.T, p *Pipe)
	}{
		{"reader", &fakeNode{answer: script}, func(t *testing.T, p *Pipe) {
			r, wait := chain(p, "GET")
			r.submit()
			wait(t)
		}},
		{"watchdog", &fakeNode{answer: script}, func(t *testing.T, p *Pipe) {
			r, wait := chain(p, "HANG")
			r.submit()
			wait(t)
		}},
		{"barrier expiry", &fakeNode{answer: script}, func(t *testing.T, p *Pipe) {
			r, wait := chain(p, "SET", true)
			r.submit()
			wait(t)
		}},
		{"in flight at Close", &fakeNode{answer: script}, func(t *testing.T, p *Pipe) {
			newReq(p, "HANG", "plug").submit()
			r, wait := chain(p, "GET")
			r.submit()
			p.Close() // fails r from the connection's fail
			wait(t)
		}},
		{"broken connection", &fakeNode{answer: func(c *fakeConn, cmd string, args []interface{}) answer {
			if c.id == 1 {
				return answer{broken: io.EOF}
			}
			return answer{reply: args[0]}
		}}, func(t *testing.T, p *Pipe) {
			r, wait := chain(p, "GET")
			r.submit()
			wait(t)
		}},
		{"stalled, at once", &fakeNode{answer: hangAll}, func(t *testing.T, p *Pipe) {
			newReq(p, "GET", "first").submit()
			time.Sleep(2*timeout + 10*time.Millisecond)
			r, wait := chain(p, "GET")
			r.submit()
			require.True(t, r.isDone())
			wait(t)
		}},
		{"closed, at once", &fakeNode{}, func(t *testing.T, p *Pipe) {
			p.Close()
			r, wait := chain(p, "GET")
			r.submit()
			require.True(t, r.isDone())
			wait(t)
		}},
		{"queued at Close", &fakeNode{beforeDial: func(ctx context.Context, _ int) error { <-ctx.Done(); return ctx.Err() }}, func(t *testing.T, p *Pipe) {
			r, wait := chain(p, "GET")
			r.submit()
			p.Close()
			wait(t)
		}},
		{"dial fails", &fakeNode{beforeDial: func(context.Context, int) error { return errors.New("refused") }}, func(t *testing.T, p *Pipe) {
			r, wait := chain(p, "GET")
			r.submit()
			wait(t)
		}},
		{"queued dial expires", &fakeNode{beforeDial: func(ctx context.Context, _ int) error { <-ctx.Done(); return ctx.Err() }}, func(t *testing.T, p *Pipe) {
			r, wait := chain(p, "GET")
			r.submit()
			wait(t)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPipe(t, tc.node, Options{Interruptible: true, Timeout: timeout,
				Barrier: func() (string, []interface{}) { return "WAIT", []interface{}{1, 10} }})
			tc.run(t, p)
		})
	}
}

// The fake node and its connections.

// fakeNode is a scripted Redis node behind the fake connections a pipe
// dials. It records every contract violation it sees (a Close concurrent
// with Send/Flush/Receive on a non-interruptible pipe, two connections open
// at once) in faults, which newTestPipe checks when the test ends.
type fakeNode struct {
	// answer gives the reply to one command when it is flushed; nil echoes
	// the first argument (or the command). An answer with hang makes the
	// connection stop answering from that command on.
	answer func(c *fakeConn, cmd string, args []interface{}) answer
	// deadline makes connections implement redis.ConnWithTimeout, as
	// redigo's own and pooled connections do.
	deadline bool
	// strict: the pipe must never Close a connection while one of its
	// goroutines is in Send, Flush or Receive (Interruptible false).
	strict bool
	// beforeDial runs at the start of the nth Dial (from 1); it may block
	// (honouring ctx) and its error fails the dial.
	beforeDial func(ctx context.Context, n int) error
	// beforeFlush runs at the start of the nth Flush (from 1) on c.
	beforeFlush func(c *fakeConn, n int)

	mu     sync.Mutex // protects the fields below
	dials  []time.Time
	conns  []*fakeConn
	open   int
	faults []string
}

// answer is a node's reply to one command.
type answer struct {
	reply  interface{}
	err    error // a redis.Error: an error reply
	broken error // a transport error: the connection is broken
	hang   bool  // never answered, nor anything after it
}

var (
	errFakeClosed   = &net.OpError{Op: "read", Net: "fake", Err: net.ErrClosed}
	errFakeDeadline = &net.OpError{Op: "read", Net: "fake", Err: os.ErrDeadlineExceeded}
)

func (n *fakeNode) fault(format string, args ...interface{}) {
	n.mu.Lock()
	n.faults = append(n.faults, fmt.Sprintf(format, args...))
	n.mu.Unlock()
}

// Dial implements Options.Dial.
func (n *fakeNode) Dial(ctx context.Context) (redis.Conn, error) {
	n.mu.Lock()
	n.dials = append(n.dials, time.Now())
	nth := len(n.dials)
	n.mu.Unlock()
	if n.beforeDial != nil {
		if err := n.beforeDial(ctx, nth); err != nil {
			return nil, err
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.open > 0 {
		n.faults = append(n.faults, fmt.Sprintf("dial %d while %d connection(s) open", nth, n.open))
	}
	c := &fakeConn{node: n, id: len(n.conns) + 1, ready: make(chan struct{}, 1), done: make(chan struct{})}
	n.open++
	n.conns = append(n.conns, c)
	if n.deadline {
		return deadlineConn{c}, nil
	}
	return c, nil
}

func (n *fakeNode) dialCount() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.dials)
}

// conn returns the ith connection dialled (from 1), waiting for it.
func (n *fakeNode) conn(t *testing.T, i int) *fakeConn {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		n.mu.Lock()
		if len(n.conns) >= i {
			c := n.conns[i-1]
			n.mu.Unlock()
			return c
		}
		n.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("connection %d was never dialled", i)
		}
		time.Sleep(time.Millisecond)
	}
}

func (n *fakeNode) faultList() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.faults...)
}

type command struct {
	cmd  string
	args []interface{}
}

func (c command) String() string {
	return strings.TrimSpace(fmt.Sprintln(append([]interface{}{c.cmd}, c.args...)...))
}

// fakeConn is one connection to a fakeNode. Send, Flush and Receive are
// safe for one writer and one reader goroutine; Close unblocks Receive.
type fakeConn struct {
	node *fakeNode
	id   int
	busy atomic.Int32  // goroutines in Send, Flush or Receive
	done chan struct{} // closed by the first Close

	mu       sync.Mutex    // protects the fields below
	log      []string      // every command sent, in order
	unsent   []command     // sent, not flushed yet
	replies  []answer      // answered, not received yet
	owed     int           // commands whose reply was not received (for Do)
	hung     bool          // stopped answering
	closes   int           // calls of Close
	closedAt time.Time     // first Close
	flushes  int           // calls of Flush
	ready    chan struct{} // cap 1: replies grew
}

func (c *fakeConn) enter() func() {
	c.busy.Add(1)
	return func() { c.busy.Add(-1) }
}

func (c *fakeConn) closed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

func (c *fakeConn) Send(cmd string, args ...interface{}) error {
	defer c.enter()()
	if c.closed() {
		return errFakeClosed
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cm := command{cmd, args}
	c.log = append(c.log, cm.String())
	c.unsent = append(c.unsent, cm)
	c.owed++
	return nil
}

func (c *fakeConn) Flush() error {
	defer c.enter()()
	c.mu.Lock()
	c.flushes++
	nth := c.flushes
	c.mu.Unlock()
	if c.node.beforeFlush != nil {
		c.node.beforeFlush(c, nth)
	}
	if c.closed() {
		return errFakeClosed
	}
	c.mu.Lock()
	for _, cm := range c.unsent {
		if c.hung {
			break
		}
		a := answer{reply: cm.cmd}
		if len(cm.args) > 0 {
			a.reply = cm.args[0]
		}
		if c.node.answer != nil {
			a = c.node.answer(c, cm.cmd, cm.args)
		}
		if a.hang {
			c.hung = true
			break
		}
		c.replies = append(c.replies, a)
	}
	c.unsent = nil
	c.mu.Unlock()
	select {
	case c.ready <- struct{}{}:
	default:
	}
	return nil
}

func (c *fakeConn) Receive() (interface{}, error) { return c.receive(0) }

// receive returns the next reply; with d > 0 it gives up after d, as a
// connection with a read deadline.
func (c *fakeConn) receive(d time.Duration) (interface{}, error) {
	defer c.enter()()
	var expired <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		expired = t.C
	}
	for {
		c.mu.Lock()
		if len(c.replies) > 0 {
			a := c.replies[0]
			c.replies = c.replies[1:]
			c.owed--
			c.mu.Unlock()
			switch {
			case a.broken != nil:
				return nil, a.broken
			case a.err != nil:
				return nil, a.err
			}
			return a.reply, nil
		}
		c.mu.Unlock()
		select {
		case <-c.ready:
		case <-c.done:
			return nil, errFakeClosed
		case <-expired:
			return nil, errFakeDeadline
		}
	}
}

// Do sends cmd (unless empty), flushes and reads every reply owed: the
// slice of them for "", else the last.
func (c *fakeConn) Do(cmd string, args ...interface{}) (interface{}, error) {
	if cmd != "" {
		if err := c.Send(cmd, args...); err != nil {
			return nil, err
		}
	}
	if err := c.Flush(); err != nil {
		return nil, err
	}
	c.mu.Lock()
	owed := c.owed
	c.mu.Unlock()
	var all []interface{}
	var last interface{}
	var lastErr error
	for i := 0; i < owed; i++ {
		r, err := c.receive(time.Second)
		var re redis.Error
		if err != nil && !errors.As(err, &re) {
			return nil, err
		}
		if err != nil {
			r = re
		}
		all = append(all, r)
		last, lastErr = r, err
	}
	if cmd == "" {
		return all, nil
	}
	return last, lastErr
}

func (c *fakeConn) Close() error {
	if c.node.strict && c.busy.Load() > 0 {
		c.node.fault("connection %d closed while its reader or writer used it", c.id)
	}
	c.mu.Lock()
	c.closes++
	first := c.closes == 1
	if first {
		c.closedAt = time.Now()
	}
	c.mu.Unlock()
	if first {
		close(c.done)
		c.node.mu.Lock()
		c.node.open--
		c.node.mu.Unlock()
	}
	return nil
}

func (c *fakeConn) Err() error {
	if c.closed() {
		return errFakeClosed
	}
	return nil
}

func (c *fakeConn) sent() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.log...)
}

func (c *fakeConn) closeCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closes
}

func (c *fakeConn) flushCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.flushes
}

// deadlineConn is a fakeConn that takes read deadlines.
type deadlineConn struct{ *fakeConn }

func (c deadlineConn) ReceiveWithTimeout(d time.Duration) (interface{}, error) { return c.receive(d) }

func (c deadlineConn) DoWithTimeout(_ time.Duration, cmd string, args ...interface{}) (interface{}, error) {
	return c.Do(cmd, args...)
}

// result is what one Done call received.
type result struct {
	reply interface{}
	err   error
	ack   interface{}
	at    time.Time
}

// testReq is a Request that records every Done call. When again is set,
// Done asks it whether to Submit the request once more (as the NOSCRIPT
// fallback does); then (if set) runs inside the final Done.
type testReq struct {
	p     *Pipe
	cmd   string
	args  []interface{}
	ack   bool
	again func(res result) bool
	then  func(res result)

	mu      sync.Mutex // protects results
	results []result
	done    chan struct{} // closed by the first final Done
	finals  atomic.Int32
	queued  time.Time
}

func newReq(p *Pipe, cmd string, args ...interface{}) *testReq {
	return &testReq{p: p, cmd: cmd, args: args, done: make(chan struct{})}
}

func (r *testReq) Command() (string, []interface{}, bool) { return r.cmd, r.args, r.ack }

func (r *testReq) Done(reply interface{}, err error, ack interface{}) {
	res := result{reply, err, ack, time.Now()}
	r.mu.Lock()
	r.results = append(r.results, res)
	r.mu.Unlock()
	if r.again != nil && r.again(res) {
		r.p.Submit(r)
		return
	}
	if r.then != nil {
		r.then(res)
	}
	if r.finals.Add(1) == 1 {
		close(r.done)
	}
}

// submit queues r and notes when.
func (r *testReq) submit() *testReq {
	r.queued = time.Now()
	r.p.Submit(r)
	return r
}

// isDone reports whether r completed (its final Done ran).
func (r *testReq) isDone() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// wait waits for r's final Done and returns what it received.
func (r *testReq) wait(t *testing.T, within time.Duration) result {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(within):
		t.Fatalf("%s %v: no Done within %v (deadlock or lost request)", r.cmd, r.args, within)
	}
	return r.last()
}

func (r *testReq) last() result {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.results[len(r.results)-1]
}

func (r *testReq) all() []result {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]result(nil), r.results...)
}
