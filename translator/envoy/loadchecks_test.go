package envoy

import (
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator/ir"
)

// TestLoadChecks feeds ValidateResource configurations that pass
// protoc-gen-validate but that Envoy refuses when it loads them (each
// check cites the Envoy function in loadchecks.go), and the good variant
// of each, which must pass.
func TestLoadChecks(t *testing.T) {
	v := &view{mesh: &ir.Mesh{}}
	tcp := func(name string, m *listenerv3.FilterChainMatch) *listenerv3.FilterChain {
		return &listenerv3.FilterChain{Name: name, FilterChainMatch: m, Filters: []*listenerv3.Filter{v.tcpProxy(name, []ir.Backend{{Weight: 1}}, dataplane.BlackHoleCluster)}}
	}
	listener := func(filters []*listenerv3.ListenerFilter, chains ...*listenerv3.FilterChain) *listenerv3.Listener {
		return &listenerv3.Listener{Name: "l", Address: socketAddress("0.0.0.0", 15006), ListenerFilters: filters, FilterChains: chains}
	}
	bound := func(bind bool, l *listenerv3.Listener) *listenerv3.Listener {
		l.BindToPort = wrapperspb.Bool(bind)
		return l
	}
	tlsInspector := []*listenerv3.ListenerFilter{listenerFilter("envoy.filters.listener.tls_inspector", &tlsinspectorv3.TlsInspector{})}
	port := func(p uint32) *wrapperspb.UInt32Value { return wrapperspb.UInt32(p) }
	cidr := func(a string, n uint32) *corev3.CidrRange {
		return &corev3.CidrRange{AddressPrefix: a, PrefixLen: wrapperspb.UInt32(n)}
	}
	netRBAC := func(perm *rbacv3.Permission) *listenerv3.Filter {
		return &listenerv3.Filter{Name: "envoy.filters.network.rbac", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(&rbacnetv3.RBAC{
			StatPrefix: "x",
			Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{"p": {
				Permissions: []*rbacv3.Permission{perm},
				Principals:  []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}},
			}}},
		})}}
	}
	withFilters := func(fc *listenerv3.FilterChain, f ...*listenerv3.Filter) *listenerv3.FilterChain {
		fc.Filters = append(f, fc.Filters...)
		return fc
	}
	downstreamTLS := func(vc bool) *listenerv3.FilterChain {
		ctx := &tlsv3.DownstreamTlsContext{RequireClientCertificate: wrapperspb.Bool(true), CommonTlsContext: &tlsv3.CommonTlsContext{}}
		if vc {
			ctx.CommonTlsContext.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
				ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: dataplane.TrustBundleSecret, SdsConfig: adsConfig()},
			}
		}
		fc := tcp("tls", &listenerv3.FilterChainMatch{TransportProtocol: "tls"})
		fc.TransportSocket = transportSocket("envoy.transport_sockets.tls", ctx)
		return fc
	}
	origDst := func(mod func(*clusterv3.Cluster)) *clusterv3.Cluster {
		c := &clusterv3.Cluster{Name: "c", ConnectTimeout: durationpb.New(time.Second),
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}, LbPolicy: clusterv3.Cluster_CLUSTER_PROVIDED}
		if mod != nil {
			mod(c)
		}
		return c
	}
	routes := func(vhs ...*routev3.VirtualHost) *routev3.RouteConfiguration {
		return &routev3.RouteConfiguration{Name: "r", VirtualHosts: vhs}
	}
	vhost := func(name string, domains ...string) *routev3.VirtualHost {
		return &routev3.VirtualHost{Name: name, Domains: domains}
	}
	retry := func(base, max time.Duration) *routev3.VirtualHost {
		vh := vhost("retry", "*")
		vh.RetryPolicy = &routev3.RetryPolicy{RetryBackOff: &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(base), MaxInterval: durationpb.New(max)}}
		return vh
	}

	for _, tc := range []struct {
		name string
		bad  proto.Message
		want string
		good proto.Message
	}{
		{"two filter chains with the same match",
			listener(nil, tcp("a", &listenerv3.FilterChainMatch{DestinationPort: port(80)}), tcp("b", &listenerv3.FilterChainMatch{DestinationPort: port(80)})),
			"same match",
			listener(nil, tcp("a", &listenerv3.FilterChainMatch{DestinationPort: port(80)}), tcp("b", &listenerv3.FilterChainMatch{DestinationPort: port(81)}))},
		{"chains that share one of their prefix ranges (10.0.0.1/8 is 10.0.0.0/8)",
			listener(nil, tcp("a", &listenerv3.FilterChainMatch{PrefixRanges: []*corev3.CidrRange{cidr("10.0.0.0", 8), cidr("10.96.0.1", 32)}}),
				tcp("b", &listenerv3.FilterChainMatch{PrefixRanges: []*corev3.CidrRange{cidr("10.0.0.1", 8)}})),
			"same match",
			listener(nil, tcp("a", &listenerv3.FilterChainMatch{PrefixRanges: []*corev3.CidrRange{cidr("10.0.0.0", 8)}}),
				tcp("b", &listenerv3.FilterChainMatch{PrefixRanges: []*corev3.CidrRange{cidr("10.0.0.0", 16)}}))},
		{"transport protocol tls without tls_inspector",
			listener(nil, tcp("tls", &listenerv3.FilterChainMatch{TransportProtocol: "tls"})),
			"no tls_inspector",
			listener(tlsInspector, tcp("tls", &listenerv3.FilterChainMatch{TransportProtocol: "tls"}))},
		{"ALPN without any inspector",
			listener(nil, tcp("alpn", &listenerv3.FilterChainMatch{ApplicationProtocols: []string{"h2c"}})),
			"never match",
			listener(tlsInspector, tcp("alpn", &listenerv3.FilterChainMatch{ApplicationProtocols: []string{"weft"}}))},
		// A listener that only takes hand-offs (bind_to_port false) sees
		// what the accepting listener's inspectors detected
		// (docs/design/199); one that binds its own socket does not.
		{"ALPN without any inspector on a listener that binds",
			bound(true, listener(nil, tcp("alpn", &listenerv3.FilterChainMatch{ApplicationProtocols: []string{"h2c"}}))),
			"never match",
			bound(false, listener(nil, tcp("alpn", &listenerv3.FilterChainMatch{ApplicationProtocols: []string{"h2c"}})))},
		{"require_client_certificate without a validation context",
			listener(tlsInspector, downstreamTLS(false)),
			"without a validation context",
			listener(tlsInspector, downstreamTLS(true))},
		{"network RBAC on a header",
			listener(nil, withFilters(tcp("rbac", nil), netRBAC(&rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: exactHeader(":method", "GET")}}))),
			"headers or paths",
			listener(nil, withFilters(tcp("rbac", nil), netRBAC(&rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 80}})))},
		{"network RBAC on a path, nested",
			listener(nil, withFilters(tcp("rbac", nil), netRBAC(anyOf([]*rbacv3.Permission{
				{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 80}},
				{Rule: &rbacv3.Permission_NotRule{NotRule: urlPath(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "/a"}})}},
			})))),
			"headers or paths", nil},
		{"ORIGINAL_DST with ROUND_ROBIN",
			origDst(func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_ROUND_ROBIN }),
			"only CLUSTER_PROVIDED", origDst(nil)},
		{"ORIGINAL_DST with hosts",
			origDst(func(c *clusterv3.Cluster) { c.LoadAssignment = staticCluster("c", "10.0.0.1", 80).LoadAssignment }),
			"takes its hosts from connections", nil},
		{"CLUSTER_PROVIDED on a STATIC cluster",
			func() *clusterv3.Cluster {
				c := staticCluster("c", "10.0.0.1", 80)
				c.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED
				return c
			}(),
			"only valid for ORIGINAL_DST", staticCluster("c", "10.0.0.1", 80)},
		{"EDS without eds_config",
			&clusterv3.Cluster{Name: "c", ConnectTimeout: durationpb.New(time.Second), ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}},
			"without eds_cluster_config",
			&clusterv3.Cluster{Name: "c", ConnectTimeout: durationpb.New(time.Second), ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
				EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsConfig()}}},
		{"STATIC with a host name",
			staticCluster("c", "collector.observability", 4317),
			"not an IP address", staticCluster("c", "::1", 4317)},
		{"two extra source addresses",
			origDst(func(c *clusterv3.Cluster) {
				c.UpstreamBindConfig = passthroughBind(true, true)
				c.UpstreamBindConfig.ExtraSourceAddresses = append(c.UpstreamBindConfig.ExtraSourceAddresses, c.UpstreamBindConfig.ExtraSourceAddresses[0])
			}),
			"more than one extra source",
			origDst(func(c *clusterv3.Cluster) { c.UpstreamBindConfig = passthroughBind(true, true) })},
		{"an extra source address of the same IP version",
			origDst(func(c *clusterv3.Cluster) {
				c.UpstreamBindConfig = passthroughBind(true, false)
				c.UpstreamBindConfig.ExtraSourceAddresses = []*corev3.ExtraSourceAddress{{Address: socketAddress("127.0.0.7", 0).GetSocketAddress()}}
			}),
			"same IP version", nil},
		{"a domain in two virtual hosts, differing in case",
			routes(vhost("a", "web.shop", "web.shop:80"), vhost("b", "Web.Shop")),
			"must be unique",
			routes(vhost("a", "web.shop", "web.shop:80"), vhost("b", "api.shop"))},
		{"two wildcard virtual hosts",
			routes(vhost("a", "*"), vhost("b", "*")),
			"only one is permitted",
			routes(vhost("a", "*"), vhost("b", "*.shop"))},
		{"retry max_interval below base_interval",
			routes(retry(time.Second, 100*time.Millisecond)),
			"below base_interval",
			routes(retry(100*time.Millisecond, time.Second))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := ValidateResource(tc.bad); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ValidateResource(bad) = %v, want an error containing %q", err, tc.want)
			}
			if tc.good != nil {
				if err := ValidateResource(tc.good); err != nil {
					t.Errorf("ValidateResource(good) = %v", err)
				}
			}
		})
	}
}

