package envoy

import (
	"maps"
	"reflect"
	"slices"
	"strconv"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator/ir"
)

// RouteChange is a change of routing policy only — TrafficSplits,
// RetryPolicies and HTTPRoutes, as they reach the model's ports' Routes
// and Retry — prepared once for every proxy, so that the xDS server can
// derive each proxy's next configuration from its current one instead of
// building it again (docs/design/101). It is the route counterpart of
// EndpointChange.
//
// What a Service port's routing (ir.Port.Routes, ir.Port.Retry) reaches
// in Build — the inputs of this fast path, listed as Istio's
// pilot/pkg/networking/core/cluster_cache.go lists the inputs of a cached
// cluster; each one is either re-derived here or makes the change, or one
// proxy's part of it, be built in full:
//
//  1. the route configuration of each HTTP port reached by the Service's
//     cluster IP, one per address family of its chains (destRoute): it
//     reads the port's routes and retry, the Service's key and port, and
//     of each backend its Service's address families (backendClusterOf)
//     and its port's hash key (hashPolicies, of its BackendTrafficPolicy),
//     nothing of the proxy. Re-derived from the new model: Routes, once
//     per change. (A backend's own change is not routing: see below.)
//  2. the virtual host of an HTTP port routed by Host (a headless Service,
//     one without a cluster IP, the capture port) in the per-port route
//     configuration, which collects such Services per proxy: not
//     patched (NewRouteChange returns nil).
//  3. proxyless gRPC: the port's route configuration (grpcRouteConfig,
//     one per namespace-locality and preferred family: RouteChange.GRPC)
//     and API listeners (grpcPort; their names do not change), the
//     clusters only a route gives (a TCP port's or headless Service's
//     backend, grpcRoutedClusters) and the BlackHole cluster of unresolved
//     backends: patched, unless such a cluster would come or go
//     (routeService.grpcBuild; forGRPC).
//  4. the clusters and endpoints of every resolved backend, per chain
//     family of the root (upstreams), and the dependency on the backend's
//     Service (Resources.Deps): unchanged while the Service's resolved
//     backends are the same. The Service's own ports are no change (a
//     Service in the view has their clusters anyway); another backend
//     added is none for a proxy that already holds its clusters and
//     depends on its Service; one removed is none for a proxy whose view
//     holds that backend's Service itself with those clusters (the usual
//     canary: both versions visible). Otherwise the proxy is built: whether
//     another of its routes still needs the backend is its whole view's
//     question.
//  5. the retry budget in each backend cluster's circuit breakers
//     (retryBudgets: the first tightest budget among the view's routes to
//     the cluster, unless the cluster's BackendTrafficPolicy caps
//     retries): unchanged while the Service's own contribution is
//     (serviceRetryBudgets; percent and minimum concurrency per cluster);
//     else the proxies that hold the Service are built.
//  6. the policies the configuration carries (Resources.Policies:
//     servicePolicies, which include the BackendTrafficPolicies of the
//     backends the routes send to), whose generations decide Programmed:
//     re-derived (ProxyRoutes.Policies). A policy one Service drops while
//     the model still carries it elsewhere makes the change be built,
//     unless it is a removed backend's traffic policy (4 keeps that
//     backend in the view of every patched proxy).
//  7. the set of Services a proxy routes to (its view: visibility and
//     AuthPolicies, mayReach) and its listeners (a chain names its
//     Service port's route configuration, which keeps its name): routing
//     reads neither. A Service is in a proxy's view exactly when the
//     proxy holds its route configurations, or, when its pod has no
//     address of the Service's families (no chain, so none), when
//     mayReach says so (inView).
//
// A Service with consumer routes (ir.Port.Consumers, GAMMA,
// docs/design/176) is routed differently for callers of each namespace
// that has some (its audiences) than for the others (audience ""): each
// item above is re-derived per audience — a route configuration per name
// and audience (DestRoute; GRPCRoute.consumer), and the backends, budgets
// and policies of each — and a proxy takes its namespace's, or "". A
// policy that one audience drops is treated as one Service dropping it
// (below), and a removed backend keeps no policy then.
//
// Everything else that a Service's change can touch — addresses, ports,
// protocols, selector, exportTo, AuthPolicies, BackendTrafficPolicies,
// endpoints, TCP backends —,
// any namespace's or mesh-wide setting, and a Service added or removed
// make NewRouteChange return nil: the change is built in full. A field
// added to ir.Service or ir.Port later falls there too (sameButRouting
// compares the rest by reflection). Adding an input of routes or of
// clusters to Build means adding it here.
type RouteChange struct {
	// Routes are the new route configurations (1) by name and audience, of
	// every Service port whose routing changed, for every family it may be
	// reached over: exactly what Build gives any proxy of that audience
	// that holds the name.
	Routes map[DestRoute]*routev3.RouteConfiguration
	// GRPC are the new route configurations of the same Service ports for
	// proxyless gRPC clients (3), one per variant a client may hold.
	GRPC map[GRPCRoute]*routev3.RouteConfiguration

	mesh     *ir.Mesh
	services []*routeService
	// gone: policy references the changed Services carried that are
	// nowhere in the new model, so in no proxy's configuration.
	gone map[ir.PolicyRef]bool
	// guarded is view.guarded of mesh, for inView.
	guarded map[string][]*ir.Service
}

