package redlock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Do runs fn while holding resource, like aioredlock's `async with`: it
// acquires the lock (as Lock, with ttl 0 meaning the default TTL), runs fn,
// and releases the lock when fn returns or panics.
//
// While fn runs, the lock is extended every third of its ttl (by the
// Manager's one keep-alive scheduler, which batches the extensions of all
// its held locks per node: see keepalive.go). The ctx given
// to fn is cancelled, with context.Cause(ctx) == ErrLockLost, as soon as an
// extension fails, the local validity runs out before an extension succeeds,
// or the Manager is closed. fn should stop its work when that happens.
//
// Do returns Lock's error if the lock was not acquired, and otherwise fn's
// error. If fn returned nil but the lock was lost while it ran, Do returns
// an error matching ErrLockLost, because fn's work may not have been
// exclusive. A failed release after fn is not reported: the keys expire with
// their TTL.
func (m *Manager) Do(ctx context.Context, resource string, ttl time.Duration, fn func(ctx context.Context) error) error {
	if fn == nil {
		return errors.Join(ErrNotAcquired, invalidf("nil function"))
	}
	l, err := m.Lock(ctx, resource, ttl)
	if err != nil {
		return err
	}
	return m.hold(ctx, l, fn)
}

// Hold is Do for a lock already held: it runs fn while keeping l alive
// (extending it every third of its ttl and cancelling fn's ctx with cause
// ErrLockLost when it is lost) and releases l when fn returns or panics.
// Use it when the wait for the lock and the work need different contexts
// (e.g. "wait at most 30s, then work as long as it takes"). Errors as Do;
// a nil lock or fn, or a lock of another Manager, is ErrInvalidArgument
// (and l is then left as it is).
func (m *Manager) Hold(ctx context.Context, l *Lock, fn func(ctx context.Context) error) error {
	switch {
	case l == nil:
		return invalidf("nil lock")
	case fn == nil:
		return invalidf("nil function")
	case l.m != m:
		return invalidf("lock belongs to another Manager")
	}
	return m.hold(ctx, l, fn)
}

// hold runs fn with l kept alive, then releases l.
func (m *Manager) hold(ctx context.Context, l *Lock, fn func(ctx context.Context) error) (err error) {
	fctx, cancel := context.WithCancelCause(ctx)
	e := m.keep(l, cancel) // keepalive.go: the Manager's one scheduler
	defer func() {
		m.unkeep(e)
		lost := errors.Is(context.Cause(fctx), ErrLockLost)
		cancel(context.Canceled)
		uctx, ucancel := context.WithTimeout(context.WithoutCancel(ctx), 2*m.cfg.nodeTimeout)
		_ = m.Unlock(uctx, l)
		ucancel()
		if err == nil && lost {
			err = fmt.Errorf("%w: %q was lost while the function ran", ErrLockLost, l.keys[0])
		}
	}()
	return fn(fctx)
}

// errValidityEnded: the lock's validity ended before an extension succeeded.
var errValidityEnded = errors.New("redlock: the lock's validity ended before it could be extended")

// lost reports to the observers that Do or Hold lost l.
func (m *Manager) lost(l *Lock, err error) {
	if m.observed() {
		m.emit(Event{Kind: EventLockLost, Resource: l.keys[0], Err: err})
	}
}

// lostError is the cause of Do's cancellation when an extension failed:
// it matches ErrLockLost and the extension's error.
type lostError struct{ err error }

func (e lostError) Error() string {
	return "redlock: lock lost: " + strings.TrimPrefix(e.err.Error(), "redlock: ")
}

func (e lostError) Unwrap() []error { return []error{ErrLockLost, e.err} }
