//go:build unix

package main

import (
	"os"
	"syscall"
)

// childAttr returns the process attributes of exec's CMD: its own process
// group when ownGroup, and on Linux SIGTERM if redlock dies first, so that
// CMD does not outlive the lock's keep-alive.
func childAttr(ownGroup bool) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Setpgid: ownGroup}
	setDeathSignal(attr, syscall.SIGTERM)
	return attr
}

// signalChild sends sig to CMD's process group when it has its own, else to
// CMD alone.
func signalChild(p *os.Process, ownGroup bool, sig syscall.Signal) error {
	if ownGroup {
		return syscall.Kill(-p.Pid, sig)
	}
	return p.Signal(sig)
}

// exitStatus maps CMD's end to redlock's exit code: its exit status, or
// 128+N when signal N killed it.
func exitStatus(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return exitSignalBase + int(ws.Signal())
	}
	return ps.ExitCode()
}
