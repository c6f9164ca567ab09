package envoy

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	httpinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	origdstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator/ir"
)

// meshALPN is offered first by sidecars that originate mutual TLS, so the
// inbound side can tell mesh mTLS from an application's own TLS (which, in
// Permissive mode, passes through untouched).
const meshALPN = "weft"

// inboundDetectTimeout is how long the inbound listener waits for a
// client's first bytes (a TLS ClientHello or not) before treating the
// connection as plaintext: 1 s. A server-first client waits this long for
// its greeting, so it must stay well under such clients' connect timeouts
// (MySQL's 10 s); a sidecar sends its ClientHello right after connecting,
// so on a pod network 1 s is ample. A TLS client slower than that is
// taken for plaintext, which fails closed (no identity, and TLS bytes the
// plaintext chain's application cannot read).
const inboundDetectTimeout = time.Second

// TracingCluster reaches the OpenTelemetry collector named in MeshConfig.
const TracingCluster = "tracing-collector"

// listeners are a sidecar's listeners: the group's (groupListeners) and
// its own (ProxyListeners).
func (v *view) listeners() []*listenerv3.Listener {
	return append(v.groupListeners(), ProxyListeners(v.proxy)...)
}

// groupListeners are the listeners every proxy of a group shares (the
// xds group key holds all they read): the inbound and outbound listeners,
// bound to the pod's IP families.
func (v *view) groupListeners() []*listenerv3.Listener {
	// The outbound listeners may be shared (Shared): bound to the pod's
	// families when built, never modified after.
	out := v.sharedOutboundListeners()
	return append([]*listenerv3.Listener{v.boundInboundListener(), out.capture}, out.services...)
}

// boundInboundListener is the inbound listener, bound to the pod's
// families.
func (v *view) boundInboundListener() *listenerv3.Listener {
	in := v.inboundListener()
	v4, v6 := podFamilies(v.proxy.IPs)
	listenOn(in, v4, v6)
	return in
}

// ProxyListeners are the listeners of a sidecar that depend on the proxy
// itself, not on its group: the readiness listener (15021) and the stats
// listener (15090), bound to the pod's own addresses (proxyAddresses).
// Their content reads only the proxy's IPs and AppProbes; the xds layer
// builds them once per stream and serves them beside its group's shared
// configuration (docs/design/183). Build includes them; BuildGroup and
// Shared.BuildGroup leave them out. None for proxyless gRPC.
func ProxyListeners(p dataplane.Proxy) []*listenerv3.Listener {
	if p.Kind == dataplane.KindGRPC {
		return nil
	}
	out := []*listenerv3.Listener{readinessListener(p), statsListener()}
	for _, l := range out {
		bindProxyPort(l, p.IPs)
	}
	return out
}

// IsProxyListener says whether name is one of ProxyListeners'.
func IsProxyListener(name string) bool {
	return name == dataplane.ReadinessListener || name == dataplane.StatsListener
}

// bindProxyPort binds one of the sidecar's own ports (readiness, stats)
// to the pod's addresses and loopback (proxyAddresses) rather than the
// wildcard: once the capture listener hands connections over by their
// original destination (use_original_dst), a wildcard listener on
// 15090 would take an application's call to ANOTHER pod's :15090, and
// answer it with this sidecar's own stats (istio/istio#36040). The
// kubelet (pod IP:15021), Prometheus (pod IP:15090) and kubectl
// port-forward (localhost inside the pod) reach exact binds as before.
//
// freebind: an IPv6 pod address can still be tentative (duplicate
// address detection) when Envoy binds it, and the bind would fail
// (EADDRNOTAVAIL); IP_FREEBIND lets it bind now and receive once the
// address is valid.
//
// A proxy whose node names no usable address keeps the wildcard bind of
// its families (listenOn): it must still answer the kubelet, and an
// exact bind needs an address to bind.
func bindProxyPort(l *listenerv3.Listener, ips []string) {
	addrs := proxyAddresses(ips)
	if len(addrs) == 0 {
		v4, v6 := podFamilies(ips)
		listenOn(l, v4, v6)
		return
	}
	port := l.GetAddress().GetSocketAddress().GetPortValue()
	l.Address = socketAddress(addrs[0].String(), port)
	l.AdditionalAddresses = nil
	for _, a := range addrs[1:] {
		l.AdditionalAddresses = append(l.AdditionalAddresses, &listenerv3.AdditionalAddress{Address: socketAddress(a.String(), port)})
	}
	l.Freebind = wrapperspb.Bool(true)
}

// proxyAddresses are the addresses the sidecar's own ports bind: the
// pod's addresses in the node's order (IPv4-mapped ones as IPv4,
// duplicates, loopback and unspecified ones dropped), then 127.0.0.1,
// and ::1 when the pod has an IPv6 address (a pod without IPv6 may have
// it disabled, and binding ::1 would fail). Empty when the pod has no
// usable address.
func proxyAddresses(ips []string) []netip.Addr {
	var out []netip.Addr
	seen := map[netip.Addr]bool{}
	v6 := false
	for _, s := range ips {
		a, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil {
			continue
		}
		a = a.Unmap().WithZone("")
		if seen[a] || a.IsLoopback() || a.IsUnspecified() || a.IsMulticast() {
			continue
		}
		seen[a] = true
		out = append(out, a)
		v6 = v6 || a.Is6()
	}
	if len(out) == 0 {
		return nil
	}
	out = append(out, netip.AddrFrom4([4]byte{127, 0, 0, 1}))
	if v6 {
		out = append(out, netip.IPv6Loopback())
	}
	return out
}

