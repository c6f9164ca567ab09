package webhook

// Labels and annotations that users set. docs/design/030-sidecar-injection.md
// lists them with examples.
const (
	// LabelInject on a Namespace turns injection on for its pods when set
	// to InjectEnabled. On a Pod (label or annotation) "true" or "false"
	// overrides the namespace.
	LabelInject   = "weft.dev/inject"
	InjectEnabled = "enabled"

	// AnnotationProxyImage overrides MeshConfig spec.sidecar.image.
	AnnotationProxyImage = "weft.dev/proxy-image"
	// AnnotationProxyCPU and AnnotationProxyMemory override the sidecar's
	// requests; the -limit variants its limits (MeshConfig
	// spec.sidecar.resources otherwise).
	AnnotationProxyCPU         = "weft.dev/proxy-cpu"
	AnnotationProxyCPULimit    = "weft.dev/proxy-cpu-limit"
	AnnotationProxyMemory      = "weft.dev/proxy-memory"
	AnnotationProxyMemoryLimit = "weft.dev/proxy-memory-limit"
	// AnnotationProxyLogLevel is Envoy's log level (default warning).
	AnnotationProxyLogLevel = "weft.dev/proxy-log-level"
	// AnnotationProxyConcurrency is the number of Envoy worker threads
	// (default 2).
	AnnotationProxyConcurrency = "weft.dev/proxy-concurrency"
	// AnnotationProxyDrainSeconds is how long the proxy keeps serving after
	// the pod is asked to stop (see drainSeconds).
	AnnotationProxyDrainSeconds = "weft.dev/proxy-drain-seconds"

	// Traffic capture exclusions, comma-separated.
	AnnotationExcludeInboundPorts     = "weft.dev/exclude-inbound-ports"
	AnnotationExcludeOutboundPorts    = "weft.dev/exclude-outbound-ports"
	AnnotationExcludeOutboundIPRanges = "weft.dev/exclude-outbound-ip-ranges"

	// AnnotationRewriteAppProbes set to "false" keeps the application's
	// HTTP probes as they are (they then bypass the proxy only if their
	// port is excluded from inbound capture).
	AnnotationRewriteAppProbes = "weft.dev/rewrite-app-probes"
)

// Annotations that weft writes.
const (
	// AnnotationInjectStatus records the outcome: "injected", or
	// "skipped: <Reason>" with one of the SkipReason names.
	AnnotationInjectStatus = "weft.dev/inject-status"
	// AnnotationAppProbes holds the application probes that were rewritten
	// to go through the sidecar's health port, as JSON keyed by the new
	// path (see AppProbe). The translator reads it to route
	// /app-health/<container>/<probe> on the readiness listener.
	AnnotationAppProbes = "weft.dev/app-probes"
)

// StatusInjected is AnnotationInjectStatus's value on an injected pod.
const StatusInjected = "injected"