// TestValidateBootstrap: a management server reached through an
// Envoy-managed gRPC client needs a static, non-EDS cluster.
func TestValidateBootstrap(t *testing.T) {
	ads := func(cluster string) *bootstrapv3.Bootstrap {
		return &bootstrapv3.Bootstrap{DynamicResources: &bootstrapv3.Bootstrap_DynamicResources{
			AdsConfig: &corev3.ApiConfigSource{ApiType: corev3.ApiConfigSource_DELTA_GRPC, GrpcServices: []*corev3.GrpcService{{
				TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: cluster}},
			}}},
			CdsConfig: adsConfig(), LdsConfig: adsConfig(),
		}}
	}
	b := ads("xds")
	if err := ValidateBootstrap(b); err == nil || !strings.Contains(err.Error(), `cluster "xds" must be defined statically`) {
		t.Errorf("ADS cluster not in static_resources: %v", err)
	}
	b.StaticResources = &bootstrapv3.Bootstrap_StaticResources{Clusters: []*clusterv3.Cluster{{Name: "xds", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}}}}
	if err := ValidateBootstrap(b); err == nil {
		t.Error("an EDS ADS cluster passed")
	}
	b.StaticResources.Clusters[0] = staticCluster("xds", "10.0.0.1", 15012)
	if err := ValidateBootstrap(b); err != nil {
		t.Errorf("a static ADS cluster: %v", err)
	}
}
