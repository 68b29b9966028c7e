package redlock_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/redlock-go/redlock"
)

// The seed walk-through of aioredlock, in Go.
func Example() {
	ctx := context.Background()
	m, err := redlock.New([]redlock.Instance{
		redlock.Addr("localhost:6379"),                  // ('localhost', 6379)
		redlock.Endpoint{Addr: "localhost:6379", DB: 1}, // {'host': 'localhost', 'port': 6379, 'db': 1}
		redlock.URL("redis://localhost:6379/2"),         // 'redis://localhost:6379/2'
		redlock.Sentinel{Addrs: []string{"localhost:26379"}, Master: "leader", DB: 3},
		redlock.SentinelURL("redis://localhost:26379/4?master=leader&encoding=utf-8"),
		redlock.SentinelURL("rediss://:password@localhost:26379/5?master=leader&encoding=utf-8&ssl_cert_reqs=CERT_NONE"),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close() // aioredlock's destroy()

	locked, err := m.IsLocked(ctx, "resource_name")
	if err != nil || locked {
		log.Fatal("resource is locked or nodes are unavailable: ", err)
	}
	lock, err := m.Lock(ctx, "resource_name", 10*time.Second)
	if err != nil {
		log.Fatal("Lock not acquired: ", err) // errors.Is(err, redlock.ErrNotAcquired)
	}
	fmt.Println(lock.Valid()) // true
	if err := m.Extend(ctx, lock, 10*time.Second); err != nil {
		log.Fatal(err) // errors.Is(err, redlock.ErrNotHeld): fewer than a quorum still hold it
	}
	if err := m.Unlock(ctx, lock); err != nil {
		log.Print(err)
	}
	fmt.Println(lock.Valid()) // false
}

// Do is aioredlock's `async with`: the lock is extended while fn runs and
// released when it returns.
func ExampleManager_Do() {
	m, err := redlock.New([]redlock.Instance{
		redlock.Addr("localhost:6379"), redlock.Addr("localhost:6380"), redlock.Addr("localhost:6381"),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	err = m.Do(context.Background(), "resource_name", 0, func(ctx context.Context) error {
		// Do your stuff having the lock; stop when ctx is done:
		// context.Cause(ctx) == redlock.ErrLockLost if the lock was lost.
		return nil
	})
	switch {
	case errors.Is(err, redlock.ErrLocked):
		log.Print("someone else holds it")
	case errors.Is(err, redlock.ErrUnavailable):
		log.Print("too many nodes down")
	case err != nil:
		log.Print(err)
	}
}

// Every failed Lock matches ErrNotAcquired; a *QuorumError tells each node's
// part.
func ExampleQuorumError() {
	m, _ := redlock.New([]redlock.Instance{redlock.Addr("localhost:6379")}, redlock.WithRetryCount(1))
	defer m.Close()
	_, err := m.Lock(context.Background(), "resource_name", time.Second)
	var qe *redlock.QuorumError
	if errors.As(err, &qe) {
		for _, n := range qe.Nodes {
			log.Printf("%s: %v", n.Node, n.Err)
		}
	}
}

// ParseInstance reads the string forms used by the CLI and config files.
func ExampleParseInstance() {
	for _, spec := range []string{
		"localhost:6379",
		"redis://:secret@localhost:6379/2",
		"redis+sentinel://h1:26379,h2:26379/0?master=leader",
	} {
		inst, err := redlock.ParseInstance(spec)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(inst) // passwords are redacted
	}
	// Output:
	// redis://localhost:6379
	// redis://:xxxxx@localhost:6379/2
	// redis+sentinel://h1:26379,h2:26379/0?master=leader
}

// Scripts exposes the Lua scripts for audit and reuse.
func ExampleScripts() {
	for _, s := range redlock.Scripts() {
		fmt.Println(s.Name, s.KeyCount)
	}
	// Output:
	// acquire -1
	// acquire_fenced 2
	// extend -1
	// extend_many -1
	// fence 2
	// inspect 1
	// release -1
}

// Top-up is on by default: a lock won on a bare majority under contention
// goes on to take the free nodes, so that one node whose clock misbehaves
// cannot hand it to another holder. NodesHeld says how many hold it now.
func ExampleLock_NodesHeld() {
	ctx := context.Background()
	m, err := redlock.New([]redlock.Instance{
		redlock.Addr("localhost:6379"), redlock.Addr("localhost:6380"), redlock.Addr("localhost:6381"),
		redlock.Addr("localhost:6382"), redlock.Addr("localhost:6383"),
	}) // redlock.WithTopUp(false) would keep the bare majority
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	l, err := m.Lock(ctx, "report", 30*time.Second)
	if err != nil {
		log.Fatal(err)
	}
	defer l.Unlock(ctx)
	// 3 right after a contended Lock; 5 once the contenders' keys are gone.
	// Held on k of 5 nodes, the lock survives k-3 of them forgetting it.
	fmt.Println(l.NodesHeld(), "of", len(m.Nodes()), "nodes hold the lock")
}
