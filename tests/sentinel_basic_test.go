package tests

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/redlock-go/redlock"
	"github.com/redlock-go/redlock/tests/harness"
)

// The Sentinel tests run real redis-server and redis-sentinel processes:
// every group is a master, one replica and three Sentinels (quorum 2).

// sentinelDownAfter keeps failovers quick; sentinelFailoverTimeout is
// Sentinel's failover-timeout.
const (
	sentinelDownAfter       = 500 * time.Millisecond
	sentinelFailoverTimeout = 5 * time.Second
)

// sentinelStart starts one group with the quick failover settings unless
// opts sets its own.
func sentinelStart(t *testing.T, name string, opts harness.SentinelOptions) *harness.SentinelGroup {
	t.Helper()
	if opts.DownAfter == 0 {
		opts.DownAfter = sentinelDownAfter
	}
	if opts.FailoverTimeout == 0 {
		opts.FailoverTimeout = sentinelFailoverTimeout
	}
	return harness.StartSentinelGroup(t, name, opts)
}

// sentinelOf is the Sentinel instance of group g (all its Sentinels).
func sentinelOf(g *harness.SentinelGroup) redlock.Sentinel {
	return redlock.Sentinel{Addrs: g.SentinelAddrs(), Master: g.Name, Password: g.Options.Password, SentinelPassword: g.Options.SentinelPassword}
}

// sentinelDo sends one command to db on srv directly.
func sentinelDo(t testing.TB, srv *harness.Server, db int, cmd string, args ...interface{}) (interface{}, error) {
	t.Helper()
	c, err := srv.Dial()
	require.NoError(t, err, "dial %s", srv)
	defer c.Close()
	_, err = c.Do("SELECT", db)
	require.NoError(t, err)
	return c.Do(cmd, args...)
}

// sentinelGet reads key in db on srv directly.
func sentinelGet(t testing.TB, srv *harness.Server, db int, key string) (string, bool) {
	t.Helper()
	v, err := redis.String(sentinelDo(t, srv, db, "GET", key))
	if errors.Is(err, redis.ErrNil) {
		return "", false
	}
	require.NoError(t, err, "GET %s on %s", key, srv)
	return v, true
}

// sentinelPTTL returns the PTTL of key in db on srv.
func sentinelPTTL(t testing.TB, srv *harness.Server, db int, key string) int64 {
	t.Helper()
	n, err := redis.Int64(sentinelDo(t, srv, db, "PTTL", key))
	require.NoError(t, err, "PTTL %s on %s", key, srv)
	return n
}

// sentinelInfo returns one INFO section of srv as field -> value.
func sentinelInfo(t testing.TB, srv *harness.Server, section string) map[string]string {
	t.Helper()
	s, err := redis.String(srv.Do(t, "INFO", section), nil)
	require.NoError(t, err)
	return infoFields(s)
}

// infoFields parses an INFO reply into its "key:value" fields.
func infoFields(s string) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(s, "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			out[k] = v
		}
	}
	return out
}

// sentinelLockCycle locks resource through m, checks the key on master (in
// db) holds the token, extends it past its first ttl, unlocks it and checks
// the key is gone.
func sentinelLockCycle(t *testing.T, m *redlock.Manager, master *harness.Server, db int, resource, form string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := m.Lock(ctx, resource, 5*time.Second)
	require.NoError(t, err, "%s: Lock", form)
	got, ok := sentinelGet(t, master, db, resource)
	require.True(t, ok && got == l.Token(), "%s: key %q in db %d on master %s is %q, want the lock's token", form, resource, db, master, got)
	require.NoError(t, l.Extend(ctx, 30*time.Second), "%s: Extend", form)
	require.Greater(t, sentinelPTTL(t, master, db, resource), int64(5000), "%s: Extend did not move the key's expiry past the first ttl", form)
	require.NoError(t, l.Unlock(ctx), "%s: Unlock", form)
	_, ok = sentinelGet(t, master, db, resource)
	require.False(t, ok, "%s: key %q still on the master after Unlock", form, resource)
}

