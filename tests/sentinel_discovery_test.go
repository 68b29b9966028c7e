// The unknown-host sentinels below are names the Go resolver rejects
// before it sends anything (a label ending in '-' is not a domain name, see
// isDomainName in net/dnsclient.go), so no DNS query leaves the machine.
// The cgo resolver (getaddrinfo) would ask the configured name server, so
// the test binary is pinned to the Go resolver (its default on Linux).

//go:debug netdns=go

package tests

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/require"

	"github.com/redlock-go/redlock"
	"github.com/redlock-go/redlock/tests/harness"
)

// Discovery settings: each of three sentinels gets a third of
// discoveryDialTimeout, and the node timeout leaves room for the dial.
const (
	discoveryDialTimeout = 1500 * time.Millisecond
	discoveryNodeTimeout = 3 * time.Second
	// discoverySlack is what a first Lock may take beyond the dial timeout
	// (SCRIPT LOAD on the new connection, the acquire itself) on a busy
	// machine.
	discoverySlack = 500 * time.Millisecond
)

// Bad sentinel entries: privileged loopback ports nothing listens on
// (the harness only takes ports the kernel hands out, never these), and
// names that fail resolution locally.
const (
	discoveryDead1    = "127.0.0.1:1"
	discoveryDead2    = "127.0.0.1:2"
	discoveryUnknown1 = "no-such-sentinel-.invalid:26379"
	discoveryUnknown2 = "no-such-sentinel-either-.invalid:26379"
)

// discoveryRequireBadEntries checks that the dead entries refuse
// connections and the unknown hosts do not resolve, without leaving
// loopback.
func discoveryRequireBadEntries(t *testing.T) {
	t.Helper()
	for _, addr := range []string{discoveryDead1, discoveryDead2} {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		require.ErrorIs(t, err, syscall.ECONNREFUSED, "%s must refuse connections to stand for a dead sentinel", addr)
	}
	for _, addr := range []string{discoveryUnknown1, discoveryUnknown2} {
		host, _, _ := net.SplitHostPort(addr)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := net.DefaultResolver.LookupHost(ctx, host)
		cancel()
		var dnsErr *net.DNSError
		require.True(t, errors.As(err, &dnsErr) && dnsErr.IsNotFound, "%s must fail resolution as not found, got %v", host, err)
	}
}

// discoveryInsert returns list with entry inserted at position pos.
func discoveryInsert(list []string, pos int, entry string) []string {
	out := append([]string{}, list[:pos]...)
	out = append(out, entry)
	return append(out, list[pos:]...)
}

// discoveryCase is one sentinel list to discover the master through.
type discoveryCase struct {
	name  string
	addrs []string
}

// discoveryFirstLock builds a one-node Manager on the sentinel list addrs
// and returns how long its first Lock (which discovers the master) took;
// the lock must succeed, its key must be on the group's master, and Unlock
// and Close must succeed.
func discoveryFirstLock(t *testing.T, g *harness.SentinelGroup, resource string, addrs []string) time.Duration {
	t.Helper()
	m, err := redlock.New([]redlock.Instance{redlock.Sentinel{Addrs: addrs, Master: g.Name, DialTimeout: discoveryDialTimeout}},
		redlock.WithRetryCount(1), redlock.WithNodeTimeout(discoveryNodeTimeout))
	require.NoError(t, err, "New with sentinels %v", addrs)
	defer func() { require.NoError(t, m.Close(), "Close") }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	l, err := m.Lock(ctx, resource, 10*time.Second)
	took := time.Since(start)
	require.NoError(t, err, "first Lock through sentinels %v must discover the master past the bad entries (took %v)", addrs, took)
	got, ok := sentinelGet(t, g.Master, 0, resource)
	require.True(t, ok && got == l.Token(), "the lock key %q is not on the group's master %s", resource, g.Master)
	require.NoError(t, l.Unlock(ctx), "Unlock")
	require.Less(t, took, discoveryDialTimeout+discoverySlack,
		"first Lock through sentinels %v took %v: discovery must fit in the dial timeout %v", addrs, took, discoveryDialTimeout)
	return took
}

// discoveryRunPhase runs every case in parallel and returns when all are
// done.
func discoveryRunPhase(t *testing.T, g *harness.SentinelGroup, phase string, cases []discoveryCase) {
	t.Helper()
	t.Run(phase, func(t *testing.T) {
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				took := discoveryFirstLock(t, g, fmt.Sprintf("discovery-%s-%d", phase, i), tc.addrs)
				t.Logf("%v: first Lock took %v", tc.addrs, took.Round(time.Millisecond))
			})
		}
	})
}

