package redlock

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"
)

// The reads: calls that change nothing on the nodes.

// inspect asks every node who holds resource; held says which holders
// count as a yes. The round is decided either way (see rule either).
func (m *Manager) inspect(ctx context.Context, rl rule, resource string, held func(holder string) bool) *round {
	return m.fanout(ctx, rl, "EVALSHA", &inspectScript, inspectArgs(resource), inspectVoter(held), read)
}

func isHeld(holder string) bool { return holder != "" }

// IsLocked reports whether a quorum of nodes holds resource, whoever the
// holder is (aioredlock's is_locked). It returns as soon as the answer is
// decided either way: true when a quorum holds the key, false when so many
// nodes answered "free" that no quorum can hold it. A node under the
// restart guard's quarantine may have forgotten the key, so its "free"
// does not count (its "held" does). When the nodes that answered in time
// cannot decide it, the error matches ErrUnavailable (a *QuorumError with
// Op "is_locked" and the per-node errors).
func (m *Manager) IsLocked(ctx context.Context, resource string) (bool, error) {
	ctx, or := m.opStart(ctx, OpIsLocked, resource)
	locked, err := m.isLocked(ctx, resource, or)
	if or != nil {
		m.opEnd(ctx, or, err)
	}
	return locked, err
}

// isLocked is IsLocked; or is nil without observers.
func (m *Manager) isLocked(ctx context.Context, resource string, or *opRun) (bool, error) {
	if _, err := m.checkCall([]string{resource}, time.Millisecond); err != nil {
		return false, err
	}
	if err := m.enter(); err != nil {
		return false, err
	}
	defer m.wg.Done()
	r := m.inspect(ctx, either, resource, isHeld)
	defer r.release()
	if r.ok >= m.quorum {
		or.round(r)
		return true, nil
	}
	free := 0
	for _, v := range r.votes {
		if v.err == nil && !v.ok {
			free++
		}
	}
	if free > len(m.nodes)-m.quorum {
		or.round(r)
		return false, nil
	}
	qe := r.quorumError("is_locked", resource, ErrUnavailable)
	if err := ctx.Err(); err != nil {
		qe.extra = append(qe.extra, err)
	}
	return false, qe
}

// GetLock rebuilds the handle of a lock held by token, e.g. in another
// process (aioredlock's get_lock). It succeeds when a quorum holds the
// token; the handle's Until is what that quorum still guarantees, its TTL
// for Extend(0) is the Manager's default TTL. Otherwise the error matches
// ErrNotHeld and is a *QuorumError with Op "get".
func (m *Manager) GetLock(ctx context.Context, resource, token string) (*Lock, error) {
	ctx, or := m.opStart(ctx, OpGet, resource)
	l, err := m.getLock(ctx, resource, token, or)
	m.lockEnd(ctx, or, l, err)
	return l, err
}

// getLock is GetLock; or is nil without observers.
func (m *Manager) getLock(ctx context.Context, resource, token string, or *opRun) (*Lock, error) {
	if _, err := m.checkCall([]string{resource}, time.Millisecond); err != nil {
		return nil, err
	}
	if token == "" {
		return nil, invalidf("empty token")
	}
	if err := m.enter(); err != nil {
		return nil, err
	}
	defer m.wg.Done()
	start := time.Now()
	r := m.inspect(ctx, quorum, resource, func(holder string) bool { return holder == token })
	defer r.release()
	if r.ok < m.quorum {
		for i := range r.votes {
			if r.votes[i].err == nil && !r.votes[i].ok {
				r.votes[i].err = ErrNotHeld
			}
		}
		qe := r.quorumError("get", resource, ErrNotHeld)
		if err := ctx.Err(); err != nil {
			qe.extra = append(qe.extra, err)
		}
		return nil, qe
	}
	ttl := m.cfg.defaultTTL
	var pttls []time.Duration
	for _, v := range r.votes {
		if v.ok {
			d := time.Duration(v.pttl) * time.Millisecond
			if v.pttl < 0 {
				d = ttl
			}
			pttls = append(pttls, d)
		}
	}
	// The quorum guarantees the smallest remaining ttl among its members.
	sort.Slice(pttls, func(i, j int) bool { return pttls[i] > pttls[j] })
	left := pttls[m.quorum-1]
	l := newLock(m, []string{resource}, token, ttl, 0, start.Add(left), start.Add(left-m.drift(left)))
	r.track(l, false) // a handle: its first Extend tops it up
	or.round(r)
	return l, nil
}

// NodeState is what one node says about a resource (see Inspect).
type NodeState struct {
	Node   string        // the node's address, password redacted
	Holder string        // the token stored in the key; "" when free
	TTL    time.Duration // remaining time to live; -1 without expiry; 0 when free
	Err    error         // the node could not be asked; the other fields are zero
}

// Inspect asks every node, at once and each within the node timeout, who
// holds resource and for how long: for status pages and the CLI. It waits
// for every node (unlike the locking calls, which stop at the quorum) and
// changes nothing. Only invalid input is an error.
func (m *Manager) Inspect(ctx context.Context, resource string) ([]NodeState, error) {
	ctx, or := m.opStart(ctx, OpInspect, resource)
	states, err := m.inspectAll(ctx, resource, or)
	if or != nil {
		m.opEnd(ctx, or, err)
	}
	return states, err
}