// TestSentinelEveryFormLocksExtendsUnlocks builds a one-node Manager from
// every way of naming a Sentinel group — the Sentinel struct, the seed's
// SentinelURL forms (one sentinel, several sentinels) and ParseInstance's
// redis+sentinel:// — against a plain group and a group whose master and
// Sentinels both require passwords, and runs Lock, Extend and Unlock through
// each, checking the key on the real master in the right DB. Wrong
// passwords fail as ErrUnavailable without printing them.
func TestSentinelEveryFormLocksExtendsUnlocks(t *testing.T) {
	plain := sentinelStart(t, "sentinel-forms", harness.SentinelOptions{})
	secured := sentinelStart(t, "sentinel-forms-auth", harness.SentinelOptions{Password: "master-pw", SentinelPassword: "sentinel-pw"})
	ignore := goleak.IgnoreCurrent()

	one, all := plain.SentinelAddrs()[0], strings.Join(plain.SentinelAddrs(), ",")
	sall := strings.Join(secured.SentinelAddrs(), ",")
	parsed := func(spec string) redlock.Instance {
		inst, err := redlock.ParseInstance(spec)
		require.NoError(t, err, spec)
		return inst
	}
	for _, tc := range []struct {
		form  string
		inst  redlock.Instance
		group *harness.SentinelGroup
		db    int
	}{
		{"Sentinel struct (seed line 1)", redlock.Sentinel{Addrs: []string{one}, Master: plain.Name, DB: 3}, plain, 3},
		{"SentinelURL one sentinel (seed line 2)", redlock.SentinelURL("redis://" + one + "/4?master=" + plain.Name + "&encoding=utf-8"), plain, 4},
		{"SentinelURL several sentinels", redlock.SentinelURL("redis://" + all + "/5?master=" + plain.Name), plain, 5},
		{"ParseInstance redis+sentinel", parsed("redis+sentinel://" + all + "/6?master=" + plain.Name), plain, 6},
		{"Sentinel struct with passwords", redlock.Sentinel{Addrs: secured.SentinelAddrs(), Master: secured.Name, DB: 1, Password: "master-pw", SentinelPassword: "sentinel-pw"}, secured, 1},
		{"SentinelURL with passwords", redlock.SentinelURL("redis://:master-pw@" + sall + "/2?master=" + secured.Name + "&sentinel_password=sentinel-pw"), secured, 2},
		{"ParseInstance with passwords", parsed("redis+sentinel://:master-pw@" + sall + "/0?master=" + secured.Name + "&sentinel_password=sentinel-pw"), secured, 0},
	} {
		m, err := redlock.New([]redlock.Instance{tc.inst})
		require.NoError(t, err, tc.form)
		for _, n := range m.Nodes() {
			require.NotContains(t, n, "-pw", "%s: node name leaks a password", tc.form)
		}
		sentinelLockCycle(t, m, tc.group.Master, tc.db, "sentinel-form-"+fmt.Sprint(tc.db), tc.form)
		require.NoError(t, m.Close())
	}

	for _, tc := range []struct {
		form string
		inst redlock.Instance
	}{
		{"wrong master password", redlock.Sentinel{Addrs: secured.SentinelAddrs(), Master: secured.Name, Password: "bad-master-pw", SentinelPassword: "sentinel-pw"}},
		{"wrong sentinel password", redlock.SentinelURL("redis://:master-pw@" + sall + "/0?master=" + secured.Name + "&sentinel_password=bad-sentinel-pw")},
		{"unknown master name", redlock.Sentinel{Addrs: plain.SentinelAddrs(), Master: "no-such-master"}},
	} {
		m, err := redlock.New([]redlock.Instance{tc.inst}, redlock.WithRetryCount(1), redlock.WithNodeTimeout(2*time.Second))
		require.NoError(t, err, tc.form)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = m.Lock(ctx, "sentinel-bad", time.Second)
		cancel()
		require.ErrorIs(t, err, redlock.ErrNotAcquired, tc.form)
		require.ErrorIs(t, err, redlock.ErrUnavailable, tc.form)
		require.NotErrorIs(t, err, redlock.ErrLocked, tc.form)
		require.NotContains(t, err.Error(), "-pw", "%s: error leaks a password", tc.form)
		t.Logf("%s: %v", tc.form, err)
		require.NoError(t, m.Close())
	}
	sentinelNoLeak(t, ignore)
}

