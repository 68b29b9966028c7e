// Command report reads the output of the bench module's benchmarks (go test
// -bench, any -count) and prints a markdown table of the medians: redlock
// and redsync side by side per scenario, their ratio, and the issue's
// targets. With -out it also writes the page docs/benchmarks.md: the
// table, the machine, the command and the raw output.
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
// the worst run for success-% (lowest) and the peak-* counts (highest), the
// median for the rest.
func (r *results) value(bench, unit string) (float64, bool) {
	v := r.bench[bench][unit]
	switch {
	case len(v) == 0:
		return 0, false
	case unit == "success-%":
		return slices.Min(v), true
	case strings.HasPrefix(unit, "peak-"):
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

// A target is one of the Done-when conditions on a row.
type target struct {
	text string
	met  func(ours, redsync float64) bool
}

func ratioAtLeast(x float64) *target {
	return &target{fmt.Sprintf("≥ %.1fx redsync", x), func(o, s float64) bool { return s > 0 && o/s >= x }}
}

func ratioAtMost(x float64) *target {
	return &target{fmt.Sprintf("≤ %.2fx redsync", x), func(o, s float64) bool { return s > 0 && o/s <= x }}
}

func oursAtMost(x float64, unit string) *target {
	return &target{fmt.Sprintf("≤ %g %s", x, unit), func(o, _ float64) bool { return o <= x }}
}

func oursAtLeast(x float64, unit string) *target {
	return &target{fmt.Sprintf("≥ %g%s", x, unit), func(o, _ float64) bool { return o >= x }}
}

// row is one line of the table: a metric of one benchmark for both
// libraries. bench has a %s for the library's name.
type row struct {
	scenario, metric string
	bench, unit      string
	target           *target
}

var rows = []row{
	{"a. cycle, p=1", "cycles/s", "BenchmarkCycle/%s/p1", "cycles/s", ratioAtLeast(1.2)},
	{"a. cycle, p=1", "p50 ms", "BenchmarkCycle/%s/p1", "p50-ms", nil},
	{"a. cycle, p=1", "p99 ms", "BenchmarkCycle/%s/p1", "p99-ms", nil},
	{"a. cycle, p=1", "success %", "BenchmarkCycle/%s/p1", "success-%", oursAtLeast(100, "%")},
	{"a. cycle, p=1", "allocs/op", "BenchmarkCycle/%s/p1", "allocs/op", ratioAtMost(0.33)},
	{"a. cycle, p=1", "B/op", "BenchmarkCycle/%s/p1", "B/op", nil},
	{"a. cycle, p=64", "cycles/s", "BenchmarkCycle/%s/p64", "cycles/s", ratioAtLeast(3.0)},
	{"a. cycle, p=64", "p50 ms", "BenchmarkCycle/%s/p64", "p50-ms", nil},
	{"a. cycle, p=64", "p99 ms", "BenchmarkCycle/%s/p64", "p99-ms", nil},
	{"a. cycle, p=64", "success %", "BenchmarkCycle/%s/p64", "success-%", oursAtLeast(100, "%")},
	{"a. cycle, p=64", "allocs/op", "BenchmarkCycle/%s/p64", "allocs/op", ratioAtMost(0.33)},
	{"a. cycle, p=64", "B/op", "BenchmarkCycle/%s/p64", "B/op", nil},
	{"b. 1 of 5 paused, p=1", "cycles/s", "BenchmarkPausedNode/%s/p1", "cycles/s", nil},
	{"b. 1 of 5 paused, p=1", "p99 ms", "BenchmarkPausedNode/%s/p1", "p99-ms", oursAtMost(10, "ms")},
	{"b. 1 of 5 paused, p=1", "success %", "BenchmarkPausedNode/%s/p1", "success-%", oursAtLeast(100, "%")},
	{"b. 1 of 5 paused, p=1", "peak goroutines", "BenchmarkPausedNode/%s/p1", "peak-goroutines", nil},
	{"b. 1 of 5 paused, p=1", "peak conns to paused", "BenchmarkPausedNode/%s/p1", "peak-conns", nil},
	{"b. 1 of 5 paused, p=16", "cycles/s", "BenchmarkPausedNode/%s/p16", "cycles/s", nil},
	{"b. 1 of 5 paused, p=16", "p99 ms", "BenchmarkPausedNode/%s/p16", "p99-ms", oursAtMost(10, "ms")},
	{"b. 1 of 5 paused, p=16", "success %", "BenchmarkPausedNode/%s/p16", "success-%", oursAtLeast(100, "%")},
	{"b. 1 of 5 paused, p=16", "peak goroutines", "BenchmarkPausedNode/%s/p16", "peak-goroutines", nil},
	{"b. 1 of 5 paused, p=16", "peak conns to paused", "BenchmarkPausedNode/%s/p16", "peak-conns", nil},
	{"c. handoff", "p50 ms", "BenchmarkHandoff/%s", "p50-ms", oursAtMost(2, "ms")},
	{"c. handoff", "p99 ms", "BenchmarkHandoff/%s", "p99-ms", oursAtMost(10, "ms")},
}

const (
	ours    = "redlock"
	theirs  = "redsync"
	ceiling = "BenchmarkCeiling"
	// ceilingShare is the target for ours p=64 / R.
	ceilingShare = 0.5
)

// table renders the markdown table.
func (r *results) table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "| scenario | metric | redlock (ours) | redsync | ours/redsync | target | met |\n")
	fmt.Fprintf(&b, "|---|---|---:|---:|---:|---|---|\n")
	for _, rw := range rows {
		o, okO := r.value(fmt.Sprintf(rw.bench, ours), rw.unit)
		s, okS := r.value(fmt.Sprintf(rw.bench, theirs), rw.unit)
		ratio, tgt, met := "", "", ""
		if okO && okS && s != 0 {
			ratio = formatRatio(o / s)
		}
		if rw.target != nil {
			tgt = rw.target.text
			met = yesNo(okO && (okS || !strings.Contains(tgt, "redsync")) && rw.target.met(o, s))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n",
			rw.scenario, rw.metric, format(o, okO, rw.unit), format(s, okS, rw.unit), ratio, tgt, met)
	}
	R, okR := r.median(ceiling, "pairs/s")
	fmt.Fprintf(&b, "| d. ceiling | R: script pairs/s per node | %s | (same servers) | | | |\n", format(R, okR, "pairs/s"))
	share := func(lib string) (float64, bool) {
		c, ok := r.median(fmt.Sprintf("BenchmarkCycle/%s/p64", lib), "cycles/s")
		if !ok || !okR || R <= 0 {
			return 0, false
		}
		return c / R, true
	}
	so, okSO := share(ours)
	ss, okSS := share(theirs)
	fmt.Fprintf(&b, "| d. ceiling | p=64 cycles/s as %% of R | %s | %s | | ≥ %.0f%% of R | %s |\n",
		percent(so, okSO), percent(ss, okSS), 100*ceilingShare, yesNo(okSO && so >= ceilingShare))
	// Information: redsync with WithFailFast(true) when a node is paused.
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
	fmt.Fprintf(&b, "\nMedians of %d runs per benchmark, except success %% (the worst run) and the peak counts (the highest run).\n"+
		"ours/redsync: higher is better for cycles/s, lower for ms, allocs and bytes.\n", r.runs())
	return b.String()
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
