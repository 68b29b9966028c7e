// Command report reads the output of the bench module's benchmarks (go test
// -bench, any -count) and prints markdown tables of the medians: redlock on
// redlock.Addr nodes, redlock on redlock.Pool over the redigo pools redsync
// gets, and redsync side by side per scenario, with the ratios, the fenced
// to unfenced ratio, the Sentinel scenario and the targets. With
// -out it also writes the page docs/benchmarks.md: the tables, the machine,
// the command and the raw output.
//
//	go run ./cmd/report -in bench.out -out ../docs/benchmarks.md -cmd 'make bench'
//
// It exits non-zero when the output shows a failed or incomplete run, after
// printing what it could.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

func main() {
	in := flag.String("in", "-", "go test -bench output to read (- for stdin)")
	out := flag.String("out", "", "also write the benchmarks page here (e.g. ../docs/benchmarks.md)")
	cmd := flag.String("cmd", "make bench", "the command that produced the output, for the page")
	note := flag.String("note", "", "a note for the page, e.g. that the machine was busy")
	flag.Parse()
	if err := run(*in, *out, *cmd, *note); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

func run(in, out, cmd, note string) error {
	raw, err := readInput(in)
	if err != nil {
		return err
	}
	res := parse(raw)
	table := res.table()
	fmt.Print(table)
	if out != "" {
		page := res.page(table, cmd, note, raw)
		if err := os.WriteFile(out, []byte(page), 0o644); err != nil {
			return err
		}
		fmt.Printf("\nwrote %s\n", out)
	}
	return res.status()
}

func readInput(path string) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(path)
}

// results holds every benchmark line of one go test output.
type results struct {
	bench    map[string]map[string][]float64 // name without -GOMAXPROCS -> unit -> values, one per run
	header   map[string]string               // goos, goarch, pkg, cpu, redlock-source
	passed   bool                            // an "ok" or "PASS" line
	failures []string                        // FAIL, --- FAIL, panic lines
}

var procsSuffix = regexp.MustCompile(`-\d+$`)

// parse reads go test -bench output. A benchmark line is its name, the
// iteration count and then value/unit pairs.
func parse(raw []byte) *results {
	r := &results{bench: map[string]map[string][]float64{}, header: map[string]string{}}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "Benchmark"):
			r.addBench(line)
		case line == "PASS" || strings.HasPrefix(line, "ok "):
			r.passed = true
		case strings.HasPrefix(line, "FAIL") || strings.HasPrefix(line, "--- FAIL") || strings.HasPrefix(line, "panic:"):
			r.failures = append(r.failures, line)
		default:
			for _, k := range []string{"goos", "goarch", "pkg", "cpu", "redlock-source"} {
				if v, ok := strings.CutPrefix(line, k+": "); ok {
					r.header[k] = v
				}
			}
		}
	}
	return r
}

func (r *results) addBench(line string) {
	f := strings.Fields(line)
	if len(f) < 4 || len(f)%2 != 0 {
		return // a name alone: a parent benchmark, or a line cut by a log
	}
	if _, err := strconv.Atoi(f[1]); err != nil {
		return
	}
	name := procsSuffix.ReplaceAllString(f[0], "")
	m := r.bench[name]
	if m == nil {
		m = map[string][]float64{}
		r.bench[name] = m
	}
	for i := 2; i+1 < len(f); i += 2 {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			continue
		}
		m[f[i+1]] = append(m[f[i+1]], v)
	}
}

// median returns the median of one benchmark's metric over its runs, and
// false when there is none.
func (r *results) median(bench, unit string) (float64, bool) {
	v := slices.Clone(r.bench[bench][unit])
	if len(v) == 0 {
		return 0, false
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2], true
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2, true
}

