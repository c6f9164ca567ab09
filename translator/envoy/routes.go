package envoy

import (
	"net/netip"
	"sort"
	"strconv"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator/ir"
)

// routeConfigs builds the outbound route configurations (docs/design/090):
//
//   - one per HTTP port of each Service with a cluster IP, named like its
//     cluster (destRouteName), with one virtual host for every Host: the
//     outbound listener's chain for that Service port matches the
//     Service's addresses, so the destination address, not the Host,
//     chose the Service (as kube-proxy would). Nothing in it reads the
//     proxy, so proxies share it; a TrafficSplit or retry change re-sends
//     that one configuration, not every virtual host of the port;
//   - one per HTTP port number, named after the port: the port's chain
//     for any other address (a pod, something outside the cluster) routes
//     by Host the Services without a cluster IP (headless) and, for any
//     other Host, passes the request through to where it was going, or
//     answers 502 under RegistryOnly.
func (v *view) routeConfigs() []*routev3.RouteConfiguration {
	return append(v.destRoutes(), v.portRoutes()...)
}

// destRoutes are routeConfigs' first kind: one per HTTP port of each
// Service with a cluster IP (and family of it). They read only the view
// entry (the outbound list, the pod's families, consumerOf), so a Shared
// builds each once and a view entry's list once (sharedPart).
func (v *view) destRoutes() []*routev3.RouteConfiguration {
	var out []*routev3.RouteConfiguration
	for _, svc := range v.outbound {
		for _, port := range svc.Ports {
			if byDestination(svc, port) {
				for _, f := range v.chainFamilies(svc) {
					out = append(out, v.sharedDestRoute(svc, port, f))
				}
			}
		}
	}
	return out
}

// portRoutes are routeConfigs' second kind: one per HTTP port number,
// collecting the virtual hosts of the Services without a cluster IP on
// it, and the unknown host. Built per group.
func (v *view) portRoutes() []*routev3.RouteConfiguration {
	byPort := map[int32]*routev3.RouteConfiguration{}
	var out []*routev3.RouteConfiguration
	for _, svc := range v.outbound {
		for _, port := range svc.Ports {
			if !port.Protocol.IsHTTP() {
				continue
			}
			rc := byPort[port.Port]
			if rc == nil {
				rc = &routev3.RouteConfiguration{Name: routeConfigName(port.Port), ValidateClusters: wrapperspb.Bool(false)}
				byPort[port.Port] = rc
				out = append(out, rc)
			}
			if !byDestination(svc, port) {
				rc.VirtualHosts = append(rc.VirtualHosts, v.sharedVirtualHost(svc, port))
			}
		}
	}
	for _, rc := range out {
		rc.VirtualHosts = append(rc.VirtualHosts, v.unknownHost())
	}
	return out
}

// consumerOf is the proxy's namespace when port has consumer routes for
// it (GAMMA, docs/design/176), else "": what the port's routes read of the
// proxy, and so part of every key that shares them between proxies.
func (v *view) consumerOf(port *ir.Port) string {
	if port.ConsumerOf(v.proxy.Namespace) != nil {
		return v.proxy.Namespace
	}
	return ""
}

// routesOf are the port's routes for this proxy's callers.
func (v *view) routesOf(port *ir.Port) []*ir.Route {
	return port.RoutesFor(v.proxy.Namespace)
}

// routeConfigName names a port's route configuration for addresses no
// Service chain matches (as Istio names its per-port ones).
func routeConfigName(port int32) string { return strconv.Itoa(int(port)) }

// byDestination says whether the outbound listener gives a Service port
// its own HTTP filter chain, matched by the Service's cluster IPs, and so
// its own route configuration: every HTTP port of a Service with a cluster
// IP but the capture port (whose connections the listener closes).
func byDestination(svc *ir.Service, port *ir.Port) bool {
	return port.Protocol.IsHTTP() && !svc.Headless && len(svc.ClusterIPs) > 0 && port.Port != dataplane.OutboundPort
}

// destRouteName is the route configuration of one Service port reached by
// its address of family f: the name of its cluster, which stays the same
// whatever its routes say, so the listener that names it does not change
// when they do.
func destRouteName(svc *ir.Service, port *ir.Port, f family) string {
	return familyClusterName(svc, port.Port, f)
}

