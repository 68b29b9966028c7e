package harness

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ory/dockertest/v3"
	dc "github.com/ory/dockertest/v3/docker"
)

// The docker backend (REDLOCK_TEST_BACKEND=docker) runs every server as a
// container of the harness's own image (see docker_image.go) on a
// user-defined bridge network created for the test binary. Each container
// has a fixed address on that network, kept across Kill and Restart and
// across Partition and Heal; nothing is published on the host, and the
// test process reaches the containers at their own addresses, as a client
// on another host would.
const (
	dockerLabel        = "redlock-harness" // on every container and network; its value names the owning test binary
	dockerDataDir      = "/data"           // a server's working directory in its container
	dockerTLSDir       = "/tls"            // where a TLSConfig's files are copied
	dockerServerPort   = 6379
	dockerSentinelPort = 26379
	dockerAPITimeout   = 2 * time.Minute // bounds every call to the engine (the image build included)
)

// dockerBackend runs servers as containers.
type dockerBackend struct {
	client *dc.Client
	owner  string // value of dockerLabel on everything this binary creates
	image  string // the harness image, "redlock-harness-redis:VERSION"
	bins   imageBinaries
	net    dockerNetwork

	mu     sync.Mutex
	next   uint32                   // offset in net.subnet of the next address to hand out
	seq    int                      // container and side network names
	sides  map[string]dockerNetwork // side networks of isolated nodes, by ID
	closed bool                     // teardown ran: nothing new is created
}

// dockerNetwork is a bridge network the harness created.
type dockerNetwork struct {
	id, name string
	subnet   *net.IPNet
	gateway  net.IP
}

var (
	dockerOnce   sync.Once
	dockerShared *dockerBackend
	dockerErr    error
)

// newDockerBackend returns the docker backend, setting it up once per test
// binary: connect, remove what dead binaries left behind, build the image,
// create the network, start the reaper and watch for SIGINT and SIGTERM.
func newDockerBackend() (*dockerBackend, error) {
	dockerOnce.Do(func() { dockerShared, dockerErr = setupDocker() })
	return dockerShared, dockerErr
}

func setupDocker() (*dockerBackend, error) {
	b, err := connectDocker()
	if err != nil {
		return nil, err
	}
	b.owner = ownerID(os.Getpid())
	b.sides = map[string]dockerNetwork{}
	b.sweep()
	if b.image, err = b.ensureImage(); err != nil {
		return nil, err
	}
	if b.net, err = b.createNetwork(); err != nil {
		return nil, err
	}
	if err := startReaper(b.owner); err != nil {
		b.teardown()
		return nil, err
	}
	watchSignals(b)
	return b, nil
}

// connectDocker connects to the Docker engine (DOCKER_HOST or the default
// socket) and checks that it answers.
func connectDocker() (*dockerBackend, error) {
	unreachable := func(err error) error {
		return fmt.Errorf("harness: %s=docker but the Docker engine cannot be reached: %v; start Docker (or point DOCKER_HOST at it), or unset %s to run local redis-server processes", BackendEnv, err, BackendEnv)
	}
	pool, err := dockertest.NewPool("")
	if err != nil {
		return nil, unreachable(err)
	}
	client := pool.Client
	// One connection per call, closed when it returns: no idle
	// connection (and no goroutine of one) outlives a call, which the
	// tests' goroutine leak checks would report.
	if tr, ok := client.HTTPClient.Transport.(*http.Transport); ok {
		tr.DisableKeepAlives = true
	}
	client.HTTPClient.Timeout = dockerAPITimeout
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := client.PingWithContext(ctx); err != nil {
		return nil, unreachable(err)
	}
	return &dockerBackend{client: client}, nil
}

