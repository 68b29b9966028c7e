package main

import "syscall"

// setDeathSignal makes the kernel send sig to the child when redlock dies.
func setDeathSignal(attr *syscall.SysProcAttr, sig syscall.Signal) { attr.Pdeathsig = sig }
