package redlock

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseURLForms(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want Endpoint
	}{
		{"redis://localhost:6379/2", Endpoint{Addr: "localhost:6379", DB: 2}},
		{"redis://localhost", Endpoint{Addr: "localhost:6379"}},
		{"redis://localhost/3", Endpoint{Addr: "localhost:6379", DB: 3}},
		{"redis://h:7000?db=4", Endpoint{Addr: "h:7000", DB: 4}},
		{"redis://:pw@h:7000/1", Endpoint{Addr: "h:7000", DB: 1, Password: "pw"}},
		{"redis://alice:pw@h:7000", Endpoint{Addr: "h:7000", Username: "alice", Password: "pw"}},
		{"redis://h:7000/0?encoding=utf-8&password=qpw", Endpoint{Addr: "h:7000", Password: "qpw"}},
		{"redis://[::1]:7000", Endpoint{Addr: "[::1]:7000"}},
		{"unix:///var/run/redis.sock?db=5", Endpoint{Network: "unix", Addr: "/var/run/redis.sock", DB: 5}},
	} {
		t.Run(tc.raw, func(t *testing.T) {
			got, err := parseURL(tc.raw)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestParseURLTLS(t *testing.T) {
	e, err := parseURL("rediss://:pw@redis.example:6380/0?ssl_cert_reqs=CERT_NONE")
	require.NoError(t, err)
	require.NotNil(t, e.TLS)
	require.True(t, e.TLS.InsecureSkipVerify, "CERT_NONE must skip verification")
	e, err = parseURL("rediss://redis.example:6380")
	require.NoError(t, err)
	require.False(t, e.TLS.InsecureSkipVerify, "verification is the default")
	require.Equal(t, "redis.example", e.TLS.ServerName)
	require.GreaterOrEqual(t, e.TLS.MinVersion, uint16(tls.VersionTLS12))
	_, err = parseURL("rediss://h:1?ssl_cert_reqs=MAYBE")
	require.ErrorIs(t, err, ErrInvalidArgument)
}

func TestInvalidSpecsAreRejected(t *testing.T) {
	for _, spec := range []string{
		"", "host", "host:", ":6379", "host:notaport", "host:0", "host:70000",
		"redis://:@", "redis://", "redis://:pw@", "redis://h:port", "redis://h:6379/-1",
		"redis://h:6379/abc", "redis://h:6379?db=x", "ftp://h:21", "http://h:80",
		"unix://", "rediss://h:1?ssl_cert_reqs=bogus", "redis://h:/0",
		"redis+sentinel://h:26379/0", "redis+sentinel://h:26379,:1/0?master=m",
		"redis+sentinel:///0?master=m", "redis+sentinel://h:x/0?master=m",
		"redis+sentinel://h:26379/-2?master=m", "mongodb+sentinel://h:1?master=m",
	} {
		t.Run(spec, func(t *testing.T) {
			_, err := ParseInstance(spec)
			require.ErrorIs(t, err, ErrInvalidArgument, "ParseInstance(%q)", spec)
			if strings.Contains(spec, "://") && !strings.Contains(spec, "+sentinel") {
				_, err := New([]Instance{URL(spec)})
				require.ErrorIs(t, err, ErrInvalidArgument, "New(URL(%q))", spec)
			}
		})
	}
}

func TestInstanceValidationInNew(t *testing.T) {
	for name, inst := range map[string]Instance{
		"pool nil":          Pool(nil),
		"endpoint no host":  Endpoint{Addr: ":6379"},
		"endpoint bad port": Endpoint{Addr: "h:x"},
		"endpoint neg db":   Endpoint{Addr: "h:1", DB: -1},
		"endpoint network":  Endpoint{Addr: "h:1", Network: "udp"},
		"sentinel no addrs": Sentinel{Master: "m"},
		"sentinel no name":  Sentinel{Addrs: []string{"h:26379"}},
		"sentinel bad addr": Sentinel{Addrs: []string{"h"}, Master: "m"},
		"sentinel neg db":   Sentinel{Addrs: []string{"h:1"}, Master: "m", DB: -1},
		"sentinel url":      SentinelURL("redis://h:26379/0"),
		"addr":              Addr("nope"),
		"nil":               nil,
	} {
		t.Run(name, func(t *testing.T) {
			m, err := New([]Instance{Addr("127.0.0.1:6379"), inst})
			require.Nil(t, m)
			require.ErrorIs(t, err, ErrInvalidArgument)
		})
	}
}

func TestOptionValidation(t *testing.T) {
	for name, opt := range map[string]Option{
		"retry count 0":     WithRetryCount(0),
		"retry count -1":    WithRetryCount(-1),
		"delay min > max":   WithRetryDelay(2*time.Second, time.Second),
		"negative delay":    WithRetryDelay(-time.Millisecond, time.Second),
		"negative drift":    WithDriftFactor(-0.1),
		"drift >= 1":        WithDriftFactor(1),
		"negative ttl":      WithDefaultTTL(-time.Second),
		"negative timeout":  WithNodeTimeout(-time.Second),
		"nil option":        nil,
		"negative guard ok": nil,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := New(nil, opt)
			require.ErrorIs(t, err, ErrInvalidArgument)
		})
	}
	m, err := New(nil, WithRetryCount(1), WithRetryDelay(0, 0), WithDriftFactor(0), WithDefaultTTL(time.Second), WithNodeTimeout(time.Second))
	require.NoError(t, err, "valid edge values")
	require.Equal(t, []string{"redis://localhost:6379"}, m.Nodes(), "no instances means localhost:6379, as aioredlock")
	require.NoError(t, m.Close())
}

// TestPasswordsNeverPrinted checks String and errors of every spec form.
func TestPasswordsNeverPrinted(t *testing.T) {
	const pw = "s3cr3tPW"
	insts := []Instance{
		URL("redis://:" + pw + "@h:6379/1"),
		URL("redis://user:" + pw + "@h:6379/1"),
		URL("redis://h:6379/1?password=" + pw),
		URL("rediss://:" + pw + "@h:6379/1"),
		Endpoint{Addr: "h:1", Password: pw, Username: "u"},
		Sentinel{Addrs: []string{"h:26379"}, Master: "m", Password: pw, SentinelPassword: pw},
		SentinelURL("redis://:" + pw + "@h:26379/4?master=leader&encoding=utf-8"),
	}
	for _, inst := range insts {
		require.NotContains(t, inst.String(), pw)
		require.NotContains(t, fmt.Sprintf("%v %+v", inst, inst), pw, "%%v of %T", inst)
	}
	m, err := New(insts)
	require.NoError(t, err)
	require.NotContains(t, strings.Join(m.Nodes(), " "), pw)
	require.NoError(t, m.Close())

	for _, bad := range []string{
		"redis://:" + pw + "@h:port/1",
		"redis://:" + pw + "@h:6379/x",
		"redis://:" + pw + "@/1",
		"ftp://:" + pw + "@h:1",
		"redis://:" + pw + "@h:6379/1?ssl_cert_reqs=x%zz",
		"redis://u:" + pw + "@h:1:2:3",
		"redis+sentinel://:" + pw + "@h:x/1?master=m",
		"redis+sentinel://:" + pw + "@h:26379/1",
	} {
		_, err := ParseInstance(bad)
		require.Error(t, err, bad)
		require.NotContains(t, err.Error(), pw, "error for %q leaks the password", bad)
		_, err = New([]Instance{URL(bad)})
		require.Error(t, err)
		require.NotContains(t, err.Error(), pw)
		_, err = New([]Instance{SentinelURL(bad)})
		require.Error(t, err)
		require.NotContains(t, err.Error(), pw)
	}
}

func TestParseSentinelSeedForms(t *testing.T) {
	s, err := parseSentinelURL("redis://localhost:26379/4?master=leader&encoding=utf-8")
	require.NoError(t, err)
	require.Equal(t, []string{"localhost:26379"}, s.Addrs)
	require.Equal(t, "leader", s.Master)
	require.Equal(t, 4, s.DB)
	require.Nil(t, s.TLS)

	s, err = parseSentinelURL("rediss://:password@localhost:26379/5?master=leader&encoding=utf-8&ssl_cert_reqs=CERT_NONE")
	require.NoError(t, err)
	require.Equal(t, "password", s.Password)
	require.Equal(t, 5, s.DB)
	require.NotNil(t, s.TLS)
	require.True(t, s.TLS.InsecureSkipVerify)

	s, err = parseSentinelURL("redis+sentinel://u:pw@h1:26379,h2:26380,h3/0?master=leader&sentinel_password=sp")
	require.NoError(t, err)
	require.Equal(t, []string{"h1:26379", "h2:26380", "h3:26379"}, s.Addrs)
	require.Equal(t, "u", s.Username)
	require.Equal(t, "pw", s.Password)
	require.Equal(t, "sp", s.SentinelPassword)

	inst, err := ParseInstance("rediss+sentinel://h1:26379/2?master=x&ssl_cert_reqs=CERT_REQUIRED")
	require.NoError(t, err)
	require.Equal(t, "rediss+sentinel://h1:26379/2?master=x", inst.String())
	require.False(t, inst.(Sentinel).TLS.InsecureSkipVerify)
}

func TestQuorumErrorMatching(t *testing.T) {
	qe := &QuorumError{Op: "lock", Resource: "r", Needed: 2, Votes: 0,
		Nodes: []NodeError{{Node: "a", Err: ErrLocked}, {Node: "b", Err: errors.New("dial tcp: refused")}},
		extra: []error{ErrNotAcquired}}
	var err error = fmt.Errorf("wrapped: %w", qe)
	for _, target := range []error{ErrNotAcquired, ErrLocked, ErrUnavailable} {
		require.ErrorIs(t, err, target)
	}
	require.NotErrorIs(t, err, ErrNotHeld)
	var got *QuorumError
	require.ErrorAs(t, err, &got)
	require.Equal(t, 2, got.Needed)
	require.Equal(t, `redlock: lock "r" failed: 0 of 2 needed votes; a: resource is locked by another token; b: dial tcp: refused`, qe.Error())

	onlyLocked := &QuorumError{Op: "lock", Nodes: []NodeError{{Node: "a", Err: ErrLocked}}, extra: []error{ErrNotAcquired}}
	require.NotErrorIs(t, onlyLocked, ErrUnavailable, "contention alone is not unavailability")
}
