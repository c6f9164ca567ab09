package envoy_test

import (
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/envoy"
)

// TestProxylessPathPrefixIsElementWise (12r): an HTTPRoute PathPrefix
// matches path elements (docs/api.md, Gateway API): /pkg.Svc/Get matches
// the method /pkg.Svc/Get itself and /pkg.Svc/Get/x, not /pkg.Svc/GetAll.
// gRPC has no path_separated_prefix, and weft sent it "prefix: p/", which
// a gRPC client (gRFC A28: prefix is a plain string prefix, path is exact)
// never matches for the method p itself: the rule was dead for proxyless
// clients while sidecars honoured it. The matcher below is gRPC-Go's
// (xds/internal/resolver route matching), not weft's.
func TestProxylessPathPrefixIsElementWise(t *testing.T) {
	in, err := translator.DecodeInputs([]byte(`apiVersion: v1
kind: Service
metadata: {name: greeter, namespace: shop}
spec: {clusterIP: 10.96.0.1, ports: [{name: grpc, port: 9000, appProtocol: grpc}]}
---
apiVersion: v1
kind: Service
metadata: {name: greeter-v2, namespace: shop}
spec: {clusterIP: 10.96.0.2, ports: [{name: grpc, port: 9000, appProtocol: grpc}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: get-to-v2, namespace: shop, generation: 1}
spec:
  parentRefs: [{group: "", kind: Service, name: greeter, port: 9000}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /pkg.Svc/Get}}]
    backendRefs: [{name: greeter-v2, port: 9000}]`))
	if err != nil {
		t.Fatal(err)
	}
	mesh := translator.Translate(in).Mesh
	r := envoy.Build(mesh, dataplane.Proxy{Namespace: "shop", ServiceAccount: "client", IPs: []string{"10.1.0.1"}, Kind: dataplane.KindGRPC})
	var routes []*routev3.Route
	for _, rc := range r.Routes {
		for _, vh := range rc.VirtualHosts {
			if strings.HasPrefix(vh.Name, "greeter.shop") || len(routes) == 0 {
				routes = vh.Routes
			}
		}
	}
	for path, want := range map[string]string{
		"/pkg.Svc/Get":   "greeter-v2",
		"/pkg.Svc/Get/x": "greeter-v2",
		// No rule matches: no route, and gRPC-Go fails the call
		// UNAVAILABLE (docs/design/177).
		"/pkg.Svc/GetAll": "",
	} {
		got := ""
		for _, rt := range routes {
			if grpcMatches(rt.GetMatch(), path) {
				got = rt.GetRoute().GetCluster()
				if got == "" {
					for _, c := range rt.GetRoute().GetWeightedClusters().GetClusters() {
						got += c.GetName()
					}
				}
				break
			}
		}
		if (want == "" && got != "") || !strings.Contains(got, want) {
			t.Errorf("gRPC client, method %s: routed to %q, want %s", path, got, want)
		}
	}
}

// grpcMatches is gRPC-Go's path matching (prefix: string prefix; path:
// exact); it knows nothing else, so a route with path_separated_prefix
// (which gRPC refuses) never matches.
func grpcMatches(m *routev3.RouteMatch, path string) bool {
	switch p := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		return strings.HasPrefix(path, p.Prefix)
	case *routev3.RouteMatch_Path:
		return path == p.Path
	}
	return false
}
