package xds

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/cli/offline"
	"github.com/weftmesh/weft/internal/testing/meshgen"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/envoy"
	"github.com/weftmesh/weft/translator/ir"
	"github.com/weftmesh/weft/translator/testmesh"
)

// TestRoutePatchEqualsFullBuild is the guard of the route fast path
// (routepatch.go), as TestEndpointPatchEqualsFullBuild is the endpoint
// one's: over generated meshes (meshgen: IPv4, IPv6 and dual-stack pods
// and Services, headless ones, every protocol, splits, retries and
// AuthPolicies) it applies a series of random edits — mostly routing
// policy (TrafficSplit, RetryPolicy, HTTPRoute: weights, backends added
// and removed, matches, retry budgets and attempts, generation bumps,
// policies added and deleted), a few of other kinds — each through
// ADS.Update, one after the other on the same groups (so patched
// snapshots are patched again). After every edit, every group's
// configuration must be byte for byte what a full build of the new model
// gives, with the same policies and dependencies, and its generation and
// per-policy start generations (Programmed's bookkeeping) must be what a
// full rebuild from its previous snapshot gives.
//
// Groups: one per meshed workload (its pods share it), and two proxyless
// gRPC clients per mesh.
func TestRoutePatchEqualsFullBuild(t *testing.T) {
	seeds, steps := 24, 16
	if testing.Short() {
		seeds = 6
	}
	counts := map[string]*editCount{}
	skipped := 0
	// Edits of a Service with consumer routes (docs/design/176), and of
	// those the ones that must be patched.
	consumerEdits, consumerMustPatch := 0, 0
	for seed := uint64(1); seed <= uint64(seeds); seed++ {
		m := meshgen.Generate(seed, meshgen.Options{})
		r := rand.New(rand.NewPCG(seed, 7))
		in := m.In
		// Backend traffic policies, whose hash keys routes carry and
		// whose references the configurations of the routes' callers do.
		for i := range 2 {
			(&editor{r: r, m: m, in: in, step: -1 - i}).backendPolicy()
		}
		a, groups := generatedGroups(t, in)
		for step := 0; step < steps; step++ {
			kind, next := routeEdit(r, m, in, step)
			prevMesh, nextMesh := a.mesh, translator.Translate(next).Mesh
			ch := ir.Diff(prevMesh, nextMesh)
			// What a full build gives each group; an edit for which one
			// fails (a weft defect, not the fast path's) is skipped: the
			// group would keep its last good configuration and back off.
			want, failed := fullBuilds(groups, nextMesh)
			if failed != nil {
				t.Logf("seed %d, edit %d (%s) skipped: a full build fails: %v", seed, step, kind, failed)
				skipped++
				continue
			}
			old := map[*group]*snapshot{}
			for g := range groups {
				old[g] = g.snap.Load()
			}
			mustPatch := lastMustPatch
			for _, sc := range ch.Services {
				if sc.Old != nil && sc.New != nil && (sc.Old.HasConsumers() || sc.New.HasConsumers()) {
					consumerEdits++
					if mustPatch {
						consumerMustPatch++
					}
					break
				}
			}
			var grpcAffected uint64
			for g := range groups {
				if g.proxy.Kind == dataplane.KindGRPC && affects(&ch, g.proxy, old[g]) {
					grpcAffected++
				}
			}
			builds, patches := a.Builds(), a.Patches()
			a.Update(nextMesh, time.Now())
			c := counts[kind]
			if c == nil {
				c = &editCount{}
				counts[kind] = c
			}
			c.edits++
			c.builds += a.Builds() - builds
			c.patches += a.Patches() - patches
			for g, name := range groups {
				where := fmt.Sprintf("seed %d, edit %d (%s), %s", seed, step, kind, name)
				got := g.snap.Load()
				compareSnapshots(t, where, got, want[g])
				// What a full rebuild from the previous snapshot makes:
				// the same generation, and each policy carried since the
				// same generation (policySince).
				generationLikeRebuild(t, where, nextMesh, g, got, old[g])
				if !affects(&ch, g.proxy, old[g]) && got != old[g] {
					t.Errorf("%s: not affected by the change, but its snapshot was replaced", where)
				}
			}
			// Sidecar groups are always patched on such an edit; proxyless
			// gRPC groups too, unless a cluster only a route gives them
			// comes or goes (envoy.RouteChange, item 3) — never on a
			// weight change.
			maxBuilds := grpcAffected
			if kind == "weight" {
				maxBuilds = 0
			}
			if got := a.Builds() - builds; mustPatch && got > maxBuilds {
				t.Errorf("seed %d, edit %d (%s): %d group builds, want at most %d (%d proxyless gRPC groups affected): every affected sidecar group must be patched (%d patches); the change: %s",
					seed, step, kind, got, maxBuilds, grpcAffected, a.Patches()-patches, describeChange(&ch))
			}
			c.grpcAffected += grpcAffected
			if mustPatch {
				c.mustPatch++
				c.grpcMustPatch += grpcAffected
			}
			// Encode once: groups that hold a route configuration of the
			// same content hold one encoding of it.
			byContent := map[string]*encoded{}
			for g, name := range groups {
				for n, e := range g.snap.Load().resources[routesAt] {
					k := n + "\x00" + string(e.value())
					if x := byContent[k]; x != nil && x != e {
						t.Errorf("seed %d, edit %d (%s): %s holds its own encoding of route configuration %s", seed, step, kind, name, n)
					}
					byContent[k] = e
				}
			}
			if t.Failed() {
				t.Fatalf("seed %d, edit %d (%s) left a group unlike a full build; the change: %s", seed, step, kind, describeChange(&ch))
			}
			in = next
		}
	}
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range counts {
			if !yield(k) {
				return
			}
		}
	}) {
		c := counts[k]
		t.Logf("%-14s %4d edits (%3d that must be patched): %5d group builds, %5d patches (%d gRPC groups affected)", k, c.edits, c.mustPatch, c.builds, c.patches, c.grpcAffected)
	}
	if counts["weight"] == nil || counts["weight"].mustPatch < seeds/2 || counts["weight"].grpcMustPatch == 0 {
		t.Errorf("too few weight changes of HTTP splits to show the fast path (for sidecars and proxyless gRPC clients): %+v", counts["weight"])
	}
	t.Logf("%d edits of a Service with consumer routes, %d of them to be patched", consumerEdits, consumerMustPatch)
	if !testing.Short() && (consumerEdits == 0 || consumerMustPatch == 0) {
		t.Errorf("no edit of a Service with consumer routes (or none that must be patched): the test no longer shows their variants")
	}
	t.Logf("%d edits skipped (a full build fails)", skipped)
	if skipped > seeds*steps/10 {
		t.Errorf("%d of %d edits skipped: the test no longer tests much", skipped, seeds*steps)
	}
}

