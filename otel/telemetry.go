// Package redlockotel reports what a redlock.Manager does as OpenTelemetry
// metrics and spans. Add it with one option:
//
//	m, err := redlock.New(nodes, redlockotel.WithTelemetry(nil, nil)) // the global providers
//
// The instrumentation scope of the meter and the tracer is
// "github.com/redlock-go/redlock". The metrics:
//
//   - redlock.operation.duration (Float64Histogram, s): every public call,
//     with the attributes redlock.operation (lock, extend, unlock,
//     is_locked, get, inspect, load_scripts) and redlock.outcome (see
//     below).
//   - redlock.lock.attempts (Int64Histogram): attempts per Lock call;
//     calls refused for invalid input made none and are not recorded.
//   - redlock.node.errors (Int64Counter): one per node that failed a
//     call's deciding round (unreachable, no reply in time, an error
//     reply, ignored by the restart guard), with redlock.node (the node's
//     address, password redacted) and redlock.operation; a node that
//     failed a request nobody waited for any more (redlock.EventLateError)
//     counts with redlock.operation "background". A node that answered
//     "held by another" or "not held" voted: it is not an error.
//   - redlock.locks.held (Int64UpDownCounter): +1 when a lock is acquired
//     (Lock, GetLock), -1 when it is released or found lost (Unlock, a
//     failed Extend).
//   - redlock.events (Int64Counter): the background events, with
//     redlock.event (cleanup, late_error, keepalive, lock_lost, topup,
//     quarantine, failover, node_down, node_up).
//
// The outcome is the first of these that the call's error matches with
// errors.Is: nil is "ok"; redlock.ErrInvalidArgument is "invalid";
// context.Canceled, context.DeadlineExceeded and redlock.ErrClosed (the
// call was cut short by its caller or by Close) are "canceled";
// redlock.ErrLocked is "locked"; redlock.ErrUnavailable is "unavailable";
// redlock.ErrNotHeld is "not_held"; any other error is "unavailable". So a
// Lock that met both another holder and failed nodes is "locked", and a
// failed Extend or Unlock in which a node failed is "unavailable" although
// it matches ErrNotHeld too.
//
// The option's observer is safe for concurrent use and may be shared by
// several Managers; everything it records per call is computed once, so
// it allocates only what the OpenTelemetry SDK needs (and one ctx value
// per recorded span).
//
// Every call is also a span of kind client, named "redlock." followed by
// the operation (redlock.lock, redlock.extend, redlock.unlock,
// redlock.is_locked, redlock.get, redlock.inspect, redlock.load_scripts), a
// child of the span in the call's ctx, with the attributes
// redlock.resource (the first resource, when the call has one),
// redlock.attempts, redlock.votes (the nodes that agreed in the deciding
// round), redlock.quorum and redlock.outcome. A failed call records its
// error and sets the status Error with the error's text; the library's
// errors never contain a password.
package redlockotel

import (
	"context"
	"errors"
	"sync"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/redlock-go/redlock"
)

// scope is the instrumentation scope of the meter and the tracer.
const scope = "github.com/redlock-go/redlock"

// Attribute keys.
const (
	keyOperation = attribute.Key("redlock.operation")
	keyOutcome   = attribute.Key("redlock.outcome")
	keyNode      = attribute.Key("redlock.node")
	keyEvent     = attribute.Key("redlock.event")
	keyResource  = attribute.Key("redlock.resource")
	keyAttempts  = attribute.Key("redlock.attempts")
	keyVotes     = attribute.Key("redlock.votes")
	keyQuorum    = attribute.Key("redlock.quorum")
)

// background is the redlock.operation of a node error that no call waited
// for (redlock.EventLateError).
const background = "background"

// WithTelemetry returns an option that makes the Manager report its calls
// as OpenTelemetry metrics from mp and spans from tp (see the package
// documentation for the names). A nil mp means otel.GetMeterProvider(), a
// nil tp otel.GetTracerProvider(); both are read when WithTelemetry is
// called (the global ones delegate to providers set later). Without the
// option a Manager records nothing and costs nothing. Errors creating the
// instruments go to otel.Handle.
func WithTelemetry(mp metric.MeterProvider, tp trace.TracerProvider) redlock.Option {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return redlock.WithObserver(newTelemetry(mp, tp))
}

