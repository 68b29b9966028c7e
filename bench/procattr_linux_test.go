package bench

import "syscall"

// serverProcAttr makes the kernel kill a redis-server when the benchmark
// process dies, even when it dies without running TestMain's cleanup
// (a -timeout panic, a SIGKILL).
func serverProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