// listenOn binds a listener's wildcard address to the pod's IP
// families: 0.0.0.0 alone would leave an IPv6-only pod's sidecar deaf to
// the kubelet's probes on the readiness port and to Prometheus (and to
// traffic captured over IPv6). IPv4 or unknown: 0.0.0.0; IPv6 only: [::];
// dual-stack: 0.0.0.0 plus [::] as an additional address, as Istio does
// (rather than [::] with ipv4_compat, whose IPv4-mapped addresses would not
// match the IPv4 prefixes of filter chains).
func listenOn(l *listenerv3.Listener, v4, v6 bool) {
	if !v6 {
		return
	}
	sa := l.GetAddress().GetSocketAddress()
	if sa == nil || sa.GetAddress() != "0.0.0.0" {
		return
	}
	if !v4 {
		sa.Address = "::"
		return
	}
	l.AdditionalAddresses = append(l.AdditionalAddresses, &listenerv3.AdditionalAddress{Address: socketAddress("::", sa.GetPortValue())})
}

// podFamilies says which IP families the pod's addresses have.
func podFamilies(ips []string) (v4, v6 bool) {
	for _, ip := range ips {
		if a, err := netip.ParseAddr(ip); err == nil {
			v4, v6 = v4 || a.Unmap().Is4(), v6 || (a.Is6() && !a.Is4In6())
		}
	}
	return v4, v6
}

// outboundListeners are the capture listener and the listeners of the
// Service ports it hands connections to (docs/design/182).
type outboundListeners struct {
	capture  *listenerv3.Listener
	services []*listenerv3.Listener
	// part: what every group of the view entry and listener key holds
	// (these listeners among it), when built through a Shared.
	part *Part
}

// serviceListenerSpec is one Service port's listener of one family: at
// addrs (the Service's cluster IPs of that family that no other chain or
// listener of the view claimed first).
type serviceListenerSpec struct {
	svc   *ir.Service
	port  *ir.Port
	f     family
	addrs []netip.Prefix
}

// outboundListener captures the workload's outgoing connections (weft-init
// redirects them to OutboundPort) and, with use_original_dst, hands each
// connection to a Service's cluster IP to that Service port's own
// listener (serviceListener; docs/design/182): Envoy looks for a listener
// bound to the original destination, exactly, then a wildcard of its
// port, and keeps the connection when there is none. What stays here is
// what no Service address decides: one HTTP chain per port number for
// other addresses, routed by Host; a headless Service's per-endpoint
// chains; refusal chains for Services the view does not hold; and the
// default chain: passthrough, or refused in RegistryOnly mode. A Service
// added or removed therefore adds or removes its own listeners and leaves
// this one alone, unless it brings a new HTTP port number.
func (v *view) outboundListener() (*listenerv3.Listener, []serviceListenerSpec) {
	l := &listenerv3.Listener{
		Name:             dataplane.OutboundListener,
		Address:          socketAddress("0.0.0.0", dataplane.OutboundPort),
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		UseOriginalDst:   wrapperspb.Bool(true),
		ListenerFilters:  []*listenerv3.ListenerFilter{listenerFilter("envoy.filters.listener.original_dst", &origdstv3.OriginalDst{})},
	}
	// A connection to the capture port itself (the application dialling
	// :15001 directly) would be passed through to where it was going —
	// this listener — again and again: close it (Istio's
	// virtualOutbound-blackhole). A Service port of the same number is
	// left to it: the sidecar's ports are reserved.
	l.FilterChains = append(l.FilterChains, blackholeChain("outbound|blackhole", "outbound_blackhole", dataplane.OutboundPort, v))
	httpPorts := map[int32]bool{dataplane.OutboundPort: true}
	claimed := map[netip.Prefix]map[int32]bool{} // a match (or a listener address) may appear once
	var specs []serviceListenerSpec
	for _, svc := range v.outbound {
		for _, port := range svc.Ports {
			if port.Port == dataplane.OutboundPort {
				continue
			}
			if port.Protocol.IsHTTP() {
				if svc.Headless {
					// Calls to a pod's own address take its chain (mesh
					// mTLS to that pod); the port's HTTP chain below
					// still routes other Hosts.
					l.FilterChains = append(l.FilterChains, v.headlessChains(svc, port, claimed)...)
				}
				if byDestination(svc, port) {
					for _, f := range v.chainFamilies(svc) {
						if addrs := claimPrefixes(claimed, familyOf(tcpPrefixes(svc, port), f), port.Port); len(addrs) > 0 {
							specs = append(specs, serviceListenerSpec{svc, port, f, addrs})
						}
					}
				}
				httpPorts[port.Port] = true
				continue
			}
			if svc.Headless {
				l.FilterChains = append(l.FilterChains, v.headlessChains(svc, port, claimed)...)
				continue
			}
			// A dual-stack Service's cluster IPs of each family take a
			// listener of their own, to the cluster of that family
			// (docs/design/064).
			for _, f := range v.chainFamilies(svc) {
				if addrs := claimPrefixes(claimed, familyOf(tcpPrefixes(svc, port), f), port.Port); len(addrs) > 0 {
					specs = append(specs, serviceListenerSpec{svc, port, f, addrs})
				}
			}
		}
	}
	// One Host-routed chain per HTTP port number, in port order — not in
	// the order of the Services that brought the number: a new Service
	// that sorts first would move the chain and re-send this listener
	// (docs/design/186). Envoy matches chains by their match, not order.
	for _, n := range slices.Sorted(maps.Keys(httpPorts)) {
		if n == dataplane.OutboundPort {
			continue // the blackhole chain above
		}
		l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{
			Name: fmt.Sprintf("outbound|http|%d", n),
			// Any address no Service listener takes, routed by Host.
			//
			// Only what http_inspector recognises as HTTP: other bytes to
			// the same port number (raw TCP, TLS, a server-first
			// protocol) pass through as TCP instead of being reset by the
			// HTTP manager (new-1).
			FilterChainMatch: &listenerv3.FilterChainMatch{
				DestinationPort:      wrapperspb.UInt32(uint32(n)),
				ApplicationProtocols: []string{"http/1.1", "h2c"},
			},
			Filters: []*listenerv3.Filter{v.hcm(fmt.Sprintf("outbound_%d", n), routeConfigName(n), nil, outbound)},
		})
	}
	l.FilterChains = append(l.FilterChains, v.refusalChains(claimed)...)
	if f := httpInspectorOn(httpPorts); f != nil {
		l.ListenerFilters = append(l.ListenerFilters, f)
		// A server-first client on an HTTP port number sends nothing for
		// http_inspector to read: go on as TCP after the timeout.
		l.ListenerFiltersTimeout = durationpb.New(inboundDetectTimeout)
		l.ContinueOnListenerFiltersTimeout = true
	}
	l.DefaultFilterChain = v.unknownChain()
	return l, specs
}

