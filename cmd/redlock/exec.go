package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/redlock-go/redlock"
)

// Retry delay between two acquisition attempts of exec: short, so that a
// waiting exec takes the lock soon after it is released.
const (
	execRetryMin = 25 * time.Millisecond
	execRetryMax = 100 * time.Millisecond
)

type execOptions struct {
	instances   specList
	ttl         time.Duration
	wait        time.Duration
	grace       time.Duration
	nodeTimeout time.Duration
	foreground  bool
	quiet       bool
}

var execCommand = &command{
	name:     "exec",
	summary:  "run a command while holding a lock (a distributed flock)",
	synopsis: "[flags] RESOURCE [--] CMD [ARGS...]",
	fixed:    1,
	about: `
Acquire RESOURCE on a quorum of the nodes, retrying until --wait has passed,
then run CMD with the lock held. The lock is extended every third of --ttl
while CMD runs and released when CMD exits; redlock exits with CMD's status.
A release that fails is not reported: the keys expire within --ttl.

SIGINT, SIGTERM and SIGHUP are forwarded to CMD. If the lock is lost while CMD
runs (an extension fails, or the lock's validity runs out first), CMD gets
SIGTERM and, --grace later, SIGKILL, and redlock exits 76.

CMD runs in its own process group, and forwarded signals and the lock-loss
kill go to the whole group, so that no child of CMD keeps working without the
lock. Like timeout(1), this keeps CMD off the terminal; --foreground keeps it
in redlock's group so that it can read the terminal (then only CMD itself is
signalled, and SIGINT is not forwarded because Ctrl-C reaches CMD directly).

CMD's environment has REDLOCK_RESOURCE and REDLOCK_TOKEN (the lock's token).

Exit codes: CMD's status; 64 usage error; 69 nodes unavailable (too few
answered); 75 not acquired within --wait (another holder has it); 76 lock lost
while CMD ran; 126 CMD not executable; 127 CMD not found; 128+N CMD died of
signal N, or redlock got signal N while waiting.`,
	examples: `  # Run a nightly job on at most one host at a time, on three Redis masters:
  redlock exec --instances r1:6379,r2:6379,r3:6379 nightly-report -- ./report.sh --full

  # Nodes from the environment; give up at once if someone else holds it (flock -n):
  export REDLOCK_INSTANCES=redis://r1:6379,redis://r2:6379,redis://r3:6379
  redlock exec --wait 0 deploy -- make deploy || echo "exit $? (75: busy)"

  # A 30s lock, wait up to 5 minutes, 10s for CMD to stop if the lock is lost:
  redlock exec --ttl 30s --wait 5m --grace 10s migrate -- ./migrate.sh

  # Sentinel-managed masters (each group is ONE node) and TLS:
  redlock exec --instances 'redis+sentinel://s1:26379,s2:26379/0?master=a,rediss://:pw@r2:6380' job -- true`,
	flags: func(fs *flag.FlagSet) any {
		o := &execOptions{}
		fs.Var(&o.instances, "instances", "comma-separated instance `specs` (repeatable; default $"+envInstances+", else localhost:6379)")
		fs.DurationVar(&o.ttl, "ttl", redlock.DefaultTTL, "lock time to live; the lock is extended every ttl/3 while CMD runs")
		fs.DurationVar(&o.wait, "wait", 30*time.Second, "how long to keep trying to acquire; 0: one attempt (like flock -n); negative: forever")
		fs.DurationVar(&o.grace, "grace", 5*time.Second, "after the lock is lost, time between SIGTERM and SIGKILL to CMD")
		fs.DurationVar(&o.nodeTimeout, "node-timeout", redlock.DefaultNodeTimeout, "bound on each command sent to one node")
		fs.BoolVar(&o.foreground, "foreground", false, "keep CMD in redlock's process group (it can use the terminal; only CMD itself is signalled)")
		fs.BoolVar(&o.quiet, "quiet", false, "print nothing but errors")
		return o
	},
	run: runExec,
}

func runExec(a *app, ctx context.Context, c *command, opts any, args []string) int {
	o := opts.(*execOptions)
	switch {
	case len(args) == 0:
		return a.usageError(c, "missing RESOURCE and CMD")
	case len(args) == 1:
		return a.usageError(c, fmt.Sprintf("missing CMD after RESOURCE %q", args[0]))
	case o.ttl <= 0:
		return a.usageError(c, "--ttl must be positive")
	case o.grace < 0:
		return a.usageError(c, "--grace must not be negative")
	case o.nodeTimeout <= 0:
		return a.usageError(c, "--node-timeout must be positive")
	}
	resource, argv := args[0], args[1:]
	nodes, err := a.resolveNodes(o.instances, "instances")
	if err != nil {
		return a.usageError(c, err.Error())
	}
	attempts := 1 << 30
	if o.wait == 0 {
		attempts = 1
	}
	m, err := redlock.New(instancesOf(nodes),
		redlock.WithRetryCount(attempts),
		redlock.WithRetryDelay(execRetryMin, execRetryMax),
		redlock.WithNodeTimeout(o.nodeTimeout),
		redlock.WithDefaultTTL(o.ttl))
	if err != nil {
		return a.usageError(c, err.Error())
	}
	defer m.Close()
	say := func(format string, args ...any) {
		if !o.quiet {
			fmt.Fprintf(a.stderr, "redlock exec: "+format+"\n", args...)
		}
	}

	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	// Acquire, until --wait has passed or a signal arrives.
	start := time.Now()
	lock, code := a.acquire(ctx, c, m, o, resource, sigs)
	if lock == nil {
		return code
	}
	say("acquired %q on a quorum (%d of %d nodes) in %v; running %s",
		resource, m.Quorum(), len(nodes), time.Since(start).Round(time.Millisecond), strings.Join(argv, " "))

	// Hold extends the lock while CMD runs, cancels hctx (cause
	// ErrLockLost) when it is lost, and releases it when CMD is done.
	_ = m.Hold(context.Background(), lock, func(hctx context.Context) error {
		code = a.runHeld(hctx, o, resource, lock, argv, sigs, say)
		if code != exitLockLost {
			say("releasing %q", resource)
		}
		return nil
	})
	return code
}

