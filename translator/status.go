package translator

import (
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/crds/v1alpha1"
)

// policyStatus accumulates the conditions of one policy. It starts Accepted
// and ResolvedRefs; each problem found turns one of them False. The first
// problem of each type wins, so the message names the first thing to fix.
type policyStatus struct {
	gen      int64
	accepted *metav1.Condition
	resolved *metav1.Condition
	// dropped explains each HTTPRoute rule left out (see dropRule).
	dropped []string
	// proxyless names each part of a RetryPolicy that proxyless gRPC
	// clients cannot apply (see proxylessRetryGaps).
	proxyless string
	// kind is the tracked object's kind (KindHTTPRoute, KindGRPCRoute,
	// ...): a GRPCRoute reaches httpRoute as an HTTPRoute, but
	// ReferenceGrants name the route's own kind (backendPermitted).
	kind string
}

// errorResponse is what a caller gets for a route's share that has no
// usable backend: Envoy answers HTTP 503, which gRPC callers (through a
// sidecar, which maps 503 to status 14, or proxyless, with no cluster to
// pick) see as UNAVAILABLE.
func (ps *policyStatus) errorResponse() string {
	if ps.kind == KindGRPCRoute {
		return "UNAVAILABLE"
	}
	return "HTTP 503"
}

func (t *translation) track(kind string, obj metav1.Object) *policyStatus {
	ps := &policyStatus{gen: obj.GetGeneration(), kind: kind}
	ps.accepted = &metav1.Condition{Type: v1alpha1.ConditionAccepted, Status: metav1.ConditionTrue,
		Reason: v1alpha1.ReasonAccepted, Message: "The policy is valid.", ObservedGeneration: ps.gen}
	ps.resolved = &metav1.Condition{Type: v1alpha1.ConditionResolvedRefs, Status: metav1.ConditionTrue,
		Reason: v1alpha1.ReasonResolvedRefs, Message: "Every reference resolved.", ObservedGeneration: ps.gen}
	key := PolicyKey{Kind: kind, Namespace: obj.GetNamespace(), Name: obj.GetName()}
	if t.tracked == nil {
		t.tracked = map[PolicyKey]*policyStatus{}
	}
	t.tracked[key] = ps
	// The conditions are written into the map at the end through pointers,
	// so later calls see the final state.
	t.pending = append(t.pending, func() {
		conds := []metav1.Condition{*ps.accepted, *ps.resolved}
		if len(ps.dropped) > 0 && ps.ok() {
			conds = append(conds, metav1.Condition{Type: ConditionPartiallyInvalid, Status: metav1.ConditionTrue,
				Reason: ReasonUnsupportedValue, ObservedGeneration: ps.gen,
				Message: strings.Join(ps.dropped, "; ") + ". The route's other rules apply."})
		}
		if ps.proxyless != "" && ps.ok() {
			conds = append(conds, metav1.Condition{Type: ConditionProxylessLimited, Status: metav1.ConditionTrue,
				Reason: ReasonUnsupportedByGRPC, ObservedGeneration: ps.gen,
				Message: ps.proxyless})
		}
		t.status[key] = conds
	})
	return ps
}

// reject marks the policy not accepted: nothing of it is applied.
func (ps *policyStatus) reject(reason, format string, args ...any) {
	if ps.accepted.Status == metav1.ConditionFalse {
		return
	}
	ps.accepted.Status, ps.accepted.Reason, ps.accepted.Message = metav1.ConditionFalse, reason, fmt.Sprintf(format, args...)
}

// unresolved marks a reference that could not be resolved. Whether the rest
// of the policy still applies is the caller's decision, and the message
// says so.
func (ps *policyStatus) unresolved(reason, format string, args ...any) {
	if ps.resolved.Status == metav1.ConditionFalse {
		return
	}
	ps.resolved.Status, ps.resolved.Reason, ps.resolved.Message = metav1.ConditionFalse, reason, fmt.Sprintf(format, args...)
}

// Gateway API's condition for a route of which some rules are valid and
// some are not, and its reason. Weft takes the "Drop Rule(s)" approach the
// specification offers: the invalid rules are left out, the others apply,
// Accepted stays True, and the message starts with "Dropped Rule". The
// condition is present only while it is True (the status writer removes
// it otherwise); a route whose every rule is invalid is Accepted=False.
const (
	ConditionPartiallyInvalid = "PartiallyInvalid"
	ReasonUnsupportedValue    = "UnsupportedValue"
)

// A RetryPolicy that proxyless gRPC clients apply only in part keeps
// Accepted=True (sidecars apply all of it) and gains ProxylessLimited=True,
// reason UnsupportedByGRPC, whose message names each part they drop. Like
// PartiallyInvalid, the condition is present only while True. It depends on
// the spec alone, not on which proxyless clients exist (docs/design/057).
const (
	ConditionProxylessLimited = "ProxylessLimited"
	ReasonUnsupportedByGRPC   = "UnsupportedByGRPC"
)

// dropRule records an HTTPRoute rule left out because it cannot be applied
// as written; problem names the offending field of the rule and the fix.
func (ps *policyStatus) dropRule(problem string) {
	ps.dropped = append(ps.dropped, "Dropped Rule "+problem)
}

func (ps *policyStatus) ok() bool { return ps.accepted.Status == metav1.ConditionTrue }
