package xds

import (
	"maps"
	"slices"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/envoy"
	"github.com/weftmesh/weft/translator/testmesh"
)

// TestFirstResponseFewBuffers: a proxy's first response of each type, in
// name order as sendDelta sends it, is handed to gRPC in few buffers, so
// that a 16 KiB frame spans fewer than the 37 past which gRPC's list of
// them grows beyond what it keeps between frames (docs/design/200). It
// failed for endpoints and route configurations (~220-450 bytes each)
// when every wire form was a buffer of its own.
func TestFirstResponseFewBuffers(t *testing.T) {
	mesh := translator.Translate(testmesh.Generate(testmesh.Options{Services: 400, Namespaces: 4, EndpointsPerService: 10, ExportAll: true, SplitEvery: 10})).Mesh
	res := envoy.Build(mesh, dataplane.Proxy{Namespace: "ns-0", ServiceAccount: "svc-0", Labels: map[string]string{"app": "svc-0"}})
	snap, _, err := encodeSnapshot(res, nil, nil, newEncoder())
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{resourcev3.ClusterType, resourcev3.EndpointType, resourcev3.ListenerType, resourcev3.RouteType} {
		encs := slices.SortedFunc(maps.Values(snap.resources.of(typ)), byName)
		var bytes int
		for _, e := range encs {
			bytes += e.deltaSize(typ)
		}
		w, ok := marshalDeltaOut(&deltaOut{resp: &discoveryv3.DeltaDiscoveryResponse{TypeUrl: typ, Nonce: "1"}, encs: encs})
		if !ok {
			t.Fatal("not written")
		}
		out := w.done()
		perFrame := float64(len(out)) / (float64(bytes) / (16 << 10))
		t.Logf("%s: %d resources, %d bytes, %d buffers, %.1f per 16 KiB", typ, len(encs), bytes, len(out), perFrame)
		if perFrame > 32 {
			t.Errorf("%s: %d resources (%d bytes) in %d buffers: %.0f per 16 KiB frame, want at most 32", typ, len(encs), bytes, len(out), perFrame)
		}
	}
}

// TestSlabWastesLittle: a pass that makes one wire form gives it an array
// of its size; a large pass makes arrays of at most what it had taken
// before each (so at most twice what it takes) and of at most
// slabMaxBytes; a wire form over a quarter of that gets its own.
func TestSlabWastesLittle(t *testing.T) {
	var one slab
	if b := one.take(300); cap(b) != 300 {
		t.Errorf("one wire form of 300 bytes: an array of %d", cap(b))
	}
	var s slab
	arrays, taken := 0, 0
	for i := range 5000 {
		n := 200 + i%300
		fresh := cap(s.free)-len(s.free) < n
		b := s.take(n)
		if fresh {
			if cap(b) > slabMaxBytes || taken > 0 && cap(b) > max(n, taken) {
				t.Fatalf("after %d bytes, an array of %d for %d", taken, cap(b), n)
			}
			arrays += cap(b)
		}
		taken += n
	}
	if arrays > 2*taken {
		t.Errorf("%d bytes taken in arrays of %d", taken, arrays)
	}
	if b := s.take(slabMaxBytes/4 + 1); cap(b) != slabMaxBytes/4+1 {
		t.Errorf("a large wire form was carved: capacity %d", cap(b))
	}
}
