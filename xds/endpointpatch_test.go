package xds

import (
	"bytes"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/ir"
)

// patchBase: in shop, web and checkout (meshed pods), api (a named target
// port, served by the api proxy) and db (headless, TCP); in shared, global
// (exported everywhere, meshed). lone has only its own hermit, so its proxy
// sees global through the export alone.
var patchBase = []string{
	`{apiVersion: v1, kind: Namespace, metadata: {name: shop, annotations: {weft.dev/export-to: "."}}}`,
	`{apiVersion: v1, kind: Namespace, metadata: {name: lone, annotations: {weft.dev/export-to: "."}}}`,
	`{apiVersion: v1, kind: Namespace, metadata: {name: shared, annotations: {weft.dev/export-to: "."}}}`,
	`{apiVersion: v1, kind: Service, metadata: {name: web, namespace: shop}, spec: {clusterIP: 10.0.0.3, selector: {app: web}, ports: [{name: http, port: 80}]}}`,
	`{apiVersion: v1, kind: Service, metadata: {name: checkout, namespace: shop}, spec: {clusterIP: 10.0.0.1, selector: {app: checkout}, ports: [{name: http, port: 80}, {name: grpc, port: 9000, appProtocol: grpc}]}}`,
	`{apiVersion: v1, kind: Service, metadata: {name: api, namespace: shop}, spec: {clusterIP: 10.0.0.4, selector: {app: api}, ports: [{name: http, port: 80, targetPort: http-api}]}}`,
	`{apiVersion: v1, kind: Service, metadata: {name: db, namespace: shop}, spec: {clusterIP: None, selector: {app: db}, ports: [{name: tcp, port: 5432}]}}`,
	`{apiVersion: v1, kind: Service, metadata: {name: hermit, namespace: lone}, spec: {clusterIP: 10.0.2.1, selector: {app: hermit}, ports: [{name: http, port: 80}]}}`,
	`{apiVersion: v1, kind: Service, metadata: {name: global, namespace: shared, annotations: {weft.dev/export-to: "*"}}, spec: {clusterIP: 10.0.3.1, selector: {app: global}, ports: [{name: http, port: 80, appProtocol: http2}]}}`,
	`{apiVersion: v1, kind: Pod, metadata: {name: web-0, namespace: shop}, spec: {serviceAccountName: web, initContainers: [{name: weft-proxy, image: x}], containers: [{name: app, image: x}]}}`,
	`{apiVersion: v1, kind: Pod, metadata: {name: checkout-a, namespace: shop}, spec: {serviceAccountName: checkout, initContainers: [{name: weft-proxy, image: x}], containers: [{name: app, image: x}]}}`,
	`{apiVersion: v1, kind: Pod, metadata: {name: checkout-b, namespace: shop}, spec: {serviceAccountName: checkout, initContainers: [{name: weft-proxy, image: x}], containers: [{name: app, image: x}]}}`,
	`{apiVersion: v1, kind: Pod, metadata: {name: global-0, namespace: shared}, spec: {serviceAccountName: global, initContainers: [{name: weft-proxy, image: x}], containers: [{name: app, image: x}]}}`,
	`{apiVersion: v1, kind: Pod, metadata: {name: global-canary, namespace: shared}, spec: {serviceAccountName: global-canary, initContainers: [{name: weft-proxy, image: x}], containers: [{name: app, image: x}]}}`,
	webSlice(`[{addresses: [10.1.0.3], targetRef: {kind: Pod, name: web-0, namespace: shop}}]`),
	checkoutSlice(`[{addresses: [10.1.0.1], targetRef: {kind: Pod, name: checkout-a, namespace: shop}}, {addresses: [10.1.0.2], targetRef: {kind: Pod, name: checkout-b, namespace: shop}}]`),
	apiSlice(8080),
	dbSlice(`[{addresses: [10.1.0.6]}]`),
	globalSlice(`[{addresses: [10.1.3.1], targetRef: {kind: Pod, name: global-0, namespace: shared}}]`),
}

func webSlice(eps string) string {
	return `{apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}, addressType: IPv4, ports: [{name: http, port: 80}], endpoints: ` + eps + `}`
}

