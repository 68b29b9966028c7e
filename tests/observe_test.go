package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/redlock-go/redlock"
	"github.com/redlock-go/redlock/tests/harness"
)

// obsRecorder is an Observer that keeps everything it is told.
type obsRecorder struct {
	mu     sync.Mutex
	starts []string // "op resource"
	ends   []redlock.OpEnd
	events []redlock.Event
}

type obsKey struct{}

func (o *obsRecorder) Start(ctx context.Context, op redlock.Op, resource string) context.Context {
	o.mu.Lock()
	o.starts = append(o.starts, string(op)+" "+resource)
	o.mu.Unlock()
	return context.WithValue(ctx, obsKey{}, string(op))
}

func (o *obsRecorder) End(ctx context.Context, e *redlock.OpEnd) {
	if ctx.Value(obsKey{}) != string(e.Op) {
		panic(fmt.Sprintf("End of %s without the ctx its Start returned", e.Op))
	}
	c := *e
	c.NodeErrors = append([]redlock.NodeError(nil), e.NodeErrors...)
	o.mu.Lock()
	o.ends = append(o.ends, c)
	o.mu.Unlock()
}

func (o *obsRecorder) Event(e redlock.Event) {
	o.mu.Lock()
	o.events = append(o.events, e)
	o.mu.Unlock()
}

// last returns the last OpEnd recorded.
func (o *obsRecorder) last(t *testing.T) redlock.OpEnd {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	require.NotEmpty(t, o.ends)
	return o.ends[len(o.ends)-1]
}

// held is the running sum of OpEnd.Held.
func (o *obsRecorder) held() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, e := range o.ends {
		n += e.Held
	}
	return n
}

func (o *obsRecorder) hasEvent(kind redlock.EventKind) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, e := range o.events {
		if e.Kind == kind {
			return true
		}
	}
	return false
}

