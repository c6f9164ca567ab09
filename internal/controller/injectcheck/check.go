package injectcheck

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/weftmesh/weft/dataplane"
)

// Result is Check's verdict on one pod. Only Missing is acted on; the
// others name why a pod is left alone.
type Result string

const (
	// Missing: the pod should have been injected, has no weft-proxy, and
	// the webhook never saw it.
	Missing Result = "Missing"

	SystemNamespace     Result = "SystemNamespace"
	NamespaceNotEnabled Result = "NamespaceNotEnabled"
	Injected            Result = "Injected"
	// SeenByWebhook: the pod carries weft.dev/inject-status, so the webhook
	// decided about it (a skip is the webhook's answer, not an outage).
	SeenByWebhook Result = "SeenByWebhook"
	OptedOut      Result = "OptedOut"
	HostNetwork   Result = "HostNetwork"
	StaticPod     Result = "StaticPod"
	// Finished: phase Succeeded or Failed; nothing left to restart.
	Finished Result = "Finished"
	// Terminating: the pod is being deleted.
	Terminating Result = "Terminating"
)

// systemNamespaces are never injected (webhook.skipReason's list; the
// webhook registration excludes them too).
var systemNamespaces = map[string]bool{
	"kube-system": true, "kube-public": true, "kube-node-lease": true, "weft-system": true,
}

// Check decides whether pod, in namespace ns (nil when unknown), came up
// without the sidecar because the injection webhook did not see it. Pure.
//
// It works on the trimmed Pods of weft's cache too (store.TransformPod):
// there hostNetwork is false and the phase empty, so the answer is Missing
// for every pod that Check on the whole pod might still excuse. The
// reconciler therefore reads the whole pod before acting.
func Check(pod *corev1.Pod, ns *corev1.Namespace) Result {
	switch {
	case systemNamespaces[pod.Namespace]:
		return SystemNamespace
	case ns == nil || ns.Labels[dataplane.LabelInject] != dataplane.InjectEnabled:
		return NamespaceNotEnabled
	case hasProxy(pod):
		return Injected
	}
	if _, ok := pod.Annotations[dataplane.AnnotationInjectStatus]; ok {
		return SeenByWebhook
	}
	// The webhook lets the annotation beat the label, but its registration
	// never calls it for a pod *labelled* "false": either one opts out here.
	if strings.EqualFold(pod.Annotations[dataplane.LabelInject], "false") || strings.EqualFold(pod.Labels[dataplane.LabelInject], "false") {
		return OptedOut
	}
	if pod.Spec.HostNetwork {
		return HostNetwork
	}
	if _, ok := pod.Annotations[corev1.MirrorPodAnnotationKey]; ok {
		return StaticPod
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return Finished
	}
	if pod.DeletionTimestamp != nil {
		return Terminating
	}
	return Missing
}

func hasProxy(pod *corev1.Pod) bool {
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range cs {
			if c.Name == dataplane.SidecarContainerName {
				return true
			}
		}
	}
	return false
}

// flagged reports whether the pod already carries weft's condition, set by
// this or an earlier leader: the Event and the condition are written once.
func flagged(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == ConditionSidecarInjected {
			return true
		}
	}
	return false
}

// RestartHint is the command that recreates the pod through its workload,
// read from its owner references (a whole pod: the cache drops them).
func RestartHint(pod *corev1.Pod) string {
	for _, o := range pod.OwnerReferences {
		if o.Controller == nil || !*o.Controller {
			continue
		}
		switch o.Kind {
		case "ReplicaSet":
			// A Deployment's ReplicaSet is <deployment>-<pod-template-hash>.
			if h := pod.Labels["pod-template-hash"]; h != "" && strings.HasSuffix(o.Name, "-"+h) {
				return fmt.Sprintf("kubectl rollout restart deployment/%s -n %s", strings.TrimSuffix(o.Name, "-"+h), pod.Namespace)
			}
		case "StatefulSet", "DaemonSet":
			return fmt.Sprintf("kubectl rollout restart %s/%s -n %s", strings.ToLower(o.Kind), o.Name, pod.Namespace)
		}
	}
	return fmt.Sprintf("kubectl delete pod %s -n %s (its controller, if any, recreates it)", pod.Name, pod.Namespace)
}

// Message is the Event's and the condition's text.
func Message(pod *corev1.Pod) string {
	return "weft's injection webhook did not see this pod when it was created (unreachable or not registered), " +
		"so it runs without the weft-proxy sidecar, outside the mesh. Once the webhook is back, restart it: " + RestartHint(pod)
}
