package sim_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/weftmesh/weft/dataplane/sim"
)

// docs/design/182: the capture listener (0.0.0.0:15001) sets
// use_original_dst and hands a connection to a Service's cluster IP to
// that Service port's own listener (bind_to_port false, at the cluster IP
// and port), which holds the chain the capture listener used to hold for
// it. What a call does must not change: the same chain, the same cluster,
// the same verdict.

// handedTo is the listener the caller's capture listener handed c to by
// use_original_dst, nil when it kept the connection.
func handedTo(t *testing.T, w *sim.World, c sim.Call) *listenerv3.Listener {
	t.Helper()
	const mark = `envoy: use_original_dst hands it to listener "`
	for _, line := range w.Walk(c).Trace {
		if !strings.HasPrefix(line, c.From+" ") {
			continue
		}
		if i := strings.Index(line, mark); i >= 0 {
			name := line[i+len(mark):]
			name = name[:strings.Index(name, `"`)]
			for _, l := range podOf(t, w, c.From).Proxy.Listeners {
				if l.GetName() == name {
					return l
				}
			}
			t.Fatalf("the trace names listener %q, which %s does not have", name, c.From)
		}
	}
	return nil
}

// serviceListenerFor checks that c was handed to a listener that binds no
// socket and whose address is exactly the dialled address.
func serviceListenerFor(t *testing.T, w *sim.World, c sim.Call) *listenerv3.Listener {
	t.Helper()
	l := handedTo(t, w, c)
	if l == nil {
		t.Errorf("%s -> %s: the capture listener kept the connection; want it handed to the Service port's listener", c.From, c.To)
		return nil
	}
	sa := l.GetAddress().GetSocketAddress()
	to := netip.MustParseAddrPort(c.To)
	if a, err := netip.ParseAddr(sa.GetAddress()); err != nil || a != to.Addr() || sa.GetPortValue() != uint32(to.Port()) {
		t.Errorf("%s -> %s: handed to listener %q at %s:%d; want one at the dialled address", c.From, c.To, l.GetName(), sa.GetAddress(), sa.GetPortValue())
	}
	if l.GetBindToPort() == nil || l.GetBindToPort().GetValue() {
		t.Errorf("listener %q binds a socket; a Service's listener must only take hand-offs (bind_to_port false)", l.GetName())
	}
	return l
}

