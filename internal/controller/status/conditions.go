package status

import (
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/translator"
)

// ControllerName is the controllerName of the HTTPRoute parent statuses
// weft writes; entries with any other controllerName belong to other
// controllers and are never touched.
const ControllerName gatewayv1.GatewayController = "mesh.weft.dev/weft-controller"

// Distribution is what the xDS layer knows about the configuration built
// from one policy: how far generation Generation got among the proxies
// that need it.
type Distribution struct {
	// Generation is the policy's metadata.generation that the numbers
	// describe (ir.PolicyRef.Generation of the pushed model).
	Generation int64
	// Proxies is how many connected proxies need configuration built from
	// the policy.
	Proxies int
	// Acked is how many of them ACKed a configuration that contains
	// Generation (or a later one).
	Acked int
	// Rejected is how many of them NACKed it (and keep their last good
	// configuration).
	Rejected int
	// Error describes one rejection for the user, such as
	// `proxy shop/checkout-7d9 (sidecar): <error_detail message>`; the xDS
	// layer chooses which (the first by proxy name keeps it stable).
	Error string
	// Lagging names a controller replica whose proxies the distribution
	// waits for because it has not pushed Generation yet (Aggregate), so
	// that a status stuck on one replica says which.
	Lagging string
}

// ProgrammedSource is implemented by the xDS layer: it says how far each
// policy's configuration got. The writer calls it from its own goroutine
// whenever it computes a policy's status, so it must be safe for
// concurrent use and cheap (a map lookup). Tell the writer that a policy's
// distribution changed with Writer.ProgrammedChanged.
type ProgrammedSource interface {
	// Programmed returns the distribution of the policy's configuration.
	// known is false when the xDS layer has not yet pushed any
	// configuration built from it.
	Programmed(key translator.PolicyKey) (d Distribution, known bool)
}

// ProgrammedCondition turns what the xDS layer knows into the Programmed
// condition of a policy whose translated generation is gen. accepted is
// the policy's Accepted status: a policy that is not accepted programs
// nothing.
func ProgrammedCondition(gen int64, accepted bool, d Distribution, known bool) metav1.Condition {
	c := metav1.Condition{Type: v1alpha1.ConditionProgrammed, ObservedGeneration: gen}
	switch {
	case !accepted:
		c.Status, c.Reason = metav1.ConditionFalse, v1alpha1.ReasonInvalid
		c.Message = "The policy is not accepted (see the Accepted condition), so nothing is programmed from it."
	case !known || d.Generation < gen:
		// An ACK of an older generation says nothing about this one.
		c.Status, c.Reason = metav1.ConditionUnknown, v1alpha1.ReasonPending
		c.Message = fmt.Sprintf("Waiting for the configuration of generation %d to be pushed to the proxies.", gen)
		if d.Lagging != "" {
			c.Message = fmt.Sprintf("Waiting for the configuration of generation %d to be pushed to the proxies of controller replica %s.", gen, d.Lagging)
		}
	case d.Generation > gen:
		// The proxies are ahead of the translation this status describes;
		// the next translation brings the matching generation.
		c.Status, c.Reason = metav1.ConditionUnknown, v1alpha1.ReasonPending
		c.Message = fmt.Sprintf("Waiting for generation %d to be translated.", d.Generation)
	case d.Rejected > 0:
		c.Status, c.Reason = metav1.ConditionFalse, v1alpha1.ReasonProxyRejected
		c.Message = fmt.Sprintf("Rejected by %d of %d proxies, which keep their last good configuration: %s", d.Rejected, d.Proxies, d.Error)
	case d.Proxies == 0:
		c.Status, c.Reason = metav1.ConditionTrue, v1alpha1.ReasonProgrammed
		c.Message = "No connected proxy needs configuration from this policy."
	case d.Acked >= d.Proxies:
		c.Status, c.Reason = metav1.ConditionTrue, v1alpha1.ReasonProgrammed
		c.Message = fmt.Sprintf("All %d proxies that need this policy have acknowledged generation %d.", d.Proxies, gen)
	default:
		// The message leaves out the ACK count, which changes with every
		// proxy and would cost a status write each time.
		c.Status, c.Reason = metav1.ConditionUnknown, v1alpha1.ReasonPending
		c.Message = fmt.Sprintf("Waiting for %d proxies to acknowledge generation %d.", d.Proxies, gen)
	}
	return c
}

// generationOf is the generation the translator's conditions describe.
func generationOf(conds []metav1.Condition) int64 {
	var g int64
	for _, c := range conds {
		g = max(g, c.ObservedGeneration)
	}
	return g
}

