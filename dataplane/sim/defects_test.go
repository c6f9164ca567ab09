package sim_test

import (
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/weftmesh/weft/dataplane/sim"
)

// The tests in this file assert what weft should do and document, each by
// its skip, a defect of issue 12 that the simulator shows in today's
// output. Each assertion was run without its skip and failed. Whoever
// fixes a defect removes the skip: the test must then pass.

// 12a: in Permissive mode the inbound default chain (inbound|passthrough)
// had no RBAC: a port no Service declares, and TLS without the mesh's ALPN
// to a declared port, reached the application past the Allow policy that
// admits only shop/client.
func TestDefect12a_PassthroughChainHasNoRBAC(t *testing.T) {
	w := weftWorld(t, "testdata/shop.in.yaml")
	web := podOf(t, w, "shop/web-0")
	web.Apps = append(web.Apps, sim.AppSocket{Port: 9999, Bind: netip.IPv6Unspecified()})
	for _, from := range []string{"shop/stranger-0", "shop/legacy-0"} {
		got := walk(t, w, sim.Call{From: from, To: "10.1.0.10:9999", Protocol: sim.TCP})
		if got.Kind != sim.Denied {
			t.Errorf("%s to an undeclared port of web-0: %s; want Denied (web admits only shop/client)", from, got)
		}
	}
	// The application's own TLS (not the mesh's ALPN) to the declared port
	// takes the default chain too.
	podOf(t, w, "shop/web-0").Apps = []sim.AppSocket{{Port: 8080, Bind: netip.IPv6Unspecified(), TLS: true}}
	tls := &sim.AppTLS{SNI: "web.shop", ALPN: []string{"h2"}}
	if got := walk(t, w, sim.Call{From: "shop/legacy-0", To: "10.1.0.10:8080", Protocol: sim.TCP, TLS: tls}); got.Kind != sim.Denied {
		t.Errorf("legacy-0's own TLS to web-0:8080: %s; want Denied (web admits only shop/client)", got)
	}
}

// 12c: weft-init wrote IPv4 rules only; over IPv6 nothing was captured, so
// a meshed call left in plaintext without identity, and an unmeshed one
// bypassed the Allow policy.
func TestDefect12c_IPv6NotCaptured(t *testing.T) {
	w := weftWorld(t, "testdata/shop.in.yaml")
	check(t, walk(t, w, sim.Call{From: "shop/client-0", To: "web.shop:80", IPv6: true}),
		sim.Verdict{Kind: sim.Delivered, Pod: "shop/web-0", Port: 8080, MTLS: true, ClientIdentity: clientID})
	if got := walk(t, w, sim.Call{From: "shop/legacy-0", To: "web.shop:80", IPv6: true}); got.Kind != sim.Denied {
		t.Errorf("unmeshed legacy-0 over IPv6: %s; want Denied (web admits only shop/client)", got)
	}
}

// 12f: a Service is visible only in its own namespace: a shop pod calling
// vault's secrets passes through in plaintext, and Strict vault closes it.
func TestDefect12f_CrossNamespaceFallsOutOfTheMesh(t *testing.T) {
	w := weftWorld(t, "testdata/shop.in.yaml")
	check(t, walk(t, w, sim.Call{From: "shop/client-0", To: "secrets.vault:80"}),
		sim.Verdict{Kind: sim.Delivered, Pod: "vault/secrets-0", Port: 8080, MTLS: true, ClientIdentity: clientID})
}

// 12h: no upgrade_configs on the HTTP connection managers: a WebSocket
// upgrade gets 403 from the caller's own sidecar.
func TestDefect12h_WebSocketForbidden(t *testing.T) {
	w := weftWorld(t, "testdata/shop.in.yaml")
	check(t, walk(t, w, sim.Call{From: "shop/client-0", To: "web.shop:80", Protocol: sim.WebSocket, Path: "/ws"}),
		sim.Verdict{Kind: sim.Delivered, Pod: "shop/web-0", Port: 8080, MTLS: true, ClientIdentity: clientID})
}

// 12i: a connection to the sidecar's own capture ports loops: the inbound
// passthrough sends it back to the port it came to, which is the listener
// again. Istio answers such connections with blackhole chains.
func TestDefect12i_CapturePortsLoop(t *testing.T) {
	w := weftWorld(t, "testdata/shop.in.yaml")
	// mysql-0 has no AuthPolicy (web-0's Allow policy now closes such
	// connections on its passthrough chain, 12a, which hid the loop).
	for _, c := range []sim.Call{
		{From: "shop/client-0", To: "10.1.0.20:15006", Protocol: sim.TCP},   // another pod's inbound port
		{From: "shop/mysql-0", To: "10.1.0.20:15001", Protocol: sim.TCP},    // its own outbound port
		{From: "shop/mysql-0", To: "[fd00:1::20]:15001", Protocol: sim.TCP}, // over IPv6
		{From: "shop/legacy-0", To: "[fd00:1::20]:15006", Protocol: sim.TCP},
	} {
		switch got := walk(t, w, c); got.Kind {
		case sim.Blackholed, sim.NoRoute, sim.Refused, sim.Reset:
		default:
			t.Errorf("%s to %s: %s; want the connection refused or blackholed", c.From, c.To, got)
		}
	}
}

