package redlock

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/FZambia/sentinel"
	"github.com/gomodule/redigo/redis"
)

// DefaultReplicaAckTimeout is how long a Sentinel node with MinReplicaAcks
// waits for its replicas to acknowledge a write (the WAIT timeout) when
// ReplicaAckTimeout is zero.
const DefaultReplicaAckTimeout = 100 * time.Millisecond

// Sentinel is one Sentinel-managed master group, used as ONE Redlock node:
// connections go to whichever server the sentinels currently name as the
// master of Master (aioredlock's Sentinel(('localhost', 26379),
// master='leader', db=3) is Sentinel{Addrs: []string{"localhost:26379"},
// Master: "leader", DB: 3}).
//
// The node has one pipelined connection to the master, like every node.
// Each new connection asks the sentinels for the master's address (the
// first sentinel that answers wins and is asked first next time), dials it,
// authenticates, selects DB and checks with ROLE, once, that the server
// really is a master. A connection that later meets a reply saying the
// server is no longer the master (READONLY, LOADING, MASTERDOWN) or a
// dropped link is dropped, and the command is retried once on a freshly
// discovered master, within the same per-node timeout (WithNodeTimeout).
// The new connection loads every script first, so the new master, which
// never saw them (scripts are not replicated), answers EVALSHA at once.
//
// Safety caveat: Redis replication is asynchronous, so a failover can
// promote a replica that never received a lock key, and the group forgets
// the lock. A Sentinel group is still a single node in the quorum: use
// several independent groups (or plain masters), never one group alone, for
// locks whose loss matters. MinReplicaAcks narrows the window but does not
// close it; the restart guard (WithRestartGuard, on by default) ignores the
// group's votes for one max TTL after it notices a new master (a new run_id).
//
// The zero values mean: DB 0, no ACL user, no passwords, plain TCP,
// DefaultDialTimeout and no replica acknowledgement. String and errors
// never contain a password.
type Sentinel struct {
	Addrs            []string    // sentinel "host:port" list (required)
	Master           string      // master group name (required)
	DB               int         // database number on the master, >= 0
	Username         string      // ACL user for the master (optional)
	Password         string      // password for the master; never printed
	SentinelPassword string      // password for the sentinels; never printed
	TLS              *tls.Config // nil: plain TCP; otherwise TLS to sentinels and master

	// DialTimeout bounds dialling one connection to the master, all
	// included: asking the sentinels in turn, dialling the master, AUTH,
	// SELECT and ROLE; default DefaultDialTimeout. A sentinel that does not
	// answer is asked last the next time.
	DialTimeout time.Duration

	// MinReplicaAcks, when > 0, makes every successful acquire, extend or
	// fence on this node wait until at least that many replicas
	// acknowledged the write (Redis WAIT, at most ReplicaAckTimeout). WAIT
	// counts every earlier write of the connection, so ONE WAIT follows
	// each pipelined batch that holds such writes, and its answer is handed
	// to all of them: a slow replica delays the batch once, not once per
	// write. When fewer replicas acknowledged, the node's vote counts as
	// failed: its NodeError says how many did and matches ErrUnavailable.
	// The key stays written (a failed Lock releases it as usual). Default
	// 0: off.
	//
	// Limits: WAIT does not make replication synchronous. The write is
	// already visible on the master before the replicas acknowledge it, an
	// acknowledged write lives in the replica's memory only, and a failover
	// may still promote a replica that did not acknowledge (Sentinel picks
	// by priority and replication offset, not by who acknowledged), so a
	// lock can still be lost; it only makes that much less likely. A value
	// above the number of reachable replicas makes every acquisition on the
	// node fail.
	MinReplicaAcks int
	// ReplicaAckTimeout is the WAIT timeout; default
	// DefaultReplicaAckTimeout. It is cut to four fifths of the node
	// timeout (WithNodeTimeout), so keep it well below that. Commands
	// pipelined behind a WAIT wait for it too.
	ReplicaAckTimeout time.Duration
}

