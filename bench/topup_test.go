package bench

import (
	"testing"

	"github.com/redlock-go/redlock"
)

// topUpContenders are redlock on Addr nodes with top-up on (the default,
// as every other scenario runs it) and off: redlock.WithTopUp.
var topUpContenders = []contender{
	{"topup-on", func(tb testing.TB, _ nodePools, tries int) client {
		return openRedlock(tb, addrInstances(), tries, false, redlock.WithTopUp(true))
	}},
	{"topup-off", func(tb testing.TB, _ nodePools, tries int) client {
		return openRedlock(tb, addrInstances(), tries, false, redlock.WithTopUp(false))
	}},
}

// BenchmarkTopUp is scenario g: what top-up costs, on and off in one run
// (redlock-addr only; redsync has no top-up). cycle is scenario a (p1 and
// p64): every Lock takes all five nodes, so top-up has nothing to do, and
// the cost is the bookkeeping of which nodes hold the lock. handoff is
// scenario c: the waiter's failed attempts contend with the holder, and
// the lock it wins may be topped up in the background.
func BenchmarkTopUp(b *testing.B) {
	b.Run("cycle", func(b *testing.B) { benchmarkCycles(b, topUpContenders, []int{1, 64}) })
	b.Run("handoff", func(b *testing.B) { benchmarkHandoff(b, topUpContenders) })
}
