package envoy

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator/ir"
)

// connectTimeout bounds the connections of the sidecar's own clusters
// (passthrough, admin, tracing, inbound). A Service's cluster takes its
// BackendTrafficPolicy's (ir.DefaultBackend: the same 5s).
const connectTimeout = 5 * time.Second

// envoyIdleTimeout is Envoy's default idle timeout of upstream HTTP
// connections (HttpProtocolOptions.common_http_protocol_options) and of
// tcp_proxy sessions: a policy's idle timeout equal to it is not written.
const envoyIdleTimeout = time.Hour

// tlsMatchKey marks endpoints without a sidecar (value plaintextEndpoint):
// a cluster with meshed endpoints originates mutual TLS to every endpoint
// that does not say otherwise (upstreamTLS). Marking the few unmeshed
// endpoints rather than every meshed one keeps a meshed endpoint's
// assignment entry at its address (issue 14: the mark was 60 of a
// meshed endpoint's ~86 bytes, in every proxy and every EDS push), and an
// endpoint that lost its mark fails closed, to mTLS, not open to
// plaintext (docs/design/192).
const tlsMatchKey = "weft.dev/tls"

// plaintextEndpoint is tlsMatchKey's value on an endpoint without a
// sidecar.
const plaintextEndpoint = "plaintext"

// endpointMeshed says whether an endpoint of loadAssignment has a sidecar.
func endpointMeshed(e *endpointv3.LbEndpoint) bool {
	return e.GetMetadata().GetFilterMetadata()["envoy.transport_socket_match"].GetFields()[tlsMatchKey].GetStringValue() != plaintextEndpoint
}

// sidecarUpstreams are a sidecar's clusters (and endpoints) of what it
// reaches: they read the view's outbound list and the model only, so
// proxies with the same list share them (Shared).
func (v *view) sidecarUpstreams() ([]*clusterv3.Cluster, []*endpointv3.ClusterLoadAssignment) {
	budgets := v.retryBudgets()
	var clusters []*clusterv3.Cluster
	var cla []*endpointv3.ClusterLoadAssignment
	for _, up := range v.upstreams() {
		svc, port := up.svc, up.port
		if svc.Headless {
			c := v.upstreamCluster(ir.ClusterName(svc.Key, port.Port), svc, port, budgets)
			// Clients of a headless Service dial pod addresses themselves:
			// forward to the address they chose. The per-endpoint chains
			// and clusters (headlessChains) take calls to known pods, with
			// mesh mTLS; this cluster takes what an HTTP route sends by
			// Host to an address no endpoint has (yet), in plaintext.
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}
			c.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED
			c.OutlierDetection = nil
			seenEP := map[string]bool{}
			for _, e := range port.Endpoints {
				if n := headlessClusterName(svc, e); !seenEP[n] {
					seenEP[n] = true
					clusters = append(clusters, headlessPolicy(headlessCluster(n, e), port.Backend))
				}
			}
			clusters = append(clusters, c)
			continue
		}
		// A dual-stack Service has a cluster per family the proxy's
		// chains reach it over (docs/design/064), any other one cluster.
		for _, f := range up.fams {
			name := familyClusterName(svc, port.Port, f)
			c := v.upstreamCluster(name, svc, port, budgets)
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
			c.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsConfig()}
			cla = append(cla, v.portAssignment(name, port, contentFamily(svc, f)))
			c.TransportSocketMatches = upstreamTLS(port)
			clusters = append(clusters, c)
		}
	}
	for _, svc := range v.outbound {
		if svc.Headless {
			continue // headless ports get per-endpoint chains, no split
		}
		for _, port := range svc.Ports {
			if !port.Protocol.IsHTTP() && isTCPSplit(port) {
				for _, f := range v.chainFamilies(svc) {
					clusters = append(clusters, v.splitCluster(svc, port, f))
					cla = append(cla, v.splitLoadAssignment(svc, port, f))
				}
			}
		}
	}
	return clusters, cla
}