func TestServiceListenersTakeTheirAddresses(t *testing.T) {
	w := weftWorld(t, "testdata/shop.in.yaml")
	web := sim.Verdict{Kind: sim.Delivered, Pod: "shop/web-0", Port: 8080, MTLS: true, ClientIdentity: clientID}
	// HTTP to each family's cluster IP of dual-stack web: its own
	// listener, the same chain and verdict as before.
	for _, tc := range []struct {
		call           sim.Call
		chain, cluster string
	}{
		{sim.Call{From: "shop/client-0", To: "10.96.0.10:80", Host: "web.shop"}, "outbound|http|80||web.shop.svc.cluster.local", "outbound|80||web.shop.svc.cluster.local"},
		{sim.Call{From: "shop/client-0", To: "[fd00:96::10]:80", Host: "web.shop"}, "outbound|http|80|ipv6|web.shop.svc.cluster.local", "outbound|80|ipv6|web.shop.svc.cluster.local"},
		{sim.Call{From: "shop/client-0", To: "10.96.0.10:80", Protocol: sim.GRPC, Path: "/pkg.Svc/Get"}, "outbound|http|80||web.shop.svc.cluster.local", "outbound|80||web.shop.svc.cluster.local"},
	} {
		got := walk(t, w, tc.call)
		check(t, got, web)
		if got.Upstream == nil || got.Upstream.Cluster != tc.cluster {
			t.Errorf("%s: first cluster %+v, want %s", tc.call.To, got.Upstream, tc.cluster)
		}
		serviceListenerFor(t, w, tc.call)
		if got := chainOf(t, w, tc.call); got != tc.chain {
			t.Errorf("%s took chain %q, want %q", tc.call.To, got, tc.chain)
		}
	}
	// The two families' listeners are two listeners.
	a := handedTo(t, w, sim.Call{From: "shop/client-0", To: "10.96.0.10:80"})
	b := handedTo(t, w, sim.Call{From: "shop/client-0", To: "[fd00:96::10]:80"})
	if a == nil || b == nil || a.GetName() == b.GetName() {
		t.Errorf("web's IPv4 and IPv6 cluster IPs were not handed to two listeners")
	}
	// A single-stack Service in another namespace: its own listener too.
	secrets := sim.Call{From: "shop/client-0", To: "10.96.1.10:80", Host: "secrets.vault"}
	check(t, walk(t, w, secrets), sim.Verdict{Kind: sim.Delivered, Pod: "vault/secrets-0", Port: 8080, MTLS: true, ClientIdentity: clientID})
	serviceListenerFor(t, w, secrets)

	// A TCP Service, server-first included: its own listener, no listener
	// filter holding the server's greeting, both families.
	for _, c := range []sim.Call{
		{From: "shop/client-0", To: "10.96.0.20:3306", Protocol: sim.ServerFirst},
		{From: "shop/legacy-0", To: "10.96.0.20:3306", Protocol: sim.ServerFirst},
	} {
		got := walk(t, w, c)
		check(t, got, sim.Verdict{Kind: sim.Delivered, Pod: "shop/mysql-0", Port: 3306})
		if c.From == "shop/client-0" && (got.Upstream == nil || got.Upstream.Cluster != "outbound|3306||mysql.shop.svc.cluster.local") {
			t.Errorf("%s -> %s: first cluster %+v, want mysql's", c.From, c.To, got.Upstream)
		}
		if c.From == "shop/client-0" {
			if l := serviceListenerFor(t, w, c); l != nil && len(l.GetListenerFilters()) > 0 {
				t.Errorf("TCP listener %q runs listener filters: a server-first client would wait for them", l.GetName())
			}
			if !got.MTLS {
				t.Errorf("%s -> %s: not mesh mTLS", c.From, c.To)
			}
		}
	}
	// mysql's IPv6 cluster IP has a listener of its own too (to its IPv6
	// cluster, which has no endpoint here).
	if l := serviceListenerFor(t, w, sim.Call{From: "shop/client-0", To: "[fd00:96::20]:3306", Protocol: sim.TCP}); l != nil && !strings.Contains(l.GetName(), "ipv6") {
		t.Errorf("mysql's IPv6 address was handed to %q", l.GetName())
	}
	// Addresses that are no Service's stay on the capture listener: the
	// port's Host-routed chain for HTTP, passthrough for the rest.
	for _, c := range []sim.Call{
		{From: "shop/client-0", To: "192.0.2.7:80", Host: "www.example.com"},
		{From: "shop/client-0", To: "203.0.113.5:5000", Protocol: sim.TCP},
		{From: "shop/client-0", To: "10.1.0.50:80"},
	} {
		if l := handedTo(t, w, c); l != nil {
			t.Errorf("%s -> %s was handed to listener %q; want the capture listener to keep it", c.From, c.To, l.GetName())
		}
	}
}

// Bytes that are not HTTP to an HTTP Service's address and port: what the
// capture listener's default chain does (passthrough, or the black hole
// under RegistryOnly), on the Service's listener now.
func TestServiceListenerNonHTTPBytes(t *testing.T) {
	for _, tc := range []struct {
		name string
		w    *sim.World
		want sim.Kind
	}{
		// passthrough: on to web-0 in plaintext, whatever web-0 then
		// makes of it (its inbound HTTP chain resets raw TCP)
		{"AllowAny", weftWorld(t, "testdata/shop.in.yaml"), ""},
		{"RegistryOnly", weftWorldWith(t, nil, `apiVersion: mesh.weft.dev/v1alpha1
kind: MeshConfig
metadata: {name: weft}
spec: {outboundTrafficPolicy: RegistryOnly}`), sim.Blackholed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, c := range []sim.Call{
				{From: "shop/client-0", To: "10.96.0.10:80", Protocol: sim.TCP},
				{From: "shop/client-0", To: "[fd00:96::10]:80", Protocol: sim.TCP},
				{From: "shop/client-0", To: "10.96.0.10:80", Protocol: sim.TCP, TLS: &sim.AppTLS{SNI: "web.shop", ALPN: []string{"h2"}}},
				// A server-first client waits out the capture listener's
				// http_inspector on port 80, then goes on as TCP
				// (TestServerFirstWaitsOneInspector).
				{From: "shop/client-0", To: "10.96.0.10:80", Protocol: sim.ServerFirst},
			} {
				got := walk(t, tc.w, c)
				if (tc.want != "" && got.Kind != tc.want) || got.MTLS {
					t.Errorf("%s -> %s (%s): %s; want %s", c.From, c.To, c.Protocol, got, tc.want)
				}
				if chain := chainOf(t, tc.w, c); chain != "outbound|unknown" {
					t.Errorf("%s -> %s (%s) took chain %q, want the default chain", c.From, c.To, c.Protocol, chain)
				}
				serviceListenerFor(t, tc.w, c)
			}
		})
	}
}

