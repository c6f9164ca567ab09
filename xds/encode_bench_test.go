package xds

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/envoy"
	"github.com/weftmesh/weft/translator/testmesh"
)

// BenchmarkGroupBuilds builds 100 proxy groups whose views overlap, as the
// replicas' groups of one namespace do: 1,000 Services in 10 namespaces,
// 10 groups per namespace, each seeing its namespace's 100 Services.
//
//   - cold: every group built from nothing (a restart, a reconnect storm),
//     with the heap the 100 snapshots retain afterwards;
//   - unchanged: every group rebuilt from an identical mesh (what a change
//     that reaches every group but alters nothing costs).
//
// Each with envoy.Build per group, and (shared/...) through one
// envoy.Shared per round, as the ADS builds: the 10 groups of a namespace
// see the same Services, so their outbound part is built once.
func BenchmarkGroupBuilds(b *testing.B) {
	in := testmesh.Generate(testmesh.Options{Services: 1000, Namespaces: 10, EndpointsPerService: 10, SplitEvery: 10})
	mesh := translator.Translate(in).Mesh
	proxies := make([]dataplane.Proxy, 100)
	for g := range proxies {
		proxies[g] = dataplane.Proxy{Namespace: testmesh.Namespace(g % 10), ServiceAccount: fmt.Sprintf("svc-%d", g),
			Labels: map[string]string{"app": fmt.Sprintf("svc-%d", g)}}
	}
	shared := false
	buildAll := func(e *encoder, prev []*snapshot) []*snapshot {
		out := make([]*snapshot, len(proxies))
		sh := envoy.NewShared(mesh)
		for i, p := range proxies {
			var pr *snapshot
			if prev != nil {
				pr = prev[i]
			}
			var res *envoy.Resources
			if shared {
				res = sh.BuildGroup(p)
			} else {
				res = envoy.BuildGroup(mesh, p)
			}
			s, _, err := encodeSnapshot(res, nil, pr, e)
			if err != nil {
				b.Fatal(err)
			}
			out[i] = s
		}
		return out
	}
	for _, sh := range []bool{false, true} {
		shared = sh
		prefix := ""
		if sh {
			prefix = "shared/"
		}
		b.Run(prefix+"cold", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				buildAll(newEncoder(), nil)
			}
			b.StopTimer()
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			e := newEncoder()
			snaps := buildAll(e, nil)
			runtime.GC()
			runtime.ReadMemStats(&after)
			runtime.KeepAlive(snaps)
			runtime.KeepAlive(e)
			b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(len(proxies))/1024, "KiB-retained/group")
		})
		b.Run(prefix+"unchanged", func(b *testing.B) {
			e := newEncoder()
			snaps := buildAll(e, nil)
			b.ReportAllocs()
			for b.Loop() {
				buildAll(e, snaps)
			}
		})
	}
}
