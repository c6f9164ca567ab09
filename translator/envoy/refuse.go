package envoy

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator/ir"
)

// Scoping shrinks a proxy's configuration; it must never change what
// happens to a request (docs/design/055). A meshed Service the proxy does
// not hold — outside its scope (weft.dev/export-to), or dropped because
// its AuthPolicies certainly refuse the proxy (mayReach) — would otherwise
// fall to the outbound default chain and leave in plaintext: past a
// Permissive server's identity-based rules, or closed by a Strict one with
// no word. Instead the caller's own sidecar refuses it, by destination
// address: on an HTTP port with a 403 whose body names the reason, on a
// TCP port with a reset through the black hole, counted under the chain's
// stat prefix and written to the access log when it is on.
//
// Under RegistryOnly, the unmeshed Services a proxy does not hold are
// still Services of the cluster: they pass through (kubernetes.default,
// kube-dns over TCP), never blackholed.

// refusalReason is why a proxy does not hold a Service.
type refusalReason int

const (
	// refusedOutOfScope: not exported to the proxy's namespace.
	refusedOutOfScope refusalReason = iota
	// refusedByPolicy: its AuthPolicies refuse every request of the proxy.
	refusedByPolicy
	// passedUnmeshed: an unmeshed Service the proxy does not hold; only
	// listed under RegistryOnly, where it passes through.
	passedUnmeshed
)

func (r refusalReason) name() string {
	switch r {
	case refusedOutOfScope:
		return "out_of_scope"
	case refusedByPolicy:
		return "denied"
	}
	return "unmeshed"
}

// body is the 403's body: what a developer reading a failed call needs.
func (r refusalReason) body() string {
	switch r {
	case refusedOutOfScope:
		return "weft: this Service is not exported to the caller's namespace (annotation weft.dev/export-to on the Service or its namespace); the caller's sidecar refused the call\n"
	default:
		return "weft: an AuthPolicy of this Service denies every request from the caller's identity; the caller's sidecar refused the call\n"
	}
}

// refusal is a Service the proxy does not hold, with why.
type refusal struct {
	svc    *ir.Service
	idx    int // in mesh.Services
	reason refusalReason
}

// Unmeshed says whether svc has endpoints and none of them has a sidecar.
// Only such a Service passes (under RegistryOnly) when a proxy does not
// hold it; any other is refused: one with a meshed endpoint must never get
// plaintext, and one with no endpoint fails anyway, so a refusal that names
// the reason is clearer — and it stays the same while a meshed Service
// scales to zero and back, so that endpoint change need not rebuild every
// proxy that does not hold it.
func Unmeshed(svc *ir.Service) bool {
	any := false
	for _, p := range svc.Ports {
		for _, e := range p.Endpoints {
			if e.Meshed {
				return false
			}
			any = true
		}
	}
	return any
}

// SameRefusal says whether a proxy that does not hold a Service would
// refuse or pass it the same way before and after a change: the Service's
// addresses, ports, protocols and whether it is Unmeshed. A change of any of
// them alters the outbound listener of proxies that do not hold it.
func SameRefusal(a, b *ir.Service) bool {
	if a == nil || b == nil {
		return a == nil && b == nil || refusalAddrs(a, b) == 0
	}
	if Unmeshed(a) != Unmeshed(b) || a.Headless != b.Headless || len(a.ClusterIPs) != len(b.ClusterIPs) || len(a.Ports) != len(b.Ports) {
		return false
	}
	if a.Headless {
		// refused by its meshed endpoints' addresses and ports (new-8)
		for i := range a.Ports {
			if a.Ports[i].Port != b.Ports[i].Port || a.Ports[i].Protocol != b.Ports[i].Protocol ||
				!slices.Equal(meshedTargets(a.Ports[i]), meshedTargets(b.Ports[i])) {
				return false
			}
		}
		return true
	}
	for i := range a.ClusterIPs {
		if a.ClusterIPs[i] != b.ClusterIPs[i] {
			return false
		}
	}
	for i := range a.Ports {
		if a.Ports[i].Port != b.Ports[i].Port || a.Ports[i].Protocol != b.Ports[i].Protocol {
			return false
		}
	}
	return true
}

// refusalAddrs counts the addresses a refusal of whichever of a, b is set
// (one of them is nil) would list: its cluster IPs, or for a headless
// Service its meshed endpoints. A Service without any never appears in a
// refusal.
func refusalAddrs(a, b *ir.Service) int {
	if a == nil {
		a = b
	}
	if a.Headless {
		n := 0
		for _, p := range a.Ports {
			n += len(meshedTargets(p))
		}
		return n
	}
	return len(a.ClusterIPs)
}

