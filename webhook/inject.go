// Package webhook injects weft's sidecar into pods: a pure Inject function,
// the admission handler around it, and the skip reasons users see.
//
// An injected pod gets, in order of startup:
//
//  1. weft-init, an init container with only NET_ADMIN and NET_RAW that
//     redirects the pod's TCP traffic to the proxy (capture);
//  2. weft-proxy, Envoy, as a native sidecar (an init container with
//     restartPolicy: Always) whose startup probe passes once Envoy has its
//     listeners from weft-controller, so the application's containers start
//     only when the mesh is ready, and which Kubernetes stops only after the
//     application has exited;
//  3. the pod's own init containers and containers, whose HTTP probes now
//     go through the proxy's health port.
//
// A proxyless gRPC pod (weft.dev/proxyless: grpc) gets weft-agent instead
// of both (agent.go).
//
// docs/design/030-sidecar-injection.md explains the choices.
package webhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/dataplane"
)

// systemNamespaces are never injected.
var systemNamespaces = map[string]bool{
	"kube-system": true, "kube-public": true, "kube-node-lease": true, "weft-system": true,
}

// Inject returns a copy of pod with the sidecar added, or with only the
// weft.dev/inject-status annotation set when a SkipReason applies (and
// unchanged when it is already injected). ns is the pod's namespace (nil
// when unknown: then the pod's own namespace field names it and only a pod
// override enables injection); mc is the MeshConfig, nil for the defaults.
// An error means the pod asks for something invalid, such as a malformed
// annotation: the message names it and says how to fix it, and the webhook
// rejects the pod with it.
func Inject(pod *corev1.Pod, ns *corev1.Namespace, mc *v1alpha1.MeshConfig, o Options) (*corev1.Pod, Report, error) {
	out := pod.DeepCopy()
	if reason := skipReason(out, ns); reason != "" {
		r := Report{Reason: reason}
		if reason != AlreadyInjected {
			setAnnotation(out, dataplane.AnnotationInjectStatus, r.Status())
		}
		return out, r, nil
	}
	s, err := resolve(out, mc, o)
	if err != nil {
		return nil, Report{}, err
	}
	kind, err := proxylessKind(out)
	if err != nil {
		return nil, Report{}, err
	}
	if kind != "" {
		// A proxyless gRPC application: the certificate agent, no proxy.
		injectAgent(out, s, o)
		if out.Spec.ServiceAccountName == "" {
			out.Spec.ServiceAccountName = "default"
		}
		report := Report{Injected: true}
		setAnnotation(out, dataplane.AnnotationInjectStatus, report.Status())
		return out, report, nil
	}
	if err := checkUserIDs(out); err != nil {
		return nil, Report{}, err
	}
	var report Report
	if s.rewriteProbes {
		probes, paths := rewriteProbes(out, s.excludeIn)
		if len(probes) > 0 {
			raw, err := json.Marshal(probes) // sorted keys: stable
			if err != nil {
				return nil, Report{}, err
			}
			setAnnotation(out, dataplane.AnnotationAppProbes, string(raw))
		}
		report.RewrittenProbes = paths
	}
	proxy, err := proxyContainer(out, s, o)
	if err != nil {
		return nil, Report{}, err
	}
	initC := initContainer(s, o)
	if o.LegacySidecar {
		// Without native sidecars nothing would serve captured traffic
		// during the pod's own init containers: capture after them.
		out.Spec.InitContainers = append(out.Spec.InitContainers, initC)
		out.Spec.Containers = append([]corev1.Container{proxy}, out.Spec.Containers...)
		if _, ok := out.Annotations[annotationDefaultContainer]; !ok && len(out.Spec.Containers) > 1 {
			setAnnotation(out, annotationDefaultContainer, out.Spec.Containers[1].Name)
		}
	} else {
		// Capture first, then the proxy, so that the pod's own init
		// containers (and sidecars) already have the mesh.
		out.Spec.InitContainers = append([]corev1.Container{initC, proxy}, out.Spec.InitContainers...)
	}
	out.Spec.Volumes = append(out.Spec.Volumes, credentialsVolume())
	// A projected token needs a named service account. The API server's
	// ServiceAccount admission plugin, which runs before webhooks, sets
	// "default" when it is enabled; do the same when it is not (and for
	// templates in `weft inject`).
	if out.Spec.ServiceAccountName == "" {
		out.Spec.ServiceAccountName = "default"
	}
	if !hasPrometheusAnnotations(out) {
		setAnnotation(out, "prometheus.io/scrape", "true")
		setAnnotation(out, "prometheus.io/port", fmt.Sprint(statsPort))
		setAnnotation(out, "prometheus.io/path", dataplane.StatsPath)
	}
	report.Injected = true
	setAnnotation(out, dataplane.AnnotationInjectStatus, report.Status())
	return out, report, nil
}