// discoveryOneBad lists bad (named kind) at every position among live.
func discoveryOneBad(kind, bad string, live []string) []discoveryCase {
	var cases []discoveryCase
	for pos, where := range []string{"first", "middle", "last"} {
		cases = append(cases, discoveryCase{kind + " " + where, discoveryInsert(live, pos, bad)})
	}
	return cases
}

// discoveryTwoBad lists the live sentinel at every position among the two
// bad entries (named kinds, in that order).
func discoveryTwoBad(kinds string, bad [2]string, live string) []discoveryCase {
	var cases []discoveryCase
	for pos, where := range []string{"live first", "live middle", "live last"} {
		cases = append(cases, discoveryCase{kinds + " " + where, discoveryInsert(bad[:], pos, live)})
	}
	return cases
}

// TestSentinelDiscoverySurvivesDeadOrHungSentinelsInAnyPosition lists the
// live sentinels of one real group together with dead ones (a loopback port
// nothing listens on), hung ones (the group's own sentinels, SIGSTOPped:
// they accept connections and never answer) and unknown hosts, one or two
// bad entries in every position of a three-sentinel list. Every first Lock
// must discover the master, within the dial timeout. When all three are
// bad, Lock fails as ErrUnavailable, in time, naming each sentinel.
func TestSentinelDiscoverySurvivesDeadOrHungSentinelsInAnyPosition(t *testing.T) {
	t.Parallel()
	g := sentinelStart(t, "discovery-positions", harness.SentinelOptions{DownAfter: 5 * time.Second})
	discoveryRequireBadEntries(t)
	s0, s1, s2 := g.Sentinels[0], g.Sentinels[1], g.Sentinels[2]
	live := []string{s1.Addr(), s2.Addr()}

	// Nothing paused: dead and unknown entries.
	var cases []discoveryCase
	cases = append(cases, discoveryOneBad("dead", discoveryDead1, live)...)
	cases = append(cases, discoveryOneBad("unknown", discoveryUnknown1, live)...)
	cases = append(cases, discoveryTwoBad("dead+dead", [2]string{discoveryDead1, discoveryDead2}, s2.Addr())...)
	cases = append(cases, discoveryTwoBad("dead+unknown", [2]string{discoveryDead1, discoveryUnknown1}, s2.Addr())...)
	cases = append(cases, discoveryTwoBad("unknown+dead", [2]string{discoveryUnknown1, discoveryDead1}, s2.Addr())...)
	cases = append(cases, discoveryTwoBad("unknown+unknown", [2]string{discoveryUnknown1, discoveryUnknown2}, s2.Addr())...)
	discoveryRunPhase(t, g, "dead-or-unknown", cases)

	// s0 hung.
	require.NoError(t, s0.Pause(), "pause %s", s0)
	t.Cleanup(func() { s0.Resume() })
	hung := s0.Addr()
	cases = discoveryOneBad("hung", hung, live)
	cases = append(cases, discoveryTwoBad("hung+dead", [2]string{hung, discoveryDead1}, s2.Addr())...)
	cases = append(cases, discoveryTwoBad("dead+hung", [2]string{discoveryDead1, hung}, s2.Addr())...)
	cases = append(cases, discoveryTwoBad("hung+unknown", [2]string{hung, discoveryUnknown1}, s2.Addr())...)
	cases = append(cases, discoveryTwoBad("unknown+hung", [2]string{discoveryUnknown1, hung}, s2.Addr())...)
	discoveryRunPhase(t, g, "one-hung", cases)

	t.Run("all-bad", func(t *testing.T) {
		addrs := []string{hung, discoveryDead1, discoveryUnknown1}
		m, err := redlock.New([]redlock.Instance{redlock.Sentinel{Addrs: addrs, Master: g.Name, DialTimeout: discoveryDialTimeout}},
			redlock.WithRetryCount(1), redlock.WithNodeTimeout(discoveryNodeTimeout))
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		start := time.Now()
		_, err = m.Lock(ctx, "discovery-all-bad", 5*time.Second)
		took := time.Since(start)
		require.ErrorIs(t, err, redlock.ErrUnavailable, "no sentinel answers: Lock must fail as unavailable")
		require.NotErrorIs(t, err, redlock.ErrLocked)
		for _, a := range addrs {
			require.Contains(t, err.Error(), a, "the error must say what sentinel %s did", a)
		}
		require.Less(t, took, discoveryDialTimeout+discoverySlack, "a failed discovery must end with the dial timeout")
		t.Logf("all bad: Lock failed after %v: %v", took.Round(time.Millisecond), err)
		require.NoError(t, m.Close())
	})

	// s0 and s1 hung: only s2 answers.
	require.NoError(t, s1.Pause(), "pause %s", s1)
	t.Cleanup(func() { s1.Resume() })
	cases = discoveryTwoBad("hung+hung", [2]string{s0.Addr(), s1.Addr()}, s2.Addr())
	discoveryRunPhase(t, g, "two-hung", cases)
	require.NoError(t, s0.Resume())
	require.NoError(t, s1.Resume())
}

