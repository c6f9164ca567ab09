package xds_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/internal/controller/status"
	"github.com/weftmesh/weft/translator/ir"
	"github.com/weftmesh/weft/xds"
)

// TestNeverAckingProxyDoesNotHoldProgrammed (issue 13, items 2 and 3): an
// authenticated proxy that never answers its configuration held its
// policies' Programmed at Unknown/Pending forever (and `kubectl wait`
// with it); the connection age only made it reconnect and hold them
// again. Past xds.ProxyAckTimeout (shortened here to 2 s) it counts as
// rejecting: the policy's Programmed turns False, ProxyRejected, naming
// the proxy; the status writer is told at that moment (OnAck), as for an
// answer; a late ACK counts as usual. Another proxy of the same group
// ACKs at once throughout.
func TestNeverAckingProxyDoesNotHoldProgrammed(t *testing.T) {
	// Long enough that the good proxy has ACKed well before it on a loaded
	// machine (the "right after the push" check below), short for a test.
	const timeout = 8 * time.Second
	ads := xds.NewADS(logr.Discard())
	ads.SetAuthenticator(acceptAll{})
	xds.SetProxyAckTimeout(ads, timeout)
	var mu sync.Mutex
	var told []time.Time
	ads.OnAck(func([]ir.PolicyRef) { mu.Lock(); told = append(told, time.Now()); mu.Unlock() })
	ads.Update(mesh(t, 10), time.Now())
	addr := serve(t, ads)
	good := dialDelta(t, addr, node("frontend-0.shop", "shop", "frontend"), nil)
	good.settle()
	stuck := dialDelta(t, addr, node("frontend-1.shop", "shop", "frontend"), nil)
	stuck.settle() // takes generation 10, then stops answering

	pushed := time.Now()
	ads.Update(mesh(t, 40), pushed)
	good.settle()
	ref := ir.PolicyRef{Kind: "TrafficSplit", Namespace: "shop", Name: "checkout", Generation: 40}
	cond := func(st xds.PolicyState) metav1.Condition {
		return status.ProgrammedCondition(40, true, status.Distribution{Generation: 40, Proxies: st.Affected, Acked: st.Acked, Rejected: st.Rejected, Error: st.Message}, true)
	}
	if st := ads.PolicyState(ref); st.Affected != 2 || st.Acked != 1 || st.Rejected != 0 || cond(st).Reason != v1alpha1.ReasonPending {
		t.Fatalf("right after the push: %+v (%s); want 2 affected, 1 acked, Pending", st, cond(st).Reason)
	}
	var st xds.PolicyState
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if st = ads.PolicyState(ref); st.Rejected == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a minute after the push: %+v; want the silent proxy counted as rejecting after %v", st, timeout)
		}
	}
	after := time.Since(pushed)
	if after < timeout {
		t.Fatalf("the silent proxy counted as rejecting %v after the push, before xds.ProxyAckTimeout (%v)", after, timeout)
	}
	c := cond(st)
	if c.Status != metav1.ConditionFalse || c.Reason != v1alpha1.ReasonProxyRejected || !strings.Contains(c.Message, "frontend-1.shop") || !strings.Contains(c.Message, "xds.ProxyAckTimeout") {
		t.Fatalf("Programmed = %s %s %q; want False, ProxyRejected, naming frontend-1.shop and xds.ProxyAckTimeout", c.Status, c.Reason, c.Message)
	}
	t.Logf("%v after the push: Programmed=%s %s: %s", after.Round(time.Millisecond), c.Status, c.Reason, c.Message)
	// The writer heard of it when the timeout passed, with no answer from
	// anyone to prompt it.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		n := 0
		for _, at := range told {
			if at.Sub(pushed) >= timeout {
				n++
			}
		}
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the status writer was not told when the proxy passed xds.ProxyAckTimeout")
		}
	}

	// A late answer counts as usual.
	stuck.settle()
	if st := ads.PolicyState(ref); st.Acked != 2 || st.Rejected != 0 || cond(st).Reason != v1alpha1.ReasonProgrammed {
		t.Fatalf("after the late ACK: %+v (%s); want 2 acked, Programmed", st, cond(st).Reason)
	}
}

// TestSilentProxyLeavingReleasesProgrammed (issue 13, the silent node
// loss): a proxy that holds a policy Pending and then goes away — its
// stream ended, by keepalive (a node gone without a FIN: 30 s ping + 10 s,
// 077 measured 41 s), the connection age or a crash — stops counting, and
// the status writer must hear it then: before, nothing told it, and the
// policy stayed Pending until some other proxy's answer.
func TestSilentProxyLeavingReleasesProgrammed(t *testing.T) {
	ads := xds.NewADS(logr.Discard())
	ads.SetAuthenticator(acceptAll{})
	var mu sync.Mutex
	told := 0
	ads.OnAck(func([]ir.PolicyRef) { mu.Lock(); told++; mu.Unlock() })
	ads.Update(mesh(t, 40), time.Now())
	addr := serve(t, ads)
	good := dialDelta(t, addr, node("frontend-0.shop", "shop", "frontend"), nil)
	good.settle()

	// A proxy of the same group that subscribes and never answers.
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node("frontend-1.shop", "shop", "frontend"), TypeUrl: resourcev3.ClusterType, ResourceNamesSubscribe: []string{"*"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	ref := ir.PolicyRef{Kind: "TrafficSplit", Namespace: "shop", Name: "checkout", Generation: 40}
	if s := ads.PolicyState(ref); s.Affected != 2 || s.Acked != 1 {
		t.Fatalf("with the silent proxy: %+v; want 2 affected, 1 acked (Pending)", s)
	}
	mu.Lock()
	before := told
	mu.Unlock()
	cancel() // the stream ends
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		n := told - before
		mu.Unlock()
		s := ads.PolicyState(ref)
		if n > 0 && s.Programmed() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a minute after the silent proxy left: %+v, the writer told %d times; want Programmed and the writer told", s, n)
		}
	}
}