// unknownChain is what happens to a connection no Service decides:
// passthrough, or the black hole under RegistryOnly.
func (v *view) unknownChain() *listenerv3.FilterChain {
	fallback := dataplane.PassthroughCluster
	if v.mesh.Outbound == ir.OutboundRegistryOnly {
		fallback = dataplane.BlackHoleCluster
	}
	return &listenerv3.FilterChain{
		Name:    "outbound|unknown",
		Filters: []*listenerv3.Filter{v.tcpProxy("outbound_unknown", []ir.Backend{{Weight: 1}}, fallback)},
	}
}

// serviceListenerName names a Service port's listener of family f like
// its cluster and route configuration (outbound|80||checkout.shop.svc.
// cluster.local; a dual-stack Service's IPv6 one outbound|80|ipv6|...):
// one per Service port and family, so no two listeners share a name, and
// no other listener's name has that form.
func serviceListenerName(svc *ir.Service, port *ir.Port, f family) string {
	return familyClusterName(svc, port.Port, f)
}

// serviceListener is the listener of one Service port reached by its
// cluster IP of family f (docs/design/182): it binds no socket
// (bind_to_port false) and takes only the connections the capture
// listener hands it by use_original_dst, so its address is its match. It
// holds the chain the capture listener held for the Service before:
// for HTTP destChain, matched by the application protocol the capture
// listener's http_inspector detected, and a default chain for other
// bytes, as on the capture listener (passthrough, or the black hole under
// RegistryOnly); for TCP the TCP proxy chain. Neither runs a listener
// filter, so a server-first client is never held waiting here. Its
// content depends on the Service's addresses and port and on mesh-wide
// settings only, so other Services coming and going, and the Service's
// own routes changing, leave it byte for byte the same.
func (v *view) serviceListener(s serviceListenerSpec) *listenerv3.Listener {
	svc, port, f := s.svc, s.port, s.f
	l := &listenerv3.Listener{
		Name:             serviceListenerName(svc, port, f),
		Address:          socketAddress(s.addrs[0].Addr().String(), uint32(port.Port)),
		BindToPort:       wrapperspb.Bool(false),
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
	}
	for _, a := range s.addrs[1:] {
		l.AdditionalAddresses = append(l.AdditionalAddresses, &listenerv3.AdditionalAddress{Address: socketAddress(a.Addr().String(), uint32(port.Port))})
	}
	if port.Protocol.IsHTTP() {
		// No listener filter: the capture listener's http_inspector ran
		// on this port number before the hand-off (outboundListener
		// inspects every HTTP port it makes a listener for), and what it
		// detected stays on the socket (docs/design/199). A second
		// inspector would make a server-first client wait twice.
		l.FilterChains = []*listenerv3.FilterChain{v.destChain(svc, port, f)}
		l.DefaultFilterChain = v.unknownChain()
		return l
	}
	l.FilterChains = []*listenerv3.FilterChain{{
		Name:    fmt.Sprintf("outbound|tcp|%d|%s|%s", port.Port, familySubset(svc, f), svc.Key.Hostname()),
		Filters: []*listenerv3.Filter{v.tcpChainProxy(fmt.Sprintf("outbound_%d_%s", port.Port, svc.Key.Hostname()), svc, port, f)},
	}}
	return l
}

// destChain is the HTTP filter chain of a Service port reached by its
// cluster IPs of family f (docs/design/090), on that port's own listener
// (serviceListener, docs/design/182), whose address is the match: it
// takes the HTTP that http_inspector recognised, and its HTTP connection
// manager asks RDS for the port's own route configuration (destRoute).
// Its content depends on the Service's address family and port and on
// mesh-wide settings only, so it stays the same while the Service's
// routes change. A dual-stack Service has one per family (docs/design/064):
// each names the route configuration whose routes send to the clusters
// of its family. Stats keep the port's prefix (outbound_80), shared with
// the port's Host-routed chain: the Service is in the route and cluster
// stats.
func (v *view) destChain(svc *ir.Service, port *ir.Port, f family) *listenerv3.FilterChain {
	return &listenerv3.FilterChain{
		Name: fmt.Sprintf("outbound|http|%d|%s|%s", port.Port, familySubset(svc, f), svc.Key.Hostname()),
		FilterChainMatch: &listenerv3.FilterChainMatch{
			ApplicationProtocols: []string{"http/1.1", "h2c"},
		},
		Filters: []*listenerv3.Filter{v.hcm(fmt.Sprintf("outbound_%d", port.Port), destRouteName(svc, port, f), nil, outbound)},
	}
}

// claimPrefixes marks the prefixes of port as taken and returns those no
// chain or listener had taken before.
func claimPrefixes(claimed map[netip.Prefix]map[int32]bool, prefixes []netip.Prefix, port int32) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range prefixes {
		if claimed[p] == nil {
			claimed[p] = map[int32]bool{}
		}
		if claimed[p][port] {
			continue
		}
		claimed[p][port] = true
		out = append(out, p)
	}
	return out
}

