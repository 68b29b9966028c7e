package redlockotel_test

import (
	"context"
	"math"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/goleak"

	"github.com/redlock-go/redlock"
	redlockotel "github.com/redlock-go/redlock/otel"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const scope = "github.com/redlock-go/redlock"

// recorded is an SDK meter provider with a ManualReader and a tracer
// provider with a SpanRecorder: what WithTelemetry reported.
type recorded struct {
	reader *sdkmetric.ManualReader
	mp     *sdkmetric.MeterProvider
	spans  *tracetest.SpanRecorder
	tp     *sdktrace.TracerProvider
}

func newRecorded(t testing.TB) *recorded {
	r := &recorded{reader: sdkmetric.NewManualReader(), spans: tracetest.NewSpanRecorder()}
	r.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(r.reader))
	r.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(r.spans))
	t.Cleanup(func() {
		_ = r.mp.Shutdown(context.Background())
		_ = r.tp.Shutdown(context.Background())
	})
	return r
}

func (r *recorded) option() redlock.Option { return redlockotel.WithTelemetry(r.mp, r.tp) }

// metric returns the named metric of the library's scope, or false.
func (r *recorded) metric(t testing.TB, name string) (metricdata.Metrics, bool) {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, r.reader.Collect(context.Background(), &rm))
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != scope {
			continue
		}
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m, true
			}
		}
	}
	return metricdata.Metrics{}, false
}

// durations returns how many calls redlock.operation.duration recorded for
// op with outcome.
func (r *recorded) durations(t testing.TB, op, outcome string) uint64 {
	t.Helper()
	m, ok := r.metric(t, "redlock.operation.duration")
	if !ok {
		return 0
	}
	require.Equal(t, "s", m.Unit)
	h, ok := m.Data.(metricdata.Histogram[float64])
	require.True(t, ok, "redlock.operation.duration is a %T, not a float64 histogram", m.Data)
	want := attribute.NewSet(attribute.String("redlock.operation", op), attribute.String("redlock.outcome", outcome))
	for _, dp := range h.DataPoints {
		if dp.Attributes.Equals(&want) {
			require.Greater(t, dp.Sum, 0.0, "durations of %s/%s", op, outcome)
			return dp.Count
		}
	}
	return 0
}

// attempts returns the count and the sum of redlock.lock.attempts.
func (r *recorded) attempts(t testing.TB) (count uint64, sum int64) {
	t.Helper()
	m, ok := r.metric(t, "redlock.lock.attempts")
	if !ok {
		return 0, 0
	}
	h, ok := m.Data.(metricdata.Histogram[int64])
	require.True(t, ok, "redlock.lock.attempts is a %T, not an int64 histogram", m.Data)
	for _, dp := range h.DataPoints {
		count += dp.Count
		sum += dp.Sum
	}
	return count, sum
}

// sum returns the value of the int64 sum metric name at the attributes kv.
func (r *recorded) sum(t testing.TB, name string, monotonic bool, kv ...attribute.KeyValue) int64 {
	t.Helper()
	m, ok := r.metric(t, name)
	if !ok {
		return 0
	}
	s, ok := m.Data.(metricdata.Sum[int64])
	require.True(t, ok, "%s is a %T, not an int64 sum", name, m.Data)
	require.Equal(t, monotonic, s.IsMonotonic, "%s monotonic", name)
	want := attribute.NewSet(kv...)
	for _, dp := range s.DataPoints {
		if dp.Attributes.Equals(&want) {
			return dp.Value
		}
	}
	return 0
}

func (r *recorded) nodeErrors(t testing.TB, node, op string) int64 {
	t.Helper()
	return r.sum(t, "redlock.node.errors", true, attribute.String("redlock.node", node), attribute.String("redlock.operation", op))
}

func (r *recorded) held(t testing.TB) int64 {
	t.Helper()
	return r.sum(t, "redlock.locks.held", false)
}

func (r *recorded) events(t testing.TB, kind redlock.EventKind) int64 {
	t.Helper()
	return r.sum(t, "redlock.events", true, attribute.String("redlock.event", string(kind)))
}

// span returns the last ended span named name.
func (r *recorded) span(t testing.TB, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	ended := r.spans.Ended()
	for i := len(ended) - 1; i >= 0; i-- {
		if ended[i].Name() == name {
			return ended[i]
		}
	}
	require.FailNow(t, "no span "+name, "ended spans: %v", spanNames(ended))
	return nil
}

