// Package chaos is redlock's Jepsen-style fault suite (its tests are the
// package). See chaos_test.go and docs/safety.md.
package chaos
