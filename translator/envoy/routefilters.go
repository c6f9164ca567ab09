package envoy

import (
	"regexp"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/weftmesh/weft/translator/ir"
)

// What an HTTPRoute's filters become (docs/design/160). Header
// modifications sit on the route (and on a weighted cluster for a
// backendRef's own): Envoy evaluates a level's removals before its
// additions, and a weighted cluster's level before the route's
// (HeaderParser::evaluateHeaders, WeightedClusterEntry in
// source/common/router/config_impl.cc), so the route's Set wins over a
// backend's, as the more general filter runs last.

// headerOptions are Set (overwrite) and Add (append) as Envoy header
// options. Envoy reads header values as substitution formats, where "%"
// starts a command: a literal "%" is written "%%".
func headerOptions(m *ir.HeaderMods) []*corev3.HeaderValueOption {
	if m == nil {
		return nil
	}
	var out []*corev3.HeaderValueOption
	for _, h := range m.Set {
		out = append(out, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: h.Name, Value: literal(h.Value)},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD})
	}
	for _, h := range m.Add {
		out = append(out, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: h.Name, Value: literal(h.Value)},
			AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD})
	}
	return out
}

func headerRemovals(m *ir.HeaderMods) []string {
	if m == nil {
		return nil
	}
	return m.Remove
}

func literal(v string) string { return strings.ReplaceAll(v, "%", "%%") }

// setRouteHeaders puts the route's header modifications on rt.
func setRouteHeaders(rt *routev3.Route, r *ir.Route) {
	rt.RequestHeadersToAdd = headerOptions(r.RequestHeaders)
	rt.RequestHeadersToRemove = headerRemovals(r.RequestHeaders)
	rt.ResponseHeadersToAdd = headerOptions(r.ResponseHeaders)
	rt.ResponseHeadersToRemove = headerRemovals(r.ResponseHeaders)
}

// backendHasHeaders: a backend with its own header modifications needs a
// weighted cluster entry to carry them, even alone.
func backendHasHeaders(bs []ir.Backend) bool {
	for _, b := range bs {
		if b.RequestHeaders != nil || b.ResponseHeaders != nil {
			return true
		}
	}
	return false
}

// prefixRewrite is Gateway API's ReplacePrefixMatch for a route whose
// match is PathPrefix prefix (element-wise: the path is prefix, or prefix
// followed by "/"): the matched prefix becomes repl, and a replacement of
// "" or "/" leaves a single "/" ("/foo/bar" → "/bar", "/foo" → "/"; the
// table in HTTPPathModifier's doc comment). prefix_rewrite swaps exactly
// the matched path_separated_prefix, which is right unless the
// replacement is empty or the prefix is "/" (whose match is the plain
// prefix "/"); those take a regex_rewrite, anchored, on the path without
// its query.
func prefixRewrite(prefix, repl string) (string, *matcherv3.RegexMatchAndSubstitute) {
	p := strings.TrimRight(prefix, "/")
	r := strings.TrimRight(repl, "/")
	switch {
	case r == "" && p == "":
		return "", nil // "/" by "/": nothing changes
	case r == "":
		return "", &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: "^" + regexp.QuoteMeta(p) + "/*"}, Substitution: "/"}
	case p == "":
		return "", &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: "^/"}, Substitution: r + "/"}
	}
	return r, nil
}

// fullPathRewrite is ReplaceFullPath: the whole path (not the query).
func fullPathRewrite(path string) *matcherv3.RegexMatchAndSubstitute {
	return &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: "^/.*$"}, Substitution: path}
}

// setRewrite applies an URLRewrite to a forwarding action; m is the
// route's match.
func setRewrite(a *routev3.RouteAction, rw *ir.Rewrite, m ir.Match) {
	if rw == nil {
		return
	}
	if rw.Hostname != "" {
		a.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: rw.Hostname}
	}
	switch p := rw.Path; {
	case p == nil:
	case p.ReplacePrefix:
		a.PrefixRewrite, a.RegexRewrite = prefixRewrite(m.PathPrefix, p.Prefix)
	default:
		a.RegexRewrite = fullPathRewrite(p.FullPath)
	}
}

var redirectCodes = map[int]routev3.RedirectAction_RedirectResponseCode{
	301: routev3.RedirectAction_MOVED_PERMANENTLY, 302: routev3.RedirectAction_FOUND,
	303: routev3.RedirectAction_SEE_OTHER, 307: routev3.RedirectAction_TEMPORARY_REDIRECT,
	308: routev3.RedirectAction_PERMANENT_REDIRECT,
}

// redirectAction is a RequestRedirect. Envoy builds the Location from the
// request (Http::Utility::newUri): the scheme, host and path unless
// replaced; the port is port_redirect, or else the request's, which it
// drops when it is the scheme's default. Gateway API's "no port but a
// scheme: the scheme's well-known port" is resolved by the translator.
func redirectAction(red *ir.Redirect, m ir.Match) *routev3.RedirectAction {
	a := &routev3.RedirectAction{ResponseCode: redirectCodes[red.StatusCode], HostRedirect: red.Hostname, PortRedirect: uint32(red.Port)}
	if red.Scheme != "" {
		a.SchemeRewriteSpecifier = &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: red.Scheme}
	}
	switch p := red.Path; {
	case p == nil:
	case p.ReplacePrefix:
		pre, re := prefixRewrite(m.PathPrefix, p.Prefix)
		switch {
		case re != nil:
			a.PathRewriteSpecifier = &routev3.RedirectAction_RegexRewrite{RegexRewrite: re}
		case pre != "":
			a.PathRewriteSpecifier = &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: pre}
		}
	default:
		// path_redirect keeps the request's query when it has none.
		a.PathRewriteSpecifier = &routev3.RedirectAction_PathRedirect{PathRedirect: p.FullPath}
	}
	return a
}

// mirrorPolicies are the route's RequestMirror filters.
func mirrorPolicies(mesh *ir.Mesh, ms []ir.Mirror, f family) []*routev3.RouteAction_RequestMirrorPolicy {
	var out []*routev3.RouteAction_RequestMirrorPolicy
	for _, m := range ms {
		p := &routev3.RouteAction_RequestMirrorPolicy{Cluster: backendClusterOf(mesh, ir.Backend{Service: m.Service, Port: m.Port}, f)}
		if m.Numerator < m.Denominator {
			fp := &typev3.FractionalPercent{Numerator: m.Numerator, Denominator: typev3.FractionalPercent_HUNDRED}
			if m.Denominator != 100 {
				fp = &typev3.FractionalPercent{Numerator: uint32(uint64(m.Numerator) * 1_000_000 / uint64(m.Denominator)), Denominator: typev3.FractionalPercent_MILLION}
			}
			p.RuntimeFraction = &corev3.RuntimeFractionalPercent{DefaultValue: fp}
		}
		out = append(out, p)
	}
	return out
}