func checkoutSlice(eps string) string {
	return `{apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, metadata: {name: checkout-1, namespace: shop, labels: {kubernetes.io/service-name: checkout}}, addressType: IPv4, ports: [{name: http, port: 80}, {name: grpc, port: 9000}], endpoints: ` + eps + `}`
}

func apiSlice(port int) string {
	return fmt.Sprintf(`{apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, metadata: {name: api-1, namespace: shop, labels: {kubernetes.io/service-name: api}}, addressType: IPv4, ports: [{name: http, port: %d}], endpoints: [{addresses: [10.1.0.5]}, {addresses: [10.1.0.7]}]}`, port)
}

func dbSlice(eps string) string {
	return `{apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, metadata: {name: db-1, namespace: shop, labels: {kubernetes.io/service-name: db}}, addressType: IPv4, ports: [{name: tcp, port: 5432}], endpoints: ` + eps + `}`
}

func globalSlice(eps string) string {
	return `{apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, metadata: {name: global-1, namespace: shared, labels: {kubernetes.io/service-name: global}}, addressType: IPv4, ports: [{name: http, port: 80}], endpoints: ` + eps + `}`
}

// patchProxies: sidecars in shop (one serves checkout, one serves api on
// its named port), a proxyless gRPC client in shop, and a sidecar in lone.
var patchProxies = map[string]dataplane.Proxy{
	"web":       {Namespace: "shop", ServiceAccount: "web", Labels: map[string]string{"app": "web"}, IPs: []string{"10.1.0.3"}},
	"checkout":  {Namespace: "shop", ServiceAccount: "checkout", Labels: map[string]string{"app": "checkout"}, IPs: []string{"10.1.0.1"}},
	"api":       {Namespace: "shop", ServiceAccount: "api", Labels: map[string]string{"app": "api"}, IPs: []string{"10.1.0.5"}},
	"shop-grpc": {Namespace: "shop", ServiceAccount: "client", Labels: map[string]string{"app": "client"}, IPs: []string{"10.1.0.9"}, Kind: dataplane.KindGRPC},
	"hermit":    {Namespace: "lone", ServiceAccount: "hermit", Labels: map[string]string{"app": "hermit"}},
}

