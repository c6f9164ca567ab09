package envoy

import (
	"fmt"
	"net/netip"
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
	if len(a.ClusterIPs) == 0 && len(b.ClusterIPs) == 0 {
		return true // headless: never refused by address
	}
	if Unmeshed(a) != Unmeshed(b) || len(a.ClusterIPs) != len(b.ClusterIPs) || len(a.Ports) != len(b.Ports) {
		return false
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

// refusalAddrs counts the cluster IPs of whichever of a, b is set (one of
// them is nil): a Service without any never appears in a refusal.
func refusalAddrs(a, b *ir.Service) int {
	if a == nil {
		a = b
	}
	return len(a.ClusterIPs)
}

// refusalChains are the outbound listener's chains for refused (and,
// under RegistryOnly, passed) Services: one per reason and port, matching
// the port and the Services' cluster IPs, more specific than the port's
// HTTP chain (which matches any address). Headless Services have no
// cluster IP and are not listed (their pods' addresses change with every
// endpoint change).
func (v *view) refusalChains(claimed map[netip.Prefix]map[int32]bool) []*listenerv3.FilterChain {
	type key struct {
		reason refusalReason
		port   int32
		http   bool
	}
	ranges := map[key][]*corev3.CidrRange{}
	for _, r := range v.refused {
		for _, port := range r.svc.Ports {
			for _, ip := range r.svc.ClusterIPs {
				a, err := netip.ParseAddr(ip)
				if err != nil {
					continue
				}
				p := netip.PrefixFrom(a, a.BitLen())
				if claimed[p] == nil {
					claimed[p] = map[int32]bool{}
				}
				if claimed[p][port.Port] {
					continue // a filter chain match may appear once
				}
				claimed[p][port.Port] = true
				k := key{r.reason, port.Port, port.Protocol.IsHTTP()}
				ranges[k] = append(ranges[k], &corev3.CidrRange{AddressPrefix: a.String(), PrefixLen: wrapperspb.UInt32(uint32(p.Bits()))})
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
