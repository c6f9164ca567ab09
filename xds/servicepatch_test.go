package xds

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/testing/meshgen"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/ir"
)

// TestServicePatchEqualsFullBuild is the guard of the new-Service fast
// path (servicepatch.go, docs/design/186), as TestRoutePatchEqualsFullBuild
// is the route one's: over generated meshes (meshgen: IPv4, IPv6 and
// dual-stack pods and Services, headless ones, every protocol, splits,
// retries and AuthPolicies) it adds Services one edit after the other —
// copies of existing ones under a new name and new cluster IPs, with their
// endpoints; some without a selector (endpoints written by hand, as the
// bench does), some on a port number no Service had, some exported to
// their own namespace only, some sharing another's address, some the root
// of a new TrafficSplit, two at once — each through ADS.Update on the same
// groups (so patched snapshots are patched again). After every edit,
// every group's configuration must be byte for byte what a full build of
// the new model gives, with the same policies and dependencies and the
// generation a full rebuild from its previous snapshot gives. Edits that
// must be patched (a Service on a known HTTP port number, selecting no
// workload, reachable from everywhere or exported to its own namespace
// only — the others' capture listeners then refuse it) must build no
// sidecar group.
func TestServicePatchEqualsFullBuild(t *testing.T) {
	seeds, steps := 16, 10
	if testing.Short() {
		seeds = 4
	}
	counts := map[string]*editCount{}
	skipped := 0
	for seed := uint64(1); seed <= uint64(seeds); seed++ {
		m := meshgen.Generate(seed, meshgen.Options{})
		r := rand.New(rand.NewPCG(seed, 11))
		in := m.In
		a, groups := generatedGroups(t, in)
		for step := 0; step < steps; step++ {
			kind, next, mustPatch := serviceEdit(r, m, in, int(seed), step)
			nextMesh := translator.Translate(next).Mesh
			want, failed := fullBuilds(groups, nextMesh)
			if failed != nil {
				t.Logf("seed %d, edit %d (%s) skipped: a full build fails: %v", seed, step, kind, failed)
				skipped++
				in = next
				a.Update(nextMesh, time.Now())
				continue
			}
			old := map[*group]*snapshot{}
			for g := range groups {
				old[g] = g.snap.Load()
			}
			ch := ir.Diff(a.mesh, nextMesh)
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
			var grpcAffected uint64
			for g, name := range groups {
				where := fmt.Sprintf("seed %d, edit %d (%s), %s", seed, step, kind, name)
				got := g.snap.Load()
				compareSnapshots(t, where, got, want[g])
				generationLikeRebuild(t, where, nextMesh, g, got, old[g])
				if g.proxy.Kind == dataplane.KindGRPC && affects(&ch, g.proxy, old[g]) {
					grpcAffected++
				}
			}
			if mustPatch {
				c.mustPatch++
				if got := a.Builds() - builds; got > grpcAffected {
					t.Errorf("seed %d, edit %d (%s): %d group builds, want at most the %d proxyless gRPC groups affected: every sidecar group must be patched", seed, step, kind, got, grpcAffected)
				}
			}
			if t.Failed() {
				t.Fatalf("seed %d, edit %d (%s) left a group unlike a full build", seed, step, kind)
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
		t.Logf("%-16s %4d edits (%3d that must be patched): %5d group builds, %5d patches", k, c.edits, c.mustPatch, c.builds, c.patches)
	}
	if c := counts["plain"]; c == nil || c.mustPatch < seeds/2 || c.patches == 0 {
		t.Errorf("too few plain new Services to show the fast path: %+v", c)
	}
	if skipped > seeds*steps/10 {
		t.Errorf("%d of %d edits skipped: the test no longer tests much", skipped, seeds*steps)
	}
}

// serviceEdit adds one or two Services to a copy of in: copies of
// existing Services of meshed namespaces (and of their EndpointSlices)
// under new names and addresses, changed as the kind drawn says.
// mustPatch: every sidecar group the edit affects must be patched.
func serviceEdit(r *rand.Rand, m *meshgen.Mesh, in *translator.Inputs, seed, step int) (kind string, out *translator.Inputs, mustPatch bool) {
	cp := *in
	cp.Services = slices.Clone(in.Services)
	cp.EndpointSlices = slices.Clone(in.EndpointSlices)
	cp.TrafficSplits = slices.Clone(in.TrafficSplits)
	kinds := []string{"plain", "plain", "plain", "selects", "new-port", "own-namespace", "same-address", "split-root", "two", "tcp"}
	kind = kinds[r.IntN(len(kinds))]
	guarded := map[string]bool{}
	for _, ap := range in.AuthPolicies {
		guarded[ap.Namespace] = true
	}
	var sources, unguarded []*meshgen.ServiceInfo
	for _, s := range m.Services {
		if s.Svc.Namespace != meshgen.LegacyNamespace {
			sources = append(sources, s)
			if !guarded[s.Svc.Namespace] {
				unguarded = append(unguarded, s)
			}
		}
	}
	if kind == "plain" && len(unguarded) > 0 {
		sources = unguarded // mostly copies that every sidecar reaches
	}
	n := 1
	if kind == "two" {
		n = 2
	}
	mustPatch = true
	for k := 0; k < n; k++ {
		src := sources[r.IntN(len(sources))]
		svc := src.Svc.DeepCopy()
		name := fmt.Sprintf("new-%d-%d-%d", seed, step, k)
		svc.Name, svc.ResourceVersion, svc.UID = name, "", ""
		if svc.Annotations != nil {
			delete(svc.Annotations, translator.AnnotationExportTo)
		}
		headless := svc.Spec.ClusterIP == corev1.ClusterIPNone
		if !headless {
			svc.Spec.ClusterIPs = nil
			for _, ip := range src.Svc.Spec.ClusterIPs {
				if netip.MustParseAddr(ip).Is4() {
					svc.Spec.ClusterIPs = append(svc.Spec.ClusterIPs, fmt.Sprintf("10.99.%d.%d", step, 10*seed%250+k))
				} else {
					svc.Spec.ClusterIPs = append(svc.Spec.ClusterIPs, netip.MustParseAddr(fmt.Sprintf("fd00:99::%d:%d", step, 10*seed%250+k)).String())
				}
			}
			svc.Spec.ClusterIP = svc.Spec.ClusterIPs[0]
		}
		selects := kind == "selects"
		if !selects {
			svc.Spec.Selector = nil // endpoints written by hand
		}
		renamed := map[string]string{} // a port's old name → new
		switch kind {
		case "new-port":
			for i := range svc.Spec.Ports {
				svc.Spec.Ports[i].Port = int32(7100 + step*10 + i)
			}
		case "own-namespace":
			if svc.Annotations == nil {
				svc.Annotations = map[string]string{}
			}
			svc.Annotations[translator.AnnotationExportTo] = "."
			// Other namespaces refuse it: their capture listener gains
			// its addresses, and is all that changes for them.
		case "same-address":
			svc.Spec.ClusterIP, svc.Spec.ClusterIPs = src.Svc.Spec.ClusterIP, slices.Clone(src.Svc.Spec.ClusterIPs)
			mustPatch = false
		case "split-root":
			w := int32(50)
			cp.TrafficSplits = append(cp.TrafficSplits, &v1alpha1.TrafficSplit{
				ObjectMeta: metav1.ObjectMeta{Namespace: svc.Namespace, Name: name, Generation: 1, CreationTimestamp: metav1.Unix(1_800_000_000+int64(step), 0)},
				Spec: v1alpha1.TrafficSplitSpec{RootService: v1alpha1.RootServiceReference{Name: name},
					Backends: []v1alpha1.Backend{{Name: name, Weight: &w}, {Name: src.Svc.Name, Weight: &w}}},
			})
			mustPatch = false
		case "tcp":
			for i := range svc.Spec.Ports {
				renamed[svc.Spec.Ports[i].Name] = fmt.Sprintf("tcp-%d", i)
				svc.Spec.Ports[i].Name, svc.Spec.Ports[i].AppProtocol = fmt.Sprintf("tcp-%d", i), nil
			}
		}
		if guarded[src.Svc.Namespace] {
			// The copy shares its source's pods, which AuthPolicies
			// guard: callers they deny refuse it (mayReach), and their
			// capture listener changes.
			mustPatch = false
		}
		if headless || selects || kind == "new-port" || kind == "tcp" {
			// A headless Service is built; one that selects a workload
			// rebuilds that workload's groups; a new HTTP port number
			// adds a Host-routed chain. (A TCP copy may still share a
			// port number with an HTTP Service: patched or not, equal.)
			mustPatch = false
		}
		for _, sl := range in.EndpointSlices {
			if sl.Namespace != src.Svc.Namespace || sl.Labels[discoveryv1.LabelServiceName] != src.Svc.Name {
				continue
			}
			c := sl.DeepCopy()
			c.Name = name + "-" + sl.Name
			c.Labels[discoveryv1.LabelServiceName] = name
			for i := range c.Ports {
				if c.Ports[i].Name != nil {
					if n, ok := renamed[*c.Ports[i].Name]; ok {
						c.Ports[i].Name, c.Ports[i].AppProtocol = &n, nil
					}
				}
			}
			cp.EndpointSlices = append(cp.EndpointSlices, c)
		}
		cp.Services = append(cp.Services, svc)
	}
	return kind, &cp, mustPatch
}
