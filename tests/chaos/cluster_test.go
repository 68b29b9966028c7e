package chaos

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redlock-go/redlock"
)

// cluster is N redis nodes, each behind its own toxiproxy link. Clients
// reach the nodes only through the links.
type cluster struct {
	nodes []*redisNode
	links []*link
}

// newCluster starts n nodes and their proxies; everything is
// stopped at t.Cleanup. With clock, the nodes are local processes whose
// clocks the test controls (SetClockRate, JumpClock), whatever the backend;
// without, they follow the selected backend (containers with
// REDLOCK_TEST_BACKEND=docker, where Partition works).
func newCluster(t *testing.T, n int, persist, clock bool) *cluster {
	t.Helper()
	c := &cluster{nodes: make([]*redisNode, n), links: make([]*link, n)}
	for i := range c.nodes {
		c.nodes[i] = startNode(t, fmt.Sprintf("n%d", i), persist, clock)
	}
	srv := newToxiproxy()
	for i, node := range c.nodes {
		c.links[i] = newLink(t, srv, node.name, node.Addr())
	}
	return c
}

// instances returns the nodes as clients see them: their proxies.
func (c *cluster) instances() []redlock.Instance {
	out := make([]redlock.Instance, len(c.links))
	for i, l := range c.links {
		out[i] = redlock.Addr(l.Addr())
	}
	return out
}

// newManager returns a Manager over the cluster's proxies that has seen
// every node once (so that the restart guard knows each run_id), closed at
// t.Cleanup.
func (c *cluster) newManager(t *testing.T, opts ...redlock.Option) *redlock.Manager {
	t.Helper()
	m, err := redlock.New(c.instances(), opts...)
	if err != nil {
		t.Fatalf("chaos: redlock.New: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A node the last round restarted may still be slow to answer its
	// first connection (a container's address, just back on the network):
	// try again within the 10 s.
	for {
		err := m.LoadScripts(ctx)
		if err == nil {
			return m
		}
		if ctx.Err() != nil {
			t.Fatalf("chaos: warm-up of a Manager (LoadScripts on every node): %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
