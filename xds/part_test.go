package xds

import (
	"fmt"
	"maps"
	"reflect"
	"runtime"
	"slices"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/envoy"
	"github.com/weftmesh/weft/translator/testmesh"
)

// TestPartEncodingEqualsWhole: a group built through a Shared is encoded
// as its view entry's Part (once) and its own resources; the snapshot
// holds exactly what encoding the whole build gives, resource by
// resource, for groups of several entries (namespaces scoped or not,
// replicas of one workload, other workloads). The Part is encoded once
// per entry: a second group's endpoints map is the Part's map itself.
// Rebuilt from an equal model, a group's snapshot is unchanged.
func TestPartEncodingEqualsWhole(t *testing.T) {
	for _, export := range []bool{false, true} {
		t.Run(fmt.Sprintf("export=%v", export), func(t *testing.T) {
			in := testmesh.Generate(testmesh.Options{Services: 40, Namespaces: 4, EndpointsPerService: 3, SplitEvery: 5, ExportAll: export})
			mesh := translator.Translate(in).Mesh
			enc := newEncoder()
			shared := envoy.NewShared(mesh)
			proxy := func(i, replica int) dataplane.Proxy {
				app := fmt.Sprintf("svc-%d", i)
				return dataplane.Proxy{Namespace: testmesh.Namespace(i % 4), ServiceAccount: app, Labels: map[string]string{"app": app},
					IPs: []string{testmesh.PodIP(i, replica)}, Kind: dataplane.KindSidecar}
			}
			var kept []*snapshot
			for i := range 8 {
				for replica := range 2 {
					p := proxy(i, replica)
					res := shared.BuildGroup(p)
					if res.Common == nil {
						t.Fatal("no Common part: the test would not test it")
					}
					got, _, err := encodeSnapshot(res, nil, nil, enc)
					if err != nil {
						t.Fatal(err)
					}
					want, _, err := encodeSnapshot(envoy.BuildGroup(mesh, p), nil, nil, enc)
					if err != nil {
						t.Fatal(err)
					}
					for _, typ := range pushOrder {
						if !reflect.DeepEqual(versionsOf(got.resources.of(typ)), versionsOf(want.resources.of(typ))) {
							t.Errorf("proxy %d/%d %s: encoded through the Part differs from the whole build", i, replica, shortType(typ))
						}
					}
					// A first send walks each map in name order without
					// sorting it: every resource once, sorted.
					for k, typ := range pushOrder {
						var walked []*encoded
						if !got.order[k].inOrder(got.resources.of(typ), func(e *encoded) { walked = append(walked, e) }) {
							if typ != pushOrder[secretsAt] && len(got.resources.of(typ)) > 0 {
								t.Errorf("proxy %d/%d %s: no name order for a map made from the Part", i, replica, shortType(typ))
							}
							continue
						}
						want := slices.SortedFunc(maps.Values(got.resources.of(typ)), byName)
						if !slices.Equal(walked, want) {
							t.Errorf("proxy %d/%d %s: walked in order %d resources, the map sorted is %d", i, replica, shortType(typ), len(walked), len(want))
						}
					}
					if !maps.Equal(got.deps, want.deps) {
						t.Errorf("proxy %d/%d: depends on %d Services through the Part, %d whole", i, replica, len(got.deps), len(want.deps))
					}
					if got.splits != want.splits {
						t.Errorf("proxy %d/%d: holds a split %v through the Part, %v whole", i, replica, got.splits, want.splits)
					}
					base, err := enc.part(res.Common)
					if err != nil {
						t.Fatal(err)
					}
					if reflect.ValueOf(got.resources[endpointsAt]).UnsafePointer() != reflect.ValueOf(base.maps[endpointsAt]).UnsafePointer() {
						t.Errorf("proxy %d/%d: the endpoints map is not the Part's", i, replica)
					}
					if res.Common.DepsAre(res.Deps) && reflect.ValueOf(got.deps).UnsafePointer() != reflect.ValueOf(base.deps).UnsafePointer() {
						t.Errorf("proxy %d/%d: its dependencies are the Part's, but not the Part's set", i, replica)
					}
					// The second replica (the same group's resources)
					// takes the maps the first made onto the Part.
					for k, typ := range pushOrder {
						own := map[string]*encoded{}
						for _, e := range got.order[k].own {
							own[e.name()] = e
						}
						if len(own) == 0 || k == secretsAt {
							continue
						}
						a := base.merged.find(mergedKeyOf(k, own), own)
						if a == nil {
							t.Errorf("proxy %d/%d %s: the map made onto the Part is not remembered", i, replica, shortType(typ))
						} else if !sameMap(a.m, got.resources.of(typ)) {
							t.Errorf("proxy %d/%d %s: the map remembered for its own resources is not the one it holds", i, replica, shortType(typ))
						}
						if replica == 1 && !sameMap(got.resources.of(typ), kept[len(kept)-1].resources.of(typ)) {
							t.Errorf("proxy %d/1 %s: not the map replica 0 holds", i, shortType(typ))
						}
					}
					kept = append(kept, got)
				}
			}
			// A workload no Service selects, beside svc-0's in ns-0: its
			// own resources differ from every other group's, so it takes
			// no map another group made.
			stranger := dataplane.Proxy{Namespace: testmesh.Namespace(0), ServiceAccount: "stranger", Labels: map[string]string{"app": "stranger"},
				IPs: []string{"10.250.0.1"}, Kind: dataplane.KindSidecar}
			sres := shared.BuildGroup(stranger)
			if sres.Common != shared.BuildGroup(proxy(0, 0)).Common {
				t.Fatal("the stranger's Part is not svc-0's: the case tests nothing")
			}
			got, _, err := encodeSnapshot(sres, nil, nil, enc)
			if err != nil {
				t.Fatal(err)
			}
			want, _, err := encodeSnapshot(envoy.BuildGroup(mesh, stranger), nil, nil, enc)
			if err != nil {
				t.Fatal(err)
			}
			for _, typ := range pushOrder {
				if !reflect.DeepEqual(versionsOf(got.resources.of(typ)), versionsOf(want.resources.of(typ))) {
					t.Errorf("stranger %s: encoded through the Part differs from the whole build", shortType(typ))
				}
			}
			// Lists edited after the build (Common left set) are encoded
			// as they are, not as the parts say.
			edited := shared.BuildGroup(proxy(0, 0))
			extra := &clusterv3.Cluster{Name: "extra-static", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}}
			edited.Clusters = append(slices.Clip(edited.Clusters), extra)
			snap, _, err := encodeSnapshot(edited, nil, nil, enc)
			if err != nil {
				t.Fatal(err)
			}
			if snap.resources[clustersAt]["extra-static"] == nil {
				t.Error("a cluster added to the lists after the build is not in the snapshot")
			}
			// An equal model, built and encoded again onto the snapshots.
			again := envoy.NewShared(translator.Translate(in).Mesh)
			for j, prev := range kept {
				next, changed, err := encodeSnapshot(again.BuildGroup(proxy(j/2, j%2)), nil, prev, enc)
				if err != nil {
					t.Fatal(err)
				}
				if changed || next != prev {
					t.Errorf("group %d: rebuilt from an equal model, its snapshot changed", j)
				}
			}
		})
	}
}

