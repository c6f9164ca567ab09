package translator

import (
	"fmt"
	"sort"
	"strings"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator/ir"
)

func hasServiceParent(hr *gatewayv1.HTTPRoute) bool {
	for _, p := range hr.Spec.ParentRefs {
		if isServiceRef(p.Group, p.Kind) {
			return true
		}
	}
	return false
}

func isServiceRef(group *gatewayv1.Group, kind *gatewayv1.Kind) bool {
	return (group == nil || *group == "" || *group == "core") && kind != nil && *kind == "Service"
}

// httpRoute applies a GAMMA HTTPRoute: it means what the equivalent
// TrafficSplit means, with one route per rule.
//
// A rule weft cannot apply exactly as written (an unsupported filter or
// match, a regular expression the proxies would refuse) is dropped, and
// the other rules apply: Gateway API's "Drop Rule(s)" approach, reported
// as PartiallyInvalid. The whole rule goes, never just the bad match
// condition: without it the rule would match more requests than its author
// asked for. Requests the dropped rule would have taken go to the next
// rule that matches them, or get 404, as requests no rule matches do. A
// route without any valid rule is Accepted=False and applies nothing.
//
// The route replaces its parent's routing on a port: no catch-all to the
// parent Service follows the rules, so a request no rule matches gets
// Envoy's 404 (NR) and a proxyless call UNAVAILABLE, as Gateway API asks
// (docs/design/177).
func (t *translation) httpRoute(hr *gatewayv1.HTTPRoute, ps *policyStatus, ref *ir.PolicyRef) {
	var routes []*ir.Route
	var problems, grpcGaps []string
	for i, rule := range hr.Spec.Rules {
		field := fmt.Sprintf("spec.rules[%d]", i)
		r, err := t.httpRouteRule(hr, ps, ref, rule, field)
		if u, ok := err.(errUnsupportedFilter); ok {
			ps.reject(ReasonUnsupportedValue, "%s; the route changes nothing until then", u.msg)
			return
		}
		switch {
		case err != nil:
			problems = append(problems, err.Error())
		case r != nil:
			routes = append(routes, r)
			grpcGaps = append(grpcGaps, proxylessRuleGaps(rule, field)...)
		}
	}
	if len(problems) > 0 {
		if len(problems) == len(hr.Spec.Rules) {
			ps.reject(v1alpha1.ReasonInvalid, "%s; the route has no rule weft can apply, so it changes nothing", strings.Join(problems, "; "))
			return
		}
		for _, p := range problems {
			ps.dropRule(p)
		}
	}
	routes = byPrecedence(routes, t.precedes(ref))
	var parents []string
	defer func() {
		if len(grpcGaps) > 0 && len(parents) > 0 {
			ps.proxyless = fmt.Sprintf("Proxyless gRPC clients (pods annotated %s: grpc) calling %s do not apply: %s. Sidecars apply the whole route; proxyless clients apply the rest.",
				dataplane.AnnotationProxyless, strings.Join(parents, ", "), strings.Join(grpcGaps, "; "))
		}
	}()
	for i, p := range hr.Spec.ParentRefs {
		if !isServiceRef(p.Group, p.Kind) {
			continue
		}
		field := fmt.Sprintf("spec.parentRefs[%d]", i)
		// GAMMA: a parent in another namespace makes this a consumer
		// route, for callers of the route's namespace only.
		svcNS := hr.Namespace
		consumer := p.Namespace != nil && string(*p.Namespace) != hr.Namespace
		if consumer {
			svcNS = string(*p.Namespace)
		}
		root := t.byKey[ir.ServiceKey{Namespace: svcNS, Name: string(p.Name)}]
		if root == nil {
			ps.unresolved(v1alpha1.ReasonTargetNotFound, "%s.name: Service %q does not exist in namespace %s", field, p.Name, svcNS)
			continue
		}
		if consumer && !root.ExportedTo(hr.Namespace) {
			ps.unresolved(v1alpha1.ReasonTargetNotFound, "%s: Service %s/%s is not exported to namespace %s (weft.dev/export-to), so no caller this consumer route applies to can reach it; export it there",
				field, svcNS, p.Name, hr.Namespace)
			continue
		}
		ports := root.Ports
		if p.Port != nil {
			rp := root.Port(int32(*p.Port))
			if rp == nil {
				ps.unresolved(v1alpha1.ReasonPortNotFound, "%s.port: Service %s has no port %d; use one of %s", field, root.Key.Name, *p.Port, portList(root))
				continue
			}
			if !rp.Protocol.IsHTTP() {
				// Said rather than silently ignored: an HTTPRoute cannot
				// apply to a TCP port.
				ps.reject(v1alpha1.ReasonInvalid, "%s.port: port %d of Service %s is TCP, where an HTTPRoute cannot apply; set the port's appProtocol to http, http2 or grpc",
					field, *p.Port, root.Key.Name)
				continue
			}
			ports = []*ir.Port{rp}
		}
		for _, port := range ports {
			if !port.Protocol.IsHTTP() || len(routes) == 0 {
				continue
			}
			// No catch-all after the rules: a request no rule matches
			// gets 404 (docs/design/177), from a consumer route as from
			// the producer's. Each port gets its own slice.
			own := append([]*ir.Route(nil), routes...)
			claim := t.claimForHTTPRoute
			if consumer {
				claim = t.claimForConsumerRoute
			}
			if claim(ps, ref, root, port, field, own) {
				parents = append(parents, fmt.Sprintf("Service %s port %d", root.Key.Name, port.Port))
			}
		}
	}
}

