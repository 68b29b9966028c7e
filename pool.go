package redlock

import (
	"context"
	"crypto/tls"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gomodule/redigo/redis"
)

// DefaultDialTimeout bounds establishing one connection (TCP, TLS, AUTH,
// SELECT; for a Sentinel group also asking the sentinels and ROLE), and
// loading the scripts on it, when an Endpoint, URL, Addr or Sentinel leaves
// DialTimeout zero.
const DefaultDialTimeout = 2 * time.Second

// Instance is one Redlock node: an independent Redis master. Build one with
// Addr, Endpoint, URL, Pool, Sentinel, SentinelURL or ParseInstance. The
// interface is sealed: only this package implements it. String returns the
// node's address with any password redacted.
type Instance interface {
	String() string
	newNode() (*node, error)
}

// Addr is the node at "host:port" with no password, DB 0 and plain TCP, as
// aioredlock's ('localhost', 6379).
func Addr(hostport string) Instance { return Endpoint{Addr: hostport} }

// Endpoint is a node given field by field, as aioredlock's dict form. The
// zero values mean: DB 0, no ACL user, no password, plain TCP and
// DefaultDialTimeout. A Manager opens one pipelined connection to it,
// shared by all its calls, and a second one while some Lock waits for a
// release (Pub/Sub); a broken connection is dialled again, with backoff.
type Endpoint struct {
	Addr     string      // "host:port" (required); for Network "unix", the socket path
	Network  string      // "tcp" (default) or "unix"
	DB       int         // database number, >= 0
	Username string      // ACL user (optional; Redis 6+)
	Password string      // never printed: String and errors redact it
	TLS      *tls.Config // nil: plain TCP

	DialTimeout time.Duration // TCP, TLS, AUTH and SELECT of one connection; default DefaultDialTimeout
}

// String returns the address with the password redacted, e.g.
// "rediss://user:xxxxx@host:6379/1".
func (e Endpoint) String() string {
	scheme := "redis"
	if e.TLS != nil {
		scheme = "rediss"
	}
	if e.Network == "unix" {
		scheme = "unix"
	}
	var b strings.Builder
	b.WriteString(scheme + "://")
	if e.Username != "" || e.Password != "" {
		b.WriteString(e.Username)
		if e.Password != "" {
			b.WriteString(":xxxxx")
		}
		b.WriteString("@")
	}
	b.WriteString(e.Addr)
	if e.DB != 0 {
		b.WriteString("/" + strconv.Itoa(e.DB))
	}
	return b.String()
}

// validate checks the fields; errors never contain the password.
func (e Endpoint) validate() error {
	switch e.Network {
	case "", "tcp":
		if err := validateHostPort(e.Addr); err != nil {
			return err
		}
	case "unix":
		if e.Addr == "" {
			return invalidf("unix endpoint without a socket path")
		}
	default:
		return invalidf("endpoint %s: unknown network %q", e.Addr, e.Network)
	}
	if e.DB < 0 {
		return invalidf("endpoint %s: negative DB %d", e.Addr, e.DB)
	}
	if e.DialTimeout < 0 {
		return invalidf("endpoint %s: negative dial timeout", e.Addr)
	}
	return nil
}

// validateHostPort accepts "host:port" with a non-empty host and a numeric
// port in 1..65535.
func validateHostPort(hostport string) error {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return invalidf("address %q: want host:port", hostport)
	}
	if host == "" {
		return invalidf("address %q: missing host", hostport)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return invalidf("address %q: port must be a number from 1 to 65535", hostport)
	}
	return nil
}

func (e Endpoint) newNode() (*node, error) {
	if err := e.validate(); err != nil {
		return nil, err
	}
	network := e.Network
	if network == "" {
		network = "tcp"
	}
	dialTimeout := orDefault(e.DialTimeout, DefaultDialTimeout)
	opts := []redis.DialOption{
		redis.DialConnectTimeout(dialTimeout),
		redis.DialDatabase(e.DB),
		redis.DialPassword(e.Password),
		redis.DialUsername(e.Username),
	}
	if e.TLS != nil {
		// redigo clones the config and fills ServerName from the address.
		opts = append(opts, redis.DialUseTLS(true), redis.DialTLSConfig(e.TLS))
	}
	addr := e.Addr
	dial := func(ctx context.Context) (redis.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, dialTimeout)
		defer cancel()
		return redis.DialContext(ctx, network, addr, opts...)
	}
	return &node{name: e.String(), dial: dial, interruptible: true}, nil
}

