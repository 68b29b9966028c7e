package redlock

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"
)

// WithRestartGuard turns the delayed-restart guard on or off. Default on.
//
// Redlock's safety argument assumes a node does not forget a lock while it
// can still be held. A node restarted without persistence (or a Sentinel
// failover to a replica that missed the key) does. The guard is the
// specification's "delayed restart", done by the client: whenever the
// Manager dials a node it reads its run_id (INFO server); when the run_id
// differs from the one this Manager saw before, the node restarted, and for
// one max TTL — the longest ttl this Manager has used, at least the default
// TTL — its votes do not count towards a quorum for Lock, Extend, IsLocked
// and GetLock. It still receives every write, so when the quarantine ends
// it holds the current locks. A node seen for the first time is trusted.
//
// Limits: a node that refuses INFO (an ACL user without +info) or reports
// no run_id is not watched; locks taken by other processes with a longer ttl than this
// Manager's are not covered; nodes given as a caller-owned Pool are not
// watched (redlock does not change a caller's pool).
func WithRestartGuard(enabled bool) Option { return func(c *config) { c.restartGuard = enabled } }

// errRestarted is the vote of a quarantined node.
var errRestarted = errors.New("redlock: node restarted recently; its vote is ignored for one max TTL (restart guard)")

// restartGuard watches one node's run_id.
type restartGuard struct {
	maxTTL func() time.Duration

	mu    sync.Mutex // protects runID and until
	runID string     // last run_id seen
	until time.Time  // end of the quarantine
}

// watch makes every new connection of n report its run_id to a guard.
func (n *node) watch(maxTTL func() time.Duration) {
	if !n.owned || n.pool.DialContext == nil {
		return
	}
	g := &restartGuard{maxTTL: maxTTL}
	dial := n.pool.DialContext
	n.pool.DialContext = func(ctx context.Context) (redis.Conn, error) {
		c, err := dial(ctx)
		if err != nil {
			return nil, err
		}
		octx, cancel := context.WithTimeout(ctx, DefaultDialTimeout) // never unbounded, even on a paused node
		err = g.observe(octx, c)
		cancel()
		if err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
	n.guard = g
}

// observe reads the run_id on a fresh connection and starts a quarantine
// when it changed.
func (g *restartGuard) observe(ctx context.Context, c redis.Conn) error {
	info, err := redis.String(redis.DoContext(c, ctx, "INFO", "server"))
	var refused redis.Error
	if errors.As(err, &refused) {
		return nil // e.g. an ACL user without +info: nothing to watch
	}
	if err != nil {
		return err
	}
	id := infoField(info, "run_id")
	if id == "" {
		return nil // not a Redis that reports run_id: nothing to watch
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.runID != "" && g.runID != id {
		g.until = time.Now().Add(g.maxTTL())
	}
	g.runID = id
	return nil
}

// quarantined reports whether the node's votes must be ignored now.
func (g *restartGuard) quarantined() bool {
	if g == nil {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return time.Now().Before(g.until)
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
