package xds

import (
	"sort"
	"strings"
	"testing"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/ir"
)

// depsBase is a small mesh in four namespaces: shop (checkout split 90/10
// to checkout-v2, and web), other (ledger), lone (hermit) and shared
// (global, exported to every namespace).
var depsBase = []string{
	`{apiVersion: v1, kind: Namespace, metadata: {name: shop, annotations: {weft.dev/export-to: "."}}}`,
	`{apiVersion: v1, kind: Namespace, metadata: {name: other, annotations: {weft.dev/export-to: "."}}}`,
	`{apiVersion: v1, kind: Namespace, metadata: {name: lone, annotations: {weft.dev/export-to: "."}}}`,
	`{apiVersion: v1, kind: Namespace, metadata: {name: shared, annotations: {weft.dev/export-to: "."}}}`,
	`{apiVersion: v1, kind: Service, metadata: {name: checkout, namespace: shop}, spec: {clusterIP: 10.0.0.1, selector: {app: checkout}, ports: [{name: http, port: 80}]}}`,
	`{apiVersion: v1, kind: Service, metadata: {name: checkout-v2, namespace: shop}, spec: {clusterIP: 10.0.0.2, selector: {app: checkout, v: "2"}, ports: [{name: http, port: 80}]}}`,
	`{apiVersion: v1, kind: Service, metadata: {name: web, namespace: shop}, spec: {clusterIP: 10.0.0.3, selector: {app: web}, ports: [{name: http, port: 80}]}}`,
	`{apiVersion: v1, kind: Service, metadata: {name: ledger, namespace: other}, spec: {clusterIP: 10.0.1.1, selector: {app: ledger}, ports: [{name: grpc, port: 9000, appProtocol: grpc}]}}`,
	`{apiVersion: v1, kind: Service, metadata: {name: hermit, namespace: lone}, spec: {clusterIP: 10.0.2.1, selector: {app: hermit}, ports: [{name: http, port: 80}]}}`,
	`{apiVersion: v1, kind: Service, metadata: {name: global, namespace: shared, annotations: {weft.dev/export-to: "*"}}, spec: {clusterIP: 10.0.3.1, selector: {app: global}, ports: [{name: http, port: 80}]}}`,
	`{apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, metadata: {name: checkout-1, namespace: shop, labels: {kubernetes.io/service-name: checkout}}, addressType: IPv4, ports: [{name: http, port: 80}], endpoints: [{addresses: [10.1.0.1]}]}`,
	`{apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, metadata: {name: checkout-v2-1, namespace: shop, labels: {kubernetes.io/service-name: checkout-v2}}, addressType: IPv4, ports: [{name: http, port: 80}], endpoints: [{addresses: [10.1.0.2]}]}`,
	`{apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, metadata: {name: ledger-1, namespace: other, labels: {kubernetes.io/service-name: ledger}}, addressType: IPv4, ports: [{name: grpc, port: 9000}], endpoints: [{addresses: [10.1.1.1]}]}`,
	`{apiVersion: mesh.weft.dev/v1alpha1, kind: TrafficSplit, metadata: {name: checkout, namespace: shop, generation: 1}, spec: {rootService: {name: checkout}, backends: [{name: checkout, weight: 90}, {name: checkout-v2, weight: 10}]}}`,
}

// depsProxies: two sidecars in shop (one serves checkout), a sidecar and a
// proxyless gRPC server in other, a sidecar in lone.
var depsProxies = map[string]dataplane.Proxy{
	"web":         {Namespace: "shop", ServiceAccount: "web", Labels: map[string]string{"app": "web"}},
	"checkout":    {Namespace: "shop", ServiceAccount: "checkout", Labels: map[string]string{"app": "checkout"}},
	"ledger":      {Namespace: "other", ServiceAccount: "ledger", Labels: map[string]string{"app": "ledger"}},
	"ledger-grpc": {Namespace: "other", ServiceAccount: "ledger", Labels: map[string]string{"app": "ledger"}, IPs: []string{"10.1.1.1"}, Kind: dataplane.KindGRPC},
	"hermit":      {Namespace: "lone", ServiceAccount: "hermit", Labels: map[string]string{"app": "hermit"}},
}

func depsMesh(t *testing.T, docs []string) *ir.Mesh {
	t.Helper()
	in, err := translator.DecodeInputs([]byte(strings.Join(docs, "\n---\n")))
	if err != nil {
		t.Fatal(err)
	}
	return translator.Translate(in).Mesh
}

// replace returns docs with the document containing old replaced by doc.
func replace(docs []string, old, doc string) []string {
	out := append([]string(nil), docs...)
	for i, d := range out {
		if strings.Contains(d, old) {
			out[i] = doc
			return out
		}
	}
	panic("no document contains " + old)
}

func without(docs []string, old string) []string {
	var out []string
	for _, d := range docs {
		if !strings.Contains(d, old) {
			out = append(out, d)
		}
	}
	return out
}

