package redlock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/require"

	"github.com/redlock-go/redlock/internal/pipe"
)

// The per-reply rules of call.Done, over the real transport and a scripted
// node (no Redis: the integration tests in tests/ use real servers).

var (
	errReadOnly = redis.Error("READONLY You can't write against a read only replica.")
	errNoScript = redis.Error("NOSCRIPT No matching script. Please use EVAL.")
	errHang     = errors.New("fake: never answers") // an answer: the node stops answering
)

// fakeRedis is a scripted node. answer gives the reply to each command,
// by connection (from 1); the connection's Hello (SCRIPT LOAD, INFO) is
// answered here, with runIDs[conn-1] as run_id when there is one.
type fakeRedis struct {
	answer func(conn int, cmd string, args []interface{}) (interface{}, error)
	runIDs []string

	mu    sync.Mutex // protects conns
	conns []*fakeRedisConn
}

func (f *fakeRedis) dial(context.Context) (redis.Conn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := &fakeRedisConn{f: f, id: len(f.conns) + 1, replies: make(chan fakeReply, 1024), closed: make(chan struct{})}
	f.conns = append(f.conns, c)
	return c, nil
}

func (f *fakeRedis) dials() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.conns)
}

func (f *fakeRedis) conn(i int) *fakeRedisConn {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.conns[i-1]
}

// sent returns the commands sent on every connection, Hello's aside, as
// "EVALSHA extend" or "WAIT 2 100".
func (f *fakeRedis) sent() []string {
	f.mu.Lock()
	conns := append([]*fakeRedisConn(nil), f.conns...)
	f.mu.Unlock()
	var out []string
	for _, c := range conns {
		out = append(out, c.sent()...)
	}
	return out
}

type fakeReply struct {
	v   interface{}
	err error
}

// fakeRedisConn is one connection to a fakeRedis: safe for one writer and
// one reader goroutine; Close unblocks Receive.
type fakeRedisConn struct {
	f       *fakeRedis
	id      int
	replies chan fakeReply
	closed  chan struct{}
	once    sync.Once

	mu     sync.Mutex // protects the fields below
	log    []string
	unsent [][]interface{} // cmd, args...
	owed   int
	hung   bool
}

func (c *fakeRedisConn) Send(cmd string, args ...interface{}) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cmd != "SCRIPT" && cmd != "INFO" {
		c.log = append(c.log, describeCommand(cmd, args))
	}
	c.unsent = append(c.unsent, append([]interface{}{cmd}, args...))
	c.owed++
	return nil
}

func (c *fakeRedisConn) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cmd := range c.unsent {
		name, args := cmd[0].(string), cmd[1:]
		var r fakeReply
		switch name {
		case "SCRIPT":
			r.v = "sha"
		case "INFO":
			if c.id <= len(c.f.runIDs) {
				r.v = "# Server\r\nrun_id:" + c.f.runIDs[c.id-1] + "\r\n"
			} else {
				r.v = "# Server\r\n"
			}
		default:
			r.v, r.err = c.f.answer(c.id, name, args)
		}
		if errors.Is(r.err, errHang) {
			c.hung = true
		}
		if c.hung {
			break
		}
		c.replies <- r
	}
	c.unsent = nil
	return nil
}

func (c *fakeRedisConn) Receive() (interface{}, error) {
	return c.ReceiveContext(context.Background())
}

