package envoy_test

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/envoy"
	"github.com/weftmesh/weft/translator/ir"
	"github.com/weftmesh/weft/translator/testmesh"
)

// The benchmark mesh: Services with 10 endpoints each, a TrafficSplit on
// 10% of them, in 100 namespaces. "scoped" is weft's default (a proxy sees
// its namespace); "exported" exports every Service everywhere, the worst
// case and what a mesh without scoping sends to every proxy.
var sizes = []int{1000, 5000, 10000}

func mesh(b *testing.B, n int, exportAll bool) (*translator.Inputs, *ir.Mesh) {
	in := testmesh.Generate(testmesh.Options{Services: n, Namespaces: 100, EndpointsPerService: 10, SplitEvery: 10, ExportAll: exportAll})
	return in, translator.Translate(in).Mesh
}

func proxy(ns int) dataplane.Proxy {
	return dataplane.Proxy{Namespace: testmesh.Namespace(ns), ServiceAccount: "svc-0", Labels: map[string]string{"app": fmt.Sprintf("svc-%d", ns)}}
}

func size(r *envoy.Resources) int {
	n := 0
	for _, m := range r.Listeners {
		n += proto.Size(m)
	}
	for _, m := range r.Routes {
		n += proto.Size(m)
	}
	for _, m := range r.Clusters {
		n += proto.Size(m)
	}
	for _, m := range r.Endpoints {
		n += proto.Size(m)
	}
	return n
}

// BenchmarkTranslate: stage one, the whole mesh model.
func BenchmarkTranslate(b *testing.B) {
	for _, n := range sizes {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			in, _ := mesh(b, n, false)
			b.ReportAllocs()
			for b.Loop() {
				translator.Translate(in)
			}
		})
	}
}

// BenchmarkBuildProxy: stage two for one proxy, with the encoded size of
// its configuration.
func BenchmarkBuildProxy(b *testing.B) {
	for _, export := range []bool{false, true} {
		for _, n := range sizes {
			name := fmt.Sprintf("scoped/%d", n)
			if export {
				name = fmt.Sprintf("exported/%d", n)
			}
			b.Run(name, func(b *testing.B) {
				_, m := mesh(b, n, export)
				p := proxy(1)
				b.ReportAllocs()
				var r *envoy.Resources
				for b.Loop() {
					r = envoy.Build(m, p)
				}
				b.ReportMetric(float64(size(r)), "bytes/proxy")
			})
		}
	}
}

// BenchmarkBuildAllGroups: stage two for one proxy of every namespace (the
// proxy groups of the generated mesh), scoped.
func BenchmarkBuildAllGroups(b *testing.B) {
	for _, n := range sizes {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			_, m := mesh(b, n, false)
			b.ReportAllocs()
			for b.Loop() {
				for ns := 0; ns < 100; ns++ {
					envoy.Build(m, proxy(ns))
				}
			}
		})
	}
}

// BenchmarkEndpointChange compares the cheap path for a one-endpoint change
// (UpdateEndpoints + LoadAssignment of the one Service) with a full
// rebuild (Translate + Build for one proxy).
func BenchmarkEndpointChange(b *testing.B) {
	for _, n := range sizes {
		in, m := mesh(b, n, false)
		key := ir.ServiceKey{Namespace: testmesh.Namespace(1), Name: "svc-1"}
		var slices []*discoveryv1.EndpointSlice
		for _, s := range in.EndpointSlices {
			if s.Namespace == key.Namespace && s.Labels[discoveryv1.LabelServiceName] == key.Name {
				c := s.DeepCopy()
				c.Endpoints = c.Endpoints[1:] // one endpoint went away
				slices = append(slices, c)
			}
		}
		noPods := func(string, string) *corev1.Pod { return nil }
		b.Run(fmt.Sprintf("incremental/%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				next := translator.UpdateEndpoints(m, key, slices, noPods)
				svc := next.Service(key)
				envoy.LoadAssignment(svc, svc.Ports[0])
			}
		})
		b.Run(fmt.Sprintf("full/%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				envoy.Build(translator.Translate(in).Mesh, proxy(1))
			}
		})
	}
}