// String returns "redis+sentinel://h1:26379,h2:26379/db?master=NAME"
// (rediss+sentinel with TLS) with no user or password.
func (s Sentinel) String() string {
	scheme := "redis+sentinel"
	if s.TLS != nil {
		scheme = "rediss+sentinel"
	}
	return fmt.Sprintf("%s://%s/%d?master=%s", scheme, strings.Join(s.Addrs, ","), s.DB, url.QueryEscape(s.Master))
}

func (s Sentinel) validate() error {
	if len(s.Addrs) == 0 {
		return invalidf("sentinel %q: no sentinel addresses", s.Master)
	}
	if s.Master == "" {
		return invalidf("sentinel %s: missing master name", strings.Join(s.Addrs, ","))
	}
	for _, a := range s.Addrs {
		if err := validateHostPort(a); err != nil {
			return err
		}
	}
	if s.DB < 0 {
		return invalidf("sentinel %q: negative DB %d", s.Master, s.DB)
	}
	if s.DialTimeout < 0 {
		return invalidf("sentinel %q: negative dial timeout", s.Master)
	}
	if s.MinReplicaAcks < 0 || s.ReplicaAckTimeout < 0 {
		return invalidf("sentinel %q: negative MinReplicaAcks or ReplicaAckTimeout", s.Master)
	}
	return nil
}

func (s Sentinel) newNode() (*node, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	timeout := orDefault(s.DialTimeout, DefaultDialTimeout)
	tlsOpts := func() []redis.DialOption {
		if s.TLS == nil {
			return nil
		}
		// redigo clones the config and fills ServerName from the address.
		return []redis.DialOption{redis.DialUseTLS(true), redis.DialTLSConfig(s.TLS), redis.DialTLSHandshakeTimeout(timeout)}
	}
	sn := &sentinelNode{
		discover: make(chan struct{}, 1),
		timeout:  timeout,
		masterOpts: append(tlsOpts(),
			redis.DialConnectTimeout(timeout),
			redis.DialDatabase(s.DB),
			redis.DialUsername(s.Username),
			redis.DialPassword(s.Password)),
	}
	// The Sentinel client guidelines: a sentinel dial always has a timeout.
	// Every query dials afresh (discovery only runs when a connection to the
	// master is dialled). Its connect, read and write timeouts are the
	// sentinel's fair share of what is left of the discovery's deadline
	// (sn.share), so that asking every sentinel in turn stays within one
	// DialTimeout and a hung sentinel never leaves the next ones without
	// time.
	dialSentinel := func(addr string) (redis.Conn, error) {
		d := time.Duration(sn.share.Load())
		if d <= 0 {
			return nil, errDiscoveryTimeout
		}
		return redis.Dial("tcp", addr, append(tlsOpts(),
			redis.DialConnectTimeout(d),
			redis.DialReadTimeout(d),
			redis.DialWriteTimeout(d),
			redis.DialTLSHandshakeTimeout(d),
			redis.DialPassword(s.SentinelPassword))...)
	}
	// One single-address client per sentinel: FZambia's client reorders
	// its address list while it ranges over it, so that after the first
	// address fails it asks that one again and never the next. The node
	// keeps the order itself (see masterAddr).
	for i, addr := range s.Addrs {
		sn.addrs = append(sn.addrs, addr)
		sn.order = append(sn.order, i)
		sn.sentinels = append(sn.sentinels, &sentinel.Sentinel{
			Addrs:      []string{addr},
			MasterName: s.Master,
			Pool: func(addr string) *redis.Pool {
				return &redis.Pool{Dial: func() (redis.Conn, error) { return dialSentinel(addr) }, MaxIdle: 0}
			},
		})
	}
	return &node{name: s.String(), dial: sn.dial, interruptible: true, close: sn.close, sentinel: true, sn: sn,
		acks: s.MinReplicaAcks, ackTimeout: orDefault(s.ReplicaAckTimeout, DefaultReplicaAckTimeout)}, nil
}

