package envoy_test

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/testing/testpki"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/envoy"
)

// flakyHealth answers UNAVAILABLE to its first fail calls, then SERVING.
type flakyHealth struct {
	healthpb.UnimplementedHealthServer
	fail  int32
	calls atomic.Int32
}

func (h *flakyHealth) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if h.calls.Add(1) <= h.fail {
		return nil, status.Error(codes.Unavailable, "not yet")
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

// TestProxylessGRPCRetries: the part of a RetryPolicy a proxyless client
// honours (12r, docs/design/057) is honoured by real gRPC-Go: with
// retryOn [unavailable, 5xx] and attempts 2, a server that answers
// UNAVAILABLE twice is called three times and the call succeeds; without
// the policy the first UNAVAILABLE is the answer.
func TestProxylessGRPCRetries(t *testing.T) {
	for _, c := range []struct {
		name      string
		policy    string
		wantCalls int32
		wantCode  codes.Code
	}{
		{name: "retried", policy: `
apiVersion: mesh.weft.dev/v1alpha1
kind: RetryPolicy
metadata: {name: greeter, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Service, name: greeter}]
  retryOn: [unavailable, 5xx]
  attempts: 2
  backoff: {baseInterval: 1ms, maxInterval: 2ms}
  perTryTimeout: 5s
`, wantCalls: 3, wantCode: codes.OK},
		{name: "no policy", wantCalls: 1, wantCode: codes.Unavailable},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			dir := t.TempDir()
			ca := testpki.NewCA(t)
			files := map[string]testpki.Files{}
			for _, sa := range []string{"greeter", "frontend"} {
				files[sa] = ca.Issue(t, dir, "spiffe://cluster.local/ns/shop/sa/"+sa)
			}
			cache := cachev3.NewSnapshotCache(false, cachev3.IDHash{}, nil)
			xdsAddr := serveADS(t, ctx, cache)
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			port := lis.Addr().(*net.TCPAddr).Port
			in, err := translator.DecodeInputs([]byte(fmt.Sprintf(meshYAML, port, port) + allowFrontend + "---" + c.policy))
			if err != nil {
				t.Fatal(err)
			}
			mesh := translator.Translate(in).Mesh
			for node, p := range map[string]dataplane.Proxy{
				"greeter-0.shop":  {Namespace: "shop", ServiceAccount: "greeter", Labels: map[string]string{"app": "greeter"}, IPs: []string{"127.0.0.1"}, Kind: dataplane.KindGRPC},
				"frontend-0.shop": {Namespace: "shop", ServiceAccount: "frontend", Labels: map[string]string{"app": "frontend"}, IPs: []string{"127.0.0.2"}, Kind: dataplane.KindGRPC},
			} {
				res := envoy.Build(mesh, p)
				if err := res.Validate(); err != nil {
					t.Fatalf("%s: %v", node, err)
				}
				snap, err := cachev3.NewSnapshot("1", map[resourcev3.Type][]cachetypes.Resource{
					resourcev3.ListenerType: asResources(res.Listeners), resourcev3.RouteType: asResources(res.Routes),
					resourcev3.ClusterType: asResources(res.Clusters), resourcev3.EndpointType: asResources(res.Endpoints),
				})
				if err != nil {
					t.Fatal(err)
				}
				if err := cache.SetSnapshot(ctx, node, snap); err != nil {
					t.Fatal(err)
				}
			}
			serving := make(chan struct{}, 1)
			srvCreds, err := xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
			if err != nil {
				t.Fatal(err)
			}
			srv, err := xds.NewGRPCServer(grpc.Creds(srvCreds),
				xds.BootstrapContentsForTesting(bootstrap(t, xdsAddr, "greeter-0.shop", files["greeter"])),
				xds.ServingModeCallback(func(_ net.Addr, args xds.ServingModeChangeArgs) {
					if args.Mode.String() == "SERVING" {
						select {
						case serving <- struct{}{}:
						default:
						}
					}
				}))
			if err != nil {
				t.Fatal(err)
			}
			h := &flakyHealth{fail: 2}
			healthpb.RegisterHealthServer(srv, h)
			go func() { _ = srv.Serve(lis) }()
			defer srv.Stop()
			select {
			case <-serving:
			case <-ctx.Done():
				t.Fatal("the gRPC server never accepted its listener")
			}
			resolver, err := xds.NewXDSResolverWithConfigForTesting(bootstrap(t, xdsAddr, "frontend-0.shop", files["frontend"]))
			if err != nil {
				t.Fatal(err)
			}
			cliCreds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
			if err != nil {
				t.Fatal(err)
			}
			conn, err := grpc.NewClient("xds:///greeter.shop:80", grpc.WithResolvers(resolver), grpc.WithTransportCredentials(cliCreds))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			rpcCtx, rpcCancel := context.WithTimeout(ctx, 30*time.Second)
			_, err = healthpb.NewHealthClient(conn).Check(rpcCtx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
			rpcCancel()
			if status.Code(err) != c.wantCode || h.calls.Load() != c.wantCalls {
				t.Fatalf("call: %v after %d server calls, want %s after %d", err, h.calls.Load(), c.wantCode, c.wantCalls)
			}
		})
	}
}
