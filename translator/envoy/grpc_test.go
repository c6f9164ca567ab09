package envoy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"testing"
	"time"

	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/testing/testkit"
	"github.com/weftmesh/weft/internal/testing/testpki"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/envoy"
)

// TestProxylessGRPC hands the proxyless flavour to real gRPC-Go xDS
// consumers: an xDS-enabled gRPC server and a client dialing
// xds:///greeter.shop:80, with mutual TLS from file_watcher certificate
// providers. The client reaches the server only if gRPC accepted every
// resource (a NACKed listener, route or cluster leaves the RPC failing),
// and the server's RBAC, which admits only the frontend's SPIFFE ID, lets
// it through only over mTLS. Then an AuthPolicy change denies it.
//
// The xDS server here is go-control-plane's snapshot cache, standing in
// for weft's own server (issue 5); the xDS clients are the real thing.
func TestProxylessGRPC(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	ca := testpki.NewCA(t)
	files := map[string]testpki.Files{}
	for _, sa := range []string{"greeter", "frontend"} {
		files[sa] = ca.Issue(t, dir, "spiffe://cluster.local/ns/shop/sa/"+sa)
	}

	// ads=false: in ADS mode the snapshot cache answers only requests that
	// name exactly its resources, and a gRPC server asks for one listener.
	cache := cachev3.NewSnapshotCache(false, cachev3.IDHash{}, nil)
	xdsAddr := serveADS(t, ctx, cache)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := lis.Addr().(*net.TCPAddr).Port

	push := func(version string, policy string) {
		t.Helper()
		in, err := translator.DecodeInputs([]byte(fmt.Sprintf(meshYAML, port, port) + policy))
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
			snap, err := cachev3.NewSnapshot(version, map[resourcev3.Type][]cachetypes.Resource{
				resourcev3.ListenerType: asResources(res.Listeners),
				resourcev3.RouteType:    asResources(res.Routes),
				resourcev3.ClusterType:  asResources(res.Clusters),
				resourcev3.EndpointType: asResources(res.Endpoints),
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := cache.SetSnapshot(ctx, node, snap); err != nil {
				t.Fatal(err)
			}
		}
	}
	push("1", allowFrontend)

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
			} else if args.Err != nil {
				t.Logf("server not serving: %v", args.Err)
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	select {
	case <-serving:
	case <-ctx.Done():
		t.Fatal("the gRPC server never accepted its listener: see the log for its NACK")
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
	hc := healthpb.NewHealthClient(conn)

	rpcCtx, rpcCancel := context.WithTimeout(ctx, 30*time.Second)
	resp, err := hc.Check(rpcCtx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	rpcCancel()
	if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("RPC through xDS = %v, %v; want SERVING", resp, err)
	}

	// until waits for the RPC to give want (codes.OK or an error code) as
	// the server applies the pushed policy.
	until := func(step string, want codes.Code) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
			if status.Code(err) == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("after %s the RPC still gives %v, want %v", step, err, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	push("2", denyFrontend)
	until("the Deny policy", codes.PermissionDenied)

	// PathPrefix matches element by element (the API's promise): an Allow
	// on /grpc.health.v1.Health admits /grpc.health.v1.Health/Check, and
	// an Allow on /grpc.health.v1.Heal must not (a plain string prefix
	// would admit it).
	push("3", fmt.Sprintf(allowFrontendPath, "/grpc.health.v1.Health"))
	until("an Allow on the service's path prefix", codes.OK)
	push("4", fmt.Sprintf(allowFrontendPath, "/grpc.health.v1.Heal"))
	until("an Allow on a string prefix that is not a path element", codes.PermissionDenied)
}

const allowFrontendPath = `
apiVersion: mesh.weft.dev/v1alpha1
kind: AuthPolicy
metadata: {name: greeter, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Service, name: greeter}]
  action: Allow
  rules: [{from: {serviceAccounts: [shop/frontend]}, to: {paths: [{type: PathPrefix, value: "%s"}]}}]
`

const meshYAML = `
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: greeter, namespace: shop}
spec:
  clusterIP: 10.0.0.1
  selector: {app: greeter}
  ports: [{name: grpc, port: 80, targetPort: %d}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: greeter-1, namespace: shop, labels: {kubernetes.io/service-name: greeter}}
addressType: IPv4
ports: [{name: grpc, port: %d}]
endpoints: [{addresses: [127.0.0.1], targetRef: {kind: Pod, name: greeter-0, namespace: shop}}]
---
apiVersion: v1
kind: Pod
metadata: {name: greeter-0, namespace: shop, labels: {app: greeter}, annotations: {weft.dev/proxyless: grpc}}
spec: {serviceAccountName: greeter, containers: [{name: app, image: greeter}]}
---
`

const allowFrontend = `
apiVersion: mesh.weft.dev/v1alpha1
kind: AuthPolicy
metadata: {name: greeter, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Service, name: greeter}]
  action: Allow
  rules: [{from: {serviceAccounts: [shop/frontend]}}]
`

const denyFrontend = `
apiVersion: mesh.weft.dev/v1alpha1
kind: AuthPolicy
metadata: {name: greeter, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Service, name: greeter}]
  action: Deny
  rules: [{from: {serviceAccounts: [shop/frontend]}, to: {paths: [{type: PathPrefix, value: /grpc.health.v1.Health/}]}}]
`

func asResources[T cachetypes.Resource](in []T) []cachetypes.Resource {
	out := make([]cachetypes.Resource, len(in))
	for i, r := range in {
		out[i] = r
	}
	return out
}

func serveADS(t *testing.T, ctx context.Context, cache cachev3.SnapshotCache) string {
	return testkit.ServeADS(t, serverv3.NewServer(ctx, cache, nil)).String()
}

func bootstrap(t *testing.T, xdsAddr, node string, f testpki.Files) []byte {
	b, err := json.Marshal(testpki.GRPCBootstrap(xdsAddr, node, nil, dataplane.GRPCCertProvider, f, dataplane.GRPCServerListenerPrefix+"%s"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