// TestAffects checks both halves of dependency tracking, with real builds:
// soundness (whenever a proxy's build from the new model differs from its
// build from the old one, in resources, policies or dependencies, affects
// says so) and savings (the proxies it names are exactly the expected
// ones, no more).
func TestAffects(t *testing.T) {
	all := []string{"checkout", "hermit", "ledger", "ledger-grpc", "web"}
	cases := []struct {
		name string
		next []string
		want []string
	}{
		{name: "nothing", next: depsBase},
		{name: "a split's weight", want: []string{"checkout", "web"}, next: replace(depsBase, "kind: TrafficSplit",
			`{apiVersion: mesh.weft.dev/v1alpha1, kind: TrafficSplit, metadata: {name: checkout, namespace: shop, generation: 2}, spec: {rootService: {name: checkout}, backends: [{name: checkout, weight: 80}, {name: checkout-v2, weight: 20}]}}`)},
		{name: "an endpoint of a split's backend", want: []string{"checkout", "web"}, next: replace(depsBase, "name: checkout-v2-1",
			`{apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, metadata: {name: checkout-v2-1, namespace: shop, labels: {kubernetes.io/service-name: checkout-v2}}, addressType: IPv4, ports: [{name: http, port: 80}], endpoints: [{addresses: [10.1.0.9]}]}`)},
		{name: "a new Service in a namespace only its own proxies see (every other sidecar refuses it)", want: all, next: append(depsBase,
			`{apiVersion: v1, kind: Service, metadata: {name: audit, namespace: other}, spec: {clusterIP: 10.0.1.2, ports: [{name: http, port: 80}]}}`)},
		{name: "a new Service exported everywhere", want: all, next: append(depsBase,
			`{apiVersion: v1, kind: Service, metadata: {name: dns, namespace: lone, annotations: {weft.dev/export-to: "*"}}, spec: {clusterIP: 10.0.2.2, ports: [{name: http, port: 80}]}}`)},
		{name: "a Service exported to one more namespace", want: []string{"checkout", "ledger", "ledger-grpc", "web"}, next: replace(depsBase, "name: ledger, namespace: other",
			`{apiVersion: v1, kind: Service, metadata: {name: ledger, namespace: other, annotations: {weft.dev/export-to: shop}}, spec: {clusterIP: 10.0.1.1, selector: {app: ledger}, ports: [{name: grpc, port: 9000, appProtocol: grpc}]}}`)},
		{name: "an AuthPolicy on a Service", want: []string{"ledger", "ledger-grpc"}, next: append(depsBase,
			`{apiVersion: mesh.weft.dev/v1alpha1, kind: AuthPolicy, metadata: {name: no-shop, namespace: other, generation: 1}, spec: {targetRefs: [{group: "", kind: Service, name: ledger}], action: Deny, rules: [{from: {namespaces: [shop]}}]}}`)},
		{name: "an AuthPolicy on a namespace every proxy sees into", want: all, next: append(depsBase,
			`{apiVersion: mesh.weft.dev/v1alpha1, kind: AuthPolicy, metadata: {name: no-lone, namespace: shared, generation: 1}, spec: {targetRefs: [{group: "", kind: Namespace, name: shared}], action: Deny, rules: [{from: {namespaces: [lone]}}]}}`)},
		{name: "a namespace's mTLS mode", want: []string{"ledger", "ledger-grpc"}, next: replace(depsBase, "name: other, annotations: {weft.dev/export-to: \".\"}}",
			`{apiVersion: v1, kind: Namespace, metadata: {name: other, annotations: {weft.dev/export-to: "."}, labels: {weft.dev/mtls-mode: Strict}}}`)},
		{name: "a Service removed (every sidecar refused or held it)", want: []string{"checkout", "hermit", "ledger", "web"}, next: without(depsBase, "name: hermit")},
		{name: "the outbound policy", want: all, next: append(depsBase,
			`{apiVersion: mesh.weft.dev/v1alpha1, kind: MeshConfig, metadata: {name: weft}, spec: {outboundTrafficPolicy: RegistryOnly}}`)},
	}
	old := depsMesh(t, depsBase)
	enc := newEncoder()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			next := depsMesh(t, c.next)
			ch := ir.Diff(old, next)
			var got []string
			for name, p := range depsProxies {
				before, _, err := buildSnapshot(old, p, nil, nil, enc)
				if err != nil {
					t.Fatal(err)
				}
				after, _, err := buildSnapshot(next, p, nil, before, enc)
				if err != nil {
					t.Fatal(err)
				}
				hit := affects(&ch, p, before)
				if after != before && !hit {
					t.Errorf("%s: its configuration changed, but affects says no (change: %+v)", name, ch)
				}
				if hit {
					got = append(got, name)
				}
			}
			sort.Strings(got)
			if strings.Join(got, ",") != strings.Join(c.want, ",") {
				t.Errorf("affected %v, want %v", got, c.want)
			}
		})
	}
}
