package bench

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/redlock-go/redlock"
)

// The Sentinel scenario's setup.
const (
	// sentinelMaster is the master name the Sentinels know the group by.
	sentinelMaster = "bench"
	// sentinelCount is the number of redis-sentinel processes; their
	// quorum is sentinelCount/2+1.
	sentinelCount = 3
	// sentinelLockers is the number of goroutines locking at once.
	sentinelLockers = 16
	// replicaAckTimeout is the Sentinel node's ReplicaAckTimeout (the WAIT
	// timeout) with MinReplicaAcks 1.
	replicaAckTimeout = 100 * time.Millisecond
)

// BenchmarkSentinel is scenario f: one Sentinel group (a master, ONE
// replica, sentinelCount Sentinels) as the only node of a Manager,
// sentinelLockers goroutines running the cycles of scenario a, with
// redlock.Sentinel{MinReplicaAcks: 1} (every acquire waits for the
// replica's acknowledgement, WAIT 1 replicaAckTimeout) side by side with
// MinReplicaAcks 0 (no WAIT):
//
//   - healthy/acks{0,1}: the replica answers; compare cycles/s.
//   - replica-paused/acks{0,1}: the replica is stopped with SIGSTOP for
//     the whole measurement. With acks 1 no acquire can be acknowledged, so
//     every Lock fails (one node: no quorum without its vote); what counts
//     is that it fails in time, within nodeTimeout + replicaAckTimeout.
//
// Besides the cycle metrics it reports the Lock call's own latency
// (lock-p99-ms, max-lock-ms: the slowest Lock of the run), that bound
// (bound-ms), and the master's INFO commandstats over the measured loop:
// wait-calls and evalsha-calls (the Manager is closed first, so that the
// releases it finishes in the background are counted), their ratio
// (wait/evalsha; one WAIT per write would be 0.5, as a cycle sends two
// scripts) and WAITs per Lock (waits/lock; one per write would be 1).
func BenchmarkSentinel(b *testing.B) {
	g, err := startSentinelGroup()
	if err != nil {
		b.Fatalf("Sentinel group: %v", err)
	}
	defer g.stop()
	for _, replica := range []string{"healthy", "replica-paused"} {
		for _, acks := range []int{0, 1} {
			b.Run(fmt.Sprintf("%s/acks%d", replica, acks), func(b *testing.B) {
				inst := redlock.Sentinel{
					Addrs:             g.sentinelAddrs(),
					Master:            sentinelMaster,
					MinReplicaAcks:    acks,
					ReplicaAckTimeout: replicaAckTimeout,
				}
				c := openManager(b, []redlock.Instance{inst}, false,
					redlock.WithNodeTimeout(nodeTimeout), redlock.WithRetryCount(1))
				closed := false
				closeClient := func() {
					if !closed {
						closed = true
						c.close()
					}
				}
				defer closeClient()
				warm(b, c, sentinelLockers)
				names := resourceNames("sentinel", b.N)
				resume := func() {}
				if replica == "replica-paused" {
					if err := g.replica.pause(); err != nil {
						b.Fatalf("SIGSTOP replica: %v", err)
					}
					resumed := false
					resume = func() {
						if !resumed {
							resumed = true
							if err := g.replica.resume(); err != nil {
								b.Fatalf("SIGCONT replica: %v", err)
							}
							// The next run's warm-up needs its acknowledgements.
							if err := g.waitReplica(30 * time.Second); err != nil {
								b.Fatalf("after SIGCONT: %v", err)
							}
						}
					}
					defer resume()
				}
				if _, err := do(g.master.addr, "CONFIG", "RESETSTAT"); err != nil {
					b.Fatalf("CONFIG RESETSTAT on the master: %v", err)
				}
				b.ReportAllocs()
				r := runCycles(b, c, sentinelLockers, names)
				closeClient()
				resume()
				calls, err := commandCalls(g.master.addr)
				if err != nil {
					b.Fatalf("INFO commandstats on the master: %v", err)
				}
				if r.fails > 0 && (replica == "healthy" || acks == 0) {
					b.Logf("%d of %d cycles failed; first: %v", r.fails, b.N, r.firstErr)
				}
				reportCycles(b, r)
				b.ReportMetric(ms(percentile(r.lockLat, 0.99)), "lock-p99-ms")
				b.ReportMetric(ms(slices.Max(r.lockLat)), "max-lock-ms")
				b.ReportMetric(ms(nodeTimeout+replicaAckTimeout), "bound-ms")
				waits, evalshas := calls["wait"], calls["evalsha"]
				b.ReportMetric(float64(waits), "wait-calls")
				b.ReportMetric(float64(evalshas), "evalsha-calls")
				b.ReportMetric(float64(waits)/float64(max(evalshas, 1)), "wait/evalsha")
				b.ReportMetric(float64(waits)/float64(b.N), "waits/lock")
			})
		}
	}
}

