package sim_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	wrapperspb "google.golang.org/protobuf/types/known/wrapperspb"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/dataplane/sim"
)

// The sidecar's readiness (15021) and stats (15090) listeners, as the
// kubelet, Prometheus and kubectl port-forward reach them, and as an
// application's call to ANOTHER pod's ports must not (docs/design/183).

// v6onlyYAML: a meshed pod with an IPv6 address only.
const v6onlyYAML = `
apiVersion: v1
kind: Pod
metadata: {name: six-0, namespace: shop, labels: {app: six}}
spec:
  serviceAccountName: six
  initContainers: [{name: weft-proxy, image: envoy}]
  containers: [{name: app, image: six:1}]
status: {podIPs: [{ip: "fd00:1::60"}]}`

// withAdmin gives every sidecar its Envoy admin endpoint: the bootstrap
// binds it to 127.0.0.1:15000 (not an xDS listener, so the simulator
// sees it as a socket of the pod), which the stats listener's admin
// cluster reaches.
func withAdmin(w *sim.World) {
	for _, p := range w.Pods {
		if p.Proxy != nil {
			p.Apps = append(p.Apps, sim.AppSocket{Port: dataplane.AdminPort, Bind: netip.MustParseAddr("127.0.0.1")})
		}
	}
}

func TestProxyPortsReachable(t *testing.T) {
	w := weftWorld(t, "testdata/shop.in.yaml", v6onlyYAML)
	withAdmin(w)
	kubelet, prometheus := netip.MustParseAddr("10.1.0.1"), netip.MustParseAddr("10.1.9.9")
	kubelet6, prometheus6 := netip.MustParseAddr("fd00:1::1"), netip.MustParseAddr("fd00:1::99")
	for _, pod := range []struct {
		key string
		ips []string
	}{
		{"shop/web-0", []string{"10.1.0.10", "[fd00:1::10]"}}, // dual-stack
		{"shop/six-0", []string{"[fd00:1::60]"}},              // IPv6 only
	} {
		for _, ip := range pod.ips {
			from, scraper := kubelet, prometheus
			if strings.HasPrefix(ip, "[") {
				from, scraper = kubelet6, prometheus6
			}
			t.Run(pod.key+" kubelet "+ip, func(t *testing.T) {
				check(t, walk(t, w, sim.Call{FromAddr: from, To: ip + ":15021", Path: "/ready"}),
					sim.Verdict{Kind: sim.Responded, Status: 200})
			})
			t.Run(pod.key+" prometheus "+ip, func(t *testing.T) {
				check(t, walk(t, w, sim.Call{FromAddr: scraper, To: ip + ":15090", Path: dataplane.StatsPath}),
					sim.Verdict{Kind: sim.Delivered, Pod: pod.key, Port: dataplane.AdminPort})
			})
		}
		// kubectl port-forward dials localhost inside the pod's network
		// namespace.
		for _, lo := range []string{"127.0.0.1", "[::1]"} {
			t.Run(pod.key+" port-forward "+lo, func(t *testing.T) {
				check(t, walk(t, w, sim.Call{From: pod.key, To: lo + ":15090", Path: dataplane.StatsPath}),
					sim.Verdict{Kind: sim.Delivered, Pod: pod.key, Port: dataplane.AdminPort})
				check(t, walk(t, w, sim.Call{From: pod.key, To: lo + ":15021", Path: "/ready"}),
					sim.Verdict{Kind: sim.Responded, Status: 200})
			})
		}
	}
}

// TestProxyPortsOfAnotherPod: once the capture listener has
// use_original_dst (per-Service listeners, docs/design/146 proposal 3),
// Envoy hands a captured connection to the listener bound to its
// original destination, else to a wildcard listener on its port. With
// the readiness and stats listeners bound to 0.0.0.0, an application's
// call to another pod's :15090 would be answered by its own sidecar's
// stats (a meshed Prometheus reading its own metrics for every pod,
// istio/istio#36040). Bound to the pod's own addresses, such calls go on
// to the other pod.
func TestProxyPortsOfAnotherPod(t *testing.T) {
	w := weftWorld(t, "testdata/shop.in.yaml", v6onlyYAML)
	withAdmin(w)
	for _, p := range w.Pods {
		if p.Proxy == nil {
			continue
		}
		// weft's listeners, but the capture listener hands connections
		// over by original destination.
		ls := make([]*listenerv3.Listener, len(p.Proxy.Listeners))
		for i, l := range p.Proxy.Listeners {
			ls[i] = l
			if l.GetName() == dataplane.OutboundListener {
				o := proto.Clone(l).(*listenerv3.Listener)
				o.UseOriginalDst = wrapperspb.Bool(true)
				ls[i] = o
			}
		}
		cp := *p.Proxy
		cp.Listeners = ls
		p.Proxy = &cp
	}
	for _, tc := range []struct{ from, to, want string }{
		{"shop/client-0", "10.1.0.10", "shop/web-0"},
		{"shop/client-0", "[fd00:1::10]", "shop/web-0"},
		{"shop/web-0", "[fd00:1::60]", "shop/six-0"},
		{"shop/six-0", "[fd00:1::10]", "shop/web-0"},
	} {
		t.Run(fmt.Sprintf("%s to %s", tc.from, tc.to), func(t *testing.T) {
			r := w.Walk(sim.Call{From: tc.from, To: tc.to + ":15090", Path: dataplane.StatsPath})
			t.Logf("\n  %s\n  => %s", strings.Join(r.Trace, "\n  "), r.Verdict)
			// The caller's sidecar passes it through (no Service has
			// the port), to the other pod's stats listener.
			if r.Verdict.Kind != sim.PassthroughPlaintext || r.Verdict.Pod != tc.want || r.Verdict.Port != dataplane.AdminPort {
				t.Errorf("stats of %s: %s; want it passed through to %s's admin endpoint", tc.to, r.Verdict, tc.want)
			}
			r = w.Walk(sim.Call{From: tc.from, To: tc.to + ":15021", Path: "/ready"})
			t.Logf("\n  %s\n  => %s", strings.Join(r.Trace, "\n  "), r.Verdict)
			answered := ""
			for _, line := range r.Trace {
				if strings.Contains(line, `listener "readiness"`) {
					answered = strings.Fields(line)[0]
				}
			}
			if r.Verdict.Kind != sim.Responded || r.Verdict.Status != 200 || answered != tc.want {
				t.Errorf("readiness of %s: %s answered by %q; want 200 from %s's readiness listener", tc.to, r.Verdict, answered, tc.want)
			}
		})
	}
	// The pod's own addresses and localhost still reach its own sidecar.
	check(t, walk(t, w, sim.Call{From: "shop/client-0", To: "127.0.0.1:15090", Path: dataplane.StatsPath}),
		sim.Verdict{Kind: sim.Delivered, Pod: "shop/client-0", Port: dataplane.AdminPort})
}
