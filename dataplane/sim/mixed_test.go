package sim_test

import (
	"net/netip"
	"slices"
	"testing"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/weftmesh/weft/dataplane/sim"
)

// mixedService is a Service whose endpoints are a meshed pod (stranger-0)
// and an unmeshed one (legacy-0), on HTTP 80 and TCP 9000: its clusters
// carry transport_socket_matches, and each endpoint's metadata picks its
// own.
var mixedService = []string{`apiVersion: v1
kind: Service
metadata: {name: mixed, namespace: shop}
spec:
  clusterIP: 10.96.0.70
  clusterIPs: [10.96.0.70, "fd00:96::70"]
  ipFamilies: [IPv4, IPv6]
  selector: {tier: mixed}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: tcp, port: 9000, appProtocol: tcp}`,
	slice("mixed-v4", "IPv4", "10.1.0.40", "10.1.0.50"),
	slice("mixed-v6", "IPv6", `"fd00:1::40"`, `"fd00:1::50"`),
}

func slice(name, family, stranger, legacy string) string {
	return `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ` + name + `, namespace: shop, labels: {kubernetes.io/service-name: mixed}}
addressType: ` + family + `
ports: [{name: http, port: 8080}, {name: tcp, port: 9000}]
endpoints:
- addresses: [` + stranger + `]
  targetRef: {kind: Pod, name: stranger-0, namespace: shop}
- addresses: [` + legacy + `]
  targetRef: {kind: Pod, name: legacy-0, namespace: shop}`
}

// TestMixedEndpointsEachGetTheirTransport: Envoy picks any endpoint of a
// cluster, so the walk is made with each endpoint first in the caller's
// load assignment in turn: a meshed endpoint must get mesh mTLS with the
// caller's identity, an unmeshed one plaintext (TLS to it would fail, and
// plaintext to a sidecar would carry no identity).
func TestMixedEndpointsEachGetTheirTransport(t *testing.T) {
	edits := []string{
		"metadata: {name: stranger-0, namespace: shop, labels: {app: stranger}}",
		"metadata: {name: stranger-0, namespace: shop, labels: {app: stranger, tier: mixed}}",
		"metadata: {name: legacy-0, namespace: shop, labels: {app: legacy}}",
		"metadata: {name: legacy-0, namespace: shop, labels: {app: legacy, tier: mixed}}",
	}
	split := append(slices.Clone(mixedService), `apiVersion: v1
kind: Service
metadata: {name: mixed-next, namespace: shop}
spec:
  clusterIP: 10.96.0.71
  selector: {app: web}
  ports: [{name: tcp, port: 9000, appProtocol: tcp}]`, `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: mixed-next-v4, namespace: shop, labels: {kubernetes.io/service-name: mixed-next}}
addressType: IPv4
ports: [{name: tcp, port: 9000}]
endpoints:
- addresses: [10.1.0.10]
  targetRef: {kind: Pod, name: web-0, namespace: shop}`, `apiVersion: mesh.weft.dev/v1alpha1
kind: TrafficSplit
metadata: {name: mixed, namespace: shop, generation: 1}
spec:
  rootService: {name: mixed}
  backends: [{name: mixed, weight: 3}, {name: mixed-next, weight: 1}]`)
	for _, tc := range []struct {
		name  string
		extra []string
		call  sim.Call
	}{
		{"HTTP", mixedService, sim.Call{From: "shop/client-0", To: "mixed.shop:80"}},
		{"HTTP over IPv6", mixedService, sim.Call{From: "shop/client-0", To: "mixed.shop:80", IPv6: true}},
		{"TCP", mixedService, sim.Call{From: "shop/client-0", To: "mixed.shop:9000", Protocol: sim.TCP}},
		{"TCP split", split, sim.Call{From: "shop/client-0", To: "mixed.shop:9000", Protocol: sim.TCP}},
	} {
		for _, first := range []struct {
			pod   string
			mtls  bool
			ident string
		}{{"shop/stranger-0", true, clientID}, {"shop/legacy-0", false, ""}} {
			t.Run(tc.name+" to "+first.pod, func(t *testing.T) {
				w := weftWorldWith(t, edits, tc.extra...)
				putFirst(t, w, "shop/client-0", podOf(t, w, first.pod))
				got := walk(t, w, tc.call)
				check(t, got, sim.Verdict{Kind: sim.Delivered, Pod: first.pod, ClientIdentity: first.ident})
				if got.MTLS != first.mtls {
					t.Errorf("to %s: mTLS %v; want %v", first.pod, got.MTLS, first.mtls)
				}
			})
		}
	}
}

// putFirst moves the endpoints of pod to the front of every load
// assignment in from's sidecar.
func putFirst(t *testing.T, w *sim.World, from string, pod *sim.Pod) {
	t.Helper()
	for _, cla := range podOf(t, w, from).Proxy.Endpoints {
		for _, loc := range cla.GetEndpoints() {
			slices.SortStableFunc(loc.GetLbEndpoints(), func(a, b *endpointv3.LbEndpoint) int {
				ia, ib := slices.Contains(pod.IPs, addrOf(a)), slices.Contains(pod.IPs, addrOf(b))
				switch {
				case ia && !ib:
					return -1
				case ib && !ia:
					return 1
				}
				return 0
			})
		}
	}
}

func addrOf(e *endpointv3.LbEndpoint) netip.Addr {
	a, _ := netip.ParseAddr(e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress())
	return a
}