// TestObserverSeesEveryOperation: each public operation reports its start
// (with the ctx handed on to End) and its end with op, resource, attempts,
// votes, quorum, node errors, error and the held count — for success,
// contention, a node down and invalid input.
func TestObserverSeesEveryOperation(t *testing.T) {
	servers := harness.StartN(t, 3, harness.Options{})
	rec := &obsRecorder{}
	m := coreNew(t, coreAddrs(servers), redlock.WithObserver(rec), redlock.WithRetryCount(2), redlock.WithRetryDelay(time.Millisecond, 2*time.Millisecond))
	other := coreNew(t, coreAddrs(servers))
	ctx := context.Background()

	l, err := m.Lock(ctx, "obs", 5*time.Second)
	require.NoError(t, err)
	e := rec.last(t)
	require.Equal(t, redlock.OpLock, e.Op)
	require.Equal(t, "obs", e.Resource)
	require.Equal(t, 1, e.Attempts)
	require.GreaterOrEqual(t, e.Votes, 2)
	require.Equal(t, 2, e.Quorum)
	require.Equal(t, 1, e.Held)
	require.NoError(t, e.Err)
	require.Empty(t, e.NodeErrors)
	require.Greater(t, e.Duration, time.Duration(0))

	require.NoError(t, l.Extend(ctx, 0))
	require.Equal(t, redlock.OpExtend, rec.last(t).Op)
	locked, err := m.IsLocked(ctx, "obs")
	require.NoError(t, err)
	require.True(t, locked)
	require.Equal(t, redlock.OpIsLocked, rec.last(t).Op)
	_, err = m.Inspect(ctx, "obs")
	require.NoError(t, err)
	require.Equal(t, redlock.OpInspect, rec.last(t).Op)
	require.Equal(t, 3, rec.last(t).Votes)
	g, err := m.GetLock(ctx, "obs", l.Token())
	require.NoError(t, err)
	require.Equal(t, redlock.OpGet, rec.last(t).Op)
	require.Equal(t, 1, rec.last(t).Held)
	require.NoError(t, m.LoadScripts(ctx))
	require.Equal(t, redlock.OpLoadScripts, rec.last(t).Op)
	require.Equal(t, 2, rec.held(), "two handles counted held")

	// Contention: another holder; two attempts, ErrLocked, a cleanup.
	held, err := other.Lock(ctx, "obs-busy", 5*time.Second)
	require.NoError(t, err)
	_, err = m.Lock(ctx, "obs-busy", time.Second)
	require.ErrorIs(t, err, redlock.ErrLocked)
	e = rec.last(t)
	require.Equal(t, 2, e.Attempts)
	require.Less(t, e.Votes, e.Quorum) // 0, or 1 where the other's acquire came second
	require.Equal(t, 0, e.Held)
	require.Empty(t, e.NodeErrors, "'held by another' is a vote, not a node error")
	require.ErrorIs(t, e.Err, redlock.ErrLocked)
	require.NoError(t, held.Unlock(ctx))

	// Unlock both handles: the count goes back to 0; a second Unlock of the
	// same lock does not count again.
	require.NoError(t, l.Unlock(ctx))
	require.Equal(t, -1, rec.last(t).Held)
	_ = g.Unlock(ctx)
	require.Equal(t, 0, rec.held())
	_ = l.Unlock(ctx)
	require.Equal(t, 0, rec.last(t).Held)

	// A node down: the lock is taken 2 of 3, the node's error is listed.
	require.NoError(t, servers[2].Kill())
	l, err = m.Lock(ctx, "obs-down", time.Second)
	require.NoError(t, err)
	e = rec.last(t)
	require.Equal(t, 2, e.Votes)
	// The Lock returns at the quorum: node 2's failure is in NodeErrors if
	// it came first, else it comes later as an EventLateError.
	if len(e.NodeErrors) == 0 {
		harness.WaitFor(t, 2*time.Second, func() bool { return rec.hasEvent(redlock.EventLateError) }, "node 2's failure was reported neither in NodeErrors nor as a late error")
	} else {
		require.Len(t, e.NodeErrors, 1)
		require.Equal(t, m.Nodes()[2], e.NodeErrors[0].Node)
	}
	require.NoError(t, l.Unlock(ctx))

	// A lock lost: Extend fails, the count drops.
	l, err = m.Lock(ctx, "obs-lost", 5*time.Second)
	require.NoError(t, err)
	for _, d := range coreDBs(t, servers[:2]) {
		d.do(t, "DEL", "obs-lost")
	}
	require.ErrorIs(t, l.Extend(ctx, 0), redlock.ErrNotHeld)
	require.Equal(t, -1, rec.last(t).Held, "a lock found lost counts -1")
	_ = l.Unlock(ctx)
	require.Equal(t, 0, rec.held())

	// Invalid input and ctx cancelled.
	_, err = m.Lock(ctx, "", time.Second)
	require.ErrorIs(t, err, redlock.ErrInvalidArgument)
	require.Equal(t, 0, rec.last(t).Attempts)
	// ctx cancelled while Lock waits for a held resource.
	patient := &obsRecorder{}
	waiter := coreNew(t, coreAddrs(servers[:2]), redlock.WithObserver(patient), redlock.WithRetryCount(1000))
	held, err = other.Lock(ctx, "obs-cancelled", 5*time.Second)
	require.NoError(t, err)
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	_, err = waiter.Lock(cctx, "obs-cancelled", time.Second)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorIs(t, patient.last(t).Err, context.DeadlineExceeded)
	require.NoError(t, held.Unlock(ctx))

	rec.mu.Lock()
	require.Len(t, rec.starts, len(rec.ends), "every Start has its End")
	require.Equal(t, "lock obs", rec.starts[0])
	rec.mu.Unlock()
	require.True(t, rec.hasEvent(redlock.EventCleanup), "the failed attempts' releases were reported")
	// A killed process refuses the dial at once; a killed container's
	// address goes unanswered until the dial times out.
	harness.WaitFor(t, 10*time.Second, func() bool { return rec.hasEvent(redlock.EventNodeDown) }, "node 2's failed reconnection was reported")
	_, err = redlock.New(coreAddrs(servers[:1]), redlock.WithObserver(nil))
	require.ErrorIs(t, err, redlock.ErrInvalidArgument)
}

// slogRecords is a slog handler's output, parsed.
type slogRecords struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *slogRecords) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *slogRecords) text() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// find returns the first record of event kind at level, or nil.
func (s *slogRecords) find(t *testing.T, kind redlock.EventKind, level string) map[string]interface{} {
	t.Helper()
	for _, line := range strings.Split(s.text(), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]interface{}
		require.NoError(t, json.Unmarshal([]byte(line), &rec), "record %q", line)
		if rec["event"] == string(kind) && rec["level"] == level {
			return rec
		}
	}
	return nil
}

func (s *slogRecords) wait(t *testing.T, kind redlock.EventKind, level string) map[string]interface{} {
	t.Helper()
	var rec map[string]interface{}
	harness.WaitFor(t, 10*time.Second, func() bool { rec = s.find(t, kind, level); return rec != nil },
		"no %s record of event %s; got:\n%s", level, kind, s.text())
	return rec
}

