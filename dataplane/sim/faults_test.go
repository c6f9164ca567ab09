package sim_test

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/dataplane/sim"
)

// TrafficSplit fault injection and mirroring (docs/design/155) as the
// caller's sidecar applies them: the walk reads the fault filter on the
// chain that took the request and the route's typed_per_filter_config for
// it (which replaces the filter's own), and the route's
// request_mirror_policies — never weft's builders.

const webShadow = `apiVersion: v1
kind: Service
metadata: {name: web-shadow, namespace: shop}
spec:
  clusterIP: 10.96.0.30
  clusterIPs: [10.96.0.30, "fd00:96::30"]
  ipFamilies: [IPv4, IPv6]
  ports: [{name: http, port: 80, targetPort: 8080}]`

func webChaos(fault string) string {
	return `apiVersion: mesh.weft.dev/v1alpha1
kind: TrafficSplit
metadata: {name: web-chaos, namespace: shop}
spec:
  rootService: {name: web}
  backends: [{name: web}]
  fault: ` + fault + `
  mirror: {backend: {name: web-shadow}, percent: 25}`
}

func TestTrafficSplitFaultAndMirror(t *testing.T) {
	w := weftWorld(t, "testdata/shop.in.yaml", webShadow, webChaos("{delay: {percent: 10, fixedDelay: 2s}, abort: {percent: 5, httpStatus: 503}}"))
	want := sim.RoutePolicy{
		Fault:   &sim.Fault{Filter: "envoy.filters.http.fault", DelayPercent: 10, Delay: 2 * time.Second, AbortPercent: 5, HTTPStatus: 503},
		Mirrors: []sim.Mirror{{Cluster: "outbound|80||web-shadow.shop.svc.cluster.local", Percent: 25}},
	}
	t.Run("HTTP over IPv4: the fault and the mirror on the caller's route; delivered", func(t *testing.T) {
		r := routeOf(t, w, sim.Call{From: "shop/client-0", To: "web.shop:80", Path: "/cart"})
		if !reflect.DeepEqual(r.Fault, want.Fault) || !reflect.DeepEqual(r.Mirrors, want.Mirrors) {
			t.Errorf("route %s\nwant fault %+v, mirrors %+v", r, want.Fault, want.Mirrors)
		}
	})
	t.Run("gRPC over IPv6: the same, with the mirror's IPv6 cluster", func(t *testing.T) {
		r := routeOf(t, w, sim.Call{From: "shop/client-0", To: "[fd00:96::10]:80", Host: "web.shop", Protocol: sim.GRPC, Path: "/pkg.Svc/Get"})
		m6 := []sim.Mirror{{Cluster: "outbound|80|ipv6|web-shadow.shop.svc.cluster.local", Percent: 25}}
		if !reflect.DeepEqual(r.Fault, want.Fault) || !reflect.DeepEqual(r.Mirrors, m6) {
			t.Errorf("route %s\nwant fault %+v, mirrors %+v", r, want.Fault, m6)
		}
	})
	t.Run("only on the calling side: the callee's inbound chain injects nothing", func(t *testing.T) {
		res := w.Walk(sim.Call{From: "shop/client-0", To: "web.shop:80", Path: "/cart"})
		faulted := 0
		for _, l := range res.Trace {
			if strings.Contains(l, "fault filter") {
				faulted++
				if !strings.HasPrefix(l, "shop/client-0 envoy:") {
					t.Errorf("fault applied off the caller's sidecar: %s", l)
				}
			}
		}
		if res.Verdict.Kind != sim.Delivered || faulted != 1 {
			t.Errorf("%s\nwant delivered, the fault applied once, by the caller", res)
		}
	})
	t.Run("another Service's route is not faulted", func(t *testing.T) {
		v := walk(t, w, sim.Call{From: "shop/client-0", To: "secrets.vault:80", Path: "/"})
		if v.Route == nil || v.Route.Fault != nil || len(v.Route.Mirrors) != 0 {
			t.Errorf("secrets.vault: %s, want a route without fault or mirror", v)
		}
	})
}

func TestTrafficSplitFaultAborts(t *testing.T) {
	t.Run("every request aborted: the caller's sidecar answers", func(t *testing.T) {
		w := weftWorld(t, "testdata/shop.in.yaml", webShadow, webChaos("{abort: {percent: 100, httpStatus: 418}}"))
		v := walk(t, w, sim.Call{From: "shop/client-0", To: "web.shop:80", Path: "/"})
		if v.Kind != sim.Responded || v.Status != 418 || v.Policy != "envoy.filters.http.fault" {
			t.Errorf("got %s, want 418 from the fault filter", v)
		}
	})
	t.Run("gRPC status", func(t *testing.T) {
		w := weftWorld(t, "testdata/shop.in.yaml", webShadow, webChaos("{abort: {percent: 30, grpcStatus: UNAVAILABLE}}"))
		r := routeOf(t, w, sim.Call{From: "shop/client-0", To: "web.shop:80", Protocol: sim.GRPC, Path: "/pkg.Svc/Get"})
		if r.Fault == nil || r.Fault.GRPCStatus == nil || *r.Fault.GRPCStatus != 14 || r.Fault.AbortPercent != 30 || r.Fault.DelayPercent != 0 {
			t.Errorf("route %s, want 30%% aborted with grpc-status 14", r)
		}
	})
	t.Run("a missing mirror Service: no mirror, the split applies", func(t *testing.T) {
		w := weftWorld(t, "testdata/shop.in.yaml", webChaos("{delay: {percent: 50, fixedDelay: 100ms}}"))
		r := routeOf(t, w, sim.Call{From: "shop/client-0", To: "web.shop:80", Path: "/"})
		if len(r.Mirrors) != 0 || r.Fault == nil || r.Fault.DelayPercent != 50 {
			t.Errorf("route %s, want the delay and no mirror", r)
		}
	})
}
