//go:build !linux

package harness

import "syscall"

// sysProcAttr has no parent-death signal outside Linux: servers rely on the
// test's cleanups.
func sysProcAttr() *syscall.SysProcAttr {
	return nil
}

// reaperProcAttr: see sysproc_linux.go.
func reaperProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
