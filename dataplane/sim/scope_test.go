package sim_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weftmesh/weft/dataplane/sim"
)

// Scoping (weft.dev/export-to) and mayReach shrink a proxy's configuration;
// they must never change what happens to a request: a call to a meshed
// Service the caller's sidecar does not hold is refused by that sidecar,
// with a reason, never sent in plaintext (issue 12 f and b).

// weftWorldWith is weftWorld for testdata/shop.in.yaml changed by edit
// (old -> new replacements) plus extra documents.
func weftWorldWith(t *testing.T, edits []string, extra ...string) *sim.World {
	t.Helper()
	data, err := os.ReadFile("testdata/shop.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	for i := 0; i+1 < len(edits); i += 2 {
		if !strings.Contains(s, edits[i]) {
			t.Fatalf("shop.in.yaml has no %q", edits[i])
		}
		s = strings.Replace(s, edits[i], edits[i+1], 1)
	}
	for _, doc := range extra {
		s += "\n---\n" + doc
	}
	path := filepath.Join(t.TempDir(), "mesh.yaml")
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return weftWorld(t, path)
}

// refusedLocally: the caller's own sidecar answered (403) or reset the
// connection; nothing reached the destination.
func refusedLocally(t *testing.T, got sim.Verdict, want sim.Kind, status int) {
	t.Helper()
	if got.Kind != want || got.Status != status || got.Pod != "" {
		t.Errorf("verdict %s; want %s (status %d) from the caller's sidecar", got, want, status)
	}
}

// 12f: a Service exported to its own namespace only is refused, not
// passed through, from any other: HTTP with a 403 naming the reason, TCP
// through the black hole (a reset the tcp_proxy's stats count).
func TestScopeRefusesOutOfScopeCalls(t *testing.T) {
	w := weftWorldWith(t, []string{
		"metadata: {name: secrets, namespace: vault}", `metadata: {name: secrets, namespace: vault, annotations: {weft.dev/export-to: "."}}`,
		"metadata: {name: mysql, namespace: shop}", `metadata: {name: mysql, namespace: shop, annotations: {weft.dev/export-to: "."}}`,
	})
	refusedLocally(t, walk(t, w, sim.Call{From: "shop/client-0", To: "secrets.vault:80"}), sim.Responded, 403)
	refusedLocally(t, walk(t, w, sim.Call{From: "shop/client-0", To: "10.96.1.10:80", Host: "10.96.1.10"}), sim.Responded, 403)
	refusedLocally(t, walk(t, w, sim.Call{From: "vault/secrets-0", To: "mysql.shop:3306", Protocol: sim.TCP}), sim.Blackholed, 0)
	// Inside the scope nothing changes.
	check(t, walk(t, w, sim.Call{From: "shop/client-0", To: "mysql.shop:3306", Protocol: sim.TCP}),
		sim.Verdict{Kind: sim.Delivered, Pod: "shop/mysql-0", Port: 3306, MTLS: true, ClientIdentity: clientID})
}

// 12f: a namespace's weft.dev/export-to is its Services' default.
func TestScopeNamespaceDefault(t *testing.T) {
	w := weftWorldWith(t, []string{
		"metadata: {name: vault, labels: {weft.dev/mtls-mode: Strict}}", `metadata: {name: vault, labels: {weft.dev/mtls-mode: Strict}, annotations: {weft.dev/export-to: "."}}`,
	})
	refusedLocally(t, walk(t, w, sim.Call{From: "shop/client-0", To: "secrets.vault:80"}), sim.Responded, 403)
}

