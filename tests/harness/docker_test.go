package harness

import (
	"archive/tar"
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gomodule/redigo/redis"
	dc "github.com/ory/dockertest/v3/docker"
	"github.com/stretchr/testify/require"
)

// requireDocker returns the docker backend, or skips (saying how to run
// the test) when BackendEnv selects processes.
func requireDocker(t *testing.T) *dockerBackend {
	t.Helper()
	if SelectedBackend() != BackendDocker {
		t.Skipf("docker backend only: run with %s=%s", BackendEnv, BackendDocker)
	}
	b, err := newDockerBackend()
	require.NoError(t, err)
	return b
}

// container returns the container of s.
func container(t *testing.T, b *dockerBackend, s *Server) *dc.Container {
	t.Helper()
	n, ok := s.node.(*dockerNode)
	require.True(t, ok, "%s is not a container", s)
	n.mu.Lock()
	id := n.id
	n.mu.Unlock()
	c, err := b.client.InspectContainer(id)
	require.NoError(t, err)
	return c
}

// TestDockerImageIsBuiltHereFromTheHostsRedis: the image is the harness's
// own (never pulled: no repo digest), tagged with the host's Redis version,
// and holds exactly the binaries, the symlinks on their way, and the
// libraries and loader ldd lists, at their host paths; asking again reuses
// it.
func TestDockerImageIsBuiltHereFromTheHostsRedis(t *testing.T) {
	b := requireDocker(t)
	version, err := redisVersion(b.bins.server)
	require.NoError(t, err)
	require.Equal(t, dockerImageRepo+":"+version, b.image)
	img, err := b.client.InspectImage(b.image)
	require.NoError(t, err)
	require.Empty(t, img.RepoDigests, "the image has a registry digest: it was pulled or pushed")
	require.Equal(t, version, img.Config.Labels["org.redlock-harness.redis-version"])

	start := time.Now()
	again, err := b.ensureImage()
	require.NoError(t, err)
	require.Equal(t, b.image, again)
	img2, err := b.client.InspectImage(b.image)
	require.NoError(t, err)
	require.Equal(t, img.ID, img2.ID, "asking again rebuilt the image instead of reusing it")
	t.Logf("image %s (%s, %.1f MB) reused in %v", b.image, img.ID[:19], float64(img.Size)/1e6, time.Since(start).Round(time.Millisecond))

	// Its files, from a container that never runs.
	c, err := b.client.CreateContainer(dc.CreateContainerOptions{
		Config:     &dc.Config{Image: b.image, Cmd: []string{b.bins.server}, Labels: map[string]string{dockerLabel: b.owner}},
		HostConfig: &dc.HostConfig{NetworkMode: "none"},
	})
	require.NoError(t, err)
	t.Cleanup(func() { b.client.RemoveContainer(dc.RemoveContainerOptions{ID: c.ID, Force: true}) })
	var out bytes.Buffer
	require.NoError(t, b.client.DownloadFromContainer(c.ID, dc.DownloadFromContainerOptions{Path: "/", OutputStream: &out}))
	got := map[string]string{} // path -> link target or "file"
	tr := tar.NewReader(&out)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		p := path.Clean("/" + strings.TrimPrefix(hdr.Name, "./"))
		switch hdr.Typeflag {
		case tar.TypeSymlink:
			got[p] = "-> " + hdr.Linkname
		case tar.TypeReg:
			got[p] = "file"
		}
	}
	entries, err := imageEntries(b.bins.server, b.bins.sentinel)
	require.NoError(t, err)
	want := map[string]string{}
	for _, e := range entries {
		want[e.path] = "file"
		if e.link != "" {
			want[e.path] = "-> " + e.link
		}
	}
	// Docker itself puts these into every container.
	for _, p := range []string{"/.dockerenv", "/dev/console", "/etc/mtab", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf"} {
		delete(got, p)
	}
	require.Equal(t, want, got, "the image must hold exactly the Redis binaries and what ldd lists")
	libs, err := lddPaths(b.bins.server)
	require.NoError(t, err)
	var names []string
	for _, l := range libs {
		names = append(names, path.Base(l))
	}
	sort.Strings(names)
	t.Logf("image files: %d paths (%s %s; libraries and loader: %s)", len(want), b.bins.server, want[b.bins.server], strings.Join(names, " "))
}

// TestDockerServersAreLabelledContainersOnTheHarnessNetwork: a server is a
// container labelled with its binary, on the harness network only, at the
// address the Server reports, with no published port; Stop removes it.
func TestDockerServersAreLabelledContainersOnTheHarnessNetwork(t *testing.T) {
	b := requireDocker(t)
	s := Start(t, Options{})
	c := container(t, b, s)
	require.Equal(t, b.owner, c.Config.Labels[dockerLabel])
	require.Empty(t, c.HostConfig.PortBindings, "nothing may be published on the host")
	require.Empty(t, c.NetworkSettings.Ports, "nothing may be published on the host")
	require.Len(t, c.NetworkSettings.Networks, 1)
	nw, ok := c.NetworkSettings.Networks[b.net.name]
	require.True(t, ok, "container on %v, want %s", c.NetworkSettings.Networks, b.net.name)
	require.Equal(t, s.Host(), nw.IPAddress)
	require.True(t, b.net.subnet.Contains(net.ParseIP(s.Host())))
	require.NoError(t, b.checkAddr(s.Addr()))

	s.Stop()
	_, err := b.client.InspectContainer(c.ID)
	var missing *dc.NoSuchContainer
	require.ErrorAs(t, err, &missing, "Stop must remove the container")
}