func orDefault[T int | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// URL is the node described by a Redis URL:
//
//	redis://[user:password@]host[:port][/db][?db=N]
//	rediss://...          (TLS; ?ssl_cert_reqs=CERT_NONE skips verification)
//	unix:///path/to/redis.sock[?db=N&password=...]
//
// The port defaults to 6379. Unknown query parameters (encoding=utf-8, ...)
// are accepted and ignored. A malformed URL is reported by New (wrapping
// ErrInvalidArgument), never replaced by a default.
func URL(rawurl string) Instance { return urlInstance(rawurl) }

type urlInstance string

func (u urlInstance) String() string { return redactURL(string(u)) }

func (u urlInstance) newNode() (*node, error) {
	e, err := parseURL(string(u))
	if err != nil {
		return nil, err
	}
	return e.newNode()
}

// parseURL turns a redis://, rediss:// or unix:// URL into an Endpoint.
func parseURL(raw string) (Endpoint, error) {
	var e Endpoint
	u, err := url.Parse(raw)
	if err != nil {
		// url's own error quotes the input, password included: never wrap it.
		return e, invalidf("malformed URL %s", redactURL(raw))
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return e, invalidf("URL %s: malformed query", redactURL(raw))
	}
	switch u.Scheme {
	case "redis", "rediss":
		if u.Hostname() == "" {
			return e, invalidf("URL %s: missing host", redactURL(raw))
		}
		if strings.Contains(u.Hostname(), ":") && !strings.HasPrefix(u.Host, "[") {
			return e, invalidf("URL %s: want host:port (IPv6 hosts in brackets)", redactURL(raw))
		}
		port := u.Port()
		if port == "" {
			if strings.HasSuffix(u.Host, ":") {
				return e, invalidf("URL %s: empty port", redactURL(raw))
			}
			port = "6379"
		}
		e.Addr = net.JoinHostPort(u.Hostname(), port)
		if err := validateHostPort(e.Addr); err != nil {
			return e, invalidf("URL %s: port must be a number from 1 to 65535", redactURL(raw))
		}
		if db := strings.Trim(u.Path, "/"); db != "" {
			if e.DB, err = parseDB(db); err != nil {
				return e, invalidf("URL %s: %v", redactURL(raw), err)
			}
		}
		if u.Scheme == "rediss" {
			e.TLS, err = tlsFromQuery(q, u.Hostname())
			if err != nil {
				return e, invalidf("URL %s: %v", redactURL(raw), err)
			}
		}
	case "unix":
		e.Network = "unix"
		e.Addr = u.Path
		if e.Addr == "" {
			return e, invalidf("URL %s: missing socket path", redactURL(raw))
		}
	default:
		return e, invalidf("URL %s: unknown scheme %q (want redis, rediss or unix)", redactURL(raw), u.Scheme)
	}
	if v := q.Get("db"); v != "" {
		if e.DB, err = parseDB(v); err != nil {
			return e, invalidf("URL %s: %v", redactURL(raw), err)
		}
	}
	if u.User != nil {
		e.Username = u.User.Username()
		e.Password, _ = u.User.Password()
	}
	if v := q.Get("password"); v != "" {
		e.Password = v
	}
	if v := q.Get("username"); v != "" {
		e.Username = v
	}
	return e, nil
}

func parseDB(s string) (int, error) {
	db, err := strconv.Atoi(s)
	if err != nil || db < 0 {
		return 0, invalidf("db %q must be a number >= 0", s)
	}
	return db, nil
}

// tlsFromQuery maps aioredlock's ssl_cert_reqs onto a tls.Config:
// CERT_NONE skips verification, CERT_OPTIONAL and CERT_REQUIRED (the
// default) verify against the system roots.
func tlsFromQuery(q url.Values, host string) (*tls.Config, error) {
	cfg := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	switch q.Get("ssl_cert_reqs") {
	case "", "CERT_REQUIRED", "required", "CERT_OPTIONAL", "optional":
	case "CERT_NONE", "none":
		cfg.InsecureSkipVerify = true
	default:
		return nil, invalidf("ssl_cert_reqs %q: want CERT_NONE, CERT_OPTIONAL or CERT_REQUIRED", q.Get("ssl_cert_reqs"))
	}
	return cfg, nil
}

// redactURL hides the password in a URL's userinfo and query, also when the
// URL does not parse.
func redactURL(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
		q := u.Query()
		if q.Has("password") {
			q.Set("password", "xxxxx")
			u.RawQuery = q.Encode()
		}
		return u.String()
	}
	// Unparseable: drop everything that could be credentials.
	rest := raw
	scheme := ""
	if i := strings.Index(raw, "://"); i >= 0 {
		scheme, rest = raw[:i+3], raw[i+3:]
	}
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		rest = "xxxxx@" + rest[i+1:]
	}
	if i := strings.IndexAny(rest, "?#"); i >= 0 {
		rest = rest[:i]
	}
	return scheme + rest
}

