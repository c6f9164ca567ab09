package translator

import (
	"fmt"
	"sort"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/translator/ir"
)

// backendPermitted says whether route hr, of kind kind (KindHTTPRoute, or
// KindGRPCRoute for a GRPCRoute read as its HTTPRoute), may send requests (or
// mirrored copies) to Service name in namespace ns; if not, the returned
// message says what would permit it (docs/design/176). In its own
// namespace a route may use any Service. In another:
//
//   - a ReferenceGrant in that namespace that lets routes of hr's kind and
//     namespace refer to Services (all of them, or this one by name)
//     permits it, as Gateway API says for every cross-namespace reference;
//   - a consumer route needs none for a Service of the namespace its
//     parents are in, when that Service is exported to the route's
//     namespace. GAMMA (GEP-1294, "Namespace boundaries") lets mesh routes
//     use backends in any namespace without a ReferenceGrant unless the
//     mesh would expose "a broader scope than would otherwise be
//     reachable": a consumer route applies only to callers of its own
//     namespace, which can call that Service directly already. Every
//     parent must be in that namespace: a parent in the route's own
//     namespace would carry callers of every namespace there.
//
// Everything else needs a grant: a producer route's callers come from
// every namespace its Service is exported to, so a backend elsewhere
// would reach callers its owner did not choose.
func (t *translation) backendPermitted(hr *gatewayv1.HTTPRoute, kind, ns, name string) (bool, string) {
	if ns == hr.Namespace {
		return true, ""
	}
	for _, g := range t.in.ReferenceGrants {
		if g.Namespace != ns {
			continue
		}
		from, to := false, false
		for _, f := range g.Spec.From {
			from = from || f.Group == gatewayv1.GroupName && string(f.Kind) == kind && string(f.Namespace) == hr.Namespace
		}
		for _, r := range g.Spec.To {
			to = to || (r.Group == "" || r.Group == "core") && r.Kind == "Service" && (r.Name == nil || *r.Name == "" || string(*r.Name) == name)
		}
		if from && to {
			return true, ""
		}
	}
	if parentNamespaceOnly(hr, ns) {
		svc := t.byKey[ir.ServiceKey{Namespace: ns, Name: name}]
		if svc == nil || svc.ExportedTo(hr.Namespace) {
			return true, "" // a missing Service is reported as such
		}
		return false, fmt.Sprintf("Service %s/%s is not exported to namespace %s (weft.dev/export-to), so this consumer route's callers could not call it themselves; export it there, or create a ReferenceGrant in namespace %s from %ss of namespace %s to it",
			ns, name, hr.Namespace, ns, kind, hr.Namespace)
	}
	return false, fmt.Sprintf("no ReferenceGrant in namespace %s lets %ss of namespace %s refer to Service %s; create one (spec.from: group %s, kind %s, namespace %s; spec.to: kind Service, name %s or none for all)",
		ns, kind, hr.Namespace, name, gatewayv1.GroupName, kind, hr.Namespace, name)
}

// parentNamespaceOnly: every Service parent of hr is in namespace ns, so
// hr is a consumer route of ns's Services (ns is not hr's).
func parentNamespaceOnly(hr *gatewayv1.HTTPRoute, ns string) bool {
	any := false
	for _, p := range hr.Spec.ParentRefs {
		if !isServiceRef(p.Group, p.Kind) {
			continue
		}
		if p.Namespace == nil || string(*p.Namespace) != ns {
			return false
		}
		any = true
	}
	return any
}

// claimForConsumerRoute gives callers in namespace consumer the routes of a
// consumer route on port, unless an older consumer route of that
// namespace has the port: the newer is then Conflicted, as two producer
// routes are.
func (t *translation) claimForConsumerRoute(ps *policyStatus, ref *ir.PolicyRef, svc *ir.Service, port *ir.Port, field string, routes []*ir.Route) bool {
	pr := t.routing(portKey{svc.Key, port.Port})
	if prev := pr.consumers[ref.Namespace]; prev != nil {
		ps.reject(v1alpha1.ReasonConflicted, "%s: port %d of Service %s/%s is already routed for namespace %s by the older %s; merge the two routes into one",
			field, port.Port, svc.Key.Namespace, svc.Key.Name, ref.Namespace, prev)
		return false
	}
	if pr.consumers == nil {
		pr.consumers = map[string]*ir.PolicyRef{}
	}
	pr.consumers[ref.Namespace] = ref
	port.Consumers = append(port.Consumers, &ir.ConsumerRoutes{Namespace: ref.Namespace, Routes: routes})
	sort.Slice(port.Consumers, func(i, j int) bool { return port.Consumers[i].Namespace < port.Consumers[j].Namespace })
	return true
}
