package xds

import (
	"net"
	"reflect"
	"strconv"
	"testing"

	"github.com/weftmesh/weft/dataplane/sim"
	"github.com/weftmesh/weft/translator"
)

// TestServedSnapshotsInTheSimulator shows with the traffic simulator
// (which reads the Envoy protos and encodes Envoy's and iptables'
// documented behaviour, never weft's builders) that what the ADS serves
// each sidecar — its view entry's Part encoded once, its own resources put
// onto the Part's maps, maps another group made taken again
// (docs/design/190, 191) — carries traffic as the sidecar built in full
// does. In the simulator's shop mesh, web-0 (HTTP 8080), mysql-0 (TCP
// 3306), stranger-0 (serving nothing) and vault's secrets-0 share one
// Part and differ in their own inbound listeners; every call of a set from each
// meshed pod to every pod address, on served and unserved ports, over both
// families, and to Services by cluster IP and name, gets the verdict the
// built world gives.
func TestServedSnapshotsInTheSimulator(t *testing.T) {
	_, in := shopInputs(t)
	_, groups := generatedGroups(t, in)
	mesh := translator.Translate(in).Mesh
	byPod := sidecarGroups(groups)
	// The case: sidecars whose snapshots share the Part's endpoints map
	// but hold listener maps of their own.
	web, stranger := byPod["shop/web-0"], byPod["shop/stranger-0"]
	if web == nil || stranger == nil {
		t.Fatal("no group for shop/web-0 or shop/stranger-0")
	}
	ws, ss := web.snap.Load(), stranger.snap.Load()
	if !sameMap(ws.resources[endpointsAt], ss.resources[endpointsAt]) ||
		sameMap(ws.resources[listenersAt], ss.resources[listenersAt]) || ws.order[listenersAt].base == nil {
		t.Error("web-0 and stranger-0 do not share a Part with listeners of their own: the case tests nothing")
	}

	built, served, callers := servedWorlds(t, in, mesh, byPod)
	var targets []string
	for _, p := range served.Pods {
		for _, ip := range p.IPs {
			for _, port := range []int{8080, 3306, 9999} {
				targets = append(targets, net.JoinHostPort(ip.String(), strconv.Itoa(port)))
			}
		}
	}
	if len(callers) < 4 {
		t.Fatalf("%d meshed pods served: the case tests little", len(callers))
	}
	delivered := 0
	for _, from := range callers {
		calls := []sim.Call{
			{From: from, To: "web.shop:80", Path: "/orders"},
			{From: from, To: "10.96.1.10:80", Host: "secrets.vault"},
			{From: from, To: "10.96.0.20:3306", Protocol: sim.TCP},
			{From: from, To: "203.0.113.5:80", Host: "web.shop"},
		}
		for _, to := range targets {
			calls = append(calls, sim.Call{From: from, To: to}, sim.Call{From: from, To: to, Protocol: sim.TCP})
		}
		for _, c := range calls {
			got, want := served.Walk(c).Verdict, built.Walk(c).Verdict
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s -> %s (%v, Host %q): served sidecars give %s, built ones %s", c.From, c.To, c.Protocol, c.Host, got, want)
			}
			if got.Kind == sim.Delivered {
				delivered++
			}
		}
	}
	if delivered == 0 {
		t.Error("no call was delivered in either world: the comparison shows nothing")
	}
}
