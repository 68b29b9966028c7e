package tests

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/redlock-go/redlock"
	"github.com/redlock-go/redlock/tests/harness"
)

// TestFailedAttemptCleanupNeverReleasesLaterAttempt checks that the
// background cleanup of a failed attempt cannot delete the keys of a later,
// successful attempt of the same Lock call.
//
// Deterministic set-up on three real nodes (scripts preloaded):
//   - A: CLIENT PAUSE 400 WRITE, so every script sent to A in the first
//     400ms is answered only after the pause, in arrival order;
//   - B: held by a foreign token for 50ms;
//   - C: held by a foreign token for 900ms.
//
// Attempt 1 (t=0) fails at once on B and C; its goroutine for A is still
// waiting. Attempt 2 (t=150ms) gets B, is refused by C and waits for A. At
// t=400ms A answers attempt 1 (ok, so its cleanup sends a release) and
// attempt 2 (ok): attempt 2 succeeds with {A, B}. If both attempts share a
// token, attempt 1's release then deletes attempt 2's key on A and the
// "held" lock stands on B alone, so that, once C's foreign key lapses, a
// second client takes A and C: two holders at once. The lock returned must
// instead stay held on a quorum for as long as it is Valid, and nobody else
// may take the resource meanwhile.
func TestFailedAttemptCleanupNeverReleasesLaterAttempt(t *testing.T) {
	servers := harness.StartN(t, 3, harness.Options{})
	dbs := coreDBs(t, servers)
	ignore := goleak.IgnoreCurrent()
	ctx := coreCtx(t, 30*time.Second)
	const resource = "retried"

	for _, withToken := range []bool{false, true} {
		name := "random token"
		var lockOpts []redlock.LockOption
		if withToken {
			name = "WithToken"
			lockOpts = append(lockOpts, redlock.WithToken("my-fixed-token"))
		}
		t.Run(name, func(t *testing.T) {
			m := coreNew(t, coreAddrs(servers), redlock.WithNodeTimeout(2*time.Second),
				redlock.WithRetryCount(2), redlock.WithRetryDelay(150*time.Millisecond, 150*time.Millisecond))
			rival := coreNew(t, coreAddrs(servers), redlock.WithRetryCount(1))
			require.NoError(t, m.LoadScripts(ctx), "LoadScripts")
			require.NoError(t, rival.LoadScripts(ctx), "LoadScripts")
			for _, d := range dbs {
				d.do(t, "DEL", resource)
			}
			dbs[1].do(t, "SET", resource, "foreign", "PX", 50)
			dbs[2].do(t, "SET", resource, "foreign", "PX", 900)
			dbs[0].do(t, "CLIENT", "PAUSE", 400, "WRITE")

			l, err := m.Lock(ctx, resource, 10*time.Second, lockOpts...)
			if err != nil {
				// Refusing is safe (e.g. attempt 1's late key on A blocks
				// attempt 2); what matters is that no key is left behind.
				t.Logf("Lock refused: %v", err)
				require.ErrorIs(t, err, redlock.ErrNotAcquired)
				coreClose(t, m, 5*time.Second)
				coreClose(t, rival, 5*time.Second)
				for _, d := range dbs[:2] {
					v, ok := d.get(t, resource)
					require.False(t, ok, "a failed Lock left %q on %s", v, d)
				}
				return
			}
			require.True(t, l.Valid())
			// Let attempt 1's cleanup land (it is sent right after A answers).
			time.Sleep(300 * time.Millisecond)
			holders := coreHolders(t, dbs, resource, l.Token())
			require.True(t, l.Valid(), "the 10s lock is no longer valid")
			assert.GreaterOrEqual(t, holders, 2,
				"Lock succeeded, but while the lock is still Valid only %d of 3 nodes hold its token: "+
					"the cleanup of the failed first attempt deleted the second attempt's key", holders)

			// C's foreign key has lapsed by now: a rival must still be refused.
			harness.WaitFor(t, 2*time.Second, func() bool { return !dbs[2].exists(t, resource) }, "C's foreign key did not lapse")
			r, err := rival.Lock(ctx, resource, 10*time.Second)
			if err == nil {
				t.Errorf("two holders at once: a rival took %q (token %s) while our lock (token %s) is Valid=%t", resource, r.Token(), l.Token(), l.Valid())
			} else {
				require.ErrorIs(t, err, redlock.ErrLocked, "the rival must be refused for contention")
			}
			assert.NoError(t, m.Unlock(ctx, l), "Unlock of a lock that is still Valid")
			if r != nil {
				require.NoError(t, rival.Unlock(ctx, r))
			}
			coreClose(t, m, 5*time.Second)
			coreClose(t, rival, 5*time.Second)
		})
	}
	coreNoLeak(t, ignore)
}
