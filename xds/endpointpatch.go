package xds

import (
	"maps"
	"sync"

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

	// clusters memoizes re-derived clusters by the encoding they replace
	// and the proxy kind: groups that held the same cluster get the same
	// result, decoded, patched and encoded once.
	mu       sync.Mutex
	clusters map[clusterPatchKey]*encoded
}

type clusterPatchKey struct {
	old  *encoded
	kind dataplane.ProxyKind
}

// prepareEndpoints builds and encodes what the change from prev to next of
// the changed Services' endpoints gives every proxy.
func prepareEndpoints(prev, next *ir.Mesh, changed []ir.ServiceKey, enc *encoder) *endpointPatch {
	pt := &endpointPatch{changes: map[ir.ServiceKey]*envoy.EndpointChange{}, eds: map[string]*encoded{},
		enc: enc, clusters: map[clusterPatchKey]*encoded{}}
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
			pt.eds[name] = e
		}
		pt.changes[k] = c
	}
	return pt
}

// apply derives from s, the configuration of a group of proxy p for the
// model before the change, its configuration after: s itself when nothing
// it holds changed. ok is false when the change reaches beyond what a
// patch re-derives for this group: it must be built.
func (pt *endpointPatch) apply(s *snapshot, p dataplane.Proxy) (next *snapshot, ok bool) {
	var eds, cds map[string]*encoded // copies of s's, made on the first replacement
	for k, c := range pt.changes {
		if !s.deps[k] {
			continue
		}
		if c == nil || !c.Local(p) || holdsSplit(s) {
			return nil, false
		}
		for name := range c.Assignments {
			old, held := s.resources[resourcev3.EndpointType][name]
			if e := pt.eds[name]; held && e != old {
				if eds == nil {
					eds = maps.Clone(s.resources[resourcev3.EndpointType])
				}
				eds[name] = e
			}
		}
		for _, name := range c.TLSClusters() {
			old, held := s.resources[resourcev3.ClusterType][name]
			if !held {
				continue
			}
			e, err := pt.cluster(c, old, p.Kind)
			if err != nil {
				return nil, false
			}
			if e != old {
				if cds == nil {
					cds = maps.Clone(s.resources[resourcev3.ClusterType])
				}
				cds[name] = e
			}
		}
	}
	if eds == nil && cds == nil {
		return s, true
	}
	// Everything else — the other types' maps, policies, dependencies —
	// is shared with s: snapshots are immutable.
	n := *s
	n.resources = maps.Clone(s.resources)
	if eds != nil {
		n.resources[resourcev3.EndpointType] = eds
	}
	if cds != nil {
		n.resources[resourcev3.ClusterType] = cds
	}
	n.generation = s.generation + 1
	return &n, true
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
	if err := proto.Unmarshal(old.any.Value, cl); err != nil {
		return nil, err
	}
	e, err := pt.enc.encode(resourcev3.ClusterType, old.name, c.PatchCluster(cl, kind), old)
	if err != nil {
		return nil, err
	}
	pt.mu.Lock()
	pt.clusters[key] = e
	pt.mu.Unlock()
	return e, nil
}

// holdsSplit: the snapshot holds a TCP split's assignment, which reads the
// endpoints of several Services (envoy.IsSplitCluster); such a group is
// built again on an endpoint change of a Service it depends on. TCP splits
// are few (a canary in progress), so the fast path stays for the rest.
func holdsSplit(s *snapshot) bool {
	for name := range s.resources[resourcev3.EndpointType] {
		if envoy.IsSplitCluster(name) {
			return true
		}
	}
	return false
}
