package harness

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

// Server is one real redis-server (or redis-sentinel) the harness started:
// a local process on 127.0.0.1, or a container at its own address on the
// harness's Docker network. Its methods are safe for concurrent use; Kill,
// Restart, Pause, Resume, Partition, Isolate, Heal and Stop are serialized.
type Server struct {
	addr     string
	host     string
	port     int
	password string     // requirepass, used by Dial
	tls      *TLSConfig // nil: plain TCP
	kind     string     // "redis-server" or "redis-sentinel", for messages

	mu    sync.Mutex // serializes lifecycle calls on node
	node  node
	ready time.Duration // bound on the wait for PING after a (re)start
}

// node is one Redis server as a backend runs it.
type node interface {
	start() error         // launch at the node's address; errPortInUse when it is taken
	kill() error          // kill -9 and wait for the exit; nil when already down
	pause() error         // SIGSTOP (docker pause)
	resume() error        // SIGCONT (docker unpause)
	stop()                // kill for good and release resources; idempotent
	exited() bool         // known to be down since the last start
	logTail(n int) string // the last n lines of the current run's log

	partition() error         // cut the node off the network
	isolate() (string, error) // cut it off from its peers only; returns its host on the path left to the test
	heal() error              // undo partition or isolate; nil when neither is in force
}

// backend creates nodes: local processes (the default) or Docker containers.
type backend interface {
	// address picks the host and port of a new server of kind
	// ("redis-server" or "redis-sentinel"), checked by checkAddr; with
	// tls, one the certificates of tls name.
	address(kind string, tls *TLSConfig) (host string, port int, err error)
	// newServer returns a redis-server node at host:port that works in
	// dir (a fresh temp dir on the host).
	newServer(host string, port int, dir string, opts Options) (node, error)
	// newSentinel returns a redis-sentinel node at host:port whose
	// config file is conf(view).
	newSentinel(host string, port int, dir string, tls *TLSConfig, conf func(nodeView) string) (node, error)
	// readyTimeout bounds the wait for a started server to answer PING.
	readyTimeout() time.Duration
	// checkAddr fails unless addr ("host:port") is one this backend's
	// servers may have: the harness dials nothing else.
	checkAddr(addr string) error
}

// nodeView is a server's environment as the server itself sees it: what it
// binds, the host it announces to its peers ("": none), its working
// directory and where it finds a TLS file given by its host path.
type nodeView struct {
	bind, announce, dir string
	tlsPath             func(string) string
}

// errPortInUse reports that a server could not bind its port.
var errPortInUse = errors.New("harness: port already in use")

// errNeedsDocker is the error of the network faults on the process backend.
var errNeedsDocker = errors.New("harness: network partitions need the docker backend (" + BackendEnv + "=" + BackendDocker + ")")

// Addr returns "HOST:PORT": 127.0.0.1 for a process, the container's
// address on the harness network for the docker backend.
func (s *Server) Addr() string { return s.addr }

// Host returns the host part of Addr, e.g. for REPLICAOF or SENTINEL MONITOR.
func (s *Server) Host() string { return s.host }

// Port returns the TCP port (the TLS port when the server runs TLS only).
func (s *Server) Port() int { return s.port }

// Password returns the server's requirepass ("" when none).
func (s *Server) Password() string { return s.password }

// TLS returns the server's TLS files, or nil for a plain TCP server.
func (s *Server) TLS() *TLSConfig { return s.tls }

// String returns e.g. "redis-server 127.0.0.1:6379".
func (s *Server) String() string { return s.kind + " " + s.addr }

// Kill sends SIGKILL (docker kill) and waits for the server to exit. It is
// a no-op when the server is already down. A paused server is killed too.
func (s *Server) Kill() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.node.kill()
}

// Restart starts the server again at the same address (docker start of the
// same container), with empty data (unless Options.Args turned persistence
// on), and waits until it answers PING. A running server is killed first.
// A Sentinel restarts from its own (rewritten) config file.
func (s *Server) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.node.kill(); err != nil {
		return err
	}
	// The port was ours a moment ago; if something grabbed it meanwhile,
	// give it a few seconds to go away.
	var err error
	poll(5*time.Second, 100*time.Millisecond, func() bool {
		err = s.node.start()
		if err == nil {
			err = s.waitReady()
		}
		return !errors.Is(err, errPortInUse)
	})
	return err
}

// Pause stops the server with SIGSTOP (docker pause): connections stay open
// but nothing is answered until Resume.
func (s *Server) Pause() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.node.pause()
}

// Resume continues a paused server with SIGCONT (docker unpause).
func (s *Server) Resume() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.node.resume()
}

// Partition cuts the server off the network, as when its host or its link
// disappears (docker network disconnect): every other server, every
// Sentinel and the test process itself lose it; established connections
// hang, new ones time out. The server keeps running. Heal ends it. Docker
// backend only (errNeedsDocker otherwise).
func (s *Server) Partition() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.node.partition()
}