// generatedGroups serves in (a meshgen mesh) on a new ADS and joins a
// group for each of its meshed workloads (offline.Proxies) and two
// proxyless gRPC clients, named by workload: what the fast paths' guards
// patch and compare with full builds.
func generatedGroups(t *testing.T, in *translator.Inputs) (*ADS, map[*group]string) {
	t.Helper()
	proxies, err := offline.Proxies(in)
	if err != nil {
		t.Fatal(err)
	}
	a := NewADS(logr.Discard())
	a.Update(translator.Translate(in).Mesh, time.Now())
	groups := map[*group]string{}
	join := func(name string, p dataplane.Proxy) {
		c := a.newConn(true, NodeInfo{ID: name, Proxy: p})
		if err := a.join(c); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.leave(c) })
		groups[c.group] = name
	}
	for _, p := range proxies {
		join(p.Key(), p.Node)
	}
	for _, p := range proxies[:min(2, len(proxies))] {
		g := p.Node
		g.Kind = dataplane.KindGRPC
		join(p.Key()+"/grpc", g)
	}
	return a, groups
}

// fullBuilds is what a full build of mesh gives each group; an error
// names a group whose build fails (a weft defect, not a fast path's: the
// guards skip that edit).
func fullBuilds(groups map[*group]string, mesh *ir.Mesh) (map[*group]*snapshot, error) {
	want := map[*group]*snapshot{}
	for g, name := range groups {
		s, _, err := buildSnapshot(mesh, g.proxy, nil, nil, newEncoder())
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		want[g] = s
	}
	return want, nil
}

// generationLikeRebuild fails unless got, g's snapshot after a patch of
// old, has the generation and per-policy start generations (Programmed's
// bookkeeping, policySince) that a full rebuild of mesh from old gives.
func generationLikeRebuild(t *testing.T, where string, mesh *ir.Mesh, g *group, got, old *snapshot) {
	t.Helper()
	ref, _, err := encodeSnapshot(envoy.BuildGroup(mesh, g.proxy), nil, old, newEncoder())
	if err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	if got.generation != ref.generation || !slices.Equal(got.since, ref.since) {
		t.Errorf("%s: generation %d, policies since %v; a full rebuild gives %d, %v (policies %v)", where, got.generation, got.since, ref.generation, ref.since, got.policies)
	}
}

