//go:build !linux

package bench

import "errors"

// connCounter needs Linux's sock_diag; elsewhere the peak-conns metric is 0
// and the benchmark logs why.
type connCounter struct {
	port int
	buf  []byte
}

func (c *connCounter) count() (int, error) {
	return 0, errors.New("counting connections needs Linux")
}
