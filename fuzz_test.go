package redlock

import (
	"errors"
	"strings"
	"testing"

	"github.com/gomodule/redigo/redis"
)

// FuzzParseInstance checks that no spec makes ParseInstance, URL or
// SentinelURL panic, that every rejection wraps ErrInvalidArgument, and that
// an accepted spec prints without its password.
func FuzzParseInstance(f *testing.F) {
	for _, s := range []string{
		"localhost:6379", "redis://localhost:6379/2", "rediss://:pw@h:6380/1?ssl_cert_reqs=CERT_NONE",
		"unix:///tmp/r.sock?db=3", "redis://localhost:26379/4?master=leader&encoding=utf-8",
		"rediss://:password@localhost:26379/5?master=leader&encoding=utf-8&ssl_cert_reqs=CERT_NONE",
		"redis+sentinel://h1:26379,h2:26379/0?master=m", "redis://:@", "redis://[::1]:1/0", "h:1:2",
		"redis://u:p@h:1?password=q&db=2", "redis+sentinel://:p@h/0?master=m&sentinel_password=s",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		inst, err := ParseInstance(spec)
		if err != nil {
			if !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("ParseInstance(%q): error %v does not wrap ErrInvalidArgument", spec, err)
			}
		} else {
			checkRedacted(t, inst)
		}
		for _, inst := range []Instance{URL(spec), SentinelURL(spec)} {
			n, err := inst.newNode()
			if err != nil {
				if !errors.Is(err, ErrInvalidArgument) {
					t.Fatalf("%T(%q): error %v does not wrap ErrInvalidArgument", inst, spec, err)
				}
				continue
			}
			n.shutdown()
		}
	})
}

func checkRedacted(t *testing.T, inst Instance) {
	var pw string
	switch v := inst.(type) {
	case Sentinel:
		pw = v.Password
	case urlInstance:
		e, err := parseURL(string(v))
		if err != nil {
			t.Fatalf("ParseInstance accepted %q but parseURL rejects it: %v", v, err)
		}
		pw = e.Password
	}
	if len(pw) >= 4 && strings.Contains(inst.String(), pw) {
		t.Fatalf("String() of %T contains the password", inst)
	}
}

// FuzzDecodeReplies feeds arbitrary reply shapes to the script-reply
// decoders: they must return an error, never panic.
func FuzzDecodeReplies(f *testing.F) {
	f.Add(int64(1), int64(1000), []byte("tok"), uint8(2), uint8(0))
	f.Add(int64(0), int64(-1), []byte(""), uint8(2), uint8(1))
	f.Add(int64(7), int64(-2), []byte("x"), uint8(3), uint8(2))
	f.Fuzz(func(t *testing.T, a, b int64, s []byte, n, shape uint8) {
		elems := []interface{}{a, b, s, string(s), nil, []interface{}{a}, errors.New("ERR")}
		reply := make([]interface{}, int(n%5))
		for i := range reply {
			reply[i] = elems[(int(shape)+i*int(a&7+1))%len(elems)]
		}
		ok, pttl, err := decodeAcquire(reply)
		if err == nil {
			// Accepted: exactly two elements, a 0/1 flag, and the second
			// element as the ttl, whatever integer-like form they came in.
			flag, ferr := redis.Int64(reply[0], nil)
			want, werr := redis.Int64(reply[1], nil)
			if len(reply) != 2 || ferr != nil || werr != nil || (flag == 1) != ok || (flag != 0 && flag != 1) || pttl != want {
				t.Fatalf("decodeAcquire(%v) = %v, %v, nil", reply, ok, pttl)
			}
		}
		if _, _, err := decodeInspect(reply); err == nil && len(reply) != 2 {
			t.Fatalf("decodeInspect(%v) accepted a reply of %d elements", reply, len(reply))
		}
	})
}
