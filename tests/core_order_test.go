package tests

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/redlock-go/redlock"
	"github.com/redlock-go/redlock/tests/harness"
)

// TestReleaseNeverOvertakesAcquireOnColdScriptCache is the regression test
// for a leak found by CI: on a server whose script cache held release.lua
// but not acquire.lua, a failed Lock's acquire came back NOSCRIPT and was
// resent as EVAL behind the release that the failed round had queued in the
// meantime. The release ran first (deleting nothing), the acquire second,
// and the key stayed set with our token until its TTL: a lock nobody holds
// blocked the resource.
//
// Each round empties the free node's script cache and loads release.lua
// only, then takes a lock that must fail (one node held by a foreign token,
// one down), closes the Manager and checks that the free node does not
// hold the key. It does the same for a lock that succeeds and is unlocked.
func TestReleaseNeverOvertakesAcquireOnColdScriptCache(t *testing.T) {
	srv := harness.StartN(t, 4, harness.Options{})
	dbs := coreDBs(t, srv)
	dead := coreDeadAddr(t)
	ignore := goleak.IgnoreCurrent()

	var release redlock.Script
	for _, s := range redlock.Scripts() {
		if s.Name == "release" {
			release = s
		}
	}
	require.NotEmpty(t, release.Source, "release script in Scripts()")
	cold := func(d *coreDB) {
		d.do(t, "SCRIPT", "FLUSH")
		d.do(t, "SCRIPT", "LOAD", release.Source)
	}

	const rounds = 40
	for i := 0; i < rounds; i++ {
		resource := fmt.Sprintf("order/failed/%d", i)
		cold(dbs[0])
		dbs[1].do(t, "SET", resource, "foreign-token", "PX", 60000)
		m := coreNew(t, []redlock.Instance{redlock.Addr(srv[0].Addr()), redlock.Addr(srv[1].Addr()), redlock.Addr(dead)},
			redlock.WithRetryCount(1), redlock.WithNodeTimeout(time.Second))
		_, err := m.Lock(coreCtx(t, 10*time.Second), resource, 30*time.Second)
		require.ErrorIs(t, err, redlock.ErrNotAcquired, "round %d: one free node of three", i)
		coreClose(t, m, 5*time.Second)
		v, held := dbs[0].get(t, resource)
		require.False(t, held, "round %d: after a failed Lock and Close the free node still holds %q = %q", i, resource, v)
	}

	for i := 0; i < rounds; i++ {
		resource := fmt.Sprintf("order/unlocked/%d", i)
		for _, d := range dbs[:3] {
			cold(d)
		}
		m := coreNew(t, coreAddrs(srv[:3]), redlock.WithRetryCount(1), redlock.WithNodeTimeout(time.Second))
		ctx := coreCtx(t, 10*time.Second)
		l, err := m.Lock(ctx, resource, 30*time.Second)
		require.NoError(t, err, "round %d", i)
		require.NoError(t, m.Unlock(ctx, l), "round %d", i)
		coreClose(t, m, 5*time.Second)
		coreRequireGone(t, dbs[:3], resource, fmt.Sprintf("round %d: after Unlock and Close", i))
	}
	coreNoLeak(t, ignore)
}
