package store

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/internal/testing/testenv"
	"github.com/weftmesh/weft/internal/testing/testkit"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/ir"
)

// Generous: the machine may be slow and shared; nothing here measures speed.
const patience = 60 * time.Second

type harness struct {
	t       *testing.T
	ctx     context.Context
	env     *testenv.Env
	c       client.Client
	store   *Store
	batches chan Batch
}

// start runs a manager configured as weft-controller configures it
// (CacheOptions, a scheme with every watched kind) and a store on it.
// setup runs before the manager starts, so its objects are in the initial
// batch.
func start(t *testing.T, setup func(ctx context.Context, c client.Client)) *harness {
	t.Helper()
	env := testenv.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	if setup != nil {
		setup(ctx, env.Client)
	}
	mgr, err := manager.New(env.Config, manager.Options{
		Scheme:                 testenv.Scheme,
		Cache:                  CacheOptions(cache.Options{}),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Logger:                 testr.New(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(mgr, testr.New(t).WithName("store"))
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, ctx: ctx, env: env, c: env.Client, store: s, batches: make(chan Batch, 1000)}
	done := make(chan struct{}, 2)
	go func() {
		defer func() { done <- struct{}{} }()
		if err := mgr.Start(ctx); err != nil {
			t.Errorf("manager: %v", err)
		}
	}()
	go func() {
		defer func() { done <- struct{}{} }()
		if err := s.Run(ctx, func(b Batch) { h.batches <- b }); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done; <-done })
	return h
}

func (h *harness) insignificant(k Kind) int {
	h.store.mu.Lock()
	defer h.store.mu.Unlock()
	return h.store.insignificant[k]
}

// next waits for the first batch that satisfies ok, and returns it.
func (h *harness) next(what string, ok func(Batch) bool) Batch {
	h.t.Helper()
	deadline := time.After(patience)
	for {
		select {
		case b := <-h.batches:
			if ok(b) {
				return b
			}
		case <-deadline:
			h.t.Fatalf("no batch with %s within %v", what, patience)
		}
	}
}

func (h *harness) create(obj client.Object) {
	h.t.Helper()
	if err := h.c.Create(h.ctx, obj); err != nil {
		h.t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
}

func hasService(b Batch, ns, name string) bool {
	return slices.ContainsFunc(b.Inputs.Services, func(s *corev1.Service) bool { return s.Namespace == ns && s.Name == name })
}

func namespace(name string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

func service(ns, name string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80}},
		},
	}
}

func endpointSlice(ns, name, svc, pod, ip string) *discoveryv1.EndpointSlice {
	ready := true
	port := int32(8080)
	portName := "http"
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{ip},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: pod},
		}},
		Ports: []discoveryv1.EndpointPort{{Name: &portName, Port: &port}},
	}
}

