package harness

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

// SentinelOptions configures StartSentinelGroup. The zero value is one
// replica, three Sentinels, a one-second down-after and no passwords.
type SentinelOptions struct {
	Replicas         int           // replicas of the master; 0 means 1, negative means none
	Sentinels        int           // Sentinel processes; 0 means 3. The quorum is Sentinels/2+1
	DownAfter        time.Duration // down-after-milliseconds; 0 means 1s
	FailoverTimeout  time.Duration // failover-timeout; 0 means 10s
	Password         string        // requirepass and masterauth of master and replicas (Sentinel's auth-pass)
	SentinelPassword string        // requirepass of the Sentinels themselves
	TLS              *TLSConfig    // non-nil: every server and Sentinel listens on TLS only
	Backend          string        // as Options.Backend: "" follows BackendEnv
}

// withDefaults fills in the documented defaults.
func (o SentinelOptions) withDefaults() SentinelOptions {
	switch {
	case o.Replicas == 0:
		o.Replicas = 1
	case o.Replicas < 0:
		o.Replicas = 0
	}
	if o.Sentinels <= 0 {
		o.Sentinels = 3
	}
	if o.DownAfter <= 0 {
		o.DownAfter = time.Second
	}
	if o.FailoverTimeout <= 0 {
		o.FailoverTimeout = 10 * time.Second
	}
	return o
}

// SentinelGroup is one Sentinel-monitored master with its replicas and
// Sentinels, on the backend BackendEnv selects (local processes on
// 127.0.0.1, or containers on the harness network, where every Sentinel
// announces its container address), stopped at t.Cleanup.
type SentinelGroup struct {
	Name      string          // the master name Sentinels know it by
	Master    *Server         // the server started as master (after a failover, see MasterAddr)
	Replicas  []*Server       // the servers started as its replicas
	Sentinels []*Server       // the redis-sentinel instances
	Options   SentinelOptions // as started, defaults filled in

	backend backend // checks the addresses the Sentinels name
}

// StartSentinelGroup starts a master, its replicas (--replicaof the master)
// and the Sentinels monitoring it under name, and returns once replication
// is online and every Sentinel sees the master, every replica and every
// other Sentinel. It fails the test when redis-server or redis-sentinel is
// not installed or the group does not come up within 30 seconds.
//
// A restarted replica comes back as a replica of the original master; a
// restarted Sentinel reloads the config file it rewrote.
func StartSentinelGroup(t testing.TB, name string, opts SentinelOptions) *SentinelGroup {
	t.Helper()
	if name == "" || strings.ContainsAny(name, " \t\r\n\"'") {
		t.Fatalf("harness: bad Sentinel master name %q", name)
	}
	opts = opts.withDefaults()
	b := selectBackend(t, opts.Backend)
	if pb, ok := b.(*processBackend); ok {
		pb.sentinel = mustLookupBinary(t, "redis-sentinel")
	}
	g := &SentinelGroup{Name: name, Options: opts, backend: b}

	// Any data node may become a master: none waits the default 5s before
	// a full sync to a new replica.
	dataOpts := Options{Password: opts.Password, TLS: opts.TLS, Args: []string{"--repl-diskless-sync-delay", "0"}}
	g.Master = startServers(t, 1, "", func(dir string) (*Server, error) {
		return launch(b, dir, dataOpts)
	})[0]

	replicaOpts := dataOpts
	replicaOpts.Args = append(dataOpts.Args[:len(dataOpts.Args):len(dataOpts.Args)], "--replicaof", g.Master.Host(), fmt.Sprint(g.Master.Port()))
	g.Replicas = startServers(t, opts.Replicas, "", func(dir string) (*Server, error) {
		return launch(b, dir, replicaOpts)
	})
	g.waitReplication(t, 30*time.Second)

	g.Sentinels = startServers(t, opts.Sentinels, "", func(dir string) (*Server, error) {
		return launchNode(b, "redis-sentinel", opts.SentinelPassword, opts.TLS, func(host string, port int) (node, error) {
			return b.newSentinel(host, port, dir, opts.TLS, func(v nodeView) string { return g.sentinelConf(v, port) })
		})
	})
	g.waitSentinels(t, 30*time.Second)
	return g
}