// destRoute is the route configuration of a Service port reached by its
// address. Any Host goes to the Service: the connection was addressed to
// it, and without the mesh it would reach it whatever the Host said (a
// client that sends its public name, or an IP, as Host). It reads of the
// proxy only consumer, its namespace when the port has consumer routes
// for it (consumerOf), else "": callers of that namespace get those, the
// rest the producer's routes, under the same name. f is the family of
// the address its chain matched, which picks the backends' clusters of
// that family.
func destRoute(mesh *ir.Mesh, svc *ir.Service, port *ir.Port, consumer string, f family) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{
		Name:             destRouteName(svc, port, f),
		ValidateClusters: wrapperspb.Bool(false),
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    svc.Key.Hostname() + ":" + strconv.Itoa(int(port.Port)),
			Domains: []string{"*"},
			Routes:  routes(mesh, port, consumer, f),
		}},
	}
}

// virtualHost routes one Service port. It reads of the proxy only whether
// it is in the Service's namespace (domains), its preferred family (which
// picks dual-stack backends' clusters) and whether the port has consumer
// routes for its namespace, so proxies share it (Shared).
func (v *view) virtualHost(svc *ir.Service, port *ir.Port) *routev3.VirtualHost {
	return &routev3.VirtualHost{
		Name:    svc.Key.Hostname() + ":" + strconv.Itoa(int(port.Port)),
		Domains: v.domains(svc, port.Port),
		Routes:  routes(v.mesh, port, v.consumerOf(port), v.preferred()),
	}
}

// domains are the Host values that reach svc: its DNS names with and
// without the port, and its cluster IPs. The bare name resolves to the
// Service only inside its own namespace, so only that namespace's proxies
// route it (a bare name in two namespaces would otherwise collide).
func (v *view) domains(svc *ir.Service, port int32) []string {
	p := ":" + strconv.Itoa(int(port))
	names := []string{svc.Key.Name + "." + svc.Key.Namespace, svc.Key.Name + "." + svc.Key.Namespace + ".svc", svc.Key.Hostname()}
	if svc.Key.Namespace == v.proxy.Namespace {
		names = append([]string{svc.Key.Name}, names...)
	}
	for _, ip := range svc.ClusterIPs {
		if a, err := netip.ParseAddr(ip); err == nil && a.Is6() {
			ip = "[" + ip + "]"
		}
		names = append(names, ip)
	}
	out := make([]string, 0, 2*len(names))
	for _, n := range names {
		out = append(out, n, n+p)
	}
	return out
}

// unknownHost catches requests for hosts the mesh does not know: they pass
// through to where the client sent them, or get a 502 in RegistryOnly mode.
func (v *view) unknownHost() *routev3.VirtualHost {
	r := &routev3.Route{Name: "unknown", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}}
	if v.mesh.Outbound == ir.OutboundRegistryOnly {
		r.Action = &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 502}}
	} else {
		r.Action = &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: dataplane.PassthroughCluster},
			Timeout:          durationpb.New(0),
		}}
	}
	return &routev3.VirtualHost{Name: "unknown", Domains: []string{"*"}, Routes: []*routev3.Route{r}}
}

// routes turns a port's IR routes for callers in namespace consumer
// (ir.Port.RoutesFor) into Envoy routes, in order. An IR route with
// several matches becomes one Envoy route per match (any may hold).
// Backends are reached over f.
func routes(mesh *ir.Mesh, port *ir.Port, consumer string, f family) []*routev3.Route {
	var out []*routev3.Route
	for _, r := range port.RoutesFor(consumer) {
		var action *routev3.RouteAction
		if r.Redirect == nil {
			action = routeAction(mesh, r, port.Retry, f)
		}
		matches := r.Matches
		if len(matches) == 0 {
			matches = []ir.Match{{}}
		}
		fault := faultOverride(r.Fault)
		for _, m := range matches {
			rt := &routev3.Route{Match: routeMatch(m)}
			switch {
			case r.Redirect != nil:
				rt.Action = &routev3.Route_Redirect{Redirect: redirectAction(r.Redirect, m)}
			case r.Rewrite != nil:
				// The rewrite depends on the match (ReplacePrefixMatch).
				a := proto.Clone(action).(*routev3.RouteAction)
				setRewrite(a, r.Rewrite, m)
				rt.Action = &routev3.Route_Route{Route: a}
			default:
				rt.Action = &routev3.Route_Route{Route: action}
			}
			setRouteHeaders(rt, r)
			if fault != nil {
				rt.TypedPerFilterConfig = map[string]*anypb.Any{faultFilterName: fault}
			}
			out = append(out, rt)
		}
	}
	return out
}