// TestEndpointPatchEqualsFullBuild: for each endpoint-only change, every
// group's configuration after ADS.UpdateEndpoints is byte for byte what a
// full build from a full translation of the changed cluster gives, with the
// same policies and dependencies; the groups that could be patched were
// (no build), their untouched resources kept their encodings, and the
// others were built.
func TestEndpointPatchEqualsFullBuild(t *testing.T) {
	cases := []struct {
		name    string
		service string // namespace/name
		next    []string
		// rebuilt: groups the change reaches beyond endpoints and TLS
		// (or that cannot be patched); every other dependent is patched.
		rebuilt []string
		// changedCDS: groups whose clusters change (upstream TLS).
		changedCDS []string
	}{
		{name: "an endpoint moves", service: "shop/web", next: replace(patchBase, "name: web-1,",
			webSlice(`[{addresses: [10.1.0.13], targetRef: {kind: Pod, name: web-0, namespace: shop}}]`))},
		{name: "an endpoint is not ready", service: "shop/checkout", next: replace(patchBase, "name: checkout-1,",
			checkoutSlice(`[{addresses: [10.1.0.1], targetRef: {kind: Pod, name: checkout-a, namespace: shop}}, {addresses: [10.1.0.2], conditions: {ready: false}, targetRef: {kind: Pod, name: checkout-b, namespace: shop}}]`))},
		{name: "endpoints go to zero", service: "shop/checkout", next: replace(patchBase, "name: checkout-1,", checkoutSlice(`[]`)),
			changedCDS: []string{"api", "checkout", "shop-grpc", "web"}},
		{name: "a new identity behind a Service seen only through its export", service: "shared/global", next: replace(patchBase, "name: global-1,",
			globalSlice(`[{addresses: [10.1.3.1], targetRef: {kind: Pod, name: global-0, namespace: shared}}, {addresses: [10.1.3.2], targetRef: {kind: Pod, name: global-canary, namespace: shared}}]`)),
			changedCDS: []string{"api", "checkout", "hermit", "shop-grpc", "web"}},
		{name: "a named target port moves to a new port", service: "shop/api", next: replace(patchBase, "name: api-1,", apiSlice(9090)),
			rebuilt: []string{"api"}},
		{name: "a headless Service's endpoint moves", service: "shop/db", next: replace(patchBase, "name: db-1,", dbSlice(`[{addresses: [10.1.0.16]}]`)),
			rebuilt: []string{"api", "checkout", "web"}},
		{name: "a headless Service's endpoint turns unready", service: "shop/db", next: replace(patchBase, "name: db-1,", dbSlice(`[{addresses: [10.1.0.6], conditions: {ready: false}}]`))},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ns, name, _ := strings.Cut(c.service, "/")
			key := ir.ServiceKey{Namespace: ns, Name: name}
			before := depsMesh(t, patchBase)
			in := decode(t, c.next)
			next := translator.UpdateEndpoints(before, key, slicesOf(in, key), podLookup(in))
			full := translator.Translate(in).Mesh

			a, groups := patchADS(t, before)
			old := map[string]*snapshot{}
			for n, g := range groups {
				old[n] = g.snap.Load()
			}
			builds, patches := a.Builds(), a.Patches()
			a.UpdateEndpoints(next, []ir.ServiceKey{key}, time.Now())

			var rebuilt, changedCDS, patched []string
			for n, g := range groups {
				got := g.snap.Load()
				want, _, err := buildSnapshot(full, g.proxy, nil, nil, newEncoder())
				if err != nil {
					t.Fatal(err)
				}
				compareSnapshots(t, n, got, want)
				if !old[n].deps[key] {
					if got != old[n] {
						t.Errorf("%s does not depend on %s, but its snapshot was replaced", n, key)
					}
					continue
				}
				if got.generation != old[n].generation && got.generation != old[n].generation+1 {
					t.Errorf("%s: generation %d after %d", n, got.generation, old[n].generation)
				}
				if got.resources[clustersAt][ir.ClusterName(key, 80)] != old[n].resources[clustersAt][ir.ClusterName(key, 80)] {
					changedCDS = append(changedCDS, n)
				}
				if kept(old[n], got) {
					patched = append(patched, n)
				} else {
					rebuilt = append(rebuilt, n)
				}
			}
			sort.Strings(rebuilt)
			sort.Strings(changedCDS)
			if fmt.Sprint(rebuilt) != fmt.Sprint(nonNil(c.rebuilt)) {
				t.Errorf("groups built again %v, want %v (patched: %v)", rebuilt, nonNil(c.rebuilt), patched)
			}
			if fmt.Sprint(changedCDS) != fmt.Sprint(nonNil(c.changedCDS)) {
				t.Errorf("groups whose cluster of %s changed: %v, want %v", key, changedCDS, nonNil(c.changedCDS))
			}
			if got := a.Builds() - builds; got != uint64(len(c.rebuilt)) {
				t.Errorf("%d builds, want %d", got, len(c.rebuilt))
			}
			if got := a.Patches() - patches; got != uint64(len(patched)) {
				t.Errorf("%d patches, want %d", got, len(patched))
			}
		})
	}
}

// TestEndpointPatchFallsBack: a model handed to UpdateEndpoints that
// changed more than endpoints (a new Service port: a cluster must appear),
// or names a Service that was removed, is built in full for the groups
// that depend on it, and their configuration is what a full build gives.
func TestEndpointPatchFallsBack(t *testing.T) {
	cases := []struct {
		name, service string
		next          []string
	}{
		{name: "a new Service port", service: "shop/web", next: replace(replace(patchBase, "name: web, namespace: shop",
			`{apiVersion: v1, kind: Service, metadata: {name: web, namespace: shop}, spec: {clusterIP: 10.0.0.3, selector: {app: web}, ports: [{name: http, port: 80}, {name: admin, port: 8081}]}}`),
			"name: web-1,", `{apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}, addressType: IPv4, ports: [{name: http, port: 80}, {name: admin, port: 8081}], endpoints: [{addresses: [10.1.0.3], targetRef: {kind: Pod, name: web-0, namespace: shop}}]}`)},
		{name: "a removed Service", service: "shop/checkout", next: without(without(patchBase, "name: checkout, namespace: shop"), "name: checkout-1,")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ns, name, _ := strings.Cut(c.service, "/")
			key := ir.ServiceKey{Namespace: ns, Name: name}
			before := depsMesh(t, patchBase)
			full := depsMesh(t, c.next)
			a, groups := patchADS(t, before)
			dependents := 0
			for _, g := range groups {
				if g.snap.Load().deps[key] {
					dependents++
				}
			}
			// Both changes also change how the sidecars that do not hold
			// the Service refuse it (envoy.SameRefusal): hermit's group
			// too is built again.
			dependents++
			builds, patches := a.Builds(), a.Patches()
			a.UpdateEndpoints(full, []ir.ServiceKey{key}, time.Now())
			if got := a.Builds() - builds; got != uint64(dependents) || a.Patches() != patches {
				t.Errorf("%d builds and %d patches, want %d builds", got, a.Patches()-patches, dependents)
			}
			for n, g := range groups {
				want, _, err := buildSnapshot(full, g.proxy, nil, nil, newEncoder())
				if err != nil {
					t.Fatal(err)
				}
				compareSnapshots(t, n, g.snap.Load(), want)
			}
		})
	}
}

