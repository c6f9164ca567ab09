package loadtest

import (
	"context"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/testmesh"
)

// The Services every proxy depends on, whatever the scoping: global is
// the root of the TrafficSplit the convergence runs change, global-next
// its second backend. They listen on their own port, so that the route
// configuration that carries the split (named after the port) holds only
// them and is cheap for the simulated proxies to decode.
const (
	SharedNamespace = "load-shared"
	GlobalService   = "global"
	NextService     = "global-next"
	SplitName       = "global"
	GlobalPort      = 8000
	// ControllerNamespace is weft-controller's (the default of
	// --leader-election-namespace).
	ControllerNamespace = "weft-system"
)

// GlobalRoute is the route configuration (the root Service port's own,
// named like its cluster: docs/design/090) that carries the split global,
// and NextCluster the backend whose weight changes (a mesh without Splits).
var (
	GlobalRoute = fmt.Sprintf("outbound|%d||%s.%s.svc.cluster.local", GlobalPort, GlobalService, SharedNamespace)
	NextCluster = fmt.Sprintf("outbound|%d||%s.%s.svc.cluster.local", GlobalPort, NextService, SharedNamespace)
)

// ClusterName is the Envoy cluster (and EDS resource) of testmesh Service
// i: Istio's naming, which weft shares.
func ClusterName(m Mesh, i int) string {
	return fmt.Sprintf("outbound|80||svc-%d.%s.svc.cluster.local", i, testmesh.Namespace(i%m.Namespaces))
}

// Host is the cluster DNS name of testmesh Service i.
func Host(m Mesh, i int) string {
	return fmt.Sprintf("svc-%d.%s.svc.cluster.local", i, testmesh.Namespace(i%m.Namespaces))
}

// splitPair is split k's root Service and the backend whose weight the
// runs change (in the same namespace): every (Services/Splits)-th Service
// is a root, its backend the Service Namespaces further (or before).
func splitPair(m Mesh, k int) (root, next int) {
	root = k * (m.Services / m.Splits)
	next = root + m.Namespaces
	if next >= m.Services {
		next = root - m.Namespaces
	}
	return root, next
}

// splitVisibleFrom says whether a proxy in namespace ns holds the
// measured split: global is exported everywhere, split 0's pair is
// exported with the rest of the mesh (everywhere with ExportAll, else to
// its own namespace).
func (m Mesh) splitVisibleFrom(ns string) bool {
	if m.Splits == 0 || m.ExportAll {
		return true
	}
	root, _ := splitPair(m, 0)
	return ns == testmesh.Namespace(root%m.Namespaces)
}

// newServiceNamespace is where new Services are created.
var newServiceNamespace = testmesh.Namespace(0)

// newServiceVisibleFrom says whether a proxy in namespace ns holds the
// new Services (newServiceObjects: exported like the rest of the mesh).
func (m Mesh) newServiceVisibleFrom(ns string) bool {
	return m.ExportAll || ns == newServiceNamespace
}

// measuredCluster is the backend cluster whose weight a weight change
// sets: split 0's second backend, or global-next without Splits.
func measuredCluster(m Mesh) string {
	if m.Splits > 0 {
		_, next := splitPair(m, 0)
		return ClusterName(m, next)
	}
	return NextCluster
}

// AltPort is the second common port every other Service also listens on
// with Mesh.AltPort (its Pods on AltTargetPort).
const (
	AltPort       = 8080
	AltTargetPort = 9090
)

// IstioTLSModeLabel marks a Pod as having Istio's sidecar, so that istiod
// sends mutual TLS to its endpoints, as weft does to meshed Pods.
const IstioTLSModeLabel = "security.istio.io/tlsMode"