// httpInspectorOn runs http_inspector on connections to the HTTP port
// numbers only (filter_disabled on every other port), so that TCP
// Services — server-first ones included — are never held waiting for
// bytes it would read; nil when no port is HTTP. ports may hold the
// reserved capture port (marked to skip it), which is not HTTP.
func httpInspectorOn(ports map[int32]bool) *listenerv3.ListenerFilter {
	var nums []int
	for p := range ports {
		if p != dataplane.OutboundPort {
			nums = append(nums, int(p))
		}
	}
	if len(nums) == 0 {
		return nil
	}
	sort.Ints(nums)
	var ranges []*listenerv3.ListenerFilterChainMatchPredicate
	for _, p := range nums {
		ranges = append(ranges, &listenerv3.ListenerFilterChainMatchPredicate{Rule: &listenerv3.ListenerFilterChainMatchPredicate_DestinationPortRange{
			DestinationPortRange: &typev3.Int32Range{Start: int32(p), End: int32(p) + 1},
		}})
	}
	http := ranges[0]
	if len(ranges) > 1 {
		http = &listenerv3.ListenerFilterChainMatchPredicate{Rule: &listenerv3.ListenerFilterChainMatchPredicate_OrMatch{
			OrMatch: &listenerv3.ListenerFilterChainMatchPredicate_MatchSet{Rules: ranges},
		}}
	}
	f := listenerFilter("envoy.filters.listener.http_inspector", &httpinspectorv3.HttpInspector{})
	f.FilterDisabled = &listenerv3.ListenerFilterChainMatchPredicate{Rule: &listenerv3.ListenerFilterChainMatchPredicate_NotMatch{NotMatch: http}}
	return f
}

// headlessChains give each endpoint of a headless Service port its own
// filter chain, matching its address and port, to its own cluster
// (headlessCluster): mesh mTLS to a meshed pod with that pod's identity,
// plaintext to others (issue 12 g). One chain per endpoint keeps the
// others unchanged when a pod comes or goes, so Envoy drains only the
// connections of the chain that changed (12 m); HTTP ports get them too,
// carried as TCP: the server's sidecar still applies HTTP AuthPolicy.
func (v *view) headlessChains(svc *ir.Service, port *ir.Port, claimed map[netip.Prefix]map[int32]bool) []*listenerv3.FilterChain {
	var out []*listenerv3.FilterChain
	for _, e := range port.Endpoints {
		ip, err := netip.ParseAddr(e.Address)
		if err != nil {
			continue
		}
		p := netip.PrefixFrom(ip, ip.BitLen())
		if claimed[p] == nil {
			claimed[p] = map[int32]bool{}
		}
		if claimed[p][e.Port] {
			continue
		}
		claimed[p][e.Port] = true
		name := headlessClusterName(svc, e)
		out = append(out, &listenerv3.FilterChain{
			Name: "outbound|tcp|" + strings.TrimPrefix(name, "outbound|"),
			FilterChainMatch: &listenerv3.FilterChainMatch{
				DestinationPort: wrapperspb.UInt32(uint32(e.Port)),
				PrefixRanges:    []*corev3.CidrRange{{AddressPrefix: ip.String(), PrefixLen: wrapperspb.UInt32(uint32(p.Bits()))}},
			},
			Filters: []*listenerv3.Filter{v.tcpProxy(fmt.Sprintf("outbound_%d_%s", e.Port, svc.Key.Hostname()), []ir.Backend{{Weight: 1}}, name)},
		})
	}
	return out
}

// tcpPrefixes are the destination addresses of a TCP Service port: its
// cluster IPs, or for a headless Service its endpoints' addresses.
func tcpPrefixes(svc *ir.Service, port *ir.Port) []netip.Prefix {
	var addrs []string
	if svc.Headless {
		for _, e := range port.Endpoints {
			addrs = append(addrs, e.Address)
		}
	} else {
		addrs = svc.ClusterIPs
	}
	var out []netip.Prefix
	for _, a := range addrs {
		if ip, err := netip.ParseAddr(a); err == nil {
			out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
		}
	}
	return out
}

// tcpChainProxy is what a TCP port's chain forwards to: one cluster.
// A split's weights are in its split cluster's endpoints (splitCluster),
// not in the chain, so a weight change is an EDS update and leaves the
// chain — and the connections on it — alone (issue 12 m, docs/design/058).
func (v *view) tcpChainProxy(statPrefix string, svc *ir.Service, port *ir.Port, f family) *listenerv3.Filter {
	if isTCPSplit(port) {
		return tcpProxyFilter(tcpBackendSettings(v.tcpProxyConfig(statPrefix, []ir.Backend{{Weight: 1}}, splitClusterName(svc, port.Port, f)), port, false))
	}
	b := tcpBackends(svc, port)[0] // one: more are a split
	return tcpProxyFilter(tcpBackendSettings(v.tcpProxyConfig(statPrefix, []ir.Backend{{Weight: 1}}, backendClusterOf(v.mesh, b, f)), v.backendPort(b), true))
}

func tcpBackends(svc *ir.Service, port *ir.Port) []ir.Backend {
	if len(port.TCPBackends) > 0 {
		return port.TCPBackends
	}
	return []ir.Backend{{Service: svc.Key, Port: port.Port, Weight: 1}}
}