func versionsOf(m map[string]*encoded) map[string]string {
	out := make(map[string]string, len(m))
	for n, e := range m {
		out[n] = e.version()
	}
	return out
}

// TestMergedOrder: a Part's sorted resources and a group's own merge in
// name order, the group's taking the place of the Part's of its name;
// a map the order does not describe (a patched snapshot's) is not walked.
func TestMergedOrder(t *testing.T) {
	e := func(name string) *encoded { return testEncoding(name, name) }
	a, c, e1, c2, b, f := e("a"), e("c"), e("e"), e("c"), e("b"), e("f")
	m := map[string]*encoded{"a": a, "b": b, "c": c2, "e": e1, "f": f}
	o := mergedOrder{m: m, base: &sliceAnchor[*encoded]{s: []*encoded{a, c, e1}}, own: []*encoded{b, c2, f}}
	var got []*encoded
	if !o.inOrder(m, func(x *encoded) { got = append(got, x) }) {
		t.Fatal("the map the order was made for is not walked")
	}
	if want := []*encoded{a, b, c2, e1, f}; !slices.Equal(got, want) {
		t.Errorf("walked %v, want a b c(own) e f", names(got))
	}
	patched := maps.Clone(m)
	if o.inOrder(patched, func(*encoded) {}) {
		t.Error("a copy of the map (a patched snapshot's) is walked by the order of the original")
	}
	if (&mergedOrder{}).inOrder(m, func(*encoded) {}) {
		t.Error("a snapshot without an order walks a map")
	}
}

