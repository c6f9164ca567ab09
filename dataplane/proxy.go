package dataplane

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
