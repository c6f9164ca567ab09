package xds

import (
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/dataplane/sim"
	"github.com/weftmesh/weft/internal/cli/offline"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/envoy"
	"github.com/weftmesh/weft/translator/ir"
)

// ordersDocs add Service shop/orders (IPv4 only, HTTP 80, no selector)
// whose endpoint, written by hand as the bench writes its new Services',
// is web-0's port 8080: a plain Service the new-Service patch adds.
const ordersDocs = `
---
apiVersion: v1
kind: Service
metadata: {name: orders, namespace: shop}
spec:
  clusterIP: 10.96.0.30
  clusterIPs: [10.96.0.30]
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: orders-v4, namespace: shop, labels: {kubernetes.io/service-name: orders}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [10.1.0.10]
  targetRef: {kind: Pod, name: web-0, namespace: shop}
`

// TestServicePatchInTheSimulator shows what the new-Service patch gives
// the sidecars with the traffic simulator, which reads the Envoy protos
// and encodes Envoy's and iptables' documented behaviour, never weft's
// builders: the simulator's shop mesh (dataplane/sim/testdata), served by
// an ADS, gains shop/orders; every sidecar's configuration is then what
// its group's patched snapshot holds (decoded from the encodings the
// proxies are sent, with the pod's own listeners), not a build. A call to
// the new Service's cluster IP is handed by use_original_dst to its own
// listener and delivered to web-0 over mesh mTLS; and every call of a set
// from each meshed pod (the new Service, the existing HTTP and TCP ones,
// an address no Service has on port 80, by Host) has the verdict it has
// in the world whose sidecars were built in full.
func TestServicePatchInTheSimulator(t *testing.T) {
	patched, built, callers := patchedShop(t, ordersDocs)

	orders := sim.Call{From: "shop/client-0", To: "10.96.0.30:80", Host: "orders.shop"}
	r := patched.Walk(orders)
	if v := r.Verdict; v.Kind != sim.Delivered || v.Pod != "shop/web-0" || v.Port != 8080 || !v.MTLS {
		t.Errorf("client-0 to orders: %s; want delivered to shop/web-0:8080 over mesh mTLS\n%s", v, strings.Join(r.Trace, "\n"))
	}
	const handoff = `use_original_dst hands it to listener "outbound|80||orders.shop.svc.cluster.local"`
	if !strings.Contains(strings.Join(r.Trace, "\n"), handoff) {
		t.Errorf("client-0 to orders was not handed to the new Service's listener:\n%s", strings.Join(r.Trace, "\n"))
	}
	if up := r.Verdict.Upstream; up == nil || up.Cluster != "outbound|80||orders.shop.svc.cluster.local" {
		t.Errorf("client-0 to orders: first cluster %+v, want the new Service's", up)
	}

	for _, from := range callers {
		for _, c := range []sim.Call{
			{From: from, To: "10.96.0.30:80", Host: "orders.shop"},
			{From: from, To: "web.shop:80", Path: "/orders"},
			{From: from, To: "10.96.1.10:80", Host: "secrets.vault"},
			{From: from, To: "10.96.0.20:3306", Protocol: sim.TCP},
			{From: from, To: "203.0.113.5:80", Host: "orders.shop"},
		} {
			got, want := patched.Walk(c).Verdict, built.Walk(c).Verdict
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s -> %s (Host %q): patched sidecars give %s, built ones %s", c.From, c.To, c.Host, got, want)
			}
		}
	}
}

// TestOutOfScopeServicePatchInTheSimulator: the same, with shop/orders
// exported to its own namespace only (docs/design/198). vault's sidecar
// does not hold it; its group is patched with a new capture listener
// only, and in the simulator that listener refuses a call to the new
// Service's address in vault's own sidecar (403, out of scope) instead of
// letting it leave in plaintext, while shop's client reaches it over
// mesh mTLS; every call of the set has the verdict of the world built in
// full.
func TestOutOfScopeServicePatchInTheSimulator(t *testing.T) {
	docs := strings.Replace(ordersDocs, "metadata: {name: orders, namespace: shop}",
		`metadata: {name: orders, namespace: shop, annotations: {weft.dev/export-to: "."}}`, 1)
	patched, built, callers := patchedShop(t, docs)

	out := sim.Call{From: "vault/secrets-0", To: "10.96.0.30:80", Host: "orders.shop"}
	r := patched.Walk(out)
	if v := r.Verdict; v.Kind != sim.Responded || v.Status != 403 || v.Pod != "" {
		t.Errorf("secrets-0 to orders (out of its scope): %s; want 403 from its own sidecar\n%s", v, strings.Join(r.Trace, "\n"))
	}
	in := sim.Call{From: "shop/client-0", To: "10.96.0.30:80", Host: "orders.shop"}
	if v := patched.Walk(in).Verdict; v.Kind != sim.Delivered || v.Pod != "shop/web-0" || !v.MTLS {
		t.Errorf("client-0 to orders: %s; want delivered to shop/web-0 over mesh mTLS", v)
	}
	for _, from := range callers {
		for _, c := range []sim.Call{
			{From: from, To: "10.96.0.30:80", Host: "orders.shop"},
			{From: from, To: "10.96.0.30:80", Protocol: sim.TCP},
			{From: from, To: "web.shop:80", Path: "/orders"},
			{From: from, To: "10.96.0.20:3306", Protocol: sim.TCP},
		} {
			got, want := patched.Walk(c).Verdict, built.Walk(c).Verdict
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s -> %s (Host %q): patched sidecars give %s, built ones %s", c.From, c.To, c.Host, got, want)
			}
		}
	}
}

