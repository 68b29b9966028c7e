// Package bench measures redlock, on redlock.Addr nodes and on redlock.Pool
// over redsync's kind of redigo pools, side by side with
// go-redsync/redsync v4 (redigo driver) on the same five local
// redis-server processes, which its TestMain starts when benchmarks are
// requested (the Sentinel scenario starts and stops its own Sentinel
// group):
//
//	cd bench && go test -run '^$' -bench . -benchmem
//
// The scenarios, the settings shared by every contender and the report
// (`make bench`, cmd/report, docs/benchmarks.md) are described in
// docs/benchmarks.md. The package has no non-test code.
package bench
