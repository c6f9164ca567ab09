package envoy_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
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
			h := &flakyHealth{fail: 2}
			conn := proxylessGreeter(t, ctx, c.policy, h)
			rpcCtx, rpcCancel := context.WithTimeout(ctx, 30*time.Second)
			_, err := healthpb.NewHealthClient(conn).Check(rpcCtx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
			rpcCancel()
			if status.Code(err) != c.wantCode || h.calls.Load() != c.wantCalls {
				t.Fatalf("call: %v after %d server calls, want %s after %d", err, h.calls.Load(), c.wantCode, c.wantCalls)
			}
		})
	}
}
