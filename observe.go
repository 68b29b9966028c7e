package redlock

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// Op names a public operation of the Manager, as Observers see it.
type Op string

// The operations an Observer is told about.
const (
	OpLock        Op = "lock"         // Lock, LockMulti (and Do's Lock)
	OpExtend      Op = "extend"       // Extend (and the keep-alive of Do and Hold)
	OpUnlock      Op = "unlock"       // Unlock (and the release at the end of Do and Hold)
	OpIsLocked    Op = "is_locked"    // IsLocked
	OpGet         Op = "get"          // GetLock
	OpInspect     Op = "inspect"      // Inspect
	OpLoadScripts Op = "load_scripts" // LoadScripts, LoadScriptsReport
)

// Observer receives what a Manager does: every public operation, from its
// start to its end, and the background work that no caller sees. Add one
// with WithObserver; the module github.com/redlock-go/redlock/otel turns
// them into OpenTelemetry metrics and spans, WithLogger into log records.
//
// The methods are called synchronously: Start and End on the caller's
// goroutine, Event on the goroutine that did the work (a transport's
// reader among them). They must be safe for concurrent use, return quickly
// and never call back into the Manager. A Manager without observers calls
// nothing and allocates nothing for them.
type Observer interface {
	// Start is called when an operation begins, before its input is
	// checked; the context it returns (e.g. carrying a span) is the one
	// the operation runs with and the one End gets. resource is the first
	// resource of the call ("" when it has none).
	Start(ctx context.Context, op Op, resource string) context.Context
	// End is called once the operation returns, with its figures; e is
	// only valid during the call.
	End(ctx context.Context, e *OpEnd)
	// Event reports background work and node state changes.
	Event(e Event)
}

// OpEnd describes one finished operation.
type OpEnd struct {
	Op       Op
	Resource string        // the first resource ("" when none)
	Duration time.Duration // from Start to End
	// Attempts is the number of attempts a Lock made (1 for the other
	// operations, 0 when the input was refused).
	Attempts int
	// Votes is how many nodes agreed in the last round (the round that
	// decided the result); Quorum is how many had to.
	Votes, Quorum int
	// NodeErrors are the nodes that failed (unreachable, no reply in time,
	// an error reply, ignored by the restart guard), once per failure: in
	// every attempt of a Lock, in the one round of the other operations.
	// A node that answered "held by another" or "not held" is a vote, not
	// an error, and is not listed. Failures that come after the call
	// returned are EventLateError.
	NodeErrors []NodeError
	// Err is what the call returned: nil on success.
	Err error
	// Held is +1 when this call acquired a lock (Lock, GetLock), -1 when
	// it released a lock this Manager counted as held or found it lost
	// (Unlock, a failed Extend), 0 otherwise: the running sum is the
	// number of locks held through this Manager.
	Held int
}

// EventKind names a background event.
type EventKind string

// The background events. Failures carry Err.
const (
	// EventCleanup: a failed Lock attempt's release was queued on the
	// nodes that may hold its keys.
	EventCleanup EventKind = "cleanup"
	// EventLateError: a node failed a request nobody waited for any more:
	// a failed attempt's release, an Unlock's or a decided round's
	// straggler, a top-up. Node and Err say which and why.
	EventLateError EventKind = "late_error"
	// EventKeepAlive: Do or Hold extended its lock.
	EventKeepAlive EventKind = "keepalive"
	// EventLockLost: Do or Hold lost its lock (Err says how): its
	// function's ctx was cancelled with ErrLockLost.
	EventLockLost EventKind = "lock_lost"
	// EventTopUp: a top-up took nodes; Held is how many hold the lock now.
	EventTopUp EventKind = "topup"
	// EventQuarantine: the restart guard saw Node come back with a new
	// run_id; its votes are ignored for one max TTL.
	EventQuarantine EventKind = "quarantine"
	// EventFailover: a Sentinel group's master changed; Detail names the
	// old and the new address.
	EventFailover EventKind = "failover"
	// EventNodeDown: connecting to Node failed (Err), after it had been
	// reachable; the transport keeps retrying with backoff.
	EventNodeDown EventKind = "node_down"
	// EventNodeUp: Node is connected again after EventNodeDown.
	EventNodeUp EventKind = "node_up"
)

// Event is one background event.
type Event struct {
	Kind     EventKind
	Resource string // the lock's first resource; "" for node events
	Node     string // the node, its password redacted; "" for lock events
	Held     int    // EventTopUp: nodes holding the lock now
	Detail   string // EventFailover: "old -> new" master address
	Err      error  // the failure, if any
}

// WithObserver adds an Observer (see Observer); several may be added, and
// each sees every call. A nil Observer is ErrInvalidArgument at New.
func WithObserver(o Observer) Option {
	return func(c *config) {
		if o == nil {
			c.badObserver = true
			return
		}
		c.observers = append(c.observers, o)
	}
}

// WithLogger logs the background events (see Event) to l: failures that no
// caller sees at Warn (a lock lost by Do or Hold, a node that went down, a
// late error), a restart-guard quarantine, a Sentinel failover and a node
// back up at Info, the rest (cleanups, keep-alive extensions, top-ups) at
// Debug. Records carry the node's redacted address, never a password. nil,
// the default, logs nothing.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) {
		if l != nil {
			c.observers = append(c.observers, logObserver{l})
		}
	}
}

