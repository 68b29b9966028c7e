package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// critical is a CMD for exec: it appends "start PID" to $1, sleeps $2
// seconds, then appends "end PID".
func critical(file string, seconds string) []string {
	return []string{"sh", "-c", `echo "start $$" >> "$1"; sleep "$2"; echo "end $$" >> "$1"`, "sh", file, seconds}
}

// checkNoOverlap checks that the start/end lines in file pair up one
// command at a time, and returns how many commands ran.
func checkNoOverlap(t *testing.T, file string) int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var events []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l != "" {
			events = append(events, l)
		}
	}
	if len(events)%2 != 0 {
		t.Fatalf("unpaired start/end lines in %s:\n%s", file, b)
	}
	for i := 0; i < len(events); i += 2 {
		s, e := strings.Fields(events[i]), strings.Fields(events[i+1])
		if len(s) != 2 || len(e) != 2 || s[0] != "start" || e[0] != "end" || s[1] != e[1] {
			t.Fatalf("commands overlapped: line %d is %q and line %d is %q, want start PID then end PID of the same command\n%s",
				i+1, events[i], i+2, events[i+1], b)
		}
	}
	return len(events) / 2
}

func TestExecSerializesConcurrentCommandsWithLongWait(t *testing.T) {
	servers := startRedis(t, 3)
	file := filepath.Join(t.TempDir(), "log")
	args := append([]string{"exec", "--instances", instancesFlag(servers), "--ttl", "2s", "--wait", "20s", "job", "--"}, critical(file, "0.8")...)
	a := startCLI(t, nil, args...)
	b := startCLI(t, nil, args...)
	a.wait(t, 30*time.Second).expectCode(t, 0, "the first CMD exits 0")
	b.wait(t, 30*time.Second).expectCode(t, 0, "the second CMD waits for the lock, then exits 0")
	if n := checkNoOverlap(t, file); n != 2 {
		t.Fatalf("%d commands ran, want 2", n)
	}
	if !strings.Contains(a.stderr.String()+b.stderr.String(), "acquired") {
		t.Fatalf("no progress line on stderr:\n%s\n%s", &a.stderr, &b.stderr)
	}
}

func TestExecGivesUpWithNotAcquiredCodeAfterShortWait(t *testing.T) {
	servers := startRedis(t, 3)
	file := filepath.Join(t.TempDir(), "log")
	inst := instancesFlag(servers)
	holder := startCLI(t, nil, append([]string{"exec", "--instances", inst, "--ttl", "2s", "job", "--"}, critical(file, "3")...)...)
	waitForFile(t, file, "start", 10*time.Second)

	short := runCLI(t, nil, append([]string{"exec", "--instances", inst, "--wait", "300ms", "job", "--"}, critical(file, "0")...)...)
	short.expectCode(t, exitNotAcquired, "the lock is held by the first exec")
	if short.elapsed < 300*time.Millisecond || short.elapsed > 2500*time.Millisecond {
		t.Fatalf("exec --wait 300ms gave up after %v, want about 300ms", short.elapsed)
	}
	if !strings.Contains(short.stderr.String(), "not acquired within 300ms") {
		t.Fatalf("stderr does not say why:\n%s", &short.stderr)
	}

	once := runCLI(t, nil, append([]string{"exec", "--instances", inst, "--wait", "0", "job", "--"}, critical(file, "0")...)...)
	once.expectCode(t, exitNotAcquired, "--wait 0 makes one attempt")

	holder.wait(t, 10*time.Second).expectCode(t, 0, "the holder's CMD exits 0")
	if n := checkNoOverlap(t, file); n != 1 {
		t.Fatalf("%d commands ran, want only the holder's", n)
	}
}

