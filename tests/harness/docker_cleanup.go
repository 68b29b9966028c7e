package harness

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	dc "github.com/ory/dockertest/v3/docker"
)

// What the docker backend creates is removed however the test binary ends:
//
//   - each server at t.Cleanup (Server.Stop), even when the test fails;
//   - everything else (the network, side networks, containers a test left)
//     in Main, after the tests;
//   - on SIGINT or SIGTERM, by a handler that removes it all and then dies
//     of the signal;
//   - when the binary dies without running any of these (a panic, go
//     test's -timeout, SIGKILL), by the reaper: a copy of the test binary,
//     started in its own process group, that waits for its parent's end of
//     a pipe to close and then removes whatever still carries the parent's
//     label;
//   - and at the start of every test binary that uses the backend, which
//     removes what binaries that are gone left behind (a reaper killed
//     with them, a reboot).
//
// The value of the redlock-harness label names the binary that owns a
// container or network: its pid and its start time (from /proc), so that a
// pid reused later is never taken for the owner.

// reaperEnv, set in the environment of a test binary, makes it the reaper
// of the owner it names instead of running tests.
const reaperEnv = "REDLOCK_HARNESS_REAPER"

func init() {
	if owner := os.Getenv(reaperEnv); owner != "" {
		os.Exit(runReaper(owner))
	}
}

// runReaper waits until stdin (its parent's pipe) is closed, then removes
// everything owner still holds.
func runReaper(owner string) int {
	signal.Ignore(syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT) // only the parent's end counts
	io.Copy(io.Discard, os.Stdin)
	b, err := connectDocker()
	if err != nil {
		return 1
	}
	b.removeOwned(func(o string) bool { return o == owner })
	return 0
}

var reaper struct {
	mu  sync.Mutex
	cmd *exec.Cmd
	w   *os.File // the parent's end of the pipe; closing it (or dying) wakes the reaper
}

// startReaper starts the reaper of owner.
func startReaper(owner string) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("harness: the reaper needs the test binary's path: %w", err)
	}
	r, w, err := os.Pipe() // close-on-exec: no other child inherits w
	if err != nil {
		return fmt.Errorf("harness: reaper pipe: %w", err)
	}
	defer r.Close()
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), reaperEnv+"="+owner)
	cmd.Stdin = r // stdout and stderr: /dev/null, so that go test does not wait for them
	cmd.SysProcAttr = reaperProcAttr()
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("harness: start the reaper: %w", err)
	}
	reaper.mu.Lock()
	reaper.cmd, reaper.w = cmd, w
	reaper.mu.Unlock()
	return nil
}

// stopReaper closes the pipe and waits for the reaper to exit (it finds
// nothing left to remove).
func stopReaper() {
	reaper.mu.Lock()
	defer reaper.mu.Unlock()
	if reaper.cmd == nil {
		return
	}
	reaper.w.Close()
	reaper.cmd.Wait()
	reaper.cmd, reaper.w = nil, nil
}

var signals struct {
	mu   sync.Mutex
	ch   chan os.Signal
	done chan struct{} // closed by stopSignals
	gone chan struct{} // closed when the watcher returned
}

// watchSignals removes everything b created on SIGINT or SIGTERM, then
// lets the signal kill the binary.
func watchSignals(b *dockerBackend) {
	signals.mu.Lock()
	defer signals.mu.Unlock()
	ch, done, gone := make(chan os.Signal, 1), make(chan struct{}), make(chan struct{})
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	signals.ch, signals.done, signals.gone = ch, done, gone
	go func() {
		defer close(gone)
		select {
		case <-done:
		case sig := <-ch:
			fmt.Fprintf(os.Stderr, "\nharness: %v: removing the docker backend's containers and networks\n", sig)
			b.teardown()
			stopReaper()
			signal.Reset(sig)
			if s, ok := sig.(syscall.Signal); ok {
				syscall.Kill(os.Getpid(), s)
				time.Sleep(5 * time.Second) // the signal is on its way
			}
			os.Exit(2)
		}
	}()
}

