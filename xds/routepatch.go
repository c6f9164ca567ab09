package xds

import (
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator/envoy"
	"github.com/weftmesh/weft/translator/ir"
)

// The route fast path (docs/design/101). A change of routing policy alone
// — a TrafficSplit's weights, a RetryPolicy, an HTTPRoute — alters, for
// every sidecar that routes to the changed Services, their route
// configurations (one per Service port and family, docs/design/090) and
// the policies its configuration carries, nothing else (envoy.RouteChange
// lists what routing reaches and when it reaches further). So the next
// snapshot of such a group is derived from its current one, as an
// endpoint change's is (endpointpatch.go): the new route configurations
// are built, validated and encoded once per change, every group's RDS map
// is re-made once per distinct map, and every other resource stays
// pointer-equal. Proxyless gRPC clients are patched the same way, with the
// variant of each route configuration their namespace and family pick.
// Whatever the change cannot be shown to leave alone — a change that is
// not routing alone, a backend removed, a retry budget, a cluster only a
// gRPC route gives coming or going — is built in full.

// routePatch is one routing-only change, prepared for every group.
type routePatch struct {
	change *envoy.RouteChange
	// rds: the new route configurations, encoded once, per variant (the
	// callers' namespace when it has consumer routes); grpc: those of
	// gRPC clients, per variant.
	rds  map[envoy.DestRoute]*encoded
	grpc map[envoy.GRPCRoute]*encoded
	*deriver
}

// prepareRoutes builds and encodes what the change from prev to next
// (whose difference is ch) gives every proxy, or returns nil when it is
// not a change of routing alone (envoy.NewRouteChange) or a new route
// configuration fails validation (the full build reports it).
func prepareRoutes(prev, next *ir.Mesh, ch *ir.Change, enc *encoder) *routePatch {
	c := envoy.NewRouteChange(prev, next, ch)
	if c == nil {
		return nil
	}
	pt := &routePatch{change: c, rds: make(map[envoy.DestRoute]*encoded, len(c.Routes)), grpc: make(map[envoy.GRPCRoute]*encoded, len(c.GRPC)), deriver: newDeriver(enc)}
	for k, rc := range c.Routes {
		e, err := enc.encode(resourcev3.RouteType, k.Name, rc, nil)
		if err != nil {
			return nil
		}
		pt.rds[k] = e
	}
	for k, rc := range c.GRPC {
		e, err := enc.encode(resourcev3.RouteType, k.Name, rc, nil)
		if err != nil {
			return nil
		}
		pt.grpc[k] = e
	}
	return pt
}

// apply derives from s, the configuration of a group of proxy p for the
// model before the change (or after it: then nothing changes), its
// configuration after: s itself when nothing it holds or carries
// changed. ok is false when the change reaches beyond what a route patch
// re-derives for this group: it must be built.
func (pt *routePatch) apply(s *snapshot, p dataplane.Proxy) (next *snapshot, ok bool) {
	routes, clusters := s.resources[routesAt], s.resources[clustersAt]
	pr, ok := pt.change.ForProxy(p,
		func(name string) bool { _, held := routes[name]; return held },
		func(name string) bool { _, held := clusters[name]; return held },
		func(k ir.ServiceKey) bool { return s.deps[k] })
	if !ok {
		return nil, false
	}
	value := func(name string) *encoded { return pt.rds[pr.Dest[name]] }
	if pr.GRPC != nil {
		value = func(name string) *encoded { return pt.grpc[pr.GRPC[name]] }
	}
	var changed []string
	for _, name := range pr.Names {
		if value(name) != routes[name] {
			changed = append(changed, name)
		}
	}
	policies := pr.Policies(s.policies)
	if changed == nil && samePolicies(policies, s.policies) {
		return s, true
	}
	// Everything else — the other types' maps, dependencies — is shared
	// with s: snapshots are immutable.
	n := *s
	n.derived = nil
	if changed != nil {
		n.resources = s.resources
		for i, t := range pushOrder {
			if t != resourcev3.RouteType {
				continue
			}
			d := pt.deriveVariant(t, routes, changed, value, p.Kind, pr.Variant)
			n.resources[i], n.anchors[i] = d.m, d.anchor
			n.derived = map[string]derivation{t: d.derivation}
		}
	}
	// As a build would: a new generation, and each policy carried since
	// the generation from which the group's snapshots carried it without
	// a break (a new one, or a new generation of one, from this one).
	n.generation = s.generation + 1
	if !samePolicies(policies, s.policies) {
		n.policies = policies
		n.since = policySince(s, policies, n.generation)
		n.sharePolicies(pt.enc)
	}
	return &n, true
}