// value is what the table shows for one benchmark's metric over its runs:
// the worst run for success-% (lowest) and the peak-* and max-* values
// (highest), the median for the rest.
func (r *results) value(bench, unit string) (float64, bool) {
	v := r.bench[bench][unit]
	switch {
	case len(v) == 0:
		return 0, false
	case unit == "success-%":
		return slices.Min(v), true
	case strings.HasPrefix(unit, "peak-"), strings.HasPrefix(unit, "max-"):
		return slices.Max(v), true
	}
	return r.median(bench, unit)
}

// runs returns the most runs any benchmark has.
func (r *results) runs() int {
	n := 0
	for _, m := range r.bench {
		for _, v := range m {
			n = max(n, len(v))
		}
	}
	return n
}

func (r *results) status() error {
	switch {
	case len(r.failures) > 0:
		return fmt.Errorf("the run failed:\n  %s", strings.Join(r.failures, "\n  "))
	case len(r.bench) == 0:
		return errors.New("no benchmark results in the input")
	case !r.passed:
		return errors.New("the run did not finish (no PASS/ok line)")
	}
	return nil
}

// A target is one of the Done-when conditions on a row: met
// compares ours with the row's base (redsync; acks 0 in the Sentinel
// table; the bound the benchmark reported), which it needs only when
// needsBase.
type target struct {
	text      string
	needsBase bool
	met       func(ours, base float64) bool
}

func ratioAtLeast(x float64, base string) *target {
	return &target{fmt.Sprintf("≥ %.1fx %s", x, base), true, func(o, b float64) bool { return b > 0 && o/b >= x }}
}

func ratioAtMost(x float64, base string) *target {
	return &target{fmt.Sprintf("≤ %.2fx %s", x, base), true, func(o, b float64) bool { return b > 0 && o/b <= x }}
}

// atMost is ours ≤ x; text says it with its unit.
func atMost(x float64, text string) *target {
	return &target{text, false, func(o, _ float64) bool { return o <= x }}
}

func atLeast(x float64, text string) *target {
	return &target{text, false, func(o, _ float64) bool { return o >= x }}
}

// row is one line of the main table: a metric of one benchmark for every
// library. bench has a %s for the library's name.
type row struct {
	scenario, metric string
	bench, unit      string
	target           *target
}

// The targets of the main table.
var (
	hundred     = atLeast(100, "≥ 100%")
	allocsShare = ratioAtMost(0.30, "redsync")
	pausedConns = atMost(2, "≤ 2")
)

