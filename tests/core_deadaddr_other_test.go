//go:build !unix

package tests

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/redlock-go/redlock/tests/harness"
)

// coreDeadAddr returns the address of a redis-server that was started and
// killed: nothing listens there any more (see the unix version, which also
// keeps other processes from taking the port).
func coreDeadAddr(t testing.TB) string {
	t.Helper()
	s := harness.Start(t, harness.Options{})
	require.NoError(t, s.Kill(), "kill %s", s)
	return s.Addr()
}
