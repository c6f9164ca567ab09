package sim_test

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/dataplane/sim"
)

// RateLimitPolicy (docs/design/165) as the destination's sidecar applies
// it: the walk reads the local_ratelimit filter of the inbound chain a call
// takes, produces the request's descriptors from the filter's rate_limits
// actions (the peer certificate's URI SAN for the caller), matches them
// against the filter's descriptors as Envoy does (a wildcard value: one
// bucket per value) and reports every bucket the request takes a token
// from, in Envoy's order — never weft's builders.

const webLimits = `apiVersion: mesh.weft.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: web, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Service, name: web}]
  limit: {requests: 100, unit: Second, burst: 200}
  callerLimit: {requests: 20, unit: Minute}
  rules:
  - name: login
    match: {paths: [{type: Exact, value: /login}], methods: [POST]}
    callerLimit: {requests: 5, unit: Second}
  - name: api
    match: {paths: [{type: PathPrefix, value: /api}, {type: PathPrefix, value: /api/v1}], methods: [GET, HEAD]}
    limit: {requests: 50, unit: Second}
  response: {statusCode: 503, rateLimitHeaders: false}`

// legacy-0 (unmeshed, plaintext) may call web too.
var legacyAllowed = []string{"rules: [{from: {serviceAccounts: [shop/client]}}]", "rules: [{from: {serviceAccounts: [shop/client]}}, {from: {ipBlocks: [10.1.0.50/32]}}]"}

const rlClientID = "spiffe://cluster.local/ns/shop/sa/client"

func bucket(desc string, per time.Duration, requests, burst uint32, perValue bool) sim.Bucket {
	return sim.Bucket{Descriptor: desc, PerValue: perValue, MaxTokens: burst, TokensPerFill: requests, FillInterval: per}
}

// onlyLimit returns the one rate limit a call passed, at pod.
func onlyLimit(t *testing.T, v sim.Verdict, pod string) sim.RateLimit {
	t.Helper()
	if len(v.RateLimits) != 1 {
		t.Fatalf("%d rate limits passed, want 1 at %s: %v", len(v.RateLimits), pod, v.RateLimits)
	}
	if got := v.RateLimits[0].Pod; got != pod {
		t.Fatalf("rate limit applied at %s, want %s (the destination's sidecar)", got, pod)
	}
	return v.RateLimits[0]
}

func TestRateLimitOnTheInboundChain(t *testing.T) {
	w := weftWorldWith(t, legacyAllowed, webLimits)
	workload := bucket("weft_limit=workload", time.Second, 100, 200, false)
	callerOf := func(id string) sim.Bucket {
		return bucket("weft_limit=caller, weft_caller="+id, time.Minute, 20, 20, true)
	}
	for _, c := range []struct {
		name string
		call sim.Call
		want []sim.Bucket
	}{
		{"a GET under /api over mTLS: the caller's bucket, the rule's, the workload's, slowest first",
			sim.Call{From: "shop/client-0", To: "web.shop:80", Path: "/api/items?page=2"},
			[]sim.Bucket{callerOf(rlClientID), bucket("weft_limit=rule:api", time.Second, 50, 50, false), workload}},
		{"/api itself, and over IPv6",
			sim.Call{From: "shop/client-0", To: "web.shop:80", IPv6: true, Path: "/api", Method: "HEAD"},
			[]sim.Bucket{callerOf(rlClientID), bucket("weft_limit=rule:api", time.Second, 50, 50, false), workload}},
		{"/apiv1 is not under /api (element-wise prefix): no rule",
			sim.Call{From: "shop/client-0", To: "web.shop:80", Path: "/apiv1"},
			[]sim.Bucket{callerOf(rlClientID), workload}},
		{"/api/v1 is under both prefixes of the rule: one token, not two",
			sim.Call{From: "shop/client-0", To: "web.shop:80", Path: "/api/v1/x"},
			[]sim.Bucket{callerOf(rlClientID), bucket("weft_limit=rule:api", time.Second, 50, 50, false), workload}},
		{"POST /api is not a GET or HEAD: no rule",
			sim.Call{From: "shop/client-0", To: "web.shop:80", Method: "POST", Path: "/api"},
			[]sim.Bucket{callerOf(rlClientID), workload}},
		{"POST /login: the caller's login bucket",
			sim.Call{From: "shop/client-0", To: "web.shop:80", Method: "POST", Path: "/login?next=/"},
			[]sim.Bucket{callerOf(rlClientID), bucket("weft_limit=rule:login:caller, weft_caller="+rlClientID, time.Second, 5, 5, true), workload}},
		{"a path normalized by the sidecar counts as what the application sees",
			sim.Call{From: "shop/client-0", To: "web.shop:80", Method: "POST", Path: "//login"},
			[]sim.Bucket{callerOf(rlClientID), bucket("weft_limit=rule:login:caller, weft_caller="+rlClientID, time.Second, 5, 5, true), workload}},
		{"a plaintext caller (Permissive) is the one 'plaintext' caller",
			sim.Call{From: "shop/legacy-0", To: "web.shop:80", Method: "POST", Path: "/login"},
			[]sim.Bucket{callerOf("plaintext"), bucket("weft_limit=rule:login:caller, weft_caller=plaintext", time.Second, 5, 5, true), workload}},
	} {
		t.Run(c.name, func(t *testing.T) {
			v := walk(t, w, c.call)
			if v.Kind != sim.Delivered || v.Pod != "shop/web-0" {
				t.Fatalf("verdict %s, want delivered to shop/web-0", v)
			}
			rl := onlyLimit(t, v, "shop/web-0")
			if rl.Enabled != 100 || rl.Enforced != 100 || rl.Status != 503 || rl.GRPCStatus != 8 || rl.Headers || rl.Connections || rl.Limited {
				t.Errorf("rate limit %+v: want enabled and enforced, HTTP 503, RESOURCE_EXHAUSTED for gRPC, no headers", rl)
			}
			if !reflect.DeepEqual(rl.Buckets, c.want) {
				t.Errorf("buckets\n  %v\nwant\n  %v", rl.Buckets, c.want)
			}
		})
	}

	t.Run("other workloads and the caller's own sidecar carry no limit", func(t *testing.T) {
		for _, c := range []sim.Call{
			{From: "shop/client-0", To: "mysql.shop:3306", Protocol: sim.ServerFirst},
			{From: "shop/client-0", To: "secrets.vault:80"},
		} {
			if v := walk(t, w, c); len(v.RateLimits) != 0 {
				t.Errorf("%s: rate limits %v, want none", c.To, v.RateLimits)
			}
		}
	})
}

