package redlock

import "context"

// FenceKeyPrefix starts the key of every resource's fencing counter:
// the counter of "orders" is "redlock:fence:orders". Counters have no expiry.
const FenceKeyPrefix = "redlock:fence:"

// WithFencing makes every Lock carry a fencing token (Lock.Fence) that
// strictly increases per resource across holders, so that a storage that
// remembers the largest token it has seen can reject a write from a holder
// that lost its lock without knowing (a GC pause, a stalled process).
// Default off; it costs one more round trip per Lock and applies to
// single-resource locks (LockMulti with fencing is ErrInvalidArgument).
//
// How: each node keeps a counter per resource. Phase 1 (acquire_fenced.lua)
// takes the lock and reads the node's counter; the client computes
// T = max(counters read) + 1. Phase 2 (fence.lua) raises the counter to T on
// every node where the lock still holds our token, and must succeed on a
// quorum within the lock's validity, or the attempt fails and is released.
//
// Why it increases: holder A's phase 2 wrote T_A on a quorum Q_A while A
// held the lock there. A later holder B can only take the lock on a node
// after A's key left it, so B's phase-1 quorum Q_B reads each node after
// any phase-2 write A made there. Q_A and Q_B are both majorities, so they
// share a node whose counter is already >= T_A; hence T_B > T_A.
//
// Assumption: nodes keep their counters. A node restarted without
// persistence forgets them, and the argument above needs every node of Q_A
// that a later quorum may meet to remember T_A: with N=5, two restarted
// nodes plus one that missed the latest phase 2 are enough for a later
// holder to draw a token that is not larger (the fault suite measured such
// inversions; the fenced store then refuses the valid holder's writes,
// never accepts a stale one). The restart guard (WithRestartGuard) does not
// restore lost counters. Run nodes with appendonly (appendfsync always) for
// fencing across restarts; docs/safety.md has the measurements.
func WithFencing() Option { return func(c *config) { c.fencing = true } }

// fenceKey is the counter key of resource.
func fenceKey(resource string) string { return FenceKeyPrefix + resource }

// fence runs phase 2 of a fenced acquisition after phase 1 (acquired)
// reached a quorum: the token is the largest counter the quorum read plus
// one, recorded on every node where token still holds key. It returns the
// token and phase 2's round (the caller releases it).
func (m *Manager) fence(ctx context.Context, acquired *round, key, token string) (int64, *round) {
	var fence int64
	for _, v := range acquired.votes {
		if v.ok && v.counter > fence {
			fence = v.counter
		}
	}
	fence++
	return fence, m.fanout(ctx, quorum, "EVALSHA", &fenceScript, fenceArgs(key, fenceKey(key), token, fence), voteFence, write)
}

// Fence returns the lock's fencing token when the Manager has WithFencing,
// and 0 otherwise. Pass it with every write the lock protects; the storage
// should reject a write whose token is lower than one it has accepted.
func (l *Lock) Fence() int64 { return l.fenceToken }
