package translator

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator/ir"
)

// KindRateLimitPolicy is RateLimitPolicy's PolicyKey kind.
const KindRateLimitPolicy = "RateLimitPolicy"

// rateLimitPolicies attaches each RateLimitPolicy to the ports of its
// target Services (docs/design/165), with BackendTrafficPolicy's rules of
// precedence: a port target beats a Service target, whatever their ages;
// two on the same target: the older wins, and the newer is
// Accepted=False, reason Conflicted, and applies to none of its targets.
func (t *translation) rateLimitPolicies() {
	owner := map[serviceTarget]ir.PolicyRef{}
	for _, rp := range sortedByAge(t.in.RateLimitPolicies) {
		ps := t.track(KindRateLimitPolicy, rp)
		ref := ir.PolicyRef{Kind: KindRateLimitPolicy, Namespace: rp.Namespace, Name: rp.Name, Generation: rp.Generation}
		policy, problem := rateLimitFrom(rp, ref)
		if problem != "" {
			ps.reject(v1alpha1.ReasonInvalid, "%s", problem)
			continue
		}
		refs := make([]targetRef, len(rp.Spec.TargetRefs))
		for i, tr := range rp.Spec.TargetRefs {
			refs[i] = targetRef{tr.PolicyTargetReference, tr.SectionName}
		}
		apply, ok := t.resolveServiceTargets(KindRateLimitPolicy, rp.Namespace, refs, owner, ps)
		if !ok {
			continue
		}
		var gaps []string
		for _, r := range apply {
			for _, p := range r.ports(owner, ref) {
				p.RateLimit = policy
			}
			if g := t.proxylessServers(r.svc); g != "" {
				gaps = append(gaps, fmt.Sprintf("Service %s: %s", r.svc.Key.Name, g))
			}
		}
		if len(gaps) > 0 {
			ps.proxyless = fmt.Sprintf("Proxyless gRPC servers (pods annotated %s: grpc) do not apply spec.limit, spec.callerLimit or spec.rules: gRPC-Go has no local rate limiting, so their requests are not limited (%s). Sidecars of the targets' other pods apply the whole policy; to limit these pods, inject a sidecar instead of running them proxyless.",
				dataplane.AnnotationProxyless, strings.Join(gaps, "; "))
		}
	}
}

// proxylessServers names the proxyless gRPC pods the Service selects (at
// most five, then how many more), or "".
func (t *translation) proxylessServers(svc *ir.Service) string {
	if len(svc.Selector) == 0 {
		return ""
	}
	sel := labels.SelectorFromSet(svc.Selector)
	var names []string
	for _, p := range t.in.Pods {
		if p.Namespace != svc.Key.Namespace || p.Annotations[dataplane.AnnotationProxyless] != "grpc" || !sel.Matches(labels.Set(p.Labels)) {
			continue
		}
		names = append(names, p.Name)
	}
	if len(names) == 0 {
		return ""
	}
	sort.Strings(names)
	if len(names) > 5 {
		return fmt.Sprintf("pods %s and %d more", strings.Join(names[:5], ", "), len(names)-5)
	}
	return "pods " + strings.Join(names, ", ")
}

