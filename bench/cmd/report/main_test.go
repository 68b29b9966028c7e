package main

import (
	"strings"
	"testing"
)

const sample = `goos: linux
goarch: amd64
pkg: github.com/redlock-go/redlock/bench
cpu: AMD EPYC
BenchmarkCeiling-2   	   21031	     47642 ns/op	     20000 pairs/s	     339 B/op	      15 allocs/op
BenchmarkCycle/redlock/p1-2         	    2803	    496171 ns/op	      2400 cycles/s	         0.4088 p50-ms	         2.386 p99-ms	   1000 B/op	     30 allocs/op
BenchmarkCycle/redlock/p1-2         	    2803	    496171 ns/op	      2600 cycles/s	         0.4088 p50-ms	         2.386 p99-ms	   1000 B/op	     30 allocs/op
BenchmarkCycle/redlock/p1-2         	    2803	    496171 ns/op	      9000 cycles/s	         0.4088 p50-ms	         2.386 p99-ms	   1000 B/op	     30 allocs/op
BenchmarkCycle/redlock/p64-2        	   15998	    104663 ns/op	     12000 cycles/s	         5.793 p50-ms	        20.66 p99-ms	   10873 B/op	     178 allocs/op
BenchmarkCycle/redsync/p1-2         	    2740	    491106 ns/op	      2000 cycles/s	         0.4325 p50-ms	         1.540 p99-ms	    3616 B/op	      98 allocs/op
BenchmarkCycle/redsync/p64-2        	    5917	    189793 ns/op	      5000 cycles/s	        11.41 p50-ms	        24.34 p99-ms	    3619 B/op	      98 allocs/op
BenchmarkPausedNode/redlock/p1-2    	    3157	    439729 ns/op	      2274 cycles/s	         0.3709 p50-ms	         2.209 p99-ms	         1.000 peak-conns	      2345 peak-goroutines	       100.0 success-%	   11330 B/op	     182 allocs/op
BenchmarkPausedNode/redlock/p1-2    	    3157	    439729 ns/op	      2274 cycles/s	         0.3709 p50-ms	         2.209 p99-ms	         1.000 peak-conns	      9000 peak-goroutines	       99.5 success-%	   11330 B/op	     182 allocs/op
BenchmarkPausedNode/redlock/p1-2    	    3157	    439729 ns/op	      2274 cycles/s	         0.3709 p50-ms	         2.209 p99-ms	         1.000 peak-conns	      2000 peak-goroutines	       100.0 success-%	   11330 B/op	     182 allocs/op
BenchmarkPausedNode/redsync-failfast/p16-2        	    4935	    217645 ns/op	      4595 cycles/s	         2.518 p50-ms	        17.09 p99-ms	        64.00 peak-conns	      4933 peak-goroutines	       100.0 success-%	    4169 B/op	      88 allocs/op
BenchmarkHandoff
BenchmarkHandoff/redlock-2                        	       6	 187943098 ns/op	       1.5 p50-ms	       248.9 p99-ms	   30101 B/op	     530 allocs/op
PASS
ok  	github.com/redlock-go/redlock/bench	23.479s
`

func TestParseTakesTheMedianOrWorstOfEveryRun(t *testing.T) {
	r := parse([]byte(sample))
	if got, ok := r.median("BenchmarkCycle/redlock/p1", "cycles/s"); !ok || got != 2600 {
		t.Errorf("median cycles/s of 2400, 2600, 9000 = %v (%v), want 2600", got, ok)
	}
	if got, ok := r.value("BenchmarkPausedNode/redlock/p1", "success-%"); !ok || got != 99.5 {
		t.Errorf("success-%% of 100, 99.5, 100 = %v (%v), want the worst, 99.5", got, ok)
	}
	if got, ok := r.value("BenchmarkPausedNode/redlock/p1", "peak-goroutines"); !ok || got != 9000 {
		t.Errorf("peak-goroutines of 2345, 9000, 2000 = %v (%v), want the highest, 9000", got, ok)
	}
	if _, ok := r.median("BenchmarkHandoff", "p50-ms"); ok {
		t.Error("the parent line BenchmarkHandoff (no values) produced a result")
	}
	if r.runs() != 3 || r.header["cpu"] != "AMD EPYC" {
		t.Errorf("runs %d, cpu %q; want 3, AMD EPYC", r.runs(), r.header["cpu"])
	}
	if err := r.status(); err != nil {
		t.Errorf("status of a passing run: %v", err)
	}
}

func TestTableShowsRatiosTargetsAndCeilingShare(t *testing.T) {
	table := parse([]byte(sample)).table()
	for _, want := range []string{
		"| a. cycle, p=1 | cycles/s | 2,600 | 2,000 | 1.30x | ≥ 1.2x redsync | yes |",
		"| a. cycle, p=64 | cycles/s | 12,000 | 5,000 | 2.40x | ≥ 3.0x redsync | **no** |",
		"| a. cycle, p=1 | allocs/op | 30 | 98 | 0.31x | ≤ 0.33x redsync | yes |",
		"| c. handoff | p50 ms | 1.50 | n/a |  | ≤ 2 ms | yes |",
		"| d. ceiling | R: script pairs/s per node | 20,000 |",
		"| d. ceiling | p=64 cycles/s as % of R | 60.0% | 25.0% | | ≥ 50% of R | yes |",
		"| p16 | 4,595 | 17.1 | 100.0 | 4,933 | 64 |",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
}

func TestFormatRatioKeepsSmallAndLargeRatiosReadable(t *testing.T) {
	for x, want := range map[float64]string{1674.85: "1675x", 2.3204: "2.32x", 0.0216: "0.022x", 0.0004: "<0.001x"} {
		if got := formatRatio(x); got != want {
			t.Errorf("formatRatio(%v) = %q, want %q", x, got, want)
		}
	}
}

func TestStatusReportsFailedAndIncompleteRuns(t *testing.T) {
	failed := sample + "--- FAIL: BenchmarkCycle/redsync/p1\nFAIL\n"
	if err := parse([]byte(failed)).status(); err == nil || !strings.Contains(err.Error(), "--- FAIL") {
		t.Errorf("status of a failed run = %v, want the FAIL lines", err)
	}
	cut := sample[:strings.Index(sample, "PASS")]
	if err := parse([]byte(cut)).status(); err == nil {
		t.Error("status of a run without PASS/ok = nil, want an error")
	}
	if err := parse(nil).status(); err == nil {
		t.Error("status of empty output = nil, want an error")
	}
}
