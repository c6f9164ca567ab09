package loadtest

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/envoy"
	"github.com/weftmesh/weft/xds"
)

func TestMarkers(t *testing.T) {
	for _, seq := range []int{0, 1, 255, 256, 4242, maxMarker - 1} {
		addr := markerAddr(seq)
		if got, ok := markerSeq(addr); !ok || got != seq {
			t.Errorf("markerSeq(markerAddr(%d) = %s) = %d, %v", seq, addr, got, ok)
		}
	}
	for _, addr := range []string{"10.1.0.1", "10.249.0.1", "not an address", "::1"} {
		if _, ok := markerSeq(addr); ok {
			t.Errorf("markerSeq(%q) took it for a marker", addr)
		}
	}
}

func TestDistOf(t *testing.T) {
	if d := distOf(nil); d.N != 0 {
		t.Errorf("distOf(nil) = %+v", d)
	}
	xs := make([]float64, 100)
	for i := range xs {
		xs[i] = float64(100 - i) // 100..1, unsorted
	}
	d := distOf(xs)
	if d.N != 100 || d.P50 != 50 || d.P90 != 90 || d.P99 != 99 || d.Max != 100 || d.Mean != 50.5 {
		t.Errorf("distOf(1..100) = %+v", d)
	}
	if xs[0] != 100 {
		t.Error("distOf sorted its argument")
	}
	if d := distOf([]float64{7}); d.P50 != 7 || d.P99 != 7 || d.Max != 7 {
		t.Errorf("distOf([7]) = %+v", d)
	}
	if got := seconds([]time.Duration{1500 * time.Millisecond}); got[0] != 1.5 {
		t.Errorf("seconds = %v", got)
	}
}

func TestMetricValue(t *testing.T) {
	text := `# HELP go_memstats_heap_inuse_bytes Number of heap bytes that are in use.
# TYPE go_memstats_heap_inuse_bytes gauge
go_memstats_heap_inuse_bytes 1.2345e+07
go_memstats_heap_inuse_bytes_extra 5
weft_xds_pushes_total{type="Cluster"} 3
weft_xds_pushes_total{type="Listener",note="a } in a label"} 4
`
	if v, ok := metricValue(text, "go_memstats_heap_inuse_bytes"); !ok || v != 12345000 {
		t.Errorf("heap = %v, %v", v, ok)
	}
	if v, ok := metricValue(text, "weft_xds_pushes_total"); !ok || v != 7 {
		t.Errorf("pushes = %v, %v; want the sum over labels, 7", v, ok)
	}
	if _, ok := metricValue(text, "missing"); ok {
		t.Error("found a missing metric")
	}
}

func resource(name string, m proto.Message) *discoveryv3.Resource {
	a, err := anypb.New(m)
	if err != nil {
		panic(err)
	}
	return &discoveryv3.Resource{Name: name, Resource: a}
}

func TestDecode(t *testing.T) {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: "c", Endpoints: []*endpointv3.LocalityLbEndpoints{{
		LbEndpoints: []*endpointv3.LbEndpoint{ep("10.1.0.1"), ep(markerAddr(7)), ep(markerAddr(3))}}}}
	if seq, err := loadAssignmentMarker(resource("c", cla)); err != nil || seq != 7 {
		t.Errorf("marker = %d, %v; want the highest, 7", seq, err)
	}
	cla.Endpoints[0].LbEndpoints = cla.Endpoints[0].LbEndpoints[:1]
	if seq, err := loadAssignmentMarker(resource("c", cla)); err != nil || seq != -1 {
		t.Errorf("marker = %d, %v; want none (-1)", seq, err)
	}
	rc := &routev3.RouteConfiguration{Name: GlobalRoute, VirtualHosts: []*routev3.VirtualHost{{Name: "vh", Routes: []*routev3.Route{{
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{
			WeightedClusters: &routev3.WeightedCluster{Clusters: []*routev3.WeightedCluster_ClusterWeight{
				{Name: "other", Weight: wrapperspb.UInt32(60)}, {Name: NextCluster, Weight: wrapperspb.UInt32(40)}}}}}}}}}}}
	if w, err := clusterWeight(resource(GlobalRoute, rc), NextCluster); err != nil || w != 40 {
		t.Errorf("weight = %d, %v; want 40", w, err)
	}
	if w, err := clusterWeight(resource(GlobalRoute, rc), "absent"); err != nil || w != -1 {
		t.Errorf("weight of an absent cluster = %d, %v; want -1", w, err)
	}
	if _, err := clusterWeight(&discoveryv3.Resource{Name: "x", Resource: &anypb.Any{Value: []byte{0xff}}}, NextCluster); err == nil {
		t.Error("garbage decoded without an error")
	}
}

