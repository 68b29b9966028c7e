package redlock

import (
	"context"
	"errors"
	"fmt"
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

// replyDecoders holds every generated reply decoder, in the order of
// scriptRegistry: array for scripts whose replies are {..}, number for the
// others.
var replyDecoders = []struct {
	name   string
	array  func(interface{}, error) ([]interface{}, error)
	number func(interface{}, error) (int64, error)
}{
	{name: "acquire", array: acquireReply},
	{name: "acquire_fenced", array: acquireFencedReply},
	{name: "extend", number: extendReply},
	// One element per key: fuzzed as a call of three keys, which is what
	// declaredArity reads from "{flag_1, ..., flag_n}".
	{name: "extend_many", array: func(reply interface{}, err error) ([]interface{}, error) { return extendManyReply(reply, err, 3) }},
	{name: "fence", number: fenceReply},
	{name: "inspect", array: inspectReply},
	{name: "release", number: releaseReply},
}

// declaredArity returns the number of elements the header of s declares
// for its array replies ({a, b} ...), or 0 for an integer script.
func declaredArity(s Script) int {
	r := s.Returns[0]
	if !strings.HasPrefix(r, "{") {
		return 0
	}
	return strings.Count(r[:strings.Index(r, "}")], ",") + 1
}

// fuzzReply builds a reply value from prog, as redigo would deliver it: each
// byte picks a shape (integer, bulk string, nil, error reply, status
// string, array); an array takes its length from the next byte and nests at
// most three deep. It returns the value and the unread bytes.
func fuzzReply(prog []byte, n int64, s string, depth int) (interface{}, []byte) {
	if len(prog) == 0 {
		return nil, nil
	}
	op := prog[0]
	prog = prog[1:]
	switch op % 8 {
	case 0:
		return n, prog
	case 1:
		return int64(op >> 3), prog
	case 2:
		return []byte(s), prog
	case 3:
		return nil, prog
	case 4:
		return redis.Error(s), prog
	case 5:
		return s, prog
	default:
		if depth >= 3 || len(prog) == 0 {
			return []interface{}{}, prog
		}
		arr := make([]interface{}, int(prog[0]%6))
		prog = prog[1:]
		for i := range arr {
			arr[i], prog = fuzzReply(prog, n, s, depth+1)
		}
		return arr, prog
	}
}

// FuzzScriptReplies feeds arbitrary reply shapes to every generated reply
// decoder: none panics; an accepted array has exactly the arity its header
// declares and an accepted integer is what redis.Int64 reads; a non-nil err
// argument, or an error reply, comes back unchanged; any other rejection is
// a "redlock: <script>: unexpected reply" error.
func FuzzScriptReplies(f *testing.F) {
	if len(replyDecoders) != len(scriptRegistry) {
		f.Fatalf("%d reply decoders under test, %d scripts: add the new script's decoder to replyDecoders", len(replyDecoders), len(scriptRegistry))
	}
	arity := map[string]int{}
	for i, s := range scriptRegistry {
		if replyDecoders[i].name != s.Name || (replyDecoders[i].array != nil) != (declaredArity(s) > 0) {
			f.Fatalf("replyDecoders[%d] is %q, want the decoder of script %q (array replies: %v)", i, replyDecoders[i].name, s.Name, declaredArity(s) > 0)
		}
		arity[s.Name] = declaredArity(s)
	}
	f.Fuzz(func(t *testing.T, prog []byte, n int64, s string, errKind uint8) {
		reply, _ := fuzzReply(prog, n, s, 0)
		var in error
		switch errKind % 4 {
		case 1:
			in = errors.New(s) // a transport error
		case 2:
			in = redis.Error("NOSCRIPT " + s)
		case 3:
			in = fmt.Errorf("read: %w", context.DeadlineExceeded)
		}
		replyErr, isErrorReply := reply.(redis.Error)
		for _, d := range replyDecoders {
			var (
				err    error
				accept func() bool // whether the accepted value is right
			)
			if d.array != nil {
				vals, derr := d.array(reply, in)
				err = derr
				accept = func() bool {
					r, ok := reply.([]interface{})
					return ok && len(r) == arity[d.name] && len(vals) == len(r)
				}
				if derr != nil && vals != nil {
					t.Fatalf("%sReply(%#v, %v) = %v with error %v; want nil with an error", d.name, reply, in, vals, derr)
				}
			} else {
				v, derr := d.number(reply, in)
				err = derr
				accept = func() bool {
					want, werr := redis.Int64(reply, nil)
					return werr == nil && v == want
				}
				if derr != nil && v != 0 {
					t.Fatalf("%sReply(%#v, %v) = %d with error %v; want 0 with an error", d.name, reply, in, v, derr)
				}
			}
			switch {
			case in != nil:
				// Identity, not errors.Is: the error must come back unwrapped.
				if err != in {
					t.Fatalf("%sReply(%#v, %v): error %v, want the err argument unchanged", d.name, reply, in, err)
				}
			case isErrorReply:
				if err != replyErr {
					t.Fatalf("%sReply(%#v, nil): error %v, want the error reply unchanged", d.name, reply, err)
				}
			case err == nil:
				if !accept() {
					t.Fatalf("%sReply(%#v, nil) accepted a reply its header does not declare", d.name, reply)
				}
			default:
				if !strings.HasPrefix(err.Error(), "redlock: "+d.name+": unexpected reply") {
					t.Fatalf("%sReply(%#v, nil): error %q does not start with \"redlock: %s: unexpected reply\"", d.name, reply, err, d.name)
				}
				if d.array != nil {
					if r, ok := reply.([]interface{}); ok && len(r) == arity[d.name] {
						t.Fatalf("%sReply rejected a reply of the declared %d elements: %v", d.name, arity[d.name], err)
					}
				} else if _, werr := redis.Int64(reply, nil); werr == nil {
					t.Fatalf("%sReply rejected %#v, which redis.Int64 reads: %v", d.name, reply, err)
				}
			}
		}
	})
}

// FuzzInfoField checks that infoField never panics and that a non-empty
// value it returns is the trimmed text after "name:" on some line of info
// (so it never holds a newline).
func FuzzInfoField(f *testing.F) {
	f.Fuzz(func(t *testing.T, info, name string) {
		v := infoField(info, name)
		if strings.Contains(v, "\n") {
			t.Fatalf("infoField(%q, %q) = %q: contains a newline", info, name, v)
		}
		if v == "" {
			return
		}
		for _, line := range strings.Split(info, "\n") {
			if rest, ok := strings.CutPrefix(line, name+":"); ok && strings.TrimSpace(rest) == v {
				return
			}
		}
		t.Fatalf("infoField(%q, %q) = %q: not the trimmed text after %q on any line", info, name, v, name+":")
	})
}
