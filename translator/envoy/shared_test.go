package envoy_test

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/envoy"
	"github.com/weftmesh/weft/translator/ir"
	"github.com/weftmesh/weft/translator/testmesh"
)

// TestSharedBuildEqualsBuild: proxies built through one Shared, in
// parallel, each get exactly what Build gives them alone — for every
// golden input's proxies, and for variants of each that share its view
// but differ in what Shared must not share: another service account
// (tracing's service name; AuthPolicies that name principals change the
// view itself), IPv6-only and dual-stack addresses (the listeners'
// families), and another namespace's proxy with the same labels.
func TestSharedBuildEqualsBuild(t *testing.T) {
	type meshCase struct {
		name    string
		mesh    *ir.Mesh
		proxies []dataplane.Proxy
	}
	var cases []meshCase
	inputs, _ := filepath.Glob("testdata/*.in.yaml")
	for _, path := range inputs {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		in, err := translator.DecodeInputs(data)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		c := meshCase{name: strings.TrimSuffix(filepath.Base(path), ".in.yaml"), mesh: translator.Translate(in).Mesh}
		for _, pod := range in.Pods {
			if meshed(pod) {
				c.proxies = append(c.proxies, variants(proxyOf(pod))...)
			}
		}
		cases = append(cases, c)
	}
	for _, export := range []bool{false, true} {
		in := testmesh.Generate(testmesh.Options{Services: 60, Namespaces: 6, EndpointsPerService: 3, SplitEvery: 4, ExportAll: export})
		c := meshCase{name: fmt.Sprintf("generated/export=%v", export), mesh: translator.Translate(in).Mesh}
		for i := 0; i < 12; i++ {
			c.proxies = append(c.proxies, variants(proxy(i%6))...)
		}
		cases = append(cases, c)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sharedDeps, sharedPolicies := 0, 0
			if strings.HasPrefix(c.name, "generated/") {
				defer func() {
					if sharedDeps == 0 || sharedPolicies == 0 {
						t.Errorf("%d groups' dependencies were their Part's, %d replicas' policies one list: the case does not test sharing them", sharedDeps, sharedPolicies)
					}
				}()
			}
			s := envoy.NewShared(c.mesh)
			got := make([]*envoy.Resources, len(c.proxies))
			var wg sync.WaitGroup
			for i, p := range c.proxies {
				wg.Add(1)
				go func() { defer wg.Done(); got[i] = s.Build(p) }()
			}
			wg.Wait()
			for i, p := range c.proxies {
				want := envoy.Build(c.mesh, p)
				if !equalResources(got[i], want) {
					t.Errorf("proxy %d (%s/%s %v %v): shared build differs from Build", i, p.Namespace, p.ServiceAccount, p.IPs, p.Kind)
				}
				if !reflect.DeepEqual(got[i].Policies, want.Policies) || !reflect.DeepEqual(got[i].Deps, want.Deps) ||
					!reflect.DeepEqual(got[i].NamespaceDeps, want.NamespaceDeps) || !reflect.DeepEqual(got[i].Secrets, want.Secrets) {
					t.Errorf("proxy %d (%s/%s): policies, dependencies or secrets differ from Build", i, p.Namespace, p.ServiceAccount)
				}
				if err := got[i].Validate(); err != nil {
					t.Errorf("proxy %d: %v", i, err)
				}
			}
			// The group's part (BuildGroup, through the Shared as the
			// xds layer builds it) holds none of the proxy's own
			// listeners, and with them is Build's whole set.
			for i, p := range c.proxies {
				group := s.BuildGroup(p)
				own := envoy.ProxyListeners(p)
				if p.Kind != dataplane.KindGRPC && len(own) != 2 {
					t.Errorf("proxy %d: %d own listeners, want readiness and stats", i, len(own))
				}
				for _, l := range group.Listeners {
					if envoy.IsProxyListener(l.Name) {
						t.Errorf("proxy %d: the group's build holds the proxy's own listener %s", i, l.Name)
					}
				}
				whole := *group
				whole.Listeners = append(append([]*listenerv3.Listener(nil), group.Listeners...), own...)
				sort.Slice(whole.Listeners, func(a, b int) bool { return whole.Listeners[a].Name < whole.Listeners[b].Name })
				if !equalResources(&whole, got[i]) {
					t.Errorf("proxy %d (%s/%s %v): BuildGroup plus ProxyListeners differs from Build", i, p.Namespace, p.ServiceAccount, p.IPs)
				}
				if !equalResources(envoy.BuildGroup(c.mesh, p), group) {
					t.Errorf("proxy %d: BuildGroup differs from Shared.BuildGroup", i)
				}
				// Two replicas of the group at addresses no endpoint
				// holds (of the same families: a pod's addresses can
				// name its served ports, servedPorts) share the group's
				// part exactly; only their own listeners differ.
				if p.Kind == dataplane.KindGRPC || len(p.IPs) == 0 {
					continue
				}
				r1, r2 := p, p
				r1.IPs, r2.IPs = nil, nil
				for _, ip := range p.IPs {
					r1.IPs = append(r1.IPs, testAddress(ip, 1))
					r2.IPs = append(r2.IPs, testAddress(ip, 2))
				}
				g1, g2 := s.BuildGroup(r1), s.BuildGroup(r2)
				if !equalResources(g1, g2) {
					t.Errorf("proxy %d: replicas at %v and %v get different group builds", i, r1.IPs, r2.IPs)
				}
				// The replicas' common part is one Part (the xds
				// layer encodes and checks it once), and each build
				// is exactly its Part and its own resources.
				if p.Kind == dataplane.KindSidecar && (g1.Common == nil || g1.Common != g2.Common || g1.Common != group.Common) {
					t.Errorf("proxy %d: replicas' group builds do not share one Common part", i)
				}
				// Dependencies that are the Part's are its very list
				// (the xds layer makes their set once).
				if g1.Common != nil && slices.Equal(g1.Deps, g1.Common.Deps) {
					if !g1.Common.DepsAre(g1.Deps) || !g1.Common.DepsAre(g2.Deps) {
						t.Errorf("proxy %d: its dependencies are its Part's, but a copy", i)
					}
					sharedDeps++
				}
				if len(g1.Policies) > 0 && len(g2.Policies) > 0 && &g1.Policies[0] == &g2.Policies[0] {
					sharedPolicies++ // the entry's list (view.policies)
				}
				for _, g := range []*envoy.Resources{group, g1, got[i]} {
					if err := partsAreTheWhole(g); err != nil {
						t.Errorf("proxy %d: %v", i, err)
					}
				}
				if proto.Equal(envoy.ProxyListeners(r1)[0], envoy.ProxyListeners(r2)[0]) {
					t.Errorf("proxy %d: replicas at %v and %v get the same readiness listener", i, r1.IPs, r2.IPs)
				}
			}
			// Building again from the memo changes nothing either.
			for i, p := range c.proxies {
				if !equalResources(s.Build(p), got[i]) {
					t.Errorf("proxy %d: a second shared build differs from the first", i)
				}
			}
		})
	}
}

