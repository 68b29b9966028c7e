//go:build !linux

package harness

import "syscall"

// sysProcAttr has no parent-death signal outside Linux: servers rely on the
// test's cleanups.
func sysProcAttr() *syscall.SysProcAttr {
	return nil
}
