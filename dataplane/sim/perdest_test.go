package sim_test

import (
	"strings"
	"testing"

	"github.com/weftmesh/weft/dataplane/sim"
)

// docs/design/090: an HTTP Service port with a cluster IP has its own
// outbound filter chain, matched by its addresses, and its own route
// configuration. The address the caller dialled decides the Service; the
// Host no longer reroutes to another Service or out of the mesh.

// chainOf is the outbound filter chain a walk's trace says it took.
func chainOf(t *testing.T, w *sim.World, c sim.Call) string {
	t.Helper()
	for _, line := range w.Walk(c).Trace {
		if i := strings.Index(line, `filter chain "outbound|`); i >= 0 {
			rest := line[i+len(`filter chain "`):]
			return rest[:strings.Index(rest, `"`)]
		}
	}
	return ""
}

func TestAddressDecidesTheService(t *testing.T) {
	w := weftWorld(t, "testdata/shop.in.yaml")
	web := sim.Verdict{Kind: sim.Delivered, Pod: "shop/web-0", Port: 8080, MTLS: true, ClientIdentity: clientID}
	// By name, by each family's cluster IP, and with a Host that names
	// another Service or nothing the mesh knows: web, over mTLS.
	for _, c := range []sim.Call{
		{From: "shop/client-0", To: "web.shop:80"},
		{From: "shop/client-0", To: "10.96.0.10:80", Host: "10.96.0.10"},
		{From: "shop/client-0", To: "[fd00:96::10]:80", Host: "web.shop"},
		{From: "shop/client-0", To: "10.96.0.10:80", Host: "secrets.vault"},
		{From: "shop/client-0", To: "10.96.0.10:80", Host: "www.example.com"},
	} {
		check(t, walk(t, w, c), web)
		// web is dual-stack: its IPv6 cluster IP has a chain of its own,
		// to its IPv6 endpoints (docs/design/064).
		want := "outbound|http|80||web.shop.svc.cluster.local"
		if strings.HasPrefix(c.To, "[") {
			want = "outbound|http|80|ipv6|web.shop.svc.cluster.local"
		}
		if got := chainOf(t, w, c); got != want {
			t.Errorf("%s (Host %q) took chain %q, want web's own %q", c.To, c.Host, got, want)
		}
	}
	check(t, walk(t, w, sim.Call{From: "shop/client-0", To: "10.96.1.10:80", Host: "web.shop"}),
		sim.Verdict{Kind: sim.Delivered, Pod: "vault/secrets-0", Port: 8080, MTLS: true, ClientIdentity: clientID})
	// Bytes that are not HTTP to web's address and port find no chain
	// under web's prefix and take the default chain (Envoy does not fall
	// back to the port's chain for any address), as they did when the
	// port's HTTP chain matched every address.
	if got := chainOf(t, w, sim.Call{From: "shop/client-0", To: "10.96.0.10:80", Protocol: sim.TCP}); got != "outbound|unknown" {
		t.Errorf("raw TCP to web's address took chain %q, want the default chain", got)
	}
	// HTTP to an address that is no Service's takes the port's chain.
	if got := chainOf(t, w, sim.Call{From: "shop/client-0", To: "192.0.2.7:80", Host: "www.example.com"}); got != "outbound|http|80" {
		t.Errorf("HTTP to an outside address took chain %q, want the port's", got)
	}
}

// Under RegistryOnly an address the mesh does not know is still refused
// with 502 by the port's route configuration, while a Service's address
// reaches it whatever the Host.
func TestRegistryOnlyByAddress(t *testing.T) {
	w := weftWorldWith(t, nil, `apiVersion: mesh.weft.dev/v1alpha1
kind: MeshConfig
metadata: {name: weft}
spec: {outboundTrafficPolicy: RegistryOnly}`)
	refusedLocally(t, walk(t, w, sim.Call{From: "shop/client-0", To: "192.0.2.7:80", Host: "www.example.com"}), sim.Responded, 502)
	check(t, walk(t, w, sim.Call{From: "shop/client-0", To: "10.96.0.10:80", Host: "www.example.com"}),
		sim.Verdict{Kind: sim.Delivered, Pod: "shop/web-0", Port: 8080, MTLS: true, ClientIdentity: clientID})
}
