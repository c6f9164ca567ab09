package xds

import (
	"bytes"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"unsafe"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator/envoy"
	"github.com/weftmesh/weft/translator/ir"
)

// The new-Service fast path (docs/design/186). A change that only adds
// Services adds, for a sidecar that reaches them, their own clusters,
// endpoints, listeners and route configurations and changes nothing else
// it holds (envoy.ServiceAddition lists when, and builds the rest in
// full). So the next snapshot of such a group is its current one with
// those added: every other resource stays pointer-equal, and the maps
// after the addition are made once per distinct map (deriver), not once
// per group. Before, a new Service rebuilt every group that sees it —
// each proxy its own group in issue 14's mesh: 100 builds.

// servicePatch is one addition of Services, prepared for every group.
type servicePatch struct {
	add    *envoy.ServiceAddition
	shared *envoy.Shared
	enc    *encoder
	*deriver

	// byContent shares the encodings of equal resources between groups
	// (their messages are each group's own when not from Shared), so
	// that groups whose maps were one map still hold one after.
	mu        sync.Mutex
	byContent map[string]*encoded
	// deps: each group's dependencies with the added ones, made once per
	// distinct map (groups share theirs: encoder.deps).
	deps map[depsKey]depsResult
}

type depsKey struct {
	old   unsafe.Pointer
	added string
}

type depsResult struct {
	m      map[ir.ServiceKey]bool
	anchor any
}

// prepareServices returns the patch of the change from prev to next
// (difference ch), or nil when it is not an addition of Services alone
// (envoy.NewServiceAddition). shared is the Shared of next that the
// update builds with.
func prepareServices(prev, next *ir.Mesh, ch *ir.Change, shared *envoy.Shared, enc *encoder) *servicePatch {
	add := envoy.NewServiceAddition(prev, next, ch)
	if add == nil {
		return nil
	}
	return &servicePatch{add: add, shared: shared, enc: enc, deriver: newDeriver(enc), byContent: map[string]*encoded{}, deps: map[depsKey]depsResult{}}
}

// encode encodes m, sharing the encoding of an equal resource another
// group was given.
func (pt *servicePatch) encode(typ, name string, m proto.Message) (*encoded, error) {
	e, err := pt.enc.encode(typ, name, m, nil)
	if err != nil {
		return nil, err
	}
	k := typ + "\x00" + name + "\x00" + string(e.value())
	pt.mu.Lock()
	defer pt.mu.Unlock()
	if x, ok := pt.byContent[k]; ok {
		return x, nil
	}
	pt.byContent[k] = e
	return e, nil
}

