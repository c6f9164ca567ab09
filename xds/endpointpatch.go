package xds

import (
	"maps"
	"sort"
	"strings"
	"sync"
	"unsafe"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator/envoy"
	"github.com/weftmesh/weft/translator/ir"
)

// The endpoint fast path. An endpoint-only change (ADS.UpdateEndpoints)
// alters, for almost every proxy that holds the changed Services, only
// their ClusterLoadAssignments — and, when the identities behind them
// change, the upstream TLS of their clusters (envoy.EndpointChange). So
// the next snapshot of such a group is derived from its current one: the
// new assignments are built, validated and encoded once per change and
// put in every dependent group's snapshot; every other resource stays
// pointer-equal, so nothing else is compared or re-sent. A group for which
// the change reaches further (envoy.EndpointChange.Local) is built again.

// endpointPatch is one endpoint-only change, prepared for every group.
type endpointPatch struct {
	// changes by Service; nil for a Service that cannot be patched (added
	// or removed, or its new endpoints failed validation): groups that
	// depend on it are rebuilt, which reports the error.
	changes map[ir.ServiceKey]*envoy.EndpointChange
	// eds: the new assignments, encoded once.
	eds map[string]*encoded
	enc *encoder
	// deriver makes the maps after the patch once per distinct map.
	*deriver

	// clusters memoizes re-derived clusters by the encoding they replace
	// and the proxy kind: groups that held the same cluster get the same
	// result, decoded, patched and encoded once.
	mu       sync.Mutex
	clusters map[clusterPatchKey]*encoded
	// local: the assignments of ports whose callers prefer their own
	// zone, per caller locality (envoy.EndpointChange.Assignment),
	// encoded once per locality.
	local map[localEDSKey]*encoded
}

type localEDSKey struct{ name, region, zone string }

type clusterPatchKey struct {
	old  *encoded
	kind dataplane.ProxyKind
}

// prepareEndpoints builds and encodes what the change from prev to next of
// the changed Services' endpoints gives every proxy.
func prepareEndpoints(prev, next *ir.Mesh, changed []ir.ServiceKey, enc *encoder) *endpointPatch {
	pt := &endpointPatch{changes: map[ir.ServiceKey]*envoy.EndpointChange{}, eds: map[string]*encoded{},
		enc: enc, deriver: newDeriver(enc), clusters: map[clusterPatchKey]*encoded{}, local: map[localEDSKey]*encoded{}}
	for _, k := range changed {
		old, svc := prev.Service(k), next.Service(k)
		if old == nil || svc == nil {
			pt.changes[k] = nil
			continue
		}
		c := envoy.NewEndpointChange(old, svc)
		for name, cla := range c.Assignments {
			e, err := enc.encode(resourcev3.EndpointType, name, cla, nil)
			if err != nil {
				c = nil
				break
			}
			pt.eds[e.name()] = e
		}
		pt.changes[k] = c
	}
	return pt
}

// apply derives from s, the configuration of a group of proxy p for the
// model before the change, its configuration after: s itself when nothing
// it holds changed. ok is false when the change reaches beyond what a
// patch re-derives for this group: it must be built.
//
// Groups that held the same map of a type (snapshot.share) get the same
// map after (derive): the replacement is made, and the map copied, once
// per distinct map, not once per group, so an endpoint change costs O(its
// Services) per group, not O(every Service the group sees).
func (pt *endpointPatch) apply(s *snapshot, p dataplane.Proxy) (next *snapshot, ok bool) {
	var edsNames, cdsNames []string
	var cdsNew, edsLocal map[string]*encoded
	for k, c := range pt.changes {
		if !s.deps[k] {
			continue
		}
		if c == nil || !c.Local(p) || s.splits {
			return nil, false
		}
		for name := range c.Assignments {
			old, held := s.resources[endpointsAt][name]
			if !held {
				continue
			}
			e := pt.eds[name]
			if c.Localized(name) && p.Zone != "" {
				// This group's variant, with priorities by its locality:
				// the shared assignment would undo them.
				var err error
				if e, err = pt.localAssignment(c, name, p); err != nil {
					return nil, false
				}
				if edsLocal == nil {
					edsLocal = map[string]*encoded{}
				}
				edsLocal[e.name()] = e
			}
			if e != old {
				edsNames = append(edsNames, name)
			}
		}
		for _, name := range c.TLSClusters() {
			old, held := s.resources[clustersAt][name]
			if !held {
				continue
			}
			e, err := pt.cluster(c, old, p.Kind)
			if err != nil {
				return nil, false
			}
			if e != old {
				if cdsNew == nil {
					cdsNew = map[string]*encoded{}
				}
				cdsNames = append(cdsNames, name)
				cdsNew[e.name()] = e
			}
		}
	}
	if edsNames == nil && cdsNames == nil {
		return s, true
	}
	// Everything else — the other types' maps, policies, dependencies —
	// is shared with s: snapshots are immutable.
	n := *s
	n.resources = s.resources
	n.derived = map[string]derivation{}
	for i, t := range pushOrder {
		var names []string
		var value func(string) *encoded
		switch t {
		case resourcev3.EndpointType:
			names, value = edsNames, func(name string) *encoded {
				if e := edsLocal[name]; e != nil {
					return e
				}
				return pt.eds[name]
			}
		case resourcev3.ClusterType:
			names, value = cdsNames, func(name string) *encoded { return cdsNew[name] }
		}
		if names == nil {
			continue
		}
		variant := ""
		if t == resourcev3.EndpointType && edsLocal != nil {
			variant = "locality:" + p.Region + "\x00" + p.Zone // the values depend on it
		}
		d := pt.deriveVariant(t, s.resources[i], names, value, p.Kind, variant)
		n.resources[i], n.anchors[i], n.derived[t] = d.m, d.anchor, d.derivation
	}
	n.generation = s.generation + 1
	return &n, true
}

