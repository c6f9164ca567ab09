package translator

import (
	"fmt"
	"strings"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/translator/ir"
)

// errUnsupportedFilter marks a filter type weft does not implement:
// Gateway API asks for the whole route to be Accepted=False, reason
// UnsupportedValue (HTTPRouteFilter.Type's doc comment), not for the rule
// to be dropped.
type errUnsupportedFilter struct{ msg string }

func (e errUnsupportedFilter) Error() string { return e.msg }

// httpRouteFilters applies a rule's filters to r (docs/design/160). An
// error means the rule cannot be applied as written (it names the field
// and the fix); an errUnsupportedFilter that weft has no such filter.
//
// Gateway API semantics (sigs.k8s.io/gateway-api apis/v1
// httproute_types.go):
//   - RequestHeaderModifier / ResponseHeaderModifier: Set replaces a
//     header's value, Add appends to it, Remove deletes it; names are
//     case-insensitive.
//   - RequestRedirect answers with a redirect (302 unless statusCode says
//     301, 303, 307 or 308); scheme, hostname, port and path replace the
//     request's. It cannot be combined with URLRewrite.
//   - URLRewrite changes the forwarded Host and path.
//     ReplacePrefixMatch needs the rule's matches to be PathPrefix.
//   - RequestMirror copies a share of requests (percent or fraction; all
//     when neither) to another backend and ignores its answers.
func (t *translation) httpRouteFilters(hr *gatewayv1.HTTPRoute, ps *policyStatus, rule gatewayv1.HTTPRouteRule, field string, r *ir.Route) error {
	for i, f := range rule.Filters {
		ff := fmt.Sprintf("%s.filters[%d]", field, i)
		switch f.Type {
		case gatewayv1.HTTPRouteFilterRequestHeaderModifier:
			if f.RequestHeaderModifier == nil {
				return fmt.Errorf("%s.requestHeaderModifier: missing for type RequestHeaderModifier", ff)
			}
			r.RequestHeaders = mergeMods(r.RequestHeaders, headerMods(f.RequestHeaderModifier))
		case gatewayv1.HTTPRouteFilterResponseHeaderModifier:
			if f.ResponseHeaderModifier == nil {
				return fmt.Errorf("%s.responseHeaderModifier: missing for type ResponseHeaderModifier", ff)
			}
			r.ResponseHeaders = mergeMods(r.ResponseHeaders, headerMods(f.ResponseHeaderModifier))
		case gatewayv1.HTTPRouteFilterRequestRedirect:
			rr := f.RequestRedirect
			if rr == nil {
				return fmt.Errorf("%s.requestRedirect: missing for type RequestRedirect", ff)
			}
			red := &ir.Redirect{StatusCode: 302}
			if rr.StatusCode != nil {
				switch *rr.StatusCode {
				case 301, 302, 303, 307, 308:
					red.StatusCode = *rr.StatusCode
				default:
					return fmt.Errorf("%s.requestRedirect.statusCode: %d is not a redirect weft sends; use 301, 302, 303, 307 or 308", ff, *rr.StatusCode)
				}
			}
			if rr.Scheme != nil {
				switch s := strings.ToLower(*rr.Scheme); s {
				case "http", "https":
					red.Scheme = s
				default:
					return fmt.Errorf("%s.requestRedirect.scheme: %q is not http or https", ff, *rr.Scheme)
				}
			}
			if rr.Hostname != nil {
				red.Hostname = string(*rr.Hostname)
			}
			switch {
			case rr.Port != nil:
				red.Port = int32(*rr.Port)
			case red.Scheme == "http":
				// Gateway API: no port but a scheme means the scheme's
				// well-known port.
				red.Port = 80
			case red.Scheme == "https":
				red.Port = 443
			}
			if rr.Path != nil {
				pr, err := pathModifier(rule, rr.Path, ff+".requestRedirect.path")
				if err != nil {
					return err
				}
				red.Path = pr
			}
			r.Redirect = red
		case gatewayv1.HTTPRouteFilterURLRewrite:
			u := f.URLRewrite
			if u == nil {
				return fmt.Errorf("%s.urlRewrite: missing for type URLRewrite", ff)
			}
			rw := &ir.Rewrite{}
			if u.Hostname != nil {
				rw.Hostname = string(*u.Hostname)
			}
			if u.Path != nil {
				pr, err := pathModifier(rule, u.Path, ff+".urlRewrite.path")
				if err != nil {
					return err
				}
				rw.Path = pr
			}
			r.Rewrite = rw
		case gatewayv1.HTTPRouteFilterRequestMirror:
			m := f.RequestMirror
			if m == nil {
				return fmt.Errorf("%s.requestMirror: missing for type RequestMirror", ff)
			}
			mir, ok := t.mirror(hr, ps, m, ff+".requestMirror")
			if ok {
				r.Mirrors = append(r.Mirrors, mir)
			}
		default:
			return errUnsupportedFilter{fmt.Sprintf("%s.type: weft does not implement the %s filter; remove it (weft applies RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect, URLRewrite and RequestMirror)", ff, f.Type)}
		}
	}
	if r.Redirect != nil && r.Rewrite != nil {
		return fmt.Errorf("%s.filters: RequestRedirect and URLRewrite cannot be used together; keep one", field)
	}
	return nil
}

