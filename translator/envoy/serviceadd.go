package envoy

import (
	"net/netip"
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator/ir"
)

// ServiceAddition is a change that only adds Services, each of which, for
// a sidecar that can reach it, adds its own resources and changes no
// other (docs/design/186): per port and chain family, its cluster, its
// endpoints, its listener (docs/design/182) and, for HTTP, its route
// configuration. The xDS server adds those to each group's configuration
// instead of building it again, as it patches routes (RouteChange) and
// endpoints (EndpointChange).
//
// What a Service's presence reaches in Build — each either re-derived
// here, or excluded by a condition that makes the change (or one proxy's
// part of it) be built in full:
//
//  1. its clusters and endpoints (sidecarUpstreams, per chain family):
//     re-derived with the view's own functions. Their retry budgets come
//     from the routes that send to them: none may but its own, which may
//     carry no retry (no budget anywhere changes).
//  2. its listeners (serviceListener) at its cluster IPs: re-derived. The
//     addresses must be nobody else's — no other Service's cluster IP or
//     headless endpoint, no proxy address — so that no claim
//     (claimPrefixes) or refusal chain of the capture listener moves.
//  3. the capture listener's Host-routed chain, http_inspector and the
//     per-port route configuration "<port>" of each HTTP port number:
//     unchanged only if another Service the proxy reaches already has an
//     HTTP port of that number (the chains are in port order, whatever
//     the order of the Services that bring them); else built.
//  4. its route configurations (destRoute): re-derived, through Shared.
//  5. the policies the configuration carries: it may carry none
//     (servicePolicies: no TrafficSplit, RetryPolicy, HTTPRoute or
//     BackendTrafficPolicy of its own), and no other Service's routes or
//     TCP splits may send to it (their policies would reach it).
//  6. the view: it must be in the proxy's outbound list (visible and
//     reachable: else the capture listener refuses it), must not select
//     the proxy's workload (its inbound side would change), and carries
//     no AuthPolicy (mayReach of others reads those). Dependencies and
//     namespace dependencies are re-derived from the new view. A Service
//     out of the proxy's scope (not Visible) is read by Build only as a
//     refusal (newView skips it before anything else): its addresses
//     join the capture listener's refusal chains, so the capture listener
//     is built again, as Build builds it (docs/design/198).
//  7. mesh-wide: no change but added Services (ir.Change), and whether the
//     mesh prefers local zones (locality) unchanged.
//
// Headless Services, Services without a cluster IP, ports on the capture
// port and proxyless gRPC clients are built in full.
type ServiceAddition struct {
	mesh  *ir.Mesh
	added []*ir.Service
	// guarded is view.guarded of mesh, computed once for every proxy.
	guarded map[string][]*ir.Service
}

// ProxyAddition is what a ServiceAddition adds to one proxy's
// configuration: resources, and dependencies (Service keys and
// namespaces, some perhaps held already).
type ProxyAddition struct {
	Clusters      []*clusterv3.Cluster
	Endpoints     []*endpointv3.ClusterLoadAssignment
	Listeners     []*listenerv3.Listener
	Routes        []*routev3.RouteConfiguration
	Deps          []ir.ServiceKey
	NamespaceDeps []string
	// Capture, when set, replaces the proxy's capture listener: an added
	// Service it does not hold changes that listener's refusal chains
	// (perhaps not at all: an unmeshed one under AllowAny is not listed).
	Capture *listenerv3.Listener
}

// NewServiceAddition prepares the change from prev to next, whose
// difference is ch (ir.Diff), or returns nil when it is not an addition
// of Services as the list above defines it.
func NewServiceAddition(prev, next *ir.Mesh, ch *ir.Change) *ServiceAddition {
	if prev == nil || next == nil || ch.MeshWide || len(ch.Namespaces) > 0 || len(ch.Services) == 0 {
		return nil
	}
	if meshPrefersLocalZone(prev) != meshPrefersLocalZone(next) {
		return nil
	}
	a := &ServiceAddition{mesh: next}
	added := map[ir.ServiceKey]bool{}
	for _, sc := range ch.Services {
		if sc.Old != nil || sc.New == nil || !addable(next, sc.New) {
			return nil
		}
		a.added = append(a.added, sc.New)
		added[sc.Key] = true
	}
	// Addresses of every other Service (cluster IPs, headless endpoints),
	// and whether any other Service sends to an added one (5).
	taken := map[netip.Addr]bool{}
	for _, svc := range next.Services {
		if added[svc.Key] {
			continue
		}
		for _, port := range svc.Ports {
			for _, p := range tcpPrefixes(svc, port) {
				taken[p.Addr().Unmap()] = true
			}
			if sendsTo(port, added) {
				return nil
			}
		}
	}
	for _, svc := range a.added {
		for _, p := range tcpPrefixes(svc, svc.Ports[0]) {
			if taken[p.Addr().Unmap()] {
				return nil
			}
			taken[p.Addr().Unmap()] = true // two added Services may not share one either
		}
	}
	a.guarded = guardedServices(next)
	return a
}

// addable says whether svc, on its own, is a Service whose addition
// NewServiceAddition can derive (1, 2, 5, 6).
func addable(mesh *ir.Mesh, svc *ir.Service) bool {
	if svc.Headless || len(svc.ClusterIPs) == 0 || len(svc.Ports) == 0 || len(svc.AuthPolicies) > 0 || svc.HasConsumers() {
		return false
	}
	for _, port := range svc.Ports {
		if port.Port == dataplane.OutboundPort || port.Retry != nil || len(port.TCPBackends) > 0 || port.Backend != nil || port.RateLimit != nil {
			return false
		}
		for _, r := range port.Routes {
			if r.Retry != nil {
				return false
			}
			for _, b := range r.Targets() {
				if b.Service != svc.Key || b.Unresolved {
					return false
				}
			}
		}
	}
	carries := false
	servicePolicies(mesh, svc, anyCaller, func(ir.PolicyRef) { carries = true })
	return !carries
}

