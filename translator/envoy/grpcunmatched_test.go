package envoy_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
)

const greeterMatchRoute = `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: greeter, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: greeter, port: 80}]
  rules:
  - matches: [{path: {type: PathPrefix, value: %s}}]
    backendRefs: [{name: greeter, port: 80}]
`

// TestProxylessGRPCUnmatched: a call that no rule of the Service's
// HTTPRoute matches fails with UNAVAILABLE at a real gRPC-Go xDS client
// (gRPC-Go's "no matching route found") and never reaches the server; a
// call the rule matches succeeds (docs/design/177: no catch-all to the
// parent Service follows an HTTPRoute's rules).
func TestProxylessGRPCUnmatched(t *testing.T) {
	for _, c := range []struct {
		name, prefix string
		want         codes.Code
	}{
		{"matched", "/grpc.health.v1.Health", codes.OK},
		{"unmatched", "/grpc.health.v1.Health/Watch", codes.Unavailable},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			h := &countingHealth{}
			conn := proxylessGreeter(t, ctx, fmt.Sprintf(greeterMatchRoute, c.prefix), h)
			got, _ := callMany(ctx, conn, 5, 1)
			for i, code := range got {
				if code != c.want {
					t.Errorf("call %d of /grpc.health.v1.Health/Check with a rule for %s: %s, want %s", i, c.prefix, code, c.want)
				}
			}
			if want := map[bool]int32{true: 5, false: 0}[c.want == codes.OK]; h.calls.Load() != want {
				t.Errorf("the server saw %d calls, want %d", h.calls.Load(), want)
			}
		})
	}
}