// testAddress is the n-th documentation address (RFC 5737, RFC 3849)
// of ip's family.
// partsAreTheWhole says what is wrong with r's Common and Own, if
// anything: together they must be r's lists, the same messages, and the
// Part's lists sorted by name.
func partsAreTheWhole(r *envoy.Resources) error {
	if r.Common == nil {
		return nil
	}
	count := func(ms ...[]proto.Message) map[proto.Message]int {
		n := map[proto.Message]int{}
		for _, l := range ms {
			for _, m := range l {
				n[m]++
			}
		}
		return n
	}
	all, c, o := messagesOf(r.Clusters, r.Endpoints, r.Listeners, r.Routes), messagesOf(r.Common.Clusters, r.Common.Endpoints, r.Common.Listeners, r.Common.Routes), messagesOf(r.Own.Clusters, r.Own.Endpoints, r.Own.Listeners, r.Own.Routes)
	if !reflect.DeepEqual(count(all), count(c, o)) {
		return fmt.Errorf("Common (%d resources) and Own (%d) are not the build's %d resources", len(c), len(o), len(all))
	}
	if !sort.SliceIsSorted(r.Common.Listeners, func(a, b int) bool { return r.Common.Listeners[a].Name < r.Common.Listeners[b].Name }) ||
		!sort.SliceIsSorted(r.Common.Routes, func(a, b int) bool { return r.Common.Routes[a].Name < r.Common.Routes[b].Name }) ||
		!sort.SliceIsSorted(r.Common.Clusters, func(a, b int) bool { return r.Common.Clusters[a].Name < r.Common.Clusters[b].Name }) ||
		!sort.SliceIsSorted(r.Common.Endpoints, func(a, b int) bool { return r.Common.Endpoints[a].ClusterName < r.Common.Endpoints[b].ClusterName }) {
		return errors.New("the Common part's lists are not sorted by name")
	}
	return nil
}

// messagesOf lists the messages of the four kinds.
func messagesOf(cs []*clusterv3.Cluster, es []*endpointv3.ClusterLoadAssignment, ls []*listenerv3.Listener, rs []*routev3.RouteConfiguration) []proto.Message {
	var out []proto.Message
	for _, m := range cs {
		out = append(out, m)
	}
	for _, m := range es {
		out = append(out, m)
	}
	for _, m := range ls {
		out = append(out, m)
	}
	for _, m := range rs {
		out = append(out, m)
	}
	return out
}

func testAddress(ip string, n byte) string {
	if a, err := netip.ParseAddr(ip); err == nil && a.Unmap().Is6() {
		return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: n}).String()
	}
	return netip.AddrFrom4([4]byte{192, 0, 2, n}).String()
}

