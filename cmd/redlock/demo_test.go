package main

import (
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// checkDemoTable checks the final table of a demo run: locks were taken,
// some while the node was down, and nothing overlapped.
func checkDemoTable(t *testing.T, run *cliRun) {
	t.Helper()
	out := run.stdout.String()
	number := func(label string) int {
		t.Helper()
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(label) + `.*?\s(\d+)$`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("the table has no %q row:\n%s", label, out)
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	if n := number("acquisitions"); n < 5 {
		t.Fatalf("only %d acquisitions:\n%s", n, out)
	}
	if n := number("  while node 3 was down"); n == 0 {
		t.Fatalf("no acquisition while node 3 was down: locking should go on with 4 of 5\n%s\n%s", out, &run.stderr)
	}
	if !regexp.MustCompile(`(?m)^overlaps \(counter / intervals\)\s+0 / 0$`).MatchString(out) {
		t.Fatalf("the table does not show 0 / 0 overlaps:\n%s", out)
	}
	if !strings.Contains(out, ", 0 out of order") || !strings.Contains(out, "handoff latency p99") {
		t.Fatalf("the table lacks the fencing or handoff rows:\n%s", out)
	}
	for _, event := range []string{"acquired (fence", "releases", "NODE 3 DOWN", "NODE 3 BACK"} {
		if !strings.Contains(run.stderr.String(), event) {
			t.Fatalf("the live log lacks %q:\n%s", event, &run.stderr)
		}
	}
}

func TestDemoEmbeddedFinishesWithoutOverlap(t *testing.T) {
	run := runCLI(t, nil, "demo", "--duration", "3s")
	run.expectCode(t, 0, "the demo saw no overlap")
	if run.elapsed > 15*time.Second {
		t.Fatalf("demo --duration 3s took %v", run.elapsed)
	}
	checkDemoTable(t, run)
	if !strings.Contains(run.stderr.String(), "closed: connections refused") {
		t.Fatalf("the embedded node was not closed:\n%s", &run.stderr)
	}
}

func TestDemoRealServersFinishesWithoutOverlap(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server not found on PATH: install it with: apt-get install -y redis-server redis-sentinel")
	}
	run := runCLI(t, nil, "demo", "--real", "--duration", "3s", "--workers", "4")
	run.expectCode(t, 0, "the demo saw no overlap")
	checkDemoTable(t, run)
	if !strings.Contains(run.stderr.String(), "SIGSTOP") {
		t.Fatalf("the real node was not paused:\n%s", &run.stderr)
	}
}