// TestDockerBackendRefusesEnv: an LD_PRELOAD means nothing in a container.
func TestDockerBackendRefusesEnv(t *testing.T) {
	b := requireDocker(t)
	_, err := b.newServer("172.16.0.2", 6379, t.TempDir(), Options{Env: []string{"LD_PRELOAD=/x.so"}})
	require.Error(t, err)
	require.Contains(t, err.Error(), "Options.Env")
	require.Contains(t, err.Error(), "process backend only")
}

// TestDockerBackendDialsOnlyLoopbackAndItsNetworks.
func TestDockerBackendDialsOnlyLoopbackAndItsNetworks(t *testing.T) {
	b := requireDocker(t)
	inside := make(net.IP, 4)
	copy(inside, b.net.subnet.IP.To4())
	inside[3] = 200
	require.NoError(t, b.checkAddr(net.JoinHostPort(inside.String(), "6379")))
	require.NoError(t, b.checkAddr("127.0.0.1:26379"))
	for _, addr := range []string{"192.0.2.7:6379", "8.8.8.8:53", "localhost:6379", "redis.example:6379", "nonsense"} {
		require.Error(t, b.checkAddr(addr), "%s must be refused", addr)
	}
}

// TestDockerPartitionHangsTheNodeUntilHeal: a partitioned server keeps its
// data and its process, but nobody reaches it: an established connection
// hangs, a new one cannot be opened; after Heal it answers at the same
// address.
func TestDockerPartitionHangsTheNodeUntilHeal(t *testing.T) {
	requireDocker(t)
	s := Start(t, Options{})
	s.Do(t, "SET", "k", "before")
	c, err := s.Dial(redis.DialReadTimeout(300*time.Millisecond), redis.DialWriteTimeout(300*time.Millisecond))
	require.NoError(t, err)
	defer c.Close()

	require.NoError(t, s.Partition())
	require.Error(t, s.Partition(), "a partitioned server cannot be partitioned again")
	start := time.Now()
	_, err = c.Do("PING")
	var ne net.Error
	require.True(t, errors.As(err, &ne) && ne.Timeout(), "PING on an established connection to a partitioned node: want a timeout (it hangs), got %v", err)
	_, err = s.Dial(redis.DialConnectTimeout(500 * time.Millisecond))
	require.Error(t, err, "dialling a partitioned node must fail")
	t.Logf("partitioned: PING timed out after %v, dial failed with %v", time.Since(start).Round(time.Millisecond), err)

	require.NoError(t, s.Heal())
	require.NoError(t, s.Heal(), "a second Heal is a no-op")
	WaitFor(t, 10*time.Second, func() bool { return s.Ping() == nil }, "%s does not answer after Heal", s)
	v, err := redis.String(s.Do(t, "GET", "k"), nil)
	require.NoError(t, err)
	require.Equal(t, "before", v, "a partition is not a restart: the data must still be there")
}

// TestDockerIsolateCutsTheServerFromItsPeersOnly: an isolated master still
// answers the test at its side address, but its replica no longer gets its
// writes; after Heal they flow again, and the side address is no longer
// one the harness dials.
func TestDockerIsolateCutsTheServerFromItsPeersOnly(t *testing.T) {
	b := requireDocker(t)
	master := Start(t, Options{})
	replica := Start(t, Options{Args: []string{"--replicaof", master.Host(), fmt.Sprint(master.Port())}})
	replicated := func(key, want string) func() bool {
		return func() bool {
			v, err := redis.String(replica.Do(t, "GET", key), nil)
			return err == nil && v == want
		}
	}
	master.Do(t, "SET", "k", "1")
	WaitFor(t, 10*time.Second, replicated("k", "1"), "replica %s never got the write", replica)

	side, err := master.Isolate()
	require.NoError(t, err)
	require.NotEqual(t, master.Addr(), side.Addr())
	require.NoError(t, b.checkAddr(side.Addr()), "the side address must be one the harness dials")
	require.NoError(t, side.Ping(), "the test must still reach the isolated master")
	require.Error(t, master.Ping(), "the isolated master must not answer at its address on the harness network")
	side.Do(t, "SET", "k", "2")
	time.Sleep(time.Second)
	require.False(t, replicated("k", "2")(), "a write on the isolated master reached its replica")
	t.Logf("isolated %s: the test reaches it at %s; its replica %s still reads k=1", master.Addr(), side.Addr(), replica.Addr())

	require.NoError(t, master.Heal())
	WaitFor(t, 30*time.Second, replicated("k", "2"), "after Heal the replica never got the write made while isolated")
	require.NoError(t, master.Ping())
	require.Error(t, b.checkAddr(side.Addr()), "the side network is gone: its addresses must be refused")
}