// 12j: inbound clusters target 127.0.0.1: an application bound to the pod
// IP gets nothing (503), and one bound to localhost only becomes reachable
// from the mesh.
func TestDefect12j_InboundDeliveredToLocalhost(t *testing.T) {
	t.Run("bound to the pod IP", func(t *testing.T) {
		w := weftWorld(t, "testdata/shop.in.yaml")
		podOf(t, w, "shop/web-0").Apps = []sim.AppSocket{{Port: 8080, Bind: netip.MustParseAddr("10.1.0.10")}}
		check(t, walk(t, w, sim.Call{From: "shop/client-0", To: "web.shop:80"}),
			sim.Verdict{Kind: sim.Delivered, Pod: "shop/web-0", Port: 8080, MTLS: true, ClientIdentity: clientID})
	})
	t.Run("bound to the pod's IPv6 address", func(t *testing.T) {
		w := weftWorld(t, "testdata/shop.in.yaml")
		podOf(t, w, "shop/mysql-0").Apps = []sim.AppSocket{{Port: 3306, Bind: netip.MustParseAddr("fd00:1::20")}}
		check(t, walk(t, w, sim.Call{From: "shop/legacy-0", To: "[fd00:1::20]:3306", Protocol: sim.TCP}),
			sim.Verdict{Kind: sim.Delivered, Pod: "shop/mysql-0", Port: 3306})
	})
	t.Run("probes reach an application bound to the pod IP", func(t *testing.T) {
		w := weftWorld(t, "testdata/shop.in.yaml", probedYAML)
		podOf(t, w, "shop/probed-0").Apps = []sim.AppSocket{{Port: 8081, Bind: netip.MustParseAddr("10.1.0.70")}}
		kubelet := netip.MustParseAddr("10.1.0.1")
		check(t, walk(t, w, sim.Call{FromAddr: kubelet, To: "10.1.0.70:15021", Path: "/app-health/app/readyz"}),
			sim.Verdict{Kind: sim.Delivered, Pod: "shop/probed-0", Port: 8081})
	})
	t.Run("bound to localhost only", func(t *testing.T) {
		w := weftWorld(t, "testdata/shop.in.yaml")
		podOf(t, w, "shop/web-0").Apps = []sim.AppSocket{{Port: 8080, Bind: netip.MustParseAddr("127.0.0.1")}}
		if got := walk(t, w, sim.Call{From: "shop/client-0", To: "web.shop:80"}); got.Kind == sim.Delivered {
			t.Errorf("a localhost-only port was reached from another pod: %s", got)
		}
	})
}

// 12k: the inbound listener runs tls_inspector without
// continue_on_listener_filters_timeout: a server-first protocol (MySQL)
// from a plaintext caller is reset after 15 s.
func TestDefect12k_ServerFirstReset(t *testing.T) {
	w := weftWorld(t, "testdata/shop.in.yaml")
	check(t, walk(t, w, sim.Call{From: "shop/legacy-0", To: "mysql.shop:3306", Protocol: sim.ServerFirst}),
		sim.Verdict{Kind: sim.Delivered, Pod: "shop/mysql-0", Port: 3306})
}

// 12e: without path_with_escaped_slashes_action the inbound HTTP manager
// keeps %2F and %5C as they are: a Deny on /admin does not see
// /admin%2Fsecrets, which an application that decodes the path serves as
// /admin/secrets.
func TestDefect12e_EscapedSlashesPassDeny(t *testing.T) {
	w := weftWorld(t, "testdata/shop.in.yaml", `
apiVersion: mesh.weft.dev/v1alpha1
kind: AuthPolicy
metadata: {name: no-admin, namespace: shop, generation: 1}
spec:
  targetRefs: [{group: "", kind: Service, name: web}]
  action: Deny
  rules: [{to: {paths: [{type: PathPrefix, value: /admin}]}}]
`)
	for _, path := range []string{"/admin", "/admin%2Fsecrets", "/admin%2fsecrets", "/admin%5Csecrets", "/%61dmin/secrets", "/x/%2E%2E/admin"} {
		check(t, walk(t, w, sim.Call{From: "shop/client-0", To: "web.shop:80", Path: path}),
			sim.Verdict{Kind: sim.Denied, Status: 403, Policy: "envoy.filters.http.rbac.deny shop/no-admin[0]"})
	}
	// What is not an escaped slash still reaches the application.
	check(t, walk(t, w, sim.Call{From: "shop/client-0", To: "web.shop:80", Path: "/administrators%20list"}),
		sim.Verdict{Kind: sim.Delivered, Pod: "shop/web-0", Port: 8080, MTLS: true, ClientIdentity: clientID})
}