type editCount struct {
	edits, mustPatch int
	builds, patches  uint64
	grpcAffected     uint64
	grpcMustPatch    uint64 // gRPC groups affected by edits that must be patched
}

func describeChange(ch *ir.Change) string {
	var parts []string
	if ch.MeshWide {
		parts = append(parts, "mesh-wide")
	}
	for _, s := range ch.Services {
		parts = append(parts, "service "+s.Key.String())
	}
	for _, ns := range ch.Namespaces {
		parts = append(parts, "namespace "+ns)
	}
	return strings.Join(parts, ", ")
}

// routeEdit returns kind and a copy of in with one random edit: of
// routing policy mostly, else of something the route fast path must
// leave to a full build (an AuthPolicy, an endpoint). in is not modified.
func routeEdit(r *rand.Rand, m *meshgen.Mesh, in *translator.Inputs, step int) (string, *translator.Inputs) {
	out := *in
	out.TrafficSplits = slices.Clone(in.TrafficSplits)
	out.RetryPolicies = slices.Clone(in.RetryPolicies)
	out.HTTPRoutes = slices.Clone(in.HTTPRoutes)
	out.AuthPolicies = slices.Clone(in.AuthPolicies)
	out.EndpointSlices = slices.Clone(in.EndpointSlices)
	out.BackendTrafficPolicies = slices.Clone(in.BackendTrafficPolicies)
	e := &editor{r: r, m: m, in: &out, step: step}
	defer func() { lastMustPatch = e.mustPatch }()
	kinds := []struct {
		name string
		n    int // relative frequency
		fn   func() bool
	}{
		{"weight", 8, e.weight},
		{"weight-zero", 2, e.weightZero},
		{"generation", 2, e.generation},
		{"split-add", 3, e.splitAdd},
		{"split-remove", 1, e.splitRemove},
		{"split-backend", 2, e.splitBackend},
		{"retry-edit", 3, e.retryEdit},
		{"retry-add", 2, e.retryAdd},
		{"retry-remove", 1, e.retryRemove},
		{"route-add", 3, e.routeAdd},
		{"route-edit", 2, e.routeEdit},
		{"route-remove", 1, e.routeRemove},
		{"auth", 1, e.auth},
		{"backend-policy", 1, e.backendPolicy},
		{"split-fault", 2, e.splitFault},
		{"split-mirror", 1, e.splitMirror},
		{"endpoint", 1, e.endpoint},
	}
	total := 0
	for _, k := range kinds {
		total += k.n
	}
	for {
		n := r.IntN(total)
		for _, k := range kinds {
			if n -= k.n; n < 0 {
				if k.fn() {
					return k.name, &out
				}
				break
			}
		}
	}
}

// editor makes one edit of in (a copy whose object lists are its own; an
// object is deep-copied before it is changed).
type editor struct {
	r    *rand.Rand
	m    *meshgen.Mesh
	in   *translator.Inputs
	step int
	// mustPatch: the edit changes routing alone, of an HTTP port routed by
	// address, and removes no backend: every sidecar group it affects must
	// be patched, not built.
	mustPatch bool
}

// lastMustPatch is the last edit's mustPatch (routeEdit's callers read it).
var lastMustPatch bool

// routedByAddress: the split's root port is an HTTP port of a Service with
// a cluster IP, as meshgen meant it. (Consumer routes on the Service do not
// matter: the producer's routes change alone, for every audience but the
// consumer routes' namespaces, whose variants stay.)
func (e *editor) routedByAddress(ns, root string, port *int32) bool {
	for _, s := range e.m.Services {
		if s.Svc.Namespace == ns && s.Svc.Name == root {
			return port != nil && s.Svc.Spec.ClusterIP != corev1.ClusterIPNone && s.Protos[*port].IsHTTP()
		}
	}
	return false
}

func (e *editor) meta(ns, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 1, CreationTimestamp: metav1.Unix(1_800_000_000+int64(e.step), 0)}
}

// service picks a Service in a meshed namespace (in ns, if set); routable
// ones (with a cluster IP) mostly, headless ones sometimes.
func (e *editor) service(ns string) *meshgen.ServiceInfo {
	var all, routable []*meshgen.ServiceInfo
	for _, s := range e.m.Services {
		if s.Svc.Namespace == meshgen.LegacyNamespace || ns != "" && s.Svc.Namespace != ns {
			continue
		}
		all = append(all, s)
		if s.Svc.Spec.ClusterIP != corev1.ClusterIPNone {
			routable = append(routable, s)
		}
	}
	if len(routable) > 0 && e.r.Float64() < 0.9 {
		return routable[e.r.IntN(len(routable))]
	}
	if len(all) == 0 {
		return nil
	}
	return all[e.r.IntN(len(all))]
}

