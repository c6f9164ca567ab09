package sim_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/weftmesh/weft/dataplane/sim"
)

const (
	clientID = "spiffe://cluster.local/ns/shop/sa/client"
	tellerID = "spiffe://cluster.local/ns/bank/sa/teller"
)

// TestWeftMesh walks calls through weft's real output for
// testdata/shop.in.yaml: behaviour weft gets right today.
func TestWeftMesh(t *testing.T) {
	w := weftWorld(t, "testdata/shop.in.yaml")
	for _, tc := range []struct {
		name string
		call sim.Call
		want sim.Verdict // Kind, Pod, Port, MTLS, ClientIdentity, Status, Policy compared when set
	}{
		{"meshed to meshed through the ClusterIP is mTLS with the client's identity",
			sim.Call{From: "shop/client-0", To: "web.shop:80", Path: "/orders"},
			sim.Verdict{Kind: sim.Delivered, Pod: "shop/web-0", Port: 8080, MTLS: true, ClientIdentity: clientID}},
		{"by cluster IP",
			sim.Call{From: "shop/client-0", To: "10.96.0.10:80", Host: "10.96.0.10"},
			sim.Verdict{Kind: sim.Delivered, Pod: "shop/web-0", Port: 8080, MTLS: true, ClientIdentity: clientID}},
		{"gRPC",
			sim.Call{From: "shop/client-0", To: "web.shop:80", Protocol: sim.GRPC, Path: "/pkg.Svc/Get"},
			sim.Verdict{Kind: sim.Delivered, Pod: "shop/web-0", Port: 8080, MTLS: true, ClientIdentity: clientID}},
		{"AuthPolicy Deny on DELETE",
			sim.Call{From: "shop/client-0", To: "web.shop:80", Method: "DELETE", Path: "/orders/1"},
			sim.Verdict{Kind: sim.Denied, Status: 403, Policy: "envoy.filters.http.rbac.deny shop/no-deletes[0]"}},
		{"unmeshed caller, plaintext: the Allow policy has no identity to admit",
			sim.Call{From: "shop/legacy-0", To: "web.shop:80"},
			sim.Verdict{Kind: sim.Denied, Status: 403, Policy: "envoy.filters.http.rbac.allow"}},
		{"outside caller to a Strict pod: no plaintext chain, closed",
			sim.Call{FromAddr: netip.MustParseAddr("192.0.2.1"), To: "10.2.0.10:8080"},
			sim.Verdict{Kind: sim.NoRoute}},
		{"unknown host on an HTTP port passes through",
			sim.Call{From: "shop/client-0", To: "203.0.113.5:80", Host: "example.org"},
			sim.Verdict{Kind: sim.Delivered}},
		{"raw TCP to an unknown port passes through",
			sim.Call{From: "shop/client-0", To: "203.0.113.5:5000", Protocol: sim.TCP},
			sim.Verdict{Kind: sim.Delivered}},
		{"the app's own loopback is not captured",
			sim.Call{From: "shop/web-0", To: "127.0.0.1:8080"},
			sim.Verdict{Kind: sim.Delivered, Pod: "shop/web-0", Port: 8080}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := walk(t, w, tc.call)
			check(t, got, tc.want)
		})
	}
}

// check compares the fields of want that are set.
func check(t *testing.T, got, want sim.Verdict) {
	t.Helper()
	bad := got.Kind != want.Kind ||
		(want.Pod != "" && got.Pod != want.Pod) ||
		(want.Port != 0 && got.Port != want.Port) ||
		(want.MTLS && !got.MTLS) ||
		(want.ClientIdentity != "" && got.ClientIdentity != want.ClientIdentity) ||
		(want.Status != 0 && got.Status != want.Status) ||
		(want.Policy != "" && !strings.HasPrefix(got.Policy, want.Policy))
	if bad {
		t.Errorf("verdict %s\nwant %s", got, want)
	}
}

