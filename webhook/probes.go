package webhook

import (
	"encoding/json"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weftmesh/weft/dataplane"
)

// AppProbePathPrefix starts the paths on the sidecar's health port
// (dataplane.ReadinessPort) that serve rewritten application probes:
// /app-health/<container>/<livez|readyz|startupz>.
const AppProbePathPrefix = "/app-health/"

// AppProbe is one rewritten probe as recorded in the weft.dev/app-probes
// annotation: where the kubelet used to send it. The translator routes
// GET <path> on the readiness listener to 127.0.0.1:<port><path>, with TLS
// (and no certificate verification, as the kubelet does) when Scheme is
// HTTPS, and a route timeout of TimeoutSeconds.
type AppProbe struct {
	Port           int32  `json:"port"`
	Path           string `json:"path"`
	Scheme         string `json:"scheme"`
	TimeoutSeconds int32  `json:"timeoutSeconds"`
}

// ParseAppProbes reads the weft.dev/app-probes annotation: new path →
// original probe target.
func ParseAppProbes(v string) (map[string]AppProbe, error) {
	out := map[string]AppProbe{}
	if v == "" {
		return out, nil
	}
	return out, json.Unmarshal([]byte(v), &out)
}

// rewriteProbes points the HTTP probes of the application containers at the
// sidecar's health port, which forwards them to the application over
// localhost. A probe from the kubelet is plaintext from outside the mesh:
// in Strict mTLS mode the inbound listener would refuse it.
//
// Left alone: probes with a host (they target another machine), probes on
// excluded inbound ports (they already bypass the proxy), probes on a port
// name the container does not declare (the kubelet reports that), and TCP,
// gRPC and exec probes (documented in docs/design/030).
func rewriteProbes(pod *corev1.Pod, excludedIn []uint16) (map[string]AppProbe, []string) {
	probes := map[string]AppProbe{}
	var paths []string
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		for _, p := range []struct {
			kind  string
			probe *corev1.Probe
		}{{"livez", c.LivenessProbe}, {"readyz", c.ReadinessProbe}, {"startupz", c.StartupProbe}} {
			if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Host != "" {
				continue
			}
			get := p.probe.HTTPGet
			port := containerPort(c, get.Port)
			if port == 0 || slices.Contains(excludedIn, uint16(port)) {
				continue
			}
			scheme := get.Scheme
			if scheme == "" {
				scheme = corev1.URISchemeHTTP
			}
			timeout := p.probe.TimeoutSeconds
			if timeout == 0 {
				timeout = 1 // the API server's default
			}
			path := AppProbePathPrefix + c.Name + "/" + p.kind
			orig := get.Path
			if orig == "" {
				orig = "/"
			}
			probes[path] = AppProbe{Port: port, Path: orig, Scheme: string(scheme), TimeoutSeconds: timeout}
			paths = append(paths, path)
			get.Path = path
			get.Port = intstr.FromInt32(dataplane.ReadinessPort)
			get.Scheme = corev1.URISchemeHTTP
		}
	}
	return probes, paths
}

// containerPort resolves a probe's port, by number or by the container's
// port name; 0 when it does not resolve.
func containerPort(c *corev1.Container, p intstr.IntOrString) int32 {
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	return 0
}