// httpRouteRule translates one rule of an HTTPRoute. An error means the
// rule cannot be applied as written (the message names the field and the
// fix); a nil route means it has no backend that can receive requests.
func (t *translation) httpRouteRule(hr *gatewayv1.HTTPRoute, ps *policyStatus, ref *ir.PolicyRef, rule gatewayv1.HTTPRouteRule, field string) (*ir.Route, error) {
	r := &ir.Route{Source: ref}
	if err := t.httpRouteFilters(hr, ps, rule, field, r); err != nil {
		return nil, err
	}
	for j, m := range rule.Matches {
		im, err := gatewayMatch(m, fmt.Sprintf("%s.matches[%d]", field, j))
		if err != nil {
			return nil, err
		}
		r.Matches = append(r.Matches, im)
	}
	if to := rule.Timeouts; to != nil {
		// Gateway API's timeouts (HTTPRouteTimeouts): request bounds the
		// whole request, retries included; backendRequest bounds each try
		// to a backend. translator/envoy turns them into the route's
		// timeout and its retry policy's per_try_timeout.
		// An explicit zero disables the timeout (Gateway API), a
		// RetryPolicy's included: omitted leaves it to the policy.
		if to.Request != nil {
			d := v1alpha1.Duration(*to.Request)
			r.Timeout = duration(&d)
			r.NoTimeout = r.Timeout == 0
		}
		if to.BackendRequest != nil {
			d := v1alpha1.Duration(*to.BackendRequest)
			r.BackendTimeout = duration(&d)
			r.NoBackendTimeout = r.BackendTimeout == 0
		}
		// Gateway API's CRD refuses this too (its CEL rule on
		// HTTPRouteTimeouts); checked again for inputs it never saw
		// (weft translate, an older CRD). Dropped rather than clamped: the
		// author's two numbers disagree, and guessing which one is meant
		// would hide it.
		if r.Timeout > 0 && r.BackendTimeout > r.Timeout {
			return nil, fmt.Errorf("%s.timeouts.backendRequest: %s is longer than timeouts.request %s, which bounds the whole request, retries included; shorten backendRequest or lengthen request",
				field, *to.BackendRequest, *to.Request)
		}
		if r.BackendTimeout > 0 {
			k := PolicyKey{Kind: KindHTTPRoute, Namespace: hr.Namespace, Name: hr.Name}
			if t.backendTimeouts == nil {
				t.backendTimeouts = map[PolicyKey][]string{}
			}
			t.backendTimeouts[k] = append(t.backendTimeouts[k], fmt.Sprintf("%s.timeouts.backendRequest %s", field, *to.BackendRequest))
		}
	}
	var missing uint32
	for j, b := range rule.BackendRefs {
		bf := fmt.Sprintf("%s.backendRefs[%d]", field, j)
		w := int32(1)
		if b.Weight != nil {
			w = *b.Weight
		}
		// Gateway API: the share of a backend that cannot be used
		// (wrong kind, not permitted, missing) gets an error response;
		// it is not shifted to the other backends, and a rule whose
		// backends are all unusable does not fall through to the next.
		if !isServiceRef(b.Group, ptrOr(b.Kind, "Service")) {
			ps.unresolved(ReasonInvalidKind, "%s: only Services can be backends, not %s (its share of requests gets %s)", bf, *b.Kind, ps.errorResponse())
			missing += uint32(max(w, 0))
			continue
		}
		ns := hr.Namespace
		if b.Namespace != nil {
			ns = string(*b.Namespace)
		}
		if ok, why := t.backendPermitted(hr, ps.kind, ns, string(b.Name)); !ok {
			ps.unresolved(ReasonRefNotPermitted, "%s.namespace: %s (its share of requests gets %s meanwhile)", bf, why, ps.errorResponse())
			missing += uint32(max(w, 0))
			continue
		}
		svc := t.byKey[ir.ServiceKey{Namespace: ns, Name: string(b.Name)}]
		switch {
		case svc == nil:
			ps.unresolved(v1alpha1.ReasonBackendNotFound, "%s.name: Service %q does not exist in namespace %s; its share of requests gets %s until it does", bf, b.Name, ns, ps.errorResponse())
			missing += uint32(max(w, 0))
		case b.Port == nil || svc.Port(int32(*b.Port)) == nil:
			ps.unresolved(v1alpha1.ReasonPortNotFound, "%s.port: set it to one of Service %s's ports: %s (its share of requests gets %s meanwhile)", bf, svc.Key.Name, portList(svc), ps.errorResponse())
			missing += uint32(max(w, 0))
		case w > 0:
			be := ir.Backend{Service: svc.Key, Port: int32(*b.Port), Weight: uint32(w)}
			if err := backendFilters(b, bf, &be); err != nil {
				return nil, err
			}
			r.Backends = append(r.Backends, be)
		}
	}
	if missing > 0 {
		r.Backends = append(r.Backends, ir.Backend{Unresolved: true, Weight: missing})
	}
	if r.Redirect != nil {
		// A redirect answers the request itself: no backend is used.
		r.Backends, r.Mirrors = nil, nil
		return r, nil
	}
	if len(r.Backends) == 0 {
		return nil, nil
	}
	return r, nil
}

