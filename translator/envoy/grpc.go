package envoy

import (
	"fmt"
	"strconv"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator/ir"
)

func (v *view) buildGRPC(r *Resources) {
	blackHole := false
	for _, svc := range v.outbound {
		if svc.Headless {
			continue // gRPC's xds resolver needs an EDS cluster
		}
		for _, port := range svc.Ports {
			if !port.Protocol.IsHTTP() {
				continue
			}
			for _, rt := range v.routesOf(port) {
				for _, b := range rt.Backends {
					blackHole = blackHole || b.Unresolved
				}
			}
			gp := v.sharedGRPCPort(svc, port)
			r.Routes = append(r.Routes, gp.route)
			r.Listeners = append(r.Listeners, gp.listeners...)
		}
	}
	// The upstream clusters may be shared: copy before adding.
	up, cla := v.upstreamClusters()
	r.Clusters = append(r.Clusters, up...)
	r.Endpoints = append(r.Endpoints, cla...)
	if blackHole {
		// A missing split backend's share goes to BlackHoleCluster, which
		// sidecars get as a static cluster; gRPC takes only EDS (and DNS or
		// aggregate) clusters, so here it is an EDS cluster with no
		// endpoints: its share of RPCs fails with UNAVAILABLE, gRPC's 503.
		r.Clusters = append(r.Clusters, &clusterv3.Cluster{
			Name:                 dataplane.BlackHoleCluster,
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsConfig()},
			LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		})
		r.Endpoints = append(r.Endpoints, &endpointv3.ClusterLoadAssignment{ClusterName: dataplane.BlackHoleCluster})
	}
	// A server asks for the listener of the address it serves on: the
	// wildcard addresses or one of the pod's own.
	ips := []string{"0.0.0.0", "[::]"}
	for _, ip := range v.proxy.IPs {
		if strings.Contains(ip, ":") {
			ip = "[" + ip + "]"
		}
		ips = append(ips, ip)
	}
	for _, in := range v.inbound {
		for _, ip := range ips {
			r.Listeners = append(r.Listeners, v.grpcServerListener(ip, in))
		}
	}
}

// grpcUpstreams are a gRPC proxy's clusters (and endpoints) of what it
// reaches: like sidecarUpstreams, shared by proxies with the same view.
func (v *view) grpcUpstreams() ([]*clusterv3.Cluster, []*endpointv3.ClusterLoadAssignment) {
	var clusters []*clusterv3.Cluster
	var cla []*endpointv3.ClusterLoadAssignment
	routed := v.grpcRoutedClusters()
	for _, up := range v.upstreams() {
		if (up.svc.Headless || !up.port.Protocol.IsHTTP()) && !routed[ir.ClusterName(up.svc.Key, up.port.Port)] {
			// No gRPC listener leads to it, and no route sends to it.
			continue
		}
		// A dual-stack Service's endpoints of the proxy's preferred
		// family only: a client never holds endpoints its pod has no
		// address to reach (docs/design/064).
		f := v.preferred()
		name := familyClusterName(up.svc, up.port.Port, f)
		b := up.port.BackendPolicy()
		clusters = append(clusters, &clusterv3.Cluster{
			Name:                 name,
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsConfig()},
			LbPolicy:             grpcLBPolicy(b.LB),
			CircuitBreakers:      grpcCircuitBreakers(b),
			OutlierDetection:     grpcOutlierDetection(b),
			TransportSocket:      grpcUpstreamTLS(up.port),
		})
		cla = append(cla, v.portAssignment(name, up.port, contentFamily(up.svc, f)))
	}
	return clusters, cla
}

// grpcRoutedClusters are the clusters (by ir.ClusterName) that the gRPC
// routes of buildGRPC send to. A split of a gRPC Service may send to a
// Service whose port is TCP (an unnamed port) or to a headless Service:
// neither gets a listener of its own, but the route names its cluster, so
// the proxy must hold it as an EDS cluster of its endpoints (a headless
// Service's are its pods, which is what gRPC dials anyway). Without it the
// set is inconsistent and refused whole (and gRPC-Go, given it, would
// hold the channel's whole configuration until the missing cluster's
// watch timed out: xdsdepmgr's maybeSendUpdateLocked waits for every
// cluster a route names).
func (v *view) grpcRoutedClusters() map[string]bool {
	out := map[string]bool{}
	for _, svc := range v.outbound {
		if svc.Headless {
			continue
		}
		for _, port := range svc.Ports {
			if !port.Protocol.IsHTTP() {
				continue
			}
			for _, rt := range v.routesOf(port) {
				for _, b := range rt.Backends {
					if !b.Unresolved {
						out[ir.ClusterName(b.Service, b.Port)] = true
					}
				}
			}
		}
	}
	return out
}