func names(es []*encoded) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.name())
	}
	return out
}

// TestMergedMapsDoNotKeepTheirPart: a merged map's anchor may be one of
// the Part's own (a group whose own resources are all the Part's gets the
// Part's map back from the interner). The cleanup merged registers on it
// must not reach the encoded Part, or the Part and every encoding in it
// would never be collected.
func TestMergedMapsDoNotKeepTheirPart(t *testing.T) {
	in := testmesh.Generate(testmesh.Options{Services: 10, Namespaces: 2, EndpointsPerService: 2, ExportAll: true})
	mesh := translator.Translate(in).Mesh
	p := dataplane.Proxy{Namespace: testmesh.Namespace(0), ServiceAccount: "svc-0", Labels: map[string]string{"app": "svc-0"},
		IPs: []string{testmesh.PodIP(0, 0)}, Kind: dataplane.KindSidecar}
	part := envoy.NewShared(mesh).BuildGroup(p).Common
	enc := newEncoder()
	collected := make(chan struct{})
	func() {
		base := enc.encodePart(part)
		if base.err != nil {
			t.Fatal(base.err)
		}
		a, ok := base.anchors[clustersAt].(*anchor[string, *encoded])
		if !ok {
			t.Fatal("the Part's clusters have no anchor: the case tests nothing")
		}
		own := map[string]*encoded{}
		for n, e := range base.maps[clustersAt] {
			own[n] = e
			break
		}
		base.merged.remember(mergedKeyOf(clustersAt, own), own, a)
		runtime.AddCleanup(base, func(ch chan struct{}) { close(ch) }, collected)
	}()
	for range 50 {
		runtime.GC()
		select {
		case <-collected:
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Error("an encoded Part whose merged map is its own map stays alive after nothing refers to it")
}

// TestRemadePartSharesItsOrder: a Part made again with the same content
// (by a new Shared, after the last was collected: between the joins of a
// quiet mesh, at every collection) gives its groups the name order the
// live groups hold, not a copy. Each group holds its Part's sorted lists
// (mergedOrder.base); a copy per Part made is kept by every group built
// from it, a list of every Service per type (16 KiB at 2,000) per
// collection during a cold start.
func TestRemadePartSharesItsOrder(t *testing.T) {
	in := testmesh.Generate(testmesh.Options{Services: 20, Namespaces: 2, EndpointsPerService: 2, ExportAll: true})
	mesh := translator.Translate(in).Mesh
	enc := newEncoder()
	build := func(w int) *snapshot {
		p := dataplane.Proxy{Namespace: testmesh.Namespace(0), ServiceAccount: fmt.Sprintf("svc-%d", w),
			Labels: map[string]string{"app": fmt.Sprintf("svc-%d", w)}, IPs: []string{testmesh.PodIP(w, 0)}, Kind: dataplane.KindSidecar}
		collected := make(chan struct{})
		var s *snapshot
		func() {
			res := envoy.NewShared(mesh).BuildGroup(p)
			var err error
			if s, _, err = encodeSnapshot(res, nil, nil, enc); err != nil {
				t.Fatal(err)
			}
			runtime.AddCleanup(res.Common, func(ch chan struct{}) { close(ch) }, collected)
		}()
		for range 50 {
			runtime.GC()
			select {
			case <-collected:
				return s
			case <-time.After(10 * time.Millisecond):
			}
		}
		t.Fatal("the group's Part stays alive after its build: the case tests nothing")
		return nil
	}
	first := build(0)
	second := build(1) // another workload: its own group, the same view
	checked := 0
	for i, typ := range pushOrder {
		a, b := first.order[i].base, second.order[i].base
		if a == nil || b == nil {
			continue
		}
		checked++
		if &a.s[0] != &b.s[0] {
			t.Errorf("%s: the second group holds its own copy of the Part's order (%d resources), not the first's", shortType(typ), len(b.s))
		}
	}
	if checked == 0 {
		t.Fatal("no type has a Part order: the case tests nothing")
	}
}
