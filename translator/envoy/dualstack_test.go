package envoy_test

import (
	"net/netip"
	"os"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/envoy"
	"github.com/weftmesh/weft/translator/ir"
)

// TestDualStackClustersHoldOneFamily (docs/design/064): in
// testdata/dual-stack.in.yaml, every cluster of the dual-stack web holds
// the endpoints of one family — the IPv6 ones (outbound|P|ipv6|...) IPv6
// endpoints only, the others IPv4 only — and no proxy holds an endpoint of
// web of a family its pod has no address in. An endpoint change of web
// (a second IPv6 endpoint) is derived by EndpointChange exactly as Build
// gives it to every proxy that holds the cluster.
func TestDualStackClustersHoldOneFamily(t *testing.T) {
	data, err := os.ReadFile("testdata/dual-stack.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	in, err := translator.DecodeInputs(data)
	if err != nil {
		t.Fatal(err)
	}
	before := translator.Translate(in).Mesh
	for _, es := range in.EndpointSlices {
		if es.Name == "web-v6" {
			e := es.Endpoints[0].DeepCopy()
			e.Addresses = []string{"fd00:1::9"}
			e.TargetRef = nil
			es.Endpoints = append(es.Endpoints, *e)
		}
	}
	after := translator.Translate(in).Mesh
	key := ir.ServiceKey{Namespace: "shop", Name: "web"}
	change := envoy.NewEndpointChange(before.Service(key), after.Service(key))
	if len(change.Assignments) != 6 {
		t.Errorf("the change has %d assignments, want 6 (3 ports, 2 families)", len(change.Assignments))
	}
	for _, pod := range in.Pods {
		if !meshed(pod) {
			continue
		}
		p := proxyOf(pod)
		var v4, v6 bool
		for _, ip := range p.IPs {
			a := netip.MustParseAddr(ip)
			v4, v6 = v4 || a.Is4(), v6 || a.Is6()
		}
		res := envoy.Build(after, p)
		for _, cla := range res.Endpoints {
			for _, loc := range cla.Endpoints {
				for _, e := range loc.LbEndpoints {
					a := netip.MustParseAddr(e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress())
					if (a.Is4() && !v4) || (a.Is6() && !v6) {
						// A single-stack Service of the other family is
						// still held (docs/design/064, left).
						if _, ok := change.Assignments[cla.ClusterName]; ok {
							t.Errorf("%s (%v) holds %s in %s", pod.Name, p.IPs, a, cla.ClusterName)
						}
					}
				}
			}
			want, ok := change.Assignments[cla.ClusterName]
			if !ok {
				continue
			}
			if !proto.Equal(want, cla) {
				t.Errorf("%s: %s: the change derives\n%v\nBuild gives\n%v", pod.Name, cla.ClusterName, want, cla)
			}
			if !change.Local(p) {
				t.Errorf("%s: an endpoint-only change of web is not local", pod.Name)
			}
		}
	}
	for name, cla := range change.Assignments {
		v6 := strings.Contains(name, "|ipv6|")
		for _, loc := range cla.Endpoints {
			for _, e := range loc.LbEndpoints {
				if a := netip.MustParseAddr(e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress()); a.Is6() != v6 {
					t.Errorf("%s holds %s", name, a)
				}
			}
		}
	}
}
