package envoy_test

import (
	"strings"
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

// TestConfigDoesNotGrowWithUnrelatedNamespaces: a proxy's configuration is
// the same whether the rest of the mesh has 10 namespaces or 100, when
// nothing there is exported to it.
func TestConfigDoesNotGrowWithUnrelatedNamespaces(t *testing.T) {
	build := func(namespaces int) *envoy.Resources {
		// Ten Services per namespace, whatever the number of namespaces.
		in := testmesh.Generate(testmesh.Options{Services: 10 * namespaces, Namespaces: namespaces, EndpointsPerService: 3, SplitEvery: 4})
		return envoy.Build(translator.Translate(in).Mesh, proxy(1))
	}
	small, large := build(10), build(100)
	// Names and addresses differ between the two meshes, so compare shape:
	// the number of each kind of resource and of virtual hosts.
	if a, b := shape(small), shape(large); a != b {
		t.Fatalf("config grew with unrelated namespaces: %+v with 10 namespaces, %+v with 100", a, b)
	}
	// And it holds what the namespace has: 10 Services, plus the fixed
	// clusters (passthrough, black hole, admin, inbound passthrough and
	// the proxy's own inbound port).
	if got := len(small.Endpoints); got != 10 {
		t.Fatalf("proxy sees %d Services' endpoints, want its namespace's 10", got)
	}
	// What does grow: the outbound listener lists the cluster IP of every
	// meshed Service outside the scope, so that a call to one is refused
	// rather than sent in plaintext (refuse.go). One address each, nothing
	// else: no cluster, route or endpoint.
	if a, b := refusedAddrs(small), refusedAddrs(large); a != 90 || b != 990 {
		t.Fatalf("refused addresses: %d with 10 namespaces, %d with 100; want 90 and 990 (the out-of-scope Services)", a, b)
	}
}

// refusedAddrs counts the addresses of the outbound refusal chains.
func refusedAddrs(r *envoy.Resources) int {
	n := 0
	for _, l := range r.Listeners {
		for _, fc := range l.FilterChains {
			if strings.HasPrefix(fc.Name, "outbound|out_of_scope|") {
				n += len(fc.GetFilterChainMatch().GetPrefixRanges())
			}
		}
	}
	return n
}

// TestExportedServicesAreVisible: exporting to every namespace makes a
// Service visible everywhere, so the scoping above is the export rule and
// not an accident.
func TestExportedServicesAreVisible(t *testing.T) {
	in := testmesh.Generate(testmesh.Options{Services: 100, Namespaces: 10, EndpointsPerService: 1, ExportAll: true})
	r := envoy.Build(translator.Translate(in).Mesh, proxy(1))
	if got := len(r.Endpoints); got != 100 {
		t.Fatalf("proxy sees %d Services, want all 100 exported ones", got)
	}
}

// TestUpdateEndpointsEqualsFullTranslation: the cheap path for an endpoint
// change gives exactly what a full translation gives.
func TestUpdateEndpointsEqualsFullTranslation(t *testing.T) {
	in := testmesh.Generate(testmesh.Options{Services: 50, Namespaces: 5, EndpointsPerService: 4, SplitEvery: 3})
	before := translator.Translate(in).Mesh
	target := in.EndpointSlices[7]
	changed := target.DeepCopy()
	changed.Endpoints = changed.Endpoints[:2]
	in.EndpointSlices[7] = changed
	full := translator.Translate(in).Mesh

	pods := func(ns, name string) *corev1.Pod {
		for _, p := range in.Pods {
			if p.Namespace == ns && p.Name == name {
				return p
			}
		}
		return nil
	}
	key := ir.ServiceKey{Namespace: changed.Namespace, Name: changed.Labels[discoveryv1.LabelServiceName]}
	cheap := translator.UpdateEndpoints(before, key, []*discoveryv1.EndpointSlice{changed}, pods)
	for _, p := range []dataplane.Proxy{proxy(0), proxy(1), proxy(2)} {
		a, b := envoy.Build(full, p), envoy.Build(cheap, p)
		if !equalResources(a, b) {
			t.Fatalf("proxy %s: incremental model differs from the full translation", p.Namespace)
		}
	}
	if len(before.Service(key).Ports[0].Endpoints) != 4 {
		t.Fatal("UpdateEndpoints modified the model it was given")
	}
	svc := cheap.Service(key)
	if la := envoy.LoadAssignment(svc, svc.Ports[0]); len(la.Endpoints[0].LbEndpoints) != 2 {
		t.Fatalf("LoadAssignment has %d endpoints, want 2", len(la.Endpoints[0].LbEndpoints))
	}
}

func equalResources(a, b *envoy.Resources) bool {
	eq := func(x, y []proto.Message) bool {
		if len(x) != len(y) {
			return false
		}
		for i := range x {
			if !proto.Equal(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	return eq(list(a.Listeners), list(b.Listeners)) && eq(list(a.Routes), list(b.Routes)) &&
		eq(list(a.Clusters), list(b.Clusters)) && eq(list(a.Endpoints), list(b.Endpoints))
}

type counts struct{ listeners, routes, vhosts, clusters, endpoints, lbEndpoints int }

func shape(r *envoy.Resources) counts {
	c := counts{listeners: len(r.Listeners), routes: len(r.Routes), clusters: len(r.Clusters), endpoints: len(r.Endpoints)}
	for _, rc := range r.Routes {
		c.vhosts += len(rc.VirtualHosts)
	}
	for _, e := range r.Endpoints {
		for _, l := range e.Endpoints {
			c.lbEndpoints += len(l.LbEndpoints)
		}
	}
	return c
}
