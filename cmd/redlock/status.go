package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/redlock-go/redlock"
)

type statusOptions struct {
	instances   specList
	json        bool
	nodeTimeout time.Duration
}

var statusCommand = &command{
	name:     "status",
	summary:  "show who holds a lock on each node, and whether a quorum does",
	fixed:    -1,
	synopsis: "[--instances specs] [--json] RESOURCE",
	about: `
Ask every node who holds RESOURCE, with the library's read-only inspect
script (lua/inspect.lua): reachable or not, the holder's token prefix (its
first 8 characters), and the key's remaining time to live. Then print the
verdict, as Manager.IsLocked decides it: locked when a quorum (N/2+1) of the
nodes hold the key, whoever the holder is; free when so many nodes answered
"free" that no quorum can hold it; unknown otherwise.

Exit codes: 0 locked; 1 free; 64 usage error; 69 unknown (too many nodes
did not answer to tell).`,
	examples: `  # Is the nightly job running somewhere?
  redlock status --instances r1:6379,r2:6379,r3:6379 nightly-report

  # In a script (flags may also follow RESOURCE):
  if redlock status nightly-report --json > state.json; then echo busy; fi
  jq -r '.nodes[] | "\(.node) \(.holder // "-") \(.pttl_ms)"' state.json`,
	flags: func(fs *flag.FlagSet) any {
		o := &statusOptions{}
		fs.Var(&o.instances, "instances", "comma-separated instance `specs` (repeatable; default $"+envInstances+", else localhost:6379)")
		fs.BoolVar(&o.json, "json", false, "print JSON instead of text")
		fs.DurationVar(&o.nodeTimeout, "node-timeout", time.Second, "bound on connecting and on each command, per node")
		return o
	},
	run: runStatus,
}

// nodeState is what one node said about the resource.
type nodeState struct {
	Node      string `json:"node"`
	Reachable bool   `json:"reachable"`
	Holder    string `json:"holder,omitempty"`  // token prefix; empty when free or unreachable
	PTTLMS    *int64 `json:"pttl_ms,omitempty"` // remaining ms; -1: no expiry; absent when free or unreachable
	Error     string `json:"error,omitempty"`

	token string // the full token, used for counting only: never printed
}

// statusReport is the --json output.
type statusReport struct {
	Resource string      `json:"resource"`
	Nodes    []nodeState `json:"nodes"`
	Quorum   int         `json:"quorum"`
	Held     int         `json:"held"`             // reachable nodes that hold the key
	Free     int         `json:"free"`             // reachable nodes where the key is absent
	Down     int         `json:"down"`             // nodes that did not answer
	Verdict  string      `json:"verdict"`          // "locked", "free" or "unknown"
	Holder   string      `json:"holder,omitempty"` // token prefix of the most common holder
	HolderOn int         `json:"holder_on"`        // nodes holding that token
	Note     string      `json:"note,omitempty"`   // what is odd, if anything
}

func runStatus(a *app, ctx context.Context, c *command, opts any, args []string) int {
	o := opts.(*statusOptions)
	switch {
	case len(args) == 0:
		return a.usageError(c, "missing RESOURCE")
	case len(args) > 1:
		return a.usageError(c, fmt.Sprintf("unexpected argument %q after RESOURCE", args[1]))
	case args[0] == "":
		return a.usageError(c, "empty RESOURCE")
	case len(args[0]) > redlock.MaxResourceLen:
		return a.usageError(c, fmt.Sprintf("RESOURCE of %d bytes: the limit is %d", len(args[0]), redlock.MaxResourceLen))
	case o.nodeTimeout <= 0:
		return a.usageError(c, "--node-timeout must be positive")
	}
	nodes, err := a.resolveNodes(o.instances, "instances")
	if err != nil {
		return a.usageError(c, err.Error())
	}
	r, err := inspectNodes(ctx, args[0], nodes, o.nodeTimeout)
	if err != nil {
		fmt.Fprintf(a.stderr, "redlock status: %v\n", err)
		return exitSoftware
	}
	if o.json {
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			fmt.Fprintf(a.stderr, "redlock status: %v\n", err)
			return exitSoftware
		}
	} else {
		printStatus(a.stdout, r)
	}
	switch r.Verdict {
	case "locked":
		return exitOK
	case "free":
		return exitFalse
	}
	return exitUnavailable
}