func TestRateLimitEnforcedOrOnlyCounted(t *testing.T) {
	over := sim.Call{From: "shop/client-0", To: "web.shop:80", Path: "/api", EmptyBuckets: true}
	t.Run("Enforce: the first empty bucket answers 503", func(t *testing.T) {
		v := walk(t, weftWorld(t, "testdata/shop.in.yaml", webLimits), over)
		if v.Kind != sim.RateLimited || v.Status != 503 || !strings.Contains(v.Reason, "weft_limit=caller") {
			t.Errorf("verdict %s, want RateLimited, HTTP 503, by the caller's bucket (the slowest)", v)
		}
		if rl := onlyLimit(t, v, "shop/web-0"); !rl.Limited {
			t.Errorf("rate limit %+v not limited", rl)
		}
	})
	t.Run("Enforce, gRPC: HTTP 200 with grpc-status RESOURCE_EXHAUSTED", func(t *testing.T) {
		g := over
		g.Protocol, g.Path = sim.GRPC, "/shop.Web/Get"
		v := walk(t, weftWorld(t, "testdata/shop.in.yaml", webLimits), g)
		if v.Kind != sim.RateLimited || v.Status != 200 || !strings.Contains(v.Reason, "grpc-status 8") {
			t.Errorf("verdict %s, want RateLimited with grpc-status 8", v)
		}
	})
	t.Run("Enforce, 503 without rateLimitHeaders: no Retry-After", func(t *testing.T) {
		v := walk(t, weftWorld(t, "testdata/shop.in.yaml", webLimits), over)
		if rl := onlyLimit(t, v, "shop/web-0"); rl.RetryAfter != 0 {
			t.Errorf("rate limit %+v: want no Retry-After", rl)
		}
	})
	t.Run("Enforce, the default 429 with rateLimitHeaders: Retry-After", func(t *testing.T) {
		defaults := strings.Replace(webLimits, "  response: {statusCode: 503, rateLimitHeaders: false}", "", 1)
		v := walk(t, weftWorld(t, "testdata/shop.in.yaml", defaults), over)
		rl := onlyLimit(t, v, "shop/web-0")
		// The rejecting bucket is the caller's, 20 a minute: its next
		// token is at most a minute away.
		if v.Kind != sim.RateLimited || v.Status != 429 || rl.RetryAfter != time.Minute || !rl.Headers {
			t.Errorf("verdict %s, rate limit %+v: want 429 with Retry-After (at most 1m) and X-RateLimit-* headers", v, rl)
		}
	})
	t.Run("Enforce, gRPC with rateLimitHeaders: no Retry-After (not an HTTP 429)", func(t *testing.T) {
		defaults := strings.Replace(webLimits, "  response: {statusCode: 503, rateLimitHeaders: false}", "", 1)
		g := over
		g.Protocol, g.Path = sim.GRPC, "/shop.Web/Get"
		v := walk(t, weftWorld(t, "testdata/shop.in.yaml", defaults), g)
		if rl := onlyLimit(t, v, "shop/web-0"); v.Kind != sim.RateLimited || rl.RetryAfter != 0 {
			t.Errorf("verdict %s, rate limit %+v: want limited, no Retry-After", v, rl)
		}
	})
	t.Run("DryRun: counted, delivered", func(t *testing.T) {
		dry := strings.Replace(webLimits, "  limit: {requests: 100", "  mode: DryRun\n  limit: {requests: 100", 1)
		v := walk(t, weftWorld(t, "testdata/shop.in.yaml", dry), over)
		if v.Kind != sim.Delivered || v.Pod != "shop/web-0" {
			t.Fatalf("verdict %s, want delivered: DryRun only counts", v)
		}
		rl := onlyLimit(t, v, "shop/web-0")
		if !rl.Limited || rl.Enabled != 100 || rl.Enforced != 0 || len(rl.Buckets) != 3 {
			t.Errorf("rate limit %+v: want counted as limited, enabled 100%%, enforced 0%%, the same three buckets", rl)
		}
	})
	t.Run("under the limit: delivered", func(t *testing.T) {
		under := over
		under.EmptyBuckets = false
		if v := walk(t, weftWorld(t, "testdata/shop.in.yaml", webLimits), under); v.Kind != sim.Delivered {
			t.Errorf("verdict %s, want delivered", v)
		}
	})
}