// ops are the operations whose attributes are computed once.
var ops = []redlock.Op{
	redlock.OpLock, redlock.OpExtend, redlock.OpUnlock, redlock.OpIsLocked,
	redlock.OpGet, redlock.OpInspect, redlock.OpLoadScripts,
}

// events are the background events whose attributes are computed once.
var events = []redlock.EventKind{
	redlock.EventCleanup, redlock.EventLateError, redlock.EventKeepAlive,
	redlock.EventLockLost, redlock.EventTopUp, redlock.EventQuarantine,
	redlock.EventFailover, redlock.EventNodeDown, redlock.EventNodeUp,
}

// outcome is a call's result, as the redlock.outcome attribute says it.
type outcome int

const (
	outcomeOK outcome = iota
	outcomeLocked
	outcomeUnavailable
	outcomeNotHeld
	outcomeCanceled
	outcomeInvalid
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"ok", "locked", "unavailable", "not_held", "canceled", "invalid"}

// outcomeOf classifies err; the order is the precedence the package
// documentation states.
func outcomeOf(err error) outcome {
	switch {
	case err == nil:
		return outcomeOK
	case errors.Is(err, redlock.ErrInvalidArgument):
		return outcomeInvalid
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded), errors.Is(err, redlock.ErrClosed):
		return outcomeCanceled
	case errors.Is(err, redlock.ErrLocked):
		return outcomeLocked
	case errors.Is(err, redlock.ErrUnavailable):
		return outcomeUnavailable
	case errors.Is(err, redlock.ErrNotHeld):
		return outcomeNotHeld
	default:
		return outcomeUnavailable
	}
}

// opInstr holds what one operation's calls pass to the SDK, computed once.
type opInstr struct {
	name     string                             // the redlock.operation value
	spanName string                             // "redlock." + name
	duration [numOutcomes][]metric.RecordOption // redlock.operation + redlock.outcome
	outcome  [numOutcomes]attribute.KeyValue    // the span's redlock.outcome
}

func newOpInstr(op redlock.Op) *opInstr {
	in := &opInstr{name: string(op), spanName: "redlock." + string(op)}
	for oc := outcome(0); oc < numOutcomes; oc++ {
		in.outcome[oc] = keyOutcome.String(outcomeNames[oc])
		set := attribute.NewSet(keyOperation.String(in.name), in.outcome[oc])
		in.duration[oc] = []metric.RecordOption{metric.WithAttributeSet(set)}
	}
	return in
}

// nodeOp keys the attribute sets of redlock.node.errors.
type nodeOp struct{ node, op string }

// maxNodeSets bounds the cache of node error attribute sets; a Manager's
// nodes are fixed, so it only matters for an option shared by many.
const maxNodeSets = 1024

// telemetry is the Observer behind WithTelemetry. Everything but nodeSets
// is read-only after newTelemetry.
type telemetry struct {
	tracer     trace.Tracer
	duration   metric.Float64Histogram
	attempts   metric.Int64Histogram
	nodeErrors metric.Int64Counter
	held       metric.Int64UpDownCounter
	eventCount metric.Int64Counter

	ops       map[redlock.Op]*opInstr
	eventSets map[redlock.EventKind][]metric.AddOption

	mu       sync.RWMutex                  // protects nodeSets
	nodeSets map[nodeOp][]metric.AddOption // redlock.node + redlock.operation
}

func newTelemetry(mp metric.MeterProvider, tp trace.TracerProvider) *telemetry {
	meter := mp.Meter(scope)
	t := &telemetry{
		tracer:    tp.Tracer(scope),
		ops:       make(map[redlock.Op]*opInstr, len(ops)),
		eventSets: make(map[redlock.EventKind][]metric.AddOption, len(events)),
		nodeSets:  make(map[nodeOp][]metric.AddOption),
	}
	var errs [5]error
	t.duration, errs[0] = meter.Float64Histogram("redlock.operation.duration",
		metric.WithUnit("s"),
		metric.WithDescription("Duration of the Manager's calls."),
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
	t.attempts, errs[1] = meter.Int64Histogram("redlock.lock.attempts",
		metric.WithUnit("{attempt}"),
		metric.WithDescription("Attempts per Lock call."),
		metric.WithExplicitBucketBoundaries(1, 2, 3, 4, 5, 10, 25, 50, 100))
	t.nodeErrors, errs[2] = meter.Int64Counter("redlock.node.errors",
		metric.WithUnit("{error}"),
		metric.WithDescription("Requests a node failed: unreachable, no reply in time, an error reply, ignored by the restart guard."))
	t.held, errs[3] = meter.Int64UpDownCounter("redlock.locks.held",
		metric.WithUnit("{lock}"),
		metric.WithDescription("Locks held through the Manager."))
	t.eventCount, errs[4] = meter.Int64Counter("redlock.events",
		metric.WithUnit("{event}"),
		metric.WithDescription("Background events: cleanups, late errors, keep-alive extensions, locks lost, top-ups, quarantines, failovers, nodes down and up."))
	if err := errors.Join(errs[:]...); err != nil {
		otel.Handle(err)
	}
	for _, op := range ops {
		t.ops[op] = newOpInstr(op)
	}
	for _, k := range events {
		t.eventSets[k] = eventOpts(k)
	}
	return t
}

func eventOpts(k redlock.EventKind) []metric.AddOption {
	return []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(keyEvent.String(string(k))))}
}