// 12b: mayReach drops mysql from stranger's configuration (a Deny names
// stranger's identity); the call must still be refused, not leave in
// plaintext, where the Permissive server's principal rule cannot match a
// connection without TLS and serves it.
func TestDefect12b_MayReachNeverChangesAVerdict(t *testing.T) {
	w := weftWorldWith(t, nil, `apiVersion: mesh.weft.dev/v1alpha1
kind: AuthPolicy
metadata: {name: no-strangers, namespace: shop, generation: 1}
spec:
  targetRefs: [{group: "", kind: Service, name: mysql}]
  action: Deny
  rules: [{from: {serviceAccounts: [shop/stranger]}}]`)
	got := walk(t, w, sim.Call{From: "shop/stranger-0", To: "mysql.shop:3306", Protocol: sim.TCP})
	switch got.Kind {
	case sim.Denied, sim.Blackholed, sim.Reset:
	default:
		t.Errorf("stranger to mysql: %s; want the connection refused (a Deny names stranger)", got)
	}
	// And over HTTP: web denies stranger by its Allow policy; the
	// refusal names the reason.
	w = weftWorldWith(t, []string{"rules: [{to: {methods: [DELETE]}}]", "rules: [{from: {serviceAccounts: [shop/stranger]}}]"})
	refusedLocally(t, walk(t, w, sim.Call{From: "shop/stranger-0", To: "web.shop:80"}), sim.Responded, 403)
	check(t, walk(t, w, sim.Call{From: "shop/client-0", To: "web.shop:80"}),
		sim.Verdict{Kind: sim.Delivered, Pod: "shop/web-0", Port: 8080, MTLS: true, ClientIdentity: clientID})
}

// clusterServices are kube-dns (a pod without sidecar) and the API
// server's kubernetes.default (an address outside the World), with a
// RegistryOnly MeshConfig.
const clusterServices = `apiVersion: mesh.weft.dev/v1alpha1
kind: MeshConfig
metadata: {name: weft}
spec: {outboundTrafficPolicy: RegistryOnly}
---
apiVersion: v1
kind: Namespace
metadata: {name: kube-system%s}
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system}
spec:
  clusterIP: 10.96.0.53
  selector: {k8s-app: kube-dns}
  ports: [{name: dns-tcp, port: 53, targetPort: 53}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: kube-dns-1, namespace: kube-system, labels: {kubernetes.io/service-name: kube-dns}}
addressType: IPv4
ports: [{name: dns-tcp, port: 53}]
endpoints:
- addresses: [10.3.0.53]
  targetRef: {kind: Pod, name: coredns-0, namespace: kube-system}
---
apiVersion: v1
kind: Pod
metadata: {name: coredns-0, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  containers: [{name: coredns, image: coredns:1}]
status: {podIPs: [{ip: 10.3.0.53}]}
---
apiVersion: v1
kind: Service
metadata: {name: kubernetes, namespace: default}
spec:
  clusterIP: 10.96.0.1
  ports: [{name: https, port: 443, targetPort: 6443}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: kubernetes, namespace: default, labels: {kubernetes.io/service-name: kubernetes}}
addressType: IPv4
ports: [{name: https, port: 6443}]
endpoints: [{addresses: [192.0.2.10]}]`

// 12n: with outbound RegistryOnly, the API server and kube-dns over TCP
// are reached from every namespace — whether the caller's proxy holds them
// (the default) or kube-system keeps its Services to itself.
func TestDefect12n_RegistryOnlyKeepsClusterServices(t *testing.T) {
	for _, scope := range []string{"", `, annotations: {weft.dev/export-to: "."}`} {
		w := weftWorldWith(t, nil, strings.Replace(clusterServices, "%s", scope, 1))
		for _, c := range []sim.Call{
			{From: "vault/secrets-0", To: "kubernetes.default:443", Protocol: sim.TCP},
			{From: "shop/client-0", To: "kube-dns.kube-system:53", Protocol: sim.TCP},
		} {
			got := walk(t, w, c)
			if (got.Kind != sim.Delivered && got.Kind != sim.PassthroughPlaintext) || (got.Pod == "" && got.Addr.Port() != 6443) {
				t.Errorf("kube-system scope %q: %s to %s: %s; want delivered", scope, c.From, c.To, got)
			}
		}
	}
}