// inspectAll is Inspect; or is nil without observers.
func (m *Manager) inspectAll(ctx context.Context, resource string, or *opRun) ([]NodeState, error) {
	if _, err := m.checkCall([]string{resource}, time.Millisecond); err != nil {
		return nil, err
	}
	if err := m.enter(); err != nil {
		return nil, err
	}
	defer m.wg.Done()
	out := make([]NodeState, len(m.nodes))
	for i, n := range m.nodes {
		out[i] = NodeState{Node: n.name}
	}
	// unguarded: Inspect reports what each node holds, quarantined or not
	r := m.fanout(ctx, every, "EVALSHA", &inspectScript, inspectArgs(resource), inspectVoter(isHeld), unguarded)
	defer r.release()
	or.round(r)
	for i := range out {
		out[i].Err = r.unanswered()
	}
	for _, v := range r.votes {
		st := NodeState{Node: m.nodes[v.node].name, Err: v.err}
		if v.err == nil {
			st.Holder = v.text
			switch {
			case v.pttl == -1:
				st.TTL = -1
			case v.pttl > 0:
				st.TTL = time.Duration(v.pttl) * time.Millisecond
			}
		}
		out[v.node] = st
	}
	return out, nil
}

// LoadScripts sends SCRIPT LOAD for every script to every node and checks
// the digests. It is optional: every connection the Manager opens (or
// borrows from a caller's Pool) loads the scripts itself, and a node that
// answers NOSCRIPT anyway (after a SCRIPT FLUSH) gets the full script once
// (see Scripts). Use it to check, before locking, that every node is
// reachable and runs the scripts redlock expects. It fails, joining the
// per-node errors, if any node could not load them or returned a digest
// other than Script.SHA1.
func (m *Manager) LoadScripts(ctx context.Context) error {
	ctx, or := m.opStart(ctx, OpLoadScripts, "")
	err := m.checkScripts(ctx, or)
	if or != nil {
		m.opEnd(ctx, or, err)
	}
	return err
}

// checkScripts is LoadScripts; or is nil without observers.
func (m *Manager) checkScripts(ctx context.Context, or *opRun) error {
	loads, err := m.loadScripts(ctx, or)
	if err != nil {
		return err
	}
	var errs []error
	for _, l := range loads {
		switch {
		case l.Err != nil:
			errs = append(errs, NodeError{Node: l.Node, Err: fmt.Errorf("script %s: %w", l.Script, l.Err)})
		case l.SHA1 != scriptRegistry[l.index].SHA1:
			errs = append(errs, NodeError{Node: l.Node, Err: fmt.Errorf("script %s: node returned digest %s, want %s",
				l.Script, l.SHA1, scriptRegistry[l.index].SHA1)})
		}
	}
	return errors.Join(errs...)
}

// ScriptLoad is one node's answer to SCRIPT LOAD of one script.
type ScriptLoad struct {
	Node   string // the node's address, password redacted
	Script string // the script's name (Script.Name)
	SHA1   string // the digest the node returned; "" when Err is set
	Err    error  // the node could not be reached or refused the script

	index int // into scriptRegistry
}

// LoadScriptsReport is LoadScripts that reports what every node answered:
// one ScriptLoad per node and script, in node order, then in Scripts()
// order, for auditing (compare SHA1 with Script.SHA1). Each node gets the
// node timeout. Only a closed Manager is an error.
func (m *Manager) LoadScriptsReport(ctx context.Context) ([]ScriptLoad, error) {
	ctx, or := m.opStart(ctx, OpLoadScripts, "")
	loads, err := m.loadScripts(ctx, or)
	if or != nil {
		m.opEnd(ctx, or, err)
	}
	return loads, err
}

// loadScripts is LoadScriptsReport; or is nil without observers.
func (m *Manager) loadScripts(ctx context.Context, or *opRun) ([]ScriptLoad, error) {
	if err := m.enter(); err != nil {
		return nil, err
	}
	defer m.wg.Done()
	k := len(scriptRegistry)
	out := make([]ScriptLoad, len(m.nodes)*k)
	for i, n := range m.nodes {
		for j, sc := range scriptRegistry {
			out[i*k+j] = ScriptLoad{Node: n.name, Script: sc.Name, index: j}
		}
	}
	r := m.newRound(every, len(out))
	for i := range m.nodes {
		for j, sc := range scriptRegistry {
			m.submit(r, i, "SCRIPT", []interface{}{"LOAD", sc.Source}, nil, voteDigest, unguarded, j)
		}
	}
	r.collect(ctx)
	defer r.release()
	or.round(r)
	for i := range out {
		out[i].Err = r.unanswered()
	}
	for _, v := range r.votes {
		l := &out[v.node*k+v.seq]
		l.SHA1, l.Err = v.text, v.err
	}
	return out, nil
}