func ep(addr string) *endpointv3.LbEndpoint {
	return &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: addr}}}}}}
}

// TestMeshNames: the names the harness watches for (the split's route and
// backend cluster, each Service's EDS resource) are the ones the real
// translator produces for the mesh the harness creates.
func TestMeshNames(t *testing.T) {
	m := Mesh{Services: 6, Endpoints: 2, Namespaces: 3}
	o := build(m, 25)
	in := &translator.Inputs{Namespaces: o.namespaces, Services: o.services, EndpointSlices: o.slices, Pods: o.pods}
	in.TrafficSplits = append(in.TrafficSplits, o.split)
	for i, s := range in.Services {
		s.Spec.ClusterIP = fmt.Sprintf("10.0.0.%d", i+1) // the API server would assign one
	}
	mesh := translator.Translate(in).Mesh
	f := newFleet(m, "t", 1, 1)
	proxy, err := xds.ParseNode(f.members[0].Node)
	if err != nil {
		t.Fatal(err)
	}
	res := envoy.Build(mesh, proxy.Proxy)
	var route *routev3.RouteConfiguration
	for _, r := range res.Routes {
		if r.Name == GlobalRoute {
			route = r
		}
	}
	if route == nil {
		t.Fatalf("no route configuration %s", GlobalRoute)
	}
	if w, err := clusterWeight(resource(GlobalRoute, route), NextCluster); err != nil || w != 25 {
		t.Errorf("the split's weight for %s = %d, %v; want 25", NextCluster, w, err)
	}
	eds := map[string]bool{}
	for _, e := range res.Endpoints {
		eds[e.ClusterName] = true
	}
	// Group 0 is svc-0's workload in ns-0, which also holds svc-3.
	for _, i := range []int{0, 3} {
		if !eds[ClusterName(m, i)] {
			t.Errorf("no endpoints %s among %v", ClusterName(m, i), eds)
		}
	}
	if eds[ClusterName(m, 1)] {
		t.Errorf("endpoints of another namespace's Service %s reached the proxy", ClusterName(m, 1))
	}
}

func TestValidate(t *testing.T) {
	good := Config{Mesh: Mesh{Services: 10, Endpoints: 2, Namespaces: 2}, Proxies: []int{5}, Groups: 2, Repeats: 1, Fraction: 0.1, Timeout: time.Minute}
	if err := good.Validate(); err != nil {
		t.Fatalf("a good config: %v", err)
	}
	for flag, bad := range map[string]func(*Config){
		"--services":   func(c *Config) { c.Services = 0 },
		"--endpoints":  func(c *Config) { c.Endpoints = 17 },
		"--namespaces": func(c *Config) { c.Namespaces = 11 },
		"--proxies":    func(c *Config) { c.Proxies = []int{0} },
		"--groups":     func(c *Config) { c.Groups = 11 },
		"--repeats":    func(c *Config) { c.Repeats = 81 },
		"--fraction":   func(c *Config) { c.Fraction = 0 },
		"--churn-for":  func(c *Config) { c.ChurnRate = 5 },
		"--timeout":    func(c *Config) { c.Timeout = 0 },
	} {
		c := good
		bad(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), flag) {
			t.Errorf("%s: error %v, want one naming the flag", flag, err)
		}
	}
}

// TestMemoryWaitsForACollection: the reading is the heap at the first
// scrape after a collection that finished after since; without one in
// time, the smallest heap in use.
func TestMemoryWaitsForACollection(t *testing.T) {
	since := time.Now()
	var mu sync.Mutex
	lastGC, scrapes := since.Add(-time.Minute), 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		scrapes++
		if scrapes == 3 {
			lastGC = time.Now()
		}
		fmt.Fprintf(w, "go_memstats_last_gc_time_seconds %v\ngo_memstats_next_gc_bytes %d\ngo_memstats_stack_inuse_bytes 100\ngo_memstats_heap_inuse_bytes %d\nprocess_resident_memory_bytes 5e+07\ngo_gc_gogc_percent 100\n",
			float64(lastGC.UnixNano())/1e9, 2000*scrapes+100, 9000-1000*scrapes)
	}))
	defer srv.Close()
	c := &controller{monitoring: strings.TrimPrefix(srv.URL, "http://")}
	m, err := c.memory(context.Background(), since, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !m.afterGC || m.heap != 3000 || m.rss != 5e7 {
		t.Errorf("memory = %+v, want the live heap behind the third scrape's heap goal (3000) after the collection", m)
	}
	mu.Lock()
	lastGC = since.Add(-time.Minute)
	mu.Unlock()
	m, err = c.memory(context.Background(), time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if m.afterGC || m.heap != 9000-1000*8 {
		t.Errorf("memory without a collection = %+v, want the smallest heap in use of 5 samples (1000)", m)
	}
}
