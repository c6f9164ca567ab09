package translator

import (
	"fmt"
	"strings"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator/ir"
)

// Retry defaults, equal to the RetryPolicy CRD's +kubebuilder:default
// markers (defaults_test.go checks). The budget follows Envoy's retry budget
// defaults: 20% of active requests, and at least 3 concurrent retries.
var (
	DefaultRetryOn             = []string{"connect-failure", "refused-stream", "unavailable", "cancelled"}
	DefaultRetryAttempts int32 = 2
	DefaultRetryBase           = v1alpha1.Duration("25ms")
	DefaultRetryMax            = v1alpha1.Duration("250ms")
	DefaultBudgetPercent int32 = 20
	DefaultBudgetMinConc int32 = 3
)

// retryPolicies attaches each RetryPolicy to its targets: a Service (every
// port), a TrafficSplit, an HTTPRoute or a GRPCRoute (the routes it produced). One policy
// per target: on a second one, the older wins, and the newer is
// Accepted=False, reason Conflicted, and applies to none of its targets
// (docs/design/155): Accepted=False means the object has no effect
// (docs/api.md), as for BackendTrafficPolicy (design 110).
func (t *translation) retryPolicies() {
	t.retried = map[PolicyKey]ir.PolicyRef{}
	for _, rp := range sortedByAge(t.in.RetryPolicies) {
		ps := t.track(KindRetryPolicy, rp)
		ref := ir.PolicyRef{Kind: KindRetryPolicy, Namespace: rp.Namespace, Name: rp.Name, Generation: rp.Generation}
		retry := retryFrom(rp, ref)
		// First resolve every target and look for a conflict; apply only
		// a policy that conflicts nowhere.
		type resolved struct {
			key PolicyKey
			svc *ir.Service // a Service target; nil for a routing target
		}
		var apply []resolved
		conflict := false
		for i, tr := range rp.Spec.TargetRefs {
			field := fmt.Sprintf("spec.targetRefs[%d]", i)
			target := PolicyKey{Kind: tr.Kind, Namespace: rp.Namespace, Name: tr.Name}
			if owner, taken := t.retried[target]; taken {
				ps.reject(v1alpha1.ReasonConflicted, "%s: %s %s already has the older %s; one RetryPolicy per target: this one applies nowhere until it no longer targets what the other does", field, tr.Kind, tr.Name, owner)
				conflict = true
				break
			}
			switch {
			case tr.Kind == "Service" && tr.Group == v1alpha1.GroupCore:
				svc := t.byKey[ir.ServiceKey{Namespace: rp.Namespace, Name: tr.Name}]
				if svc == nil {
					ps.unresolved(v1alpha1.ReasonTargetNotFound, "%s: Service %q does not exist in namespace %s", field, tr.Name, rp.Namespace)
					continue
				}
				apply = append(apply, resolved{key: target, svc: svc})
			case tr.Kind == KindTrafficSplit && tr.Group == v1alpha1.GroupVersion.Group,
				tr.Kind == KindHTTPRoute && tr.Group == v1alpha1.GroupGatewayAPI,
				tr.Kind == KindGRPCRoute && tr.Group == v1alpha1.GroupGatewayAPI:
				if !t.routesFrom(target) {
					ps.unresolved(v1alpha1.ReasonTargetNotFound, "%s: %s %q does not exist in namespace %s or routes nothing (see its status)", field, tr.Kind, tr.Name, rp.Namespace)
					continue
				}
				apply = append(apply, resolved{key: target})
			default:
				ps.reject(v1alpha1.ReasonInvalid, "%s: a RetryPolicy targets a Service (group \"\"), a TrafficSplit (group %s), or an HTTPRoute or GRPCRoute (group %s), not %s %q",
					field, v1alpha1.GroupVersion.Group, v1alpha1.GroupGatewayAPI, tr.Kind, tr.Group)
				conflict = true
			}
			if conflict {
				break
			}
		}
		if conflict {
			continue
		}
		for _, r := range apply {
			if r.svc != nil {
				for _, p := range r.svc.Ports {
					p.Retry = retry
				}
			} else {
				t.retryRoutes(r.key, retry)
			}
			t.retried[r.key] = ref
		}
		if len(apply) > 0 {
			// Reported once the policy applies to something.
			ps.proxyless = proxylessRetryGaps(rp, retry)
		}
	}
}

// routesFrom says whether the routing policy target produced any route.
func (t *translation) routesFrom(target PolicyKey) bool {
	for _, svc := range t.mesh.Services {
		for _, p := range svc.Ports {
			found := false
			p.AllRoutes(func(r *ir.Route) {
				found = found || r.Source != nil && r.Source.Kind == target.Kind && r.Source.Namespace == target.Namespace && r.Source.Name == target.Name
			})
			if found {
				return true
			}
		}
	}
	return false
}

// retryRoutes sets the retry of every route that the routing policy target
// produced; false if it produced none.
func (t *translation) retryRoutes(target PolicyKey, retry *ir.Retry) bool {
	found := false
	for _, svc := range t.mesh.Services {
		for _, p := range svc.Ports {
			p.AllRoutes(func(r *ir.Route) {
				if r.Source != nil && r.Source.Kind == target.Kind && r.Source.Namespace == target.Namespace && r.Source.Name == target.Name {
					r.Retry, found = retry, true
				}
			})
		}
	}
	return found
}

