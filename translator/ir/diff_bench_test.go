package ir_test

import (
	"fmt"
	"testing"

	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/ir"
	"github.com/weftmesh/weft/translator/testmesh"
)

// BenchmarkDiff compares two full translations of a mesh that differ in
// one TrafficSplit's weight: the price Update pays to rebuild only the
// groups that depend on it (compare with translating: BenchmarkTranslate
// in translator/envoy).
func BenchmarkDiff(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			in := testmesh.Generate(testmesh.Options{Services: n, Namespaces: 100, EndpointsPerService: 10, SplitEvery: 10})
			old := translator.Translate(in).Mesh
			w := int32(50)
			in.TrafficSplits[0].Spec.Backends[1].Weight = &w
			next := translator.Translate(in).Mesh
			b.Run("compared", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if d := ir.Diff(old, next); len(d.Services) != 1 {
						b.Fatalf("%d Services changed, want 1", len(d.Services))
					}
				}
			})
			// What the controller's mesh loop pays: Reuse after the
			// translation, then Diff of a model that shares every
			// unchanged Service.
			b.Run("reused", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					b.StopTimer()
					fresh := translator.Translate(in).Mesh
					b.StartTimer()
					if d := ir.Diff(old, ir.Reuse(old, fresh)); len(d.Services) != 1 {
						b.Fatalf("%d Services changed, want 1", len(d.Services))
					}
				}
			})
		})
	}
}