func spanNames(spans []sdktrace.ReadOnlySpan) []string {
	out := make([]string, len(spans))
	for i, s := range spans {
		out[i] = s.Name()
	}
	return out
}

func spanAttrs(s sdktrace.ReadOnlySpan) map[string]attribute.Value {
	out := map[string]attribute.Value{}
	for _, kv := range s.Attributes() {
		out[string(kv.Key)] = kv.Value
	}
	return out
}

// requireSpan checks a call's span: its figures and its status, Error with
// the call's error text when err is not nil.
func requireSpan(t testing.TB, s sdktrace.ReadOnlySpan, resource string, attempts, minVotes int, outcome string, err error) {
	t.Helper()
	a := spanAttrs(s)
	if resource != "" {
		require.Equal(t, resource, a["redlock.resource"].AsString(), "%s: redlock.resource", s.Name())
	}
	require.EqualValues(t, attempts, a["redlock.attempts"].AsInt64(), "%s: redlock.attempts", s.Name())
	require.GreaterOrEqual(t, a["redlock.votes"].AsInt64(), int64(minVotes), "%s: redlock.votes", s.Name())
	require.EqualValues(t, 2, a["redlock.quorum"].AsInt64(), "%s: redlock.quorum", s.Name())
	require.Equal(t, outcome, a["redlock.outcome"].AsString(), "%s: redlock.outcome", s.Name())
	if err == nil {
		require.Equal(t, codes.Unset, s.Status().Code, "%s: a successful call's status", s.Name())
		require.Empty(t, s.Events(), "%s: a successful call records no error", s.Name())
		return
	}
	require.Equal(t, codes.Error, s.Status().Code, "%s: a failed call's status", s.Name())
	require.Equal(t, err.Error(), s.Status().Description, "%s: status description", s.Name())
	var recordedErr bool
	for _, ev := range s.Events() {
		for _, kv := range ev.Attributes {
			if ev.Name == "exception" && kv.Key == "exception.message" && kv.Value.AsString() == err.Error() {
				recordedErr = true
			}
		}
	}
	require.True(t, recordedErr, "%s: the error was not recorded as an exception event: %v", s.Name(), s.Events())
}

func addrsOf(servers []*server) []redlock.Instance {
	out := make([]redlock.Instance, len(servers))
	for i, s := range servers {
		out[i] = redlock.Addr(s.addr)
	}
	return out
}

// newManager returns a Manager on servers with quick retries, closed when
// the test ends.
func newManager(t testing.TB, servers []*server, opts ...redlock.Option) *redlock.Manager {
	t.Helper()
	opts = append([]redlock.Option{redlock.WithRetryDelay(time.Millisecond, 2*time.Millisecond)}, opts...)
	m, err := redlock.New(addrsOf(servers), opts...)
	require.NoError(t, err, "redlock.New")
	t.Cleanup(func() { require.NoError(t, m.Close(), "Manager.Close") })
	return m
}

