// Package injectcheck flags pods that came up outside the mesh because the
// injection webhook did not see them: pods in a namespace labelled
// weft.dev/inject=enabled with no weft-proxy container and no
// weft.dev/inject-status annotation (the webhook writes one on every pod it
// is asked about), not opted out, not hostNetwork, not static, not finished.
// Such a pod was admitted while the webhook was unreachable (failurePolicy
// Fail normally prevents that, but a webhook configuration that was deleted,
// not yet applied, or edited to Ignore lets pods through) or before weft was
// installed.
//
// On the leader, each such pod gets, once (the condition is the marker, so a
// new leader does not repeat them):
//
//   - a Warning Event, reason SidecarMissing, telling the user to restart it
//     (naming `kubectl rollout restart` for its workload) once the webhook is
//     back;
//   - the pod condition weft.dev/SidecarInjected=False, reason
//     WebhookUnavailable, written with a strategic merge patch to the status
//     subresource (weft's Pod cache is trimmed, so an Update would wipe the
//     pod);
//
// and it is counted in the gauge weft_pods_missing_sidecar{namespace} until
// it is deleted, finishes, gains the sidecar, or its namespace stops being
// enabled.
//
// weft's cache keeps only part of a Pod (store.TransformPod): no
// hostNetwork, phase, conditions or owner references. Candidates are picked
// from the cache with Check, then the whole pod is read from the API server
// (mgr.GetAPIReader, no extra informer) and checked again before acting;
// that read repeats on each change of a pod that is or looks like a
// candidate, which are few.
package injectcheck

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
	"sigs.k8s.io/controller-runtime/pkg/source"
)

const (
	// ConditionSidecarInjected is the pod condition weft sets (False) on a
	// pod that missed injection.
	ConditionSidecarInjected corev1.PodConditionType = "weft.dev/SidecarInjected"
	// ReasonWebhookUnavailable is the condition's reason.
	ReasonWebhookUnavailable = "WebhookUnavailable"
	// EventReason is the Warning Event's reason.
	EventReason = "SidecarMissing"
	// ControllerName is the Events' reporting controller.
	ControllerName = "weft-injectcheck"
)

var missingGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Name: "weft_pods_missing_sidecar",
	Help: "Pods in injection-enabled namespaces that run without the weft-proxy sidecar because the injection webhook did not see them (restart them once the webhook is back). Exported by the leader.",
}, []string{"namespace"})

func init() { ctrlmetrics.Registry.MustRegister(missingGauge) }

// Checker is the leader's runnable.
type Checker struct {
	mgr    manager.Manager
	reader client.Reader // uncached: whole pods
	events recorder.EventRecorder
	log    logr.Logger

	mu      sync.Mutex
	tracked map[types.NamespacedName]struct{}
	counts  map[string]int
}

// New returns the checker; add it to the manager.
func New(mgr manager.Manager, log logr.Logger) *Checker {
	return &Checker{
		mgr:     mgr,
		reader:  mgr.GetAPIReader(),
		events:  mgr.GetEventRecorder(ControllerName),
		log:     log,
		tracked: map[types.NamespacedName]struct{}{},
		counts:  map[string]int{},
	}
}

// NeedLeaderElection: one writer of the Events and conditions.
func (c *Checker) NeedLeaderElection() bool { return true }

// Start watches Pods and Namespaces until ctx is done.
func (c *Checker) Start(ctx context.Context) error {
	ctl, err := controller.NewTypedUnmanaged[reconcile.Request](ControllerName, controller.TypedOptions[reconcile.Request]{
		Reconciler:         c,
		SkipNameValidation: ptr.To(true),
		LogConstructor:     func(*reconcile.Request) logr.Logger { return c.log },
	})
	if err != nil {
		return err
	}
	cache := c.mgr.GetCache()
	for _, src := range []source.TypedSource[reconcile.Request]{
		// ctx is this leader term's: controller-runtime keeps a source's
		// handler on the shared informer after its controller stopped, so
		// a past term's handler must cost nothing (docs/design/077).
		source.Kind(cache, &corev1.Pod{}, handler.TypedEnqueueRequestsFromMapFunc(func(ctx context.Context, pod *corev1.Pod) []reconcile.Request {
			if ctx.Err() == nil && c.wants(ctx, pod, nil) {
				return []reconcile.Request{{NamespacedName: client.ObjectKeyFromObject(pod)}}
			}
			return nil
		})),
		source.Kind(cache, &corev1.Namespace{}, handler.TypedEnqueueRequestsFromMapFunc(c.namespacePods)),
	} {
		if err := ctl.Watch(src); err != nil {
			return err
		}
	}
	c.log.Info("flagging pods that missed sidecar injection")
	return ctl.Start(ctx)
}

