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

// BenchmarkJoinQuietMesh is what one proxy joining a quiet mesh costs the
// ADS to build and encode its group: issue 14's 2,000 Services, every one
// visible, ten groups live. The ADS holds its envoy.Shared weakly (ads.go):
// while a build or an update holds it, a join builds through it
// (shared-live); after a collection the next join builds the view's
// outbound part again and marshals it to find the live encodings
// (after-collection). The Shared's retained heap is reported with it:
// what holding it strongly between builds would cost.
//
//	go test ./xds -run '^$' -bench JoinQuietMesh -benchtime 20x
func BenchmarkJoinQuietMesh(b *testing.B) {
	in := testmesh.Generate(testmesh.Options{Services: 2000, Namespaces: 10, EndpointsPerService: 10, ExportAll: true, SplitEvery: 10})
	mesh := translator.Translate(in).Mesh
	proxy := func(w int) dataplane.Proxy {
		return dataplane.Proxy{Namespace: testmesh.Namespace(w % 10), ServiceAccount: fmt.Sprintf("svc-%d", w),
			Labels: map[string]string{"app": fmt.Sprintf("svc-%d", w)}, IPs: []string{testmesh.PodIP(w, 0)}, Kind: dataplane.KindSidecar}
	}
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	for _, live := range []bool{true, false} {
		name := "after-collection"
		if live {
			name = "shared-live"
		}
		b.Run(name, func(b *testing.B) {
			enc := newEncoder()
			shared := envoy.NewShared(mesh)
			var keep []*snapshot
			for w := range 10 {
				s, _, err := encodeSnapshot(shared.BuildGroup(proxy(w)), nil, nil, enc)
				if err != nil {
					b.Fatal(err)
				}
				keep = append(keep, s)
			}
			with, without := heap(), uint64(0)
			if !live {
				shared = nil
				without = heap()
			}
			w := len(keep)
			for b.Loop() {
				if !live {
					b.StopTimer()
					runtime.GC() // the last join's Shared goes
					b.StartTimer()
				}
				sh := shared
				if sh == nil {
					sh = envoy.NewShared(mesh)
				}
				if _, _, err := encodeSnapshot(sh.BuildGroup(proxy(w)), nil, nil, enc); err != nil {
					b.Fatal(err)
				}
				w++
			}
			if !live {
				b.ReportMetric(float64(with-without)/(1<<20), "MiB-shared")
			}
			runtime.KeepAlive(keep)
		})
	}
}
