package harness

import "syscall"

// sysProcAttr makes the kernel kill a server when the test binary dies
// without running its cleanups (a panic, a -timeout, a SIGKILL).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// reaperProcAttr puts the reaper in a process group of its own, so that a
// Ctrl-C in the terminal (or a signal to the test's group) leaves it alive
// to clean up after the test binary.
func reaperProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
