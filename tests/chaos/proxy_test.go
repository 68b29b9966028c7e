package chaos

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
)

// link is the path from every client to one node: an in-process toxiproxy
// proxy on a fixed 127.0.0.1 address. The nemesis changes a link's toxics by
// REPLACING its proxy: it stops the current one (which closes every
// connection through it), builds a new proxy on the same address, adds the
// toxics while the new proxy has no connection, and starts it. Clients see a
// link fault begin and end as dropped connections, which they redial.
//
// Why not add and remove toxics on the live proxy: in toxiproxy v2.5.0,
// ToxicLink.AddToxic and RemoveToxic interrupt every stub of every live
// connection and wait, without a timeout, for it to stop. A stub whose
// connection is closing can be blocked for ever on a channel send that no
// one receives any more (a latency toxic holding a reply for a client that
// timed out and closed its connection, a reset_peer or timeout toxic that
// closed its stub), and the wait never ends: the long profile's nemesis hung
// on RemoveToxic after a few minutes. A fresh proxy has no connection to
// wait for; the stuck goroutines of the old one are toxiproxy's leak (see
// checkLeaks).
type link struct {
	srv      *toxiproxy.ApiServer
	name     string
	listen   string // fixed after the first start
	upstream string

	mu    sync.Mutex
	proxy *toxiproxy.Proxy // nil while the link refuses connections
}

// toxic is one toxic to put on a fresh proxy.
type toxic struct {
	name, typ, stream, attrs string
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
	l := &link{srv: srv, name: name, listen: "127.0.0.1:0", upstream: upstream}
	if err := l.set(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.close)
	return l
}

// Addr is the address clients dial.
func (l *link) Addr() string { return l.listen }

// set replaces the proxy with a fresh one carrying toxics (none: a healthy
// link).
func (l *link) set(toxics ...toxic) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.proxy != nil {
		l.proxy.Stop()
		l.proxy = nil
	}
	var err error
	for try := 0; try < 20; try++ { // the port was ours a moment ago
		p := toxiproxy.NewProxy(l.srv, l.name, l.listen, l.upstream)
		for _, tx := range toxics {
			body := fmt.Sprintf(`{"name":%q,"type":%q,"stream":%q,"toxicity":1,"attributes":%s}`, tx.name, tx.typ, tx.stream, tx.attrs)
			if _, err := p.Toxics.AddToxicJson(strings.NewReader(body)); err != nil {
				return fmt.Errorf("chaos: toxic %s on %s: %w", tx.name, l.name, err)
			}
		}
		if err = p.Start(); err == nil {
			l.proxy, l.listen = p, p.Listen
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("chaos: proxy %s on %s: %w", l.name, l.listen, err)
}

// heal gives the link back its healthy proxy.
func (l *link) heal() error { return l.set() }

// latency delays both directions by ms ± jitter milliseconds.
func (l *link) latency(ms, jitter int) error {
	attrs := fmt.Sprintf(`{"latency":%d,"jitter":%d}`, ms, jitter)
	return l.set(toxic{"lat_up", "latency", "upstream", attrs}, toxic{"lat_down", "latency", "downstream", attrs})
}

// blackhole drops everything in both directions and keeps the connections
// open: the node looks hung (a partition).
func (l *link) blackhole() error {
	return l.set(toxic{"cut_up", "timeout", "upstream", `{"timeout":0}`}, toxic{"cut_down", "timeout", "downstream", `{"timeout":0}`})
}

// resetPeer resets (TCP RST) every connection as soon as it carries data.
func (l *link) resetPeer() error {
	return l.set(toxic{"reset", "reset_peer", "upstream", `{"timeout":0}`})
}

// disable closes the listener and every connection: dials are refused
// until heal.
func (l *link) disable() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.proxy != nil {
		l.proxy.Stop()
		l.proxy = nil
	}
}

func (l *link) close() { l.disable() }