// inboundListener accepts connections captured on their way to the
// workload (weft-init redirects them to InboundPort). Per served port:
// mutual TLS from the mesh, recognised by its ALPN, and in Permissive mode
// plaintext too; AuthPolicy is enforced as RBAC before the application sees
// a byte. Other connections pass through in Permissive mode and are closed
// in Strict mode: there is no default chain, and Envoy closes what no chain
// takes.
func (v *view) inboundListener() *listenerv3.Listener {
	l := &listenerv3.Listener{
		Name:             dataplane.InboundListener,
		Address:          socketAddress("0.0.0.0", dataplane.InboundPort),
		TrafficDirection: corev3.TrafficDirection_INBOUND,
		ListenerFilters: []*listenerv3.ListenerFilter{
			listenerFilter("envoy.filters.listener.original_dst", &origdstv3.OriginalDst{}),
			listenerFilter("envoy.filters.listener.tls_inspector", &tlsinspectorv3.TlsInspector{}),
		},
		// tls_inspector waits for the client's first bytes. A server-first
		// protocol (MySQL, SMTP, FTP) sends none until it has the server's
		// greeting: without this, Envoy closes it when the timeout fires
		// (15 s by default). With it, the connection goes on as plaintext
		// (raw_buffer) after inboundDetectTimeout, as Istio's inbound
		// listener does.
		ListenerFiltersTimeout:           durationpb.New(inboundDetectTimeout),
		ContinueOnListenerFiltersTimeout: true,
	}
	// A connection to the capture port itself, from the network (15006 is
	// never redirected), would be passed through to where it was going —
	// this listener — again: close it (Istio's virtualInbound-blackhole).
	l.FilterChains = append(l.FilterChains, blackholeChain("inbound|blackhole", "inbound_blackhole", dataplane.InboundPort, v))
	for _, in := range v.inbound {
		if in.port == dataplane.InboundPort {
			continue // reserved: the blackhole chain above
		}
		// RateLimitPolicy's filters run after RBAC (ratelimit.go).
		filters := func(mtls bool) []*listenerv3.Filter {
			if in.protocol.IsHTTP() {
				return []*listenerv3.Filter{v.hcmWith(fmt.Sprintf("inbound_%d", in.port), "", inboundRoute(in.port), inbound, v.httpRateLimits(in.port, mtls))}
			}
			fs := append(v.networkRBAC(fmt.Sprintf("inbound_%d", in.port)), v.networkRateLimits(in.port)...)
			return append(fs, v.tcpProxy(fmt.Sprintf("inbound_%d", in.port), []ir.Backend{{Weight: 1}}, inboundCluster(in.port)))
		}
		l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{
			Name: fmt.Sprintf("inbound|mtls|%d", in.port),
			FilterChainMatch: &listenerv3.FilterChainMatch{
				DestinationPort:      wrapperspb.UInt32(uint32(in.port)),
				TransportProtocol:    "tls",
				ApplicationProtocols: meshProtocols(in.protocol),
			},
			TransportSocket: transportSocket("envoy.transport_sockets.tls", &tlsv3.DownstreamTlsContext{
				RequireClientCertificate: wrapperspb.Bool(true),
				CommonTlsContext:         v.serverTLS(in.protocol),
			}),
			Filters: filters(true),
		})
		if v.mtls == ir.MTLSPermissive {
			l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{
				Name: fmt.Sprintf("inbound|plaintext|%d", in.port),
				FilterChainMatch: &listenerv3.FilterChainMatch{
					DestinationPort:   wrapperspb.UInt32(uint32(in.port)),
					TransportProtocol: "raw_buffer",
				},
				Filters: filters(false),
			})
			// The application's own TLS to a rate-limited TCP port matches
			// neither chain above (no mesh ALPN, not plaintext): without
			// this chain it would pass through the default chain, where no
			// limit applies. Here it is what the default chain does to it
			// (AuthPolicy as TCP, then on to the original destination),
			// counted by the port's connection limits.
			if !in.protocol.IsHTTP() {
				if rl := v.networkRateLimits(in.port); len(rl) > 0 {
					stat := fmt.Sprintf("inbound_%d", in.port)
					l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{
						Name: fmt.Sprintf("inbound|tls|%d", in.port),
						FilterChainMatch: &listenerv3.FilterChainMatch{
							DestinationPort:   wrapperspb.UInt32(uint32(in.port)),
							TransportProtocol: "tls",
						},
						Filters: append(append(v.networkRBAC(stat), rl...), v.tcpProxy(stat, []ir.Backend{{Weight: 1}}, dataplane.InboundPassthroughCluster)),
					})
				}
			}
		}
	}
	if v.mtls == ir.MTLSPermissive {
		// Plaintext HTTP to a port no Service declares is still HTTP:
		// http_inspector recognises it, and an HTTP manager judges it with
		// the workload's HTTP RBAC, so a Deny on a method or path holds
		// there too (as TCP, such rules could not match). Istio's inbound
		// passthrough has the same HTTP chain.
		l.ListenerFilters = append(l.ListenerFilters, listenerFilter("envoy.filters.listener.http_inspector", &httpinspectorv3.HttpInspector{}))
		l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{
			Name: "inbound|passthrough|http",
			FilterChainMatch: &listenerv3.FilterChainMatch{
				TransportProtocol:    "raw_buffer",
				ApplicationProtocols: []string{"http/1.1", "h2c"},
			},
			Filters: []*listenerv3.Filter{v.hcm("inbound_passthrough_http", "", passthroughRoute(), inbound)},
		})
		// Whatever no served port's chain takes — a port no Service
		// declares, the application's own TLS to a declared port — is
		// still the workload's traffic: AuthPolicy applies to it, as a
		// TCP connection (it is judged on its source and port; rules with
		// methods or paths cannot match it). Istio authorizes its
		// passthrough chains the same way.
		l.DefaultFilterChain = &listenerv3.FilterChain{
			Name:    "inbound|passthrough",
			Filters: append(v.networkRBAC("inbound_passthrough"), v.tcpProxy("inbound_passthrough", []ir.Backend{{Weight: 1}}, dataplane.InboundPassthroughCluster)),
		}
	}
	return l
}

// blackholeChain closes connections whose original destination port is
// the sidecar's own capture port.
func blackholeChain(name, statPrefix string, port uint32, v *view) *listenerv3.FilterChain {
	return &listenerv3.FilterChain{
		Name:             name,
		FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(port)},
		Filters:          []*listenerv3.Filter{v.tcpProxy(statPrefix, []ir.Backend{{Weight: 1}}, dataplane.BlackHoleCluster)},
	}
}

// meshProtocols are the ALPN values that mark mesh mTLS on a served port:
// weft's marker, and on HTTP/2 and gRPC ports also h2, which is all a
// proxyless gRPC client offers (so there an application's own h2 TLS
// cannot pass through in Permissive mode).
func meshProtocols(p ir.Protocol) []string {
	if p == ir.ProtocolGRPC || p == ir.ProtocolHTTP2 {
		return []string{meshALPN, "h2"}
	}
	return []string{meshALPN}
}

// serverTLS requires a client certificate from the trust bundle. Which
// identities may call is AuthPolicy's business, enforced by RBAC.
func (v *view) serverTLS(proto ir.Protocol) *tlsv3.CommonTlsContext {
	c := &tlsv3.CommonTlsContext{
		TlsParams:                      &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2},
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: dataplane.WorkloadCertSecret, SdsConfig: adsConfig()}},
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
			ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: dataplane.TrustBundleSecret, SdsConfig: adsConfig()},
		},
	}
	switch proto {
	case ir.ProtocolHTTP2, ir.ProtocolGRPC:
		c.AlpnProtocols = []string{"h2"}
	case ir.ProtocolHTTP:
		c.AlpnProtocols = []string{"h2", "http/1.1"}
	}
	return c
}

