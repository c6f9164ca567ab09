package dataplane

// The sidecar's ports. weft-init never redirects the proxy's own ports
// inbound (ProxyPorts), so kubelet probes reach 15021 and Prometheus 15090
// directly; the admin port binds localhost only.
const (
	// OutboundPort is the listener that captured outbound TCP reaches.
	OutboundPort = 15001
	// InboundPort is the listener that captured inbound TCP reaches.
	InboundPort = 15006
	// AdminPort is Envoy's admin endpoint, on localhost.
	AdminPort = 15000
	// AgentReadyPort serves `weft agent`'s /ready in proxyless pods.
	AgentReadyPort = 15020
	// ReadinessPort answers /ready once the proxy holds its first
	// configuration, and forwards rewritten application probes.
	ReadinessPort = 15021
	// StatsPort serves Envoy's Prometheus metrics.
	StatsPort = 15090
)

// StatsPortName names StatsPort on the proxy container: Prometheus'
// Kubernetes discovery (a PodMonitor, or a port-name relabeling) and
// `weft stat` find the sidecar's metrics by it.
const StatsPortName = "weft-stats"

// StatsPath is the stats listener's only path: Envoy's Prometheus page.
const StatsPath = "/stats/prometheus"

// ProxyPorts are the sidecar's own listening ports, never redirected
// inbound.
var ProxyPorts = []uint16{AdminPort, OutboundPort, InboundPort, ReadinessPort, StatsPort}

// The proxy's user and group (Istio's convention). weft-init exempts their
// traffic from capture, or the proxy would capture itself.
const (
	ProxyUID = 1337
	ProxyGID = 1337
)

// InboundPassthroughSource is the address the sidecar uses towards its own
// application for passthrough traffic; weft-init excludes it from capture
// so that traffic does not loop.
const InboundPassthroughSource = "127.0.0.6"

// InboundPassthroughSourceV6 is InboundPassthroughSource for IPv6.
// Unlike 127.0.0.0/8, ::6 is not a local address by default: weft-init
// adds it to lo, so that the sidecar can bind it and replies come back.
const InboundPassthroughSourceV6 = "::6"

// Well-known resource names in a sidecar's configuration.
const (
	OutboundListener  = "outbound"
	InboundListener   = "inbound"
	ReadinessListener = "readiness"
	StatsListener     = "stats"

	PassthroughCluster        = "PassthroughCluster"
	BlackHoleCluster          = "BlackHoleCluster"
	InboundPassthroughCluster = "InboundPassthroughCluster"

	// WorkloadCertSecret is the proxy's own certificate and key;
	// TrustBundleSecret the roots it validates peers with.
	WorkloadCertSecret = "workload-cert"
	TrustBundleSecret  = "trust-bundle"
)

// Proxyless gRPC: the names a gRPC bootstrap and the server's configuration
// share.
const (
	// GRPCServerListenerPrefix: a gRPC server's bootstrap sets
	// server_listener_resource_name_template to "weft/inbound/%s", and asks
	// for "weft/inbound/<ip>:<port>" with the address it serves on.
	GRPCServerListenerPrefix = "weft/inbound/"
	// GRPCCertProvider is the certificate provider instance, from the
	// gRPC bootstrap, that holds the workload's certificate and the trust
	// bundle (gRPC cannot take certificates over SDS).
	GRPCCertProvider = "weft"
)

// MaxXDSMessageBytes is the largest xDS message either end accepts: the
// sidecar's bootstrap raises Envoy's Google gRPC receive limit
// (grpc.max_receive_message_length, 4 MiB by default) to it, and
// weft-controller sends nothing larger. Delta pushes, and State-of-the-
// World endpoints and routes, are split well below it
// (xds.ResponseChunkBytes, 3 MiB, which gRPC-Go's default 4 MiB also
// accepts; docs/design/151); it bounds what cannot be split: a single
// resource, or a State-of-the-World listener or cluster response, which
// the protocol requires whole.
const MaxXDSMessageBytes = 16 << 20
