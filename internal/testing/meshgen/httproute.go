package meshgen

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// httpRoutes: sometimes a GAMMA HTTPRoute on one HTTP port of a Service
// of the namespace that no TrafficSplit routes: PathPrefix /api to
// another Service of the namespace with a port of the same protocol (or
// to itself), Exact /admin to itself, and, half the time, a last rule
// without matches to itself. Without that rule, requests no rule matches
// get 404 (docs/api.md, HTTPRoute).
func (g *gen) httpRoutes(ns string) {
	svcs := g.servicesIn(ns)
	if len(svcs) == 0 || !g.chance(0.5) {
		return
	}
	root := svcs[g.pick(len(svcs))]
	for _, ts := range g.m.In.TrafficSplits {
		if ts.Namespace == ns && ts.Spec.RootService.Name == root.Svc.Name {
			return // one policy routes a port (docs/api.md: the HTTPRoute would win)
		}
	}
	for _, rp := range root.Svc.Spec.Ports {
		if !root.Protos[rp.Port].IsHTTP() {
			continue
		}
		api, apiPort := root, rp.Port
		other := svcs[g.pick(len(svcs))]
		for _, op := range other.Svc.Spec.Ports {
			if other.Protos[op.Port] == root.Protos[rp.Port] {
				api, apiPort = other, op.Port
				break
			}
		}
		ref := func(s *ServiceInfo, port int32) []gatewayv1.HTTPBackendRef {
			p := gatewayv1.PortNumber(port)
			return []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{
				Name: gatewayv1.ObjectName(s.Svc.Name), Port: &p}}}}
		}
		path := func(t gatewayv1.PathMatchType, v string) []gatewayv1.HTTPRouteMatch {
			return []gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{Type: &t, Value: &v}}}
		}
		rules := []gatewayv1.HTTPRouteRule{
			{Matches: path(gatewayv1.PathMatchPathPrefix, "/api"), BackendRefs: ref(api, apiPort)},
			{Matches: path(gatewayv1.PathMatchExact, "/admin"), BackendRefs: ref(root, rp.Port)},
		}
		if g.chance(0.5) {
			rules = append(rules, gatewayv1.HTTPRouteRule{BackendRefs: ref(root, rp.Port)})
		}
		port := gatewayv1.PortNumber(rp.Port)
		kind := gatewayv1.Kind("Service")
		group := gatewayv1.Group("")
		g.m.In.HTTPRoutes = append(g.m.In.HTTPRoutes, &gatewayv1.HTTPRoute{ObjectMeta: g.meta(ns, "hr-"+root.Svc.Name), Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Group: &group, Kind: &kind, Name: gatewayv1.ObjectName(root.Svc.Name), Port: &port}}},
			Rules:           rules,
		}})
		return
	}
}

// httpRouteOf is the HTTPRoute whose parent is the case's Service port,
// nil if none.
func (m *Mesh) httpRouteOf(c Case) *gatewayv1.HTTPRoute {
	if c.Service == nil {
		return nil
	}
	for _, hr := range m.In.HTTPRoutes {
		for _, p := range hr.Spec.ParentRefs {
			if hr.Namespace == c.Service.Svc.Namespace && string(p.Name) == c.Service.Svc.Name && (p.Port == nil || int32(*p.Port) == c.Port) {
				return hr
			}
		}
	}
	return nil
}

// RouteRule is the reference for an HTTP request through a Service port
// that an HTTPRoute routes (docs/api.md, HTTPRoute): the rule Gateway
// API's precedence picks — an Exact path, then the longest PathPrefix
// (whole path elements), rules without matches last — or nil when no
// rule matches, and the request gets 404. Only the match types the
// generator writes are read. The query is not part of the path.
func RouteRule(hr *gatewayv1.HTTPRoute, path string) *gatewayv1.HTTPRouteRule {
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	if path == "" {
		path = "/"
	}
	var best *gatewayv1.HTTPRouteRule
	bestRank := -1
	for i := range hr.Spec.Rules {
		r := &hr.Spec.Rules[i]
		if len(r.Matches) == 0 {
			if bestRank < 1 {
				best, bestRank = r, 1 // PathPrefix /
			}
			continue
		}
		for _, mt := range r.Matches {
			v, t := *mt.Path.Value, *mt.Path.Type
			rank := -1
			switch {
			case t == gatewayv1.PathMatchExact && path == v:
				rank = 1 << 20
			case t == gatewayv1.PathMatchPathPrefix && (path == v || strings.HasPrefix(path, strings.TrimSuffix(v, "/")+"/")):
				rank = len(v)
			}
			if rank > bestRank {
				best, bestRank = r, rank
			}
		}
	}
	return best
}

// routeBackends are the Services (and ports) of a rule's backendRefs.
func (m *Mesh) routeBackends(ns string, r *gatewayv1.HTTPRouteRule) map[*ServiceInfo]int32 {
	out := map[*ServiceInfo]int32{}
	for _, b := range r.BackendRefs {
		for _, s := range m.Services {
			if s.Svc.Namespace == ns && s.Svc.Name == string(b.Name) && s.Svc.Spec.ClusterIP != corev1.ClusterIPNone {
				out[s] = int32(*b.Port)
			}
		}
	}
	return out
}