// proxylessRuleGaps names what of an applied rule proxyless gRPC clients
// do not apply (the ProxylessLimited condition, docs/design/057 and 160):
// gRPC-Go reads of a route its matches, its cluster or weighted clusters,
// hash policies, max_stream_duration and retry policy, and treats any
// action but route (a redirect) as unsupported, failing the calls it
// matches.
// gRPC-Go skips a route that matches query parameters (routesProtoToSlice
// in grpc's internal/xds/xdsclient/xdsresource/unmarshal_rds.go, v1.85):
// a gRPC call has no query string, so such a match never holds for it,
// and translator/envoy leaves those routes out of gRPC's configuration.
func proxylessRuleGaps(rule gatewayv1.HTTPRouteRule, field string) []string {
	var gaps []string
	for i, f := range rule.Filters {
		ff := fmt.Sprintf("%s.filters[%d]", field, i)
		switch f.Type {
		case gatewayv1.HTTPRouteFilterRequestHeaderModifier, gatewayv1.HTTPRouteFilterResponseHeaderModifier:
			gaps = append(gaps, fmt.Sprintf("%s %s (gRPC-Go modifies no headers from xDS)", ff, f.Type))
		case gatewayv1.HTTPRouteFilterURLRewrite:
			gaps = append(gaps, ff+" URLRewrite (gRPC-Go rewrites neither path nor authority: calls keep their method and reach the backend unchanged)")
		case gatewayv1.HTTPRouteFilterRequestMirror:
			gaps = append(gaps, ff+" RequestMirror (gRPC-Go mirrors nothing)")
		case gatewayv1.HTTPRouteFilterRequestRedirect:
			gaps = append(gaps, ff+" RequestRedirect (gRPC cannot follow a redirect: the calls the rule matches fail with UNAVAILABLE)")
		}
	}
	for j, b := range rule.BackendRefs {
		if len(b.Filters) > 0 {
			gaps = append(gaps, fmt.Sprintf("%s.backendRefs[%d].filters (gRPC-Go modifies no headers from xDS)", field, j))
		}
	}
	for j, m := range rule.Matches {
		if len(m.QueryParams) > 0 {
			gaps = append(gaps, fmt.Sprintf("%s.matches[%d].queryParams (a gRPC call has no query string: the match never holds for them, and calls go to the next matching rule)", field, j))
		}
	}
	return gaps
}