// wants says whether a cached pod needs a look: it is counted now, or it
// looks like a candidate. ns nil: read it from the cache.
func (c *Checker) wants(ctx context.Context, pod *corev1.Pod, ns *corev1.Namespace) bool {
	if c.isTracked(client.ObjectKeyFromObject(pod)) {
		return true
	}
	if ns == nil {
		ns = &corev1.Namespace{}
		if err := c.mgr.GetCache().Get(ctx, client.ObjectKey{Name: pod.Namespace}, ns); err != nil {
			ns = nil
		}
	}
	return Check(pod, ns) == Missing
}

// namespacePods enqueues a namespace's pods that need a look when its
// labels change (enabled: candidates appear; disabled: counted pods leave).
func (c *Checker) namespacePods(ctx context.Context, ns *corev1.Namespace) []reconcile.Request {
	if ctx.Err() != nil {
		return nil // a past leader term's handler
	}
	var pods corev1.PodList
	if err := c.mgr.GetCache().List(ctx, &pods, client.InNamespace(ns.Name)); err != nil {
		c.log.Error(err, "listing pods", "namespace", ns.Name)
		return nil
	}
	var out []reconcile.Request
	for i := range pods.Items {
		if c.wants(ctx, &pods.Items[i], ns) {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&pods.Items[i])})
		}
	}
	return out
}

// Reconcile checks one pod and flags it if it missed injection.
func (c *Checker) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	cache := c.mgr.GetCache()
	pod := &corev1.Pod{}
	if err := cache.Get(ctx, req.NamespacedName, pod); err != nil {
		if apierrors.IsNotFound(err) {
			c.untrack(req.NamespacedName)
		}
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	ns := &corev1.Namespace{}
	if err := cache.Get(ctx, client.ObjectKey{Name: pod.Namespace}, ns); err != nil {
		if !apierrors.IsNotFound(err) {
			return reconcile.Result{}, err
		}
		ns = nil
	}
	if Check(pod, ns) != Missing {
		c.untrack(req.NamespacedName)
		return reconcile.Result{}, nil
	}
	// The cached pod is trimmed: read the whole one for hostNetwork, phase,
	// conditions and owners.
	full := &corev1.Pod{}
	if err := c.reader.Get(ctx, req.NamespacedName, full); err != nil {
		if apierrors.IsNotFound(err) {
			c.untrack(req.NamespacedName)
		}
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if Check(full, ns) != Missing {
		c.untrack(req.NamespacedName)
		return reconcile.Result{}, nil
	}
	c.track(req.NamespacedName)
	if flagged(full) {
		return reconcile.Result{}, nil
	}
	msg := Message(full)
	if err := c.setCondition(ctx, full, msg); err != nil {
		if apierrors.IsNotFound(err) {
			c.untrack(req.NamespacedName)
			return reconcile.Result{}, nil
		}
		if apierrors.IsConflict(err) || apierrors.IsInvalid(err) {
			// Replaced by a pod of the same name (uid precondition).
			return reconcile.Result{Requeue: true}, nil
		}
		return reconcile.Result{}, err
	}
	// After the condition: a failure above retries without repeating the
	// Event; the condition marks the pod as flagged.
	c.events.Eventf(full, nil, corev1.EventTypeWarning, EventReason, "CheckInjection", "%s", msg)
	c.log.Info("pod runs without the sidecar: the injection webhook did not see it", "pod", req.NamespacedName.String())
	return reconcile.Result{}, nil
}

// setCondition adds the condition with a strategic merge patch of the status
// subresource (conditions merge by type). metadata.uid makes the patch fail
// on a pod recreated under the same name.
func (c *Checker) setCondition(ctx context.Context, pod *corev1.Pod, msg string) error {
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"uid": pod.UID},
		"status": map[string]any{"conditions": []corev1.PodCondition{{
			Type:               ConditionSidecarInjected,
			Status:             corev1.ConditionFalse,
			Reason:             ReasonWebhookUnavailable,
			Message:            msg,
			LastTransitionTime: metav1.NewTime(time.Now()),
		}}},
	})
	if err != nil {
		return err
	}
	target := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: pod.Name}}
	return c.mgr.GetClient().Status().Patch(ctx, target, client.RawPatch(types.StrategicMergePatchType, patch))
}

func (c *Checker) isTracked(key types.NamespacedName) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.tracked[key]
	return ok
}

func (c *Checker) track(key types.NamespacedName) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.tracked[key]; ok {
		return
	}
	c.tracked[key] = struct{}{}
	c.counts[key.Namespace]++
	missingGauge.WithLabelValues(key.Namespace).Set(float64(c.counts[key.Namespace]))
}

func (c *Checker) untrack(key types.NamespacedName) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.tracked[key]; !ok {
		return
	}
	delete(c.tracked, key)
	c.counts[key.Namespace]--
	if n := c.counts[key.Namespace]; n > 0 {
		missingGauge.WithLabelValues(key.Namespace).Set(float64(n))
		return
	}
	delete(c.counts, key.Namespace)
	missingGauge.DeleteLabelValues(key.Namespace)
}