// Pool is a node reached through a redigo pool that the caller owns. The
// Manager borrows ONE connection from it (GetContext) and holds it as the
// node's pipelined connection, shared by all its calls, and a second one
// while some Lock waits for a release (Pub/Sub); a broken connection goes
// back to the pool (which drops it) and the next one is borrowed, so the
// pool's Dial, AUTH, SELECT, TLS and TestOnBorrow apply as usual and its
// MaxActive counts these one or two connections. Release wake-ups and the
// restart guard (INFO server on every borrowed connection) work as for
// Addr. Close gives the connections back and leaves the pool open.
//
// What a pool user gives up: the pool's MaxConnLifetime and IdleTimeout
// apply when a connection is borrowed and given back, not while the
// Manager holds it (it holds it until it breaks or Close); Wait and
// MaxActive only bound the borrowing. Every command is bounded by the
// node timeout (WithNodeTimeout), whatever read timeout the pool's Dial
// sets: the Manager reads with a deadline of twice the node timeout, so a
// hung node's connection is given back, broken, within that. Connections
// whose type does not support redis.ConnWithTimeout (a Dial that wraps
// redigo's connections) are read without that deadline and rely on their
// own. Pool(nil) is reported by New as ErrInvalidArgument.
func Pool(p *redis.Pool) Instance { return poolInstance{p} }

type poolInstance struct{ p *redis.Pool }

// String is "pool": a redigo pool does not say where it connects. In a
// Manager's errors and Nodes the node is "pool#i", i its index in New's
// list.
func (p poolInstance) String() string { return "pool" }

func (p poolInstance) newNode() (*node, error) {
	if p.p == nil {
		return nil, invalidf("Pool(nil)")
	}
	return &node{name: "pool", dial: p.p.GetContext}, nil
}

// ParseInstance turns one string into an Instance, for command lines and
// configuration files. It accepts:
//
//	host:port                                   Addr
//	redis://[user:pw@]host[:port][/db]          URL
//	rediss://...                                URL over TLS
//	unix:///path/to/socket[?db=N]               URL over a unix socket
//	redis+sentinel://[user:pw@]h1:26379,h2:26379[/db]?master=NAME
//	rediss+sentinel://...                       Sentinel (TLS to sentinels and master)
//
// It validates the whole spec now; errors wrap ErrInvalidArgument and never
// contain the password.
func ParseInstance(spec string) (Instance, error) {
	spec = strings.TrimSpace(spec)
	var inst Instance
	switch {
	case spec == "":
		return nil, invalidf("empty instance spec")
	case strings.HasPrefix(spec, "redis+sentinel://"), strings.HasPrefix(spec, "rediss+sentinel://"):
		s, err := parseSentinelURL(spec)
		if err != nil {
			return nil, err
		}
		return s, nil
	case strings.Contains(spec, "://"):
		if _, err := parseURL(spec); err != nil {
			return nil, err
		}
		inst = urlInstance(spec)
	default:
		if err := validateHostPort(spec); err != nil {
			return nil, err
		}
		inst = Addr(spec)
	}
	return inst, nil
}
