package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/alicebob/miniredis/v2/server"
	"github.com/gomodule/redigo/redis"
)

// demoServer is one node of the demo: an embedded miniredis or a
// redis-server process, on 127.0.0.1.
type demoServer interface {
	Addr() string
	Down() (string, error) // take the node out; returns how, for the log
	Up() (string, error)   // bring it back; returns how
	Close()                // stop it for good; idempotent
}

// miniServer is an in-process miniredis whose keys expire in real time
// (ClockTTL: every command first advances its TTLs by the wall-clock time
// elapsed), so PX and PEXPIRE mean what they mean on Redis.
//
// miniredis answers INFO with the clients and stats sections only, while
// the library's restart guard reads run_id from INFO server on every new
// connection and treats an error as a failed dial. A pre-hook answers INFO
// server with a run_id that stays the same across Up, because the restarted
// server keeps its keys (a restart that keeps its data is not one the guard
// must quarantine).
type miniServer struct {
	m     *miniredis.Miniredis
	addr  string // kept: miniredis forgets it once closed
	runID string
}

func startMini() (*miniServer, error) {
	m := miniredis.NewMiniRedis()
	m.ClockTTL(true)
	if err := m.StartAddr("127.0.0.1:0"); err != nil {
		return nil, err
	}
	var id [20]byte
	if _, err := rand.Read(id[:]); err != nil {
		m.Close()
		return nil, err
	}
	s := &miniServer{m: m, addr: m.Addr(), runID: hex.EncodeToString(id[:])}
	s.hookInfo()
	return s, nil
}

// hookInfo makes the running server answer INFO server.
func (s *miniServer) hookInfo() {
	s.m.Server().SetPreHook(func(c *server.Peer, cmd string, args ...string) bool {
		if cmd != "INFO" || len(args) != 1 || !strings.EqualFold(args[0], "server") {
			return false
		}
		c.WriteBulk("# Server\r\nredis_version:7.0.0-miniredis\r\nrun_id:" + s.runID + "\r\n")
		return true
	})
}

func (s *miniServer) Addr() string { return s.addr }

func (s *miniServer) Down() (string, error) {
	s.m.Close()
	return "closed: connections refused", nil
}

func (s *miniServer) Up() (string, error) {
	if err := s.m.Restart(); err != nil {
		return "", err
	}
	s.hookInfo()
	return "restarted on the same address, its keys kept", nil
}

func (s *miniServer) Close() { s.m.Close() }

// realServer is a redis-server process with persistence off, in a temp dir.
type realServer struct {
	addr string
	dir  string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
}

// startReal starts redis-server on a free 127.0.0.1 port and waits until it
// answers PING. A port taken between the probe and the start is retried.
func startReal(ctx context.Context, bin string) (*realServer, error) {
	var lastErr error
	for try := 0; try < 3; try++ {
		s, err := tryStartReal(ctx, bin)
		if err == nil {
			return s, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

func tryStartReal(ctx context.Context, bin string) (*realServer, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "redlock-demo-")
	if err != nil {
		return nil, err
	}
	s := &realServer{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), dir: dir, done: make(chan struct{})}
	s.cmd = exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir, "--loglevel", "warning")
	// Own process group: a Ctrl-C at the terminal reaches the demo, which
	// stops the servers itself; on Linux they also die with the demo.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	setDeathSignal(s.cmd.SysProcAttr, syscall.SIGKILL)
	if err := s.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.done)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := redis.DialContext(ctx, "tcp", s.addr, redis.DialConnectTimeout(200*time.Millisecond),
			redis.DialReadTimeout(200*time.Millisecond))
		if err == nil {
			_, err = c.Do("PING")
			c.Close()
			if err == nil {
				return s, nil
			}
		}
		select {
		case <-s.done:
			s.Close()
			return nil, fmt.Errorf("redis-server on port %d exited at start (port taken?)", port)
		case <-ctx.Done():
			s.Close()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Close()
			return nil, fmt.Errorf("redis-server on port %d did not answer PING within 5s: %v", port, err)
		}
	}
}

func (s *realServer) Addr() string { return s.addr }

func (s *realServer) Down() (string, error) {
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		return "", err
	}
	return "paused with SIGSTOP: commands hang until the node timeout", nil
}

func (s *realServer) Up() (string, error) {
	if err := s.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		return "", err
	}
	return "resumed with SIGCONT", nil
}

func (s *realServer) Close() {
	select {
	case <-s.done:
	default:
		_ = s.cmd.Process.Kill() // SIGKILL also ends a stopped process
		<-s.done
	}
	os.RemoveAll(s.dir)
}

// freePort returns a TCP port that was free on 127.0.0.1 a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startServers starts n demo servers, all embedded or all real.
func startServers(ctx context.Context, n int, realBin string) ([]demoServer, error) {
	var out []demoServer
	for i := 0; i < n; i++ {
		var s demoServer
		var err error
		if realBin != "" {
			s, err = startReal(ctx, realBin)
		} else {
			s, err = startMini()
		}
		if err != nil {
			for _, s := range out {
				s.Close()
			}
			return nil, errors.Join(fmt.Errorf("starting node %d", i+1), err)
		}
		out = append(out, s)
	}
	return out, nil
}
