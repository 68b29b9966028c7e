// Package harness runs real Redis servers for redlock's integration, fault
// and acceptance tests.
//
// Start and StartN launch redis-server instances, each with persistence off
// (`--save "" --appendonly no`), and stop them at t.Cleanup even when the
// test fails. A Server can be killed (kill -9), restarted at the same
// address with empty data, paused and resumed. StartSentinelGroup runs a
// master, its replicas and a set of redis-sentinel instances that monitor
// it.
//
// Two backends run the servers; REDLOCK_TEST_BACKEND picks one for the
// whole test binary:
//
//   - "process" (the default): local redis-server and redis-sentinel
//     processes on free 127.0.0.1 ports, in temp dirs. Kill is SIGKILL,
//     Pause and Resume are SIGSTOP and SIGCONT.
//   - "docker": every server is a container of an image the harness builds
//     itself, FROM scratch, out of the host's redis-server and
//     redis-sentinel and the shared libraries ldd lists for them (no image
//     is ever pulled), through ory/dockertest. The containers live on a
//     user-defined bridge network that the harness creates for the test
//     binary, each at its own address (port 6379, Sentinels 26379; nothing
//     is published on the host), so a group of nodes is a real multi-host
//     topology. Kill, Restart, Pause and Resume are docker kill, start,
//     pause and unpause; Partition, Isolate and Heal disconnect a node from
//     the network and connect it again. Every container and network carries
//     the label redlock-harness and is removed at the end: at t.Cleanup, in
//     Main, on SIGINT or SIGTERM, and, when the binary dies without any of
//     these (a panic, a -timeout, SIGKILL), by a reaper process it started;
//     leftovers of binaries that are gone are removed when the next one
//     starts.
//
// Every address the harness hands out (a Server's, a master named by the
// Sentinels) is checked before use: loopback for processes, inside the
// harness's own networks for containers. Nothing else is ever dialled.
//
// Nothing stands in for Redis: when redis-server (or redis-sentinel) is not
// on PATH, or REDLOCK_TEST_BACKEND=docker and the Docker engine cannot be
// reached, the harness fails the test with what to do; it never skips.
package harness

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// BackendEnv is the environment variable that selects how servers run:
// BackendProcess (the default when it is empty) or BackendDocker.
const BackendEnv = "REDLOCK_TEST_BACKEND"

// The backends, as BackendEnv and Options.Backend name them.
const (
	BackendProcess = "process" // local processes on 127.0.0.1
	BackendDocker  = "docker"  // containers on a network of their own
)

// SelectedBackend returns the backend BackendEnv selects: BackendProcess or
// BackendDocker ("" for a value that names neither; Start then fails).
func SelectedBackend() string {
	switch v := os.Getenv(BackendEnv); v {
	case "", BackendProcess, "processes":
		return BackendProcess
	case BackendDocker:
		return BackendDocker
	default:
		return ""
	}
}

// installHint is the end of every "binary not found" failure.
const installHint = `install it with "apt-get install -y redis-server redis-sentinel" (Debian/Ubuntu) or "brew install redis" (macOS)`

// startTimeout bounds the wait for a started server to answer PING.
const startTimeout = 10 * time.Second

// Options configures the servers started by Start and StartN.
type Options struct {
	Password string     // requirepass (and masterauth); "" for no auth
	Args     []string   // extra redis-server arguments, e.g. {"--maxmemory", "10mb"}
	TLS      *TLSConfig // non-nil: listen on a TLS port only (--port 0); see NewTLSConfig

	// Env is added to the environment of every server process (and of
	// its restarts), e.g. {"LD_PRELOAD=/path/shim.so"}. The process
	// backend only: the docker backend refuses it (set Backend to
	// BackendProcess for such servers).
	Env []string
	// TempDir is where each server's working directory is created ("":
	// the system's default). Persistence turned on through Args (e.g.
	// "--appendonly", "yes") keeps its files there across Restart. The
	// docker backend keeps a server's files inside its container (they
	// survive Restart too) and only uses TempDir for its own scratch files.
	TempDir string
	// Backend overrides BackendEnv for these servers: "" (the default)
	// follows it; BackendProcess or BackendDocker force one.
	Backend string
}

// lookupBinary finds a Redis executable on PATH. Its error says how to install
// Redis, because a missing binary must fail tests loudly, never skip them.
func lookupBinary(name string) (string, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s not found: %s", name, installHint)
	}
	return path, nil
}

// mustLookupBinary is lookupBinary that fails the test.
func mustLookupBinary(t testing.TB, name string) string {
	t.Helper()
	path, err := lookupBinary(name)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

var (
	portsMu sync.Mutex
	ports   = map[int]bool{} // every port handed out by this test binary
)

// freePort returns a 127.0.0.1 TCP port that nothing listens on right now and
// that this process has not handed out before.
func freePort() (int, error) {
	for i := 0; i < 100; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("harness: no free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		portsMu.Lock()
		used := ports[port]
		ports[port] = true
		portsMu.Unlock()
		if !used {
			return port, nil
		}
	}
	return 0, fmt.Errorf("harness: no free port after 100 tries")
}

// FreePort returns a free TCP port on 127.0.0.1, for a listener the test
// starts itself. Another process may still take it before the test binds it.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// WaitFor polls cond every 10ms until it returns true, and fails the test
// with the formatted message when timeout passes first.
func WaitFor(t testing.TB, timeout time.Duration, cond func() bool, msgf string, args ...interface{}) {
	t.Helper()
	if !poll(timeout, 10*time.Millisecond, cond) {
		t.Fatalf("%s (waited %s)", fmt.Sprintf(msgf, args...), timeout)
	}
}

// poll calls cond every interval until it returns true (true) or timeout
// passes (false). cond runs at least once.
func poll(timeout, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
}

// tailString returns the last n lines of s.
func tailString(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
