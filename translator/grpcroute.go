package translator

import (
	"fmt"
	"regexp"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/translator/ir"
)

// KindGRPCRoute is Gateway API's GRPCRoute (gateway.networking.k8s.io/v1).
const KindGRPCRoute = "GRPCRoute"

// A GAMMA GRPCRoute (parentRefs to Services) is applied as the HTTPRoute
// it is equivalent to (docs/design/175): a gRPC call is an HTTP/2 POST to
// /<service>/<method>, so a method match is a path match, and the
// GRPCRoute's headers, backendRefs, weights and filters (the header
// modifiers and RequestMirror, the only ones GRPCRoute has besides
// ExtensionRef) are HTTPRoute's own types. grpcRoute builds that HTTPRoute
// and hands it to httpRoute, so both kinds share one reading of
// parentRefs, backendRefs, filters, status and proxyless gaps; what is
// GRPCRoute's alone is here:
//
//   - the method match → path translation (grpcMethodPath);
//   - rule precedence, which Gateway API defines differently for
//     GRPCRoute: the most characters of service, then of method, then the
//     most header matches (grpcMatchPrecedes);
//   - ExtensionRef filters, which weft does not implement: the whole
//     route is Accepted=False, reason UnsupportedValue, as for HTTPRoute.
//
// An HTTPRoute and a GRPCRoute on the same Service port conflict as two
// HTTPRoutes do (claimForHTTPRoute): the older route (creation time, then
// namespace/name) owns the port, and the other is Accepted=False,
// Conflicted — Gateway API's rule for an HTTPRoute and a GRPCRoute on one
// listener (GRPCRouteSpec.Hostnames), which it also says must never be
// merged.
func (t *translation) grpcRoute(gr *gatewayv1.GRPCRoute, ps *policyStatus, ref *ir.PolicyRef) {
	hr := &gatewayv1.HTTPRoute{ObjectMeta: gr.ObjectMeta}
	hr.Spec.CommonRouteSpec = gr.Spec.CommonRouteSpec
	hr.Spec.Hostnames = gr.Spec.Hostnames
	var problems []string
	for i, rule := range gr.Spec.Rules {
		field := fmt.Sprintf("spec.rules[%d]", i)
		hrule, err := t.grpcRuleAsHTTP(rule, field)
		if u, ok := err.(errUnsupportedFilter); ok {
			ps.reject(ReasonUnsupportedValue, "%s; the route changes nothing until then", u.msg)
			return
		}
		if err != nil {
			// A rule without matches or backends is no rule to
			// httpRoute: it keeps the rules' indices, which its
			// messages name.
			problems = append(problems, err.Error())
			hrule = gatewayv1.HTTPRouteRule{}
		}
		hr.Spec.Rules = append(hr.Spec.Rules, hrule)
	}
	if len(problems) > 0 && len(problems) == len(gr.Spec.Rules) {
		ps.reject(v1alpha1.ReasonInvalid, "%s; the route has no rule weft can apply, so it changes nothing", strings.Join(problems, "; "))
		return
	}
	for _, p := range problems {
		ps.dropRule(p)
	}
	t.httpRoute(hr, ps, ref)
	if ps.ok() && len(gr.Spec.Rules) > 0 && len(ps.dropped) == len(gr.Spec.Rules) {
		// Some rules were invalid here, the others for httpRoute.
		for i, d := range ps.dropped {
			ps.dropped[i] = strings.TrimPrefix(d, "Dropped Rule ")
		}
		ps.reject(v1alpha1.ReasonInvalid, "%s; the route has no rule weft can apply, so it changes nothing", strings.Join(ps.dropped, "; "))
		ps.dropped = nil
	}
	// httpRoute's words for an HTTPRoute on a TCP port.
	for _, c := range []*metav1.Condition{ps.accepted, ps.resolved} {
		c.Message = strings.ReplaceAll(c.Message, "an HTTPRoute cannot apply", "a GRPCRoute cannot apply")
	}
}