// sentinelConf returns the config file of a Sentinel listening on port, as
// the Sentinel sees its environment (v).
func (g *SentinelGroup) sentinelConf(v nodeView, port int) string {
	o := g.Options
	var b strings.Builder
	line := func(format string, args ...interface{}) { fmt.Fprintf(&b, format+"\n", args...) }
	line("bind %s", v.bind)
	if o.TLS != nil {
		line("port 0")
		line("tls-port %d", port)
		args := o.TLS.serverArgs(v.tlsPath)
		for i := 0; i+1 < len(args); i += 2 {
			line("%s %q", strings.TrimPrefix(args[i], "--"), args[i+1])
		}
	} else {
		line("port %d", port)
	}
	line("daemonize no")
	line("protected-mode no")
	line("dir %q", v.dir)
	line(`logfile ""`)
	line("sentinel resolve-hostnames no")
	if v.announce != "" {
		// What this Sentinel tells the others (hello messages) and
		// clients: its own address on the harness network.
		line("sentinel announce-ip %s", v.announce)
		line("sentinel announce-port %d", port)
	}
	line("sentinel monitor %s %s %d %d", g.Name, g.Master.Host(), g.Master.Port(), o.Sentinels/2+1)
	line("sentinel down-after-milliseconds %s %d", g.Name, o.DownAfter.Milliseconds())
	line("sentinel failover-timeout %s %d", g.Name, o.FailoverTimeout.Milliseconds())
	line("sentinel parallel-syncs %s 1", g.Name)
	if o.Password != "" {
		line("sentinel auth-pass %s %q", g.Name, o.Password)
	}
	if o.SentinelPassword != "" {
		line("requirepass %q", o.SentinelPassword)
		line("sentinel sentinel-pass %q", o.SentinelPassword)
	}
	return b.String()
}

// waitReplication waits until the master reports every replica online.
func (g *SentinelGroup) waitReplication(t testing.TB, timeout time.Duration) {
	t.Helper()
	var last string
	ok := poll(timeout, 50*time.Millisecond, func() bool {
		info, err := g.do(g.Master, "INFO", "replication")
		if err != nil {
			last = err.Error()
			return false
		}
		last, _ = redis.String(info, nil)
		return strings.Count(last, ",state=online,") >= len(g.Replicas)
	})
	if !ok {
		t.Fatalf("harness: Sentinel group %s: %d replicas not online on master %s within %s; INFO replication:\n%s", g.Name, len(g.Replicas), g.Master, timeout, last)
	}
}

// waitSentinels waits until every Sentinel sees the master as up, every
// replica as up, and every other Sentinel.
func (g *SentinelGroup) waitSentinels(t testing.TB, timeout time.Duration) {
	t.Helper()
	var last string
	ok := poll(timeout, 100*time.Millisecond, func() bool {
		for _, s := range g.Sentinels {
			if err := g.sentinelReady(s); err != nil {
				last = fmt.Sprintf("%s: %v", s, err)
				return false
			}
		}
		return true
	})
	if !ok {
		t.Fatalf("harness: Sentinel group %s not ready within %s: %s", g.Name, timeout, last)
	}
}

// sentinelReady reports why s does not see the whole group yet (nil: it does).
func (g *SentinelGroup) sentinelReady(s *Server) error {
	master, err := redis.StringMap(g.do(s, "SENTINEL", "MASTER", g.Name))
	if err != nil {
		return err
	}
	if master["flags"] != "master" {
		return fmt.Errorf("master flags %q", master["flags"])
	}
	if want := fmt.Sprint(len(g.Sentinels) - 1); master["num-other-sentinels"] != want {
		return fmt.Errorf("num-other-sentinels %s, want %s", master["num-other-sentinels"], want)
	}
	replies, err := redis.Values(g.do(s, "SENTINEL", "REPLICAS", g.Name))
	if err != nil {
		return err
	}
	up := 0
	for _, r := range replies {
		m, err := redis.StringMap(r, nil)
		if err != nil {
			return err
		}
		if m["flags"] == "slave" && m["master-link-status"] == "ok" {
			up++
		}
	}
	if up < len(g.Replicas) {
		return fmt.Errorf("%d of %d replicas seen up", up, len(g.Replicas))
	}
	return nil
}