// rateLimitFrom resolves a policy's spec. problem names a value the API
// server would have refused (reachable only offline), with the field.
func rateLimitFrom(rp *v1alpha1.RateLimitPolicy, ref ir.PolicyRef) (*ir.RateLimit, string) {
	s := rp.Spec
	out := &ir.RateLimit{Source: ref, DryRun: s.Mode == v1alpha1.RateLimitModeDryRun, StatusCode: 429, Headers: true}
	var problem string
	bucket := func(field string, b *v1alpha1.RateLimitBucket) *ir.Bucket {
		if b == nil || problem != "" {
			return nil
		}
		var every time.Duration
		switch b.Unit {
		case v1alpha1.RateLimitSecond:
			every = time.Second
		case v1alpha1.RateLimitMinute:
			every = time.Minute
		case v1alpha1.RateLimitHour:
			every = time.Hour
		default:
			problem = fmt.Sprintf("%s.unit must be Second, Minute or Hour, not %q", field, b.Unit)
			return nil
		}
		if b.Requests < 1 {
			problem = fmt.Sprintf("%s.requests must be at least 1", field)
			return nil
		}
		out := &ir.Bucket{Requests: uint32(b.Requests), Burst: uint32(b.Requests), Interval: ir.Duration(every)}
		if b.Burst != nil {
			if *b.Burst < b.Requests {
				problem = fmt.Sprintf("%s.burst must be at least requests", field)
				return nil
			}
			out.Burst = uint32(*b.Burst)
		}
		return out
	}
	if l := bucket("spec.limit", &s.Limit); l != nil {
		out.Limit = *l
	}
	out.CallerLimit = bucket("spec.callerLimit", s.CallerLimit)
	names := map[string]bool{}
	for i, r := range s.Rules {
		field := fmt.Sprintf("spec.rules[%d]", i)
		if names[r.Name] {
			return nil, fmt.Sprintf("spec.rules: two rules are named %q; give each rule its own name", r.Name)
		}
		names[r.Name] = true
		rule := ir.RateLimitRule{Name: r.Name, Limit: bucket(field+".limit", r.Limit), CallerLimit: bucket(field+".callerLimit", r.CallerLimit)}
		if problem != "" {
			return nil, problem
		}
		if rule.Limit == nil && rule.CallerLimit == nil {
			return nil, field + ": a rule needs limit, callerLimit or both"
		}
		if len(r.Match.Paths)+len(r.Match.Methods) == 0 {
			return nil, field + ".match needs paths or methods"
		}
		var exact, prefix []string
		for j, p := range r.Match.Paths {
			if !strings.HasPrefix(p.Value, "/") {
				return nil, fmt.Sprintf("%s.match.paths[%d].value must start with '/'", field, j)
			}
			if p.Type == v1alpha1.PathMatchExact {
				exact = append(exact, p.Value)
			} else {
				prefix = append(prefix, strings.TrimRight(p.Value, "/"))
			}
		}
		rule.PathsExact, rule.PathsPrefix = disjointPaths(exact, prefix)
		for _, m := range r.Match.Methods {
			if !contains(rule.Methods, string(m)) {
				rule.Methods = append(rule.Methods, string(m))
			}
		}
		out.Rules = append(out.Rules, rule)
	}
	if problem != "" {
		return nil, problem
	}
	if r := s.Response; r != nil {
		if r.StatusCode != nil {
			if *r.StatusCode < 400 || *r.StatusCode > 599 {
				return nil, "spec.response.statusCode must be between 400 and 599"
			}
			out.StatusCode = uint32(*r.StatusCode)
		}
		if r.RateLimitHeaders != nil {
			out.Headers = *r.RateLimitHeaders
		}
	}
	return out, ""
}

// disjointPaths leaves out every path another one of the rule already
// matches (a prefix "" — written "/" — matches all), so that a request
// matches at most one alternative: Envoy's local rate limit takes a token
// for every descriptor a request produces, and two alternatives of one
// rule would produce its descriptor twice. Order is kept.
func disjointPaths(exact, prefix []string) (outExact, outPrefix []string) {
	covers := func(q, p string) bool { return q == "" || p == q || strings.HasPrefix(p, q+"/") }
	for i, p := range prefix {
		covered := false
		for j, q := range prefix {
			if j != i && covers(q, p) && (p != q || j < i) {
				covered = true
				break
			}
		}
		if !covered {
			outPrefix = append(outPrefix, p)
		}
	}
	for i, p := range exact {
		covered := contains(exact[:i], p)
		for _, q := range outPrefix {
			covered = covered || covers(q, p)
		}
		if !covered {
			outExact = append(outExact, p)
		}
	}
	if contains(outPrefix, "") {
		return nil, nil // any path: no path condition
	}
	return outExact, outPrefix
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
