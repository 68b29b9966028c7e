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
// stopped at t.Cleanup.
func newCluster(t *testing.T, n int, persist bool) *cluster {
	t.Helper()
	c := &cluster{nodes: make([]*redisNode, n), links: make([]*link, n)}
	for i := range c.nodes {
		c.nodes[i] = startNode(t, fmt.Sprintf("n%d", i), persist)
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
	if err := m.LoadScripts(ctx); err != nil {
		t.Fatalf("chaos: warm-up of a Manager (LoadScripts on every node): %v", err)
	}
	return m
}