// TestSuccessfulCallsRecordMetricsAndChildSpans: every operation that
// succeeds records its duration with outcome ok and one span, a child of
// the span in the call's ctx, with its resource, attempts, votes and
// quorum; a Lock records one attempt.
func TestSuccessfulCallsRecordMetricsAndChildSpans(t *testing.T) {
	servers := startServers(t, 3)
	rec := newRecorded(t)
	m := newManager(t, servers, rec.option())
	other := newManager(t, servers)
	ctx, parent := rec.tp.Tracer("test").Start(context.Background(), "job")

	l, err := m.Lock(ctx, "ok-res", 5*time.Second)
	require.NoError(t, err)
	require.NoError(t, l.Extend(ctx, 0))
	locked, err := m.IsLocked(ctx, "ok-res")
	require.NoError(t, err)
	require.True(t, locked)
	_, err = m.Inspect(ctx, "ok-res")
	require.NoError(t, err)
	require.NoError(t, m.LoadScripts(ctx))
	require.NoError(t, l.Unlock(ctx))
	theirs, err := other.Lock(ctx, "ok-get", 5*time.Second)
	require.NoError(t, err)
	g, err := m.GetLock(ctx, "ok-get", theirs.Token())
	require.NoError(t, err)
	require.NoError(t, g.Unlock(ctx))
	parent.End()

	for _, op := range []string{"lock", "extend", "is_locked", "inspect", "load_scripts", "get"} {
		require.EqualValues(t, 1, rec.durations(t, op, "ok"), "duration of %s/ok", op)
	}
	require.EqualValues(t, 2, rec.durations(t, "unlock", "ok"), "duration of unlock/ok")
	count, sum := rec.attempts(t)
	require.EqualValues(t, 1, count, "one Lock call")
	require.EqualValues(t, 1, sum, "one attempt")
	require.EqualValues(t, 0, rec.held(t), "every lock taken was released")
	_, ok := rec.metric(t, "redlock.node.errors")
	require.False(t, ok, "no node failed")

	for _, c := range []struct {
		name, resource string
		minVotes       int
	}{
		{"redlock.lock", "ok-res", 2},
		{"redlock.extend", "ok-res", 2},
		{"redlock.is_locked", "ok-res", 2},
		{"redlock.inspect", "ok-res", 3},
		{"redlock.load_scripts", "", 2},
		{"redlock.get", "ok-get", 2},
		{"redlock.unlock", "ok-get", 2},
	} {
		s := rec.span(t, c.name)
		requireSpan(t, s, c.resource, 1, c.minVotes, "ok", nil)
		require.Equal(t, parent.SpanContext().TraceID(), s.SpanContext().TraceID(), "%s: trace", c.name)
		require.Equal(t, parent.SpanContext().SpanID(), s.Parent().SpanID(), "%s is not a child of the span in its ctx", c.name)
		require.Equal(t, scope, s.InstrumentationScope().Name, "%s: scope", c.name)
	}
	_, hasResource := spanAttrs(rec.span(t, "redlock.load_scripts"))["redlock.resource"]
	require.False(t, hasResource, "a call without a resource has no redlock.resource")
	require.Len(t, rec.spans.Ended(), 9, "one span per call, and the parent: %v", spanNames(rec.spans.Ended()))
}

// TestContentionIsOutcomeLocked: a Lock on a resource another Manager
// holds makes every attempt, ends with outcome locked and a span in error
// with the error's text; its failed attempts' cleanups are counted; a
// node that answered "held by another" is no node error.
func TestContentionIsOutcomeLocked(t *testing.T) {
	servers := startServers(t, 3)
	rec := newRecorded(t)
	m := newManager(t, servers, rec.option(), redlock.WithRetryCount(3))
	other := newManager(t, servers)
	ctx := context.Background()

	theirs, err := other.Lock(ctx, "busy", 10*time.Second)
	require.NoError(t, err)
	_, err = m.Lock(ctx, "busy", time.Second)
	require.ErrorIs(t, err, redlock.ErrLocked)

	require.EqualValues(t, 1, rec.durations(t, "lock", "locked"))
	count, sum := rec.attempts(t)
	require.EqualValues(t, 1, count, "one Lock call")
	require.EqualValues(t, 3, sum, "attempts = the retry count")
	requireSpan(t, rec.span(t, "redlock.lock"), "busy", 3, 0, "locked", err)
	require.EqualValues(t, 0, rec.held(t))
	_, ok := rec.metric(t, "redlock.node.errors")
	require.False(t, ok, "'held by another' is a vote, not a node error")
	require.EqualValues(t, 3, rec.events(t, redlock.EventCleanup), "one cleanup per failed attempt")
	require.NoError(t, theirs.Unlock(ctx))
}