// inspectNodes asks every node at once (Manager.Inspect, each node within
// timeout) and decides the verdict.
func inspectNodes(ctx context.Context, resource string, nodes []nodeSpec, timeout time.Duration) (statusReport, error) {
	r := statusReport{Resource: resource, Nodes: make([]nodeState, len(nodes)), Quorum: len(nodes)/2 + 1}
	m, err := redlock.New(instancesOf(nodes), redlock.WithNodeTimeout(timeout), redlock.WithRestartGuard(false))
	if err != nil {
		return r, err
	}
	defer m.Close()
	states, err := m.Inspect(ctx, resource)
	if err != nil {
		return r, err
	}
	for i, st := range states {
		r.Nodes[i] = nodeStateOf(st)
	}

	count := map[string]int{}
	for _, s := range r.Nodes {
		switch {
		case !s.Reachable:
			r.Down++
		case s.token == "":
			r.Free++
		default:
			r.Held++
			count[s.token]++
		}
	}
	for tok, c := range count {
		if c > r.HolderOn || (c == r.HolderOn && prefix(tok) < r.Holder) {
			r.Holder, r.HolderOn = prefix(tok), c
		}
	}
	switch {
	case r.Held >= r.Quorum:
		r.Verdict = "locked"
		if r.HolderOn < r.Quorum {
			r.Note = "no single token holds a quorum (contention, or keys left by failed attempts)"
		}
	case r.Free > len(nodes)-r.Quorum:
		r.Verdict = "free"
		if r.Held > 0 {
			r.Note = fmt.Sprintf("%d node(s) still hold a key: a lock expiring, or an attempt that did not get a quorum", r.Held)
		}
	default:
		r.Verdict = "unknown"
		r.Note = fmt.Sprintf("%d node(s) did not answer: too few answers to tell", r.Down)
	}
	return r, nil
}

// nodeStateOf turns the library's view of one node into status's.
func nodeStateOf(st redlock.NodeState) nodeState {
	s := nodeState{Node: st.Node}
	if st.Err != nil {
		s.Error = st.Err.Error()
		return s
	}
	s.Reachable = true
	if st.Holder != "" {
		s.token = st.Holder
		s.Holder = prefix(st.Holder)
		pttl := st.TTL.Milliseconds()
		if st.TTL < 0 {
			pttl = -1
		}
		s.PTTLMS = &pttl
	}
	return s
}

// prefix is the part of a token that status prints: its first 8
// characters and an ellipsis.
func prefix(token string) string {
	const n = 8
	if len(token) <= n {
		return token
	}
	return token[:n] + "…"
}

func printStatus(w io.Writer, r statusReport) {
	fmt.Fprintf(w, "resource %q on %d nodes (quorum %d)\n", r.Resource, len(r.Nodes), r.Quorum)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATE\tHOLDER\tPTTL\t")
	for _, s := range r.Nodes {
		state, holder, pttl, detail := "free", "-", "-", ""
		switch {
		case !s.Reachable:
			state, detail = "DOWN", s.Error
		case s.Holder != "":
			state, holder = "held", s.Holder
			switch p := *s.PTTLMS; {
			case p == -1:
				pttl = "no expiry"
			case p >= 0:
				pttl = (time.Duration(p) * time.Millisecond).String()
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.Node, state, holder, pttl, detail)
	}
	tw.Flush()
	switch r.Verdict {
	case "locked":
		fmt.Fprintf(w, "verdict: LOCKED: %d of %d nodes hold it (quorum %d); token %s on %d\n", r.Held, len(r.Nodes), r.Quorum, r.Holder, r.HolderOn)
	case "free":
		fmt.Fprintf(w, "verdict: FREE: %d of %d nodes answered free (quorum %d)\n", r.Free, len(r.Nodes), r.Quorum)
	default:
		fmt.Fprintf(w, "verdict: UNKNOWN: %d held, %d free, %d down of %d nodes (quorum %d)\n", r.Held, r.Free, r.Down, len(r.Nodes), r.Quorum)
	}
	if r.Note != "" {
		fmt.Fprintf(w, "note: %s\n", r.Note)
	}
}
