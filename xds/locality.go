package xds

import (
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/translator/envoy"
	"github.com/weftmesh/weft/translator/ir"
)

// Locality-aware routing (docs/design/171): a Service whose callers
// prefer their own zone gives each caller its endpoints in priorities by
// the caller's locality, so proxies in different zones need different
// builds, and the zone joins the group key. The zone is the control
// plane's: the Locator (the controller's Pod → Node → topology labels),
// never the proxy's node metadata, which the proxy writes.
//
// The zone joins the key only while some Service of the mesh prefers the
// caller's zone (localityOn): a mesh without one groups exactly as before,
// one group for the replicas of a Deployment in every zone. When that
// changes — the first such policy in the mesh, or the last one gone — the
// streams of proxies whose zone is known end, once, and reconnect into
// their new groups (as on a trust-domain change): a stream cannot move
// between groups.

// Locator says where the pod namespace/name runs: its region and zone,
// empty when unknown. It is called when a stream is admitted and must not
// block.
type Locator func(namespace, pod string) (region, zone string)

// SetLocator sets where proxies' zones come from. Call it before serving;
// without one every proxy's zone is unknown (no locality preference).
func (a *ADS) SetLocator(l Locator) { a.locator = l }

// locate fills the zone of an admitted node from the Locator, by the pod
// its id names ("<pod>.<namespace>"). A token-authenticated stream's pod
// is the token's; a certificate names only the service account, so such a
// proxy could name another pod of its identity, and get that pod's zone:
// it changes only where its own calls prefer to go.
func (a *ADS) locate(node *NodeInfo) {
	p := &node.Proxy
	p.Region, p.Zone = "", ""
	if a.locator == nil {
		return
	}
	pod, ok := strings.CutSuffix(node.ID, "."+p.Namespace)
	if !ok || pod == "" {
		return
	}
	p.Region, p.Zone = a.locator(p.Namespace, pod)
}

// setLocality records whether mesh has a Service that prefers the
// caller's zone and, when that changed, ends the streams whose group key
// it changes. a.mu must be held.
func (a *ADS) setLocality(mesh *ir.Mesh) {
	on := envoy.PrefersLocalZone(mesh)
	if on == a.localityOn {
		return
	}
	a.localityOn = on
	n := 0
	for c := range a.conns {
		if c.node.Proxy.Zone != "" {
			c.end(status.Errorf(codes.Unavailable, "node %s: locality-aware routing was turned on or off in the mesh; reconnect to be grouped by zone accordingly", c.node.ID))
			n++
		}
	}
	if n > 0 {
		a.log.Info("locality-aware routing changed: closing the streams of proxies whose zone is known so they regroup", "on", on, "streams", n)
	}
}
