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
BenchmarkCycle/redlock-addr/p1-2         	    2803	    496171 ns/op	      2400 cycles/s	         0.4088 p50-ms	         2.386 p99-ms	   1000 B/op	     30 allocs/op
BenchmarkCycle/redlock-addr/p1-2         	    2803	    496171 ns/op	      2600 cycles/s	         0.4088 p50-ms	         2.386 p99-ms	   1000 B/op	     30 allocs/op
BenchmarkCycle/redlock-addr/p1-2         	    2803	    496171 ns/op	      9000 cycles/s	         0.4088 p50-ms	         2.386 p99-ms	   1000 B/op	     30 allocs/op
BenchmarkCycle/redlock-addr/p64-2        	   15998	    104663 ns/op	     12000 cycles/s	         5.793 p50-ms	        20.66 p99-ms	   10873 B/op	     178 allocs/op
BenchmarkCycle/redlock-pool/p1-2         	    2803	    496171 ns/op	      3200 cycles/s	         0.3088 p50-ms	         1.386 p99-ms	   2000 B/op	     28 allocs/op
BenchmarkCycle/redlock-pool/p64-2        	   15998	    104663 ns/op	     21000 cycles/s	         2.793 p50-ms	         6.66 p99-ms	   2873 B/op	      29 allocs/op
BenchmarkCycle/redsync/p1-2         	    2740	    491106 ns/op	      2000 cycles/s	         0.4325 p50-ms	         1.540 p99-ms	    3616 B/op	      98 allocs/op
BenchmarkCycle/redsync/p64-2        	    5917	    189793 ns/op	      5000 cycles/s	        11.41 p50-ms	        24.34 p99-ms	    3619 B/op	      98 allocs/op
BenchmarkFencedCycle/redlock-addr/p64-2  	       1	   1900004 ns/op	      6000 cycles/s	         1.826 p50-ms	         1.826 p99-ms	       100.0 success-%	    9296 B/op	     177 allocs/op
BenchmarkFencedCycle/redlock-pool/p64-2  	       1	   1322551 ns/op	     14700 cycles/s	         1.242 p50-ms	         1.242 p99-ms	       100.0 success-%	   13920 B/op	     266 allocs/op
BenchmarkPausedNode/redlock-addr/p1-2    	    3157	    439729 ns/op	      2274 cycles/s	         0.3709 p50-ms	         2.209 p99-ms	         1.000 peak-conns	      2345 peak-goroutines	       100.0 success-%	   11330 B/op	     182 allocs/op
BenchmarkPausedNode/redlock-addr/p1-2    	    3157	    439729 ns/op	      2274 cycles/s	         0.3709 p50-ms	         2.209 p99-ms	         1.000 peak-conns	      9000 peak-goroutines	       99.5 success-%	   11330 B/op	     182 allocs/op
BenchmarkPausedNode/redlock-addr/p1-2    	    3157	    439729 ns/op	      2274 cycles/s	         0.3709 p50-ms	         2.209 p99-ms	         1.000 peak-conns	      2000 peak-goroutines	       100.0 success-%	   11330 B/op	     182 allocs/op
BenchmarkPausedNode/redlock-pool/p16-2   	       1	   3209711 ns/op	       311.7 cycles/s	         3.186 p50-ms	         3.186 p99-ms	        19.00 peak-conns	        15.00 peak-goroutines	       100.0 success-%	    8840 B/op	     155 allocs/op
BenchmarkPausedNode/redsync-failfast/p16-2        	    4935	    217645 ns/op	      4595 cycles/s	         2.518 p50-ms	        17.09 p99-ms	        64.00 peak-conns	      4933 peak-goroutines	       100.0 success-%	    4169 B/op	      88 allocs/op
BenchmarkHandoff
BenchmarkHandoff/redlock-addr-2                        	       6	 187943098 ns/op	       1.5 p50-ms	       248.9 p99-ms	   30101 B/op	     530 allocs/op
BenchmarkHandoff/redlock-pool-2                        	       6	 187943098 ns/op	       0.5 p50-ms	       2.9 p99-ms	   30101 B/op	     530 allocs/op
BenchmarkSentinel/healthy/acks0-2         	   14050	     88976 ns/op	       600.0 bound-ms	     11239 cycles/s	     28100 evalsha-calls	         3.075 lock-p99-ms	         9.922 max-lock-ms	         1.276 p50-ms	         6.159 p99-ms	       100.0 success-%	         0 wait-calls	         0 wait/evalsha	         0 waits/lock	    3355 B/op	      47 allocs/op
BenchmarkSentinel/healthy/acks1-2         	    9262	    204950 ns/op	       600.0 bound-ms	      4879 cycles/s	     18524 evalsha-calls	         7.599 lock-p99-ms	        66.69 max-lock-ms	         2.971 p50-ms	        11.69 p99-ms	       100.0 success-%	      9262 wait-calls	         0.5000 wait/evalsha	         1.000 waits/lock	    3431 B/op	      48 allocs/op
BenchmarkSentinel/replica-paused/acks0-2  	   15610	     75669 ns/op	       600.0 bound-ms	     13215 cycles/s	     31220 evalsha-calls	         3.661 lock-p99-ms	         9.410 max-lock-ms	         1.065 p50-ms	         6.066 p99-ms	       100.0 success-%	         0 wait-calls	         0 wait/evalsha	         0 waits/lock	    3354 B/op	      47 allocs/op
BenchmarkSentinel/replica-paused/acks1-2  	     160	  41874054 ns/op	       600.0 bound-ms	       160.0 cycles/s	       320.0 evalsha-calls	       101.2 lock-p99-ms	       503.2 max-lock-ms	       101.4 p50-ms	       101.2 p99-ms	         0 success-%	        10.00 wait-calls	         0.03125 wait/evalsha	         0.0625 waits/lock	    3083 B/op	      53 allocs/op
BenchmarkSentinel/replica-paused/acks1-2  	     160	  41874054 ns/op	       600.0 bound-ms	       160.0 cycles/s	       320.0 evalsha-calls	       101.2 lock-p99-ms	       612.0 max-lock-ms	       101.4 p50-ms	       101.2 p99-ms	         0 success-%	        10.00 wait-calls	         0.03125 wait/evalsha	         0.0625 waits/lock	    3083 B/op	      53 allocs/op
BenchmarkTopUp/cycle/topup-on/p1-2        	   10000	    300000 ns/op	      3300 cycles/s	         0.29 p50-ms	         0.60 p99-ms	       100.0 success-%	     592 B/op	      24 allocs/op
BenchmarkTopUp/cycle/topup-off/p1-2       	   10000	    290000 ns/op	      3400 cycles/s	         0.28 p50-ms	         0.58 p99-ms	       100.0 success-%	     592 B/op	      24 allocs/op
BenchmarkTopUp/cycle/topup-on/p64-2       	   10000	     40000 ns/op	     25000 cycles/s	         2.5 p50-ms	         6.0 p99-ms	       100.0 success-%	    2216 B/op	      24 allocs/op
BenchmarkTopUp/cycle/topup-off/p64-2      	   10000	     35000 ns/op	     28000 cycles/s	         2.2 p50-ms	         5.0 p99-ms	       100.0 success-%	    2216 B/op	      24 allocs/op
BenchmarkTopUp/handoff/topup-on-2         	     100	  35154219 ns/op	         0.35 p50-ms	         0.90 p99-ms	   64304 B/op	     527 allocs/op
BenchmarkTopUp/handoff/topup-off-2        	     100	  26278479 ns/op	         0.30 p50-ms	         0.80 p99-ms	   65272 B/op	     557 allocs/op
PASS
ok  	github.com/redlock-go/redlock/bench	23.479s
`

func TestParseTakesTheMedianOrWorstOfEveryRun(t *testing.T) {
	r := parse([]byte(sample))
	if got, ok := r.median("BenchmarkCycle/redlock-addr/p1", "cycles/s"); !ok || got != 2600 {
		t.Errorf("median cycles/s of 2400, 2600, 9000 = %v (%v), want 2600", got, ok)
	}
	if got, ok := r.value("BenchmarkPausedNode/redlock-addr/p1", "success-%"); !ok || got != 99.5 {
		t.Errorf("success-%% of 100, 99.5, 100 = %v (%v), want the worst, 99.5", got, ok)
	}
	if got, ok := r.value("BenchmarkPausedNode/redlock-addr/p1", "peak-goroutines"); !ok || got != 9000 {
		t.Errorf("peak-goroutines of 2345, 9000, 2000 = %v (%v), want the highest, 9000", got, ok)
	}
	if got, ok := r.value("BenchmarkSentinel/replica-paused/acks1", "max-lock-ms"); !ok || got != 612 {
		t.Errorf("max-lock-ms of 503.2, 612 = %v (%v), want the highest, 612", got, ok)
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

func TestTableShowsBothRedlockContendersRatiosAndTargets(t *testing.T) {
	table := parse([]byte(sample)).table()
	for _, want := range []string{
		"| scenario | metric | redlock Addr | redlock Pool | redsync | Addr/redsync | Pool/redsync | target | met: Addr | met: Pool |",
		"| a. cycle, p=1 | cycles/s | 2,600 | 3,200 | 2,000 | 1.30x | 1.60x | ≥ 1.5x redsync | **no** | yes |",
		"| a. cycle, p=64 | cycles/s | 12,000 | 21,000 | 5,000 | 2.40x | 4.20x | ≥ 4.0x redsync | **no** | yes |",
		"| a. cycle, p=1 | allocs/op | 30 | 28 | 98 | 0.31x | 0.29x | ≤ 0.30x redsync | **no** | yes |",
		// No redsync value needed for an absolute target; Pool missing is n/a and not met.
		"| c. handoff | p50 ms | 1.50 | 0.50 | n/a |  |  | ≤ 1 ms | **no** | yes |",
		"| b. 1 of 5 paused, p=16 | peak conns to paused | n/a | 19 | n/a |  |  | ≤ 2 | **no** | **no** |",
		"| b. 1 of 5 paused, p=16 | peak goroutines | n/a | 15 | n/a |  |  | ≤ 16 (the workers) | **no** | yes |",
		"| d. ceiling | R: script pairs/s per node | 20,000 |  | (same servers) |",
		"| d. ceiling | p=64 cycles/s as % of R | 60.0% | 105.0% | 25.0% |  |  | ≥ 60% of R | yes | yes |",
		"| e. fenced cycle, p=64 | fenced / unfenced cycles/s | 0.50x | 0.70x | (no fencing) |  |  | ≥ 0.6x unfenced | **no** | yes |",
		"| e. fenced cycle, p=64 | cycles/s | 6,000 | 14,700 | n/a |",
		"| p16 | 4,595 | 17.1 | 100.0 | 4,933 | 64 |",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
}

func TestSentinelTableComparesAcksAndChecksTheBounds(t *testing.T) {
	table := parse([]byte(sample)).table()
	for _, want := range []string{
		"| replica | metric | acks 0 | acks 1 | acks 1 / acks 0 | target (acks 1) | met |",
		"| healthy | cycles/s | 11,239 | 4,879 | 0.43x | ≥ 0.5x acks 0 | **no** |",
		"| healthy | WAITs per Lock | 0.000 | 1.000 |  |  |  |",
		// The worst run's 612 ms is over the 600 ms bound.
		"| paused | Lock max ms | 9.41 | 612 | 65.04x | ≤ node timeout + ReplicaAckTimeout (600 ms) | **no** |",
		"| paused | WAIT / EVALSHA | 0.000 | 0.031 |  |  |  |",
		"| paused | WAITs per Lock | 0.000 | 0.062 |  | ≤ 0.25 (far below 1 per write) | yes |",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("Sentinel table lacks %q:\n%s", want, table)
		}
	}
	if table := parse([]byte(sample[:strings.Index(sample, "BenchmarkSentinel")])).table(); strings.Contains(table, "acks 0") {
		t.Errorf("a run without BenchmarkSentinel has a Sentinel table:\n%s", table)
	}
}

func TestTopUpTableComparesOnWithOff(t *testing.T) {
	table := parse([]byte(sample)).table()
	for _, want := range []string{
		"| cycle p=1: cycles/s | 3,300 | 3,400 | 0.97x | ≥ 0.95x off | yes |",
		"| cycle p=64: cycles/s | 25,000 | 28,000 | 0.89x | ≥ 0.95x off | **no** |",
		"| handoff p99 ms |",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("top-up table lacks %q:\n%s", want, table)
		}
	}
	if table := parse([]byte(sample[:strings.Index(sample, "BenchmarkTopUp")])).table(); strings.Contains(table, "top-up on") {
		t.Errorf("a run without BenchmarkTopUp has a top-up table:\n%s", table)
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