func (e *editor) port(s *meshgen.ServiceInfo) *int32 {
	if e.r.IntN(3) == 0 {
		return nil // every port
	}
	p := s.Svc.Spec.Ports[e.r.IntN(len(s.Svc.Spec.Ports))].Port
	return &p
}

func (e *editor) weightValue() *int32 {
	w := int32(1 + e.r.IntN(100))
	return &w
}

func (e *editor) weight() bool {
	if len(e.in.TrafficSplits) == 0 {
		return false
	}
	i := e.r.IntN(len(e.in.TrafficSplits))
	if e.r.IntN(3) > 0 {
		// Mostly a split of an HTTP port routed by address (the fast
		// path's case), when there is one.
		for _, j := range e.r.Perm(len(e.in.TrafficSplits)) {
			if ts := e.in.TrafficSplits[j]; e.routedByAddress(ts.Namespace, ts.Spec.RootService.Name, ts.Spec.RootService.Port) {
				i = j
				break
			}
		}
	}
	ts := e.in.TrafficSplits[i].DeepCopy()
	b := &ts.Spec.Backends[e.r.IntN(len(ts.Spec.Backends))]
	if b.Weight == nil || *b.Weight == 0 {
		return false // would add a backend back
	}
	b.Weight = e.weightValue()
	ts.Generation++
	e.in.TrafficSplits[i] = ts
	e.mustPatch = e.routedByAddress(ts.Namespace, ts.Spec.RootService.Name, ts.Spec.RootService.Port)
	return true
}

// splitFault sets, changes or removes a TrafficSplit's fault: routing
// alone, no backend added or removed, so a split of an HTTP port routed by
// address must be patched (docs/design/155: the listener carries no
// fault).
func (e *editor) splitFault() bool {
	if len(e.in.TrafficSplits) == 0 {
		return false
	}
	i := e.r.IntN(len(e.in.TrafficSplits))
	ts := e.in.TrafficSplits[i].DeepCopy()
	switch e.r.IntN(3) {
	case 0:
		ts.Spec.Fault = nil
	case 1:
		ts.Spec.Fault = &v1alpha1.FaultInjection{Delay: &v1alpha1.FaultDelay{Percent: int32(1 + e.r.IntN(100)), FixedDelay: v1alpha1.Duration(fmt.Sprintf("%dms", 1+e.r.IntN(5000)))}}
	default:
		code := v1alpha1.GRPCStatusCode("UNAVAILABLE")
		ts.Spec.Fault = &v1alpha1.FaultInjection{Abort: &v1alpha1.FaultAbort{Percent: int32(1 + e.r.IntN(99)), GRPCStatus: &code}}
	}
	ts.Generation++
	e.in.TrafficSplits[i] = ts
	e.mustPatch = e.routedByAddress(ts.Namespace, ts.Spec.RootService.Name, ts.Spec.RootService.Port)
	return true
}

// splitMirror sets or removes a TrafficSplit's mirror to a Service of its
// namespace: a backend (the mirror's cluster) may come or go, so the fast
// path may build.
func (e *editor) splitMirror() bool {
	if len(e.in.TrafficSplits) == 0 {
		return false
	}
	i := e.r.IntN(len(e.in.TrafficSplits))
	ts := e.in.TrafficSplits[i].DeepCopy()
	if ts.Spec.Mirror != nil && e.r.IntN(2) == 0 {
		ts.Spec.Mirror = nil
	} else {
		s := e.service(ts.Namespace)
		if s == nil {
			return false
		}
		pct := int32(e.r.IntN(101))
		ts.Spec.Mirror = &v1alpha1.RequestMirror{Backend: v1alpha1.MirrorBackend{Name: s.Svc.Name}, Percent: &pct}
	}
	ts.Generation++
	e.in.TrafficSplits[i] = ts
	return true
}

// weightZero gives a backend weight 0 (the model drops it from the route)
// when another keeps a positive one.
func (e *editor) weightZero() bool {
	if len(e.in.TrafficSplits) == 0 {
		return false
	}
	i := e.r.IntN(len(e.in.TrafficSplits))
	ts := e.in.TrafficSplits[i].DeepCopy()
	if len(ts.Spec.Backends) < 2 {
		return false
	}
	zero := int32(0)
	j := e.r.IntN(len(ts.Spec.Backends))
	ts.Spec.Backends[j].Weight = &zero
	ts.Spec.Backends[(j+1)%len(ts.Spec.Backends)].Weight = e.weightValue()
	ts.Generation++
	e.in.TrafficSplits[i] = ts
	return true
}

