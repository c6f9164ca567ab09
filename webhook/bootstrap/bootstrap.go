// Package bootstrap builds the Envoy bootstrap of an injected sidecar. It is
// pure and shared by the injection webhook and `weft inject`.
//
// The bootstrap is passed to Envoy as its --config-yaml argument (JSON is
// YAML). Per-pod values that are unknown when the webhook runs (the pod's
// name, IP and service account) are written as $(WEFT_POD_NAME)-style
// references to the container's downward-API environment variables, which
// the kubelet expands in arguments before starting Envoy. That keeps the
// stock Envoy image (no shell, no agent) and needs no per-pod ConfigMap.
package bootstrap

import (
	"encoding/json"
	"fmt"
	"net"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	grpccredv3 "github.com/envoyproxy/go-control-plane/envoy/config/grpc_credential/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator/envoy"
)

// Defaults.
const (
	// DefaultXDSAddress is weft-controller's gRPC xDS Service.
	DefaultXDSAddress = "weft-controller.weft-system.svc:15012"
	// CredentialsDir holds the proxy's control-plane credentials: a
	// projected ServiceAccount token with audience TokenAudience, and the
	// mesh root certificate that signs weft-controller's serving
	// certificate.
	CredentialsDir = "/var/run/weft/credentials"
	TokenFile      = "token"
	// TokenAudience is the audience of the proxy's ServiceAccount token;
	// weft-controller accepts only tokens minted for it.
	TokenAudience = "weft"

	// fileBasedMetadata is Envoy's Google-gRPC call-credentials plugin that
	// reads a file on every new stream, so a rotated token is picked up
	// when the ADS stream reconnects.
	fileBasedMetadata = "envoy.grpc_credentials.file_based_metadata"
)

// Config is what varies between bootstraps.
type Config struct {
	// XDSAddress is host:port of the xDS server; empty means
	// DefaultXDSAddress. The host is also the name its TLS certificate must
	// carry.
	XDSAddress string
	// Labels are the pod's labels when it was injected, sent as node
	// metadata (the downward API offers labels only as a file, which
	// Envoy's bootstrap cannot read). weft-controller selects the proxy's
	// Services with them, so a label changed on a running pod takes effect
	// on its next restart.
	Labels map[string]string
	// AppProbes is the pod's weft.dev/app-probes annotation (JSON), sent as
	// node metadata APP_PROBES so that the proxy's readiness listener
	// forwards the rewritten kubelet probes to the application.
	AppProbes string
}

// ref is a kubelet reference to a container environment variable.
func ref(env string) string { return "$(" + env + ")" }

// NodeID is the proxy's xDS node id: <pod name>.<namespace>, unique in the
// cluster and what `weft` commands print.
var NodeID = ref(dataplane.EnvPodName) + "." + ref(dataplane.EnvPodNamespace)

