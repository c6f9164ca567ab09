package xds

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"strings"
	"testing"
	"unsafe"
)

// TestSubscriptionIsASet: whatever is added, removed and rebased
// (rebuilt snapshots, and maps derived from the base by replacing
// values), a subscription names what a plain set given the same writes
// names.
func TestSubscriptionIsASet(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	name := func() string { return fmt.Sprintf("n%d", r.IntN(16)) }
	snapshot := func() map[string]*encoded {
		if r.IntN(6) == 0 {
			return nil
		}
		m := map[string]*encoded{}
		for i := r.IntN(16); i > 0; i-- {
			n := name()
			m[n] = testEncoding(n, "")
		}
		return m
	}
	for run := 0; run < 2000; run++ {
		var s subscription
		want := map[string]bool{}
		base := snapshot()
		for step := 0; step < 40; step++ {
			switch r.IntN(5) {
			case 4:
				// A request naming many at once (addAll), often the
				// first of an empty subscription, names repeated.
				if r.IntN(2) == 0 {
					s = subscription{}
					clear(want)
				}
				var names []string
				for i := r.IntN(24); i > 0; i-- {
					names = append(names, name())
				}
				s.addAll(names, base)
				for _, n := range names {
					want[n] = true
				}
			case 0:
				n := name()
				s.add(n, base)
				want[n] = true
			case 1:
				n := name()
				s.del(n)
				delete(want, n)
			case 2:
				base = snapshot()
				s.rebase(base, derivation{}, false)
			case 3:
				// A patch: some values replaced, perhaps names added (a
				// new Service), the rest kept.
				next := maps.Clone(base)
				if next == nil {
					next = map[string]*encoded{}
				}
				var changed []string
				for n := range next {
					if r.IntN(2) == 0 {
						next[n] = testEncoding(n, "x")
						changed = append(changed, n)
					}
				}
				for i := r.IntN(3); i > 0; i-- {
					if n := name(); next[n] == nil {
						next[n] = testEncoding(n, "x")
						changed = append(changed, n)
					}
				}
				s.rebase(next, derivation{from: base, changed: changed}, true)
				base = next
			}
			if s.len() != len(want) {
				t.Fatalf("run %d step %d: len %d, want %d", run, step, s.len(), len(want))
			}
			for i := 0; i < 16; i++ {
				n := fmt.Sprintf("n%d", i)
				if s.has(n) != want[n] {
					t.Fatalf("run %d step %d: has(%s) = %t, want %t", run, step, n, s.has(n), want[n])
				}
			}
			has := s.hasOf(base)
			for n := range base {
				if has(n) != want[n] {
					t.Fatalf("run %d step %d: hasOf(base)(%s) = %t, want %t", run, step, n, has(n), want[n])
				}
			}
			got := map[string]bool{}
			s.each(func(n string) { got[n] = true })
			if !maps.Equal(got, want) {
				t.Fatalf("run %d step %d: each gives %v, want %v", run, step, got, want)
			}
		}
	}
}

// TestSubscriptionInStepHoldsNoNames: a stream subscribed to every name
// of its snapshot holds no map of its own after a rebase, and keeps the
// snapshot's strings, not the request's, for a name the snapshot has.
func TestSubscriptionInStepHoldsNoNames(t *testing.T) {
	have := map[string]*encoded{}
	var req []string
	for i := 0; i < 100; i++ {
		n := fmt.Sprintf("outbound|80||svc-%d.ns.svc.cluster.local", i)
		have[n] = testEncoding(n, "")
		req = append(req, strings.Clone(n)) // a decoded request's own copy
	}
	var s subscription
	for _, n := range req {
		s.add(n, have)
	}
	for n := range s.in {
		if e := have[n]; e == nil || !sameString(n, e.name()) {
			t.Fatalf("%s is kept as the request's string, want the snapshot's", n)
		}
	}
	s.rebase(have, derivation{}, false)
	if s.in != nil || s.out != nil || !sameMap(s.base, have) {
		t.Errorf("in step: in %d, out %d names, base shared %t; want none, none, true", len(s.in), len(s.out), sameMap(s.base, have))
	}
	// Unsubscribing from one costs one entry; a patched snapshot with the
	// same names is taken over without a pass.
	s.del(req[0])
	patched := maps.Clone(have)
	patched[req[1]] = testEncoding(req[1], "2")
	s.rebase(patched, derivation{from: have, changed: []string{req[1]}}, true)
	if !sameMap(s.base, patched) || len(s.out) != 1 || s.len() != 99 {
		t.Errorf("after a patch: base shared %t, out %d, len %d; want true, 1, 99", sameMap(s.base, patched), len(s.out), s.len())
	}
	// A client naming a few of many keeps a plain set.
	var few subscription
	few.add(req[0], have)
	few.rebase(have, derivation{}, false)
	if few.base != nil || len(few.in) != 1 {
		t.Errorf("few names: base %d names, in %d; want a plain set of 1", len(few.base), len(few.in))
	}
}

func sameString(a, b string) bool {
	return len(a) == len(b) && (len(a) == 0 || unsafe.StringData(a) == unsafe.StringData(b))
}