// DestRoute names one variant of a Service port's route configuration
// for sidecars: its name, and the namespace of the callers it is for
// ("": every namespace without consumer routes on the port).
type DestRoute struct {
	Name     string
	Consumer string
}

// routeService is one Service whose routing changed.
type routeService struct {
	svc *ir.Service // as it is now
	// ports: the HTTP ports whose routing changed (all routed by address).
	ports []*ir.Port
	// probe: an HTTP port routed by address, nil if none: a proxy whose
	// chains reach the Service holds its route configuration exactly when
	// the Service is in its view.
	probe *ir.Port
	// audiences: what the change does for callers of each namespace with
	// consumer routes on the Service, before or after, and for the rest
	// ("").
	audiences map[string]*audience
}

// audience is what a change of one Service does for callers of one
// namespace.
type audience struct {
	// added, removed: resolved backends (service and port) of other
	// Services its routes send to now and did not before, and the reverse.
	added, removed []ir.Backend
	// budgets: its contribution to the retry budgets changed (5): proxies
	// that route to it are built.
	budgets bool
	// refs: the policies its routes carry now.
	refs []ir.PolicyRef
	// grpcBuild: what a gRPC client holds besides the route
	// configurations changes too (3): a backend that only a route gives a
	// cluster (a TCP port's, a headless Service's) removed, or an
	// unresolved backend (the BlackHole cluster) appearing or going.
	grpcBuild bool
}

// GRPCRoute names one variant of a Service port's route configuration for
// gRPC clients: its name, and what grpcRouteConfig reads of the proxy.
type GRPCRoute struct {
	Name     string
	local    bool
	fam      family
	consumer string
}

