// Command redlock is the command-line side of the redlock library: a
// distributed flock(1) over N independent Redis masters, a way to audit and
// preload the Lua scripts, a lock inspector, and a self-contained demo.
//
// Usage:
//
//	redlock exec    [flags] RESOURCE [--] CMD [ARGS...]
//	redlock status  [flags] RESOURCE
//	redlock scripts [flags]
//	redlock demo    [flags]
//	redlock help    [SUBCOMMAND]
//
// exec acquires RESOURCE with the Redlock algorithm (retrying until --wait
// has passed), runs CMD while the lock is held and extended every third of
// --ttl, forwards SIGINT, SIGTERM and SIGHUP to CMD, and releases the lock
// when CMD exits. If the lock is lost while CMD runs (an extension fails or
// the lock's validity runs out), CMD gets SIGTERM and, after --grace,
// SIGKILL. CMD runs in its own process group (unless stdin is a terminal),
// and these signals go to the whole group, so no child of CMD keeps working
// without the lock. CMD sees REDLOCK_RESOURCE and REDLOCK_TOKEN.
//
// status asks every node who holds RESOURCE (token prefix and PTTL) and
// prints whether a quorum holds it. scripts prints every Lua script the
// library runs (name, file, SHA1, KEYS, ARGV, replies, source) and, with
// --load, loads them on nodes and compares the digests. demo starts five
// in-process Redis-compatible servers (miniredis), or real redis-server
// processes with --real, runs workers contending for one resource, takes a
// node down midway and brings it back, and prints what happened.
//
// Nodes are given with --instances, a comma-separated list of instance specs
// as accepted by redlock.ParseInstance (host:port, redis://, rediss://,
// unix://, redis+sentinel://h1:26379,h2:26379/0?master=NAME); the flag can
// be repeated. Without it, the REDLOCK_INSTANCES environment variable is
// used, and without that, localhost:6379 (as aioredlock). Passwords are
// never printed.
//
// Flags may come before or after RESOURCE. For exec, everything after `--`
// (or after the first argument that follows RESOURCE) is CMD.
//
// Exit codes, flock(1)-style, from sysexits.h where one fits:
//
//	0      exec: CMD exited 0; status: RESOURCE is locked; otherwise success
//	1      status: RESOURCE is free; scripts --load: a node returned a
//	       different digest; demo: overlapping holders were seen
//	1-255  exec: CMD's own exit status, passed through
//	64     usage error: unknown subcommand or flag, missing RESOURCE or CMD,
//	       bad instance spec (EX_USAGE)
//	69     nodes unavailable: too few nodes answered to acquire, or to tell
//	       whether RESOURCE is locked (EX_UNAVAILABLE)
//	70     internal error (EX_SOFTWARE)
//	75     exec: not acquired within --wait; another holder has it
//	       (EX_TEMPFAIL)
//	76     exec: the lock was lost while CMD ran; CMD was terminated
//	126    exec: CMD found but not executable
//	127    exec: CMD not found
//	128+N  exec: CMD died of signal N, or redlock got signal N while
//	       waiting for the lock (130 for SIGINT, 143 for SIGTERM)
//
// As with flock(1), a CMD that itself exits 64, 69, 75 or 76 cannot be told
// apart from redlock's own codes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// Exit codes; see the package documentation.
const (
	exitOK          = 0
	exitFalse       = 1
	exitUsage       = 64
	exitUnavailable = 69
	exitSoftware    = 70
	exitNotAcquired = 75
	exitLockLost    = 76
	exitNotExec     = 126
	exitNotFound    = 127
	exitSignalBase  = 128
)

// envInstances names the environment variable read when --instances is not
// given.
const envInstances = "REDLOCK_INSTANCES"

// app carries the process's streams and environment, so that subcommands
// never touch os.Stdout and friends directly.
type app struct {
	stdin          *os.File
	stdout, stderr io.Writer
	getenv         func(string) string
}

// command is one subcommand.
type command struct {
	name     string
	summary  string
	synopsis string // after "redlock NAME "
	about    string // paragraphs printed before the flags
	examples string // printed after the flags
	fixed    int    // positional arguments before a trailing command line (exec's CMD); -1: none
	flags    func(fs *flag.FlagSet) any
	run      func(a *app, ctx context.Context, c *command, opts any, args []string) int
}

// commands lists the subcommands, in the order help shows them.
var commands = []*command{execCommand, statusCommand, scriptsCommand, demoCommand}