// TestFailedNodesAreCountedPerNode: with one node of three down, its
// failures are counted under its redacted address (on the Lock when the
// round waited for it, else as a background error), and a Lock that met
// both another holder and the failed node is locked; with two down, the
// Lock is unavailable and both nodes are counted.
func TestFailedNodesAreCountedPerNode(t *testing.T) {
	servers := startServers(t, 3)
	rec := newRecorded(t)
	m := newManager(t, servers, rec.option(), redlock.WithRetryCount(1), redlock.WithNodeTimeout(time.Second))
	ctx := context.Background()
	nodes := m.Nodes()
	warm, err := m.Lock(ctx, "warm", time.Second) // connect to every node
	require.NoError(t, err)
	require.NoError(t, warm.Unlock(ctx))

	servers[2].kill()
	// A Lock that succeeds on 2 of 3 returns at the quorum: node 2's
	// failure is the Lock's if it came first, else a background one.
	l, err := m.Lock(ctx, "down-ok", 5*time.Second)
	require.NoError(t, err)
	requireSpan(t, rec.span(t, "redlock.lock"), "down-ok", 1, 2, "ok", nil)
	waitFor(t, 10*time.Second, func() bool {
		return rec.nodeErrors(t, nodes[2], "lock")+rec.nodeErrors(t, nodes[2], "background") >= 1
	}, "node 2's failure was counted neither on the Lock nor in the background")
	require.NoError(t, l.Unlock(ctx))

	// Node 0 holds the key for another token: the round can only end when
	// node 2 failed, so the failure is the Lock's.
	_, err = servers[0].do("SET", "down-1", "another-token", "PX", 60000)
	require.NoError(t, err)
	onLock := rec.nodeErrors(t, nodes[2], "lock")
	_, err = m.Lock(ctx, "down-1", time.Second)
	require.ErrorIs(t, err, redlock.ErrLocked)
	require.ErrorIs(t, err, redlock.ErrUnavailable)
	require.EqualValues(t, 1, rec.durations(t, "lock", "locked"), "contention and a failed node: locked")
	require.EqualValues(t, onLock+1, rec.nodeErrors(t, nodes[2], "lock"), "node 2's failure on the Lock")
	require.EqualValues(t, 0, rec.nodeErrors(t, nodes[0], "lock"), "node 0 voted 'held by another'")
	require.EqualValues(t, 0, rec.nodeErrors(t, nodes[1], "lock"), "node 1 voted yes")
	requireSpan(t, rec.span(t, "redlock.lock"), "down-1", 1, 0, "locked", err) // node 1's yes may come after the decision

	servers[1].kill()
	_, err = m.Lock(ctx, "down-2", time.Second)
	require.ErrorIs(t, err, redlock.ErrUnavailable)
	require.NotErrorIs(t, err, redlock.ErrLocked)
	require.EqualValues(t, 1, rec.durations(t, "lock", "unavailable"))
	require.EqualValues(t, 1, rec.nodeErrors(t, nodes[1], "lock"), "node 1's failure on the Lock")
	require.EqualValues(t, onLock+2, rec.nodeErrors(t, nodes[2], "lock"), "node 2's failure on the Lock")
	requireSpan(t, rec.span(t, "redlock.lock"), "down-2", 1, 0, "unavailable", err)
	require.Positive(t, rec.events(t, redlock.EventNodeDown)+rec.events(t, redlock.EventLateError), "background events of the dead nodes")
}

// TestCancelledCallsAreOutcomeCanceled: a Lock whose ctx expires while it
// waits for another holder (canceled, although it matches ErrLocked too),
// one whose ctx was cancelled before, and a call on a closed Manager are
// canceled, with the error on their span.
func TestCancelledCallsAreOutcomeCanceled(t *testing.T) {
	servers := startServers(t, 3)
	rec := newRecorded(t)
	m := newManager(t, servers, rec.option(), redlock.WithRetryCount(1000))
	other := newManager(t, servers)
	ctx := context.Background()

	theirs, err := other.Lock(ctx, "wait", 10*time.Second)
	require.NoError(t, err)
	dctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	_, err = m.Lock(dctx, "wait", time.Second)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorIs(t, err, redlock.ErrLocked, "the first attempt met the other holder")
	require.EqualValues(t, 1, rec.durations(t, "lock", "canceled"))
	s := rec.span(t, "redlock.lock")
	requireSpan(t, s, "wait", int(spanAttrs(s)["redlock.attempts"].AsInt64()), 0, "canceled", err)
	count, sum := rec.attempts(t)
	require.EqualValues(t, 1, count)
	require.Positive(t, sum)

	// A ctx cancelled before the call (on a held resource: with a free
	// one, the Lock may win the race with ctx).
	cctx, cancelNow := context.WithCancel(ctx)
	cancelNow()
	_, err = m.Lock(cctx, "wait", time.Second)
	require.ErrorIs(t, err, context.Canceled)
	require.EqualValues(t, 2, rec.durations(t, "lock", "canceled"))
	require.Equal(t, codes.Error, rec.span(t, "redlock.lock").Status().Code)
	require.NoError(t, theirs.Unlock(ctx))

	require.NoError(t, m.Close())
	_, err = m.IsLocked(ctx, "free")
	require.ErrorIs(t, err, redlock.ErrClosed)
	require.EqualValues(t, 1, rec.durations(t, "is_locked", "canceled"), "a call on a closed Manager")
	require.Equal(t, err.Error(), rec.span(t, "redlock.is_locked").Status().Description)
}

