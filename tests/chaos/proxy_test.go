package chaos

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
)

// link is the path from every client to one node: an in-process toxiproxy
// proxy listening on 127.0.0.1, whose toxics the nemesis adds and removes.
type link struct {
	proxy *toxiproxy.Proxy

	mu     sync.Mutex
	toxics []string // names of the toxics in place
}

// newToxiproxy returns the toxiproxy "server" the proxies belong to: only its
// logger and (disabled) metrics are used; no HTTP API is started.
func newToxiproxy() *toxiproxy.ApiServer {
	return toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
}

// newLink starts a proxy to upstream on a free 127.0.0.1 port; it is stopped
// at t.Cleanup.
func newLink(t testing.TB, srv *toxiproxy.ApiServer, name, upstream string) *link {
	t.Helper()
	p := toxiproxy.NewProxy(srv, name, "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatalf("chaos: start proxy %s: %v", name, err)
	}
	l := &link{proxy: p}
	t.Cleanup(l.close)
	return l
}

// Addr is the address clients dial.
func (l *link) Addr() string { return l.proxy.Listen }

// addToxic adds a toxic, e.g. addToxic("lat_up", "latency", "upstream",
// `{"latency":100,"jitter":30}`).
func (l *link) addToxic(name, typ, stream, attrs string) error {
	body := fmt.Sprintf(`{"name":%q,"type":%q,"stream":%q,"toxicity":1,"attributes":%s}`, name, typ, stream, attrs)
	if _, err := l.proxy.Toxics.AddToxicJson(strings.NewReader(body)); err != nil {
		return fmt.Errorf("chaos: add toxic %s to %s: %w", name, l.proxy.Name, err)
	}
	l.mu.Lock()
	l.toxics = append(l.toxics, name)
	l.mu.Unlock()
	return nil
}

// clearToxics removes every toxic.
func (l *link) clearToxics() {
	l.mu.Lock()
	names := l.toxics
	l.toxics = nil
	l.mu.Unlock()
	for _, n := range names {
		l.proxy.Toxics.RemoveToxic(context.Background(), n)
	}
}

// latency delays both directions by ms ± jitter milliseconds.
func (l *link) latency(ms, jitter int) error {
	attrs := fmt.Sprintf(`{"latency":%d,"jitter":%d}`, ms, jitter)
	if err := l.addToxic("lat_up", "latency", "upstream", attrs); err != nil {
		return err
	}
	return l.addToxic("lat_down", "latency", "downstream", attrs)
}

// blackhole drops everything in both directions and keeps the connections
// open: the node looks hung (a partition).
func (l *link) blackhole() error {
	if err := l.addToxic("cut_up", "timeout", "upstream", `{"timeout":0}`); err != nil {
		return err
	}
	return l.addToxic("cut_down", "timeout", "downstream", `{"timeout":0}`)
}

// resetPeer resets (TCP RST) every connection as soon as it carries data.
func (l *link) resetPeer() error {
	return l.addToxic("reset", "reset_peer", "upstream", `{"timeout":0}`)
}

// disable closes the listener and every connection: dials are refused.
func (l *link) disable() { l.proxy.Stop() }

// enable listens again on the same address.
func (l *link) enable() error {
	if err := l.proxy.Start(); err != nil && !errors.Is(err, toxiproxy.ErrProxyAlreadyStarted) {
		return fmt.Errorf("chaos: re-enable proxy %s: %w", l.proxy.Name, err)
	}
	return nil
}

func (l *link) close() {
	l.clearToxics()
	l.proxy.Stop()
}