// What of a BackendTrafficPolicy a gRPC cluster carries: what gRPC-Go's
// xDS client reads of a Cluster (validateClusterAndConstructClusterUpdate
// in grpc's internal/xds/xdsclient/xdsresource/unmarshal_cds.go, v1.85),
// and no field it ignores, so that the configuration reads as what
// proxyless clients do. The rest is named on the policy's status
// (translator.proxylessBackendGaps).
//
//   - lb_policy ROUND_ROBIN, LEAST_REQUEST or RING_HASH (xxHash only);
//     any other, MAGLEV included, is NACKed: Maglev becomes RING_HASH,
//     the same per-key affinity with another table.
//   - circuit_breakers: max_requests of the DEFAULT priority only
//     (circuitBreakersFromCluster).
//   - outlier_detection: interval, base and max ejection time, max
//     ejection percent, success-rate and failure-percentage ejection
//     (outlierConfigFromCluster, gRFC A50); not the consecutive-error
//     detectors.
func grpcLBPolicy(a ir.LBAlgorithm) clusterv3.Cluster_LbPolicy {
	switch a {
	case ir.LBLeastRequest:
		return clusterv3.Cluster_LEAST_REQUEST
	case ir.LBRingHash, ir.LBMaglev:
		return clusterv3.Cluster_RING_HASH
	}
	return clusterv3.Cluster_ROUND_ROBIN
}

func grpcCircuitBreakers(b *ir.BackendPolicy) *clusterv3.CircuitBreakers {
	return &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxRequests: wrapperspb.UInt32(b.MaxRequests)}}}
}

func grpcOutlierDetection(b *ir.BackendPolicy) *clusterv3.OutlierDetection {
	od := outlierDetection(b)
	od.Consecutive_5Xx, od.EnforcingConsecutive_5Xx = nil, nil
	od.ConsecutiveGatewayFailure, od.EnforcingConsecutiveGatewayFailure = nil, nil
	return od
}

// grpcPort is a Service port's route configuration for gRPC clients and
// the API listeners that lead to it. It reads of the proxy only whether it
// is in the Service's namespace (the bare name), its preferred family
// (which picks dual-stack backends' clusters) and whether the port has
// consumer routes for its namespace (consumerOf), so proxies share it.
func (v *view) grpcPort(svc *ir.Service, port *ir.Port) *grpcPort {
	local := svc.Key.Namespace == v.proxy.Namespace
	gp := &grpcPort{route: grpcRouteConfig(v.mesh, svc, port, local, v.consumerOf(port), v.preferred())}
	for _, name := range grpcListenerNames(svc, port.Port, local) {
		gp.listeners = append(gp.listeners, apiListener(name, gp.route.Name))
	}
	return gp
}

// grpcRouteConfig is the route configuration of a Service port for gRPC
// clients in the Service's namespace (local) or not, preferring family f,
// in namespace consumer when the port has consumer routes for it (else
// ""): all it reads of the proxy (RouteChange builds it for each).
func grpcRouteConfig(mesh *ir.Mesh, svc *ir.Service, port *ir.Port, local bool, consumer string, f family) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{
		Name: grpcName(svc, port.Port),
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    svc.Key.Hostname() + ":" + strconv.Itoa(int(port.Port)),
			Domains: grpcListenerNames(svc, port.Port, local),
			Routes:  grpcRoutes(mesh, port, consumer, f),
		}},
	}
}

// grpcName is the route configuration of a Service port for gRPC clients.
func grpcName(svc *ir.Service, port int32) string {
	return svc.Key.Hostname() + ":" + strconv.Itoa(int(port))
}

// grpcListenerNames are the targets a gRPC client may dial for a Service
// port (xds:///NAME): the DNS forms that reach it from the proxy's
// namespace, each with its port.
func grpcListenerNames(svc *ir.Service, port int32, local bool) []string {
	p := ":" + strconv.Itoa(int(port))
	names := []string{svc.Key.Name + "." + svc.Key.Namespace + p, svc.Key.Name + "." + svc.Key.Namespace + ".svc" + p, svc.Key.Hostname() + p}
	if local {
		names = append(names, svc.Key.Name+p)
	}
	return names
}

// apiListener is a client-side listener: gRPC names it after the dial
// target and follows its HTTP connection manager to RDS.
func apiListener(name, routeConfig string) *listenerv3.Listener {
	h := &hcmv3.HttpConnectionManager{
		StatPrefix:     name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: routeConfig, ConfigSource: adsConfig()}},
		// gRPC-Go's xDS client runs the fault filter (gRFC A33), with a
		// route's typed_per_filter_config replacing the filter's own.
		HttpFilters: []*hcmv3.HttpFilter{faultFilter(), routerFilter()},
	}
	return &listenerv3.Listener{Name: name, ApiListener: &listenerv3.ApiListener{ApiListener: mustAny(h)}}
}