// sentinelNoLeak fails when goroutines besides those in ignore (and the
// harness's process waiters, which a Restart adds) are left.
func sentinelNoLeak(t *testing.T, ignore goleak.Option) {
	t.Helper()
	if err := goleak.Find(ignore, goleak.IgnoreAnyFunction("github.com/redlock-go/redlock/tests/harness.(*processNode).start.func1")); err != nil {
		t.Errorf("goroutines left after Manager.Close: %v", err)
	}
}

// TestSentinelReadonlyConnectionIsDroppedAndRetried demotes the master
// behind the client's back, the way a failover that keeps the old master
// alive does, without Sentinel killing the client connections: the
// replica is promoted (REPLICAOF NO ONE), the master made its replica, and
// the Sentinels re-pointed at the new master. The next Lock meets READONLY
// on its open connection to the old master; it must succeed anyway, in a
// single attempt (the node retries once on the master Sentinel names now),
// the old master must see exactly that one READONLY and nothing after it
// (the connection was closed, not kept), and the scripts missing on the new
// master must be loaded by the new connection before its first EVALSHA
// (SCRIPT LOAD, no NOSCRIPT).
//
// The restart guard is off: this test isolates the retry on ONE node, and
// the guard would (rightly) ignore that node's votes for one max TTL after
// the master's run_id changed.
func TestSentinelReadonlyConnectionIsDroppedAndRetried(t *testing.T) {
	g := sentinelStart(t, "sentinel-readonly", harness.SentinelOptions{})
	ignore := goleak.IgnoreCurrent()
	oldMaster, newMaster := g.Master, g.Replicas[0]
	// A generous node timeout: the retry (ask the Sentinels, dial, ROLE,
	// SCRIPT LOAD, EVALSHA) must fit in it even on a busy machine.
	m, err := redlock.New([]redlock.Instance{sentinelOf(g)}, redlock.WithRetryCount(1), redlock.WithRestartGuard(false),
		redlock.WithNodeTimeout(2*time.Second))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Open the connection to the current master.
	l, err := m.Lock(ctx, "sentinel-ro-warmup", 5*time.Second)
	require.NoError(t, err)
	require.NoError(t, l.Unlock(ctx))

	// Swap the roles; the client connection to oldMaster stays open.
	newMaster.Do(t, "REPLICAOF", "NO", "ONE")
	oldMaster.Do(t, "REPLICAOF", newMaster.Host(), newMaster.Port())
	harness.WaitFor(t, 15*time.Second, func() bool {
		info := sentinelInfo(t, oldMaster, "replication")
		return info["role"] == "slave" && info["master_link_status"] == "up" && info["master_sync_in_progress"] == "0"
	}, "%s never became an in-sync replica of %s", oldMaster, newMaster)
	for _, s := range g.Sentinels {
		s.Do(t, "SENTINEL", "REMOVE", g.Name)
		s.Do(t, "SENTINEL", "MONITOR", g.Name, newMaster.Host(), newMaster.Port(), 2)
	}
	require.Equal(t, newMaster.Addr(), g.MasterAddr(t))
	oldMaster.Do(t, "CONFIG", "RESETSTAT")
	scriptOnNew, err := redis.Ints(newMaster.Do(t, "SCRIPT", "EXISTS", sentinelScriptSHA(t, "acquire")), nil)
	require.NoError(t, err)
	require.Equal(t, []int{0}, scriptOnNew, "the new master must not know the acquire script yet (scripts are not replicated)")

	start := time.Now()
	l, err = m.Lock(ctx, "sentinel-ro", 5*time.Second)
	require.NoError(t, err, "Lock must succeed in one attempt by retrying on the new master")
	t.Logf("Lock across the demotion took %v", time.Since(start).Round(time.Millisecond))
	got, ok := sentinelGet(t, newMaster, 0, "sentinel-ro")
	require.True(t, ok && got == l.Token(), "the key must be on the new master")
	require.Equal(t, "1", sentinelStat(t, oldMaster, "errorstats", "errorstat_READONLY", "count"),
		"exactly one command (the first acquire) must have reached the demoted master")
	require.NotEmpty(t, sentinelStat(t, newMaster, "commandstats", "cmdstat_script|load", "calls"),
		"the new connection must load the scripts on the new master")
	require.Empty(t, sentinelStat(t, newMaster, "errorstats", "errorstat_NOSCRIPT", "count"),
		"the scripts were loaded when the connection opened: no EVALSHA may meet NOSCRIPT")
	require.NoError(t, l.Unlock(ctx))

	for i := 0; i < 10; i++ {
		l, err := m.Lock(ctx, fmt.Sprint("sentinel-ro-", i), 5*time.Second)
		require.NoError(t, err)
		require.NoError(t, l.Unlock(ctx))
	}
	require.Equal(t, "1", sentinelStat(t, oldMaster, "errorstats", "errorstat_READONLY", "count"),
		"later locks reached the demoted master: its connection was kept")
	require.Equal(t, "1", sentinelStat(t, oldMaster, "commandstats", "cmdstat_evalsha", "calls"),
		"the demoted master received EVALSHA after the one that met READONLY")
	harness.WaitFor(t, 5*time.Second, func() bool { return sentinelClientConns(t, oldMaster) == 0 },
		"the client connection to the demoted master was not closed")
	require.NoError(t, m.Close())
	sentinelNoLeak(t, ignore)
}