func (c *fakeRedisConn) ReceiveContext(ctx context.Context) (interface{}, error) {
	select {
	case r := <-c.replies:
		c.mu.Lock()
		c.owed--
		c.mu.Unlock()
		return r.v, r.err
	case <-c.closed:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// DoContext is what Hello uses: Send, then DoContext(ctx, "") for every
// reply owed (error replies as values, as redigo).
func (c *fakeRedisConn) DoContext(ctx context.Context, cmd string, args ...interface{}) (interface{}, error) {
	if cmd != "" {
		_ = c.Send(cmd, args...)
	}
	_ = c.Flush()
	c.mu.Lock()
	owed := c.owed
	c.mu.Unlock()
	all := make([]interface{}, 0, owed)
	for i := 0; i < owed; i++ {
		r, err := c.ReceiveContext(ctx)
		var re redis.Error
		if err != nil && !errors.As(err, &re) {
			return nil, err
		}
		if err != nil {
			r = re
		}
		all = append(all, r)
	}
	if cmd != "" {
		return all[len(all)-1], nil
	}
	return all, nil
}

func (c *fakeRedisConn) Do(cmd string, args ...interface{}) (interface{}, error) {
	return c.DoContext(context.Background(), cmd, args...)
}

func (c *fakeRedisConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *fakeRedisConn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

func (c *fakeRedisConn) Err() error { return nil }

func (c *fakeRedisConn) sent() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.log...)
}

// describeCommand names a command for the tests' assertions: scripts by name.
func describeCommand(cmd string, args []interface{}) string {
	if (cmd == "EVALSHA" || cmd == "EVAL") && len(args) > 0 {
		for _, s := range []*luaScript{&acquireScript, &extendScript, &releaseScript, &inspectScript} {
			if args[0] == s.sha1Arg || args[0] == s.source {
				return cmd + " " + s.name
			}
		}
	}
	return strings.TrimSpace(fmt.Sprintln(append([]interface{}{cmd}, args...)...))
}

// scriptAnswers answers the scripts as a node holding key "held" for
// another token would, and WAIT with *acked replicas.
func scriptAnswers(acked *atomic.Int64) func(int, string, []interface{}) (interface{}, error) {
	return func(_ int, cmd string, args []interface{}) (interface{}, error) {
		switch {
		case cmd == "WAIT":
			return acked.Load(), nil
		case args[0] == acquireScript.sha1Arg || args[0] == acquireScript.source:
			if args[2] == "held" {
				return []interface{}{int64(0), int64(500)}, nil
			}
			return []interface{}{int64(1), int64(1000)}, nil
		default:
			return int64(1), nil
		}
	}
}

// newTestManager builds a Manager over nodes as New does, without
// Instances (the nodes dial fakes), closed when the test ends.
func newTestManager(t *testing.T, timeout time.Duration, nodes ...*node) *Manager {
	t.Helper()
	m := &Manager{cfg: config{retryCount: 1, drift: DefaultDriftFactor, defaultTTL: DefaultTTL, nodeTimeout: timeout},
		quorum: len(nodes)/2 + 1, closing: make(chan struct{})}
	m.base, m.cancelBase = context.WithCancel(context.Background())
	m.maxTTL.Store(int64(DefaultTTL))
	for _, n := range nodes {
		n.connect(m)
		m.nodes = append(m.nodes, n)
	}
	t.Cleanup(func() { require.NoError(t, m.Close()) })
	return m
}

// fakeSentinelNode is a Sentinel group's node over f.
func fakeSentinelNode(f *fakeRedis, acks int) *node {
	return &node{name: "fake", dial: f.dial, interruptible: true, sentinel: true, acks: acks, ackTimeout: 100 * time.Millisecond}
}

// onlyVote returns the only vote of a round on one node, and releases it.
func onlyVote(t *testing.T, r *round) nodeVote {
	t.Helper()
	defer r.release()
	require.Len(t, r.votes, 1, "the round must have collected the node's vote")
	return r.votes[0]
}

func testAcquire(t *testing.T, m *Manager, key string) nodeVote {
	return onlyVote(t, m.fanout(context.Background(), quorum, "EVALSHA", &acquireScript, acquireArgs([]string{key}, "tok", 1000), voteAcquire, write))
}

func testExtend(t *testing.T, m *Manager) nodeVote {
	return onlyVote(t, m.fanout(context.Background(), quorum, "EVALSHA", &extendScript, extendArgs([]string{"k"}, "tok", 1000), voteExtend, write))
}

func testRelease(t *testing.T, m *Manager) nodeVote {
	return onlyVote(t, m.fanout(context.Background(), quorum, "EVALSHA", &releaseScript, releaseArgs([]string{"k"}, "tok"), voteRelease1, unguarded))
}

// TestSentinelRetriesOnceOnNewMaster: a READONLY reply (a demoted master)
// on a Sentinel node makes the request run once more, on a new connection
// (the READONLY one is closed); a second failure is not retried again; a
// timeout is not retried; plain nodes never retry; nor is a request first
// sent one node timeout ago.
func TestSentinelRetriesOnceOnNewMaster(t *testing.T) {
	const timeout = 200 * time.Millisecond
	readOnlyOn := func(conns ...int) func(int, string, []interface{}) (interface{}, error) {
		return func(conn int, _ string, _ []interface{}) (interface{}, error) {
			for _, c := range conns {
				if c == conn {
					return nil, redis.Error(fmt.Sprintf("%s (connection %d)", errReadOnly, conn))
				}
			}
			return int64(1), nil
		}
	}

	t.Run("retried on the new master", func(t *testing.T) {
		f := &fakeRedis{answer: readOnlyOn(1)}
		m := newTestManager(t, timeout, fakeSentinelNode(f, 0))
		v := testExtend(t, m)
		require.True(t, v.ok, "the retry on the new master must count: %v", v.err)
		require.Equal(t, 2, f.dials(), "the retry must go to a new connection")
		require.Equal(t, []string{"EVALSHA extend"}, f.conn(1).sent())
		require.Equal(t, []string{"EVALSHA extend"}, f.conn(2).sent())
		require.True(t, f.conn(1).isClosed(), "the READONLY connection must be closed")
		require.False(t, f.conn(2).isClosed(), "the new master's connection stays open")
	})

	t.Run("both attempts fail", func(t *testing.T) {
		f := &fakeRedis{answer: readOnlyOn(1, 2, 3)}
		m := newTestManager(t, timeout, fakeSentinelNode(f, 0))
		v := testExtend(t, m)
		require.False(t, v.ok)
		require.ErrorContains(t, v.err, "(connection 2)", "the vote must carry the second attempt's error")
		require.Equal(t, []string{"EVALSHA extend", "EVALSHA extend"}, f.sent(), "never more than one retry")
	})

	t.Run("timeouts are not retried", func(t *testing.T) {
		for name, err := range map[string]error{
			"no reply":      errHang,
			"read deadline": &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded},
		} {
			f := &fakeRedis{answer: func(int, string, []interface{}) (interface{}, error) { return nil, err }}
			m := newTestManager(t, timeout, fakeSentinelNode(f, 0))
			v := testExtend(t, m)
			require.False(t, v.ok)
			if errors.Is(err, errHang) {
				require.ErrorIs(t, v.err, pipe.ErrNoReply)
			}
			require.NoError(t, m.Close()) // waits for the request's Done
			require.Equal(t, []string{"EVALSHA extend"}, f.sent(), "%s: a timeout must not be retried", name)
		}
	})

	t.Run("plain node", func(t *testing.T) {
		f := &fakeRedis{answer: readOnlyOn(1)}
		plain := fakeSentinelNode(f, 0)
		plain.sentinel = false
		m := newTestManager(t, timeout, plain)
		v := testExtend(t, m)
		require.ErrorContains(t, v.err, "READONLY")
		require.Equal(t, []string{"EVALSHA extend"}, f.sent(), "nodes outside a Sentinel group must not retry")
	})

	t.Run("node timeout passed", func(t *testing.T) {
		f := &fakeRedis{answer: readOnlyOn(1)}
		n := fakeSentinelNode(f, 0)
		m := newTestManager(t, timeout, n)
		// As m.submit, for a request first sent one node timeout ago.
		r := m.newRound(quorum, 1)
		c := &call{r: r, n: n, cmd: "EVALSHA", args: extendArgs([]string{"k"}, "tok", 1000), script: &extendScript,
			decode: voteExtend, kind: write, sent: time.Now().Add(-timeout), wg: &m.wg}
		m.wg.Add(1)
		r.want++
		r.refs.Add(1)
		n.wire.Submit(c)
		r.collect(context.Background())
		require.ErrorContains(t, onlyVote(t, r).err, "READONLY")
		require.Equal(t, []string{"EVALSHA extend"}, f.sent(), "no retry once the node timeout has passed")
	})
}

