package translator

import (
	"fmt"
	"strings"
	"time"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator/ir"
)

// KindBackendTrafficPolicy is BackendTrafficPolicy's PolicyKey kind.
const KindBackendTrafficPolicy = "BackendTrafficPolicy"

// backendTrafficPolicies attaches each BackendTrafficPolicy to the ports
// of its target Services (docs/design/110). A target is a Service (every
// port) or one port of it (sectionName); a port target beats a Service
// target, whatever their ages. Two policies on the same target: the older
// wins, and the newer is Accepted=False, reason Conflicted, and applies to
// none of its targets (Accepted=False means the object has no effect), so
// that what a policy does never depends on which of its targets another
// policy holds.
func (t *translation) backendTrafficPolicies() {
	owner := map[serviceTarget]ir.PolicyRef{}
	for _, bp := range sortedByAge(t.in.BackendTrafficPolicies) {
		ps := t.track(KindBackendTrafficPolicy, bp)
		ref := ir.PolicyRef{Kind: KindBackendTrafficPolicy, Namespace: bp.Namespace, Name: bp.Name, Generation: bp.Generation}
		policy, problem := backendFrom(bp, ref)
		if problem != "" {
			ps.reject(v1alpha1.ReasonInvalid, "%s", problem)
			continue
		}
		refs := make([]targetRef, len(bp.Spec.TargetRefs))
		for i, tr := range bp.Spec.TargetRefs {
			refs[i] = targetRef{tr.PolicyTargetReference, tr.SectionName}
		}
		apply, ok := t.resolveServiceTargets(KindBackendTrafficPolicy, bp.Namespace, refs, owner, ps)
		if !ok {
			continue
		}
		for _, r := range apply {
			for _, p := range r.ports(owner, ref) {
				p.Backend = policy
			}
		}
		if len(apply) > 0 {
			var targets []string
			for _, r := range apply {
				s := "Service " + r.key.svc.Name
				if r.key.port != "" {
					s += " port " + r.key.port
				}
				targets = append(targets, s)
			}
			ps.proxyless = proxylessBackendGaps(targets, policy)
		}
	}
}

func portNames(s *ir.Service) string {
	var out []string
	for _, p := range s.Ports {
		if p.Name != "" {
			out = append(out, p.Name)
		}
	}
	if len(out) == 0 {
		return "none: name the Service's ports to target one"
	}
	return strings.Join(out, ", ")
}

