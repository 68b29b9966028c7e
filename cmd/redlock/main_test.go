package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

// redlockBin is the CLI under test, built once by TestMain (with -race when
// the tests run with -race).
var redlockBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "redlock-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	redlockBin = filepath.Join(dir, "redlock")
	args := []string{"build", "-o", redlockBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	out, err := exec.Command("go", append(args, ".")...).CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building the redlock binary: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cliRun is one run of the binary.
type cliRun struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
	start          time.Time
	done           chan struct{}
	code           int
	elapsed        time.Duration
}

// startCLI starts the binary with args. Only extraEnv is added to the
// test's environment, which never passes REDLOCK_INSTANCES through. The run
// is killed at the end of the test if still going.
func startCLI(t *testing.T, extraEnv []string, args ...string) *cliRun {
	t.Helper()
	r := &cliRun{cmd: exec.Command(redlockBin, args...), done: make(chan struct{})}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envInstances+"=") {
			r.cmd.Env = append(r.cmd.Env, kv)
		}
	}
	r.cmd.Env = append(r.cmd.Env, extraEnv...)
	r.cmd.Stdout, r.cmd.Stderr = &r.stdout, &r.stderr
	r.cmd.WaitDelay = 5 * time.Second // an orphaned grandchild must not hang the test on our pipes
	r.start = time.Now()
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", redlockBin, err)
	}
	go func() {
		defer close(r.done)
		err := r.cmd.Wait()
		r.elapsed = time.Since(r.start)
		r.code = r.cmd.ProcessState.ExitCode()
		if ws, ok := r.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			r.code = 128 + int(ws.Signal())
		}
		_ = err
	}()
	t.Cleanup(func() {
		select {
		case <-r.done:
		default:
			_ = r.cmd.Process.Kill()
			<-r.done
		}
	})
	return r
}

// wait waits for the run to end, failing the test after limit.
func (r *cliRun) wait(t *testing.T, limit time.Duration) *cliRun {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(limit):
		_ = r.cmd.Process.Kill()
		<-r.done
		t.Fatalf("redlock %s still running after %v\nstdout:\n%s\nstderr:\n%s",
			strings.Join(r.cmd.Args[1:], " "), limit, &r.stdout, &r.stderr)
	}
	return r
}

// runCLI runs the binary to completion (at most a minute).
func runCLI(t *testing.T, extraEnv []string, args ...string) *cliRun {
	t.Helper()
	return startCLI(t, extraEnv, args...).wait(t, time.Minute)
}

// expectCode fails the test, showing the run's output, unless it exited
// with want.
func (r *cliRun) expectCode(t *testing.T, want int, why string) {
	t.Helper()
	if r.code != want {
		t.Fatalf("redlock %s: exit code %d, want %d (%s)\nstdout:\n%s\nstderr:\n%s",
			strings.Join(r.cmd.Args[1:], " "), r.code, want, why, &r.stdout, &r.stderr)
	}
	if strings.Contains(r.stderr.String(), "panic:") || strings.Contains(r.stderr.String(), "goroutine ") {
		t.Fatalf("redlock %s panicked:\n%s", strings.Join(r.cmd.Args[1:], " "), &r.stderr)
	}
}

// redisServer is one redis-server process started by startRedis.
type redisServer struct {
	Addr string
	cmd  *exec.Cmd
	done chan struct{}
}

// startRedis starts n redis-server processes on free 127.0.0.1 ports, each
// in its own t.TempDir() with persistence off, and kills them when the test
// ends. It fails the test (it never skips) when redis-server is missing.
func startRedis(t *testing.T, n int) []*redisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not found on PATH: install it with: apt-get install -y redis-server redis-sentinel")
	}
	out := make([]*redisServer, 0, n)
	for i := 0; i < n; i++ {
		var s *redisServer
		for try := 0; s == nil; try++ {
			if s, err = tryStartRedis(t, bin); err != nil && try == 2 {
				t.Fatalf("starting redis-server: %v", err)
			}
		}
		out = append(out, s)
	}
	return out
}

func tryStartRedis(t *testing.T, bin string) (*redisServer, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s := &redisServer{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), done: make(chan struct{})}
	s.cmd = exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", t.TempDir(), "--loglevel", "warning")
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(s.kill)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		select {
		case <-s.done:
			return nil, fmt.Errorf("redis-server on port %d exited at start (port taken?)", port)
		default:
		}
		if c, err := redis.Dial("tcp", s.Addr, redis.DialConnectTimeout(time.Second)); err == nil {
			_, err = c.Do("PING")
			c.Close()
			if err == nil {
				return s, nil
			}
		}
	}
	s.kill()
	return nil, fmt.Errorf("redis-server on port %d did not answer PING within 10s", port)
}

func (s *redisServer) kill() {
	select {
	case <-s.done:
	default:
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// do sends one command to the server.
func (s *redisServer) do(t *testing.T, cmd string, args ...any) any {
	t.Helper()
	c, err := redis.Dial("tcp", s.Addr, redis.DialConnectTimeout(time.Second), redis.DialReadTimeout(time.Second))
	if err != nil {
		t.Fatalf("connecting to %s: %v", s.Addr, err)
	}
	defer c.Close()
	reply, err := c.Do(cmd, args...)
	if err != nil {
		t.Fatalf("%s on %s: %v", cmd, s.Addr, err)
	}
	return reply
}

// instancesFlag is the --instances value for servers.
func instancesFlag(servers []*redisServer) string {
	addrs := make([]string, len(servers))
	for i, s := range servers {
		addrs[i] = s.Addr
	}
	return strings.Join(addrs, ",")
}

// deadAddrs returns n 127.0.0.1 addresses where nothing listens.
func deadAddrs(t *testing.T, n int) string {
	t.Helper()
	var out []string
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, l.Addr().String())
		l.Close()
	}
	return strings.Join(out, ",")
}

// waitForFile waits until path is not empty and contains substr, and
// returns its content.
func waitForFile(t *testing.T, path, substr string, limit time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		b, _ := os.ReadFile(path)
		if len(b) > 0 && strings.Contains(string(b), substr) {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not contain %q after %v; it has:\n%s", path, substr, limit, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