// grpcRuleAsHTTP is the HTTPRoute rule equivalent to a GRPCRoute rule. An
// errUnsupportedFilter names a filter weft does not implement; another
// error, a match it cannot apply (the rule is dropped).
func (t *translation) grpcRuleAsHTTP(rule gatewayv1.GRPCRouteRule, field string) (gatewayv1.HTTPRouteRule, error) {
	var out gatewayv1.HTTPRouteRule
	filters, err := grpcFiltersAsHTTP(rule.Filters, field+".filters")
	if err != nil {
		return out, err
	}
	out.Filters = filters
	for j, m := range rule.Matches {
		mf := fmt.Sprintf("%s.matches[%d]", field, j)
		var hm gatewayv1.HTTPRouteMatch
		if m.Method != nil {
			path, err := t.grpcMethodPath(m.Method, mf+".method")
			if err != nil {
				return out, err
			}
			hm.Path = path
		}
		for _, h := range m.Headers {
			hh := gatewayv1.HTTPHeaderMatch{Name: gatewayv1.HTTPHeaderName(h.Name), Value: h.Value}
			if h.Type != nil {
				typ := gatewayv1.HeaderMatchType(*h.Type)
				hh.Type = &typ
			}
			hm.Headers = append(hm.Headers, hh)
		}
		out.Matches = append(out.Matches, hm)
	}
	for _, b := range rule.BackendRefs {
		// Backend filters of types other than the header modifiers drop
		// the rule in backendFilters, as for an HTTPRoute.
		hb := gatewayv1.HTTPBackendRef{BackendRef: b.BackendRef}
		for _, f := range b.Filters {
			hb.Filters = append(hb.Filters, grpcFilterAsHTTP(f))
		}
		out.BackendRefs = append(out.BackendRefs, hb)
	}
	return out, nil
}

// grpcFiltersAsHTTP converts a rule's filters; weft applies the header
// modifiers and RequestMirror (docs/api.md), and has no ExtensionRef.
func grpcFiltersAsHTTP(fs []gatewayv1.GRPCRouteFilter, field string) ([]gatewayv1.HTTPRouteFilter, error) {
	var out []gatewayv1.HTTPRouteFilter
	for i, f := range fs {
		switch f.Type {
		case gatewayv1.GRPCRouteFilterRequestHeaderModifier, gatewayv1.GRPCRouteFilterResponseHeaderModifier, gatewayv1.GRPCRouteFilterRequestMirror:
			out = append(out, grpcFilterAsHTTP(f))
		default:
			return nil, errUnsupportedFilter{fmt.Sprintf("%s[%d].type: weft does not implement the %s filter; remove it (on a GRPCRoute weft applies RequestHeaderModifier, ResponseHeaderModifier and RequestMirror)", field, i, f.Type)}
		}
	}
	return out, nil
}

func grpcFilterAsHTTP(f gatewayv1.GRPCRouteFilter) gatewayv1.HTTPRouteFilter {
	return gatewayv1.HTTPRouteFilter{
		Type:                   gatewayv1.HTTPRouteFilterType(f.Type),
		RequestHeaderModifier:  f.RequestHeaderModifier,
		ResponseHeaderModifier: f.ResponseHeaderModifier,
		RequestMirror:          f.RequestMirror,
		ExtensionRef:           f.ExtensionRef,
	}
}

// grpcRank is what a GRPCRoute match is ranked by, besides its header
// matches: the characters of its Exact service and method (Gateway API's
// criteria), then the length of its RegularExpression service and method
// (implementation-specific: an expression's length says little of what it
// matches, so it ranks after every Exact name, longer first, as
// HTTPRoute's expressions do in docs/design/160).
type grpcRank struct{ service, method, reService, reMethod int }