// target is one destination a refusal matches: an address and a port.
type target struct {
	addr netip.Addr
	port int32
}

// meshedTargets are the addresses and ports of a headless Service port's
// meshed endpoints, as callers dial them (the endpoint's port: nothing
// translates a headless Service's port), in endpoint order. Unmeshed
// endpoints are left out: a call to them is plaintext whether the proxy
// holds the Service or not.
func meshedTargets(p *ir.Port) []target {
	var out []target
	for _, e := range p.Endpoints {
		if !e.Meshed {
			continue
		}
		if a, err := netip.ParseAddr(e.Address); err == nil {
			out = append(out, target{a, e.Port})
		}
	}
	return out
}

// refusalChains are the outbound listener's chains for refused (and,
// under RegistryOnly, passed) Services: one per reason and port, matching
// the port and the Services' cluster IPs, more specific than the port's
// HTTP chain (which matches any address). A headless Service has no
// cluster IP: it is refused by its meshed endpoints' addresses and ports,
// of both families (new-8: its calls otherwise left in plaintext
// passthrough, past a Permissive server's identity-based Deny). An
// address and port a held Service claims (a headless twin the proxy
// holds) keeps the held chain. The proxy's own pod addresses stay in the
// list, so the listener stays shared: the application's calls to its own
// pod leave over lo and are never captured (capture: -o lo ... RETURN), so
// the refusal never sees them.
func (v *view) refusalChains(claimed map[netip.Prefix]map[int32]bool) []*listenerv3.FilterChain {
	type key struct {
		reason refusalReason
		port   int32
		http   bool
	}
	ranges := map[key][]*corev3.CidrRange{}
	add := func(r refusal, a netip.Addr, port int32, http bool) {
		p := netip.PrefixFrom(a, a.BitLen())
		if claimed[p] == nil {
			claimed[p] = map[int32]bool{}
		}
		if claimed[p][port] {
			return // a filter chain match may appear once
		}
		claimed[p][port] = true
		k := key{r.reason, port, http}
		ranges[k] = append(ranges[k], &corev3.CidrRange{AddressPrefix: a.String(), PrefixLen: wrapperspb.UInt32(uint32(p.Bits()))})
	}
	for _, r := range v.refused {
		for _, port := range r.svc.Ports {
			if r.svc.Headless {
				for _, t := range meshedTargets(port) {
					add(r, t.addr, t.port, port.Protocol.IsHTTP())
				}
				continue
			}
			for _, ip := range r.svc.ClusterIPs {
				if a, err := netip.ParseAddr(ip); err == nil {
					add(r, a, port.Port, port.Protocol.IsHTTP())
				}
			}
		}
	}
	keys := make([]key, 0, len(ranges))
	for k := range ranges {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a.reason != b.reason {
			return a.reason < b.reason
		}
		if a.port != b.port {
			return a.port < b.port
		}
		return !a.http && b.http
	})
	var out []*listenerv3.FilterChain
	for _, k := range keys {
		proto := "tcp"
		if k.http {
			proto = "http"
		}
		stat := fmt.Sprintf("outbound_%s_%d", k.reason.name(), k.port)
		fc := &listenerv3.FilterChain{
			Name:             fmt.Sprintf("outbound|%s|%s|%d", k.reason.name(), proto, k.port),
			FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(uint32(k.port)), PrefixRanges: ranges[k]},
		}
		switch {
		case k.reason == passedUnmeshed:
			fc.Filters = []*listenerv3.Filter{v.tcpProxy(stat, []ir.Backend{{Weight: 1}}, dataplane.PassthroughCluster)}
		case k.http:
			fc.Filters = []*listenerv3.Filter{v.hcm(stat, "", refusalRoute(k.reason, k.port), outbound)}
		default:
			fc.Filters = []*listenerv3.Filter{v.tcpProxy(stat, []ir.Backend{{Weight: 1}}, dataplane.BlackHoleCluster)}
		}
		out = append(out, fc)
	}
	return out
}

// refusalRoute answers every request with 403 and the reason.
func refusalRoute(r refusalReason, port int32) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{
		Name: fmt.Sprintf("outbound|%s|%d", r.name(), port),
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    r.name(),
			Domains: []string{"*"},
			Routes: []*routev3.Route{{
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
					Status: 403,
					Body:   &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: r.body()}},
				}},
			}},
		}},
	}
}
