package testkit

import (
	"net"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
)

// ServeADS serves ads on a loopback port until the test ends, and returns
// the address. opts are the gRPC server's (credentials, for one).
func ServeADS(t testing.TB, ads discoveryv3.AggregatedDiscoveryServiceServer, opts ...grpc.ServerOption) net.Addr {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(opts...)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, ads)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	return lis.Addr()
}
