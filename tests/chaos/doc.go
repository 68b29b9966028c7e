// Package chaos is redlock's Jepsen-style fault suite; its tests are the
// package.
//
// Five redis-server processes, each behind its own in-process toxiproxy
// proxy, serve clients on several Managers that take fenced locks while a
// nemesis kills and restarts nodes, pauses them, slows or cuts their links
// and changes the rate of their clocks (through an LD_PRELOAD shim built
// from testdata/clockshim.c). A checker records every critical section and
// reports overlapping holders, fencing tokens out of order and stale writes
// accepted by fenced registers.
//
// The short profile runs in CI in under a minute; REDLOCK_CHAOS=long (make
// chaos-long) runs the long one. REDLOCK_CHAOS_FAULTS=kill,pause,... limits
// the faults. What the suite measured, and what it means, is in
// docs/safety.md.
package chaos
