package xds_test

import (
	"context"
	"fmt"
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

// BenchmarkExportAll is hack/load's setup B in process: 2,000 Services ×
// 10 endpoints in 100 namespaces, every Service exported to every
// namespace, and 100 proxy groups (one simulated Delta proxy each, one
// per namespace), each of which sees all 2,000 Services — the case where
// per-group work is largest and is the same for every group. Per change,
// from the ADS call until every proxy holds the result:
//
//   - weight: a TrafficSplit every group sees changes weight (ADS.Update);
//   - endpoints: one Service's first endpoint moves (ADS.UpdateEndpoints).
//
// It reports group builds and patches per change; "connect" is the cold
// start of the 100 groups (built as their first proxy joins).
func BenchmarkExportAll(b *testing.B) {
	const groups = 100
	in := func(w int32) *translator.Inputs {
		in := testmesh.Generate(testmesh.Options{Services: 2000, Namespaces: 100, EndpointsPerService: 10, ExportAll: true})
		for _, name := range []string{"global", "global-next"} {
			in.Services = append(in.Services, &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shared", Annotations: map[string]string{translator.AnnotationExportTo: "*"}},
				Spec:       corev1.ServiceSpec{ClusterIP: "10.97.1." + fmt.Sprint(len(in.Services)%200), Ports: []corev1.ServicePort{{Name: "http", Port: 8000, TargetPort: intstr.FromInt32(8000)}}},
			})
		}
		in.TrafficSplits = append(in.TrafficSplits, &v1alpha1.TrafficSplit{
			ObjectMeta: metav1.ObjectMeta{Name: "global", Namespace: "shared", Generation: int64(w)},
			Spec: v1alpha1.TrafficSplitSpec{RootService: v1alpha1.RootServiceReference{Name: "global"},
				Backends: []v1alpha1.Backend{{Name: "global", Weight: &[]int32{100 - w}[0]}, {Name: "global-next", Weight: &w}}},
		})
		return in
	}
	inputs := in(1)
	mesh := translator.Translate(inputs).Mesh
	ads := xds.NewADS(logr.Discard())
	ads.Update(mesh, time.Now())
	conn, err := grpc.NewClient(serve(b, ads), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	proxies := make([]*xdsload.Proxy, groups)
	start := time.Now()
	for i := range proxies {
		ns := testmesh.Namespace(i)
		md, _ := structpb.NewStruct(map[string]any{dataplane.MetaNamespace: ns, dataplane.MetaServiceAccount: fmt.Sprintf("svc-%d", i),
			dataplane.MetaLabels: map[string]any{"app": fmt.Sprintf("svc-%d", i)}})
		proxies[i] = &xdsload.Proxy{Node: &corev3.Node{Id: fmt.Sprintf("p-%d.%s", i, ns), Metadata: md}}
		go func(p *xdsload.Proxy) { _ = p.Run(ctx, conn) }(proxies[i])
	}
	waitAll(b, proxies, func(_ *xdsload.Proxy, v map[string]map[string]string) bool {
		return len(v[resourcev3.EndpointType]) >= 2000
	}, globalRoute)
	b.Logf("connect: %d groups hold 2,000 Services each after %v", groups, time.Since(start).Round(time.Millisecond))

	report := func(b *testing.B, builds0, patches0 uint64) {
		b.ReportMetric(float64(ads.Builds()-builds0)/float64(b.N), "builds/change")
		b.ReportMetric(float64(ads.Patches()-patches0)/float64(b.N), "patches/change")
	}
	w, seq := int32(1), 0 // kept across runs: each change must change something
	b.Run("weight", func(b *testing.B) {
		builds0, patches0 := ads.Builds(), ads.Patches()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			w = w%99 + 1
			mesh = translator.Translate(in(w)).Mesh
			old := map[*xdsload.Proxy]string{}
			for _, p := range proxies {
				old[p] = p.Held(resourcev3.RouteType)[globalRoute]
			}
			b.StartTimer()
			ads.Update(mesh, time.Now())
			waitAll(b, proxies, func(p *xdsload.Proxy, v map[string]map[string]string) bool {
				return v[resourcev3.RouteType][globalRoute] != old[p]
			}, globalRoute)
		}
		b.StopTimer()
		report(b, builds0, patches0)
	})
	b.Run("endpoints", func(b *testing.B) {
		key := ir.ServiceKey{Namespace: testmesh.Namespace(7), Name: "svc-7"}
		name := ir.ClusterName(key, 80)
		var slice *discoveryv1.EndpointSlice
		for _, s := range inputs.EndpointSlices {
			if s.Namespace == key.Namespace && s.Labels[discoveryv1.LabelServiceName] == key.Name {
				slice = s.DeepCopy()
			}
		}
		pods := func(string, string) *corev1.Pod { return nil }
		builds0, patches0 := ads.Builds(), ads.Patches()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			seq++
			slice.Endpoints[0].Addresses = []string{fmt.Sprintf("10.250.%d.%d", seq/250, seq%250+1)}
			next := translator.UpdateEndpoints(mesh, key, []*discoveryv1.EndpointSlice{slice}, pods)
			old := map[*xdsload.Proxy]string{}
			for _, p := range proxies {
				old[p] = p.Held(resourcev3.EndpointType)[name]
			}
			b.StartTimer()
			ads.UpdateEndpoints(next, []ir.ServiceKey{key}, time.Now())
			mesh = next
			waitAll(b, proxies, func(p *xdsload.Proxy, v map[string]map[string]string) bool {
				return v[resourcev3.EndpointType][name] != old[p]
			}, globalRoute)
		}
		b.StopTimer()
		report(b, builds0, patches0)
	})
}
