package sim

import (
	"regexp"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// Request is an HTTP request as a filter sees it. Header names are lower
// case; the pseudo-headers :method, :path, :authority and :scheme are
// headers too, as in Envoy.
type Request struct {
	Headers map[string]string
}

func (r *Request) get(name string) (string, bool) {
	if r == nil {
		return "", false
	}
	v, ok := r.Headers[strings.ToLower(name)]
	return v, ok
}

func (r *Request) path() string { v, _ := r.get(":path"); return v }

func (r *Request) clone() *Request {
	if r == nil {
		return nil
	}
	h := make(map[string]string, len(r.Headers))
	for k, v := range r.Headers {
		h[k] = v
	}
	return &Request{Headers: h}
}

// pathOnly is the path without query and fragment
// (Http::PathUtil::removeQueryAndFragment).
func pathOnly(p string) string {
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		return p[:i]
	}
	return p
}

// MatchString is envoy.type.matcher.v3.StringMatcher
// (Matchers::StringMatcherImpl in source/common/common/matchers.cc). A
// regex must match the whole value (RE2 FullMatch); Go's regexp is RE2's
// syntax.
func MatchString(m *matcherv3.StringMatcher, v string) bool {
	if m == nil {
		return false
	}
	ic := m.GetIgnoreCase()
	eq := func(a, b string) bool { return a == b || (ic && strings.EqualFold(a, b)) }
	low := func(s string) string {
		if ic {
			return strings.ToLower(s)
		}
		return s
	}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		return eq(v, p.Exact)
	case *matcherv3.StringMatcher_Prefix:
		return strings.HasPrefix(low(v), low(p.Prefix))
	case *matcherv3.StringMatcher_Suffix:
		return strings.HasSuffix(low(v), low(p.Suffix))
	case *matcherv3.StringMatcher_Contains:
		return strings.Contains(low(v), low(p.Contains))
	case *matcherv3.StringMatcher_SafeRegex:
		return fullMatch(p.SafeRegex.GetRegex(), v)
	}
	return false
}

func fullMatch(re, v string) bool {
	r, err := regexp.Compile(`^(?:` + re + `)$`)
	return err == nil && r.MatchString(v)
}

// MatchHeader is envoy.config.route.v3.HeaderMatcher
// (HeaderUtility::HeaderData in source/common/http/header_utility.cc): an
// absent header fails every matcher but present_match (invert_match does
// not turn an absent header into a match unless
// treat_missing_header_as_empty); several values are joined with ",".
func MatchHeader(m *routev3.HeaderMatcher, r *Request) bool {
	v, ok := r.get(m.GetName())
	if pm, isPresent := m.GetHeaderMatchSpecifier().(*routev3.HeaderMatcher_PresentMatch); isPresent {
		return (ok == pm.PresentMatch) != m.GetInvertMatch()
	}
	if !ok {
		if !m.GetTreatMissingHeaderAsEmpty() {
			return false
		}
		v = ""
	}
	var res bool
	switch s := m.GetHeaderMatchSpecifier().(type) {
	case nil:
		res = true // no specifier: presence
	case *routev3.HeaderMatcher_ExactMatch:
		res = v == s.ExactMatch
	case *routev3.HeaderMatcher_PrefixMatch:
		res = strings.HasPrefix(v, s.PrefixMatch)
	case *routev3.HeaderMatcher_SuffixMatch:
		res = strings.HasSuffix(v, s.SuffixMatch)
	case *routev3.HeaderMatcher_ContainsMatch:
		res = strings.Contains(v, s.ContainsMatch)
	case *routev3.HeaderMatcher_SafeRegexMatch:
		res = fullMatch(s.SafeRegexMatch.GetRegex(), v)
	case *routev3.HeaderMatcher_StringMatch:
		res = MatchString(s.StringMatch, v)
	default:
		res = false // range_match: not encoded
	}
	return res != m.GetInvertMatch()
}