// acquire takes the lock, retrying until --wait has passed. It returns the
// lock, or nil and the exit code.
func (a *app) acquire(ctx context.Context, c *command, m *redlock.Manager, o *execOptions, resource string, sigs <-chan os.Signal) (*redlock.Lock, int) {
	var wctx context.Context
	var cancel context.CancelFunc
	if o.wait > 0 {
		wctx, cancel = context.WithTimeout(ctx, o.wait)
	} else {
		wctx, cancel = context.WithCancel(ctx)
	}
	// Lock returns once a quorum agreed, while the other nodes' acquire
	// commands may still be in flight under wctx. Cancelling it at once
	// could abort them and leave the lock on a bare quorum, so it is
	// cancelled only after they had their node timeout.
	defer time.AfterFunc(2*o.nodeTimeout, cancel)
	type result struct {
		lock *redlock.Lock
		err  error
	}
	done := make(chan result, 1)
	go func() {
		l, err := m.Lock(wctx, resource, o.ttl)
		done <- result{l, err}
	}()
	var r result
	select {
	case r = <-done:
	case sig := <-sigs:
		cancel()
		if r = <-done; r.err == nil {
			uctx, ucancel := context.WithTimeout(context.Background(), 2*o.nodeTimeout)
			_ = r.lock.Unlock(uctx)
			ucancel()
		}
		fmt.Fprintf(a.stderr, "redlock exec: interrupted by %v while waiting for %q\n", sig, resource)
		return nil, exitSignalBase + signalNumber(sig)
	}
	if r.err == nil {
		return r.lock, exitOK
	}
	var waited string
	switch {
	case o.wait == 0:
		waited = "in one attempt (--wait 0)"
	case o.wait < 0:
		waited = "" // only node errors or a closed Manager stop an endless wait
	default:
		waited = "within " + o.wait.String()
	}
	switch {
	case errors.Is(r.err, redlock.ErrInvalidArgument):
		return nil, a.usageError(c, r.err.Error())
	case errors.Is(r.err, redlock.ErrLocked):
		fmt.Fprintf(a.stderr, "redlock exec: %q not acquired %s: another holder has it: %v\n", resource, waited, r.err)
		return nil, exitNotAcquired
	case errors.Is(r.err, redlock.ErrUnavailable):
		fmt.Fprintf(a.stderr, "redlock exec: %q not acquired %s: too few nodes available: %v\n", resource, waited, r.err)
		return nil, exitUnavailable
	case errors.Is(r.err, redlock.ErrNotAcquired):
		fmt.Fprintf(a.stderr, "redlock exec: %q not acquired %s: %v\n", resource, waited, r.err)
		return nil, exitNotAcquired
	}
	fmt.Fprintf(a.stderr, "redlock exec: %v\n", r.err)
	return nil, exitSoftware
}

// runHeld runs CMD while hctx holds the lock, forwarding sigs, and stops
// CMD when hctx ends (the lock was lost). It returns the exit code.
func (a *app) runHeld(hctx context.Context, o *execOptions, resource string, lock *redlock.Lock, argv []string,
	sigs <-chan os.Signal, say func(string, ...any)) int {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = a.stdin, a.stdout, a.stderr
	cmd.Env = append(os.Environ(), "REDLOCK_RESOURCE="+resource, "REDLOCK_TOKEN="+lock.Token())
	ownGroup := !o.foreground
	cmd.SysProcAttr = childAttr(ownGroup)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(a.stderr, "redlock exec: %v\n", err)
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			return exitNotFound
		}
		return exitNotExec
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	var lostErr error
	lost := hctx.Done()
	var kill <-chan time.Time
	for {
		select {
		case <-exited:
			if lostErr != nil {
				fmt.Fprintf(a.stderr, "redlock exec: CMD stopped after the lock on %q was lost\n", resource)
				return exitLockLost
			}
			return exitStatus(cmd.ProcessState)
		case sig := <-sigs:
			if o.foreground && sig == syscall.SIGINT {
				continue // the terminal sent it to CMD too
			}
			say("forwarding %v to CMD", sig)
			_ = signalChild(cmd.Process, ownGroup, sig.(syscall.Signal))
		case <-lost:
			lost, lostErr = nil, context.Cause(hctx)
			fmt.Fprintf(a.stderr, "redlock exec: lock on %q lost: %v; sending SIGTERM to CMD\n", resource, lostErr)
			_ = signalChild(cmd.Process, ownGroup, syscall.SIGTERM)
			kill = time.After(o.grace)
		case <-kill:
			fmt.Fprintf(a.stderr, "redlock exec: CMD still running %v after SIGTERM; sending SIGKILL\n", o.grace)
			_ = signalChild(cmd.Process, ownGroup, syscall.SIGKILL)
			kill = nil
		}
	}
}

func signalNumber(sig os.Signal) int {
	if s, ok := sig.(syscall.Signal); ok {
		return int(s)
	}
	return 0
}
