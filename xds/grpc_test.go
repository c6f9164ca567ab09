package xds_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/xds"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/testing/testkit"
	"github.com/weftmesh/weft/internal/testing/testpki"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/ir"
	weftxds "github.com/weftmesh/weft/xds"
)

// TestGRPCClientsFollowWeights runs real gRPC-Go xDS clients and servers
// (SotW, proxyless, mutual TLS by file_watcher providers) against weft's ADS:
// RPCs split by the TrafficSplit's weights, a weight change reaches the
// client, and the policy reads as programmed once both sides ACKed it.
func TestGRPCClientsFollowWeights(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ads := weftxds.NewADS(logr.Discard())
	addr := serve(t, ads)
	dir := t.TempDir()
	ca := testpki.NewCA(t)

	// Two servers, v1 and v2, each answering with its name.
	ports := map[string]int{}
	for _, v := range []string{"v1", "v2"} {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports[v] = lis.Addr().(*net.TCPAddr).Port
		files := ca.Issue(t, dir, "spiffe://cluster.local/ns/shop/sa/checkout-"+v)
		boot := bootstrapFor(t, addr, "checkout-"+v+".shop", "checkout-"+v, map[string]any{"app": "checkout-" + v}, files)
		creds, err := xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
		if err != nil {
			t.Fatal(err)
		}
		srv, err := xds.NewGRPCServer(grpc.Creds(creds), xds.BootstrapContentsForTesting(boot))
		if err != nil {
			t.Fatal(err)
		}
		srv.RegisterService(&whoService, v)
		go func() { _ = srv.Serve(lis) }()
		t.Cleanup(srv.Stop)
	}
	update := func(w1, w2 int) {
		in, err := translator.DecodeInputs([]byte(fmt.Sprintf(grpcMesh, ports["v1"], ports["v1"], ports["v2"], ports["v2"], w2, w1, w2)))
		if err != nil {
			t.Fatal(err)
		}
		ads.Update(translator.Translate(in).Mesh, time.Now())
	}
	update(80, 20)

	files := ca.Issue(t, dir, "spiffe://cluster.local/ns/shop/sa/frontend")
	resolver, err := xds.NewXDSResolverWithConfigForTesting(bootstrapFor(t, addr, "frontend-0.shop", "frontend", map[string]any{"app": "frontend"}, files))
	if err != nil {
		t.Fatal(err)
	}
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("xds:///checkout.shop:80", grpc.WithResolvers(resolver), grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	who := func() string {
		t.Helper()
		out := &wrapperspb.StringValue{}
		rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
		defer rcancel()
		if err := conn.Invoke(rctx, "/weft.test.Who/Who", &emptypb.Empty{}, out, grpc.WaitForReady(true)); err != nil {
			t.Fatalf("RPC: %v", err)
		}
		return out.Value
	}

	counts := map[string]int{}
	for i := 0; i < 400; i++ {
		counts[who()]++
	}
	// 80/20 over 400 RPCs: v2 expects 80 (sd 8); the bounds are ±5 sd.
	if counts["v2"] < 40 || counts["v2"] > 120 || counts["v1"]+counts["v2"] != 400 {
		t.Fatalf("80/20 split gave %v", counts)
	}
	t.Logf("80/20 split over 400 RPCs: %v", counts)

	ref := ir.PolicyRef{Kind: "TrafficSplit", Namespace: "shop", Name: "checkout", Generation: 20}
	eventually(t, func() bool { return ads.PolicyState(ref).Programmed() }, "generation 20 programmed")

	update(0, 100)
	eventually(t, func() bool {
		for i := 0; i < 20; i++ {
			if who() != "v2" {
				return false
			}
		}
		return true
	}, "every RPC on v2 after the weight change")
	ref.Generation = 100
	eventually(t, func() bool { return ads.PolicyState(ref).Programmed() }, "generation 100 programmed")
	// Every proxy of the namespace sees checkout, so all three carry the
	// split: the client and both servers.
	if st := ads.PolicyState(ref); st.Affected != 3 || st.Acked != 3 {
		t.Fatalf("policy state %+v, want 3 affected proxies, all ACKed", st)
	}
}

func eventually(t *testing.T, cond func() bool, what string) {
	t.Helper()
	testkit.EventuallyTrue(t, what, cond)
}

func bootstrapFor(t *testing.T, xdsAddr, id, sa string, labels map[string]any, f testpki.Files) []byte {
	md := map[string]any{
		dataplane.MetaNamespace: "shop", dataplane.MetaServiceAccount: sa, dataplane.MetaLabels: labels,
		dataplane.MetaPodIPs: "127.0.0.1", dataplane.MetaProxyKind: "grpc",
	}
	b, err := json.Marshal(testpki.GRPCBootstrap(xdsAddr, id, md, dataplane.GRPCCertProvider, f, dataplane.GRPCServerListenerPrefix+"%s"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// whoService answers /weft.test.Who/Who with the server's name: a service
// without generated code, enough to tell backends apart.
var whoService = grpc.ServiceDesc{
	ServiceName: "weft.test.Who",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Who",
		Handler: func(srv any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			if err := dec(&emptypb.Empty{}); err != nil {
				return nil, err
			}
			return wrapperspb.String(srv.(string)), nil
		},
	}},
}

const grpcMesh = `
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: checkout, namespace: shop}
spec: {clusterIP: 10.0.0.1, selector: {app: checkout-v1}, ports: [{name: grpc, port: 80, targetPort: %d}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: checkout-1, namespace: shop, labels: {kubernetes.io/service-name: checkout}}
addressType: IPv4
ports: [{name: grpc, port: %d}]
endpoints: [{addresses: [127.0.0.1], targetRef: {kind: Pod, name: checkout-v1, namespace: shop}}]
---
apiVersion: v1
kind: Service
metadata: {name: checkout-v2, namespace: shop}
spec: {clusterIP: 10.0.0.2, selector: {app: checkout-v2}, ports: [{name: grpc, port: 80, targetPort: %d}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: checkout-v2-1, namespace: shop, labels: {kubernetes.io/service-name: checkout-v2}}
addressType: IPv4
ports: [{name: grpc, port: %d}]
endpoints: [{addresses: [127.0.0.1], targetRef: {kind: Pod, name: checkout-v2, namespace: shop}}]
---
apiVersion: v1
kind: Pod
metadata: {name: checkout-v1, namespace: shop, labels: {app: checkout-v1}, annotations: {weft.dev/proxyless: grpc}}
spec: {serviceAccountName: checkout-v1, containers: [{name: app, image: x}]}
---
apiVersion: v1
kind: Pod
metadata: {name: checkout-v2, namespace: shop, labels: {app: checkout-v2}, annotations: {weft.dev/proxyless: grpc}}
spec: {serviceAccountName: checkout-v2, containers: [{name: app, image: x}]}
---
apiVersion: mesh.weft.dev/v1alpha1
kind: TrafficSplit
metadata: {name: checkout, namespace: shop, generation: %d}
spec:
  rootService: {name: checkout}
  backends: [{name: checkout, weight: %d}, {name: checkout-v2, weight: %d}]
`