// upstreamCluster is what every cluster of a Service port has: what its
// BackendTrafficPolicy says (ir.DefaultBackend without one) — connect
// timeout, circuit breakers (with the tightest retry budget of the routes
// that send to the port, unless the policy caps retries), outlier
// detection, load balancing, idle timeout and TCP keepalive — and the
// port's HTTP options.
func (v *view) upstreamCluster(name string, svc *ir.Service, port *ir.Port, budgets map[string]*ir.Retry) *clusterv3.Cluster {
	b := port.BackendPolicy()
	c := &clusterv3.Cluster{
		Name:                          name,
		ConnectTimeout:                durationpb.New(b.ConnectTimeout.D()),
		CircuitBreakers:               circuitBreakers(b, budgets[ir.ClusterName(svc.Key, port.Port)]),
		OutlierDetection:              outlierDetection(b),
		TypedExtensionProtocolOptions: upstreamHTTPOptions(port.Protocol, b),
		UpstreamConnectionOptions:     upstreamConnectionOptions(b),
	}
	c.LbPolicy = lbPolicy(b.LB)
	return c
}

// lbPolicy is Envoy's (and gRPC's) algorithm of a policy's. Envoy's
// defaults are kept for each: ring hash with xxHash and rings of 1,024 to
// 8M entries (gRPC caps them at 4,096), Maglev's table of 65,537, least
// request choosing the less busy of 2.
func lbPolicy(a ir.LBAlgorithm) clusterv3.Cluster_LbPolicy {
	switch a {
	case ir.LBLeastRequest:
		return clusterv3.Cluster_LEAST_REQUEST
	case ir.LBRingHash:
		return clusterv3.Cluster_RING_HASH
	case ir.LBMaglev:
		return clusterv3.Cluster_MAGLEV
	}
	return clusterv3.Cluster_ROUND_ROBIN
}

// upstreamConnectionOptions turns on TCP keepalive when the policy asks;
// zero fields are left to the kernel.
func upstreamConnectionOptions(b *ir.BackendPolicy) *clusterv3.UpstreamConnectionOptions {
	k := b.TCPKeepalive
	if k == nil {
		return nil
	}
	ka := &corev3.TcpKeepalive{}
	if k.Probes > 0 {
		ka.KeepaliveProbes = wrapperspb.UInt32(k.Probes)
	}
	if k.Time > 0 {
		ka.KeepaliveTime = wrapperspb.UInt32(uint32(k.Time.D() / time.Second))
	}
	if k.Interval > 0 {
		ka.KeepaliveInterval = wrapperspb.UInt32(uint32(k.Interval.D() / time.Second))
	}
	return &clusterv3.UpstreamConnectionOptions{TcpKeepalive: ka}
}

type upstream struct {
	svc  *ir.Service
	port *ir.Port
	// fams: the content families of its clusters (contentFamily), in
	// order: [famAny] for a single-stack Service; for a dual-stack one,
	// those of the proxy's chains that reach it, as the Service itself or
	// as a backend.
	fams []family
}

