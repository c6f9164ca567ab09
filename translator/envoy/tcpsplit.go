package envoy

import (
	"fmt"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/translator/ir"
)

// A TCP TrafficSplit (issue 12 m, docs/design/058). Its weights used to be
// the tcp_proxy's weighted_clusters, in the Service's filter chain: a
// weight change changed the chain, and Envoy drains every connection of a
// changed chain. Now the chain names one EDS cluster per split, and its
// ClusterLoadAssignment holds one locality per backend — the backend's
// endpoints, with the split weight as the locality's weight — under
// locality-weighted load balancing: Envoy picks a locality by weight (times
// its healthy share), then an endpoint in it
// (LoadBalancerBase::chooseHostSet / HostSetImpl::chooseLocality in
// source/common/upstream). A weight or endpoint change is an EDS update;
// the chain and the cluster keep their bytes.

// splitBackendKey, in an endpoint's transport socket match metadata, names
// the backend (its cluster) the endpoint belongs to, so each backend's
// endpoints are verified against that backend's own identities.
const splitBackendKey = "weft.dev/backend"

// IsSplitCluster says whether a cluster (or assignment) name is a TCP
// split's. Its assignment reads every backend's endpoints and the split's
// weights, which an EndpointChange of one Service does not re-derive: a
// proxy that holds one is built again on an endpoint change of a Service
// it depends on (xds endpointPatch.apply).
func IsSplitCluster(name string) bool { return strings.Contains(name, splitClusterMark) }

const splitClusterMark = "|tcp-split|"

func isTCPSplit(port *ir.Port) bool { return len(port.TCPBackends) > 1 }

// splitClusterName is stable for the root Service's port: the split's
// backends and weights are not in it. A dual-stack root has one split per
// family of its cluster IPs (docs/design/064): the IPv6 one is
// outbound|<port>|tcp-split|ipv6|<hostname>.
func splitClusterName(svc *ir.Service, port int32, f family) string {
	if contentFamily(svc, f) == fam6 {
		return fmt.Sprintf("outbound|%d%sipv6|%s", port, splitClusterMark, svc.Key.Hostname())
	}
	return fmt.Sprintf("outbound|%d%s%s", port, splitClusterMark, svc.Key.Hostname())
}

// splitCluster is the split's cluster: EDS, locality-weighted, and a
// transport socket match per meshed backend (mesh mTLS naming that
// backend's identities), plaintext otherwise.
func (v *view) splitCluster(svc *ir.Service, port *ir.Port, f family) *clusterv3.Cluster {
	// The root port's BackendTrafficPolicy, but for consistent hashing:
	// the split's weights need locality-weighted balancing, which Envoy
	// has for round robin and least request only.
	b := port.BackendPolicy()
	c := &clusterv3.Cluster{
		Name:                      splitClusterName(svc, port.Port, f),
		ClusterDiscoveryType:      &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:          &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsConfig()},
		ConnectTimeout:            durationpb.New(b.ConnectTimeout.D()),
		CircuitBreakers:           circuitBreakers(b, nil),
		OutlierDetection:          outlierDetection(b),
		UpstreamConnectionOptions: upstreamConnectionOptions(b),
		CommonLbConfig: &clusterv3.Cluster_CommonLbConfig{LocalityConfigSpecifier: &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig_{
			LocalityWeightedLbConfig: &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig{}}},
	}
	if b.LB == ir.LBLeastRequest {
		c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
	}
	for _, b := range port.TCPBackends {
		bp := v.backendPort(b)
		if bp == nil {
			continue
		}
		sans := meshedIdentities(bp)
		if len(sans) == 0 {
			continue
		}
		var m []*tlsv3.SubjectAltNameMatcher
		for _, s := range sans {
			m = append(m, &tlsv3.SubjectAltNameMatcher{SanType: tlsv3.SubjectAltNameMatcher_URI,
				Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}})
		}
		name := ir.ClusterName(b.Service, b.Port)
		c.TransportSocketMatches = append(c.TransportSocketMatches, &clusterv3.Cluster_TransportSocketMatch{
			Name: "mtls " + name,
			Match: &structpb.Struct{Fields: map[string]*structpb.Value{
				tlsMatchKey: structpb.NewStringValue("mtls"), splitBackendKey: structpb.NewStringValue(name)}},
			TransportSocket: transportSocket("envoy.transport_sockets.tls", &tlsv3.UpstreamTlsContext{CommonTlsContext: commonTLS(m, bp.Protocol)}),
		})
	}
	if len(c.TransportSocketMatches) > 0 {
		c.TransportSocketMatches = append(c.TransportSocketMatches, &clusterv3.Cluster_TransportSocketMatch{
			Name: "plaintext", Match: &structpb.Struct{},
			TransportSocket: transportSocket("envoy.transport_sockets.raw_buffer", rawBuffer()),
		})
	}
	return c
}

