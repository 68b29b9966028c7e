package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

// page renders docs/benchmarks.md.
func (r *results) page(table, cmd, note string, raw []byte) string {
	var b strings.Builder
	b.WriteString("# Benchmarks: redlock vs go-redsync/redsync v4\n\n")
	b.WriteString("<!-- Written by bench/cmd/report (`make bench`); edit the program, not this page. -->\n\n")
	fmt.Fprintf(&b, "Latest `%s`, %s.\n\n", cmd, time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	if note != "" {
		fmt.Fprintf(&b, "> **Note:** %s\n\n", note)
	}
	b.WriteString(table)
	b.WriteString("\n## Machine\n\n")
	for _, kv := range r.machine() {
		fmt.Fprintf(&b, "- %s: %s\n", kv[0], kv[1])
	}
	b.WriteString("\n## Command\n\n```\n" + cmd + "\n```\n\n")
	b.WriteString(method)
	b.WriteString("\n## Raw output\n\n<details><summary>go test -bench output (benchstat reads it)</summary>\n\n```\n")
	b.WriteString(strings.TrimRight(string(raw), "\n"))
	b.WriteString("\n```\n\n</details>\n")
	return b.String()
}

// machine describes where the run happened.
func (r *results) machine() [][2]string {
	cpu := r.header["cpu"]
	if m := cpuModel(); m != "" {
		cpu = m
	}
	return [][2]string{
		{"CPUs (nproc)", fmt.Sprint(runtime.NumCPU())},
		{"CPU model", orUnknown(cpu)},
		{"OS/arch", runtime.GOOS + "/" + runtime.GOARCH},
		{"redis-server", orUnknown(commandLine("redis-server", "--version"))},
		{"go", runtime.Version()},
		{"redlock source", r.source()},
		{"load average at report time", orUnknown(loadAvg())},
	}
}

// source is the library revision the benchmarks printed, or the one here
// now when the output predates that line.
func (r *results) source() string {
	if v := r.header["redlock-source"]; v != "" {
		return v
	}
	if v := commandLine("git", "-C", "..", "describe", "--always", "--dirty"); v != "" {
		return v + " (at report time; the output does not say)"
	}
	return "unknown"
}

func cpuModel() string {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

func commandLine(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// method explains the scenarios and the settings; keep it in step with
// the benchmarks in bench/.
const method = `## What is measured

Every scenario runs every contender, one after the other, in ONE ` + "`go test`" + ` process
against the SAME five ` + "`redis-server`" + ` processes, which the bench module's TestMain
starts on free 127.0.0.1 ports (` + "`--save \"\" --appendonly no`" + `, temp dirs, killed at the
end). The contenders are redlock on its own transport (Addr), redlock on caller-owned
redigo pools (Pool) and redsync, with the same settings:

| setting | redlock Addr | redlock Pool | redsync v4.18.1 (redigo driver) |
|---|---|---|---|
| nodes | 5 × ` + "`redlock.Addr`" + ` | 5 × ` + "`redlock.Pool(p)`" + ` | 5 × ` + "`redigo.NewPool(p)`" + ` |
| connections per node | the library's design: one auto-pipelined connection per node (plus one Pub/Sub connection per node while a Lock waits for a release) | what the library borrows from ` + "`p`" + ` | what redsync borrows from ` + "`p`" + ` |
| the pools ` + "`p`" + ` | — | ` + "`&redis.Pool{MaxIdle: 64, MaxActive: 64, Wait: true}`" + `, dial/read/write timeout 500ms: a new set per run, made and closed by the benchmark | the same |
| per-node timeout | ` + "`WithNodeTimeout(500ms)`" + ` | ` + "`WithNodeTimeout(500ms)`" + ` | redigo connect/read/write timeout 500ms |
| TTL | 8s | 8s | ` + "`WithExpiry(8s)`" + ` (its default) |
| attempts (a, b, e, f) | ` + "`WithRetryCount(1)`" + ` | ` + "`WithRetryCount(1)`" + ` | ` + "`WithTries(1)`" + ` |
| waiter (c) | ` + "`WithRetryCount(1<<20)`" + `, default delay (100–300ms) | the same | ` + "`WithTries(1<<20)`" + `, default delay (50–250ms) |
| scripts | ` + "`LoadScripts`" + ` first | ` + "`LoadScripts`" + ` first | loaded on first NOSCRIPT |

Each run warms the client up first (a few cycles at the run's parallelism), then
times only the measured loop. Resource names are distinct and built before the
timer starts.

- **a. cycle** (` + "`BenchmarkCycle/{lib}/{p1,p64}`" + `): Lock+Unlock on a new resource per op,
  by 1 goroutine and by 64. cycles/s is ops over wall time; p50/p99 are per-cycle
  latencies; allocs/op and B/op come from ` + "`-benchmem`" + `.
- **b. one node paused** (` + "`BenchmarkPausedNode/{lib}/{p1,p16}`" + `): the same cycles while one
  of the five servers is stopped with SIGSTOP for the whole measured loop (the
  kernel still accepts connections and buffers requests; nothing answers).
  success % counts cycles whose Lock and Unlock both succeeded; peak goroutines
  is the highest ` + "`runtime.NumGoroutine()`" + ` above the count before the loop (the
  workers included; the one worker of p=1 is the benchmark's own goroutine, so
  "no growth" is 0 there and 16 at p=16), sampled every 2ms; peak conns is the
  highest number of established TCP connections to the paused server's port,
  asked of the kernel (sock_diag) every 10ms: the same count for every contender
  (redlock's transport and the redigo pools alike), whether the paused server
  accepted them or not. The loop's length comes from ` + "`-benchtime`" + ` (time, not a
  fixed count), because every redsync cycle waits for the paused node: a fixed
  200 cycles at p=1 would take more than three minutes per run.
- **c. handoff** (` + "`BenchmarkHandoff/{lib}`" + `): a holder client takes a resource; a waiter
  client (its own pools) blocks in Lock on it; after 10–50ms (uniform) the holder
  unlocks. The handoff latency is the time from the holder's Unlock returning to
  the waiter's Lock returning. ns/op is the whole op (hold included); p50/p99 are
  the handoff.
- **d. ceiling** (` + "`BenchmarkCeiling`" + `): redlock's own acquire and release scripts sent as
  raw EVALSHA (one key each) to all five servers at once over redigo pipelines
  (2 connections per node, 128 pairs = 256 commands per flush), no lock logic.
  One op is one pair on every node, the server work of one lock cycle, so
  pairs/s is R; no Redlock client on this machine can exceed R cycles/s. R runs
  first and moves with the machine's load like everything else, so read the
  share of R within one run. The latency floor F (` + "`BenchmarkFloor`" + `) is the p=1
  counterpart: one goroutine, one plain connection per node, the acquire script
  written to all five then the five replies read, then the release the same way,
  no lock logic. No client's p=1 cycle on this machine can beat F.
- **e. fenced cycle** (` + "`BenchmarkFencedCycle/{redlock-addr,redlock-pool}/p64`" + `): scenario a at
  p=64 with ` + "`WithFencing()`" + ` (every Lock must carry a fencing token), compared with
  the unfenced p=64 cycles of the same contender in the same run.
- **f. Sentinel** (` + "`BenchmarkSentinel/{healthy,replica-paused}/{acks0,acks1}`" + `): processes
  started for this scenario only, besides the five servers: a master, ONE replica
  (` + "`--replicaof`" + `) and three ` + "`redis-sentinel`" + `s, all on 127.0.0.1, used as the only node
  of a Manager (` + "`redlock.Sentinel`" + `, node timeout 500ms, one attempt) by 16 goroutines
  running scenario a's cycles, with ` + "`MinReplicaAcks: 1, ReplicaAckTimeout: 100ms`" + ` side by
  side with ` + "`MinReplicaAcks: 0`" + `. replica-paused stops the replica with SIGSTOP for the
  whole measured loop: no acquire can then be acknowledged, so with acks 1 every
  Lock fails, and must fail within node timeout + ReplicaAckTimeout (Lock max ms
  is the slowest Lock of the worst run). WAIT and EVALSHA calls are the master's
  ` + "`INFO commandstats`" + ` between a ` + "`CONFIG RESETSTAT`" + ` before the measured loop and the
  Manager's Close after it; a cycle sends two scripts (acquire, release), so one
  WAIT per write is 0.5 WAIT per EVALSHA and 1 WAIT per Lock.
- **g. top-up** (` + "`BenchmarkTopUp/{cycle,handoff}/{topup-on,topup-off}`" + `): scenario a (p=1, p=64) and
  scenario c on ` + "`redlock.Addr`" + ` nodes with ` + "`WithTopUp(true)`" + ` (the default, which every
  other scenario runs) and ` + "`WithTopUp(false)`" + `, in the same run. Top-up costs at most 5%
  of the uncontended cycle rate (on / off ≥ 0.95).
- **h. waiters** (` + "`BenchmarkWaiters/{redlock-addr,redsync}/{k2,k8,k32,m4k32}`" + `): K goroutines
  take turns on ONE resource (Lock, hold 1 ms, Unlock, again) until b.N acquisitions,
  each with an unbounded attempt budget and the library's default retry delay; one
  client (one Manager), or four for m4k32. Wait = one Lock call; max/min compares the
  acquisitions of the luckiest and the unluckiest goroutine; scripts per acquisition
  per node come from the nodes' INFO commandstats.
- **i. held locks** (` + "`BenchmarkHeldLocks/{h1000,h10000,h50000}`" + `): the live heap (after GC)
  per lock while one Manager holds H locks, and after it unlocked them all.
- **j. many Do** (` + "`BenchmarkManyDo/{d5000,d20000}`" + `): D concurrent ` + "`Do`" + ` (ttl 1 s, each
  function sleeps 4 s) on one Manager; goroutines and script calls are read over two
  seconds while every lock is held, when only the keep-alive talks to the nodes.

Profile ours, for example:

` + "```" + `
cd bench && go test -run '^$' -bench 'Cycle/redlock-addr/p64' -benchtime 5s -cpuprofile cpu.out
go tool pprof -top bench.test cpu.out
` + "```" + `
`
