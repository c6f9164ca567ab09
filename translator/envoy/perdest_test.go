package envoy_test

import (
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/envoy"
	"github.com/weftmesh/weft/translator/testmesh"
)

// TestSplitChangeTouchesOneRouteConfig: in a mesh where 2,000 HTTP
// Services share port 80 and every one is visible to the proxy (issue 14's
// setup), a weight change on one TrafficSplit changes exactly one
// RouteConfiguration, that Service port's, of at most 2 KB; the listeners,
// clusters and endpoints stay byte for byte the same (docs/design/090).
func TestSplitChangeTouchesOneRouteConfig(t *testing.T) {
	in := testmesh.Generate(testmesh.Options{Services: 2000, Namespaces: 10, EndpointsPerService: 10, SplitEvery: 10, ExportAll: true})
	p := proxy(1)
	before := envoy.Build(translator.Translate(in).Mesh, p)
	split := in.TrafficSplits[7]
	changed := split.DeepCopy()
	w := int32(40)
	changed.Spec.Backends[0].Weight = &w
	changed.Generation++
	in.TrafficSplits[7] = changed
	after := envoy.Build(translator.Translate(in).Mesh, p)

	var routeBytes, changedRoutes int
	for name, rc := range byName(after.Routes) {
		old := byName(before.Routes)[name]
		if old == nil || !proto.Equal(old, rc) {
			changedRoutes++
			routeBytes += proto.Size(rc)
			t.Logf("route configuration %q changed: %d bytes", name, proto.Size(rc))
		}
	}
	if len(after.Routes) != len(before.Routes) {
		t.Errorf("%d route configurations before, %d after", len(before.Routes), len(after.Routes))
	}
	if changedRoutes != 1 || routeBytes > 2048 {
		t.Errorf("the weight change of split %s/%s changed %d route configurations, %d bytes; want 1 of at most 2,048 bytes", split.Namespace, split.Name, changedRoutes, routeBytes)
	}
	want := "outbound|80||" + split.Spec.RootService.Name + "." + split.Namespace + ".svc.cluster.local"
	if changedRoutes == 1 && byName(after.Routes)[want] == nil {
		t.Errorf("route configuration %q does not exist", want)
	}
	if !equalAll(list(before.Listeners), list(after.Listeners)) || !equalAll(list(before.Clusters), list(after.Clusters)) || !equalAll(list(before.Endpoints), list(after.Endpoints)) {
		t.Errorf("listeners, clusters or endpoints changed with a split's weight")
	}
	l := outboundOf(after)
	var perService, n, all int
	for _, x := range after.Listeners {
		all += proto.Size(x)
		if strings.HasPrefix(x.Name, "outbound|80||") {
			perService += proto.Size(x)
			n++
		}
	}
	push := all
	for _, m := range append(append(list(after.Routes), list(after.Clusters)...), list(after.Endpoints)...) {
		push += proto.Size(m)
	}
	t.Logf("capture listener: %d bytes, %d filter chains; %d per-Service listeners of %d bytes on average; all listeners of the proxy: %d bytes; its whole first push (LDS, RDS, CDS, EDS): %d bytes", proto.Size(l), len(l.FilterChains), n, perService/max(n, 1), all, push)
}

func byName[T interface{ GetName() string }](xs []T) map[string]T {
	m := map[string]T{}
	for _, x := range xs {
		m[x.GetName()] = x
	}
	return m
}

func equalAll(a, b []proto.Message) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !proto.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

func outboundOf(r *envoy.Resources) *listenerv3.Listener {
	for _, l := range r.Listeners {
		if l.Name == dataplane.OutboundListener {
			return l
		}
	}
	return nil
}

// TestNewServiceAddsOnlyItsListeners: a new HTTP Service adds its own
// listener (and route configuration) and leaves every other listener —
// the capture listener and every other Service's — and every other route
// configuration byte for byte the same, so under Delta xDS a new Service
// is one small LDS resource, not the whole capture listener
// (docs/design/182, the successor of TestNewServiceKeepsEveryChain).
func TestNewServiceAddsOnlyItsListeners(t *testing.T) {
	build := func(n int) *envoy.Resources {
		in := testmesh.Generate(testmesh.Options{Services: n, Namespaces: 10, EndpointsPerService: 2, ExportAll: true})
		return envoy.Build(translator.Translate(in).Mesh, proxy(1))
	}
	before, after := build(200), build(201)
	listeners := byName(after.Listeners)
	for _, l := range before.Listeners {
		if !proto.Equal(l, listeners[l.Name]) {
			t.Errorf("listener %s changed when another Service came", l.Name)
		}
	}
	old := byName(before.Listeners)
	var added []string
	bytes := 0
	for _, l := range after.Listeners {
		if old[l.Name] == nil {
			added = append(added, l.Name)
			bytes += proto.Size(l)
		}
	}
	if want := "outbound|80||svc-200.ns-0.svc.cluster.local"; len(added) != 1 || added[0] != want {
		t.Errorf("listeners added by a new Service: %v; want only its own, %s", added, want)
	}
	routes := byName(after.Routes)
	for _, rc := range before.Routes {
		if !proto.Equal(rc, routes[rc.Name]) {
			t.Errorf("route configuration %s changed when another Service came", rc.Name)
		}
	}
	total := 0
	for _, l := range after.Listeners {
		total += proto.Size(l)
	}
	t.Logf("a new Service adds %d listener(s), %d bytes; the capture listener is %d bytes; all listeners %d bytes with %d Services (%d listeners)",
		len(added), bytes, proto.Size(outboundOf(after)), total, 201, len(after.Listeners))
}