// objects is what a run creates, in the order it must be created.
type objects struct {
	namespaces      []*corev1.Namespace
	serviceAccounts []*corev1.ServiceAccount
	services        []*corev1.Service
	slices          []*discoveryv1.EndpointSlice // slices[i] belongs to services[i]
	pods            []*corev1.Pod
	// splits: global, or Splits among the testmesh Services; vss their
	// Istio equivalents (with VirtualServices).
	splits []*v1alpha1.TrafficSplit
	vss    []*unstructured.Unstructured
	// sidecars: istiod's scoping (IstioSidecar) with Scoped and
	// VirtualServices.
	sidecars []*unstructured.Unstructured
}

// build lays out the mesh: testmesh's Services (svc-i in ns-(i mod
// Namespaces), one EndpointSlice of E ready endpoints each, one meshed Pod
// per endpoint), plus either Splits TrafficSplits among them (and their
// VirtualServices) or, without Splits, the shared namespace with global
// and global-next (exported to every namespace) and the TrafficSplit
// global, every split at weight. Cluster IPs are left to the API server.
func build(m Mesh, weight int32) objects {
	in := testmesh.Generate(testmesh.Options{Services: m.Services, Namespaces: m.Namespaces, EndpointsPerService: m.Endpoints, ExportAll: m.ExportAll})
	var o objects
	o.namespaces = append(in.Namespaces, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: SharedNamespace}})
	o.services, o.slices, o.pods = in.Services, in.EndpointSlices, in.Pods
	if m.Scoped {
		// testmesh scopes each Service without ExportAll; the namespaces
		// say so too, for the Services created later (new Services).
		for _, ns := range o.namespaces {
			if ns.Annotations == nil {
				ns.Annotations = map[string]string{}
			}
			ns.Annotations[translator.AnnotationExportTo] = "."
		}
	}
	for i, s := range o.services {
		s.Spec.ClusterIP = ""
		o.serviceAccounts = append(o.serviceAccounts, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: s.Namespace}})
		if m.AltPort && i%2 == 1 {
			s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "http-alt", Port: AltPort, TargetPort: intstr.FromInt32(AltTargetPort)})
			o.slices[i].Ports = append(o.slices[i].Ports, discoveryv1.EndpointPort{Name: ptr("http-alt"), Port: ptr(int32(AltTargetPort))})
		}
	}
	if m.VirtualServices {
		o.namespaces = append(o.namespaces, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: IstioNamespace}})
		if m.Scoped {
			o.sidecars = append(o.sidecars, IstioSidecar())
		}
	}
	if m.Splits > 0 {
		for k := range m.Splits {
			root, next := splitPair(m, k)
			ts := &v1alpha1.TrafficSplit{
				ObjectMeta: metav1.ObjectMeta{Name: splitObjectName(root), Namespace: testmesh.Namespace(root % m.Namespaces)},
				Spec:       pairSpec(root, next, weight),
			}
			o.splits = append(o.splits, ts)
			if m.VirtualServices {
				o.vss = append(o.vss, virtualService(m, root, next, weight))
			}
		}
	} else {
		o.addGlobal(weight)
	}
	// Pods as the API server wants them (an image per container), with
	// the address their endpoint has, made ready through status as the
	// kubelet would.
	podIP := map[string]string{}
	for _, s := range o.slices {
		for _, e := range s.Endpoints {
			podIP[s.Namespace+"/"+e.TargetRef.Name] = e.Addresses[0]
		}
	}
	no := false
	for _, p := range o.pods {
		if m.VirtualServices {
			p.Labels[IstioTLSModeLabel] = "istio"
		}
		p.Spec.AutomountServiceAccountToken = &no
		p.Spec.InitContainers[0].Image = "envoyproxy/envoy:v1.36"
		p.Spec.Containers = []corev1.Container{{Name: "app", Image: "app:v1"}}
		ip := podIP[p.Namespace+"/"+p.Name]
		p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	}
	return o
}

