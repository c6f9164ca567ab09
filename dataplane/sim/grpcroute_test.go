package sim_test

import (
	"testing"

	"github.com/weftmesh/weft/dataplane/sim"
)

// TestGRPCRouteMethods walks gRPC calls (HTTP/2 POSTs to
// /<service>/<method> with content-type application/grpc) from a sidecar
// through a GAMMA GRPCRoute as weft configures it (docs/design/175): the
// simulator matches Envoy's routes against :path, first match wins, so
// the expected backends below also check GRPCRoute's precedence — the
// most service characters first: /pkg.Store/Get takes the service rule
// for pkg.Store (written second), not the rule for method Get of any
// service.
func TestGRPCRouteMethods(t *testing.T) {
	w := weftWorld(t, "testdata/shop.in.yaml", webV2, `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{kind: Service, name: web, port: 80}]
  rules:
  - matches: [{method: {method: Get}}]
    backendRefs: [{name: web-v2, port: 80}]
  - matches: [{method: {service: pkg.Store}}]
    backendRefs: [{name: web, port: 80}]
  - matches:
    - method: {service: pkg.Admin, method: Reset}
    - method: {type: RegularExpression, service: "pkg\\.Users(V[0-9]+)?", method: "List.*"}
    - headers: [{name: x-canary, value: "yes"}]
    backendRefs: [{name: web-v2, port: 80}]
  - backendRefs: [{name: web, port: 80}]`)
	v1 := sim.Verdict{Kind: sim.Delivered, Pod: "shop/web-0", Port: 8080, MTLS: true}
	v2 := sim.Verdict{Kind: sim.Delivered, Pod: "shop/web-v2-0", Port: 8080, MTLS: true}
	for _, tc := range []struct {
		path    string
		headers map[string]string
		want    sim.Verdict
	}{
		{"/pkg.Admin/Reset", nil, v2},    // Exact service and method
		{"/pkg.Admin/ResetAll", nil, v1}, // exact, not a prefix
		{"/pkg.admin/Reset", nil, v1},    // case-sensitive
		{"/pkg.Other/Get", nil, v2},      // method Get of any service
		{"/pkg.Store/Get", nil, v1},      // the service rule has precedence
		{"/pkg.Store/Put", nil, v1},      //
		{"/pkg.StoreX/Put", nil, v1},     // (the catch-all: same backend)
		{"/pkg.Users/ListAll", nil, v2},  // RegularExpression
		{"/pkg.UsersV2/List", nil, v2},   //
		{"/pkg.UsersV2/Delete", nil, v1}, //
		{"/pkg.Users/X/List", nil, v1},   // the service expression is one path element
		{"/pkg.Other/Put", map[string]string{"x-canary": "yes"}, v2},
		{"/pkg.Other/Put", map[string]string{"x-canary": "no"}, v1},
	} {
		got := walk(t, w, sim.Call{From: "shop/client-0", To: "web.shop:80", Protocol: sim.GRPC, Path: tc.path, Headers: tc.headers})
		if got.Kind != tc.want.Kind || got.Pod != tc.want.Pod {
			t.Errorf("%s %v: %s, want %s", tc.path, tc.headers, got, tc.want)
		}
	}
}