var rows = []row{
	{"a. cycle, p=1", "cycles/s", "BenchmarkCycle/%s/p1", "cycles/s", ratioAtLeast(1.5, "redsync")},
	{"a. cycle, p=1", "p50 ms", "BenchmarkCycle/%s/p1", "p50-ms", nil},
	{"a. cycle, p=1", "p99 ms", "BenchmarkCycle/%s/p1", "p99-ms", nil},
	{"a. cycle, p=1", "success %", "BenchmarkCycle/%s/p1", "success-%", hundred},
	{"a. cycle, p=1", "allocs/op", "BenchmarkCycle/%s/p1", "allocs/op", allocsShare},
	{"a. cycle, p=1", "B/op", "BenchmarkCycle/%s/p1", "B/op", nil},
	{"a. cycle, p=64", "cycles/s", "BenchmarkCycle/%s/p64", "cycles/s", ratioAtLeast(4.0, "redsync")},
	{"a. cycle, p=64", "p50 ms", "BenchmarkCycle/%s/p64", "p50-ms", nil},
	{"a. cycle, p=64", "p99 ms", "BenchmarkCycle/%s/p64", "p99-ms", nil},
	{"a. cycle, p=64", "success %", "BenchmarkCycle/%s/p64", "success-%", hundred},
	{"a. cycle, p=64", "allocs/op", "BenchmarkCycle/%s/p64", "allocs/op", allocsShare},
	{"a. cycle, p=64", "B/op", "BenchmarkCycle/%s/p64", "B/op", nil},
	{"b. 1 of 5 paused, p=1", "cycles/s", "BenchmarkPausedNode/%s/p1", "cycles/s", nil},
	{"b. 1 of 5 paused, p=1", "p99 ms", "BenchmarkPausedNode/%s/p1", "p99-ms", nil},
	{"b. 1 of 5 paused, p=1", "success %", "BenchmarkPausedNode/%s/p1", "success-%", hundred},
	// The one worker of p=1 is the benchmark's own goroutine, counted in
	// the base.
	{"b. 1 of 5 paused, p=1", "peak goroutines", "BenchmarkPausedNode/%s/p1", "peak-goroutines", atMost(0, "≤ 0 (no growth)")},
	{"b. 1 of 5 paused, p=1", "peak conns to paused", "BenchmarkPausedNode/%s/p1", "peak-conns", pausedConns},
	{"b. 1 of 5 paused, p=16", "cycles/s", "BenchmarkPausedNode/%s/p16", "cycles/s", nil},
	{"b. 1 of 5 paused, p=16", "p99 ms", "BenchmarkPausedNode/%s/p16", "p99-ms", atMost(5, "≤ 5 ms")},
	{"b. 1 of 5 paused, p=16", "success %", "BenchmarkPausedNode/%s/p16", "success-%", hundred},
	{"b. 1 of 5 paused, p=16", "peak goroutines", "BenchmarkPausedNode/%s/p16", "peak-goroutines", atMost(16, "≤ 16 (the workers)")},
	{"b. 1 of 5 paused, p=16", "peak conns to paused", "BenchmarkPausedNode/%s/p16", "peak-conns", pausedConns},
	{"c. handoff", "p50 ms", "BenchmarkHandoff/%s", "p50-ms", atMost(1, "≤ 1 ms")},
	{"c. handoff", "p99 ms", "BenchmarkHandoff/%s", "p99-ms", atMost(5, "≤ 5 ms")},
}

// fencedRows are scenario e's rows (redlock only), after the ceiling's;
// the fenced/unfenced ratio follows the first.
var fencedRows = []row{
	{"e. fenced cycle, p=64", "cycles/s", "BenchmarkFencedCycle/%s/p64", "cycles/s", nil},
	{"e. fenced cycle, p=64", "p50 ms", "BenchmarkFencedCycle/%s/p64", "p50-ms", nil},
	{"e. fenced cycle, p=64", "p99 ms", "BenchmarkFencedCycle/%s/p64", "p99-ms", nil},
	{"e. fenced cycle, p=64", "success %", "BenchmarkFencedCycle/%s/p64", "success-%", hundred},
	{"e. fenced cycle, p=64", "allocs/op", "BenchmarkFencedCycle/%s/p64", "allocs/op", nil},
	{"e. fenced cycle, p=64", "B/op", "BenchmarkFencedCycle/%s/p64", "B/op", nil},
}

const (
	theirs  = "redsync"
	ceiling = "BenchmarkCeiling"
	// floor is scenario d's latency floor F: no client's p=1 beats it.
	floor = "BenchmarkFloor"
	// ceilingShare is the target for ours p=64 / R.
	ceilingShare = 0.6
	// fencedShare is the target for fenced / unfenced p=64
	// cycles/s.
	fencedShare = 0.6
)

// ours are our contenders, in the table's column order.
var ours = []struct{ name, column string }{
	{"redlock-addr", "Addr"},
	{"redlock-pool", "Pool"},
}