// annotationDefaultContainer is the container kubectl logs and exec pick.
const annotationDefaultContainer = "kubectl.kubernetes.io/default-container"

func skipReason(pod *corev1.Pod, ns *corev1.Namespace) SkipReason {
	nsName := pod.Namespace
	var nsLabels map[string]string
	if ns != nil {
		nsName, nsLabels = ns.Name, ns.Labels
	}
	if systemNamespaces[nsName] {
		return SystemNamespace
	}
	if injected(pod) {
		return AlreadyInjected
	}
	override := podOverride(pod)
	if override == "false" {
		return OptedOut
	}
	if override != "true" && nsLabels[dataplane.LabelInject] != dataplane.InjectEnabled {
		return NamespaceNotEnabled
	}
	if pod.Spec.HostNetwork {
		return HostNetwork
	}
	if _, ok := pod.Annotations[corev1.MirrorPodAnnotationKey]; ok {
		return StaticPod
	}
	return ""
}

// podOverride is the pod's weft.dev/inject label or annotation ("true",
// "false" or ""); the annotation wins when both are set.
func podOverride(pod *corev1.Pod) string {
	if v, ok := pod.Annotations[dataplane.LabelInject]; ok {
		return strings.ToLower(v)
	}
	return strings.ToLower(pod.Labels[dataplane.LabelInject])
}

func injected(pod *corev1.Pod) bool {
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range cs {
			if c.Name == dataplane.SidecarContainerName || c.Name == dataplane.AgentContainerName {
				return true
			}
		}
	}
	return false
}

// checkUserIDs rejects a pod whose containers would run as the proxy's user
// or group: weft-init lets that traffic bypass the proxy, so those
// containers would silently escape mTLS and policy.
func checkUserIDs(pod *corev1.Pod) error {
	var podUID, podGID *int64
	if sc := pod.Spec.SecurityContext; sc != nil {
		podUID, podGID = sc.RunAsUser, sc.RunAsGroup
	}
	var errs []error
	check := func(where string, uid, gid *int64) {
		if uid != nil && *uid == dataplane.ProxyUID {
			errs = append(errs, fmt.Errorf("%s runs as user %d, which is the weft proxy's: its traffic would bypass the proxy; choose another runAsUser", where, dataplane.ProxyUID))
		}
		if gid != nil && *gid == dataplane.ProxyGID {
			errs = append(errs, fmt.Errorf("%s runs as group %d, which is the weft proxy's: its traffic would bypass the proxy; choose another runAsGroup", where, dataplane.ProxyGID))
		}
	}
	each := func(kind string, cs []corev1.Container) {
		for _, c := range cs {
			uid, gid := podUID, podGID
			if sc := c.SecurityContext; sc != nil {
				if sc.RunAsUser != nil {
					uid = sc.RunAsUser
				}
				if sc.RunAsGroup != nil {
					gid = sc.RunAsGroup
				}
			}
			check(fmt.Sprintf("%s %q", kind, c.Name), uid, gid)
		}
	}
	each("container", pod.Spec.Containers)
	each("init container", pod.Spec.InitContainers)
	return errors.Join(errs...)
}

func hasPrometheusAnnotations(pod *corev1.Pod) bool {
	for k := range pod.Annotations {
		if strings.HasPrefix(k, "prometheus.io/") {
			return true
		}
	}
	return false
}

func setAnnotation(pod *corev1.Pod, k, v string) {
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[k] = v
}