func TestStoreBatches(t *testing.T) {
	h := start(t, func(ctx context.Context, c client.Client) {
		for _, o := range []client.Object{
			namespace("shop"), namespace("bank"),
			service("shop", "checkout"), service("bank", "ledger"), service("shop", "cart"),
		} {
			if err := c.Create(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
	})

	first := h.next("the initial snapshot", func(Batch) bool { return true })
	t.Run("initial batch is full and sorted", func(t *testing.T) {
		if !first.Changes.Full || first.Changes.EndpointsOnly {
			t.Errorf("Changes = %+v, want Full", first.Changes)
		}
		for _, k := range []Kind{KindService, KindHTTPRoute, KindGRPCRoute, KindMeshConfig, KindPod} {
			if !first.Changes.Kinds.Has(k) {
				t.Errorf("initial Kinds %v lacks %v", first.Changes.Kinds, k)
			}
		}
		var got []string
		for _, s := range first.Inputs.Services {
			if s.Namespace != "default" {
				got = append(got, s.Namespace+"/"+s.Name)
			}
		}
		if want := []string{"bank/ledger", "shop/cart", "shop/checkout"}; !slices.Equal(got, want) {
			t.Errorf("Services = %v, want sorted %v", got, want)
		}
		for _, s := range first.Inputs.Services {
			if len(s.ManagedFields) > 0 {
				t.Errorf("Service %s kept its managedFields", s.Name)
			}
		}
	})

	t.Run("policy change is a full change", func(t *testing.T) {
		ts := &v1alpha1.TrafficSplit{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "checkout"},
			Spec: v1alpha1.TrafficSplitSpec{
				RootService: v1alpha1.RootServiceReference{Name: "checkout"},
				Backends:    []v1alpha1.Backend{{Name: "checkout"}},
			},
		}
		h.create(ts)
		b := h.next("the TrafficSplit", func(b Batch) bool { return len(b.Inputs.TrafficSplits) == 1 })
		if !b.Changes.Kinds.Has(KindTrafficSplit) || b.Changes.EndpointsOnly || b.Changes.Full {
			t.Errorf("Changes = %+v, want TrafficSplit, not endpoints-only", b.Changes)
		}
		if b.FirstEvent.IsZero() || b.Events < 1 {
			t.Errorf("FirstEvent = %v, Events = %d", b.FirstEvent, b.Events)
		}

		// A status-only write (what the status writer does) is not a change.
		ignored := h.insignificant(KindTrafficSplit)
		cur := &v1alpha1.TrafficSplit{}
		if err := h.c.Get(h.ctx, client.ObjectKeyFromObject(ts), cur); err != nil {
			t.Fatal(err)
		}
		meta := metav1.Condition{Type: v1alpha1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonAccepted, LastTransitionTime: metav1.Now(), ObservedGeneration: 1}
		cur.Status.Conditions = []metav1.Condition{meta}
		if err := h.c.Status().Update(h.ctx, cur); err != nil {
			t.Fatal(err)
		}
		testkit.EventuallyTrue(t, "status-only update counted as insignificant", func() bool {
			return h.insignificant(KindTrafficSplit) > ignored
		})
		h.create(namespace("marker-1"))
		b = h.next("the marker namespace", func(b Batch) bool { return b.Changes.Kinds.Has(KindNamespace) })
		if b.Changes.Kinds != KindNamespace {
			t.Errorf("Kinds = %v, want only Namespace (the status write must not count)", b.Changes.Kinds)
		}
	})

	t.Run("GRPCRoutes are watched; their status is not a change", func(t *testing.T) {
		gr := &gatewayv1.GRPCRoute{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "checkout"},
			Spec: gatewayv1.GRPCRouteSpec{
				CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{
					Group: ptr(gatewayv1.Group("")), Kind: ptr(gatewayv1.Kind("Service")), Name: "checkout"}}},
				Rules: []gatewayv1.GRPCRouteRule{{BackendRefs: []gatewayv1.GRPCBackendRef{{BackendRef: gatewayv1.BackendRef{
					BackendObjectReference: gatewayv1.BackendObjectReference{Name: "cart", Port: ptr(gatewayv1.PortNumber(80))}}}}}},
			},
		}
		h.create(gr)
		b := h.next("the GRPCRoute", func(b Batch) bool { return len(b.Inputs.GRPCRoutes) == 1 })
		if !b.Changes.Kinds.Has(KindGRPCRoute) || b.Changes.EndpointsOnly {
			t.Errorf("Changes = %+v, want GRPCRoute, not endpoints-only", b.Changes)
		}
		ignored := h.insignificant(KindGRPCRoute)
		cur := &gatewayv1.GRPCRoute{}
		if err := h.c.Get(h.ctx, client.ObjectKeyFromObject(gr), cur); err != nil {
			t.Fatal(err)
		}
		cur.Status.Parents = []gatewayv1.RouteParentStatus{{
			ParentRef: gr.Spec.ParentRefs[0], ControllerName: "mesh.weft.dev/controller",
			Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", LastTransitionTime: metav1.Now(), ObservedGeneration: 1}},
		}}
		if err := h.c.Status().Update(h.ctx, cur); err != nil {
			t.Fatal(err)
		}
		testkit.EventuallyTrue(t, "GRPCRoute status-only update counted as insignificant", func() bool {
			return h.insignificant(KindGRPCRoute) > ignored
		})
		h.create(namespace("marker-grpcroute"))
		b = h.next("the marker namespace", func(b Batch) bool { return b.Changes.Kinds.Has(KindNamespace) })
		if b.Changes.Kinds != KindNamespace {
			t.Errorf("Kinds = %v, want only Namespace (the GRPCRoute status write must not count)", b.Changes.Kinds)
		}
	})

	t.Run("endpoint-only changes are flagged with their Services", func(t *testing.T) {
		h.create(endpointSlice("shop", "checkout-abc", "checkout", "checkout-0", "10.1.0.5"))
		b := h.next("the EndpointSlice", func(b Batch) bool { return b.Changes.Kinds.Has(KindEndpointSlice) })
		want := []ir.ServiceKey{{Namespace: "shop", Name: "checkout"}}
		if !b.Changes.EndpointsOnly || !slices.Equal(b.Changes.Services, want) {
			t.Errorf("Changes = %+v, want EndpointsOnly for %v", b.Changes, want)
		}
		if got := b.EndpointSlices(want[0]); len(got) != 1 || got[0].Name != "checkout-abc" {
			t.Errorf("EndpointSlices(shop/checkout) = %v", got)
		}
	})

	t.Run("pods are stripped, and a pod change names its Services", func(t *testing.T) {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "checkout"}}
		h.create(sa)
		no := false
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "checkout-0", Labels: map[string]string{"app": "checkout"},
				Annotations: map[string]string{"weft.dev/proxyless": "grpc"}},
			Spec: corev1.PodSpec{
				ServiceAccountName:           "checkout",
				AutomountServiceAccountToken: &no,
				InitContainers:               []corev1.Container{{Name: "weft-proxy", Image: "envoy:v1", Args: []string{"--long", "--args"}}},
				Containers: []corev1.Container{{Name: "app", Image: "shop/checkout:v1", Env: []corev1.EnvVar{{Name: "A", Value: "b"}},
					Ports: []corev1.ContainerPort{{ContainerPort: 8080}}}},
			},
		}
		h.create(pod)
		b := h.next("the Pod", func(b Batch) bool { return b.Pod("shop", "checkout-0") != nil })
		got := b.Pod("shop", "checkout-0")
		if got.Spec.ServiceAccountName != "checkout" || got.Labels["app"] != "checkout" || got.Annotations["weft.dev/proxyless"] != "grpc" {
			t.Errorf("stripped pod lost what the translator reads: %+v", got)
		}
		// Only weft's own containers, by name (weft-init keeps its
		// arguments: TestTransformPodSharesContainerLists).
		if len(got.Spec.Containers) != 0 || len(got.Spec.InitContainers) != 1 ||
			got.Spec.InitContainers[0].Name != "weft-proxy" || got.Spec.InitContainers[0].Image != "" || got.Spec.InitContainers[0].Args != nil {
			t.Errorf("containers = %+v / %+v, want the sidecar's name only", got.Spec.Containers, got.Spec.InitContainers)
		}
		if len(got.ManagedFields) > 0 {
			t.Error("pod kept its managedFields")
		}
		want := []types.NamespacedName{{Namespace: "shop", Name: "checkout-0"}}
		if !b.Changes.EndpointsOnly || !slices.Equal(b.Changes.Pods, want) {
			t.Errorf("Changes = %+v, want EndpointsOnly with Pods %v", b.Changes, want)
		}
		if svc := (ir.ServiceKey{Namespace: "shop", Name: "checkout"}); !slices.Contains(b.Changes.Services, svc) {
			t.Errorf("Services = %v, want %v (its slice points at the pod)", b.Changes.Services, svc)
		}

		// The pod gets its IP: a change.
		cur := &corev1.Pod{}
		if err := h.c.Get(h.ctx, client.ObjectKeyFromObject(pod), cur); err != nil {
			t.Fatal(err)
		}
		cur.Status.PodIP = "10.1.0.5"
		cur.Status.PodIPs = []corev1.PodIP{{IP: "10.1.0.5"}}
		if err := h.c.Status().Update(h.ctx, cur); err != nil {
			t.Fatal(err)
		}
		b = h.next("the pod IP", func(b Batch) bool {
			p := b.Pod("shop", "checkout-0")
			return p != nil && len(p.Status.PodIPs) == 1
		})
		if !b.Changes.EndpointsOnly || !b.Changes.Kinds.Has(KindPod) {
			t.Errorf("Changes = %+v, want an endpoints-only Pod change", b.Changes)
		}

		// Readiness churn is stripped: not a change.
		ignored := h.insignificant(KindPod)
		cur.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
		if err := h.c.Status().Update(h.ctx, cur); err != nil {
			t.Fatal(err)
		}
		testkit.EventuallyTrue(t, "pod condition update counted as insignificant", func() bool {
			return h.insignificant(KindPod) > ignored
		})
		h.create(namespace("marker-2"))
		b = h.next("the marker namespace", func(b Batch) bool { return b.Changes.Kinds.Has(KindNamespace) })
		if b.Changes.Kinds != KindNamespace {
			t.Errorf("Kinds = %v, want only Namespace (pod conditions are not read)", b.Changes.Kinds)
		}
	})

	// docs/design/176: the translation of a batch follows a ReferenceGrant
	// as the API server has it; its deletion refuses the backend again.
	t.Run("a ReferenceGrant permits a backend until it is deleted", func(t *testing.T) {
		port := gatewayv1.PortNumber(80)
		bank := gatewayv1.Namespace("bank")
		h.create(&gatewayv1.HTTPRoute{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cart"},
			Spec: gatewayv1.HTTPRouteSpec{
				CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Group: ptr(gatewayv1.Group("")), Kind: ptr(gatewayv1.Kind("Service")), Name: "cart"}}},
				Rules: []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{{BackendRef: gatewayv1.BackendRef{
					BackendObjectReference: gatewayv1.BackendObjectReference{Name: "ledger", Namespace: &bank, Port: &port}}}}}},
			},
		})
		grant := &gatewayv1beta1.ReferenceGrant{
			ObjectMeta: metav1.ObjectMeta{Namespace: "bank", Name: "shop-routes"},
			Spec: gatewayv1beta1.ReferenceGrantSpec{
				From: []gatewayv1beta1.ReferenceGrantFrom{{Group: gatewayv1.GroupName, Kind: "HTTPRoute", Namespace: "shop"}},
				To:   []gatewayv1beta1.ReferenceGrantTo{{Group: "", Kind: "Service"}},
			},
		}
		h.create(grant)
		reason := func(b Batch) string {
			out := translator.Translate(b.Inputs)
			c := apimeta.FindStatusCondition(out.Status[translator.PolicyKey{Kind: translator.KindHTTPRoute, Namespace: "shop", Name: "cart"}], "ResolvedRefs")
			if c == nil {
				return ""
			}
			return c.Reason
		}
		b := h.next("the HTTPRoute and the ReferenceGrant", func(b Batch) bool { return len(b.Inputs.HTTPRoutes) == 1 && len(b.Inputs.ReferenceGrants) == 1 })
		if got := reason(b); got != "ResolvedRefs" {
			t.Errorf("with the grant: ResolvedRefs reason %q, want ResolvedRefs", got)
		}
		if err := h.c.Delete(h.ctx, grant); err != nil {
			t.Fatal(err)
		}
		b = h.next("the grant's deletion", func(b Batch) bool { return len(b.Inputs.ReferenceGrants) == 0 })
		if !b.Changes.Kinds.Has(KindReferenceGrant) {
			t.Errorf("Kinds = %v, want ReferenceGrant", b.Changes.Kinds)
		}
		if got := reason(b); got != translator.ReasonRefNotPermitted {
			t.Errorf("without the grant: ResolvedRefs reason %q, want %s", got, translator.ReasonRefNotPermitted)
		}
	})
}

