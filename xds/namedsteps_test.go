package xds_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/testmesh"
	"github.com/weftmesh/weft/xds"
)

// TestNamedSubscriptionInSteps: a proxy that subscribes to a type's
// names in steps, as Envoy does when its clusters arrive in more than one
// response (most names first, then the rest), gets each step's names and
// only those; one it unsubscribes from and subscribes to again is sent
// again, and one it never named is never sent. The first step names most
// of the snapshot at once, the case the stream keeps as "the snapshot but
// what was left out" rather than name by name: the rest must still be
// sent when named.
func TestNamedSubscriptionInSteps(t *testing.T) {
	in := testmesh.Generate(testmesh.Options{Services: 8, Namespaces: 1, EndpointsPerService: 2, ExportAll: true})
	ads := xds.NewADS(logr.Discard())
	ads.Update(translator.Translate(in).Mesh, time.Now())
	addr := serve(t, ads)

	stream := openDelta(t, addr)
	resps := make(chan *discoveryv3.DeltaDiscoveryResponse, 16)
	go func() {
		defer close(resps)
		for {
			r, err := stream.Recv()
			if err != nil {
				return
			}
			resps <- r
		}
	}()
	send := func(r *discoveryv3.DeltaDiscoveryRequest) {
		t.Helper()
		if err := stream.Send(r); err != nil {
			t.Fatal(err)
		}
	}
	// next returns the next response of type typ, ACKing every response.
	next := func(typ string) *discoveryv3.DeltaDiscoveryResponse {
		t.Helper()
		for {
			select {
			case r, ok := <-resps:
				if !ok {
					t.Fatal("stream closed")
				}
				send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: r.TypeUrl, ResponseNonce: r.Nonce})
				if r.TypeUrl == typ {
					return r
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("no %s response", typ)
			}
		}
	}
	// quiet fails on any response of typ within a moment (others are
	// ACKed and dropped).
	quiet := func(typ string) {
		t.Helper()
		deadline := time.After(500 * time.Millisecond)
		for {
			select {
			case r := <-resps:
				send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: r.TypeUrl, ResponseNonce: r.Nonce})
				if r.TypeUrl == typ {
					t.Fatalf("unexpected %s response: %v", typ, respNames(r))
				}
			case <-deadline:
				return
			}
		}
	}

	ns := testmesh.Namespace(0)
	md, _ := structpb.NewStruct(dataplane.NodeMetadata(dataplane.NodeMeta{Namespace: ns, ServiceAccount: "client",
		Labels: map[string]string{"app": "client"}, Kind: dataplane.KindNameSidecar}))
	send(&discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "client-0." + ns, Metadata: md}, TypeUrl: resourcev3.ClusterType})
	var eds []string
	for _, r := range next(resourcev3.ClusterType).Resources {
		if strings.HasPrefix(r.Name, "outbound|") {
			eds = append(eds, r.Name)
		}
	}
	slices.Sort(eds)
	if len(eds) < 8 {
		t.Fatalf("%d EDS clusters, want one per Service (8): %v", len(eds), eds)
	}
	first, rest := eds[:len(eds)-2], eds[len(eds)-2:len(eds)-1] // eds[len-1]: never named

	send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: first})
	if got := respNames(next(resourcev3.EndpointType)); !slices.Equal(got, first) {
		t.Fatalf("first step: sent %v, want %v", got, first)
	}
	send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: rest})
	if got := respNames(next(resourcev3.EndpointType)); !slices.Equal(got, rest) {
		t.Fatalf("second step: sent %v, want %v", got, rest)
	}
	send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNamesUnsubscribe: first[:1]})
	quiet(resourcev3.EndpointType)
	send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: first[:1]})
	if got := respNames(next(resourcev3.EndpointType)); !slices.Equal(got, first[:1]) {
		t.Fatalf("subscribed again: sent %v, want %v", got, first[:1])
	}
	// Names already held, named again: nothing to send.
	send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.EndpointType, ResourceNamesSubscribe: first})
	quiet(resourcev3.EndpointType)
}

// respNames are a response's resource names, sorted.
func respNames(r *discoveryv3.DeltaDiscoveryResponse) []string {
	var out []string
	for _, res := range r.Resources {
		out = append(out, res.Name)
	}
	slices.Sort(out)
	return out
}
