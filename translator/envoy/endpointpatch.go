package envoy

import (
	"reflect"
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator/ir"
)

// EndpointChange is an endpoint-only change of one Service — the same
// Service with new endpoints, as translator.UpdateEndpoints makes it —
// prepared once for every proxy that holds the Service, so that the xDS
// server can derive each proxy's next configuration from its current one
// instead of building it again.
//
// Build reads a port's endpoints in four places:
//
//  1. its ClusterLoadAssignment (every EDS port): Assignments, the same for
//     every proxy that holds it;
//  2. the identities of its meshed endpoints, which its cluster's upstream
//     TLS names (sidecars: the transport socket matches; gRPC: the
//     transport socket): TLSClusters and PatchCluster, the same for every
//     proxy of a kind given the cluster it held;
//  3. a headless Service's endpoints, each of which has a chain in a
//     sidecar's outbound listener and a cluster;
//  4. for a named target port of a Service the proxy serves, the endpoint
//     at the proxy's own address (the container port of its inbound
//     listener and cluster).
//
// Local says whether a proxy's configuration changes only through 1 and 2;
// for the others (3, 4, or a change that is not endpoint-only) it must be
// built again.
type EndpointChange struct {
	// Service is the changed Service.
	Service ir.ServiceKey
	// Assignments are the new ClusterLoadAssignments, by cluster name, of
	// the EDS ports whose endpoints changed: exactly what Build gives any
	// proxy that holds that cluster.
	Assignments map[string]*endpointv3.ClusterLoadAssignment

	old, new *ir.Service
	// endpointsOnly: old and new differ in nothing but endpoints.
	endpointsOnly bool
	// headlessMoved: a headless Service's endpoint addresses changed.
	headlessMoved bool
	// tls: the ports, by cluster name, whose meshed endpoints' identities
	// (in the order upstream TLS lists them) changed.
	tls map[string]*ir.Port
	// local: the ports (and families), by cluster name, whose callers
	// prefer their own zone: a caller whose zone is known holds its own
	// variant of the assignment (Assignment), not Assignments'.
	local map[string]localPort
}

type localPort struct {
	port *ir.Port
	fam  family
}

// NewEndpointChange prepares the change of one Service from old to new
// (both non-nil, with the same key).
func NewEndpointChange(old, new *ir.Service) *EndpointChange {
	c := &EndpointChange{Service: new.Key, old: old, new: new,
		Assignments: map[string]*endpointv3.ClusterLoadAssignment{}, tls: map[string]*ir.Port{}}
	c.endpointsOnly = old.Key == new.Key && sameButEndpoints(old, new)
	if !c.endpointsOnly {
		return c
	}
	for i, np := range new.Ports {
		op := old.Ports[i]
		if reflect.DeepEqual(op.Endpoints, np.Endpoints) {
			continue
		}
		if new.Headless {
			// No EDS: sidecars have a chain and a cluster per endpoint
			// (headlessChains), which read its address, port, identity
			// and whether it is meshed (not readiness: a pod's peers dial
			// it whether ready or not): such a change is built again.
			if !sameHeadless(op.Endpoints, np.Endpoints) {
				c.headlessMoved = true
			}
			continue
		}
		// A dual-stack Service has a cluster per family (docs/design/064).
		for _, f := range contentFamilies(new) {
			name := familyClusterName(new, np.Port, f)
			c.Assignments[name] = portLoadAssignment(name, np, f)
			if np.PrefersLocalZone() {
				if c.local == nil {
					c.local = map[string]localPort{}
				}
				c.local[name] = localPort{np, f}
			}
			if !equalStrings(meshedIdentities(op), meshedIdentities(np)) {
				c.tls[name] = np
			}
		}
	}
	return c
}

// Localized says whether the assignment of cluster name (one of
// Assignments) that a proxy holds depends on the proxy's locality: its
// port prefers the caller's zone (docs/design/171).
func (c *EndpointChange) Localized(name string) bool {
	_, ok := c.local[name]
	return ok
}

// Assignment is the new assignment of cluster name (one of Assignments)
// as Build gives it to proxy p: Assignments[name], or, for a port that
// prefers the caller's zone and a proxy whose zone is known, its variant
// with priorities by p's locality — patching in the shared one would
// undo them.
func (c *EndpointChange) Assignment(name string, p dataplane.Proxy) *endpointv3.ClusterLoadAssignment {
	if lp, ok := c.local[name]; ok && p.Zone != "" {
		return callerLoadAssignment(name, lp.port, lp.fam, p.Region, p.Zone)
	}
	return c.Assignments[name]
}

// Local says whether, for proxy p, the change alters nothing but the
// Assignments and the TLSClusters that p's configuration holds. The set of
// resources p holds does not change then (an endpoint-only change alters
// no one's view), so the names p holds are the ones to replace.
func (c *EndpointChange) Local(p dataplane.Proxy) bool {
	if !c.endpointsOnly {
		return false
	}
	if c.headlessMoved && p.Kind == dataplane.KindSidecar {
		return false // gRPC skips headless Services altogether
	}
	if c.new.Key.Namespace == p.Namespace && selects(c.new.Selector, p.Labels) {
		for i, np := range c.new.Ports {
			if !slices.Equal(servedPorts(c.old.Ports[i], p), servedPorts(np, p)) {
				return false // its inbound ports moved
			}
		}
	}
	return true
}

// TLSClusters names the clusters whose upstream TLS the change alters:
// proxies that hold one need it re-derived with PatchCluster.
func (c *EndpointChange) TLSClusters() []string {
	out := make([]string, 0, len(c.tls))
	for name := range c.tls {
		out = append(out, name)
	}
	sortStrings(out)
	return out
}

// PatchCluster returns cl, one of TLSClusters as Build made it before the
// change for a proxy of kind, as Build makes it after: the same cluster
// (circuit breakers, retry budget and protocol options depend on the
// proxy's routes, which the change leaves alone) with its upstream TLS
// naming the new endpoints' identities. cl is not modified.
func (c *EndpointChange) PatchCluster(cl *clusterv3.Cluster, kind dataplane.ProxyKind) *clusterv3.Cluster {
	port := c.tls[cl.GetName()]
	if port == nil {
		return cl
	}
	out := proto.Clone(cl).(*clusterv3.Cluster)
	if kind == dataplane.KindGRPC {
		out.TransportSocket = grpcUpstreamTLS(port)
	} else {
		out.TransportSocketMatches = upstreamTLS(port)
	}
	return out
}

// sameButEndpoints compares two versions of a Service ignoring their
// ports' endpoints, with reflect.DeepEqual as ir.Diff does, so a field
// added to the model later is compared too.
func sameButEndpoints(a, b *ir.Service) bool {
	if len(a.Ports) != len(b.Ports) {
		return false
	}
	strip := func(s *ir.Service) ir.Service {
		out := *s
		out.Ports = make([]*ir.Port, len(s.Ports))
		for i, p := range s.Ports {
			q := *p
			q.Endpoints = nil
			out.Ports[i] = &q
		}
		return out
	}
	x, y := strip(a), strip(b)
	return reflect.DeepEqual(&x, &y)
}

// sameHeadless: the endpoints agree on what headlessChains reads.
func sameHeadless(a, b []ir.Endpoint) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.Address != y.Address || x.Port != y.Port || x.Identity != y.Identity || x.Meshed != y.Meshed {
			return false
		}
	}
	return true
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
