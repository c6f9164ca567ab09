package envoy_test

import (
	"os"
	"testing"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/envoy"
	"github.com/weftmesh/weft/translator/ir"
)

const apiCluster = "outbound|9000||api.shop.svc.cluster.local"

func localityMesh(t *testing.T) (*translator.Inputs, *ir.Mesh) {
	t.Helper()
	data, err := os.ReadFile("testdata/locality.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	in, err := translator.DecodeInputs(data)
	if err != nil {
		t.Fatal(err)
	}
	return in, translator.Translate(in).Mesh
}

func assignment(r *envoy.Resources, name string) *endpointv3.ClusterLoadAssignment {
	for _, e := range r.Endpoints {
		if e.ClusterName == name {
			return e
		}
	}
	return nil
}

// zonesByPriority reads an assignment as the data plane does: the zones
// of each priority level, from 0.
func zonesByPriority(cla *endpointv3.ClusterLoadAssignment) map[uint32][]string {
	out := map[uint32][]string{}
	for _, loc := range cla.GetEndpoints() {
		out[loc.GetPriority()] = append(out[loc.GetPriority()], loc.GetLocality().GetZone())
	}
	return out
}

func caller(zone string) dataplane.Proxy {
	return dataplane.Proxy{Namespace: "shop", ServiceAccount: "web", Labels: map[string]string{"app": "web"}, IPs: []string{"10.3.1.1"}, Zone: zone}
}

// TestPreferLocalZoneShared: under envoy.Shared, proxies with the same
// view in one zone share api's assignment (one message), proxies in
// another zone hold their own, and catalog's (no policy) is one message
// for every zone; without the policy, the zone changes nothing shared.
func TestPreferLocalZoneShared(t *testing.T) {
	in, mesh := localityMesh(t)
	s := envoy.NewShared(mesh)
	a1, a2, b, x := s.Build(caller("zone-a")), s.Build(caller("zone-a")), s.Build(caller("zone-b")), s.Build(caller(""))
	if assignment(a1, apiCluster) != assignment(a2, apiCluster) {
		t.Error("two zone-a callers do not share api's assignment")
	}
	if got := zonesByPriority(assignment(a1, apiCluster)); len(got[0]) != 1 || got[0][0] != "zone-a" || len(got[1]) != 2 {
		t.Errorf("zone-a caller: api's zones by priority %v, want zone-a at 0 and the two others at 1", got)
	}
	if got := zonesByPriority(assignment(b, apiCluster)); len(got[0]) != 1 || got[0][0] != "zone-b" || len(got[1]) != 2 {
		t.Errorf("zone-b caller: api's zones by priority %v, want zone-b at 0", got)
	}
	if got := zonesByPriority(assignment(x, apiCluster)); len(got) != 1 || len(got[0]) != 3 {
		t.Errorf("caller of unknown zone: api's zones by priority %v, want all three at 0", got)
	}
	const catalog = "outbound|80||catalog.shop.svc.cluster.local"
	if assignment(a1, catalog) != assignment(b, catalog) || assignment(a1, catalog) != assignment(x, catalog) {
		t.Error("catalog (no policy) has an assignment per zone")
	}

	// The same mesh without the policy: zones share everything upstream.
	in.BackendTrafficPolicies = nil
	plain := envoy.NewShared(translator.Translate(in).Mesh)
	pa, pb := plain.Build(caller("zone-a")), plain.Build(caller("zone-b"))
	for i := range pa.Clusters {
		if pa.Clusters[i].Name == apiCluster && pa.Clusters[i] != pb.Clusters[i] {
			t.Error("without the policy, api's cluster is built per zone")
		}
	}
	if assignment(pa, apiCluster) != assignment(pb, apiCluster) {
		t.Error("without the policy, api's assignment differs per zone")
	}
}

// TestEndpointPatchKeepsPriorities: after an endpoint-only change of api
// (a zone-b endpoint added), what the patch path gives each proxy
// (EndpointChange.Assignment) equals what a full build gives it: the
// caller's priorities, not the shared assignment's.
func TestEndpointPatchKeepsPriorities(t *testing.T) {
	in, mesh := localityMesh(t)
	key := ir.ServiceKey{Namespace: "shop", Name: "api"}
	var slices []*discoveryv1.EndpointSlice
	for _, sl := range in.EndpointSlices {
		if sl.Labels[discoveryv1.LabelServiceName] == "api" {
			sl = sl.DeepCopy()
			zone := "zone-b"
			sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{"10.1.2.2"}, Zone: &zone})
			sl.ObjectMeta = metav1.ObjectMeta{Name: sl.Name, Namespace: sl.Namespace, Labels: sl.Labels}
			slices = append(slices, sl)
		}
	}
	next := translator.UpdateEndpoints(mesh, key, slices, func(string, string) *corev1.Pod { return nil })
	c := envoy.NewEndpointChange(mesh.Service(key), next.Service(key))
	if _, ok := c.Assignments[apiCluster]; !ok || !c.Localized(apiCluster) {
		t.Fatalf("the change has no localized assignment of %s: %v", apiCluster, c.Assignments)
	}
	for _, zone := range []string{"zone-a", "zone-b", ""} {
		p := caller(zone)
		if !c.Local(p) {
			t.Fatalf("zone %q: the change is not local", zone)
		}
		got, want := c.Assignment(apiCluster, p), assignment(envoy.Build(next, p), apiCluster)
		if !proto.Equal(got, want) {
			t.Errorf("zone %q: patched assignment\n%v\nfull build\n%v", zone, got, want)
		}
		if zone != "" && got == c.Assignments[apiCluster] {
			t.Errorf("zone %q: the patch gives the shared assignment, which undoes the caller's priorities", zone)
		}
		if p0 := zonesByPriority(got)[0]; zone == "zone-b" && (len(p0) != 1 || p0[0] != "zone-b" || len(got.Endpoints[1].LbEndpoints) != 2) {
			t.Errorf("zone-b caller after the change: %v", got)
		}
	}
}
