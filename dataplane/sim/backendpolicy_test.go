package sim_test

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/dataplane/sim"
)

// BackendTrafficPolicy (docs/design/110) as the caller's sidecar applies
// it: the walk reads the cluster, the route or tcp_proxy and the request
// (never weft's builders) and reports, with Envoy's defaults for what the
// configuration leaves out, the circuit breakers, outlier detection, load
// balancer and hash key, and connection settings of the cluster the call
// took.

const webPolicy = `apiVersion: mesh.weft.dev/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: web, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Service, name: web}]
  circuitBreaker: {maxConnections: 10, maxPendingRequests: 5, maxRequests: 20, maxRetries: 2}
  outlierDetection:
    consecutive5xx: 3
    consecutiveGatewayErrors: 2
    failurePercentage: {threshold: 40, minimumHosts: 2, requestVolume: 10}
    interval: 5s
    baseEjectionTime: 1m
    maxEjectionPercent: 30
  loadBalancer: {type: RingHash, consistentHash: {type: Header, header: {name: x-user-id}}}
  connection: {connectTimeout: 250ms, idleTimeout: 5m, tcpKeepalive: {probes: 3, idleTime: 1m, interval: 10s}}`

const webRetries = `apiVersion: mesh.weft.dev/v1alpha1
kind: RetryPolicy
metadata: {name: retries, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Service, name: web}]
  budget: {percent: 10, minConcurrency: 2}`

func upstreamOf(t *testing.T, w *sim.World, c sim.Call) *sim.Upstream {
	t.Helper()
	v := walk(t, w, c)
	if v.Kind != sim.Delivered {
		t.Fatalf("%s -> %s: %s, want delivered", c.From, c.To, v)
	}
	if v.Upstream == nil {
		t.Fatalf("%s -> %s: no outbound cluster reported", c.From, c.To)
	}
	return v.Upstream
}

func TestBackendPolicyOnTheCluster(t *testing.T) {
	w := weftWorld(t, "testdata/shop.in.yaml", webPolicy, webRetries)
	want := sim.Upstream{
		Cluster: "outbound|80||web.shop.svc.cluster.local", LB: "RING_HASH", Hash: "header x-user-id=alice",
		MaxConnections: 10, MaxPendingRequests: 5, MaxRequests: 20, MaxRetries: 2,
		Outlier: &sim.Outlier{Consecutive5xx: 3, ConsecutiveGatewayFailure: 2,
			FailurePercentageThreshold: 40, FailurePercentageMinimumHosts: 2, FailurePercentageRequestVolume: 10,
			Interval: 5 * time.Second, BaseEjectionTime: time.Minute, MaxEjectionPercent: 30},
		ConnectTimeout: 250 * time.Millisecond, IdleTimeout: 5 * time.Minute,
		Keepalive: &sim.Keepalive{Probes: 3, Time: 60, Interval: 10},
	}
	t.Run("HTTP: every value, the header hashed, maxRetries instead of the RetryPolicy's budget", func(t *testing.T) {
		got := upstreamOf(t, w, sim.Call{From: "shop/client-0", To: "web.shop:80", Headers: map[string]string{"X-User-Id": "alice"}})
		if !reflect.DeepEqual(*got, want) {
			t.Errorf("upstream\n%s\nwant\n%s", got, &want)
		}
	})
	t.Run("gRPC and IPv6 take the same settings", func(t *testing.T) {
		got := upstreamOf(t, w, sim.Call{From: "shop/client-0", To: "[fd00:96::10]:80", Host: "web.shop", Protocol: sim.GRPC, Path: "/pkg.Svc/Get", Headers: map[string]string{"x-user-id": "bob"}})
		w6 := want
		w6.Cluster, w6.Hash = "outbound|80|ipv6|web.shop.svc.cluster.local", "header x-user-id=bob"
		if !reflect.DeepEqual(*got, w6) {
			t.Errorf("upstream\n%s\nwant\n%s", got, &w6)
		}
	})
	t.Run("without the header nothing is hashed: a random endpoint", func(t *testing.T) {
		if got := upstreamOf(t, w, sim.Call{From: "shop/client-0", To: "web.shop:80"}); got.LB != "RING_HASH" || got.Hash != "" {
			t.Errorf("upstream %s, want RING_HASH without a hash", got)
		}
	})
	t.Run("a Service without a policy: weft's defaults and Envoy's", func(t *testing.T) {
		got := upstreamOf(t, w, sim.Call{From: "shop/client-0", To: "secrets.vault:80"})
		def := sim.Upstream{Cluster: "outbound|80||secrets.vault.svc.cluster.local", LB: "ROUND_ROBIN",
			MaxConnections: 1024, MaxPendingRequests: 1024, MaxRequests: 1024, MaxRetries: 3,
			Outlier:        &sim.Outlier{Consecutive5xx: 5, Interval: 10 * time.Second, BaseEjectionTime: 30 * time.Second, MaxEjectionPercent: 50},
			ConnectTimeout: 5 * time.Second, IdleTimeout: time.Hour}
		if !reflect.DeepEqual(*got, def) {
			t.Errorf("upstream\n%s\nwant\n%s", got, &def)
		}
	})
}

