package bench

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"

	"github.com/redlock-go/redlock"
)

// The ceiling's client: ceilingConns connections per node, each sending
// ceilingDepth script pairs (2*ceilingDepth commands) per flush.
const (
	ceilingConns = 2
	ceilingDepth = 128
)

// BenchmarkCeiling is scenario d: what the five servers themselves can
// execute. It sends redlock's own acquire and release scripts (EVALSHA,
// one key each, acquire then release of the same key in the same pipeline)
// to all nodes at once over deep redigo pipelines, with no lock logic. One
// op is one script pair on EVERY node, the server work of one lock cycle,
// so pairs/s (= ops/s) is R, the script pairs per node per second, and no
// Redlock client on this machine can run more than R cycles/s.
func BenchmarkCeiling(b *testing.B) {
	acquire, release := scriptSHA1(b, "acquire"), scriptSHA1(b, "release")
	conns := make([][]redis.Conn, len(addrs))
	defer func() {
		for _, cs := range conns {
			for _, c := range cs {
				c.Close()
			}
		}
	}()
	for i, a := range addrs {
		for range ceilingConns {
			c, err := redis.Dial("tcp", a, redis.DialConnectTimeout(time.Second),
				redis.DialReadTimeout(10*time.Second), redis.DialWriteTimeout(10*time.Second))
			if err != nil {
				b.Fatalf("dial %s: %v", a, err)
			}
			conns[i] = append(conns[i], c)
		}
		if err := loadScripts(conns[i][0]); err != nil {
			b.Fatalf("%s: %v", a, err)
		}
	}
	run := runSeq.Add(1)
	todo := make([]atomic.Int64, len(addrs)) // pairs left per node
	for i := range todo {
		todo[i].Store(int64(b.N))
	}
	errs := make(chan error, len(addrs)*ceilingConns)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for node, cs := range conns {
		for ci, c := range cs {
			// Distinct keys per connection; a pipeline acquires and
			// releases each of its keys, so a batch can reuse them.
			acq := make([][]interface{}, ceilingDepth)
			rel := make([][]interface{}, ceilingDepth)
			token := fmt.Sprintf("ceiling-token-%d", ci)
			for j := range acq {
				key := fmt.Sprintf("bench:%d:ceiling:%d:%d:%d", run, node, ci, j)
				acq[j] = []interface{}{acquire, 1, key, token, lockTTL.Milliseconds()}
				rel[j] = []interface{}{release, 1, key, token}
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := pipelinePairs(c, &todo[node], acq, rel); err != nil {
					errs <- fmt.Errorf("node %d: %w", node, err)
				}
			}()
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "pairs/s")
}

// pipelinePairs takes batches of up to len(acq) pairs from todo until none
// is left; per batch it sends every acquire/release pair, flushes once and
// reads and checks every reply.
func pipelinePairs(c redis.Conn, todo *atomic.Int64, acq, rel [][]interface{}) error {
	depth := int64(len(acq))
	for {
		left := todo.Add(-depth)
		n := depth
		if left < 0 {
			n += left
		}
		if n <= 0 {
			return nil
		}
		for j := range n {
			if err := c.Send("EVALSHA", acq[j]...); err != nil {
				return err
			}
			if err := c.Send("EVALSHA", rel[j]...); err != nil {
				return err
			}
		}
		if err := c.Flush(); err != nil {
			return err
		}
		for range n {
			a, err := redis.Values(c.Receive())
			if err != nil {
				return fmt.Errorf("acquire: %w", err)
			}
			if ok, _ := redis.Int(a[0], nil); len(a) != 2 || ok != 1 {
				return fmt.Errorf("acquire on a free key: reply %v", a)
			}
			if r, err := redis.Int(c.Receive()); err != nil || r != 1 {
				return fmt.Errorf("release of an own key: reply %d, %v", r, err)
			}
		}
	}
}

// scriptSHA1 returns the digest of one of redlock's scripts.
func scriptSHA1(b *testing.B, name string) string {
	for _, s := range redlock.Scripts() {
		if s.Name == name {
			return s.SHA1
		}
	}
	b.Fatalf("redlock.Scripts() has no %q script", name)
	return ""
}

// loadScripts sends SCRIPT LOAD for every redlock script on c and checks
// the digests.
func loadScripts(c redis.Conn) error {
	for _, s := range redlock.Scripts() {
		sum, err := redis.String(c.Do("SCRIPT", "LOAD", s.Source))
		if err != nil {
			return fmt.Errorf("SCRIPT LOAD %s: %w", s.Name, err)
		}
		if sum != s.SHA1 {
			return fmt.Errorf("SCRIPT LOAD %s: digest %s, want %s", s.Name, sum, s.SHA1)
		}
	}
	return nil
}

// BenchmarkFloor is scenario d's latency floor: one goroutine, one plain
// redigo connection per node, no lock logic at all. One op is one
// uncontended cycle's round trips done the fastest way a client on this
// machine can: the acquire script written to every node, the replies read,
// then the release script the same way. No client's p=1 cycle can beat it:
// cycles/s here bounds scenario a's p=1 for every library.
func BenchmarkFloor(b *testing.B) {
	acquire, release := scriptSHA1(b, "acquire"), scriptSHA1(b, "release")
	conns := make([]redis.Conn, len(addrs))
	for i, a := range addrs {
		c, err := redis.Dial("tcp", a, redis.DialConnectTimeout(time.Second),
			redis.DialReadTimeout(10*time.Second), redis.DialWriteTimeout(10*time.Second))
		if err != nil {
			b.Fatalf("dial %s: %v", a, err)
		}
		defer c.Close()
		if err := loadScripts(c); err != nil {
			b.Fatalf("%s: %v", a, err)
		}
		conns[i] = c
	}
	run := runSeq.Add(1)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for n := 0; n < b.N; n++ {
		key := fmt.Sprintf("floor:%d:%d", run, n)
		for _, args := range [][]interface{}{{acquire, 1, key, "tok", lockTTL.Milliseconds()}, {release, 1, key, "tok"}} {
			for _, c := range conns {
				err := c.Send("EVALSHA", args...)
				if err == nil {
					err = c.Flush()
				}
				if err != nil {
					b.Fatalf("floor: %v", err)
				}
			}
			for _, c := range conns {
				if _, err := c.Receive(); err != nil {
					b.Fatalf("floor: %v", err)
				}
			}
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "cycles/s")
}