// discoveryMonitor holds one connection to each sentinel, opened once so
// that reading the counters dials nothing.
type discoveryMonitor struct {
	sentinels []*harness.Server
	conns     []redis.Conn
}

func newDiscoveryMonitor(t *testing.T, sentinels []*harness.Server) *discoveryMonitor {
	t.Helper()
	dm := &discoveryMonitor{sentinels: sentinels}
	for _, s := range sentinels {
		dm.conns = append(dm.conns, s.Conn(t))
	}
	// A Sentinel links to the others it hears of shortly after it sees
	// them: wait for every link, so that none is counted as a query.
	linked := func() string {
		for i, c := range dm.conns {
			list, err := redis.String(c.Do("CLIENT", "LIST"))
			require.NoError(t, err, "CLIENT LIST on %s", sentinels[i])
			if n := strings.Count(list, "-cmd "); n != len(sentinels)-1 {
				return fmt.Sprintf("%s has %d links from other sentinels:\n%s", sentinels[i], n, list)
			}
		}
		return ""
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		missing := linked()
		if missing == "" {
			return dm
		}
		require.True(t, time.Now().Before(deadline), "the sentinels never linked to one another: %s", missing)
	}
}

// dials returns how many connections each of the sentinels at idx has
// accepted (INFO stats total_connections_received). Every query of the
// Manager dials afresh, so this counts the times each was asked; a paused
// sentinel counts a connection once it resumes and accepts it. The
// sentinels' links to one another are long-lived: they add nothing while
// no sentinel is down for long.
func (dm *discoveryMonitor) dials(t *testing.T, idx ...int) []int {
	t.Helper()
	out := make([]int, len(idx))
	for k, i := range idx {
		info, err := redis.String(dm.conns[i].Do("INFO", "stats"))
		require.NoError(t, err, "INFO stats on %s", dm.sentinels[i])
		for _, line := range strings.Split(info, "\r\n") {
			if v, ok := strings.CutPrefix(line, "total_connections_received:"); ok {
				out[k], err = strconv.Atoi(v)
				require.NoError(t, err, "total_connections_received %q on %s", v, dm.sentinels[i])
			}
		}
		require.NotZero(t, out[k], "no total_connections_received in INFO stats of %s", dm.sentinels[i])
	}
	return out
}

// discoveryClientIDs returns the ids of srv's normal client connections that
// are not Sentinels' and not this query's own: the Manager's.
func discoveryClientIDs(t *testing.T, srv *harness.Server) []string {
	t.Helper()
	list, err := redis.String(srv.Do(t, "CLIENT", "LIST", "TYPE", "normal"), nil)
	require.NoError(t, err)
	var ids []string
	for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
		if line == "" || strings.Contains(line, " name=sentinel-") || strings.Contains(line, " cmd=client|list") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if id, ok := strings.CutPrefix(f, "id="); ok {
				ids = append(ids, id)
			}
		}
	}
	return ids
}

// discoveryBreakConnection kills the Manager's one connection to the
// master, so that its next call dials again and asks the sentinels.
func discoveryBreakConnection(t *testing.T, master *harness.Server) string {
	t.Helper()
	ids := discoveryClientIDs(t, master)
	require.Len(t, ids, 1, "the Manager must hold exactly one connection to the master %s", master)
	n, err := redis.Int(master.Do(t, "CLIENT", "KILL", "ID", ids[0]), nil)
	require.NoError(t, err)
	require.Equal(t, 1, n, "CLIENT KILL ID %s killed nothing", ids[0])
	return ids[0]
}

