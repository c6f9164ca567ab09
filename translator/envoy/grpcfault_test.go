package envoy_test

import (
	"context"
	"fmt"
	"net"
	"sync"
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

// countingHealth answers SERVING and counts the calls that reached it.
type countingHealth struct {
	healthpb.UnimplementedHealthServer
	calls atomic.Int32
}

func (h *countingHealth) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	h.calls.Add(1)
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

const greeterChaos = `
apiVersion: mesh.weft.dev/v1alpha1
kind: TrafficSplit
metadata: {name: greeter-chaos, namespace: shop}
spec:
  rootService: {name: greeter}
  backends: [{name: greeter}]
  fault: %s
  mirror: {backend: {name: greeter}, percent: 50}
`

// proxylessGreeter serves the greeter over xDS with weft's configuration
// for extra (appended to meshYAML and allowFrontend) and returns a real
// gRPC-Go xDS client connection of the frontend to it.
func proxylessGreeter(t *testing.T, ctx context.Context, extra string, h healthpb.HealthServer) *grpc.ClientConn {
	t.Helper()
	return proxylessGreeterFrom(t, ctx, extra, h, "shop")
}

// proxylessGreeterFrom is proxylessGreeter with the frontend in namespace
// frontendNS.
func proxylessGreeterFrom(t *testing.T, ctx context.Context, extra string, h healthpb.HealthServer, frontendNS string) *grpc.ClientConn {
	t.Helper()
	return proxylessServers(t, ctx, frontendNS, func(ports []int) string {
		return fmt.Sprintf(meshYAML, ports[0], ports[0]) + allowFrontend + "---" + extra
	}, "xds:///greeter.shop:80", func(s *xds.GRPCServer) { healthpb.RegisterHealthServer(s, h) })
}

// proxylessServers starts one xDS-enabled gRPC server of pod greeter-0
// (shop/greeter, 127.0.0.1) per register function, each on a port of its
// own, serves every proxy weft's configuration of manifest(ports) (the
// mesh in YAML, given those ports), and returns the frontend's
// (frontendNS/frontend, 127.0.0.2) real gRPC-Go xDS client connection to
// target.
func proxylessServers(t *testing.T, ctx context.Context, frontendNS string, manifest func(ports []int) string, target string, register ...func(*xds.GRPCServer)) *grpc.ClientConn {
	t.Helper()
	dir := t.TempDir()
	ca := testpki.NewCA(t)
	files := map[string]testpki.Files{}
	for sa, ns := range map[string]string{"greeter": "shop", "frontend": frontendNS} {
		files[sa] = ca.Issue(t, dir, "spiffe://cluster.local/ns/"+ns+"/sa/"+sa)
	}
	cache := cachev3.NewSnapshotCache(false, cachev3.IDHash{}, nil)
	xdsAddr := serveADS(t, ctx, cache)
	var listeners []net.Listener
	var ports []int
	for range register {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		listeners = append(listeners, lis)
		ports = append(ports, lis.Addr().(*net.TCPAddr).Port)
	}
	in, err := translator.DecodeInputs([]byte(manifest(ports)))
	if err != nil {
		t.Fatal(err)
	}
	mesh := translator.Translate(in).Mesh
	for node, p := range map[string]dataplane.Proxy{
		"greeter-0.shop":           {Namespace: "shop", ServiceAccount: "greeter", Labels: map[string]string{"app": "greeter"}, IPs: []string{"127.0.0.1"}, Kind: dataplane.KindGRPC},
		"frontend-0." + frontendNS: {Namespace: frontendNS, ServiceAccount: "frontend", Labels: map[string]string{"app": "frontend"}, IPs: []string{"127.0.0.2"}, Kind: dataplane.KindGRPC},
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
	for i, reg := range register {
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
		reg(srv)
		go func() { _ = srv.Serve(listeners[i]) }()
		t.Cleanup(srv.Stop)
		select {
		case <-serving:
		case <-ctx.Done():
			t.Fatalf("the gRPC server on port %d never accepted its listener", ports[i])
		}
	}
	resolver, err := xds.NewXDSResolverWithConfigForTesting(bootstrap(t, xdsAddr, "frontend-0."+frontendNS, files["frontend"]))
	if err != nil {
		t.Fatal(err)
	}
	cliCreds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(target, grpc.WithResolvers(resolver), grpc.WithTransportCredentials(cliCreds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// callMany makes n Health.Check calls over workers goroutines and returns
// each call's code and duration.
func callMany(ctx context.Context, conn *grpc.ClientConn, n, workers int) ([]codes.Code, []time.Duration) {
	codesOut, durs := make([]codes.Code, n), make([]time.Duration, n)
	var next atomic.Int32
	var wg sync.WaitGroup
	client := healthpb.NewHealthClient(conn)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				cctx, cancel := context.WithTimeout(ctx, time.Minute)
				start := time.Now()
				_, err := client.Check(cctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
				durs[i] = time.Since(start)
				codesOut[i] = status.Code(err)
				cancel()
			}
		}()
	}
	wg.Wait()
	return codesOut, durs
}

// TestProxylessGRPCFaults: a TrafficSplit's fault (docs/design/155) is
// applied by real gRPC-Go xDS clients (its fault filter, gRFC A33, with
// the route's typed_per_filter_config): over 2,000 calls the aborted and
// the delayed shares are the configured ones within ±3 points, aborted
// calls never reach the server, and an HTTP status is seen as the gRPC
// status it maps to. The split's mirror, which gRPC cannot apply, is
// left out of the configuration (gRPC would ignore it) without breaking
// anything.
func TestProxylessGRPCFaults(t *testing.T) {
	const n = 2000
	within := func(t *testing.T, what string, got int, pct float64) {
		t.Helper()
		share := 100 * float64(got) / n
		t.Logf("%s: %d of %d calls (%.1f%%, configured %g%%)", what, got, n, share, pct)
		if share < pct-3 || share > pct+3 {
			t.Errorf("%s: %.1f%% of calls, want %g%% ± 3 points", what, share, pct)
		}
	}
	t.Run("abort 30% with UNAVAILABLE", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		h := &countingHealth{}
		conn := proxylessGreeter(t, ctx, fmt.Sprintf(greeterChaos, "{abort: {percent: 30, grpcStatus: UNAVAILABLE}}"), h)
		start := time.Now()
		got, _ := callMany(ctx, conn, n, 20)
		aborted, ok := 0, 0
		for _, c := range got {
			switch c {
			case codes.Unavailable:
				aborted++
			case codes.OK:
				ok++
			default:
				t.Errorf("unexpected code %s", c)
			}
		}
		t.Logf("%d calls in %s", n, time.Since(start))
		within(t, "aborted (UNAVAILABLE)", aborted, 30)
		if int(h.calls.Load()) != ok {
			t.Errorf("the server saw %d calls, %d succeeded: aborted calls must not reach it", h.calls.Load(), ok)
		}
	})
	t.Run("delay 20% by 2s", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		const delay = 2 * time.Second
		h := &countingHealth{}
		conn := proxylessGreeter(t, ctx, fmt.Sprintf(greeterChaos, "{delay: {percent: 20, fixedDelay: 2s}}"), h)
		// One call first, so that the client has its configuration and a
		// connection before the measured calls.
		callMany(ctx, conn, 1, 1)
		start := time.Now()
		got, durs := callMany(ctx, conn, n, 200)
		delayed := 0
		var slowestUndelayed time.Duration
		for i, c := range got {
			if c != codes.OK {
				t.Errorf("call %d: %s, want OK (a delay does not fail a call)", i, c)
			}
			// A delayed call lasts at least the delay; an undelayed one
			// only as long as the machine takes (logged, not bounded).
			if durs[i] >= delay {
				delayed++
			} else {
				slowestUndelayed = max(slowestUndelayed, durs[i])
			}
		}
		t.Logf("%d calls in %s; slowest call under the delay: %s", n, time.Since(start), slowestUndelayed)
		within(t, "delayed by at least 2s", delayed, 20)
	})
	t.Run("abort every call with HTTP 503: gRPC sees UNAVAILABLE", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		h := &countingHealth{}
		conn := proxylessGreeter(t, ctx, fmt.Sprintf(greeterChaos, "{abort: {percent: 100, httpStatus: 503}}"), h)
		got, _ := callMany(ctx, conn, 50, 5)
		for i, c := range got {
			if c != codes.Unavailable {
				t.Fatalf("call %d: %s, want UNAVAILABLE (HTTP 503)", i, c)
			}
		}
		if h.calls.Load() != 0 {
			t.Errorf("the server saw %d calls, want 0", h.calls.Load())
		}
	})
}