func ptr[T any](v T) *T { return &v }

// TestStoreMeshConfigPush checks that spec.push is read live: with a 5 s
// quiet period a change that follows another is held for at least 5 s. Only
// lower bounds are asserted, which a slow machine cannot break.
func TestStoreMeshConfigPush(t *testing.T) {
	h := start(t, func(ctx context.Context, c client.Client) {
		if err := c.Create(ctx, namespace("shop")); err != nil {
			t.Fatal(err)
		}
	})
	h.next("the initial snapshot", func(b Batch) bool { return b.Changes.Full })
	if q, m := h.store.PushDelays(); q != DefaultQuietPeriod || m != DefaultMaxDelay {
		t.Fatalf("PushDelays() = %v, %v without MeshConfig; want the defaults", q, m)
	}

	mc := &v1alpha1.MeshConfig{ObjectMeta: metav1.ObjectMeta{Name: MeshConfigName},
		Spec: v1alpha1.MeshConfigSpec{Push: v1alpha1.PushConfig{QuietPeriod: "5s", MaxDelay: "20s"}}}
	h.create(mc)
	b := h.next("the MeshConfig", func(b Batch) bool { return b.Inputs.MeshConfig != nil })
	if !b.Changes.Kinds.Has(KindMeshConfig) || b.Changes.EndpointsOnly {
		t.Errorf("Changes = %+v", b.Changes)
	}
	if q, m := h.store.PushDelays(); q != 5*time.Second || m != 20*time.Second {
		t.Fatalf("PushDelays() = %v, %v; want 5s, 20s from the MeshConfig", q, m)
	}

	h.create(service("shop", "b"))
	cStart := time.Now()
	h.create(service("shop", "c"))
	b = h.next("Service c", func(b Batch) bool { return hasService(b, "shop", "c") })
	// c's event follows b's within the quiet period, so it is held until 5 s
	// of quiet; b is in the same batch.
	if waited := time.Since(cStart); waited < 4500*time.Millisecond {
		t.Errorf("the batch with c arrived %v after it was created; want at least the 5s quiet period", waited)
	}
	if !hasService(b, "shop", "b") {
		t.Error("b and c, created together, were not coalesced")
	}

	if err := h.c.Delete(h.ctx, mc); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyTrue(t, "defaults restored after the MeshConfig is deleted", func() bool {
		q, m := h.store.PushDelays()
		return q == DefaultQuietPeriod && m == DefaultMaxDelay
	})
}

