package translator

import (
	"fmt"
	"reflect"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/translator/ir"
)

// Kinds of the policies whose status the translator reports.
const (
	KindTrafficSplit = "TrafficSplit"
	KindHTTPRoute    = "HTTPRoute"
	KindRetryPolicy  = "RetryPolicy"
	KindAuthPolicy   = "AuthPolicy"
)

// Routing policies attach to Service ports:
//
//   - An HTTPRoute (GAMMA) owns the ports it attaches to. Between two
//     HTTPRoutes on one port the older wins; the newer is Conflicted.
//   - TrafficSplits on a port that an HTTPRoute owns are Conflicted: the
//     standard API takes precedence.
//   - Several TrafficSplits may share a root port: those with matches are
//     tried first (oldest first), then the one without. Two with equal
//     matches conflict, and the older wins.
//
// A port's routes end with its Service's own route, so requests that match
// no split still reach the root.
type portRouting struct {
	httpRoute *ir.PolicyRef
	splits    []*ir.Route
}

func (t *translation) routes() {
	t.routed = map[portKey]*portRouting{}
	for _, hr := range sortedByAge(t.in.HTTPRoutes) {
		if !hasServiceParent(hr) {
			continue // routes for Gateways are not the mesh's to program
		}
		ps := t.track(KindHTTPRoute, hr)
		t.httpRoute(hr, ps, &ir.PolicyRef{Kind: KindHTTPRoute, Namespace: hr.Namespace, Name: hr.Name, Generation: hr.Generation})
	}
	for _, ts := range sortedByAge(t.in.TrafficSplits) {
		ps := t.track(KindTrafficSplit, ts)
		t.trafficSplit(ts, ps, &ir.PolicyRef{Kind: KindTrafficSplit, Namespace: ts.Namespace, Name: ts.Name, Generation: ts.Generation})
	}
	for k, pr := range t.routed {
		if pr.httpRoute != nil || len(pr.splits) == 0 {
			continue
		}
		port := t.byKey[k.svc].Port(k.port)
		sort.SliceStable(pr.splits, func(i, j int) bool { return len(pr.splits[i].Matches) > 0 && len(pr.splits[j].Matches) == 0 })
		port.Routes = pr.splits
		if len(pr.splits[len(pr.splits)-1].Matches) > 0 {
			port.Routes = append(port.Routes, defaultRoute(k.svc, k.port))
		}
	}
}

func (t *translation) routing(k portKey) *portRouting {
	pr := t.routed[k]
	if pr == nil {
		pr = &portRouting{}
		t.routed[k] = pr
	}
	return pr
}

// claimForHTTPRoute gives an HTTPRoute a port, unless an older one has it.
func (t *translation) claimForHTTPRoute(ps *policyStatus, ref *ir.PolicyRef, svc *ir.Service, port *ir.Port, field string, routes []*ir.Route) {
	pr := t.routing(portKey{svc.Key, port.Port})
	if pr.httpRoute != nil {
		ps.reject(v1alpha1.ReasonConflicted, "%s: port %d of Service %s is already routed by the older %s; merge the two routes into one",
			field, port.Port, svc.Key.Name, pr.httpRoute)
		return
	}
	pr.httpRoute = ref
	port.Routes = routes
}

// addSplit adds a TrafficSplit's route to a port, unless an HTTPRoute owns
// the port or an older split has the same matches.
func (t *translation) addSplit(ps *policyStatus, svc *ir.Service, port *ir.Port, route *ir.Route) {
	pr := t.routing(portKey{svc.Key, port.Port})
	if pr.httpRoute != nil {
		ps.reject(v1alpha1.ReasonConflicted, "spec.rootService: port %d of Service %s is routed by %s, which takes precedence; delete this TrafficSplit or the HTTPRoute",
			port.Port, svc.Key.Name, pr.httpRoute)
		return
	}
	for _, other := range pr.splits {
		if reflect.DeepEqual(other.Matches, route.Matches) {
			ps.reject(v1alpha1.ReasonConflicted, "spec.rootService: port %d of Service %s is already split by the older %s with the same matches; delete one of the two, or give them different matches",
				port.Port, svc.Key.Name, other.Source)
			return
		}
	}
	pr.splits = append(pr.splits, route)
}