// sentinelGroup is the Sentinel scenario's processes, all on 127.0.0.1 in
// temp dirs.
type sentinelGroup struct {
	master    *server
	replica   *server // --replicaof master
	sentinels []*server
}

// startSentinelGroup starts a master, its replica and sentinelCount
// Sentinels monitoring it as sentinelMaster, and returns once the replica
// is in sync and every Sentinel knows the master and sees the replica. On
// failure it stops whatever it started.
func startSentinelGroup() (_ *sentinelGroup, err error) {
	serverBin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errors.New("redis-server not found on PATH (bash scripts/ensure-redis.sh installs it)")
	}
	sentinelBin, err := exec.LookPath("redis-sentinel")
	if err != nil {
		return nil, errors.New("redis-sentinel not found on PATH; the Sentinel benchmark runs a real Sentinel group.\n" +
			"Install it, then run again:\n" +
			"  Debian/Ubuntu: sudo apt-get install -y redis-sentinel   (or: bash scripts/ensure-redis.sh)\n" +
			"  macOS:         brew install redis")
	}
	g := &sentinelGroup{}
	defer func() {
		if err != nil {
			g.stop()
		}
	}()
	// No 5s wait before the replica's full sync.
	if g.master, err = startServer(serverBin, "--repl-diskless-sync-delay", "0"); err != nil {
		return nil, err
	}
	if g.replica, err = startServer(serverBin, "--replicaof", "127.0.0.1", strconv.Itoa(g.master.port)); err != nil {
		return nil, err
	}
	if err := g.waitReplica(30 * time.Second); err != nil {
		return nil, err
	}
	for range sentinelCount {
		s, err := startProcess(sentinelBin, func(port int, dir string) ([]string, error) {
			conf := filepath.Join(dir, "sentinel.conf")
			return []string{conf}, os.WriteFile(conf, []byte(g.sentinelConf(port, dir)), 0o644)
		})
		if err != nil {
			return nil, err
		}
		g.sentinels = append(g.sentinels, s)
	}
	return g, g.waitSentinels(30 * time.Second)
}

// sentinelConf is the config file of a Sentinel on port. The replica is
// only ever paused for a few seconds, and the master never: no failover.
func (g *sentinelGroup) sentinelConf(port int, dir string) string {
	return strings.Join([]string{
		"port " + strconv.Itoa(port),
		"bind 127.0.0.1",
		"daemonize no",
		"protected-mode no",
		fmt.Sprintf("dir %q", dir),
		fmt.Sprintf("logfile %q", filepath.Join(dir, "redis.log")),
		fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d %d", sentinelMaster, g.master.port, sentinelCount/2+1),
		fmt.Sprintf("sentinel down-after-milliseconds %s 5000", sentinelMaster),
		fmt.Sprintf("sentinel failover-timeout %s 60000", sentinelMaster),
		"",
	}, "\n")
}

func (g *sentinelGroup) sentinelAddrs() []string {
	a := make([]string, len(g.sentinels))
	for i, s := range g.sentinels {
		a[i] = s.addr
	}
	return a
}

// stop kills every process of the group that was started.
func (g *sentinelGroup) stop() {
	for _, s := range append([]*server{g.master, g.replica}, g.sentinels...) {
		if s != nil {
			s.stop()
		}
	}
}

