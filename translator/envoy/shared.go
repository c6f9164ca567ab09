package envoy

import (
	"hash/fnv"
	"slices"
	"sync"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator/ir"
)

// Shared builds the configurations of many proxies from one mesh model,
// building what they have in common once. Most of a proxy's outbound
// configuration depends only on which Services it can reach (its view's
// outbound list) and its kind, not on the proxy itself:
//
//   - the clusters of what it reaches (and their endpoints): functions of
//     the outbound list (their backends and retry budgets come from its
//     routes), of the model and of its pod's IP families (a dual-stack
//     Service's clusters of the families it has, docs/design/064);
//   - a sidecar's capture listener and which Service port listeners it
//     hands connections to: of the outbound list, the model, and two
//     things of the proxy — the tracing service name (service account
//     and namespace, only when tracing is on) and its pod's IP families;
//   - one Service port's listener (serviceListener, docs/design/182): of
//     the port, the family of its cluster IP, its addresses and the
//     tracing service name, shared by every proxy that holds it;
//   - a sidecar's route configuration of one Service port reached by its
//     cluster IP (destRoute): of the port, the cluster IP's family, and
//     whether the port has consumer routes for the proxy's namespace
//     (consumerOf: then that namespace's proxies share another one);
//   - one Service port's virtual host (sidecars, Services without a
//     cluster IP) or route configuration and API listeners (gRPC): of the
//     port, of whether the proxy is in the Service's namespace (which
//     adds the bare name), and of consumerOf.
//
// The clusters and listener of a view entry read its Services' routes
// too (their backends and retry budgets): when a Service of the outbound
// list has consumer routes for the proxy's namespace, the namespace is
// part of the entry's key (viewEntry.consumer), so that a consumer
// route's backends never reach another namespace's proxies.
//
// These are built once per distinct key and shared: proxies of different
// workloads in one namespace, or in any namespace when every Service is
// exported everywhere, reach the same Services. Everything that reads the
// proxy's identity, labels, addresses or probes — its inbound side, its
// fixed clusters (probes, inbound ports, its namespace's mTLS mode), the
// per-namespace route configurations that collect the virtual hosts, the
// policies and dependencies it records — is built per proxy, as Build does.
//
// The proxy's own listeners (ProxyListeners: readiness and stats, bound
// to its pod's addresses) are left out by BuildGroup, which is what the
// xds layer builds once per group; it serves them per stream.
//
// Shared.Build(p) equals Build(mesh, p) (TestSharedBuildEqualsBuild); the
// results share messages, which nobody may modify. A Shared holds what it
// built for as long as it lives: make one per model.
type Shared struct {
	mesh *ir.Mesh

	mu     sync.Mutex
	views  map[uint64][]*viewEntry // by hash of kind and outbound list
	vhosts map[portKey]*cell[*routev3.VirtualHost]
	dests  map[destKey]*cell[*routev3.RouteConfiguration]
	grpc   map[portKey]*cell[*grpcPort]
	// svcListeners: each Service port's listener (serviceListener),
	// shared by every proxy that holds it, whatever else it holds.
	svcListeners map[serviceListenerKey]*cell[*listenerv3.Listener]

	// preferLocal: some port of the mesh prefers the caller's zone
	// (meshPrefersLocalZone, once per model).
	preferLocalOnce sync.Once
	preferLocal     bool
}

// prefersLocalZone is meshPrefersLocalZone(s.mesh), computed once.
func (s *Shared) prefersLocalZone() bool {
	s.preferLocalOnce.Do(func() { s.preferLocal = meshPrefersLocalZone(s.mesh) })
	return s.preferLocal
}

// NewShared starts building proxies' configurations from mesh.
func NewShared(mesh *ir.Mesh) *Shared {
	return &Shared{mesh: mesh, views: map[uint64][]*viewEntry{},
		vhosts: map[portKey]*cell[*routev3.VirtualHost]{}, dests: map[destKey]*cell[*routev3.RouteConfiguration]{}, grpc: map[portKey]*cell[*grpcPort]{},
		svcListeners: map[serviceListenerKey]*cell[*listenerv3.Listener]{}}
}

// Mesh is the model s builds from.
func (s *Shared) Mesh() *ir.Mesh { return s.mesh }

// Build computes the resources of one proxy, as Build(s.Mesh(), p) does.
func (s *Shared) Build(p dataplane.Proxy) *Resources {
	v := newView(s.mesh, p)
	v.shared = s
	return v.build()
}

// BuildGroup is BuildGroup(s.Mesh(), p): Build's resources without the
// proxy's own listeners (ProxyListeners), which the xds layer serves per
// stream.
func (s *Shared) BuildGroup(p dataplane.Proxy) *Resources {
	v := newView(s.mesh, p)
	v.shared = s
	v.groupOnly = true
	return v.build()
}

