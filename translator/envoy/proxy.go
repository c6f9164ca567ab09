// Package envoy turns the mesh model (translator/ir) into the Envoy xDS
// resources of one proxy: listeners, routes, clusters, endpoints, and the
// names of the secrets they use. It is pure: the same model and proxy give
// the same resources, byte for byte.
package envoy

import (
	"cmp"
	"slices"
	"sort"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator/ir"
)

// Resources is a proxy's complete configuration, each list sorted by name.
type Resources struct {
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
	Clusters  []*clusterv3.Cluster
	Endpoints []*endpointv3.ClusterLoadAssignment
	// Secrets names the SDS secrets the resources refer to; the xDS layer
	// serves them from the proxy's own identity only.
	Secrets []string
	// Policies are the policy generations this configuration carries, so
	// that the xDS layer can tell when a policy is programmed: every proxy
	// whose configuration carries it has ACKed that configuration. It may
	// be shared with other groups of the view entry: nothing may modify it.
	Policies []ir.PolicyRef
	// Deps are the Services whose data this configuration reflects (the
	// ones the proxy sees, their backends, and the ones it serves), sorted:
	// an endpoint change elsewhere cannot change it. It may be shared with
	// other groups (Part.Deps): nothing may modify it.
	Deps []ir.ServiceKey
	// NamespaceDeps are the namespaces whose settings (ir.Namespace: mTLS
	// mode, AuthPolicies) the build read, sorted: the proxy's own, and
	// those of the Services Visible to it.
	//
	// Deps, NamespaceDeps and Visible together bound what the configuration
	// can depend on: besides the mesh-wide settings, a new model can only
	// change it through a Service in Deps, a Service Visible to the proxy
	// before or after (one it does not reach yet may become reachable), or
	// a namespace in NamespaceDeps.
	NamespaceDeps []string
	// Common, when not nil, is the part of Listeners, Routes, Clusters and
	// Endpoints that the other groups of this proxy's view entry hold too
	// (the same *Part for each: Shared builds it once), and Own the rest;
	// together they are those four lists. Whoever edits the lists must
	// clear Common.
	Common *Part
	Own    Set
}

// Visible says whether svc is in p's scope: the Services a proxy's
// configuration may reflect beyond those it already depends on (its
// Deps). This is weft's scoping rule: a proxy sees the Services exported
// to its namespace, which include every Service of its own namespace, so
// also the ones that select its workload (inbound). A Service outside the
// scope reaches a proxy's configuration only as a backend of one inside it,
// and then it is in Deps.
func Visible(svc *ir.Service, p dataplane.Proxy) bool { return svc.ExportedTo(p.Namespace) }

// Build computes the resources of one proxy. (Shared builds many proxies'
// from one model, sharing what they have in common.)
func Build(mesh *ir.Mesh, p dataplane.Proxy) *Resources { return newView(mesh, p).build() }

// BuildGroup is Build without the proxy's own listeners (ProxyListeners):
// the part of its configuration that every proxy of its xds group (same
// kind, identity, labels and probes, any addresses) shares. Build(mesh, p)
// is BuildGroup(mesh, p) plus ProxyListeners(p).
func BuildGroup(mesh *ir.Mesh, p dataplane.Proxy) *Resources {
	v := newView(mesh, p)
	v.groupOnly = true
	return v.build()
}

