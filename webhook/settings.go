package webhook

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/weftmesh/weft/capture"
	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/internal/version"
)

// Options are the injector's own settings (flags of the process that serves
// the webhook, or of `weft inject`), as opposed to MeshConfig's mesh-wide
// settings and a pod's annotations.
type Options struct {
	// ProxyImage is the sidecar's image when MeshConfig names none (there
	// is no MeshConfig, or its spec.sidecar.image is empty); empty means
	// DefaultProxyImage. MeshConfig's value, then the pod's
	// weft.dev/proxy-image annotation, take precedence.
	ProxyImage string
	// InitImage is the weft-init image; empty means DefaultInitImage.
	InitImage string
	// AgentImage is the image of weft agent, for proxyless gRPC pods;
	// empty means DefaultAgentImage.
	AgentImage string
	// XDSAddress is host:port of weft-controller's xDS server; empty means
	// the in-cluster Service weft-controller.weft-system.svc:15012 (xDS over TLS).
	XDSAddress string
	// LegacySidecar injects the proxy as a regular container, for API
	// servers older than 1.29 that lack native sidecars (init containers
	// with restartPolicy: Always). Applications may then start before the
	// proxy is ready, and Jobs do not complete while the proxy runs.
	LegacySidecar bool
	// NoSleepAction leaves out the preStop sleep of a legacy sidecar, for
	// API servers older than 1.30 that lack the sleep lifecycle action.
	NoSleepAction bool
}

// OptionsForVersion sets LegacySidecar and NoSleepAction for an API server
// version (discovery's major and minor, such as "1" and "28+").
func OptionsForVersion(o Options, major, minor string) Options {
	ma, _ := strconv.Atoi(strings.TrimRight(major, "+"))
	mi, _ := strconv.Atoi(strings.TrimRight(minor, "+"))
	if ma == 1 && mi < 29 {
		o.LegacySidecar = true
	}
	if ma == 1 && mi < 30 {
		o.NoSleepAction = true
	}
	return o
}

// Defaults used when MeshConfig or an annotation leaves a value unset. The
// proxy's image and resources equal the MeshConfig CRD's defaults.
const (
	DefaultProxyImage      = "docker.io/envoyproxy/envoy-distroless:v1.40.0"
	DefaultLogLevel        = "warning"
	DefaultConcurrency     = 2
	defaultGracePeriod     = 30 // the API server's default
	drainExitMarginSeconds = 2
)

// ImageRepository is where `make images` names weft's own images
// (REGISTRY in the Makefile).
const ImageRepository = "ghcr.io/weftmesh"

// DefaultInitImage is the weft-init image of this build's version: the
// controller injects the weft-init that was released with it, never a
// moving tag (docs/design/087). A build without the Makefile's version
// (go run, go test) names "dev", the tag `make images VERSION=dev` writes.
var DefaultInitImage = ImageRepository + "/weft-init:" + version.Version

// DefaultProxyResources are MeshConfig's default sidecar resources.
func DefaultProxyResources() corev1.ResourceRequirements {
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")},
	}
}

// settings are the resolved values for one pod: Options, then MeshConfig,
// then the pod's annotations.
type settings struct {
	image          string
	initImage      string                  // empty: Options.InitImage, then DefaultInitImage
	agentImage     string                  // empty: Options.AgentImage, then DefaultAgentImage
	captureBackend v1alpha1.CaptureBackend // empty or NFTables: weft-init's default
	pullPolicy     corev1.PullPolicy
	resources      corev1.ResourceRequirements
	logLevel       string
	concurrency    int
	drainSeconds   int64
	excludeIn      []uint16
	excludeOut     []uint16
	excludeCIDRs   []netip.Prefix
	rewriteProbes  bool
}

var logLevels = []string{"trace", "debug", "info", "warning", "error", "critical", "off"}