// Build returns the bootstrap, validated.
func Build(c Config) (*bootstrapv3.Bootstrap, error) {
	addr := c.XDSAddress
	if addr == "" {
		addr = DefaultXDSAddress
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("xDS address %q is not host:port", addr)
	}
	md, err := structpb.NewStruct(dataplane.NodeMetadata(dataplane.NodeMeta{
		Kind:           dataplane.KindNameSidecar,
		PodName:        ref(dataplane.EnvPodName),
		Namespace:      ref(dataplane.EnvPodNamespace),
		ServiceAccount: ref(dataplane.EnvServiceAccount),
		PodIPs:         ref(dataplane.EnvPodIPs),
		Labels:         c.Labels,
		AppProbes:      c.AppProbes,
	}))
	if err != nil {
		return nil, err
	}
	token := &grpccredv3.FileBasedMetadataConfig{
		SecretData:   file(CredentialsDir + "/" + TokenFile),
		HeaderKey:    "authorization",
		HeaderPrefix: "Bearer ",
	}
	// ValidateAll does not look inside Any: validate the packed message.
	if err := token.ValidateAll(); err != nil {
		return nil, fmt.Errorf("bootstrap call credentials: %w", err)
	}
	creds, err := anypb.New(token)
	if err != nil {
		return nil, err
	}
	xds := &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_GoogleGrpc_{GoogleGrpc: &corev3.GrpcService_GoogleGrpc{
		TargetUri:              addr,
		StatPrefix:             "xds",
		CredentialsFactoryName: fileBasedMetadata,
		// weft-controller splits Delta pushes at 3 MiB, but a single
		// resource may be larger than Google gRPC's 4 MiB default; the
		// server sends at most dataplane.MaxXDSMessageBytes.
		ChannelArgs: &corev3.GrpcService_GoogleGrpc_ChannelArgs{Args: map[string]*corev3.GrpcService_GoogleGrpc_ChannelArgs_Value{
			"grpc.max_receive_message_length": {ValueSpecifier: &corev3.GrpcService_GoogleGrpc_ChannelArgs_Value_IntValue{IntValue: dataplane.MaxXDSMessageBytes}},
		}},
		ChannelCredentials: &corev3.GrpcService_GoogleGrpc_ChannelCredentials{
			CredentialSpecifier: &corev3.GrpcService_GoogleGrpc_ChannelCredentials_SslCredentials{
				SslCredentials: &corev3.GrpcService_GoogleGrpc_SslCredentials{RootCerts: file(CredentialsDir + "/" + dataplane.RootCertFile)},
			},
		},
		CallCredentials: []*corev3.GrpcService_GoogleGrpc_CallCredentials{{
			CredentialSpecifier: &corev3.GrpcService_GoogleGrpc_CallCredentials_FromPlugin{
				FromPlugin: &corev3.GrpcService_GoogleGrpc_CallCredentials_MetadataCredentialsFromPlugin{
					Name:       fileBasedMetadata,
					ConfigType: &corev3.GrpcService_GoogleGrpc_CallCredentials_MetadataCredentialsFromPlugin_TypedConfig{TypedConfig: creds},
				},
			},
		}},
	}}}
	ads := func() *corev3.ConfigSource {
		return &corev3.ConfigSource{
			ResourceApiVersion:    corev3.ApiVersion_V3,
			ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		}
	}
	b := &bootstrapv3.Bootstrap{
		Node: &corev3.Node{
			Id:       NodeID,
			Cluster:  ref(dataplane.EnvServiceAccount) + "." + ref(dataplane.EnvPodNamespace),
			Metadata: md,
		},
		// The admin API can reconfigure and stop the proxy: localhost only.
		// Prometheus reads /stats/prometheus through the stats listener on
		// 15090, which the translator sends.
		Admin: &bootstrapv3.Admin{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address:       "127.0.0.1",
			PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: dataplane.AdminPort},
		}}}},
		DynamicResources: &bootstrapv3.Bootstrap_DynamicResources{
			AdsConfig: &corev3.ApiConfigSource{
				ApiType:                   corev3.ApiConfigSource_DELTA_GRPC,
				TransportApiVersion:       corev3.ApiVersion_V3,
				SetNodeOnFirstMessageOnly: true,
				GrpcServices:              []*corev3.GrpcService{xds},
			},
			LdsConfig: ads(),
			CdsConfig: ads(),
		},
		StatsConfig: statsConfig(),
	}
	if err := b.ValidateAll(); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	// What Envoy checks when it loads the bootstrap (the ADS cluster, if
	// the management server is reached through one, must be static).
	if err := envoy.ValidateBootstrap(b); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	return b, nil
}

func file(path string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: path}}
}

// JSON returns the bootstrap as compact JSON with sorted keys: stable across
// runs (protojson's output is deliberately not), so goldens and the injected
// pod do not change from one webhook call to the next.
func JSON(c Config) (string, error) {
	b, err := Build(c)
	if err != nil {
		return "", err
	}
	raw, err := protojson.Marshal(b)
	if err != nil {
		return "", err
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", err
	}
	out, err := json.Marshal(v) // encoding/json sorts map keys
	if err != nil {
		return "", err
	}
	return string(out), nil
}
