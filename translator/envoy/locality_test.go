package envoy_test

import (
	"testing"

	"github.com/weftmesh/weft/translator/envoy"
	"github.com/weftmesh/weft/translator/ir"
)

// TestLocalityWeightFollowsEndpoints (12q): every locality had weight 1
// whatever its endpoint count, and gRPC's weighted locality balancer
// splits by locality weight first, so a zone with one endpoint got as much
// traffic as a zone with three. Each locality's weight is its number of
// endpoints, so every endpoint gets an equal share.
func TestLocalityWeightFollowsEndpoints(t *testing.T) {
	port := &ir.Port{Name: "http", Port: 80, Protocol: ir.ProtocolHTTP, TargetPort: 8080, Endpoints: []ir.Endpoint{
		{Address: "10.1.0.1", Port: 8080, Ready: true, Zone: "a"},
		{Address: "10.1.0.2", Port: 8080, Ready: true, Zone: "a"},
		{Address: "10.1.0.3", Port: 8080, Ready: true, Zone: "a"},
		{Address: "10.1.0.4", Port: 8080, Ready: false, Zone: "a"},
		{Address: "10.1.1.1", Port: 8080, Ready: true, Zone: "b"},
	}}
	svc := &ir.Service{Key: ir.ServiceKey{Namespace: "shop", Name: "web"}, ClusterIPs: []string{"10.96.0.1"}, Ports: []*ir.Port{port}}
	la := envoy.LoadAssignment(svc, port)
	got := map[string]uint32{}
	for _, loc := range la.Endpoints {
		got[loc.GetLocality().GetZone()] = loc.GetLoadBalancingWeight().GetValue()
	}
	if got["a"] != 3 || got["b"] != 1 {
		t.Fatalf("locality weights %v, want a=3 (three ready endpoints) b=1", got)
	}
}