// 12l: a port the server excludes from inbound capture
// (weft.dev/exclude-inbound-ports, which the webhook turns into weft-init's
// --exclude-inbound-ports) never reaches its sidecar, yet meshed callers
// sent it mesh mTLS, which the application cannot read.
func TestDefect12l_ExcludedInboundPortGetsMTLS(t *testing.T) {
	exporter, err := os.ReadFile("testdata/exporter.yaml")
	if err != nil {
		t.Fatal(err)
	}
	w := weftWorld(t, "testdata/shop.in.yaml", string(exporter))
	check(t, walk(t, w, sim.Call{From: "shop/client-0", To: "exporter.shop:9100", Path: "/metrics"}),
		sim.Verdict{Kind: sim.Delivered, Pod: "shop/exporter-0", Port: 9100})
	// Its other, captured port is still mesh mTLS.
	check(t, walk(t, w, sim.Call{From: "shop/client-0", To: "exporter.shop:80"}),
		sim.Verdict{Kind: sim.Delivered, Pod: "shop/exporter-0", Port: 8080, MTLS: true, ClientIdentity: clientID})
}

// probedYAML: a meshed pod whose readiness probe (port 8081, /healthz)
// injection rewrote to the sidecar's /app-health/app/readyz.
const probedYAML = `
apiVersion: v1
kind: Pod
metadata:
  name: probed-0
  namespace: shop
  labels: {app: probed}
  annotations: {weft.dev/app-probes: '{"/app-health/app/readyz":{"port":8081,"path":"/healthz","scheme":"HTTP","timeoutSeconds":1}}'}
spec:
  serviceAccountName: probed
  initContainers: [{name: weft-proxy, image: envoy}]
  containers: [{name: app, image: probed:1}]
status: {podIPs: [{ip: 10.1.0.70}]}
`

// 12o: the inbound HTTP manager sets use_remote_address without
// internal_address_config, so (Envoy 1.33 and later) no caller is internal:
// every mesh request is an edge request, its x-request-id is replaced at
// each hop and tracing loses the thread.
func TestDefect12o_RequestIDReplacedInsideTheMesh(t *testing.T) {
	w := weftWorld(t, "testdata/shop.in.yaml")
	for _, h := range []map[string]string{
		{"x-request-id": "req-1"},
		// From an ingress: the caller's own x-forwarded-for.
		{"x-request-id": "req-1", "x-forwarded-for": "203.0.113.9"},
	} {
		got := walk(t, w, sim.Call{From: "shop/client-0", To: "web.shop:80", Headers: h})
		check(t, got, sim.Verdict{Kind: sim.Delivered, Pod: "shop/web-0", Port: 8080, MTLS: true, ClientIdentity: clientID})
		if id := got.RequestHeaders["x-request-id"]; id != "req-1" {
			t.Errorf("with headers %v the application got x-request-id %q, want req-1", h, id)
		}
	}
	got := walk(t, w, sim.Call{From: "shop/client-0", To: "web.shop:80", Headers: map[string]string{"x-request-id": "req-2"}})
	if got.RequestHeaders["x-envoy-internal"] != "true" {
		t.Errorf("a mesh request is not internal: headers %v", got.RequestHeaders)
	}
}

// 12p: PassthroughCluster had no HTTP protocol options: h2c and gRPC to a
// host the mesh does not know, on a port the sidecar routes as HTTP, left
// as HTTP/1.1, which an HTTP/2-only server (every gRPC server) refuses.
func TestDefect12p_PassthroughDowngradesHTTP2(t *testing.T) {
	w := weftWorld(t, "testdata/shop.in.yaml")
	podOf(t, w, "shop/legacy-0").Apps = []sim.AppSocket{{Port: 80, Bind: netip.IPv6Unspecified()}}
	for _, p := range []sim.Protocol{sim.GRPC, sim.H2C} {
		check(t, walk(t, w, sim.Call{From: "shop/client-0", To: "10.1.0.50:80", Protocol: p, Path: "/pkg.Svc/Get"}),
			sim.Verdict{Kind: sim.PassthroughPlaintext, Pod: "shop/legacy-0", Port: 80})
	}
	// HTTP/1.1 stays HTTP/1.1.
	check(t, walk(t, w, sim.Call{From: "shop/client-0", To: "10.1.0.50:80"}),
		sim.Verdict{Kind: sim.PassthroughPlaintext, Pod: "shop/legacy-0", Port: 80})
}

