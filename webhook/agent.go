package webhook

import (
	"cmp"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/version"
	"github.com/weftmesh/weft/webhook/bootstrap"
)

// Proxyless gRPC pods (annotation weft.dev/proxyless: grpc) get weft's
// certificate agent instead of the sidecar: no traffic capture and no
// Envoy, since the application speaks xDS and mutual TLS itself, but gRPC
// reads its certificates only from files, which the agent keeps current
// (docs/design/021-proxyless-certificates.md).
const (
	// GRPCVolume is the in-memory folder the agent shares with the
	// application: the certificate files and the gRPC xDS bootstrap.
	GRPCVolume = "weft-grpc"
	// GRPCDir is where GRPCVolume is mounted, in the agent (read-write)
	// and in the application's containers (read-only).
	GRPCDir = "/var/run/weft/grpc"
	// GRPCCertDir holds cert-chain.pem, key.pem, root-cert.pem and
	// xds-root-cert.pem.
	GRPCCertDir = GRPCDir + "/certs"
	// GRPCBootstrapFile is the gRPC xDS bootstrap; the application's
	// containers get EnvGRPCBootstrap pointing at it.
	GRPCBootstrapFile = GRPCDir + "/bootstrap.json"
	// EnvGRPCBootstrap is the variable gRPC reads its xDS bootstrap from.
	EnvGRPCBootstrap = "GRPC_XDS_BOOTSTRAP"
)

// DefaultAgentImage holds the weft CLI, whose `weft agent` runs: this
// build's version, like DefaultInitImage.
var DefaultAgentImage = ImageRepository + "/weft:" + version.Version

// proxylessKind returns the pod's weft.dev/proxyless value: "" for a pod
// that takes the sidecar, "grpc" for a proxyless gRPC application; any
// other value is an error that names the annotation and the fix.
func proxylessKind(pod *corev1.Pod) (string, error) {
	v, ok := pod.Annotations[dataplane.AnnotationProxyless]
	if !ok {
		return "", nil
	}
	if v != "grpc" {
		return "", fmt.Errorf("annotation %s: %q is not a proxyless kind: use grpc for a gRPC application that takes xDS itself, or remove the annotation to get the weft-proxy sidecar", dataplane.AnnotationProxyless, v)
	}
	return v, nil
}

// injectAgent adds the certificate agent to a proxyless gRPC pod: a native
// sidecar (so the application starts once its certificate is installed),
// the shared folder, and GRPC_XDS_BOOTSTRAP in the application's
// containers. Variables and mounts the pod already sets are kept.
func injectAgent(pod *corev1.Pod, s settings, o Options) {
	agent := agentContainer(pod, s, o)
	mount := corev1.VolumeMount{Name: GRPCVolume, MountPath: GRPCDir, ReadOnly: true}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		if !hasEnv(c, EnvGRPCBootstrap) {
			c.Env = append(c.Env, corev1.EnvVar{Name: EnvGRPCBootstrap, Value: GRPCBootstrapFile})
		}
		if !hasMountAt(c, GRPCDir) {
			c.VolumeMounts = append(c.VolumeMounts, mount)
		}
	}
	if o.LegacySidecar {
		pod.Spec.Containers = append([]corev1.Container{agent}, pod.Spec.Containers...)
		if _, ok := pod.Annotations[annotationDefaultContainer]; !ok && len(pod.Spec.Containers) > 1 {
			setAnnotation(pod, annotationDefaultContainer, pod.Spec.Containers[1].Name)
		}
	} else {
		pod.Spec.InitContainers = append([]corev1.Container{agent}, pod.Spec.InitContainers...)
	}
	pod.Spec.Volumes = append(pod.Spec.Volumes, credentialsVolume(),
		// In memory: the private key never reaches the node's disk.
		corev1.Volume{Name: GRPCVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}})
}