// gatewayMatch translates the HTTPRoute match at field. Regular
// expressions (path, headers, query parameters) must be ones both proxy
// kinds compile (checkRegex). Gateway API: of several header (or query
// parameter) matches with the same name, only the first counts; header
// names compare case-insensitively, query parameter names exactly.
func gatewayMatch(m gatewayv1.HTTPRouteMatch, field string) (ir.Match, error) {
	var im ir.Match
	if m.Path != nil && m.Path.Value != nil {
		typ := gatewayv1.PathMatchPathPrefix
		if m.Path.Type != nil {
			typ = *m.Path.Type
		}
		switch typ {
		case gatewayv1.PathMatchExact:
			im.PathExact = *m.Path.Value
		case gatewayv1.PathMatchPathPrefix:
			if err := pathPrefixProblem(field+".path.value", *m.Path.Value); err != nil {
				return im, err
			}
			im.PathPrefix = *m.Path.Value
		case gatewayv1.PathMatchRegularExpression:
			if err := regexProblem(field+".path.value", *m.Path.Value); err != nil {
				return im, err
			}
			im.PathRegex = *m.Path.Value
		default:
			return im, fmt.Errorf("%s.path.type: %s is not supported; use Exact, PathPrefix or RegularExpression", field, typ)
		}
	}
	if m.Method != nil {
		im.Method = string(*m.Method)
	}
	seen := map[string]bool{}
	for k, h := range m.Headers {
		name := strings.ToLower(string(h.Name))
		if seen[name] {
			continue
		}
		seen[name] = true
		regex := h.Type != nil && *h.Type == gatewayv1.HeaderMatchRegularExpression
		if regex {
			if err := regexProblem(fmt.Sprintf("%s.headers[%d].value", field, k), h.Value); err != nil {
				return im, err
			}
		}
		im.Headers = append(im.Headers, ir.HeaderMatch{Name: name, Value: h.Value, Regex: regex})
	}
	seen = map[string]bool{}
	for k, q := range m.QueryParams {
		if seen[string(q.Name)] {
			continue
		}
		seen[string(q.Name)] = true
		regex := false
		if q.Type != nil {
			switch *q.Type {
			case gatewayv1.QueryParamMatchExact:
			case gatewayv1.QueryParamMatchRegularExpression:
				regex = true
			default:
				return im, fmt.Errorf("%s.queryParams[%d].type: %s is not supported; use Exact or RegularExpression", field, k, *q.Type)
			}
		}
		if regex {
			if err := regexProblem(fmt.Sprintf("%s.queryParams[%d].value", field, k), q.Value); err != nil {
				return im, err
			}
		}
		im.QueryParams = append(im.QueryParams, ir.QueryMatch{Name: string(q.Name), Value: q.Value, Regex: regex})
	}
	return im, nil
}

// byPrecedence orders an HTTPRoute's rules as Gateway API says a request
// picks among matches (HTTPRouteRule's doc comment in
// sigs.k8s.io/gateway-api apis/v1/httproute_types.go), since Envoy takes
// the first route that matches (matchPrecedes); ties keep rule order,
// then match order (new-3: rules were tried in the order written, so a
// rule of PathPrefix / shadowed a later rule of /v2). Precedence is
// per match, so a rule with several matches becomes one route per match,
// each with the rule's backends, timeout and source. Between HTTPRoutes
// (oldest first) there is nothing to order: one route owns a port
// (claimForHTTPRoute).
func byPrecedence(routes []*ir.Route, precedes func(a, b ir.Match) bool) []*ir.Route {
	var out []*ir.Route
	for _, r := range routes {
		if len(r.Matches) <= 1 {
			out = append(out, r)
			continue
		}
		for _, m := range r.Matches {
			c := *r
			c.Matches = []ir.Match{m}
			out = append(out, &c)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return precedes(routeMatch(out[i]), routeMatch(out[j])) })
	return out
}