// TestDockerRemovesLeftoversOfBinariesThatAreGone: a container and a
// network whose owner is dead are removed when a binary starts (sweep);
// those of a live owner are kept.
func TestDockerRemovesLeftoversOfBinariesThatAreGone(t *testing.T) {
	b := requireDocker(t)
	dead := "999999999-1"
	live := ownerID(os.Getppid()) // go test, or whatever started this binary: alive
	require.True(t, ownerAlive(live))
	require.False(t, ownerAlive(dead))
	require.False(t, ownerAlive("1"), "an older harness's label names no binary")
	var ids []string
	for _, owner := range []string{dead, live} {
		c, err := b.client.CreateContainer(dc.CreateContainerOptions{
			Config:     &dc.Config{Image: b.image, Cmd: []string{b.bins.server}, Labels: map[string]string{dockerLabel: owner}},
			HostConfig: &dc.HostConfig{NetworkMode: "none"},
		})
		require.NoError(t, err)
		ids = append(ids, c.ID)
		t.Cleanup(func() { b.client.RemoveContainer(dc.RemoveContainerOptions{ID: c.ID, Force: true}) })
	}
	nw, err := b.client.CreateNetwork(dc.CreateNetworkOptions{Name: "redlock-harness-" + dead, Driver: "bridge", Labels: map[string]string{dockerLabel: dead}})
	require.NoError(t, err)
	t.Cleanup(func() { b.client.RemoveNetwork(nw.ID) })

	b.sweep()
	_, err = b.client.InspectContainer(ids[0])
	var missing *dc.NoSuchContainer
	require.ErrorAs(t, err, &missing, "the dead binary's container must be removed")
	_, err = b.client.InspectContainer(ids[1])
	require.NoError(t, err, "a live binary's container must be kept")
	_, err = b.client.NetworkInfo(nw.ID)
	var noNet *dc.NoSuchNetwork
	require.ErrorAs(t, err, &noNet, "the dead binary's network must be removed")
}

// helperEnv makes TestDockerHelperProcess, run in a child binary, start a
// server and wait to be interrupted or killed.
const helperEnv = "REDLOCK_HARNESS_HELPER"

func TestDockerHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		return // only the child binary of TestDockerContainersGoWhenTheBinaryIsInterruptedOrKilled runs it
	}
	s := Start(t, Options{})
	b, err := newDockerBackend()
	require.NoError(t, err)
	fmt.Printf("READY %s %s\n", b.owner, s.Addr())
	time.Sleep(time.Minute)
	t.Fatal("never interrupted")
}

// TestDockerContainersGoWhenTheBinaryIsInterruptedOrKilled runs a child
// test binary that starts a server, then interrupts it (SIGINT: the
// handler removes everything) or kills it (SIGKILL: the reaper does), and
// waits until nothing of its own is left.
func TestDockerContainersGoWhenTheBinaryIsInterruptedOrKilled(t *testing.T) {
	b := requireDocker(t)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestDockerHelperProcess$", "-test.count=1")
			cmd.Env = append(os.Environ(), helperEnv+"=1")
			out, err := cmd.StdoutPipe()
			require.NoError(t, err)
			stderr, err := os.Create(t.TempDir() + "/stderr") // a file: no copying goroutine
			require.NoError(t, err)
			defer stderr.Close()
			childErr := func() string { b, _ := os.ReadFile(stderr.Name()); return string(b) }
			cmd.Stderr = stderr
			require.NoError(t, cmd.Start())
			line, err := bufio.NewReader(out).ReadString('\n')
			require.NoError(t, err, "child: %s", childErr())
			f := strings.Fields(line)
			require.Len(t, f, 3, "child printed %q", line)
			owner := f[1]
			owned := func() (int, int) {
				cs, err := b.client.ListContainers(dc.ListContainersOptions{All: true, Filters: map[string][]string{"label": {dockerLabel + "=" + owner}}})
				require.NoError(t, err)
				ns, err := b.client.FilteredListNetworks(dc.NetworkFilterOpts{"label": {dockerLabel + "=" + owner: true}})
				require.NoError(t, err)
				return len(cs), len(ns)
			}
			c, n := owned()
			require.Equal(t, 1, c, "the child's server container")
			require.Equal(t, 1, n, "the child's network")

			start := time.Now()
			require.NoError(t, cmd.Process.Signal(sig))
			err = cmd.Wait()
			var exit *exec.ExitError
			require.ErrorAs(t, err, &exit)
			ws := exit.Sys().(syscall.WaitStatus)
			require.True(t, ws.Signaled() && ws.Signal() == sig, "the child must die of %v, got %v; stderr:\n%s", sig, err, childErr())
			WaitFor(t, 30*time.Second, func() bool { c, n := owned(); return c == 0 && n == 0 }, "the child's containers or network are still there after %v", sig)
			t.Logf("%v: the child's container and network were gone %v later", sig, time.Since(start).Round(time.Millisecond))
		})
	}
}
