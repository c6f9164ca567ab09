package xdsload

import (
	"slices"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

func hcmFilter(t *testing.T, route string) *listenerv3.Filter {
	t.Helper()
	a, err := anypb.New(&hcmv3.HttpConnectionManager{RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: route}}})
	if err != nil {
		t.Fatal(err)
	}
	return &listenerv3.Filter{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}
}

func encode(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func res(t *testing.T, name string, m proto.Message) *discoveryv3.Resource {
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return &discoveryv3.Resource{Name: name, Resource: a}
}

// TestNames: the EDS names clusters give and the RDS names listeners'
// HTTP connection managers give, as Envoy would subscribe to them.
func TestNames(t *testing.T) {
	l := &listenerv3.Listener{Name: "out",
		FilterChains:       []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{hcmFilter(t, "b")}}, {Filters: []*listenerv3.Filter{hcmFilter(t, "a")}}, {}},
		DefaultFilterChain: &listenerv3.FilterChain{Filters: []*listenerv3.Filter{hcmFilter(t, "a")}}}
	if got := rdsNames(encode(t, l)); !slices.Equal(got, []string{"b", "a"}) {
		t.Errorf("rdsNames = %v, want [b a]", got)
	}
	eds := &clusterv3.Cluster{Name: "c", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}}
	if got := edsNames(encode(t, eds)); !slices.Equal(got, []string{"c"}) {
		t.Errorf("edsNames(EDS, no service name) = %v, want [c]", got)
	}
	eds.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{ServiceName: "svc"}
	if got := edsNames(encode(t, eds)); !slices.Equal(got, []string{"svc"}) {
		t.Errorf("edsNames(EDS, service name) = %v, want [svc]", got)
	}
	static := &clusterv3.Cluster{Name: "s", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}}
	if got := edsNames(encode(t, static)); got != nil {
		t.Errorf("edsNames(STATIC) = %v, want none", got)
	}

	// Subscriptions follow what is held: a second listener naming "a"
	// adds nothing; removing the first drops only "b".
	f := newFollowed()
	second := &listenerv3.Listener{Name: "in", FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{hcmFilter(t, "a")}}}}
	reqs := f.update(&discoveryv3.DeltaDiscoveryResponse{TypeUrl: resourcev3.ListenerType, Resources: []*discoveryv3.Resource{res(t, "out", l), res(t, "in", second)}})
	if len(reqs) != 1 || reqs[0].TypeUrl != resourcev3.RouteType || !slices.Equal(reqs[0].ResourceNamesSubscribe, []string{"a", "b"}) || len(reqs[0].ResourceNamesUnsubscribe) != 0 {
		t.Fatalf("first update: %v", reqs)
	}
	reqs = f.update(&discoveryv3.DeltaDiscoveryResponse{TypeUrl: resourcev3.ListenerType, RemovedResources: []string{"out"}})
	if len(reqs) != 1 || len(reqs[0].ResourceNamesSubscribe) != 0 || !slices.Equal(reqs[0].ResourceNamesUnsubscribe, []string{"b"}) {
		t.Fatalf("removal: %v", reqs)
	}
	// The same listener sent again changes nothing.
	if reqs := f.update(&discoveryv3.DeltaDiscoveryResponse{TypeUrl: resourcev3.ListenerType, Resources: []*discoveryv3.Resource{res(t, "in", second)}}); len(reqs) != 0 {
		t.Errorf("resend: %v, want no request", reqs)
	}
}

// TestNamesCache: one decode per distinct encoding.
func TestNamesCache(t *testing.T) {
	var c namesCache
	calls := 0
	decode := func(b []byte) []string { calls++; return []string{string(b)} }
	for range 3 {
		if got := c.get([]byte("x"), decode); !slices.Equal(got, []string{"x"}) {
			t.Fatalf("get = %v", got)
		}
	}
	if got := c.get([]byte("y"), decode); !slices.Equal(got, []string{"y"}) || calls != 2 {
		t.Errorf("get(y) = %v after %d decodes, want [y] after 2", got, calls)
	}
}
