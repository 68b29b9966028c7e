package harness

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

// Server is one real redis-server (or redis-sentinel) the harness started on
// 127.0.0.1. Its methods are safe for concurrent use; Kill, Restart, Pause,
// Resume and Stop are serialized.
type Server struct {
	addr     string
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
	start() error         // launch on the node's port; errPortInUse when the port is taken
	kill() error          // SIGKILL and wait for the exit; nil when already down
	pause() error         // SIGSTOP (docker pause)
	resume() error        // SIGCONT (docker unpause)
	stop()                // kill for good and release resources; idempotent
	exited() bool         // known to be down since the last start
	logTail(n int) string // the last n lines of the current run's log
}

// backend creates nodes: local processes (the default) or Docker containers.
type backend interface {
	newNode(dir string, port int, opts Options) (node, error)
}

// errPortInUse reports that a server could not bind its port.
var errPortInUse = errors.New("harness: port already in use")

// Addr returns "127.0.0.1:PORT".
func (s *Server) Addr() string { return s.addr }

// Port returns the TCP port (the TLS port when the server runs TLS only).
func (s *Server) Port() int { return s.port }

// Password returns the server's requirepass ("" when none).
func (s *Server) Password() string { return s.password }

// TLS returns the server's TLS files, or nil for a plain TCP server.
func (s *Server) TLS() *TLSConfig { return s.tls }

// String returns e.g. "redis-server 127.0.0.1:6379".
func (s *Server) String() string { return s.kind + " " + s.addr }

// Kill sends SIGKILL and waits for the server to exit. It is a no-op when the
// server is already down. A paused server is killed too.
func (s *Server) Kill() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.node.kill()
}

// Restart starts the server again on the same port, with empty data (unless
// Options.Args turned persistence on), and waits until it answers PING. A running server is killed
// first. A Sentinel restarts from its own (rewritten) config file.
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

// Pause stops the server with SIGSTOP: connections stay open but nothing is
// answered until Resume.
func (s *Server) Pause() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.node.pause()
}

// Resume continues a paused server with SIGCONT.
func (s *Server) Resume() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.node.resume()
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

// Start starts one redis-server on a free 127.0.0.1 port and waits until it
// answers PING. The server is stopped at t.Cleanup, even when the test fails
// (its log tail is then logged). Start fails the test when redis-server is
// not installed.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	return StartN(t, 1, opts)[0]
}

// StartN starts n independent redis-servers in parallel, as Start does.
func StartN(t testing.TB, n int, opts Options) []*Server {
	t.Helper()
	b := selectBackend(t)
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
	return launchNode("redis-server", opts.Password, opts.TLS, readyTimeout(b), func(port int) (node, error) {
		return b.newNode(dir, port, opts)
	})
}

// launchNode picks a free port, creates a node on it with newNode, starts it
// and waits until it answers PING; it picks another port when the chosen one
// turns out to be taken. password and tlsConf are what clients need to reach
// the node.
func launchNode(kind, password string, tlsConf *TLSConfig, ready time.Duration, newNode func(port int) (node, error)) (*Server, error) {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		var port int
		if port, err = freePort(); err != nil {
			return nil, err
		}
		var n node
		if n, err = newNode(port); err != nil {
			return nil, err
		}
		s := &Server{
			addr:     fmt.Sprintf("127.0.0.1:%d", port),
			port:     port,
			password: password,
			tls:      tlsConf,
			kind:     kind,
			node:     n,
			ready:    ready,
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

// selectBackend returns the backend named by REDLOCK_TEST_BACKEND and fails
// the test when it cannot run (missing binary, unreachable Docker engine).
func selectBackend(t testing.TB) backend {
	t.Helper()
	switch name := os.Getenv(BackendEnv); name {
	case "", "process", "processes":
		return processBackend{bin: mustLookupBinary(t, "redis-server")}
	case "docker":
		b, err := newDockerBackend()
		if err != nil {
			t.Fatal(err)
		}
		return b
	default:
		t.Fatalf("harness: %s=%q: want \"process\" (the default) or \"docker\"", BackendEnv, name)
		return nil
	}
}

// readyTimeout is how long a backend's servers get to answer PING.
func readyTimeout(b backend) time.Duration {
	if _, ok := b.(*dockerBackend); ok {
		return 60 * time.Second // a container may start slowly on a busy engine
	}
	return startTimeout
}

// redisArgs returns the redis-server arguments shared by every backend:
// bind, port (TLS only when opts.TLS is set), no persistence, then opts.Args.
// tlsPath maps a TLS file on the host to the path the server sees.
func redisArgs(bind string, port int, dir string, opts Options, tlsPath func(string) string) []string {
	args := []string{"--bind", bind}
	if opts.TLS != nil {
		args = append(args, "--port", "0", "--tls-port", fmt.Sprint(port))
		args = append(args, opts.TLS.serverArgs(tlsPath)...)
	} else {
		args = append(args, "--port", fmt.Sprint(port))
	}
	args = append(args,
		"--save", "",
		"--appendonly", "no",
		"--dir", dir,
		"--daemonize", "no",
		"--protected-mode", "no",
	)
	if opts.Password != "" {
		args = append(args, "--requirepass", opts.Password, "--masterauth", opts.Password)
	}
	return append(args, opts.Args...)
}