func TestBackendPolicyRetryBudgetWithoutMaxRetries(t *testing.T) {
	w := weftWorld(t, "testdata/shop.in.yaml", webRetries, `apiVersion: mesh.weft.dev/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: web, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Service, name: web}]
  outlierDetection: {consecutive5xx: 0}
  loadBalancer: {type: LeastRequest}`)
	got := upstreamOf(t, w, sim.Call{From: "shop/client-0", To: "web.shop:80"})
	if got.LB != "LEAST_REQUEST" || got.RetryBudget == nil || *got.RetryBudget != (sim.RetryBudget{Percent: 10, MinConcurrency: 2}) {
		t.Errorf("upstream %s, want LEAST_REQUEST and the RetryPolicy's 10%%/2 budget", got)
	}
	if o := got.Outlier; o == nil || o.Consecutive5xx != 0 || o.ConsecutiveGatewayFailure != 0 || o.FailurePercentageThreshold != 0 {
		t.Errorf("outlier %+v, want every detector off (consecutive5xx: 0)", o)
	}
}

func TestBackendPolicyCookieHash(t *testing.T) {
	w := weftWorld(t, "testdata/shop.in.yaml", `apiVersion: mesh.weft.dev/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: web, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Service, name: web}]
  loadBalancer: {type: Maglev, consistentHash: {type: Cookie, cookie: {name: session, ttl: 1h, path: /}}}`)
	got := upstreamOf(t, w, sim.Call{From: "shop/client-0", To: "web.shop:80", Headers: map[string]string{"cookie": "theme=dark; session=s-42"}})
	if got.LB != "MAGLEV" || got.Hash != "cookie session=s-42" || got.CookieSet != "" {
		t.Errorf("upstream %s, want MAGLEV on cookie session=s-42", got)
	}
	got = upstreamOf(t, w, sim.Call{From: "shop/client-0", To: "web.shop:80"})
	if got.CookieSet != "session" || !strings.Contains(got.Hash, "generated") || !strings.Contains(got.Hash, "1h0m0s") {
		t.Errorf("upstream %s (cookie set %q), want the sidecar to create the session cookie for 1h", got, got.CookieSet)
	}
}

func TestBackendPolicyTCP(t *testing.T) {
	w := weftWorld(t, "testdata/shop.in.yaml", `apiVersion: mesh.weft.dev/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: mysql, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Service, name: mysql}]
  circuitBreaker: {maxConnections: 50}
  loadBalancer: {type: Maglev, consistentHash: {type: SourceIP}}
  connection: {idleTimeout: 10m}`)
	got := upstreamOf(t, w, sim.Call{From: "shop/client-0", To: "mysql.shop:3306", Protocol: sim.ServerFirst})
	if got.Cluster != "outbound|3306||mysql.shop.svc.cluster.local" || got.LB != "MAGLEV" || got.Hash != "source IP 10.1.0.30" ||
		got.IdleTimeout != 10*time.Minute || got.MaxConnections != 50 {
		t.Errorf("upstream %s, want MAGLEV on the client's address 10.1.0.30, 50 connections, idle 10m", got)
	}
}

// A split whose backends hash on different keys: the route hashes on
// both, in the backends' order, so equal keys still meet equal endpoints.
func TestBackendPolicySplitHashesOnEveryBackendsKey(t *testing.T) {
	w := weftWorld(t, "testdata/shop.in.yaml", `apiVersion: v1
kind: Service
metadata: {name: web-next, namespace: shop}
spec: {clusterIP: 10.96.0.11, selector: {app: web}, ports: [{name: http, port: 80, targetPort: 8080}]}`, `apiVersion: mesh.weft.dev/v1alpha1
kind: TrafficSplit
metadata: {name: web, namespace: shop}
spec:
  rootService: {name: web}
  backends: [{name: web, weight: 90}, {name: web-next, weight: 10}]`, `apiVersion: mesh.weft.dev/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: web, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Service, name: web}]
  loadBalancer: {type: RingHash, consistentHash: {type: Header, header: {name: x-user-id}}}`, `apiVersion: mesh.weft.dev/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: web-next, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Service, name: web-next}]
  loadBalancer: {type: RingHash, consistentHash: {type: SourceIP}}`)
	got := upstreamOf(t, w, sim.Call{From: "shop/client-0", To: "web.shop:80", Headers: map[string]string{"x-user-id": "carol"}})
	if got.Cluster != "outbound|80||web.shop.svc.cluster.local" || got.Hash != "header x-user-id=carol + source IP 10.1.0.30" {
		t.Errorf("upstream %s, want web's ring hashed on the header and the source IP", got)
	}
}
