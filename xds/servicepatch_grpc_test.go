package xds_test

import (
	"context"
	"fmt"
	"maps"
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

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/testing/xdsload"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/testmesh"
	"github.com/weftmesh/weft/xds"
)

// TestNewServiceOverNamedSubscriptions: proxies that subscribe as Envoy
// does (endpoints and route configurations by name, xdsload.ByName), over
// real Delta streams, while Services are added one after the other
// (patched into their groups, docs/design/186) and a new one's endpoints
// then change. The new Service's endpoints reach a stream before it asks
// for them (the patch adds them to the snapshot first): they must not be
// sent then, and must be sent once it asks. After each change, every
// long-lived proxy must hold exactly what a proxy of the same identity
// that connects afresh holds — name and version of every resource of
// every type — and no group may have been built for an addition.
func TestNewServiceOverNamedSubscriptions(t *testing.T) {
	const namespaces, services = 3, 30
	in := testmesh.Generate(testmesh.Options{Services: services, Namespaces: namespaces, EndpointsPerService: 2, ExportAll: true})
	ads := xds.NewADS(logr.Discard())
	ads.Update(translator.Translate(in).Mesh, time.Now())
	addr := serve(t, ads)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	node := func(i int) *corev3.Node {
		ns := testmesh.Namespace(i)
		md, _ := structpb.NewStruct(map[string]any{dataplane.MetaNamespace: ns, dataplane.MetaServiceAccount: fmt.Sprintf("svc-%d", i),
			dataplane.MetaLabels: map[string]any{"app": fmt.Sprintf("svc-%d", i)}, dataplane.MetaPodIPs: testmesh.PodIP(i, 0)})
		return &corev3.Node{Id: fmt.Sprintf("p-%d.%s", i, ns), Metadata: md}
	}
	proxies := make([]*xdsload.Proxy, namespaces)
	for i := range proxies {
		proxies[i] = &xdsload.Proxy{Node: node(i), ByName: true}
		go func(p *xdsload.Proxy) { _ = p.Run(ctx, conn) }(proxies[i])
	}
	waitSynced(t, ads, namespaces)

	// holdsLikeAFreshProxy compares each proxy with one of its identity
	// that connects now and converges.
	holdsLikeAFreshProxy := func(step string, cond func(map[string]map[string]string) bool) {
		t.Helper()
		for i, p := range proxies {
			if !p.WaitFor(ctx, cond) {
				t.Fatalf("%s: proxy %d never converged", step, i)
			}
		}
		waitSynced(t, ads, namespaces)
		for i, p := range proxies {
			fresh := &xdsload.Proxy{Node: node(i), ByName: true}
			fctx, fcancel := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() { _ = fresh.Run(fctx, conn); close(done) }()
			if !fresh.WaitFor(ctx, cond) {
				t.Fatalf("%s: a fresh proxy %d never converged", step, i)
			}
			waitSynced(t, ads, namespaces+1)
			for _, typ := range xdsload.Types {
				got, want := p.Held(typ), fresh.Held(typ)
				if !maps.Equal(got, want) {
					for n, v := range want {
						if got[n] != v {
							t.Errorf("%s: proxy %d holds %s %s at %q, a fresh proxy at %q", step, i, typ, n, got[n], v)
						}
					}
					for n := range got {
						if _, ok := want[n]; !ok {
							t.Errorf("%s: proxy %d holds %s %s, which a fresh proxy does not", step, i, typ, n)
						}
					}
				}
			}
			fcancel()
			<-done
			waitSynced(t, ads, namespaces)
		}
	}

	eds := func(name, ns string) string { return fmt.Sprintf("outbound|80||%s.%s.svc.cluster.local", name, ns) }
	addr4 := func(n int) string { return fmt.Sprintf("10.251.0.%d", n) }
	for n := 0; n < 3; n++ {
		name, ns := fmt.Sprintf("added-%d", n), testmesh.Namespace(n)
		ready, port, portName := true, int32(8080), "http"
		in.Services = append(in.Services, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: map[string]string{translator.AnnotationExportTo: "*"}},
			Spec: corev1.ServiceSpec{ClusterIP: fmt.Sprintf("10.97.0.%d", n+1),
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
		})
		in.EndpointSlices = append(in.EndpointSlices, &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: name + "-1", Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: &portName, Port: &port}},
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{addr4(n + 1)}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		})
		builds, patches := ads.Builds(), ads.Patches()
		ads.Update(translator.Translate(in).Mesh, time.Now())
		if ads.Builds() != builds || ads.Patches()-patches != namespaces {
			t.Errorf("adding %s: %d builds and %d patches, want 0 and %d", name, ads.Builds()-builds, ads.Patches()-patches, namespaces)
		}
		want := eds(name, ns)
		holdsLikeAFreshProxy("added "+name, func(v map[string]map[string]string) bool { return v[resourcev3.EndpointType][want] != "" })
	}
	// The first new Service's endpoints move: its assignment alone is
	// re-sent to proxies that asked for it.
	last := in.EndpointSlices[len(in.EndpointSlices)-3].DeepCopy()
	last.Endpoints[0].Addresses = []string{addr4(100)}
	in.EndpointSlices[len(in.EndpointSlices)-3] = last
	before := proxies[0].Held(resourcev3.EndpointType)[eds("added-0", testmesh.Namespace(0))]
	ads.Update(translator.Translate(in).Mesh, time.Now())
	holdsLikeAFreshProxy("moved added-0's endpoint", func(v map[string]map[string]string) bool {
		cur := v[resourcev3.EndpointType][eds("added-0", testmesh.Namespace(0))]
		return cur != "" && cur != before
	})
}
