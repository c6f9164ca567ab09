package sim_test

import (
	"strings"
	"testing"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/dataplane/sim"
)

// docs/design/186: the capture listener's Host-routed chains (one per
// HTTP port number, for addresses no Service listener takes) are in port
// order, not in the order of the Services that bring the numbers, so a
// new Service that sorts first does not move them. Envoy picks a chain by
// its match, never its position; here the simulator walks calls on each
// HTTP port number of a mesh where shop/aaa (port 9000) sorts before
// shop/web (port 80), and each takes its port's chain.
const aaaDocs = `apiVersion: v1
kind: Service
metadata: {name: aaa, namespace: shop}
spec:
  clusterIP: 10.96.0.40
  clusterIPs: [10.96.0.40]
  ports: [{name: http, port: 9000, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: aaa-v4, namespace: shop, labels: {kubernetes.io/service-name: aaa}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [10.1.0.10]
  targetRef: {kind: Pod, name: web-0, namespace: shop}
`

func TestHostChainsByPort(t *testing.T) {
	w := weftWorld(t, "testdata/shop.in.yaml", aaaDocs)
	for _, tc := range []struct {
		call  sim.Call
		chain string
		want  sim.Verdict
	}{
		// An address no Service has: its port's Host-routed chain, then
		// through (no Service of that Host is routed by Host).
		{sim.Call{From: "shop/client-0", To: "203.0.113.5:9000", Host: "example.org"}, "outbound|http|9000", sim.Verdict{Kind: sim.Delivered}},
		{sim.Call{From: "shop/client-0", To: "203.0.113.5:80", Host: "example.org"}, "outbound|http|80", sim.Verdict{Kind: sim.Delivered}},
		// The Service's own address: handed to its listener, delivered
		// over mesh mTLS.
		{sim.Call{From: "shop/client-0", To: "10.96.0.40:9000", Host: "aaa.shop"}, "outbound|http|9000||aaa.shop.svc.cluster.local",
			sim.Verdict{Kind: sim.Delivered, Pod: "shop/web-0", Port: 8080, MTLS: true, ClientIdentity: clientID}},
	} {
		r := w.Walk(tc.call)
		check(t, r.Verdict, tc.want)
		if !strings.Contains(strings.Join(r.Trace, "\n"), `filter chain "`+tc.chain+`"`) {
			t.Errorf("%s (Host %s) did not take chain %s:\n%s", tc.call.To, tc.call.Host, tc.chain, strings.Join(r.Trace, "\n"))
		}
	}
	// The chains themselves, as the client's sidecar holds them: 80
	// before 9000, although shop/aaa comes first in the mesh.
	var ports []string
	for _, l := range podOf(t, w, "shop/client-0").Proxy.Listeners {
		if l.GetName() != dataplane.OutboundListener {
			continue
		}
		for _, fc := range l.GetFilterChains() {
			if p, ok := strings.CutPrefix(fc.GetName(), "outbound|http|"); ok {
				ports = append(ports, p)
			}
		}
	}
	if strings.Join(ports, ",") != "80,9000" {
		t.Errorf("Host-routed chains of the capture listener for ports %v, want 80 then 9000", ports)
	}
}
