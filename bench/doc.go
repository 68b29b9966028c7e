// Package bench measures redlock side by side with go-redsync/redsync v4
// (redigo driver) on the same five local redis-server processes, which its
// TestMain starts when benchmarks are requested:
//
//	cd bench && go test -run '^$' -bench . -benchmem
//
// The scenarios, the settings shared by both libraries and the report
// (`make bench`, cmd/report, docs/benchmarks.md) are described in
// docs/benchmarks.md. The package has no non-test code.
package bench
