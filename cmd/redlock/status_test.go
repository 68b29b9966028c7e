package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestStatusExitCodesFollowTheLock(t *testing.T) {
	servers := startRedis(t, 3)
	inst := instancesFlag(servers)
	runCLI(t, nil, "status", "--instances", inst, "job").expectCode(t, exitFalse, "nobody holds job yet")

	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	holder := startCLI(t, nil, "exec", "--instances", inst, "--ttl", "5s", "job", "--",
		"sh", "-c", `printf %s "$REDLOCK_TOKEN" > "$1.tmp" && mv "$1.tmp" "$1"; sleep 3`, "sh", tokenFile)
	token := waitForFile(t, tokenFile, "", 10*time.Second)

	// Flags after RESOURCE work too.
	run := runCLI(t, nil, "status", "job", "--json", "--instances", inst)
	run.expectCode(t, 0, "exec holds job")
	var r statusReport
	if err := json.Unmarshal(run.stdout.Bytes(), &r); err != nil {
		t.Fatalf("status --json is not JSON: %v\n%s", err, &run.stdout)
	}
	if r.Verdict != "locked" || r.Held != 3 || r.Quorum != 2 || r.HolderOn != 3 || len(r.Nodes) != 3 {
		t.Fatalf("status --json = %+v, want locked on 3 of 3 nodes, quorum 2", r)
	}
	if want := token[:8] + "…"; r.Holder != want {
		t.Fatalf("holder %q, want the token's prefix %q", r.Holder, want)
	}
	for _, n := range r.Nodes {
		if !n.Reachable || n.Holder != r.Holder || n.PTTLMS == nil || *n.PTTLMS <= 0 || *n.PTTLMS > 5000 {
			t.Fatalf("node %+v: want reachable, held by %s, 0 < PTTL <= 5000", n, r.Holder)
		}
	}
	text := runCLI(t, nil, "status", "--instances", inst, "job")
	text.expectCode(t, 0, "exec holds job")
	for _, out := range []string{run.stdout.String(), text.stdout.String()} {
		if strings.Contains(out, token) {
			t.Fatalf("status printed the whole token:\n%s", out)
		}
	}
	if !strings.Contains(text.stdout.String(), "LOCKED") {
		t.Fatalf("text status lacks the verdict:\n%s", &text.stdout)
	}

	holder.wait(t, 15*time.Second).expectCode(t, 0, "the holder's CMD exits 0")
	runCLI(t, nil, "status", "--instances", inst, "job").expectCode(t, exitFalse, "exec released job")
}

func TestStatusIsUndecidableWhenTooFewNodesAnswer(t *testing.T) {
	servers := startRedis(t, 1)
	inst := servers[0].Addr + "," + deadAddrs(t, 2)
	run := runCLI(t, nil, "status", "--node-timeout", "500ms", "--instances", inst, "job")
	run.expectCode(t, exitUnavailable, "one free node of three cannot tell")
	if !strings.Contains(run.stdout.String(), "UNKNOWN") || !strings.Contains(run.stdout.String(), "DOWN") {
		t.Fatalf("status does not show the down nodes and the verdict:\n%s", &run.stdout)
	}
	// Two free nodes of three are enough to call it free.
	servers = append(servers, startRedis(t, 1)...)
	runCLI(t, nil, "status", "--node-timeout", "500ms", "--instances", instancesFlag(servers)+","+deadAddrs(t, 1), "job").
		expectCode(t, exitFalse, "two of three nodes answered free")
}

func TestStatusNeverPrintsPasswords(t *testing.T) {
	servers := startRedis(t, 1)
	servers[0].do(t, "CONFIG", "SET", "requirepass", "s3cret-pw")
	good, bad := "redis://:s3cret-pw@"+servers[0].Addr, "redis://:wrong-pw@"+servers[0].Addr
	run := runCLI(t, nil, "status", "--instances", good+","+bad+","+bad, "job")
	run.expectCode(t, exitUnavailable, "two nodes refuse the password: 1 free of 3 cannot tell")
	for _, pw := range []string{"s3cret-pw", "wrong-pw"} {
		if strings.Contains(run.stdout.String()+run.stderr.String(), pw) {
			t.Fatalf("status printed a password:\n%s\n%s", &run.stdout, &run.stderr)
		}
	}
	if !strings.Contains(run.stdout.String(), "xxxxx@") {
		t.Fatalf("status does not show the redacted nodes:\n%s", &run.stdout)
	}
}
