package xds

import (
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"sort"
	"strings"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator/envoy"
	"github.com/weftmesh/weft/translator/ir"
)

// Type URLs in the order a push sends them: clusters before the endpoints
// they use, listeners before their routes, so Envoy never holds a reference
// to something it has not received (make before break).
var pushOrder = [...]string{
	secretsAt:   resourcev3.SecretType,
	clustersAt:  resourcev3.ClusterType,
	endpointsAt: resourcev3.EndpointType,
	listenersAt: resourcev3.ListenerType,
	routesAt:    resourcev3.RouteType,
}

// Each type's index in pushOrder (snapshot.anchors, encodedPart).
const (
	secretsAt = iota
	clustersAt
	endpointsAt
	listenersAt
	routesAt
)

// snapshot is one build of a group's configuration, immutable once made.
type snapshot struct {
	// generation increases with every build that changed something.
	generation uint64
	resources  byType // name → resource, by type
	policies   []ir.PolicyRef
	// since[i] is the generation from which this group's snapshots have
	// carried policies[i] without a break (policySince): a proxy that
	// fully ACKed any generation from there on holds the policy, even
	// while a newer generation that changed only other things (endpoints)
	// is in flight.
	since []uint64
	// deps are the Services the configuration depends on, nsDeps the
	// namespaces whose settings it read (envoy.Resources): with
	// envoy.Visible they decide which changes can alter it (affects).
	deps   map[ir.ServiceKey]bool
	nsDeps map[string]bool
	// anchors keep the maps this snapshot shares with other groups'
	// (encoder.maps, encoder.deps) shared: resources' by the type's index
	// in pushOrder, then deps'.
	anchors [len(pushOrder) + 1]any
	// policyAnchors keep policies and since shared (sharePolicies).
	policyAnchors [2]any
	// derived says, per type, that the type's map was made from another
	// snapshot's by replacing a few resources (an endpoint patch): a
	// stream that was sent exactly from has only those to compare
	// (sendDelta).
	derived map[string]derivation
	// splits: the snapshot holds a TCP split's assignment (holdsSplit).
	splits bool
	// order: per type (by pushOrder index), its map's resources in name
	// order when it was made from a Part (onto), for a first send to walk
	// instead of sorting (sendDelta).
	order [len(pushOrder)]mergedOrder
}

// byType holds a snapshot's maps of each type (name → resource), at the
// type's index in pushOrder. An array, not a map by type URL: ~300 bytes
// less per group, and a patched snapshot copies it (docs/design/201).
type byType [len(pushOrder)]map[string]*encoded

// of returns type t's map (nil for a type not served).
func (b *byType) of(t string) map[string]*encoded {
	if i := typeIndex(t); i >= 0 {
		return b[i]
	}
	return nil
}

// mergedOrder is a snapshot map made from a Part's resources and a
// group's own: both sorted by name, the group's taking the place of the
// Part's of the same name. It describes m only: a snapshot derived from
// this one (a patch) has a new map, and then no order (inOrder).
type mergedOrder struct {
	m map[string]*encoded
	// base is the Part's order, shared by every group built from a Part
	// of that content (encoder.orders); own the group's.
	base *sliceAnchor[*encoded]
	own  []*encoded
}

// inOrder calls f with each resource of have in name order, if o
// describes have, and says whether it did.
func (o *mergedOrder) inOrder(have map[string]*encoded, f func(*encoded)) bool {
	if o.m == nil || o.base == nil || !sameMap(o.m, have) {
		return false
	}
	base, own := o.base.s, o.own
	for len(base) > 0 || len(own) > 0 {
		switch {
		case len(own) == 0 || len(base) > 0 && base[0].name() < own[0].name():
			f(base[0])
			base = base[1:]
		default:
			if len(base) > 0 && base[0].name() == own[0].name() {
				base = base[1:] // the group's own takes its place
			}
			f(own[0])
			own = own[1:]
		}
	}
	return true
}

// typeIndex is typeURL's index in pushOrder, or -1.
func typeIndex(typeURL string) int {
	for i, t := range pushOrder {
		if t == typeURL {
			return i
		}
	}
	return -1
}

// derivation is how one type's map of a snapshot was made from an older
// one's: from, with the resources named changed replaced.
type derivation struct {
	from    map[string]*encoded
	changed []string
}

// typeVersion is the SotW version of the named resources of one type (all
// of them when names is nil): a hash of their names and versions.
func (s *snapshot) typeVersion(typeURL string, names *subscription) string {
	if names == nil {
		for i, t := range pushOrder {
			if a, ok := s.anchors[i].(*anchor[string, *encoded]); ok && t == typeURL {
				if v := a.version.Load(); v != nil {
					return *v
				}
				v := s.hashVersion(typeURL, nil)
				a.version.Store(&v)
				return v
			}
		}
	}
	return s.hashVersion(typeURL, names)
}