// addGlobal adds the shared namespace's Services global and global-next
// on their own port, exported to every namespace, and the TrafficSplit
// global between them.
func (o *objects) addGlobal(weight int32) {
	ready := true
	for k, name := range []string{GlobalService, NextService} {
		o.services = append(o.services, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: SharedNamespace, Annotations: map[string]string{translator.AnnotationExportTo: "*"}},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name},
				Ports: []corev1.ServicePort{{Name: "http", Port: GlobalPort, TargetPort: intstr.FromInt32(8080)}}},
		})
		o.serviceAccounts = append(o.serviceAccounts, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: SharedNamespace}})
		slice := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: name + "-1", Namespace: SharedNamespace, Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(8080))}},
		}
		for e := 0; e < 2; e++ {
			pod := fmt.Sprintf("%s-%d", name, e)
			slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{
				Addresses:  []string{fmt.Sprintf("10.249.%d.%d", k, e+1)},
				Conditions: discoveryv1.EndpointConditions{Ready: &ready},
				TargetRef:  &corev1.ObjectReference{Kind: "Pod", Name: pod, Namespace: SharedNamespace},
			})
			o.pods = append(o.pods, &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: pod, Namespace: SharedNamespace, Labels: map[string]string{"app": name}},
				Spec:       corev1.PodSpec{ServiceAccountName: name, InitContainers: []corev1.Container{{Name: dataplane.SidecarContainerName}}},
			})
		}
		o.slices = append(o.slices, slice)
	}
	o.splits = append(o.splits, &v1alpha1.TrafficSplit{
		ObjectMeta: metav1.ObjectMeta{Name: SplitName, Namespace: SharedNamespace},
		Spec:       splitSpec(weight),
	})
}

// splitObjectName names the TrafficSplit and VirtualService of a root.
func splitObjectName(root int) string { return fmt.Sprintf("split-svc-%d", root) }

// splitSpec sends weight percent to global-next, the rest to global.
func splitSpec(weight int32) v1alpha1.TrafficSplitSpec {
	return v1alpha1.TrafficSplitSpec{RootService: v1alpha1.RootServiceReference{Name: GlobalService},
		Backends: []v1alpha1.Backend{{Name: GlobalService, Weight: ptr(100 - weight)}, {Name: NextService, Weight: ptr(weight)}}}
}

// pairSpec sends weight percent of svc-root's traffic to svc-next, the
// rest to svc-root's own endpoints.
func pairSpec(root, next int, weight int32) v1alpha1.TrafficSplitSpec {
	r, n := fmt.Sprintf("svc-%d", root), fmt.Sprintf("svc-%d", next)
	return v1alpha1.TrafficSplitSpec{RootService: v1alpha1.RootServiceReference{Name: r},
		Backends: []v1alpha1.Backend{{Name: r, Weight: ptr(100 - weight)}, {Name: n, Weight: ptr(weight)}}}
}

// virtualService is a split's Istio equivalent: one HTTP route for the
// root's host with weighted destinations on the two hosts.
func virtualService(m Mesh, root, next int, weight int32) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"spec": vsSpec(m, root, next, weight)}}
	u.SetAPIVersion("networking.istio.io/v1")
	u.SetKind("VirtualService")
	u.SetName(splitObjectName(root))
	u.SetNamespace(testmesh.Namespace(root % m.Namespaces))
	return u
}

// IstioSidecar is istiod's side of Mesh.Scoped, what Istio's
// documentation recommends for a large mesh: the mesh-wide default
// Sidecar (in the root namespace, IstioNamespace, without a workload
// selector, so it applies to every proxy in a namespace without a Sidecar
// of its own), whose one egress listener imports only the Services of the
// proxy's own namespace ("./*"). Written like the VirtualServices
// (networking.istio.io/v1, unstructured; its CRD comes with Istio's).
func IstioSidecar() *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"spec": map[string]any{
		"egress": []any{map[string]any{"hosts": []any{"./*"}}},
	}}}
	u.SetAPIVersion("networking.istio.io/v1")
	u.SetKind("Sidecar")
	u.SetName("default")
	u.SetNamespace(IstioNamespace)
	return u
}