// TestEndpointPatchEncodesOnce: the new endpoints of a Service that every
// group holds are one encoding, shared by every group's snapshot.
func TestEndpointPatchEncodesOnce(t *testing.T) {
	key := ir.ServiceKey{Namespace: "shared", Name: "global"}
	in := decode(t, replace(patchBase, "name: global-1,", globalSlice(`[{addresses: [10.1.3.7], targetRef: {kind: Pod, name: global-0, namespace: shared}}]`)))
	before := depsMesh(t, patchBase)
	a, groups := patchADS(t, before)
	a.UpdateEndpoints(translator.UpdateEndpoints(before, key, slicesOf(in, key), podLookup(in)), []ir.ServiceKey{key}, time.Now())
	name := ir.ClusterName(key, 80)
	var first *encoded
	for n, g := range groups {
		e := g.snap.Load().resources[endpointsAt][name]
		if e == nil || !strings.Contains(string(e.value()), "10.1.3.7") {
			t.Fatalf("%s does not hold the new endpoints of %s", n, key)
		}
		if first == nil {
			first = e
		} else if e != first {
			t.Errorf("%s holds its own encoding of %s's endpoints", n, key)
		}
	}
}

// patchADS is an ADS serving before, with one group per patchProxies entry.
func patchADS(t *testing.T, before *ir.Mesh) (*ADS, map[string]*group) {
	t.Helper()
	a := NewADS(logr.Discard())
	a.Update(before, time.Now())
	groups := map[string]*group{}
	for n, p := range patchProxies {
		c := a.newConn(true, NodeInfo{ID: n + "." + p.Namespace, Proxy: p})
		a.join(c)
		t.Cleanup(func() { a.leave(c) })
		groups[n] = c.group
		if c.group.snap.Load() == nil {
			t.Fatalf("%s: no configuration", n)
		}
	}
	return a, groups
}

// compareSnapshots fails unless got and want hold the same resources, byte
// for byte, the same policies and the same dependencies.
func compareSnapshots(t *testing.T, name string, got, want *snapshot) {
	t.Helper()
	for _, typ := range pushOrder {
		g, w := got.resources.of(typ), want.resources.of(typ)
		for n, e := range w {
			if x := g[n]; x == nil {
				t.Errorf("%s: %s %s missing", name, shortType(typ), n)
			} else if !bytes.Equal(x.value(), e.value()) || x.version() != e.version() {
				t.Errorf("%s: %s %s differs from a full build", name, shortType(typ), n)
			}
		}
		for n := range g {
			if w[n] == nil {
				t.Errorf("%s: %s %s is not in a full build", name, shortType(typ), n)
			}
		}
	}
	if !samePolicies(got.policies, want.policies) || !sameSet(got.deps, want.deps) || !sameSet(got.nsDeps, want.nsDeps) {
		t.Errorf("%s: policies or dependencies differ from a full build: %v %v / %v %v", name, got.policies, got.deps, want.policies, want.deps)
	}
}

