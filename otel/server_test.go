package redlockotel_test

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/require"
)

// server is a redis-server process started for one test.
type server struct {
	addr string
	cmd  *exec.Cmd
}

// startServers starts n redis-server processes on free 127.0.0.1 ports,
// without persistence, and kills them when the test ends.
func startServers(t testing.TB, n int) []*server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	require.NoError(t, err, "redis-server is not installed: apt-get install -y redis-server")
	out := make([]*server, n)
	for i := range out {
		out[i] = startServer(t, bin)
	}
	return out
}

func startServer(t testing.TB, bin string) *server {
	t.Helper()
	var last error
	for try := 0; try < 5; try++ { // a free port may be taken before the server binds it
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err, "finding a free port")
		port := l.Addr().(*net.TCPAddr).Port
		require.NoError(t, l.Close())
		dir := t.TempDir()
		log, err := os.Create(filepath.Join(dir, "redis.log"))
		require.NoError(t, err)
		s := &server{addr: "127.0.0.1:" + strconv.Itoa(port)}
		s.cmd = exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", dir)
		s.cmd.Stdout, s.cmd.Stderr = log, log
		require.NoError(t, s.cmd.Start(), "starting redis-server")
		t.Cleanup(func() { s.kill(); log.Close() })
		if last = s.waitReady(20 * time.Second); last == nil {
			return s
		}
		s.kill()
		text, _ := os.ReadFile(log.Name())
		last = &startError{err: last, log: string(text)}
	}
	t.Fatalf("redis-server did not start: %v", last)
	return nil
}

type startError struct {
	err error
	log string
}

func (e *startError) Error() string { return e.err.Error() + "; its log:\n" + e.log }

// waitReady waits until the server answers PING.
func (s *server) waitReady(bound time.Duration) error {
	deadline := time.Now().Add(bound)
	for {
		err := s.ping()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *server) ping() error {
	_, err := s.do("PING")
	return err
}

// do sends one command on a fresh connection.
func (s *server) do(cmd string, args ...interface{}) (interface{}, error) {
	c, err := redis.Dial("tcp", s.addr, redis.DialConnectTimeout(time.Second), redis.DialReadTimeout(5*time.Second))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Do(cmd, args...)
}

// kill stops the server at once (SIGKILL) and reaps it; a second kill does
// nothing.
func (s *server) kill() {
	if s.cmd.ProcessState != nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
}