// table renders the markdown tables.
func (r *results) table() string {
	var b strings.Builder
	b.WriteString("| scenario | metric |")
	for _, o := range ours {
		fmt.Fprintf(&b, " redlock %s |", o.column)
	}
	b.WriteString(" redsync |")
	for _, o := range ours {
		fmt.Fprintf(&b, " %s/redsync |", o.column)
	}
	b.WriteString(" target |")
	for _, o := range ours {
		fmt.Fprintf(&b, " met: %s |", o.column)
	}
	b.WriteString("\n|---|---|" + strings.Repeat("---:|", 2*len(ours)+1) + "---|" + strings.Repeat("---|", len(ours)) + "\n")
	// line writes one row: the cells of ours, redsync's, the ratios, the
	// target and whether each of ours met it.
	line := func(scenario, metric string, cells []string, theirsCell string, ratios []string, tgt string, met []string) {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", scenario, metric,
			strings.Join(cells, " | "), theirsCell, strings.Join(ratios, " | "), tgt, strings.Join(met, " | "))
	}
	emit := func(rw row) {
		s, okS := r.value(fmt.Sprintf(rw.bench, theirs), rw.unit)
		var cells, ratios, met []string
		for _, lib := range ours {
			o, okO := r.value(fmt.Sprintf(rw.bench, lib.name), rw.unit)
			cells = append(cells, format(o, okO, rw.unit))
			ratio := ""
			if okO && okS && s != 0 {
				ratio = formatRatio(o / s)
			}
			ratios = append(ratios, ratio)
			met = append(met, metCell(rw.target, o, okO, s, okS))
		}
		line(rw.scenario, rw.metric, cells, format(s, okS, rw.unit), ratios, targetText(rw.target), met)
	}
	for _, rw := range rows {
		emit(rw)
	}
	blank := make([]string, len(ours))
	R, okR := r.median(ceiling, "pairs/s")
	line("d. ceiling", "R: script pairs/s per node", append([]string{format(R, okR, "pairs/s")}, blank[1:]...), "(same servers)", blank, "", blank)
	share := func(lib string) (float64, bool) {
		c, ok := r.median(fmt.Sprintf("BenchmarkCycle/%s/p64", lib), "cycles/s")
		if !ok || !okR || R <= 0 {
			return 0, false
		}
		return c / R, true
	}
	var cells, met []string
	for _, lib := range ours {
		sh, ok := share(lib.name)
		cells = append(cells, percent(sh, ok))
		met = append(met, yesNo(ok && sh >= ceilingShare))
	}
	ss, okSS := share(theirs)
	line("d. ceiling", "p=64 cycles/s as % of R", cells, percent(ss, okSS), blank, fmt.Sprintf("≥ %.0f%% of R", 100*ceilingShare), met)
	F, okF := r.median(floor, "cycles/s")
	line("d. floor", "F: p=1 cycles/s, one goroutine, raw connections", append([]string{format(F, okF, "cycles/s")}, blank[1:]...), "(same servers)", blank, "", blank)
	ofFloor := func(lib string) string {
		c, ok := r.median(fmt.Sprintf("BenchmarkCycle/%s/p1", lib), "cycles/s")
		return percent(c/F, ok && okF && F > 0)
	}
	cells = nil
	for _, lib := range ours {
		cells = append(cells, ofFloor(lib.name))
	}
	line("d. floor", "p=1 cycles/s as % of F", cells, ofFloor(theirs), blank, "", blank)
	emit(fencedRows[0])
	cells, met = nil, nil
	for _, lib := range ours {
		f, okF := r.median(fmt.Sprintf("BenchmarkFencedCycle/%s/p64", lib.name), "cycles/s")
		u, okU := r.median(fmt.Sprintf("BenchmarkCycle/%s/p64", lib.name), "cycles/s")
		ok := okF && okU && u > 0
		cells = append(cells, ratioCell(f, u, ok))
		met = append(met, yesNo(ok && f/u >= fencedShare))
	}
	line("e. fenced cycle, p=64", "fenced / unfenced cycles/s", cells, "(no fencing)", blank, fmt.Sprintf("≥ %.1fx unfenced", fencedShare), met)
	for _, rw := range fencedRows[1:] {
		emit(rw)
	}
	r.failFastTable(&b)
	r.sentinelTable(&b)
	r.topUpTable(&b)
	r.waitersTable(&b)
	r.heldTable(&b)
	r.manyDoTable(&b)
	fmt.Fprintf(&b, "\nMedians of %d runs per benchmark, except success %% (the worst run), the peak counts and max Lock ms (the highest run).\n"+
		"Addr: `redlock.Addr` nodes; Pool: `redlock.Pool` over redigo pools built exactly as redsync's (a new set per run).\n"+
		"x/redsync: higher is better for cycles/s, lower for ms, allocs and bytes.\n", r.runs())
	return b.String()
}

