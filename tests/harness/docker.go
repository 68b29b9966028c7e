package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ory/dockertest/v3"
	dc "github.com/ory/dockertest/v3/docker"
)

// The Docker backend runs each server as a container of this image, with the
// server's port published on 127.0.0.1.
const (
	dockerRepository = "redis"
	dockerTag        = "7"
	dockerLabel      = "redlock-harness" // on every container: docker rm -f $(docker ps -aq -f label=redlock-harness)
	dockerTLSDir     = "/tls"            // where a TLSConfig's Dir is mounted, read-only
)

// dockerBackend runs servers through the Docker engine (REDLOCK_TEST_BACKEND=docker).
type dockerBackend struct {
	pool *dockertest.Pool

	pullOnce sync.Once
	pullErr  error
}

var (
	dockerOnce   sync.Once
	dockerShared *dockerBackend
	dockerErr    error
)

// newDockerBackend returns the Docker backend, connecting once per test
// binary.
func newDockerBackend() (*dockerBackend, error) {
	dockerOnce.Do(func() { dockerShared, dockerErr = connectDocker() })
	return dockerShared, dockerErr
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
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := pool.Client.PingWithContext(ctx); err != nil {
		return nil, unreachable(err)
	}
	return &dockerBackend{pool: pool}, nil
}

// pullImage makes sure redis:7 is present, pulling it at most once.
func (b *dockerBackend) pullImage() error {
	b.pullOnce.Do(func() {
		image := dockerRepository + ":" + dockerTag
		if _, err := b.pool.Client.InspectImage(image); err == nil {
			return
		}
		if err := b.pool.Client.PullImage(dc.PullImageOptions{Repository: dockerRepository, Tag: dockerTag}, dc.AuthConfiguration{}); err != nil {
			b.pullErr = fmt.Errorf("harness: docker pull %s: %w", image, err)
		}
	})
	return b.pullErr
}

func (b *dockerBackend) newNode(dir string, port int, opts Options) (node, error) {
	if len(opts.Env) > 0 {
		return nil, errors.New("harness: Options.Env is supported by the process backend only (unset " + BackendEnv + ")")
	}
	if err := b.pullImage(); err != nil {
		return nil, err
	}
	tlsPath := func(p string) string { return path.Join(dockerTLSDir, path.Base(p)) }
	// Inside the container the server listens on 6379 on all interfaces;
	// Docker publishes it on 127.0.0.1:port.
	args := redisArgs("0.0.0.0", 6379, "/data", opts, tlsPath)
	n := &dockerNode{
		client: b.pool.Client,
		port:   port,
		cmd:    append([]string{"redis-server"}, args...),
	}
	if opts.TLS != nil {
		n.binds = []string{opts.TLS.Dir + ":" + dockerTLSDir + ":ro"}
	}
	return n, nil
}

// dockerNode is one redis container. start creates it the first time and
// starts it again afterwards, keeping its port binding.
type dockerNode struct {
	client *dc.Client
	port   int
	cmd    []string
	binds  []string

	mu      sync.Mutex
	id      string // "" until created
	stopped bool
}

func (n *dockerNode) start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopped {
		return errors.New("harness: server was stopped for good")
	}
	if n.id == "" {
		c, err := n.client.CreateContainer(dc.CreateContainerOptions{
			Config: &dc.Config{
				Image:        dockerRepository + ":" + dockerTag,
				Cmd:          n.cmd,
				ExposedPorts: map[dc.Port]struct{}{"6379/tcp": {}},
				Labels:       map[string]string{dockerLabel: "1"},
			},
			HostConfig: &dc.HostConfig{
				Binds: n.binds,
				PortBindings: map[dc.Port][]dc.PortBinding{
					"6379/tcp": {{HostIP: "127.0.0.1", HostPort: strconv.Itoa(n.port)}},
				},
			},
		})
		if err != nil {
			return fmt.Errorf("harness: docker create: %w", err)
		}
		n.id = c.ID
	}
	if err := n.client.StartContainer(n.id, nil); err != nil {
		var running *dc.ContainerAlreadyRunning
		if errors.As(err, &running) {
			return nil
		}
		msg := err.Error()
		if strings.Contains(msg, "port is already allocated") || strings.Contains(msg, "address already in use") {
			return fmt.Errorf("%w: 127.0.0.1:%d (%v)", errPortInUse, n.port, err)
		}
		return fmt.Errorf("harness: docker start %.12s: %w", n.id, err)
	}
	return nil
}

// state inspects the container. n.mu is held.
func (n *dockerNode) state() (dc.State, error) {
	c, err := n.client.InspectContainer(n.id)
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
		return fmt.Errorf("harness: docker inspect %.12s: %w", n.id, err)
	}
	if !st.Running {
		return nil
	}
	if st.Paused {
		if err := n.client.UnpauseContainer(n.id); err != nil {
			return fmt.Errorf("harness: docker unpause %.12s: %w", n.id, err)
		}
	}
	err = n.client.KillContainer(dc.KillContainerOptions{ID: n.id, Signal: dc.SIGKILL})
	var notRunning *dc.ContainerNotRunning
	if err != nil && !errors.As(err, &notRunning) {
		return fmt.Errorf("harness: docker kill %.12s: %w", n.id, err)
	}
	if !poll(10*time.Second, 50*time.Millisecond, func() bool {
		st, err := n.state()
		return err == nil && !st.Running
	}) {
		return fmt.Errorf("harness: container %.12s still running 10s after docker kill", n.id)
	}
	return nil
}

func (n *dockerNode) pause() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.id == "" {
		return errors.New("harness: pause: server is not running")
	}
	if err := n.client.PauseContainer(n.id); err != nil {
		return fmt.Errorf("harness: docker pause %.12s: %w", n.id, err)
	}
	return nil
}

func (n *dockerNode) resume() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.id == "" {
		return errors.New("harness: resume: server is not running")
	}
	if err := n.client.UnpauseContainer(n.id); err != nil {
		return fmt.Errorf("harness: docker unpause %.12s: %w", n.id, err)
	}
	return nil
}

func (n *dockerNode) stop() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stopped = true
	if n.id == "" {
		return
	}
	if st, err := n.state(); err == nil && st.Paused {
		n.client.UnpauseContainer(n.id)
	}
	n.client.RemoveContainer(dc.RemoveContainerOptions{ID: n.id, Force: true, RemoveVolumes: true})
	n.id = ""
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
	id := n.id
	n.mu.Unlock()
	if id == "" {
		return "(no container)"
	}
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := n.client.Logs(dc.LogsOptions{
		Context:      ctx,
		Container:    id,
		OutputStream: &out,
		ErrorStream:  &out,
		Stdout:       true,
		Stderr:       true,
		Tail:         strconv.Itoa(lines),
	})
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return tailString(out.String(), lines)
}
