// Package testmesh generates synthetic meshes of any size for benchmarks,
// scoping tests and the load harness.
package testmesh

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator"
)

// Options shape a generated mesh.
type Options struct {
	// Services in all, spread round-robin over Namespaces.
	Services   int
	Namespaces int
	// EndpointsPerService, all ready, one pod each, all meshed (at most
	// 64: PodIP).
	EndpointsPerService int
	// SplitEvery: every SplitEvery-th Service is the root of a TrafficSplit
	// (90/10 to itself and a neighbour); 0 means none.
	SplitEvery int
	// ExportAll exports every Service to every namespace, as weft does by
	// default; without it every Service is annotated weft.dev/export-to "."
	// (its own namespace only): the scoped mesh.
	ExportAll bool
}

// Generate builds the inputs. Service i is svc-i in namespace ns-(i mod
// Namespaces), selecting app=svc-i, with cluster IP 10.(i/256).(i%256).1-ish
// addresses that are unique for up to 65,536 Services.
func Generate(o Options) *translator.Inputs {
	in := &translator.Inputs{}
	for n := 0; n < o.Namespaces; n++ {
		in.Namespaces = append(in.Namespaces, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace(n)}})
	}
	ready := true
	for i := 0; i < o.Services; i++ {
		ns, name := Namespace(i%o.Namespaces), fmt.Sprintf("svc-%d", i)
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: corev1.ServiceSpec{
				ClusterIP: fmt.Sprintf("10.96.%d.%d", i/256, i%256),
				Selector:  map[string]string{"app": name},
				Ports:     []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
			},
		}
		svc.Annotations = map[string]string{translator.AnnotationExportTo: "."}
		if o.ExportAll {
			svc.Annotations[translator.AnnotationExportTo] = "*"
		}
		in.Services = append(in.Services, svc)
		slice := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: name + "-1", Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(8080))}},
		}
		for e := 0; e < o.EndpointsPerService; e++ {
			pod := fmt.Sprintf("%s-%d", name, e)
			slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{
				Addresses:  []string{PodIP(i, e)},
				Conditions: discoveryv1.EndpointConditions{Ready: &ready},
				TargetRef:  &corev1.ObjectReference{Kind: "Pod", Name: pod, Namespace: ns},
			})
			in.Pods = append(in.Pods, &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: pod, Namespace: ns, Labels: map[string]string{"app": name}},
				Spec: corev1.PodSpec{
					ServiceAccountName: name,
					InitContainers:     []corev1.Container{{Name: dataplane.SidecarContainerName}},
				},
			})
		}
		in.EndpointSlices = append(in.EndpointSlices, slice)
		if o.SplitEvery > 0 && i%o.SplitEvery == 0 && i+o.Namespaces < o.Services {
			other := fmt.Sprintf("svc-%d", i+o.Namespaces) // same namespace
			in.TrafficSplits = append(in.TrafficSplits, &v1alpha1.TrafficSplit{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Generation: 1},
				Spec: v1alpha1.TrafficSplitSpec{
					RootService: v1alpha1.RootServiceReference{Name: name},
					Backends:    []v1alpha1.Backend{{Name: name, Weight: ptr(int32(90))}, {Name: other, Weight: ptr(int32(10))}},
				},
			})
		}
	}
	return in
}

// Namespace is the name of namespace n.
func Namespace(n int) string { return fmt.Sprintf("ns-%d", n) }

// PodIP is the address of endpoint e of Service i: distinct for up to
// 16,384 Services of up to 64 endpoints (endpoint 16 and up in 10.5 and
// above).
func PodIP(i, e int) string {
	return fmt.Sprintf("10.%d.%d.%d", 1+i/4096+4*(e/16%4), (i/16)%256, (i%16)*16+e%16)
}

func ptr[T any](v T) *T { return &v }