// failFastTable writes, for information, redsync with WithFailFast(true)
// when a node is paused.
func (r *results) failFastTable(b *strings.Builder) {
	var info strings.Builder
	for _, p := range []string{"p1", "p16"} {
		name := "BenchmarkPausedNode/redsync-failfast/" + p
		if _, ok := r.bench[name]; !ok {
			continue
		}
		var cells []string
		for _, u := range []string{"cycles/s", "p99-ms", "success-%", "peak-goroutines", "peak-conns"} {
			v, ok := r.value(name, u)
			cells = append(cells, format(v, ok, u))
		}
		fmt.Fprintf(&info, "| %s | %s |\n", p, strings.Join(cells, " | "))
	}
	if info.Len() > 0 {
		b.WriteString("\nFor information, redsync with `WithFailFast(true)` (not its default) with one node paused:\n\n")
		b.WriteString("| parallelism | cycles/s | p99 ms | success % | peak goroutines | peak conns to paused |\n")
		b.WriteString("|---|---:|---:|---:|---:|---:|\n")
		b.WriteString(info.String())
	}
}

// sentinelRow is one line of the Sentinel table: a metric of
// BenchmarkSentinel/{replica}/acks{0,1}. The target applies to acks 1;
// its base is acks 0's value, or the benchmark's baseUnit metric of acks 1
// when baseUnit is set.
type sentinelRow struct {
	replica, metric string
	unit            string
	target          *target
	baseUnit        string
}

// waitsPerLock is the target for WAITs per Lock with the replica paused:
// far below one per write (every Lock writes once).
const waitsPerLock = 0.25

var sentinelRows = []sentinelRow{
	{"healthy", "cycles/s", "cycles/s", ratioAtLeast(0.5, "acks 0"), ""},
	{"healthy", "p50 ms", "p50-ms", nil, ""},
	{"healthy", "p99 ms", "p99-ms", nil, ""},
	{"healthy", "Lock p99 ms", "lock-p99-ms", nil, ""},
	{"healthy", "success %", "success-%", hundred, ""},
	{"healthy", "WAIT calls", "wait-calls", nil, ""},
	{"healthy", "EVALSHA calls", "evalsha-calls", nil, ""},
	{"healthy", "WAIT / EVALSHA", "wait/evalsha", nil, ""},
	{"healthy", "WAITs per Lock", "waits/lock", nil, ""},
	{"paused", "cycles/s", "cycles/s", nil, ""},
	{"paused", "Lock p99 ms", "lock-p99-ms", nil, ""},
	{"paused", "Lock max ms", "max-lock-ms", &target{"≤ node timeout + ReplicaAckTimeout", true,
		func(o, bound float64) bool { return bound > 0 && o <= bound }}, "bound-ms"},
	{"paused", "success %", "success-%", nil, ""},
	{"paused", "WAIT calls", "wait-calls", nil, ""},
	{"paused", "EVALSHA calls", "evalsha-calls", nil, ""},
	{"paused", "WAIT / EVALSHA", "wait/evalsha", nil, ""},
	{"paused", "WAITs per Lock", "waits/lock", atMost(waitsPerLock, fmt.Sprintf("≤ %g (far below 1 per write)", waitsPerLock)), ""},
}