// sentinelStat returns one field of a stat line of INFO section, e.g.
// sentinelStat(t, s, "commandstats", "cmdstat_evalsha", "calls"); "" when
// the line is absent.
func sentinelStat(t testing.TB, srv *harness.Server, section, line, field string) string {
	t.Helper()
	for _, kv := range strings.Split(sentinelInfo(t, srv, section)[line], ",") {
		if k, v, ok := strings.Cut(kv, "="); ok && k == field {
			return v
		}
	}
	return ""
}

// sentinelClientConns counts srv's normal client connections that are not
// Sentinels' (they name themselves) and not this query's own.
func sentinelClientConns(t testing.TB, srv *harness.Server) int {
	t.Helper()
	list, err := redis.String(srv.Do(t, "CLIENT", "LIST", "TYPE", "normal"), nil)
	require.NoError(t, err)
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
		if strings.Contains(line, " name=sentinel-") || strings.Contains(line, " cmd=client|list") || line == "" {
			continue
		}
		n++
	}
	return n
}

// sentinelScriptSHA returns the SHA1 of one of redlock's scripts.
func sentinelScriptSHA(t testing.TB, name string) string {
	for _, s := range redlock.Scripts() {
		if s.Name == name {
			return s.SHA1
		}
	}
	t.Fatalf("no script %q", name)
	return ""
}

