package xds

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/weftmesh/weft/translator/ir"
)

// policyFleet is an ADS whose groups and streams are set directly, in
// the states a stream reaches by its requests (acktimeout_test.go and
// policystatus_test.go reach them over real streams): for comparing
// ways of reading them, and for measuring what reading them costs.
type policyFleet struct {
	ads  *ADS
	refs []ir.PolicyRef // every policy any group carries, sorted
}

// newPolicyFleet makes groups of 1..maxConns streams; each group
// carries a random subset of policies (all of them when every is set),
// each stream is in a random state: secrets only, anonymous, rejecting,
// behind, late, or up to date.
func newPolicyFleet(r *rand.Rand, groups, maxConns, policies int, every bool) policyFleet {
	a := NewADS(logr.Discard())
	a.ackTimeout = time.Minute
	now := time.Now()
	var all []ir.PolicyRef
	for i := range policies {
		all = append(all, ir.PolicyRef{Kind: "TrafficSplit", Namespace: fmt.Sprintf("ns%d", i%7), Name: fmt.Sprintf("split-%03d", i), Generation: int64(1 + i%3)})
	}
	sortPolicies(all)
	for g := range groups {
		s := &snapshot{generation: 10}
		for _, ref := range all {
			if every || r.IntN(3) == 0 {
				s.policies = append(s.policies, ref)
				s.since = append(s.since, uint64(1+r.IntN(10)))
			}
		}
		grp := &group{key: groupKey(fmt.Sprint(g)), conns: map[*conn]struct{}{}}
		grp.snap.Store(s)
		if r.IntN(10) == 0 {
			grp.snap.Store(nil) // not built yet
		}
		for c := range 1 + r.IntN(maxConns) {
			cn := &conn{id: uint64(g*100 + c), group: grp, node: NodeInfo{ID: fmt.Sprintf("proxy-%d-%d", g, c)}}
			acked := uint64(r.IntN(11))
			if every {
				acked = 10
			}
			types := pushOrder[:]
			switch r.IntN(8) {
			case 0:
				types = []string{resourcev3.SecretType} // weft agent's stream
			case 1:
				cn.anonymous = true
			}
			for _, t := range types {
				cn.types.set(t, &typeState{ackedGen: acked, pending: map[string]inFlight{}})
			}
			ts := cn.types.get(types[0])
			switch r.IntN(6) {
			case 0:
				ts.lastNack = &Nack{Node: cn.node.ID, Type: types[0], Message: "rejected " + cn.node.ID}
			case 1:
				ts.pending["n1"] = inFlight{gen: 10, at: now.Add(-time.Hour)} // past ackTimeout
			case 2:
				ts.pending["n1"] = inFlight{gen: 10, at: now} // in flight
			}
			grp.conns[cn] = struct{}{}
		}
		a.groups[grp.key] = grp
	}
	return policyFleet{ads: a, refs: all}
}

func sortPolicies(refs []ir.PolicyRef) {
	for i := 1; i < len(refs); i++ {
		for j := i; j > 0 && policyLess(refs[j], refs[j-1]); j-- {
			refs[j], refs[j-1] = refs[j-1], refs[j]
		}
	}
}

// TestPolicyStatesAreEachPolicysState: asking for many policies at once
// (one walk of each group's policies beside the refs in order) gives
// each policy the state asking for it alone gives (a search per group),
// whatever the order of refs, repeats, and refs no group carries.
func TestPolicyStatesAreEachPolicysState(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for round := range 200 {
		f := newPolicyFleet(r, 1+r.IntN(12), 4, 1+r.IntN(40), round%5 == 0)
		refs := append([]ir.PolicyRef(nil), f.refs...)
		r.Shuffle(len(refs), func(i, j int) { refs[i], refs[j] = refs[j], refs[i] })
		refs = append(refs, refs[r.IntN(len(refs))]) // a repeat
		gone := refs[0]
		gone.Generation += 10 // a generation no group carries
		refs = append(refs, gone)
		got := f.ads.PolicyStates(refs)
		if len(got) != len(refs) {
			t.Fatalf("round %d: %d states for %d refs", round, len(got), len(refs))
		}
		for k, ref := range refs {
			want := f.ads.PolicyState(ref)
			g := got[k]
			if g.Affected != want.Affected || g.Acked != want.Acked || g.Rejected != want.Rejected || (g.Message == "") != (want.Message == "") {
				t.Fatalf("round %d: %v asked with %d others = %+v; asked alone = %+v", round, ref, len(refs)-1, g, want)
			}
		}
		if st := got[len(got)-1]; st != (PolicyState{}) {
			t.Fatalf("round %d: a generation no group carries has state %+v", round, st)
		}
	}
}