// createNetwork creates the harness network. Containers need fixed
// addresses (kept across restarts and reconnections), which Docker only
// grants on a network with a subnet given at creation: the harness lets
// the engine pick a free subnet for a probe network (the engine avoids the
// host's routes and its other networks), removes it, and creates its own
// with that subnet. Another binary may take the subnet in between: then it
// tries again.
func (b *dockerBackend) createNetwork() (dockerNetwork, error) {
	name := "redlock-harness-" + b.owner
	var last error
	for attempt := 0; attempt < 5; attempt++ {
		probe, err := b.newNetwork(name+"-probe", nil)
		if err != nil {
			return dockerNetwork{}, err
		}
		b.client.RemoveNetwork(probe.id)
		nw, err := b.newNetwork(name, &dc.IPAMOptions{Driver: "default", Config: []dc.IPAMConfig{{
			Subnet:  probe.subnet.String(),
			Gateway: probe.gateway.String(),
		}}})
		if err == nil {
			if ones, bits := nw.subnet.Mask.Size(); bits-ones < 4 {
				b.client.RemoveNetwork(nw.id)
				return dockerNetwork{}, fmt.Errorf("harness: network %s: subnet %s is too small", name, nw.subnet)
			}
			b.next = 2 // .0 is the network, .1 the gateway (checked again in take)
			return nw, nil
		}
		last = err
		if !strings.Contains(err.Error(), "overlap") {
			break
		}
	}
	return dockerNetwork{}, fmt.Errorf("harness: create network %s: %w", name, last)
}

// newNetwork creates a bridge network labelled with the owner and returns
// it once its subnet is checked to be an IPv4 private one.
func (b *dockerBackend) newNetwork(name string, ipam *dc.IPAMOptions) (dockerNetwork, error) {
	created, err := b.client.CreateNetwork(dc.CreateNetworkOptions{
		Name:           name,
		Driver:         "bridge",
		IPAM:           ipam,
		Labels:         map[string]string{dockerLabel: b.owner},
		CheckDuplicate: true,
	})
	if err != nil {
		return dockerNetwork{}, err
	}
	info, err := b.client.NetworkInfo(created.ID)
	if err != nil {
		b.client.RemoveNetwork(created.ID)
		return dockerNetwork{}, fmt.Errorf("harness: inspect network %s: %w", name, err)
	}
	nw := dockerNetwork{id: created.ID, name: name}
	for _, c := range info.IPAM.Config {
		_, subnet, err := net.ParseCIDR(c.Subnet)
		if err != nil || subnet.IP.To4() == nil {
			continue
		}
		nw.subnet, nw.gateway = subnet, net.ParseIP(c.Gateway)
		break
	}
	switch {
	case nw.subnet == nil:
		err = fmt.Errorf("harness: network %s has no IPv4 subnet: %+v", name, info.IPAM.Config)
	case !nw.subnet.IP.IsPrivate():
		// Containers at public addresses would shadow real hosts.
		err = fmt.Errorf("harness: network %s got subnet %s, which is not a private range", name, nw.subnet)
	case nw.gateway == nil || !nw.subnet.Contains(nw.gateway):
		err = fmt.Errorf("harness: network %s: gateway %q is not in %s", name, info.IPAM.Config[0].Gateway, nw.subnet)
	}
	if err != nil {
		b.client.RemoveNetwork(created.ID)
		return dockerNetwork{}, err
	}
	return nw, nil
}

// take hands out the next free address of the harness network. b.mu is
// held.
func (b *dockerBackend) take() (net.IP, error) {
	base := binary.BigEndian.Uint32(b.net.subnet.IP.To4())
	ones, bits := b.net.subnet.Mask.Size()
	size := uint32(1) << (bits - ones)
	for ; b.next < size-1; b.next++ { // size-1: the broadcast address
		ip := make(net.IP, 4)
		binary.BigEndian.PutUint32(ip, base+b.next)
		if !ip.Equal(b.net.gateway) {
			b.next++
			return ip, nil
		}
	}
	return nil, fmt.Errorf("harness: network %s (%s) has no address left", b.net.name, b.net.subnet)
}

// reserve takes n addresses, e.g. for the certificates of a TLSConfig.
func (b *dockerBackend) reserve(n int) ([]net.IP, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]net.IP, n)
	for i := range out {
		ip, err := b.take()
		if err != nil {
			return nil, err
		}
		out[i] = ip
	}
	return out, nil
}

func (b *dockerBackend) address(kind string, tlsConf *TLSConfig) (string, int, error) {
	port := dockerServerPort
	if kind == "redis-sentinel" {
		port = dockerSentinelPort
	}
	if tlsConf != nil {
		ip, err := tlsConf.takeAddr()
		if err != nil {
			return "", 0, err
		}
		return ip.String(), port, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	ip, err := b.take()
	if err != nil {
		return "", 0, err
	}
	return ip.String(), port, nil
}

// checkAddr accepts loopback addresses and addresses inside the harness
// network or a live side network: the only places tests may send traffic
// to.
func (b *dockerBackend) checkAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("harness: address %q: %w", addr, err)
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return fmt.Errorf("harness: %s is not an IP address: the docker backend dials only loopback and its own networks", addr)
	}
	if ip.IsLoopback() {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.net.subnet != nil && b.net.subnet.Contains(ip) {
		return nil
	}
	for _, side := range b.sides {
		if side.subnet.Contains(ip) {
			return nil
		}
	}
	return fmt.Errorf("harness: %s is neither loopback nor on the harness network %s (%s): refusing to use it", addr, b.net.name, b.net.subnet)
}