// backendFrom resolves a policy's spec over ir.DefaultBackend (the CRD's
// defaults: a spec that never passed the API server's defaulting means
// the same). problem names a value the API server would have refused
// (reachable only offline), with the field.
func backendFrom(bp *v1alpha1.BackendTrafficPolicy, ref ir.PolicyRef) (*ir.BackendPolicy, string) {
	b := ir.DefaultBackend
	b.Source = ref
	s := bp.Spec
	if cb := s.CircuitBreaker; cb != nil {
		for _, f := range []struct {
			name string
			v    *int32
			to   *uint32
		}{
			{"maxConnections", cb.MaxConnections, &b.MaxConnections},
			{"maxPendingRequests", cb.MaxPendingRequests, &b.MaxPendingRequests},
			{"maxRequests", cb.MaxRequests, &b.MaxRequests},
		} {
			if f.v == nil {
				continue
			}
			if *f.v < 1 {
				return nil, fmt.Sprintf("spec.circuitBreaker.%s must be at least 1", f.name)
			}
			*f.to = uint32(*f.v)
		}
		if cb.MaxRetries != nil {
			if *cb.MaxRetries < 0 {
				return nil, "spec.circuitBreaker.maxRetries must not be negative"
			}
			n := uint32(*cb.MaxRetries)
			b.MaxRetries = &n
		}
	}
	if od := s.OutlierDetection; od != nil {
		if od.Consecutive5xx != nil {
			b.Consecutive5xx = uint32(max(*od.Consecutive5xx, 0))
		}
		if od.ConsecutiveGatewayErrors != nil {
			b.ConsecutiveGatewayErrors = uint32(max(*od.ConsecutiveGatewayErrors, 0))
		}
		if fp := od.FailurePercentage; fp != nil {
			if fp.Threshold < 1 || fp.Threshold > 100 {
				return nil, "spec.outlierDetection.failurePercentage.threshold must be between 1 and 100"
			}
			b.FailurePercentage = &ir.FailurePercentage{Threshold: uint32(fp.Threshold), MinimumHosts: DefaultFailurePercentageMinimumHosts, RequestVolume: DefaultFailurePercentageRequestVolume}
			if fp.MinimumHosts != nil {
				b.FailurePercentage.MinimumHosts = uint32(max(*fp.MinimumHosts, 1))
			}
			if fp.RequestVolume != nil {
				b.FailurePercentage.RequestVolume = uint32(max(*fp.RequestVolume, 1))
			}
		}
		var problem string
		positive := func(field string, d v1alpha1.Duration, to *ir.Duration) {
			if d == "" || problem != "" {
				return
			}
			if v := duration(&d); v > 0 {
				*to = v
				return
			}
			problem = fmt.Sprintf("spec.outlierDetection.%s: %q must be a duration longer than 0s", field, d)
		}
		positive("interval", od.Interval, &b.Interval)
		positive("baseEjectionTime", od.BaseEjectionTime, &b.BaseEjectionTime)
		if problem != "" {
			return nil, problem
		}
		if od.MaxEjectionPercent != nil {
			if *od.MaxEjectionPercent < 0 || *od.MaxEjectionPercent > 100 {
				return nil, "spec.outlierDetection.maxEjectionPercent must be between 0 and 100"
			}
			b.MaxEjectionPercent = uint32(*od.MaxEjectionPercent)
		}
	}
	if lb := s.LoadBalancer; lb != nil {
		if lb.Type != "" {
			b.LB = ir.LBAlgorithm(lb.Type)
		}
		if ch := lb.ConsistentHash; ch != nil && b.LB.ConsistentHash() {
			switch {
			case ch.Type == v1alpha1.ConsistentHashHeader && ch.Header != nil:
				b.Hash = &ir.HashKey{Header: strings.ToLower(ch.Header.Name)}
			case ch.Type == v1alpha1.ConsistentHashCookie && ch.Cookie != nil:
				c := &ir.HashCookie{Name: ch.Cookie.Name, Path: ch.Cookie.Path}
				if ch.Cookie.TTL != nil {
					ttl := duration(ch.Cookie.TTL)
					c.TTL = &ttl
				}
				b.Hash = &ir.HashKey{Cookie: c}
			case ch.Type == v1alpha1.ConsistentHashSourceIP:
				b.Hash = &ir.HashKey{SourceIP: true}
			}
		}
		if b.LB.ConsistentHash() && b.Hash == nil {
			return nil, fmt.Sprintf("spec.loadBalancer.consistentHash is required with type %s", b.LB)
		}
		switch lb.Locality {
		case "", v1alpha1.LocalityNone:
		case v1alpha1.LocalityPreferLocalZone:
			b.PreferLocalZone = true
		default:
			return nil, fmt.Sprintf("spec.loadBalancer.locality: %q is not None or PreferLocalZone", lb.Locality)
		}
	}
	if b.PreferLocalZone && b.Consecutive5xx == 0 && b.ConsecutiveGatewayErrors == 0 && b.FailurePercentage == nil {
		return nil, "spec.loadBalancer.locality PreferLocalZone needs outlier detection: without it a zone whose pods fail but stay ready never fails over; set spec.outlierDetection.consecutive5xx above 0 (such as 5) or spec.outlierDetection.failurePercentage, or set locality: None"
	}
	if c := s.Connection; c != nil {
		if c.ConnectTimeout != "" {
			v := duration(&c.ConnectTimeout)
			if v <= 0 {
				return nil, fmt.Sprintf("spec.connection.connectTimeout: %q must be a duration longer than 0s", c.ConnectTimeout)
			}
			b.ConnectTimeout = v
		}
		if c.IdleTimeout != nil {
			b.IdleTimeout = duration(c.IdleTimeout)
		}
		if k := c.TCPKeepalive; k != nil {
			b.TCPKeepalive = &ir.TCPKeepalive{}
			if k.Probes != nil {
				b.TCPKeepalive.Probes = uint32(max(*k.Probes, 1))
			}
			b.TCPKeepalive.Time = wholeSeconds(duration(k.IdleTime))
			b.TCPKeepalive.Interval = wholeSeconds(duration(k.Interval))
		}
	}
	return &b, ""
}

