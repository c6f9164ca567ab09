package status

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/internal/controller/store"
	"github.com/weftmesh/weft/internal/testing/testenv"
	"github.com/weftmesh/weft/translator"
)

const patience = 60 * time.Second

// fakeSource stands in for the xDS layer.
type fakeSource struct {
	mu sync.Mutex
	d  map[translator.PolicyKey]Distribution
}

func (f *fakeSource) Programmed(k translator.PolicyKey) (Distribution, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.d[k]
	return d, ok
}

func (f *fakeSource) set(k translator.PolicyKey, d Distribution) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.d[k] = d
}

// fakePeers stands in for the other replicas' reports.
type fakePeers struct {
	mu       sync.Mutex
	r        map[translator.PolicyKey][]Report
	unsynced bool // as the collector of a new leader before its first list
}

func (f *fakePeers) PeerReports(k translator.PolicyKey) []Report {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.unsynced {
		return []Report{{}} // what replicas.Collector answers then
	}
	return f.r[k]
}

func (f *fakePeers) Synced() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.unsynced
}

func (f *fakePeers) setSynced(synced bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.unsynced = !synced
}

func (f *fakePeers) set(k translator.PolicyKey, r ...Report) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.r[k] = r
}

// interferingClient makes a real conflict: when armed for a key, it writes
// a foreign condition to that object's status just before the writer's
// own write, which then carries a stale resourceVersion.
type interferingClient struct {
	client.Client
	direct client.Client
	armed  atomic.Pointer[translator.PolicyKey]
}

func (c *interferingClient) Status() client.SubResourceWriter {
	return &interferingStatus{SubResourceWriter: c.Client.Status(), c: c}
}

type interferingStatus struct {
	client.SubResourceWriter
	c *interferingClient
}

func (s *interferingStatus) Update(ctx context.Context, obj client.Object, opts ...client.SubResourceUpdateOption) error {
	if k := s.c.armed.Load(); k != nil && k.Name == obj.GetName() && k.Namespace == obj.GetNamespace() {
		s.c.armed.Store(nil)
		cur := obj.DeepCopyObject().(client.Object)
		if err := s.c.direct.Get(ctx, client.ObjectKeyFromObject(obj), cur); err != nil {
			return err
		}
		st := policyStatus(cur)
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: "ExampleAudit", Status: metav1.ConditionTrue,
			Reason: "Audited", Message: "written by another tool", ObservedGeneration: cur.GetGeneration()})
		if err := s.c.direct.Status().Update(ctx, cur); err != nil {
			return err
		}
	}
	return s.SubResourceWriter.Update(ctx, obj, opts...)
}

const manifests = `
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: checkout, namespace: shop}
spec:
  selector: {app: checkout}
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: checkout-v2, namespace: shop}
spec:
  selector: {app: checkout, version: v2}
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec:
  selector: {app: cart}
  ports: [{name: http, port: 80}]
---
apiVersion: mesh.weft.dev/v1alpha1
kind: TrafficSplit
metadata: {name: checkout, namespace: shop}
spec:
  rootService: {name: checkout}
  backends:
  - {name: checkout, weight: 90}
  - {name: checkout-v2, weight: 10}
---
apiVersion: mesh.weft.dev/v1alpha1
kind: RetryPolicy
metadata: {name: checkout, namespace: shop}
spec:
  targetRefs: [{group: mesh.weft.dev, kind: TrafficSplit, name: checkout}]
---
apiVersion: mesh.weft.dev/v1alpha1
kind: AuthPolicy
metadata: {name: checkout, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Service, name: checkout}]
  action: Allow
  rules: [{from: {namespaces: [shop]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cart, namespace: shop}
spec:
  parentRefs:
  - {name: public, kind: Gateway, group: gateway.networking.k8s.io}
  - {group: "", kind: Service, name: cart, port: 80}
  rules:
  - backendRefs: [{group: "", kind: Service, name: cart, port: 80, weight: 1}]
`

var (
	tsKey    = translator.PolicyKey{Kind: translator.KindTrafficSplit, Namespace: "shop", Name: "checkout"}
	rpKey    = translator.PolicyKey{Kind: translator.KindRetryPolicy, Namespace: "shop", Name: "checkout"}
	apKey    = translator.PolicyKey{Kind: translator.KindAuthPolicy, Namespace: "shop", Name: "checkout"}
	routeKey = translator.PolicyKey{Kind: translator.KindHTTPRoute, Namespace: "shop", Name: "cart"}
	allKeys  = []translator.PolicyKey{tsKey, rpKey, apKey, routeKey}
)