func variants(p dataplane.Proxy) []dataplane.Proxy {
	other := p
	other.ServiceAccount += "-other"
	v6 := p
	v6.IPs = []string{"fd00::17"}
	dual := p
	dual.IPs = []string{"10.9.9.9", "fd00::9"}
	elsewhere := p
	elsewhere.Namespace += "-elsewhere"
	// Another zone: a Service that prefers the caller's zone gives it
	// other priorities (docs/design/171).
	zoneB := p
	zoneB.Region, zoneB.Zone = "", "zone-b"
	return []dataplane.Proxy{p, other, v6, dual, elsewhere, zoneB}
}

// TestSharedBuildShares: proxies of different namespaces that see the
// same Services (every Service exported everywhere) share their clusters,
// endpoints and outbound listener, and every Service port's route
// configuration, their own namespace's included (it routes any Host:
// docs/design/090); their own parts are their own.
func TestSharedBuildShares(t *testing.T) {
	in := testmesh.Generate(testmesh.Options{Services: 30, Namespaces: 3, EndpointsPerService: 2, ExportAll: true})
	s := envoy.NewShared(translator.Translate(in).Mesh)
	a, b := s.Build(proxy(0)), s.Build(proxy(1))
	byName := func(r *envoy.Resources) map[string]any {
		out := map[string]any{}
		for _, c := range r.Clusters {
			out["cluster "+c.Name] = c
		}
		for _, e := range r.Endpoints {
			out["endpoints "+e.ClusterName] = e
		}
		for _, l := range r.Listeners {
			out["listener "+l.Name] = l
		}
		for _, rc := range r.Routes {
			out["route "+rc.Name] = rc
		}
		return out
	}
	x, y := byName(a), byName(b)
	for _, name := range []string{
		"cluster outbound|80||svc-2.ns-2.svc.cluster.local", "endpoints outbound|80||svc-2.ns-2.svc.cluster.local",
		"listener outbound", "route outbound|80||svc-2.ns-2.svc.cluster.local",
		"route outbound|80||svc-0.ns-0.svc.cluster.local",
		"listener outbound|80||svc-2.ns-2.svc.cluster.local",
	} {
		if x[name] == nil || x[name] != y[name] {
			t.Errorf("%s: not shared between proxies of ns-0 and ns-1", name)
		}
	}
	// A Service port's listener (docs/design/182) is shared even between
	// proxies whose capture listeners differ (a dual-stack pod's also
	// listens on [::]).
	dual := proxy(0)
	dual.IPs = []string{"10.9.9.9", "fd00::9"}
	z := byName(s.Build(dual))
	if name := "listener outbound|80||svc-2.ns-2.svc.cluster.local"; z[name] == nil || z[name] != x[name] {
		t.Errorf("%s: not shared with a dual-stack proxy", name)
	}
	if z["listener outbound"] == x["listener outbound"] {
		t.Error("a dual-stack proxy shares another's capture listener: the test no longer compares two builds of the outbound side")
	}
	for _, name := range []string{
		"listener inbound", "cluster inbound|8080||",
	} {
		if x[name] == nil || x[name] == y[name] {
			t.Errorf("%s: shared between proxies of ns-0 and ns-1, or missing", name)
		}
	}
}

// TestBuildIsByteStable: building a proxy twice from the same model gives
// the same bytes for every resource (with deterministic marshalling, as
// the xDS server encodes): a resource's version is a hash of its bytes, so
// anything else would re-send unchanged resources. Maps inside packed Any
// fields (RBAC policies) are where this can break.
func TestBuildIsByteStable(t *testing.T) {
	inputs, _ := filepath.Glob("testdata/*.in.yaml")
	for _, path := range inputs {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		in, err := translator.DecodeInputs(data)
		if err != nil {
			t.Fatal(err)
		}
		mesh := translator.Translate(in).Mesh
		for _, pod := range in.Pods {
			if !meshed(pod) {
				continue
			}
			p := proxyOf(pod)
			first := encodings(t, envoy.Build(mesh, p))
			for i := 0; i < 5; i++ {
				for name, b := range encodings(t, envoy.Build(mesh, p)) {
					if !bytes.Equal(b, first[name]) {
						t.Errorf("%s, %s/%s: %s encodes differently on another build", filepath.Base(path), pod.Namespace, pod.Name, name)
					}
				}
			}
		}
	}
}

func encodings(t *testing.T, r *envoy.Resources) map[string][]byte {
	out := map[string][]byte{}
	det := proto.MarshalOptions{Deterministic: true}
	for _, m := range append(append(append(list(r.Listeners), list(r.Routes)...), list(r.Clusters)...), list(r.Endpoints)...) {
		b, err := det.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		out[fmt.Sprintf("%T %d", m, len(out))] = b
	}
	return out
}