// generation bumps a policy's generation alone (a metadata-only change
// of the spec's status, say): the routes stay, the policy references move.
func (e *editor) generation() bool {
	switch {
	case len(e.in.TrafficSplits) > 0 && e.r.IntN(2) == 0:
		i := e.r.IntN(len(e.in.TrafficSplits))
		ts := e.in.TrafficSplits[i].DeepCopy()
		ts.Generation++
		e.in.TrafficSplits[i] = ts
		e.mustPatch = e.routedByAddress(ts.Namespace, ts.Spec.RootService.Name, ts.Spec.RootService.Port)
	case len(e.in.RetryPolicies) > 0:
		i := e.r.IntN(len(e.in.RetryPolicies))
		rp := e.in.RetryPolicies[i].DeepCopy()
		rp.Generation++
		e.in.RetryPolicies[i] = rp
	default:
		return false
	}
	return true
}

func (e *editor) splitAdd() bool {
	root := e.service("")
	if root == nil {
		return false
	}
	other := e.service(root.Svc.Namespace)
	spec := fmt.Sprintf(`rootService: {name: %s%s}, backends: [{name: %s, weight: %d}, {name: %s%s, weight: %d}`,
		root.Svc.Name, portField(e.port(root)), root.Svc.Name, 1+e.r.IntN(100), other.Svc.Name, portField(e.port(other)), 1+e.r.IntN(100))
	if e.r.IntN(4) == 0 {
		spec += fmt.Sprintf(`, {name: ghost-%d, weight: 5}`, e.step) // a missing backend
	}
	spec += "]"
	if e.r.IntN(3) == 0 {
		spec += `, matches: [{path: {type: PathPrefix, value: /canary}}, {headers: [{name: x-canary, value: "1"}]}]`
	}
	ts := decodeDoc(fmt.Sprintf(`{apiVersion: mesh.weft.dev/v1alpha1, kind: TrafficSplit, metadata: {name: edit-%d, namespace: %s, generation: 1, creationTimestamp: "2027-01-01T00:%02d:%02dZ"}, spec: {%s}}`,
		e.step, root.Svc.Namespace, e.step/60, e.step%60, spec)).TrafficSplits[0]
	e.in.TrafficSplits = append(e.in.TrafficSplits, ts)
	return true
}

func (e *editor) splitRemove() bool {
	if len(e.in.TrafficSplits) == 0 {
		return false
	}
	i := e.r.IntN(len(e.in.TrafficSplits))
	e.in.TrafficSplits = slices.Delete(e.in.TrafficSplits, i, i+1)
	return true
}

// splitBackend adds a backend to a split, or removes one.
func (e *editor) splitBackend() bool {
	if len(e.in.TrafficSplits) == 0 {
		return false
	}
	i := e.r.IntN(len(e.in.TrafficSplits))
	ts := e.in.TrafficSplits[i].DeepCopy()
	if len(ts.Spec.Backends) > 2 && e.r.IntN(2) == 0 {
		j := e.r.IntN(len(ts.Spec.Backends))
		ts.Spec.Backends = slices.Delete(ts.Spec.Backends, j, j+1)
	} else {
		s := e.service(ts.Namespace)
		if s == nil {
			return false
		}
		ts.Spec.Backends = append(ts.Spec.Backends, ts.Spec.Backends[0])
		last := &ts.Spec.Backends[len(ts.Spec.Backends)-1]
		last.Name, last.Port, last.Weight = s.Svc.Name, e.port(s), e.weightValue()
	}
	ts.Generation++
	e.in.TrafficSplits[i] = ts
	return true
}

func (e *editor) retryEdit() bool {
	if len(e.in.RetryPolicies) == 0 {
		return false
	}
	i := e.r.IntN(len(e.in.RetryPolicies))
	rp := e.in.RetryPolicies[i].DeepCopy()
	switch e.r.IntN(4) {
	case 0:
		n := int32(e.r.IntN(4))
		rp.Spec.Attempts = &n
	case 1:
		pct, minc := int32(e.r.IntN(101)), int32(e.r.IntN(10))
		rp.Spec.Budget = &v1alpha1.RetryBudget{Percent: &pct, MinConcurrency: &minc}
	case 2:
		d := v1alpha1.Duration(fmt.Sprintf("%dms", 100*(1+e.r.IntN(9))))
		rp.Spec.PerTryTimeout = &d
	default:
		rp.Spec.RetryOn = []v1alpha1.RetryCondition{"5xx", "reset"}[:1+e.r.IntN(2)]
	}
	rp.Generation++
	e.in.RetryPolicies[i] = rp
	return true
}