// op returns op's precomputed instruments; an operation this package does
// not know yet gets them built for the call.
func (t *telemetry) op(op redlock.Op) *opInstr {
	if in, ok := t.ops[op]; ok {
		return in
	}
	return newOpInstr(op)
}

// nodeOpts returns the attributes of a node error of node in op.
func (t *telemetry) nodeOpts(node, op string) []metric.AddOption {
	k := nodeOp{node, op}
	t.mu.RLock()
	opts, ok := t.nodeSets[k]
	t.mu.RUnlock()
	if ok {
		return opts
	}
	opts = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(keyNode.String(node), keyOperation.String(op)))}
	t.mu.Lock()
	if len(t.nodeSets) < maxNodeSets {
		t.nodeSets[k] = opts
	}
	t.mu.Unlock()
	return opts
}

// spanKey is the ctx key of the span t started; one per telemetry, so that
// two of them on one Manager each end their own.
type spanKey struct{ t *telemetry }

// Start starts the call's span as a child of the span in ctx. A span that
// records is also kept under t's own key (one small allocation), since
// another observer may put a span of its own in the ctx before End; one
// that does not record needs no End. The attributes are all set in End,
// in one call (BenchmarkLockUnlock/sdk: 35 allocations per Lock+Unlock
// cycle instead of 38).
func (t *telemetry) Start(ctx context.Context, op redlock.Op, _ string) context.Context {
	ctx, span := t.tracer.Start(ctx, t.op(op).spanName, spanStart...)
	if !span.IsRecording() {
		return ctx
	}
	return context.WithValue(ctx, spanKey{t}, span)
}

// spanStart are the options of every span.
var spanStart = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient)}

// End records the call's metrics and ends its span.
func (t *telemetry) End(ctx context.Context, e *redlock.OpEnd) {
	in := t.op(e.Op)
	oc := outcomeOf(e.Err)
	t.duration.Record(ctx, e.Duration.Seconds(), in.duration[oc]...)
	if e.Op == redlock.OpLock && e.Attempts > 0 {
		t.attempts.Record(ctx, int64(e.Attempts))
	}
	if e.Held != 0 {
		t.held.Add(ctx, int64(e.Held))
	}
	for _, ne := range e.NodeErrors {
		t.nodeErrors.Add(ctx, 1, t.nodeOpts(ne.Node, in.name)...)
	}
	span, ok := ctx.Value(spanKey{t}).(trace.Span)
	if !ok {
		return
	}
	attrs := [...]attribute.KeyValue{
		keyAttempts.Int(e.Attempts),
		keyVotes.Int(e.Votes),
		keyQuorum.Int(e.Quorum),
		in.outcome[oc],
		keyResource.String(e.Resource),
	}
	if e.Resource == "" {
		span.SetAttributes(attrs[:4]...)
	} else {
		span.SetAttributes(attrs[:]...)
	}
	if e.Err != nil {
		span.RecordError(e.Err)
		span.SetStatus(codes.Error, e.Err.Error())
	}
	span.End()
}

// Event counts background events, and a late node error as a node error
// of the "background" operation.
func (t *telemetry) Event(e redlock.Event) {
	ctx := context.Background()
	opts, ok := t.eventSets[e.Kind]
	if !ok {
		opts = eventOpts(e.Kind)
	}
	t.eventCount.Add(ctx, 1, opts...)
	if e.Kind == redlock.EventLateError && e.Node != "" {
		t.nodeErrors.Add(ctx, 1, t.nodeOpts(e.Node, background)...)
	}
}