func (s *snapshot) hashVersion(typeURL string, names *subscription) string {
	h := fnv.New64a()
	for _, e := range s.sorted(typeURL, names) {
		_, _ = h.Write([]byte(e.name()))
		_, _ = h.Write([]byte(e.version()))
	}
	return fmt.Sprintf("%016x", h.Sum64())
}

// sorted returns the resources of a type, restricted to names when not nil,
// in name order.
func (s *snapshot) sorted(typeURL string, names *subscription) []*encoded {
	var out []*encoded
	for n, e := range s.resources.of(typeURL) {
		if names == nil || names.has(n) {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name() < out[j].name() })
	return out
}

// buildSnapshot builds, validates and encodes a group's configuration
// (envoy.BuildGroup: without its members' own listeners, conn.own),
// reusing the encodings of prev for unchanged resources. changed is false
// when the configuration is the same as prev's: the result is then prev
// itself, or, when only the dependencies moved, a copy of prev with the new
// ones (prev is published and read concurrently: it is never modified).
// An error (keeping prev in service) means the resources failed
// validation: a bug, never a user mistake.
func buildSnapshot(mesh *ir.Mesh, p dataplane.Proxy, secrets []*tlsv3.Secret, prev *snapshot, enc *encoder) (next *snapshot, changed bool, err error) {
	return encodeSnapshot(envoy.BuildGroup(mesh, p), secrets, prev, enc)
}

// encodeSnapshot is buildSnapshot for resources already built (the ADS
// builds through an envoy.Shared, so that groups share what they have in
// common). A build through a Shared carries its view entry's Part
// (res.Common), encoded once for every group that holds it
// (encoder.part): a group then encodes only its own few resources, and
// its maps are the Part's, or the Part's with those few added
// (docs/design/190).
func encodeSnapshot(res *envoy.Resources, secrets []*tlsv3.Secret, prev *snapshot, enc *encoder) (next *snapshot, changed bool, err error) {
	if err := res.CheckConsistency(); err != nil {
		return prev, false, fmt.Errorf("refusing to push inconsistent configuration: %w", err)
	}
	var base *encodedPart
	lists := envoy.Set{Clusters: res.Clusters, Endpoints: res.Endpoints, Listeners: res.Listeners, Routes: res.Routes}
	if common, own, ok := res.Parts(); ok {
		if base, err = enc.part(common); err != nil {
			return prev, false, err
		}
		lists = own
	}
	next = &snapshot{policies: res.Policies,
		nsDeps: make(map[string]bool, len(res.NamespaceDeps))}
	if base != nil && res.Common.DepsAre(res.Deps) {
		// The Part's, as a set once (share leaves them).
		next.deps, next.anchors[len(pushOrder)] = base.deps, base.depsAnchor
	} else {
		next.deps = make(map[ir.ServiceKey]bool, len(res.Deps))
		for _, k := range res.Deps {
			next.deps[k] = true
		}
	}
	for _, ns := range res.NamespaceDeps {
		next.nsDeps[ns] = true
	}
	sizes := [len(pushOrder)]int{secretsAt: len(secrets), clustersAt: len(lists.Clusters),
		endpointsAt: len(lists.Endpoints), listenersAt: len(lists.Listeners), routesAt: len(lists.Routes)}
	var s slab // new wire forms side by side (slab)
	add := func(typeURL, name string, m proto.Message) error {
		i := typeIndex(typeURL)
		var old *encoded
		if prev != nil {
			old = prev.resources[i][name]
		}
		e, err := enc.encodeIn(&s, typeURL, name, m, old)
		if err != nil {
			return err
		}
		if next.resources[i] == nil {
			next.resources[i] = make(map[string]*encoded, sizes[i])
		}
		next.resources[i][e.name()] = e // the key shares the wire form's bytes
		return nil
	}
	for _, m := range secrets {
		if err := add(resourcev3.SecretType, m.Name, m); err != nil {
			return prev, false, err
		}
	}
	for _, m := range lists.Clusters {
		if err := add(resourcev3.ClusterType, m.Name, m); err != nil {
			return prev, false, err
		}
	}
	for _, m := range lists.Endpoints {
		if err := add(resourcev3.EndpointType, m.ClusterName, m); err != nil {
			return prev, false, err
		}
	}
	for _, m := range lists.Listeners {
		if err := add(resourcev3.ListenerType, m.Name, m); err != nil {
			return prev, false, err
		}
	}
	for _, m := range lists.Routes {
		if err := add(resourcev3.RouteType, m.Name, m); err != nil {
			return prev, false, err
		}
	}
	var interned [len(pushOrder)]bool
	var made []mergedMade
	if base != nil {
		interned, made = next.onto(base)
	}
	next.share(enc, interned)
	if base != nil {
		next.remember(base, made)
	}
	for i := range pushOrder {
		if next.order[i].base != nil {
			next.order[i].m = next.resources[i] // as shared
		}
	}
	if interned[endpointsAt] {
		// The Part's endpoints, and the group's own ones if any (a
		// merged map: onto).
		next.splits = base.splits || slices.ContainsFunc(lists.Endpoints, func(e *endpointv3.ClusterLoadAssignment) bool { return envoy.IsSplitCluster(e.ClusterName) })
	} else {
		next.splits = holdsSplit(next.resources[endpointsAt])
	}
	if prev != nil && sameResources(prev, next) && samePolicies(prev.policies, next.policies) {
		if sameSet(prev.deps, next.deps) && sameSet(prev.nsDeps, next.nsDeps) {
			return prev, false, nil
		}
		// Same configuration, new dependencies: a copy, same generation.
		cp := *prev
		cp.deps, cp.nsDeps = next.deps, next.nsDeps
		cp.anchors[len(pushOrder)] = next.anchors[len(pushOrder)]
		return &cp, false, nil
	}
	next.generation = 1
	if prev != nil {
		next.generation = prev.generation + 1
	}
	next.since = policySince(prev, next.policies, next.generation)
	next.sharePolicies(enc)
	return next, true, nil
}