// viewEntry is what proxies of one kind with one outbound list share.
type viewEntry struct {
	kind   dataplane.ProxyKind
	v4, v6 bool // the pod's families (proxyFamilies): dual-stack Services' clusters follow them
	// region, zone: the caller locality its assignments are rewritten
	// for (view.localityKey); empty for most.
	region, zone string
	outbound     []int // indices in mesh.Services
	// consumer: the proxy's namespace when a Service of outbound has
	// consumer routes for it (their backends and budgets differ), else "".
	consumer string
	// refused: what the view refuses or passes (3*index + reason): the
	// outbound listener's refusal chains read it.
	refused []int

	once      sync.Once
	clusters  []*clusterv3.Cluster
	endpoints []*endpointv3.ClusterLoadAssignment
	// deps, policies: the outbound part's dependencies and policies
	// (view.outboundDeps, outboundPolicies).
	deps     cell[[]ir.ServiceKey]
	policies cell[[]ir.PolicyRef]

	mu        sync.Mutex
	listeners map[listenerKey]*cell[outboundListeners] // sidecars' outbound listeners
	// captures: sidecars' capture listeners alone (what listeners are
	// made from, and what a new Service a proxy does not hold changes:
	// ServiceAddition.ForProxy).
	captures map[listenerKey]*cell[capture]
}

// capture is a sidecar's capture listener (outboundListener, bound to
// its pod's families) and the Service port listeners it hands
// connections to.
type capture struct {
	l     *listenerv3.Listener
	specs []serviceListenerSpec
}

// listenerKey is what a sidecar's outbound listeners read of the proxy.
type listenerKey struct {
	tracingName string // "" when tracing is off
	v4, v6      bool
}

// serviceListenerKey is what one Service port's listener (serviceListener)
// reads: the port (and so its Service), the family, its addresses (those
// the view did not claim for another chain first: almost always all of
// the family's cluster IPs) and the proxy's tracing service name; the
// rest is mesh-wide.
type serviceListenerKey struct {
	port        *ir.Port
	fam         family
	addrs       string
	tracingName string
}

// portKey names one Service port as seen from inside (local) or outside
// its namespace, by a proxy of preferred family fam.
type portKey struct {
	svc      *ir.Service
	port     *ir.Port
	local    bool
	fam      family
	consumer string // view.consumerOf
}

// destKey names one Service port reached by its cluster IPs of one
// family, by callers of namespace consumer (view.consumerOf).
type destKey struct {
	port     *ir.Port
	fam      family
	consumer string
}

// grpcPort is a Service port's route configuration and API listeners for
// proxyless gRPC.
type grpcPort struct {
	route     *routev3.RouteConfiguration
	listeners []*listenerv3.Listener
}

// entry finds or makes the entry of v's kind and outbound list.
func (s *Shared) entry(v *view) *viewEntry {
	h := fnv.New64a()
	var b [4]byte
	put := func(n int) {
		b[0], b[1], b[2], b[3] = byte(n), byte(n>>8), byte(n>>16), byte(n>>24)
		_, _ = h.Write(b[:])
	}
	put(int(v.proxy.Kind))
	v4, v6 := v.proxyFamilies()
	put(b2i(v4) + 2*b2i(v6))
	region, zone := v.localityKey()
	_, _ = h.Write([]byte(region + "\x00" + zone + "\x00"))
	for _, i := range v.outIdx {
		put(i)
	}
	consumer := ""
	for _, svc := range v.outbound {
		if svc.ConsumerFor(v.proxy.Namespace) {
			consumer = v.proxy.Namespace
			_, _ = h.Write([]byte(consumer))
			break
		}
	}
	refused := make([]int, len(v.refused))
	for j, r := range v.refused {
		refused[j] = 3*r.idx + int(r.reason)
		put(-1 - refused[j])
	}
	sum := h.Sum64()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.views[sum] {
		if e.kind == v.proxy.Kind && e.v4 == v4 && e.v6 == v6 && e.region == region && e.zone == zone && e.consumer == consumer && slices.Equal(e.outbound, v.outIdx) && slices.Equal(e.refused, refused) {
			return e
		}
	}
	e := &viewEntry{kind: v.proxy.Kind, v4: v4, v6: v6, region: region, zone: zone, consumer: consumer, outbound: v.outIdx, refused: refused,
		listeners: map[listenerKey]*cell[outboundListeners]{}, captures: map[listenerKey]*cell[capture]{}}
	s.views[sum] = append(s.views[sum], e)
	return e
}

// upstreamClusters are the clusters (and endpoints) of what v reaches:
// built once per view entry when v has a Shared.
func (v *view) upstreamClusters() ([]*clusterv3.Cluster, []*endpointv3.ClusterLoadAssignment) {
	build := v.sidecarUpstreams
	if v.proxy.Kind == dataplane.KindGRPC {
		build = v.grpcUpstreams
	}
	sorted := func() ([]*clusterv3.Cluster, []*endpointv3.ClusterLoadAssignment) {
		c, a := build()
		// Sorted once here, so that each proxy's sort (view.build) of
		// these with its own few is nearly linear.
		slices.SortStableFunc(c, byClusterName)
		slices.SortStableFunc(a, byAssignmentName)
		return c, a
	}
	if v.shared == nil {
		return sorted()
	}
	e := v.entry()
	e.once.Do(func() { e.clusters, e.endpoints = sorted() })
	return e.clusters, e.endpoints
}

