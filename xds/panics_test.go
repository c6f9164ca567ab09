package xds

import (
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator/envoy"
)

// TestBuildPanicKeepsLastGoodConfiguration: issue 13 — with no recover(),
// one panic in a group's build crash-looped every replica. A panic is now a
// failed build: counted, reported to OnPanic, and the group keeps the
// configuration it had; other groups build as usual.
func TestBuildPanicKeepsLastGoodConfiguration(t *testing.T) {
	a := NewADS(logr.Discard())
	var reported []string
	a.OnPanic(func(stage, group string, v any) { reported = append(reported, stage) })
	a.Update(depsMesh(t, depsBase), time.Now())
	web := a.newConn(true, NodeInfo{ID: "web.shop", Proxy: depsProxies["web"]})
	checkout := a.newConn(true, NodeInfo{ID: "checkout.shop", Proxy: depsProxies["checkout"]})
	for _, c := range []*conn{web, checkout} {
		if err := a.join(c); err != nil {
			t.Fatal(err)
		}
	}
	good := web.group.snap.Load()
	panics := a.metrics.panics.WithLabelValues("build")
	before := testutil.ToFloat64(panics)

	a.build = func(s *envoy.Shared, p dataplane.Proxy) *envoy.Resources {
		if p.ServiceAccount == "web" {
			var m map[string]int
			m["boom"]++ // a nil map write: a weft bug
		}
		return s.BuildGroup(p)
	}
	checkoutBefore := checkout.group.snap.Load()
	docs := append(append([]string(nil), depsBase...),
		// On a port number no Service had: built, not patched (a new
		// Host-routed chain, docs/design/186).
		`{apiVersion: v1, kind: Service, metadata: {name: extra, namespace: shop}, spec: {clusterIP: 10.0.9.1, selector: {app: extra}, ports: [{name: http, port: 9123}]}}`)
	a.Update(depsMesh(t, docs), time.Now())

	if got := testutil.ToFloat64(panics) - before; got != 1 {
		t.Errorf("weft_panics_total{stage=build} grew by %v, want 1", got)
	}
	if len(reported) != 1 || reported[0] != "build" {
		t.Errorf("OnPanic heard %v, want [build]", reported)
	}
	if web.group.snap.Load() != good || !web.group.failed.Load() {
		t.Error("the panicking group did not keep its last good configuration as a failed build")
	}
	if checkout.group.snap.Load() == checkoutBefore {
		t.Error("the other group was not rebuilt for the new Service")
	}
}
