package meshgen

import (
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weftmesh/weft/crds/v1alpha1"
)

// This file generates RateLimitPolicies and is the reference evaluator of
// what docs/api.md ("RateLimitPolicy") promises a request: the buckets it
// is counted in, at the pod that serves it. It reads the API objects only.

// rateLimits: sometimes a RateLimitPolicy on a Service of the namespace
// (or one named port of it), in Enforce or DryRun mode, with a caller
// bucket and rules on the paths and methods the calls sample.
func (g *gen) rateLimits(ns string) {
	svcs := g.servicesIn(ns)
	if len(svcs) == 0 || !g.chance(0.6) {
		return
	}
	s := svcs[g.pick(len(svcs))]
	ref := v1alpha1.RateLimitPolicyTargetReference{PolicyTargetReference: v1alpha1.PolicyTargetReference{Kind: "Service", Name: s.Svc.Name}}
	if ports := s.Svc.Spec.Ports; g.chance(0.3) && ports[0].Name != "" {
		ref.SectionName = ptr(ports[g.pick(len(ports))].Name)
	}
	bucket := func() *v1alpha1.RateLimitBucket {
		units := []v1alpha1.RateLimitUnit{v1alpha1.RateLimitSecond, v1alpha1.RateLimitMinute, v1alpha1.RateLimitHour}
		b := &v1alpha1.RateLimitBucket{Requests: int32(1 + g.pick(100)), Unit: units[g.pick(len(units))]}
		if g.chance(0.5) {
			b.Burst = ptr(b.Requests * int32(1+g.pick(3)))
		}
		return b
	}
	rp := &v1alpha1.RateLimitPolicy{ObjectMeta: g.meta(ns, "rl-"+s.Svc.Name), Spec: v1alpha1.RateLimitPolicySpec{
		TargetRefs: []v1alpha1.RateLimitPolicyTargetReference{ref},
		Mode:       v1alpha1.RateLimitModeEnforce,
		Limit:      *bucket(),
	}}
	if g.chance(0.3) {
		rp.Spec.Mode = v1alpha1.RateLimitModeDryRun
	}
	if g.chance(0.5) {
		rp.Spec.CallerLimit = bucket()
	}
	for i := g.pick(3); i > 0; i-- {
		r := v1alpha1.RateLimitRule{Name: fmt.Sprintf("r%d", i)}
		for r.Match.Paths == nil && r.Match.Methods == nil {
			if g.chance(0.6) {
				for k := 1 + g.pick(2); k > 0; k-- {
					r.Match.Paths = append(r.Match.Paths, policyPaths[g.pick(len(policyPaths))])
				}
			}
			if g.chance(0.5) {
				r.Match.Methods = []v1alpha1.HTTPMethod{policyMethods[g.pick(len(policyMethods))]}
			}
		}
		if g.chance(0.6) {
			r.Limit = bucket()
		}
		if r.Limit == nil || g.chance(0.4) {
			r.CallerLimit = bucket()
		}
		rp.Spec.Rules = append(rp.Spec.Rules, r)
	}
	g.m.In.RateLimitPolicies = append(g.m.In.RateLimitPolicies, rp)
}

// RateLimitRequest is a request (or connection) as the destination's pod
// receives it.
type RateLimitRequest struct {
	Namespace string
	Labels    map[string]string
	// Port is the container port; HTTP says the sidecar parses requests
	// on it.
	Port int32
	HTTP bool
	// Caller is the caller's SPIFFE ID over mesh mTLS, "" in plaintext.
	Caller string
	// AppTLS: the caller's application wrapped the connection in its own
	// TLS (not mesh mTLS).
	AppTLS       bool
	Method, Path string
}

// ExpectedLimit is one policy's part in a request: its buckets, each
// "requests/interval/burst" with " per caller <id>" for a caller's.
type ExpectedLimit struct {
	Policy      string // namespace/name
	Connections bool
	Buckets     []string
}

// BucketString is how ExpectedLimit writes a bucket.
func BucketString(requests, burst uint32, every time.Duration, caller string) string {
	s := fmt.Sprintf("%d/%s/%d", requests, every, burst)
	if caller != "" {
		s += " per caller " + caller
	}
	return s
}

