package xds

import (
	"testing"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator/ir"
)

// A rebuild whose configuration is unchanged but whose dependencies moved
// must not write to the published snapshot (other goroutines read its
// deps and policies without locks): it returns a copy with the new deps.
func TestUnchangedRebuildLeavesPublishedSnapshotAlone(t *testing.T) {
	p := dataplane.Proxy{Namespace: "shop", ServiceAccount: "sa", Labels: map[string]string{"app": "web"}}
	enc := newEncoder()
	first, changed, err := buildSnapshot(&ir.Mesh{TrustDomain: "cluster.local"}, p, nil, nil, enc)
	if err != nil || !changed {
		t.Fatalf("first build: changed=%v err=%v", changed, err)
	}
	// A Service without ports is something the proxy sees (a dependency)
	// that adds no resource.
	key := ir.ServiceKey{Namespace: "shop", Name: "portless"}
	mesh := &ir.Mesh{TrustDomain: "cluster.local", Services: []*ir.Service{{Key: key, ExportTo: []string{"shop"}}}}

	done := make(chan struct{})
	go func() { // a concurrent reader, as update and PolicyState are
		defer close(done)
		for i := 0; i < 100; i++ {
			_ = dependsOn(first, []ir.ServiceKey{key})
		}
	}()
	next, changed, err := buildSnapshot(mesh, p, nil, first, enc)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	if changed {
		t.Error("a build with the same resources and policies reported a change")
	}
	if next == first {
		t.Fatal("new dependencies were not recorded in a new snapshot")
	}
	if first.deps[key] {
		t.Error("the published snapshot was modified")
	}
	if !next.deps[key] || next.generation != first.generation || !sameResources(first, next) {
		t.Errorf("the copy: deps %v, generation %d (want %d), same resources %v", next.deps, next.generation, first.generation, sameResources(first, next))
	}
	again, changed, _ := buildSnapshot(mesh, p, nil, next, enc)
	if again != next || changed {
		t.Error("an identical rebuild did not return the snapshot itself")
	}
}