// derivedMap is a map of a type after a patch: the map, its anchor
// (mapInterner) and how it was made.
type derivedMap struct {
	m      map[string]*encoded
	anchor any
	derivation
}

type deriveKey struct {
	typ   string
	old   unsafe.Pointer
	kind  dataplane.ProxyKind
	names string
	// variant: what else the new values depend on (a gRPC client's
	// namespace and preferred family, envoy.ProxyRoutes.Variant).
	variant string
}

// deriver makes the maps of one patch (an endpoint or route change) for
// every group it applies to.
type deriver struct {
	enc     *encoder
	mu      sync.Mutex
	derived map[deriveKey]*derivedMap
}

func newDeriver(enc *encoder) *deriver {
	return &deriver{enc: enc, derived: map[deriveKey]*derivedMap{}}
}

// derive returns old with the resources named replaced by value's, made
// once per old map, names and proxy kind (a cluster's patch depends on
// the kind) for every group of the change.
func (dr *deriver) derive(typ string, old map[string]*encoded, names []string, value func(string) *encoded, kind dataplane.ProxyKind) *derivedMap {
	return dr.deriveVariant(typ, old, names, value, kind, "")
}

// deriveVariant is derive for values that depend on more than the kind.
func (dr *deriver) deriveVariant(typ string, old map[string]*encoded, names []string, value func(string) *encoded, kind dataplane.ProxyKind, variant string) *derivedMap {
	sort.Strings(names)
	key := deriveKey{typ, mapPointer(old), kind, strings.Join(names, "\n"), variant}
	dr.mu.Lock()
	d, done := dr.derived[key]
	dr.mu.Unlock()
	if done {
		return d
	}
	m := maps.Clone(old)
	for _, name := range names {
		m[name] = value(name)
	}
	m, a := dr.enc.maps.intern(typ, m)
	d = &derivedMap{m: m, anchor: a, derivation: derivation{from: old, changed: names}}
	dr.mu.Lock()
	defer dr.mu.Unlock()
	if x, ok := dr.derived[key]; ok {
		return x
	}
	dr.derived[key] = d
	return d
}

// localAssignment is the new assignment of cluster name as proxy p holds
// it (envoy.EndpointChange.Assignment), encoded once per locality.
func (pt *endpointPatch) localAssignment(c *envoy.EndpointChange, name string, p dataplane.Proxy) (*encoded, error) {
	key := localEDSKey{name, p.Region, p.Zone}
	pt.mu.Lock()
	e, done := pt.local[key]
	pt.mu.Unlock()
	if done {
		return e, nil
	}
	cla := c.Assignment(name, p)
	if cla == c.Assignments[name] {
		e = pt.eds[name] // one tier only: the shared assignment
	} else {
		var err error
		if e, err = pt.enc.encode(resourcev3.EndpointType, name, cla, nil); err != nil {
			return nil, err
		}
	}
	pt.mu.Lock()
	defer pt.mu.Unlock()
	if x, ok := pt.local[key]; ok {
		return x, nil
	}
	pt.local[key] = e
	return e, nil
}

// cluster re-derives the upstream TLS of the cluster encoded as old.
func (pt *endpointPatch) cluster(c *envoy.EndpointChange, old *encoded, kind dataplane.ProxyKind) (*encoded, error) {
	key := clusterPatchKey{old, kind}
	pt.mu.Lock()
	e, done := pt.clusters[key]
	pt.mu.Unlock()
	if done {
		return e, nil
	}
	cl := &clusterv3.Cluster{}
	if err := proto.Unmarshal(old.value(), cl); err != nil {
		return nil, err
	}
	e, err := pt.enc.encode(resourcev3.ClusterType, old.name(), c.PatchCluster(cl, kind), old)
	if err != nil {
		return nil, err
	}
	pt.mu.Lock()
	pt.clusters[key] = e
	pt.mu.Unlock()
	return e, nil
}

// holdsSplit: a snapshot's assignments hold a TCP split's assignment, which reads the
// endpoints of several Services (envoy.IsSplitCluster); such a group is
// built again on an endpoint change of a Service it depends on. TCP splits
// are few (a canary in progress), so the fast path stays for the rest.
func holdsSplit(eds map[string]*encoded) bool {
	for name := range eds {
		if envoy.IsSplitCluster(name) {
			return true
		}
	}
	return false
}