// TestSentinelDiscoveryAsksLastGoodSentinelFirst lists three live
// sentinels A, B, C and watches which ones are asked (each query dials
// afresh, so a sentinel's INFO stats total_connections_received counts
// them): the first discovery asks A only; with A hung, the next (after the
// Manager's connection to the master is killed) asks A, then B, which
// answers; with A live again, the next asks B first and only B: the order
// learned is kept. With B hung, the next asks B, then C (A, which failed
// before B answered, went last), never A. A wrong sentinel
// password fails as ErrUnavailable without printing it.
func TestSentinelDiscoveryAsksLastGoodSentinelFirst(t *testing.T) {
	t.Parallel()
	const sentinelPassword = "order-sentinel-secret"
	g := sentinelStart(t, "discovery-order", harness.SentinelOptions{DownAfter: 5 * time.Second, SentinelPassword: sentinelPassword})
	a := g.Sentinels[0]
	m, err := redlock.New([]redlock.Instance{redlock.Sentinel{Addrs: g.SentinelAddrs(), Master: g.Name,
		SentinelPassword: sentinelPassword, DialTimeout: discoveryDialTimeout}},
		redlock.WithRetryCount(1), redlock.WithNodeTimeout(discoveryNodeTimeout))
	require.NoError(t, err)
	defer func() { require.NoError(t, m.Close()) }()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dm := newDiscoveryMonitor(t, g.Sentinels)
	sub := func(now, before []int) []int {
		for i := range now {
			now[i] -= before[i]
		}
		return now
	}

	before := dm.dials(t, 0, 1, 2)
	_, err = m.IsLocked(ctx, "discovery-order")
	require.NoError(t, err, "first discovery with every sentinel live")
	require.Equal(t, []int{1, 0, 0}, sub(dm.dials(t, 0, 1, 2), before), "the first discovery must ask A, the first listed, and no other")

	// A hung: the next discovery asks A, in vain, then B. A's counter can
	// only be read once it resumes. A stays paused for well under half of
	// down-after, so the other sentinels keep their links to it.
	before = dm.dials(t, 0, 1, 2)
	require.NoError(t, a.Pause(), "pause %s", a)
	t.Cleanup(func() { a.Resume() })
	killed := discoveryBreakConnection(t, g.Master)
	start := time.Now()
	_, err = m.IsLocked(ctx, "discovery-order")
	took := time.Since(start)
	require.NoError(t, err, "with A hung, the rediscovery must get the master from B")
	require.Less(t, took, discoveryDialTimeout+discoverySlack, "rediscovery past hung A took %v", took)
	require.Equal(t, []int{1, 0}, sub(dm.dials(t, 1, 2), before[1:]), "with A hung, B must be asked and answer, and C must not be asked")
	ids := discoveryClientIDs(t, g.Master)
	require.Len(t, ids, 1)
	require.NotEqual(t, killed, ids[0], "the Manager must have dialled the master again")

	// A resumes and accepts the connection it was sent while stopped.
	require.NoError(t, a.Resume(), "resume %s", a)
	var last []int
	harness.WaitFor(t, 5*time.Second, func() bool { last = sub(dm.dials(t, 0), before[:1]); return last[0] >= 1 },
		"hung A was never asked during the rediscovery")
	require.Equal(t, []int{1}, last, "hung A must have been asked exactly once")

	// A live again: B answered last, so B is asked first, and A not at all.
	before = dm.dials(t, 0, 1, 2)
	discoveryBreakConnection(t, g.Master)
	_, err = m.IsLocked(ctx, "discovery-order")
	require.NoError(t, err, "rediscovery with every sentinel live")
	require.Equal(t, []int{0, 1, 0}, sub(dm.dials(t, 0, 1, 2), before),
		"B, the last sentinel that answered, must be asked first; A and C not at all")

	// B hung: the order is B, C, A (A failed before B answered, so it went
	// last), so C answers and A is not asked.
	b := g.Sentinels[1]
	before = dm.dials(t, 0, 1, 2)
	require.NoError(t, b.Pause(), "pause %s", b)
	t.Cleanup(func() { b.Resume() })
	discoveryBreakConnection(t, g.Master)
	_, err = m.IsLocked(ctx, "discovery-order")
	require.NoError(t, err, "with B hung, the rediscovery must get the master from C")
	require.Equal(t, []int{0, 1}, sub(dm.dials(t, 0, 2), []int{before[0], before[2]}),
		"with B hung, C (second in the learned order) must answer and A, asked last, must not be asked")
	require.NoError(t, b.Resume(), "resume %s", b)
	harness.WaitFor(t, 5*time.Second, func() bool { last = sub(dm.dials(t, 1), before[1:2]); return last[0] >= 1 },
		"hung B was never asked first")
	require.Equal(t, []int{1}, last, "hung B must have been asked exactly once")

	// Wrong sentinel password, with a dead sentinel in front: unavailable,
	// each sentinel named, no password printed.
	const wrong = "wrong-sentinel-secret"
	bad, err := redlock.New([]redlock.Instance{redlock.Sentinel{Addrs: append([]string{discoveryDead1}, g.SentinelAddrs()...), Master: g.Name,
		SentinelPassword: wrong, DialTimeout: discoveryDialTimeout}},
		redlock.WithRetryCount(1), redlock.WithNodeTimeout(discoveryNodeTimeout))
	require.NoError(t, err)
	_, err = bad.Lock(ctx, "discovery-wrong-password", time.Second)
	require.ErrorIs(t, err, redlock.ErrUnavailable, "a wrong sentinel password must fail as unavailable")
	for _, s := range g.Sentinels {
		require.Contains(t, err.Error(), s.Addr(), "the error must say what sentinel %s answered", s)
	}
	require.NotContains(t, err.Error(), wrong, "the error leaks the wrong sentinel password")
	require.NotContains(t, err.Error(), sentinelPassword, "the error leaks the sentinel password")
	t.Logf("wrong sentinel password: %v", err)
	require.NoError(t, bad.Close())
}