func (v *view) build() *Resources {
	r := &Resources{}
	if v.proxy.Kind == dataplane.KindGRPC {
		v.buildGRPC(r)
	} else if v.shared != nil {
		// What every group of the view entry holds (Common), and this
		// group's own few: its fixed clusters, inbound listener, the
		// route configurations by port (and, from Build, the proxy's
		// own listeners). Common's lists are shared: copy before adding.
		part := v.sharedPart()
		own := Set{Clusters: v.fixedClusters(), Listeners: []*listenerv3.Listener{v.boundInboundListener()}, Routes: v.portRoutes()}
		if !v.groupOnly {
			own.Listeners = append(own.Listeners, ProxyListeners(v.proxy)...)
		}
		// The Part's lists are sorted (newPart): merging the few own in
		// keeps the lists sorted without sorting ~2,000 again per group
		// (0.12 CPU s per 100 groups of issue 14's cold start).
		r.Clusters = mergeSorted(part.Clusters, own.Clusters, byClusterName)
		r.Endpoints = slices.Clone(part.Endpoints)
		r.Listeners = mergeSorted(part.Listeners, own.Listeners, byListenerName)
		r.Routes = mergeSorted(part.Routes, own.Routes, byRouteName)
		r.Common, r.Own = part, own
		r.Secrets = []string{dataplane.TrustBundleSecret, dataplane.WorkloadCertSecret}
	} else {
		up, cla := v.upstreamClusters()
		r.Clusters = append(up, v.fixedClusters()...)
		r.Endpoints = cla
		r.Routes = v.routeConfigs()
		if v.groupOnly {
			r.Listeners = v.groupListeners()
		} else {
			r.Listeners = v.listeners()
		}
		r.Secrets = []string{dataplane.TrustBundleSecret, dataplane.WorkloadCertSecret}
	}
	r.Policies = v.policies()
	r.Deps = v.deps()
	r.NamespaceDeps = v.namespaceDeps()
	if r.Common != nil {
		return r // already by name (mergeSorted)
	}
	// By name. The upstream clusters and endpoints come sorted
	// (upstreamClusters), so these sorts of a few thousand are nearly
	// linear; slices.SortFunc, not sort.Slice, whose reflective swaps cost
	// a tenth of a cold start's group builds (docs/design/184).
	slices.SortFunc(r.Listeners, byListenerName)
	slices.SortFunc(r.Routes, byRouteName)
	slices.SortFunc(r.Clusters, byClusterName)
	slices.SortFunc(r.Endpoints, byAssignmentName)
	return r
}

// mergeSorted returns a new list of sorted (by cmp) and add, sorted: add,
// a group's own few, is sorted (a copy of it), then merged in.
func mergeSorted[T any](sorted, add []T, cmp func(a, b T) int) []T {
	add = slices.SortedFunc(slices.Values(add), cmp)
	out := make([]T, 0, len(sorted)+len(add))
	for len(sorted) > 0 && len(add) > 0 {
		if cmp(add[0], sorted[0]) < 0 {
			out, add = append(out, add[0]), add[1:]
		} else {
			out, sorted = append(out, sorted[0]), sorted[1:]
		}
	}
	return append(append(out, sorted...), add...)
}

// view is the part of the mesh one proxy can reach, and the part it serves.
type view struct {
	mesh  *ir.Mesh
	proxy dataplane.Proxy
	id    string
	// outbound: Services the proxy may call, in mesh order; outIdx their
	// indices in mesh.Services (what Shared keys on).
	outbound []*ir.Service
	outIdx   []int
	// inbound: the ports the proxy's workload serves, with the Services
	// they belong to, sorted by port.
	inbound []inboundPort
	// authz: policies that protect the proxy's workload.
	authz []*ir.AuthPolicy
	// refused: the Services with cluster IPs (or headless ones with meshed
	// endpoints) the proxy does not hold and answers locally (refuse.go),
	// in mesh order.
	refused []refusal
	// served: the Services that select the proxy's workload.
	served []ir.ServiceKey
	// guarded: per namespace, its Services that carry AuthPolicies
	// (mayReach reads those of the Services sharing a called Service's
	// pods); consulted: those mayReach read, which the configuration
	// therefore depends on.
	guarded   map[string][]*ir.Service
	consulted map[ir.ServiceKey]bool
	// mtls is the proxy's namespace mode.
	mtls ir.MTLSMode
	// namespaces whose settings the view read (Resources.NamespaceDeps).
	namespaces map[string]bool
	// shared, when set, builds what proxies have in common once
	// (sharedEntry: this view's entry in it, found on first use).
	shared      *Shared
	sharedEntry *viewEntry
	// groupOnly leaves out the proxy's own listeners (BuildGroup).
	groupOnly bool
}

type inboundPort struct {
	port     int32
	protocol ir.Protocol
}

