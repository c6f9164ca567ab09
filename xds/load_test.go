package xds_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/testing/xdsload"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/ir"
	"github.com/weftmesh/weft/translator/testmesh"
	"github.com/weftmesh/weft/xds"
)

// globalRoute is the route configuration of the global split's root
// Service port (docs/design/090).
const globalRoute = "outbound|8000||global.shared.svc.cluster.local"

// loadMesh is 1,000 Services in 100 namespaces (10 endpoints each, a split
// on 10%), plus one Service exported to every namespace with a split whose
// weight w the benchmark changes: a change every proxy depends on.
func loadMesh(w int32) *translator.Inputs {
	in := testmesh.Generate(testmesh.Options{Services: 1000, Namespaces: 100, EndpointsPerService: 10, SplitEvery: 10})
	for _, name := range []string{"global", "global-next"} {
		in.Services = append(in.Services, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shared", Annotations: map[string]string{translator.AnnotationExportTo: "*"}},
			Spec:       corev1.ServiceSpec{ClusterIP: "10.97.0." + fmt.Sprint(len(in.Services)%200), Ports: []corev1.ServicePort{{Name: "http", Port: 8000, TargetPort: intstr.FromInt32(8000)}}},
		})
	}
	in.TrafficSplits = append(in.TrafficSplits, &v1alpha1.TrafficSplit{
		ObjectMeta: metav1.ObjectMeta{Name: "global", Namespace: "shared", Generation: int64(w)},
		Spec: v1alpha1.TrafficSplitSpec{RootService: v1alpha1.RootServiceReference{Name: "global"},
			Backends: []v1alpha1.Backend{{Name: "global", Weight: &[]int32{100 - w}[0]}, {Name: "global-next", Weight: &w}}},
	})
	return in
}

// BenchmarkConvergence measures, with N simulated Delta proxies connected,
// the time from ADS.Update (the translated change) until every proxy has
// ACKed the changed route, for a change all of them depend on. It reports
// that time per change, the bytes each proxy received for it, and the heap
// per connected proxy (server and simulated clients together: an upper
// bound for the server).
func BenchmarkConvergence(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("proxies=%d", n), func(b *testing.B) {
			ads := xds.NewADS(logr.Discard())
			w := int32(1)
			ads.Update(translator.Translate(loadMesh(w)).Mesh, time.Now())
			addr := serve(b, ads)
			conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()

			runtime.GC()
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			proxies := make([]*xdsload.Proxy, n)
			for i := range proxies {
				ns := testmesh.Namespace(i % 100)
				md, _ := structpb.NewStruct(map[string]any{dataplane.MetaNamespace: ns, dataplane.MetaServiceAccount: fmt.Sprintf("svc-%d", i%100),
					dataplane.MetaLabels: map[string]any{"app": fmt.Sprintf("svc-%d", i%100)}})
				proxies[i] = &xdsload.Proxy{Node: &corev3.Node{Id: fmt.Sprintf("p-%d.%s", i, ns), Metadata: md}}
				go func(p *xdsload.Proxy) { _ = p.Run(ctx, conn) }(proxies[i])
			}
			waitAll(b, proxies, func(*xdsload.Proxy, map[string]map[string]string) bool { return true }, globalRoute)
			runtime.GC()
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			heapPerProxy := float64(after.HeapAlloc-before.HeapAlloc) / float64(n) / 1024

			var bytes0 int
			for _, p := range proxies {
				bytes0 += p.Stats().Bytes
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				w = w%99 + 1
				mesh := translator.Translate(loadMesh(w)).Mesh
				old := map[*xdsload.Proxy]string{}
				for _, p := range proxies {
					p.WaitFor(ctx, func(v map[string]map[string]string) bool { old[p] = v[resourcev3.RouteType][globalRoute]; return true })
				}
				b.StartTimer()
				ads.Update(mesh, time.Now())
				waitAll(b, proxies, func(p *xdsload.Proxy, v map[string]map[string]string) bool {
					return v[resourcev3.RouteType][globalRoute] != old[p]
				}, globalRoute)
			}
			b.StopTimer()
			var bytes1 int
			for _, p := range proxies {
				bytes1 += p.Stats().Bytes
			}
			b.ReportMetric(float64(bytes1-bytes0)/float64(b.N*n), "bytes/proxy/change")
			b.ReportMetric(heapPerProxy, "KiB-heap/proxy")
		})
	}
}