// resolve reads MeshConfig and the pod's annotations. Every invalid
// annotation is reported, each naming the annotation and how to fix it.
func resolve(pod *corev1.Pod, mc *v1alpha1.MeshConfig, o Options) (settings, error) {
	s := settings{
		image:         DefaultProxyImage,
		pullPolicy:    corev1.PullIfNotPresent,
		resources:     DefaultProxyResources(),
		logLevel:      DefaultLogLevel,
		concurrency:   DefaultConcurrency,
		rewriteProbes: true,
	}
	if o.ProxyImage != "" {
		s.image = o.ProxyImage
	}
	if mc != nil {
		sc := mc.Spec.Sidecar
		if sc.Image != "" {
			s.image = sc.Image
		}
		s.initImage, s.agentImage = sc.InitImage, sc.AgentImage
		s.captureBackend = sc.CaptureBackend
		if sc.ImagePullPolicy != "" {
			s.pullPolicy = sc.ImagePullPolicy
		}
		if sc.Resources != nil {
			s.resources = corev1.ResourceRequirements{Requests: sc.Resources.Requests.DeepCopy(), Limits: sc.Resources.Limits.DeepCopy()}
		}
	}
	a := pod.Annotations
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("annotation %s: %q %s", key, a[key], fmt.Sprintf(format, args...)))
	}

	if v, ok := a[AnnotationProxyImage]; ok {
		var allowed []string
		if mc != nil {
			allowed = mc.Spec.Sidecar.AllowedImages
		}
		switch {
		case v == "" || strings.ContainsAny(v, " \t\n"):
			bad(AnnotationProxyImage, "is not an image reference: write one such as docker.io/envoyproxy/envoy-distroless:v1.40.0, or remove the annotation to use MeshConfig's")
		case v != s.image && !imageAllowed(v, allowed):
			// The sidecar runs as the UID that traffic capture exempts:
			// an arbitrary image there bypasses the mesh.
			bad(AnnotationProxyImage, "is not in MeshConfig spec.sidecar.allowedImages %q: ask the mesh operator to allow it, or remove the annotation to use %s", allowed, s.image)
		default:
			s.image = v
		}
	}
	if v, ok := a[dataplane.AnnotationAppProbes]; ok && v != "" {
		// It reaches the sidecar's bootstrap and the control plane.
		if probes, err := ParseAppProbes(v); err != nil {
			bad(dataplane.AnnotationAppProbes, "is not the probes JSON weft writes: %v (remove it; injection writes it)", err)
		} else if err := dataplane.ValidateAppProbes(toDataplaneProbes(probes)); err != nil {
			bad(dataplane.AnnotationAppProbes, "is invalid: %v (remove it; injection writes it)", err)
		}
	}
	quantity := func(key string, list corev1.ResourceList, name corev1.ResourceName, example string) {
		v, ok := a[key]
		if !ok {
			return
		}
		q, err := resource.ParseQuantity(v)
		if err != nil || q.Sign() <= 0 {
			bad(key, "is not a positive quantity: write one such as %s", example)
			return
		}
		list[name] = q
	}
	if s.resources.Requests == nil {
		s.resources.Requests = corev1.ResourceList{}
	}
	if s.resources.Limits == nil {
		s.resources.Limits = corev1.ResourceList{}
	}
	quantity(AnnotationProxyCPU, s.resources.Requests, corev1.ResourceCPU, "100m or 1")
	quantity(AnnotationProxyCPULimit, s.resources.Limits, corev1.ResourceCPU, "500m or 2")
	quantity(AnnotationProxyMemory, s.resources.Requests, corev1.ResourceMemory, "128Mi or 1Gi")
	quantity(AnnotationProxyMemoryLimit, s.resources.Limits, corev1.ResourceMemory, "512Mi or 1Gi")
	for _, r := range []struct {
		name                 corev1.ResourceName
		requestKey, limitKey string
	}{
		{corev1.ResourceCPU, AnnotationProxyCPU, AnnotationProxyCPULimit},
		{corev1.ResourceMemory, AnnotationProxyMemory, AnnotationProxyMemoryLimit},
	} {
		req, hasReq := s.resources.Requests[r.name]
		lim, hasLim := s.resources.Limits[r.name]
		if hasReq && hasLim && req.Cmp(lim) > 0 {
			errs = append(errs, fmt.Errorf("the sidecar's %s request %s (%s) is above its limit %s (%s): raise %s or lower %s",
				r.name, req.String(), origin(a, r.requestKey), lim.String(), origin(a, r.limitKey), r.limitKey, r.requestKey))
		}
	}

	if v, ok := a[AnnotationProxyLogLevel]; ok {
		if !contains(logLevels, v) {
			bad(AnnotationProxyLogLevel, "is not a log level: use one of %s", strings.Join(logLevels, ", "))
		} else {
			s.logLevel = v
		}
	}
	if v, ok := a[AnnotationProxyConcurrency]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 64 {
			bad(AnnotationProxyConcurrency, "is not a number of worker threads: write a whole number from 1 to 64, such as 2")
		} else {
			s.concurrency = n
		}
	}

	grace := int64(defaultGracePeriod)
	if pod.Spec.TerminationGracePeriodSeconds != nil {
		grace = *pod.Spec.TerminationGracePeriodSeconds
	}
	s.drainSeconds = max(grace-drainExitMarginSeconds, 0)
	if v, ok := a[AnnotationProxyDrainSeconds]; ok {
		n, err := strconv.ParseInt(v, 10, 64)
		switch {
		case err != nil || n < 0:
			bad(AnnotationProxyDrainSeconds, "is not a number of seconds: write a whole number such as 5")
		case n >= grace:
			bad(AnnotationProxyDrainSeconds, "is not below the pod's terminationGracePeriodSeconds (%d): the proxy would be killed while draining; lower it or raise terminationGracePeriodSeconds", grace)
		default:
			s.drainSeconds = n
		}
	}

	var err error
	if s.excludeIn, err = capture.ParsePorts(a[AnnotationExcludeInboundPorts]); err != nil {
		errs = append(errs, fmt.Errorf("annotation %s: %w", AnnotationExcludeInboundPorts, err))
	}
	if s.excludeOut, err = capture.ParsePorts(a[AnnotationExcludeOutboundPorts]); err != nil {
		errs = append(errs, fmt.Errorf("annotation %s: %w", AnnotationExcludeOutboundPorts, err))
	}
	if s.excludeCIDRs, err = capture.ParseCIDRs(a[AnnotationExcludeOutboundIPRanges]); err != nil {
		errs = append(errs, fmt.Errorf("annotation %s: %w", AnnotationExcludeOutboundIPRanges, err))
	}
	if v, ok := a[AnnotationRewriteAppProbes]; ok {
		switch v {
		case "true":
		case "false":
			s.rewriteProbes = false
		default:
			bad(AnnotationRewriteAppProbes, `is not "true" or "false"`)
		}
	}
	return s, errors.Join(errs...)
}

// origin says where a resource value came from, for error messages.
func origin(a map[string]string, key string) string {
	if _, ok := a[key]; ok {
		return "annotation " + key
	}
	return "MeshConfig spec.sidecar.resources"
}

func contains(list []string, v string) bool {
	for _, s := range list {
		if s == v {
			return true
		}
	}
	return false
}

// imageAllowed says whether image is one of allowed: an exact reference,
// or a prefix ending in "*".
func imageAllowed(image string, allowed []string) bool {
	for _, a := range allowed {
		if p, ok := strings.CutSuffix(a, "*"); ok && strings.HasPrefix(image, p) || a == image {
			return true
		}
	}
	return false
}

func toDataplaneProbes(in map[string]AppProbe) map[string]dataplane.AppProbe {
	out := make(map[string]dataplane.AppProbe, len(in))
	for k, p := range in {
		out[k] = dataplane.AppProbe{Port: p.Port, Path: p.Path, Scheme: p.Scheme, TimeoutSeconds: p.TimeoutSeconds}
	}
	return out
}