// MatchVirtualHost picks a route configuration's virtual host for a Host
// value as RouteMatcher::findVirtualHost does
// (source/common/router/config_impl.cc): the host is lower-cased (and its
// port dropped when ignore_port_in_host_matching); an exact domain first,
// then the longest "*suffix" wildcard, then the longest "prefix*", then
// "*". Domains are compared with the port as written: "svc" does not match
// Host "svc:80".
func MatchVirtualHost(rc *routev3.RouteConfiguration, host string) *routev3.VirtualHost {
	host = strings.ToLower(host)
	if rc.GetIgnorePortInHostMatching() {
		host = stripPort(host)
	}
	var suffix, prefix, star *routev3.VirtualHost
	suffixLen, prefixLen := -1, -1
	for _, vh := range rc.GetVirtualHosts() {
		for _, d := range vh.GetDomains() {
			d = strings.ToLower(d)
			switch {
			case d == "*":
				if star == nil {
					star = vh
				}
			case d == host:
				return vh
			case strings.HasPrefix(d, "*") && len(host) > len(d)-1 && strings.HasSuffix(host, d[1:]):
				if len(d) > suffixLen {
					suffix, suffixLen = vh, len(d)
				}
			case strings.HasSuffix(d, "*") && len(host) > len(d)-1 && strings.HasPrefix(host, d[:len(d)-1]):
				if len(d) > prefixLen {
					prefix, prefixLen = vh, len(d)
				}
			}
		}
	}
	switch {
	case suffix != nil:
		return suffix
	case prefix != nil:
		return prefix
	}
	return star
}

func stripPort(h string) string {
	if strings.HasPrefix(h, "[") {
		if i := strings.Index(h, "]"); i >= 0 {
			return h[:i+1]
		}
		return h
	}
	if i := strings.LastIndex(h, ":"); i >= 0 && strings.Count(h, ":") == 1 {
		return h[:i]
	}
	return h
}

// MatchRoute is the first route of a virtual host whose match holds
// (RouteEntryImplBase::matchRoute and the path matchers in
// source/common/router/config_impl.cc):
//
//   - prefix compares the :path as sent, query included;
//   - path (exact), safe_regex (full match) and path_separated_prefix
//     compare the path without query; path_separated_prefix holds when
//     the path equals the prefix or continues with "/";
//   - case_sensitive (default true) applies to prefix and path;
//   - every header matcher must hold, and every query parameter matcher.
func MatchRoute(vh *routev3.VirtualHost, r *Request) *routev3.Route {
	for _, rt := range vh.GetRoutes() {
		if routeMatches(rt.GetMatch(), r) {
			return rt
		}
	}
	return nil
}

func routeMatches(m *routev3.RouteMatch, r *Request) bool {
	full := r.path()
	p := pathOnly(full)
	cs := m.GetCaseSensitive() == nil || m.GetCaseSensitive().GetValue()
	fold := func(s string) string {
		if cs {
			return s
		}
		return strings.ToLower(s)
	}
	switch ps := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		if !strings.HasPrefix(fold(full), fold(ps.Prefix)) {
			return false
		}
	case *routev3.RouteMatch_Path:
		if fold(p) != fold(ps.Path) {
			return false
		}
	case *routev3.RouteMatch_SafeRegex:
		if !fullMatch(ps.SafeRegex.GetRegex(), p) {
			return false
		}
	case *routev3.RouteMatch_PathSeparatedPrefix:
		pre := fold(ps.PathSeparatedPrefix)
		if q := fold(p); q != pre && !strings.HasPrefix(q, pre+"/") {
			return false
		}
	default:
		return false // connect_matcher, path_match_policy: not encoded
	}
	for _, h := range m.GetHeaders() {
		if !MatchHeader(h, r) {
			return false
		}
	}
	if qps := m.GetQueryParameters(); len(qps) > 0 {
		q := queryOf(full)
		for _, qp := range qps {
			v, ok := q[qp.GetName()]
			switch {
			case qp.GetPresentMatch():
				if !ok {
					return false
				}
			case qp.GetStringMatch() != nil:
				if !ok || !MatchString(qp.GetStringMatch(), v) {
					return false
				}
			default:
				if !ok {
					return false
				}
			}
		}
	}
	return true
}

