package sim

import (
	"fmt"
	"strings"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// typeHTTPFault is Envoy's fault injection filter.
const typeHTTPFault = "envoy.extensions.filters.http.fault.v3.HTTPFault"

// envoyRouteTimeout is a route's timeout when it sets none
// (RouteAction.timeout in envoy/config/route/v3/route_components.proto:
// "defaults to 15 seconds"); a timeout of 0 disables it.
const envoyRouteTimeout = 15 * time.Second

// envoyStreamIdleTimeout is a connection manager's stream_idle_timeout
// when it sets none (http_connection_manager.proto: "If not specified,
// this defaults to 5 minutes"); 0 disables it.
const envoyStreamIdleTimeout = 5 * time.Minute

// RoutePolicy is what the caller's sidecar's route applies to a request
// besides choosing its cluster: timeouts, retries, an injected fault and
// mirrors, read from the route and the HTTP filters of the chain that
// took the request, with Envoy's defaults for what they leave out. Like
// Upstream, it describes what is in effect; the walk does not model time
// or chance (it follows a request that no fault aborted, unless every
// request is aborted).
type RoutePolicy struct {
	// Route is the route's name, or its match when it has none.
	Route string
	// Timeout bounds the whole request, retries included: the route's
	// timeout, Envoy's 15s without one; 0 means none.
	Timeout time.Duration
	// Retries is retry_policy.num_retries (1 when the policy leaves it
	// out), 0 without a retry policy; PerTryTimeout its per_try_timeout
	// (0: a try may last until Timeout).
	Retries       uint32
	PerTryTimeout time.Duration
	// IdleTimeout ends a stream silent that long: the route's idle_timeout
	// when it sets one (0 disables it), else the connection manager's
	// stream_idle_timeout (RouteAction.idle_timeout in
	// route_components.proto: it overrides the manager's); 0 means none.
	IdleTimeout time.Duration
	// Fault is the fault filter's configuration in effect for the route:
	// the route's (or its virtual host's, or its route configuration's)
	// typed_per_filter_config for the filter's name, which replaces the
	// filter's own (FaultSettings in
	// source/extensions/filters/http/fault/fault_filter.cc). Nil when no
	// fault filter is on the chain, or it injects nothing.
	Fault *Fault
	// Mirrors are the route's request_mirror_policies.
	Mirrors []Mirror
}

// Fault is an injected delay and abort, each on a share of requests.
type Fault struct {
	// Filter is the fault filter's name on the chain.
	Filter string
	// DelayPercent of requests wait Delay before they are forwarded.
	DelayPercent float64
	Delay        time.Duration
	// AbortPercent of requests are answered by the sidecar itself, with
	// HTTPStatus, or for gRPC with GRPCStatus when it is set (then
	// HTTPStatus is 200, as Envoy answers a gRPC abort).
	AbortPercent float64
	HTTPStatus   uint32
	GRPCStatus   *uint32
}

// Mirror is a copy of a share of requests sent to another cluster, whose
// response is ignored (RequestMirrorPolicy; without runtime_fraction every
// request is mirrored).
type Mirror struct {
	Cluster string
	Percent float64
	// Missing: the proxy has no such cluster, so the copies go nowhere
	// (Envoy counts them as failed shadows; the request itself is
	// unaffected).
	Missing bool
}

func (r *RoutePolicy) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "route %s: timeout %s, idle timeout %s", r.Route, r.Timeout, r.IdleTimeout)
	if r.Retries > 0 {
		fmt.Fprintf(&b, ", %d retries", r.Retries)
		if r.PerTryTimeout > 0 {
			fmt.Fprintf(&b, " of at most %s each", r.PerTryTimeout)
		}
	}
	if f := r.Fault; f != nil {
		if f.DelayPercent > 0 {
			fmt.Fprintf(&b, "; fault %s delays %g%% by %s", f.Filter, f.DelayPercent, f.Delay)
		}
		if f.AbortPercent > 0 {
			if f.GRPCStatus != nil {
				fmt.Fprintf(&b, "; fault %s aborts %g%% with grpc-status %d", f.Filter, f.AbortPercent, *f.GRPCStatus)
			} else {
				fmt.Fprintf(&b, "; fault %s aborts %g%% with HTTP %d", f.Filter, f.AbortPercent, f.HTTPStatus)
			}
		}
	}
	for _, m := range r.Mirrors {
		fmt.Fprintf(&b, "; mirrors %g%% to %s", m.Percent, m.Cluster)
		if m.Missing {
			b.WriteString(" (no such cluster)")
		}
	}
	return b.String()
}

