package harness

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(Main(m))
}

func TestStartNRunsIndependentServers(t *testing.T) {
	t.Parallel()
	servers := StartN(t, 3, Options{})
	require.Len(t, servers, 3)
	seen := map[string]bool{}
	for i, s := range servers {
		require.False(t, seen[s.Addr()], "address %s handed out twice", s.Addr())
		seen[s.Addr()] = true
		require.Equal(t, net.JoinHostPort(s.Host(), fmt.Sprint(s.Port())), s.Addr())
		if SelectedBackend() == BackendProcess {
			require.Equal(t, "127.0.0.1", s.Host())
		} else {
			require.Equal(t, 6379, s.Port(), "containers listen on the standard port at their own address")
		}
		require.Equal(t, "OK", s.Do(t, "SET", "k", fmt.Sprint("v", i)))
	}
	for i, s := range servers {
		got, err := redis.String(s.Do(t, "GET", "k"), nil)
		require.NoError(t, err)
		require.Equal(t, fmt.Sprint("v", i), got, "server %s sees another server's data", s.Addr())
	}
}

func TestKillThenRestartComesBackEmptyOnSamePort(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{})
	port := s.Port()
	s.Do(t, "SET", "k", "v")

	require.NoError(t, s.Kill())
	require.Error(t, s.Ping(), "PING answered after Kill")
	require.NoError(t, s.Kill(), "Kill of a dead server must be a no-op")

	require.NoError(t, s.Restart())
	require.Equal(t, port, s.Port())
	require.NoError(t, s.Ping(), "PING after Restart")
	require.Nil(t, s.Do(t, "GET", "k"), "data survived a restart; persistence must be off")
	require.EqualValues(t, 0, s.Do(t, "DBSIZE"))

	// Restart of a running server kills it first.
	s.Do(t, "SET", "k", "v")
	require.NoError(t, s.Restart())
	require.Nil(t, s.Do(t, "GET", "k"))
}

func TestPauseStopsAnsweringUntilResume(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{})
	c, err := s.Dial(redis.DialReadTimeout(200 * time.Millisecond))
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Do("PING")
	require.NoError(t, err)

	require.NoError(t, s.Pause())
	c2, err := s.Dial(redis.DialReadTimeout(200 * time.Millisecond))
	require.NoError(t, err, "dialing a paused server succeeds: the kernel accepts the connection")
	defer c2.Close()
	start := time.Now()
	_, err = c2.Do("PING")
	var ne net.Error
	require.True(t, errors.As(err, &ne) && ne.Timeout(), "PING on a paused server: want a read timeout, got %v", err)
	require.Less(t, time.Since(start), 2*time.Second)

	require.NoError(t, s.Resume())
	require.NoError(t, s.Ping(), "PING after Resume")
}

func TestStopIsIdempotentAndLeavesNothingPaused(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{})
	require.NoError(t, s.Pause())
	s.Stop()
	s.Stop()
	require.Error(t, s.Ping())
	require.Error(t, s.Restart(), "a stopped server must not restart")
}

func TestPasswordIsRequired(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{Password: "s3cret"})
	require.Equal(t, "s3cret", s.Password())
	require.NoError(t, s.Ping())

	c, err := redis.Dial("tcp", s.Addr())
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Do("PING")
	require.ErrorContains(t, err, "NOAUTH")
}

func TestExtraArgsArePassed(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{Args: []string{"--maxmemory", "12345678"}})
	cfg, err := redis.StringMap(s.Do(t, "CONFIG", "GET", "maxmemory"), nil)
	require.NoError(t, err)
	require.Equal(t, "12345678", cfg["maxmemory"])
	cfg, err = redis.StringMap(s.Do(t, "CONFIG", "GET", "save"), nil)
	require.NoError(t, err)
	require.Equal(t, "", cfg["save"], "persistence must be off")
}

