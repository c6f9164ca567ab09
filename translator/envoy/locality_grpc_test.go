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
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/xds"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/testing/testpki"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/envoy"
)

// TestPreferLocalityGRPC hands a load assignment rewritten by
// PreferLocality for a client in zone a to a real gRPC-Go xDS client:
// with endpoints in zones a and b, every call reaches zone a while its
// server is up; when it is gone (stopped, still in EDS, as when a zone
// fails before Kubernetes notices), gRPC's priority balancer fails over
// and every call reaches zone b. Without PreferLocality both zones share
// the calls (the control).
func TestPreferLocalityGRPC(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// Two plaintext gRPC servers (no pod: unmeshed endpoints, so gRPC
	// dials them without TLS), one per zone, on the same port of two
	// loopback addresses.
	var calls [2]atomic.Int64
	var servers [2]*grpc.Server
	var port int
	for i, addr := range []string{"127.0.0.1", "127.0.0.2"} {
		lis, err := net.Listen("tcp", fmt.Sprintf("%s:%d", addr, port))
		if err != nil {
			t.Fatal(err)
		}
		port = lis.Addr().(*net.TCPAddr).Port
		n := &calls[i]
		srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			n.Add(1)
			return h(ctx, req)
		}))
		healthpb.RegisterHealthServer(srv, health.NewServer())
		go func() { _ = srv.Serve(lis) }()
		servers[i] = srv
		defer srv.Stop()
	}

	in, err := translator.DecodeInputs([]byte(fmt.Sprintf(zonedMesh, port, port)))
	if err != nil {
		t.Fatal(err)
	}
	res := envoy.Build(translator.Translate(in).Mesh, dataplane.Proxy{Namespace: "shop", ServiceAccount: "client", IPs: []string{"127.0.0.3"}, Kind: dataplane.KindGRPC})
	if err := res.Validate(); err != nil {
		t.Fatal(err)
	}
	cache := cachev3.NewSnapshotCache(false, cachev3.IDHash{}, nil)
	xdsAddr := serveADS(t, ctx, cache)
	push := func(node string, prefer bool) {
		t.Helper()
		var eds []cachetypes.Resource
		for _, c := range res.Endpoints {
			if prefer {
				c = envoy.PreferLocality(c, "", "zone-a")
			}
			eds = append(eds, c)
		}
		snap, err := cachev3.NewSnapshot("1", map[resourcev3.Type][]cachetypes.Resource{
			resourcev3.ListenerType: asResources(res.Listeners),
			resourcev3.RouteType:    asResources(res.Routes),
			resourcev3.ClusterType:  asResources(res.Clusters),
			resourcev3.EndpointType: eds,
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := cache.SetSnapshot(ctx, node, snap); err != nil {
			t.Fatal(err)
		}
	}
	files := testpki.NewCA(t).Issue(t, t.TempDir(), "spiffe://cluster.local/ns/shop/sa/client")
	dial := func(node string) healthpb.HealthClient {
		t.Helper()
		r, err := xds.NewXDSResolverWithConfigForTesting(bootstrap(t, xdsAddr, node, files))
		if err != nil {
			t.Fatal(err)
		}
		creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
		if err != nil {
			t.Fatal(err)
		}
		conn, err := grpc.NewClient("xds:///echo.shop:80", grpc.WithResolvers(r), grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return healthpb.NewHealthClient(conn)
	}
	// rounds makes n calls and returns how many each zone served.
	rounds := func(hc healthpb.HealthClient, n int) [2]int64 {
		t.Helper()
		before := [2]int64{calls[0].Load(), calls[1].Load()}
		for i := 0; i < n; i++ {
			rctx, rcancel := context.WithTimeout(ctx, time.Minute)
			_, err := hc.Check(rctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
			rcancel()
			if err != nil {
				t.Fatalf("call %d: %v", i, err)
			}
		}
		return [2]int64{calls[0].Load() - before[0], calls[1].Load() - before[1]}
	}

	push("plain.shop", false)
	got := rounds(dial("plain.shop"), 200)
	t.Logf("without PreferLocality: zone a %d, zone b %d of 200", got[0], got[1])
	if got[0] == 0 || got[1] == 0 {
		t.Fatalf("without priorities both zones should serve: a %d, b %d", got[0], got[1])
	}

	push("zoned.shop", true)
	hc := dial("zoned.shop")
	if got := rounds(hc, 200); got[0] != 200 {
		t.Fatalf("zone a is up: want all 200 calls there, got a %d, b %d", got[0], got[1])
	}
	start := time.Now()
	servers[0].Stop()
	// Calls sent on zone a's connection before gRPC notices it closed fail
	// (UNAVAILABLE, as the application would see them); then the priority
	// balancer moves to zone b.
	failed := 0
	for deadline := time.Now().Add(2 * time.Minute); ; {
		rctx, rcancel := context.WithTimeout(ctx, time.Minute)
		_, err := hc.Check(rctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
		rcancel()
		if err == nil {
			break
		}
		failed++
		if time.Now().After(deadline) {
			t.Fatalf("no call succeeds after zone a is gone: %v", err)
		}
	}
	got = rounds(hc, 50)
	t.Logf("zone a stopped: %d call(s) failed during failover (%v), then 50 calls went a %d, b %d", failed, time.Since(start), got[0], got[1])
	if got[1] != 50 {
		t.Fatalf("after zone a is gone: want every call in zone b, got a %d, b %d", got[0], got[1])
	}
}

const zonedMesh = `
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: shop}
spec:
  clusterIP: 10.0.0.9
  ports: [{name: grpc, port: 80, targetPort: %d, appProtocol: grpc}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: echo-1, namespace: shop, labels: {kubernetes.io/service-name: echo}}
addressType: IPv4
ports: [{name: grpc, port: %d}]
endpoints:
- {addresses: [127.0.0.1], zone: zone-a}
- {addresses: [127.0.0.2], zone: zone-b}
`
