package chaos

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The checker is what the suite's verdicts rest on: these tests prove it on
// hand-made histories.

func at(base time.Time, ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }

func TestCheckerFindsOverlapsByValidityWindow(t *testing.T) {
	b := time.Now()
	var h history
	h.add(section{client: 1, resource: "r", fence: 1, acquired: at(b, 0), until: at(b, 100), released: at(b, 50)})
	h.add(section{client: 2, resource: "r", fence: 2, acquired: at(b, 50), until: at(b, 150), released: at(b, 60)})   // starts as 1 releases: no overlap
	h.add(section{client: 3, resource: "r", fence: 3, acquired: at(b, 70), until: at(b, 90), released: at(b, 500)})   // holds past its validity...
	h.add(section{client: 4, resource: "r", fence: 4, acquired: at(b, 95), until: at(b, 200), released: at(b, 120)})  // ...so 4 does not overlap it
	h.add(section{client: 5, resource: "r", fence: 5, acquired: at(b, 110), until: at(b, 300), released: at(b, 130)}) // inside 4: overlap
	h.add(section{client: 6, resource: "s", fence: 1, acquired: at(b, 110), until: at(b, 300), released: at(b, 130)}) // another resource
	got := h.overlaps()
	require.Len(t, got, 1, "%v", got)
	require.Equal(t, 4, got[0].a.client)
	require.Equal(t, 5, got[0].b.client)
	require.Equal(t, 10*time.Millisecond, got[0].by)
	require.Empty(t, h.fenceInversions())
}

func TestCheckerFindsFenceInversionsInAcquisitionOrder(t *testing.T) {
	b := time.Now()
	var h history
	h.add(section{client: 1, resource: "r", fence: 5, acquired: at(b, 0), until: at(b, 100), released: at(b, 10)})
	h.add(section{client: 2, resource: "r", fence: 7, acquired: at(b, 5), until: at(b, 100), released: at(b, 30)})  // overlaps 1: not compared with it
	h.add(section{client: 3, resource: "r", fence: 6, acquired: at(b, 40), until: at(b, 100), released: at(b, 50)}) // after 2 ended with 7: inversion
	h.add(section{client: 4, resource: "r", fence: 8, acquired: at(b, 60), until: at(b, 100), released: at(b, 70)})
	got := h.fenceInversions()
	require.Len(t, got, 1, "%v", got)
	require.Contains(t, got[0], "client 3")
}

func TestRegisterRejectsOlderTokensAndClassifiesThem(t *testing.T) {
	r := &register{}
	future, past := time.Now().Add(time.Hour), time.Now().Add(-time.Millisecond)
	require.True(t, r.write(3, "a", future))
	require.True(t, r.write(3, "a", future), "the same holder may write again")
	require.False(t, r.write(3, "b", future), "another holder with the same token is a duplicate")
	require.False(t, r.write(2, "c", past), "a stalled holder is rejected")
	require.True(t, r.write(4, "d", past), "a late write with the highest token is accepted")
	s := sumRegisters(map[string]*register{"r": r})
	require.Equal(t, 3, s.accepted)
	require.Equal(t, 1, s.rejectedLate)
	require.Len(t, s.rejectedValid, 1)
	require.Equal(t, 1, s.lateAccepted)
	require.Zero(t, s.acceptedStale)
}
