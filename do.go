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
// While fn runs, the lock is extended every third of its ttl. The ctx given
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
	stop := make(chan struct{})
	done := make(chan struct{})
	if e := m.enter(); e != nil {
		close(done)
		cancel(ErrLockLost)
	} else {
		go func() {
			defer m.wg.Done()
			defer close(done)
			m.keepAlive(fctx, l, cancel, stop)
		}()
	}
	defer func() {
		close(stop)
		<-done
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

// keepAlive extends l every third of its ttl until stop is closed, and
// cancels fn's ctx with ErrLockLost when an extension fails, when the
// lock's validity runs out first, or when the Manager closes.
func (m *Manager) keepAlive(ctx context.Context, l *Lock, cancel context.CancelCauseFunc, stop <-chan struct{}) {
	interval := l.ttl / 3
	tick := time.NewTicker(interval)
	defer tick.Stop()
	expiry := time.NewTimer(time.Until(l.Until()))
	defer expiry.Stop()
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-m.closing:
			cancel(ErrLockLost)
			return
		case <-expiry.C:
			cancel(ErrLockLost)
			return
		case <-tick.C:
			// The extension may wait for slow nodes up to the node
			// timeout; the lock is lost the moment its validity ends,
			// so that is the extension's deadline too.
			ectx, ecancel := context.WithDeadline(ctx, l.Until())
			err := m.Extend(ectx, l, 0)
			ecancel()
			if err != nil {
				cancel(lostError{err})
				return
			}
			if !expiry.Stop() {
				<-expiry.C
			}
			expiry.Reset(time.Until(l.Until()))
		}
	}
}

// lostError is the cause of Do's cancellation when an extension failed:
// it matches ErrLockLost and the extension's error.
type lostError struct{ err error }

func (e lostError) Error() string {
	return "redlock: lock lost: " + strings.TrimPrefix(e.err.Error(), "redlock: ")
}

func (e lostError) Unwrap() []error { return []error{ErrLockLost, e.err} }