// TestStoreServiceAccountDeletion: issue 13 — the streams of a deleted
// ServiceAccount stayed open until their connection's age. The store
// watches ServiceAccounts (metadata only) and reports each deletion in
// Changes.ServiceAccountsGone, in a batch with no Kinds (nothing to
// translate); creating one is no change at all.
func TestStoreServiceAccountDeletion(t *testing.T) {
	h := start(t, func(ctx context.Context, c client.Client) {
		if err := c.Create(ctx, namespace("shop")); err != nil {
			t.Fatal(err)
		}
	})
	h.next("the initial snapshot", func(b Batch) bool { return b.Changes.Full })
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "frontend"}}
	h.create(sa)
	if err := h.c.Delete(h.ctx, sa); err != nil {
		t.Fatal(err)
	}
	b := h.next("the deleted ServiceAccount", func(b Batch) bool { return len(b.Changes.ServiceAccountsGone) > 0 })
	if got := b.Changes.ServiceAccountsGone; len(got) != 1 || got[0] != (types.NamespacedName{Namespace: "shop", Name: "frontend"}) {
		t.Errorf("ServiceAccountsGone = %v, want [shop/frontend]", got)
	}
	if b.Changes.Kinds != 0 || b.Changes.Full {
		t.Errorf("Changes = %+v; want no Kinds: a ServiceAccount is no translator input", b.Changes)
	}
}