// Isolate cuts the server off from every other server and Sentinel, but
// not from the test process: the server is connected to a network of its
// own that only it and the test's host share, then disconnected from the
// harness network (a split brain: the server goes on serving whoever still
// reaches it). It returns the server as the test reaches it now: a Server
// at its address on that network, sharing this one's process (its
// lifecycle methods act on the same server; Stop only this one). Heal
// ends it. Docker backend only.
func (s *Server) Isolate() (*Server, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	host, err := s.node.isolate()
	if err != nil {
		return nil, err
	}
	side := &Server{
		addr:     net.JoinHostPort(host, strconv.Itoa(s.port)),
		host:     host,
		port:     s.port,
		password: s.password,
		tls:      s.tls,
		kind:     s.kind,
		node:     s.node,
		ready:    s.ready,
	}
	return side, nil
}

// Heal ends a Partition or an Isolate: the server is connected to the
// harness network again, at the same address. It is a no-op when neither
// is in force.
func (s *Server) Heal() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.node.heal()
}

// Stop kills the server for good. It is idempotent and runs at t.Cleanup.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.node.stop()
}

// LogTail returns the last n lines the server logged since its last start.
func (s *Server) LogTail(n int) string {
	return s.node.logTail(n)
}

// DialOptions returns the redigo options that reach this server: password,
// TLS with the harness CA, and timeouts (connect 2s, read and write 10s).
// Options appended after them win, e.g. redis.DialReadTimeout(200*time.Millisecond).
func (s *Server) DialOptions() []redis.DialOption {
	opts := []redis.DialOption{
		redis.DialConnectTimeout(2 * time.Second),
		redis.DialReadTimeout(10 * time.Second),
		redis.DialWriteTimeout(10 * time.Second),
	}
	if s.password != "" {
		opts = append(opts, redis.DialPassword(s.password))
	}
	if s.tls != nil {
		opts = append(opts, redis.DialUseTLS(true), redis.DialTLSConfig(s.tls.ClientConfig()))
	}
	return opts
}

// Dial opens a direct connection to the server with DialOptions followed by
// extra. The caller closes it.
func (s *Server) Dial(extra ...redis.DialOption) (redis.Conn, error) {
	return redis.Dial("tcp", s.addr, append(s.DialOptions(), extra...)...)
}

// Conn returns a direct connection to the server (with its password and TLS),
// closed at t.Cleanup. It fails the test when the server cannot be reached.
func (s *Server) Conn(t testing.TB) redis.Conn {
	t.Helper()
	c, err := s.Dial()
	if err != nil {
		t.Fatalf("harness: dial %s: %v", s, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Do sends one command on a fresh connection and returns the reply. Any error,
// including a Redis error reply, fails the test.
func (s *Server) Do(t testing.TB, cmd string, args ...interface{}) interface{} {
	t.Helper()
	c, err := s.Dial()
	if err != nil {
		t.Fatalf("harness: dial %s: %v", s, err)
	}
	defer c.Close()
	reply, err := c.Do(cmd, args...)
	if err != nil {
		t.Fatalf("harness: %s %v on %s: %v", cmd, args, s, err)
	}
	return reply
}

// Ping sends PING on a fresh connection with one-second timeouts and reports
// whether it was answered with PONG.
func (s *Server) Ping() error {
	c, err := s.Dial(redis.DialConnectTimeout(time.Second), redis.DialReadTimeout(time.Second), redis.DialWriteTimeout(time.Second))
	if err != nil {
		return err
	}
	defer c.Close()
	pong, err := redis.String(c.Do("PING"))
	if err != nil {
		return err
	}
	if pong != "PONG" {
		return fmt.Errorf("harness: PING on %s answered %q", s, pong)
	}
	return nil
}

// waitReady waits until the server answers PING. It fails fast, with the log
// tail, when the server exits; errPortInUse when it exited because its port
// was taken.
func (s *Server) waitReady() error {
	var last error
	ok := poll(s.ready, 20*time.Millisecond, func() bool {
		if s.node.exited() {
			return true
		}
		c, err := s.Dial(redis.DialConnectTimeout(200*time.Millisecond), redis.DialReadTimeout(500*time.Millisecond), redis.DialWriteTimeout(500*time.Millisecond))
		if err != nil {
			last = err
			return false
		}
		defer c.Close()
		_, last = c.Do("PING")
		return last == nil
	})
	if s.node.exited() {
		log := s.node.logTail(20)
		if strings.Contains(log, "Address already in use") {
			return fmt.Errorf("%w: %s", errPortInUse, s)
		}
		return fmt.Errorf("harness: %s exited before answering PING; log tail:\n%s", s, log)
	}
	if !ok {
		return fmt.Errorf("harness: %s did not answer PING within %s (last error: %v); log tail:\n%s", s, s.ready, last, s.node.logTail(20))
	}
	return nil
}

// Start starts one redis-server (on a free 127.0.0.1 port, or in a
// container at its own address) and waits until it answers PING. The
// server is stopped at t.Cleanup, even when the test fails (its log tail is
// then logged). Start fails the test when redis-server is not installed or
// the docker backend cannot run.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	return StartN(t, 1, opts)[0]
}

// StartN starts n independent redis-servers in parallel, as Start does.
func StartN(t testing.TB, n int, opts Options) []*Server {
	t.Helper()
	b := selectBackend(t, opts.Backend)
	return startServers(t, n, opts.TempDir, func(dir string) (*Server, error) {
		return launch(b, dir, opts)
	})
}

// startServers runs launch n times in parallel, each in a fresh temp dir
// under parent ("": the default), registers every started server's cleanup
// and fails the test on any error.
func startServers(t testing.TB, n int, parent string, launch func(dir string) (*Server, error)) []*Server {
	t.Helper()
	dirs := make([]string, n)
	for i := range dirs {
		dirs[i] = tempDir(t, parent)
	}
	servers := make([]*Server, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range servers {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			servers[i], errs[i] = launch(dirs[i])
		}(i)
	}
	wg.Wait()
	for _, s := range servers {
		if s != nil {
			registerCleanup(t, s)
		}
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return servers
}

// registerCleanup stops s at the end of the test and logs its log tail when
// the test failed.
func registerCleanup(t testing.TB, s *Server) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("harness: %s, last log lines:\n%s", s, s.LogTail(15))
		}
		s.Stop()
	})
}

