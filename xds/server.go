// Package xds serves Envoy's discovery protocol (xDS) to sidecars and
// proxyless gRPC clients: the aggregated discovery service (ADS, Delta and
// State of the World) from weft's own cache (see ADS), on a gRPC server
// that runs on every replica.
package xds

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/weftmesh/weft/dataplane"
)

// drainTimeout bounds how long shutdown waits for open streams. xDS streams
// live as long as the proxy, so a graceful stop never finishes by itself;
// proxies reconnect to another replica after the hard stop.
const drainTimeout = 2 * time.Second

// MaxConnectionAge and MaxConnectionAgeGrace bound a connection's life:
// 30 minutes as Istio's istiod, so that authentication is repeated at
// least that often and a scaled-up replica gets its share of proxies
// within half an hour; 10 seconds of grace lets a push in flight land
// (a proxy keeps its configuration across the reconnect).
const (
	MaxConnectionAge      = 30 * time.Minute
	MaxConnectionAgeGrace = 10 * time.Second
)

// maxConnectionAge and maxConnectionAgeGrace are what NewServer uses: the
// constants above, which only tests shorten (SetMaxConnectionAge in
// export_test.go). Not a flag: no operator needs another value, and a
// shorter age only multiplies reconnects and token reviews.
var (
	maxConnectionAge      = MaxConnectionAge
	maxConnectionAgeGrace = MaxConnectionAgeGrace
)

// Server is the gRPC server for ADS. It runs on every replica, leader or not.
type Server struct {
	lis     net.Listener
	grpc    *grpc.Server
	health  *health.Server
	log     logr.Logger
	serving atomic.Bool
}

// NewServer binds addr at once, so that a port in use is reported before the
// controller starts anything else, and serves ads there: over TLS when tlsConfig
// is set (sidecars verify it against the mesh root), plaintext otherwise.
func NewServer(addr string, ads discoveryv3.AggregatedDiscoveryServiceServer, tlsConfig *tls.Config, log logr.Logger) (*Server, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("xds: %w", err)
	}
	opts := []grpc.ServerOption{
		// Proxies keep one stream open for hours; detect dead peers without
		// letting a client ping more often than every 10s.
		// A connection lives MaxConnectionAge (±10% jitter, by gRPC), then
		// its streams have MaxConnectionAgeGrace to finish before it
		// closes: proxies reconnect, authenticate again (a revoked token or
		// a deleted pod is refused then) and spread over the replicas.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second,
			MaxConnectionAge: maxConnectionAge, MaxConnectionAgeGrace: maxConnectionAgeGrace}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		// Caps (limits.go): streams per connection, request and header sizes.
		grpc.MaxConcurrentStreams(maxConcurrentStreams),
		grpc.StatsHandler(connStreams{}),
		grpc.StreamInterceptor(limitStreamsPerConnection),
		grpc.MaxRecvMsgSize(MaxRequestBytes),
		// What the sidecar's bootstrap lets Envoy receive (Delta pushes
		// are split far below it: ResponseChunkBytes).
		grpc.MaxSendMsgSize(dataplane.MaxXDSMessageBytes),
		grpc.MaxHeaderListSize(MaxHeaderBytes),
		// Per-connection buffers, pooled by gRPC while idle
		// (WriteBufferBytes).
		grpc.WriteBufferSize(WriteBufferBytes),
		grpc.ReadBufferSize(ReadBufferBytes),
		// Discovery responses reference the shared encodings of their
		// resources instead of copying them into one buffer each
		// (codec.go, docs/design/180).
		grpc.ForceServerCodecV2(newResponseCodec()),
	}
	if tlsConfig != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsConfig)))
	}
	g := grpc.NewServer(opts...)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, ads)
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(g, hs)
	return &Server{lis: lis, grpc: g, health: hs, log: log}, nil
}

// Addr is the address the server listens on (useful when started on port 0).
func (s *Server) Addr() net.Addr { return s.lis.Addr() }

// Start serves until ctx is done. It implements controller-runtime's
// manager.Runnable.
func (s *Server) Start(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.grpc.Serve(s.lis) }()
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.serving.Store(true)
	s.log.Info("serving xDS", "address", s.lis.Addr().String())

	select {
	case err := <-errc:
		s.serving.Store(false)
		return fmt.Errorf("xds: serve: %w", err)
	case <-ctx.Done():
	}
	s.serving.Store(false)
	s.health.Shutdown()
	stopped := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(drainTimeout):
		s.grpc.Stop()
		<-stopped
	}
	if err := <-errc; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("xds: serve: %w", err)
	}
	s.log.Info("stopped serving xDS")
	return nil
}

// NeedLeaderElection is false: every replica serves proxies.
func (s *Server) NeedLeaderElection() bool { return false }

// Ready reports whether the server accepts streams; it is a readiness check.
func (s *Server) Ready() error {
	if !s.serving.Load() {
		return errors.New("xds server is not serving")
	}
	return nil
}