func (t *translation) trafficSplit(ts *v1alpha1.TrafficSplit, ps *policyStatus, ref *ir.PolicyRef) {
	root := t.byKey[ir.ServiceKey{Namespace: ts.Namespace, Name: ts.Spec.RootService.Name}]
	if root == nil {
		ps.unresolved(v1alpha1.ReasonTargetNotFound, "spec.rootService.name: Service %q does not exist in namespace %s; create it or correct the name",
			ts.Spec.RootService.Name, ts.Namespace)
		return
	}
	ports := root.Ports
	if p := ts.Spec.RootService.Port; p != nil {
		rp := root.Port(*p)
		if rp == nil {
			ps.unresolved(v1alpha1.ReasonPortNotFound, "spec.rootService.port: Service %s has no port %d; use one of %s", root.Key.Name, *p, portList(root))
			return
		}
		ports = []*ir.Port{rp}
	}
	matches, err := splitMatches(ts.Spec.Matches)
	if err != nil {
		// The split is the TrafficSplit's only rule: it is left out whole,
		// since dropping one match condition would widen it.
		ps.reject(v1alpha1.ReasonInvalid, "%v; until it is fixed, this TrafficSplit routes nothing", err)
		return
	}
	for _, port := range ports {
		if !port.Protocol.IsHTTP() && len(matches) > 0 {
			if len(ports) == 1 {
				ps.reject(v1alpha1.ReasonInvalid, "spec.matches: port %d of Service %s is TCP, where HTTP matches cannot apply; remove the matches or set the port's appProtocol to http",
					port.Port, root.Key.Name)
				return
			}
			continue // matches split the root's HTTP ports only
		}
		var backends []ir.Backend
		var missing uint32
		for i, b := range ts.Spec.Backends {
			weight := v1alpha1.DefaultBackendWeight
			if b.Weight != nil {
				weight = *b.Weight
			}
			field := fmt.Sprintf("spec.backends[%d]", i)
			bp := port.Port
			if b.Port != nil {
				bp = *b.Port
			}
			svc := t.byKey[ir.ServiceKey{Namespace: ts.Namespace, Name: b.Name}]
			switch {
			case svc == nil:
				ps.unresolved(v1alpha1.ReasonBackendNotFound, "%s.name: Service %q does not exist in namespace %s; its share of requests gets HTTP 503 until it does",
					field, b.Name, ts.Namespace)
				missing += uint32(max(weight, 0))
				continue
			case svc.Port(bp) == nil:
				ps.unresolved(v1alpha1.ReasonPortNotFound, "%s.port: Service %s has no port %d; use one of %s (its share of requests gets HTTP 503 meanwhile)",
					field, b.Name, bp, portList(svc))
				missing += uint32(max(weight, 0))
				continue
			case weight <= 0:
				continue // a weight-0 backend receives nothing: leave it out
			}
			backends = append(backends, ir.Backend{Service: svc.Key, Port: bp, Weight: uint32(weight)})
		}
		if missing > 0 {
			backends = append(backends, ir.Backend{Unresolved: true, Weight: missing})
		}
		if len(backends) == 0 {
			ps.reject(v1alpha1.ReasonInvalid, "spec.backends: no backend has a weight above 0; give the version that should serve traffic a positive weight")
			return
		}
		t.addSplit(ps, root, port, &ir.Route{Source: ref, Matches: matches, Backends: backends})
	}
}

