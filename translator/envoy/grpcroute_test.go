package envoy_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/xds"
)

// countingTestService counts the EmptyCall and UnaryCall calls that
// reached it.
type countingTestService struct {
	testgrpc.UnimplementedTestServiceServer
	empty, unary atomic.Int32
}

func (s *countingTestService) EmptyCall(context.Context, *testgrpc.Empty) (*testgrpc.Empty, error) {
	s.empty.Add(1)
	return &testgrpc.Empty{}, nil
}

func (s *countingTestService) UnaryCall(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	s.unary.Add(1)
	return &testgrpc.SimpleResponse{}, nil
}

// grpcRouteMesh: Service echo (the GRPCRoute's parent) and its two
// versions, each served by its own xDS gRPC server of pod greeter-0 (on
// ports v1 and v2). The GRPCRoute sends EmptyCall (an Exact service and
// method) and calls with x-canary: yes to v2, and everything else 80/20.
const grpcRouteMesh = `
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: greeter-0, namespace: shop, labels: {app: greeter}, annotations: {weft.dev/proxyless: grpc}}
spec: {serviceAccountName: greeter, containers: [{name: app, image: greeter}]}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: shop}
spec:
  clusterIP: 10.0.0.1
  selector: {app: greeter}
  ports: [{name: grpc, port: 80, targetPort: %[1]d}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: echo-1, namespace: shop, labels: {kubernetes.io/service-name: echo}}
addressType: IPv4
ports: [{name: grpc, port: %[1]d}]
endpoints: [{addresses: [127.0.0.1], targetRef: {kind: Pod, name: greeter-0, namespace: shop}}]
---
apiVersion: v1
kind: Service
metadata: {name: echo-v1, namespace: shop}
spec:
  clusterIP: 10.0.0.2
  selector: {app: greeter}
  ports: [{name: grpc, port: 80, targetPort: %[1]d}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: echo-v1-1, namespace: shop, labels: {kubernetes.io/service-name: echo-v1}}
addressType: IPv4
ports: [{name: grpc, port: %[1]d}]
endpoints: [{addresses: [127.0.0.1], targetRef: {kind: Pod, name: greeter-0, namespace: shop}}]
---
apiVersion: v1
kind: Service
metadata: {name: echo-v2, namespace: shop}
spec:
  clusterIP: 10.0.0.3
  selector: {app: greeter}
  ports: [{name: grpc, port: 80, targetPort: %[2]d}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: echo-v2-1, namespace: shop, labels: {kubernetes.io/service-name: echo-v2}}
addressType: IPv4
ports: [{name: grpc, port: %[2]d}]
endpoints: [{addresses: [127.0.0.1], targetRef: {kind: Pod, name: greeter-0, namespace: shop}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo, namespace: shop}
spec:
  parentRefs: [{kind: Service, name: echo, port: 80}]
  rules:
  - matches:
    - method: {service: grpc.testing.TestService, method: EmptyCall}
    - headers: [{name: x-canary, value: "yes"}]
    backendRefs: [{name: echo-v2, port: 80}]
  - backendRefs:
    - {name: echo-v1, port: 80, weight: 80}
    - {name: echo-v2, port: 80, weight: 20}
`

// TestProxylessGRPCRoute: a GAMMA GRPCRoute reaches real gRPC-Go xDS
// clients (docs/design/175). Two xDS-enabled servers stand for echo-v1
// and echo-v2. Every EmptyCall (the rule's Exact service and method) and
// every UnaryCall carrying x-canary: yes (its header match) reaches v2
// only; plain UnaryCalls split 80/20 between v1 and v2 within ±6 points
// over 1,000 calls (binomial: one standard deviation is 1.3 points).
func TestProxylessGRPCRoute(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	v1, v2 := &countingTestService{}, &countingTestService{}
	conn := proxylessServers(t, ctx, "shop", func(ports []int) string { return fmt.Sprintf(grpcRouteMesh, ports[0], ports[1]) },
		"xds:///echo.shop:80",
		func(s *xds.GRPCServer) { testgrpc.RegisterTestServiceServer(s, v1) },
		func(s *xds.GRPCServer) { testgrpc.RegisterTestServiceServer(s, v2) })
	client := testgrpc.NewTestServiceClient(conn)
	call := func(what string, f func(context.Context) error) {
		t.Helper()
		cctx, ccancel := context.WithTimeout(ctx, time.Minute)
		defer ccancel()
		if err := f(cctx); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}

	const methodCalls, unaryCalls = 200, 1000
	for range methodCalls {
		call("EmptyCall", func(c context.Context) error {
			_, err := client.EmptyCall(c, &testgrpc.Empty{}, grpc.WaitForReady(true))
			return err
		})
	}
	if got1, got2 := v1.empty.Load(), v2.empty.Load(); got1 != 0 || got2 != methodCalls {
		t.Errorf("EmptyCall (method match → echo-v2): v1 got %d, v2 got %d; want 0 and %d", got1, got2, methodCalls)
	}

	for range methodCalls {
		call("UnaryCall with x-canary", func(c context.Context) error {
			_, err := client.UnaryCall(metadata.AppendToOutgoingContext(c, "x-canary", "yes"), &testgrpc.SimpleRequest{}, grpc.WaitForReady(true))
			return err
		})
	}
	if got1, got2 := v1.unary.Load(), v2.unary.Load(); got1 != 0 || got2 != methodCalls {
		t.Fatalf("UnaryCall with x-canary: yes (header match → echo-v2): v1 got %d, v2 got %d; want 0 and %d", got1, got2, methodCalls)
	}

	v2.unary.Store(0)
	for range unaryCalls {
		call("UnaryCall", func(c context.Context) error {
			_, err := client.UnaryCall(c, &testgrpc.SimpleRequest{}, grpc.WaitForReady(true))
			return err
		})
	}
	got1, got2 := v1.unary.Load(), v2.unary.Load()
	share := 100 * float64(got1) / float64(unaryCalls)
	t.Logf("UnaryCall split: echo-v1 %d, echo-v2 %d of %d (%.1f%% / %.1f%%; configured 80/20)", got1, got2, unaryCalls, share, 100-share)
	if got1+got2 != unaryCalls || share < 74 || share > 86 {
		t.Errorf("UnaryCall split: echo-v1 %d, echo-v2 %d of %d; want 80%% ± 6 to echo-v1", got1, got2, unaryCalls)
	}
	if v1.empty.Load() != 0 {
		t.Errorf("an EmptyCall reached echo-v1")
	}
}
