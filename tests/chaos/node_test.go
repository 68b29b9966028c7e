package chaos

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/gomodule/redigo/redis"
)

// The chaos nodes are redis-server processes that this package starts itself
// rather than through the harness, because each one runs with an
// environment: LD_PRELOAD of the clock shim (testdata/clockshim.c) and the
// path of its clock control file. Everything else matches the harness:
// 127.0.0.1, a temp dir, persistence off unless asked, SIGKILL at the end
// and when the test binary dies.

// rateNormal is the clock rate of a healthy node, in parts per million.
const rateNormal = 1_000_000

var (
	shimOnce sync.Once
	shimPath string
	shimErr  error
	shimDir  string
)

// clockShim compiles testdata/clockshim.c once per test binary and returns
// the shared library's path. The directory is removed by TestMain.
func clockShim() (string, error) {
	shimOnce.Do(func() {
		gcc, err := exec.LookPath("gcc")
		if err != nil {
			shimErr = errors.New(`chaos: gcc not found; it builds the clock shim (and go test -race needs it too): install it with "apt-get install -y gcc"`)
			return
		}
		src, err := filepath.Abs(filepath.Join("testdata", "clockshim.c"))
		if err != nil {
			shimErr = err
			return
		}
		if shimDir, err = os.MkdirTemp("", "redlock-chaos-shim-"); err != nil {
			shimErr = err
			return
		}
		out := filepath.Join(shimDir, "clockshim.so")
		cmd := exec.Command(gcc, "-O2", "-shared", "-fPIC", "-Wall", "-o", out, src)
		if b, err := cmd.CombinedOutput(); err != nil {
			shimErr = fmt.Errorf("chaos: building the clock shim: %v\n%s", err, b)
			return
		}
		shimPath = out
	})
	return shimPath, shimErr
}

// freePort returns a 127.0.0.1 port nothing listens on right now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func removeShim() {
	if shimDir != "" {
		os.RemoveAll(shimDir)
	}
}

// redisNode is one redis-server process on 127.0.0.1 whose clock the test
// controls. Its lifecycle methods are serialized and safe for concurrent use.
type redisNode struct {
	name string
	port int
	args []string
	env  []string
	dir  string
	ctl  []byte // the shared clock control page: [0] rate ppm, [1] jump ns

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when cmd exited
	paused  bool
	stopped bool
	log     *os.File
}

// startNode starts a redis-server with the clock shim. persist turns on the
// append-only file with an fsync per write, so that a SIGKILL loses nothing.
// The node is stopped at t.Cleanup. It may be called from any goroutine.
func startNode(t testing.TB, name string, persist bool) (*redisNode, error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, errors.New(`chaos: redis-server not found: install it with "apt-get install -y redis-server"`)
	}
	shim, err := clockShim()
	if err != nil {
		return nil, err
	}
	// A persistent node keeps its append-only file in memory (/dev/shm)
	// when it can: it must survive the process, not the machine, and an
	// fsync per write on a disk would slow the suite down.
	parent := ""
	if st, err := os.Stat("/dev/shm"); persist && err == nil && st.IsDir() {
		parent = "/dev/shm"
	}
	dir, err := os.MkdirTemp(parent, "redlock-chaos-")
	if err != nil {
		return nil, err
	}
	n := &redisNode{name: name, dir: dir}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s log tail:\n%s", n, n.logTail(4))
		}
		n.stop()
		os.RemoveAll(dir)
	})
	ctlPath := filepath.Join(dir, "clock.ctl")
	if err := os.WriteFile(ctlPath, make([]byte, 4096), 0o600); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(ctlPath, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	n.ctl, err = syscall.Mmap(int(f.Fd()), 0, 4096, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("chaos: mmap clock control: %w", err)
	}
	n.SetClockRate(rateNormal)
	n.env = append(os.Environ(), "LD_PRELOAD="+shim, "REDLOCK_CLOCK_CTL="+ctlPath)
	if n.log, err = os.Create(filepath.Join(dir, "redis.log")); err != nil {
		return nil, err
	}
	appendonly := "no"
	if persist {
		appendonly = "yes"
	}
	for attempt := 0; ; attempt++ {
		if n.port, err = freePort(); err != nil {
			return nil, err
		}
		n.args = []string{
			"--bind", "127.0.0.1", "--port", fmt.Sprint(n.port),
			"--save", "", "--appendonly", appendonly, "--appendfsync", "always",
			"--dir", dir, "--daemonize", "no", "--protected-mode", "no",
		}
		err = n.Restart()
		if err == nil {
			return n, nil
		}
		if attempt == 3 {
			return nil, fmt.Errorf("chaos: start %s: %w", n, err)
		}
	}
}