// 12a, continued: the passthrough chain judged every connection as TCP,
// where rules with methods or paths cannot match, so a Deny on DELETE did
// not hold for plaintext HTTP to a port no Service declares. Such
// requests are now recognised (http_inspector) and judged as HTTP.
func TestDefect12a_UndeclaredHTTPPortJudgedAsHTTP(t *testing.T) {
	w := weftWorld(t, "testdata/shop.in.yaml", `
apiVersion: mesh.weft.dev/v1alpha1
kind: AuthPolicy
metadata: {name: mysql-no-deletes, namespace: shop, generation: 1}
spec:
  targetRefs: [{group: "", kind: Service, name: mysql}]
  action: Deny
  rules: [{to: {methods: [DELETE], paths: [{value: /admin}]}}]
`)
	mysql := podOf(t, w, "shop/mysql-0")
	mysql.Apps = append(mysql.Apps, sim.AppSocket{Port: 9090, Bind: netip.IPv6Unspecified()})
	for _, p := range []sim.Protocol{sim.HTTP1, sim.H2C} {
		check(t, walk(t, w, sim.Call{From: "shop/legacy-0", To: "10.1.0.20:9090", Protocol: p, Method: "DELETE", Path: "/admin/x"}),
			sim.Verdict{Kind: sim.Denied, Status: 403, Policy: "envoy.filters.http.rbac.deny shop/mysql-no-deletes[0]"})
		check(t, walk(t, w, sim.Call{From: "shop/legacy-0", To: "10.1.0.20:9090", Protocol: p, Method: "DELETE", Path: "/%61dmin%2Fx"}),
			sim.Verdict{Kind: sim.Denied, Status: 403})
		check(t, walk(t, w, sim.Call{From: "shop/legacy-0", To: "10.1.0.20:9090", Protocol: p, Method: "GET", Path: "/admin/x"}),
			sim.Verdict{Kind: sim.Delivered, Pod: "shop/mysql-0", Port: 9090})
	}
	// Raw TCP and the server-first protocol still pass through as TCP.
	check(t, walk(t, w, sim.Call{From: "shop/legacy-0", To: "10.1.0.20:9090", Protocol: sim.TCP}),
		sim.Verdict{Kind: sim.Delivered, Pod: "shop/mysql-0", Port: 9090})
	check(t, walk(t, w, sim.Call{From: "shop/legacy-0", To: "mysql.shop:3306", Protocol: sim.ServerFirst}),
		sim.Verdict{Kind: sim.Delivered, Pod: "shop/mysql-0", Port: 3306})
}

// 182: an application's connection to ANOTHER pod's sidecar ports (:15090
// stats, :15021 readiness) must reach that pod, never its own sidecar's
// listeners of the same port. With use_original_dst on the capture
// listener (docs/design/182), Envoy hands a captured connection to a
// listener bound to its original destination, exactly or else by a
// wildcard of that port (ConnectionHandlerImpl::getBalancedHandlerByAddress):
// wildcard 0.0.0.0:15021 and :15090 listeners would answer for every
// address in the cluster.
func TestDefect182_OtherPodsSidecarPortsAnsweredLocally(t *testing.T) {
	w := weftWorld(t, "testdata/shop.in.yaml")
	for _, c := range []sim.Call{
		{From: "shop/client-0", To: "10.1.0.10:15090", Path: "/stats/prometheus"},
		{From: "shop/client-0", To: "10.1.0.10:15021", Path: "/ready"},
		{From: "shop/client-0", To: "[fd00:1::10]:15090", Path: "/stats/prometheus"},
		{From: "shop/client-0", To: "[fd00:1::10]:15021", Path: "/ready"},
		{From: "shop/client-0", To: "10.1.0.10:15090", Protocol: sim.TCP},
	} {
		r := w.Walk(c)
		t.Logf("%s -> %s:\n  %s\n  => %s", c.From, c.To, strings.Join(r.Trace, "\n  "), r.Verdict)
		for _, line := range r.Trace {
			for _, own := range []string{`listener "readiness"`, `listener "stats"`} {
				if strings.HasPrefix(line, "shop/client-0 envoy:") && strings.Contains(line, own) {
					t.Errorf("%s -> %s: the caller's own sidecar took it: %s", c.From, c.To, line)
				}
			}
		}
		reached := false
		for _, line := range r.Trace {
			reached = reached || strings.HasPrefix(line, "shop/web-0: arrives")
		}
		if !reached && r.Verdict.Kind != sim.Blackholed {
			t.Errorf("%s -> %s: %s; want it to reach web-0 (or pass through / be blackholed)", c.From, c.To, r.Verdict)
		}
	}
}