// wholeSeconds rounds up to a whole second (the kernel's unit), keeping 0.
func wholeSeconds(d ir.Duration) ir.Duration {
	return ir.Duration((d.D() + time.Second - 1).Truncate(time.Second))
}

// The failure-percentage defaults, equal to the CRD's (and to Envoy's and
// gRPC's own).
const (
	DefaultFailurePercentageMinimumHosts  = 5
	DefaultFailurePercentageRequestVolume = 50
)

// proxylessBackendGaps names what of a BackendTrafficPolicy proxyless gRPC
// clients do not apply, for the ProxylessLimited condition (docs/design/110,
// as 057 does for RetryPolicy). gRPC-Go's xDS client reads of a cluster only
// its load-balancing policy (round robin, least request, ring hash), the
// circuit breakers' max_requests, and outlier detection's interval, base
// ejection time, max ejection percent and success-rate and
// failure-percentage ejection (grpc internal/xds/xdsclient/xdsresource
// unmarshal_cds.go), and of a route's hash policies headers and the
// channel id (unmarshal_rds.go). A value equal to the default is not
// reported: every policy has it, and docs/api.md says what proxyless
// clients do with the defaults.
func proxylessBackendGaps(targets []string, b *ir.BackendPolicy) string {
	d := ir.DefaultBackend
	var gaps []string
	if b.MaxConnections != d.MaxConnections {
		gaps = append(gaps, "spec.circuitBreaker.maxConnections (gRPC does not cap connections: it keeps one per endpoint)")
	}
	if b.MaxPendingRequests != d.MaxPendingRequests {
		gaps = append(gaps, "spec.circuitBreaker.maxPendingRequests (gRPC has no pending-request queue to cap)")
	}
	if b.MaxRetries != nil {
		gaps = append(gaps, "spec.circuitBreaker.maxRetries (gRPC bounds retries per call only, by the RetryPolicy's attempts)")
	}
	if b.Consecutive5xx != d.Consecutive5xx && b.Consecutive5xx > 0 {
		gaps = append(gaps, "spec.outlierDetection.consecutive5xx (gRPC ejects by success rate and spec.outlierDetection.failurePercentage, not by consecutive errors)")
	}
	if b.ConsecutiveGatewayErrors > 0 {
		gaps = append(gaps, "spec.outlierDetection.consecutiveGatewayErrors (gRPC ejects by success rate and spec.outlierDetection.failurePercentage, not by consecutive errors)")
	}
	if b.LB == ir.LBMaglev {
		gaps = append(gaps, "spec.loadBalancer.type Maglev (gRPC has no Maglev: proxyless clients use RingHash, which keeps each key on one endpoint as well)")
	}
	if b.Hash != nil && b.Hash.Cookie != nil {
		gaps = append(gaps, "spec.loadBalancer.consistentHash type Cookie (gRPC hashes headers only: proxyless clients pick a random endpoint for each call)")
	}
	if b.ConnectTimeout != d.ConnectTimeout {
		gaps = append(gaps, "spec.connection.connectTimeout (gRPC uses its own connection timeout, at least 20s with backoff)")
	}
	if b.IdleTimeout != d.IdleTimeout {
		gaps = append(gaps, "spec.connection.idleTimeout (gRPC keeps its connections; the application's channel idle timeout applies)")
	}
	if b.TCPKeepalive != nil {
		gaps = append(gaps, "spec.connection.tcpKeepalive (gRPC keepalive is the application's channel option)")
	}
	if len(gaps) == 0 {
		return ""
	}
	return fmt.Sprintf("Proxyless gRPC clients (pods annotated %s: grpc) calling %s do not apply: %s. Sidecars apply the whole policy; proxyless clients apply the rest.",
		dataplane.AnnotationProxyless, strings.Join(targets, ", "), strings.Join(gaps, "; "))
}
