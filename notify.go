package redlock

import (
	"context"
	"sync"

	"github.com/gomodule/redigo/redis"
)

// ReleaseChannelPrefix starts the Pub/Sub channel on which release.lua
// announces that a lock key was deleted: "redlock:released:" + key.
const ReleaseChannelPrefix = "redlock:released:"

// A notifier wakes Lock calls that wait for a resource as soon as its holder
// releases it, instead of letting them sleep a fixed retry delay: release.lua
// publishes on the resource's channel, and each Manager subscribes, on one
// extra connection per node, to the channels its waiting calls care about
// (and unsubscribes when nobody waits). A message from any node wakes the
// waiters; the retry delay stays the fallback when messages are lost (a
// node down, a connection broken, a caller-owned Pool).
type notifier struct {
	base context.Context

	mu      sync.Mutex                      // protects waiters
	waiters map[string]map[*waiter]struct{} // channel -> waiting calls
	subs    []*subConn                      // per node; nil for caller-owned pools
	any     bool                            // some node has a subConn
	wg      sync.WaitGroup                  // dialers and readers
}

// waiter is one Lock call waiting for its resources.
type waiter struct {
	nt       *notifier
	channels []string
	wake     chan struct{} // cap 1: a release was announced
	ready    chan struct{} // closed when a node confirmed the subscription
	once     sync.Once
}

func newNotifier(base context.Context, nodes []*node) *notifier {
	nt := &notifier{base: base, waiters: map[string]map[*waiter]struct{}{}}
	nt.subs = make([]*subConn, len(nodes))
	for i, n := range nodes {
		if n.owned {
			nt.subs[i] = &subConn{nt: nt, dial: n.pool.DialContext}
			nt.any = true
		}
	}
	return nt
}

// wait registers a waiter for keys; call w.done when the Lock call ends.
func (nt *notifier) wait(keys []string) *waiter {
	w := &waiter{nt: nt, wake: make(chan struct{}, 1), ready: make(chan struct{})}
	var fresh []string
	nt.mu.Lock()
	for _, k := range keys {
		ch := ReleaseChannelPrefix + k
		w.channels = append(w.channels, ch)
		set := nt.waiters[ch]
		if set == nil {
			set = map[*waiter]struct{}{}
			nt.waiters[ch] = set
			fresh = append(fresh, ch)
		}
		set[w] = struct{}{}
	}
	if len(fresh) == 0 || !nt.any {
		// subscribed already, or no node can notify (caller-owned pools):
		// the retry delay is all there is
		w.once.Do(func() { close(w.ready) })
	}
	// Under nt.mu, so that SUBSCRIBE and UNSUBSCRIBE of one channel reach
	// each node in the order of the decisions.
	for _, s := range nt.subs {
		if s != nil {
			s.subscribe(fresh)
		}
	}
	nt.mu.Unlock()
	return w
}

// done unregisters w and unsubscribes from channels nobody waits on.
func (w *waiter) done() {
	nt := w.nt
	var stale []string
	nt.mu.Lock()
	for _, ch := range w.channels {
		set := nt.waiters[ch]
		delete(set, w)
		if len(set) == 0 {
			delete(nt.waiters, ch)
			stale = append(stale, ch)
		}
	}
	for _, s := range nt.subs {
		if s != nil {
			s.unsubscribe(stale)
		}
	}
	nt.mu.Unlock()
}

// announce handles a message on channel: a confirmed subscription readies
// every waiter of it; a release wakes ONE of them (map order: arbitrary),
// so that the waiters of one Manager do not stampede and split the nodes'
// votes between them. The others keep their retry delay as a fallback,
// and the next release wakes the next one.
func (nt *notifier) announce(channel string, confirmed bool) {
	nt.mu.Lock()
	defer nt.mu.Unlock()
	for w := range nt.waiters[channel] {
		if confirmed {
			w.once.Do(func() { close(w.ready) })
			continue
		}
		select {
		case w.wake <- struct{}{}:
			return
		default: // already woken: wake another
		}
	}
}

// channels lists every channel somebody waits on; nt.mu is held.
func (nt *notifier) channels() []string {
	out := make([]string, 0, len(nt.waiters))
	for ch := range nt.waiters {
		out = append(out, ch)
	}
	return out
}

// close ends every subscription connection and waits for its goroutines.
func (nt *notifier) close() {
	for _, s := range nt.subs {
		if s != nil {
			s.close()
		}
	}
	nt.wg.Wait()
}

// subConn is the Pub/Sub connection to one node, dialled on first use.
type subConn struct {
	nt   *notifier
	dial func(ctx context.Context) (redis.Conn, error)

	mu      sync.Mutex // protects the fields below and serialises writes; taken after nt.mu
	c       redis.Conn // nil: not connected
	dialing bool
	closed  bool
}

// subscribe sends SUBSCRIBE for channels, connecting first if needed (in
// the background: the connection subscribes to every current channel).
func (s *subConn) subscribe(channels []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed || s.dialing:
	case s.c == nil:
		s.dialing = true
		s.nt.wg.Add(1)
		go s.connect()
	case len(channels) > 0:
		s.send("SUBSCRIBE", channels)
	}
}

func (s *subConn) unsubscribe(channels []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c != nil && len(channels) > 0 {
		s.send("UNSUBSCRIBE", channels)
	}
}

// send writes one command; s.mu is held. A write error closes the
// connection (the reader then ends).
func (s *subConn) send(cmd string, channels []string) {
	args := make([]interface{}, len(channels))
	for i, ch := range channels {
		args[i] = ch
	}
	err := s.c.Send(cmd, args...)
	if err == nil {
		err = s.c.Flush()
	}
	if err != nil {
		s.c.Close() // the reader sees the error and drops the connection
	}
}

func (s *subConn) connect() {
	defer s.nt.wg.Done()
	c, err := s.dial(s.nt.base)
	s.nt.mu.Lock()
	defer s.nt.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dialing = false
	if err != nil || s.closed {
		if c != nil {
			c.Close()
		}
		return
	}
	s.c = c
	if chs := s.nt.channels(); len(chs) > 0 {
		s.send("SUBSCRIBE", chs)
	}
	s.nt.wg.Add(1)
	go s.read(c)
}

// read delivers messages until the connection fails or is closed.
func (s *subConn) read(c redis.Conn) {
	defer s.nt.wg.Done()
	psc := redis.PubSubConn{Conn: c}
	for {
		switch v := psc.Receive().(type) {
		case redis.Message:
			s.nt.announce(v.Channel, false)
		case redis.Subscription:
			if v.Kind == "subscribe" {
				s.nt.announce(v.Channel, true)
			}
		case error:
			s.mu.Lock()
			if s.c == c {
				s.c = nil
			}
			s.mu.Unlock()
			c.Close()
			return
		}
	}
}

func (s *subConn) close() {
	s.mu.Lock()
	s.closed = true
	c := s.c
	s.c = nil
	s.mu.Unlock()
	if c != nil {
		c.Close()
	}
}
