package webhook

import (
	"cmp"
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weftmesh/weft/capture"
	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/webhook/bootstrap"
)

const (
	// CredentialsVolume holds the proxy's token and the mesh root
	// certificate.
	CredentialsVolume = "weft-credentials"
	// TokenExpirationSeconds is the lifetime of the proxy's token; the
	// kubelet renews it at 80 %.
	TokenExpirationSeconds = 3600

	statsPort = dataplane.StatsPort
)

// proxyContainer is the Envoy sidecar.
func proxyContainer(pod *corev1.Pod, s settings, o Options) (corev1.Container, error) {
	cfg, err := bootstrap.JSON(bootstrap.Config{XDSAddress: o.XDSAddress, Labels: pod.Labels, AppProbes: pod.Annotations[dataplane.AnnotationAppProbes]})
	if err != nil {
		return corev1.Container{}, err
	}
	ready := &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromInt32(dataplane.ReadinessPort), Scheme: corev1.URISchemeHTTP}
	c := corev1.Container{
		Name:            dataplane.SidecarContainerName,
		Image:           s.image,
		ImagePullPolicy: s.pullPolicy,
		// The image's entrypoint is envoy. The kubelet expands the
		// $(WEFT_...) references in the bootstrap from Env below.
		Args: []string{
			"--config-yaml", cfg,
			"--log-level", s.logLevel,
			"--concurrency", strconv.Itoa(s.concurrency),
			// Connections on a listener or filter chain that an update
			// removes are drained for this long (Envoy's default is 600s).
			"--drain-time-s", strconv.FormatInt(max(s.drainSeconds, 1), 10),
			"--drain-strategy", "immediate",
			// No hot restart: no shared memory, so a read-only root works.
			"--disable-hot-restart",
		},
		Env: []corev1.EnvVar{
			fieldEnv(dataplane.EnvPodName, "metadata.name"),
			fieldEnv(dataplane.EnvPodNamespace, "metadata.namespace"),
			fieldEnv(dataplane.EnvPodIPs, "status.podIPs"),
			fieldEnv(dataplane.EnvServiceAccount, "spec.serviceAccountName"),
		},
		Ports: []corev1.ContainerPort{
			{Name: dataplane.StatsPortName, ContainerPort: statsPort, Protocol: corev1.ProtocolTCP},
		},
		Resources: s.resources,
		// Passes once Envoy has received its listeners from xDS: with a
		// native sidecar, the kubelet starts the next containers only
		// then. 10 minutes for the first configuration.
		StartupProbe: &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: ready},
			PeriodSeconds:    1,
			TimeoutSeconds:   1,
			FailureThreshold: 600,
		},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: ready.DeepCopy()},
			PeriodSeconds:    5,
			TimeoutSeconds:   1,
			FailureThreshold: 3,
		},
		VolumeMounts: []corev1.VolumeMount{{Name: CredentialsVolume, MountPath: bootstrap.CredentialsDir, ReadOnly: true}},
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                ptrTo[int64](dataplane.ProxyUID),
			RunAsGroup:               ptrTo[int64](dataplane.ProxyGID),
			RunAsNonRoot:             ptrTo(true),
			AllowPrivilegeEscalation: ptrTo(false),
			ReadOnlyRootFilesystem:   ptrTo(true),
			Privileged:               ptrTo(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
	if o.LegacySidecar {
		// All containers get SIGTERM at once: keep the proxy serving the
		// application's connections for the grace period first.
		if s.drainSeconds > 0 && !o.NoSleepAction {
			c.Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: s.drainSeconds}}}
		}
	} else {
		// A native sidecar: started before the application, stopped after
		// it, and not counted for Job completion.
		c.RestartPolicy = ptrTo(corev1.ContainerRestartPolicyAlways)
	}
	return c, nil
}

func fieldEnv(name, path string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
}

// initContainer is weft-init, with the pod's exclusions and MeshConfig's
// capture backend as flags.
func initContainer(s settings, o Options) corev1.Container {
	image := cmp.Or(s.initImage, o.InitImage, DefaultInitImage)
	args := []string{
		fmt.Sprintf("--proxy-uid=%d", dataplane.ProxyUID),
		fmt.Sprintf("--proxy-gid=%d", dataplane.ProxyGID),
		fmt.Sprintf("--inbound-port=%d", dataplane.InboundPort),
		fmt.Sprintf("--outbound-port=%d", dataplane.OutboundPort),
	}
	if s.captureBackend == v1alpha1.CaptureIPTables {
		// nftables is weft-init's default; MeshConfig chose
		// iptables-restore (nodes without nf_tables).
		args = append(args, "--backend=iptables")
	}
	if len(s.excludeIn) > 0 {
		args = append(args, dataplane.FlagExcludeInboundPorts+"="+capture.FormatPorts(s.excludeIn))
	}
	if len(s.excludeOut) > 0 {
		args = append(args, "--exclude-outbound-ports="+capture.FormatPorts(s.excludeOut))
	}
	if len(s.excludeCIDRs) > 0 {
		args = append(args, "--exclude-outbound-ip-ranges="+capture.FormatCIDRs(s.excludeCIDRs))
	}
	return corev1.Container{
		Name:            dataplane.InitContainerName,
		Image:           image,
		ImagePullPolicy: s.pullPolicy,
		Args:            args,
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
		},
		// Root inside the pod's network namespace, with only the two
		// capabilities programming netfilter needs; nothing else.
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                ptrTo[int64](0),
			RunAsGroup:               ptrTo[int64](0),
			RunAsNonRoot:             ptrTo(false),
			AllowPrivilegeEscalation: ptrTo(false),
			ReadOnlyRootFilesystem:   ptrTo(true),
			Privileged:               ptrTo(false),
			Capabilities: &corev1.Capabilities{
				Add:  []corev1.Capability{"NET_ADMIN", "NET_RAW"},
				Drop: []corev1.Capability{"ALL"},
			},
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
}

// credentialsVolume projects the proxy's ServiceAccount token (audience
// weft, so it is useless against the API server) and the mesh root
// certificate into one read-only folder.
func credentialsVolume() corev1.Volume {
	return corev1.Volume{Name: CredentialsVolume, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
				Audience:          bootstrap.TokenAudience,
				ExpirationSeconds: ptrTo[int64](TokenExpirationSeconds),
				Path:              bootstrap.TokenFile,
			}},
			{ConfigMap: &corev1.ConfigMapProjection{
				LocalObjectReference: corev1.LocalObjectReference{Name: dataplane.RootCAConfigMap},
				Items:                []corev1.KeyToPath{{Key: dataplane.RootCertFile, Path: dataplane.RootCertFile}},
			}},
		},
	}}}
}

func ptrTo[T any](v T) *T { return &v }
