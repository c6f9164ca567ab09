package sim_test

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/dataplane/sim"
)

// kafka: a headless Service (a StatefulSet) in the Strict namespace vault,
// two meshed brokers, and a TCP client in shop.
const kafka = `apiVersion: v1
kind: Service
metadata: {name: kafka, namespace: vault}
spec:
  clusterIP: None
  selector: {app: kafka}
  ports: [{name: tcp-kafka, port: 9092}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: kafka-1, namespace: vault, labels: {kubernetes.io/service-name: kafka}}
addressType: IPv4
ports: [{name: tcp-kafka, port: 9092}]
endpoints:
%s---
apiVersion: v1
kind: Pod
metadata: {name: kafka-0, namespace: vault, labels: {app: kafka}}
spec:
  serviceAccountName: kafka
  initContainers: [{name: weft-proxy, image: envoy}]
  containers: [{name: app, image: kafka:3}]
status: {podIPs: [{ip: 10.2.0.20}]}
---
apiVersion: v1
kind: Pod
metadata: {name: kafka-1, namespace: vault, labels: {app: kafka}}
spec:
  serviceAccountName: kafka
  initContainers: [{name: weft-proxy, image: envoy}]
  containers: [{name: app, image: kafka:3}]
status: {podIPs: [{ip: 10.2.0.21}]}`

func kafkaEndpoints(pods ...string) string {
	var b strings.Builder
	for _, p := range pods {
		ip := map[string]string{"kafka-0": "10.2.0.20", "kafka-1": "10.2.0.21"}[p]
		b.WriteString("- addresses: [" + ip + "]\n  targetRef: {kind: Pod, name: " + p + ", namespace: vault}\n")
	}
	return b.String()
}

// 12g: a headless Service's pods are reached at their own addresses; a
// meshed caller must originate mesh mTLS to a meshed pod, so a Strict
// StatefulSet keeps working and the server sees the caller's identity.
func TestDefect12g_HeadlessIsMeshed(t *testing.T) {
	w := weftWorldWith(t, nil, strings.Replace(kafka, "%s", kafkaEndpoints("kafka-0", "kafka-1"), 1))
	for _, to := range []string{"10.2.0.20:9092", "10.2.0.21:9092"} {
		got := walk(t, w, sim.Call{From: "shop/client-0", To: to, Protocol: sim.TCP})
		check(t, got, sim.Verdict{Kind: sim.Delivered, Port: 9092, MTLS: true, ClientIdentity: clientID})
	}
}

// 12m: a long-lived TCP connection to a headless Service's pod survives an
// endpoint change of another pod: the filter chain it runs on keeps its
// name, match and filters (Envoy drains the connections of a chain whose
// configuration changes).
func TestDefect12m_HeadlessChainsStableUnderEndpointChanges(t *testing.T) {
	before := weftWorldWith(t, nil, strings.Replace(kafka, "%s", kafkaEndpoints("kafka-0"), 1))
	after := weftWorldWith(t, nil, strings.Replace(kafka, "%s", kafkaEndpoints("kafka-0", "kafka-1"), 1))
	c := sim.Call{From: "shop/client-0", To: "10.2.0.20:9092", Protocol: sim.TCP}
	check(t, walk(t, before, c), sim.Verdict{Kind: sim.Delivered, Pod: "vault/kafka-0", Port: 9092})
	a, b := outboundChain(t, before, c), outboundChain(t, after, c)
	if a.GetName() != b.GetName() || !proto.Equal(a, b) {
		t.Errorf("kafka-1 joining changed the chain kafka-0's connections run on:\nbefore %v\nafter  %v", a, b)
	}
}

// outboundChain is the filter chain the caller's sidecar picks for a
// plaintext TCP connection of c (to an address:port): on the listener
// the capture listener hands it to by use_original_dst (one at exactly
// that address, docs/design/182), else on the capture listener.
func outboundChain(t *testing.T, w *sim.World, c sim.Call) *listenerv3.FilterChain {
	t.Helper()
	p := podOf(t, w, c.From)
	to := netip.MustParseAddrPort(c.To)
	var capture, handed *listenerv3.Listener
	for _, l := range p.Proxy.Listeners {
		sa := l.GetAddress().GetSocketAddress()
		switch {
		case l.GetName() == "outbound":
			capture = l
		case sa.GetAddress() == to.Addr().String() && sa.GetPortValue() == uint32(to.Port()):
			handed = l
		}
	}
	if capture == nil {
		t.Fatalf("%s has no outbound listener", c.From)
	}
	l := capture
	if handed != nil {
		l = handed
	}
	fc, err := sim.MatchFilterChain(l, sim.Seen{Local: to, Remote: netip.AddrPortFrom(p.IPs[0], 40000), TransportProtocol: "raw_buffer"})
	if err != nil {
		t.Fatal(err)
	}
	if fc == nil || fc == l.GetDefaultFilterChain() {
		t.Fatalf("%s -> %s takes no Service's chain", c.From, c.To)
	}
	return fc
}

// 12m, split part: a TCP TrafficSplit's weights live in the tcp_proxy of
// the Service's filter chain, so a weight change changes the chain and
// Envoy drains every connection on it — a canary step resets every
// long-lived connection to the Service. Fixed: the chain names one EDS
// cluster per split whose localities carry the weights (docs/design/058).
func TestDefect12m_TCPSplitChainStableUnderWeightChanges(t *testing.T) {

	data, err := os.ReadFile("../../translator/envoy/testdata/policies.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	const weights = "backends: [{name: cache, weight: 3}, {name: cache-next, weight: 1}]"
	world := func(s string) *sim.World {
		path := filepath.Join(t.TempDir(), "mesh.yaml")
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return weftWorld(t, path)
	}
	before := world(string(data))
	after := world(strings.Replace(string(data), weights, "backends: [{name: cache, weight: 1}, {name: cache-next, weight: 1}]", 1))
	c := sim.Call{From: "bank/teller-0", To: "10.0.1.20:6379", Protocol: sim.TCP}
	a, b := outboundChain(t, before, c), outboundChain(t, after, c)
	if a.GetName() != b.GetName() || !proto.Equal(a, b) {
		t.Errorf("a weight change changed the chain the split's connections run on:\nbefore %v\nafter  %v", a, b)
	}
	// The new weights still take effect, for new connections.
	for w, want := range map[*sim.World]string{
		before: "outbound|6379||cache.bank.svc.cluster.local=3 outbound|6379||cache-next.bank.svc.cluster.local=1",
		after:  "outbound|6379||cache.bank.svc.cluster.local=1 outbound|6379||cache-next.bank.svc.cluster.local=1",
	} {
		got := walk(t, w, c)
		if got.Kind != sim.Delivered || strings.Join(got.Split, " ") != want {
			t.Errorf("verdict %s, want delivered with split %s", got, want)
		}
	}
}