func (b *dockerBackend) readyTimeout() time.Duration {
	return 60 * time.Second // a container may start slowly on a busy engine
}

// view is a container's environment: it binds every interface (its own
// network namespace), announces its address, works in dockerDataDir and
// finds TLS files in dockerTLSDir.
func (b *dockerBackend) view(host string) nodeView {
	return nodeView{
		bind:     "0.0.0.0",
		announce: host,
		dir:      dockerDataDir,
		tlsPath:  func(p string) string { return path.Join(dockerTLSDir, path.Base(p)) },
	}
}

func (b *dockerBackend) newServer(host string, port int, _ string, opts Options) (node, error) {
	if len(opts.Env) > 0 {
		return nil, fmt.Errorf("harness: Options.Env (%q) is supported by the process backend only: the docker backend runs the host's redis-server in a container, where an LD_PRELOAD of a host library means nothing; set Options.Backend to %q for such servers, or unset %s", opts.Env, BackendProcess, BackendEnv)
	}
	n := b.newNode(host, append([]string{b.bins.server}, redisArgs(b.view(host), port, opts)...))
	if opts.TLS != nil {
		if err := n.addTLS(opts.TLS); err != nil {
			return nil, err
		}
	}
	return n, nil
}

func (b *dockerBackend) newSentinel(host string, _ int, _ string, tlsConf *TLSConfig, conf func(nodeView) string) (node, error) {
	confPath := path.Join(dockerDataDir, "sentinel.conf")
	n := b.newNode(host, []string{b.bins.sentinel, confPath})
	n.files = append(n.files, tarFile{name: confPath, data: []byte(conf(b.view(host)))})
	if tlsConf != nil {
		if err := n.addTLS(tlsConf); err != nil {
			return nil, err
		}
	}
	return n, nil
}

func (b *dockerBackend) newNode(host string, cmd []string) *dockerNode {
	b.mu.Lock()
	b.seq++
	name := fmt.Sprintf("redlock-harness-%d-%d", os.Getpid(), b.seq)
	b.mu.Unlock()
	return &dockerNode{b: b, name: name, ip: host, cmd: cmd}
}

// newSideNetwork creates a network for one isolated node and records its
// subnet as one the tests may reach.
func (b *dockerBackend) newSideNetwork() (dockerNetwork, error) {
	b.mu.Lock()
	b.seq++
	name := fmt.Sprintf("redlock-harness-%s-side-%d", b.owner, b.seq)
	b.mu.Unlock()
	nw, err := b.newNetwork(name, nil)
	if err != nil {
		return dockerNetwork{}, fmt.Errorf("harness: create side network %s: %w", name, err)
	}
	b.mu.Lock()
	b.sides[nw.id] = nw
	b.mu.Unlock()
	return nw, nil
}

// removeSideNetwork removes a side network and forgets its subnet.
func (b *dockerBackend) removeSideNetwork(nw dockerNetwork) error {
	b.mu.Lock()
	delete(b.sides, nw.id)
	b.mu.Unlock()
	if err := b.client.RemoveNetwork(nw.id); err != nil {
		var missing *dc.NoSuchNetwork
		if !errors.As(err, &missing) {
			return fmt.Errorf("harness: remove side network %s: %w", nw.name, err)
		}
	}
	return nil
}

// tarFile is a file copied into a container before its first start.
type tarFile struct {
	name string // absolute path in the container
	data []byte
}

// dockerNode is one container. start creates it the first time and starts
// it again afterwards, at the same address.
type dockerNode struct {
	b     *dockerBackend
	name  string
	ip    string    // fixed address on the harness network
	cmd   []string  // the server's command line
	files []tarFile // config and TLS files

	mu          sync.Mutex
	id          string // "" until created
	stopped     bool
	started     time.Time      // last start, for logTail
	partitioned bool           // disconnected from the harness network
	side        *dockerNetwork // non-nil while isolated on a side network
}