// backendFilters applies a backendRef's filters to b: weft applies the
// header modifiers there; any other filter drops the rule.
func backendFilters(ref gatewayv1.HTTPBackendRef, field string, b *ir.Backend) error {
	for i, f := range ref.Filters {
		ff := fmt.Sprintf("%s.filters[%d]", field, i)
		switch {
		case f.Type == gatewayv1.HTTPRouteFilterRequestHeaderModifier && f.RequestHeaderModifier != nil:
			b.RequestHeaders = mergeMods(b.RequestHeaders, headerMods(f.RequestHeaderModifier))
		case f.Type == gatewayv1.HTTPRouteFilterResponseHeaderModifier && f.ResponseHeaderModifier != nil:
			b.ResponseHeaders = mergeMods(b.ResponseHeaders, headerMods(f.ResponseHeaderModifier))
		default:
			return fmt.Errorf("%s.type: on a backendRef weft applies RequestHeaderModifier and ResponseHeaderModifier only (found %s); move it to the rule's filters", ff, f.Type)
		}
	}
	return nil
}

// pathModifier translates a redirect's or rewrite's path.
func pathModifier(rule gatewayv1.HTTPRouteRule, p *gatewayv1.HTTPPathModifier, field string) (*ir.PathRewrite, error) {
	switch p.Type {
	case gatewayv1.FullPathHTTPPathModifier:
		if p.ReplaceFullPath == nil {
			return nil, fmt.Errorf("%s.replaceFullPath: required for type ReplaceFullPath", field)
		}
		full := *p.ReplaceFullPath
		if !strings.HasPrefix(full, "/") {
			full = "/" + full
		}
		return &ir.PathRewrite{FullPath: full}, nil
	case gatewayv1.PrefixMatchHTTPPathModifier:
		if p.ReplacePrefixMatch == nil {
			return nil, fmt.Errorf("%s.replacePrefixMatch: required for type ReplacePrefixMatch", field)
		}
		for j, m := range rule.Matches {
			if m.Path == nil || (m.Path.Type != nil && *m.Path.Type != gatewayv1.PathMatchPathPrefix) {
				return nil, fmt.Errorf("%s.replacePrefixMatch: needs a PathPrefix match, and matches[%d] is not one; use ReplaceFullPath", field, j)
			}
		}
		if len(rule.Matches) == 0 {
			return nil, fmt.Errorf("%s.replacePrefixMatch: needs a PathPrefix match, and the rule has none; use ReplaceFullPath", field)
		}
		return &ir.PathRewrite{ReplacePrefix: true, Prefix: *p.ReplacePrefixMatch}, nil
	}
	return nil, fmt.Errorf("%s.type: %s is not ReplaceFullPath or ReplacePrefixMatch", field, p.Type)
}

// headerMods reads a header filter; names become lower case.
func headerMods(f *gatewayv1.HTTPHeaderFilter) *ir.HeaderMods {
	m := &ir.HeaderMods{}
	for _, h := range f.Set {
		m.Set = append(m.Set, ir.HeaderValue{Name: strings.ToLower(string(h.Name)), Value: h.Value})
	}
	for _, h := range f.Add {
		m.Add = append(m.Add, ir.HeaderValue{Name: strings.ToLower(string(h.Name)), Value: h.Value})
	}
	for _, n := range f.Remove {
		m.Remove = append(m.Remove, strings.ToLower(n))
	}
	return m
}

func mergeMods(a, b *ir.HeaderMods) *ir.HeaderMods {
	if a == nil {
		return b
	}
	return &ir.HeaderMods{Set: append(a.Set, b.Set...), Add: append(a.Add, b.Add...), Remove: append(a.Remove, b.Remove...)}
}

// mirror resolves a RequestMirror's backend. One that cannot be used is
// ResolvedRefs=False and mirrors nothing; the rule still applies (its
// requests do not depend on the copy).
func (t *translation) mirror(hr *gatewayv1.HTTPRoute, ps *policyStatus, m *gatewayv1.HTTPRequestMirrorFilter, field string) (ir.Mirror, bool) {
	b := m.BackendRef
	bf := field + ".backendRef"
	if !isServiceRef(b.Group, ptrOr(b.Kind, "Service")) {
		ps.unresolved(ReasonInvalidKind, "%s: only Services can be mirrored to, not %s (nothing is mirrored)", bf, *b.Kind)
		return ir.Mirror{}, false
	}
	ns := hr.Namespace
	if b.Namespace != nil {
		ns = string(*b.Namespace)
	}
	if ok, why := t.backendPermitted(hr, ps.kind, ns, string(b.Name)); !ok {
		ps.unresolved(ReasonRefNotPermitted, "%s.namespace: %s (nothing is mirrored meanwhile)", bf, why)
		return ir.Mirror{}, false
	}
	svc := t.byKey[ir.ServiceKey{Namespace: ns, Name: string(b.Name)}]
	switch {
	case svc == nil:
		ps.unresolved(v1alpha1.ReasonBackendNotFound, "%s.name: Service %q does not exist in namespace %s; nothing is mirrored until it does", bf, b.Name, ns)
		return ir.Mirror{}, false
	case b.Port == nil || svc.Port(int32(*b.Port)) == nil:
		ps.unresolved(v1alpha1.ReasonPortNotFound, "%s.port: set it to one of Service %s's ports: %s (nothing is mirrored meanwhile)", bf, svc.Key.Name, portList(svc))
		return ir.Mirror{}, false
	}
	mir := ir.Mirror{Service: svc.Key, Port: int32(*b.Port), Numerator: 100, Denominator: 100}
	switch {
	case m.Percent != nil:
		mir.Numerator = uint32(max(*m.Percent, 0))
	case m.Fraction != nil:
		mir.Numerator, mir.Denominator = uint32(max(m.Fraction.Numerator, 0)), 100
		if m.Fraction.Denominator != nil && *m.Fraction.Denominator > 0 {
			mir.Denominator = uint32(*m.Fraction.Denominator)
		}
		if mir.Numerator > mir.Denominator {
			mir.Numerator = mir.Denominator
		}
	}
	return mir, true
}