// TestSentinelReplicaAckSendsWait: with MinReplicaAcks, WAIT follows every
// batch holding a successful acquire or extend (EVALSHA or the EVAL
// fallback), and too few acknowledgements turn the vote into an error
// matching ErrUnavailable; releases are not acknowledged, and a refused
// acquire's vote does not depend on the acknowledgement.
func TestSentinelReplicaAckSendsWait(t *testing.T) {
	var acked atomic.Int64
	f := &fakeRedis{answer: scriptAnswers(&acked)}
	m := newTestManager(t, time.Second, fakeSentinelNode(f, 2))
	since := 0
	sent := func() []string { all := f.sent(); out := all[since:]; since = len(all); return out }

	acked.Store(2)
	require.True(t, testAcquire(t, m, "k").ok)
	require.Equal(t, []string{"EVALSHA acquire", "WAIT 2 100"}, sent(), "WAIT must ask for MinReplicaAcks within ReplicaAckTimeout")

	acked.Store(1)
	v := testAcquire(t, m, "k")
	require.False(t, v.ok)
	require.ErrorIs(t, v.err, ErrUnavailable)
	require.ErrorContains(t, v.err, "1 of 2 replicas acknowledged")
	require.ErrorIs(t, NodeError{Node: "fake", Err: v.err}, ErrUnavailable)
	sent()

	v = testExtend(t, m)
	require.ErrorIs(t, v.err, ErrUnavailable, "extend needs the acknowledgement too")
	require.Equal(t, []string{"EVALSHA extend", "WAIT 2 100"}, sent())

	for _, n := range []int64{0, 2} {
		acked.Store(n)
		v = testAcquire(t, m, "held")
		require.ErrorIs(t, v.err, ErrLocked, "a refused acquire is a clean no, whatever WAIT says (%d acks)", n)
		require.NotErrorIs(t, v.err, ErrUnavailable)
		sent()
	}

	require.True(t, testRelease(t, m).ok)
	require.Equal(t, []string{"EVALSHA release"}, sent(), "a batch of releases sends no WAIT")
	require.Equal(t, 1, f.dials())
}

