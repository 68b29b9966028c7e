package chaos

import (
	"errors"
	"fmt"
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

	"github.com/redlock-go/redlock/tests/harness"
)

// The chaos nodes are harness servers (real redis-server processes on
// 127.0.0.1, or containers with REDLOCK_TEST_BACKEND=docker, killed at the
// end and when the test binary dies). The processes are started with an
// environment: LD_PRELOAD of the clock shim (testdata/clockshim.c) and the
// path of the node's clock control file, which the test writes to.

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

func removeShim() {
	if shimDir != "" {
		os.RemoveAll(shimDir)
	}
}

// redisNode is one redis-server process on 127.0.0.1 whose clock the test
// controls: Kill, Restart, Pause and Resume come from the harness (and are
// safe for concurrent use), the clock controls from the shared page.
type redisNode struct {
	*harness.Server
	name string

	mu  sync.Mutex // protects ctl
	ctl []byte     // the shared clock control page: [0] rate ppm, [1] jump ns
}

// startNode starts a redis-server. With clock (and always on the process
// backend) it is a local process with the clock shim, whose clocks
// SetClockRate and JumpClock control; otherwise, with
// REDLOCK_TEST_BACKEND=docker, a container without one. persist turns on
// the append-only file with an fsync per write, so that a SIGKILL (and
// Restart) loses nothing. The node is stopped at t.Cleanup.
func startNode(t testing.TB, name string, persist, clock bool) *redisNode {
	t.Helper()
	var opts harness.Options
	if persist {
		opts.Args = []string{"--appendonly", "yes", "--appendfsync", "always"}
	}
	n := &redisNode{name: name}
	if !clock && onDocker() {
		n.Server = harness.Start(t, opts)
		return n
	}
	shim, err := clockShim()
	if err != nil {
		t.Fatal(err)
	}
	ctlDir := t.TempDir()
	ctlPath := filepath.Join(ctlDir, "clock.ctl")
	if err := os.WriteFile(ctlPath, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(ctlPath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctl, err := syscall.Mmap(int(f.Fd()), 0, 4096, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	f.Close()
	if err != nil {
		t.Fatalf("chaos: mmap clock control: %v", err)
	}
	n.ctl = ctl
	n.SetClockRate(rateNormal)
	t.Cleanup(func() { // after the server's own cleanup (LIFO): it stopped reading the page
		n.mu.Lock()
		defer n.mu.Unlock()
		syscall.Munmap(n.ctl)
		n.ctl = nil
	})
	opts.Env = []string{"LD_PRELOAD=" + shim, "REDLOCK_CLOCK_CTL=" + ctlPath}
	opts.Backend = harness.BackendProcess // an LD_PRELOAD of a host library: a local process
	if persist {
		// The append-only file must survive the process, not the
		// machine: keep it in memory when possible, since an fsync per
		// write on a disk would slow the suite down.
		if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
			opts.TempDir = "/dev/shm"
		}
	}
	n.Server = harness.Start(t, opts)
	return n
}

// hasClock reports whether the test controls the node's clocks.
func (n *redisNode) hasClock() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ctl != nil
}

func (n *redisNode) String() string { return fmt.Sprintf("%s (%s)", n.name, n.Addr()) }

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

// Do sends one command straight to the node (not through its proxy); it
// may be called from any goroutine.
func (n *redisNode) Do(cmd string, args ...interface{}) (interface{}, error) {
	c, err := n.Dial(redis.DialConnectTimeout(time.Second), redis.DialReadTimeout(time.Second), redis.DialWriteTimeout(time.Second))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Do(cmd, args...)
}