// waitAll waits until every proxy holds route config route and cond holds.
func waitAll(b testing.TB, proxies []*xdsload.Proxy, cond func(*xdsload.Proxy, map[string]map[string]string) bool, route string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for _, p := range proxies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !p.WaitFor(ctx, func(v map[string]map[string]string) bool { return v[resourcev3.RouteType][route] != "" && cond(p, v) }) {
				b.Error("a proxy never converged")
			}
		}()
	}
	wg.Wait()
}

// TestEndpointChangeRebuildsOnlyDependents: with one proxy group per
// namespace, an endpoint change of one namespace's Service touches that
// group only (a patch, no build), and only its proxy receives anything:
// endpoints.
func TestEndpointChangeRebuildsOnlyDependents(t *testing.T) {
	in := testmesh.Generate(testmesh.Options{Services: 100, Namespaces: 10, EndpointsPerService: 3})
	ads := xds.NewADS(logr.Discard())
	mesh := translator.Translate(in).Mesh
	ads.Update(mesh, time.Now())
	conn, err := grpc.NewClient(serve(t, ads), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	proxies := make([]*xdsload.Proxy, 10)
	for i := range proxies {
		ns := testmesh.Namespace(i)
		md, _ := structpb.NewStruct(map[string]any{dataplane.MetaNamespace: ns, dataplane.MetaServiceAccount: "sa",
			dataplane.MetaLabels: map[string]any{"app": fmt.Sprintf("svc-%d", i)}})
		proxies[i] = &xdsload.Proxy{Node: &corev3.Node{Id: "p." + ns, Metadata: md}}
		go func(p *xdsload.Proxy) { _ = p.Run(ctx, conn) }(proxies[i])
	}
	wctx, wcancel := context.WithTimeout(ctx, time.Minute)
	defer wcancel()
	for _, p := range proxies {
		if !p.WaitFor(wctx, func(v map[string]map[string]string) bool { return len(v[resourcev3.EndpointType]) == 10 }) {
			t.Fatal("a proxy never received its namespace's endpoints")
		}
	}
	// Let the initial configuration finish arriving (every type).
	before := make([]int, len(proxies))
	for stable := 0; stable < 3; {
		time.Sleep(100 * time.Millisecond)
		stable++
		for i, p := range proxies {
			if n := p.Stats().Responses; n != before[i] {
				before[i], stable = n, 0
			}
		}
	}
	name := "outbound|80||svc-3.ns-3.svc.cluster.local"
	var old string
	proxies[3].WaitFor(ctx, func(v map[string]map[string]string) bool { old = v[resourcev3.EndpointType][name]; return true })
	builds, patches := ads.Builds(), ads.Patches()

	// svc-3 is in ns-3: drop one of its endpoints.
	key := ir.ServiceKey{Namespace: testmesh.Namespace(3), Name: "svc-3"}
	var slices []*discoveryv1.EndpointSlice
	for _, s := range in.EndpointSlices {
		if s.Namespace == key.Namespace && s.Labels[discoveryv1.LabelServiceName] == key.Name {
			c := s.DeepCopy()
			c.Endpoints = c.Endpoints[1:]
			slices = append(slices, c)
		}
	}
	pods := func(ns, name string) *corev1.Pod {
		for _, p := range in.Pods {
			if p.Namespace == ns && p.Name == name {
				return p
			}
		}
		return nil
	}
	next := translator.UpdateEndpoints(mesh, key, slices, pods)
	ads.UpdateEndpoints(next, []ir.ServiceKey{key}, time.Now())

	if b, p := ads.Builds()-builds, ads.Patches()-patches; b != 0 || p != 1 {
		t.Fatalf("an endpoint change built %d groups and patched %d, want 0 and 1", b, p)
	}
	if !proxies[3].WaitFor(wctx, func(v map[string]map[string]string) bool { return v[resourcev3.EndpointType][name] != old }) {
		t.Fatal("the dependent proxy received nothing")
	}
	time.Sleep(300 * time.Millisecond) // give a wrong push the chance to show
	for i, p := range proxies {
		if i != 3 && p.Stats().Responses != before[i] {
			t.Errorf("proxy of %s received %d responses for another namespace's endpoints", testmesh.Namespace(i), p.Stats().Responses-before[i])
		}
	}
	if got := proxies[3].Stats().Responses - before[3]; got != 1 {
		t.Errorf("the dependent proxy received %d responses, want 1 (endpoints); by type, since it connected: %v", got, proxies[3].Stats().ByType)
	}
}

// BenchmarkOnePercentChange: 1,000 simulated Delta proxies in 100 groups
// (one per namespace, 10 proxies each) over the load mesh; each change
// moves the weight of one TrafficSplit in ns-0, which only ns-0's group
// (1% of the mesh) can see. The time is from ADS.Update until every
// proxy of that group holds the new route; it reports group builds per
// change, and responses and bytes per proxy per change, averaged over all
// 1,000 proxies (the affected 10 and the 990 that should receive nothing).
func BenchmarkOnePercentChange(b *testing.B) {
	const n = 1000
	weighted := func(w int32) *translator.Inputs {
		in := loadMesh(1)
		for _, ts := range in.TrafficSplits {
			if ts.Namespace == testmesh.Namespace(0) && ts.Name == "svc-0" {
				ts.Generation = int64(w)
				ts.Spec.Backends[0].Weight = &[]int32{100 - w}[0]
				ts.Spec.Backends[1].Weight = &w
			}
		}
		return in
	}
	ads := xds.NewADS(logr.Discard())
	w := int32(1)
	ads.Update(translator.Translate(weighted(w)).Mesh, time.Now())
	conn, err := grpc.NewClient(serve(b, ads), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	proxies := make([]*xdsload.Proxy, n)
	var affected []*xdsload.Proxy
	for i := range proxies {
		ns := testmesh.Namespace(i % 100)
		md, _ := structpb.NewStruct(map[string]any{dataplane.MetaNamespace: ns, dataplane.MetaServiceAccount: fmt.Sprintf("svc-%d", i%100),
			dataplane.MetaLabels: map[string]any{"app": fmt.Sprintf("svc-%d", i%100)}})
		proxies[i] = &xdsload.Proxy{Node: &corev3.Node{Id: fmt.Sprintf("p-%d.%s", i, ns), Metadata: md}}
		if i%100 == 0 {
			affected = append(affected, proxies[i])
		}
		go func(p *xdsload.Proxy) { _ = p.Run(ctx, conn) }(proxies[i])
	}
	waitAll(b, proxies, func(*xdsload.Proxy, map[string]map[string]string) bool { return true }, globalRoute)
	totals := func() (responses, bytes int) {
		settle(proxies)
		for _, p := range proxies {
			s := p.Stats()
			responses, bytes = responses+s.Responses, bytes+s.Bytes
		}
		return
	}
	r0, bytes0 := totals()
	builds0 := ads.Builds()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		w = w%99 + 1
		mesh := translator.Translate(weighted(w)).Mesh
		old := map[*xdsload.Proxy]string{}
		for _, p := range affected {
			p.WaitFor(ctx, func(v map[string]map[string]string) bool {
				old[p] = v[resourcev3.RouteType]["outbound|80||svc-0.ns-0.svc.cluster.local"]
				return true
			})
		}
		b.StartTimer()
		ads.Update(mesh, time.Now())
		waitAll(b, affected, func(p *xdsload.Proxy, v map[string]map[string]string) bool {
			return v[resourcev3.RouteType]["outbound|80||svc-0.ns-0.svc.cluster.local"] != old[p]
		}, "outbound|80||svc-0.ns-0.svc.cluster.local")
	}
	b.StopTimer()
	r1, bytes1 := totals()
	changes := float64(b.N)
	b.ReportMetric(float64(ads.Builds()-builds0)/changes, "builds/change")
	b.ReportMetric(float64(r1-r0)/changes/n, "pushes/proxy/change")
	b.ReportMetric(float64(bytes1-bytes0)/changes/n, "bytes/proxy/change")
}

// settle waits until no proxy has received anything for 300 ms (at most a
// minute), so that counts include every response a change caused.
func settle(proxies []*xdsload.Proxy) {
	last, quiet := -1, 0
	for deadline := time.Now().Add(time.Minute); quiet < 3 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		total := 0
		for _, p := range proxies {
			total += p.Stats().Responses
		}
		if total == last {
			quiet++
		} else {
			last, quiet = total, 0
		}
	}
}