// passthroughRoute sends HTTP on undeclared ports to where it was going.
func passthroughRoute() *routev3.RouteConfiguration {
	rc := inboundRoute(0)
	rc.Name = "inbound|passthrough"
	rc.VirtualHosts[0].Routes[0].GetRoute().ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: dataplane.InboundPassthroughCluster}
	return rc
}

func inboundRoute(port int32) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{
		Name: "inbound|" + strconv.Itoa(int(port)),
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    "inbound",
			Domains: []string{"*"},
			Routes: []*routev3.Route{{
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{
					ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: inboundCluster(port)},
					Timeout:          durationZero(),
				}},
			}},
		}},
	}
}

// meshInternalRanges are the peers an inbound HTTP manager treats as
// internal: RFC 1918, shared address space (RFC 6598, which some
// clouds' pod networks use), loopback, and IPv6 unique-local and loopback
// (the ranges Envoy treated as internal before 1.33). A cluster whose pods
// have public addresses (global IPv6) gets its mesh requests treated as
// external: x-envoy-* headers stripped, x-request-id still kept.
var meshInternalRanges = []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8", "fc00::/7", "::1/128"}

func internalAddresses() *hcmv3.HttpConnectionManager_InternalAddressConfig {
	c := &hcmv3.HttpConnectionManager_InternalAddressConfig{}
	for _, r := range meshInternalRanges {
		p := netip.MustParsePrefix(r)
		c.CidrRanges = append(c.CidrRanges, &corev3.CidrRange{AddressPrefix: p.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(p.Bits()))})
	}
	return c
}

type direction int

const (
	outbound direction = iota
	inbound
)

// hcm builds an HTTP connection manager: by RDS when rds is set, else with
// the inline route. Inbound managers run the RBAC filters first.
func (v *view) hcm(statPrefix, rds string, inline *routev3.RouteConfiguration, dir direction) *listenerv3.Filter {
	return v.hcmWith(statPrefix, rds, inline, dir, nil)
}

// hcmWith is hcm with extra HTTP filters between RBAC and the router.
func (v *view) hcmWith(statPrefix, rds string, inline *routev3.RouteConfiguration, dir direction, extra []*hcmv3.HttpFilter) *listenerv3.Filter {
	h := &hcmv3.HttpConnectionManager{
		StatPrefix: statPrefix,
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		// Strip a client's x-envoy-* headers only at the mesh edge: inside
		// the mesh, callers are sidecars.
		UseRemoteAddress: wrapperspb.Bool(dir == inbound),
		// gRPC streams and long polls must outlive Envoy's 5-minute
		// default stream idle timeout no more than they would without a mesh.
		StreamIdleTimeout: durationZero(),
		AccessLog:         v.accessLog(true),
		Tracing:           v.tracing(),
		// WebSocket upgrades pass, on both sidecars: without an
		// upgrade_configs entry Envoy answers an Upgrade request 403
		// (Istio enables websocket on every HTTP manager too). Each
		// AuthPolicy and route still applies to the upgrade request.
		UpgradeConfigs: []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}},
	}
	if dir == inbound {
		// AuthPolicy's path rules run here: judge the path the application
		// will see, not the bytes the caller sent, or a Deny on /admin is
		// bypassed by /./admin, //admin or /a/../admin (RFC 3986
		// normalization and merged slashes, as Istio's default does).
		h.NormalizePath = wrapperspb.Bool(true)
		h.MergeSlashes = true
		// With use_remote_address, Envoy 1.33 and later consider no peer
		// internal unless told: every mesh request was an edge request,
		// had its x-request-id replaced at every hop and its x-envoy-*
		// headers stripped. Peers in the private ranges pod networks use
		// are internal; and a request that was external somewhere before
		// (an ingress's x-forwarded-for) keeps its x-request-id, which
		// only correlates logs and traces.
		h.InternalAddressConfig = internalAddresses()
		h.PreserveExternalRequestId = true
		// %2F and %5C are slashes to most applications (and every
		// framework that decodes the path before routing): decode them
		// before AuthPolicy looks, or a Deny on /admin is bypassed by
		// /admin%2Fsecrets. Forwarded decoded, so the application serves
		// the path RBAC judged (Istio's DECODE_AND_MERGE_SLASHES does the
		// same); REJECT_REQUEST would break clients that send encoded
		// slashes in IDs, UNESCAPE_AND_REDIRECT clients that do not follow.
		h.PathWithEscapedSlashesAction = hcmv3.HttpConnectionManager_UNESCAPE_AND_FORWARD
	}
	if rds != "" {
		h.RouteSpecifier = &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: rds, ConfigSource: adsConfig()}}
	} else {
		h.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: inline}
	}
	if dir == inbound {
		h.ForwardClientCertDetails = hcmv3.HttpConnectionManager_SANITIZE_SET
		h.SetCurrentClientCertDetails = &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{Uri: true}
		h.HttpFilters = v.httpRBAC(statPrefix)
	}
	h.HttpFilters = append(h.HttpFilters, extra...)
	if dir == outbound {
		// TrafficSplit faults are injected on the calling side, per route
		// (typed_per_filter_config); without one the filter does nothing.
		h.HttpFilters = append(h.HttpFilters, faultFilter())
	}
	h.HttpFilters = append(h.HttpFilters, &hcmv3.HttpFilter{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})}})
	return &listenerv3.Filter{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(h)}}
}

