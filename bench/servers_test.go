package bench

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

// nodeCount is the number of independent Redis masters (Redlock nodes).
const nodeCount = 5

// servers are the redis-server processes every benchmark uses; addrs holds
// their "127.0.0.1:port" addresses in the same order. Both are set by
// TestMain, and only when benchmarks run.
var (
	servers []*server
	addrs   []string
)

// TestMain starts nodeCount redis-server processes on free loopback ports
// when the run includes benchmarks (plain `go test` starts nothing), runs
// the benchmarks and kills the servers.
func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.bench"); f == nil || f.Value.String() == "" {
		os.Exit(m.Run())
	}
	// The report shows which library source was measured.
	fmt.Println("redlock-source:", sourceRevision())
	if err := startServers(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		stopServers()
		os.Exit(1)
	}
	code := m.Run()
	stopServers()
	os.Exit(code)
}

// sourceRevision describes the library's source tree: git describe of the
// repository, "-dirty" with uncommitted changes.
func sourceRevision() string {
	out, err := exec.Command("git", "-C", "..", "describe", "--always", "--dirty").Output()
	if err != nil {
		return "unknown"
	}
	return string(bytes.TrimSpace(out))
}

// server is one redis-server process started by TestMain.
type server struct {
	addr   string
	port   int
	dir    string
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has exited
}

func startServers() error {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return errors.New("redis-server not found on PATH; the benchmarks run against real Redis servers.\n" +
			"Install it, then run again:\n" +
			"  Debian/Ubuntu: sudo apt-get install -y redis-server   (or: bash scripts/ensure-redis.sh)\n" +
			"  macOS:         brew install redis")
	}
	for range nodeCount {
		s, err := startServer(bin)
		if err != nil {
			return err
		}
		servers = append(servers, s)
		addrs = append(addrs, s.addr)
	}
	return nil
}

func stopServers() {
	for _, s := range servers {
		s.stop()
	}
}

// startServer starts one redis-server without persistence on a free
// loopback port, with extra arguments, and waits until it answers PING.
func startServer(bin string, extra ...string) (*server, error) {
	return startProcess(bin, func(port int, dir string) ([]string, error) {
		return append([]string{
			"--port", strconv.Itoa(port),
			"--bind", "127.0.0.1",
			"--save", "",
			"--appendonly", "no",
			"--dir", dir,
			"--logfile", filepath.Join(dir, "redis.log"),
		}, extra...), nil
	})
}

// startProcess starts bin (redis-server or redis-sentinel) in a new temp
// dir with the arguments args returns for a free loopback port and that
// dir, which must make it log to redis.log there, and waits until it
// answers PING. A port taken between choosing and binding it is retried
// with another.
func startProcess(bin string, args func(port int, dir string) ([]string, error)) (*server, error) {
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		dir, err := os.MkdirTemp("", "redlock-bench-")
		if err != nil {
			return nil, err
		}
		argv, err := args(port, dir)
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		s := &server{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), port: port, dir: dir, exited: make(chan struct{})}
		s.cmd = exec.Command(bin, argv...)
		s.cmd.SysProcAttr = serverProcAttr()
		if err := s.cmd.Start(); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("starting %s: %w", filepath.Base(bin), err)
		}
		go func() { _ = s.cmd.Wait(); close(s.exited) }()
		if lastErr = s.waitReady(10 * time.Second); lastErr == nil {
			return s, nil
		}
		s.stop()
	}
	return nil, lastErr
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitReady polls PING until the server answers, exits, or d passes.
func (s *server) waitReady(d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		select {
		case <-s.exited:
			return fmt.Errorf("%s on port %d exited at start:\n%s", s.name(), s.port, s.logTail())
		default:
		}
		c, err := redis.Dial("tcp", s.addr, redis.DialConnectTimeout(time.Second), redis.DialReadTimeout(time.Second))
		if err == nil {
			_, err = c.Do("PING")
			c.Close()
			if err == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s on port %d not ready after %v: %v\n%s", s.name(), s.port, d, err, s.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// name is the server's program name, for messages.
func (s *server) name() string { return filepath.Base(s.cmd.Path) }

func (s *server) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	if i := len(b) - 2000; i > 0 {
		b = b[i:]
	}
	return string(bytes.TrimSpace(b))
}

// pause stops the process with SIGSTOP: the kernel still accepts TCP
// connections and buffers requests for it, but nothing is answered.
func (s *server) pause() error { return s.cmd.Process.Signal(syscall.SIGSTOP) }

// resume continues a paused process with SIGCONT.
func (s *server) resume() error { return s.cmd.Process.Signal(syscall.SIGCONT) }

// stop kills the process (paused or not) and removes its directory.
func (s *server) stop() {
	if s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(syscall.SIGCONT)
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	os.RemoveAll(s.dir)
}