func routerFilter() *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})}}
}

// grpcRoutes are routes() with what gRPC understands: plain prefixes (gRPC
// rejects path_separated_prefix), max_stream_duration for the timeout,
// only gRPC status codes to retry on, and no route that matches query
// parameters.
//
// A path-separated prefix p (HTTPRoute and TrafficSplit PathPrefix, which
// match path elements) becomes two routes with the same action: path p
// exactly, then prefix "p/" — the same requests, in gRPC's terms (issue
// 12 r: "p/" alone never matched the method p itself).
func grpcRoutes(mesh *ir.Mesh, port *ir.Port, consumer string, f family) []*routev3.Route {
	var out []*routev3.Route
	for _, r := range routes(mesh, port, consumer, f) {
		if len(r.GetMatch().GetQueryParameters()) > 0 {
			// gRPC-Go skips such a route (a call has no query string,
			// so it never matches): left out, and named on the route's
			// status (translator.proxylessRuleGaps).
			continue
		}
		if p, ok := r.Match.PathSpecifier.(*routev3.RouteMatch_PathSeparatedPrefix); ok {
			exact := proto.Clone(r).(*routev3.Route)
			exact.Match.PathSpecifier = &routev3.RouteMatch_Path{Path: p.PathSeparatedPrefix}
			out = append(out, exact)
			r.Match.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: p.PathSeparatedPrefix + "/"}
		}
		out = append(out, r)
	}
	for _, r := range out {
		// gRPC-Go reads no header modification, rewrite or mirror
		// (routesProtoToSlice): left out, and named on the route's
		// status (translator.proxylessRuleGaps). A redirect stays: gRPC
		// fails the calls it matches (RouteActionUnsupported), as it
		// cannot follow one.
		r.RequestHeadersToAdd, r.RequestHeadersToRemove, r.ResponseHeadersToAdd, r.ResponseHeadersToRemove = nil, nil, nil, nil
		a := r.GetRoute()
		if a == nil {
			continue
		}
		a.RequestMirrorPolicies, a.PrefixRewrite, a.RegexRewrite, a.HostRewriteSpecifier = nil, "", nil, nil
		for _, c := range a.GetWeightedClusters().GetClusters() {
			c.RequestHeadersToAdd, c.RequestHeadersToRemove, c.ResponseHeadersToAdd, c.ResponseHeadersToRemove = nil, nil, nil, nil
		}
		a.HashPolicy = grpcHashPolicies(a.HashPolicy)
		// gRPC has no request mirroring: left out so the configuration
		// reads as what proxyless clients do (the TrafficSplit names it,
		// ProxylessLimited).
		a.RequestMirrorPolicies = nil
		if d := a.GetTimeout(); d != nil && d.AsDuration() > 0 {
			a.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: durationpb.New(d.AsDuration())}
		}
		// gRPC-Go reads no idle_timeout (named on the RetryPolicy,
		// ProxylessLimited).
		a.Timeout, a.IdleTimeout = nil, nil
		if rp := a.GetRetryPolicy(); rp != nil {
			var on []string
			for _, c := range strings.Split(rp.RetryOn, ",") {
				switch c {
				case "cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable":
					on = append(on, c)
				}
			}
			if len(on) == 0 {
				a.RetryPolicy = nil
			} else {
				rp.RetryOn = strings.Join(on, ",")
				rp.RetryHostPredicate, rp.HostSelectionRetryMaxAttempts, rp.RetriableStatusCodes, rp.PerTryTimeout = nil, 0, nil, nil
			}
		}
	}
	return out
}

// grpcHashPolicies are the hash policies gRPC reads (gRFC A42; grpc's
// unmarshal_rds.go hashPoliciesProtoToSlice): a header, and the filter
// state io.grpc.channel_id, a random number per client channel, which
// keeps every call of one client on one endpoint as hashing its source
// address does. gRPC has no cookies: a cookie key is left out (and named
// on the policy's status), and calls get a random hash. Idempotent: the
// routes of one IR route's matches share their action.
func grpcHashPolicies(in []*routev3.RouteAction_HashPolicy) []*routev3.RouteAction_HashPolicy {
	var out []*routev3.RouteAction_HashPolicy
	for _, h := range in {
		switch {
		case h.GetHeader() != nil, h.GetFilterState() != nil:
			out = append(out, h)
		case h.GetConnectionProperties().GetSourceIp():
			out = append(out, &routev3.RouteAction_HashPolicy{PolicySpecifier: &routev3.RouteAction_HashPolicy_FilterState_{
				FilterState: &routev3.RouteAction_HashPolicy_FilterState{Key: "io.grpc.channel_id"}}})
		}
	}
	return out
}