// patchedShop serves the simulator's shop mesh from an ADS, adds docs
// (new Services) through ADS.Update, requires every sidecar group to be
// patched, and returns the world whose sidecars hold the patched
// snapshots, the world built in full, and the meshed pods.
func patchedShop(t *testing.T, docs string) (patched, built *sim.World, callers []string) {
	t.Helper()
	data, in := shopInputs(t)
	a, groups := generatedGroups(t, in)
	next, err := translator.DecodeInputs(append(data, docs...))
	if err != nil {
		t.Fatal(err)
	}
	mesh := translator.Translate(next).Mesh
	builds, patches := a.Builds(), a.Patches()
	a.Update(mesh, time.Now())
	byPod := sidecarGroups(groups)
	if got := a.Patches() - patches; got < uint64(len(byPod)) {
		t.Errorf("%d groups patched for the new Services, want every sidecar group (%d); %d built", got, len(byPod), a.Builds()-builds)
	}
	built, patched, callers = servedWorlds(t, next, mesh, byPod)
	return patched, built, callers
}

// shopInputs are the simulator's shop mesh (dataplane/sim/testdata), as
// read and as decoded.
func shopInputs(t *testing.T) ([]byte, *translator.Inputs) {
	t.Helper()
	data, err := os.ReadFile("../dataplane/sim/testdata/shop.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	in, err := translator.DecodeInputs(data)
	if err != nil {
		t.Fatal(err)
	}
	return data, in
}

// sidecarGroups are the sidecar groups of groups, by pod name.
func sidecarGroups(groups map[*group]string) map[string]*group {
	byPod := map[string]*group{}
	for g, name := range groups {
		if g.proxy.Kind == dataplane.KindSidecar {
			byPod[name] = g
		}
	}
	return byPod
}

// servedWorlds returns the world of in and mesh twice: as built, and with
// every meshed pod's sidecar configured by what its group's snapshot in
// byPod holds (with the pod's own listeners); callers are the meshed pods.
func servedWorlds(t *testing.T, in *translator.Inputs, mesh *ir.Mesh, byPod map[string]*group) (built, served *sim.World, callers []string) {
	t.Helper()
	built, err := offline.World(in, mesh)
	if err != nil {
		t.Fatal(err)
	}
	if served, err = offline.World(in, mesh); err != nil {
		t.Fatal(err)
	}
	for _, p := range served.Pods {
		if p.Proxy == nil {
			continue
		}
		g := byPod[p.Key()]
		if g == nil {
			t.Fatalf("no group for pod %s", p.Key())
		}
		p.Proxy = simResources(t, g.snap.Load(), envoy.ProxyListeners(g.proxy))
		callers = append(callers, p.Key())
	}
	return built, served, callers
}

// simResources decodes a snapshot's encodings, and the stream's own
// listeners, into the simulator's resources.
func simResources(t *testing.T, s *snapshot, own []*listenerv3.Listener) *sim.Resources {
	t.Helper()
	out := &sim.Resources{Listeners: own}
	for i, m := range s.resources {
		typ := pushOrder[i]
		for name, e := range m {
			var err error
			switch typ {
			case resourcev3.ListenerType:
				l := &listenerv3.Listener{}
				err = proto.Unmarshal(e.value(), l)
				out.Listeners = append(out.Listeners, l)
			case resourcev3.RouteType:
				rc := &routev3.RouteConfiguration{}
				err = proto.Unmarshal(e.value(), rc)
				out.Routes = append(out.Routes, rc)
			case resourcev3.ClusterType:
				c := &clusterv3.Cluster{}
				err = proto.Unmarshal(e.value(), c)
				out.Clusters = append(out.Clusters, c)
			case resourcev3.EndpointType:
				cla := &endpointv3.ClusterLoadAssignment{}
				err = proto.Unmarshal(e.value(), cla)
				out.Endpoints = append(out.Endpoints, cla)
			}
			if err != nil {
				t.Fatalf("%s %s: %v", typ, name, err)
			}
		}
	}
	return out
}