func TestExecKillsCommandGroupAndExits76WhenLockIsLost(t *testing.T) {
	servers := startRedis(t, 3)
	dir := t.TempDir()
	file, pidFile := filepath.Join(dir, "log"), filepath.Join(dir, "sleep.pid")
	// sh starts sleep in the background and waits for it: killing sh alone
	// would leave sleep running, killing the process group does not.
	script := `echo "start $$" >> "$1"; sleep 30 & echo $! > "$2"; wait; echo "end $$" >> "$1"`
	run := startCLI(t, nil, "exec", "--instances", instancesFlag(servers), "--ttl", "900ms", "--grace", "1s",
		"lost-job", "--", "sh", "-c", script, "sh", file, pidFile)
	waitForFile(t, file, "start", 10*time.Second)
	pidText := waitForFile(t, pidFile, "\n", 5*time.Second)
	sleepPID, err := strconv.Atoi(strings.TrimSpace(pidText))
	if err != nil {
		t.Fatalf("pid file: %q", pidText)
	}

	deleted := time.Now()
	for _, s := range servers {
		s.do(t, "DEL", "lost-job")
	}
	run.wait(t, 10*time.Second).expectCode(t, exitLockLost, "the key was deleted behind exec's back")
	if took := time.Since(deleted); took > 3*time.Second {
		t.Fatalf("exec noticed the loss after %v; with --ttl 900ms it extends every 300ms", took)
	}
	if !strings.Contains(run.stderr.String(), "lost") {
		t.Fatalf("stderr does not say the lock was lost:\n%s", &run.stderr)
	}
	time.Sleep(200 * time.Millisecond)
	if b, _ := os.ReadFile(file); strings.Contains(string(b), "end") {
		t.Fatalf("CMD went on to write its end line after the lock was lost:\n%s", b)
	}
	if alive(sleepPID) {
		_ = syscall.Kill(sleepPID, syscall.SIGKILL)
		t.Fatalf("CMD's child (sleep, pid %d) survived the lock loss: the process group was not killed", sleepPID)
	}
}

// alive reports whether pid runs and is not a zombie (an orphan's zombie
// waits for init to reap it, which may take a while in a container).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return !os.IsNotExist(err)
	}
	// The state follows the command name, which is in parentheses.
	i := strings.LastIndexByte(string(stat), ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}

func TestExecPassesThroughExitStatusSignalsAndMissingCommands(t *testing.T) {
	servers := startRedis(t, 3)
	inst := instancesFlag(servers)
	exe := func(cmd ...string) *cliRun {
		return runCLI(t, nil, append([]string{"exec", "--quiet", "--instances", inst, "--wait", "5s", "r"}, cmd...)...)
	}
	exe("sh", "-c", "exit 3").expectCode(t, 3, "CMD's exit status is passed through")
	exe("--", "sh", "-c", `kill -TERM $$`).expectCode(t, 128+int(syscall.SIGTERM), "CMD killed by SIGTERM")
	exe("/nonexistent/redlock-test-cmd").expectCode(t, exitNotFound, "CMD does not exist")
	exe("redlock-test-no-such-command-on-path").expectCode(t, exitNotFound, "CMD is not on PATH")
	notExec := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	exe(notExec).expectCode(t, exitNotExec, "CMD is not executable")
	// CMD's own flags stay CMD's, after RESOURCE with or without "--".
	out := exe("sh", "-c", `echo "$REDLOCK_RESOURCE" "${#REDLOCK_TOKEN}"`, "-x")
	out.expectCode(t, 0, "CMD with flags of its own")
	if got := strings.TrimSpace(out.stdout.String()); got != "r 22" {
		t.Fatalf("CMD saw REDLOCK_RESOURCE and len(REDLOCK_TOKEN) = %q, want \"r 22\"", got)
	}
	// The lock was released each time: status says free.
	runCLI(t, nil, "status", "--instances", inst, "r").expectCode(t, exitFalse, "every exec released the lock")
}

func TestExecForwardsSIGTERMAndReleases(t *testing.T) {
	servers := startRedis(t, 3)
	inst := instancesFlag(servers)
	file := filepath.Join(t.TempDir(), "log")
	script := `trap 'echo "got TERM" >> "$1"; exit 7' TERM; echo ready >> "$1"; sleep 20 & wait`
	run := startCLI(t, nil, "exec", "--instances", inst, "sig", "--", "sh", "-c", script, "sh", file)
	waitForFile(t, file, "ready", 10*time.Second)
	if err := run.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	run.wait(t, 10*time.Second).expectCode(t, 7, "CMD's TERM trap exits 7")
	waitForFile(t, file, "got TERM", time.Second)
	runCLI(t, nil, "status", "--instances", inst, "sig").expectCode(t, exitFalse, "exec released the lock after CMD exited")
}

func TestExecReportsUnavailableNodes(t *testing.T) {
	run := runCLI(t, nil, "exec", "--instances", deadAddrs(t, 3), "--wait", "300ms", "r", "--", "true")
	run.expectCode(t, exitUnavailable, "no node is listening")
	if !strings.Contains(run.stderr.String(), "too few nodes") {
		t.Fatalf("stderr does not say the nodes are unavailable:\n%s", &run.stderr)
	}
}

func TestExecReadsInstancesFromEnvironment(t *testing.T) {
	servers := startRedis(t, 3)
	env := []string{envInstances + "=" + strings.ReplaceAll(instancesFlag(servers), ",", " ")}
	runCLI(t, env, "exec", "r", "--", "true").expectCode(t, 0, "nodes from $REDLOCK_INSTANCES")
	// --instances wins over the environment.
	runCLI(t, env, "exec", "--instances", deadAddrs(t, 1), "--wait", "200ms", "r", "--", "true").
		expectCode(t, exitUnavailable, "--instances wins over the environment")
}