// logObserver is WithLogger's Observer: events only.
type logObserver struct{ l *slog.Logger }

func (logObserver) Start(ctx context.Context, _ Op, _ string) context.Context { return ctx }
func (logObserver) End(context.Context, *OpEnd)                               {}

func (o logObserver) Event(e Event) {
	level := slog.LevelDebug
	switch {
	case e.Err != nil || e.Kind == EventNodeDown || e.Kind == EventLockLost:
		level = slog.LevelWarn
	case e.Kind == EventQuarantine || e.Kind == EventFailover || e.Kind == EventNodeUp:
		level = slog.LevelInfo
	}
	ctx := context.Background()
	if !o.l.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, 5)
	attrs = append(attrs, slog.String("event", string(e.Kind)))
	if e.Resource != "" {
		attrs = append(attrs, slog.String("resource", e.Resource))
	}
	if e.Node != "" {
		attrs = append(attrs, slog.String("node", e.Node))
	}
	if e.Kind == EventTopUp {
		attrs = append(attrs, slog.Int("nodes_held", e.Held))
	}
	if e.Detail != "" {
		attrs = append(attrs, slog.String("detail", e.Detail))
	}
	if e.Err != nil {
		attrs = append(attrs, slog.String("error", e.Err.Error()))
	}
	o.l.LogAttrs(ctx, level, eventMessages[e.Kind], attrs...)
}

var eventMessages = map[EventKind]string{
	EventCleanup:    "redlock: released a failed attempt's keys",
	EventLateError:  "redlock: a node failed a background request",
	EventKeepAlive:  "redlock: extended a held lock",
	EventLockLost:   "redlock: lock lost while its function ran",
	EventTopUp:      "redlock: top-up took more nodes",
	EventQuarantine: "redlock: node restarted; its votes are ignored for one max TTL",
	EventFailover:   "redlock: Sentinel master changed",
	EventNodeDown:   "redlock: node unreachable",
	EventNodeUp:     "redlock: node reachable again",
}

// observed reports whether the Manager has observers.
func (m *Manager) observed() bool { return len(m.cfg.observers) > 0 }

// emit hands e to every observer.
func (m *Manager) emit(e Event) {
	for _, o := range m.cfg.observers {
		o.Event(e)
	}
}

// opStart tells the observers that op starts; it returns the ctx to run
// with and the OpEnd to fill, or nil (and ctx) without observers.
func (m *Manager) opStart(ctx context.Context, op Op, resource string) (context.Context, *opRun) {
	if !m.observed() {
		return ctx, nil
	}
	for _, o := range m.cfg.observers {
		ctx = o.Start(ctx, op, resource)
	}
	return ctx, &opRun{end: OpEnd{Op: op, Resource: resource, Quorum: m.quorum}, start: time.Now()}
}

// opRun is one observed operation in progress.
type opRun struct {
	end     OpEnd
	start   time.Time
	tracked bool // NodeErrors were collected round by round (round, failed)
}

// round records r, the round that decided a successful operation, and adds
// its node failures to those of the earlier attempts. A nil run (no
// observers) does nothing.
func (or *opRun) round(r *round) {
	if or == nil {
		return
	}
	or.end.Votes = r.ok
	or.tracked = true
	for _, v := range r.votes {
		if v.err != nil && isNodeFailure(v.err) {
			or.end.NodeErrors = append(or.end.NodeErrors, NodeError{Node: r.m.nodes[v.node].name, Err: v.err})
		}
	}
}

// failed records the node failures of a failed attempt of a Lock: every
// attempt's count in OpEnd.NodeErrors.
func (or *opRun) failed(qe *QuorumError) {
	or.tracked = true
	for _, ne := range qe.Nodes {
		if isNodeFailure(ne.Err) {
			or.end.NodeErrors = append(or.end.NodeErrors, ne)
		}
	}
}

// opEnd tells the observers that the operation ended with err.
func (m *Manager) opEnd(ctx context.Context, or *opRun, err error) {
	e := &or.end
	e.Duration, e.Err = time.Since(or.start), err
	if e.Attempts == 0 && !errors.Is(err, ErrInvalidArgument) {
		e.Attempts = 1
	}
	if err != nil {
		var qe *QuorumError
		if errors.As(err, &qe) {
			e.Votes = qe.Votes
			if !or.tracked { // a single-round operation's failure
				or.failed(qe)
			}
		}
	}
	for _, o := range m.cfg.observers {
		o.End(ctx, e)
	}
}

// lockEnd is opEnd for an operation that hands out a new lock (Lock,
// LockMulti, GetLock): a lock it returns counts as held from now on. or is
// nil without observers, and then it does nothing.
func (m *Manager) lockEnd(ctx context.Context, or *opRun, l *Lock, err error) {
	if or == nil {
		return
	}
	if l != nil {
		l.count()
		or.end.Held = 1
	}
	m.opEnd(ctx, or, err)
}

// isNodeFailure tells a node's failure from its vote: "held by another"
// and "not held" are answers.
func isNodeFailure(err error) bool {
	return !errors.Is(err, ErrLocked) && !errors.Is(err, ErrNotHeld)
}