// upstreams are the Service ports the proxy needs clusters for: every port
// of the Services it can see, and the backends their routes send to (a
// TrafficSplit's backends need no export of their own: the root's is what
// the client relies on).
func (v *view) upstreams() []upstream {
	seen := map[string]int{}
	var out []upstream
	add := func(svc *ir.Service, port *ir.Port, f family) {
		if svc == nil || port == nil {
			return
		}
		if f == famAny {
			f = v.preferred() // routed by Host: no cluster IP chose
		}
		f = contentFamily(svc, f)
		name := ir.ClusterName(svc.Key, port.Port)
		i, ok := seen[name]
		if !ok {
			seen[name] = len(out)
			out = append(out, upstream{svc, port, []family{f}})
			return
		}
		if !slices.Contains(out[i].fams, f) {
			out[i].fams = append(out[i].fams, f)
			slices.Sort(out[i].fams)
		}
	}
	for _, svc := range v.outbound {
		for _, port := range svc.Ports {
			for _, f := range v.chainFamilies(svc) {
				add(svc, port, f)
			}
		}
	}
	for _, svc := range v.outbound {
		for _, port := range svc.Ports {
			backends := append([]ir.Backend(nil), port.TCPBackends...)
			for _, r := range v.routesOf(port) {
				backends = append(backends, r.Targets()...)
			}
			for _, b := range backends {
				if b.Unresolved {
					continue
				}
				if bs := v.mesh.Service(b.Service); bs != nil {
					for _, f := range v.chainFamilies(svc) {
						add(bs, bs.Port(b.Port), f)
					}
				}
			}
		}
	}
	return out
}

// retryBudgets finds, for each cluster, the tightest retry budget among the
// routes that send to it.
func (v *view) retryBudgets() map[string]*ir.Retry {
	out := map[string]*ir.Retry{}
	for _, svc := range v.outbound {
		serviceRetryBudgets(svc, v.proxy.Namespace, out)
	}
	return out
}

// serviceRetryBudgets adds to out the budgets of svc's routes for callers
// in namespace ns: for each cluster they send to, the first of the
// tightest. (The first tightest over several Services is the first
// tightest of each one's: RouteChange compares one Service's alone.)
func serviceRetryBudgets(svc *ir.Service, ns string, out map[string]*ir.Retry) {
	for _, port := range svc.Ports {
		for _, r := range port.RoutesFor(ns) {
			retry := r.Retry
			if retry == nil {
				retry = port.Retry
			}
			if retry == nil || retry.Attempts == 0 {
				// attempts 0 turns retries off: its budget limits
				// nothing, and must not loosen or tighten the budget
				// of a route that does retry to the same cluster.
				continue
			}
			for _, b := range r.Backends {
				name := ir.ClusterName(b.Service, b.Port)
				if cur := out[name]; cur == nil || retry.BudgetPercent < cur.BudgetPercent {
					out[name] = retry
				}
			}
		}
	}
}

// circuitBreakers are the policy's thresholds. Retries are capped by the
// policy's maxRetries when it sets one, else by the retry budget of the
// routes that send to the cluster (retry; Envoy applies a budget instead
// of max_retries when both are set), else by Envoy's default of 3.
func circuitBreakers(b *ir.BackendPolicy, retry *ir.Retry) *clusterv3.CircuitBreakers {
	t := &clusterv3.CircuitBreakers_Thresholds{
		MaxConnections:     wrapperspb.UInt32(b.MaxConnections),
		MaxPendingRequests: wrapperspb.UInt32(b.MaxPendingRequests),
		MaxRequests:        wrapperspb.UInt32(b.MaxRequests),
	}
	switch {
	case b.MaxRetries != nil:
		t.MaxRetries = wrapperspb.UInt32(*b.MaxRetries)
	case retry != nil:
		t.RetryBudget = &clusterv3.CircuitBreakers_Thresholds_RetryBudget{
			BudgetPercent:       &typev3.Percent{Value: retry.BudgetPercent},
			MinRetryConcurrency: wrapperspb.UInt32(retry.BudgetMinConcurrency),
		}
	}
	return &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{t}}
}

