package xds_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/testing/xdsload"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/ir"
	"github.com/weftmesh/weft/translator/testmesh"
	"github.com/weftmesh/weft/xds"
)

// BenchmarkNewService is hack/bench's "new Service" (issue 14) in process:
// issue 14's mesh (2,000 Services × 10 endpoints in 10 namespaces, every
// Service visible — or, visible=namespace, each exported to its own
// namespace only — and 200 TrafficSplits) with 100 Delta sidecars subscribing
// by name, each its own workload (its own group). Each iteration adds one
// Service and its EndpointSlice, as the bench creates them, and times
// ADS.Update: every group brought up to date (the push follows). It
// reports group builds and patches per new Service.
//
//	go test ./xds -run '^$' -bench NewService -benchtime 10x -cpuprofile cpu.out
func BenchmarkNewService(b *testing.B) {
	b.Run("visible=mesh", func(b *testing.B) { benchmarkNewService(b, true) })
	// hack/bench --scoped: every Service exported to its own namespace
	// only, so a new Service reaches the proxies of its namespace.
	b.Run("visible=namespace", func(b *testing.B) { benchmarkNewService(b, false) })
}

func benchmarkNewService(b *testing.B, exportAll bool) {
	const services, namespaces, proxies = 2000, 10, 100
	in := testmesh.Generate(testmesh.Options{Services: services, Namespaces: namespaces, EndpointsPerService: 10, ExportAll: exportAll, SplitEvery: 10})
	exportTo := "*"
	if !exportAll {
		exportTo = "."
	}
	mesh := translator.Translate(in).Mesh
	ads := xds.NewADS(logr.Discard())
	ads.Update(mesh, time.Now())
	addr := serve(b, ads)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var all []*xdsload.Proxy
	for i := range proxies {
		ns := testmesh.Namespace(i % namespaces)
		app := fmt.Sprintf("svc-%d", i)
		md, _ := structpb.NewStruct(dataplane.NodeMetadata(dataplane.NodeMeta{Namespace: ns, ServiceAccount: app,
			Labels: map[string]string{"app": app}, PodIPs: testmesh.PodIP(i, 0), Kind: dataplane.KindNameSidecar}))
		p := &xdsload.Proxy{Node: &corev3.Node{Id: fmt.Sprintf("%s-0.%s", app, ns), Metadata: md}, ByName: true}
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		go func() { _ = p.Run(ctx, conn) }()
		all = append(all, p)
	}
	seen := services // what each proxy holds once connected
	if !exportAll {
		seen = services / namespaces
	}
	holdAll(b, all, seen)
	builds, patches := ads.Builds(), ads.Patches()
	n := 0
	for b.Loop() {
		b.StopTimer()
		name, ns := fmt.Sprintf("new-%d", n), testmesh.Namespace(n%namespaces)
		in.Services = append(in.Services, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: map[string]string{translator.AnnotationExportTo: exportTo}},
			Spec: corev1.ServiceSpec{ClusterIP: fmt.Sprintf("10.97.%d.%d", n/256, n%256), Selector: map[string]string{"app": name},
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
		})
		port, ready := int32(8080), true
		portName := "http"
		in.EndpointSlices = append(in.EndpointSlices, &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: name + "-1", Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: &portName, Port: &port}},
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{fmt.Sprintf("10.250.%d.%d", n/256, n%256)}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		})
		mesh = ir.Reuse(mesh, translator.Translate(in).Mesh)
		n++
		b.StartTimer()
		ads.Update(mesh, time.Now())
	}
	b.ReportMetric(float64(ads.Builds()-builds)/float64(b.N), "builds/op")
	b.ReportMetric(float64(ads.Patches()-patches)/float64(b.N), "patches/op")
}