func TestTLSServerAnswersOnlyOverTLSWithTheGeneratedCA(t *testing.T) {
	t.Parallel()
	certs := NewTLSConfig(t)
	s := Start(t, Options{TLS: certs})
	require.Same(t, certs, s.TLS())
	require.NoError(t, s.Ping(), "PING over TLS with the harness CA")
	require.Equal(t, "PONG", s.Do(t, "PING"))

	// "localhost" is in the certificate too (a container is not on
	// localhost: processes only).
	if SelectedBackend() == BackendProcess {
		c, err := redis.Dial("tcp", fmt.Sprintf("localhost:%d", s.Port()), redis.DialUseTLS(true), redis.DialTLSConfig(certs.ClientConfig()))
		if err == nil { // localhost may resolve to ::1 first, where nothing listens
			_, err = c.Do("PING")
			c.Close()
			require.NoError(t, err)
		}
	}

	// Without the CA the handshake fails.
	_, err := redis.Dial("tcp", s.Addr(), redis.DialUseTLS(true), redis.DialTLSConfig(&tls.Config{MinVersion: tls.VersionTLS12}), redis.DialConnectTimeout(2*time.Second))
	require.Error(t, err, "a client without the CA must not verify the server")

	// Plain TCP is not served.
	plain, err := redis.Dial("tcp", s.Addr(), redis.DialReadTimeout(time.Second))
	if err == nil {
		_, err = plain.Do("PING")
		plain.Close()
	}
	require.Error(t, err, "a TLS-only server answered plain TCP")
}

func TestTLSAuthClientsRequiresClientCertificate(t *testing.T) {
	t.Parallel()
	certs := NewTLSConfig(t)
	certs.AuthClients = true
	s := Start(t, Options{TLS: certs})
	require.NoError(t, s.Ping(), "PING with the harness client certificate")

	noCert := certs.ClientConfig()
	noCert.Certificates = nil
	c, err := redis.Dial("tcp", s.Addr(), redis.DialUseTLS(true), redis.DialTLSConfig(noCert), redis.DialReadTimeout(2*time.Second))
	if err == nil {
		_, err = c.Do("PING") // TLS 1.3 reports the missing certificate on the first read
		c.Close()
	}
	require.Error(t, err, "a client without a certificate was accepted")
}

func TestSentinelGroupFailsOverWhenMasterIsKilled(t *testing.T) {
	t.Parallel()
	g := StartSentinelGroup(t, "harness-failover", SentinelOptions{DownAfter: 500 * time.Millisecond, FailoverTimeout: 5 * time.Second})
	require.Len(t, g.Replicas, 1)
	require.Len(t, g.Sentinels, 3)
	require.Len(t, g.SentinelAddrs(), 3)
	old := g.MasterAddr(t)
	require.Equal(t, g.Master.Addr(), old)
	require.Same(t, g.Master, g.ServerByAddr(old))
	require.Nil(t, g.ServerByAddr("127.0.0.1:1"))

	g.Master.Do(t, "SET", "k", "before-failover")
	WaitFor(t, 5*time.Second, func() bool {
		v, err := redis.String(g.Replicas[0].Do(t, "GET", "k"), nil)
		return err == nil && v == "before-failover"
	}, "write on master %s never reached replica %s", g.Master, g.Replicas[0])

	require.NoError(t, g.Master.Kill())
	start := time.Now()
	newAddr := g.WaitForFailover(t, old, 30*time.Second)
	t.Logf("failover took %s", time.Since(start).Round(time.Millisecond))
	require.Equal(t, g.Replicas[0].Addr(), newAddr)
	require.Equal(t, newAddr, g.MasterAddr(t))
	got, err := redis.String(g.ServerByAddr(newAddr).Do(t, "GET", "k"), nil)
	require.NoError(t, err)
	require.Equal(t, "before-failover", got)
}

func TestSentinelGroupWithPasswordsAndTLS(t *testing.T) {
	t.Parallel()
	certs := NewTLSConfig(t)
	g := StartSentinelGroup(t, "harness-secure", SentinelOptions{
		Replicas:         2,
		Password:         "data-pw",
		SentinelPassword: "sentinel-pw",
		TLS:              certs,
	})
	require.Len(t, g.Replicas, 2)
	require.Equal(t, g.Master.Addr(), g.MasterAddr(t))
	for _, s := range g.Sentinels {
		require.Equal(t, "sentinel-pw", s.Password())
		require.Same(t, certs, s.TLS())
		c, err := redis.Dial("tcp", s.Addr(), redis.DialUseTLS(true), redis.DialTLSConfig(certs.ClientConfig()))
		require.NoError(t, err)
		_, err = c.Do("SENTINEL", "MASTERS")
		c.Close()
		require.ErrorContains(t, err, "NOAUTH", "Sentinel %s answered without its password", s)
	}
	role, err := redis.Values(g.Replicas[1].Do(t, "ROLE"), nil)
	require.NoError(t, err)
	require.Equal(t, "slave", string(role[0].([]byte)))
}