const mysqlLimits = `apiVersion: mesh.weft.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: mysql, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Service, name: mysql}]
  limit: {requests: 10, unit: Minute, burst: 30}`

func TestRateLimitTCPConnections(t *testing.T) {
	call := sim.Call{From: "shop/client-0", To: "mysql.shop:3306", Protocol: sim.ServerFirst}
	t.Run("Enforce: each connection takes a token", func(t *testing.T) {
		w := weftWorld(t, "testdata/shop.in.yaml", mysqlLimits)
		v := walk(t, w, call)
		if v.Kind != sim.Delivered {
			t.Fatalf("verdict %s, want delivered", v)
		}
		rl := onlyLimit(t, v, "shop/mysql-0")
		if want := []sim.Bucket{bucket("connections", time.Minute, 10, 30, false)}; !rl.Connections || !reflect.DeepEqual(rl.Buckets, want) {
			t.Errorf("rate limit %+v, want connections %v", rl, want)
		}
		if rl.ShareKey == "" {
			t.Errorf("rate limit %+v has no share_key: each of the port's chains would count alone", rl)
		}
		over := call
		over.EmptyBuckets = true
		if v := walk(t, w, over); v.Kind != sim.Reset || !strings.Contains(v.Reason, "no token for a new connection") {
			t.Errorf("verdict %s, want the connection closed", v)
		}
		// Plaintext from an unmeshed pod, and its application's own TLS
		// (Permissive): the same limit, the same shared bucket.
		for _, c := range []sim.Call{
			{From: "shop/legacy-0", To: "mysql.shop:3306", Protocol: sim.ServerFirst},
			{From: "shop/legacy-0", To: "mysql.shop:3306", Protocol: sim.TCP, TLS: &sim.AppTLS{SNI: "mysql.shop"}},
		} {
			v := walk(t, w, c)
			// (mysql speaks plaintext: TLS fails at the application,
			// after the sidecar counted the connection.)
			if v.Kind != sim.Delivered && !(c.TLS != nil && v.Kind == sim.TLSFailure) {
				t.Fatalf("verdict %s, want it through the sidecar", v)
			}
			if got := onlyLimit(t, v, "shop/mysql-0"); got.ShareKey != rl.ShareKey || !reflect.DeepEqual(got.Buckets, rl.Buckets) {
				t.Errorf("rate limit %+v, want the mTLS chain's bucket shared (%q)", got, rl.ShareKey)
			}
		}
	})
	t.Run("DryRun: Envoy's network filter cannot only count, so there is none", func(t *testing.T) {
		w := weftWorld(t, "testdata/shop.in.yaml", strings.Replace(mysqlLimits, "  limit:", "  mode: DryRun\n  limit:", 1))
		over := call
		over.EmptyBuckets = true
		if v := walk(t, w, over); v.Kind != sim.Delivered || len(v.RateLimits) != 0 {
			t.Errorf("verdict %s with %v, want delivered with no rate limit", v, v.RateLimits)
		}
	})
}
