package xds_test

import (
	"strings"
	"testing"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"

	"github.com/weftmesh/weft/translator/ir"
	"github.com/weftmesh/weft/xds"
)

// TestAnonymousProxiesDoNotWritePolicyStatus: a client of the anonymous
// endpoint proves nothing, so its ACKs and NACKs must not decide a policy's
// Programmed condition (issue 13: one anonymous NACK produced Rejected=1
// with a 40,038-byte message, and an anonymous client that never ACKs would
// hold `kubectl wait` forever). An authenticated proxy's NACK is reported,
// truncated and attributed to the proxy and resource type.
func TestAnonymousProxiesDoNotWritePolicyStatus(t *testing.T) {
	ads := xds.NewADS(logr.Discard())
	ads.SetAuthenticator(acceptAll{})
	ads.Update(mesh(t, 10), time.Now())
	real := dialDelta(t, serve(t, ads), node("frontend-0.shop", "shop", "frontend"), nil)
	real.settle()
	anon := dialDelta(t, serveAnonymous(t, ads), node("frontend-9.shop", "shop", "frontend"), nil)
	anon.settle()

	huge := strings.Repeat("x", 40038)
	anon.nackTyp, anon.nackMsg = resourcev3.RouteType, "anonymous: "+huge
	ads.Update(mesh(t, 40), time.Now())
	real.settle()
	anon.settle()
	ref := ir.PolicyRef{Kind: "TrafficSplit", Namespace: "shop", Name: "checkout", Generation: 40}
	if st := ads.PolicyState(ref); st.Affected != 1 || st.Rejected != 0 || !st.Programmed() {
		t.Fatalf("with one authenticated proxy that ACKed and one anonymous that NACKed, policy state = {Affected:%d Acked:%d Rejected:%d Message:%d bytes}; want 1 affected, 1 acked, 0 rejected",
			st.Affected, st.Acked, st.Rejected, len(st.Message))
	}

	// The authenticated proxy's huge NACK: reported, bounded, attributed.
	real.nackTyp, real.nackMsg = resourcev3.RouteType, huge
	ads.Update(mesh(t, 50), time.Now())
	real.settle()
	st := ads.PolicyState(ir.PolicyRef{Kind: "TrafficSplit", Namespace: "shop", Name: "checkout", Generation: 50})
	if st.Rejected != 1 {
		t.Fatalf("policy state = %+v, want the authenticated NACK counted", st.Rejected)
	}
	// The replica report asks for every policy at once (PolicyStates):
	// the same answer, and nothing for a generation no longer carried.
	both := ads.PolicyStates([]ir.PolicyRef{{Kind: "TrafficSplit", Namespace: "shop", Name: "checkout", Generation: 40}, {Kind: "TrafficSplit", Namespace: "shop", Name: "checkout", Generation: 50}})
	if both[0] != (xds.PolicyState{}) || both[1] != st {
		t.Fatalf("PolicyStates(generations 40, 50) = %+v; want nothing for 40 and %+v for 50", both, st)
	}
	if len(st.Message) > xds.MaxNackMessageBytes+512 {
		t.Errorf("the NACK message in policy status is %d bytes (the proxy sent %d); want at most %d + attribution", len(st.Message), len(huge), xds.MaxNackMessageBytes)
	}
	for _, want := range []string{"frontend-0.shop", "RouteConfiguration", "outbound|80||checkout.shop.svc.cluster.local", "truncated"} {
		if !strings.Contains(st.Message, want) {
			t.Errorf("NACK message %.300q does not name %q (which proxy, which resource)", st.Message, want)
		}
	}
	for _, p := range ads.Proxies() {
		if n := p.Types["RouteConfiguration"].Nack; n != nil && len(n.Message) > xds.MaxNackMessageBytes+64 {
			t.Errorf("the registry keeps a %d-byte NACK message for %s", len(n.Message), p.ID)
		}
	}
}