func main() {
	a := &app{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
	os.Exit(a.main(context.Background(), os.Args[1:]))
}

// main dispatches to a subcommand and returns the exit code.
func (a *app) main(ctx context.Context, args []string) int {
	if len(args) == 0 {
		a.topUsage(a.stderr)
		return exitUsage
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(rest) == 0 {
			a.topUsage(a.stdout)
			return exitOK
		}
		c := lookup(rest[0])
		if c == nil {
			fmt.Fprintf(a.stderr, "redlock help: unknown subcommand %q\n", rest[0])
			a.topUsage(a.stderr)
			return exitUsage
		}
		c.usage(a.stdout)
		return exitOK
	}
	c := lookup(name)
	if c == nil {
		fmt.Fprintf(a.stderr, "redlock: unknown subcommand %q\n", name)
		a.topUsage(a.stderr)
		return exitUsage
	}
	fs := c.newFlagSet()
	opts := c.flags(fs)
	pos, err := parseFlags(fs, rest, c.fixed)
	if errors.Is(err, flag.ErrHelp) {
		c.usage(a.stdout)
		return exitOK
	}
	if err != nil {
		return a.usageError(c, err.Error())
	}
	return c.run(a, ctx, c, opts, pos)
}

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

func (c *command) newFlagSet() *flag.FlagSet {
	fs := flag.NewFlagSet("redlock "+c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors and help are printed by app.main
	fs.Usage = func() {}
	return fs
}

// usageError reports a usage error for subcommand c and returns exitUsage.
func (a *app) usageError(c *command, msg string) int {
	fmt.Fprintf(a.stderr, "redlock %s: %s\n", c.name, msg)
	fmt.Fprintf(a.stderr, "usage: redlock %s %s\nRun 'redlock %s --help' for details and examples.\n", c.name, c.synopsis, c.name)
	return exitUsage
}

func (a *app) topUsage(w io.Writer) {
	fmt.Fprint(w, `redlock: distributed locks over N independent Redis masters (Redlock).

Usage:
`)
	for _, c := range commands {
		fmt.Fprintf(w, "  redlock %-8s %s\n", c.name, c.synopsis)
	}
	fmt.Fprint(w, "\nSubcommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, `
Nodes come from --instances (comma-separated specs: host:port, redis://,
rediss://, unix://, redis+sentinel://h1:26379,h2:26379/0?master=NAME), else
$%s, else localhost:6379.

Exit codes: 0 ok / locked; 1 free (status), digest mismatch (scripts),
overlap (demo); exec passes CMD's status through; 64 usage; 69 nodes
unavailable; 70 internal error; 75 not acquired within --wait; 76 lock lost
while CMD ran; 126 CMD not executable; 127 CMD not found; 128+N signal N.

Run 'redlock SUBCOMMAND --help' for flags and examples.
`, envInstances)
}

// usage prints c's full help: synopsis, description, flags, examples.
func (c *command) usage(w io.Writer) {
	fs := c.newFlagSet()
	c.flags(fs)
	fmt.Fprintf(w, "usage: redlock %s %s\n\n%s\n\nFlags:\n", c.name, c.synopsis, strings.TrimSpace(c.about))
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	sort.Strings(names)
	for _, n := range names {
		f := fs.Lookup(n)
		typ, help := flag.UnquoteUsage(f)
		head := "  --" + f.Name
		if typ != "" {
			head += " " + typ
		}
		fmt.Fprintf(w, "%s\n      %s", head, help)
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "  -h, --help\n      print this help\n\nExamples:\n%s\n", strings.TrimRight(c.examples, "\n"))
}

// parseFlags parses flags placed anywhere among args and returns the
// positional arguments. Parsing stops at `--`; when fixed >= 0 it also stops
// at the first non-flag argument after `fixed` positional ones, so that
// exec's CMD keeps its own flags. Everything after the stop is positional.
func parseFlags(fs *flag.FlagSet, args []string, fixed int) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		left := fs.Args()
		used := len(args) - len(left)
		if used > 0 && args[used-1] == "--" {
			return append(pos, left...), nil
		}
		if len(left) == 0 {
			return pos, nil
		}
		if fixed >= 0 && len(pos) >= fixed {
			return append(pos, left...), nil
		}
		pos = append(pos, left[0])
		args = left[1:]
	}
}
