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
//   - An HTTPRoute or GRPCRoute (GAMMA) owns the ports it attaches to.
//     Between two such routes on one port, of either kind, the older wins;
//     the newer is Conflicted.
//   - A consumer route (an HTTPRoute or GRPCRoute whose parent Service is
//     in another namespace) owns the port for its namespace's callers
//     only: they take its routes instead of the producer's
//     (ir.Port.Consumers). Between two of one namespace the older wins.
//   - TrafficSplits on a port that an HTTPRoute owns are Conflicted: the
//     standard API takes precedence.
//   - Several TrafficSplits may share a root port: those with matches are
//     tried first (oldest first), then the one without. Two with equal
//     matches conflict, and the older wins.
//
// A split port's routes end with its Service's own route, so requests that
// match no split still reach the root. An HTTPRoute's port has no such
// route: requests no rule matches get 404 (docs/design/177).
type portRouting struct {
	httpRoute *ir.PolicyRef
	splits    []*ir.Route
	// consumers: the consumer route that has the port, per caller
	// namespace (claimForConsumerRoute).
	consumers map[string]*ir.PolicyRef
}

func (t *translation) routes() {
	t.routed = map[portKey]*portRouting{}
	// Routes for Gateways are not the mesh's to program (meshRoutes).
	for _, o := range t.meshRoutes() {
		switch r := o.(type) {
		case *gatewayv1.HTTPRoute:
			ps := t.track(KindHTTPRoute, r)
			t.httpRoute(r, ps, &ir.PolicyRef{Kind: KindHTTPRoute, Namespace: r.Namespace, Name: r.Name, Generation: r.Generation})
		case *gatewayv1.GRPCRoute:
			ps := t.track(KindGRPCRoute, r)
			t.grpcRoute(r, ps, &ir.PolicyRef{Kind: KindGRPCRoute, Namespace: r.Namespace, Name: r.Name, Generation: r.Generation})
		}
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

// claimForHTTPRoute gives an HTTPRoute a port, unless an older one has it;
// it says whether the route got it.
func (t *translation) claimForHTTPRoute(ps *policyStatus, ref *ir.PolicyRef, svc *ir.Service, port *ir.Port, field string, routes []*ir.Route) bool {
	pr := t.routing(portKey{svc.Key, port.Port})
	if pr.httpRoute != nil {
		fix := "merge the two routes into one"
		if pr.httpRoute.Kind != ref.Kind {
			// Gateway API never merges an HTTPRoute and a GRPCRoute.
			fix = "delete one of the two, or attach them to different ports"
		}
		ps.reject(v1alpha1.ReasonConflicted, "%s: port %d of Service %s is already routed by the older %s; %s",
			field, port.Port, svc.Key.Name, pr.httpRoute, fix)
		return false
	}
	pr.httpRoute = ref
	port.Routes = routes
	return true
}

// addSplit adds a TrafficSplit's route to a port, unless an HTTPRoute owns
// the port or an older split has the same matches.
func (t *translation) addSplit(ps *policyStatus, svc *ir.Service, port *ir.Port, route *ir.Route) {
	pr := t.routing(portKey{svc.Key, port.Port})
	if pr.httpRoute != nil {
		ps.reject(v1alpha1.ReasonConflicted, "spec.rootService: port %d of Service %s is routed by %s, which takes precedence; delete this TrafficSplit or the %s",
			port.Port, svc.Key.Name, pr.httpRoute, pr.httpRoute.Kind)
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