// errDiscoveryTimeout fails a sentinel dial once the discovery's time is up.
var errDiscoveryTimeout = errors.New("redlock: no time left to ask the sentinels")

// sentinelNode discovers and dials the master of one Sentinel group.
type sentinelNode struct {
	addrs      []string             // the sentinels, as given
	sentinels  []*sentinel.Sentinel // one client per address
	discover   chan struct{}        // one discovery at a time; it protects order
	order      []int                // indexes into addrs: the last sentinel that answered first
	timeout    time.Duration        // dial timeout
	masterOpts []redis.DialOption
	share      atomic.Int64 // the sentinel query in progress: its timeout (nanoseconds)

	report   func(old, cur string) // set before the first dial when observed: a new master was dialled
	masterMu sync.Mutex            // protects master (the transport and the Pub/Sub connection both dial)
	master   string                // the last master dialled
}

// close closes the sentinel clients.
func (sn *sentinelNode) close() error {
	var errs []error
	for _, s := range sn.sentinels {
		errs = append(errs, s.Close())
	}
	return errors.Join(errs...)
}

// dial is the node's dialler: discover the master, dial it (AUTH, SELECT),
// and check its ROLE once.
func (sn *sentinelNode) dial(ctx context.Context) (redis.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, sn.timeout)
	defer cancel()
	addr, err := sn.masterAddr(ctx)
	if err != nil {
		return nil, err
	}
	opts := sn.masterOpts
	if deadline, ok := ctx.Deadline(); ok { // the TLS handshake ignores ctx
		opts = append(opts[:len(opts):len(opts)], redis.DialTLSHandshakeTimeout(max(time.Until(deadline), time.Millisecond)))
	}
	c, err := redis.DialContext(ctx, "tcp", addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("redlock: master %s named by the sentinels: %w", addr, err)
	}
	if !sentinel.TestRole(ctxConn{Conn: c, ctx: ctx}, "master") {
		c.Close()
		return nil, fmt.Errorf("%w: %s, named master by the sentinels, does not answer ROLE as a master (failover in progress?)", ErrUnavailable, addr)
	}
	sn.masterMu.Lock()
	old := sn.master
	sn.master = addr
	sn.masterMu.Unlock()
	if old != "" && old != addr && sn.report != nil {
		sn.report(old, addr)
	}
	return c, nil
}

// masterAddr asks the sentinels, one at a time in the node's order, for
// the master's address, each within its share of what is left of ctx's
// deadline (the dial timeout): a dead, hung or unknown sentinel costs at
// most its share, and the next one is asked. The first that answers is
// asked first next time, then those after it, and those that failed
// before it last.
func (sn *sentinelNode) masterAddr(ctx context.Context) (string, error) {
	select {
	case sn.discover <- struct{}{}:
	case <-ctx.Done():
		return "", fmt.Errorf("redlock: waiting to ask the sentinels for the master: %w", ctx.Err())
	}
	defer func() { <-sn.discover }()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(sn.timeout)
	}
	var errs []string
	for k, i := range sn.order {
		share := min(sn.timeout, time.Until(deadline)/time.Duration(len(sn.order)-k))
		if share <= 0 {
			errs = append(errs, "no time left to ask the others")
			break
		}
		sn.share.Store(int64(share))
		addr, err := sn.sentinels[i].MasterAddr()
		if err == nil {
			// Last good first; those that failed before it go last.
			failed := append([]int(nil), sn.order[:k]...)
			copy(sn.order, sn.order[k:])
			copy(sn.order[len(sn.order)-k:], failed)
			return addr, nil
		}
		msg := strings.TrimPrefix(err.Error(), "redigo: no sentinels available; last error: ") // FZambia's wrapper says nothing here
		errs = append(errs, fmt.Sprintf("sentinel %s: %s", sn.addrs[i], strings.TrimPrefix(msg, "redlock: ")))
	}
	return "", errors.New("redlock: asking the sentinels for the master: " + strings.Join(errs, "; "))
}