// TestInvalidInputIsOutcomeInvalid: calls refused for their input are
// invalid, make no Lock attempt and end their span in error.
func TestInvalidInputIsOutcomeInvalid(t *testing.T) {
	servers := startServers(t, 3)
	rec := newRecorded(t)
	m := newManager(t, servers, rec.option())
	ctx := context.Background()

	_, err := m.Lock(ctx, "", time.Second)
	require.ErrorIs(t, err, redlock.ErrInvalidArgument)
	requireSpan(t, rec.span(t, "redlock.lock"), "", 0, 0, "invalid", err)
	_, err = m.Lock(ctx, "neg-ttl", -time.Second)
	require.ErrorIs(t, err, redlock.ErrInvalidArgument)
	requireSpan(t, rec.span(t, "redlock.lock"), "neg-ttl", 0, 0, "invalid", err)
	err = m.Extend(ctx, nil, 0)
	require.ErrorIs(t, err, redlock.ErrInvalidArgument)
	requireSpan(t, rec.span(t, "redlock.extend"), "", 0, 0, "invalid", err)
	err = m.Unlock(ctx, nil)
	require.ErrorIs(t, err, redlock.ErrInvalidArgument)
	_, err = m.IsLocked(ctx, "")
	require.ErrorIs(t, err, redlock.ErrInvalidArgument)

	require.EqualValues(t, 2, rec.durations(t, "lock", "invalid"))
	require.EqualValues(t, 1, rec.durations(t, "extend", "invalid"))
	require.EqualValues(t, 1, rec.durations(t, "unlock", "invalid"))
	require.EqualValues(t, 1, rec.durations(t, "is_locked", "invalid"))
	count, _ := rec.attempts(t)
	require.EqualValues(t, 0, count, "a refused Lock made no attempt")
	require.EqualValues(t, 0, rec.held(t))
}

// TestLocksHeldFollowsAcquireReleaseAndLoss: locks.held goes to 1 on a
// Lock and back to 0 on its Unlock; a lock whose keys were deleted behind
// its back counts -1 when its Extend fails (not_held), and its Unlock does
// not count again.
func TestLocksHeldFollowsAcquireReleaseAndLoss(t *testing.T) {
	servers := startServers(t, 3)
	rec := newRecorded(t)
	m := newManager(t, servers, rec.option())
	ctx := context.Background()

	l, err := m.Lock(ctx, "held", 5*time.Second)
	require.NoError(t, err)
	require.EqualValues(t, 1, rec.held(t), "after Lock")
	require.NoError(t, l.Unlock(ctx))
	require.EqualValues(t, 0, rec.held(t), "after Unlock")

	l, err = m.Lock(ctx, "lost", 5*time.Second)
	require.NoError(t, err)
	require.EqualValues(t, 1, rec.held(t), "after the second Lock")
	for _, s := range servers {
		_, err := s.do("DEL", "lost")
		require.NoError(t, err)
	}
	err = l.Extend(ctx, 0)
	require.ErrorIs(t, err, redlock.ErrNotHeld)
	require.EqualValues(t, 0, rec.held(t), "a lock found lost counts -1")
	require.EqualValues(t, 1, rec.durations(t, "extend", "not_held"))
	requireSpan(t, rec.span(t, "redlock.extend"), "lost", 1, 0, "not_held", err)
	_ = l.Unlock(ctx)
	require.EqualValues(t, 0, rec.held(t), "the lost lock's Unlock does not count again")
}