// httpRBAC returns the RBAC filters of an inbound HTTP chain, none when no
// AuthPolicy selects the workload.
func (v *view) httpRBAC(statPrefix string) []*hcmv3.HttpFilter {
	s := v.rbacPolicies(true)
	var out []*hcmv3.HttpFilter
	add := func(name string, cfg *rbachttpv3.RBAC) {
		out = append(out, &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(cfg)}})
	}
	if len(s.deny)+len(s.shadowDeny) > 0 {
		cfg := &rbachttpv3.RBAC{ShadowRulesStatPrefix: dryRunDenyPrefix}
		if len(s.deny) > 0 {
			cfg.Rules = &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: s.deny}
		}
		if len(s.shadowDeny) > 0 {
			cfg.ShadowRules = &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: s.shadowDeny}
		}
		add("envoy.filters.http.rbac.deny", cfg)
	}
	if v.hasAllow(false) || v.hasAllow(true) {
		cfg := &rbachttpv3.RBAC{ShadowRulesStatPrefix: dryRunAllowPrefix}
		if v.hasAllow(false) {
			cfg.Rules = &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: s.allow}
		}
		if v.hasAllow(true) {
			cfg.ShadowRules = &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: s.shadowAllow}
		}
		add("envoy.filters.http.rbac.allow", cfg)
	}
	return out
}

// networkRBAC is httpRBAC for TCP chains.
func (v *view) networkRBAC(statPrefix string) []*listenerv3.Filter {
	s := v.rbacPolicies(false)
	var out []*listenerv3.Filter
	add := func(name string, cfg *rbacnetv3.RBAC) {
		out = append(out, &listenerv3.Filter{Name: name, ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(cfg)}})
	}
	if len(s.deny)+len(s.shadowDeny) > 0 {
		cfg := &rbacnetv3.RBAC{StatPrefix: statPrefix + "_deny_", ShadowRulesStatPrefix: dryRunDenyPrefix}
		if len(s.deny) > 0 {
			cfg.Rules = &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: s.deny}
		}
		if len(s.shadowDeny) > 0 {
			cfg.ShadowRules = &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: s.shadowDeny}
		}
		add("envoy.filters.network.rbac.deny", cfg)
	}
	if v.hasAllow(false) || v.hasAllow(true) {
		cfg := &rbacnetv3.RBAC{StatPrefix: statPrefix + "_allow_", ShadowRulesStatPrefix: dryRunAllowPrefix}
		if v.hasAllow(false) {
			cfg.Rules = &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: s.allow}
		}
		if v.hasAllow(true) {
			cfg.ShadowRules = &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: s.shadowAllow}
		}
		add("envoy.filters.network.rbac.allow", cfg)
	}
	return out
}

// tcpProxy forwards a connection to one cluster, or by weight to several.
// fixed, when given, names the single cluster directly.
func (v *view) tcpProxy(statPrefix string, backends []ir.Backend, fixed ...string) *listenerv3.Filter {
	return tcpProxyFilter(v.tcpProxyConfig(statPrefix, backends, fixed...))
}

func tcpProxyFilter(t *tcpproxyv3.TcpProxy) *listenerv3.Filter {
	return &listenerv3.Filter{Name: "envoy.filters.network.tcp_proxy", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t)}}
}

func (v *view) tcpProxyConfig(statPrefix string, backends []ir.Backend, fixed ...string) *tcpproxyv3.TcpProxy {
	t := &tcpproxyv3.TcpProxy{StatPrefix: statPrefix, AccessLog: v.accessLog(false)}
	names := make([]string, len(backends))
	for i, b := range backends {
		switch {
		case len(fixed) > 0:
			names[i] = fixed[0]
		default:
			names[i] = backendClusterOf(v.mesh, b, v.preferred())
		}
	}
	if len(backends) == 1 {
		t.ClusterSpecifier = &tcpproxyv3.TcpProxy_Cluster{Cluster: names[0]}
	} else {
		wc := &tcpproxyv3.TcpProxy_WeightedCluster{}
		for i, b := range backends {
			wc.Clusters = append(wc.Clusters, &tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{Name: names[i], Weight: b.Weight})
		}
		t.ClusterSpecifier = &tcpproxyv3.TcpProxy_WeightedClusters{WeightedClusters: wc}
	}
	return t
}

// The shadow_rules_stat_prefix of the DENY and ALLOW RBAC filters. Envoy
// prefixes the shadow rules' statistics and their dynamic metadata keys
// with it, so the two filters' DryRun results stay apart in one stream.
const (
	dryRunDenyPrefix  = "dry_run_deny_"
	dryRunAllowPrefix = "dry_run_allow_"
)