// addTLS copies the TLS files into the container.
func (n *dockerNode) addTLS(c *TLSConfig) error {
	for _, p := range []string{c.CAFile, c.CertFile, c.KeyFile} {
		data, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("harness: TLS file: %w", err)
		}
		n.files = append(n.files, tarFile{name: path.Join(dockerTLSDir, path.Base(p)), data: data})
	}
	return nil
}

func (n *dockerNode) String() string { return fmt.Sprintf("container %s (%s)", n.name, n.ip) }

func (n *dockerNode) start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopped {
		return errors.New("harness: server was stopped for good")
	}
	if n.id == "" {
		if err := n.create(); err != nil {
			return err
		}
	}
	n.started = time.Now()
	if err := n.b.client.StartContainer(n.id, nil); err != nil {
		var running *dc.ContainerAlreadyRunning
		if errors.As(err, &running) {
			return nil
		}
		if strings.Contains(err.Error(), "already in use") { // the address, taken by a container of someone else
			return fmt.Errorf("%w: %s (%v)", errPortInUse, n, err)
		}
		return fmt.Errorf("harness: docker start %s: %w", n, err)
	}
	return nil
}

// create creates the container on the harness network at n.ip, with no
// published port, and copies its files in. n.mu is held.
func (n *dockerNode) create() error {
	b := n.b
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return errors.New("harness: the docker backend was torn down (the test binary is ending)")
	}
	c, err := b.client.CreateContainer(dc.CreateContainerOptions{
		Name: n.name,
		Config: &dc.Config{
			Image:      b.image,
			Cmd:        n.cmd,
			Labels:     map[string]string{dockerLabel: b.owner},
			WorkingDir: dockerDataDir,
		},
		HostConfig: &dc.HostConfig{NetworkMode: b.net.name},
		NetworkingConfig: &dc.NetworkingConfig{EndpointsConfig: map[string]*dc.EndpointConfig{
			b.net.name: {IPAMConfig: &dc.EndpointIPAMConfig{IPv4Address: n.ip}},
		}},
	})
	if err != nil {
		return fmt.Errorf("harness: docker create %s: %w", n, err)
	}
	n.id = c.ID
	if len(n.files) == 0 {
		return nil
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range n.files {
		hdr := &tar.Header{Name: strings.TrimPrefix(f.name, "/"), Mode: 0o644, Size: int64(len(f.data)), ModTime: time.Now()}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := tw.Write(f.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := b.client.UploadToContainer(n.id, dc.UploadToContainerOptions{InputStream: &buf, Path: "/"}); err != nil {
		return fmt.Errorf("harness: copy files into %s: %w", n, err)
	}
	return nil
}

// state inspects the container. n.mu is held.
func (n *dockerNode) state() (dc.State, error) {
	c, err := n.b.client.InspectContainer(n.id)
	if err != nil {
		return dc.State{}, err
	}
	return c.State, nil
}

func (n *dockerNode) kill() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.killLocked()
}

func (n *dockerNode) killLocked() error {
	if n.id == "" {
		return nil
	}
	st, err := n.state()
	if err != nil {
		return fmt.Errorf("harness: docker inspect %s: %w", n, err)
	}
	if !st.Running {
		return nil
	}
	if st.Paused {
		if err := n.b.client.UnpauseContainer(n.id); err != nil {
			return fmt.Errorf("harness: docker unpause %s: %w", n, err)
		}
	}
	err = n.b.client.KillContainer(dc.KillContainerOptions{ID: n.id, Signal: dc.SIGKILL})
	var notRunning *dc.ContainerNotRunning
	if err != nil && !errors.As(err, &notRunning) {
		return fmt.Errorf("harness: docker kill %s: %w", n, err)
	}
	if !poll(10*time.Second, 20*time.Millisecond, func() bool {
		st, err := n.state()
		return err == nil && !st.Running
	}) {
		return fmt.Errorf("harness: %s still running 10s after docker kill", n)
	}
	return nil
}

func (n *dockerNode) pause() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.id == "" {
		return errors.New("harness: pause: server is not running")
	}
	if err := n.b.client.PauseContainer(n.id); err != nil {
		return fmt.Errorf("harness: docker pause %s: %w", n, err)
	}
	return nil
}

func (n *dockerNode) resume() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.id == "" {
		return errors.New("harness: resume: server is not running")
	}
	if err := n.b.client.UnpauseContainer(n.id); err != nil {
		return fmt.Errorf("harness: docker unpause %s: %w", n, err)
	}
	return nil
}

