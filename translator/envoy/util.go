package envoy

import (
	"fmt"
	"sort"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rawbufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// mustAny packs m, deterministically: the packed bytes are part of the
// resource's encoding, whose hash is its version, so a map inside (RBAC
// policies, metadata) must not come out in a new order on every build, or
// an unchanged resource would look changed and be sent again. Packing a
// well-formed message cannot fail; a failure is a bug, so it panics rather
// than returning an error every caller ignores.
func mustAny(m proto.Message) *anypb.Any {
	a := &anypb.Any{}
	err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true})
	if err != nil {
		panic(fmt.Sprintf("packing %T: %v", m, err))
	}
	return a
}

// adsConfig says "fetch this over the proxy's ADS stream".
func adsConfig() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
}

func socketAddress(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       ip,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

func transportSocket(name string, cfg proto.Message) *corev3.TransportSocket {
	return &corev3.TransportSocket{Name: name, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(cfg)}}
}

func rawBuffer() *rawbufferv3.RawBuffer { return &rawbufferv3.RawBuffer{} }

func sortStrings(s []string) { sort.Strings(s) }

func durationZero() *durationpb.Duration { return durationpb.New(0) }