// RateLimitsFor is what docs/api.md promises: the policies whose targets
// (a Service selecting the pod, or one port of it whose target port is
// the container port) cover the request, each with the buckets the
// request is counted in: the pod's; the caller's (HTTP; callers without
// mTLS are the one caller "plaintext"); those of every rule whose paths
// (without the query string) and methods match. On a TCP port only the
// pod's, counting connections, and none in DryRun; so for a connection
// the caller's application wraps in its own TLS (Permissive mode) to a
// TCP port, while to an HTTP port such a connection is not counted. A port target beats a
// Service target, and the older of two on one target wins; the newer
// applies nowhere (the generator makes neither happen, but the evaluator
// says it).
func RateLimitsFor(policies []*v1alpha1.RateLimitPolicy, services []*corev1.Service, workloadPorts func(intstr.IntOrString) (int32, bool), r RateLimitRequest) []ExpectedLimit {
	var out []ExpectedLimit
	for _, p := range policies {
		if p.Namespace != r.Namespace || !covers(p, services, workloadPorts, r) {
			continue
		}
		e := ExpectedLimit{Policy: p.Namespace + "/" + p.Name}
		b := func(x *v1alpha1.RateLimitBucket, caller string) string {
			every := map[v1alpha1.RateLimitUnit]time.Duration{v1alpha1.RateLimitSecond: time.Second, v1alpha1.RateLimitMinute: time.Minute, v1alpha1.RateLimitHour: time.Hour}[x.Unit]
			burst := x.Requests
			if x.Burst != nil {
				burst = *x.Burst
			}
			return BucketString(uint32(x.Requests), uint32(burst), every, caller)
		}
		if r.AppTLS && r.HTTP {
			// Encrypted HTTP cannot be parsed: it passes through as
			// opaque TCP, not counted (docs/api.md).
			continue
		}
		if !r.HTTP || r.AppTLS {
			if p.Spec.Mode == v1alpha1.RateLimitModeDryRun {
				continue
			}
			e.Connections = true
			e.Buckets = []string{b(&p.Spec.Limit, "")}
			out = append(out, e)
			continue
		}
		caller := r.Caller
		if caller == "" {
			caller = "plaintext"
		}
		e.Buckets = append(e.Buckets, b(&p.Spec.Limit, ""))
		if p.Spec.CallerLimit != nil {
			e.Buckets = append(e.Buckets, b(p.Spec.CallerLimit, caller))
		}
		path, _, _ := strings.Cut(r.Path, "?")
		for _, rule := range p.Spec.Rules {
			if !limitRuleMatches(rule.Match, r.Method, path) {
				continue
			}
			if rule.Limit != nil {
				e.Buckets = append(e.Buckets, b(rule.Limit, ""))
			}
			if rule.CallerLimit != nil {
				e.Buckets = append(e.Buckets, b(rule.CallerLimit, caller))
			}
		}
		sort.Strings(e.Buckets)
		out = append(out, e)
	}
	return out
}

func limitRuleMatches(m v1alpha1.RateLimitMatch, method, path string) bool {
	ok := len(m.Methods) == 0
	for _, x := range m.Methods {
		ok = ok || string(x) == method
	}
	if !ok {
		return false
	}
	if len(m.Paths) == 0 {
		return true
	}
	for _, pm := range m.Paths {
		if pathMatches(pm, path) {
			return true
		}
	}
	return false
}

// covers: one of p's targets is a Service in its namespace that selects
// the pod, with a port (the sectionName one, if named) whose target port
// is the request's container port.
func covers(p *v1alpha1.RateLimitPolicy, services []*corev1.Service, workloadPorts func(intstr.IntOrString) (int32, bool), r RateLimitRequest) bool {
	for _, t := range p.Spec.TargetRefs {
		for _, s := range services {
			if s.Namespace != p.Namespace || s.Name != t.Name || !selectorMatches(s.Spec.Selector, r.Labels) {
				continue
			}
			for _, sp := range s.Spec.Ports {
				if t.SectionName != nil && sp.Name != *t.SectionName {
					continue
				}
				tp := sp.TargetPort
				if tp.Type == intstr.Int && tp.IntVal == 0 {
					tp = intstr.FromInt32(sp.Port)
				}
				if n, ok := workloadPorts(tp); ok && n == r.Port {
					return true
				}
			}
		}
	}
	return false
}
