package envoy

import (
	"errors"
	"fmt"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/testmesh"
)

// checkConsistencyDirect is CheckConsistency as it was before listeners'
// checks were compiled once per message (docs/design/184): the reference
// TestCheckConsistencyEqualsDirect compares it with. It checks the set as a whole: every RDS name has a route
// configuration, every route and TCP proxy names a cluster that exists,
// every EDS cluster has endpoints, no weighted split sums to zero, every
// locality is set, and every listener with an address has a filter chain.
func checkConsistencyDirect(r *Resources) error {
	var errs []error
	clusters := map[string]*clusterv3.Cluster{}
	for _, c := range r.Clusters {
		if clusters[c.Name] != nil {
			errs = append(errs, fmt.Errorf("cluster %q: defined twice", c.Name))
		}
		clusters[c.Name] = c
	}
	endpoints := map[string]bool{}
	for _, e := range r.Endpoints {
		endpoints[e.ClusterName] = true
		for _, loc := range e.Endpoints {
			if loc.Locality == nil || loc.LoadBalancingWeight.GetValue() == 0 {
				errs = append(errs, fmt.Errorf("endpoints %s: every locality needs a locality and a positive weight (gRPC rejects them otherwise)", e.ClusterName))
			}
		}
		if c := clusters[e.ClusterName]; c == nil || c.GetType() != clusterv3.Cluster_EDS {
			errs = append(errs, fmt.Errorf("endpoints %s: no EDS cluster of that name", e.ClusterName))
		}
	}
	for _, c := range r.Clusters {
		if c.GetType() == clusterv3.Cluster_EDS && !endpoints[c.Name] {
			errs = append(errs, fmt.Errorf("cluster %s: EDS cluster without endpoints", c.Name))
		}
	}
	routes := map[string]bool{}
	for _, rc := range r.Routes {
		routes[rc.Name] = true
		errs = append(errs, wrap("route "+rc.Name, checkRouteClustersDirect(rc, clusters)))
	}
	errs = append(errs, checkListenerAddresses(r.Listeners)...)
	for _, l := range r.Listeners {
		if api := l.GetApiListener().GetApiListener(); api != nil {
			errs = append(errs, wrap("listener "+l.Name, checkFilterDirect(&listenerv3.Filter{Name: "api_listener", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: api}}, routes, clusters)))
		}
		chains := append([]*listenerv3.FilterChain(nil), l.FilterChains...)
		if l.DefaultFilterChain != nil {
			chains = append(chains, l.DefaultFilterChain)
		}
		if l.GetAddress() != nil && len(chains) == 0 {
			// Envoy rejects it: "no filter chains specified".
			errs = append(errs, fmt.Errorf("listener %s: a listener with an address needs a filter chain or a default filter chain", l.Name))
		}
		for _, fc := range chains {
			for _, f := range fc.Filters {
				errs = append(errs, wrap(fmt.Sprintf("listener %s chain %q", l.Name, fc.Name), checkFilterDirect(f, routes, clusters)))
			}
		}
	}
	return errors.Join(errs...)
}

func checkFilterDirect(f *listenerv3.Filter, routes map[string]bool, clusters map[string]*clusterv3.Cluster) error {
	msg, err := f.GetTypedConfig().UnmarshalNew()
	if err != nil {
		return fmt.Errorf("filter %s: %w", f.Name, err)
	}
	switch m := msg.(type) {
	case *hcmv3.HttpConnectionManager:
		if m.StatPrefix == "" {
			return errors.New("the HTTP connection manager needs a stat_prefix (gRPC rejects it otherwise)")
		}
		if n := len(m.HttpFilters); n == 0 || m.HttpFilters[n-1].Name != "envoy.filters.http.router" {
			return errors.New("the HTTP filters must end with the router")
		}
		if rds := m.GetRds(); rds != nil && !routes[rds.RouteConfigName] {
			return fmt.Errorf("RDS route configuration %q does not exist", rds.RouteConfigName)
		}
		if rc := m.GetRouteConfig(); rc != nil {
			return checkRouteClustersDirect(rc, clusters)
		}
	case *tcpproxyv3.TcpProxy:
		if c := m.GetCluster(); c != "" && clusters[c] == nil {
			return fmt.Errorf("TCP proxy cluster %q does not exist", c)
		}
		if wc := m.GetWeightedClusters(); wc != nil {
			var sum uint32
			for _, c := range wc.Clusters {
				sum += c.Weight
				if clusters[c.Name] == nil {
					return fmt.Errorf("TCP proxy cluster %q does not exist", c.Name)
				}
			}
			if sum == 0 {
				return errors.New("TCP proxy weights sum to 0")
			}
		}
	}
	return nil
}

