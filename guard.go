package redlock

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// WithRestartGuard turns the delayed-restart guard on or off. Default on.
//
// Redlock's safety argument assumes a node does not forget a lock while it
// can still be held. A node restarted without persistence (or a Sentinel
// failover to a replica that missed the key) does. The guard is the
// specification's "delayed restart", done by the client: whenever the
// Manager opens a connection to a node (or borrows one from a caller's
// Pool) it reads the node's run_id (INFO server); when the run_id
// differs from the one this Manager saw before, the node restarted, and for
// one max TTL — the longest ttl this Manager has used, at least the default
// TTL — its votes do not count towards a quorum for Lock, Extend, IsLocked
// and GetLock. It still receives every write, so when the quarantine ends
// it holds the current locks. A node seen for the first time is trusted.
//
// Limits: a node that refuses INFO (an ACL user without +info) or reports
// no run_id is not watched; locks taken by other processes with a longer
// ttl than this Manager's are not covered.
func WithRestartGuard(enabled bool) Option { return func(c *config) { c.restartGuard = enabled } }

// restartGuard watches one node's run_id.
type restartGuard struct {
	maxTTL func() time.Duration

	armed atomic.Bool // a quarantine may be running: the common case (none) reads one atomic per vote
	mu    sync.Mutex  // protects runID and until
	runID string      // last run_id seen
	until time.Time   // end of the quarantine
}

// observe records the run_id read on a new connection ("" when the node
// did not report one) and starts a quarantine when it changed; it reports
// whether it did. A nil guard (restart guard off) does nothing.
func (g *restartGuard) observe(id string) bool {
	if g == nil || id == "" {
		return false // off, or a node that refuses INFO or reports no run_id: nothing to watch
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	changed := g.runID != "" && g.runID != id
	if changed {
		g.until = time.Now().Add(g.maxTTL())
		g.armed.Store(true)
	}
	g.runID = id
	return changed
}

// quarantined reports whether the node's votes must be ignored now.
func (g *restartGuard) quarantined() bool {
	if g == nil || !g.armed.Load() {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if time.Now().Before(g.until) {
		return true
	}
	g.armed.Store(false)
	return false
}

// infoField returns a field of an INFO reply.
func infoField(info, name string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