// NewRouteChange prepares the change from prev to next, whose difference
// is ch (ir.Diff), or returns nil when it is not one of routing policy
// alone, as the list above defines it.
func NewRouteChange(prev, next *ir.Mesh, ch *ir.Change) *RouteChange {
	if prev == nil || next == nil || ch.MeshWide || len(ch.Namespaces) > 0 || len(ch.Services) == 0 {
		return nil
	}
	c := &RouteChange{Routes: map[DestRoute]*routev3.RouteConfiguration{}, GRPC: map[GRPCRoute]*routev3.RouteConfiguration{}, mesh: next, gone: map[ir.PolicyRef]bool{}}
	stillCarried := map[ir.PolicyRef]bool{} // dropped by one Service, carried by another
	kept := map[ir.PolicyRef]bool{}         // dropped, but carried through a backend in the view
	for _, sc := range ch.Services {
		old, svc := sc.Old, sc.New
		if old == nil || svc == nil || !sameButRouting(old, svc) {
			return nil
		}
		s := &routeService{svc: svc, audiences: map[string]*audience{}}
		names := consumerNamespaces(old, svc)
		for i, np := range svc.Ports {
			op := old.Ports[i]
			if byDestination(svc, np) && s.probe == nil {
				s.probe = np
			}
			if reflect.DeepEqual(op.Routes, np.Routes) && reflect.DeepEqual(op.Consumers, np.Consumers) && reflect.DeepEqual(op.Retry, np.Retry) {
				continue
			}
			if !np.Protocol.IsHTTP() && len(op.Routes) == 0 && len(np.Routes) == 0 {
				// A TCP port's retry (a RetryPolicy on the Service sets
				// every port's): nothing reads it but the policies (6).
				continue
			}
			if !byDestination(svc, np) {
				return nil // routed by Host (2)
			}
			s.ports = append(s.ports, np)
			for _, a := range portAudiences(op, np) {
				for _, f := range chainFamilies(dataplane.Proxy{}, svc) { // a pod of both families: every chain
					name := destRouteName(svc, np, f)
					c.Routes[DestRoute{name, a}] = destRoute(next, svc, np, a, f)
				}
				for _, local := range []bool{false, true} {
					for _, f := range []family{fam4, fam6} {
						c.GRPC[GRPCRoute{grpcName(svc, np.Port), local, f, a}] = grpcRouteConfig(next, svc, np, local, a, f)
					}
				}
			}
		}
		for _, ns := range names {
			au := &audience{}
			s.audiences[ns] = au
			before, after := resolvedBackends(old, ns), resolvedBackends(svc, ns)
			for b := range after {
				if !before[b] && b.Service != svc.Key {
					au.added = append(au.added, b)
				}
			}
			for b := range before {
				if !after[b] && b.Service != svc.Key {
					au.removed = append(au.removed, b)
					if bs := next.Service(b.Service); bs != nil {
						if bp := bs.Port(b.Port); bp != nil && (bs.Headless || !bp.Protocol.IsHTTP()) {
							au.grpcBuild = true
						}
					}
				}
			}
			if hasUnresolved(old, ns) != hasUnresolved(svc, ns) || !maps.Equal(grpcRouteOnly(next, old, ns), grpcRouteOnly(next, svc, ns)) {
				au.grpcBuild = true
			}
			au.budgets = !sameBudgets(old, svc, ns)
			if len(names) == 1 {
				for _, b := range au.removed {
					// A removed backend's traffic policy: still carried
					// by every proxy ForProxy patches (it keeps the
					// backend in its view). Not with audiences: a
					// policy one drops may be another's.
					if bp := backendPort(next, b); bp != nil && bp.Backend != nil {
						kept[bp.Backend.Source] = true
					}
				}
			}
			was, is := map[ir.PolicyRef]bool{}, map[ir.PolicyRef]bool{}
			servicePolicies(prev, old, ns, func(r ir.PolicyRef) { was[r] = true })
			servicePolicies(next, svc, ns, func(r ir.PolicyRef) {
				if !is[r] {
					is[r] = true
					au.refs = append(au.refs, r)
				}
			})
			for r := range was {
				if !is[r] {
					c.gone[r] = true
				}
			}
		}
		c.services = append(c.services, s)
	}
	for r := range kept {
		delete(c.gone, r)
	}
	if len(c.gone) > 0 {
		for _, svc := range next.Services {
			servicePolicies(next, svc, anyCaller, func(r ir.PolicyRef) {
				if c.gone[r] {
					stillCarried[r] = true
				}
			})
		}
	}
	if len(stillCarried) > 0 {
		// A policy one Service (or one audience of it) no longer carries
		// while another still does (an HTTPRoute that lost one of its
		// parents to a TrafficSplit): which proxies carry it is their
		// whole view's question.
		return nil
	}
	c.guarded = guardedServices(next)
	return c
}