func splitMatches(in []v1alpha1.HTTPMatch) ([]ir.Match, error) {
	var out []ir.Match
	for i, m := range in {
		var im ir.Match
		if m.Path != nil {
			switch m.Path.Type {
			case v1alpha1.PathMatchExact:
				im.PathExact = m.Path.Value
			case v1alpha1.PathMatchPathPrefix, "":
				if err := pathPrefixProblem(fmt.Sprintf("spec.matches[%d].path.value", i), m.Path.Value); err != nil {
					return nil, err
				}
				im.PathPrefix = m.Path.Value
			default:
				return nil, fmt.Errorf("spec.matches[%d].path.type: %q is not Exact or PathPrefix", i, m.Path.Type)
			}
		}
		if m.Method != nil {
			im.Method = string(*m.Method)
		}
		for j, h := range m.Headers {
			regex := h.Type == v1alpha1.HeaderMatchRegularExpression
			if regex {
				// A regex a proxy refuses would make it reject the whole
				// route configuration, every other route included.
				if err := regexProblem(fmt.Sprintf("spec.matches[%d].headers[%d].value", i, j), h.Value); err != nil {
					return nil, err
				}
			}
			im.Headers = append(im.Headers, ir.HeaderMatch{Name: strings.ToLower(h.Name), Value: h.Value, Regex: regex})
		}
		out = append(out, im)
	}
	return out, nil
}

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
// rule that matches them, or to the parent Service. A route without any
// valid rule is Accepted=False and applies nothing.
func (t *translation) httpRoute(hr *gatewayv1.HTTPRoute, ps *policyStatus, ref *ir.PolicyRef) {
	var routes []*ir.Route
	var problems []string
	for i, rule := range hr.Spec.Rules {
		r, err := t.httpRouteRule(hr, ps, ref, rule, fmt.Sprintf("spec.rules[%d]", i))
		switch {
		case err != nil:
			problems = append(problems, err.Error())
		case r != nil:
			routes = append(routes, r)
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
	for i, p := range hr.Spec.ParentRefs {
		if !isServiceRef(p.Group, p.Kind) {
			continue
		}
		field := fmt.Sprintf("spec.parentRefs[%d]", i)
		if p.Namespace != nil && string(*p.Namespace) != hr.Namespace {
			ps.reject(v1alpha1.ReasonInvalid, "%s.namespace: weft routes Services of the route's own namespace only", field)
			continue
		}
		root := t.byKey[ir.ServiceKey{Namespace: hr.Namespace, Name: string(p.Name)}]
		if root == nil {
			ps.unresolved(v1alpha1.ReasonTargetNotFound, "%s.name: Service %q does not exist in namespace %s", field, p.Name, hr.Namespace)
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
			// Requests no rule matches still reach the parent Service.
			own := append(append([]*ir.Route(nil), routes...), defaultRoute(root.Key, port.Port))
			t.claimForHTTPRoute(ps, ref, root, port, field, own)
		}
	}
}

// httpRouteRule translates one rule of an HTTPRoute. An error means the
// rule cannot be applied as written (the message names the field and the
// fix); a nil route means it has no backend that can receive requests.
func (t *translation) httpRouteRule(hr *gatewayv1.HTTPRoute, ps *policyStatus, ref *ir.PolicyRef, rule gatewayv1.HTTPRouteRule, field string) (*ir.Route, error) {
	if len(rule.Filters) > 0 {
		return nil, fmt.Errorf("%s.filters: weft does not apply HTTPRoute filters yet (found %s); remove them", field, rule.Filters[0].Type)
	}
	r := &ir.Route{Source: ref}
	for j, m := range rule.Matches {
		im, err := gatewayMatch(m, fmt.Sprintf("%s.matches[%d]", field, j))
		if err != nil {
			return nil, err
		}
		r.Matches = append(r.Matches, im)
	}
	if rule.Timeouts != nil && rule.Timeouts.Request != nil {
		d := v1alpha1.Duration(*rule.Timeouts.Request)
		r.Timeout = duration(&d)
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
			ps.unresolved(ReasonInvalidKind, "%s: only Services can be backends, not %s (its share of requests gets HTTP 503)", bf, *b.Kind)
			missing += uint32(max(w, 0))
			continue
		}
		ns := hr.Namespace
		if b.Namespace != nil && string(*b.Namespace) != ns {
			ps.unresolved(ReasonRefNotPermitted, "%s.namespace: backends must be in the route's namespace %s (its share of requests gets HTTP 503)", bf, ns)
			missing += uint32(max(w, 0))
			continue
		}
		svc := t.byKey[ir.ServiceKey{Namespace: ns, Name: string(b.Name)}]
		switch {
		case svc == nil:
			ps.unresolved(v1alpha1.ReasonBackendNotFound, "%s.name: Service %q does not exist in namespace %s; its share of requests gets HTTP 503 until it does", bf, b.Name, ns)
			missing += uint32(max(w, 0))
		case b.Port == nil || svc.Port(int32(*b.Port)) == nil:
			ps.unresolved(v1alpha1.ReasonPortNotFound, "%s.port: set it to one of Service %s's ports: %s (its share of requests gets HTTP 503 meanwhile)", bf, svc.Key.Name, portList(svc))
			missing += uint32(max(w, 0))
		case w > 0:
			r.Backends = append(r.Backends, ir.Backend{Service: svc.Key, Port: int32(*b.Port), Weight: uint32(w)})
		}
	}
	if missing > 0 {
		r.Backends = append(r.Backends, ir.Backend{Unresolved: true, Weight: missing})
	}
	if len(r.Backends) == 0 {
		return nil, nil
	}
	return r, nil
}

// gatewayMatch translates the HTTPRoute match at field.
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
		default:
			return im, fmt.Errorf("%s.path.type: %s is not supported; use Exact or PathPrefix", field, typ)
		}
	}
	if m.Method != nil {
		im.Method = string(*m.Method)
	}
	for k, h := range m.Headers {
		regex := h.Type != nil && *h.Type == gatewayv1.HeaderMatchRegularExpression
		if regex {
			if err := regexProblem(fmt.Sprintf("%s.headers[%d].value", field, k), h.Value); err != nil {
				return im, err
			}
		}
		im.Headers = append(im.Headers, ir.HeaderMatch{Name: strings.ToLower(string(h.Name)), Value: h.Value, Regex: regex})
	}
	if len(m.QueryParams) > 0 {
		return im, fmt.Errorf("%s.queryParams: not supported yet; match on path, method or headers", field)
	}
	return im, nil
}

