package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/redlock-go/redlock"
)

type scriptsOptions struct {
	load        specList
	json        bool
	source      bool
	nodeTimeout time.Duration
}

var scriptsCommand = &command{
	name:     "scripts",
	summary:  "print the Lua scripts (and SCRIPT LOAD them on nodes)",
	fixed:    -1,
	synopsis: "[--json] [--load specs]",
	about: `
Print every Lua script the library runs on a node, from redlock.Scripts():
name, file, SHA1 (what EVALSHA wants), KEYS, ARGV, the possible replies and
the source, byte for byte. Use it to audit the scripts or to call them from
another client.

With --load, send SCRIPT LOAD for each script to each given node (directly,
with --node-timeout per command) and print the digest each node returned next
to the generated one. Loading is also a warm-up: afterwards the library sends
EVALSHA only.

Exit codes: 0 ok; 1 a node returned a different digest; 64 usage error; 69 a
node could not be reached or refused a script.`,
	examples: `  # Read the scripts:
  redlock scripts

  # Just names and digests, as JSON:
  redlock scripts --json --source=false | jq -r '.scripts[] | .name + " " + .sha1'

  # Preload them on three masters and check the digests:
  redlock scripts --source=false --load r1:6379,r2:6379,redis://:secret@r3:6379/0`,
	flags: func(fs *flag.FlagSet) any {
		o := &scriptsOptions{}
		fs.BoolVar(&o.json, "json", false, "print JSON instead of text")
		fs.BoolVar(&o.source, "source", true, "include each script's source")
		fs.Var(&o.load, "load", "SCRIPT LOAD every script on these comma-separated instance `specs` (repeatable)")
		fs.DurationVar(&o.nodeTimeout, "node-timeout", 2*time.Second, "bound on connecting and on each command, per node")
		return o
	},
	run: runScripts,
}

// scriptJSON is one script in --json output.
type scriptJSON struct {
	Name     string   `json:"name"`
	File     string   `json:"file"`
	Summary  string   `json:"summary"`
	SHA1     string   `json:"sha1"`
	KeyCount int      `json:"key_count"` // -1: any number of keys
	Keys     []string `json:"keys"`
	Args     []string `json:"args"`
	Returns  []string `json:"returns"`
	Source   string   `json:"source,omitempty"`
}

// loadResult is one node's answer to SCRIPT LOAD for one script.
type loadResult struct {
	Node      string `json:"node"`
	Script    string `json:"script"`
	Generated string `json:"generated"`
	Returned  string `json:"returned,omitempty"`
	Match     bool   `json:"match"`
	Error     string `json:"error,omitempty"`
}

func runScripts(a *app, ctx context.Context, c *command, opts any, args []string) int {
	o := opts.(*scriptsOptions)
	if len(args) > 0 {
		return a.usageError(c, fmt.Sprintf("unexpected argument %q", args[0]))
	}
	if o.nodeTimeout <= 0 {
		return a.usageError(c, "--node-timeout must be positive")
	}
	var nodes []nodeSpec
	if len(o.load) > 0 {
		var err error
		if nodes, err = a.resolveNodes(o.load, "load"); err != nil {
			return a.usageError(c, err.Error())
		}
	}
	scripts := redlock.Scripts()
	var results []loadResult
	if len(nodes) > 0 {
		fmt.Fprintf(a.stderr, "redlock scripts: loading %d scripts on %d nodes\n", len(scripts), len(nodes))
		var err error
		if results, err = loadOnNodes(ctx, nodes, scripts, o.nodeTimeout); err != nil {
			fmt.Fprintf(a.stderr, "redlock scripts: %v\n", err)
			return exitSoftware
		}
	}

	if o.json {
		out := struct {
			Scripts []scriptJSON `json:"scripts"`
			Load    []loadResult `json:"load,omitempty"`
		}{Load: results}
		for _, s := range scripts {
			j := scriptJSON{Name: s.Name, File: s.File, Summary: s.Summary, SHA1: s.SHA1,
				KeyCount: s.KeyCount, Keys: s.Keys, Args: s.Args, Returns: s.Returns}
			if o.source {
				j.Source = s.Source
			}
			out.Scripts = append(out.Scripts, j)
		}
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			fmt.Fprintf(a.stderr, "redlock scripts: %v\n", err)
			return exitSoftware
		}
	} else {
		printScripts(a.stdout, scripts, o.source)
		if len(results) > 0 {
			printLoad(a.stdout, results)
		}
	}

	code := exitOK
	for _, r := range results {
		switch {
		case r.Error != "":
			fmt.Fprintf(a.stderr, "redlock scripts: %s: %s: %s\n", r.Node, r.Script, r.Error)
			if code == exitOK {
				code = exitUnavailable
			}
		case !r.Match:
			fmt.Fprintf(a.stderr, "redlock scripts: %s: %s: node returned %s, generated %s\n", r.Node, r.Script, r.Returned, r.Generated)
			code = exitFalse
		}
	}
	return code
}

