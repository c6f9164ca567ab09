package xds

import (
	"fmt"
	"math/bits"
	"sort"
	"time"

	"github.com/weftmesh/weft/translator/ir"
)

// Sync states of one resource type on one proxy, as istioctl proxy-status
// shows them.
const (
	Synced = "SYNCED" // the proxy accepted the newest configuration
	Stale  = "STALE"  // a newer configuration was sent and not yet answered
	Nacked = "NACKED" // the proxy rejected the newest configuration
)

// ProxyStatus is one connected proxy, for the debug endpoint and tests.
type ProxyStatus struct {
	ID string `json:"id"`
	// Stream numbers the stream, unique while the server runs: a pod's
	// proxyless application and its weft agent share the node id, and
	// /debug/config_dump?proxy=ID&stream=N names one of them.
	Stream    uint64 `json:"stream"`
	Namespace string `json:"namespace"`
	Identity  string `json:"serviceAccount"`
	// Auth is how the stream proved its identity: certificate, token, or
	// none (the anonymous endpoint).
	Auth        string                `json:"auth"`
	Kind        string                `json:"kind"`
	Protocol    string                `json:"protocol"`
	ConnectedAt time.Time             `json:"connectedAt"`
	Generation  uint64                `json:"generation"`
	Types       map[string]TypeStatus `json:"types"`
}

// TypeStatus is one resource type on one proxy.
type TypeStatus struct {
	State    string `json:"state"`
	SentGen  uint64 `json:"sentGeneration"`
	AckedGen uint64 `json:"ackedGeneration"`
	Nack     *Nack  `json:"nack,omitempty"`
}

// Proxies lists the connected proxies, sorted by id and stream.
func (a *ADS) Proxies() []ProxyStatus {
	a.mu.Lock()
	conns := make([]*conn, 0, len(a.conns))
	for c := range a.conns {
		conns = append(conns, c)
	}
	a.mu.Unlock()
	out := make([]ProxyStatus, 0, len(conns))
	for _, c := range conns {
		ps := ProxyStatus{ID: c.node.ID, Stream: c.id, Namespace: c.node.Proxy.Namespace, Identity: c.node.Proxy.ServiceAccount,
			Auth: c.node.Auth, Kind: kindName(c.node.Proxy.Kind), Protocol: "sotw", ConnectedAt: c.connectedAt, Types: map[string]TypeStatus{}}
		if c.delta {
			ps.Protocol = "delta"
		}
		if s := c.group.snap.Load(); s != nil {
			ps.Generation = s.generation
		}
		c.mu.Lock()
		for t, ts := range c.types.all {
			st := TypeStatus{SentGen: ts.sentGen, AckedGen: ts.ackedGen, Nack: ts.lastNack, State: Synced}
			switch {
			case ts.lastNack != nil:
				st.State = Nacked
			case len(ts.pending) > 0 || ts.ackedGen < ps.Generation:
				st.State = Stale
			}
			ps.Types[shortType(t)] = st
		}
		c.mu.Unlock()
		out = append(out, ps)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].ID != out[j].ID {
			return out[i].ID < out[j].ID
		}
		return out[i].Stream < out[j].Stream
	})
	return out
}

// PolicyState says how far one policy generation has reached the proxies
// whose configuration carries it.
type PolicyState struct {
	// Affected: connected proxies whose configuration carries the policy at
	// this generation (streams that subscribe only to secrets, and streams
	// of the anonymous endpoint, which proved nothing, are not counted).
	// Acked: those that accepted it. Rejected: those whose latest answer
	// is a NACK, with the first one's message, attributed (proxy, type,
	// resources) and bounded (MaxNackMessageBytes).
	Affected, Acked, Rejected int
	Message                   string
}

// Programmed reports whether every affected proxy accepted the policy:
// Affected > 0 && Acked == Affected. (No affected proxy means nothing to
// program; the status writer decides what that shows.)
func (s PolicyState) Programmed() bool { return s.Affected > 0 && s.Acked == s.Affected }

// PolicyState computes the state of one policy generation. Its proxies
// are the streams that subscribe to configuration: weft agent's streams
// take only secrets (their application has its own stream) and hold no
// policy, so they are neither waited for nor counted. A proxy has
// accepted it when it has fully ACKed a generation of its group's
// configuration from which on every generation carried the policy: a
// later generation that changed only other things (an endpoint push) does
// not make the policy pending again while that generation is in flight.
func (a *ADS) PolicyState(ref ir.PolicyRef) PolicyState {
	return a.PolicyStates([]ir.PolicyRef{ref})[0]
}

