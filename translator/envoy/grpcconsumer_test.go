package envoy_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
)

// consumerRoute is a consumer route of namespace web on shop/greeter
// (docs/design/176) with a request timeout, and an AuthPolicy that admits
// web's frontend too.
const consumerRoute = `
apiVersion: v1
kind: Namespace
metadata: {name: web}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: greeter, namespace: web}
spec:
  parentRefs: [{group: "", kind: Service, name: greeter, namespace: shop, port: 80}]
  rules:
  - backendRefs: [{name: greeter, namespace: shop, port: 80}]
    timeouts: {request: 300ms}
---
apiVersion: mesh.weft.dev/v1alpha1
kind: AuthPolicy
metadata: {name: greeter-web, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Service, name: greeter}]
  action: Allow
  rules: [{from: {serviceAccounts: [web/frontend]}}]
`

// TestProxylessGRPCConsumerRoute: a real gRPC-Go xDS client in web takes
// web's consumer route of shop/greeter (its 300ms request timeout cuts a
// call the server answers after 3s: DEADLINE_EXCEEDED), and one in shop
// takes the producer's routing, which has no timeout: the call waits and
// succeeds. Both hold a route configuration of the same name.
func TestProxylessGRPCConsumerRoute(t *testing.T) {
	for _, c := range []struct {
		ns   string
		want codes.Code
	}{
		{"web", codes.DeadlineExceeded},
		{"shop", codes.OK},
	} {
		t.Run(c.ns, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			conn := proxylessGreeterFrom(t, ctx, consumerRoute, &sleepyHealth{pause: 3 * time.Second}, c.ns)
			got, durs := callMany(ctx, conn, 1, 1)
			t.Logf("%s after %s", got[0], durs[0])
			if got[0] != c.want {
				t.Errorf("call from %s: %s, want %s", c.ns, got[0], c.want)
			}
		})
	}
}