// TestPolicyStateCounts: one group carrying a policy since generation 5,
// a stream in each state, counted as PolicyState documents.
func TestPolicyStateCounts(t *testing.T) {
	a := NewADS(logr.Discard())
	a.ackTimeout = time.Minute
	ref := ir.PolicyRef{Kind: "TrafficSplit", Namespace: "shop", Name: "checkout", Generation: 2}
	grp := &group{key: "g", conns: map[*conn]struct{}{}}
	grp.snap.Store(&snapshot{generation: 7, policies: []ir.PolicyRef{ref}, since: []uint64{5}})
	a.groups[grp.key] = grp
	add := func(id string, acked uint64, types ...string) *typeState {
		c := &conn{node: NodeInfo{ID: id}, group: grp}
		for _, t := range types {
			c.types.set(t, &typeState{ackedGen: acked, pending: map[string]inFlight{}})
		}
		grp.conns[c] = struct{}{}
		return c.types.get(types[0])
	}
	add("current", 5, resourcev3.ClusterType, resourcev3.RouteType) // accepted a generation that carries it
	add("newer", 7, resourcev3.ClusterType, resourcev3.RouteType)   // and a later one
	add("behind", 4, resourcev3.ClusterType, resourcev3.RouteType)  // not yet: pending
	add("agent", 0, resourcev3.SecretType)                          // secrets only: not counted
	add("rejects", 7, resourcev3.ClusterType).lastNack = &Nack{Node: "rejects", Type: resourcev3.ClusterType, Message: "bad"}
	add("late", 4, resourcev3.RouteType).pending["n"] = inFlight{gen: 7, at: time.Now().Add(-2 * time.Minute)}
	add("slow", 4, resourcev3.RouteType).pending["n"] = inFlight{gen: 7, at: time.Now()}
	anon := &conn{node: NodeInfo{ID: "anonymous"}, anonymous: true, group: grp}
	anon.types.set(resourcev3.ClusterType, &typeState{pending: map[string]inFlight{}})
	grp.conns[anon] = struct{}{}

	st := a.PolicyState(ref)
	if st.Affected != 6 || st.Acked != 2 || st.Rejected != 2 {
		t.Fatalf("state = %+v; want 6 affected (all but the agent and the anonymous stream), 2 acked (current, newer), 2 rejected (rejects, late)", st)
	}
	if !strings.Contains(st.Message, "proxy rejects rejected") {
		t.Errorf("message %q: want the rejection's own, before the late proxy's", st.Message)
	}
	grp.snap.Store(&snapshot{generation: 7, policies: []ir.PolicyRef{ref}, since: []uint64{4}})
	st = a.PolicyState(ref)
	if st.Affected != 6 || st.Acked != 5 || st.Rejected != 1 {
		t.Fatalf("carried since 4: state = %+v; want 6 affected, 5 acked (behind, late and slow too), 1 rejected", st)
	}
	for c := range grp.conns {
		if c.node.ID == "rejects" {
			delete(grp.conns, c)
		}
	}
	grp.snap.Store(&snapshot{generation: 7, policies: []ir.PolicyRef{ref}, since: []uint64{5}})
	if st = a.PolicyState(ref); st.Rejected != 1 || !strings.Contains(st.Message, "proxy late has not answered") {
		t.Fatalf("without the rejection: state = %+v; want the late proxy's message", st)
	}
}

// BenchmarkPolicyStates: the replica report asks for every translated
// policy's state on each write (a change, and every heartbeat). The
// large profile of issue 14: 500 splits, every one carried by each of
// 200 groups of one proxy (every Service visible, each proxy its own
// workload).
func BenchmarkPolicyStates(b *testing.B) {
	f := newPolicyFleet(rand.New(rand.NewPCG(1, 2)), 200, 1, 500, true)
	b.Run("one-by-one", func(b *testing.B) {
		for b.Loop() {
			for _, ref := range f.refs {
				f.ads.PolicyState(ref)
			}
		}
	})
	b.Run("at-once", func(b *testing.B) {
		for b.Loop() {
			f.ads.PolicyStates(f.refs)
		}
	})
}