// PolicyStates is PolicyState of each of refs, in one pass: the replica
// report asks for every translated policy on each write (every change
// and heartbeat), and asking one by one read every stream's state under
// its lock once per policy it carries (33 ms and 4.7 MB for 500
// policies over 200 proxies; BenchmarkPolicyStates). Here each stream's
// state is read once, and a group's policies are matched with refs by
// one walk of both in order (or a search per ref, for a few refs).
func (a *ADS) PolicyStates(refs []ir.PolicyRef) []PolicyState {
	out := make([]PolicyState, len(refs))
	if len(refs) == 0 {
		return out
	}
	// The groups that carry policies, and their streams that proved an
	// identity (anonymous ones neither program nor reject a policy):
	// group i's are conns[spans[i].from:spans[i].to].
	type span struct {
		s        *snapshot
		from, to int
	}
	a.mu.Lock()
	spans := make([]span, 0, len(a.groups))
	conns := make([]*conn, 0, len(a.conns))
	for _, g := range a.groups {
		s := g.snap.Load()
		if s == nil || len(s.policies) == 0 {
			continue
		}
		from := len(conns)
		for c := range g.conns {
			if !c.anonymous {
				conns = append(conns, c)
			}
		}
		if len(conns) > from {
			spans = append(spans, span{s, from, len(conns)})
		}
	}
	a.mu.Unlock()

	// refs in policy order (by index), for the walk.
	order := make([]int, len(refs))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(i, j int) bool { return policyLess(refs[order[i]], refs[order[j]]) })

	now := time.Now()
	var late []string // per ref: the first proxy past ProxyAckTimeout, described
	var facts []streamFacts
	for _, sp := range spans {
		facts = facts[:0] // read on the group's first match
		count := func(k int, since uint64) {
			if len(facts) == 0 {
				// Asked only now, outside a.mu: a stream holds its own
				// lock when it takes a.mu (recordAck), so taking its
				// lock under a.mu could deadlock.
				for _, c := range conns[sp.from:sp.to] {
					facts = append(facts, c.facts())
				}
			}
			st := &out[k]
			for j, f := range facts {
				if !f.configures {
					continue
				}
				st.Affected++
				if f.nack != nil {
					st.Rejected++
					if st.Message == "" {
						st.Message = f.nack.describe()
					}
					continue
				}
				if f.acked >= since {
					st.Acked++
					continue
				}
				// A proxy that has not answered within ProxyAckTimeout
				// holds no policy Pending forever: it counts as
				// rejecting (docs/design/153).
				if !f.unanswered.IsZero() && now.Sub(f.unanswered) >= a.ackTimeout {
					st.Rejected++
					if late == nil {
						late = make([]string, len(refs))
					}
					if late[k] == "" {
						late[k] = fmt.Sprintf("proxy %s has not answered the configuration sent at %s within %s (xds.ProxyAckTimeout): it keeps what it last accepted",
							conns[sp.from+j].node.ID, f.unanswered.UTC().Format(time.RFC3339), a.ackTimeout)
					}
				}
			}
		}
		pol := sp.s.policies
		if len(refs)*bits.Len(uint(len(pol))) < len(refs)+len(pol) {
			for k, ref := range refs {
				if i, ok := policyIndex(sp.s, ref); ok {
					count(k, sp.s.since[i])
				}
			}
			continue
		}
		// Both in order: one walk. A ref given twice matches twice.
		i := 0
		for _, k := range order {
			for i < len(pol) && policyLess(pol[i], refs[k]) {
				i++
			}
			if i == len(pol) {
				break
			}
			if pol[i] == refs[k] {
				count(k, sp.s.since[i])
			}
		}
	}
	for k := range out {
		if out[k].Message == "" && late != nil {
			out[k].Message = late[k] // a rejection's own message comes first
		}
	}
	return out
}

// policyIndex finds ref among a snapshot's (sorted) policies.
func policyIndex(s *snapshot, ref ir.PolicyRef) (int, bool) {
	i := sort.Search(len(s.policies), func(i int) bool { return !policyLess(s.policies[i], ref) })
	return i, i < len(s.policies) && s.policies[i] == ref
}

// policySince is since for a new snapshot of generation gen carrying
// policies: a policy the previous snapshot carried keeps its start, any
// other starts at gen (so a policy dropped and carried again restarts,
// and a proxy that ACKed it before the gap does not count).
func policySince(prev *snapshot, policies []ir.PolicyRef, gen uint64) []uint64 {
	since := make([]uint64, len(policies))
	for i, ref := range policies {
		since[i] = gen
		if prev != nil {
			if j, ok := policyIndex(prev, ref); ok && j < len(prev.since) {
				since[i] = prev.since[j]
			}
		}
	}
	return since
}

func policyLess(a, b ir.PolicyRef) bool {
	if a.Kind != b.Kind {
		return a.Kind < b.Kind
	}
	if a.Namespace != b.Namespace {
		return a.Namespace < b.Namespace
	}
	if a.Name != b.Name {
		return a.Name < b.Name
	}
	return a.Generation < b.Generation
}