// ctxConn sends Do through DoContext, so that FZambia's TestRole is bounded
// by ctx.
type ctxConn struct {
	redis.Conn
	ctx context.Context
}

func (c ctxConn) Do(cmd string, args ...interface{}) (interface{}, error) {
	return redis.DoContext(c.Conn, c.ctx, cmd, args...)
}

// isFailoverReply reports whether err is a Redis reply that means the
// server is not (or not yet) a writable master: READONLY (a demoted master
// or a replica), LOADING (a restarted server loading its data), MASTERDOWN
// (a replica that lost its master). Scripts relay the first as "READONLY
// ... script: ...".
func isFailoverReply(err error) bool {
	var re redis.Error
	if !errors.As(err, &re) {
		return false
	}
	msg := string(re)
	for _, prefix := range []string{"READONLY ", "LOADING ", "MASTERDOWN "} {
		if strings.HasPrefix(msg, prefix) || strings.Contains(msg, "-"+prefix) {
			return true
		}
	}
	return false
}

// masterMoved reports whether a connection's error means that the master
// may have moved, so that the command is worth one more try on a newly
// discovered master. Timeouts do
// not count: a slow master is not a failover, and the per-node time is
// spent anyway.
func masterMoved(err error) bool {
	if err == nil {
		return false
	}
	if isFailoverReply(err) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNABORTED) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed)
}

// SentinelURL is a Sentinel given as a URL, in aioredlock's forms:
//
//	redis://localhost:26379/4?master=leader&encoding=utf-8
//	rediss://:password@localhost:26379/5?master=leader&encoding=utf-8&ssl_cert_reqs=CERT_NONE
//	redis://h1:26379,h2:26379,h3:26379/0?master=leader     (several sentinels)
//
// and the same with the schemes redis+sentinel:// and rediss+sentinel://.
// The host list names the sentinels (port 26379 when omitted); the path (or
// ?db=) is the master's DB; the userinfo (or ?password=) is the master's ACL
// user and password; ?sentinel_password= is the sentinels' password. rediss
// uses TLS for sentinels and master:
//
//	ssl_cert_reqs=CERT_REQUIRED  verify the servers (the default)
//	ssl_cert_reqs=CERT_OPTIONAL  the same: servers always present a certificate
//	ssl_cert_reqs=CERT_NONE      do not verify (encryption only)
//	ssl_ca_certs=/path/ca.pem    verify against this CA file instead of the system roots
//	ssl_certfile=, ssl_keyfile=  a client certificate, for servers with tls-auth-clients
//
// ?min_replica_acks=N&replica_ack_timeout=100ms set MinReplicaAcks and
// ReplicaAckTimeout. Other parameters (encoding=...) are accepted and
// ignored. A malformed URL, a missing master or a bad db is reported by New,
// wrapping ErrInvalidArgument; String and errors never show a password.
func SentinelURL(rawurl string) Instance { return sentinelURL(rawurl) }

type sentinelURL string

func (u sentinelURL) String() string { return redactSentinelURL(string(u)) }

func (u sentinelURL) newNode() (*node, error) {
	s, err := parseSentinelURL(string(u))
	if err != nil {
		return nil, err
	}
	return s.newNode()
}

// redactSentinelURL is redactURL that also hides sentinel_password.
func redactSentinelURL(raw string) string {
	if i := strings.Index(raw, "?"); i >= 0 {
		params := strings.Split(raw[i+1:], "&")
		for j, p := range params {
			if k, _, ok := strings.Cut(p, "="); ok && k == "sentinel_password" {
				params[j] = k + "=xxxxx"
			}
		}
		raw = raw[:i+1] + strings.Join(params, "&")
	}
	return redactURL(raw)
}

