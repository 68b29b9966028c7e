package pipe

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
)

// FuzzPipeReplies feeds arbitrary bytes as a node's reply stream, read by
// redigo's own reader over net.Pipe, to a pipe with n requests (every other
// one with ack, behind a barrier): it never panics, every request's Done
// runs exactly once, and Close returns.
//
// mode bit 0: the connection cannot be interrupted (a borrowed one);
// bit 1: the node keeps the connection open after the stream (else it
// closes it); bit 2: Close at once, with the requests in flight.
func FuzzPipeReplies(f *testing.F) {
	f.Add([]byte("+OK\r\n+OK\r\n"), uint8(2), uint8(0))
	f.Add([]byte(":1\r\n:2\r\n$3\r\nfoo\r\n:2\r\n"), uint8(3), uint8(1))
	f.Add([]byte("-READONLY You can't write against a read only replica.\r\n+OK\r\n"), uint8(4), uint8(0))
	f.Add([]byte("-NOSCRIPT No matching script. Please use EVAL.\r\n:1\r\n"), uint8(2), uint8(2))
	f.Add([]byte("+OK\r\n+OK\r\n+OK\r\n+OK\r\n"), uint8(1), uint8(0))
	f.Add([]byte("*2\r\n:1\r\n*1\r\n$-1\r\n"), uint8(2), uint8(3))
	f.Add([]byte("$10\r\nabc"), uint8(1), uint8(4))
	f.Add([]byte("hello\r\n"), uint8(5), uint8(0))
	f.Add([]byte(""), uint8(3), uint8(2))

	f.Fuzz(func(t *testing.T, stream []byte, n uint8, mode uint8) {
		if hugeLength(stream) {
			t.Skip("redigo allocates a declared length before reading it")
		}
		var servers sync.WaitGroup
		dial := func(context.Context) (redis.Conn, error) {
			client, server := net.Pipe()
			servers.Add(2)
			go func() { // reads every command, until the pipe closes its end
				defer servers.Done()
				_, _ = io.Copy(io.Discard, server)
				server.Close()
			}()
			go func() {
				defer servers.Done()
				_, _ = server.Write(stream)
				if mode&2 == 0 {
					server.Close()
				}
			}()
			return redis.NewConn(client, 0, 0), nil
		}
		p := New(Options{
			Dial:          dial,
			Timeout:       20 * time.Millisecond,
			Interruptible: mode&1 == 0,
			Fatal:         func(e redis.Error) bool { return strings.HasPrefix(string(e), "READONLY") },
			Barrier:       func() (string, []interface{}) { return "WAIT", []interface{}{1, 10} },
		})
		reqs := make([]*countingReq, int(n%16)+1)
		for i := range reqs {
			reqs[i] = &countingReq{ack: i%2 == 1}
			p.Submit(reqs[i])
		}
		if mode&4 == 0 {
			deadline := time.Now().Add(5 * time.Second)
			for _, r := range reqs {
				for r.calls.Load() == 0 && time.Now().Before(deadline) {
					time.Sleep(time.Millisecond)
				}
			}
		}
		p.Close()
		servers.Wait()
		for i, r := range reqs {
			if c := r.calls.Load(); c != 1 {
				t.Fatalf("request %d: Done ran %d times, want exactly once", i, c)
			}
		}
	})
}

// countingReq counts its Done calls.
type countingReq struct {
	ack   bool
	calls atomic.Int32
}

func (r *countingReq) Command() (string, []interface{}, bool) {
	return "SET", []interface{}{"k", "v"}, r.ack
}

func (r *countingReq) Done(interface{}, error, interface{}) { r.calls.Add(1) }

// hugeLength reports whether the stream may declare an array or bulk
// string longer than 4096 (anywhere: being conservative is fine).
func hugeLength(stream []byte) bool {
	for i, b := range stream {
		if b != '*' && b != '$' {
			continue
		}
		n := 0
		for _, d := range stream[i+1:] {
			if d < '0' || d > '9' {
				break
			}
			if n = n*10 + int(d-'0'); n > 4096 {
				return true
			}
		}
	}
	return false
}