type harness struct {
	t      *testing.T
	ctx    context.Context
	env    *testenv.Env
	c      client.Client
	w      *Writer
	src    *fakeSource
	peers  *fakePeers
	clock  *clocktesting.FakePassiveClock
	interf *interferingClient
}

func start(t *testing.T) *harness {
	env := testenv.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	if _, err := env.Kubectl(ctx, []byte(manifests), "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	// The cache is configured as weft-controller's: stripped objects, so
	// the status writes prove they are safe with partial objects.
	mgr, err := manager.New(env.Config, manager.Options{
		Scheme:                 testenv.Scheme,
		Cache:                  store.CacheOptions(cache.Options{}),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Logger:                 testr.New(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, ctx: ctx, env: env, c: env.Client,
		src:   &fakeSource{d: map[translator.PolicyKey]Distribution{}},
		peers: &fakePeers{r: map[translator.PolicyKey][]Report{}},
		clock: clocktesting.NewFakePassiveClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)),
	}
	h.interf = &interferingClient{Client: mgr.GetClient(), direct: env.Client}
	h.w = newWriter(h.interf, mgr.GetAPIReader(), h.src, testr.New(t).WithName("status"), Options{Clock: h.clock, Peers: h.peers})
	if err := mgr.Add(h.w); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil {
			t.Errorf("manager: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		t.Fatal("cache did not sync")
	}
	return h
}

// translate runs the real translator on the cluster's current objects and
// hands its status to the writer, as the controller does after each
// batch.
func (h *harness) translate() {
	h.t.Helper()
	h.translateExpecting(allKeys...)
}

// translateExpecting is translate where the policies of keys must have a
// status.
func (h *harness) translateExpecting(keys ...translator.PolicyKey) {
	h.t.Helper()
	in := &translator.Inputs{}
	var (
		svcs   corev1.ServiceList
		slices discoveryv1.EndpointSliceList
		tss    v1alpha1.TrafficSplitList
		rps    v1alpha1.RetryPolicyList
		aps    v1alpha1.AuthPolicyList
		btps   v1alpha1.BackendTrafficPolicyList
		rlps   v1alpha1.RateLimitPolicyList
		pods   corev1.PodList
		routes gatewayv1.HTTPRouteList
		grpcs  gatewayv1.GRPCRouteList
		nss    corev1.NamespaceList
	)
	for _, l := range []client.ObjectList{&svcs, &slices, &tss, &rps, &aps, &btps, &rlps, &pods, &routes, &grpcs, &nss} {
		if err := h.c.List(h.ctx, l); err != nil {
			h.t.Fatal(err)
		}
	}
	for i := range svcs.Items {
		in.Services = append(in.Services, &svcs.Items[i])
	}
	for i := range tss.Items {
		in.TrafficSplits = append(in.TrafficSplits, &tss.Items[i])
	}
	for i := range rps.Items {
		in.RetryPolicies = append(in.RetryPolicies, &rps.Items[i])
	}
	for i := range aps.Items {
		in.AuthPolicies = append(in.AuthPolicies, &aps.Items[i])
	}
	for i := range btps.Items {
		in.BackendTrafficPolicies = append(in.BackendTrafficPolicies, &btps.Items[i])
	}
	for i := range rlps.Items {
		in.RateLimitPolicies = append(in.RateLimitPolicies, &rlps.Items[i])
	}
	for i := range pods.Items {
		in.Pods = append(in.Pods, &pods.Items[i])
	}
	for i := range routes.Items {
		in.HTTPRoutes = append(in.HTTPRoutes, &routes.Items[i])
	}
	for i := range grpcs.Items {
		in.GRPCRoutes = append(in.GRPCRoutes, &grpcs.Items[i])
	}
	for i := range nss.Items {
		in.Namespaces = append(in.Namespaces, &nss.Items[i])
	}
	out := translator.Translate(in)
	for _, k := range keys {
		if _, ok := out.Status[k]; !ok {
			h.t.Fatalf("the translator reported no status for %v: %v", k, out.Status)
		}
	}
	h.w.SetDesired(out.Status)
}

func (h *harness) eventually(what string, cond func() bool) {
	h.t.Helper()
	for deadline := time.Now().Add(patience); time.Now().Before(deadline); time.Sleep(25 * time.Millisecond) {
		if cond() {
			return
		}
	}
	h.t.Fatalf("%s: not within %v", what, patience)
}

func (h *harness) get(k translator.PolicyKey) client.Object {
	h.t.Helper()
	obj := newObject(k.Kind)
	if err := h.c.Get(h.ctx, client.ObjectKey{Namespace: k.Namespace, Name: k.Name}, obj); err != nil {
		h.t.Fatal(err)
	}
	return obj
}

// conditions returns the object's conditions: the top-level ones, or for
// an HTTPRoute or GRPCRoute those of weft's parent entry.
func (h *harness) conditions(k translator.PolicyKey) []metav1.Condition {
	obj := h.get(k)
	var parents []gatewayv1.RouteParentStatus
	switch r := obj.(type) {
	case *gatewayv1.HTTPRoute:
		parents = r.Status.Parents
	case *gatewayv1.GRPCRoute:
		parents = r.Status.Parents
	default:
		return policyStatus(obj).Conditions
	}
	for _, p := range parents {
		if p.ControllerName == ControllerName {
			return p.Conditions
		}
	}
	return nil
}

func (h *harness) condition(k translator.PolicyKey, typ string) *metav1.Condition {
	return meta.FindStatusCondition(h.conditions(k), typ)
}

func TestWriter(t *testing.T) {
	h := start(t)

	// Another controller (a Gateway implementation) owns the route's
	// Gateway parent and has written its status first.
	route := h.get(routeKey).(*gatewayv1.HTTPRoute)
	theirs := gatewayv1.RouteParentStatus{
		ParentRef:      route.Spec.ParentRefs[0],
		ControllerName: "example.com/gateway-controller",
		Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted",
			Message: "theirs", ObservedGeneration: 1, LastTransitionTime: metav1.NewTime(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))}},
	}
	route.Status.Parents = []gatewayv1.RouteParentStatus{theirs}
	if err := h.c.Status().Update(h.ctx, route); err != nil {
		t.Fatal(err)
	}
	t0 := metav1.NewTime(h.clock.Now())

	h.translate()

	t.Run("status appears on each kind", func(t *testing.T) {
		for _, k := range allKeys {
			h.eventually("conditions on "+k.Kind, func() bool { return h.condition(k, v1alpha1.ConditionProgrammed) != nil })
			for _, typ := range []string{v1alpha1.ConditionAccepted, v1alpha1.ConditionResolvedRefs} {
				c := h.condition(k, typ)
				if c == nil || c.Status != metav1.ConditionTrue || c.ObservedGeneration != 1 || !c.LastTransitionTime.Equal(&t0) {
					t.Errorf("%s %s = %+v, want True for generation 1 at %v", k.Kind, typ, c, t0)
				}
			}
			p := h.condition(k, v1alpha1.ConditionProgrammed)
			if p.Status != metav1.ConditionUnknown || p.Reason != v1alpha1.ReasonPending {
				t.Errorf("%s Programmed = %+v, want Unknown/Pending before the xDS layer says anything", k.Kind, p)
			}
		}
		for _, k := range []translator.PolicyKey{tsKey, rpKey, apKey} {
			if g := policyStatus(h.get(k)).ObservedGeneration; g != 1 {
				t.Errorf("%s status.observedGeneration = %d, want 1", k.Kind, g)
			}
		}
		r := h.get(routeKey).(*gatewayv1.HTTPRoute)
		if len(r.Status.Parents) != 2 {
			t.Fatalf("route parents = %+v, want theirs and weft's", r.Status.Parents)
		}
		if got := r.Status.Parents[0]; got.ControllerName != theirs.ControllerName || got.Conditions[0].Message != "theirs" {
			t.Errorf("the other controller's parent entry changed: %+v", got)
		}
		ours := r.Status.Parents[1]
		if ours.ControllerName != ControllerName || ours.ParentRef.Name != "cart" || ours.ParentRef.Kind == nil || *ours.ParentRef.Kind != "Service" {
			t.Errorf("weft's parent entry = %+v", ours)
		}
	})

	t.Run("unchanged status is not written", func(t *testing.T) {
		rvs := map[translator.PolicyKey]string{}
		for _, k := range allKeys {
			rvs[k] = h.get(k).GetResourceVersion()
		}
		skipped := h.w.Stats().Skipped.Load()
		h.clock.SetTime(h.clock.Now().Add(time.Minute)) // would show in any new lastTransitionTime
		h.translate()
		h.w.ProgrammedChanged(allKeys...)
		h.eventually("four syncs skipped", func() bool { return h.w.Stats().Skipped.Load() >= skipped+4 })
		for _, k := range allKeys {
			if rv := h.get(k).GetResourceVersion(); rv != rvs[k] {
				t.Errorf("%s was written (resourceVersion %s -> %s) though nothing changed", k.Kind, rvs[k], rv)
			}
		}
	})

	t.Run("a Programmed change updates only that condition", func(t *testing.T) {
		h.clock.SetTime(h.clock.Now().Add(time.Hour))
		t1 := metav1.NewTime(h.clock.Now())
		h.src.set(tsKey, Distribution{Generation: 1, Proxies: 3, Acked: 3})
		h.w.ProgrammedChanged(tsKey)
		h.eventually("TrafficSplit Programmed=True", func() bool {
			c := h.condition(tsKey, v1alpha1.ConditionProgrammed)
			return c.Status == metav1.ConditionTrue
		})
		p := h.condition(tsKey, v1alpha1.ConditionProgrammed)
		if p.Reason != v1alpha1.ReasonProgrammed || !p.LastTransitionTime.Equal(&t1) {
			t.Errorf("Programmed = %+v, want reason Programmed at %v", p, t1)
		}
		for _, typ := range []string{v1alpha1.ConditionAccepted, v1alpha1.ConditionResolvedRefs} {
			if c := h.condition(tsKey, typ); !c.LastTransitionTime.Equal(&t0) {
				t.Errorf("%s lastTransitionTime moved to %v, want %v", typ, c.LastTransitionTime, t0)
			}
		}
	})

	t.Run("a NACK is ProxyRejected with the proxy count and error", func(t *testing.T) {
		h.src.set(rpKey, Distribution{Generation: 1, Proxies: 3, Acked: 2, Rejected: 1,
			Error: "proxy shop/checkout-0 (sidecar): route: invalid retry_on"})
		h.w.ProgrammedChanged(rpKey)
		h.eventually("RetryPolicy Programmed=False", func() bool {
			return h.condition(rpKey, v1alpha1.ConditionProgrammed).Status == metav1.ConditionFalse
		})
		p := h.condition(rpKey, v1alpha1.ConditionProgrammed)
		if p.Reason != v1alpha1.ReasonProxyRejected || !strings.Contains(p.Message, "1 of 3 proxies") || !strings.Contains(p.Message, "invalid retry_on") {
			t.Errorf("Programmed = %+v", p)
		}
	})

	t.Run("other replicas' proxies count: pending holds, a rejection shows", func(t *testing.T) {
		// This replica's 3 proxies ACKed generation 1 (above); a peer's
		// 2 have not all.
		h.peers.set(tsKey, Report{Replica: "b", Known: true, Distribution: Distribution{Generation: 1, Proxies: 2, Acked: 1}})
		h.w.ProgrammedChanged(tsKey)
		h.eventually("TrafficSplit pending on the peer", func() bool {
			c := h.condition(tsKey, v1alpha1.ConditionProgrammed)
			return c.Status == metav1.ConditionUnknown && strings.Contains(c.Message, "Waiting for 5 proxies")
		})
		h.peers.set(tsKey, Report{Replica: "b", Known: true, Distribution: Distribution{Generation: 1, Proxies: 2, Acked: 1, Rejected: 1, Error: "route: weight 0"}})
		h.w.ProgrammedChanged(tsKey)
		h.eventually("the peer's rejection shows", func() bool {
			c := h.condition(tsKey, v1alpha1.ConditionProgrammed)
			return c.Status == metav1.ConditionFalse && c.Reason == v1alpha1.ReasonProxyRejected &&
				strings.Contains(c.Message, "1 of 5 proxies") && strings.Contains(c.Message, "route: weight 0")
		})
		// The peer leaves: Resync re-evaluates every policy.
		h.peers.set(tsKey)
		h.w.Resync()
		h.eventually("Programmed from this replica's proxies again", func() bool {
			c := h.condition(tsKey, v1alpha1.ConditionProgrammed)
			return c.Status == metav1.ConditionTrue && strings.Contains(c.Message, "All 3 proxies")
		})
	})

	t.Run("a new leader writes nothing before it has read the other replicas' reports", func(t *testing.T) {
		// Issue 13's leader kill (test/e2e TestFaultLeaderKilled): the
		// survivor, elected, wrote Programmed=Unknown "Waiting for the
		// configuration of generation 1" over every policy the dead
		// leader had called Programmed, then True again 0.1 s later,
		// because its collector had not listed the reports yet.
		if c := h.condition(tsKey, v1alpha1.ConditionProgrammed); c.Status != metav1.ConditionTrue {
			t.Fatalf("Programmed = %+v before the test, want True", c)
		}
		rv := h.get(tsKey).GetResourceVersion()
		skipped := h.w.Stats().Skipped.Load()
		h.peers.setSynced(false)
		h.w.Resync()
		h.eventually("syncs skipped while the reports are unread", func() bool { return h.w.Stats().Skipped.Load() >= skipped+4 })
		if c := h.condition(tsKey, v1alpha1.ConditionProgrammed); c.Status != metav1.ConditionTrue || h.get(tsKey).GetResourceVersion() != rv {
			t.Fatalf("written before the reports were read: Programmed = %s %s (%s)", c.Status, c.Reason, c.Message)
		}
		// Read: the collector resyncs every policy, which stays as it was.
		skipped = h.w.Stats().Skipped.Load()
		h.peers.setSynced(true)
		h.w.Resync()
		h.eventually("syncs after the reports were read", func() bool { return h.w.Stats().Skipped.Load() >= skipped+4 })
		if got := h.get(tsKey).GetResourceVersion(); got != rv {
			t.Errorf("rewritten (resourceVersion %s -> %s) though nothing changed", rv, got)
		}
	})

	t.Run("a conflict is re-read and retried, keeping others' conditions", func(t *testing.T) {
		conflicts := h.w.Stats().Conflicts.Load()
		h.interf.armed.Store(&apKey)
		h.src.set(apKey, Distribution{Generation: 1, Proxies: 1, Acked: 1})
		h.w.ProgrammedChanged(apKey)
		h.eventually("AuthPolicy Programmed=True", func() bool {
			return h.condition(apKey, v1alpha1.ConditionProgrammed).Status == metav1.ConditionTrue
		})
		if h.w.Stats().Conflicts.Load() <= conflicts {
			t.Error("no conflict counted")
		}
		if h.condition(apKey, "ExampleAudit") == nil {
			t.Error("the other tool's condition was lost in the retry")
		}
	})

	t.Run("kubectl wait is a rollout gate for the current generation", func(t *testing.T) {
		// A new spec: generation 2. Status still describes generation 1.
		ts := h.get(tsKey).(*v1alpha1.TrafficSplit)
		w := int32(50)
		ts.Spec.Backends[1].Weight = &w
		if err := h.c.Update(h.ctx, ts); err != nil {
			t.Fatal(err)
		}
		if ts.Generation != 2 {
			t.Fatalf("generation = %d, want 2", ts.Generation)
		}

		waited := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(h.ctx, 2*patience)
			defer cancel()
			_, err := h.env.Kubectl(ctx, nil, "wait", "-n", "shop", "trafficsplit/checkout", "--for=condition=Programmed", "--timeout=120s")
			waited <- err
		}()

		// The xDS layer reports generation 2 before the writer has the
		// translation of it: status must not claim anything for generation
		// 2 from the old conditions (stale), so kubectl keeps waiting.
		stale := h.w.Stats().Stale.Load()
		rv := h.get(tsKey).GetResourceVersion()
		h.src.set(tsKey, Distribution{Generation: 2, Proxies: 3, Acked: 3})
		h.w.ProgrammedChanged(tsKey)
		h.eventually("stale sync skipped", func() bool { return h.w.Stats().Stale.Load() > stale })
		if got := h.get(tsKey).GetResourceVersion(); got != rv {
			t.Errorf("written with generation-1 conditions after the spec moved to generation 2")
		}
		select {
		case err := <-waited:
			t.Fatalf("kubectl wait returned (%v) while Programmed described generation 1", err)
		case <-time.After(2 * time.Second):
		}

		// Now the translation of generation 2 arrives, and the proxies have
		// ACKed it.
		h.translate()
		select {
		case err := <-waited:
			if err != nil {
				t.Fatalf("kubectl wait: %v", err)
			}
		case <-time.After(2 * patience):
			t.Fatal("kubectl wait did not return after Programmed=True for generation 2")
		}
		p := h.condition(tsKey, v1alpha1.ConditionProgrammed)
		if p.Status != metav1.ConditionTrue || p.ObservedGeneration != 2 {
			t.Errorf("Programmed = %+v, want True for generation 2", p)
		}
		if g := policyStatus(h.get(tsKey)).ObservedGeneration; g != 2 {
			t.Errorf("status.observedGeneration = %d, want 2", g)
		}
	})

	t.Run("a route that leaves the mesh loses only weft's parent entry", func(t *testing.T) {
		r := h.get(routeKey).(*gatewayv1.HTTPRoute)
		r.Spec.ParentRefs = r.Spec.ParentRefs[:1] // only the Gateway
		if err := h.c.Update(h.ctx, r); err != nil {
			t.Fatal(err)
		}
		h.translateWithout(routeKey)
		h.eventually("weft's parent entry removed", func() bool {
			return len(h.get(routeKey).(*gatewayv1.HTTPRoute).Status.Parents) == 1
		})
		if p := h.get(routeKey).(*gatewayv1.HTTPRoute).Status.Parents[0]; p.ControllerName != theirs.ControllerName {
			t.Errorf("remaining parent = %+v, want the other controller's", p)
		}
	})
}