// queryOf reads a path's query parameters (first value of each; no
// percent-decoding, as Envoy's route matcher compares them raw).
func queryOf(path string) map[string]string {
	out := map[string]string{}
	i := strings.Index(path, "?")
	if i < 0 {
		return out
	}
	q := path[i+1:]
	if j := strings.Index(q, "#"); j >= 0 {
		q = q[:j]
	}
	for _, kv := range strings.Split(q, "&") {
		k, v, _ := strings.Cut(kv, "=")
		if _, seen := out[k]; !seen && k != "" {
			out[k] = v
		}
	}
	return out
}

// normalizePath applies the HCM's path_with_escaped_slashes_action, then
// normalize_path, then merge_slashes, before routing and filters see the
// path, in that order (ConnectionManagerUtility::maybeNormalizePath in
// source/common/http/conn_manager_utility.cc). The query is kept as is.
//
//   - unescapeSlashes (UNESCAPE_AND_FORWARD / _AND_REDIRECT; REJECT_REQUEST
//     answers 400 instead, reported by the caller): %2F and %2f become
//     "/", %5C and %5c "\" (PathUtil::unescapeSlashes in
//     source/common/http/path_utility.cc). KEEP_UNESCAPED, and the
//     IMPLEMENTATION_SPECIFIC_DEFAULT that Envoy maps to it, leave them.
//   - normalize_path is Chromium's path canonicalization
//     (source/common/chromium_url/url_canon_path.cc, DoPartialPath): a
//     backslash becomes "/"; a percent-escape of an unreserved character
//     (ALPHA, DIGIT, "-", "_", "~", and "." which IsDot reads as a dot) is
//     decoded; "." and ".." segments are removed (RFC 3986 section
//     5.2.4); other escapes, %2F included, stay.
func normalizePath(full string, escapedSlashes, normalize, merge bool) string {
	p, rest := full, ""
	if i := strings.IndexAny(full, "?#"); i >= 0 {
		p, rest = full[:i], full[i:]
	}
	if escapedSlashes {
		p = unescapeSlashes(p)
	}
	if normalize {
		p = removeDotSegments(decodeUnreserved(strings.ReplaceAll(p, `\`, "/")))
	}
	if merge {
		for strings.Contains(p, "//") {
			p = strings.ReplaceAll(p, "//", "/")
		}
	}
	return p + rest
}

// hasEscapedSlash: the path holds %2F or %5C in either case.
func hasEscapedSlash(p string) bool {
	u := strings.ToUpper(pathOnly(p))
	return strings.Contains(u, "%2F") || strings.Contains(u, "%5C")
}

func unescapeSlashes(p string) string {
	return strings.NewReplacer("%2F", "/", "%2f", "/", "%5C", `\`, "%5c", `\`).Replace(p)
}

// decodeUnreserved decodes the percent-escapes that Chromium's
// kPathCharLookup marks UNESCAPE (and %2E, the escaped dot).
func decodeUnreserved(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] == '%' && i+2 < len(p) {
			if c, ok := unhex(p[i+1], p[i+2]); ok && (c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '~' || c == '.') {
				b.WriteByte(c)
				i += 2
				continue
			}
		}
		b.WriteByte(p[i])
	}
	return b.String()
}

func unhex(a, b byte) (byte, bool) {
	v := func(c byte) (byte, bool) {
		switch {
		case c >= '0' && c <= '9':
			return c - '0', true
		case c >= 'a' && c <= 'f':
			return c - 'a' + 10, true
		case c >= 'A' && c <= 'F':
			return c - 'A' + 10, true
		}
		return 0, false
	}
	x, ok1 := v(a)
	y, ok2 := v(b)
	return x<<4 | y, ok1 && ok2
}

func removeDotSegments(p string) string {
	var out []string
	segs := strings.Split(p, "/")
	for i, s := range segs {
		switch s {
		case ".":
			if i == len(segs)-1 {
				out = append(out, "")
			}
		case "..":
			if len(out) > 1 {
				out = out[:len(out)-1]
			}
			if i == len(segs)-1 {
				out = append(out, "")
			}
		default:
			out = append(out, s)
		}
	}
	r := strings.Join(out, "/")
	if !strings.HasPrefix(r, "/") {
		r = "/" + r
	}
	return r
}
