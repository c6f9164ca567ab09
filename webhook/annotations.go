package webhook

// Labels and annotations that users set. docs/design/030-sidecar-injection.md
// lists them with examples.
const (
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

// StatusInjected is dataplane.AnnotationInjectStatus's value on an injected pod.
const StatusInjected = "injected"