// outlierDetection is the policy's ejection. Envoy enforces consecutive
// 5xx by default (enforcing_consecutive_5xx 100) and consecutive gateway
// failures and failure percentage not at all (their enforcing_* default
// to 0), so a detector the policy turns off or on sets its enforcing
// percentage. Success-rate ejection keeps Envoy's (and gRPC's) defaults.
func outlierDetection(b *ir.BackendPolicy) *clusterv3.OutlierDetection {
	od := &clusterv3.OutlierDetection{
		Interval:           durationpb.New(b.Interval.D()),
		BaseEjectionTime:   durationpb.New(b.BaseEjectionTime.D()),
		MaxEjectionPercent: wrapperspb.UInt32(b.MaxEjectionPercent),
	}
	if b.Consecutive5xx > 0 {
		od.Consecutive_5Xx = wrapperspb.UInt32(b.Consecutive5xx)
	} else {
		od.EnforcingConsecutive_5Xx = wrapperspb.UInt32(0)
	}
	if n := b.ConsecutiveGatewayErrors; n > 0 {
		od.ConsecutiveGatewayFailure = wrapperspb.UInt32(n)
		od.EnforcingConsecutiveGatewayFailure = wrapperspb.UInt32(100)
	}
	if fp := b.FailurePercentage; fp != nil {
		od.FailurePercentageThreshold = wrapperspb.UInt32(fp.Threshold)
		od.EnforcingFailurePercentage = wrapperspb.UInt32(100)
		od.FailurePercentageMinimumHosts = wrapperspb.UInt32(fp.MinimumHosts)
		od.FailurePercentageRequestVolume = wrapperspb.UInt32(fp.RequestVolume)
	}
	return od
}

// upstreamTLS originates mutual TLS to meshed endpoints, verifying that the
// peer holds one of the identities that serve the Service, and plaintext to
// endpoints without a sidecar (marked by loadAssignment; Envoy takes the
// first match whose fields the endpoint's metadata holds, and an empty
// match holds for every endpoint). It reads the port's endpoints (their
// identities), so an endpoint change can alter it (EndpointChange).
func upstreamTLS(port *ir.Port) []*clusterv3.Cluster_TransportSocketMatch {
	var sans []*tlsv3.SubjectAltNameMatcher
	seen := map[string]bool{}
	for _, e := range port.Endpoints {
		if e.Identity != "" && e.Meshed && !seen[e.Identity] {
			seen[e.Identity] = true
			sans = append(sans, &tlsv3.SubjectAltNameMatcher{
				SanType: tlsv3.SubjectAltNameMatcher_URI,
				Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: e.Identity}},
			})
		}
	}
	if len(sans) == 0 {
		// No meshed endpoint: plaintext, the cluster default.
		return nil
	}
	tls := &tlsv3.UpstreamTlsContext{CommonTlsContext: commonTLS(sans, port.Protocol)}
	return []*clusterv3.Cluster_TransportSocketMatch{
		{
			Name:            "plaintext",
			Match:           &structpb.Struct{Fields: map[string]*structpb.Value{tlsMatchKey: structpb.NewStringValue(plaintextEndpoint)}},
			TransportSocket: transportSocket("envoy.transport_sockets.raw_buffer", rawBuffer()),
		},
		{
			Name:            "mtls",
			Match:           &structpb.Struct{},
			TransportSocket: transportSocket("envoy.transport_sockets.tls", tls),
		},
	}
}

func commonTLS(sans []*tlsv3.SubjectAltNameMatcher, proto ir.Protocol) *tlsv3.CommonTlsContext {
	c := &tlsv3.CommonTlsContext{
		TlsParams:                      &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2},
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: dataplane.WorkloadCertSecret, SdsConfig: adsConfig()}},
		ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
			DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: sans},
			ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: dataplane.TrustBundleSecret, SdsConfig: adsConfig()},
		}},
	}
	// The mesh marker first, so the peer's inbound listener knows this is
	// mesh mTLS; then the application protocol.
	switch proto {
	case ir.ProtocolHTTP2, ir.ProtocolGRPC:
		c.AlpnProtocols = []string{meshALPN, "h2"}
	case ir.ProtocolHTTP:
		c.AlpnProtocols = []string{meshALPN, "http/1.1"}
	default:
		c.AlpnProtocols = []string{meshALPN}
	}
	return c
}

