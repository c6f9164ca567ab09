package envoy_test

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/envoy"
	"github.com/weftmesh/weft/translator/testmesh"
)

// Issue 13, huge inputs: 10,000 Services in ONE namespace is the worst case
// of weft's scoping (a namespace's proxies see all of its Services). No
// validation can refuse it (Services are core objects), so it must be
// translated within a stated time and memory, and each type's SotW response
// (which cannot be split) must fit dataplane.MaxXDSMessageBytes.
//
// Measured (2-core machine, go test ./translator/envoy -run TestHugeNamespace -v):
// Translate 0.4-0.6 s, Translate+Build 1.6-1.8 s, 253 MiB allocated, 186 MiB
// live; SotW bytes: endpoints 9.1 MiB, clusters 6.6 MiB, routes 3.0 MiB.
// The bounds are about 3x that (time about 10x: shared machines are noisy).
const (
	hugeServices = 10000
	// hugeMaxDuration bounds Translate + Build for one proxy. Shared CI
	// machines are noisy, hence the wide margin.
	hugeMaxDuration = 20 * time.Second
	// hugeMaxAllocBytes bounds the bytes allocated by Translate + Build.
	hugeMaxAllocBytes = 768 << 20
	// hugeMaxLiveBytes bounds the heap that the mesh model and one proxy's
	// configuration keep alive.
	hugeMaxLiveBytes = 512 << 20
)

func TestHugeNamespace(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 10,000-Service namespace")
	}
	in := testmesh.Generate(testmesh.Options{Services: hugeServices, Namespaces: 1, EndpointsPerService: 10, SplitEvery: 10})
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	m := translator.Translate(in).Mesh
	translated := time.Since(start)
	r := envoy.Build(m, proxy(0))
	took := time.Since(start)
	runtime.ReadMemStats(&after)
	alloc := after.TotalAlloc - before.TotalAlloc
	runtime.GC()
	var live runtime.MemStats
	runtime.ReadMemStats(&live)
	liveBytes := int64(live.HeapAlloc) - int64(before.HeapAlloc)
	if liveBytes < 0 {
		liveBytes = 0
	}
	runtime.KeepAlive(m)
	runtime.KeepAlive(r)
	runtime.KeepAlive(in)

	perType := map[string]int{}
	for _, x := range r.Listeners {
		perType["listeners"] += proto.Size(x)
	}
	for _, x := range r.Routes {
		perType["routes"] += proto.Size(x)
	}
	for _, x := range r.Clusters {
		perType["clusters"] += proto.Size(x)
	}
	for _, x := range r.Endpoints {
		perType["endpoints"] += proto.Size(x)
	}
	t.Logf("%d Services in one namespace: translate %v, translate+build %v, allocated %d MiB, live %d MiB; response bytes %v; clusters %d",
		hugeServices, translated, took, alloc>>20, liveBytes>>20, perType, len(r.Clusters))
	runtime.KeepAlive(r)

	if took > hugeMaxDuration {
		t.Errorf("Translate+Build took %v, over %v", took, hugeMaxDuration)
	}
	if alloc > hugeMaxAllocBytes {
		t.Errorf("Translate+Build allocated %d MiB, over %d MiB", alloc>>20, hugeMaxAllocBytes>>20)
	}
	if liveBytes > hugeMaxLiveBytes {
		t.Errorf("model + one proxy keep %d MiB live, over %d MiB", liveBytes>>20, hugeMaxLiveBytes>>20)
	}
	if len(r.Clusters) < hugeServices {
		t.Errorf("%d clusters for %d Services: the proxy does not see its namespace", len(r.Clusters), hugeServices)
	}
	for typ, n := range perType {
		if n > dataplane.MaxXDSMessageBytes {
			t.Errorf("%s: %d bytes in one SotW response, over dataplane.MaxXDSMessageBytes (%d)", typ, n, dataplane.MaxXDSMessageBytes)
		}
	}
}

// BenchmarkHugeNamespace: Translate + Build for one proxy of a namespace of
// 10,000 Services (go test ./translator/envoy -run '^$' -bench HugeNamespace -benchtime 3x).
func BenchmarkHugeNamespace(b *testing.B) {
	in := testmesh.Generate(testmesh.Options{Services: hugeServices, Namespaces: 1, EndpointsPerService: 10, SplitEvery: 10})
	b.Run(fmt.Sprint(hugeServices), func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			envoy.Build(translator.Translate(in).Mesh, proxy(0))
		}
	})
}
