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

// TestHTTPRouteFilters walks requests through an HTTPRoute's filters as
// weft configures them; what the application receives, the response
// headers and a redirect's Location are the simulator's reading of
// Envoy's route (header_parser.cc, Http::Utility::newUri, regex_rewrite).
func TestHTTPRouteFilters(t *testing.T) {
	w := weftWorld(t, "testdata/shop.in.yaml", webV2, `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{kind: Service, name: web, port: 80}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /hdr}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Set, value: "100%"}, {name: X-Both, value: route}]
        add: [{name: X-Add, value: b}]
        remove: [X-Remove]
    - type: ResponseHeaderModifier
      responseHeaderModifier: {add: [{name: X-Resp, value: r}]}
    backendRefs:
    - name: web-v2
      port: 80
      filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-Backend, value: v2}, {name: X-Both, value: backend}]}}]
  - matches: [{path: {type: PathPrefix, value: /moved}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https, statusCode: 301}}]
  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org, port: 8080, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}}]
  - matches: [{path: {type: PathPrefix, value: /full}}]
    filters: [{type: URLRewrite, urlRewrite: {hostname: internal.example, path: {type: ReplaceFullPath, replaceFullPath: /replaced}}}]
    backendRefs: [{name: web-v2, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /strip/}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}}]
    backendRefs: [{name: web-v2, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /api}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2/api/}}}]
    backendRefs: [{name: web-v2, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /mirror}}]
    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: web-v2, port: 80}, fraction: {numerator: 1, denominator: 4}}}]
    backendRefs: [{name: web, port: 80}]`)
	call := func(path string, h map[string]string) sim.Verdict {
		return walk(t, w, sim.Call{From: "shop/client-0", To: "web.shop:80", Path: path, Headers: h})
	}
	t.Run("header modifiers", func(t *testing.T) {
		v := call("/hdr", map[string]string{"x-set": "old", "x-add": "a", "x-remove": "gone"})
		want := map[string]string{"x-set": "100%", "x-add": "a,b", "x-backend": "v2", "x-both": "route"}
		for k, val := range want {
			if v.RequestHeaders[k] != val {
				t.Errorf("request header %s = %q, want %q (%s)", k, v.RequestHeaders[k], val, v)
			}
		}
		if _, ok := v.RequestHeaders["x-remove"]; ok {
			t.Errorf("x-remove reached the application")
		}
		if v.Pod != "shop/web-v2-0" || v.ResponseHeaders["x-resp"] != "r" {
			t.Errorf("verdict %s, response headers %v", v, v.ResponseHeaders)
		}
	})
	for _, tc := range []struct {
		path, host string
		status     int
		location   string
	}{
		{"/moved/x?q=1", "web.shop", 301, "https://web.shop:443/moved/x?q=1"},
		{"/old/a/b", "web.shop", 302, "http://example.org:8080/new/a/b"},
		{"/old", "web.shop:80", 302, "http://example.org:8080/new"},
	} {
		v := walk(t, w, sim.Call{From: "shop/client-0", To: "web.shop:80", Host: tc.host, Path: tc.path})
		if v.Kind != sim.Responded || v.Status != tc.status || v.Location != tc.location {
			t.Errorf("%s: %s, Location %q; want %d to %s", tc.path, v, v.Location, tc.status, tc.location)
		}
	}
	for _, tc := range []struct{ path, want, host string }{
		{"/full/a?x=1", "/replaced?x=1", "internal.example"},
		{"/strip/a/b", "/a/b", ""},
		{"/strip", "", ""}, // /strip/ matches /strip/... only as a prefix of elements: "/strip" itself too
		{"/api", "/v2/api", ""},
		{"/api/x", "/v2/api/x", ""},
		{"/api/", "/v2/api/", ""},
	} {
		v := call(tc.path, nil)
		if tc.want == "" {
			tc.want = "/"
		}
		if v.Pod != "shop/web-v2-0" || v.RequestHeaders[":path"] != tc.want || (tc.host != "" && v.RequestHeaders[":authority"] != tc.host) {
			t.Errorf("%s: %s, path %q host %q; want %s %s", tc.path, v, v.RequestHeaders[":path"], v.RequestHeaders[":authority"], tc.want, tc.host)
		}
	}
	v := call("/mirror", nil)
	if v.Pod != "shop/web-0" || len(v.Mirrors) != 1 || v.Mirrors[0] != "outbound|80||web-v2.shop.svc.cluster.local=25%" {
		t.Errorf("mirror: %s, mirrors %v", v, v.Mirrors)
	}
}

// TestHTTPRouteUnmatched: a request that no rule of a Service's HTTPRoute
// matches gets 404 from the caller's sidecar, Envoy's answer when no
// route of the virtual host matches (the simulator's walker.route, from
// Envoy's router: NR, route_not_found), and never reaches the parent
// Service (docs/design/177). A rule weft drops (an unsupported regular
// expression) takes nothing: its requests get 404 too, not the parent.
// A TrafficSplit's unmatched requests still reach its root.
func TestHTTPRouteUnmatched(t *testing.T) {
	w := weftWorld(t, "testdata/shop.in.yaml", webV2, `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{kind: Service, name: web, port: 80}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /v2}}]
    backendRefs: [{name: web-v2, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /v1}}]
    backendRefs: [{name: web, port: 80}]
  - matches: [{headers: [{name: x-beta, type: RegularExpression, value: "(?=yes)"}]}]
    backendRefs: [{name: web-v2, port: 80}]`)
	v1 := sim.Verdict{Kind: sim.Delivered, Pod: "shop/web-0", Port: 8080}
	v2 := sim.Verdict{Kind: sim.Delivered, Pod: "shop/web-v2-0", Port: 8080}
	nr := sim.Verdict{Kind: sim.NoRoute, Status: 404}
	for _, tc := range []struct {
		path    string
		headers map[string]string
		want    sim.Verdict
	}{
		{"/v2/x", nil, v2},
		{"/v1", nil, v1},
		{"/", nil, nr},
		{"/v3", nil, nr},
		{"/v1x", nil, nr}, // PathPrefix matches whole elements
		{"/", map[string]string{"x-beta": "yes"}, nr},   // the dropped rule's request
		{"/v1", map[string]string{"x-beta": "yes"}, v1}, // another rule's stays
	} {
		got := walk(t, w, sim.Call{From: "shop/client-0", To: "web.shop:80", Path: tc.path, Headers: tc.headers})
		if got.Kind != tc.want.Kind || got.Pod != tc.want.Pod || got.Status != tc.want.Status {
			t.Errorf("%s %v: %s, want %s", tc.path, tc.headers, got, tc.want)
		}
	}

	ts := weftWorld(t, "testdata/shop.in.yaml", webV2, `apiVersion: mesh.weft.dev/v1alpha1
kind: TrafficSplit
metadata: {name: web, namespace: shop}
spec:
  rootService: {name: web}
  matches: [{path: {type: PathPrefix, value: /v2}}]
  backends: [{name: web-v2}]`)
	for path, want := range map[string]sim.Verdict{"/v2": v2, "/": v1} {
		if got := walk(t, ts, sim.Call{From: "shop/client-0", To: "web.shop:80", Path: path}); got.Kind != want.Kind || got.Pod != want.Pod {
			t.Errorf("TrafficSplit, %s: %s, want %s", path, got, want)
		}
	}
}