// sentinelTable writes scenario f's table when the output has it.
func (r *results) sentinelTable(b *strings.Builder) {
	bench := func(replica string, acks int) string {
		if replica == "paused" {
			replica = "replica-paused"
		}
		return fmt.Sprintf("BenchmarkSentinel/%s/acks%d", replica, acks)
	}
	if _, ok := r.bench[bench("healthy", 1)]; !ok {
		if _, ok := r.bench[bench("paused", 1)]; !ok {
			return
		}
	}
	b.WriteString("\n**f. Sentinel**: one Sentinel group (master + 1 replica + 3 Sentinels) as the only node, 16 lockers, " +
		"`redlock.Sentinel{MinReplicaAcks: 1}` (every acquire waits for the replica: WAIT) vs `MinReplicaAcks: 0`; " +
		"WAIT and EVALSHA calls are the master's INFO commandstats over the measured loop. " +
		"With the replica paused (SIGSTOP) no acquire can be acknowledged, so with acks 1 every Lock fails by design: it must fail in time.\n\n")
	b.WriteString("| replica | metric | acks 0 | acks 1 | acks 1 / acks 0 | target (acks 1) | met |\n")
	b.WriteString("|---|---|---:|---:|---:|---|---|\n")
	for _, rw := range sentinelRows {
		z, okZ := r.value(bench(rw.replica, 0), rw.unit)
		o, okO := r.value(bench(rw.replica, 1), rw.unit)
		ratio := ""
		if okZ && okO && z != 0 {
			ratio = formatRatio(o / z)
		}
		base, okB := z, okZ
		tgt := targetText(rw.target)
		if rw.baseUnit != "" {
			base, okB = r.value(bench(rw.replica, 1), rw.baseUnit)
			if okB {
				tgt += " (" + format(base, true, rw.baseUnit) + " ms)"
			}
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s |\n", rw.replica, rw.metric,
			format(z, okZ, rw.unit), format(o, okO, rw.unit), ratio, tgt, metCell(rw.target, o, okO, base, okB))
	}
}

// topUpShare is the bound on top-up's cost: on/off cycles/s of an
// uncontended cycle.
const topUpShare = 0.95

// topUpCost is scenario g's target: on/off cycles/s at least topUpShare.
var topUpCost = &target{fmt.Sprintf("≥ %.2fx off", topUpShare), true, func(o, b float64) bool { return b > 0 && o/b >= topUpShare }}

// topUpRows are scenario g's lines: a metric of BenchmarkTopUp/{bench}
// with top-up on and off; the target applies to on/off.
var topUpRows = []struct {
	bench, metric, unit string
	target              *target
}{
	{"cycle/%s/p1", "cycle p=1: cycles/s", "cycles/s", topUpCost},
	{"cycle/%s/p1", "cycle p=1: allocs/op", "allocs/op", nil},
	{"cycle/%s/p64", "cycle p=64: cycles/s", "cycles/s", topUpCost},
	{"cycle/%s/p64", "cycle p=64: allocs/op", "allocs/op", nil},
	{"handoff/%s", "handoff p50 ms", "p50-ms", nil},
	{"handoff/%s", "handoff p99 ms", "p99-ms", nil},
}

// topUpTable writes scenario g's table when the output has it.
func (r *results) topUpTable(b *strings.Builder) {
	name := func(bench, mode string) string { return "BenchmarkTopUp/" + fmt.Sprintf(bench, "topup-"+mode) }
	if _, ok := r.bench[name(topUpRows[0].bench, "on")]; !ok {
		return
	}
	b.WriteString("\n**g. top-up**: `redlock.Addr` nodes with `WithTopUp(true)` (the default, as in every scenario above) " +
		"and `WithTopUp(false)`, in one run. An uncontended cycle takes every node, so top-up has nothing to do there: " +
		"its cost is the bookkeeping of which nodes hold the lock.\n\n")
	b.WriteString("| metric | top-up on | top-up off | on / off | target | met |\n")
	b.WriteString("|---|---:|---:|---:|---|---|\n")
	for _, rw := range topUpRows {
		on, okOn := r.value(name(rw.bench, "on"), rw.unit)
		off, okOff := r.value(name(rw.bench, "off"), rw.unit)
		ratio := ""
		if okOn && okOff && off != 0 {
			ratio = formatRatio(on / off)
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s |\n", rw.metric, format(on, okOn, rw.unit), format(off, okOff, rw.unit),
			ratio, targetText(rw.target), metCell(rw.target, on, okOn, off, okOff))
	}
}