// TestExecInterruptedWhileWaiting: a second exec waits for a held lock; a
// SIGINT while it waits makes it exit 130 at once, without running CMD and
// without touching the holder's lock.
func TestExecInterruptedWhileWaiting(t *testing.T) {
	servers := startRedis(t, 3)
	inst := instancesFlag(servers)
	file := filepath.Join(t.TempDir(), "log")
	holder := startCLI(t, nil, append([]string{"exec", "--instances", inst, "--ttl", "2s", "job", "--"}, critical(file, "4")...)...)
	waitForFile(t, file, "start", 10*time.Second)

	waiter := startCLI(t, nil, append([]string{"exec", "--instances", inst, "--wait", "30s", "job", "--"}, critical(file, "0")...)...)
	time.Sleep(500 * time.Millisecond) // it is now waiting for the lock
	select {
	case <-waiter.done:
		t.Fatalf("the waiter exited while the lock was held:\nstderr:\n%s", &waiter.stderr)
	default:
	}
	sent := time.Now()
	if err := waiter.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	waiter.wait(t, 10*time.Second).expectCode(t, exitSignalBase+int(syscall.SIGINT), "interrupted while waiting")
	if d := time.Since(sent); d > 2*time.Second {
		t.Fatalf("the waiter took %v to exit after SIGINT, want well under 2s (not --wait 30s)", d)
	}
	if !strings.Contains(waiter.stderr.String(), "interrupted by interrupt while waiting") {
		t.Fatalf("stderr does not say it was interrupted while waiting:\n%s", &waiter.stderr)
	}
	// The holder still holds the lock, and still runs alone.
	runCLI(t, nil, "status", "--instances", inst, "job").expectCode(t, exitOK, "the holder's lock survives the waiter's interrupt")
	holder.wait(t, 15*time.Second).expectCode(t, 0, "the holder's CMD exits 0")
	if n := checkNoOverlap(t, file); n != 1 {
		t.Fatalf("%d commands ran, want only the holder's", n)
	}
}

// TestExecProcessGroups: by default CMD runs in a process group of its own
// (so that a lost lock kills all of it); with --foreground it stays in
// redlock's group, where it can use the terminal, and signals still reach it.
func TestExecProcessGroups(t *testing.T) {
	servers := startRedis(t, 3)
	inst := instancesFlag(servers)
	// The fifth field of /proc/PID/stat is the process group ("sh" has no
	// space in its name, so fields split cleanly).
	pgids := `echo "$(cut -d' ' -f5 /proc/$$/stat) $(cut -d' ' -f5 /proc/$PPID/stat) $$"`
	groups := func(run *cliRun) (cmdGroup, parentGroup, cmdPID string) {
		t.Helper()
		f := strings.Fields(run.stdout.String())
		if len(f) != 3 {
			t.Fatalf("CMD printed %q, want three numbers", run.stdout.String())
		}
		return f[0], f[1], f[2]
	}

	own := runCLI(t, nil, "exec", "--instances", inst, "pg", "--", "sh", "-c", pgids)
	own.expectCode(t, 0, "default process group")
	if g, pg, pid := groups(own); g != pid || g == pg {
		t.Fatalf("default: CMD's group %s, redlock's %s, CMD's pid %s: want CMD leading a group of its own", g, pg, pid)
	}

	fg := runCLI(t, nil, "exec", "--foreground", "--instances", inst, "pg", "--", "sh", "-c", pgids)
	fg.expectCode(t, 0, "--foreground")
	if g, pg, _ := groups(fg); g != pg {
		t.Fatalf("--foreground: CMD's group %s, redlock's %s: want the same", g, pg)
	}

	// In the foreground, SIGTERM is still forwarded to CMD.
	file := filepath.Join(t.TempDir(), "log")
	// Only CMD itself is signalled in the foreground: its trap stops its
	// own child.
	script := `trap 'kill $!; echo "got TERM" >> "$1"; exit 9' TERM; echo ready >> "$1"; sleep 20 & wait`
	run := startCLI(t, nil, "exec", "--foreground", "--instances", inst, "pg", "--", "sh", "-c", script, "sh", file)
	waitForFile(t, file, "ready", 10*time.Second)
	if err := run.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	run.wait(t, 10*time.Second).expectCode(t, 9, "CMD's TERM trap exits 9")
	runCLI(t, nil, "status", "--instances", inst, "pg").expectCode(t, exitFalse, "exec released the lock")
}
