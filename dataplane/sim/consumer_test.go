package sim_test

import (
	"strings"
	"testing"

	"github.com/weftmesh/weft/dataplane/sim"
)

// consumerMesh adds to shop.in.yaml a producer route on vault/secrets
// (response header x-route: producer), a consumer route of namespace shop
// on it (x-route: consumer; /local goes to shop/web instead), and meshed
// callers in vault and in a third namespace, front (docs/design/176).
const consumerMesh = `apiVersion: v1
kind: Namespace
metadata: {name: front}
---
apiVersion: v1
kind: Pod
metadata: {name: caller-0, namespace: front, labels: {app: caller}}
spec:
  serviceAccountName: caller
  initContainers: [{name: weft-proxy, image: envoy}]
  containers: [{name: app, image: caller:1}]
status: {podIPs: [{ip: 10.3.0.10}, {ip: "fd00:3::10"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: caller-0, namespace: vault, labels: {app: caller}}
spec:
  serviceAccountName: caller
  initContainers: [{name: weft-proxy, image: envoy}]
  containers: [{name: app, image: caller:1}]
status: {podIPs: [{ip: 10.2.0.20}, {ip: "fd00:2::20"}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: producer, namespace: vault}
spec:
  parentRefs: [{kind: Service, name: secrets, port: 80}]
  rules:
  - filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x-route, value: producer}]}}]
    backendRefs: [{name: secrets, port: 80}]
` + consumerRouteDoc

// consumerRouteDoc is the consumer route of consumerMesh.
const consumerRouteDoc = `---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: consumer, namespace: shop}
spec:
  parentRefs: [{kind: Service, name: secrets, namespace: vault, port: 80}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /local}}]
    backendRefs: [{name: web, port: 80}]
  - filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x-route, value: consumer}]}}]
    backendRefs: [{name: secrets, namespace: vault, port: 80}]`

// TestConsumerRoute walks calls to vault/secrets from each namespace: the
// callers in shop, the consumer route's namespace, take its routes (its
// header; /local to shop/web); callers in vault (the producer's own) and
// in front take the producer route, /local included. The simulator reads
// each caller's own route configuration outbound|80||secrets..., which
// has the same name in every proxy.
func TestConsumerRoute(t *testing.T) {
	w := weftWorld(t, "testdata/shop.in.yaml", consumerMesh)
	for _, tc := range []struct {
		from, path, pod, route string
	}{
		{"shop/client-0", "/", "vault/secrets-0", "consumer"},
		{"shop/client-0", "/local/x", "shop/web-0", ""},
		{"shop/stranger-0", "/", "vault/secrets-0", "consumer"},
		{"vault/caller-0", "/", "vault/secrets-0", "producer"},
		{"vault/caller-0", "/local/x", "vault/secrets-0", "producer"},
		{"front/caller-0", "/", "vault/secrets-0", "producer"},
		{"front/caller-0", "/local/x", "vault/secrets-0", "producer"},
	} {
		v := walk(t, w, sim.Call{From: tc.from, To: "secrets.vault:80", Path: tc.path})
		if v.Kind != sim.Delivered || v.Pod != tc.pod || !v.MTLS || v.ResponseHeaders["x-route"] != tc.route {
			t.Errorf("%s %s: %s (x-route %q), want delivered to %s over mTLS with x-route %q", tc.from, tc.path, v, v.ResponseHeaders["x-route"], tc.pod, tc.route)
		}
	}
}

// TestConsumerRouteLeavesOthers: without the consumer route, shop's
// callers take the producer's route too (the world is otherwise the
// same), so the difference above is the consumer route's alone.
func TestConsumerRouteLeavesOthers(t *testing.T) {
	w := weftWorld(t, "testdata/shop.in.yaml", consumerMesh[:len(consumerMesh)-len(consumerRouteDoc)])
	for _, from := range []string{"shop/client-0", "vault/caller-0", "front/caller-0"} {
		v := walk(t, w, sim.Call{From: from, To: "secrets.vault:80", Path: "/local/x"})
		if v.Kind != sim.Delivered || v.Pod != "vault/secrets-0" || v.ResponseHeaders["x-route"] != "producer" {
			t.Errorf("%s: %s (x-route %q), want vault/secrets-0 with x-route producer", from, v, v.ResponseHeaders["x-route"])
		}
	}
}

// TestConsumerRouteUnmatched404: a consumer route whose only rule matches
// /local leaves shop's other requests unmatched, and they get Envoy's 404
// (no route) rather than the parent Service, as a producer route's do
// (docs/design/177); callers elsewhere still take the producer's route.
func TestConsumerRouteUnmatched404(t *testing.T) {
	onlyLocal := strings.Replace(consumerRouteDoc, `
  - filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x-route, value: consumer}]}}]
    backendRefs: [{name: secrets, namespace: vault, port: 80}]`, "", 1)
	if onlyLocal == consumerRouteDoc {
		t.Fatal("consumerRouteDoc's catch-all rule not found")
	}
	w := weftWorld(t, "testdata/shop.in.yaml", consumerMesh[:len(consumerMesh)-len(consumerRouteDoc)]+onlyLocal)
	if v := walk(t, w, sim.Call{From: "shop/client-0", To: "secrets.vault:80", Path: "/local/x"}); v.Kind != sim.Delivered || v.Pod != "shop/web-0" {
		t.Errorf("shop /local/x: %s, want delivered to shop/web-0", v)
	}
	if v := walk(t, w, sim.Call{From: "shop/client-0", To: "secrets.vault:80", Path: "/"}); v.Kind != sim.NoRoute || v.Status != 404 {
		t.Errorf("shop /: %s, want no route (404)", v)
	}
	for _, from := range []string{"vault/caller-0", "front/caller-0"} {
		v := walk(t, w, sim.Call{From: from, To: "secrets.vault:80", Path: "/"})
		if v.Kind != sim.Delivered || v.Pod != "vault/secrets-0" || v.ResponseHeaders["x-route"] != "producer" {
			t.Errorf("%s /: %s (x-route %q), want vault/secrets-0 with x-route producer", from, v, v.ResponseHeaders["x-route"])
		}
	}
}