func (e *editor) retryAdd() bool {
	var target string
	s := e.service("")
	if s == nil {
		return false
	}
	ns := s.Svc.Namespace
	switch {
	case e.r.IntN(3) == 0 && len(e.in.TrafficSplits) > 0:
		ts := e.in.TrafficSplits[e.r.IntN(len(e.in.TrafficSplits))]
		ns, target = ts.Namespace, fmt.Sprintf(`{group: mesh.weft.dev, kind: TrafficSplit, name: %s}`, ts.Name)
	case e.r.IntN(3) == 0 && len(e.in.HTTPRoutes) > 0:
		hr := e.in.HTTPRoutes[e.r.IntN(len(e.in.HTTPRoutes))]
		ns, target = hr.Namespace, fmt.Sprintf(`{group: gateway.networking.k8s.io, kind: HTTPRoute, name: %s}`, hr.Name)
	default:
		target = fmt.Sprintf(`{group: "", kind: Service, name: %s}`, s.Svc.Name)
	}
	rp := decodeDoc(fmt.Sprintf(`{apiVersion: mesh.weft.dev/v1alpha1, kind: RetryPolicy, metadata: {name: edit-%d, namespace: %s, generation: 1, creationTimestamp: "2027-01-01T00:%02d:%02dZ"}, spec: {targetRefs: [%s], attempts: %d, retryOn: [5xx], budget: {percent: %d, minConcurrency: %d}}}`,
		e.step, ns, e.step/60, e.step%60, target, e.r.IntN(4), e.r.IntN(101), e.r.IntN(5))).RetryPolicies[0]
	e.in.RetryPolicies = append(e.in.RetryPolicies, rp)
	return true
}

func (e *editor) retryRemove() bool {
	if len(e.in.RetryPolicies) == 0 {
		return false
	}
	i := e.r.IntN(len(e.in.RetryPolicies))
	e.in.RetryPolicies = slices.Delete(e.in.RetryPolicies, i, i+1)
	return true
}

// httpRouteDoc is a GAMMA HTTPRoute on parent (a Service port, or every
// port), with a matched rule and a weighted default rule; in one case of
// four a consumer route (docs/design/176), from another namespace, whose
// backends are in the parent's namespace.
func (e *editor) httpRouteDoc(name string, gen int64, parent *meshgen.ServiceInfo) string {
	ns := parent.Svc.Namespace
	routeNS, nsField := ns, ""
	if e.r.IntN(4) == 0 {
		if c := e.service(""); c != nil && c.Svc.Namespace != ns {
			routeNS, nsField = c.Svc.Namespace, ", namespace: "+ns
		}
	}
	parentRef := fmt.Sprintf(`{group: "", kind: Service, name: %s%s%s}`, parent.Svc.Name, nsField, portField(e.port(parent)))
	if e.r.IntN(5) == 0 {
		// A second parent: one policy in two Services' routes.
		if p2 := e.service(ns); p2 != nil && p2 != parent {
			parentRef += fmt.Sprintf(`, {group: "", kind: Service, name: %s%s}`, p2.Svc.Name, nsField)
		}
	}
	backend := func() string {
		b := e.service(ns)
		port := b.Svc.Spec.Ports[e.r.IntN(len(b.Svc.Spec.Ports))].Port
		for _, p := range b.Svc.Spec.Ports {
			// An HTTP port mostly (to a TCP one, a proxyless client's
			// build fails: it has no cluster for a TCP port).
			if b.Protos[p.Port].IsHTTP() && e.r.IntN(8) != 0 {
				port = p.Port
			}
		}
		return fmt.Sprintf(`{name: %s%s, port: %d, weight: %d}`, b.Svc.Name, nsField, port, e.r.IntN(100))
	}
	rules := fmt.Sprintf(`[{matches: [{path: {type: PathPrefix, value: /v2}}], backendRefs: [%s]}, {backendRefs: [%s, %s]}]`, backend(), backend(), backend())
	return fmt.Sprintf(`{apiVersion: gateway.networking.k8s.io/v1, kind: HTTPRoute, metadata: {name: %s, namespace: %s, generation: %d, creationTimestamp: "2027-01-01T00:%02d:%02dZ"}, spec: {parentRefs: [%s], rules: %s}}`,
		name, routeNS, gen, e.step/60, e.step%60, parentRef, rules)
}

