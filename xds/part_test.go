package xds

import (
	"fmt"
	"reflect"
	"testing"

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
						if !reflect.DeepEqual(versionsOf(got.resources[typ]), versionsOf(want.resources[typ])) {
							t.Errorf("proxy %d/%d %s: encoded through the Part differs from the whole build", i, replica, shortType(typ))
						}
					}
					if got.splits != want.splits {
						t.Errorf("proxy %d/%d: holds a split %v through the Part, %v whole", i, replica, got.splits, want.splits)
					}
					base, err := enc.part(res.Common)
					if err != nil {
						t.Fatal(err)
					}
					if reflect.ValueOf(got.resources[pushOrder[endpointsAt]]).UnsafePointer() != reflect.ValueOf(base.maps[endpointsAt]).UnsafePointer() {
						t.Errorf("proxy %d/%d: the endpoints map is not the Part's", i, replica)
					}
					kept = append(kept, got)
				}
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
		out[n] = e.version
	}
	return out
}