func routeMatch(m ir.Match) *routev3.RouteMatch {
	rm := &routev3.RouteMatch{}
	switch {
	case m.PathExact != "":
		rm.PathSpecifier = &routev3.RouteMatch_Path{Path: m.PathExact}
	case m.PathRegex != "":
		// Envoy and gRPC both match safe_regex against the whole path
		// without its query, as Gateway API's RegularExpression asks.
		rm.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: m.PathRegex}}
	case m.PathPrefix != "" && m.PathPrefix != "/":
		// Gateway API's PathPrefix matches whole segments: /api matches
		// /api and /api/x, not /apix.
		rm.PathSpecifier = &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: strings.TrimRight(m.PathPrefix, "/")}
	default:
		rm.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/"}
	}
	if m.Method != "" {
		rm.Headers = append(rm.Headers, exactHeader(":method", m.Method))
	}
	for _, h := range m.Headers {
		if h.Regex {
			rm.Headers = append(rm.Headers, &routev3.HeaderMatcher{Name: h.Name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
				StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: h.Value}}},
			}})
		} else {
			rm.Headers = append(rm.Headers, exactHeader(h.Name, h.Value))
		}
	}
	for _, q := range m.QueryParams {
		sm := &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: q.Value}}
		if q.Regex {
			sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: q.Value}}}
		}
		rm.QueryParameters = append(rm.QueryParameters, &routev3.QueryParameterMatcher{Name: q.Name,
			QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: sm}})
	}
	return rm
}

func exactHeader(name, value string) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
		StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: value}},
	}}
}

func routeAction(mesh *ir.Mesh, r *ir.Route, portRetry *ir.Retry, f family) *routev3.RouteAction {
	a := &routev3.RouteAction{}
	if len(r.Backends) == 1 && !backendHasHeaders(r.Backends) {
		a.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: backendClusterOf(mesh, r.Backends[0], f)}
	} else {
		wc := &routev3.WeightedCluster{}
		for _, b := range r.Backends {
			wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{
				Name:                    backendClusterOf(mesh, b, f),
				Weight:                  wrapperspb.UInt32(b.Weight),
				RequestHeadersToAdd:     headerOptions(b.RequestHeaders),
				RequestHeadersToRemove:  headerRemovals(b.RequestHeaders),
				ResponseHeadersToAdd:    headerOptions(b.ResponseHeaders),
				ResponseHeadersToRemove: headerRemovals(b.ResponseHeaders),
			})
		}
		a.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}
	}
	retry := r.Retry
	if retry == nil {
		retry = portRetry
	}
	// Envoy's default 15s route timeout would cut long requests and gRPC
	// streams that work without the mesh: no timeout unless asked for.
	timeout := r.Timeout
	if timeout == 0 && retry != nil && !r.NoTimeout {
		// An HTTPRoute's explicit 0s disables the timeout, the
		// RetryPolicy's too (Gateway API; Envoy: 0 is none).
		timeout = retry.Timeout
	}
	retries := retry != nil && retry.Attempts > 0
	// Gateway API's backendRequest bounds each try: the per-try timeout
	// when the route retries (it beats the RetryPolicy's perTryTimeout,
	// as the route's request timeout beats the policy's timeout: the
	// route is the more specific); without retries there is one try, so
	// it bounds the request, together with the request timeout.
	if r.BackendTimeout > 0 && !retries && (timeout == 0 || r.BackendTimeout < timeout) {
		timeout = r.BackendTimeout
	}
	a.Timeout = durationpb.New(timeout.D())
	if retry != nil && retry.IdleTimeout > 0 {
		// The stream's idle limit, in place of the connection manager's
		// stream_idle_timeout (which weft turns off).
		a.IdleTimeout = durationpb.New(retry.IdleTimeout.D())
	}
	if retries {
		a.RetryPolicy = retryPolicy(retry)
		switch {
		case r.BackendTimeout > 0:
			a.RetryPolicy.PerTryTimeout = durationpb.New(r.BackendTimeout.D())
		case r.NoBackendTimeout:
			a.RetryPolicy.PerTryTimeout = nil // each try until the timeout
		}
	}
	a.HashPolicy = hashPolicies(mesh, r.Backends)
	a.RequestMirrorPolicies = mirrorPolicies(mesh, r.Mirrors, f)
	return a
}

// faultFilterName is the fault filter on outbound HTTP chains and gRPC API
// listeners; a route's fault is its typed_per_filter_config under this
// name.
const faultFilterName = "envoy.filters.http.fault"

