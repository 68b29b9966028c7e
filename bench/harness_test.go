package bench

import (
	"net"
	"runtime"
	"testing"
	"time"
)

func TestPercentileIsNearestRank(t *testing.T) {
	d := []time.Duration{5, 1, 4, 2, 3, 10, 9, 8, 7, 6}
	if got := percentile(d, 0.5); got != 5 {
		t.Errorf("p50 of 1..10 = %d, want 5", got)
	}
	if got := percentile(d, 0.99); got != 10 {
		t.Errorf("p99 of 1..10 = %d, want 10", got)
	}
	if got := percentile(nil, 0.5); got != 0 {
		t.Errorf("p50 of nothing = %d, want 0", got)
	}
}

func TestConnCounterCountsClientSideOfEstablishedConnections(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("counts with Linux's sock_diag")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c := connCounter{port: l.Addr().(*net.TCPAddr).Port}
	if n, err := c.count(); err != nil || n != 0 {
		t.Fatalf("before dialling: %d connections, %v; want 0", n, err)
	}
	for range 3 {
		conn, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
	}
	// Not accepted: the kernel has established them all the same, as for a
	// paused server.
	if n, err := c.count(); err != nil || n != 3 {
		t.Fatalf("after 3 dials: %d connections, %v; want 3", n, err)
	}
}

func TestParseCommandCallsReadsCallsPerCommand(t *testing.T) {
	info := "# Commandstats\r\n" +
		"cmdstat_evalsha:calls=1200,usec=3400,usec_per_call=2.83,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_wait:calls=75,usec=90000,usec_per_call=1200.00,rejected_calls=0,failed_calls=0\r\n"
	calls, err := parseCommandCalls(info)
	if err != nil {
		t.Fatal(err)
	}
	if calls["evalsha"] != 1200 || calls["wait"] != 75 || len(calls) != 2 {
		t.Errorf("calls = %v, want evalsha 1200, wait 75 and nothing else", calls)
	}
}