// TestSentinelBadSpecsAreInvalidArgumentsAtNew feeds New malformed
// Sentinel structs and URLs (no sentinel address, empty master, a bad
// port, no host) carrying passwords: each is ErrInvalidArgument, never a
// panic, and no error shows a password.
func TestSentinelBadSpecsAreInvalidArgumentsAtNew(t *testing.T) {
	const pw, spw = "spec-master-secret", "spec-sentinel-secret"
	insts := map[string]redlock.Instance{
		"struct without addresses":     redlock.Sentinel{Master: "m", Password: pw, SentinelPassword: spw},
		"struct with empty address":    redlock.Sentinel{Addrs: []string{""}, Master: "m", Password: pw, SentinelPassword: spw},
		"struct with empty master":     redlock.Sentinel{Addrs: []string{"127.0.0.1:26379"}, Password: pw, SentinelPassword: spw},
		"struct with non-numeric port": redlock.Sentinel{Addrs: []string{"127.0.0.1:26379", "h:x"}, Master: "m", Password: pw, SentinelPassword: spw},
		"struct with port 0":           redlock.Sentinel{Addrs: []string{"h:0"}, Master: "m", Password: pw, SentinelPassword: spw},
		"struct with port 70000":       redlock.Sentinel{Addrs: []string{"h:70000"}, Master: "m", Password: pw, SentinelPassword: spw},
		"struct without port":          redlock.Sentinel{Addrs: []string{"h"}, Master: "m", Password: pw, SentinelPassword: spw},
		"struct without host":          redlock.Sentinel{Addrs: []string{":26379"}, Master: "m", Password: pw, SentinelPassword: spw},
		"URL without sentinel":         redlock.SentinelURL("redis://:" + pw + "@/0?master=m&sentinel_password=" + spw),
		"URL with empty master":        redlock.SentinelURL("redis://:" + pw + "@h:26379/0?master=&sentinel_password=" + spw),
		"URL with non-numeric port":    redlock.SentinelURL("redis://:" + pw + "@h1:26379,h2:port/0?master=m&sentinel_password=" + spw),
		"URL with port 99999":          redlock.SentinelURL("redis://:" + pw + "@h:99999/0?master=m&sentinel_password=" + spw),
		"URL with empty list entry":    redlock.SentinelURL("redis://:" + pw + "@h1:26379,/0?master=m&sentinel_password=" + spw),
	}
	for name, inst := range insts {
		var err error
		require.NotPanics(t, func() { _, err = redlock.New([]redlock.Instance{inst}) }, "%s: New panicked", name)
		require.ErrorIs(t, err, redlock.ErrInvalidArgument, "%s: New must reject the spec", name)
		require.NotContains(t, err.Error(), pw, "%s: error leaks the master password", name)
		require.NotContains(t, err.Error(), spw, "%s: error leaks the sentinel password", name)
	}
	for _, spec := range []string{
		"redis+sentinel://:" + pw + "@/0?master=m&sentinel_password=" + spw,
		"redis+sentinel://:" + pw + "@h:26379/0?sentinel_password=" + spw,
		"redis+sentinel://:" + pw + "@h:x/0?master=m&sentinel_password=" + spw,
	} {
		var err error
		require.NotPanics(t, func() { _, err = redlock.ParseInstance(spec) }, "ParseInstance panicked")
		require.ErrorIs(t, err, redlock.ErrInvalidArgument, "ParseInstance must reject a bad redis+sentinel spec")
		require.NotContains(t, err.Error(), pw, "ParseInstance error leaks the master password")
		require.NotContains(t, err.Error(), spw, "ParseInstance error leaks the sentinel password")
	}
}