// stopSignals stops the watcher.
func stopSignals() {
	signals.mu.Lock()
	defer signals.mu.Unlock()
	if signals.ch == nil {
		return
	}
	signal.Stop(signals.ch)
	close(signals.done)
	<-signals.gone
	signals.ch = nil
}

// teardown removes every container and network of this binary. Nothing
// new is created afterwards.
func (b *dockerBackend) teardown() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	b.sides = map[string]dockerNetwork{}
	b.mu.Unlock()
	b.removeOwned(func(o string) bool { return o == b.owner })
}

// sweep removes what test binaries that are gone left behind.
func (b *dockerBackend) sweep() {
	c, n := b.removeOwned(func(o string) bool { return o != b.owner && !ownerAlive(o) })
	if c+n > 0 {
		fmt.Fprintf(os.Stderr, "harness: removed %d containers and %d networks left behind by test binaries that are gone\n", c, n)
	}
}

// removeOwned removes the containers, then the networks, carrying
// dockerLabel with an owner that match selects, and returns how many it
// removed.
func (b *dockerBackend) removeOwned(match func(owner string) bool) (containers, networks int) {
	list, err := b.client.ListContainers(dc.ListContainersOptions{All: true, Filters: map[string][]string{"label": {dockerLabel}}})
	if err == nil {
		for _, c := range list {
			if match(c.Labels[dockerLabel]) && b.client.RemoveContainer(dc.RemoveContainerOptions{ID: c.ID, Force: true, RemoveVolumes: true}) == nil {
				containers++
			}
		}
	}
	nets, err := b.client.FilteredListNetworks(dc.NetworkFilterOpts{"label": {dockerLabel: true}})
	if err == nil {
		for _, nw := range nets {
			if match(nw.Labels[dockerLabel]) && b.client.RemoveNetwork(nw.ID) == nil {
				networks++
			}
		}
	}
	return containers, networks
}

// ownerID names the process pid: "PID-STARTTIME" (STARTTIME from
// /proc/PID/stat; empty where there is no /proc).
func ownerID(pid int) string { return fmt.Sprintf("%d-%s", pid, procStart(pid)) }

// procStart returns the start time of process pid in clock ticks since
// boot, or "" when it cannot be read.
func procStart(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // the command name may hold spaces and parentheses
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:]) // from field 3 (state); starttime is field 22
	if len(f) < 20 {
		return ""
	}
	return f[19]
}

// ownerAlive reports whether the binary that owner names still runs. An
// owner that names nothing (an older harness's label) is dead.
func ownerAlive(owner string) bool {
	pidText, start, ok := strings.Cut(owner, "-")
	pid, err := strconv.Atoi(pidText)
	if !ok || err != nil || pid <= 0 {
		return false
	}
	if start == "" { // made where there is no /proc: ask the kernel
		err := syscall.Kill(pid, 0)
		return err == nil || errors.Is(err, syscall.EPERM)
	}
	return procStart(pid) == start
}

// Main wraps a test package's *testing.M so that the harness can set up
// and tear down what lives longer than one test:
//
//	func TestMain(m *testing.M) { os.Exit(harness.Main(m).Run()) }
//
// or goleak.VerifyTestMain(harness.Main(m)). With the docker backend, Run
// builds the image and creates the network before the first test (a
// failure is reported, and fails every test that starts a server), and
// removes every container and network of the binary after the last one. A
// package without it still has its containers removed, by the reaper, when
// the binary exits.
func Main(m interface{ Run() int }) interface{ Run() int } { return mainRunner{m} }

type mainRunner struct{ m interface{ Run() int } }

func (r mainRunner) Run() int {
	if SelectedBackend() == BackendDocker {
		if _, err := newDockerBackend(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	code := r.m.Run()
	shutdownDocker()
	return code
}

// shutdownDocker tears the docker backend down, if it was set up.
func shutdownDocker() {
	dockerOnce.Do(func() {
		dockerErr = errors.New("harness: the docker backend was torn down (the test binary is ending)")
	})
	if dockerShared == nil {
		return
	}
	stopSignals()
	dockerShared.teardown()
	stopReaper()
}