// apply adds the Services' resources to s, the configuration of a group of
// proxy p for the model before the change; ok false when the group must
// be built (envoy.ServiceAddition.ForProxy, or a name it already holds).
func (pt *servicePatch) apply(s *snapshot, p dataplane.Proxy) (next *snapshot, ok bool) {
	routes := s.resources[routesAt]
	pa, ok := pt.add.ForProxy(pt.shared, p, envoy.Held{RouteConfig: func(name string) bool { _, held := routes[name]; return held }})
	if !ok {
		return nil, false
	}
	adds := map[string]map[string]*encoded{}
	put := func(typ, name string, m proto.Message) bool {
		if _, held := s.resources.of(typ)[name]; held {
			return false
		}
		e, err := pt.encode(typ, name, m)
		if err != nil {
			return false // the full build reports it
		}
		if adds[typ] == nil {
			adds[typ] = map[string]*encoded{}
		}
		adds[typ][e.name()] = e
		return true
	}
	for _, m := range pa.Clusters {
		if !put(resourcev3.ClusterType, m.Name, m) {
			return nil, false
		}
	}
	for _, m := range pa.Endpoints {
		if !put(resourcev3.EndpointType, m.ClusterName, m) {
			return nil, false
		}
	}
	for _, m := range pa.Listeners {
		if !put(resourcev3.ListenerType, m.Name, m) {
			return nil, false
		}
	}
	for _, m := range pa.Routes {
		if !put(resourcev3.RouteType, m.Name, m) {
			return nil, false
		}
	}
	if pa.Capture != nil {
		// Replaces the held one, if its content differs.
		e, err := pt.encode(resourcev3.ListenerType, pa.Capture.Name, pa.Capture)
		held := s.resources[listenersAt][pa.Capture.Name]
		if err != nil || held == nil {
			return nil, false // the full build reports an error; a capture listener held by none is not this patch's
		}
		if held.version() != e.version() || !bytes.Equal(held.value(), e.value()) {
			if adds[resourcev3.ListenerType] == nil {
				adds[resourcev3.ListenerType] = map[string]*encoded{}
			}
			adds[resourcev3.ListenerType][e.name()] = e
		}
	}
	n := *s
	n.resources = s.resources
	n.derived = map[string]derivation{}
	for i, t := range pushOrder {
		add := adds[t]
		if len(add) == 0 {
			continue
		}
		names := make([]string, 0, len(add))
		var variant strings.Builder
		for name := range add {
			names = append(names, name)
		}
		sort.Strings(names)
		// The same map and names with other encodings (another family
		// or locality) is another derived map.
		for _, name := range names {
			fmt.Fprintf(&variant, "%p,", add[name])
		}
		d := pt.deriveVariant(t, s.resources[i], names, func(name string) *encoded { return add[name] }, p.Kind, variant.String())
		n.resources[i], n.anchors[i] = d.m, d.anchor
		n.derived[t] = d.derivation
	}
	// The dependencies of the view with the added Services: those the
	// group had, and theirs (envoy.ProxyAddition).
	sameDeps, sameNSDeps := containsAll(s.deps, pa.Deps), containsAll(s.nsDeps, pa.NamespaceDeps)
	if !sameDeps {
		n.deps, n.anchors[len(pushOrder)] = pt.addDeps(s.deps, pa.Deps)
	}
	if !sameNSDeps {
		n.nsDeps = maps.Clone(s.nsDeps)
		for _, ns := range pa.NamespaceDeps {
			n.nsDeps[ns] = true
		}
	}
	if len(adds) == 0 {
		// Nothing added (no family in common with the pod's): as a
		// build, the same configuration and generation, with its new
		// dependencies if they differ.
		if sameDeps && sameNSDeps {
			return s, true
		}
		n.derived = nil
		return &n, true
	}
	// As a build would: a new generation; the policies are the same
	// (the added Services carry none), so is each one's start.
	n.generation = s.generation + 1
	return &n, true
}

// containsAll says whether set holds every key of keys.
func containsAll[K comparable](set map[K]bool, keys []K) bool {
	for _, k := range keys {
		if !set[k] {
			return false
		}
	}
	return true
}

// addDeps returns old with keys added, shared (encoder.deps) and made once
// per old map and keys.
func (pt *servicePatch) addDeps(old map[ir.ServiceKey]bool, keys []ir.ServiceKey) (map[ir.ServiceKey]bool, any) {
	sorted := slices.Clone(keys)
	slices.SortFunc(sorted, func(a, b ir.ServiceKey) int { return strings.Compare(a.String(), b.String()) })
	var b strings.Builder
	for _, k := range sorted {
		b.WriteString(k.String())
		b.WriteByte('\n')
	}
	k := depsKey{reflect.ValueOf(old).UnsafePointer(), b.String()}
	pt.mu.Lock()
	r, done := pt.deps[k]
	pt.mu.Unlock()
	if done {
		return r.m, r.anchor
	}
	m := maps.Clone(old)
	if m == nil {
		m = map[ir.ServiceKey]bool{}
	}
	for _, key := range keys {
		m[key] = true
	}
	var a any
	if d, an := pt.enc.deps.intern("deps", m); an != nil {
		m, a = d, an
	}
	pt.mu.Lock()
	defer pt.mu.Unlock()
	if x, ok := pt.deps[k]; ok {
		return x.m, x.anchor
	}
	pt.deps[k] = depsResult{m, a}
	return m, a
}