// desiredConditions is the translator's conditions plus Programmed, each
// stamped with now as the transition time in case it transitions.
func desiredConditions(translated []metav1.Condition, programmed metav1.Condition, now metav1.Time) []metav1.Condition {
	out := make([]metav1.Condition, 0, len(translated)+1)
	for _, c := range translated {
		if c.Type == v1alpha1.ConditionProgrammed {
			continue // the xDS layer's to say
		}
		c.LastTransitionTime = now
		out = append(out, c)
	}
	programmed.LastTransitionTime = now
	return append(out, programmed)
}

// mergeConditions sets each of want into conds with meta.SetStatusCondition
// semantics: a condition whose status did not change keeps its
// lastTransitionTime. Conditions of other types are left alone. It
// reports whether anything changed.
func mergeConditions(conds *[]metav1.Condition, want []metav1.Condition) bool {
	changed := false
	for _, c := range want {
		if meta.SetStatusCondition(conds, c) {
			changed = true
		}
	}
	// Gateway API's PartiallyInvalid and weft's ProxylessLimited are present
	// only while they are True: the translator leaves them out once every
	// rule is valid again, or proxyless clients apply the whole policy.
	for _, t := range []string{translator.ConditionPartiallyInvalid, translator.ConditionProxylessLimited} {
		if meta.FindStatusCondition(want, t) == nil && meta.RemoveStatusCondition(conds, t) {
			changed = true
		}
	}
	return changed
}

// mergePolicyStatus updates a weft kind's status to the desired conditions
// for generation gen.
func mergePolicyStatus(st *v1alpha1.Status, want []metav1.Condition, gen int64) bool {
	changed := mergeConditions(&st.Conditions, want)
	if st.ObservedGeneration != gen {
		st.ObservedGeneration = gen
		changed = true
	}
	return changed
}

// mergeRouteParents updates an HTTPRoute's or GRPCRoute's parent statuses: one entry per
// Service parent in parents, with the desired conditions, owned by weft
// (ControllerName). Other controllers' entries keep their place and
// content; weft's entries for parents no longer listed are removed. With
// want nil (the route is no longer the mesh's), weft's entries are removed.
func mergeRouteParents(st *[]gatewayv1.RouteParentStatus, parents []gatewayv1.ParentReference, want []metav1.Condition) bool {
	wanted := map[string]gatewayv1.ParentReference{}
	var order []string
	if want != nil {
		for _, p := range parents {
			if isServiceRef(p) {
				k := parentKey(p)
				if _, dup := wanted[k]; !dup {
					order = append(order, k)
				}
				wanted[k] = p
			}
		}
	}
	before := *st
	out := make([]gatewayv1.RouteParentStatus, 0, len(before)+len(order))
	done := map[string]bool{}
	for _, ps := range before {
		if ps.ControllerName != ControllerName {
			out = append(out, ps)
			continue
		}
		k := parentKey(ps.ParentRef)
		if _, ok := wanted[k]; !ok || done[k] {
			continue
		}
		ps = *ps.DeepCopy()
		mergeConditions(&ps.Conditions, want)
		out = append(out, ps)
		done[k] = true
	}
	for _, k := range order {
		if done[k] {
			continue
		}
		ps := gatewayv1.RouteParentStatus{ParentRef: wanted[k], ControllerName: ControllerName}
		mergeConditions(&ps.Conditions, want)
		out = append(out, ps)
	}
	if equality.Semantic.DeepEqual(before, out) || len(before) == 0 && len(out) == 0 {
		return false
	}
	*st = out
	return true
}

// isServiceRef matches the translator's rule for a GAMMA parent.
func isServiceRef(p gatewayv1.ParentReference) bool {
	return (p.Group == nil || *p.Group == "" || *p.Group == "core") && p.Kind != nil && *p.Kind == "Service"
}

// parentKey identifies a parentRef, ignoring how optional fields were
// spelled.
func parentKey(p gatewayv1.ParentReference) string {
	g, k, ns, sec := "", "", "", ""
	if p.Group != nil && *p.Group != "core" {
		g = string(*p.Group)
	}
	if p.Kind != nil {
		k = string(*p.Kind)
	}
	if p.Namespace != nil {
		ns = string(*p.Namespace)
	}
	if p.SectionName != nil {
		sec = string(*p.SectionName)
	}
	port := ""
	if p.Port != nil {
		port = fmt.Sprint(*p.Port)
	}
	return g + "/" + k + "/" + ns + "/" + string(p.Name) + "/" + sec + "/" + port
}