func (e *editor) routeAdd() bool {
	parent := e.service("")
	if parent == nil {
		return false
	}
	e.in.HTTPRoutes = append(e.in.HTTPRoutes, decodeDoc(e.httpRouteDoc(fmt.Sprintf("edit-%d", e.step), 1, parent)).HTTPRoutes[0])
	return true
}

// routeEdit rewrites an HTTPRoute on the same parent namespace: new
// weights, backends, perhaps parents.
func (e *editor) routeEdit() bool {
	if len(e.in.HTTPRoutes) == 0 {
		return false
	}
	i := e.r.IntN(len(e.in.HTTPRoutes))
	old := e.in.HTTPRoutes[i]
	parent := e.service(old.Namespace)
	if parent == nil {
		return false
	}
	hr := decodeDoc(e.httpRouteDoc(old.Name, old.Generation+1, parent)).HTTPRoutes[0]
	hr.CreationTimestamp = old.CreationTimestamp
	e.in.HTTPRoutes[i] = hr
	return true
}

func (e *editor) routeRemove() bool {
	if len(e.in.HTTPRoutes) == 0 {
		return false
	}
	i := e.r.IntN(len(e.in.HTTPRoutes))
	e.in.HTTPRoutes = slices.Delete(e.in.HTTPRoutes, i, i+1)
	return true
}

// auth adds an AuthPolicy denying one namespace's callers a Service: not
// routing policy (it changes who may reach what).
func (e *editor) auth() bool {
	s := e.service("")
	if s == nil {
		return false
	}
	from := e.m.In.Namespaces[e.r.IntN(len(e.m.In.Namespaces))].Name
	ap := decodeDoc(fmt.Sprintf(`{apiVersion: mesh.weft.dev/v1alpha1, kind: AuthPolicy, metadata: {name: edit-%d, namespace: %s, generation: 1, creationTimestamp: "2027-01-01T00:%02d:%02dZ"}, spec: {targetRefs: [{group: "", kind: Service, name: %s}], action: Deny, rules: [{from: {namespaces: [%s]}}]}}`,
		e.step, s.Svc.Namespace, e.step/60, e.step%60, s.Svc.Name, from)).AuthPolicies[0]
	e.in.AuthPolicies = append(e.in.AuthPolicies, ap)
	return true
}

// backendPolicy adds a BackendTrafficPolicy to a Service (or one of its
// ports): consistent hashing on a header or the source, or a retry cap.
// Not routing policy (it changes the Service's clusters), but routes read
// its hash key.
func (e *editor) backendPolicy() bool {
	s := e.service("")
	if s == nil {
		return false
	}
	section := ""
	if e.r.IntN(2) == 0 {
		section = ", sectionName: " + s.Svc.Spec.Ports[e.r.IntN(len(s.Svc.Spec.Ports))].Name
	}
	spec := []string{
		`loadBalancer: {type: RingHash, consistentHash: {type: Header, header: {name: x-user}}}`,
		`loadBalancer: {type: Maglev, consistentHash: {type: SourceIP}}`,
		`circuitBreaker: {maxRetries: 4}`,
	}[e.r.IntN(3)]
	name := fmt.Sprintf("edit-%d", e.step)
	if e.step < 0 {
		name = fmt.Sprintf("initial-%d", -e.step)
	}
	bp := decodeDoc(fmt.Sprintf(`{apiVersion: mesh.weft.dev/v1alpha1, kind: BackendTrafficPolicy, metadata: {name: %s, namespace: %s, generation: 1, creationTimestamp: "2027-01-01T00:%02d:%02dZ"}, spec: {targetRefs: [{group: "", kind: Service, name: %s%s}], %s}}`,
		name, s.Svc.Namespace, (e.step+10)/60, (e.step+10)%60, s.Svc.Name, section, spec)).BackendTrafficPolicies[0]
	e.in.BackendTrafficPolicies = append(e.in.BackendTrafficPolicies, bp)
	return true
}

// endpoint drops an EndpointSlice's last endpoint.
func (e *editor) endpoint() bool {
	if len(e.in.EndpointSlices) == 0 {
		return false
	}
	i := e.r.IntN(len(e.in.EndpointSlices))
	s := e.in.EndpointSlices[i].DeepCopy()
	if len(s.Endpoints) == 0 {
		return false
	}
	s.Endpoints = s.Endpoints[:len(s.Endpoints)-1]
	e.in.EndpointSlices[i] = s
	return true
}

