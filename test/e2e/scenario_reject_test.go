package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/testing/localmesh"
	"github.com/weftmesh/weft/internal/testing/xdsload"
)

// testRejectedConfiguration is scenario 5: a proxy rejects (NACKs) the
// configuration a policy change produces; the policy ends
// Programmed=False, reason ProxyRejected, quoting the proxy's message; the
// proxy keeps its last good configuration, calls keep flowing, and
// reverting the change programs the policy again.
//
// The rejecting proxy is simulated, in the test process: a Delta xDS
// stream on the controller's authenticated port, with a ServiceAccount
// token, that subscribes and ACKs as Envoy does (internal/testing/xdsload)
// and NACKs cart's route configuration once it splits 50/50. No real proxy
// here rejects anything weft sends: no Envoy binary can run on this
// machine, and gRPC-Go accepts everything weft translates — weft checks
// what gRPC-Go's xDS client refuses (xdsresource's unmarshal_lds/rds/cds/
// eds.go in grpc v1.85: retry num_retries 0 or backoff 0, all-zero or
// over-2^32 weighted clusters, invalid regexes, empty string matchers,
// unsupported LB policies and ring hash functions, least-request
// choice_count < 2, duplicate or zero-weight endpoints, locality weights,
// unknown HTTP filters, TLS fields) before it sends a configuration, and
// gRPC-Go's RBAC takes every matcher weft writes. The real proxyless
// client beside it accepts the change and carries calls throughout.
func testRejectedConfiguration(t *testing.T, s *scenarios) {
	const ns = "reject"
	s.namespace(t, ns)
	s.kubectl(t, serviceYAML(ns, "cart", "cart")+serviceYAML(ns, "cart-v1", "cart,v1")+serviceYAML(ns, "cart-v2", "cart,v2")+
		trafficSplitYAML(ns, "cart", "cart-v1", 80, "cart-v2", 20), "apply", "-f", "-")
	s.start(t, localmesh.Spec{Namespace: ns, Pod: "cart-v1-0", ServiceAccount: "cart", Labels: map[string]string{"app": "cart", "version": "v1"}, Services: []string{"cart", "cart-v1"}})
	s.start(t, localmesh.Spec{Namespace: ns, Pod: "cart-v2-0", ServiceAccount: "cart", Labels: map[string]string{"app": "cart", "version": "v2"}, Services: []string{"cart", "cart-v2"}})
	client := s.start(t, localmesh.Spec{Namespace: ns, Pod: "client-0", ServiceAccount: "client", Labels: map[string]string{"app": "client"},
		Targets: []string{"cart." + ns + ":80"}, Rate: 100, Concurrency: 2})

	const route = "outbound|80||cart.reject.svc.cluster.local"
	const refusal = "simulated Envoy (weft's e2e test): refusing route configuration " + route + ": it splits cart 50/50"
	md, _ := structpb.NewStruct(map[string]any{dataplane.MetaNamespace: ns, dataplane.MetaServiceAccount: "envoy",
		dataplane.MetaLabels: map[string]any{"app": "envoy"}})
	envoy := &xdsload.Proxy{Node: &corev3.Node{Id: "envoy-0." + ns, Metadata: md}, Token: saToken(t, s.m.Env, ns, "envoy"),
		Reject: func(r *discoveryv3.DeltaDiscoveryResponse) string {
			if r.TypeUrl == resourcev3.RouteType && splitsEvenly(t, r, route) {
				return refusal
			}
			return ""
		}}
	ctx, stop := context.WithCancel(s.ctx)
	defer stop()
	go envoy.Keep(ctx, dialSidecarPort(t, s.m.Env, s.m.XDSTLSAddress), time.Second)
	s.waitCondition(t, ns, "trafficsplit/cart", "Programmed")
	good := envoy.Held(resourcev3.RouteType)[route]
	if good == "" {
		t.Fatalf("the simulated Envoy holds no %s", route)
	}
	url := client.MetricsURL()
	start := demoCalls(t, url)

	s.kubectl(t, "", "patch", "-n", ns, "trafficsplit", "cart", "--type=merge", "-p",
		`{"spec":{"backends":[{"name":"cart-v1","weight":50},{"name":"cart-v2","weight":50}]}}`)
	s.waitCondition(t, ns, "trafficsplit/cart", "Programmed=False")
	conds, gen := s.conditions(t, ns, "trafficsplit/cart")
	p := conds["Programmed"]
	if p.Reason != "ProxyRejected" || p.ObservedGeneration != gen || !strings.Contains(p.Message, "Rejected by 1 of") ||
		!strings.Contains(p.Message, "envoy-0."+ns) || !strings.Contains(p.Message, refusal) {
		t.Errorf("Programmed after the rejected change: %+v; want False, ProxyRejected, for generation %d, naming envoy-0.%s and quoting %q", p, gen, ns, refusal)
	}
	t.Logf("Programmed=%s %s: %s", p.Status, p.Reason, p.Message)
	if held := envoy.Held(resourcev3.RouteType)[route]; held != good {
		t.Errorf("the rejecting proxy holds %s version %s; want its last good one, %s", route, held, good)
	}
	during := awaitCalls(t, url, demoCalls(t, url), 300, nil)
	checkAllOK(t, "while a proxy rejects the change", during)
	t.Logf("while a proxy rejects the change: the proxyless client (which accepted it) made %v calls, all OK: %v", during.count(nil), during)

	s.kubectl(t, "", "patch", "-n", ns, "trafficsplit", "cart", "--type=merge", "-p",
		`{"spec":{"backends":[{"name":"cart-v1","weight":80},{"name":"cart-v2","weight":20}]}}`)
	s.waitCondition(t, ns, "trafficsplit/cart", "Programmed")
	// Versions name content: the reverted route is the good one again.
	if held := envoy.Held(resourcev3.RouteType)[route]; held != good {
		t.Errorf("after the revert the simulated Envoy holds %s version %q; want %s (80/20 again)", route, held, good)
	}
	checkAllOK(t, "through the rejected change and its revert", demoCalls(t, url).since(start))
}

// splitsEvenly reports whether a route response carries route
// configuration name with a weighted cluster of weight 50.
func splitsEvenly(t *testing.T, r *discoveryv3.DeltaDiscoveryResponse, name string) bool {
	for _, res := range r.Resources {
		if res.Name != name {
			continue
		}
		var rc routev3.RouteConfiguration
		if err := res.GetResource().UnmarshalTo(&rc); err != nil {
			t.Errorf("%s: %v", name, err)
			return false
		}
		for _, vh := range rc.VirtualHosts {
			for _, rt := range vh.Routes {
				for _, c := range rt.GetRoute().GetWeightedClusters().GetClusters() {
					if c.GetWeight().GetValue() == 50 {
						return true
					}
				}
			}
		}
	}
	return false
}
