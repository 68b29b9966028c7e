package redlock

import (
	"context"
	"sync"
	"time"

	"github.com/gomodule/redigo/redis"
)

// ReleaseChannelPrefix starts the Pub/Sub channel on which release.lua
// announces that a lock key was deleted: "redlock:released:" + key.
const ReleaseChannelPrefix = "redlock:released:"

// A notifier wakes Lock calls that wait for a resource as soon as its holder
// releases it, instead of letting them sleep a fixed retry delay: release.lua
// publishes on the resource's channel, and each Manager subscribes, on one
// extra connection per node (dialled, or borrowed from a caller's Pool), to
// the channels its waiting calls care about (and unsubscribes when nobody
// waits). A message from any node wakes the waiters; the retry delay stays
// the fallback when messages are lost (a node down, a connection broken).
// While connected, each subscription connection is pinged every node
// timeout and read with a deadline of three, so that a dead one is noticed
// and Close never waits longer than that for a hung node.
type notifier struct {
	base context.Context
	ping time.Duration // keep-alive interval

	mu      sync.Mutex                      // protects waiters and pinging
	waiters map[string]map[*waiter]struct{} // channel -> waiting calls
	subs    []*subConn                      // per node
	pinging bool                            // the keep-alive goroutine runs
	stop    chan struct{}                   // closed by close
	wg      sync.WaitGroup                  // dialers, readers, the keep-alive
}

// waiter is one Lock call waiting for its resources.
type waiter struct {
	nt       *notifier
	channels []string
	wake     chan struct{} // cap 1: a release was announced
	ready    chan struct{} // closed when a node confirmed the subscription
	once     sync.Once
	topUp    bool // a top-up's: woken by every release, without counting as the one woken
}

func newNotifier(base context.Context, nodes []*node, ping time.Duration) *notifier {
	nt := &notifier{base: base, ping: ping, waiters: map[string]map[*waiter]struct{}{}, stop: make(chan struct{})}
	nt.subs = make([]*subConn, len(nodes))
	for i, n := range nodes {
		nt.subs[i] = &subConn{nt: nt, dial: n.dial, interruptible: n.interruptible}
	}
	return nt
}

// wait registers a waiter for keys; call w.done when the Lock call ends.
func (nt *notifier) wait(keys []string) *waiter { return nt.register(keys, false) }

// watch registers a top-up (topup.go) for keys: every release wakes it,
// and it never takes a Lock call's wake-up.
func (nt *notifier) watch(keys []string) *waiter { return nt.register(keys, true) }

func (nt *notifier) register(keys []string, topUp bool) *waiter {
	w := &waiter{nt: nt, wake: make(chan struct{}, 1), ready: make(chan struct{}), topUp: topUp}
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
	if len(fresh) == 0 {
		w.once.Do(func() { close(w.ready) }) // subscribed already
	}
	// Under nt.mu, so that SUBSCRIBE and UNSUBSCRIBE of one channel reach
	// each node in the order of the decisions.
	for _, s := range nt.subs {
		s.subscribe(fresh)
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
		s.unsubscribe(stale)
	}
	nt.mu.Unlock()
}

// announce handles a message on channel: a confirmed subscription readies
// every waiter of it; a release wakes every top-up and ONE Lock call
// (map order: arbitrary),
// so that the waiters of one Manager do not stampede and split the nodes'
// votes between them. The others keep their retry delay as a fallback,
// and the next release wakes the next one.
func (nt *notifier) announce(channel string, confirmed bool) {
	nt.mu.Lock()
	defer nt.mu.Unlock()
	woke := false // a Lock call was woken
	for w := range nt.waiters[channel] {
		switch {
		case confirmed:
			w.once.Do(func() { close(w.ready) })
		case w.topUp:
			select {
			case w.wake <- struct{}{}:
			default:
			}
		case !woke:
			select {
			case w.wake <- struct{}{}:
				woke = true
			default: // already woken: wake another
			}
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

// keepAlive pings every connected subscription until close.
func (nt *notifier) keepAlive() {
	defer nt.wg.Done()
	t := time.NewTicker(nt.ping)
	defer t.Stop()
	for {
		select {
		case <-nt.stop:
			return
		case <-t.C:
			for _, s := range nt.subs {
				s.mu.Lock()
				if s.c != nil && !s.closed {
					s.send("PING", nil)
				}
				s.mu.Unlock()
			}
		}
	}
}

// close ends every subscription connection and waits for its goroutines.
func (nt *notifier) close() {
	nt.mu.Lock()
	close(nt.stop)
	nt.mu.Unlock()
	for _, s := range nt.subs {
		s.close()
	}
	nt.wg.Wait()
}

// subConn is the Pub/Sub connection to one node, dialled on first use.
type subConn struct {
	nt            *notifier
	dial          func(ctx context.Context) (redis.Conn, error)
	interruptible bool // Close from another goroutine unblocks the reader

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

// send writes one command; s.mu is held. A write error breaks the
// connection (redigo closes it), and the reader then ends.
func (s *subConn) send(cmd string, channels []string) {
	args := make([]interface{}, len(channels))
	for i, ch := range channels {
		args[i] = ch
	}
	if err := s.c.Send(cmd, args...); err == nil {
		_ = s.c.Flush()
	}
}

func (s *subConn) connect() {
	defer s.nt.wg.Done()
	c, err := s.dial(s.nt.base)
	nt := s.nt
	nt.mu.Lock()
	defer nt.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dialing = false
	if err != nil {
		return
	}
	if s.closed {
		c.Close()
		return
	}
	s.c = c
	if chs := nt.channels(); len(chs) > 0 {
		s.send("SUBSCRIBE", chs)
	}
	if !nt.pinging {
		nt.pinging = true
		nt.wg.Add(1)
		go nt.keepAlive()
	}
	nt.wg.Add(1)
	go s.read(c)
}

// read delivers messages until the connection fails or is closed, then
// closes it (a borrowed one goes back to its pool) and, if somebody still
// waits, connects again.
func (s *subConn) read(c redis.Conn) {
	defer s.nt.wg.Done()
	psc := redis.PubSubConn{Conn: c}
	for {
		switch v := psc.ReceiveWithTimeout(3 * s.nt.ping).(type) {
		case redis.Message:
			s.nt.announce(v.Channel, false)
			continue
		case redis.Subscription:
			if v.Kind == "subscribe" {
				s.nt.announce(v.Channel, true)
				continue
			}
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if !closed || v.Count > 0 {
				continue
			}
		case redis.Pong:
			continue
		case error:
		}
		break
	}
	s.mu.Lock()
	if s.c == c {
		s.c = nil
	}
	s.mu.Unlock()
	c.Close() // the only goroutine using c now
	s.nt.mu.Lock()
	again := len(s.nt.waiters) > 0
	s.nt.mu.Unlock()
	if again {
		s.subscribe(nil)
	}
}

// close ends the subscription: a dialled connection is closed at once; a
// borrowed one is unsubscribed from everything, and its reader gives it
// back when the server confirms (or its read deadline passes).
func (s *subConn) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.c == nil {
		return
	}
	if s.interruptible {
		s.c.Close()
		return
	}
	s.send("UNSUBSCRIBE", nil)
}