func newView(mesh *ir.Mesh, p dataplane.Proxy) *view {
	v := &view{mesh: mesh, proxy: p, id: p.Identity(mesh.TrustDomain), mtls: mesh.DefaultMTLS,
		namespaces: map[string]bool{p.Namespace: true}}
	ns := mesh.Namespaces[p.Namespace]
	if ns != nil {
		v.mtls = ns.MTLS
		v.authz = append(v.authz, ns.AuthPolicies...)
	}
	ports := map[int32]ir.Protocol{}
	sidecar := p.Kind != dataplane.KindGRPC
	for i, svc := range mesh.Services {
		if !Visible(svc, p) {
			if sidecar {
				v.refuse(svc, i, refusedOutOfScope)
			}
			continue
		}
		v.namespaces[svc.Key.Namespace] = true // mayReach reads its settings
		if v.mayReach(svc) {
			v.outbound = append(v.outbound, svc)
			v.outIdx = append(v.outIdx, i)
		} else if sidecar {
			v.refuse(svc, i, refusedByPolicy)
		}
		if svc.Key.Namespace != p.Namespace || !selects(svc.Selector, p.Labels) {
			continue
		}
		v.authz = append(v.authz, svc.AuthPolicies...)
		v.served = append(v.served, svc.Key)
		for _, sp := range svc.Ports {
			for _, n := range servedPorts(sp, v.proxy) {
				// Two Services that disagree on a container port's
				// protocol: treat it as TCP, which carries either.
				if prev, ok := ports[n]; ok && prev != sp.Protocol {
					ports[n] = ir.ProtocolTCP
				} else {
					ports[n] = sp.Protocol
				}
			}
		}
	}
	for n, proto := range ports {
		v.inbound = append(v.inbound, inboundPort{port: n, protocol: proto})
	}
	sort.Slice(v.inbound, func(i, j int) bool { return v.inbound[i].port < v.inbound[j].port })
	return v
}

// refuse records that the proxy does not hold svc, for why: an Unmeshed
// Service passes through under RegistryOnly (under AllowAny the default
// chain passes it through already); any other is refused.
func (v *view) refuse(svc *ir.Service, i int, why refusalReason) {
	if len(svc.ClusterIPs) == 0 && !svc.Headless {
		return
	}
	if svc.Headless && refusalAddrs(svc, nil) == 0 {
		return // no meshed endpoint: its calls are plaintext either way
	}
	if Unmeshed(svc) {
		if v.mesh.Outbound != ir.OutboundRegistryOnly {
			return
		}
		why = passedUnmeshed
	}
	v.refused = append(v.refused, refusal{svc: svc, idx: i, reason: why})
}