// grpcUpstreamTLS is a gRPC cluster's transport socket: gRPC takes one
// per cluster, so mTLS as soon as any endpoint is meshed, else none
// (plaintext). It reads the port's endpoints (EndpointChange).
func grpcUpstreamTLS(port *ir.Port) *corev3.TransportSocket {
	sans := meshedIdentities(port)
	if len(sans) == 0 {
		return nil
	}
	return transportSocket("envoy.transport_sockets.tls", &tlsv3.UpstreamTlsContext{CommonTlsContext: grpcTLS(sans)})
}

func meshedIdentities(port *ir.Port) []string {
	seen := map[string]bool{}
	var out []string
	for _, e := range port.Endpoints {
		if e.Meshed && e.Identity != "" && !seen[e.Identity] {
			seen[e.Identity] = true
			out = append(out, e.Identity)
		}
	}
	return out
}

// grpcTLS names the bootstrap's certificate provider for both the
// workload's certificate and the roots; clients also check the peer's
// SPIFFE ID (servers leave that to RBAC: gRPC rejects SAN matchers there).
func grpcTLS(sans []string) *tlsv3.CommonTlsContext {
	vc := &tlsv3.CertificateValidationContext{
		CaCertificateProviderInstance: &tlsv3.CertificateProviderPluginInstance{InstanceName: dataplane.GRPCCertProvider, CertificateName: "ROOTCA"},
	}
	for _, s := range sans {
		vc.MatchSubjectAltNames = append(vc.MatchSubjectAltNames, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}})
	}
	return &tlsv3.CommonTlsContext{
		TlsCertificateProviderInstance: &tlsv3.CertificateProviderPluginInstance{InstanceName: dataplane.GRPCCertProvider, CertificateName: "DEFAULT"},
		ValidationContextType:          &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: vc},
	}
}

// grpcServerListener is the listener an xDS-enabled gRPC server asks for:
// named by the template, with its serving address, one filter chain (gRPC
// accepts no listener filters and matches no ports or ALPN), mutual TLS
// always (gRPC cannot tell mTLS from plaintext on one port, so proxyless
// servers are Strict), and AuthPolicy as RBAC.
func (v *view) grpcServerListener(ip string, in inboundPort) *listenerv3.Listener {
	addr := strings.Trim(ip, "[]")
	name := fmt.Sprintf("%s%s:%d", dataplane.GRPCServerListenerPrefix, ip, in.port)
	filters := v.grpcRBAC()
	filters = append(filters, routerFilter())
	h := &hcmv3.HttpConnectionManager{
		StatPrefix: fmt.Sprintf("inbound_%d", in.port),
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: fmt.Sprintf("inbound|%d", in.port),
			VirtualHosts: []*routev3.VirtualHost{{
				Name: "inbound", Domains: []string{"*"},
				Routes: []*routev3.Route{{
					Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routev3.Route_NonForwardingAction{NonForwardingAction: &routev3.NonForwardingAction{}},
				}},
			}},
		}},
		HttpFilters: filters,
	}
	return &listenerv3.Listener{
		Name:    name,
		Address: socketAddress(addr, uint32(in.port)),
		FilterChains: []*listenerv3.FilterChain{{
			Name: fmt.Sprintf("inbound|mtls|%d", in.port),
			TransportSocket: transportSocket("envoy.transport_sockets.tls", &tlsv3.DownstreamTlsContext{
				RequireClientCertificate: wrapperspb.Bool(true),
				CommonTlsContext:         grpcTLS(nil),
			}),
			Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(h)}}},
		}},
	}
}

// grpcRBAC is httpRBAC for gRPC servers, which do not evaluate shadow
// rules: dry-run policies are left out (and so do nothing, as intended).
func (v *view) grpcRBAC() []*hcmv3.HttpFilter {
	s := v.rbacPolicies(true)
	var out []*hcmv3.HttpFilter
	if len(s.deny) > 0 {
		out = append(out, &hcmv3.HttpFilter{Name: "envoy.filters.http.rbac.deny", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(
			&rbachttpv3.RBAC{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: s.deny}})}})
	}
	if v.hasAllow(false) {
		out = append(out, &hcmv3.HttpFilter{Name: "envoy.filters.http.rbac.allow", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(
			&rbachttpv3.RBAC{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: s.allow}})}})
	}
	return out
}