func loadAssignment(cluster string, eps []ir.Endpoint) *endpointv3.ClusterLoadAssignment {
	// One locality per zone: Envoy needs a locality on every endpoint
	// group, and gRPC rejects endpoints without one. Its weight is its
	// number of endpoints: gRPC's weighted_target splits by locality
	// weight first, so equal weights would give a one-endpoint zone as
	// much traffic as a ten-endpoint one (Envoy ignores locality weights
	// unless locality_weighted_lb_config is set).
	byZone := map[string]*endpointv3.LocalityLbEndpoints{}
	var order []string
	// Not-ready endpoints would only be skipped by Envoy; when none is
	// ready, those serving while they terminate take the traffic, as
	// kube-proxy does (issue 12 s), so a rollout drains gracefully.
	anyReady := false
	for _, e := range eps {
		anyReady = anyReady || e.Ready
	}
	for _, e := range eps {
		if !e.Ready && (anyReady || !e.Terminating) {
			continue
		}
		loc := byZone[e.Zone]
		if loc == nil {
			loc = &endpointv3.LocalityLbEndpoints{Locality: &corev3.Locality{Zone: e.Zone}}
			byZone[e.Zone] = loc
			order = append(order, e.Zone)
		}
		lbe := &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socketAddress(e.Address, uint32(e.Port))}},
			HealthStatus:   corev3.HealthStatus_HEALTHY,
		}
		if !e.Meshed {
			lbe.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
				"envoy.transport_socket_match": {Fields: map[string]*structpb.Value{tlsMatchKey: structpb.NewStringValue(plaintextEndpoint)}},
			}}
		}
		loc.LbEndpoints = append(loc.LbEndpoints, lbe)
	}
	out := &endpointv3.ClusterLoadAssignment{ClusterName: cluster}
	sortStrings(order)
	for _, z := range order {
		loc := byZone[z]
		loc.LoadBalancingWeight = wrapperspb.UInt32(uint32(len(loc.LbEndpoints)))
		out.Endpoints = append(out.Endpoints, loc)
	}
	return out
}

// fixedClusters are a sidecar's own: passthrough, black hole, admin,
// tracing, inbound passthrough (by its namespace's mode), one per
// rewritten probe and one local cluster per inbound port.
func (v *view) fixedClusters() []*clusterv3.Cluster {
	out := []*clusterv3.Cluster{
		{
			Name:                 dataplane.PassthroughCluster,
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
			LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
			ConnectTimeout:       durationpb.New(connectTimeout),
			// The HTTP route to an unknown host keeps the caller's HTTP
			// version (12p: h2c and gRPC left as HTTP/1.1); tcp_proxy
			// ignores these options.
			TypedExtensionProtocolOptions: map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": mustAny(followDownstream())},
		},
		{
			Name:                 dataplane.BlackHoleCluster,
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
			ConnectTimeout:       durationpb.New(connectTimeout),
		},
	}
	out = append(out, staticCluster(AdminCluster, "127.0.0.1", dataplane.AdminPort))
	if t := v.mesh.Tracing; t != nil {
		host, port, err := net.SplitHostPort(t.Collector)
		if n, perr := strconv.Atoi(port); err == nil && perr == nil {
			out = append(out, &clusterv3.Cluster{
				Name:                          TracingCluster,
				ClusterDiscoveryType:          &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS},
				ConnectTimeout:                durationpb.New(connectTimeout),
				TypedExtensionProtocolOptions: httpOptions(ir.ProtocolGRPC),
				LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: TracingCluster, Endpoints: []*endpointv3.LocalityLbEndpoints{{
					LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
						Address: socketAddress(host, uint32(n)),
					}}}},
				}}},
			})
		}
	}
	if v.mtls == ir.MTLSPermissive {
		c := v.localCluster(dataplane.InboundPassthroughCluster)
		// HTTP on undeclared ports keeps its version to the application.
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": mustAny(followDownstream())}
		out = append(out, c)
	}
	seenProbe := map[string]bool{}
	for _, p := range v.proxy.AppProbes {
		name := appProbeCluster(p)
		if seenProbe[name] {
			continue
		}
		seenProbe[name] = true
		// The kubelet probes the pod IP, and so does the proxy on its
		// behalf: the readiness listener restores the address the probe
		// came to, and this cluster keeps it with the application's port.
		// An application bound to the pod IP only passes; one bound to
		// localhost only fails, as it would without a mesh.
		c := v.localCluster(name)
		c.LbConfig = &clusterv3.Cluster_OriginalDstLbConfig_{OriginalDstLbConfig: &clusterv3.Cluster_OriginalDstLbConfig{
			UpstreamPortOverride: wrapperspb.UInt32(uint32(p.Port)),
		}}
		if strings.EqualFold(p.Scheme, "HTTPS") {
			// The kubelet does not verify an HTTPS probe's certificate:
			// neither does the proxy on its behalf.
			c.TransportSocket = transportSocket("envoy.transport_sockets.tls", &tlsv3.UpstreamTlsContext{})
		}
		out = append(out, c)
	}
	for _, in := range v.inbound {
		c := v.localCluster(inboundCluster(in.port))
		c.TypedExtensionProtocolOptions = httpOptions(in.protocol)
		out = append(out, c)
	}
	return out
}

