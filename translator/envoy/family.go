package envoy

import (
	"fmt"
	"net/netip"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator/ir"
)

// family is the IP family a Service is reached over (docs/design/064):
// the family of the cluster IP a sidecar's filter chain matched, or for
// what no cluster IP chose (routing by Host, proxyless gRPC) the proxy's
// preferred one.
type family uint8

const (
	famAny family = iota // a cluster's content: every endpoint
	fam4
	fam6
)

// dualStack: the Service has cluster IPs of both families. kube-proxy
// sends a connection to each over the endpoints of its own family, so its
// ports get one cluster per family: the usual name holds its IPv4
// endpoints, familyClusterName(..., fam6) its IPv6 ones.
func dualStack(svc *ir.Service) bool {
	if svc == nil || svc.Headless {
		return false
	}
	var v4, v6 bool
	for _, ip := range svc.ClusterIPs {
		switch addrFamily(ip) {
		case fam4:
			v4 = true
		case fam6:
			v6 = true
		}
	}
	return v4 && v6
}

// addrFamily is an address's family, famAny when it does not parse.
func addrFamily(addr string) family {
	a, err := netip.ParseAddr(addr)
	switch {
	case err != nil:
		return famAny
	case a.Unmap().Is4():
		return fam4
	default:
		return fam6
	}
}

// contentFamily is what svc's cluster reached over f holds: every
// endpoint of a single-stack Service (they are all of its family), the
// endpoints of family f of a dual-stack one (fam4 when f is famAny).
func contentFamily(svc *ir.Service, f family) family {
	if !dualStack(svc) {
		return famAny
	}
	if f == fam6 {
		return fam6
	}
	return fam4
}

// familyClusterName is the cluster of svc's port reached over f: a
// dual-stack Service's IPv6 endpoints are outbound|<port>|ipv6|<hostname>
// (the subset position, as headless clusters use it for an address);
// every other cluster keeps ir.ClusterName.
func familyClusterName(svc *ir.Service, port int32, f family) string {
	if contentFamily(svc, f) == fam6 {
		return fmt.Sprintf("outbound|%d|ipv6|%s", port, svc.Key.Hostname())
	}
	return ir.ClusterName(svc.Key, port)
}

// contentFamilies are the clusters a dual-stack Service's port has (one
// per family), [famAny] for any other Service.
func contentFamilies(svc *ir.Service) []family {
	if dualStack(svc) {
		return []family{fam4, fam6}
	}
	return []family{famAny}
}

// keep says whether an endpoint at addr belongs in a cluster of content
// family f.
func (f family) keep(addr string) bool {
	return f == famAny || addrFamily(addr) == f
}

// proxyFamilies are the families of the proxy's pod; both when its
// addresses are unknown.
func (v *view) proxyFamilies() (v4, v6 bool) { return proxyFamilies(v.proxy) }

func proxyFamilies(p dataplane.Proxy) (v4, v6 bool) {
	v4, v6 = podFamilies(p.IPs)
	if !v4 && !v6 {
		return true, true
	}
	return v4, v6
}

// preferred is the family a proxy reaches a Service over when no cluster
// IP chose one: IPv4 when its pod has an IPv4 address (or its addresses
// are unknown), else IPv6.
func (v *view) preferred() family {
	if v4, _ := v.proxyFamilies(); v4 {
		return fam4
	}
	return fam6
}

// chainFamilies are the families whose cluster IPs of svc get filter
// chains (and clusters) in the proxy: those of the proxy's pod (its
// application cannot connect to an address of another family, so such a
// chain would never match, and the proxy is never handed endpoints it has
// no address to reach): for a dual-stack Service, one per family the pod
// has; for a single-stack one, its own family if the pod has it, else
// none; famAny for a Service without a cluster IP. A proxyless gRPC
// client has no chains: it reaches every Service over its preferred
// family.
func (v *view) chainFamilies(svc *ir.Service) []family { return chainFamilies(v.proxy, svc) }

// chainFamilies is view.chainFamilies for proxy p (it reads only p's
// addresses and kind).
func chainFamilies(p dataplane.Proxy, svc *ir.Service) []family {
	v4, v6 := proxyFamilies(p)
	if !dualStack(svc) {
		if len(svc.ClusterIPs) > 0 && !svc.Headless {
			f := addrFamily(svc.ClusterIPs[0])
			if p.Kind != dataplane.KindGRPC && ((f == fam4 && !v4) || (f == fam6 && !v6)) {
				return nil
			}
			return []family{f}
		}
		return []family{famAny}
	}
	var out []family
	if v4 {
		out = append(out, fam4)
	}
	if v6 {
		out = append(out, fam6)
	}
	return out
}

// familyOf filters prefixes to family f (famAny: all).
func familyOf(ps []netip.Prefix, f family) []netip.Prefix {
	if f == famAny {
		return ps
	}
	var out []netip.Prefix
	for _, p := range ps {
		if (p.Addr().Unmap().Is4() && f == fam4) || (!p.Addr().Unmap().Is4() && f == fam6) {
			out = append(out, p)
		}
	}
	return out
}

// backendCluster is the cluster of a backend reached over f; missing
// backends share the black hole, which has no endpoints, so their
// requests get 503.
func backendClusterOf(mesh *ir.Mesh, b ir.Backend, f family) string {
	if b.Unresolved {
		return dataplane.BlackHoleCluster
	}
	if bs := mesh.Service(b.Service); bs != nil {
		return familyClusterName(bs, b.Port, f)
	}
	return ir.ClusterName(b.Service, b.Port)
}

// familySubset is what a chain of svc's family f carries where a subset
// would be: "ipv6" for a dual-stack Service's IPv6 chain, "" otherwise.
func familySubset(svc *ir.Service, f family) string {
	if contentFamily(svc, f) == fam6 {
		return "ipv6"
	}
	return ""
}