// TestWithoutTheOptionNothingIsRecorded: a Manager without WithTelemetry
// reports nothing to the global providers, even when they are the SDK's;
// WithTelemetry(nil, nil) reports to them.
func TestWithoutTheOptionNothingIsRecorded(t *testing.T) {
	servers := startServers(t, 3)
	rec := setGlobal(t)
	plain := newManager(t, servers)
	cycle(t, plain, "plain")
	_, err := plain.Lock(context.Background(), "", time.Second)
	require.ErrorIs(t, err, redlock.ErrInvalidArgument)
	var rm metricdata.ResourceMetrics
	require.NoError(t, rec.reader.Collect(context.Background(), &rm))
	require.Empty(t, rm.ScopeMetrics, "a Manager without the option recorded metrics")
	require.Empty(t, rec.spans.Started(), "a Manager without the option started spans")

	global := newManager(t, servers, redlockotel.WithTelemetry(nil, nil))
	cycle(t, global, "global")
	require.EqualValues(t, 1, rec.durations(t, "lock", "ok"), "WithTelemetry(nil, nil) reports to the global meter provider")
	requireSpan(t, rec.span(t, "redlock.lock"), "global", 1, 2, "ok", nil)
}

// TestWithoutTheOptionAllocationsAreUnchanged: a Lock+Unlock cycle on a
// Manager without the option allocates as much with the SDK installed as
// the global providers (and a telemetry Manager run before) as with the
// default no-op providers.
func TestWithoutTheOptionAllocationsAreUnchanged(t *testing.T) {
	servers := startServers(t, 3)
	otel.SetMeterProvider(metricnoop.NewMeterProvider())
	otel.SetTracerProvider(tracenoop.NewTracerProvider())
	before := cycleAllocs(t, newManager(t, servers), "before")

	rec := setGlobal(t)
	telemetry := cycleAllocs(t, newManager(t, servers, redlockotel.WithTelemetry(nil, nil)), "telemetry")
	after := cycleAllocs(t, newManager(t, servers), "after")
	t.Logf("allocations per Lock+Unlock: %.2f without the option (%.2f with the SDK as the global providers), %.2f with WithTelemetry and the SDK", before, after, telemetry)
	// One allocation more on the path would be one more per cycle: the
	// margin only absorbs the noise of a process-wide mean (the best of
	// ten batches; up to about half an allocation seen under load).
	require.InDelta(t, before, after, 0.75, "a Manager without the option allocates differently once the SDK is the global provider")
	locks := rec.durations(t, "lock", "ok")
	require.Positive(t, locks, "the telemetry Manager did report")
	require.Len(t, rec.spans.Ended(), 2*int(locks), "only the telemetry Manager's calls were recorded")
}

// setGlobal installs a recorded SDK as the global providers until the
// test ends.
func setGlobal(t *testing.T) *recorded {
	rec := newRecorded(t)
	otel.SetMeterProvider(rec.mp)
	otel.SetTracerProvider(rec.tp)
	t.Cleanup(func() {
		otel.SetMeterProvider(metricnoop.NewMeterProvider())
		otel.SetTracerProvider(tracenoop.NewTracerProvider())
	})
	return rec
}

// cycle locks and unlocks resource once.
func cycle(t testing.TB, m *redlock.Manager, resource string) {
	t.Helper()
	ctx := context.Background()
	l, err := m.Lock(ctx, resource, 5*time.Second)
	require.NoError(t, err, "Lock %s", resource)
	require.NoError(t, l.Unlock(ctx), "Unlock %s", resource)
}

// cycleAllocs returns the allocations per Lock+Unlock cycle of m, the
// fewest over a few batches of cycles, then closes m (every Manager on
// the servers hears every release, so only the measured one may be
// open). The count is process-wide and a mean: the transport's goroutines
// allocate too, and sync.Pool refills after a GC (or, under the race
// detector, after its random drops) land in some batches only.
func cycleAllocs(t *testing.T, m *redlock.Manager, resource string) float64 {
	t.Helper()
	defer func() { require.NoError(t, m.Close()) }()
	ctx := context.Background()
	run := func(n int) {
		for i := 0; i < n; i++ {
			l, err := m.Lock(ctx, resource, 5*time.Second)
			if err == nil {
				err = l.Unlock(ctx)
			}
			if err != nil {
				t.Fatalf("a Lock+Unlock cycle on %s failed: %v", resource, err)
			}
		}
	}
	run(20)
	const cycles = 200
	best := math.Inf(1)
	for batch := 0; batch < 10; batch++ {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		before := ms.Mallocs
		run(cycles)
		runtime.ReadMemStats(&ms)
		best = math.Min(best, float64(ms.Mallocs-before)/cycles)
	}
	return best
}

// waitFor polls cond until it holds or bound passes.
func waitFor(t testing.TB, bound time.Duration, cond func() bool, msg string) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			require.FailNow(t, msg, "after %v", bound)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
