package sim_test

import (
	"testing"
	"time"

	"github.com/weftmesh/weft/dataplane/sim"
)

// Gateway API HTTPRoute timeouts (docs/design/155) as the caller's
// sidecar applies them: the walk reads the route's timeout and retry
// policy (Envoy's 15s when a route sets no timeout), never weft's
// builders. request bounds the whole request, retries included;
// backendRequest bounds each try: the retry policy's per_try_timeout when
// the route retries, the route's timeout (with request, the shorter)
// when it does not.

const webTimeouts = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /both}}]
    backendRefs: [{name: web, port: 80}]
    timeouts: {request: 10s, backendRequest: 2s}
  - matches: [{path: {type: PathPrefix, value: /backend}}]
    backendRefs: [{name: web, port: 80}]
    timeouts: {backendRequest: 3s}
  - matches: [{path: {type: PathPrefix, value: /request}}]
    backendRefs: [{name: web, port: 80}]
    timeouts: {request: 4s}
  - matches: [{path: {type: PathPrefix, value: /off}}]
    backendRefs: [{name: web, port: 80}]
    timeouts: {request: 0s}
  - matches: [{path: {type: PathPrefix, value: /tryoff}}]
    backendRefs: [{name: web, port: 80}]
    timeouts: {backendRequest: 0s}
  - backendRefs: [{name: web, port: 80}]`

const webRouteRetries = `apiVersion: mesh.weft.dev/v1alpha1
kind: RetryPolicy
metadata: {name: web, namespace: shop}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: web}]
  retryOn: [5xx]
  attempts: 2
  perTryTimeout: 1s
  timeout: 20s`

func routeOf(t *testing.T, w *sim.World, c sim.Call) *sim.RoutePolicy {
	t.Helper()
	v := walk(t, w, c)
	if v.Kind != sim.Delivered {
		t.Fatalf("%s -> %s%s: %s, want delivered", c.From, c.To, c.Path, v)
	}
	if v.Route == nil {
		t.Fatalf("%s -> %s%s: no outbound route reported", c.From, c.To, c.Path)
	}
	t.Logf("%s%s: %s", c.To, c.Path, v.Route)
	return v.Route
}

func TestHTTPRouteTimeouts(t *testing.T) {
	type want struct {
		timeout, perTry time.Duration
		retries         uint32
	}
	for _, tc := range []struct {
		name  string
		extra []string
		paths map[string]want
	}{
		{"without retries backendRequest bounds the one try", []string{webTimeouts}, map[string]want{
			"/both":    {timeout: 2 * time.Second},
			"/backend": {timeout: 3 * time.Second},
			"/request": {timeout: 4 * time.Second},
			"/off":     {timeout: 0},
			"/tryoff":  {timeout: 0},
			"/":        {timeout: 0},
		}},
		{"with retries backendRequest is the per-try timeout and beats the RetryPolicy's", []string{webTimeouts, webRouteRetries}, map[string]want{
			"/both":    {timeout: 10 * time.Second, perTry: 2 * time.Second, retries: 2},
			"/backend": {timeout: 20 * time.Second, perTry: 3 * time.Second, retries: 2},
			"/request": {timeout: 4 * time.Second, perTry: time.Second, retries: 2},
			"/":        {timeout: 20 * time.Second, perTry: time.Second, retries: 2},
		}},
		// Gateway API: a zero duration disables the timeout, so an
		// explicit 0s beats the RetryPolicy's as any other value does
		// (Envoy: a route timeout or per_try_timeout of 0 is none).
		{"with retries an explicit 0s disables the RetryPolicy's timeout", []string{webTimeouts, webRouteRetries}, map[string]want{
			"/off":    {timeout: 0, perTry: time.Second, retries: 2},
			"/tryoff": {timeout: 20 * time.Second, perTry: 0, retries: 2},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := weftWorld(t, "testdata/shop.in.yaml", tc.extra...)
			for path, exp := range tc.paths {
				for _, proto := range []sim.Protocol{sim.HTTP1, sim.GRPC} {
					r := routeOf(t, w, sim.Call{From: "shop/client-0", To: "web.shop:80", Path: path, Protocol: proto})
					if r.Timeout != exp.timeout || r.PerTryTimeout != exp.perTry || r.Retries != exp.retries {
						t.Errorf("%s %s: timeout %s, per try %s, %d retries; want %s, %s, %d", proto, path, r.Timeout, r.PerTryTimeout, r.Retries, exp.timeout, exp.perTry, exp.retries)
					}
				}
			}
		})
	}
}

// TestRetryPolicyIdleAndZeroTimeouts: a RetryPolicy's idleTimeout is the
// caller's route idle timeout (Envoy's route idle_timeout, which replaces
// the connection manager's stream_idle_timeout); without one no idle
// limit applies (weft turns the manager's 5-minute default off); and a
// RetryPolicy timeout of 0s is no timeout, not Envoy's 15s default.
func TestRetryPolicyIdleAndZeroTimeouts(t *testing.T) {
	const policy = `apiVersion: mesh.weft.dev/v1alpha1
kind: RetryPolicy
metadata: {name: web, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Service, name: web}]
  attempts: 1
`
	for _, tc := range []struct {
		name, spec    string
		timeout, idle time.Duration
	}{
		{"idle 5m, timeout 1h", "  idleTimeout: 5m\n  timeout: 1h\n", time.Hour, 5 * time.Minute},
		{"idle 90s, timeout 0s", "  idleTimeout: 90s\n  timeout: 0s\n", 0, 90 * time.Second},
		{"neither", "", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := weftWorld(t, "testdata/shop.in.yaml", policy+tc.spec)
			for _, proto := range []sim.Protocol{sim.HTTP1, sim.GRPC} {
				r := routeOf(t, w, sim.Call{From: "shop/client-0", To: "web.shop:80", Path: "/", Protocol: proto})
				if r.Timeout != tc.timeout || r.IdleTimeout != tc.idle {
					t.Errorf("%s: timeout %s, idle timeout %s; want %s, %s", proto, r.Timeout, r.IdleTimeout, tc.timeout, tc.idle)
				}
			}
		})
	}
}