func TestSentinelGroupWithoutReplicas(t *testing.T) {
	t.Parallel()
	g := StartSentinelGroup(t, "harness-lonely", SentinelOptions{Replicas: -1, Sentinels: 1})
	require.Empty(t, g.Replicas)
	require.Len(t, g.Sentinels, 1)
	require.Equal(t, g.Master.Addr(), g.MasterAddr(t))
}

func TestMissingBinaryFailsWithInstallCommand(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	for _, bin := range []string{"redis-server", "redis-sentinel"} {
		_, err := lookupBinary(bin)
		require.Error(t, err)
		assert.Equal(t, bin+` not found: install it with "apt-get install -y redis-server redis-sentinel" (Debian/Ubuntu) or "brew install redis" (macOS)`, err.Error())
	}
}

func TestDockerBackendReportsUnreachableEngine(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix://"+t.TempDir()+"/no-docker.sock")
	_, err := connectDocker()
	require.Error(t, err)
	require.Contains(t, err.Error(), "Docker engine cannot be reached")
	require.Contains(t, err.Error(), "unset "+BackendEnv)
}

func TestFreePortIsBindable(t *testing.T) {
	t.Parallel()
	p1, p2 := FreePort(t), FreePort(t)
	require.NotEqual(t, p1, p2)
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p1))
	require.NoError(t, err)
	l.Close()
}

func TestWaitForReturnsOnceConditionHolds(t *testing.T) {
	t.Parallel()
	n := 0
	WaitFor(t, time.Second, func() bool { n++; return n == 3 }, "never")
	require.Equal(t, 3, n)
}

func TestSentinelConfIsWellFormed(t *testing.T) {
	t.Parallel()
	g := &SentinelGroup{Name: "m", Master: &Server{host: "127.0.0.1", port: 7000}, Options: SentinelOptions{Password: "p w", SentinelPassword: "sp"}.withDefaults()}
	conf := g.sentinelConf((&processBackend{}).view("/tmp/x"), 26379)
	for _, want := range []string{
		"port 26379\n",
		"bind 127.0.0.1\n",
		"dir \"/tmp/x\"\n",
		"sentinel monitor m 127.0.0.1 7000 2\n",
		"sentinel down-after-milliseconds m 1000\n",
		"sentinel failover-timeout m 10000\n",
		"sentinel parallel-syncs m 1\n",
		"sentinel resolve-hostnames no\n",
		"sentinel auth-pass m \"p w\"\n",
		"requirepass \"sp\"\n",
	} {
		require.True(t, strings.Contains(conf, want), "sentinel.conf lacks %q:\n%s", want, conf)
	}
	require.NotContains(t, conf, "announce", "a local Sentinel announces nothing")

	// In a container: every interface, the container's own address
	// announced, the master at its address on the network.
	g.Master = &Server{host: "172.30.0.2", port: 6379}
	g.Options.TLS = &TLSConfig{CAFile: "/h/ca.crt", CertFile: "/h/server.crt", KeyFile: "/h/server.key"}
	conf = g.sentinelConf((&dockerBackend{}).view("172.30.0.9"), 26379)
	for _, want := range []string{
		"bind 0.0.0.0\n",
		"port 0\n",
		"tls-port 26379\n",
		"tls-ca-cert-file \"/tls/ca.crt\"\n",
		"dir \"/data\"\n",
		"sentinel announce-ip 172.30.0.9\n",
		"sentinel announce-port 26379\n",
		"sentinel monitor m 172.30.0.2 6379 2\n",
	} {
		require.True(t, strings.Contains(conf, want), "container sentinel.conf lacks %q:\n%s", want, conf)
	}
}