func (n *dockerNode) partition() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.id == "" {
		return errors.New("harness: partition: server is not running")
	}
	if n.partitioned || n.side != nil {
		return fmt.Errorf("harness: partition: %s is already cut off", n)
	}
	if err := n.b.client.DisconnectNetwork(n.b.net.id, dc.NetworkConnectionOptions{Container: n.id, Force: true}); err != nil {
		return fmt.Errorf("harness: docker network disconnect %s %s: %w", n.b.net.name, n, err)
	}
	n.partitioned = true
	return nil
}

func (n *dockerNode) isolate() (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.id == "" {
		return "", errors.New("harness: isolate: server is not running")
	}
	if n.partitioned || n.side != nil {
		return "", fmt.Errorf("harness: isolate: %s is already cut off", n)
	}
	side, err := n.b.newSideNetwork()
	if err != nil {
		return "", err
	}
	fail := func(err error) (string, error) {
		n.b.client.DisconnectNetwork(side.id, dc.NetworkConnectionOptions{Container: n.id, Force: true})
		n.b.removeSideNetwork(side)
		return "", err
	}
	if err := n.b.client.ConnectNetwork(side.id, dc.NetworkConnectionOptions{Container: n.id}); err != nil {
		return fail(fmt.Errorf("harness: docker network connect %s %s: %w", side.name, n, err))
	}
	c, err := n.b.client.InspectContainer(n.id)
	if err != nil {
		return fail(fmt.Errorf("harness: docker inspect %s: %w", n, err))
	}
	ip := net.ParseIP(c.NetworkSettings.Networks[side.name].IPAddress)
	if ip == nil || !side.subnet.Contains(ip) {
		return fail(fmt.Errorf("harness: %s got address %q on side network %s (%s)", n, c.NetworkSettings.Networks[side.name].IPAddress, side.name, side.subnet))
	}
	if err := n.b.client.DisconnectNetwork(n.b.net.id, dc.NetworkConnectionOptions{Container: n.id, Force: true}); err != nil {
		return fail(fmt.Errorf("harness: docker network disconnect %s %s: %w", n.b.net.name, n, err))
	}
	n.side = &side
	return ip.String(), nil
}

func (n *dockerNode) heal() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.partitioned && n.side == nil {
		return nil
	}
	err := n.b.client.ConnectNetwork(n.b.net.id, dc.NetworkConnectionOptions{
		Container:      n.id,
		EndpointConfig: &dc.EndpointConfig{IPAMConfig: &dc.EndpointIPAMConfig{IPv4Address: n.ip}},
	})
	if err != nil {
		return fmt.Errorf("harness: docker network connect %s %s: %w", n.b.net.name, n, err)
	}
	n.partitioned = false
	if side := n.side; side != nil {
		n.side = nil
		if err := n.b.client.DisconnectNetwork(side.id, dc.NetworkConnectionOptions{Container: n.id, Force: true}); err != nil {
			return fmt.Errorf("harness: docker network disconnect %s %s: %w", side.name, n, err)
		}
		return n.b.removeSideNetwork(*side)
	}
	return nil
}

func (n *dockerNode) stop() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stopped = true
	if n.id != "" {
		if st, err := n.state(); err == nil && st.Paused {
			n.b.client.UnpauseContainer(n.id)
		}
		n.b.client.RemoveContainer(dc.RemoveContainerOptions{ID: n.id, Force: true, RemoveVolumes: true})
		n.id = ""
	}
	if n.side != nil {
		n.b.removeSideNetwork(*n.side)
		n.side = nil
	}
}

func (n *dockerNode) exited() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.id == "" {
		return false
	}
	st, err := n.state()
	return err == nil && !st.Running && !st.Restarting
}

func (n *dockerNode) logTail(lines int) string {
	n.mu.Lock()
	id, since := n.id, n.started
	n.mu.Unlock()
	if id == "" {
		return "(no container)"
	}
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := n.b.client.Logs(dc.LogsOptions{
		Context:      ctx,
		Container:    id,
		OutputStream: &out,
		ErrorStream:  &out,
		Stdout:       true,
		Stderr:       true,
		Since:        since.Unix(), // whole seconds: may include the end of the previous run
		Tail:         strconv.Itoa(lines),
	})
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return tailString(out.String(), lines)
}