// fractionPercent reads a FractionalPercent as a percentage.
func fractionPercent(p *typev3.FractionalPercent) float64 {
	if p == nil {
		return 0
	}
	n := float64(p.GetNumerator())
	switch p.GetDenominator() {
	case typev3.FractionalPercent_TEN_THOUSAND:
		n /= 100
	case typev3.FractionalPercent_MILLION:
		n /= 10000
	}
	return min(n, 100)
}

// faultFilter is a fault filter on a chain, by name, with its own config.
type faultFilter struct {
	name string
	cfg  *faultv3.HTTPFault
}

// perFilterConfig is the most specific typed_per_filter_config for a
// filter name: the route's, then the virtual host's, then the route
// configuration's (RouteEntryImplBase::mostSpecificPerFilterConfig).
func perFilterConfig(name string, rc *routev3.RouteConfiguration, vh *routev3.VirtualHost, rt *routev3.Route) *anypb.Any {
	if a := rt.GetTypedPerFilterConfig()[name]; a != nil {
		return a
	}
	if a := vh.GetTypedPerFilterConfig()[name]; a != nil {
		return a
	}
	return rc.GetTypedPerFilterConfig()[name]
}

// faultFor is the fault a filter injects into requests of a route.
func faultFor(f faultFilter, rc *routev3.RouteConfiguration, vh *routev3.VirtualHost, rt *routev3.Route) (*Fault, error) {
	cfg := f.cfg
	if a := perFilterConfig(f.name, rc, vh, rt); a != nil {
		cfg = &faultv3.HTTPFault{}
		if err := a.UnmarshalTo(cfg); err != nil {
			return nil, fmt.Errorf("typed_per_filter_config %q: %v", f.name, err)
		}
	}
	out := &Fault{Filter: f.name}
	if d := cfg.GetDelay(); d != nil {
		out.DelayPercent, out.Delay = fractionPercent(d.GetPercentage()), d.GetFixedDelay().AsDuration()
	}
	if a := cfg.GetAbort(); a != nil {
		out.AbortPercent = fractionPercent(a.GetPercentage())
		switch e := a.GetErrorType().(type) {
		case *faultv3.FaultAbort_HttpStatus:
			out.HTTPStatus = e.HttpStatus
		case *faultv3.FaultAbort_GrpcStatus:
			g := e.GrpcStatus
			out.GRPCStatus, out.HTTPStatus = &g, 200
		}
	}
	if cfg.GetMaxActiveFaults() != nil && cfg.GetMaxActiveFaults().GetValue() == 0 {
		return nil, nil // max_active_faults 0: no fault is ever active
	}
	if out.DelayPercent == 0 && out.AbortPercent == 0 {
		return nil, nil
	}
	return out, nil
}

// routePolicyOf reads what a route applies; clusterExists says whether the
// proxy holds a cluster.
func routePolicyOf(rt *routev3.Route, ra *routev3.RouteAction, fault *Fault, streamIdle time.Duration, clusterExists func(string) bool) *RoutePolicy {
	rp := &RoutePolicy{Route: routeName(rt), Timeout: envoyRouteTimeout, IdleTimeout: streamIdle, Fault: fault}
	if t := ra.GetTimeout(); t != nil {
		rp.Timeout = t.AsDuration()
	}
	if t := ra.GetIdleTimeout(); t != nil {
		rp.IdleTimeout = t.AsDuration()
	}
	if p := ra.GetRetryPolicy(); p != nil {
		rp.Retries = 1
		if n := p.GetNumRetries(); n != nil {
			rp.Retries = n.GetValue()
		}
		rp.PerTryTimeout = p.GetPerTryTimeout().AsDuration()
	}
	for _, m := range ra.GetRequestMirrorPolicies() {
		pct := 100.0
		if f := m.GetRuntimeFraction(); f != nil {
			pct = fractionPercent(f.GetDefaultValue())
		}
		rp.Mirrors = append(rp.Mirrors, Mirror{Cluster: m.GetCluster(), Percent: pct, Missing: !clusterExists(m.GetCluster())})
	}
	return rp
}