// A server-first client (it waits for the server to speak) dialling an
// HTTP Service's cluster IP waits out one listener_filters_timeout: the
// capture listener's http_inspector on the port number. What it detected
// (here: nothing) stays on the socket through the hand-off, so the
// Service's listener runs no inspector of its own (docs/design/199); with
// one, such a client waited twice, 2 s before its first byte.
func TestServerFirstWaitsOneInspector(t *testing.T) {
	w := weftWorld(t, "testdata/shop.in.yaml")
	for _, c := range []sim.Call{
		{From: "shop/client-0", To: "10.96.0.10:80", Protocol: sim.ServerFirst},
		{From: "shop/client-0", To: "[fd00:96::10]:80", Protocol: sim.ServerFirst},
	} {
		var waits []string
		for _, line := range w.Walk(c).Trace {
			if strings.HasPrefix(line, c.From+" ") && strings.Contains(line, "listener filters time out") {
				waits = append(waits, line)
			}
		}
		if len(waits) != 1 {
			t.Errorf("%s -> %s (server-first): %d listener filter timeouts, want 1 (the capture listener's):\n%s", c.From, c.To, len(waits), strings.Join(waits, "\n"))
		}
		serviceListenerFor(t, w, c)
		if chain := chainOf(t, w, c); chain != "outbound|unknown" {
			t.Errorf("%s -> %s (server-first) took chain %q, want the default chain", c.From, c.To, chain)
		}
	}
	// HTTP to the same addresses is still recognised: the Service's HTTP
	// chain, by the capture listener's inspection.
	for _, to := range []string{"10.96.0.10:80", "[fd00:96::10]:80"} {
		c := sim.Call{From: "shop/client-0", To: to, Host: "web.shop"}
		if l := serviceListenerFor(t, w, c); l != nil && len(l.GetListenerFilters()) != 0 {
			t.Errorf("listener %q runs %d listener filters; the capture listener's inspection is enough", l.GetName(), len(l.GetListenerFilters()))
		}
		if chain := chainOf(t, w, c); !strings.HasPrefix(chain, "outbound|http|80|") {
			t.Errorf("%s -> %s (HTTP) took chain %q, want the Service's HTTP chain", c.From, c.To, chain)
		}
		if got := walk(t, w, c); got.Kind != sim.Delivered || got.Pod != "shop/web-0" || !got.MTLS {
			t.Errorf("%s -> %s (HTTP): %s; want it delivered to shop/web-0 over mesh mTLS", c.From, c.To, got)
		}
	}
}

// Refused Services have no listener: their connections stay on the
// capture listener and meet its refusal chains, as before.
func TestRefusedServicesHaveNoListener(t *testing.T) {
	w := weftWorldWith(t, []string{
		"metadata: {name: secrets, namespace: vault}", `metadata: {name: secrets, namespace: vault, annotations: {weft.dev/export-to: "."}}`,
		"metadata: {name: mysql, namespace: shop}", `metadata: {name: mysql, namespace: shop, annotations: {weft.dev/export-to: "."}}`,
	})
	for _, c := range []sim.Call{
		{From: "shop/client-0", To: "10.96.1.10:80", Host: "secrets.vault"},
		{From: "shop/client-0", To: "10.96.1.10:80", Protocol: sim.TCP},
	} {
		if l := handedTo(t, w, c); l != nil {
			t.Errorf("%s -> %s: handed to listener %q of a Service the proxy does not hold", c.From, c.To, l.GetName())
		}
	}
	refusedLocally(t, walk(t, w, sim.Call{From: "shop/client-0", To: "10.96.1.10:80", Host: "secrets.vault"}), sim.Responded, 403)
	// mysql is shop's own: still held, by its listener.
	serviceListenerFor(t, w, sim.Call{From: "shop/client-0", To: "10.96.0.20:3306", Protocol: sim.TCP})
}

// A headless Service has no cluster IP: its per-endpoint chains stay in
// the capture listener (their addresses churn with its endpoints).
func TestHeadlessStaysOnTheCaptureListener(t *testing.T) {
	w := weftWorld(t, "testdata/shop.in.yaml", fmt.Sprintf(kafka, kafkaEndpoints("kafka-0", "kafka-1")))
	c := sim.Call{From: "shop/client-0", To: "10.2.0.21:9092", Protocol: sim.TCP}
	check(t, walk(t, w, c), sim.Verdict{Kind: sim.Delivered, Pod: "vault/kafka-1", Port: 9092, MTLS: true, ClientIdentity: clientID})
	if l := handedTo(t, w, c); l != nil {
		t.Errorf("a headless endpoint's connection was handed to listener %q", l.GetName())
	}
}
