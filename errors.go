package redlock

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Match them with errors.Is, never with ==: the library
// returns them wrapped, usually inside a *QuorumError.
var (
	// ErrInvalidArgument is wrapped by every error about bad input: an
	// instance spec without a host, with a non-numeric port, an unknown
	// scheme or a negative DB; Pool(nil); a Sentinel without addresses or
	// master; an invalid option; a resource that is empty or over 64 KiB; a
	// negative TTL; a nil Lock. Nothing is sent to any node in that case.
	ErrInvalidArgument = errors.New("redlock: invalid argument")

	// ErrNotAcquired is matched by every error returned by a failed Lock,
	// together with ErrLocked, ErrUnavailable or both (see Manager.Lock).
	ErrNotAcquired = errors.New("redlock: lock not acquired")

	// ErrLocked is matched by a failed Lock when at least one node answered
	// that another token holds the resource (contention).
	ErrLocked = errors.New("redlock: resource is locked by another token")

	// ErrUnavailable is matched when at least one node could not vote: it
	// was down, timed out, refused authentication or returned an error.
	ErrUnavailable = errors.New("redlock: node unavailable")

	// ErrNotHeld is matched by a failed Extend or Unlock: the token is not
	// held on a quorum of nodes any more (it expired, was released, was
	// taken over, or too many nodes could not confirm it).
	ErrNotHeld = errors.New("redlock: lock not held")

	// ErrLockLost is the cause of the cancellation of the ctx that Do hands
	// to its function: an extension failed or the local validity ran out.
	ErrLockLost = errors.New("redlock: lock lost")

	// ErrClosed is returned by calls on a Manager after Close.
	ErrClosed = errors.New("redlock: manager closed")
)

// errTooSlow is a node-independent failure: a quorum agreed, but after the
// time spent the lock's validity was already used up.
var errTooSlow = fmt.Errorf("%w: quorum reached after the lock's validity ran out", ErrUnavailable)

// errNoAnswerYet is the error of a node that had not answered when the
// caller's ctx ended (wrapped with ctx.Err()).
var errNoAnswerYet = errors.New("redlock: no answer before the caller's context ended")

// invalidf returns an error wrapping ErrInvalidArgument. Callers must never
// pass a password or a raw instance spec in args.
func invalidf(format string, args ...interface{}) error {
	return fmt.Errorf("%w: "+format, append([]interface{}{ErrInvalidArgument}, args...)...)
}

// NodeError is one node's part in a quorum failure.
type NodeError struct {
	Node string // the node's address, with any password redacted
	Err  error  // ErrLocked, ErrNotHeld, or what went wrong talking to the node
}

// Error returns "NODE: ERR".
func (e NodeError) Error() string { return e.Node + ": " + e.Err.Error() }

// Unwrap returns the node's error and, unless it is ErrLocked or ErrNotHeld
// (a clean vote against), ErrUnavailable too.
func (e NodeError) Unwrap() []error {
	if errors.Is(e.Err, ErrLocked) || errors.Is(e.Err, ErrNotHeld) {
		return []error{e.Err}
	}
	return []error{ErrUnavailable, e.Err}
}

// QuorumError reports that fewer than Needed nodes agreed to an operation.
// Lock, Extend, Unlock, GetLock and IsLocked return it (possibly wrapped);
// get it with errors.As. It matches, through errors.Is:
//   - ErrNotAcquired for Op "lock", ErrNotHeld for "extend", "unlock" and "get";
//   - ErrLocked when a node reported another holder (Op "lock");
//   - ErrUnavailable when a node failed, had not answered when the caller's
//     ctx ended (its NodeError then wraps ctx.Err()), or the quorum came
//     too late;
//   - context.Canceled / context.DeadlineExceeded when the caller's ctx ended;
//   - every node's error.
type QuorumError struct {
	Op       string      // "lock", "extend", "unlock", "get" or "is_locked"
	Resource string      // the resource (the first one for a multi-resource lock)
	Needed   int         // N/2+1
	Votes    int         // nodes that agreed
	Nodes    []NodeError // one per node that did not agree, in node order

	extra []error // op sentinel, ctx error, errTooSlow
}

// Error summarises the failure and every node's error.
func (e *QuorumError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "redlock: %s %q failed: %d of %d needed votes", e.Op, e.Resource, e.Votes, e.Needed)
	for _, x := range e.extra {
		if x != ErrNotAcquired && x != ErrNotHeld && x != ErrUnavailable {
			b.WriteString("; " + strings.TrimPrefix(x.Error(), "redlock: "))
		}
	}
	for _, n := range e.Nodes {
		b.WriteString("; " + n.Node + ": " + strings.TrimPrefix(n.Err.Error(), "redlock: "))
	}
	return b.String()
}

// Unwrap lets errors.Is and errors.As see the sentinels and node errors.
func (e *QuorumError) Unwrap() []error {
	out := make([]error, 0, len(e.extra)+len(e.Nodes))
	out = append(out, e.extra...)
	for _, n := range e.Nodes {
		out = append(out, n)
	}
	return out
}