// localCluster delivers to the application at the connection's original
// destination — the pod IP and port the caller dialled, as the
// application would have been reached without a mesh — from the inbound
// passthrough source, which weft-init does not capture (or the connection
// would loop back into the sidecar). Not 127.0.0.1: an application bound
// to the pod IP would refuse it, and one bound to localhost only would be
// exposed to the mesh. Istio delivers inbound traffic the same way.
func (v *view) localCluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
		ConnectTimeout:       durationpb.New(connectTimeout),
		UpstreamBindConfig:   passthroughBind(podFamilies(v.proxy.IPs)),
	}
}

// passthroughBind is the inbound passthrough source of each of the pod's
// IP families: 127.0.0.6, ::6 (which weft-init adds to lo), or both, Envoy
// picking the one of the destination's family. ::6 only when the pod has
// IPv6: Envoy refuses IPv6 addresses on a host without IPv6.
func passthroughBind(v4, v6 bool) *corev3.BindConfig {
	if v6 && !v4 {
		return &corev3.BindConfig{SourceAddress: socketAddress(dataplane.InboundPassthroughSourceV6, 0).GetSocketAddress()}
	}
	b := &corev3.BindConfig{SourceAddress: socketAddress(dataplane.InboundPassthroughSource, 0).GetSocketAddress()}
	if v6 {
		b.ExtraSourceAddresses = []*corev3.ExtraSourceAddress{{Address: socketAddress(dataplane.InboundPassthroughSourceV6, 0).GetSocketAddress()}}
	}
	return b
}

// staticCluster reaches one fixed address.
// headlessClusterName names the cluster of one endpoint of a headless
// Service: outbound|<port>|<address>|<hostname> (Istio's format, with the
// address where a subset would be).
func headlessClusterName(svc *ir.Service, e ir.Endpoint) string {
	return fmt.Sprintf("outbound|%d|%s|%s", e.Port, e.Address, svc.Key.Hostname())
}

// headlessCluster reaches one pod of a headless Service: mesh mTLS that
// expects the pod's own identity when it has a sidecar, else plaintext.
func headlessCluster(name string, e ir.Endpoint) *clusterv3.Cluster {
	c := staticCluster(name, e.Address, uint32(e.Port))
	if e.Meshed && e.Identity != "" {
		sans := []*tlsv3.SubjectAltNameMatcher{{
			SanType: tlsv3.SubjectAltNameMatcher_URI,
			Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: e.Identity}},
		}}
		// Carried as TCP: offer the mesh marker only.
		tls := &tlsv3.UpstreamTlsContext{CommonTlsContext: commonTLS(sans, ir.ProtocolTCP)}
		c.TransportSocket = transportSocket("envoy.transport_sockets.tls", tls)
	}
	return c
}