// faultFilter injects nothing by itself: Envoy's fault filter (and
// gRPC-Go's) replaces its own configuration with a route's
// typed_per_filter_config for the filter's name, so only routes that carry
// one are faulted, and the listener need not change when a fault is added
// or removed (Istio's outbound chains carry it the same way).
func faultFilter() *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: faultFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&faultv3.HTTPFault{})}}
}

// faultOverride is a route's fault as the filter's per-route configuration.
func faultOverride(f *ir.Fault) *anypb.Any {
	if f == nil {
		return nil
	}
	h := &faultv3.HTTPFault{}
	if f.DelayPercent > 0 {
		h.Delay = &faultcommonv3.FaultDelay{
			FaultDelaySecifier: &faultcommonv3.FaultDelay_FixedDelay{FixedDelay: durationpb.New(f.Delay.D())},
			Percentage:         hundredths(f.DelayPercent),
		}
	}
	if f.AbortPercent > 0 {
		h.Abort = &faultv3.FaultAbort{Percentage: hundredths(f.AbortPercent)}
		if f.GRPCStatus != nil {
			h.Abort.ErrorType = &faultv3.FaultAbort_GrpcStatus{GrpcStatus: *f.GRPCStatus}
		} else {
			h.Abort.ErrorType = &faultv3.FaultAbort_HttpStatus{HttpStatus: f.HTTPStatus}
		}
	}
	return mustAny(h)
}

// hundredths is p percent as a FractionalPercent.
func hundredths(p uint32) *typev3.FractionalPercent {
	return &typev3.FractionalPercent{Numerator: p, Denominator: typev3.FractionalPercent_HUNDRED}
}

// hashPolicies are the keys the route's consistent-hash backends hash on.
// Envoy computes a request's hash from the route's hash_policy and hands
// it to the cluster the route picked, whose ring (or Maglev table) maps it
// to an endpoint; a request without the key gets a random endpoint. A
// route that splits between backends with different keys hashes on all of
// them (Envoy combines the values), which still sends equal keys to equal
// endpoints. Backends that do not hash contribute nothing, and their
// clusters ignore the hash.
func hashPolicies(mesh *ir.Mesh, backends []ir.Backend) []*routev3.RouteAction_HashPolicy {
	var out []*routev3.RouteAction_HashPolicy
	seen := map[ir.HashKey]bool{}
	for _, b := range backends {
		if b.Unresolved {
			continue
		}
		svc := mesh.Service(b.Service)
		if svc == nil {
			continue
		}
		port := svc.Port(b.Port)
		if port == nil || port.Backend == nil || !port.Backend.LB.ConsistentHash() || port.Backend.Hash == nil {
			continue
		}
		h := port.Backend.Hash
		k := *h
		if h.Cookie != nil {
			k.Cookie = nil
			k.Header = "cookie " + h.Cookie.Name // the key, not the TTL, makes two the same
		}
		if seen[k] {
			continue
		}
		seen[k] = true
		switch {
		case h.Header != "":
			out = append(out, &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{
				Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: h.Header}}})
		case h.Cookie != nil:
			c := &routev3.RouteAction_HashPolicy_Cookie{Name: h.Cookie.Name, Path: h.Cookie.Path}
			if h.Cookie.TTL != nil {
				c.Ttl = durationpb.New(h.Cookie.TTL.D())
			}
			out = append(out, &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_Cookie_{Cookie: c}})
		case h.SourceIP:
			out = append(out, &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_ConnectionProperties_{
				ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true}}})
		}
	}
	return out
}

func retryPolicy(r *ir.Retry) *routev3.RetryPolicy {
	on := append([]string(nil), r.On...)
	sort.Strings(on)
	p := &routev3.RetryPolicy{
		RetryOn:              strings.Join(on, ","),
		NumRetries:           wrapperspb.UInt32(r.Attempts),
		RetriableStatusCodes: r.StatusCodes,
		RetryBackOff: &routev3.RetryPolicy_RetryBackOff{
			BaseInterval: durationpb.New(r.BaseInterval.D()),
			MaxInterval:  durationpb.New(r.MaxInterval.D()),
		},
		// Do not retry on the endpoint that just failed, when another exists.
		RetryHostPredicate:            []*routev3.RetryPolicy_RetryHostPredicate{{Name: "envoy.retry_host_predicates.previous_hosts", ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: mustAny(&previoushostsv3.PreviousHostsPredicate{})}}},
		HostSelectionRetryMaxAttempts: 5,
	}
	if r.PerTryTimeout > 0 {
		p.PerTryTimeout = durationpb.New(r.PerTryTimeout.D())
	}
	return p
}