func checkRouteClustersDirect(rc *routev3.RouteConfiguration, clusters map[string]*clusterv3.Cluster) error {
	for _, vh := range rc.VirtualHosts {
		for _, rt := range vh.Routes {
			a := rt.GetRoute()
			if a == nil {
				continue
			}
			if c := a.GetCluster(); c != "" && clusters[c] == nil {
				return fmt.Errorf("virtual host %s: cluster %q does not exist", vh.Name, c)
			}
			for _, m := range a.GetRequestMirrorPolicies() {
				if clusters[m.GetCluster()] == nil {
					return fmt.Errorf("virtual host %s: mirror cluster %q does not exist", vh.Name, m.GetCluster())
				}
			}
			if wc := a.GetWeightedClusters(); wc != nil {
				var sum uint32
				for _, c := range wc.Clusters {
					sum += c.Weight.GetValue()
					if clusters[c.Name] == nil {
						return fmt.Errorf("virtual host %s: cluster %q does not exist", vh.Name, c.Name)
					}
				}
				if sum == 0 {
					return fmt.Errorf("virtual host %s: weights sum to 0", vh.Name)
				}
			}
		}
	}
	return nil
}

// TestCheckConsistencyEqualsDirect: CheckConsistency, which reads a large
// listener's requirements once per message (compiledListener), reports
// exactly what the direct check reports — for a real configuration, for
// sets that lack what its listeners reference (the same listener messages
// checked again in another set: their requirements are kept, the lookups
// are not), and for a large listener with every kind of broken filter.
func TestCheckConsistencyEqualsDirect(t *testing.T) {
	mesh := translator.Translate(testmesh.Generate(testmesh.Options{Services: 60, Namespaces: 2, EndpointsPerService: 2, ExportAll: true, SplitEvery: 5})).Mesh
	full := Build(mesh, dataplane.Proxy{Namespace: "ns-0", ServiceAccount: "svc-0", Labels: map[string]string{"app": "svc-0"}, IPs: []string{"10.1.0.1"}})
	large := 0
	for _, l := range full.Listeners {
		if rememberChecks(l) {
			large++
		}
	}
	if large == 0 {
		t.Fatal("no listener whose checks are remembered (a Service port's, or one with many chains): the test would not test it")
	}
	same := func(name string, r *Resources) {
		t.Helper()
		got, want := r.CheckConsistency(), checkConsistencyDirect(r)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: CheckConsistency says\n%v\nthe direct check says\n%v", name, got, want)
		}
	}
	same("as built", full)
	// Sets lacking every other route configuration, cluster or endpoints.
	for _, c := range []struct {
		name string
		edit func(r *Resources)
	}{
		{"without every other route configuration", func(r *Resources) { r.Routes = everyOther(r.Routes) }},
		{"without every other cluster", func(r *Resources) { r.Clusters = everyOther(r.Clusters) }},
		{"without every other endpoints", func(r *Resources) { r.Endpoints = everyOther(r.Endpoints) }},
		{"without routes", func(r *Resources) { r.Routes = nil }},
		{"without clusters", func(r *Resources) { r.Clusters = nil }},
	} {
		r := *full
		c.edit(&r)
		same(c.name, &r)
		if r.CheckConsistency() == nil {
			t.Errorf("%s: no error", c.name)
		}
		same("as built, again", full)
	}

	// A large listener with every kind of mistake, beside valid chains.
	hcm := func(m *hcmv3.HttpConnectionManager) *listenerv3.Filter {
		return &listenerv3.Filter{Name: "hcm", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(m)}}
	}
	router := []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router"}}
	rds := func(name string) *hcmv3.HttpConnectionManager_Rds {
		return &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: name}}
	}
	inline := func(rts ...*routev3.Route) *hcmv3.HttpConnectionManager_RouteConfig {
		return &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{VirtualHosts: []*routev3.VirtualHost{{Name: "vh", Routes: rts}}}}
	}
	toCluster := func(name string, mirrors ...string) *routev3.Route {
		a := &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: name}}
		for _, m := range mirrors {
			a.RequestMirrorPolicies = append(a.RequestMirrorPolicies, &routev3.RouteAction_RequestMirrorPolicy{Cluster: m})
		}
		return &routev3.Route{Action: &routev3.Route_Route{Route: a}}
	}
	weighted := func(ws ...*routev3.WeightedCluster_ClusterWeight) *routev3.Route {
		return &routev3.Route{Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{Clusters: ws}}}}}
	}
	cw := func(name string, w uint32) *routev3.WeightedCluster_ClusterWeight {
		return &routev3.WeightedCluster_ClusterWeight{Name: name, Weight: wrapperspb.UInt32(w)}
	}
	tcp := func(m *tcpproxyv3.TcpProxy) *listenerv3.Filter {
		return &listenerv3.Filter{Name: "tcp", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(m)}}
	}
	tcpWeighted := func(ws ...*tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight) *tcpproxyv3.TcpProxy {
		return &tcpproxyv3.TcpProxy{StatPrefix: "t", ClusterSpecifier: &tcpproxyv3.TcpProxy_WeightedClusters{WeightedClusters: &tcpproxyv3.TcpProxy_WeightedCluster{Clusters: ws}}}
	}
	route, cluster := full.Routes[0].Name, full.Clusters[0].Name
	filters := []*listenerv3.Filter{
		hcm(&hcmv3.HttpConnectionManager{StatPrefix: "ok", HttpFilters: router, RouteSpecifier: rds(route)}),
		hcm(&hcmv3.HttpConnectionManager{HttpFilters: router, RouteSpecifier: rds(route)}),
		hcm(&hcmv3.HttpConnectionManager{StatPrefix: "s", RouteSpecifier: rds(route)}),
		hcm(&hcmv3.HttpConnectionManager{StatPrefix: "s", HttpFilters: []*hcmv3.HttpFilter{{Name: "other"}}, RouteSpecifier: rds(route)}),
		hcm(&hcmv3.HttpConnectionManager{StatPrefix: "s", HttpFilters: router, RouteSpecifier: rds("missing")}),
		hcm(&hcmv3.HttpConnectionManager{StatPrefix: "s", HttpFilters: router, RouteSpecifier: inline(toCluster(cluster), toCluster("missing"))}),
		hcm(&hcmv3.HttpConnectionManager{StatPrefix: "s", HttpFilters: router, RouteSpecifier: inline(toCluster(cluster, cluster, "missing-mirror"))}),
		hcm(&hcmv3.HttpConnectionManager{StatPrefix: "s", HttpFilters: router, RouteSpecifier: inline(toCluster(cluster, ""))}),
		hcm(&hcmv3.HttpConnectionManager{StatPrefix: "s", HttpFilters: router, RouteSpecifier: inline(weighted(cw(cluster, 0), cw(cluster, 0)))}),
		hcm(&hcmv3.HttpConnectionManager{StatPrefix: "s", HttpFilters: router, RouteSpecifier: inline(weighted(cw(cluster, 1), cw("missing-w", 0)))}),
		hcm(&hcmv3.HttpConnectionManager{StatPrefix: "s", HttpFilters: router, RouteSpecifier: inline(weighted(cw("missing-w", 0)))}),
		tcp(&tcpproxyv3.TcpProxy{StatPrefix: "t", ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: cluster}}),
		tcp(&tcpproxyv3.TcpProxy{StatPrefix: "t", ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: "missing-tcp"}}),
		tcp(tcpWeighted(&tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{Name: cluster})),
		tcp(tcpWeighted(&tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{Name: cluster, Weight: 1}, &tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{Name: "missing-tw", Weight: 0})),
		{Name: "garbled", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: &anypb.Any{TypeUrl: "type.googleapis.com/unknown.Type", Value: []byte{1}}}},
	}
	broken := &listenerv3.Listener{Name: "broken", Address: full.Listeners[0].Address}
	for i := 0; len(broken.FilterChains) < compiledListenerChains; i++ {
		broken.FilterChains = append(broken.FilterChains, &listenerv3.FilterChain{Name: fmt.Sprint("chain-", i), Filters: []*listenerv3.Filter{filters[i%len(filters)], filters[0]}})
	}
	broken.DefaultFilterChain = &listenerv3.FilterChain{Name: "default", Filters: []*listenerv3.Filter{filters[4]}}
	api := &listenerv3.Listener{Name: "api", ApiListener: &listenerv3.ApiListener{ApiListener: mustAny(&hcmv3.HttpConnectionManager{StatPrefix: "s", HttpFilters: router, RouteSpecifier: rds("missing-api")})}}
	empty := &listenerv3.Listener{Name: "empty", Address: full.Listeners[0].Address}
	r := *full
	r.Listeners = append(append([]*listenerv3.Listener(nil), full.Listeners...), broken, api, empty)
	same("with a broken listener", &r)
	if r.CheckConsistency() == nil {
		t.Error("with a broken listener: no error")
	}
	r.Routes, r.Clusters = nil, nil
	same("with a broken listener, without routes and clusters", &r)
}

func everyOther[T any](s []T) []T {
	var out []T
	for i, x := range s {
		if i%2 == 0 {
			out = append(out, x)
		}
	}
	return out
}