// consumerNamespaces are "" and the namespaces with consumer routes on a
// port of old or svc: the audiences of a change of the Service.
func consumerNamespaces(old, svc *ir.Service) []string {
	seen := map[string]bool{"": true}
	out := []string{""}
	for _, s := range []*ir.Service{old, svc} {
		for _, p := range s.Ports {
			for _, c := range p.Consumers {
				if !seen[c.Namespace] {
					seen[c.Namespace] = true
					out = append(out, c.Namespace)
				}
			}
		}
	}
	return out
}

// portAudiences are "" and the namespaces with consumer routes on the
// port before or after: those whose route configurations of it differ.
func portAudiences(op, np *ir.Port) []string {
	out := []string{""}
	for _, p := range []*ir.Port{op, np} {
		for _, c := range p.Consumers {
			if !slices.Contains(out, c.Namespace) {
				out = append(out, c.Namespace)
			}
		}
	}
	return out
}

// audienceOf is what the change of s does for callers in namespace ns.
func (s *routeService) audienceOf(ns string) *audience {
	if a := s.audiences[ns]; a != nil {
		return a
	}
	return s.audiences[""]
}

// inView says whether svc is among the Services p routes to (view.outbound):
// Visible, and not certainly refused by its AuthPolicies (mayReach), as
// newView decides. The change alters neither.
func (c *RouteChange) inView(p dataplane.Proxy, svc *ir.Service) bool {
	if !Visible(svc, p) {
		return false
	}
	v := &view{mesh: c.mesh, proxy: p, id: p.Identity(c.mesh.TrustDomain), guarded: c.guarded}
	return v.mayReach(svc)
}

// ProxyRoutes is what a RouteChange alters in one proxy's configuration.
type ProxyRoutes struct {
	// Names are the route configurations to replace with Routes' (Dest
	// names the variant of each), or with GRPC's for a gRPC client (GRPC
	// names the variant of each).
	Names []string
	Dest  map[string]DestRoute
	GRPC  map[string]GRPCRoute
	// Variant tells apart proxies whose replaced configurations differ
	// although the names and old ones are the same ("" for sidecars that
	// take no consumer routes' variant).
	Variant string

	c    *RouteChange
	held []*audience
}

// ForProxy says what the change alters in the configuration of proxy p,
// as Build made it from the model before the change (or after it: the
// result is then no change): hasRoute and hasCluster say whether it
// holds a route configuration or cluster of that name, dependsOn whether
// its Resources.Deps name a Service. ok is false when the change reaches
// beyond the route configurations and the policies: p must be built.
//
// A Service is in p's view exactly when p holds its route configurations
// (every Service p routes to by address gets one per chain family): that
// decides which Services' routes, backends and policies p carries.
func (c *RouteChange) ForProxy(p dataplane.Proxy, hasRoute, hasCluster func(string) bool, dependsOn func(ir.ServiceKey) bool) (pr *ProxyRoutes, ok bool) {
	if p.Kind == dataplane.KindGRPC {
		return c.forGRPC(p, hasRoute, hasCluster, dependsOn)
	}
	pr = &ProxyRoutes{c: c, Dest: map[string]DestRoute{}}
	for _, s := range c.services {
		au := s.audienceOf(p.Namespace)
		fams := chainFamilies(p, s.svc)
		var held bool
		var names []string
		if len(fams) == 0 || s.probe == nil {
			// The pod has no address of the Service's families (no chain
			// and no route configuration), or the Service no HTTP port
			// routed by address; yet it may be in p's view, whose
			// policies, backends and budgets it carries.
			held = c.inView(p, s.svc)
		} else {
			held = hasRoute(destRouteName(s.svc, s.probe, fams[0]))
			for _, port := range s.ports {
				for _, f := range fams {
					name := destRouteName(s.svc, port, f)
					if hasRoute(name) != held {
						return nil, false // not as Build makes it: be safe
					}
					names = append(names, name)
					k := DestRoute{name, p.Namespace}
					if _, ok := c.Routes[k]; !ok {
						k.Consumer = ""
					} else {
						pr.Variant = p.Namespace
					}
					pr.Dest[name] = k
				}
			}
		}
		if !held {
			continue // not in p's view: none of its routing reaches p
		}
		if au.budgets {
			return nil, false // 5
		}
		for _, b := range au.added {
			if !dependsOn(b.Service) {
				return nil, false
			}
			bs := c.mesh.Service(b.Service)
			if bs == nil || bs.Port(b.Port) == nil {
				continue // upstreams skips it too
			}
			for _, f := range fams {
				if !hasCluster(familyClusterName(bs, b.Port, f)) {
					return nil, false
				}
			}
		}
		for _, b := range au.removed {
			// Still depended on and its clusters still there only if p
			// routes to the backend's Service itself, over the families
			// the root reached it by.
			bs := c.mesh.Service(b.Service)
			if bs == nil || !c.inView(p, bs) {
				return nil, false
			}
			if bs.Port(b.Port) == nil {
				continue
			}
			own := map[string]bool{}
			for _, f := range chainFamilies(p, bs) {
				own[familyClusterName(bs, b.Port, f)] = true
			}
			for _, f := range fams {
				if !own[familyClusterName(bs, b.Port, f)] {
					return nil, false
				}
			}
		}
		pr.Names = append(pr.Names, names...)
		pr.held = append(pr.held, au)
	}
	return pr, true
}

