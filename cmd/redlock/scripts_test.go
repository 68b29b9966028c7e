package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/redlock-go/redlock"
)

func TestScriptsLoadReturnsTheGeneratedDigests(t *testing.T) {
	servers := startRedis(t, 2)
	run := runCLI(t, nil, "scripts", "--json", "--load", instancesFlag(servers))
	run.expectCode(t, 0, "every node returns the generated digests")
	var out struct {
		Scripts []scriptJSON `json:"scripts"`
		Load    []loadResult `json:"load"`
	}
	if err := json.Unmarshal(run.stdout.Bytes(), &out); err != nil {
		t.Fatalf("scripts --json is not JSON: %v\n%s", err, &run.stdout)
	}
	want := redlock.Scripts()
	if len(out.Scripts) != len(want) || len(out.Load) != len(want)*len(servers) {
		t.Fatalf("got %d scripts and %d load results, want %d and %d", len(out.Scripts), len(out.Load), len(want), len(want)*len(servers))
	}
	for i, s := range want {
		got := out.Scripts[i]
		if got.Name != s.Name || got.SHA1 != s.SHA1 || got.Source != s.Source {
			t.Errorf("script %d: got %s %s, want %s %s (or the source differs)", i, got.Name, got.SHA1, s.Name, s.SHA1)
		}
		for j, srv := range servers {
			r := out.Load[j*len(want)+i]
			if r.Node != "redis://"+srv.Addr || r.Script != s.Name || r.Returned != s.SHA1 || !r.Match || r.Error != "" {
				t.Errorf("SCRIPT LOAD of %s on %s: %+v, want the digest %s", s.Name, srv.Addr, r, s.SHA1)
			}
		}
	}
	// Loaded means EVALSHA works with the generated digest.
	for _, s := range want {
		if exists := servers[0].do(t, "SCRIPT", "EXISTS", s.SHA1).([]any); exists[0].(int64) != 1 {
			t.Errorf("%s (%s) is not in the node's script cache after --load", s.Name, s.SHA1)
		}
	}
}

func TestScriptsPrintsEveryScriptAsText(t *testing.T) {
	run := runCLI(t, nil, "scripts")
	run.expectCode(t, 0, "printing needs no node")
	for _, s := range redlock.Scripts() {
		for _, want := range append([]string{s.Name, s.File, s.SHA1}, s.Args...) {
			if !strings.Contains(run.stdout.String(), want) {
				t.Errorf("scripts output lacks %q", want)
			}
		}
		first, _, _ := strings.Cut(s.Source, "\n")
		if !strings.Contains(run.stdout.String(), "| "+first) {
			t.Errorf("scripts output lacks the source of %s", s.Name)
		}
	}
}

func TestScriptsLoadOnUnreachableNodeExits69(t *testing.T) {
	run := runCLI(t, nil, "scripts", "--source=false", "--node-timeout", "500ms", "--load", deadAddrs(t, 1))
	run.expectCode(t, exitUnavailable, "nothing listens there")
	if !strings.Contains(run.stdout.String(), "error: connecting") {
		t.Fatalf("the table does not show the failure:\n%s", &run.stdout)
	}
}
