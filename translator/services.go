package translator

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"unique"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator/ir"
)

const (
	// AnnotationExportTo on a Service lists the namespaces (comma-separated;
	// "*" for all, "." for the Service's own) whose proxies hold it; on a
	// Namespace, the default of its Services that do not say. Without
	// either, a Service is visible mesh-wide (DefaultServiceExportTo), as
	// Kubernetes users expect every Service to be callable from everywhere.
	// Scoping shrinks configuration only: a proxy refuses a call to a
	// meshed Service outside its scope (docs/design/055).
	AnnotationExportTo = "weft.dev/export-to"
)

// DefaultServiceExportTo is where a Service is visible when neither it nor
// its namespace says: every namespace.
const DefaultServiceExportTo = "*"

// services builds ir.Services from Services, EndpointSlices and Pods.
func (t *translation) services() {
	podIndex := map[ir.ServiceKey]*corev1.Pod{} // by namespace/name
	for _, p := range t.in.Pods {
		podIndex[ir.ServiceKey{Namespace: p.Namespace, Name: p.Name}] = p
	}
	pods := func(ns, name string) *corev1.Pod { return podIndex[ir.ServiceKey{Namespace: ns, Name: name}] }
	slices := map[ir.ServiceKey][]*discoveryv1.EndpointSlice{}
	for _, s := range t.in.EndpointSlices {
		name := s.Labels[discoveryv1.LabelServiceName]
		if name == "" {
			continue
		}
		k := ir.ServiceKey{Namespace: s.Namespace, Name: name}
		slices[k] = append(slices[k], s)
	}

	nsExport := map[string]string{}
	for _, ns := range t.in.Namespaces {
		if v, ok := ns.Annotations[AnnotationExportTo]; ok {
			nsExport[ns.Name] = v
		}
	}
	t.byKey = map[ir.ServiceKey]*ir.Service{}
	for _, s := range t.in.Services {
		if s.Spec.Type == corev1.ServiceTypeExternalName {
			// A DNS alias: no cluster IP and no endpoints, so nothing the
			// mesh can match or send to. Say so (issue 12 s): its calls
			// leave by the outbound default chain, unmeshed.
			t.warnings = append(t.warnings, fmt.Sprintf("Service %s/%s: type ExternalName (%s) is not meshed: calls to it leave the sidecar as to any external host (passed through in plaintext, or refused under outboundTrafficPolicy RegistryOnly); a Service with a selector or EndpointSlices is meshed", s.Namespace, s.Name, s.Spec.ExternalName))
			continue
		}
		key := ir.ServiceKey{Namespace: s.Namespace, Name: s.Name}
		svc := &ir.Service{Key: key, ExportTo: exportTo(s, nsExport), Selector: s.Spec.Selector}
		if s.Spec.ClusterIP == corev1.ClusterIPNone {
			svc.Headless = true
		} else {
			for _, ip := range s.Spec.ClusterIPs {
				if ip != "" && ip != corev1.ClusterIPNone {
					svc.ClusterIPs = append(svc.ClusterIPs, ip)
				}
			}
			if len(svc.ClusterIPs) == 0 && s.Spec.ClusterIP != "" {
				svc.ClusterIPs = []string{s.Spec.ClusterIP}
			}
		}
		for _, sp := range s.Spec.Ports {
			if sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP {
				continue // the mesh carries TCP only; UDP and SCTP bypass it
			}
			p := &ir.Port{Name: sp.Name, Port: sp.Port, Protocol: protocol(sp)}
			switch {
			case sp.TargetPort.StrVal != "":
				p.TargetPortName = sp.TargetPort.StrVal
			case sp.TargetPort.IntVal != 0:
				p.TargetPort = sp.TargetPort.IntVal
			default:
				p.TargetPort = sp.Port
			}
			p.Endpoints = endpoints(slices[key], sp.Name, pods, t.mesh.TrustDomain)
			svc.Ports = append(svc.Ports, p)
		}
		sort.Slice(svc.Ports, func(i, j int) bool { return svc.Ports[i].Port < svc.Ports[j].Port })
		t.byKey[key] = svc
		t.mesh.Services = append(t.mesh.Services, svc)
	}
	sort.Slice(t.mesh.Services, func(i, j int) bool { return t.mesh.Services[i].Key.Less(t.mesh.Services[j].Key) })
}

// exportTo resolves where s is visible: its own annotation, else its
// namespace's, else mesh-wide. "." names the Service's namespace (always
// included anyway); an annotation that lists nothing usable means the
// Service's namespace only.
func exportTo(s *corev1.Service, nsExport map[string]string) []string {
	v, ok := s.Annotations[AnnotationExportTo]
	if !ok {
		v, ok = nsExport[s.Namespace]
	}
	if !ok {
		return []string{DefaultServiceExportTo}
	}
	var out []string
	for _, ns := range strings.Split(v, ",") {
		switch ns = strings.TrimSpace(ns); ns {
		case "", ".", s.Namespace:
		case "*":
			return []string{"*"}
		default:
			out = append(out, ns)
		}
	}
	sort.Strings(out)
	return out
}

// protocol decides how a port is proxied: by appProtocol when set, else by
// the port name's prefix (http, http2, grpc), else TCP. Unknown means TCP,
// which is always safe.
func protocol(sp corev1.ServicePort) ir.Protocol {
	if sp.AppProtocol != nil {
		switch strings.ToLower(*sp.AppProtocol) {
		case "http", "kubernetes.io/http", "kubernetes.io/ws":
			return ir.ProtocolHTTP
		case "http2", "h2c", "kubernetes.io/h2c":
			// h2c too, as the port name prefix accepts it: an appProtocol
			// must not be weaker than the name it overrides.
			return ir.ProtocolHTTP2
		case "grpc":
			return ir.ProtocolGRPC
		default:
			return ir.ProtocolTCP
		}
	}
	name := strings.ToLower(sp.Name)
	prefix, _, _ := strings.Cut(name, "-")
	switch prefix {
	case "http":
		return ir.ProtocolHTTP
	case "http2", "h2c":
		return ir.ProtocolHTTP2
	case "grpc":
		return ir.ProtocolGRPC
	}
	return ir.ProtocolTCP
}