// do sends one command to s on a fresh connection with short timeouts.
func (g *SentinelGroup) do(s *Server, cmd string, args ...interface{}) (interface{}, error) {
	c, err := s.Dial(redis.DialConnectTimeout(time.Second), redis.DialReadTimeout(2*time.Second), redis.DialWriteTimeout(2*time.Second))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Do(cmd, args...)
}

// SentinelAddrs returns the address of every Sentinel.
func (g *SentinelGroup) SentinelAddrs() []string {
	addrs := make([]string, len(g.Sentinels))
	for i, s := range g.Sentinels {
		addrs[i] = s.Addr()
	}
	return addrs
}

// masterAddrFrom asks one Sentinel for the current master's address.
func (g *SentinelGroup) masterAddrFrom(s *Server) (string, error) {
	hostPort, err := redis.Strings(g.do(s, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", g.Name))
	if err != nil {
		return "", err
	}
	if len(hostPort) != 2 {
		return "", fmt.Errorf("harness: SENTINEL get-master-addr-by-name %s answered %q", g.Name, hostPort)
	}
	addr := net.JoinHostPort(hostPort[0], hostPort[1])
	if g.backend != nil {
		if err := g.backend.checkAddr(addr); err != nil {
			return "", fmt.Errorf("harness: %s names master %s: %w", s, addr, err)
		}
	}
	return addr, nil
}

// MasterAddr asks the Sentinels, in order, for the current master's address
// (SENTINEL get-master-addr-by-name) and returns the first answer. It fails
// the test when no Sentinel answers.
func (g *SentinelGroup) MasterAddr(t testing.TB) string {
	t.Helper()
	var errs []string
	for _, s := range g.Sentinels {
		addr, err := g.masterAddrFrom(s)
		if err == nil {
			return addr
		}
		errs = append(errs, fmt.Sprintf("%s: %v", s, err))
	}
	t.Fatalf("harness: no Sentinel of %s knows its master: %s", g.Name, strings.Join(errs, "; "))
	return ""
}

// WaitForFailover polls the Sentinels until every one that answers reports
// the same master, other than oldAddr, and that server's ROLE is master. It
// returns the new master's address, and fails the test after timeout.
func (g *SentinelGroup) WaitForFailover(t testing.TB, oldAddr string, timeout time.Duration) string {
	t.Helper()
	var newAddr, last string
	ok := poll(timeout, 100*time.Millisecond, func() bool {
		answers := map[string]int{}
		for _, s := range g.Sentinels {
			if addr, err := g.masterAddrFrom(s); err == nil {
				answers[addr]++
			}
		}
		last = fmt.Sprintf("Sentinels report %v", answers)
		if len(answers) != 1 {
			return false
		}
		for addr := range answers {
			newAddr = addr
		}
		if newAddr == oldAddr {
			return false
		}
		srv := g.ServerByAddr(newAddr)
		if srv == nil {
			last = fmt.Sprintf("Sentinels report %s, which is not in the group", newAddr)
			return false
		}
		role, err := redis.Values(g.do(srv, "ROLE"))
		if err != nil || len(role) == 0 {
			last = fmt.Sprintf("ROLE on %s: %v", newAddr, err)
			return false
		}
		r, _ := redis.String(role[0], nil)
		last = fmt.Sprintf("Sentinels report %s, whose ROLE is %q", newAddr, r)
		return r == "master"
	})
	if !ok {
		t.Fatalf("harness: no failover of %s away from %s within %s: %s", g.Name, oldAddr, timeout, last)
	}
	return newAddr
}

// ServerByAddr returns the master, replica or Sentinel listening on addr, or
// nil.
func (g *SentinelGroup) ServerByAddr(addr string) *Server {
	all := append(append([]*Server{g.Master}, g.Replicas...), g.Sentinels...)
	for _, s := range all {
		if s.Addr() == addr {
			return s
		}
	}
	return nil
}