func retryFrom(rp *v1alpha1.RetryPolicy, ref ir.PolicyRef) *ir.Retry {
	s := rp.Spec
	r := &ir.Retry{Source: ref, On: DefaultRetryOn, Attempts: uint32(DefaultRetryAttempts),
		BudgetPercent: float64(DefaultBudgetPercent), BudgetMinConcurrency: uint32(DefaultBudgetMinConc)}
	if len(s.RetryOn) > 0 {
		r.On = nil
		for _, c := range s.RetryOn {
			r.On = append(r.On, string(c))
		}
	}
	for _, c := range s.RetriableStatusCodes {
		r.StatusCodes = append(r.StatusCodes, uint32(c))
	}
	if s.Attempts != nil {
		r.Attempts = uint32(*s.Attempts)
	}
	r.PerTryTimeout = duration(s.PerTryTimeout)
	r.Timeout = duration(s.Timeout)
	r.IdleTimeout = duration(s.IdleTimeout)
	base, max := DefaultRetryBase, DefaultRetryMax
	if s.Backoff != nil {
		if s.Backoff.BaseInterval != "" {
			base = s.Backoff.BaseInterval
		}
		if s.Backoff.MaxInterval != "" {
			max = s.Backoff.MaxInterval
		}
	}
	r.BaseInterval = duration(&base)
	r.MaxInterval = duration(&max)
	if b := s.Budget; b != nil {
		if b.Percent != nil {
			r.BudgetPercent = float64(*b.Percent)
		}
		if b.MinConcurrency != nil {
			r.BudgetMinConcurrency = uint32(*b.MinConcurrency)
		}
	}
	return r
}

// GRPCMaxTries is the most tries gRPC makes for one call whatever the
// retry policy asks: gRFC A6 caps maxAttempts at 5 (gRPC-Go's
// grpc.WithMaxCallAttempts default), so attempts above 4 retries are cut.
const GRPCMaxTries = 5

// GRPCRetryOn are the retry conditions gRPC's xDS retry policy takes (gRFC
// A44): gRPC status codes. translator/envoy's grpcRoutes keeps only these.
var GRPCRetryOn = map[string]bool{"cancelled": true, "deadline-exceeded": true, "internal": true, "resource-exhausted": true, "unavailable": true}

// proxylessRetryGaps names the parts of a RetryPolicy that proxyless gRPC
// clients do not apply (issue 12 r), for the ProxylessLimited condition.
// Two HTTP conditions have a gRPC equivalent and are not reported: a
// refused stream is retried transparently by gRPC (gRFC A6), and a failed
// connection surfaces as UNAVAILABLE, so connect-failure holds when
// unavailable is retried too. The default budget is not reported (every
// policy has it; docs/api.md says proxyless clients have none); another
// one is.
func proxylessRetryGaps(rp *v1alpha1.RetryPolicy, r *ir.Retry) string {
	var gaps, dropped []string
	unavailable := false
	for _, c := range r.On {
		unavailable = unavailable || c == "unavailable"
	}
	for _, c := range r.On {
		switch {
		case GRPCRetryOn[c], c == "refused-stream", c == "connect-failure" && unavailable:
		default:
			dropped = append(dropped, c)
		}
	}
	if len(dropped) > 0 {
		gaps = append(gaps, fmt.Sprintf("spec.retryOn %s (gRPC retries on gRPC status codes only)", strings.Join(dropped, ", ")))
	}
	if r.Attempts+1 > GRPCMaxTries {
		gaps = append(gaps, fmt.Sprintf("spec.attempts %d above %d (gRPC makes at most %d tries)", r.Attempts, GRPCMaxTries-1, GRPCMaxTries))
	}
	if rp.Spec.PerTryTimeout != nil {
		gaps = append(gaps, "spec.perTryTimeout (gRPC has no per-try timeout; spec.timeout bounds the whole call)")
	}
	if r.IdleTimeout > 0 {
		// gRPC-Go's xDS client reads no route idle_timeout
		// (routesProtoToSlice, unmarshal_rds.go, v1.85).
		gaps = append(gaps, "spec.idleTimeout (gRPC-Go has no idle timeout for a call; spec.timeout bounds the whole call, and keepalive settings in the client find dead connections)")
	}
	// The default budget, written or filled in by the API server (the CRD
	// defaults it, so a stored policy always has one), is not reported.
	if r.BudgetPercent != float64(DefaultBudgetPercent) || r.BudgetMinConcurrency != uint32(DefaultBudgetMinConc) {
		gaps = append(gaps, "spec.budget (gRPC has no retry budget; spec.attempts alone bounds retries)")
	}
	if len(gaps) == 0 {
		return ""
	}
	var targets []string
	for _, tr := range rp.Spec.TargetRefs {
		targets = append(targets, tr.Kind+" "+tr.Name)
	}
	return fmt.Sprintf("Proxyless gRPC clients (pods annotated %s: grpc) calling %s do not apply: %s. Sidecars apply the whole policy; proxyless clients apply the rest.",
		dataplane.AnnotationProxyless, strings.Join(targets, ", "), strings.Join(gaps, "; "))
}