// endpoints collects the addresses of a Service port from its slices. Slice
// ports are matched by name, as kube-proxy does; an address that appears in
// two slices (during a slice rebalance) is kept once, ready winning.
func endpoints(slices []*discoveryv1.EndpointSlice, portName string, pods PodLookup, trustDomain string) []ir.Endpoint {
	seen := map[netip.AddrPort]int{}
	var out []ir.Endpoint
	for _, s := range slices {
		if s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		var port int32
		for _, sp := range s.Ports {
			if sp.Port != nil && (sp.Name == nil && portName == "" || sp.Name != nil && *sp.Name == portName) {
				port = *sp.Port
			}
		}
		if port == 0 {
			continue
		}
		for _, e := range s.Endpoints {
			// Nil means unknown, which the API says to treat as ready.
			ready := e.Conditions.Ready == nil || *e.Conditions.Ready
			// Serving but terminating: a fallback when nothing is ready
			// (Kubernetes' ProxyTerminatingEndpoints), so a rollout drains.
			terminating := !ready && e.Conditions.Serving != nil && *e.Conditions.Serving &&
				e.Conditions.Terminating != nil && *e.Conditions.Terminating
			var identity string
			var meshed bool
			if r := e.TargetRef; r != nil && r.Kind == "Pod" {
				if p := pods(s.Namespace, r.Name); p != nil {
					// Interned: the endpoints of a workload share one
					// identity (20,000 copies in a mesh of 2,000
					// Services was ~1 MiB per model).
					identity = unique.Make(spiffeID(trustDomain, p.Namespace, serviceAccount(p))).Value()
					// A port the pod excludes from inbound capture never
					// reaches its sidecar: callers must not send it mesh
					// mTLS, which the application cannot read (issue 12l).
					meshed = hasSidecar(p) && !excludesInbound(p, port)
				}
			}
			for _, a := range e.Addresses {
				addr, err := netip.ParseAddr(a)
				if err != nil {
					continue
				}
				ap := netip.AddrPortFrom(addr, uint16(port))
				ep := ir.Endpoint{Address: addr.String(), Port: port, Ready: ready, Terminating: terminating, Identity: identity, Meshed: meshed}
				if e.Zone != nil {
					ep.Zone = *e.Zone
				}
				if i, dup := seen[ap]; dup {
					if ready && !out[i].Ready {
						out[i] = ep
					}
					continue
				}
				seen[ap] = len(out)
				out = append(out, ep)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, _ := netip.ParseAddr(out[i].Address)
		b, _ := netip.ParseAddr(out[j].Address)
		if c := a.Compare(b); c != 0 {
			return c < 0
		}
		return out[i].Port < out[j].Port
	})
	return out
}

func serviceAccount(p *corev1.Pod) string {
	if p.Spec.ServiceAccountName != "" {
		return p.Spec.ServiceAccountName
	}
	return "default"
}

// excludesInbound says whether weft-init leaves the pod's port uncaptured,
// from the arguments the webhook gave it (immutable, unlike the annotation
// they came from).
func excludesInbound(p *corev1.Pod, port int32) bool {
	for _, c := range p.Spec.InitContainers {
		if c.Name != dataplane.InitContainerName {
			continue
		}
		for _, x := range dataplane.ExcludedInboundPorts(c.Args) {
			if x == port {
				return true
			}
		}
	}
	return false
}

func hasSidecar(p *corev1.Pod) bool {
	if p.Annotations[dataplane.AnnotationProxyless] == "grpc" {
		return true
	}
	for _, c := range p.Spec.InitContainers {
		if c.Name == dataplane.SidecarContainerName {
			return true
		}
	}
	for _, c := range p.Spec.Containers {
		if c.Name == dataplane.SidecarContainerName {
			return true
		}
	}
	return false
}

// spiffeID is the identity of a service account.
func spiffeID(trustDomain, namespace, serviceAccount string) string {
	return "spiffe://" + trustDomain + "/ns/" + namespace + "/sa/" + serviceAccount
}

// PodLookup finds a pod by namespace and name, or returns nil.
type PodLookup func(namespace, name string) *corev1.Pod

// UpdateEndpoints is the cheap path for the most frequent change, an
// EndpointSlice update: it returns a model equal to a full translation with
// the Service key's slices replaced by slices, sharing every other part with
// mesh (which it does not modify). It costs O(log services + endpoints of
// this Service), plus copying the Services slice's pointers. When the
// Service is not in mesh, mesh is returned as is.
func UpdateEndpoints(mesh *ir.Mesh, key ir.ServiceKey, slices []*discoveryv1.EndpointSlice, pods PodLookup) *ir.Mesh {
	old := mesh.Service(key)
	if old == nil {
		return mesh
	}
	svc := *old
	svc.Ports = make([]*ir.Port, len(old.Ports))
	for i, p := range old.Ports {
		np := *p
		np.Endpoints = endpoints(slices, p.Name, pods, mesh.TrustDomain)
		svc.Ports[i] = &np
	}
	next := *mesh
	next.Services = append([]*ir.Service(nil), mesh.Services...)
	i := sort.Search(len(next.Services), func(i int) bool { return !next.Services[i].Key.Less(key) })
	next.Services[i] = &svc
	return &next
}