// waitSynced waits until n proxies are connected and each has accepted its
// group's newest configuration for every type it subscribes to: nothing
// more will be sent to them until the next change.
func waitSynced(t *testing.T, ads *xds.ADS, n int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ps := ads.Proxies()
		synced := len(ps) == n
		for _, p := range ps {
			if p.Generation == 0 || len(p.Types) < len(xdsload.Types) {
				synced = false
			}
			for _, ts := range p.Types {
				if ts.State != xds.Synced {
					synced = false
				}
			}
		}
		if synced {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxies never all synced: %+v", ps)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPolicyChangeRebuildsOnlyDependents: with one proxy group per
// namespace, a TrafficSplit weight change patches only the group that
// routes to its Service and only that group's proxy receives anything (its
// routes); a new Service reaches the group of the namespace that sees it,
// which did not depend on it before, and nobody else.
func TestPolicyChangeRebuildsOnlyDependents(t *testing.T) {
	const namespaces = 10
	const svc3Route = "outbound|80||svc-3.ns-3.svc.cluster.local"
	weighted := func(w int32, extra ...*corev1.Service) *translator.Inputs {
		in := testmesh.Generate(testmesh.Options{Services: 100, Namespaces: namespaces, EndpointsPerService: 3})
		in.TrafficSplits = append(in.TrafficSplits, &v1alpha1.TrafficSplit{
			ObjectMeta: metav1.ObjectMeta{Name: "svc-3", Namespace: testmesh.Namespace(3), Generation: int64(w)},
			Spec: v1alpha1.TrafficSplitSpec{RootService: v1alpha1.RootServiceReference{Name: "svc-3"},
				Backends: []v1alpha1.Backend{{Name: "svc-3", Weight: &[]int32{100 - w}[0]}, {Name: "svc-13", Weight: &w}}},
		})
		in.Services = append(in.Services, extra...)
		return in
	}
	ads := xds.NewADS(logr.Discard())
	ads.Update(translator.Translate(weighted(10)).Mesh, time.Now())
	conn, err := grpc.NewClient(serve(t, ads), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	proxies := make([]*xdsload.Proxy, namespaces)
	for i := range proxies {
		ns := testmesh.Namespace(i)
		md, _ := structpb.NewStruct(map[string]any{dataplane.MetaNamespace: ns, dataplane.MetaServiceAccount: "sa",
			dataplane.MetaLabels: map[string]any{"app": fmt.Sprintf("svc-%d", i)}})
		proxies[i] = &xdsload.Proxy{Node: &corev3.Node{Id: "p." + ns, Metadata: md}}
		go func(p *xdsload.Proxy) { _ = p.Run(ctx, conn) }(proxies[i])
	}
	waitSynced(t, ads, namespaces)
	responses := func() []int {
		out := make([]int, len(proxies))
		for i, p := range proxies {
			out[i] = p.Stats().Responses
		}
		return out
	}
	// onlyOne checks that, after a change meant for proxy i, it received
	// want responses and no other proxy received any.
	onlyOne := func(before []int, i, want int) {
		t.Helper()
		waitSynced(t, ads, namespaces)
		time.Sleep(300 * time.Millisecond) // give a wrong push the chance to show
		after := responses()
		for j := range proxies {
			if j != i && after[j] != before[j] {
				t.Errorf("proxy of %s received %d responses for a change it does not depend on", testmesh.Namespace(j), after[j]-before[j])
			}
		}
		if got := after[i] - before[i]; got != want {
			t.Errorf("the dependent proxy received %d responses, want %d; by type, since it connected: %v", got, want, proxies[i].Stats().ByType)
		}
	}

	// 1. The split's weight: only ns-3's group routes to svc-3, and it
	// receives svc-3's route configuration alone (docs/design/090), patched
	// in, not built (docs/design/101).
	rdsBytes := proxies[3].Stats().BytesByType[resourcev3.RouteType]
	var oldRoute string
	proxies[3].WaitFor(ctx, func(v map[string]map[string]string) bool { oldRoute = v[resourcev3.RouteType][svc3Route]; return true })
	before, builds, patches := responses(), ads.Builds(), ads.Patches()
	ads.Update(translator.Translate(weighted(20)).Mesh, time.Now())
	if b, p := ads.Builds()-builds, ads.Patches()-patches; b != 0 || p != 1 {
		t.Errorf("a weight change built %d groups and patched %d, want 0 and 1", b, p)
	}
	if !proxies[3].WaitFor(ctx, func(v map[string]map[string]string) bool { return v[resourcev3.RouteType][svc3Route] != oldRoute }) {
		t.Fatal("the dependent proxy never received the new weight")
	}
	onlyOne(before, 3, 1) // its routes
	if got := proxies[3].Stats().BytesByType[resourcev3.RouteType] - rdsBytes; got > 2048 {
		t.Errorf("the weight change sent %d bytes of routes, want svc-3's route configuration alone (at most 2 KB)", got)
	}

	// 2. A new Service in ns-5, visible there only: ns-5's group never
	// depended on it, but it is in its scope, and is built (port 7070 is
	// a new HTTP port number: its capture listener gains a Host-routed
	// chain). Every other sidecar refuses calls to it by address
	// (translator/envoy/refuse.go, docs/design/055): each is patched with
	// its new capture listener (docs/design/198) and receives that one
	// listener, nothing else.
	fresh := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "fresh", Namespace: testmesh.Namespace(5), Annotations: map[string]string{translator.AnnotationExportTo: "."}},
		Spec:       corev1.ServiceSpec{ClusterIP: "10.99.0.1", Ports: []corev1.ServicePort{{Name: "http", Port: 7070, TargetPort: intstr.FromInt32(7070)}}},
	}
	cluster := "outbound|7070||fresh.ns-5.svc.cluster.local"
	before, builds, patches = responses(), ads.Builds(), ads.Patches()
	ads.Update(translator.Translate(weighted(20, fresh)).Mesh, time.Now())
	if b, p := ads.Builds()-builds, ads.Patches()-patches; b != 1 || p != uint64(namespaces-1) {
		t.Errorf("a new Service built %d groups and patched %d, want 1 (its own namespace's) and %d (every one that refuses it)", b, p, namespaces-1)
	}
	if !proxies[5].WaitFor(ctx, func(v map[string]map[string]string) bool { return v[resourcev3.ClusterType][cluster] != "" }) {
		t.Fatal("the new Service never reached the proxy that sees its namespace")
	}
	waitSynced(t, ads, namespaces)
	time.Sleep(300 * time.Millisecond) // give a wrong push the chance to show
	after := responses()
	for j := range proxies {
		want := 1 // the outbound listener, with the refusal
		if j == 5 {
			want = 4 // cluster, endpoints, listener (port 7070), routes
		}
		if got := after[j] - before[j]; got != want {
			t.Errorf("proxy of %s received %d responses for the new Service, want %d", testmesh.Namespace(j), got, want)
		}
	}

	// 3. The same model again: nothing to rebuild, nothing to send.
	before, builds = responses(), ads.Builds()
	ads.Update(translator.Translate(weighted(20, fresh)).Mesh, time.Now())
	if got := ads.Builds() - builds; got != 0 {
		t.Errorf("an unchanged model rebuilt %d groups", got)
	}
	onlyOne(before, 5, 0)
}

// TestSplitChangeSendsOneServiceRoutes: every Service exported everywhere
// and all on port 80 (issue 14's setup, smaller): a split's weight change
// reaches every proxy as one RDS response holding the root Service port's
// route configuration alone, at most 2 KB, and nothing else — no listener,
// no other Service's virtual hosts (docs/design/090).
func TestSplitChangeSendsOneServiceRoutes(t *testing.T) {
	const namespaces = 5
	weighted := func(w int32) *translator.Inputs {
		in := testmesh.Generate(testmesh.Options{Services: 500, Namespaces: namespaces, EndpointsPerService: 2, SplitEvery: 10, ExportAll: true})
		for _, ts := range in.TrafficSplits {
			if ts.Namespace == testmesh.Namespace(0) && ts.Name == "svc-0" {
				ts.Generation = int64(w)
				ts.Spec.Backends[0].Weight = &[]int32{100 - w}[0]
				ts.Spec.Backends[1].Weight = &w
			}
		}
		return in
	}
	const route = "outbound|80||svc-0.ns-0.svc.cluster.local"
	ads := xds.NewADS(logr.Discard())
	ads.Update(translator.Translate(weighted(10)).Mesh, time.Now())
	conn, err := grpc.NewClient(serve(t, ads), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	proxies := make([]*xdsload.Proxy, namespaces)
	for i := range proxies {
		ns := testmesh.Namespace(i)
		md, _ := structpb.NewStruct(map[string]any{dataplane.MetaNamespace: ns, dataplane.MetaServiceAccount: "sa",
			dataplane.MetaLabels: map[string]any{"app": fmt.Sprintf("svc-%d", i)}})
		proxies[i] = &xdsload.Proxy{Node: &corev3.Node{Id: "p." + ns, Metadata: md}}
		go func(p *xdsload.Proxy) { _ = p.Run(ctx, conn) }(proxies[i])
	}
	waitSynced(t, ads, namespaces)
	old := make([]string, len(proxies))
	before := make([]xdsload.Stats, len(proxies))
	for i, p := range proxies {
		p.WaitFor(ctx, func(v map[string]map[string]string) bool { old[i] = v[resourcev3.RouteType][route]; return true })
		before[i] = p.Stats()
		if old[i] == "" {
			t.Fatalf("proxy of %s does not hold %s", testmesh.Namespace(i), route)
		}
		if n := len(p.Held(resourcev3.RouteType)); n != 500+1 {
			t.Errorf("proxy of %s holds %d route configurations, want one per Service and port 80's", testmesh.Namespace(i), n)
		}
	}
	ads.Update(translator.Translate(weighted(30)).Mesh, time.Now())
	for i, p := range proxies {
		if !p.WaitFor(ctx, func(v map[string]map[string]string) bool { return v[resourcev3.RouteType][route] != old[i] }) {
			t.Fatalf("proxy of %s never received the new weight", testmesh.Namespace(i))
		}
	}
	waitSynced(t, ads, namespaces)
	time.Sleep(300 * time.Millisecond) // give a wrong push the chance to show
	for i, p := range proxies {
		after := p.Stats()
		if got := after.Responses - before[i].Responses; got != 1 {
			t.Errorf("proxy of %s received %d responses, want 1 (the route); by type since it connected: %v", testmesh.Namespace(i), got, after.ByType)
		}
		if got := after.BytesByType[resourcev3.RouteType] - before[i].BytesByType[resourcev3.RouteType]; got > 2048 {
			t.Errorf("proxy of %s received %d bytes of routes, want at most 2 KB", testmesh.Namespace(i), got)
		} else if i == 0 {
			t.Logf("a split's weight change: %d bytes of routes per proxy", got)
		}
		if after.BytesByType[resourcev3.ListenerType] != before[i].BytesByType[resourcev3.ListenerType] {
			t.Errorf("proxy of %s received listeners for a weight change", testmesh.Namespace(i))
		}
	}
}

// TestNewServiceSendsOnlyItsListener: over Delta xDS, a Service added to
// a mesh of 200 reaches every proxy as its own listener alone (plus its
// route configuration, cluster and endpoints): no other listener is
// re-sent, the capture listener included (docs/design/182; before, the
// capture listener held a chain per Service and was re-sent whole).
func TestNewServiceSendsOnlyItsListener(t *testing.T) {
	const namespaces = 5
	mesh := func(n int) *translator.Inputs {
		return testmesh.Generate(testmesh.Options{Services: n, Namespaces: namespaces, EndpointsPerService: 2, ExportAll: true})
	}
	const route = "outbound|80||svc-200.ns-0.svc.cluster.local"
	ads := xds.NewADS(logr.Discard())
	ads.Update(translator.Translate(mesh(200)).Mesh, time.Now())
	conn, err := grpc.NewClient(serve(t, ads), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	proxies := make([]*xdsload.Proxy, namespaces)
	for i := range proxies {
		ns := testmesh.Namespace(i)
		md, _ := structpb.NewStruct(map[string]any{dataplane.MetaNamespace: ns, dataplane.MetaServiceAccount: "sa",
			dataplane.MetaLabels: map[string]any{"app": fmt.Sprintf("svc-%d", i)}})
		proxies[i] = &xdsload.Proxy{Node: &corev3.Node{Id: "p." + ns, Metadata: md}}
		go func(p *xdsload.Proxy) { _ = p.Run(ctx, conn) }(proxies[i])
	}
	waitSynced(t, ads, namespaces)
	before := make([]xdsload.Stats, len(proxies))
	held := make([]map[string]string, len(proxies))
	for i, p := range proxies {
		before[i], held[i] = p.Stats(), p.Held(resourcev3.ListenerType)
	}
	ads.Update(translator.Translate(mesh(201)).Mesh, time.Now())
	for i, p := range proxies {
		if !p.WaitFor(ctx, func(v map[string]map[string]string) bool { return v[resourcev3.RouteType][route] != "" }) {
			t.Fatalf("proxy of %s never received the new Service's routes", testmesh.Namespace(i))
		}
	}
	waitSynced(t, ads, namespaces)
	time.Sleep(300 * time.Millisecond) // give a wrong push the chance to show
	for i, p := range proxies {
		after, now := p.Stats(), p.Held(resourcev3.ListenerType)
		var added []string
		for name, v := range now {
			switch old, ok := held[i][name]; {
			case !ok:
				added = append(added, name)
			case old != v:
				t.Errorf("proxy of %s: listener %s re-sent for another Service", testmesh.Namespace(i), name)
			}
		}
		if len(added) != 1 || added[0] != route {
			t.Errorf("proxy of %s: new listeners %v, want only %s", testmesh.Namespace(i), added, route)
		}
		got := after.BytesByType[resourcev3.ListenerType] - before[i].BytesByType[resourcev3.ListenerType]
		if got > 2048 {
			t.Errorf("proxy of %s received %d bytes of listeners for a new Service, want at most 2 KB", testmesh.Namespace(i), got)
		}
		if i == 0 {
			total := 0
			for _, ty := range []string{resourcev3.ListenerType, resourcev3.RouteType, resourcev3.ClusterType, resourcev3.EndpointType} {
				total += after.BytesByType[ty] - before[i].BytesByType[ty]
			}
			t.Logf("a new Service at 200: %d bytes of listeners per proxy (%d listeners held), %d bytes in all types; first push %d bytes of listeners",
				got, len(now), total, before[i].BytesByType[resourcev3.ListenerType])
		}
	}
}
