package translator_test

import (
	"strings"
	"testing"

	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/envoy"
	"github.com/weftmesh/weft/translator/ir"
)

// 12s: an ExternalName Service was dropped without a word; calls to it
// leave unmeshed. weft says so: a warning names the Service and what
// happens to its calls.
func TestExternalNameIsReported(t *testing.T) {
	in, err := translator.DecodeInputs([]byte(`apiVersion: v1
kind: Service
metadata: {name: payments, namespace: shop}
spec: {type: ExternalName, externalName: api.payments.example.com}`))
	if err != nil {
		t.Fatal(err)
	}
	out := translator.Translate(in)
	if len(out.Mesh.Services) != 0 {
		t.Fatalf("ExternalName Service in the model: %v", out.Mesh.Services)
	}
	if w := strings.Join(out.Warnings, "\n"); !strings.Contains(w, "shop/payments") || !strings.Contains(w, "ExternalName") {
		t.Fatalf("warnings %q do not name the ExternalName Service", w)
	}
}

// 12s: when no endpoint of a Service is ready, Kubernetes' own proxies
// fall back to those that are serving but terminating, so a rollout
// drains gracefully; weft dropped them and the Service had no endpoint.
func TestTerminatingServingEndpointsAreAFallback(t *testing.T) {
	in, err := translator.DecodeInputs([]byte(`apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 10.96.0.1, ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 80}]
endpoints:
- addresses: [10.1.0.1]
  conditions: {ready: false, serving: true, terminating: true}
- addresses: [10.1.0.2]
  conditions: {ready: false, serving: false, terminating: true}`))
	if err != nil {
		t.Fatal(err)
	}
	mesh := translator.Translate(in).Mesh
	svc := mesh.Service(ir.ServiceKey{Namespace: "shop", Name: "web"})
	la := envoy.LoadAssignment(svc, svc.Ports[0])
	var got []string
	for _, loc := range la.Endpoints {
		for _, e := range loc.LbEndpoints {
			got = append(got, e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress())
		}
	}
	if strings.Join(got, " ") != "10.1.0.1" {
		t.Fatalf("endpoints %v, want the serving terminating one (10.1.0.1) while none is ready", got)
	}
}
