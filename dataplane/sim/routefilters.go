package sim

import (
	"fmt"
	"regexp"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

// What a route does to a request besides choosing a cluster, as Envoy
// documents and implements it (source/common/router/config_impl.cc,
// header_parser.cc, source/common/http/utility.cc).

// headerLevel is one level's header mutations (a weighted cluster, a
// route, a virtual host, a route configuration).
type headerLevel struct {
	add    []*corev3.HeaderValueOption
	remove []string
}

// applyHeaders is HeaderParser::evaluateHeaders for one level: the
// removals first, then each addition by its append_action. An appended
// value joins the existing one with "," (two header lines, which RFC 9110
// reads as one comma-separated value). Values are substitution formats:
// "%%" is a literal "%"; other commands are not simulated and are kept
// as written. Names are compared case-insensitively.
func applyHeaders(h map[string]string, l headerLevel) {
	for _, n := range l.remove {
		delete(h, strings.ToLower(n))
	}
	for _, o := range l.add {
		name := strings.ToLower(o.GetHeader().GetKey())
		val := strings.ReplaceAll(o.GetHeader().GetValue(), "%%", "%")
		old, ok := h[name]
		action := o.GetAppendAction()
		if o.GetAppend() != nil { // deprecated field, when set, decides
			action = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
			if o.GetAppend().GetValue() {
				action = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
			}
		}
		switch action {
		case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
			if ok {
				h[name] = old + "," + val
			} else {
				h[name] = val
			}
		case corev3.HeaderValueOption_ADD_IF_ABSENT:
			if !ok {
				h[name] = val
			}
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
			h[name] = val
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
			if ok {
				h[name] = val
			}
		}
	}
}

// levels are the levels whose request mutations apply, in the
// order Envoy evaluates them: with most_specific_header_mutations_wins
// false (the default), weighted cluster, route, virtual host, route
// configuration, so the most general is applied last and wins; with it
// true, the reverse (RouteEntryImplBase::finalizeRequestHeaders and
// WeightedClusterEntry).
func levels(rc *routev3.RouteConfiguration, vh *routev3.VirtualHost, rt *routev3.Route, cw *routev3.WeightedCluster_ClusterWeight, response bool) []headerLevel {
	pick := func(reqAdd, respAdd []*corev3.HeaderValueOption, reqRm, respRm []string) headerLevel {
		if response {
			return headerLevel{respAdd, respRm}
		}
		return headerLevel{reqAdd, reqRm}
	}
	out := []headerLevel{
		pick(cw.GetRequestHeadersToAdd(), cw.GetResponseHeadersToAdd(), cw.GetRequestHeadersToRemove(), cw.GetResponseHeadersToRemove()),
		pick(rt.GetRequestHeadersToAdd(), rt.GetResponseHeadersToAdd(), rt.GetRequestHeadersToRemove(), rt.GetResponseHeadersToRemove()),
		pick(vh.GetRequestHeadersToAdd(), vh.GetResponseHeadersToAdd(), vh.GetRequestHeadersToRemove(), vh.GetResponseHeadersToRemove()),
		pick(rc.GetRequestHeadersToAdd(), rc.GetResponseHeadersToAdd(), rc.GetRequestHeadersToRemove(), rc.GetResponseHeadersToRemove()),
	}
	if rc.GetMostSpecificHeaderMutationsWins() {
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
	}
	return out
}

// regexRewrite is RegexMatchAndSubstitute on a path: every match of the
// pattern in the path without its query is replaced (RE2::GlobalReplace,
// with \1 style group references), and the query is kept.
func regexRewrite(rr *matcherv3.RegexMatchAndSubstitute, full string) (string, error) {
	re, err := regexp.Compile(rr.GetPattern().GetRegex())
	if err != nil {
		return full, err
	}
	p, q := full, ""
	if i := strings.IndexAny(full, "?"); i >= 0 {
		p, q = full[:i], full[i:]
	}
	sub := regexp.MustCompile(`\\([0-9])`).ReplaceAllString(strings.ReplaceAll(rr.GetSubstitution(), "$", "$$"), "$${$1}")
	return re.ReplaceAllString(p, sub) + q, nil
}

// rewritePath applies a route's prefix_rewrite or regex_rewrite (for a
// forward, or a redirect's): prefix_rewrite replaces what the route's
// prefix, path_separated_prefix or path matched.
func rewritePath(m *routev3.RouteMatch, prefix string, re *matcherv3.RegexMatchAndSubstitute, old string) (string, error) {
	switch {
	case prefix != "":
		switch pm := m.GetPathSpecifier().(type) {
		case *routev3.RouteMatch_Prefix:
			return prefix + strings.TrimPrefix(old, pm.Prefix), nil
		case *routev3.RouteMatch_PathSeparatedPrefix:
			return prefix + strings.TrimPrefix(old, pm.PathSeparatedPrefix), nil
		case *routev3.RouteMatch_Path:
			return prefix + old[len(pathOnly(old)):], nil
		}
	case re != nil:
		return regexRewrite(re, old)
	}
	return old, nil
}

// redirectLocation is the Location of a redirect route
// (Http::Utility::newUri): scheme_redirect (or https_redirect) else the
// request's scheme; host_redirect else the request's Host, whose port
// Envoy drops when a port_redirect is set or the port is the new scheme's
// default (processRequestHost); the path after prefix_rewrite,
// regex_rewrite or path_redirect (which keeps the request's query unless
// it has its own), then strip_query.
func redirectLocation(rt *routev3.Route, req *Request) (string, error) {
	a := rt.GetRedirect()
	scheme := "http"
	if s, ok := req.get(":scheme"); ok {
		scheme = s
	}
	switch {
	case a.GetSchemeRedirect() != "":
		scheme = strings.ToLower(a.GetSchemeRedirect())
	case a.GetHttpsRedirect():
		scheme = "https"
	}
	port := ""
	if a.GetPortRedirect() != 0 {
		port = fmt.Sprintf(":%d", a.GetPortRedirect())
	}
	host := a.GetHostRedirect()
	if host == "" {
		host = req.Headers[":authority"]
		end := strings.LastIndex(host, ":")
		if strings.HasPrefix(host, "[") {
			end = strings.LastIndex(host, "]:")
			if end >= 0 {
				end++
			}
		}
		if end >= 0 {
			rp := host[end:]
			if port != "" || (scheme == "https" && rp == ":443") || (scheme == "http" && rp == ":80") {
				host = host[:end]
			}
		}
	}
	path := req.path()
	var err error
	switch {
	case a.GetPathRedirect() != "":
		pr := a.GetPathRedirect()
		if !strings.Contains(pr, "?") {
			if i := strings.Index(path, "?"); i >= 0 {
				pr += path[i:]
			}
		}
		path = pr
	default:
		path, err = rewritePath(rt.GetMatch(), a.GetPrefixRewrite(), a.GetRegexRewrite(), path)
	}
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	if a.GetStripQuery() && a.GetPathRedirect() == "" {
		if i := strings.Index(path, "?"); i >= 0 {
			path = path[:i]
		}
	}
	return scheme + "://" + host + port + path, err
}

// mirrorShare is a request mirror policy's share, as "cluster=N/D" (the
// walk does not sample: a mirror is reported with its share).
func mirrorShare(p *routev3.RouteAction_RequestMirrorPolicy) string {
	fp := p.GetRuntimeFraction().GetDefaultValue()
	if p.GetRuntimeFraction() == nil {
		return p.GetCluster() + "=100%"
	}
	d := map[typev3.FractionalPercent_DenominatorType]uint32{typev3.FractionalPercent_HUNDRED: 100, typev3.FractionalPercent_TEN_THOUSAND: 10000, typev3.FractionalPercent_MILLION: 1000000}[fp.GetDenominator()]
	return fmt.Sprintf("%s=%.4g%%", p.GetCluster(), float64(fp.GetNumerator())*100/float64(d))
}