// tempDir returns a fresh directory under parent ("": the default),
// removed at t.Cleanup. It is short (unlike t.TempDir's, which embeds the
// test name) so that paths stay well under the limits of unix sockets and
// config lines.
func tempDir(t testing.TB, parent string) string {
	t.Helper()
	dir, err := os.MkdirTemp(parent, "redlock-harness-")
	if err != nil {
		t.Fatalf("harness: temp dir: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// launch starts one redis-server through b.
func launch(b backend, dir string, opts Options) (*Server, error) {
	return launchNode(b, "redis-server", opts.Password, opts.TLS, func(host string, port int) (node, error) {
		return b.newServer(host, port, dir, opts)
	})
}

// launchNode picks an address with b, creates a node there with newNode,
// starts it and waits until it answers PING; it picks another address when
// the chosen one turns out to be taken. password and tlsConf are what
// clients need to reach the node.
func launchNode(b backend, kind, password string, tlsConf *TLSConfig, newNode func(host string, port int) (node, error)) (*Server, error) {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		host, port, err := b.address(kind, tlsConf)
		if err != nil {
			return nil, err
		}
		addr := net.JoinHostPort(host, strconv.Itoa(port))
		if err := b.checkAddr(addr); err != nil {
			return nil, err
		}
		n, err := newNode(host, port)
		if err != nil {
			return nil, err
		}
		s := &Server{
			addr:     addr,
			host:     host,
			port:     port,
			password: password,
			tls:      tlsConf,
			kind:     kind,
			node:     n,
			ready:    b.readyTimeout(),
		}
		if err = n.start(); err == nil {
			err = s.waitReady()
		}
		if err == nil {
			return s, nil
		}
		n.stop()
		if !errors.Is(err, errPortInUse) {
			return nil, err
		}
	}
	return nil, err
}

// selectBackend returns the backend named by name, or by BackendEnv when
// name is "", and fails the test when it cannot run (missing binary,
// unreachable Docker engine).
func selectBackend(t testing.TB, name string) backend {
	t.Helper()
	if name == "" {
		if name = SelectedBackend(); name == "" {
			t.Fatalf("harness: %s=%q: want %q (the default) or %q", BackendEnv, os.Getenv(BackendEnv), BackendProcess, BackendDocker)
		}
	}
	switch name {
	case BackendProcess:
		return &processBackend{server: mustLookupBinary(t, "redis-server")}
	case BackendDocker:
		b, err := newDockerBackend()
		if err != nil {
			t.Fatal(err)
		}
		return b
	default:
		t.Fatalf("harness: backend %q: want %q or %q", name, BackendProcess, BackendDocker)
		return nil
	}
}

// redisArgs returns the redis-server arguments shared by every backend:
// bind, port (TLS only when opts.TLS is set), no persistence, then opts.Args.
func redisArgs(v nodeView, port int, opts Options) []string {
	args := []string{"--bind", v.bind}
	if opts.TLS != nil {
		args = append(args, "--port", "0", "--tls-port", fmt.Sprint(port))
		args = append(args, opts.TLS.serverArgs(v.tlsPath)...)
	} else {
		args = append(args, "--port", fmt.Sprint(port))
	}
	args = append(args,
		"--save", "",
		"--appendonly", "no",
		"--dir", v.dir,
		"--daemonize", "no",
		"--protected-mode", "no",
	)
	if v.announce != "" {
		// What a replica tells its master (and the master the Sentinels).
		args = append(args, "--replica-announce-ip", v.announce)
	}
	if opts.Password != "" {
		args = append(args, "--requirepass", opts.Password, "--masterauth", opts.Password)
	}
	return append(args, opts.Args...)
}