// forGRPC is ForProxy for a proxyless gRPC client (3). It holds one route
// configuration per HTTP port of each Service in its view (grpcPort), of
// the variant its namespace and preferred family pick, and the clusters
// of its routes' backends over its preferred family (grpcUpstreams).
func (c *RouteChange) forGRPC(p dataplane.Proxy, hasRoute, hasCluster func(string) bool, dependsOn func(ir.ServiceKey) bool) (pr *ProxyRoutes, ok bool) {
	pf := fam6
	if v4, _ := proxyFamilies(p); v4 {
		pf = fam4
	}
	pr = &ProxyRoutes{c: c, GRPC: map[string]GRPCRoute{}, Variant: p.Namespace + "|" + strconv.Itoa(int(pf))}
	for _, s := range c.services {
		au := s.audienceOf(p.Namespace)
		var held bool
		if s.probe == nil {
			held = c.inView(p, s.svc)
		} else {
			held = hasRoute(grpcName(s.svc, s.probe.Port))
		}
		var names []string
		for _, port := range s.ports {
			name := grpcName(s.svc, port.Port)
			if hasRoute(name) != held {
				return nil, false // not as Build makes it: be safe
			}
			names = append(names, name)
			k := GRPCRoute{name, s.svc.Key.Namespace == p.Namespace, pf, p.Namespace}
			if _, ok := c.GRPC[k]; !ok {
				k.consumer = ""
			}
			pr.GRPC[name] = k
		}
		if !held {
			continue
		}
		if au.budgets || au.grpcBuild {
			return nil, false
		}
		for _, b := range au.added {
			if !dependsOn(b.Service) {
				return nil, false
			}
			bs := c.mesh.Service(b.Service)
			if bs == nil || bs.Port(b.Port) == nil {
				continue // upstreams skips it too
			}
			if !hasCluster(familyClusterName(bs, b.Port, pf)) {
				return nil, false
			}
		}
		for _, b := range au.removed {
			// Its cluster stays only if p routes to the backend's Service
			// itself (grpcBuild covers the clusters only routes give).
			if bs := c.mesh.Service(b.Service); bs == nil || !c.inView(p, bs) {
				return nil, false
			}
		}
		pr.Names = append(pr.Names, names...)
		pr.held = append(pr.held, au)
	}
	return pr, true
}