func portField(p *int32) string {
	if p == nil {
		return ""
	}
	return fmt.Sprintf(", port: %d", *p)
}

func decodeDoc(doc string) *translator.Inputs {
	in, err := translator.DecodeInputs([]byte(doc))
	if err != nil {
		panic(fmt.Sprintf("%v\n%s", err, doc))
	}
	return in
}

// TestRoutePatchKeepsPolicyStatus: a patched push carries the policy
// bookkeeping a build carries (Programmed, xds/registry.go). A split's
// weight change with a new generation is patched (no build), sent as the
// root's route configuration alone, and its new generation is Programmed
// only once the proxy ACKs it, while the old one is carried by nobody; a
// generation-only change (no byte of configuration changes) is patched
// too, and is Programmed as soon as the proxy is in sync; an endpoint
// change in flight after that does not make it pending again.
func TestRoutePatchKeepsPolicyStatus(t *testing.T) {
	m := tmesh{w: 10}
	inputs := func(w int32, gen int64) *translator.Inputs {
		in := m.inputs()         // with the endpoint moveEndpoint moved
		s := in.TrafficSplits[0] // svc-0's: to itself and svc-2
		*s.Spec.Backends[0].Weight, *s.Spec.Backends[1].Weight = 100-w, w
		s.Generation = gen
		return in
	}
	var out strings.Builder
	a := NewADS(logr.Discard())
	a.Update(translator.Translate(inputs(10, 1)).Mesh, time.Now())
	e := connect(t, a, &out, "envoy", true, true, transcriptNode("p-0.ns-0", testmesh.Namespace(0), "svc-0"))
	e.envoyLike()
	e.ackAll()
	ref := func(gen int64) ir.PolicyRef {
		return ir.PolicyRef{Kind: translator.KindTrafficSplit, Namespace: testmesh.Namespace(0), Name: "svc-0", Generation: gen}
	}
	if st := a.PolicyState(ref(1)); !st.Programmed() {
		t.Fatalf("generation 1 after the ACK: %+v, want Programmed", st)
	}

	builds, patches := a.Builds(), a.Patches()
	a.Update(translator.Translate(inputs(20, 2)).Mesh, time.Now())
	if b, p := a.Builds()-builds, a.Patches()-patches; b != 0 || p != 1 {
		t.Fatalf("a weight change built %d groups and patched %d, want 0 and 1", b, p)
	}
	sent := len(e.s.delta)
	e.push()
	var got []string
	for _, r := range e.s.delta[sent:] {
		for _, res := range r.Resources {
			got = append(got, shortType(r.TypeUrl)+" "+res.Name)
		}
	}
	if want := "[RouteConfiguration outbound|80||svc-0.ns-0.svc.cluster.local]"; fmt.Sprint(got) != want {
		t.Errorf("the weight change sent %v, want %s", got, want)
	}
	if st := a.PolicyState(ref(2)); st.Affected != 1 || st.Programmed() {
		t.Errorf("generation 2 before the ACK: %+v, want 1 affected, not Programmed", st)
	}
	if st := a.PolicyState(ref(1)); st.Affected != 0 {
		t.Errorf("generation 1 after the change: %+v, want carried by nobody", st)
	}
	e.ackAll()
	if st := a.PolicyState(ref(2)); !st.Programmed() {
		t.Errorf("generation 2 after the ACK: %+v, want Programmed", st)
	}

	gen := e.c.group.snap.Load().generation
	builds = a.Builds()
	a.Update(translator.Translate(inputs(20, 3)).Mesh, time.Now())
	if b := a.Builds() - builds; b != 0 {
		t.Errorf("a generation-only change built %d groups, want 0", b)
	}
	if g := e.c.group.snap.Load().generation; g != gen+1 {
		t.Errorf("a generation-only change left the group at generation %d, want %d (as a build does)", g, gen+1)
	}
	sent = len(e.s.delta)
	e.push()
	if len(e.s.delta) != sent {
		t.Errorf("a generation-only change sent %d responses, want none", len(e.s.delta)-sent)
	}
	if st := a.PolicyState(ref(3)); !st.Programmed() {
		t.Errorf("generation 3, nothing to send and the proxy in sync: %+v, want Programmed", st)
	}

	m.moveEndpoint(a) // an endpoint patch, in flight
	e.push()
	if st := a.PolicyState(ref(3)); !st.Programmed() {
		t.Errorf("generation 3 with an endpoint change in flight: %+v, want still Programmed", st)
	}
}
