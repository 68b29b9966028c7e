package redlock

import (
	"context"
	"errors"
	"fmt"

	"github.com/gomodule/redigo/redis"
)

// node is one Redlock node as the Manager sees it: a pool and a name that is
// safe to print.
type node struct {
	name  string      // address with any password redacted
	pool  *redis.Pool // plain, TLS, Sentinel-discovered, or the caller's
	owned bool        // Close closes pool (false for Pool instances)
	close func() error
	guard *restartGuard // nil: restart guard off or not possible
	mux   *mux          // shared pipelined connection; nil for caller-owned pools

	// sentinel is set for Sentinel nodes only: do then retries once after a
	// failover and waits for replica acknowledgements (sentinel_pool.go).
	sentinel *sentinelWatch
}

// do borrows a connection within ctx, runs fn on it and returns it.
func (n *node) do(ctx context.Context, fn func(c redis.Conn) error) error {
	if n.sentinel != nil {
		return n.sentinel.do(ctx, n, fn)
	}
	return n.doOnce(ctx, fn)
}

// doOnce is do without the Sentinel hook.
func (n *node) doOnce(ctx context.Context, fn func(c redis.Conn) error) error {
	if n.mux != nil {
		return fn(muxHandle{n.mux})
	}
	c, err := n.pool.GetContext(ctx)
	if err != nil {
		return err
	}
	err = fn(c)
	if cerr := c.Close(); err == nil && cerr != nil && !errors.Is(cerr, redis.ErrPoolExhausted) {
		err = cerr
	}
	return err
}

// shutdown releases what the Manager owns for this node.
func (n *node) shutdown() error {
	var errs []error
	if n.mux != nil {
		n.mux.close()
	}
	if n.owned {
		errs = append(errs, n.pool.Close())
	}
	if n.close != nil {
		errs = append(errs, n.close())
	}
	return errors.Join(errs...)
}

// decodeAcquire reads acquire.lua's reply {1, ttl} or {0, pttl}.
func decodeAcquire(reply []interface{}) (acquired bool, pttl int64, err error) {
	if len(reply) != 2 {
		return false, 0, fmt.Errorf("redlock: acquire: unexpected reply of %d elements", len(reply))
	}
	flag, err := redis.Int64(reply[0], nil)
	if err != nil || (flag != 0 && flag != 1) {
		return false, 0, fmt.Errorf("redlock: acquire: unexpected reply %v", reply[0])
	}
	pttl, err = redis.Int64(reply[1], nil)
	if err != nil {
		return false, 0, fmt.Errorf("redlock: acquire: unexpected ttl %v", reply[1])
	}
	return flag == 1, pttl, nil
}

// decodeInspect reads inspect.lua's reply {holder, pttl}.
func decodeInspect(reply []interface{}) (holder string, pttl int64, err error) {
	if len(reply) != 2 {
		return "", 0, fmt.Errorf("redlock: inspect: unexpected reply of %d elements", len(reply))
	}
	holder, err = redis.String(reply[0], nil)
	if err != nil {
		return "", 0, fmt.Errorf("redlock: inspect: unexpected holder %v", reply[0])
	}
	pttl, err = redis.Int64(reply[1], nil)
	if err != nil {
		return "", 0, fmt.Errorf("redlock: inspect: unexpected ttl %v", reply[1])
	}
	return holder, pttl, nil
}