// TestNoScriptFallbackIsAcknowledged: an acquire answered NOSCRIPT is
// resent as EVAL, and the EVAL waits for the replicas too.
func TestNoScriptFallbackIsAcknowledged(t *testing.T) {
	var acked atomic.Int64
	answers := scriptAnswers(&acked)
	f := &fakeRedis{answer: func(conn int, cmd string, args []interface{}) (interface{}, error) {
		if cmd == "EVALSHA" {
			return nil, errNoScript
		}
		return answers(conn, cmd, args)
	}}
	m := newTestManager(t, time.Second, fakeSentinelNode(f, 2))

	acked.Store(2)
	require.True(t, testAcquire(t, m, "k").ok)
	require.Equal(t, []string{"EVALSHA acquire", "WAIT 2 100", "EVAL acquire", "WAIT 2 100"}, f.sent())

	acked.Store(1)
	require.ErrorIs(t, testAcquire(t, m, "k").err, ErrUnavailable, "the EVAL fallback must be acknowledged")
	require.Equal(t, 1, f.dials(), "NOSCRIPT must not drop the connection")
}

// TestReplicaAckTimeoutFitsTheNodeTimeout: WAIT's timeout is
// min(ReplicaAckTimeout, 4/5 of the node timeout).
func TestReplicaAckTimeoutFitsTheNodeTimeout(t *testing.T) {
	for _, tc := range []struct {
		nodeTimeout time.Duration
		want        string
	}{
		{time.Second, "WAIT 2 100"},          // ReplicaAckTimeout
		{50 * time.Millisecond, "WAIT 2 40"}, // 4/5 of the node timeout
	} {
		var acked atomic.Int64
		acked.Store(2)
		f := &fakeRedis{answer: scriptAnswers(&acked)}
		m := newTestManager(t, tc.nodeTimeout, fakeSentinelNode(f, 2))
		testAcquire(t, m, "k")
		require.NoError(t, m.Close())
		require.Contains(t, f.sent(), tc.want, "node timeout %v", tc.nodeTimeout)
	}
}

// TestRestartedNodeVotesAreIgnored: when a new connection reports another
// run_id, the node's yes to a write no longer counts (restart guard), but
// its release still does.
func TestRestartedNodeVotesAreIgnored(t *testing.T) {
	var acked atomic.Int64
	answers := scriptAnswers(&acked)
	f := &fakeRedis{runIDs: []string{"before", "after"}, answer: func(conn int, cmd string, args []interface{}) (interface{}, error) {
		if conn == 1 && args[0] == releaseScript.sha1Arg {
			return nil, errReadOnly // drops the connection
		}
		return answers(conn, cmd, args)
	}}
	n := &node{name: "fake", dial: f.dial, interruptible: true}
	m := newTestManager(t, time.Second, n)
	n.guard = &restartGuard{maxTTL: m.maxTTLNow}

	require.True(t, testAcquire(t, m, "k").ok, "a node seen for the first time is trusted")
	require.Error(t, testRelease(t, m).err)
	v := testAcquire(t, m, "k") // on a new connection: run_id changed
	require.Equal(t, 2, f.dials())
	require.ErrorIs(t, v.err, errRestarted, "a restarted node's yes must not count")
	require.True(t, testRelease(t, m).ok, "releases count during the quarantine")
}
