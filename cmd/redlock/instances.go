package main

import (
	"errors"
	"fmt"
	"strings"
	"unicode"

	"github.com/redlock-go/redlock"
)

// specList is a repeatable flag holding instance specs. Set only splits the
// value: validation happens in instances, whose errors are redacted by the
// library, because the flag package would quote the raw value (password
// included) in its own error.
type specList []string

// String returns the specs with passwords redacted.
func (s *specList) String() string {
	if s == nil {
		return ""
	}
	out := make([]string, len(*s))
	for i, spec := range *s {
		if inst, err := redlock.ParseInstance(spec); err == nil {
			out[i] = inst.String()
		} else {
			out[i] = "(invalid)"
		}
	}
	return strings.Join(out, ",")
}

// Set appends the comma- or space-separated specs in v.
func (s *specList) Set(v string) error {
	specs := splitSpecs(v)
	if len(specs) == 0 {
		return errors.New("no instance spec")
	}
	*s = append(*s, specs...)
	return nil
}

// splitSpecs splits a list of instance specs on commas and white space,
// keeping the comma-separated host list of a redis+sentinel:// spec in one
// piece ("redis+sentinel://h1:26379,h2:26379/0?master=m,localhost:6380" is
// two specs).
func splitSpecs(v string) []string {
	var out []string
	for _, f := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || unicode.IsSpace(r) }) {
		if n := len(out); n > 0 && openSentinelHosts(out[n-1]) {
			out[n-1] += "," + f
			continue
		}
		out = append(out, f)
	}
	return out
}

// openSentinelHosts reports whether spec is a sentinel URL still inside its
// host list: nothing after the hosts (path, query) has been seen yet. A
// sentinel spec always needs ?master=, so a complete one never stays open.
func openSentinelHosts(spec string) bool {
	scheme, rest, ok := strings.Cut(spec, "://")
	if !ok || (scheme != "redis+sentinel" && scheme != "rediss+sentinel") {
		return false
	}
	return !strings.ContainsAny(rest, "/?#")
}

// nodeSpec is one parsed node: the spec as typed (it may hold a password,
// never print it) and the library's Instance for it.
type nodeSpec struct {
	inst redlock.Instance
}

// Name is the node's address with any password redacted.
func (n nodeSpec) Name() string { return n.inst.String() }

// resolveNodes returns the nodes from the flag, else from
// $REDLOCK_INSTANCES, else localhost:6379. A spec that does not parse is
// reported (without its password) as an error wrapping
// redlock.ErrInvalidArgument.
func (a *app) resolveNodes(flagSpecs specList, flagName string) ([]nodeSpec, error) {
	specs, from := []string(flagSpecs), "--"+flagName
	if len(specs) == 0 {
		if env := a.getenv(envInstances); strings.TrimSpace(env) != "" {
			specs, from = splitSpecs(env), "$"+envInstances
		}
	}
	if len(specs) == 0 {
		specs = []string{"localhost:6379"}
	}
	nodes := make([]nodeSpec, 0, len(specs))
	for i, raw := range specs {
		inst, err := redlock.ParseInstance(raw)
		if err != nil {
			return nil, fmt.Errorf("%s: instance %d: %w", from, i+1, err)
		}
		nodes = append(nodes, nodeSpec{inst: inst})
	}
	return nodes, nil
}

func instancesOf(nodes []nodeSpec) []redlock.Instance {
	out := make([]redlock.Instance, len(nodes))
	for i, n := range nodes {
		out[i] = n.inst
	}
	return out
}