// headlessPolicy gives a headless Service's per-pod cluster what of its
// BackendTrafficPolicy a cluster of one endpoint can apply: the connect
// timeout, keepalive and circuit breakers (which then count per pod).
// Load balancing and outlier detection have one endpoint to choose from;
// the idle timeout would be the per-pod chain's tcp_proxy's, which keeps
// Envoy's (docs/api.md). Without a policy the cluster is left as it was.
func headlessPolicy(c *clusterv3.Cluster, b *ir.BackendPolicy) *clusterv3.Cluster {
	if b == nil {
		return c
	}
	c.ConnectTimeout = durationpb.New(b.ConnectTimeout.D())
	c.CircuitBreakers = circuitBreakers(b, nil)
	c.UpstreamConnectionOptions = upstreamConnectionOptions(b)
	return c
}

func staticCluster(name, ip string, port uint32) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(connectTimeout),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: socketAddress(ip, port),
			}}}},
		}}},
	}
}

// httpOptions says which HTTP a cluster speaks upstream: HTTP/2 for HTTP2
// and gRPC ports (the Service says the server speaks it); for HTTP ports
// the downstream's protocol, so that the mesh does not change what the
// application would have received without it (an h2c or gRPC client keeps
// HTTP/2, an HTTP/1.1 client HTTP/1.1); nil for TCP, where a router never
// uses the cluster.
func httpOptions(p ir.Protocol) map[string]*anypb.Any {
	var o *httpv3.HttpProtocolOptions
	switch p {
	case ir.ProtocolHTTP2, ir.ProtocolGRPC:
		o = &httpv3.HttpProtocolOptions{UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
		}}}
	case ir.ProtocolHTTP:
		o = followDownstream()
	default:
		return nil
	}
	return map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": mustAny(o)}
}

// upstreamHTTPOptions are httpOptions with the policy's idle timeout of
// upstream connections, when it is not Envoy's default.
func upstreamHTTPOptions(p ir.Protocol, b *ir.BackendPolicy) map[string]*anypb.Any {
	if b.IdleTimeout.D() == envoyIdleTimeout {
		return httpOptions(p)
	}
	var o *httpv3.HttpProtocolOptions
	switch p {
	case ir.ProtocolHTTP2, ir.ProtocolGRPC:
		o = &httpv3.HttpProtocolOptions{UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
		}}}
	case ir.ProtocolHTTP:
		o = followDownstream()
	default:
		return nil // a TCP port's idle timeout is its tcp_proxy's
	}
	o.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(b.IdleTimeout.D())}
	return map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": mustAny(o)}
}

// followDownstream: HTTP/1.1 upstream for HTTP/1.1 downstream, HTTP/2 for
// HTTP/2 (Istio's passthroughHttpProtocolOptions).
func followDownstream() *httpv3.HttpProtocolOptions {
	return &httpv3.HttpProtocolOptions{UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_UseDownstreamProtocolConfig{
		UseDownstreamProtocolConfig: &httpv3.HttpProtocolOptions_UseDownstreamHttpConfig{
			HttpProtocolOptions:  &corev3.Http1ProtocolOptions{},
			Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
		},
	}}
}

func inboundCluster(port int32) string { return fmt.Sprintf("inbound|%d||", port) }

// LoadAssignment builds the endpoints of one Service port alone: with
// translator.UpdateEndpoints, an endpoint change costs one Service's work,
// not a proxy's whole configuration. The result equals the one Build gives.
// For a dual-stack Service, that is its IPv4 cluster's.
func LoadAssignment(svc *ir.Service, port *ir.Port) *endpointv3.ClusterLoadAssignment {
	return portLoadAssignment(ir.ClusterName(svc.Key, port.Port), port, contentFamily(svc, fam4))
}
