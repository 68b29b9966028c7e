package redlock

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/FZambia/sentinel"
	"github.com/gomodule/redigo/redis"
)

// Sentinel is one Sentinel-managed master group, used as ONE Redlock node:
// connections go to whichever server the sentinels currently name as the
// master of Master. Each connection is checked with ROLE once when dialled.
//
// Safety caveat: replication is asynchronous, so a failover can promote a
// replica that never received a lock key. A Sentinel group is still a
// single node in the quorum; use several independent groups.
type Sentinel struct {
	Addrs            []string    // sentinel "host:port" list (required)
	Master           string      // master group name (required)
	DB               int         // database number on the master, >= 0
	Username         string      // ACL user for the master (optional)
	Password         string      // password for the master; never printed
	SentinelPassword string      // password for the sentinels; never printed
	TLS              *tls.Config // nil: plain TCP; otherwise TLS to sentinels and master

	DialTimeout time.Duration // per dial (sentinel or master); default DefaultDialTimeout
	PoolSize    int           // most open connections to the master; default DefaultPoolSize
}

// String returns "sentinel://h1:26379,h2:26379/db?master=NAME" with no
// password.
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
	if s.DialTimeout < 0 || s.PoolSize < 0 {
		return invalidf("sentinel %q: negative pool size or timeout", s.Master)
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
		return []redis.DialOption{redis.DialUseTLS(true), redis.DialTLSConfig(s.TLS)}
	}
	snt := &sentinel.Sentinel{
		Addrs:      append([]string(nil), s.Addrs...),
		MasterName: s.Master,
		Dial: func(addr string) (redis.Conn, error) {
			return redis.Dial("tcp", addr, append(tlsOpts(),
				redis.DialConnectTimeout(timeout),
				redis.DialReadTimeout(timeout),
				redis.DialWriteTimeout(timeout),
				redis.DialPassword(s.SentinelPassword))...)
		},
	}
	masterOpts := append(tlsOpts(),
		redis.DialConnectTimeout(timeout),
		redis.DialDatabase(s.DB),
		redis.DialUsername(s.Username),
		redis.DialPassword(s.Password))
	name := s.String()
	pool := newRedisPool(s.PoolSize, 0, func(ctx context.Context) (redis.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		addr, err := snt.MasterAddr()
		if err != nil {
			return nil, fmt.Errorf("redlock: sentinel %s: %w", name, err)
		}
		c, err := redis.DialContext(ctx, "tcp", addr, masterOpts...)
		if err != nil {
			return nil, err
		}
		if !sentinel.TestRole(c, "master") {
			c.Close()
			return nil, fmt.Errorf("redlock: sentinel %s: %s is not a master (failover in progress?)", name, addr)
		}
		return c, nil
	})
	return &node{name: name, pool: pool, owned: true, close: snt.Close}, nil
}

// SentinelURL is a Sentinel given as a URL, in aioredlock's forms:
//
//	redis://localhost:26379/4?master=leader&encoding=utf-8
//	rediss://:password@localhost:26379/5?master=leader&ssl_cert_reqs=CERT_NONE
//	redis://h1:26379,h2:26379/0?master=leader     (several sentinels)
//
// The host list names the sentinels; the path (or ?db=) is the master's DB;
// the userinfo is the master's ACL user and password; ?sentinel_password=
// is the sentinels' password. rediss uses TLS for sentinels and master, with
// ssl_cert_reqs=CERT_NONE | CERT_OPTIONAL | CERT_REQUIRED (default). Unknown
// parameters are ignored. A malformed URL or a missing master is reported by
// New, wrapping ErrInvalidArgument. redis+sentinel:// and rediss+sentinel://
// are accepted as synonyms.
func SentinelURL(rawurl string) Instance { return sentinelURL(rawurl) }

type sentinelURL string

func (u sentinelURL) String() string { return redactURL(string(u)) }

func (u sentinelURL) newNode() (*node, error) {
	s, err := parseSentinelURL(string(u))
	if err != nil {
		return nil, err
	}
	return s.newNode()
}

// parseSentinelURL parses SentinelURL's forms and validates the result.
func parseSentinelURL(raw string) (Sentinel, error) {
	var s Sentinel
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return s, invalidf("sentinel URL %s: missing scheme", redactURL(raw))
	}
	secure := false
	switch scheme {
	case "redis", "redis+sentinel":
	case "rediss", "rediss+sentinel":
		secure = true
	default:
		return s, invalidf("sentinel URL %s: unknown scheme %q", redactURL(raw), scheme)
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
		return s, invalidf("malformed sentinel URL %s", redactURL(raw))
	}
	for _, h := range strings.Split(hosts, ",") {
		if h != "" && !strings.Contains(h, ":") {
			h = net.JoinHostPort(h, "26379")
		}
		if err := validateHostPort(h); err != nil {
			return s, invalidf("sentinel URL %s: sentinel address %q: want host:port", redactURL(raw), h)
		}
		s.Addrs = append(s.Addrs, h)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return s, invalidf("sentinel URL %s: malformed query", redactURL(raw))
	}
	s.Master = q.Get("master")
	if db := strings.Trim(u.Path, "/"); db != "" {
		if s.DB, err = parseDB(db); err != nil {
			return s, invalidf("sentinel URL %s: %v", redactURL(raw), err)
		}
	}
	if v := q.Get("db"); v != "" {
		if s.DB, err = parseDB(v); err != nil {
			return s, invalidf("sentinel URL %s: %v", redactURL(raw), err)
		}
	}
	if u.User != nil {
		s.Username = u.User.Username()
		s.Password, _ = u.User.Password()
	}
	if v := q.Get("password"); v != "" {
		s.Password = v
	}
	s.SentinelPassword = q.Get("sentinel_password")
	if secure {
		if s.TLS, err = tlsFromQuery(q, ""); err != nil {
			return s, invalidf("sentinel URL %s: %v", redactURL(raw), err)
		}
	}
	if err := s.validate(); err != nil {
		return s, err
	}
	return s, nil
}
