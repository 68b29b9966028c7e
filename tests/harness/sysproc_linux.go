package harness

import "syscall"

// sysProcAttr makes the kernel kill a server when the test binary dies
// without running its cleanups (a panic, a -timeout, a SIGKILL).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
