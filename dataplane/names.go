package dataplane

import (
	"strconv"
	"strings"
)

// Containers, volumes and ConfigMaps that injection adds and the
// controller looks for.
const (
	// SidecarContainerName is the injected proxy container; a pod that has
	// it accepts mutual TLS.
	SidecarContainerName = "weft-proxy"
	// InitContainerName is the traffic-capture init container (weft-init).
	InitContainerName = "weft-init"
	// AgentContainerName is the certificate agent of proxyless gRPC pods.
	AgentContainerName = "weft-agent"
	// RootCAConfigMap is the ConfigMap, in every injected pod's namespace,
	// whose key RootCertFile holds the root certificate that signs
	// weft-controller's xDS serving certificate. weft-controller publishes
	// it (as Istio does with istio-ca-root-cert).
	RootCAConfigMap = "weft-root-ca"
	// RootCertFile is the key of RootCAConfigMap, and the file name the
	// proxy reads it from.
	RootCertFile = "root-cert.pem"
)

// Labels and annotations shared by the webhook, the translator and the
// controller. (Those only the webhook reads live in package webhook.)
const (
	// LabelInject on a Namespace turns injection on for its pods when set
	// to InjectEnabled. On a Pod (label or annotation) "true" or "false"
	// overrides the namespace.
	LabelInject   = "weft.dev/inject"
	InjectEnabled = "enabled"
	// AnnotationProxyless marks a pod whose application is a proxyless
	// gRPC server ("grpc"): it has no sidecar but takes xDS, and mutual
	// TLS, itself.
	AnnotationProxyless = "weft.dev/proxyless"
	// AnnotationInjectStatus records the outcome of injection: "injected",
	// or "skipped: <Reason>".
	AnnotationInjectStatus = "weft.dev/inject-status"
	// AnnotationAppProbes holds the application probes that were rewritten
	// to go through the sidecar's readiness port, as JSON keyed by the new
	// path (AppProbe).
	AnnotationAppProbes = "weft.dev/app-probes"
)

// Environment variables of the proxy container that its bootstrap refers
// to; the webhook fills them from the downward API.
const (
	EnvPodName        = "WEFT_POD_NAME"
	EnvPodNamespace   = "WEFT_POD_NAMESPACE"
	EnvPodIPs         = "WEFT_POD_IPS" // status.podIPs: comma-separated
	EnvServiceAccount = "WEFT_SERVICE_ACCOUNT"
)

// FlagExcludeInboundPorts is weft-init's flag that lists the pod ports
// whose inbound traffic bypasses the sidecar. The webhook writes it from
// the weft.dev/exclude-inbound-ports annotation; the translator reads it
// back from the pod's weft-init container (whose arguments, unlike
// annotations, cannot change after the pod is created), so that callers
// do not send mesh mTLS to a port the sidecar never sees.
const FlagExcludeInboundPorts = "--exclude-inbound-ports"

// ExcludedInboundPorts reads FlagExcludeInboundPorts from weft-init's
// arguments ("--exclude-inbound-ports=8080,9090", or the flag and its value
// as two arguments). Entries that are not ports are skipped: weft-init
// refuses them, so such a pod never starts.
func ExcludedInboundPorts(initArgs []string) []int32 {
	var out []int32
	for i, a := range initArgs {
		v, ok := strings.CutPrefix(a, FlagExcludeInboundPorts+"=")
		if !ok && a == FlagExcludeInboundPorts && i+1 < len(initArgs) {
			v, ok = initArgs[i+1], true
		}
		if !ok {
			continue
		}
		out = out[:0] // the last occurrence wins, as with pflag
		for _, f := range strings.Split(v, ",") {
			if n, err := strconv.ParseUint(strings.TrimSpace(f), 10, 16); err == nil && n > 0 {
				out = append(out, int32(n))
			}
		}
	}
	return out
}