// sleepyHealth answers SERVING after a pause.
type sleepyHealth struct {
	healthpb.UnimplementedHealthServer
	pause time.Duration
}

func (h *sleepyHealth) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	select {
	case <-time.After(h.pause):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

const greeterRoute = `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: greeter, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: greeter, port: 80}]
  rules:
  - backendRefs: [{name: greeter, port: 80}]
    timeouts: %s
`

// TestProxylessGRPCRouteTimeouts: an HTTPRoute's timeouts.backendRequest
// on a route that is not retried bounds the call of a real gRPC-Go xDS
// client (the route's max_stream_duration, docs/design/155): a server that
// takes 3s is cut at 300ms with DEADLINE_EXCEEDED; timeouts.request alone
// does the same; without timeouts the call waits and succeeds.
func TestProxylessGRPCRouteTimeouts(t *testing.T) {
	for _, c := range []struct {
		name, timeouts string
		want           codes.Code
	}{
		{"backendRequest", "{backendRequest: 300ms}", codes.DeadlineExceeded},
		{"request", "{request: 300ms}", codes.DeadlineExceeded},
		{"none", "{}", codes.OK},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			conn := proxylessGreeter(t, ctx, fmt.Sprintf(greeterRoute, c.timeouts), &sleepyHealth{pause: 3 * time.Second})
			got, durs := callMany(ctx, conn, 1, 1)
			t.Logf("%s after %s", got[0], durs[0])
			if got[0] != c.want {
				t.Errorf("call: %s, want %s", got[0], c.want)
			}
		})
	}
}