// translateWithout is translate for when key is expected to have left the
// translator's output.
func (h *harness) translateWithout(key translator.PolicyKey) {
	h.t.Helper()
	var routes gatewayv1.HTTPRouteList
	var tss v1alpha1.TrafficSplitList
	var svcs corev1.ServiceList
	for _, l := range []client.ObjectList{&routes, &tss, &svcs} {
		if err := h.c.List(h.ctx, l); err != nil {
			h.t.Fatal(err)
		}
	}
	in := &translator.Inputs{}
	for i := range svcs.Items {
		in.Services = append(in.Services, &svcs.Items[i])
	}
	for i := range routes.Items {
		in.HTTPRoutes = append(in.HTTPRoutes, &routes.Items[i])
	}
	out := translator.Translate(in)
	if _, ok := out.Status[key]; ok {
		h.t.Fatalf("the translator still reports %v", key)
	}
	h.w.SetDesired(out.Status)
}

// TestWriterGRPCRoute: a GAMMA GRPCRoute's status is written like an
// HTTPRoute's, on weft's entry of status.parents (docs/design/175). A
// GRPCRoute on the port the older HTTPRoute shop/cart routes is
// Accepted=False, Conflicted, naming it; once the HTTPRoute is deleted,
// the GRPCRoute owns the port: Accepted=True. Deleting the GRPCRoute's
// Service parent takes weft's entry away.
func TestWriterGRPCRoute(t *testing.T) {
	h := start(t)
	grpcKey := translator.PolicyKey{Kind: translator.KindGRPCRoute, Namespace: "shop", Name: "cart-grpc"}
	if _, err := h.env.Kubectl(h.ctx, []byte(`
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: cart-grpc, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: cart, port: 80}]
  rules:
  - matches: [{method: {service: shop.Cart, method: Add}}]
    backendRefs: [{name: cart, port: 80}]
`), "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	h.translate()
	h.eventually("GRPCRoute Accepted=False", func() bool {
		c := h.condition(grpcKey, v1alpha1.ConditionAccepted)
		return c != nil && c.Status == metav1.ConditionFalse
	})
	c := h.condition(grpcKey, v1alpha1.ConditionAccepted)
	if c.Reason != v1alpha1.ReasonConflicted || !strings.Contains(c.Message, "HTTPRoute shop/cart") {
		t.Errorf("GRPCRoute Accepted = %+v, want Conflicted naming HTTPRoute shop/cart", c)
	}
	h.eventually("HTTPRoute Accepted=True (it is the older)", func() bool {
		a := h.condition(routeKey, v1alpha1.ConditionAccepted)
		return a != nil && a.Status == metav1.ConditionTrue
	})
	r := h.get(grpcKey).(*gatewayv1.GRPCRoute)
	if len(r.Status.Parents) != 1 || r.Status.Parents[0].ParentRef.Name != "cart" || r.Status.Parents[0].ControllerName != ControllerName {
		t.Errorf("GRPCRoute parents = %+v, want weft's entry for Service cart", r.Status.Parents)
	}

	if err := h.c.Delete(h.ctx, &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cart"}}); err != nil {
		t.Fatal(err)
	}
	h.translateExpecting(tsKey, rpKey, apKey, grpcKey)
	h.eventually("GRPCRoute Accepted=True once the HTTPRoute is gone", func() bool {
		c := h.condition(grpcKey, v1alpha1.ConditionAccepted)
		return c != nil && c.Status == metav1.ConditionTrue
	})
	for _, typ := range []string{v1alpha1.ConditionResolvedRefs, v1alpha1.ConditionProgrammed} {
		if h.condition(grpcKey, typ) == nil {
			t.Errorf("GRPCRoute has no %s condition", typ)
		}
	}
}