// parseSentinelURL parses SentinelURL's forms and validates the result.
func parseSentinelURL(raw string) (Sentinel, error) {
	var s Sentinel
	red := redactSentinelURL(raw)
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return s, invalidf("sentinel URL %s: missing scheme", red)
	}
	secure := false
	switch scheme {
	case "redis", "redis+sentinel":
	case "rediss", "rediss+sentinel":
		secure = true
	default:
		return s, invalidf("sentinel URL %s: unknown scheme %q (want redis, rediss, redis+sentinel or rediss+sentinel)", red, scheme)
	}
	// url.Parse rejects comma-separated hosts with ports: parse a
	// one-host stand-in and take the host list from the raw text.
	authority := rest
	if i := strings.IndexAny(authority, "/?#"); i >= 0 {
		authority = authority[:i]
	}
	hosts := authority
	if i := strings.LastIndex(authority, "@"); i >= 0 {
		hosts = authority[i+1:]
	}
	userinfo, tail := authority[:len(authority)-len(hosts)], rest[len(authority):]
	u, err := url.Parse("redis://" + userinfo + "placeholder" + tail)
	if err != nil || hosts == "" {
		return s, invalidf("malformed sentinel URL %s", red)
	}
	for _, h := range strings.Split(hosts, ",") {
		if h != "" && (!strings.Contains(h, ":") || strings.HasSuffix(h, "]")) {
			h = net.JoinHostPort(strings.Trim(h, "[]"), "26379")
		}
		if err := validateHostPort(h); err != nil {
			return s, invalidf("sentinel URL %s: sentinel address %q: want host:port", red, h)
		}
		s.Addrs = append(s.Addrs, h)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return s, invalidf("sentinel URL %s: malformed query", red)
	}
	s.Master = q.Get("master")
	if s.Master == "" {
		return s, invalidf("sentinel URL %s: missing ?master=NAME", red)
	}
	if db := strings.Trim(u.Path, "/"); db != "" {
		if s.DB, err = parseDB(db); err != nil {
			return s, invalidf("sentinel URL %s: %v", red, err)
		}
	}
	if v := q.Get("db"); v != "" {
		if s.DB, err = parseDB(v); err != nil {
			return s, invalidf("sentinel URL %s: %v", red, err)
		}
	}
	if u.User != nil {
		s.Username = u.User.Username()
		s.Password, _ = u.User.Password()
	}
	if v := q.Get("password"); v != "" {
		s.Password = v
	}
	if v := q.Get("username"); v != "" {
		s.Username = v
	}
	s.SentinelPassword = q.Get("sentinel_password")
	if v := q.Get("min_replica_acks"); v != "" {
		if s.MinReplicaAcks, err = strconv.Atoi(v); err != nil || s.MinReplicaAcks < 0 {
			return s, invalidf("sentinel URL %s: min_replica_acks %q: want a number >= 0", red, v)
		}
	}
	if v := q.Get("replica_ack_timeout"); v != "" {
		if s.ReplicaAckTimeout, err = time.ParseDuration(v); err != nil || s.ReplicaAckTimeout <= 0 {
			return s, invalidf("sentinel URL %s: replica_ack_timeout %q: want a positive duration such as 100ms", red, v)
		}
	}
	if secure {
		if s.TLS, err = sentinelTLS(q); err != nil {
			return s, invalidf("sentinel URL %s: %v", red, err)
		}
	}
	if err := s.validate(); err != nil {
		return s, err
	}
	return s, nil
}

// sentinelTLS is tlsFromQuery plus redis-py's ssl_ca_certs, ssl_certfile and
// ssl_keyfile. ServerName stays empty: redigo sets it to each server's
// host, sentinels and master alike.
func sentinelTLS(q url.Values) (*tls.Config, error) {
	cfg, err := tlsFromQuery(q, "")
	if err != nil {
		return nil, err
	}
	if path := q.Get("ssl_ca_certs"); path != "" {
		pem, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("ssl_ca_certs: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ssl_ca_certs %s: no PEM certificate found", path)
		}
	}
	certFile, keyFile := q.Get("ssl_certfile"), q.Get("ssl_keyfile")
	if certFile != "" || keyFile != "" {
		if keyFile == "" {
			keyFile = certFile // redis-py: the key may be in the certificate file
		}
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("ssl_certfile/ssl_keyfile: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