func (v *view) entry() *viewEntry {
	if v.sharedEntry == nil {
		v.sharedEntry = v.shared.entry(v)
	}
	return v.sharedEntry
}

// sharedOutboundListeners are outboundListener, bound to the pod's
// address families, and the Service port listeners it hands connections
// to: built once per view entry and proxy key when v has a Shared, each
// Service port's listener once per Shared (sharedServiceListener).
func (v *view) sharedOutboundListeners() outboundListeners {
	build := func() outboundListeners {
		c := v.sharedCapture()
		out := outboundListeners{capture: c.l}
		for _, s := range c.specs {
			out.services = append(out.services, v.sharedServiceListener(s))
		}
		if v.shared != nil {
			out.part = v.newPart(out)
		}
		return out
	}
	if v.shared == nil {
		return build()
	}
	e := v.entry()
	return memo(&e.mu, e.listeners, v.listenerKey(), build)
}

// sharedCapture is outboundListener bound to the pod's address families:
// once per view entry and listener key when v has a Shared.
func (v *view) sharedCapture() capture {
	build := func() capture {
		l, specs := v.outboundListener()
		v4, v6 := podFamilies(v.proxy.IPs)
		listenOn(l, v4, v6)
		return capture{l, specs}
	}
	if v.shared == nil {
		return build()
	}
	e := v.entry()
	return memo(&e.mu, e.captures, v.listenerKey(), build)
}

// listenerKey is what v's outbound listeners read of its proxy.
func (v *view) listenerKey() listenerKey {
	v4, v6 := podFamilies(v.proxy.IPs)
	k := listenerKey{v4: v4, v6: v6}
	if v.mesh.Tracing != nil {
		k.tracingName = tracingServiceName(v.proxy)
	}
	return k
}

// sharedServiceListener is serviceListener, once per Service port,
// family, addresses and tracing name when v has a Shared.
func (v *view) sharedServiceListener(s serviceListenerSpec) *listenerv3.Listener {
	if v.shared == nil {
		return v.serviceListener(s)
	}
	k := serviceListenerKey{port: s.port, fam: s.f}
	for _, a := range s.addrs {
		k.addrs += a.String() + ","
	}
	if v.mesh.Tracing != nil {
		k.tracingName = tracingServiceName(v.proxy)
	}
	return memo(&v.shared.mu, v.shared.svcListeners, k, func() *listenerv3.Listener { return v.serviceListener(s) })
}

// sharedVirtualHost is virtualHost, once per port and locality when v has
// a Shared.
func (v *view) sharedVirtualHost(svc *ir.Service, port *ir.Port) *routev3.VirtualHost {
	if v.shared == nil {
		return v.virtualHost(svc, port)
	}
	k := portKey{svc, port, svc.Key.Namespace == v.proxy.Namespace, v.preferred(), v.consumerOf(port)}
	return memo(&v.shared.mu, v.shared.vhosts, k, func() *routev3.VirtualHost { return v.virtualHost(svc, port) })
}

// sharedDestRoute is destRoute, once per port, family and consumer
// namespace when v has a Shared: every proxy that reaches the port holds
// the same message, but for the namespaces with consumer routes on it.
func (v *view) sharedDestRoute(svc *ir.Service, port *ir.Port, f family) *routev3.RouteConfiguration {
	consumer := v.consumerOf(port)
	if v.shared == nil {
		return destRoute(v.mesh, svc, port, consumer, f)
	}
	return memo(&v.shared.mu, v.shared.dests, destKey{port, f, consumer}, func() *routev3.RouteConfiguration { return destRoute(v.mesh, svc, port, consumer, f) })
}

// sharedGRPCPort is grpcPort, once per port and locality when v has a
// Shared.
func (v *view) sharedGRPCPort(svc *ir.Service, port *ir.Port) *grpcPort {
	if v.shared == nil {
		return v.grpcPort(svc, port)
	}
	k := portKey{svc, port, svc.Key.Namespace == v.proxy.Namespace, v.preferred(), v.consumerOf(port)}
	return memo(&v.shared.mu, v.shared.grpc, k, func() *grpcPort { return v.grpcPort(svc, port) })
}

// memo returns what m holds for k, built once: concurrent callers of one
// key wait for the first one's build (outside mu, which guards m only).
// The groups of a cold start build at once and need the same shared
// parts together; before, each built its own and all but the first were
// thrown away (the ~1 MB outbound listener was built 18 times for 4
// models: docs/design/184).
func memo[K comparable, V any](mu *sync.Mutex, m map[K]*cell[V], k K, build func() V) V {
	mu.Lock()
	c := m[k]
	if c == nil {
		c = &cell[V]{}
		m[k] = c
	}
	mu.Unlock()
	return c.get(build)
}

// cell is one memoized value.
type cell[V any] struct {
	mu   sync.Mutex
	done bool
	v    V
}

// get returns the cell's value, building it first if no call has. A build
// that panics leaves the cell empty for the next caller.
func (c *cell[V]) get(build func() V) V {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.done {
		c.v = build()
		c.done = true
	}
	return c.v
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