// routeMatch is a route's only match; a rule without matches matches
// every request, as PathPrefix / does.
func routeMatch(r *ir.Route) ir.Match {
	if len(r.Matches) == 0 {
		return ir.Match{}
	}
	return r.Matches[0]
}

// matchPrecedes says whether Gateway API gives a precedence over b: an
// Exact path, then the longest PathPrefix, then a method, then the most
// header matches, then the most query parameter matches. Gateway API does
// not rank RegularExpression paths; weft puts them between Exact and
// PathPrefix, longer expressions first (docs/design/160), so a catch-all
// PathPrefix / never shadows them.
func matchPrecedes(a, b ir.Match) bool {
	if ka, kb := pathKind(a), pathKind(b); ka != kb {
		return ka > kb
	}
	switch {
	case a.PathRegex != "":
		if len(a.PathRegex) != len(b.PathRegex) {
			return len(a.PathRegex) > len(b.PathRegex)
		}
	case a.PathExact == "":
		if la, lb := prefixLen(a.PathPrefix), prefixLen(b.PathPrefix); la != lb {
			return la > lb
		}
	}
	if (a.Method != "") != (b.Method != "") {
		return a.Method != ""
	}
	if len(a.Headers) != len(b.Headers) {
		return len(a.Headers) > len(b.Headers)
	}
	return len(a.QueryParams) > len(b.QueryParams)
}

// pathKind ranks path match types: Exact, then RegularExpression, then
// PathPrefix (or none).
func pathKind(m ir.Match) int {
	switch {
	case m.PathExact != "":
		return 2
	case m.PathRegex != "":
		return 1
	}
	return 0
}

// prefixLen counts a PathPrefix's characters; none is "/".
func prefixLen(p string) int {
	if p == "" {
		return 1
	}
	return len(p)
}

// proxylessTimeoutGaps names, on each HTTPRoute, the rules whose
// timeouts.backendRequest proxyless gRPC clients cannot apply: gRPC has no
// per-try timeout (gRFC A6 and A44; gRPC-Go's xDS client reads a route's
// max_stream_duration, not retry_policy.per_try_timeout), so on a route
// that a RetryPolicy retries, only timeouts.request bounds the call.
// Without retries, backendRequest bounds the one try and gRPC applies it
// (as max_stream_duration). It runs after retryPolicies, which decide
// whether a route retries.
func (t *translation) proxylessTimeoutGaps() {
	retriedBy := map[PolicyKey]ir.PolicyRef{}
	for _, svc := range t.mesh.Services {
		for _, p := range svc.Ports {
			p.AllRoutes(func(r *ir.Route) {
				if r.Source == nil || r.Source.Kind != KindHTTPRoute || r.BackendTimeout == 0 {
					return
				}
				retry := r.Retry
				if retry == nil {
					retry = p.Retry
				}
				if retry != nil && retry.Attempts > 0 {
					retriedBy[PolicyKey{Kind: KindHTTPRoute, Namespace: r.Source.Namespace, Name: r.Source.Name}] = retry.Source
				}
			})
		}
	}
	for k, by := range retriedBy {
		ps := t.tracked[k]
		if ps == nil {
			continue
		}
		ps.proxyless = fmt.Sprintf("Proxyless gRPC clients (pods annotated %s: grpc) do not apply %s: %s retries the route and gRPC has no per-try timeout, so only the request timeout (timeouts.request, else the RetryPolicy's timeout) bounds each call. Sidecars apply the whole route.",
			dataplane.AnnotationProxyless, strings.Join(t.backendTimeouts[k], ", "), by)
	}
}