// TestPersistenceTurnedOnSurvivesKillAndRestart: persistence turned on
// through Args survives kill -9 and Restart, on either backend (a
// container keeps its files across docker kill and start).
func TestPersistenceTurnedOnSurvivesKillAndRestart(t *testing.T) {
	t.Parallel()
	s := Start(t, Options{Args: []string{"--appendonly", "yes", "--appendfsync", "always"}})
	s.Do(t, "SET", "kept", "yes")
	require.NoError(t, s.Kill())
	require.NoError(t, s.Restart())
	v, err := redis.String(s.Do(t, "GET", "kept"), nil)
	require.NoError(t, err, "the append-only file must survive kill -9 and Restart")
	require.Equal(t, "yes", v)
}

// TestEnvAndTempDirReachTheProcess: Options.TempDir places the server's
// directory and Options.Env reaches the process (a preload that does not
// exist makes the dynamic loader complain in the server's log). Both are
// process matters: Backend forces local processes whatever BackendEnv
// says.
func TestEnvAndTempDirReachTheProcess(t *testing.T) {
	t.Parallel()
	parent := t.TempDir()
	s := Start(t, Options{
		TempDir: parent,
		Env:     []string{"LD_PRELOAD=/nonexistent/redlock-harness-probe.so"},
		Backend: BackendProcess,
	})
	require.Equal(t, "127.0.0.1", s.Host())
	dir, err := redis.Strings(s.Do(t, "CONFIG", "GET", "dir"), nil)
	require.NoError(t, err)
	require.Len(t, dir, 2)
	require.True(t, strings.HasPrefix(dir[1], parent), "server dir %q is not under Options.TempDir %q", dir[1], parent)
	require.Contains(t, s.LogTail(50), "redlock-harness-probe.so", "Options.Env did not reach the server process")
}

func TestProcessBackendDialsLoopbackOnly(t *testing.T) {
	t.Parallel()
	b := &processBackend{}
	require.NoError(t, b.checkAddr("127.0.0.1:6379"))
	require.NoError(t, b.checkAddr("[::1]:6379"))
	for _, addr := range []string{"192.0.2.7:6379", "localhost:6379", "10.0.0.1:1", "nonsense"} {
		require.Error(t, b.checkAddr(addr), "%s must be refused", addr)
	}
	s := &Server{node: &processNode{}}
	require.ErrorIs(t, s.Partition(), errNeedsDocker)
	_, err := s.Isolate()
	require.ErrorIs(t, err, errNeedsDocker)
	require.NoError(t, s.Heal(), "Heal with nothing to heal is a no-op")
}

// TestSentinelGroupKnowsEveryMemberByItsAddress: the Sentinels see each
// other, the master and the replicas at the addresses the harness hands out
// (with the docker backend: the containers' own addresses, which they
// announce).
func TestSentinelGroupKnowsEveryMemberByItsAddress(t *testing.T) {
	t.Parallel()
	g := StartSentinelGroup(t, "harness-addresses", SentinelOptions{Replicas: 2})
	require.Equal(t, g.Master.Addr(), g.MasterAddr(t))
	addrOf := func(v interface{}) string {
		m, err := redis.StringMap(v, nil)
		require.NoError(t, err)
		return net.JoinHostPort(m["ip"], m["port"])
	}
	for _, s := range g.Sentinels {
		replicas, err := redis.Values(s.Do(t, "SENTINEL", "REPLICAS", g.Name), nil)
		require.NoError(t, err)
		var got []string
		for _, r := range replicas {
			got = append(got, addrOf(r))
		}
		require.ElementsMatch(t, []string{g.Replicas[0].Addr(), g.Replicas[1].Addr()}, got, "%s sees the replicas at other addresses", s)
		others, err := redis.Values(s.Do(t, "SENTINEL", "SENTINELS", g.Name), nil)
		require.NoError(t, err)
		got = got[:0]
		for _, o := range others {
			got = append(got, addrOf(o))
		}
		var want []string
		for _, o := range g.Sentinels {
			if o != s {
				want = append(want, o.Addr())
			}
		}
		require.ElementsMatch(t, want, got, "%s sees the other Sentinels at other addresses", s)
	}
}