// TestWeftGoldens walks calls through the translator's own golden meshes.
func TestWeftGoldens(t *testing.T) {
	w := weftWorld(t, "../../translator/envoy/testdata/policies.in.yaml")
	t.Run("teller to ledger is mTLS, teller seen", func(t *testing.T) {
		check(t, walk(t, w, sim.Call{From: "bank/teller-0", To: "ledger.bank:80"}),
			sim.Verdict{Kind: sim.Delivered, Pod: "bank/ledger-0", Port: 8080, MTLS: true, ClientIdentity: tellerID})
	})
	t.Run("DELETE is denied", func(t *testing.T) {
		check(t, walk(t, w, sim.Call{From: "bank/teller-0", To: "ledger.bank:80", Method: "DELETE"}),
			sim.Verdict{Kind: sim.Denied, Status: 403, Policy: "envoy.filters.http.rbac.deny bank/no-deletes[0]"})
	})
	t.Run("the robot, scoped out, is not served by the Strict ledger", func(t *testing.T) {
		got := walk(t, w, sim.Call{From: "bank/robot-0", To: "ledger.bank:80"})
		if got.Kind == sim.Delivered || got.Kind == sim.PassthroughPlaintext {
			t.Errorf("verdict %s: a denied robot reached the ledger", got)
		}
	})
	t.Run("a TCP split reports its distribution", func(t *testing.T) {
		got := walk(t, w, sim.Call{From: "bank/teller-0", To: "10.0.1.20:6379", Protocol: sim.TCP})
		if got.Kind != sim.Delivered || strings.Join(got.Split, " ") != "outbound|6379||cache.bank.svc.cluster.local=3 outbound|6379||cache-next.bank.svc.cluster.local=1" {
			t.Errorf("verdict %s", got)
		}
	})
}

// TestWeftMeshFailures: the walk notices what a proxy would refuse.
func TestWeftMeshFailures(t *testing.T) {
	t.Run("a server with another identity fails the SAN check", func(t *testing.T) {
		w := weftWorld(t, "testdata/shop.in.yaml")
		podOf(t, w, "shop/web-0").Identity = "spiffe://cluster.local/ns/shop/sa/impostor"
		check(t, walk(t, w, sim.Call{From: "shop/client-0", To: "web.shop:80"}), sim.Verdict{Kind: sim.TLSFailure})
	})
	t.Run("an endpoint that lost its sidecar gets mesh mTLS it cannot read", func(t *testing.T) {
		w := weftWorld(t, "testdata/shop.in.yaml")
		web := podOf(t, w, "shop/web-0")
		web.Proxy, web.CaptureV4, web.CaptureV6 = nil, nil, nil
		check(t, walk(t, w, sim.Call{From: "shop/client-0", To: "web.shop:80"}), sim.Verdict{Kind: sim.TLSFailure})
	})
	t.Run("nothing listens on the target port", func(t *testing.T) {
		w := weftWorld(t, "testdata/shop.in.yaml")
		podOf(t, w, "shop/web-0").Apps = nil
		check(t, walk(t, w, sim.Call{From: "shop/client-0", To: "web.shop:80"}), sim.Verdict{Kind: sim.Refused})
	})
	t.Run("every walk ends", func(t *testing.T) {
		w := weftWorld(t, "testdata/shop.in.yaml")
		for _, from := range []string{"shop/client-0", "shop/web-0", "shop/legacy-0", "vault/secrets-0"} {
			for _, to := range []string{"10.1.0.10:15001", "10.1.0.10:15006", "10.1.0.10:15021", "127.0.0.1:15001", "127.0.0.1:15006", "10.96.0.10:80", "[fd00:1::10]:15006"} {
				for _, p := range []sim.Protocol{sim.HTTP1, sim.TCP, sim.ServerFirst} {
					if v := w.Walk(sim.Call{From: from, To: to, Protocol: p}).Verdict; v.Kind == "" {
						t.Errorf("%s -> %s %s: no verdict", from, to, p)
					}
				}
			}
		}
	})
}