// hasUnresolved: one of svc's routes for callers in ns has an unresolved
// backend (whose share a gRPC client sends to the BlackHole cluster).
func hasUnresolved(svc *ir.Service, ns string) bool {
	for _, p := range svc.Ports {
		for _, r := range p.RoutesFor(ns) {
			for _, b := range r.Backends {
				if b.Unresolved {
					return true
				}
			}
		}
	}
	return false
}

// Policies returns the policies the configuration carries after the
// change, given those it carried before (Resources.Policies): the same
// list, but for the references gone from the model, and with those of
// the changed Services the proxy routes to. The order is Build's.
func (pr *ProxyRoutes) Policies(old []ir.PolicyRef) []ir.PolicyRef {
	out := make([]ir.PolicyRef, 0, len(old))
	seen := make(map[ir.PolicyRef]bool, len(old))
	for _, r := range old {
		if !pr.c.gone[r] {
			out = append(out, r)
			seen[r] = true
		}
	}
	for _, au := range pr.held {
		for _, r := range au.refs {
			if !seen[r] {
				seen[r] = true
				out = append(out, r)
			}
		}
	}
	sortPolicies(out)
	return out
}

// sameButRouting compares two versions of a Service ignoring their ports'
// routes (consumer routes too) and retry policy, with reflect.DeepEqual as
// ir.Diff does, so a field added to the model later is compared too.
func sameButRouting(a, b *ir.Service) bool {
	if a.Key != b.Key || len(a.Ports) != len(b.Ports) {
		return false
	}
	strip := func(s *ir.Service) ir.Service {
		out := *s
		out.Ports = make([]*ir.Port, len(s.Ports))
		for i, p := range s.Ports {
			q := *p
			q.Routes, q.Consumers, q.Retry = nil, nil, nil
			out.Ports[i] = &q
		}
		return out
	}
	x, y := strip(a), strip(b)
	return reflect.DeepEqual(&x, &y)
}

// resolvedBackends are the backends (service and port) svc's routes for
// callers in ns send to: what upstreams and deps read of them (4).
func resolvedBackends(svc *ir.Service, ns string) map[ir.Backend]bool {
	out := map[ir.Backend]bool{}
	for _, p := range svc.Ports {
		for _, r := range p.RoutesFor(ns) {
			for _, b := range r.Targets() {
				if !b.Unresolved {
					out[ir.Backend{Service: b.Service, Port: b.Port}] = true
				}
			}
		}
	}
	return out
}

// sameBudgets: a's and b's routes for callers in ns contribute the same
// retry budgets (5), as circuitBreakers reads them.
func sameBudgets(a, b *ir.Service, ns string) bool {
	x, y := map[string]*ir.Retry{}, map[string]*ir.Retry{}
	serviceRetryBudgets(a, ns, x)
	serviceRetryBudgets(b, ns, y)
	if len(x) != len(y) {
		return false
	}
	for name, r := range x {
		s := y[name]
		if s == nil || r.BudgetPercent != s.BudgetPercent || r.BudgetMinConcurrency != s.BudgetMinConcurrency {
			return false
		}
	}
	return true
}

// grpcRouteOnly are the backends of svc's routes (not their mirrors,
// which gRPC routes do not carry) whose clusters only a route gives a
// gRPC client (a headless Service or a TCP port: grpcRoutedClusters). A
// backend reached before as a mirror only is no "added" backend, yet a
// gRPC client needs its cluster once a route sends to it.
func grpcRouteOnly(mesh *ir.Mesh, svc *ir.Service, ns string) map[ir.Backend]bool {
	out := map[ir.Backend]bool{}
	for _, p := range svc.Ports {
		for _, r := range p.RoutesFor(ns) {
			for _, b := range r.Backends {
				if b.Unresolved {
					continue
				}
				if bs := mesh.Service(b.Service); bs != nil {
					if bp := bs.Port(b.Port); bp != nil && (bs.Headless || !bp.Protocol.IsHTTP()) {
						out[ir.Backend{Service: b.Service, Port: b.Port}] = true
					}
				}
			}
		}
	}
	return out
}
