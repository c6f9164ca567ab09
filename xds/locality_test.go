package xds

import (
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/weftmesh/weft/dataplane"
)

// TestZoneJoinsTheGroupKeyOnlyWithLocality: with a Locator that knows two
// replicas' zones, a mesh where no Service prefers the caller's zone
// groups them as before (one group, one build); the first
// PreferLocalZone policy ends their streams (they reconnect into a group
// per zone), and a proxy of unknown zone is left alone; after it, the
// replicas join one group per zone, and removing the policy ends the
// zoned streams again.
func TestZoneJoinsTheGroupKeyOnlyWithLocality(t *testing.T) {
	a := NewADS(logr.Discard())
	zones := map[string]string{"web-a": "zone-a", "web-b": "zone-b"}
	a.SetLocator(func(ns, pod string) (string, string) { return "r1", zones[pod] })
	policy := `{apiVersion: mesh.weft.dev/v1alpha1, kind: BackendTrafficPolicy, metadata: {name: checkout, namespace: shop}, spec: {targetRefs: [{group: "", kind: Service, name: checkout}], loadBalancer: {locality: PreferLocalZone}}}`
	plain, local := depsMesh(t, depsBase), depsMesh(t, append(append([]string(nil), depsBase...), policy))
	a.Update(plain, time.Now())
	join := func(pod string) *conn {
		t.Helper()
		n := NodeInfo{ID: pod + ".shop", Proxy: dataplane.Proxy{Namespace: "shop", ServiceAccount: "web", Labels: map[string]string{"app": "web"}}}
		// Whatever the node's metadata said, the Locator decides.
		n.Proxy.Zone = "forged"
		a.locate(&n)
		c := a.newConn(true, n)
		if err := a.join(c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	ended := func(c *conn) bool {
		select {
		case <-c.kick:
			return true
		default:
			return false
		}
	}
	ca, cb, cx := join("web-a"), join("web-b"), join("web-x")
	if ca.node.Proxy.Zone != "zone-a" || cx.node.Proxy.Zone != "" {
		t.Fatalf("zones from the Locator: web-a %q, web-x %q; want zone-a and none (the metadata's is ignored)", ca.node.Proxy.Zone, cx.node.Proxy.Zone)
	}
	if ca.group != cb.group || ca.group != cx.group || a.Builds() != 1 {
		t.Fatalf("without a PreferLocalZone Service, replicas in zones a and b and one of unknown zone: same group %t %t, %d builds; want one group, one build",
			ca.group == cb.group, ca.group == cx.group, a.Builds())
	}

	a.Update(local, time.Now())
	if !ended(ca) || !ended(cb) || ended(cx) {
		t.Fatalf("the first PreferLocalZone policy: streams ended web-a %t, web-b %t, web-x %t; want the zoned ones only", ended(ca), ended(cb), ended(cx))
	}
	a.leave(ca)
	a.leave(cb)
	ca, cb = join("web-a"), join("web-b")
	ca2 := join("web-a")
	if ca.group == cb.group || ca.group != ca2.group || ca.group == cx.group {
		t.Fatal("with a PreferLocalZone Service, want one group per zone (and the unknown zone's apart)")
	}
	if ca.group.proxy.Zone != "zone-a" || cb.group.proxy.Zone != "zone-b" {
		t.Fatalf("groups built for zones %q and %q", ca.group.proxy.Zone, cb.group.proxy.Zone)
	}

	a.Update(plain, time.Now())
	if !ended(ca) || !ended(cb) || !ended(ca2) || ended(cx) {
		t.Fatal("removing the last PreferLocalZone policy did not end exactly the zoned streams")
	}
}
