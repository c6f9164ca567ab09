package translator_test

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"

	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/ir"
)

const grantMesh = `apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec: {clusterIP: 10.0.0.1, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: ledger, namespace: bank}
spec: {clusterIP: 10.0.1.1, ports: [{name: http, port: 80}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api, namespace: shop, generation: 1}
spec:
  parentRefs: [{kind: Service, name: api, port: 80}]
  rules: [{backendRefs: [{name: ledger, namespace: bank, port: 80}]}]
`

const grantDoc = `---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: shop-routes, namespace: bank}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: shop}]
  to: [{group: "", kind: Service, name: %s}]
`

// TestReferenceGrantRemoval: a producer route's backend in another
// namespace is used while a ReferenceGrant there permits it, and refused
// again (RefNotPermitted, its share answered 503) once the grant is gone,
// or names another Service.
func TestReferenceGrantRemoval(t *testing.T) {
	translate := func(docs string) (*ir.Route, string, string) {
		t.Helper()
		in, err := translator.DecodeInputs([]byte(docs))
		if err != nil {
			t.Fatal(err)
		}
		out := translator.Translate(in)
		c := meta.FindStatusCondition(out.Status[translator.PolicyKey{Kind: translator.KindHTTPRoute, Namespace: "shop", Name: "api"}], "ResolvedRefs")
		if c == nil {
			t.Fatal("no ResolvedRefs condition")
		}
		return out.Mesh.Service(ir.ServiceKey{Namespace: "shop", Name: "api"}).Port(80).Routes[0], c.Reason, c.Message
	}
	granted, reason, _ := translate(grantMesh + strings.ReplaceAll(grantDoc, "%s", "ledger"))
	if reason != "ResolvedRefs" || len(granted.Backends) != 1 || granted.Backends[0].Unresolved || granted.Backends[0].Service.Namespace != "bank" {
		t.Fatalf("with the grant: %s, backends %+v; want bank/ledger", reason, granted.Backends)
	}
	for name, docs := range map[string]string{
		"grant removed":          grantMesh,
		"grant of another name":  grantMesh + strings.ReplaceAll(grantDoc, "%s", "vault"),
		"grant in the wrong ns":  grantMesh + strings.ReplaceAll(strings.ReplaceAll(grantDoc, "%s", "ledger"), "namespace: bank", "namespace: shop"),
		"grant for another kind": grantMesh + strings.ReplaceAll(strings.ReplaceAll(grantDoc, "%s", "ledger"), "kind: HTTPRoute", "kind: GRPCRoute"),
	} {
		r, reason, msg := translate(docs)
		if reason != translator.ReasonRefNotPermitted || len(r.Backends) != 1 || !r.Backends[0].Unresolved ||
			!strings.Contains(msg, "no ReferenceGrant in namespace bank lets HTTPRoutes of namespace shop refer to Service ledger") {
			t.Errorf("%s: %s %q, backends %+v; want RefNotPermitted naming the missing grant, and the share unresolved", name, reason, msg, r.Backends)
		}
	}
}

const grpcGrantMesh = `apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec: {clusterIP: 10.0.0.1, ports: [{name: grpc, port: 80, appProtocol: kubernetes.io/h2c}]}
---
apiVersion: v1
kind: Service
metadata: {name: ledger, namespace: bank}
spec: {clusterIP: 10.0.1.1, ports: [{name: grpc, port: 80, appProtocol: kubernetes.io/h2c}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: api, namespace: shop, generation: 1}
spec:
  parentRefs: [{kind: Service, name: api, port: 80}]
  rules: [{backendRefs: [{name: ledger, namespace: bank, port: 80}]}]
`

// TestReferenceGrantGRPCRoute: a GRPCRoute reaches httpRoute as an
// HTTPRoute, but a ReferenceGrant names the route's own kind: one from
// GRPCRoutes of shop permits the GRPCRoute's backend in bank, one from
// HTTPRoutes does not (RefNotPermitted, the message naming GRPCRoutes).
func TestReferenceGrantGRPCRoute(t *testing.T) {
	translate := func(docs string) (*ir.Route, string, string) {
		t.Helper()
		in, err := translator.DecodeInputs([]byte(docs))
		if err != nil {
			t.Fatal(err)
		}
		out := translator.Translate(in)
		c := meta.FindStatusCondition(out.Status[translator.PolicyKey{Kind: translator.KindGRPCRoute, Namespace: "shop", Name: "api"}], "ResolvedRefs")
		if c == nil {
			t.Fatal("no ResolvedRefs condition")
		}
		return out.Mesh.Service(ir.ServiceKey{Namespace: "shop", Name: "api"}).Port(80).Routes[0], c.Reason, c.Message
	}
	grpcGrant := strings.ReplaceAll(strings.ReplaceAll(grantDoc, "%s", "ledger"), "kind: HTTPRoute", "kind: GRPCRoute")
	granted, reason, msg := translate(grpcGrantMesh + grpcGrant)
	if reason != "ResolvedRefs" || len(granted.Backends) != 1 || granted.Backends[0].Unresolved || granted.Backends[0].Service.Namespace != "bank" {
		t.Fatalf("with a grant from GRPCRoutes: %s %q, backends %+v; want bank/ledger", reason, msg, granted.Backends)
	}
	r, reason, msg := translate(grpcGrantMesh + strings.ReplaceAll(grantDoc, "%s", "ledger"))
	if reason != translator.ReasonRefNotPermitted || len(r.Backends) != 1 || !r.Backends[0].Unresolved ||
		!strings.Contains(msg, "no ReferenceGrant in namespace bank lets GRPCRoutes of namespace shop refer to Service ledger") ||
		!strings.Contains(msg, "kind GRPCRoute, namespace shop") {
		t.Errorf("with a grant from HTTPRoutes only: %s %q, backends %+v; want RefNotPermitted naming a grant from GRPCRoutes", reason, msg, r.Backends)
	}
}
