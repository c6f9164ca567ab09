package xds

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/weftmesh/weft/dataplane"
)

// TestFailedGroupsAreNotRebuiltOnEveryUpdate: issue 13 measured 50 streams
// whose probes make their build fail cost 250 full builds over 5 unrelated
// updates. (The anonymous endpoint now refuses such probes at admission,
// dataplane.ValidateAppProbes; this test joins the proxies directly, as if
// a build failed for any other reason.) A failed group keeps its last
// good configuration and is retried after a backoff, not on every update.
func TestFailedGroupsAreNotRebuiltOnEveryUpdate(t *testing.T) {
	a := NewADS(logr.Discard())
	a.Update(depsMesh(t, depsBase), time.Now())
	const bad = 50
	for i := range bad {
		p := dataplane.Proxy{Namespace: "shop", ServiceAccount: "web", Labels: map[string]string{"app": "web", "n": fmt.Sprint(i)},
			AppProbes: map[string]dataplane.AppProbe{"/app-health/app/readyz": {Port: 70000, Path: "/", Scheme: "HTTP"}}}
		c := a.newConn(true, NodeInfo{ID: fmt.Sprintf("web-%d.shop", i), Proxy: p})
		if err := a.join(c); err != nil {
			t.Fatal(err)
		}
		// A second member of the failing group does not build it again.
		if err := a.join(a.newConn(true, NodeInfo{ID: fmt.Sprintf("web-%d-b.shop", i), Proxy: p})); err != nil {
			t.Fatal(err)
		}
	}
	good := a.newConn(true, NodeInfo{ID: "checkout-0.shop", Proxy: depsProxies["checkout"]})
	if err := a.join(good); err != nil {
		t.Fatal(err)
	}
	joined := a.Builds()
	if joined != bad+1 {
		t.Fatalf("joining %d failing groups (two streams each) and one good group cost %d builds, want %d", bad, joined, bad+1)
	}
	for _, c := range []*conn{good} {
		if c.group.snap.Load() == nil {
			t.Fatal("the good group has no configuration")
		}
	}
	// Five updates that touch everything in shop: only the good group builds.
	const updates = 5
	for i := range updates {
		docs := append(append([]string(nil), depsBase...),
			fmt.Sprintf(`{apiVersion: v1, kind: Service, metadata: {name: extra-%d, namespace: shop}, spec: {clusterIP: 10.0.9.%d, selector: {app: extra}, ports: [{name: http, port: 80}]}}`, i, i+1))
		a.Update(depsMesh(t, docs), time.Now())
	}
	if got := a.Builds() - joined; got > updates {
		t.Fatalf("%d updates cost %d builds with %d failing groups connected; want at most %d (the one good group per update)", updates, got, bad, updates)
	}
	t.Logf("%d failing groups + 1 good: %d builds to join, %d builds over %d updates", bad, joined, a.Builds()-joined, updates)
}

// TestGroupCaps: a token proves an identity, not the labels its node
// claims, so one identity may hold at most MaxGroupsPerIdentity groups;
// anonymous groups count only toward their own cap, so an anonymous client
// cannot use up a real identity's.
func TestGroupCaps(t *testing.T) {
	a := NewADS(logr.Discard())
	a.SetAnonymousLimits(MaxAnonymousStreams, 4)
	a.Update(depsMesh(t, depsBase), time.Now())
	join := func(i int, anonymous bool) error {
		p := dataplane.Proxy{Namespace: "shop", ServiceAccount: "web", Labels: map[string]string{"app": "web", "n": fmt.Sprint(i)}}
		c := a.newConn(true, NodeInfo{ID: fmt.Sprintf("web-%d.shop", i), Proxy: p, Authenticated: !anonymous})
		c.anonymous = anonymous
		return a.join(c)
	}
	for i := range 10 {
		err := join(1000+i, true)
		if (i < 4) != (err == nil) {
			t.Fatalf("anonymous group %d: %v; want the first 4 admitted, then ResourceExhausted", i, err)
		}
	}
	for i := range MaxGroupsPerIdentity {
		if err := join(i, false); err != nil {
			t.Fatalf("authenticated group %d of shop/web (after 10 anonymous attempts): %v", i, err)
		}
	}
	err := join(MaxGroupsPerIdentity, false)
	if err == nil || !strings.Contains(err.Error(), "xds.MaxGroupsPerIdentity") {
		t.Fatalf("group %d of shop/web: %v; want ResourceExhausted naming xds.MaxGroupsPerIdentity", MaxGroupsPerIdentity+1, err)
	}
	t.Logf("builds: %d for %d authenticated + 4 anonymous groups", a.Builds(), MaxGroupsPerIdentity)
}
