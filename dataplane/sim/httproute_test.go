package sim_test

import (
	"testing"

	"github.com/weftmesh/weft/dataplane/sim"
)

// webV2 is a second version of shop/web for HTTPRoute tests: its own
// Service, endpoint and meshed pod (10.1.0.11), serving 8080.
const webV2 = `apiVersion: v1
kind: Service
metadata: {name: web-v2, namespace: shop}
spec:
  clusterIP: 10.96.0.11
  selector: {app: web-v2}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-v2-v4, namespace: shop, labels: {kubernetes.io/service-name: web-v2}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [10.1.0.11]
  targetRef: {kind: Pod, name: web-v2-0, namespace: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: web-v2-0, namespace: shop, labels: {app: web-v2}}
spec:
  serviceAccountName: web
  initContainers: [{name: weft-proxy, image: envoy}]
  containers: [{name: app, image: web:2}]
status: {podIPs: [{ip: 10.1.0.11}]}`

// TestHTTPRouteMatches walks requests through an HTTPRoute's query
// parameter and regular-expression matches as weft configures them:
// Envoy compares a query parameter's raw value (exactly, or a full RE2
// match) and a safe_regex path against the whole path without its query
// (the simulator's MatchRoute, from Envoy's config_impl.cc).
func TestHTTPRouteMatches(t *testing.T) {
	w := weftWorld(t, "testdata/shop.in.yaml", webV2, `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{kind: Service, name: web, port: 80}]
  rules:
  - matches:
    - queryParams: [{name: animal, value: whale}]
    - queryParams: [{name: color, type: RegularExpression, value: "bl(ue|ack)"}]
    - path: {type: RegularExpression, value: "/items/[0-9]+"}
    - headers: [{name: X-Tier, type: RegularExpression, value: "gold|silver"}]
    backendRefs: [{name: web-v2, port: 80}]
  - backendRefs: [{name: web, port: 80}]`)
	v1 := sim.Verdict{Kind: sim.Delivered, Pod: "shop/web-0", Port: 8080, MTLS: true}
	v2 := sim.Verdict{Kind: sim.Delivered, Pod: "shop/web-v2-0", Port: 8080, MTLS: true}
	for _, tc := range []struct {
		path    string
		headers map[string]string
		want    sim.Verdict
	}{
		{"/?animal=whale", nil, v2},
		{"/x?a=1&animal=whale", nil, v2},
		{"/?animal=Whale", nil, v1},   // exact, case-sensitive value
		{"/?Animal=whale", nil, v1},   // names compare exactly
		{"/?animal=whales", nil, v1},  // exact, not a prefix
		{"/?color=blue", nil, v2},     // full match of bl(ue|ack)
		{"/?color=black", nil, v2},    //
		{"/?color=blueish", nil, v1},  // a full match, not a search
		{"/items/42", nil, v2},        //
		{"/items/42?x=y", nil, v2},    // the query is not part of the path
		{"/items/42/detail", nil, v1}, // the whole path must match
		{"/items/abc", nil, v1},
		{"/", map[string]string{"x-tier": "gold"}, v2},
		{"/", map[string]string{"x-tier": "golden"}, v1},
	} {
		got := walk(t, w, sim.Call{From: "shop/client-0", To: "web.shop:80", Path: tc.path, Headers: tc.headers})
		if got.Kind != tc.want.Kind || got.Pod != tc.want.Pod {
			t.Errorf("%s %v: %s, want %s", tc.path, tc.headers, got, tc.want)
		}
	}
}
