package xds

import (
	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator/envoy"
	"github.com/weftmesh/weft/translator/ir"
)

// Which groups a new mesh model can change.
//
// A group's build reads, besides the mesh-wide settings, the Services
// visible to its proxy (envoy.Visible: exported to its namespace), the
// backends their routes send to, and the settings of its own namespace and
// of the visible Services' namespaces. The build records the last two kinds
// (snapshot.deps, snapshot.nsDeps); visibility is a function of the proxy's
// namespace, so it needs no record and also covers Services the group does
// not depend on yet: a new Service in a namespace it sees, a Service whose
// exportTo now includes it, one whose AuthPolicies stop refusing it.

// affects says whether ch can alter the configuration of proxy p, whose
// last build made s (nil: never built, so yes). When in doubt it says yes:
// a needless rebuild costs time, a missed one leaves a proxy stale.
func affects(ch *ir.Change, p dataplane.Proxy, s *snapshot) bool {
	if s == nil || ch.MeshWide {
		return true
	}
	for _, ns := range ch.Namespaces {
		if s.nsDeps[ns] {
			return true
		}
	}
	for _, sc := range ch.Services {
		if s.deps[sc.Key] ||
			sc.Old != nil && envoy.Visible(sc.Old, p) ||
			sc.New != nil && envoy.Visible(sc.New, p) {
			return true
		}
		// A sidecar refuses (or under RegistryOnly passes) by address the
		// Services it does not hold: their addresses, ports and whether
		// they are unmeshed shape its outbound listener.
		if p.Kind != dataplane.KindGRPC && !envoy.SameRefusal(sc.Old, sc.New) {
			return true
		}
	}
	return false
}

// refusalChanged says whether an endpoint change of the changed Services
// made one of them envoy.Unmeshed or no longer: every sidecar that does not hold
// it refuses or passes it by address, so must be built again.
func refusalChanged(prev, next *ir.Mesh, changed []ir.ServiceKey) bool {
	for _, k := range changed {
		if !envoy.SameRefusal(prev.Service(k), next.Service(k)) {
			return true
		}
	}
	return false
}

// dependsOn says whether an endpoint change of the changed Services can
// alter the configuration whose last build made s: endpoints change no
// Service's visibility, so only the recorded dependencies count. A group
// not built yet depends on everything.
func dependsOn(s *snapshot, changed []ir.ServiceKey) bool {
	if s == nil {
		return true
	}
	for _, k := range changed {
		if s.deps[k] {
			return true
		}
	}
	return false
}