// loadOnNodes sends SCRIPT LOAD for every script to every node
// (Manager.LoadScriptsReport, the nodes in parallel, each within timeout)
// and returns one result per node and script, in order.
func loadOnNodes(ctx context.Context, nodes []nodeSpec, scripts []redlock.Script, timeout time.Duration) ([]loadResult, error) {
	m, err := redlock.New(instancesOf(nodes), redlock.WithNodeTimeout(timeout), redlock.WithRestartGuard(false))
	if err != nil {
		return nil, err
	}
	defer m.Close()
	loads, err := m.LoadScriptsReport(ctx)
	if err != nil {
		return nil, err
	}
	generated := map[string]string{}
	for _, s := range scripts {
		generated[s.Name] = s.SHA1
	}
	out := make([]loadResult, len(loads))
	for i, l := range loads {
		out[i] = loadResult{Node: l.Node, Script: l.Script, Generated: generated[l.Script], Returned: l.SHA1}
		var netErr net.Error
		switch {
		case l.Err != nil && errors.As(l.Err, &netErr):
			out[i].Error = "connecting: " + l.Err.Error()
		case l.Err != nil:
			out[i].Error = "SCRIPT LOAD: " + l.Err.Error()
		default:
			out[i].Match = l.SHA1 == out[i].Generated
		}
	}
	return out, nil
}

func printScripts(w io.Writer, scripts []redlock.Script, withSource bool) {
	for i, s := range scripts {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "%s  %s  sha1 %s\n", s.Name, s.File, s.SHA1)
		fmt.Fprintf(w, "  %s\n", s.Summary)
		section := func(title string, lines []string) {
			if len(lines) == 0 {
				lines = []string{"(none)"}
			}
			for j, l := range lines {
				if j == 0 {
					fmt.Fprintf(w, "  %-8s %s\n", title, l)
				} else {
					fmt.Fprintf(w, "  %-8s %s\n", "", l)
				}
			}
		}
		section("KEYS", s.Keys)
		section("ARGV", s.Args)
		section("returns", s.Returns)
		if withSource {
			src := strings.TrimSuffix(s.Source, "\n")
			fmt.Fprintf(w, "  source (%d lines):\n", strings.Count(src, "\n")+1)
			for _, l := range strings.Split(src, "\n") {
				fmt.Fprintf(w, "    | %s\n", l)
			}
		}
	}
}

func printLoad(w io.Writer, results []loadResult) {
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSCRIPT\tGENERATED SHA1\tRETURNED SHA1\tRESULT")
	for _, r := range results {
		verdict, returned := "ok", r.Returned
		switch {
		case r.Error != "":
			verdict, returned = "error: "+r.Error, "-"
		case !r.Match:
			verdict = "MISMATCH"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Node, r.Script, r.Generated, returned, verdict)
	}
	tw.Flush()
}
