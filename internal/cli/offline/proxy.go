package offline

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/envoy"
	"github.com/weftmesh/weft/translator/ir"
)

// Proxy is one meshed pod: an injected Envoy sidecar, or a proxyless gRPC
// application.
type Proxy struct {
	Pod *corev1.Pod
	// Node is the proxy as weft-controller learns it from the node
	// metadata of the pod's bootstrap.
	Node dataplane.Proxy
}

// Key is "namespace/pod".
func (p Proxy) Key() string { return p.Pod.Namespace + "/" + p.Pod.Name }

// Meshed: the pod has weft's sidecar container, or is a proxyless gRPC
// application (weft.dev/proxyless: grpc).
func Meshed(p *corev1.Pod) bool {
	return p.Annotations[dataplane.AnnotationProxyless] == dataplane.KindNameGRPC || hasSidecar(p)
}

func hasSidecar(p *corev1.Pod) bool {
	for _, c := range append(append([]corev1.Container(nil), p.Spec.InitContainers...), p.Spec.Containers...) {
		if c.Name == dataplane.SidecarContainerName {
			return true
		}
	}
	return false
}

// isProxyless: a proxyless gRPC pod (weft.dev/proxyless) that weft's
// webhook gave its agent instead of a sidecar.
func isProxyless(p *corev1.Pod) bool {
	if _, ok := p.Annotations[dataplane.AnnotationProxyless]; !ok || hasSidecar(p) {
		return false
	}
	for _, c := range append(append([]corev1.Container(nil), p.Spec.InitContainers...), p.Spec.Containers...) {
		if c.Name == dataplane.AgentContainerName {
			return true
		}
	}
	return false
}

// ProxyOf is what weft-controller learns of a pod's proxy: the node
// metadata its bootstrap writes from the downward API
// (dataplane.NodeMetadata), read back as the xDS server reads it
// (dataplane.ParseNode).
func ProxyOf(p *corev1.Pod) (dataplane.Proxy, error) {
	sa := p.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	var ips []string
	for _, ip := range p.Status.PodIPs {
		ips = append(ips, ip.IP)
	}
	if len(ips) == 0 && p.Status.PodIP != "" {
		ips = []string{p.Status.PodIP}
	}
	kind := dataplane.KindNameSidecar
	if p.Annotations[dataplane.AnnotationProxyless] == dataplane.KindNameGRPC {
		kind = dataplane.KindNameGRPC
	}
	md := dataplane.NodeMetadata(dataplane.NodeMeta{
		PodName: p.Name, Namespace: p.Namespace, ServiceAccount: sa,
		PodIPs: strings.Join(ips, ","), Labels: p.Labels, Kind: kind,
		AppProbes: p.Annotations[dataplane.AnnotationAppProbes],
	})
	proxy, err := dataplane.ParseNode(p.Name+"."+p.Namespace, md)
	if err != nil {
		return proxy, err
	}
	// The controller reads the zone from the pod's Node; offline there
	// are no Nodes, so the pod's own topology label, its fallback.
	proxy.Region, proxy.Zone = dataplane.Locality(nil, p.Labels)
	return proxy, nil
}

// Proxies are the meshed pods of in, by namespace/name.
func Proxies(in *translator.Inputs) ([]Proxy, error) {
	var out []Proxy
	for _, pod := range in.Pods {
		if !Meshed(pod) {
			continue
		}
		n, err := ProxyOf(pod)
		if err != nil {
			return nil, fmt.Errorf("pod %s/%s: %w", pod.Namespace, pod.Name, err)
		}
		out = append(out, Proxy{Pod: pod, Node: n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out, nil
}

// Find returns the proxy of the pod "namespace/pod", or else every proxy
// of the ServiceAccount "namespace/serviceaccount"; an error lists the
// meshed pods.
func Find(ps []Proxy, key string) ([]Proxy, error) {
	var names, bySA []Proxy
	for _, p := range ps {
		if p.Key() == key {
			return []Proxy{p}, nil
		}
		if p.Node.Namespace+"/"+p.Node.ServiceAccount == key {
			bySA = append(bySA, p)
		}
		names = append(names, p)
	}
	if len(bySA) > 0 {
		return bySA, nil
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("no meshed pod or ServiceAccount %s: the manifests hold no pod with the %s container or the %s: grpc annotation", key, dataplane.SidecarContainerName, dataplane.AnnotationProxyless)
	}
	var keys []string
	for _, p := range names {
		keys = append(keys, p.Key())
	}
	return nil, fmt.Errorf("no meshed pod or ServiceAccount %s; the meshed pods are: %s", key, strings.Join(keys, ", "))
}

// Builder builds proxies' resources from one translation, sharing what
// they have in common, as weft-controller's xDS server does.
type Builder struct {
	shared *envoy.Shared
}

// NewBuilder is a Builder for a translated mesh.
func NewBuilder(mesh *ir.Mesh) *Builder { return &Builder{shared: envoy.NewShared(mesh)} }

// Build returns the proxy's resources after the checks weft-controller
// makes before it pushes them: every resource validates and the set is
// consistent. An error is what would keep weft-controller from pushing
// (it keeps the proxy's last good configuration): a weft bug to report.
func (b *Builder) Build(p dataplane.Proxy) (*envoy.Resources, error) {
	res := b.shared.Build(p)
	if err := res.Validate(); err != nil {
		return res, fmt.Errorf("weft-controller would not push this configuration (a bug in weft; please report it with these manifests): %w", err)
	}
	if err := res.CheckConsistency(); err != nil {
		return res, fmt.Errorf("weft-controller would not push this configuration (a bug in weft; please report it with these manifests): %w", err)
	}
	return res, nil
}
