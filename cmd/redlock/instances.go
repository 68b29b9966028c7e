package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/gomodule/redigo/redis"
	"github.com/redlock-go/redlock"
)

// specList is a repeatable flag holding instance specs. Set only splits the
// value: validation happens in instances, whose errors are redacted by the
// library, because the flag package would quote the raw value (password
// included) in its own error.
type specList []string

// String returns the specs with passwords redacted.
func (s *specList) String() string {
	if s == nil {
		return ""
	}
	out := make([]string, len(*s))
	for i, spec := range *s {
		if inst, err := redlock.ParseInstance(spec); err == nil {
			out[i] = inst.String()
		} else {
			out[i] = "(invalid)"
		}
	}
	return strings.Join(out, ",")
}

// Set appends the comma- or space-separated specs in v.
func (s *specList) Set(v string) error {
	specs := splitSpecs(v)
	if len(specs) == 0 {
		return errors.New("no instance spec")
	}
	*s = append(*s, specs...)
	return nil
}

// splitSpecs splits a list of instance specs on commas and white space,
// keeping the comma-separated host list of a redis+sentinel:// spec in one
// piece ("redis+sentinel://h1:26379,h2:26379/0?master=m,localhost:6380" is
// two specs).
func splitSpecs(v string) []string {
	var out []string
	for _, f := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || unicode.IsSpace(r) }) {
		if n := len(out); n > 0 && openSentinelHosts(out[n-1]) {
			out[n-1] += "," + f
			continue
		}
		out = append(out, f)
	}
	return out
}

// openSentinelHosts reports whether spec is a sentinel URL still inside its
// host list: nothing after the hosts (path, query) has been seen yet. A
// sentinel spec always needs ?master=, so a complete one never stays open.
func openSentinelHosts(spec string) bool {
	scheme, rest, ok := strings.Cut(spec, "://")
	if !ok || (scheme != "redis+sentinel" && scheme != "rediss+sentinel") {
		return false
	}
	return !strings.ContainsAny(rest, "/?#")
}

// nodeSpec is one parsed node: the spec as typed (it may hold a password,
// never print it) and the library's Instance for it.
type nodeSpec struct {
	raw  string
	inst redlock.Instance
}

// Name is the node's address with any password redacted.
func (n nodeSpec) Name() string { return n.inst.String() }

// resolveNodes returns the nodes from the flag, else from
// $REDLOCK_INSTANCES, else localhost:6379. A spec that does not parse is
// reported (without its password) as an error wrapping
// redlock.ErrInvalidArgument.
func (a *app) resolveNodes(flagSpecs specList, flagName string) ([]nodeSpec, error) {
	specs, from := []string(flagSpecs), "--"+flagName
	if len(specs) == 0 {
		if env := a.getenv(envInstances); strings.TrimSpace(env) != "" {
			specs, from = splitSpecs(env), "$"+envInstances
		}
	}
	if len(specs) == 0 {
		specs = []string{"localhost:6379"}
	}
	nodes := make([]nodeSpec, 0, len(specs))
	for i, raw := range specs {
		inst, err := redlock.ParseInstance(raw)
		if err != nil {
			return nil, fmt.Errorf("%s: instance %d: %w", from, i+1, err)
		}
		nodes = append(nodes, nodeSpec{raw: raw, inst: inst})
	}
	return nodes, nil
}

func instancesOf(nodes []nodeSpec) []redlock.Instance {
	out := make([]redlock.Instance, len(nodes))
	for i, n := range nodes {
		out[i] = n.inst
	}
	return out
}

// dial opens a direct connection to the node, for the commands that talk
// to each node on its own (status, scripts --load). For a Sentinel spec it
// asks the sentinels for the current master first. Every step, the
// commands sent later included (use redis.DoContext), is bounded by ctx and
// timeout.
//
// The library does not expose its per-node pools, so this re-reads the
// spec: host:port and Sentinel specs through the structs ParseInstance
// returns, URLs with parseEndpointURL.
func (n nodeSpec) dial(ctx context.Context, timeout time.Duration) (redis.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch inst := n.inst.(type) {
	case redlock.Endpoint:
		return dialEndpoint(ctx, inst, timeout)
	case redlock.Sentinel:
		return dialSentinelMaster(ctx, inst, timeout)
	}
	e, err := parseEndpointURL(n.raw)
	if err != nil {
		return nil, err
	}
	return dialEndpoint(ctx, e, timeout)
}