// kept says whether next keeps every listener, route and secret of prev as
// the same encoding, and the very same policy and dependency records: what
// a patch does, and a build does not (it makes new records).
func kept(prev, next *snapshot) bool {
	for _, typ := range []string{resourcev3.ListenerType, resourcev3.RouteType, resourcev3.SecretType} {
		for n, e := range prev.resources.of(typ) {
			if next.resources.of(typ)[n] != e {
				return false
			}
		}
	}
	// A build that changed something makes new dependency maps; a patch
	// shares them.
	return reflect.ValueOf(prev.deps).Pointer() == reflect.ValueOf(next.deps).Pointer()
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func decode(t *testing.T, docs []string) *translator.Inputs {
	t.Helper()
	in, err := translator.DecodeInputs([]byte(strings.Join(docs, "\n---\n")))
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func slicesOf(in *translator.Inputs, key ir.ServiceKey) []*discoveryv1.EndpointSlice {
	var out []*discoveryv1.EndpointSlice
	for _, s := range in.EndpointSlices {
		if s.Namespace == key.Namespace && s.Labels[discoveryv1.LabelServiceName] == key.Name {
			out = append(out, s)
		}
	}
	return out
}

func podLookup(in *translator.Inputs) translator.PodLookup {
	return func(ns, name string) *corev1.Pod {
		for _, p := range in.Pods {
			if p.Namespace == ns && p.Name == name {
				return p
			}
		}
		return nil
	}
}

// 12m: a TCP split's assignment holds every backend's endpoints under the
// split's weights (envoy.IsSplitCluster). An endpoint change of a backend
// must reach it: the groups that hold the split are built again, and end
// up byte for byte where a full build puts them; their listener keeps its
// encoding (a backend's endpoints are not in the chain).
func TestEndpointPatchRebuildsTCPSplits(t *testing.T) {
	storeSlice := func(name, eps string) string {
		return `{apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, metadata: {name: ` + name + `-1, namespace: lone, labels: {kubernetes.io/service-name: ` + name + `}}, addressType: IPv4, ports: [{name: tcp, port: 6379}], endpoints: ` + eps + `}`
	}
	base := append(append([]string{}, patchBase...),
		`{apiVersion: v1, kind: Service, metadata: {name: store, namespace: lone}, spec: {clusterIP: 10.0.2.5, selector: {app: store}, ports: [{name: tcp, port: 6379}]}}`,
		`{apiVersion: v1, kind: Service, metadata: {name: store-next, namespace: lone}, spec: {clusterIP: 10.0.2.6, selector: {app: store-next}, ports: [{name: tcp, port: 6379}]}}`,
		storeSlice("store", `[{addresses: [10.1.2.5]}]`),
		storeSlice("store-next", `[{addresses: [10.1.2.6]}]`),
		`{apiVersion: mesh.weft.dev/v1alpha1, kind: TrafficSplit, metadata: {name: store, namespace: lone, generation: 1}, spec: {rootService: {name: store}, backends: [{name: store, weight: 3}, {name: store-next, weight: 1}]}}`,
	)
	key := ir.ServiceKey{Namespace: "lone", Name: "store-next"}
	next := replace(base, "name: store-next-1,", storeSlice("store-next", `[{addresses: [10.1.2.16]}]`))
	before := depsMesh(t, base)
	in := decode(t, next)
	updated := translator.UpdateEndpoints(before, key, slicesOf(in, key), podLookup(in))
	full := translator.Translate(in).Mesh

	a, groups := patchADS(t, before)
	old := groups["hermit"].snap.Load()
	if old.resources[endpointsAt]["outbound|6379|tcp-split|store.lone.svc.cluster.local"] == nil {
		t.Fatalf("hermit holds no split assignment: %v", old.resources[endpointsAt])
	}
	a.UpdateEndpoints(updated, []ir.ServiceKey{key}, time.Now())
	got := groups["hermit"].snap.Load()
	want, _, err := buildSnapshot(full, groups["hermit"].proxy, nil, nil, newEncoder())
	if err != nil {
		t.Fatal(err)
	}
	compareSnapshots(t, "hermit", got, want)
	if got.resources[endpointsAt]["outbound|6379|tcp-split|store.lone.svc.cluster.local"] == old.resources[endpointsAt]["outbound|6379|tcp-split|store.lone.svc.cluster.local"] {
		t.Error("the split's assignment was not replaced")
	}
	if !bytes.Equal(got.resources[listenersAt]["outbound"].value(), old.resources[listenersAt]["outbound"].value()) {
		t.Error("a backend's endpoint change changed the outbound listener")
	}
}
