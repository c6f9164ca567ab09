package xds

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"testing"
)

// TestVersionMapIsAMap: whatever is set, deleted and rebased, a
// versionMap holds what a plain map given the same writes holds.
func TestVersionMapIsAMap(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	name := func() string { return fmt.Sprintf("n%d", r.IntN(12)) }
	version := func() string { return []string{"", "a", "b", "c"}[r.IntN(4)] }
	snapshot := func() map[string]*encoded {
		if r.IntN(5) == 0 {
			return nil
		}
		m := map[string]*encoded{}
		for i := r.IntN(12); i > 0; i-- {
			n := name()
			m[n] = testEncoding(n, []string{"a", "b", "c"}[r.IntN(3)])
		}
		return m
	}
	for run := 0; run < 2000; run++ {
		var m versionMap
		want := map[string]string{}
		for step := 0; step < 40; step++ {
			switch r.IntN(4) {
			case 0:
				n, v := name(), version()
				m.set(n, v)
				if v == "" {
					v = emptyVersion
				}
				want[n] = v
			case 1:
				n := name()
				m.del(n)
				delete(want, n)
			case 2:
				m.rebase(snapshot())
			case 3:
				// What sendDelta does: send a snapshot's resources, then
				// rebase on it.
				s := snapshot()
				for n, e := range s {
					if r.IntN(3) > 0 {
						m.set(n, e.version())
						want[n] = e.version()
					}
				}
				m.rebase(s)
			}
			got := map[string]string{}
			m.each(func(n, v string) { got[n] = v })
			if !maps.Equal(got, want) {
				t.Fatalf("run %d step %d: holds %v, want %v", run, step, got, want)
			}
			for n, v := range want {
				if g, ok := m.get(n); !ok || g != v {
					t.Fatalf("run %d step %d: get(%s) = %q %t, want %q", run, step, n, g, ok, v)
				}
			}
			// diff against have: m's own base (its fast path) or
			// another snapshot.
			have := m.base
			if r.IntN(2) == 0 {
				have = snapshot()
			}
			sendWant, goneWant := map[string]bool{}, map[string]bool{}
			for n, e := range have {
				if v, ok := want[n]; !ok || v != e.version() {
					sendWant[n] = true
				}
			}
			for n := range want {
				if _, ok := have[n]; !ok {
					goneWant[n] = true
				}
			}
			sendGot, goneGot := map[string]bool{}, map[string]bool{}
			m.diff(have, func(n string, e *encoded) {
				if have[n] != e || sendGot[n] {
					t.Fatalf("run %d step %d: diff sends %s twice or not have's", run, step, n)
				}
				sendGot[n] = true
			}, func(n string) { goneGot[n] = true })
			if !maps.Equal(sendGot, sendWant) || !maps.Equal(goneGot, goneWant) {
				t.Fatalf("run %d step %d: diff against %d names sends %v and drops %v, want %v and %v", run, step, len(have), sendGot, goneGot, sendWant, goneWant)
			}
			if _, ok := m.get("absent"); ok {
				t.Fatal("holds a name never set")
			}
			if m.isBase(m.base) && len(m.base) != len(want) {
				t.Fatalf("run %d step %d: in sync with a base of %d but holds %d", run, step, len(m.base), len(want))
			}
		}
	}
}