func vsSpec(m Mesh, root, next int, weight int32) map[string]any {
	return map[string]any{
		"hosts": []any{Host(m, root)},
		"http": []any{map[string]any{"route": []any{
			map[string]any{"destination": map[string]any{"host": Host(m, root)}, "weight": int64(100 - weight)},
			map[string]any{"destination": map[string]any{"host": Host(m, next)}, "weight": int64(weight)},
		}}},
	}
}

// create writes the objects, each kind in parallel, kinds in order.
// Pods get their status (IP, Running, Ready) by a second write, as the
// kubelet's would be. A namespace that exists already is an error: the
// tool needs a cluster of its own.
func (o objects) create(ctx context.Context, c client.Client, workers int) error {
	// The controller's own namespace (its Lease, the CA's Secret) may
	// exist already.
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ControllerNamespace}}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	ns := make([]client.Object, len(o.namespaces))
	for i, n := range o.namespaces {
		ns[i] = n
	}
	if err := parallel(ctx, workers, ns, func(ctx context.Context, obj client.Object) error {
		err := c.Create(ctx, obj)
		if apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("namespace %s exists already: run against a cluster of its own (omit --kubeconfig to start one)", obj.GetName())
		}
		return err
	}); err != nil {
		return err
	}
	for _, kind := range [][]client.Object{asObjects(o.serviceAccounts), asObjects(o.services), asObjects(o.slices)} {
		if err := parallel(ctx, workers, kind, func(ctx context.Context, obj client.Object) error { return c.Create(ctx, obj) }); err != nil {
			return err
		}
	}
	if err := parallel(ctx, workers, asObjects(o.pods), func(ctx context.Context, obj client.Object) error {
		p := obj.(*corev1.Pod)
		st := p.Status
		if err := c.Create(ctx, p); err != nil {
			return err
		}
		p.Status = st
		return c.Status().Update(ctx, p)
	}); err != nil {
		return err
	}
	if err := parallel(ctx, workers, asObjects(o.splits), func(ctx context.Context, obj client.Object) error { return c.Create(ctx, obj) }); err != nil {
		return err
	}
	return parallel(ctx, workers, append(asObjects(o.vss), asObjects(o.sidecars)...), func(ctx context.Context, obj client.Object) error { return c.Create(ctx, obj) })
}

func asObjects[T client.Object](in []T) []client.Object {
	out := make([]client.Object, len(in))
	for i, o := range in {
		out[i] = o
	}
	return out
}

// parallel runs fn over objs with workers goroutines; the first error
// stops the rest.
func parallel(ctx context.Context, workers int, objs []client.Object, fn func(context.Context, client.Object) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	work := make(chan client.Object)
	var wg sync.WaitGroup
	for range max(1, workers) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for obj := range work {
				if err := fn(ctx, obj); err != nil {
					cancel(fmt.Errorf("%T %s/%s: %w", obj, obj.GetNamespace(), obj.GetName(), err))
				}
			}
		}()
	}
	for _, obj := range objs {
		select {
		case work <- obj:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(work)
	wg.Wait()
	return context.Cause(ctx)
}

func ptr[T any](v T) *T { return &v }

// newServiceObjects is new Service number k: name in ns on port 80 with
// one ready endpoint (no Pod), exported like the rest of the mesh.
func newServiceObjects(m Mesh, name, ns string, k int) (*corev1.Service, *discoveryv1.EndpointSlice) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: map[string]string{translator.AnnotationExportTo: "."}},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}
	if m.ExportAll {
		svc.Annotations[translator.AnnotationExportTo] = "*"
	}
	ready := true
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name + "-1", Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(8080))}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{fmt.Sprintf("10.251.%d.%d", k/250, k%250+1)},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
	}
	return svc, slice
}