// pathPrefixProblem refuses a path prefix made of slashes only, such as
// "//": matched element by element it has no element, and Envoy's
// path_separated_prefix, which must not end in '/', cannot express it.
func pathPrefixProblem(field, prefix string) error {
	if prefix != "/" && strings.Trim(prefix, "/") == "" {
		return fmt.Errorf("%s: %q has only empty path elements; write \"/\" to match every path", field, prefix)
	}
	return nil
}

// defaultRoute sends a port's traffic to its own Service.
func defaultRoute(svc ir.ServiceKey, port int32) *ir.Route {
	return &ir.Route{Backends: []ir.Backend{{Service: svc, Port: port, Weight: 1}}}
}

// Gateway API's reasons for backend references weft cannot follow.
const (
	ReasonInvalidKind     = "InvalidKind"
	ReasonRefNotPermitted = "RefNotPermitted"
)

// defaultRoutes gives every HTTP port that no policy routes its implicit
// route to itself.
func (t *translation) defaultRoutes() {
	for _, svc := range t.mesh.Services {
		for _, p := range svc.Ports {
			if len(p.Routes) == 0 && p.Protocol.IsHTTP() {
				p.Routes = []*ir.Route{defaultRoute(svc.Key, p.Port)}
			}
			if !p.Protocol.IsHTTP() && len(p.Routes) > 0 {
				// A split on a TCP port is weighted at the connection level.
				p.TCPBackends, p.Routes = p.Routes[0].Backends, nil
			}
		}
	}
}

func portList(s *ir.Service) string {
	var ps []string
	for _, p := range s.Ports {
		ps = append(ps, itoa(p.Port))
	}
	if len(ps) == 0 {
		return "(it has no TCP ports)"
	}
	return strings.Join(ps, ", ")
}

func older(a, b metav1.Object) bool {
	ta, tb := a.GetCreationTimestamp(), b.GetCreationTimestamp()
	if !ta.Equal(&tb) {
		return ta.Before(&tb)
	}
	if a.GetNamespace() != b.GetNamespace() {
		return a.GetNamespace() < b.GetNamespace()
	}
	return a.GetName() < b.GetName()
}

func ptrOr[T any](p *T, def T) *T {
	if p == nil {
		return &def
	}
	return p
}