// TestLoggerRecordsBackgroundEvents: every background event is logged at
// its level — a failed attempt's cleanup, a late node error, a keep-alive
// extension, a lock lost by Do, a top-up, a node down and back up, the
// restart guard's quarantine — and no record contains the nodes' password.
func TestLoggerRecordsBackgroundEvents(t *testing.T) {
	const password = "obs-s3cret-pw"
	servers := harness.StartN(t, 3, harness.Options{Password: password})
	out := &slogRecords{}
	logger := slog.New(slog.NewJSONHandler(out, &slog.HandlerOptions{Level: slog.LevelDebug}))
	insts := make([]redlock.Instance, len(servers))
	for i, s := range servers {
		insts[i] = redlock.URL("redis://:" + password + "@" + s.Addr())
	}
	m := coreNew(t, insts, redlock.WithLogger(logger), redlock.WithNodeTimeout(300*time.Millisecond))
	other := coreNew(t, insts)
	dbs := coreDBs(t, servers)
	ctx := context.Background()

	// cleanup (Debug): a failed attempt.
	held, err := other.Lock(ctx, "log-busy", 5*time.Second)
	require.NoError(t, err)
	_, err = m.Lock(ctx, "log-busy", time.Second)
	require.ErrorIs(t, err, redlock.ErrLocked)
	rec := out.wait(t, redlock.EventCleanup, "DEBUG")
	require.Equal(t, "log-busy", rec["resource"])
	require.NoError(t, held.Unlock(ctx))

	// topup (Debug): a lock won on 2 of 3 takes node 2 once it is free.
	topUpForeign(t, dbs[2], "log-topup", "contender", time.Minute)
	l, err := m.Lock(ctx, "log-topup", 5*time.Second)
	require.NoError(t, err)
	topUpFree(t, dbs[2], "log-topup", true)
	rec = out.wait(t, redlock.EventTopUp, "DEBUG")
	require.EqualValues(t, 3, rec["nodes_held"])
	require.NoError(t, l.Unlock(ctx))

	// keepalive (Debug), then lock_lost (Warn): Do's lock deleted behind
	// its back.
	err = m.Do(ctx, "log-do", 300*time.Millisecond, func(ctx context.Context) error {
		time.Sleep(250 * time.Millisecond) // one extension at 100 ms
		for _, d := range dbs {
			d.do(t, "DEL", "log-do")
		}
		<-ctx.Done()
		return nil
	})
	require.ErrorIs(t, err, redlock.ErrLockLost)
	out.wait(t, redlock.EventKeepAlive, "DEBUG")
	rec = out.wait(t, redlock.EventLockLost, "WARN")
	require.Contains(t, rec["error"], "not held")

	// late_error (Warn): node 2 paused; the Lock returns at 2 of 3 and the
	// node's acquire fails later, with nobody waiting for it.
	require.NoError(t, servers[2].Pause())
	l, err = m.Lock(ctx, "log-late", 5*time.Second)
	require.NoError(t, err)
	rec = out.wait(t, redlock.EventLateError, "WARN")
	require.Equal(t, m.Nodes()[2], rec["node"])
	require.NoError(t, servers[2].Resume())
	_ = l.Unlock(ctx)

	// node_down (Warn), node_up and quarantine (Info): node 1 restarted
	// without its data.
	require.NoError(t, servers[1].Kill())
	probe := func(kind redlock.EventKind, level string) { // requests make the transport redial
		harness.WaitFor(t, 10*time.Second, func() bool {
			_, _ = m.IsLocked(ctx, "log-probe")
			return out.find(t, kind, level) != nil
		}, "no %s record of %s", level, kind)
	}
	probe(redlock.EventNodeDown, "WARN")
	rec = out.wait(t, redlock.EventNodeDown, "WARN")
	require.Equal(t, m.Nodes()[1], rec["node"])
	require.NoError(t, servers[1].Restart())
	probe(redlock.EventNodeUp, "INFO")
	rec = out.wait(t, redlock.EventQuarantine, "INFO")
	require.Equal(t, m.Nodes()[1], rec["node"])

	coreClose(t, m, 5*time.Second)
	text := out.text()
	t.Logf("%d records", strings.Count(text, "\n"))
	coreMustNotContain(t, text, password, "a log record")
}

// TestLoggerRecordsSentinelFailover: the failover of a Sentinel group's
// master is logged at Info with the old and the new address.
func TestLoggerRecordsSentinelFailover(t *testing.T) {
	g := sentinelStart(t, "log-failover", harness.SentinelOptions{Password: "obs-failover-pw"})
	out := &slogRecords{}
	logger := slog.New(slog.NewJSONHandler(out, &slog.HandlerOptions{Level: slog.LevelInfo}))
	m := coreNew(t, []redlock.Instance{sentinelOf(g)}, redlock.WithLogger(logger), redlock.WithNodeTimeout(2*time.Second))
	ctx := context.Background()
	l, err := m.Lock(ctx, "log-failover", time.Second)
	require.NoError(t, err)
	require.NoError(t, l.Unlock(ctx))
	oldMaster, newMaster, _ := sentinelKillMaster(t, g)
	harness.WaitFor(t, 30*time.Second, func() bool {
		l, err := m.Lock(ctx, "log-failover", time.Second)
		if err != nil {
			return false
		}
		_ = l.Unlock(ctx)
		return true
	}, "no Lock after the failover")
	rec := out.wait(t, redlock.EventFailover, "INFO")
	require.Equal(t, oldMaster.Addr()+" -> "+newMaster.Addr(), rec["detail"])
	require.Nil(t, out.find(t, redlock.EventCleanup, "DEBUG"), "Info level: no Debug records")
	coreMustNotContain(t, out.text(), "obs-failover-pw", "a log record")
}