func dialEndpoint(ctx context.Context, e redlock.Endpoint, timeout time.Duration) (redis.Conn, error) {
	network := e.Network
	if network == "" {
		network = "tcp"
	}
	opts := []redis.DialOption{
		redis.DialConnectTimeout(timeout),
		redis.DialReadTimeout(timeout),
		redis.DialWriteTimeout(timeout),
		redis.DialDatabase(e.DB),
		redis.DialUsername(e.Username),
		redis.DialPassword(e.Password),
	}
	if e.TLS != nil {
		opts = append(opts, redis.DialUseTLS(true), redis.DialTLSConfig(e.TLS))
	}
	return redis.DialContext(ctx, network, e.Addr, opts...)
}

// dialSentinelMaster asks each sentinel in turn for the master's address
// and connects to it.
func dialSentinelMaster(ctx context.Context, s redlock.Sentinel, timeout time.Duration) (redis.Conn, error) {
	tlsOpts := func() []redis.DialOption {
		if s.TLS == nil {
			return nil
		}
		return []redis.DialOption{redis.DialUseTLS(true), redis.DialTLSConfig(s.TLS)}
	}
	var errs []error
	for _, addr := range s.Addrs {
		c, err := redis.DialContext(ctx, "tcp", addr, append(tlsOpts(),
			redis.DialConnectTimeout(timeout),
			redis.DialReadTimeout(timeout),
			redis.DialWriteTimeout(timeout),
			redis.DialPassword(s.SentinelPassword))...)
		if err != nil {
			errs = append(errs, fmt.Errorf("sentinel %s: %w", addr, err))
			continue
		}
		hp, err := redis.Strings(redis.DoContext(c, ctx, "SENTINEL", "get-master-addr-by-name", s.Master))
		c.Close()
		if err != nil || len(hp) != 2 {
			if err == nil {
				err = fmt.Errorf("master %q unknown", s.Master)
			}
			errs = append(errs, fmt.Errorf("sentinel %s: %w", addr, err))
			continue
		}
		return dialEndpoint(ctx, redlock.Endpoint{
			Addr:     net.JoinHostPort(hp[0], hp[1]),
			DB:       s.DB,
			Username: s.Username,
			Password: s.Password,
			TLS:      s.TLS,
		}, timeout)
	}
	return nil, errors.Join(errs...)
}

// parseEndpointURL reads a redis://, rediss:// or unix:// spec that
// redlock.ParseInstance already accepted, with the same meaning: the port
// defaults to 6379, the DB comes from the path or ?db=, credentials from
// the userinfo or ?username=/?password=, and rediss:// honours
// ?ssl_cert_reqs=CERT_NONE.
func parseEndpointURL(raw string) (redlock.Endpoint, error) {
	var e redlock.Endpoint
	u, err := url.Parse(raw)
	if err != nil {
		return e, fmt.Errorf("%w: malformed URL", redlock.ErrInvalidArgument)
	}
	q := u.Query()
	switch u.Scheme {
	case "redis", "rediss":
		port := u.Port()
		if port == "" {
			port = "6379"
		}
		e.Addr = net.JoinHostPort(u.Hostname(), port)
		if db := strings.Trim(u.Path, "/"); db != "" {
			q.Set("db", db)
		}
		if u.Scheme == "rediss" {
			e.TLS = &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12}
			switch q.Get("ssl_cert_reqs") {
			case "CERT_NONE", "none":
				e.TLS.InsecureSkipVerify = true
			}
		}
	case "unix":
		e.Network, e.Addr = "unix", u.Path
	default:
		return e, fmt.Errorf("%w: unknown scheme %q", redlock.ErrInvalidArgument, u.Scheme)
	}
	if v := q.Get("db"); v != "" {
		if e.DB, err = strconv.Atoi(v); err != nil {
			return e, fmt.Errorf("%w: db %q is not a number", redlock.ErrInvalidArgument, v)
		}
	}
	if u.User != nil {
		e.Username = u.User.Username()
		e.Password, _ = u.User.Password()
	}
	if v := q.Get("username"); v != "" {
		e.Username = v
	}
	if v := q.Get("password"); v != "" {
		e.Password = v
	}
	return e, nil
}
