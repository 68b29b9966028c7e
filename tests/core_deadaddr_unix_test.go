//go:build unix

package tests

import (
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// coreDeadAddr returns a 127.0.0.1 address where nothing listens and nothing
// can start listening while the test runs: the port is held by a socket that
// is bound but never listens (and does not set SO_REUSEADDR, so nobody else
// can bind it), so every connection attempt is refused at once. It models a
// node that is down, without the risk that another test's server takes the
// port over.
func coreDeadAddr(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	require.NoError(t, err, "socket")
	t.Cleanup(func() { syscall.Close(fd) })
	require.NoError(t, syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}), "bind 127.0.0.1:0")
	sa, err := syscall.Getsockname(fd)
	require.NoError(t, err, "getsockname")
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
	}
	require.True(t, errors.Is(err, syscall.ECONNREFUSED), "dead address %s must refuse connections, got %v", addr, err)
	return addr
}