// accessLog writes one line per request (http) or connection to the
// proxy's stdout, as text or JSON, when MeshConfig enables it. Besides
// the request and the upstream cluster, response flags and request id, a
// line carries the authorization decision and the policy that made it
// (docs/design/170 cites the Envoy sources):
//
//   - HTTP: the RBAC filters' enforced result and matched policy
//     (enforced_engine_result, enforced_effective_policy_id; the ALLOW
//     filter, which runs last, has the last word), the DryRun results of
//     the DENY and ALLOW filters' shadow rules, and RESPONSE_CODE_DETAILS,
//     which for an enforced denial is rbac_access_denied_matched_policy[...].
//   - TCP: the network RBAC filters write only their shadow results; an
//     enforced denial is in CONNECTION_TERMINATION_DETAILS.
//
// RBAC policy names are "<namespace>/<AuthPolicy>[<rule index>]".
func (v *view) accessLog(http bool) []*accesslogv3.AccessLog {
	if !v.mesh.AccessLog.Enabled {
		return nil
	}
	ns := "envoy.filters.network.rbac"
	if http {
		ns = "envoy.filters.http.rbac"
	}
	md := func(key string) string { return "%DYNAMIC_METADATA(" + ns + ":" + key + ")%" }
	rbac := [][2]string{
		{"dry_run_deny", md(dryRunDenyPrefix + "shadow_engine_result")},
		{"dry_run_deny_policy", md(dryRunDenyPrefix + "shadow_effective_policy_id")},
		{"dry_run_allow", md(dryRunAllowPrefix + "shadow_engine_result")},
		{"dry_run_allow_policy", md(dryRunAllowPrefix + "shadow_effective_policy_id")},
	}
	details := [2]string{"connection_termination_details", "%CONNECTION_TERMINATION_DETAILS%"}
	if http {
		rbac = append([][2]string{{"rbac", md("enforced_engine_result")}, {"rbac_policy", md("enforced_effective_policy_id")}}, rbac...)
		details = [2]string{"response_code_details", "%RESPONSE_CODE_DETAILS%"}
	}
	format := &corev3.SubstitutionFormatString{}
	if v.mesh.AccessLog.JSON {
		fields := map[string]*structpb.Value{}
		for k, op := range map[string]string{
			"start_time": "%START_TIME%", "method": "%REQ(:METHOD)%", "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
			"protocol": "%PROTOCOL%", "response_code": "%RESPONSE_CODE%", "response_flags": "%RESPONSE_FLAGS%",
			"bytes_received": "%BYTES_RECEIVED%", "bytes_sent": "%BYTES_SENT%", "duration_ms": "%DURATION%",
			"upstream_host": "%UPSTREAM_HOST%", "upstream_cluster": "%UPSTREAM_CLUSTER%",
			"downstream_peer": "%DOWNSTREAM_PEER_URI_SAN%", "authority": "%REQ(:AUTHORITY)%", "request_id": "%REQ(X-REQUEST-ID)%",
			details[0]: details[1],
		} {
			fields[k] = structpb.NewStringValue(op)
		}
		for _, f := range rbac {
			fields[f[0]] = structpb.NewStringValue(f[1])
		}
		format.Format = &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: &structpb.Struct{Fields: fields}}
	} else {
		line := "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER% \"%DOWNSTREAM_PEER_URI_SAN%\""
		line += " request_id=%REQ(X-REQUEST-ID)% " + details[0] + "=" + details[1]
		for _, f := range rbac {
			line += " " + f[0] + "=" + f[1]
		}
		format.Format = &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{
			InlineString: line + "\n",
		}}}
	}
	return []*accesslogv3.AccessLog{{
		Name:       "envoy.access_loggers.stdout",
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(&streamv3.StdoutAccessLog{AccessLogFormat: &streamv3.StdoutAccessLog_LogFormat{LogFormat: format}})},
	}}
}

// tracing exports spans to the MeshConfig collector over OTLP/gRPC.
func (v *view) tracing() *hcmv3.HttpConnectionManager_Tracing {
	t := v.mesh.Tracing
	if t == nil {
		return nil
	}
	return &hcmv3.HttpConnectionManager_Tracing{
		RandomSampling: &typev3.Percent{Value: t.SamplingPercent},
		Provider: &tracev3.Tracing_Http{
			Name: "envoy.tracers.opentelemetry",
			ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: mustAny(&tracev3.OpenTelemetryConfig{
				GrpcService: &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: TracingCluster}}},
				ServiceName: tracingServiceName(v.proxy),
			})},
		},
	}
}

// tracingServiceName names the proxy's spans' service.
func tracingServiceName(p dataplane.Proxy) string { return p.ServiceAccount + "." + p.Namespace }

// readinessListener answers 200 on :15021/ready once the proxy has its
// listeners, which is what the injected startup probe waits for, and
// forwards the application's rewritten kubelet probes to it at the pod IP
// the kubelet probed, from the uncaptured passthrough source (so Strict
// mTLS never meets the kubelet's plaintext).
func readinessListener(p dataplane.Proxy) *listenerv3.Listener {
	routes := []*routev3.Route{{
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/ready"}},
		Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 200}},
	}}
	paths := make([]string, 0, len(p.AppProbes))
	for path := range p.AppProbes {
		paths = append(paths, path)
	}
	sortStrings(paths)
	for _, path := range paths {
		probe := p.AppProbes[path]
		routes = append(routes, &routev3.Route{
			Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: path}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: appProbeCluster(probe)},
				PrefixRewrite:    probe.Path,
				Timeout:          durationpb.New(time.Duration(max(probe.TimeoutSeconds, 1)) * time.Second),
			}},
		})
	}
	rc := &routev3.RouteConfiguration{Name: dataplane.ReadinessListener, VirtualHosts: []*routev3.VirtualHost{{
		Name: dataplane.ReadinessListener, Domains: []string{"*"}, Routes: routes,
	}}}
	l := plainHTTPListener(dataplane.ReadinessListener, dataplane.ReadinessPort, rc)
	if len(paths) > 0 {
		// The probe clusters send to the address the kubelet probed (the
		// pod IP), which original_dst makes the connection's restored
		// local address.
		l.ListenerFilters = []*listenerv3.ListenerFilter{listenerFilter("envoy.filters.listener.original_dst", &origdstv3.OriginalDst{})}
	}
	return l
}

// appProbeCluster reaches the application's probe port on localhost.
func appProbeCluster(p dataplane.AppProbe) string {
	return fmt.Sprintf("app-probe|%d|%s", p.Port, strings.ToLower(p.Scheme))
}

// statsListener exposes only the admin endpoint's Prometheus page, so that
// scraping never opens the rest of the admin API beyond localhost.
func statsListener() *listenerv3.Listener {
	rc := &routev3.RouteConfiguration{Name: dataplane.StatsListener, VirtualHosts: []*routev3.VirtualHost{{
		Name: dataplane.StatsListener, Domains: []string{"*"},
		Routes: []*routev3.Route{{
			Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: dataplane.StatsPath}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: AdminCluster},
			}},
		}},
	}}}
	return plainHTTPListener(dataplane.StatsListener, dataplane.StatsPort, rc)
}

// AdminCluster is the proxy's own admin endpoint on localhost.
const AdminCluster = "admin"

func plainHTTPListener(name string, port uint32, rc *routev3.RouteConfiguration) *listenerv3.Listener {
	h := &hcmv3.HttpConnectionManager{
		StatPrefix:     name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: rc},
		HttpFilters:    []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})}}},
	}
	return &listenerv3.Listener{
		Name:    name,
		Address: socketAddress("0.0.0.0", port),
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(h)},
		}}}},
	}
}

func listenerFilter(name string, cfg proto.Message) *listenerv3.ListenerFilter {
	return &listenerv3.ListenerFilter{Name: name, ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(cfg)}}
}
