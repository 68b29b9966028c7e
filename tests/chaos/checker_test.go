package chaos

import (
	"container/heap"
	"fmt"
	"sort"
	"sync"
	"time"
)

// section is one critical section as its client saw it, on this process's
// monotonic clock.
type section struct {
	client   int
	resource string
	fence    int64
	acquired time.Time // when Lock returned
	until    time.Time // the lock's Until(): the end of its validity
	released time.Time // when the client called Unlock
}

// end is when the client stopped holding the lock by its own account: at
// Unlock, or when the validity ran out if that came first.
func (s section) end() time.Time {
	if s.released.Before(s.until) {
		return s.released
	}
	return s.until
}

func (s section) String() string {
	return fmt.Sprintf("client %d %q fence %d [%s, %s]", s.client, s.resource, s.fence,
		s.acquired.Format("15:04:05.000000"), s.end().Format("15:04:05.000000"))
}

// overlap is two holders of one resource at once: b acquired before a's
// window [acquired, end] closed.
type overlap struct {
	a, b section
	by   time.Duration // how long both held it
}

func (o overlap) String() string {
	return fmt.Sprintf("%v and %v overlap by %v", o.a, o.b, o.by)
}

// history collects every critical section of a run. Safe for concurrent use.
type history struct {
	mu       sync.Mutex
	sections []section
}

func (h *history) add(s section) {
	h.mu.Lock()
	h.sections = append(h.sections, s)
	h.mu.Unlock()
}

// overlaps returns, per resource, every section that began while an earlier
// one's window was still open, paired with the earlier section whose window
// reaches furthest. A correct lock has none.
func (h *history) overlaps() []overlap {
	h.mu.Lock()
	all := append([]section(nil), h.sections...)
	h.mu.Unlock()
	sort.SliceStable(all, func(i, j int) bool {
		if all[i].resource != all[j].resource {
			return all[i].resource < all[j].resource
		}
		return all[i].acquired.Before(all[j].acquired)
	})
	var out []overlap
	var open section // the section of this resource whose window ends last so far
	for i, s := range all {
		if i > 0 && s.resource == open.resource && s.acquired.Before(open.end()) {
			until := open.end()
			if s.end().Before(until) {
				until = s.end()
			}
			out = append(out, overlap{a: open, b: s, by: until.Sub(s.acquired)})
		}
		if i == 0 || s.resource != open.resource || s.end().After(open.end()) {
			open = s
		}
	}
	return out
}

// fenceInversions returns, per resource, every section whose fencing token
// is not above the token of a section that had ended (by its own window)
// before it was acquired: tokens must strictly increase in acquisition order.
func (h *history) fenceInversions() []string {
	h.mu.Lock()
	all := append([]section(nil), h.sections...)
	h.mu.Unlock()
	byResource := map[string][]section{}
	for _, s := range all {
		byResource[s.resource] = append(byResource[s.resource], s)
	}
	var out []string
	for _, secs := range byResource {
		sort.SliceStable(secs, func(i, j int) bool { return secs[i].acquired.Before(secs[j].acquired) })
		var ended endHeap
		var best section // highest fence among the sections that ended
		for _, s := range secs {
			for len(ended) > 0 && !ended[0].end().After(s.acquired) {
				if e := heap.Pop(&ended).(section); e.fence > best.fence {
					best = e
				}
			}
			if best.fence != 0 && s.fence <= best.fence {
				out = append(out, fmt.Sprintf("%v acquired after %v ended", s, best))
			}
			heap.Push(&ended, s)
		}
	}
	return out
}

// endHeap orders sections by the end of their window.
type endHeap []section

func (h endHeap) Len() int           { return len(h) }
func (h endHeap) Less(i, j int) bool { return h[i].end().Before(h[j].end()) }
func (h endHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *endHeap) Push(x any)        { *h = append(*h, x.(section)) }
func (h *endHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// register is the storage that a fenced lock protects, for one resource: it
// accepts a write only if its fencing token is above every token it accepted
// before (or equal, from the same holder), as a fenced storage service would.
// It also classifies what it rejects. Safe for concurrent use.
type register struct {
	mu        sync.Mutex
	max       int64  // highest fence accepted
	maxHolder string // token of the holder that wrote max
	accepted  []int64

	rejectedLate  int      // writer past its validity: a stalled holder caught by fencing
	rejectedValid []string // writer still within its validity: fences out of order
	lateAccepted  int      // writer past its validity, but no newer holder had written
}

// write is one write by the holder of token with fencing token fence, whose
// validity ends at until. It reports whether the write was accepted.
func (r *register) write(fence int64, token string, until time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	late := !time.Now().Before(until)
	if fence > r.max || (fence == r.max && token == r.maxHolder) {
		r.max, r.maxHolder = fence, token
		r.accepted = append(r.accepted, fence)
		if late {
			r.lateAccepted++
		}
		return true
	}
	if late {
		r.rejectedLate++
	} else {
		r.rejectedValid = append(r.rejectedValid, fmt.Sprintf("fence %d rejected while its lock was valid (register at %d)", fence, r.max))
	}
	return false
}

// registerStats sums what the registers saw.
type registerStats struct {
	writes, accepted, rejectedLate, lateAccepted int
	rejectedValid                                []string
	acceptedStale                                int // accepted writes with a fence below an earlier accepted one
}

func sumRegisters(regs map[string]*register) registerStats {
	var s registerStats
	for _, r := range regs {
		r.mu.Lock()
		s.accepted += len(r.accepted)
		s.rejectedLate += r.rejectedLate
		s.lateAccepted += r.lateAccepted
		s.rejectedValid = append(s.rejectedValid, r.rejectedValid...)
		// Audit the accepted sequence itself: it must never go down.
		for i := 1; i < len(r.accepted); i++ {
			if r.accepted[i] < r.accepted[i-1] {
				s.acceptedStale++
			}
		}
		r.mu.Unlock()
	}
	s.writes = s.accepted + s.rejectedLate + len(s.rejectedValid)
	return s
}