// TestSentinelReplicaAckFailsVoteWhenReplicaPaused: with MinReplicaAcks 1,
// Lock and Extend succeed while the replica acknowledges; once the replica
// is paused (SIGSTOP) the node's vote fails — a one-node Manager's Lock
// fails with ErrUnavailable saying how many replicas acknowledged, and the
// key it wrote is released — while a Manager without the option still
// locks. After the replica resumes, the option locks again.
func TestSentinelReplicaAckFailsVoteWhenReplicaPaused(t *testing.T) {
	g := sentinelStart(t, "sentinel-ack", harness.SentinelOptions{DownAfter: 5 * time.Second})
	ignore := goleak.IgnoreCurrent()
	withAck, err := redlock.New([]redlock.Instance{redlock.SentinelURL("redis://" + strings.Join(g.SentinelAddrs(), ",") +
		"/0?master=" + g.Name + "&min_replica_acks=1&replica_ack_timeout=100ms")}, redlock.WithRetryCount(1), redlock.WithNodeTimeout(2*time.Second))
	require.NoError(t, err)
	noAck, err := redlock.New([]redlock.Instance{sentinelOf(g)}, redlock.WithRetryCount(1), redlock.WithNodeTimeout(2*time.Second))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	held, err := withAck.Lock(ctx, "sentinel-ack-held", 20*time.Second)
	require.NoError(t, err, "with the replica up, the acknowledged Lock must succeed")
	require.NoError(t, held.Extend(ctx, 20*time.Second), "with the replica up, Extend must succeed")
	got, ok := sentinelGet(t, g.Replicas[0], 0, "sentinel-ack-held")
	require.True(t, ok && got == held.Token(), "an acknowledged lock must already be on the replica")

	require.NoError(t, g.Replicas[0].Pause())
	t.Cleanup(func() { g.Replicas[0].Resume() })

	_, err = withAck.Lock(ctx, "sentinel-ack-paused", 10*time.Second)
	require.ErrorIs(t, err, redlock.ErrNotAcquired)
	require.ErrorIs(t, err, redlock.ErrUnavailable)
	require.NotErrorIs(t, err, redlock.ErrLocked)
	qe := coreQuorumError(t, err)
	require.Len(t, qe.Nodes, 1)
	require.Contains(t, qe.Nodes[0].Err.Error(), "0 of 1 replicas acknowledged", "the node error must say why the vote failed")
	harness.WaitFor(t, 5*time.Second, func() bool { _, ok := sentinelGet(t, g.Master, 0, "sentinel-ack-paused"); return !ok },
		"the unacknowledged key was not released after the failed Lock")

	err = held.Extend(ctx, 20*time.Second)
	require.ErrorIs(t, err, redlock.ErrNotHeld, "Extend without acknowledgement must fail")
	require.ErrorIs(t, err, redlock.ErrUnavailable)

	l, err := noAck.Lock(ctx, "sentinel-ack-off", 10*time.Second)
	require.NoError(t, err, "without the option, a paused replica must not matter")
	require.NoError(t, l.Extend(ctx, 10*time.Second))
	require.NoError(t, l.Unlock(ctx))

	require.NoError(t, g.Replicas[0].Resume())
	harness.WaitFor(t, 10*time.Second, func() bool {
		l, err := withAck.Lock(ctx, "sentinel-ack-resumed", 5*time.Second)
		if err != nil {
			return false
		}
		return l.Unlock(ctx) == nil
	}, "after the replica resumed, the acknowledged Lock never succeeded again")
	require.NoError(t, withAck.Close())
	require.NoError(t, noAck.Close())
	sentinelNoLeak(t, ignore)
}