// onto puts the snapshot's own resources (all it holds yet) onto base's:
// a type it has none of takes base's interned map as it is (interned
// says which), any other the map an earlier group with the same own
// resources made (base.merged), or else a copy of base's with its own
// added, which merged records once shared (call remember after share).
func (s *snapshot) onto(base *encodedPart) (interned [len(pushOrder)]bool, made []mergedMade) {
	for i := range pushOrder {
		b := base.maps[i]
		if len(b) == 0 {
			continue
		}
		own := s.resources[i]
		s.order[i].base = base.sorted[i]
		if len(own) == 0 {
			s.resources[i], s.anchors[i], interned[i] = b, base.anchors[i], true
			continue
		}
		s.order[i].own = slices.SortedFunc(maps.Values(own), byName)
		key := mergedKeyOf(i, own)
		if a := base.merged.find(key, own); a != nil {
			s.resources[i], s.anchors[i], interned[i] = a.m, a, true
			continue
		}
		m := maps.Clone(b)
		maps.Copy(m, own)
		s.resources[i] = m
		made = append(made, mergedMade{key, own})
	}
	return interned, made
}

// mergedMade is a map onto made: the key and own resources to remember
// it by.
type mergedMade struct {
	key mergedKey
	own map[string]*encoded
}

// remember records the maps onto made, as share left them, in base.
func (s *snapshot) remember(base *encodedPart, made []mergedMade) {
	for _, x := range made {
		if a, ok := s.anchors[x.key.at].(*anchor[string, *encoded]); ok {
			base.merged.remember(x.key, x.own, a)
		}
	}
}

func byName(a, b *encoded) int { return strings.Compare(a.name(), b.name()) }

func sameResources(a, b *snapshot) bool {
	for i := range pushOrder {
		if len(a.resources[i]) != len(b.resources[i]) {
			return false
		}
		if sameMap(a.resources[i], b.resources[i]) {
			continue
		}
		for n, e := range a.resources[i] {
			if b.resources[i][n] != e { // encodings are shared when equal
				return false
			}
		}
	}
	return true
}

func samePolicies(a, b []ir.PolicyRef) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// share replaces the snapshot's maps by the equal ones other snapshots
// hold (mapInterner), secrets excepted (a group's own) and those interned
// already, and notes whether it holds a TCP split's assignment.
func (s *snapshot) share(enc *encoder, interned [len(pushOrder)]bool) {
	for i, t := range pushOrder {
		if t == resourcev3.SecretType || interned[i] {
			continue
		}
		if m, a := enc.maps.intern(t, s.resources[i]); a != nil {
			s.resources[i], s.anchors[i] = m, a
		}
	}
	if s.anchors[len(pushOrder)] != nil {
		return // interned already
	}
	if d, a := enc.deps.intern("deps", s.deps); a != nil {
		s.deps, s.anchors[len(pushOrder)] = d, a
	}
}

// sharePolicies replaces the snapshot's policies and since by the equal
// slices other snapshots hold (encoder.policies, since). Call it whenever
// either is set.
func (s *snapshot) sharePolicies(enc *encoder) {
	s.policyAnchors = [2]any{}
	if p, a := enc.policies.intern("policies", s.policies); a != nil {
		s.policies, s.policyAnchors[0] = p, a
	}
	if p, a := enc.since.intern("since", s.since); a != nil {
		s.since, s.policyAnchors[1] = p, a
	}
}
