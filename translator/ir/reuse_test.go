package ir_test

import (
	"math"
	"testing"

	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/ir"
	"github.com/weftmesh/weft/translator/testmesh"
)

// TestReuseKeepsUnchangedServices: after one TrafficSplit's weight
// change, two full translations share nothing; Reuse makes every Service
// but the split's root the predecessor's own pointer (and of the root,
// the ports whose routing did not change), so Diff skips them by pointer:
// it reports the root alone, as comparing every Service by content does.
func TestReuseKeepsUnchangedServices(t *testing.T) {
	in := testmesh.Generate(testmesh.Options{Services: 300, Namespaces: 10, EndpointsPerService: 3, SplitEvery: 10, ExportAll: true})
	prev := translator.Translate(in).Mesh
	w := int32(37)
	in.TrafficSplits[0].Spec.Backends[1].Weight = &w
	root := ir.ServiceKey{Namespace: in.TrafficSplits[0].Namespace, Name: in.TrafficSplits[0].Spec.RootService.Name}
	next := translator.Translate(in).Mesh
	want := ir.Diff(prev, next)
	if len(want.Services) != 1 || want.Services[0].Key != root {
		t.Fatalf("the weight change alters %d Services, want %v alone", len(want.Services), root)
	}
	for i := range next.Services {
		if next.Services[i] == prev.Services[i] {
			t.Fatal("two translations share a Service: the test proves nothing")
		}
	}
	next = ir.Reuse(prev, next)
	for i, s := range next.Services {
		if shared := s == prev.Services[i]; shared == (s.Key == root) {
			t.Errorf("%v: shared with the previous model %v", s.Key, shared)
		}
	}
	if got := ir.Diff(prev, next); len(got.Services) != 1 || got.Services[0].Old != want.Services[0].Old || !got.Services[0].New.Equal(want.Services[0].New) {
		t.Fatalf("after Reuse Diff gives %+v, want %+v", got, want)
	}

	// Skipped, not compared: a Service that is not even equal to itself
	// (a NaN) counts as unchanged when it is shared.
	odd := prev.Services[5]
	if odd.Key == root || next.Services[5] != odd {
		t.Fatal("Service 5 is not a shared, unchanged one")
	}
	odd.Ports[0].Retry = &ir.Retry{BudgetPercent: math.NaN()}
	twin := *odd
	twin.Ports = append([]*ir.Port(nil), odd.Ports...)
	port := *odd.Ports[0]
	port.Retry = &ir.Retry{BudgetPercent: math.NaN()}
	twin.Ports[0] = &port
	if odd.Equal(&twin) {
		t.Fatal("a NaN compares equal: the test proves nothing")
	}
	if got := ir.Diff(prev, next); len(got.Services) != 1 {
		t.Fatalf("Diff compared a shared Service: %+v", got.Services)
	}
}