// Addr is the node's own address (not its proxy's).
func (n *redisNode) Addr() string { return fmt.Sprintf("127.0.0.1:%d", n.port) }

func (n *redisNode) String() string { return fmt.Sprintf("%s (%s)", n.name, n.Addr()) }

// running reports whether the process is alive. n.mu is held.
func (n *redisNode) running() bool {
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

// Kill sends SIGKILL and waits for the exit; a no-op when the node is down.
func (n *redisNode) Kill() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.killLocked()
}

func (n *redisNode) killLocked() error {
	if !n.running() {
		n.paused = false
		return nil
	}
	n.cmd.Process.Signal(syscall.SIGCONT) // never leave a stopped process behind
	n.paused = false
	if err := n.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-n.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("chaos: %s did not exit within 10s of SIGKILL", n)
	}
}

// Restart kills the node if it runs, starts it again on the same port with
// whatever it persisted (nothing unless started with persist) and waits until
// it answers PING.
func (n *redisNode) Restart() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopped {
		return errors.New("chaos: node stopped for good")
	}
	if err := n.killLocked(); err != nil {
		return err
	}
	cmd := exec.Command("redis-server", n.args...)
	cmd.Env = n.env
	cmd.Stdout, cmd.Stderr = n.log, n.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	n.cmd, n.done = cmd, done
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := redis.Dial("tcp", n.Addr(), redis.DialConnectTimeout(200*time.Millisecond),
			redis.DialReadTimeout(time.Second), redis.DialWriteTimeout(time.Second))
		if err == nil {
			_, err = c.Do("PING")
			c.Close()
			if err == nil {
				return nil
			}
		}
		select {
		case <-done:
			return fmt.Errorf("chaos: %s exited at start; log tail:\n%s", n, n.logTail(5))
		default:
		}
		if time.Now().After(deadline) {
			n.killLocked()
			return fmt.Errorf("chaos: %s did not answer PING within 10s: %v", n, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Pause stops the process with SIGSTOP.
func (n *redisNode) Pause() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.running() {
		return errors.New("chaos: pause: node is down")
	}
	n.paused = true
	return n.cmd.Process.Signal(syscall.SIGSTOP)
}

// Resume continues a paused process with SIGCONT.
func (n *redisNode) Resume() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.running() {
		return nil
	}
	n.paused = false
	return n.cmd.Process.Signal(syscall.SIGCONT)
}

// SetClockRate makes the node's clocks run at ppm parts per million of real
// time from now on (rateNormal: real time).
func (n *redisNode) SetClockRate(ppm int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ctl == nil {
		return
	}
	atomic.StoreInt64((*int64)(unsafe.Pointer(&n.ctl[0])), ppm)
}

// JumpClock moves the node's clocks forward by d, on top of earlier jumps.
func (n *redisNode) JumpClock(d time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ctl == nil {
		return
	}
	atomic.AddInt64((*int64)(unsafe.Pointer(&n.ctl[8])), int64(d))
}

// Do sends one command straight to the node (not through its proxy).
func (n *redisNode) Do(cmd string, args ...interface{}) (interface{}, error) {
	c, err := redis.Dial("tcp", n.Addr(), redis.DialConnectTimeout(time.Second),
		redis.DialReadTimeout(time.Second), redis.DialWriteTimeout(time.Second))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Do(cmd, args...)
}

// stop kills the node for good (resuming it first) and unmaps the control
// page. Idempotent.
func (n *redisNode) stop() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopped {
		return
	}
	n.stopped = true
	n.killLocked()
	if n.ctl != nil {
		syscall.Munmap(n.ctl)
		n.ctl = nil
	}
	if n.log != nil {
		n.log.Close()
	}
}

func (n *redisNode) logTail(lines int) string {
	b, err := os.ReadFile(filepath.Join(n.dir, "redis.log"))
	if err != nil {
		return err.Error()
	}
	s := string(b)
	for i, k := len(s)-1, 0; i >= 0; i-- {
		if s[i] == '\n' {
			if k++; k > lines {
				return s[i+1:]
			}
		}
	}
	return s
}
