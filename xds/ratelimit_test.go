package xds_test

import (
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	localrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"

	"github.com/weftmesh/weft/translator/ir"
	"github.com/weftmesh/weft/xds"
)

// checkoutLimit is a RateLimitPolicy on the shop mesh's checkout Service
// (docs/design/165), whose generation and requests per second GEN and
// REQ fill in, and an AuthPolicy on it (so the chains have RBAC filters).
const checkoutLimit = `
---
apiVersion: mesh.weft.dev/v1alpha1
kind: RateLimitPolicy
metadata: {name: checkout, namespace: shop, generation: GEN}
spec:
  targetRefs: [{group: "", kind: Service, name: checkout}]
  limit: {requests: REQ, unit: Second}
---
apiVersion: mesh.weft.dev/v1alpha1
kind: AuthPolicy
metadata: {name: checkout, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Service, name: checkout}]
  action: Allow
  rules: [{from: {namespaces: [shop]}}]
`

// TestRateLimitFilterReachesTheInboundChain: a RateLimitPolicy served
// through weft's ADS server reaches a checkout pod's sidecar as Envoy
// takes it: a Delta client that subscribes and ACKs like Envoy gets the
// inbound listener whose HTTP chains run the policy's local_ratelimit
// filter after the RBAC filters and before the router, with the limit as
// its workload bucket and Retry-After on; a caller's sidecar carries no
// limit; a new limit re-sends the inbound listener alone; and the
// policy's generation is Programmed once the proxy ACKs it.
func TestRateLimitFilterReachesTheInboundChain(t *testing.T) {
	withLimit := func(gen, req string) *ir.Mesh {
		return shopMesh(t, 10, func(s string) string {
			return s + strings.NewReplacer("GEN", gen, "REQ", req).Replace(checkoutLimit)
		})
	}
	ads := xds.NewADS(logr.Discard())
	ads.Update(withLimit("1", "50"), time.Now())
	addr := serve(t, ads)

	checkout := dialDelta(t, addr, node("checkout-0.shop", "shop", "checkout"), nil)
	frontend := dialDelta(t, addr, node("frontend-0.shop", "shop", "frontend"), nil)
	inbound := func(c *deltaClient) *listenerv3.Listener {
		t.Helper()
		var got *listenerv3.Listener
		deadline := time.Now().Add(time.Minute)
		for got == nil && time.Now().Before(deadline) {
			r := c.next()
			if r.TypeUrl != resourcev3.ListenerType {
				continue
			}
			for _, res := range r.Resources {
				if res.Name == "inbound" {
					got = &listenerv3.Listener{}
					if err := res.Resource.UnmarshalTo(got); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		if got == nil {
			t.Fatal("no inbound listener")
		}
		return got
	}
	// limits lists, per HTTP chain of the listener, the rate limits of its
	// connection manager: each filter's name, the workload bucket's
	// tokens per fill, and where it sits among the HTTP filters.
	type limit struct {
		chain, filter string
		perFill       uint32
		retryAfter    bool
		rbacBefore    bool // the AuthPolicy's RBAC filter runs first
		rbacLater     bool // an RBAC filter runs after it (a denied request would take a token)
		beforeRouter  bool
	}
	limits := func(l *listenerv3.Listener) []limit {
		var out []limit
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				var h hcmv3.HttpConnectionManager
				if !f.GetTypedConfig().MessageIs(&h) || f.GetTypedConfig().UnmarshalTo(&h) != nil {
					continue
				}
				rbac := false
				for i, hf := range h.GetHttpFilters() {
					rbac = rbac || strings.HasPrefix(hf.GetName(), "envoy.filters.http.rbac")
					var rl localrlv3.LocalRateLimit
					if !hf.GetTypedConfig().MessageIs(&rl) {
						continue
					}
					if err := hf.GetTypedConfig().UnmarshalTo(&rl); err != nil {
						t.Fatal(err)
					}
					lm := limit{chain: fc.GetName(), filter: hf.GetName(), retryAfter: rl.GetEnableRetryAfterHeader(), rbacBefore: rbac}
					for _, later := range h.GetHttpFilters()[i+1:] {
						lm.beforeRouter = lm.beforeRouter || later.GetName() == "envoy.filters.http.router"
						lm.rbacLater = lm.rbacLater || strings.HasPrefix(later.GetName(), "envoy.filters.http.rbac")
					}
					for _, d := range rl.GetDescriptors() {
						if e := d.GetEntries(); len(e) == 1 && e[0].GetKey() == "weft_limit" && e[0].GetValue() == "workload" {
							lm.perFill = d.GetTokenBucket().GetTokensPerFill().GetValue()
						}
					}
					out = append(out, lm)
				}
			}
		}
		return out
	}

	got := limits(inbound(checkout))
	if len(got) == 0 {
		t.Fatal("the checkout pod's inbound listener has no local_ratelimit filter")
	}
	for _, l := range got {
		t.Logf("chain %s: %s, %d a second", l.chain, l.filter, l.perFill)
		if l.filter != "envoy.filters.http.local_ratelimit.shop.checkout" || l.perFill != 50 || !l.retryAfter || !l.rbacBefore || l.rbacLater || !l.beforeRouter {
			t.Errorf("chain %s: %+v; want the policy's filter, 50 per fill, Retry-After, after the RBAC filters and before the router", l.chain, l)
		}
	}
	if l := limits(inbound(frontend)); len(l) != 0 {
		t.Errorf("the caller's sidecar carries rate limits %+v, want none", l)
	}
	checkout.settle()
	frontend.settle()
	ref := ir.PolicyRef{Kind: "RateLimitPolicy", Namespace: "shop", Name: "checkout", Generation: 1}
	if st := ads.PolicyState(ref); !st.Programmed() || st.Affected != 1 {
		t.Errorf("generation 1 after the ACKs: %+v, want programmed on the one checkout proxy", st)
	}

	// A new limit: the inbound listener again, with it, and nothing else.
	before := map[string]int{}
	for k, v := range checkout.count {
		before[k] = v
	}
	ads.Update(withLimit("2", "80"), time.Now())
	for _, l := range limits(inbound(checkout)) {
		if l.perFill != 80 {
			t.Errorf("after the change, chain %s: %d per fill, want 80", l.chain, l.perFill)
		}
	}
	checkout.settle()
	for k, v := range checkout.count {
		if k != resourcev3.ListenerType && v != before[k] {
			t.Errorf("a limit change re-sent %s (%d responses)", k, v-before[k])
		}
	}
	if n := frontend.settle(); n != 0 {
		t.Errorf("the caller's sidecar got %d responses for the server's limit, want none", n)
	}
	ref.Generation = 2
	if st := ads.PolicyState(ref); !st.Programmed() {
		t.Errorf("generation 2 after the ACK: %+v, want programmed", st)
	}
}
