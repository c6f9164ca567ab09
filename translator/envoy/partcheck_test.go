package envoy

import (
	"fmt"
	"slices"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/testmesh"
)

// TestCheckConsistencyInPartsEqualsDirect: a group built through a Shared
// is checked as its view entry's Part beside its own resources
// (consistentBeside); the result is the direct check's, exactly, for the
// group as built and for groups whose own resources or Part break each
// kind of requirement between them or on their own. The fast path must
// also be taken for every consistent group (else it saves nothing), and
// never for an inconsistent one.
func TestCheckConsistencyInPartsEqualsDirect(t *testing.T) {
	mesh := translator.Translate(testmesh.Generate(testmesh.Options{Services: 60, Namespaces: 2, EndpointsPerService: 2, ExportAll: true, SplitEvery: 5})).Mesh
	s := NewShared(mesh)
	p := dataplane.Proxy{Namespace: "ns-0", ServiceAccount: "svc-0", Labels: map[string]string{"app": "svc-0"}, IPs: []string{"10.1.0.1"}}
	built := s.BuildGroup(p)
	if built.Common == nil {
		t.Fatal("a sidecar's group built through a Shared has no Common part")
	}
	part, own := built.Common, built.Own
	if len(own.Clusters) == 0 || len(own.Listeners) == 0 || len(own.Routes) == 0 {
		t.Fatalf("own part %d clusters, %d listeners, %d routes: the cases below need each", len(own.Clusters), len(own.Listeners), len(own.Routes))
	}
	// whole is the Resources of part and own, as BuildGroup makes them.
	whole := func(part *Part, own Set) *Resources {
		return &Resources{Common: part, Own: own,
			Clusters:  append(slices.Clip(part.Clusters), own.Clusters...),
			Endpoints: append(slices.Clip(part.Endpoints), own.Endpoints...),
			Listeners: append(slices.Clip(part.Listeners), own.Listeners...),
			Routes:    append(slices.Clip(part.Routes), own.Routes...)}
	}
	check := func(name string, r *Resources, wantOK, slow bool) {
		t.Helper()
		direct := checkConsistencyDirect(r)
		if got := r.CheckConsistency(); fmt.Sprint(got) != fmt.Sprint(direct) {
			t.Errorf("%s: CheckConsistency says\n%v\nthe direct check says\n%v", name, got, direct)
		}
		if (direct == nil) != wantOK {
			t.Errorf("%s: the direct check says %v, the case expects consistent=%v", name, direct, wantOK)
		}
		fast := consistentBeside(r.Common.summary(), summarize(r.Own))
		if fast && direct != nil {
			t.Errorf("%s: the parts pass beside each other, but the whole set fails: %v", name, direct)
		}
		if !fast && direct == nil && !slow {
			t.Errorf("%s: consistent, but the parts' check does not show it (every group would be checked whole)", name)
		}
	}
	check("as built", built, true, false)

	cluster := func(name string, eds bool) *clusterv3.Cluster {
		c := &clusterv3.Cluster{Name: name, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}}
		if eds {
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
		}
		return c
	}
	named := func(name string) *endpointv3.ClusterLoadAssignment {
		c := proto.Clone(part.Endpoints[0]).(*endpointv3.ClusterLoadAssignment)
		c.ClusterName = name
		return c
	}
	without := func(s Set, name string) Set {
		out := Set{Endpoints: s.Endpoints}
		for _, c := range s.Clusters {
			if c.Name != name {
				out.Clusters = append(out.Clusters, c)
			}
		}
		for _, l := range s.Listeners {
			if l.Name != name {
				out.Listeners = append(out.Listeners, l)
			}
		}
		for _, rc := range s.Routes {
			if rc.Name != name {
				out.Routes = append(out.Routes, rc)
			}
		}
		return out
	}
	with := func(s Set, add Set) Set {
		return Set{Clusters: append(slices.Clip(s.Clusters), add.Clusters...), Endpoints: append(slices.Clip(s.Endpoints), add.Endpoints...),
			Listeners: append(slices.Clip(s.Listeners), add.Listeners...), Routes: append(slices.Clip(s.Routes), add.Routes...)}
	}
	partOf := func(s Set) *Part { return &Part{Set: s} }
	tcpListener := func(name, addr, cluster string) *listenerv3.Listener {
		l := proto.Clone(own.Listeners[0]).(*listenerv3.Listener)
		l.Name = name
		if addr != "" {
			l.Address = socketAddress(addr, 9999)
		}
		l.FilterChains = []*listenerv3.FilterChain{{Name: "c", Filters: []*listenerv3.Filter{{Name: "tcp",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(&tcpproxyv3.TcpProxy{StatPrefix: "t", ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: cluster}})}}}}}
		l.DefaultFilterChain = nil
		l.ListenerFilters = nil
		return l
	}
	routeTo := func(name, cluster string) *routev3.RouteConfiguration {
		return &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{{Name: "vh", Domains: []string{"*"},
			Routes: []*routev3.Route{{Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}}}}}}}
	}
	atAddress := func(l, of *listenerv3.Listener) *listenerv3.Listener {
		l.Address = proto.Clone(of.Address).(*corev3.Address)
		return l
	}
	partCluster, partRoute, partListener := part.Clusters[0].Name, part.Routes[0].Name, part.Listeners[0].Name
	noLocality := named("own-eds")
	noLocality.Endpoints[0].Locality = nil

	for _, c := range []struct {
		name string
		part *Part
		own  Set
		ok   bool
		// slow: consistent, but left to the whole check (a name in
		// both parts that the direct check allows: the xds layer's map
		// would hold one of the two).
		slow bool
	}{
		// What the Part needs of a group's own resources.
		{"own without the passthrough cluster", part, without(own, dataplane.PassthroughCluster), false, false},
		{"own without the port's route configuration", part, without(own, own.Routes[0].Name), false, false},
		{"own without its fixed clusters", part, Set{Listeners: own.Listeners, Routes: own.Routes}, false, false},
		// What the group's own resources need of the Part.
		{"own route to a cluster of the Part", part, with(own, Set{Routes: []*routev3.RouteConfiguration{routeTo("own-route", partCluster)}}), true, false},
		{"own route to a cluster nobody has", part, with(own, Set{Routes: []*routev3.RouteConfiguration{routeTo("own-route", "missing")}}), false, false},
		{"own listener to a cluster of the Part", part, with(own, Set{Listeners: []*listenerv3.Listener{tcpListener("own-l", "10.9.9.9", partCluster)}}), true, false},
		{"own listener to a cluster nobody has", part, with(own, Set{Listeners: []*listenerv3.Listener{tcpListener("own-l", "10.9.9.9", "missing")}}), false, false},
		{"own EDS cluster without endpoints", part, with(own, Set{Clusters: []*clusterv3.Cluster{cluster("own-eds", true)}}), false, false},
		{"own EDS cluster with own endpoints", part, with(own, Set{Clusters: []*clusterv3.Cluster{cluster("own-eds", true)}, Endpoints: []*endpointv3.ClusterLoadAssignment{named("own-eds")}}), true, false},
		{"own endpoints for a static cluster of its own", part, with(own, Set{Clusters: []*clusterv3.Cluster{cluster("own-static", false)}, Endpoints: []*endpointv3.ClusterLoadAssignment{named("own-static")}}), false, false},
		{"own endpoints for nothing", part, with(own, Set{Endpoints: []*endpointv3.ClusterLoadAssignment{named("own-orphan")}}), false, false},
		{"own endpoints without a locality", part, with(own, Set{Clusters: []*clusterv3.Cluster{cluster("own-eds", true)}, Endpoints: []*endpointv3.ClusterLoadAssignment{noLocality}}), false, false},
		// Names and addresses in both.
		{"own cluster of a name the Part has", part, with(own, Set{Clusters: []*clusterv3.Cluster{cluster(partCluster, false)}}), false, false},
		{"own cluster defined twice", part, with(own, Set{Clusters: []*clusterv3.Cluster{own.Clusters[0]}}), false, false},
		{"own listener of a name the Part has", part, with(own, Set{Listeners: []*listenerv3.Listener{tcpListener(partListener, "10.9.9.9", partCluster)}}), false, false},
		{"own listener at a Part listener's address", part, with(own, Set{Listeners: []*listenerv3.Listener{atAddress(tcpListener("own-l", "", partCluster), part.Listeners[1])}}), false, false},
		{"own route configuration of a name the Part has", part, with(own, Set{Routes: []*routev3.RouteConfiguration{routeTo(partRoute, partCluster)}}), true, true},
		{"own endpoints of a name the Part has", part, with(own, Set{Endpoints: []*endpointv3.ClusterLoadAssignment{named(part.Endpoints[0].ClusterName)}}), true, true},
		// A Part that breaks on its own or lacks something.
		{"a Part without every other endpoints", partOf(Set{Clusters: part.Clusters, Endpoints: everyOther(part.Endpoints), Listeners: part.Listeners, Routes: part.Routes}), own, false, false},
		{"a Part without every other route configuration", partOf(Set{Clusters: part.Clusters, Endpoints: part.Endpoints, Listeners: part.Listeners, Routes: everyOther(part.Routes)}), own, false, false},
		{"a Part with a listener twice", partOf(Set{Clusters: part.Clusters, Endpoints: part.Endpoints, Listeners: append(slices.Clip(part.Listeners), part.Listeners[1]), Routes: part.Routes}), own, false, false},
		{"a Part whose listeners need the group's clusters, without them", partOf(part.Set), Set{Listeners: own.Listeners, Routes: own.Routes}, false, false},
	} {
		check(c.name, whole(c.part, c.own), c.ok, c.slow)
	}
	// A set edited after its build, without clearing Common, is checked
	// whole: removing a cluster the Part needs is found.
	edited := *built
	edited.Clusters = slices.DeleteFunc(slices.Clone(edited.Clusters), func(c *clusterv3.Cluster) bool { return c.Name == dataplane.PassthroughCluster })
	if edited.CheckConsistency() == nil {
		t.Error("a set edited after its build passes CheckConsistency although it lacks the passthrough cluster")
	}
}
