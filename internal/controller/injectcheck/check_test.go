package injectcheck

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/weftmesh/weft/internal/controller/store"
)

func namespace(name string, enabled bool) *corev1.Namespace {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if enabled {
		ns.Labels = map[string]string{"weft.dev/inject": "enabled"}
	}
	return ns
}

func pod(edit ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-7d9f-abcde", Namespace: "shop", Labels: map[string]string{"app": "web"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
	for _, e := range edit {
		e(p)
	}
	return p
}

func annotate(k, v string) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		p.Annotations[k] = v
	}
}

func TestCheck(t *testing.T) {
	shop := namespace("shop", true)
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		ns   *corev1.Namespace
		want Result
	}{
		{"labelled namespace, never seen by the webhook", pod(), shop, Missing},
		{"unlabelled namespace", pod(), namespace("shop", false), NamespaceNotEnabled},
		{"namespace labelled something else", pod(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"weft.dev/inject": "disabled"}}}, NamespaceNotEnabled},
		{"namespace unknown", pod(), nil, NamespaceNotEnabled},
		{"kube-system, even labelled", pod(func(p *corev1.Pod) { p.Namespace = "kube-system" }), namespace("kube-system", true), SystemNamespace},
		{"weft-system", pod(func(p *corev1.Pod) { p.Namespace = "weft-system" }), namespace("weft-system", true), SystemNamespace},
		{"native sidecar", pod(func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "weft-init"}, {Name: "weft-proxy", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways)}}
		}, annotate("weft.dev/inject-status", "injected")), shop, Injected},
		{"legacy sidecar", pod(func(p *corev1.Pod) {
			p.Spec.Containers = append([]corev1.Container{{Name: "weft-proxy"}}, p.Spec.Containers...)
		}), shop, Injected},
		{"skipped by the webhook", pod(annotate("weft.dev/inject-status", "skipped: HostNetwork")), shop, SeenByWebhook},
		{"injected annotation but no proxy (edited away)", pod(annotate("weft.dev/inject-status", "injected")), shop, SeenByWebhook},
		{"opted out by annotation", pod(annotate("weft.dev/inject", "false")), shop, OptedOut},
		{"opted out by label", pod(func(p *corev1.Pod) { p.Labels["weft.dev/inject"] = "false" }), shop, OptedOut},
		{"opted out, upper case", pod(annotate("weft.dev/inject", "False")), shop, OptedOut},
		// The registration skips pods labelled false before the webhook
		// can read the annotation.
		{"label false beats annotation true", pod(annotate("weft.dev/inject", "true"), func(p *corev1.Pod) { p.Labels["weft.dev/inject"] = "false" }), shop, OptedOut},
		{"opted in explicitly", pod(annotate("weft.dev/inject", "true")), shop, Missing},
		{"host network", pod(func(p *corev1.Pod) { p.Spec.HostNetwork = true }), shop, HostNetwork},
		{"static pod", pod(annotate(corev1.MirrorPodAnnotationKey, "x")), shop, StaticPod},
		{"succeeded", pod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }), shop, Finished},
		{"failed", pod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed }), shop, Finished},
		{"pending", pod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending }), shop, Missing},
		{"terminating", pod(func(p *corev1.Pod) { p.DeletionTimestamp = &metav1.Time{} }), shop, Terminating},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Check(tc.pod, tc.ns); got != tc.want {
				t.Errorf("Check = %s, want %s", got, tc.want)
			}
		})
	}
}

// TestCheckTrimmedPod: the cache's view of a pod never excuses one that
// the whole pod would flag, so picking candidates from the cache misses
// none.
func TestCheckTrimmedPod(t *testing.T) {
	shop := namespace("shop", true)
	for _, p := range []*corev1.Pod{
		pod(),
		pod(func(p *corev1.Pod) { p.Spec.HostNetwork = true }),
		pod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }),
		pod(annotate("weft.dev/inject-status", "injected"), func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "weft-proxy", Image: "envoy"}}
		}),
		pod(annotate("weft.dev/inject", "false")),
	} {
		trimmed, err := store.TransformPod(p.DeepCopy())
		if err != nil {
			t.Fatal(err)
		}
		whole, cached := Check(p, shop), Check(trimmed.(*corev1.Pod), shop)
		if whole == Missing && cached != Missing {
			t.Errorf("whole pod is Missing, cached view says %s", cached)
		}
		if cached != Missing && whole != cached {
			t.Errorf("cached view says %s, whole pod %s", cached, whole)
		}
	}
}

func TestRestartHint(t *testing.T) {
	owner := func(kind, name string) func(*corev1.Pod) {
		return func(p *corev1.Pod) {
			p.OwnerReferences = []metav1.OwnerReference{{Kind: kind, Name: name, Controller: ptr.To(true)}}
		}
	}
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		want string
	}{
		{"deployment", pod(owner("ReplicaSet", "web-7d9f"), func(p *corev1.Pod) { p.Labels["pod-template-hash"] = "7d9f" }), "kubectl rollout restart deployment/web -n shop"},
		{"bare ReplicaSet", pod(owner("ReplicaSet", "web")), "kubectl delete pod web-7d9f-abcde -n shop"},
		{"statefulset", pod(owner("StatefulSet", "db")), "kubectl rollout restart statefulset/db -n shop"},
		{"daemonset", pod(owner("DaemonSet", "agent")), "kubectl rollout restart daemonset/agent -n shop"},
		{"job", pod(owner("Job", "migrate")), "kubectl delete pod web-7d9f-abcde -n shop"},
		{"bare pod", pod(), "kubectl delete pod web-7d9f-abcde -n shop"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := RestartHint(tc.pod); !strings.HasPrefix(got, tc.want) {
				t.Errorf("RestartHint = %q, want prefix %q", got, tc.want)
			}
		})
	}
}
