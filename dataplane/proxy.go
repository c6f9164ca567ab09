package dataplane

import (
	"fmt"
	"strings"
	"unicode"
)

// Proxy is what a connected proxy is, as its node says: the translator
// builds its configuration from it.
type Proxy struct {
	// Namespace and ServiceAccount give the proxy's identity.
	Namespace      string
	ServiceAccount string
	// Labels of the proxy's pod: they decide which Services it serves.
	Labels map[string]string
	// IPs of the pod, used to find the ports it serves for named target
	// ports.
	IPs []string
	// Kind is what consumes the configuration: an Envoy sidecar, or a
	// proxyless gRPC application (which accepts a subset of xDS).
	Kind ProxyKind
	// AppProbes are the application's HTTP probes that injection rewrote to
	// the readiness port, by their new path; the readiness listener
	// forwards them to the application.
	AppProbes map[string]AppProbe
	// Region and Zone are where the proxy's pod runs (its Node's
	// topology labels), as the control plane knows it — never read from
	// the proxy's node metadata, which the proxy writes. Empty: unknown.
	// They matter only to Services that prefer the caller's zone
	// (docs/design/171).
	Region, Zone string
}

// The well-known topology labels of Nodes (and, where the
// PodTopologyLabels admission plugin copies them, of Pods).
const (
	LabelTopologyZone   = "topology.kubernetes.io/zone"
	LabelTopologyRegion = "topology.kubernetes.io/region"
)

// Locality is where a pod runs: its Node's topology labels, or, without
// them (no Node known, or a Node without the labels), the pod's own.
func Locality(nodeLabels, podLabels map[string]string) (region, zone string) {
	if z := nodeLabels[LabelTopologyZone]; z != "" {
		return nodeLabels[LabelTopologyRegion], z
	}
	return podLabels[LabelTopologyRegion], podLabels[LabelTopologyZone]
}

// AppProbe is where a rewritten kubelet probe goes: the application's port,
// path (which may carry a query), scheme (HTTP or HTTPS) and timeout. It is
// the weft.dev/app-probes annotation's format.
type AppProbe struct {
	Port           int32  `json:"port"`
	Path           string `json:"path"`
	Scheme         string `json:"scheme"`
	TimeoutSeconds int32  `json:"timeoutSeconds"`
}

// ProxyKind says what kind of xDS client a proxy is.
type ProxyKind int

const (
	// KindSidecar is an injected Envoy.
	KindSidecar ProxyKind = iota
	// KindGRPC is a gRPC application using gRPC's own xDS support.
	KindGRPC
)

// Identity is the proxy's SPIFFE ID in the trust domain.
func (p Proxy) Identity(trustDomain string) string {
	return SPIFFEID(trustDomain, p.Namespace, p.ServiceAccount)
}

// SPIFFEID is the identity of a service account:
// spiffe://<trust domain>/ns/<namespace>/sa/<service account>.
func SPIFFEID(trustDomain, namespace, serviceAccount string) string {
	return "spiffe://" + trustDomain + "/ns/" + namespace + "/sa/" + serviceAccount
}

// Bounds of the weft.dev/app-probes annotation, which reaches the sidecar's
// bootstrap and, through the node metadata, the control plane: a client
// that makes one up must not be able to make either hold or build more
// than a pod's real probes need.
const (
	// MaxAppProbes: a pod rewrites at most three probes (liveness,
	// readiness, startup) per container; 64 covers 21 containers.
	MaxAppProbes = 64
	// MaxAppProbePathBytes bounds the new path
	// (/app-health/<container>/<kind>: a container name is at most 63
	// bytes) and the original path (which may carry a query).
	MaxAppProbePathBytes = 1024
	// MaxAppProbeTimeoutSeconds: the kubelet's probes rarely wait more
	// than a minute; an hour is generous and keeps the route timeout sane.
	MaxAppProbeTimeoutSeconds = 3600
	// AppProbePathPrefix starts every rewritten probe's new path.
	AppProbePathPrefix = "/app-health/"
)

// ValidateAppProbes checks the probes of a weft.dev/app-probes annotation
// or node metadata: a bounded number, new paths under /app-health/, ports
// 1-65535, absolute original paths, scheme HTTP or HTTPS, a timeout from 0
// to an hour, no control characters or whitespace. The error names the
// first offending probe.
func ValidateAppProbes(probes map[string]AppProbe) error {
	if len(probes) > MaxAppProbes {
		return fmt.Errorf("%d probes, more than the %d a pod can have rewritten", len(probes), MaxAppProbes)
	}
	for path, p := range probes {
		switch {
		case !strings.HasPrefix(path, AppProbePathPrefix) || !cleanPath(path):
			return fmt.Errorf("probe path %.64q is not %s<container>/<kind> (at most %d bytes, no spaces or control characters)", path, AppProbePathPrefix, MaxAppProbePathBytes)
		case p.Port < 1 || p.Port > 65535:
			return fmt.Errorf("probe %s: port %d is not 1-65535", path, p.Port)
		case !strings.HasPrefix(p.Path, "/") || !cleanPath(p.Path):
			return fmt.Errorf("probe %s: path %.64q is not an absolute path of at most %d bytes without spaces or control characters", path, p.Path, MaxAppProbePathBytes)
		case p.Scheme != "HTTP" && p.Scheme != "HTTPS":
			return fmt.Errorf("probe %s: scheme %.16q is not HTTP or HTTPS", path, p.Scheme)
		case p.TimeoutSeconds < 0 || p.TimeoutSeconds > MaxAppProbeTimeoutSeconds:
			return fmt.Errorf("probe %s: timeoutSeconds %d is not 0-%d", path, p.TimeoutSeconds, MaxAppProbeTimeoutSeconds)
		}
	}
	return nil
}

func cleanPath(s string) bool {
	if len(s) > MaxAppProbePathBytes {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f || !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}