// sendsTo says whether a route of port (for any caller) or its TCP split
// sends to one of the Services keyed.
func sendsTo(port *ir.Port, keys map[ir.ServiceKey]bool) bool {
	for _, b := range port.TCPBackends {
		if keys[b.Service] {
			return true
		}
	}
	routes := slices.Clone(port.Routes)
	for _, c := range port.Consumers {
		routes = append(routes, c.Routes...)
	}
	for _, r := range routes {
		for _, b := range r.Targets() {
			if keys[b.Service] {
				return true
			}
		}
	}
	return false
}

// Held is what ForProxy reads of the configuration a group holds: whether
// it has a route configuration of that name (an HTTP port number its
// view held has its per-port one, "<port>": routeConfigs).
type Held struct {
	RouteConfig func(name string) bool
}

// ForProxy returns what the addition adds to the configuration of a
// group of proxy p built from the model before it, through s (a Shared of
// the model after it, so that groups share the messages), or ok false
// when p's configuration changes otherwise and must be built.
//
// It reads the added Services alone, not the proxy's whole view: the
// addition changes nothing else in it (no Service it held becomes
// visible, reachable or served differently: the added ones carry no
// AuthPolicy, which is all mayReach reads of other Services), so the new
// view is the old one with the added Services, and what the old one held
// is in the group's configuration (held). A group costs O(added), not
// O(Services in the mesh) — but for an added Service out of its scope:
// then the new capture listener (Capture) takes the whole view, and is
// built once per view entry (the proxies of a namespace share it).
func (a *ServiceAddition) ForProxy(s *Shared, p dataplane.Proxy, held Held) (add *ProxyAddition, ok bool) {
	if p.Kind != dataplane.KindSidecar {
		return nil, false
	}
	// The parts of a view that the added Services' resources and
	// mayReach read (newView computes the rest for every Service).
	v := &view{mesh: a.mesh, proxy: p, id: p.Identity(a.mesh.TrustDomain), mtls: a.mesh.DefaultMTLS,
		namespaces: map[string]bool{}, guarded: a.guarded, shared: s}
	if ns := a.mesh.Namespaces[p.Namespace]; ns != nil {
		v.mtls = ns.MTLS
	}
	own := map[netip.Addr]bool{}
	for _, ip := range p.IPs {
		if addr, err := netip.ParseAddr(ip); err == nil {
			own[addr.Unmap()] = true
		}
	}
	add = &ProxyAddition{}
	refused := false
	for _, svc := range a.added {
		if !Visible(svc, p) {
			// Out of the proxy's scope: Build reads nothing of it but
			// its addresses, which the capture listener refuses (or,
			// unmeshed under RegistryOnly, passes: refusalChains) (6).
			refused = true
			continue
		}
		// Reached (else the capture listener refuses it by policy, and
		// what mayReach consulted differs), and not served by the
		// proxy's workload (else its inbound side changes) (6).
		if !v.mayReach(svc) || (svc.Key.Namespace == p.Namespace && selects(svc.Selector, p.Labels)) {
			return nil, false
		}
		v.namespaces[svc.Key.Namespace] = true
		add.Deps = append(add.Deps, svc.Key)
		// No family in common with the proxy's pod: no chain, so no
		// listener, cluster or route configuration; a dependency still.
		fams := v.chainFamilies(svc)
		for _, port := range svc.Ports {
			if port.Protocol.IsHTTP() && !held.RouteConfig(routeConfigName(port.Port)) {
				return nil, false // a new Host-routed chain and route configuration (3)
			}
			// Clusters and endpoints, as sidecarUpstreams makes them for
			// an upstream of these families (contentFamily, sorted).
			var cfs []family
			for _, f := range fams {
				if cf := contentFamily(svc, f); !slices.Contains(cfs, cf) {
					cfs = append(cfs, cf)
				}
			}
			slices.Sort(cfs)
			for _, f := range cfs {
				name := familyClusterName(svc, port.Port, f)
				c := v.upstreamCluster(name, svc, port, nil)
				c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
				c.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsConfig()}
				c.TransportSocketMatches = upstreamTLS(port)
				add.Clusters = append(add.Clusters, c)
				add.Endpoints = append(add.Endpoints, v.portAssignment(name, port, f))
			}
			for _, f := range fams {
				addrs := familyOf(tcpPrefixes(svc, port), f)
				for _, pfx := range addrs {
					if own[pfx.Addr().Unmap()] {
						return nil, false
					}
				}
				if len(addrs) > 0 {
					add.Listeners = append(add.Listeners, v.sharedServiceListener(serviceListenerSpec{svc, port, f, addrs}))
				}
				if port.Protocol.IsHTTP() {
					add.Routes = append(add.Routes, v.sharedDestRoute(svc, port, f))
				}
			}
		}
	}
	// mayReach read these Services' AuthPolicies (they share the added
	// Services' pods): the configuration now depends on them too.
	for k := range v.consulted {
		add.Deps = append(add.Deps, k)
	}
	for ns := range v.namespaces {
		add.NamespaceDeps = append(add.NamespaceDeps, ns)
	}
	if refused {
		// As Build makes it, through s: once per view entry (the
		// proxies of one namespace share it), not per group.
		full := newView(a.mesh, p)
		full.shared = s
		add.Capture = full.sharedCapture().l
	}
	return add, true
}
