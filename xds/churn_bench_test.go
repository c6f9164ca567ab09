package xds

import (
	"fmt"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/ir"
	"github.com/weftmesh/weft/translator/testmesh"
)

// discardStream is a Delta stream whose responses go nowhere.
type discardStream struct{ recStream }

func (discardStream) Send(*discoveryv3.DeltaDiscoveryResponse) error { return nil }

// BenchmarkEndpointChange is the server's work for one endpoint change
// (one Service's first endpoint moves: ADS.UpdateEndpoints, then every
// woken stream's push, as serve runs it) with G groups of one proxy each,
// every one seeing all 2,000 Services (each proxy its own workload, every
// Service visible: the peer's setup). Streams are driven by hand (no gRPC,
// no clients): the time and allocations are the server's alone. The issue
// asks that this not grow with G beyond the per-stream send.
//
//	go test ./xds -run '^$' -bench EndpointChange -benchmem
func BenchmarkEndpointChange(b *testing.B) {
	in := testmesh.Generate(testmesh.Options{Services: 2000, Namespaces: 10, EndpointsPerService: 10, ExportAll: true})
	mesh := translator.Translate(in).Mesh
	for _, groups := range []int{10, 100, 300} {
		b.Run(fmt.Sprintf("groups=%d", groups), func(b *testing.B) {
			a := NewADS(logr.Discard())
			a.Update(mesh, time.Now())
			conns := make([]*conn, groups)
			s := &discardStream{}
			for i := range conns {
				ns := testmesh.Namespace(i % 10)
				ni, err := ParseNode(transcriptNode(fmt.Sprintf("p-%d.%s", i, ns), ns, fmt.Sprintf("svc-%d", i)))
				if err != nil {
					b.Fatal(err)
				}
				c := a.newConn(true, ni)
				conns[i] = c
				if err := a.join(c); err != nil {
					b.Fatal(err)
				}
				defer a.leave(c)
				for _, t := range pushOrder[1:] {
					if err := a.deltaRequest(s, c, &discoveryv3.DeltaDiscoveryRequest{Node: &corev3.Node{}, TypeUrl: t, ResourceNamesSubscribe: []string{"*"}}); err != nil {
						b.Fatal(err)
					}
				}
				ackAllPending(b, a, s, c)
			}
			key := ir.ServiceKey{Namespace: testmesh.Namespace(7), Name: "svc-7"}
			var slice *discoveryv1.EndpointSlice
			for _, sl := range in.EndpointSlices {
				if sl.Namespace == key.Namespace && sl.Labels[discoveryv1.LabelServiceName] == key.Name {
					slice = sl.DeepCopy()
				}
			}
			pods := map[string]*corev1.Pod{}
			for _, p := range in.Pods {
				pods[p.Namespace+"/"+p.Name] = p
			}
			lookup := func(ns, name string) *corev1.Pod { return pods[ns+"/"+name] }
			cur := mesh
			seq := 0
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				seq++
				slice.Endpoints[0].Addresses = []string{fmt.Sprintf("10.250.%d.%d", seq/250, seq%250+1)}
				next := translator.UpdateEndpoints(cur, key, []*discoveryv1.EndpointSlice{slice}, lookup)
				b.StartTimer()
				a.UpdateEndpoints(next, []ir.ServiceKey{key}, time.Now())
				for _, c := range conns {
					select {
					case <-c.notify:
					default:
						b.Fatal("a dependent stream was not woken")
					}
					for _, t := range pushOrder[1:] {
						if err := a.sendDelta(s, c, t); err != nil {
							b.Fatal(err)
						}
					}
				}
				b.StopTimer()
				for _, c := range conns {
					ackAllPending(b, a, s, c)
				}
				cur = next
				b.StartTimer()
			}
			b.StopTimer()
			b.ReportMetric(float64(a.Patches())/float64(b.N)/float64(groups), "patches/group/change")
		})
	}
}

// ackAllPending ACKs every response c waits for.
func ackAllPending(b *testing.B, a *ADS, s *discardStream, c *conn) {
	c.mu.Lock()
	var reqs []*discoveryv3.DeltaDiscoveryRequest
	for t, ts := range c.types {
		for n := range ts.pending {
			reqs = append(reqs, &discoveryv3.DeltaDiscoveryRequest{TypeUrl: t, ResponseNonce: n})
		}
	}
	c.mu.Unlock()
	for _, r := range reqs {
		if err := a.deltaRequest(s, c, r); err != nil {
			b.Fatal(err)
		}
	}
}

var _ = resourcev3.ClusterType