// TestSentinelTLS runs a group whose servers and Sentinels listen on TLS
// only, with certificates generated for the test, and locks through it with
// a rediss:// Sentinel URL and ssl_cert_reqs=CERT_NONE, with the CA given
// as ssl_ca_certs, and with Sentinel{TLS: RootCAs}. Verification is real:
// CERT_REQUIRED without the CA fails.
func TestSentinelTLS(t *testing.T) {
	certs := harness.NewTLSConfig(t)
	g := sentinelStart(t, "sentinel-tls", harness.SentinelOptions{TLS: certs, Password: "tls-pw"})
	ignore := goleak.IgnoreCurrent()
	all := strings.Join(g.SentinelAddrs(), ",")
	parsed, err := redlock.ParseInstance("rediss+sentinel://:tls-pw@" + all + "/2?master=" + g.Name + "&ssl_ca_certs=" + certs.CAFile)
	require.NoError(t, err)
	for _, tc := range []struct {
		form string
		inst redlock.Instance
		db   int
	}{
		{"rediss:// CERT_NONE", redlock.SentinelURL("rediss://:tls-pw@" + all + "/1?master=" + g.Name + "&encoding=utf-8&ssl_cert_reqs=CERT_NONE"), 1},
		{"rediss+sentinel:// ssl_ca_certs", parsed, 2},
		{"Sentinel{TLS: RootCAs}", redlock.Sentinel{Addrs: g.SentinelAddrs(), Master: g.Name, DB: 3, Password: "tls-pw",
			TLS: &tls.Config{RootCAs: certs.CAPool(), MinVersion: tls.VersionTLS12}}, 3},
	} {
		m, err := redlock.New([]redlock.Instance{tc.inst})
		require.NoError(t, err, tc.form)
		sentinelLockCycle(t, m, g.Master, tc.db, "sentinel-tls", tc.form)
		require.NoError(t, m.Close())
	}

	m, err := redlock.New([]redlock.Instance{redlock.SentinelURL("rediss://:tls-pw@" + all + "/0?master=" + g.Name + "&ssl_cert_reqs=CERT_REQUIRED")},
		redlock.WithRetryCount(1), redlock.WithNodeTimeout(2*time.Second))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = m.Lock(ctx, "sentinel-tls-unverified", time.Second)
	require.ErrorIs(t, err, redlock.ErrUnavailable, "a server certificate from an unknown CA must be refused")
	require.ErrorContains(t, err, "certificate")
	require.NotContains(t, err.Error(), "tls-pw")
	require.NoError(t, m.Close())
	sentinelNoLeak(t, ignore)
}

// TestSentinelHungSentinelsDoNotBlockDiscovery lists two paused
// (SIGSTOPped: they accept connections and never answer) Sentinels before a
// live one. Discovery gives each Sentinel its share of DialTimeout, so the
// first Lock succeeds in less than one DialTimeout, and Close returns
// promptly.
func TestSentinelHungSentinelsDoNotBlockDiscovery(t *testing.T) {
	g := sentinelStart(t, "sentinel-hung", harness.SentinelOptions{DownAfter: 5 * time.Second})
	ignore := goleak.IgnoreCurrent()
	for _, s := range g.Sentinels[:2] {
		require.NoError(t, s.Pause())
		t.Cleanup(func() { s.Resume() })
	}
	const dialTimeout = 1500 * time.Millisecond
	m, err := redlock.New([]redlock.Instance{redlock.Sentinel{Addrs: g.SentinelAddrs(), Master: g.Name, DialTimeout: dialTimeout}},
		redlock.WithRetryCount(1), redlock.WithNodeTimeout(3*time.Second))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	l, err := m.Lock(ctx, "sentinel-hung", 5*time.Second)
	took := time.Since(start)
	require.NoError(t, err, "the live Sentinel, listed last, must still be asked in time")
	// Each Sentinel's share is a third of DialTimeout: a hung one costs 500ms,
	// not the whole DialTimeout.
	require.Less(t, took, dialTimeout, "discovery past two hung Sentinels took %v", took)
	t.Logf("Lock past two hung Sentinels took %v", took.Round(time.Millisecond))
	require.NoError(t, l.Unlock(ctx))
	start = time.Now()
	require.NoError(t, m.Close())
	require.Less(t, time.Since(start), time.Second, "Close must not wait for the hung Sentinels")
	sentinelNoLeak(t, ignore)
}
