package envoy

import (
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/weftmesh/weft/translator/ir"
)

// PreferLocality is a Service's load assignment as a client at (region,
// zone) should see it under locality-aware routing (docs/design/171):
// localities in the client's zone get priority 0, the rest of its region
// priority 1, everything else priority 2. Both Envoy and gRPC-Go send
// every request to the highest priority that can take it and fail over
// to the next when it cannot (Envoy: by the share of healthy or
// non-ejected hosts times the overprovisioning factor, 1.4 by default;
// gRPC-Go's priority balancer: when a priority is in TRANSIENT_FAILURE or
// not READY within 10 s).
//
// A tier with no locality is skipped, so the priorities stay contiguous
// from 0: gRPC-Go NACKs an assignment with a gap (xdsresource
// unmarshal_eds.go: "priority %v missing"), and Envoy would count an
// empty level as unhealthy anyway. Locality weights are kept (they follow
// endpoint counts within a priority). The input, shared by every client,
// is not modified. With no zone known, or every locality in one tier, it
// is returned as it is.
func PreferLocality(cla *endpointv3.ClusterLoadAssignment, region, zone string) *endpointv3.ClusterLoadAssignment {
	if zone == "" || cla == nil {
		return cla
	}
	tier := func(loc *endpointv3.LocalityLbEndpoints) int {
		l := loc.GetLocality()
		switch {
		case l.GetZone() == zone && (l.GetRegion() == region || l.GetRegion() == "" || region == ""):
			return 0
		case region != "" && l.GetRegion() == region:
			return 1
		}
		return 2
	}
	var present [3]bool
	for _, loc := range cla.GetEndpoints() {
		present[tier(loc)] = true
	}
	var prio [3]uint32
	next, used := uint32(0), 0
	for t := range present {
		if present[t] {
			prio[t] = next
			next++
			used++
		}
	}
	if used < 2 {
		return cla
	}
	out := &endpointv3.ClusterLoadAssignment{ClusterName: cla.GetClusterName(), Policy: cla.GetPolicy(), NamedEndpoints: cla.GetNamedEndpoints()}
	for _, loc := range cla.GetEndpoints() {
		c := &endpointv3.LocalityLbEndpoints{
			Locality:            loc.GetLocality(),
			LbEndpoints:         loc.GetLbEndpoints(),
			LoadBalancingWeight: loc.GetLoadBalancingWeight(),
			Priority:            prio[tier(loc)],
			Proximity:           loc.GetProximity(),
		}
		out.Endpoints = append(out.Endpoints, c)
	}
	return out
}

// portAssignment is the assignment of port that this proxy holds: with
// priorities by its locality when the port prefers the caller's zone and
// the proxy's zone is known (callerLoadAssignment), the shared one
// otherwise.
func (v *view) portAssignment(name string, port *ir.Port, f family) *endpointv3.ClusterLoadAssignment {
	return callerLoadAssignment(name, port, f, v.proxy.Region, v.proxy.Zone)
}

// localityKey is the caller locality that the view's upstream assignments
// depend on, which Shared keys its entries by: the proxy's, when its zone
// is known and a Service port it holds a cluster of prefers the caller's
// zone; empty otherwise, so that meshes and proxies without such a port
// share entries as before.
func (v *view) localityKey() (region, zone string) {
	if v.proxy.Zone == "" || v.shared != nil && !v.shared.prefersLocalZone() {
		return "", ""
	}
	for _, up := range v.upstreams() {
		if up.port.PrefersLocalZone() {
			return v.proxy.Region, v.proxy.Zone
		}
	}
	return "", ""
}

// PrefersLocalZone says whether some Service port of the mesh prefers the
// caller's zone: only then does a proxy's zone change what it is given.
func PrefersLocalZone(m *ir.Mesh) bool { return meshPrefersLocalZone(m) }

func meshPrefersLocalZone(m *ir.Mesh) bool {
	if m == nil {
		return false
	}
	for _, svc := range m.Services {
		for _, p := range svc.Ports {
			if p.PrefersLocalZone() {
				return true
			}
		}
	}
	return false
}
