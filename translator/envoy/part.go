package envoy

import (
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/weftmesh/weft/translator/ir"
)

// Set is resources of the four kinds a configuration holds.
type Set struct {
	Clusters  []*clusterv3.Cluster
	Endpoints []*endpointv3.ClusterLoadAssignment
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
}

// Part is the part of a sidecar's configuration that every group of one
// view entry and listener key holds (Resources.Common): the clusters and
// endpoints of the Services it reaches, the capture listener and each
// Service port's listener, and each Service port's route configuration —
// nearly all of it (8,000 of the 8,010 resources of a proxy that reaches
// 2,000 Services). A Shared builds it once, and every group of the entry
// gets the same *Part, so whoever consumes the resources can derive
// things from it once rather than once per group: CheckConsistency reads
// its requirements once (summary), and the xds layer keeps its encodings
// (Memo). Each list is sorted by name; nothing in it may be modified.
type Part struct {
	Set
	// Deps are the Services the outbound part depends on, sorted: a
	// group's Resources.Deps is this very slice when it depends on no
	// other (so the xds layer can derive its set once as well).
	Deps []ir.ServiceKey
	sum  cell[*setSummary]
	memo cell[any]
}

// DepsAre says whether deps is p's Deps itself (the same slice), not
// merely equal.
func (p *Part) DepsAre(deps []ir.ServiceKey) bool {
	return len(deps) == len(p.Deps) && (len(deps) == 0 || &deps[0] == &p.Deps[0])
}

// Memo returns what build returned the first time Memo was called on p;
// concurrent callers wait for that first build. A build that panics
// leaves it for the next caller. It is the xds layer's place for what it
// derives from p (its encodings), which lives as long as p does.
func (p *Part) Memo(build func() any) any { return p.memo.get(build) }

// sharedPart is the Part of v's entry and listener key (sidecars with a
// Shared only: it is built with the outbound listeners).
func (v *view) sharedPart() *Part { return v.sharedOutboundListeners().part }

// newPart makes the Part of a view: clusters and endpoints (sorted
// already, upstreamClusters), the outbound listeners, and the route
// configurations by destination.
func (v *view) newPart(out outboundListeners) *Part {
	c, a := v.upstreamClusters()
	p := &Part{Set: Set{Clusters: c, Endpoints: a,
		Listeners: append([]*listenerv3.Listener{out.capture}, out.services...),
		Routes:    v.destRoutes()}, Deps: v.outboundDeps()}
	// Sorted once here (the clusters and endpoints come sorted:
	// upstreamClusters), so that a group's build merges its own in
	// (mergeSorted) instead of sorting the whole lists.
	slices.SortFunc(p.Listeners, byListenerName)
	slices.SortFunc(p.Routes, byRouteName)
	return p
}