// grpcMethodPath is the path match of a gRPC method match (field names
// it), and records its rank for grpcMatchPrecedes. A call's path is
// /<service>/<method>:
//
//   - Exact service and method: that path exactly.
//   - Exact service only: PathPrefix /<service> (whole path elements, so
//     /<service>/ and what follows; a call's path always has a method).
//   - Exact method only: the expression /[^/]+/<method> (Gateway API:
//     implementation-specific; every service).
//   - RegularExpression: /(?:<service>)/(?:<method>), an empty one being
//     [^/]+ (any service, any method); RE2, as for HTTPRoute.
func (t *translation) grpcMethodPath(m *gatewayv1.GRPCMethodMatch, field string) (*gatewayv1.HTTPPathMatch, error) {
	svc, method := deref(m.Service), deref(m.Method)
	if svc == "" && method == "" {
		return nil, fmt.Errorf("%s: set service, method or both (a method match with neither matches nothing Gateway API defines); or remove the method match to match every call", field)
	}
	typ := gatewayv1.GRPCMethodMatchExact
	if m.Type != nil {
		typ = *m.Type
	}
	var pt gatewayv1.PathMatchType
	var value string
	switch typ {
	case gatewayv1.GRPCMethodMatchExact:
		for _, p := range []struct{ name, v string }{{"service", svc}, {"method", method}} {
			if strings.ContainsRune(p.v, '/') {
				return nil, fmt.Errorf("%s.%s: %q contains '/', which an Exact gRPC name cannot; remove it, or use type RegularExpression", field, p.name, p.v)
			}
		}
		switch {
		case svc != "" && method != "":
			pt, value = gatewayv1.PathMatchExact, "/"+svc+"/"+method
		case svc != "":
			pt, value = gatewayv1.PathMatchPathPrefix, "/"+svc
		default:
			pt, value = gatewayv1.PathMatchRegularExpression, "/[^/]+/"+regexp.QuoteMeta(method)
		}
	case gatewayv1.GRPCMethodMatchRegularExpression:
		parts := []string{"[^/]+", "[^/]+"}
		for i, p := range []struct{ name, v string }{{"service", svc}, {"method", method}} {
			if p.v == "" {
				continue
			}
			if err := regexProblem(field+"."+p.name, p.v); err != nil {
				return nil, err
			}
			parts[i] = "(?:" + p.v + ")"
		}
		pt, value = gatewayv1.PathMatchRegularExpression, "/"+parts[0]+"/"+parts[1]
		if err := regexProblem(field, value); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%s.type: %s is not supported; use Exact or RegularExpression", field, typ)
	}
	if t.grpcRanks == nil {
		t.grpcRanks = map[string]grpcRank{}
	}
	r := grpcRank{service: len(svc), method: len(method)}
	if typ == gatewayv1.GRPCMethodMatchRegularExpression {
		r = grpcRank{reService: len(svc), reMethod: len(method)}
	}
	t.grpcRanks[string(pt)+":"+value] = r
	return &gatewayv1.HTTPPathMatch{Type: &pt, Value: &value}, nil
}

// rank is the recorded rank of a GRPCRoute match's path (none: zero).
func (t *translation) rank(m ir.Match) grpcRank {
	switch {
	case m.PathExact != "":
		return t.grpcRanks[string(gatewayv1.PathMatchExact)+":"+m.PathExact]
	case m.PathRegex != "":
		return t.grpcRanks[string(gatewayv1.PathMatchRegularExpression)+":"+m.PathRegex]
	case m.PathPrefix != "":
		return t.grpcRanks[string(gatewayv1.PathMatchPathPrefix)+":"+m.PathPrefix]
	}
	return grpcRank{}
}

// precedes is how a route's rules are ordered (byPrecedence): Gateway
// API's HTTPRoute precedence (matchPrecedes), or for a GRPCRoute, its
// own (GRPCRouteRule.Matches' doc comment): the most characters of a
// matching service, then of a matching method (grpcRank: Exact names
// first, then expressions), then the most header matches; ties keep rule
// order, then match order.
func (t *translation) precedes(ref *ir.PolicyRef) func(a, b ir.Match) bool {
	if ref.Kind != KindGRPCRoute {
		return matchPrecedes
	}
	return func(a, b ir.Match) bool {
		ra, rb := t.rank(a), t.rank(b)
		if ra.service != rb.service {
			return ra.service > rb.service
		}
		if ra.method != rb.method {
			return ra.method > rb.method
		}
		if ra.reService != rb.reService {
			return ra.reService > rb.reService
		}
		if ra.reMethod != rb.reMethod {
			return ra.reMethod > rb.reMethod
		}
		return len(a.Headers) > len(b.Headers)
	}
}

// meshRoutes are the HTTPRoutes and GRPCRoutes that attach to a Service
// (GAMMA), oldest first: the older of two routes on one port owns it,
// whatever their kinds.
func (t *translation) meshRoutes() []metav1.Object {
	var out []metav1.Object
	for _, hr := range t.in.HTTPRoutes {
		if hasServiceParent(hr) {
			out = append(out, hr)
		}
	}
	for _, gr := range t.in.GRPCRoutes {
		for _, p := range gr.Spec.ParentRefs {
			if isServiceRef(p.Group, p.Kind) {
				out = append(out, gr)
				break
			}
		}
	}
	return sortedByAge(out)
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