func (v *view) backendPort(b ir.Backend) *ir.Port { return backendPort(v.mesh, b) }

func backendPort(mesh *ir.Mesh, b ir.Backend) *ir.Port {
	if b.Unresolved {
		return nil
	}
	bs := mesh.Service(b.Service)
	if bs == nil || bs.Headless {
		return nil
	}
	return bs.Port(b.Port)
}

// splitLoadAssignment: one locality per backend of positive weight, its
// sub_zone the backend's cluster name, its weight the split weight, its
// endpoints the backend's (as loadAssignment picks them: ready, else
// serving-but-terminating). A backend without endpoints, or unresolved,
// has no locality: its share goes to the others (Envoy scales locality
// weights by their healthy share), where weighted_clusters sent it to a
// cluster without endpoints and failed the connection. Only the endpoints
// of f, the family of the root's cluster IP the chain matched, as
// kube-proxy would carry a connection to it (famAny: all).
func (v *view) splitLoadAssignment(svc *ir.Service, port *ir.Port, f family) *endpointv3.ClusterLoadAssignment {
	out := &endpointv3.ClusterLoadAssignment{ClusterName: splitClusterName(svc, port.Port, f)}
	for _, b := range port.TCPBackends {
		bp := v.backendPort(b)
		if bp == nil || b.Weight == 0 {
			continue
		}
		name := ir.ClusterName(b.Service, b.Port)
		loc := &endpointv3.LocalityLbEndpoints{Locality: &corev3.Locality{SubZone: name}, LoadBalancingWeight: wrapperspb.UInt32(b.Weight)}
		bs := v.mesh.Service(b.Service)
		for _, z := range portLoadAssignment(familyClusterName(bs, b.Port, f), bp, contentFamily(bs, f)).GetEndpoints() {
			for _, e := range z.GetLbEndpoints() {
				if !f.keep(e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress()) {
					continue
				}
				lbe := &endpointv3.LbEndpoint{HostIdentifier: e.GetHostIdentifier(), HealthStatus: e.GetHealthStatus()}
				if endpointMeshed(e) {
					lbe.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
						"envoy.transport_socket_match": {Fields: map[string]*structpb.Value{
							tlsMatchKey: structpb.NewStringValue("mtls"), splitBackendKey: structpb.NewStringValue(name)}},
					}}
				}
				loc.LbEndpoints = append(loc.LbEndpoints, lbe)
			}
		}
		if len(loc.LbEndpoints) > 0 {
			out.Endpoints = append(out.Endpoints, loc)
		}
	}
	return out
}

// tcpBackendSettings adds to a TCP port's tcp_proxy what of the
// BackendTrafficPolicy of the port it forwards to lives there rather than
// in the cluster: the idle timeout (when not Envoy's default of 1h), and,
// for a consistent-hash cluster keyed by source IP, the hash policy
// (tcp_proxy hashes only the source address; a header or cookie key means
// nothing to a TCP connection, which then gets a random endpoint). A
// split's cluster balances by locality weight, never by hash (hash false).
func tcpBackendSettings(t *tcpproxyv3.TcpProxy, port *ir.Port, hash bool) *tcpproxyv3.TcpProxy {
	if port == nil || port.Backend == nil {
		return t
	}
	b := port.Backend
	if b.IdleTimeout.D() != envoyIdleTimeout {
		t.IdleTimeout = durationpb.New(b.IdleTimeout.D())
	}
	if hash && b.LB.ConsistentHash() && b.Hash != nil && b.Hash.SourceIP {
		t.HashPolicy = []*typev3.HashPolicy{{PolicySpecifier: &typev3.HashPolicy_SourceIp_{SourceIp: &typev3.HashPolicy_SourceIp{}}}}
	}
	return t
}