// waitersRows are scenario h's lines: BenchmarkWaiters/{lib}/{case}.
var waitersRows = []struct {
	scenario, metric, unit string
	target                 *target
}{
	{"k2", "wait p99 ms", "wait-p99-ms", nil},
	{"k8", "wait p99 ms", "wait-p99-ms", nil},
	{"k32", "wait p50 ms", "wait-p50-ms", nil},
	{"k32", "wait p99 ms", "wait-p99-ms", atMost(150, "≤ 150 ms")},
	{"k32", "wait max ms", "wait-max-ms", nil},
	{"k32", "max ÷ min acquisitions per goroutine", "max/min", atMost(1.25, "≤ 1.25")},
	{"k32", "scripts per acquisition per node", "scripts/acq/node", atMost(3, "≤ 3")},
	{"k32", "acquisitions/s", "acq/s", nil},
	{"m4k32", "wait p99 ms", "wait-p99-ms", atMost(250, "≤ 250 ms")},
	{"m4k32", "max ÷ min acquisitions per goroutine", "max/min", nil},
	{"m4k32", "scripts per acquisition per node", "scripts/acq/node", nil},
	{"m4k32", "acquisitions/s", "acq/s", nil},
}

// waitersTable writes scenario h's table when the output has it.
func (r *results) waitersTable(b *strings.Builder) {
	name := func(lib, sc string) string { return "BenchmarkWaiters/" + lib + "/" + sc }
	if _, ok := r.bench[name("redlock-addr", "k32")]; !ok {
		return
	}
	b.WriteString("\n**h. waiters on one resource**: K goroutines take turns on ONE resource (Lock, hold 1 ms, Unlock), " +
		"unbounded attempts, default retry delay; k2/k8/k32 on one Manager (one redsync), m4k32 over four. " +
		"Scripts per acquisition per node are EVALSHA + EVAL calls; redsync's acquire is a plain SET NX, so its figure counts its releases (and release attempts) only.\n\n")
	b.WriteString("| case | metric | redlock Addr | redsync | target | met |\n|---|---|---:|---:|---|---|\n")
	for _, rw := range waitersRows {
		o, okO := r.value(name("redlock-addr", rw.scenario), rw.unit)
		s, okS := r.value(name(theirs, rw.scenario), rw.unit)
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s |\n", rw.scenario, rw.metric, format(o, okO, rw.unit), format(s, okS, rw.unit),
			targetText(rw.target), metCell(rw.target, o, okO, s, okS))
	}
}

// heldTable writes scenario i's table when the output has it.
func (r *results) heldTable(b *strings.Builder) {
	var rows strings.Builder
	for _, h := range []string{"h1000", "h10000", "h50000"} {
		name := "BenchmarkHeldLocks/" + h
		if _, ok := r.bench[name]; !ok {
			continue
		}
		heap, okH := r.value(name, "heap-B/lock")
		left, okL := r.value(name, "left-B/lock")
		g, okG := r.value(name, "goroutines")
		tgt := ""
		met := ""
		if h == "h50000" {
			t := atMost(700, "≤ 700 B")
			tgt, met = targetText(t), metCell(t, heap, okH, 0, false)
		}
		fmt.Fprintf(&rows, "| %s | %s | %s | %s | %s | %s |\n", strings.TrimPrefix(h, "h"), format(heap, okH, "B/op"), format(left, okL, "B/op"), format(g, okG, "peak-goroutines"), tgt, met)
	}
	if rows.Len() == 0 {
		return
	}
	b.WriteString("\n**i. held locks**: one Manager holds H locks (ttl 60 s); live heap after GC per held lock, what is left per lock after every Unlock, and goroutines more than before.\n\n")
	b.WriteString("| H | heap B per held lock | left B per lock after Unlock | goroutines while held | target | met |\n|---:|---:|---:|---:|---|---|\n")
	b.WriteString(rows.String())
}

