package tests

import (
	"os"
	"testing"

	"github.com/redlock-go/redlock/tests/harness"
)

// TestMain lets the harness set up what outlives one test (with
// REDLOCK_TEST_BACKEND=docker: the image and the network) and remove it all
// after the last one.
func TestMain(m *testing.M) {
	os.Exit(harness.Main(m).Run())
}