// waitReplica waits until the master reports the replica online with
// every write the master had made when the wait began.
func (g *sentinelGroup) waitReplica(d time.Duration) error {
	deadline := time.Now().Add(d)
	target := int64(-1)
	last := ""
	for {
		info, err := redis.String(do(g.master.addr, "INFO", "replication"))
		if err == nil {
			last = info
			fields := infoFields(info)
			if target < 0 {
				target, _ = strconv.ParseInt(fields["master_repl_offset"], 10, 64)
			}
			// slave0:ip=127.0.0.1,port=N,state=online,offset=N,lag=0
			r := map[string]string{}
			for _, kv := range strings.Split(fields["slave0"], ",") {
				if k, v, ok := strings.Cut(kv, "="); ok {
					r[k] = v
				}
			}
			if off, err := strconv.ParseInt(r["offset"], 10, 64); err == nil && r["state"] == "online" && off >= target {
				return nil
			}
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("replica on port %d not in sync with the master after %v; INFO replication:\n%s", g.replica.port, d, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitSentinels waits until every Sentinel names the master and sees the
// replica with its link to the master up.
func (g *sentinelGroup) waitSentinels(d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		var err error
		for _, s := range g.sentinels {
			if err = g.sentinelReady(s); err != nil {
				err = fmt.Errorf("sentinel on port %d: %w", s.port, err)
				break
			}
		}
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sentinel group not ready after %v: %v", d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sentinelReady says why s does not know the whole group yet (nil: it does).
func (g *sentinelGroup) sentinelReady(s *server) error {
	hostPort, err := redis.Strings(do(s.addr, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", sentinelMaster))
	if err != nil {
		return err
	}
	if len(hostPort) != 2 || hostPort[0]+":"+hostPort[1] != g.master.addr {
		return fmt.Errorf("master %q, want %s", hostPort, g.master.addr)
	}
	replicas, err := redis.Values(do(s.addr, "SENTINEL", "REPLICAS", sentinelMaster))
	if err != nil {
		return err
	}
	for _, r := range replicas {
		m, err := redis.StringMap(r, nil)
		if err == nil && m["port"] == strconv.Itoa(g.replica.port) && m["flags"] == "slave" && m["master-link-status"] == "ok" {
			return nil
		}
	}
	return fmt.Errorf("does not see the replica on port %d up yet", g.replica.port)
}

// do sends one command to addr on a fresh connection with short timeouts.
func do(addr, cmd string, args ...interface{}) (interface{}, error) {
	c, err := redis.Dial("tcp", addr, redis.DialConnectTimeout(time.Second),
		redis.DialReadTimeout(2*time.Second), redis.DialWriteTimeout(2*time.Second))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Do(cmd, args...)
}

// infoFields parses an INFO reply into its key:value fields.
func infoFields(info string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(info, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && !strings.HasPrefix(k, "#") {
			m[k] = v
		}
	}
	return m
}

// commandCalls returns the calls count of every command in addr's INFO
// commandstats, by lower-case command name ("wait", "evalsha").
func commandCalls(addr string) (map[string]int64, error) {
	info, err := redis.String(do(addr, "INFO", "commandstats"))
	if err != nil {
		return nil, err
	}
	return parseCommandCalls(info)
}

// parseCommandCalls reads the calls counts of an INFO commandstats reply.
func parseCommandCalls(info string) (map[string]int64, error) {
	var err error
	calls := map[string]int64{}
	for k, v := range infoFields(info) {
		name, ok := strings.CutPrefix(k, "cmdstat_")
		if !ok {
			continue
		}
		// calls=12,usec=34,usec_per_call=2.83,rejected_calls=0,failed_calls=0
		first, _, _ := strings.Cut(v, ",")
		if n, ok := strings.CutPrefix(first, "calls="); ok {
			if calls[name], err = strconv.ParseInt(n, 10, 64); err != nil {
				return nil, fmt.Errorf("cmdstat_%s: %q", name, v)
			}
		}
	}
	return calls, nil
}
