package harness

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// processBackend runs each server as a local process on 127.0.0.1.
type processBackend struct {
	server   string // path of redis-server
	sentinel string // path of redis-sentinel; "" until a Sentinel group needs it
}

func (b *processBackend) address(string, *TLSConfig) (string, int, error) {
	port, err := freePort()
	return "127.0.0.1", port, err
}

func (b *processBackend) view(dir string) nodeView {
	return nodeView{bind: "127.0.0.1", dir: dir, tlsPath: func(p string) string { return p }}
}

func (b *processBackend) newServer(_ string, port int, dir string, opts Options) (node, error) {
	n := newProcessNode(b.server, redisArgs(b.view(dir), port, opts), dir)
	n.env = opts.Env
	return n, nil
}

func (b *processBackend) newSentinel(_ string, _ int, dir string, _ *TLSConfig, conf func(nodeView) string) (node, error) {
	if b.sentinel == "" {
		return nil, errors.New("harness: redis-sentinel was not looked up")
	}
	path := filepath.Join(dir, "sentinel.conf")
	if err := os.WriteFile(path, []byte(conf(b.view(dir))), 0o644); err != nil {
		return nil, fmt.Errorf("harness: write %s: %w", path, err)
	}
	return newProcessNode(b.sentinel, []string{path}, dir), nil
}

func (b *processBackend) readyTimeout() time.Duration { return startTimeout }

// checkAddr accepts loopback addresses only.
func (b *processBackend) checkAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("harness: address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("harness: %s is not a loopback address: the process backend dials nothing else", addr)
	}
	return nil
}

// processNode is one Redis process, restartable with the same arguments.
type processNode struct {
	bin     string
	args    []string
	env     []string // added to the test binary's environment
	logPath string

	mu        sync.Mutex
	cmd       *exec.Cmd     // nil before the first start
	done      chan struct{} // closed when cmd has exited
	paused    bool
	stopped   bool
	logOffset int64 // size of the log when the current run started
}

func newProcessNode(bin string, args []string, dir string) *processNode {
	return &processNode{bin: bin, args: args, logPath: filepath.Join(dir, "redis.log")}
}

func (n *processNode) start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopped {
		return errors.New("harness: server was stopped for good")
	}
	if n.running() {
		return nil
	}
	logFile, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("harness: server log: %w", err)
	}
	defer logFile.Close() // the child has its own descriptor
	if n.logOffset, err = logFile.Seek(0, io.SeekEnd); err != nil {
		return fmt.Errorf("harness: server log: %w", err)
	}
	cmd := exec.Command(n.bin, n.args...)
	if len(n.env) > 0 {
		cmd.Env = append(os.Environ(), n.env...)
	}
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("harness: start %s: %w", n.bin, err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	n.cmd, n.done, n.paused = cmd, done, false
	return nil
}

// running reports whether the current process is alive. n.mu is held.
func (n *processNode) running() bool {
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

func (n *processNode) kill() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.killLocked()
}

func (n *processNode) killLocked() error {
	if !n.running() {
		n.paused = false
		return nil
	}
	if n.paused {
		// SIGKILL works on a stopped process, but resume anyway so that
		// nothing is ever left stopped if the kill went wrong.
		n.cmd.Process.Signal(syscall.SIGCONT)
		n.paused = false
	}
	if err := n.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("harness: kill pid %d: %w", n.cmd.Process.Pid, err)
	}
	select {
	case <-n.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("harness: pid %d did not exit within 10s of SIGKILL", n.cmd.Process.Pid)
	}
}

func (n *processNode) pause() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.running() {
		return errors.New("harness: pause: server is not running")
	}
	if err := n.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		return fmt.Errorf("harness: SIGSTOP pid %d: %w", n.cmd.Process.Pid, err)
	}
	n.paused = true
	return nil
}

func (n *processNode) resume() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.running() {
		return errors.New("harness: resume: server is not running")
	}
	if err := n.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		return fmt.Errorf("harness: SIGCONT pid %d: %w", n.cmd.Process.Pid, err)
	}
	n.paused = false
	return nil
}

func (n *processNode) stop() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stopped = true
	n.killLocked()
}

func (n *processNode) partition() error         { return errNeedsDocker }
func (n *processNode) isolate() (string, error) { return "", errNeedsDocker }
func (n *processNode) heal() error              { return nil }

func (n *processNode) exited() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil && !n.running()
}

func (n *processNode) logTail(lines int) string {
	n.mu.Lock()
	offset := n.logOffset
	n.mu.Unlock()
	b, err := os.ReadFile(n.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	if offset <= int64(len(b)) {
		b = b[offset:]
	}
	return tailString(string(b), lines)
}
