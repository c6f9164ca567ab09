package injectcheck_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/controller/injectcheck"
	"github.com/weftmesh/weft/internal/controller/store"
	"github.com/weftmesh/weft/internal/testing/testenv"
	"github.com/weftmesh/weft/internal/testing/testkit"
	"github.com/weftmesh/weft/webhook"
)

// gauge reads weft_pods_missing_sidecar{namespace=ns} from controller-runtime's
// registry; ok is false when the series does not exist.
func gauge(t *testing.T, ns string) (v float64, ok bool) {
	t.Helper()
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "weft_pods_missing_sidecar" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "namespace" && l.GetValue() == ns {
					return m.GetGauge().GetValue(), true
				}
			}
		}
	}
	return 0, false
}

// TestChecker runs the checker as weft-controller (config/rbac applied,
// ServiceAccount impersonated) on the controller's trimmed Pod cache, with
// no injection webhook registered: every pod is admitted unseen by it.
func TestChecker(t *testing.T) {
	env := testenv.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := env.Client
	for _, ns := range []*corev1.Namespace{
		{ObjectMeta: metav1.ObjectMeta{Name: "weft-system"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{dataplane.LabelInject: dataplane.InjectEnabled}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "plain"}},
	} {
		if err := c.Create(ctx, ns); err != nil {
			t.Fatal(err)
		}
	}
	cfg := env.AsController(t)
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	store.MustAddToScheme(scheme)
	mgr, err := manager.New(cfg, manager.Options{
		Scheme:                 scheme,
		Logger:                 logr.Discard(),
		Cache:                  store.CacheOptions(cache.Options{}),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := mgr.Add(injectcheck.New(mgr, logr.Discard())); err != nil {
		t.Fatal(err)
	}
	mgrCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mgrCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})

	app := []corev1.Container{{Name: "app", Image: "app"}}
	// A Deployment's pod (its ReplicaSet need not exist: no garbage
	// collector runs here), admitted while the webhook was away.
	missed := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-5f6d7-x2x9q", Namespace: "shop",
		Labels: map[string]string{"app": "web", "pod-template-hash": "5f6d7"},
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-5f6d7",
			UID: "0b3c1f6e-3c55-4c1e-9a53-7a8e2d3c9f01", Controller: ptr.To(true)}},
	}, Spec: corev1.PodSpec{Containers: app}}
	meshed := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "meshed", Namespace: "shop",
		Annotations: map[string]string{dataplane.AnnotationInjectStatus: webhook.StatusInjected}},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "weft-proxy", Image: "envoy", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways)}},
			Containers:     app,
		}}
	plain := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "plain", Namespace: "plain"}, Spec: corev1.PodSpec{Containers: app}}
	for _, p := range []*corev1.Pod{meshed, plain, missed} {
		if err := c.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}

	condition := func(p *corev1.Pod) (*corev1.PodCondition, error) {
		got := &corev1.Pod{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(p), got); err != nil {
			return nil, err
		}
		for i, cond := range got.Status.Conditions {
			if cond.Type == injectcheck.ConditionSidecarInjected {
				return &got.Status.Conditions[i], nil
			}
		}
		return nil, fmt.Errorf("pod %s/%s has no %s condition", p.Namespace, p.Name, injectcheck.ConditionSidecarInjected)
	}
	events := func(p *corev1.Pod) []eventsv1.Event {
		var list eventsv1.EventList
		if err := c.List(ctx, &list, client.InNamespace(p.Namespace)); err != nil {
			t.Fatal(err)
		}
		var out []eventsv1.Event
		for _, e := range list.Items {
			if e.Regarding.Kind == "Pod" && e.Regarding.Name == p.Name && e.Reason == injectcheck.EventReason {
				out = append(out, e)
			}
		}
		return out
	}
	const hint = "kubectl rollout restart deployment/web -n shop"

	var first corev1.PodCondition
	t.Run("a pod that missed the webhook is flagged", func(t *testing.T) {
		testkit.Eventually(t, "the condition", func() error {
			cond, err := condition(missed)
			if err == nil {
				first = *cond
			}
			return err
		})
		if first.Status != corev1.ConditionFalse || first.Reason != injectcheck.ReasonWebhookUnavailable || !strings.Contains(first.Message, hint) {
			t.Errorf("condition = %+v, want False/%s naming %q", first, injectcheck.ReasonWebhookUnavailable, hint)
		}
		testkit.Eventually(t, "the Event", func() error {
			if len(events(missed)) == 0 {
				return fmt.Errorf("no %s Event on the pod", injectcheck.EventReason)
			}
			return nil
		})
		e := events(missed)[0]
		if e.Type != corev1.EventTypeWarning || !strings.Contains(e.Note, hint) || e.ReportingController != injectcheck.ControllerName {
			t.Errorf("Event = type %s, note %q, controller %q", e.Type, e.Note, e.ReportingController)
		}
		testkit.Eventually(t, "the gauge", func() error {
			if v, ok := gauge(t, "shop"); v != 1 || !ok {
				return fmt.Errorf("weft_pods_missing_sidecar{namespace=shop} = %v (present %v), want 1", v, ok)
			}
			return nil
		})
	})

	t.Run("the injected pod and the unlabelled namespace are left alone", func(t *testing.T) {
		for _, p := range []*corev1.Pod{meshed, plain} {
			if _, err := condition(p); err == nil {
				t.Errorf("%s/%s was flagged", p.Namespace, p.Name)
			}
			if n := len(events(p)); n != 0 {
				t.Errorf("%s/%s got %d Events", p.Namespace, p.Name, n)
			}
		}
		if _, ok := gauge(t, "plain"); ok {
			t.Error("the gauge has a series for the unlabelled namespace")
		}
		if v, _ := gauge(t, "shop"); v != 1 {
			t.Errorf("gauge for shop = %v, want 1 (the injected pod is not counted)", v)
		}
	})

	t.Run("flagged once", func(t *testing.T) {
		// A change to the pod makes the checker look again.
		got := &corev1.Pod{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(missed), got); err != nil {
			t.Fatal(err)
		}
		got.Labels["touched"] = "yes"
		if err := c.Update(ctx, got); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		cond, err := condition(missed)
		if err != nil {
			t.Fatal(err)
		}
		if !cond.LastTransitionTime.Equal(&first.LastTransitionTime) || cond.Message != first.Message {
			t.Errorf("condition rewritten: %+v, was %+v", cond, first)
		}
		if n := len(events(missed)); n != 1 {
			t.Errorf("%d Events, want 1", n)
		}
		if v, _ := gauge(t, "shop"); v != 1 {
			t.Errorf("gauge for shop = %v, want 1", v)
		}
	})

	t.Run("a deleted pod leaves the gauge", func(t *testing.T) {
		if err := c.Delete(ctx, missed, client.GracePeriodSeconds(0)); err != nil {
			t.Fatal(err)
		}
		testkit.Eventually(t, "the gauge series removed", func() error {
			if v, ok := gauge(t, "shop"); ok {
				return fmt.Errorf("weft_pods_missing_sidecar{namespace=shop} = %v, want no series", v)
			}
			return nil
		})
	})
}