// servedPorts are the container ports that carry sp on p's workload,
// sorted: the target port, or for a named one the ports of the endpoints
// with p's identity (its namespace and service account), and of those at
// p's own addresses (a pod the
// translator does not know has no identity).
//
// A sidecar's configuration is built once for its group (every proxy with
// its identity and labels, xds) with the first member's addresses: a port
// resolved at those addresses alone was lost by every replica when that
// pod went, or never found when a pod of the same service account
// connected first with forged addresses (issue 12 d). Replicas that
// disagree (a rollout that renames a container port) each get chains for
// every number: an extra chain carries RBAC, and nothing listens behind
// it. A proxyless gRPC group is one pod (its listener names carry the
// address), so its own address decides.
func servedPorts(sp *ir.Port, p dataplane.Proxy) []int32 {
	if sp.TargetPortName == "" {
		return []int32{sp.TargetPort}
	}
	// The identity without its trust domain, which is the mesh's.
	id := "/ns/" + p.Namespace + "/sa/" + p.ServiceAccount
	var out []int32
	add := func(n int32) {
		for _, x := range out {
			if x == n {
				return
			}
		}
		out = append(out, n)
	}
	for _, e := range sp.Endpoints {
		if p.Kind != dataplane.KindGRPC && strings.HasSuffix(e.Identity, id) {
			add(e.Port)
			continue
		}
		for _, ip := range p.IPs {
			if e.Address == ip {
				add(e.Port)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, want := range selector {
		if labels[k] != want {
			return false
		}
	}
	return true
}

// mayReach is false when the AuthPolicies enforced at the Service's pods
// certainly refuse every request from this proxy's identity, so the proxy
// need not know the Service at all. It errs towards true: a rule that might
// match (an IP block, a port or path condition) keeps the Service visible.
//
// A pod's policies are its namespace's and those of every Service that
// selects it — not only the called Service's (new-7: an Allow attached to
// a headless Service over the same pods admitted a caller that the
// Service's own policies did not name). Of another Service T in the same
// namespace, a Deny or the presence of an Allow counts only when T selects
// every pod the Service does (T's selector is part of the Service's); an
// Allow that may admit the caller counts when T may select one of its
// pods (the selectors do not conflict).
func (v *view) mayReach(svc *ir.Service) bool {
	certain := append([]*ir.AuthPolicy(nil), svc.AuthPolicies...)
	var possible []*ir.AuthPolicy
	if ns := v.mesh.Namespaces[svc.Key.Namespace]; ns != nil {
		certain = append(certain, ns.AuthPolicies...)
	}
	for _, t := range v.guardedIn(svc.Key.Namespace) {
		if t == svc {
			continue
		}
		switch {
		case selectorWithin(t.Selector, svc.Selector):
			certain = append(certain, t.AuthPolicies...)
		case selectorsOverlap(t.Selector, svc.Selector):
			possible = append(possible, t.AuthPolicies...)
		default:
			continue
		}
		if v.consulted == nil {
			v.consulted = map[ir.ServiceKey]bool{}
		}
		v.consulted[t.Key] = true
	}
	hasAllow, allowed := false, false
	for i, pol := range append(certain, possible...) {
		sure := i < len(certain)
		if pol.DryRun {
			continue
		}
		for _, r := range pol.Rules {
			switch pol.Action {
			case ir.AuthDeny:
				if sure && v.sourceCertainlyMatches(r) && operationUnrestricted(r) {
					return false
				}
			case ir.AuthAllow:
				hasAllow = hasAllow || sure
				if v.sourceMayMatch(r) {
					allowed = true
				}
			}
		}
	}
	return !hasAllow || allowed
}

// guardedIn lists the Services of namespace ns that carry AuthPolicies.
func (v *view) guardedIn(ns string) []*ir.Service {
	if v.guarded == nil {
		v.guarded = guardedServices(v.mesh)
	}
	return v.guarded[ns]
}

// guardedServices lists, per namespace, the Services of mesh that carry
// AuthPolicies and select pods.
func guardedServices(mesh *ir.Mesh) map[string][]*ir.Service {
	out := map[string][]*ir.Service{}
	for _, s := range mesh.Services {
		if len(s.AuthPolicies) > 0 && len(s.Selector) > 0 {
			out[s.Key.Namespace] = append(out[s.Key.Namespace], s)
		}
	}
	return out
}

// selectorWithin: every pod that outer selects also has sel's labels (sel's
// key-value pairs are all in outer), so sel selects it too. Empty
// selectors select no pod.
func selectorWithin(sel, outer map[string]string) bool {
	if len(sel) == 0 || len(outer) == 0 {
		return false
	}
	for k, want := range sel {
		if got, ok := outer[k]; !ok || got != want {
			return false
		}
	}
	return true
}

// selectorsOverlap: some pod could carry both selectors' labels (no key
// with two values).
func selectorsOverlap(a, b map[string]string) bool {
	if len(a) == 0 || len(b) == 0 {
		return false
	}
	for k, av := range a {
		if bv, ok := b[k]; ok && bv != av {
			return false
		}
	}
	return true
}

func (v *view) sourceMayMatch(r ir.AuthRule) bool {
	if len(r.Principals)+len(r.Namespaces)+len(r.IPBlocks) == 0 || len(r.IPBlocks) > 0 {
		return true
	}
	return v.sourceCertainlyMatches(r)
}

func (v *view) sourceCertainlyMatches(r ir.AuthRule) bool {
	if len(r.Principals)+len(r.Namespaces)+len(r.IPBlocks) == 0 {
		return true
	}
	for _, p := range r.Principals {
		if p == v.id {
			return true
		}
	}
	for _, ns := range r.Namespaces {
		if ns == v.proxy.Namespace {
			return true
		}
	}
	return false
}

func operationUnrestricted(r ir.AuthRule) bool {
	return len(r.Ports)+len(r.Methods)+len(r.PathsExact)+len(r.PathsPrefix) == 0
}

// policies lists the policy generations the proxy's configuration
// carries: those of its outbound part (outboundPolicies), the
// AuthPolicies that protect its workload and the RateLimitPolicies it
// enforces. (gRPC proxies skip DryRun policies, but they are still
// listed: the configuration reflects them by leaving them out.) When
// those are all in the outbound part's list, the list is that one: with a
// Shared, the same slice for every group of the view entry. Nothing may
// modify it.
func (v *view) policies() []ir.PolicyRef {
	return withAdded(v.outboundPolicies(), comparePolicies, func(add func(ir.PolicyRef)) {
		for _, a := range v.authz {
			add(a.Source)
		}
		// The RateLimitPolicies its own workload enforces (sidecars
		// only: a proxyless server's configuration does not carry them).
		if v.proxy.Kind != dataplane.KindGRPC {
			for _, in := range v.inbound {
				for _, rl := range v.inboundRateLimits(in.port) {
					add(rl.Source)
				}
			}
		}
	})
}

// outboundPolicies lists, sorted, the policies the Services the proxy may
// call make its configuration carry (servicePolicies). Like
// outboundDeps, they are the same for every view of one entry: a Shared
// collects them once per entry.
func (v *view) outboundPolicies() []ir.PolicyRef {
	if v.shared == nil {
		return v.collectOutboundPolicies()
	}
	return v.entry().policies.get(v.collectOutboundPolicies)
}

func (v *view) collectOutboundPolicies() []ir.PolicyRef {
	seen := map[ir.PolicyRef]bool{}
	for _, svc := range v.outbound {
		servicePolicies(v.mesh, svc, v.proxy.Namespace, func(r ir.PolicyRef) { seen[r] = true })
	}
	return sortedSet(seen, comparePolicies)
}

// withAdded returns sorted (ordered by cmp) with the elements each adds
// merged in, each once, as a new slice; or sorted itself when they are all
// in it already (then shared: nothing may modify it).
func withAdded[T comparable](sorted []T, cmp func(a, b T) int, each func(add func(T))) []T {
	var extra []T
	each(func(x T) {
		if _, ok := slices.BinarySearchFunc(sorted, x, cmp); !ok {
			extra = append(extra, x)
		}
	})
	if len(extra) == 0 {
		return sorted
	}
	all := append(slices.Clone(sorted), extra...)
	slices.SortFunc(all, cmp)
	return slices.Compact(all)
}

// sortedSet lists a set's members, ordered by cmp.
func sortedSet[T comparable](set map[T]bool, cmp func(a, b T) int) []T {
	out := make([]T, 0, len(set))
	for x := range set {
		out = append(out, x)
	}
	slices.SortFunc(out, cmp)
	return out
}

// servicePolicies calls add with each policy that a Service in the view
// of a proxy in namespace ns makes its configuration carry: the routing
// and retry policies of its ports and of their routes for ns's callers,
// and the backend traffic policies of its ports and of the backends those
// routes and its TCP splits send to. ns anyCaller: the routes of every
// caller (what some proxy may carry).
func servicePolicies(mesh *ir.Mesh, svc *ir.Service, ns string, add func(ir.PolicyRef)) {
	backend := func(p *ir.Port) {
		if p != nil && p.Backend != nil {
			add(p.Backend.Source)
		}
	}
	for _, p := range svc.Ports {
		backend(p)
		if p.Retry != nil {
			add(p.Retry.Source)
		}
		for _, b := range p.TCPBackends {
			backend(backendPort(mesh, b))
		}
		portRoutes(p, ns, func(r *ir.Route) {
			if r.Source != nil {
				add(*r.Source)
			}
			if r.Retry != nil {
				add(r.Retry.Source)
			}
			for _, b := range r.Targets() {
				backend(backendPort(mesh, b))
			}
		})
	}
}

// anyCaller, as a caller namespace, stands for every caller: portRoutes
// then walks every route of the port, the consumer routes too.
const anyCaller = "\x00any"

// portRoutes calls f with each route of p that callers in namespace ns
// take (every route when ns is anyCaller).
func portRoutes(p *ir.Port, ns string, f func(*ir.Route)) {
	if ns == anyCaller {
		p.AllRoutes(f)
		return
	}
	for _, r := range p.RoutesFor(ns) {
		f(r)
	}
}

// sortPolicies orders policy references as Resources.Policies lists them.
func sortPolicies(out []ir.PolicyRef) { slices.SortFunc(out, comparePolicies) }

// comparePolicies orders policy references by kind, namespace, name and
// generation.
func comparePolicies(a, b ir.PolicyRef) int {
	if c := strings.Compare(a.Kind, b.Kind); c != 0 {
		return c
	}
	if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
		return c
	}
	if c := strings.Compare(a.Name, b.Name); c != 0 {
		return c
	}
	return cmp.Compare(a.Generation, b.Generation)
}

// deps lists the Services this proxy's configuration depends on: those
// of its outbound part (outboundDeps) and those it serves or whose
// policies mayReach read. When those are all in the outbound part's list,
// as for a workload whose Services it sees, the list is that one: with a
// Shared, the same slice for every group of the view entry, not 2,000
// keys collected and sorted per group (half of BuildGroup's time in a
// 500-proxy cold start). Nothing may modify it.
func (v *view) deps() []ir.ServiceKey {
	return withAdded(v.outboundDeps(), compareKeys, func(add func(ir.ServiceKey)) {
		for _, k := range v.served {
			add(k)
		}
		for k := range v.consulted {
			add(k)
		}
	})
}

// outboundDeps lists, sorted, the Services the outbound part depends on:
// those the proxy may call and their routes' and TCP splits' backends.
// They are the same for every view of one entry (its outbound Services
// and, through routesOf, its consumer namespace): a Shared collects them
// once per entry.
func (v *view) outboundDeps() []ir.ServiceKey {
	if v.shared == nil {
		return v.collectOutboundDeps()
	}
	return v.entry().deps.get(v.collectOutboundDeps)
}

func (v *view) collectOutboundDeps() []ir.ServiceKey {
	seen := map[ir.ServiceKey]bool{}
	for _, svc := range v.outbound {
		seen[svc.Key] = true
		for _, p := range svc.Ports {
			for _, b := range p.TCPBackends {
				seen[b.Service] = true
			}
			for _, r := range v.routesOf(p) {
				for _, b := range r.Targets() {
					if !b.Unresolved {
						seen[b.Service] = true
					}
				}
			}
		}
	}
	return sortedSet(seen, compareKeys)
}

// compareKeys orders Service keys as ServiceKey.Less does.
func compareKeys(a, b ir.ServiceKey) int {
	if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}

func byClusterName(a, b *clusterv3.Cluster) int { return strings.Compare(a.Name, b.Name) }

func byListenerName(a, b *listenerv3.Listener) int { return strings.Compare(a.Name, b.Name) }

func byRouteName(a, b *routev3.RouteConfiguration) int { return strings.Compare(a.Name, b.Name) }

func byAssignmentName(a, b *endpointv3.ClusterLoadAssignment) int {
	return strings.Compare(a.ClusterName, b.ClusterName)
}

// namespaceDeps lists the namespaces whose settings the view read: the
// proxy's own (mode, AuthPolicies) and those of every Visible Service
// (mayReach reads their AuthPolicies).
func (v *view) namespaceDeps() []string {
	out := make([]string, 0, len(v.namespaces))
	for ns := range v.namespaces {
		out = append(out, ns)
	}
	sort.Strings(out)
	return out
}