// manyDoTable writes scenario j's table when the output has it.
func (r *results) manyDoTable(b *strings.Builder) {
	var rows strings.Builder
	for _, d := range []string{"d5000", "d20000"} {
		name := "BenchmarkManyDo/" + d
		if _, ok := r.bench[name]; !ok {
			continue
		}
		var cells []string
		for _, u := range []string{"nil-%", "goroutines/do", "calls/node/s", "calls/node/s/do", "keys/call"} {
			v, ok := r.value(name, u)
			cells = append(cells, format(v, ok, u))
		}
		fmt.Fprintf(&rows, "| %s | %s |\n", strings.TrimPrefix(d, "d"), strings.Join(cells, " | "))
	}
	if rows.Len() == 0 {
		return
	}
	b.WriteString("\n**j. many Do**: D concurrent `Do` on one Manager (ttl 1 s, each function sleeps 4 s). " +
		"Targets at D = 20,000: every Do returns nil, ≤ 0.05 library goroutines per Do, ≤ 0.3 × D script calls per node and second.\n\n")
	b.WriteString("| D | Do returning nil % | library goroutines per Do | script calls per node per s | per node per s ÷ D | keys per extend_many call |\n|---:|---:|---:|---:|---:|---:|\n")
	b.WriteString(rows.String())
}

func targetText(t *target) string {
	if t == nil {
		return ""
	}
	return t.text
}

// metCell says whether ours (o) met t against base (b); empty without a
// target.
func metCell(t *target, o float64, okO bool, b float64, okB bool) string {
	if t == nil {
		return ""
	}
	return yesNo(okO && (okB || !t.needsBase) && t.met(o, b))
}

// ratioCell prints x/y as a ratio, n/a when !ok.
func ratioCell(x, y float64, ok bool) string {
	if !ok {
		return "n/a"
	}
	return formatRatio(x / y)
}

// formatRatio prints a ratio with 2-3 significant digits.
func formatRatio(x float64) string {
	switch {
	case x >= 100:
		return strconv.FormatFloat(x, 'f', 0, 64) + "x"
	case x >= 0.1:
		return strconv.FormatFloat(x, 'f', 2, 64) + "x"
	case x >= 0.001:
		return strconv.FormatFloat(x, 'f', 3, 64) + "x"
	}
	return "<0.001x"
}

func percent(f float64, ok bool) string {
	if !ok {
		return "n/a"
	}
	return strconv.FormatFloat(100*f, 'f', 1, 64) + "%"
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

// format prints a value for its unit.
func format(v float64, ok bool, unit string) string {
	switch {
	case !ok:
		return "n/a"
	case strings.HasSuffix(unit, "-ms"):
		switch {
		case v >= 100:
			return strconv.FormatFloat(v, 'f', 0, 64)
		case v >= 10:
			return strconv.FormatFloat(v, 'f', 1, 64)
		}
		return strconv.FormatFloat(v, 'f', 2, 64)
	case unit == "success-%":
		return strconv.FormatFloat(v, 'f', 1, 64)
	case unit == "wait/evalsha" || unit == "waits/lock" || unit == "calls/node/s/do" || unit == "goroutines/do":
		return strconv.FormatFloat(v, 'f', 3, 64)
	case unit == "max/min" || unit == "scripts/acq/node":
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return thousands(int64(math.Round(v)))
}

// thousands prints n with comma separators.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