// agentContainer runs `weft agent` with the pod's labels (for the
// bootstrap's node metadata, as the sidecar's bootstrap carries them) and
// the pod's identity from the downward API.
func agentContainer(pod *corev1.Pod, s settings, o Options) corev1.Container {
	image := cmp.Or(s.agentImage, o.AgentImage, DefaultAgentImage)
	args := []string{"agent",
		"--out", GRPCCertDir,
		"--bootstrap", GRPCBootstrapFile,
		"--root-cert", bootstrap.CredentialsDir + "/" + dataplane.RootCertFile,
		"--token-file", bootstrap.CredentialsDir + "/" + bootstrap.TokenFile,
		fmt.Sprintf("--ready-address=:%d", dataplane.AgentReadyPort),
	}
	if o.XDSAddress != "" {
		// The authenticated port, for the agent and (its default) for the
		// application's own xDS stream.
		args = append(args, "--xds-address", o.XDSAddress)
	}
	if l := formatLabels(pod.Labels); l != "" {
		args = append(args, "--labels", l)
	}
	ready := &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromInt32(dataplane.AgentReadyPort), Scheme: corev1.URISchemeHTTP}
	uid, gid := appUser(pod)
	c := corev1.Container{
		Name:            dataplane.AgentContainerName,
		Image:           image,
		ImagePullPolicy: s.pullPolicy,
		Args:            args,
		Env: []corev1.EnvVar{
			fieldEnv(dataplane.EnvPodName, "metadata.name"),
			fieldEnv(dataplane.EnvPodNamespace, "metadata.namespace"),
			fieldEnv(dataplane.EnvPodIPs, "status.podIPs"),
			fieldEnv(dataplane.EnvServiceAccount, "spec.serviceAccountName"),
		},
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
		},
		// With a native sidecar, the application starts once this passes:
		// its certificate files exist. 10 minutes for the first one.
		StartupProbe: &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: ready},
			PeriodSeconds:    1,
			TimeoutSeconds:   1,
			FailureThreshold: 600,
		},
		VolumeMounts: []corev1.VolumeMount{
			{Name: CredentialsVolume, MountPath: bootstrap.CredentialsDir, ReadOnly: true},
			{Name: GRPCVolume, MountPath: GRPCDir},
		},
		// The application's user, so that it can read key.pem (0600).
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                uid,
			RunAsGroup:               gid,
			AllowPrivilegeEscalation: ptrTo(false),
			ReadOnlyRootFilesystem:   ptrTo(true),
			Privileged:               ptrTo(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
	if !o.LegacySidecar {
		c.RestartPolicy = ptrTo(corev1.ContainerRestartPolicyAlways)
	}
	return c
}

// appUser is the user and group the pod's first container runs as, when
// the pod says (else the agent runs as its image's user, and an
// application running as another user must set runAsUser to read the key).
func appUser(pod *corev1.Pod) (uid, gid *int64) {
	if sc := pod.Spec.SecurityContext; sc != nil {
		uid, gid = sc.RunAsUser, sc.RunAsGroup
	}
	if len(pod.Spec.Containers) > 0 {
		if sc := pod.Spec.Containers[0].SecurityContext; sc != nil {
			if sc.RunAsUser != nil {
				uid = sc.RunAsUser
			}
			if sc.RunAsGroup != nil {
				gid = sc.RunAsGroup
			}
		}
	}
	if uid != nil {
		uid = ptrTo(*uid)
	}
	if gid != nil {
		gid = ptrTo(*gid)
	}
	return uid, gid
}

// formatLabels is key=value,... in key order (label values hold no
// commas).
func formatLabels(l map[string]string) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k + "=" + l[k])
	}
	return b.String()
}

func hasEnv(c *corev1.Container, name string) bool {
	for _, e := range c.Env {
		if e.Name == name {
			return true
		}
	}
	return false
}

func hasMountAt(c *corev1.Container, path string) bool {
	for _, m := range c.VolumeMounts {
		if m.MountPath == path {
			return true
		}
	}
	return false
}
