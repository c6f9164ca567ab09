package meshgen

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/weftmesh/weft/capture"
	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/dataplane/sim"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/envoy"
	"github.com/weftmesh/weft/webhook"
)

// World builds the simulator's World for the mesh as weft serves it:
// translator.Translate, envoy.Build for every pod with the sidecar (the
// proxy as its node would describe itself, with the rewritten probes), and
// each meshed pod's capture rules from its injected weft-init arguments
// (capture.Rules, as weft-init applies them). Every application listens,
// bound to [::], on its container ports and on UndeclaredPort; a TLS port
// terminates TLS in the application.
//
// exportAll: build from a copy of the inputs with every Service annotated
// weft.dev/export-to: "*" (every Service visible everywhere).
func (m *Mesh) World(exportAll bool) (*sim.World, error) {
	in := m.In
	if exportAll {
		cp := *in
		cp.Services = nil
		for _, s := range in.Services {
			s = s.DeepCopy()
			if s.Annotations == nil {
				s.Annotations = map[string]string{}
			}
			s.Annotations[translator.AnnotationExportTo] = "*"
			cp.Services = append(cp.Services, s)
		}
		in = &cp
	}
	apps := map[string][]sim.AppSocket{}
	for _, wl := range m.Workloads {
		for _, pod := range wl.Pods {
			var a []sim.AppSocket
			for _, cp := range wl.Ports {
				a = append(a, sim.AppSocket{Port: uint16(cp.Port), Bind: netip.IPv6Unspecified(), TLS: cp.Proto == ProtoTLS})
			}
			apps[pod.Namespace+"/"+pod.Name] = append(a, sim.AppSocket{Port: UndeclaredPort, Bind: netip.IPv6Unspecified()})
		}
	}
	return BuildWorld(in, func(p *corev1.Pod) []sim.AppSocket { return apps[p.Namespace+"/"+p.Name] })
}

// BuildWorld is the simulator's World for translator inputs as weft serves
// them: translator.Translate, envoy.Build for every pod with the sidecar
// container (the proxy as its node describes itself, rewritten probes
// included), each such pod's capture rules from its weft-init arguments
// (Capture), kube-proxy's Services from the EndpointSlices (ready or not:
// the walk takes the first endpoint), and DNS: <name>.<namespace>[.svc.cluster.local]
// to the cluster IPs, or to the endpoints of a headless Service. apps
// says what each pod's application listens on.
func BuildWorld(in *translator.Inputs, apps func(*corev1.Pod) []sim.AppSocket) (*sim.World, error) {
	mesh := translator.Translate(in).Mesh
	w := &sim.World{DNS: map[string][]netip.Addr{}}
	for _, svc := range in.Services {
		s := &sim.Service{Namespace: svc.Namespace, Name: svc.Name}
		for _, ip := range svc.Spec.ClusterIPs {
			if a, err := netip.ParseAddr(ip); err == nil {
				s.ClusterIPs = append(s.ClusterIPs, a)
			}
		}
		if len(s.ClusterIPs) == 0 {
			if a, err := netip.ParseAddr(svc.Spec.ClusterIP); err == nil {
				s.ClusterIPs = append(s.ClusterIPs, a)
			}
		}
		var podAddrs []netip.Addr
		for _, sp := range svc.Spec.Ports {
			port := sim.ServicePort{Port: uint16(sp.Port)}
			for _, es := range in.EndpointSlices {
				if es.Namespace != svc.Namespace || es.Labels[discoveryv1.LabelServiceName] != svc.Name {
					continue
				}
				for _, p := range es.Ports {
					if p.Port == nil || (p.Name != nil && *p.Name != sp.Name) || (p.Name == nil && sp.Name != "") {
						continue
					}
					for _, e := range es.Endpoints {
						for _, a := range e.Addresses {
							addr := netip.MustParseAddr(a)
							port.Endpoints = append(port.Endpoints, netip.AddrPortFrom(addr, uint16(*p.Port)))
							if !slices.Contains(podAddrs, addr) {
								podAddrs = append(podAddrs, addr)
							}
						}
					}
				}
			}
			s.Ports = append(s.Ports, port)
		}
		addrs := s.ClusterIPs
		if svc.Spec.ClusterIP == corev1.ClusterIPNone {
			addrs = podAddrs // a headless Service's name resolves to its endpoints
		} else {
			w.Services = append(w.Services, s)
		}
		for _, n := range []string{svc.Name + "." + svc.Namespace, svc.Name + "." + svc.Namespace + ".svc.cluster.local"} {
			w.DNS[n] = addrs
		}
	}
	for _, pod := range in.Pods {
		p := &sim.Pod{Namespace: pod.Namespace, Name: pod.Name, Apps: apps(pod)}
		for _, ip := range pod.Status.PodIPs {
			p.IPs = append(p.IPs, netip.MustParseAddr(ip.IP))
		}
		if hasSidecar(pod) {
			proxy, err := proxyOf(pod)
			if err != nil {
				return nil, err
			}
			res := envoy.Build(mesh, proxy)
			p.Proxy = &sim.Resources{Listeners: res.Listeners, Routes: res.Routes, Clusters: res.Clusters, Endpoints: res.Endpoints}
			p.Identity = proxy.Identity(mesh.TrustDomain)
			v4, v6, err := Capture(pod)
			if err != nil {
				return nil, err
			}
			p.CaptureV4, p.CaptureV6 = v4, v6
		}
		w.Pods = append(w.Pods, p)
	}
	return w, nil
}

// hasSidecar: the pod has the injected proxy container.
func hasSidecar(p *corev1.Pod) bool {
	for _, c := range append(append([]corev1.Container(nil), p.Spec.InitContainers...), p.Spec.Containers...) {
		if c.Name == dataplane.SidecarContainerName {
			return true
		}
	}
	return false
}

// proxyOf is what the xDS server learns of a pod's proxy from its node
// metadata (the bootstrap fills it from the downward API and the
// weft.dev/app-probes annotation).
func proxyOf(p *corev1.Pod) (dataplane.Proxy, error) {
	var ips []string
	for _, ip := range p.Status.PodIPs {
		ips = append(ips, ip.IP)
	}
	probes, err := webhook.ParseAppProbes(p.Annotations[dataplane.AnnotationAppProbes])
	if err != nil {
		return dataplane.Proxy{}, err
	}
	var app map[string]dataplane.AppProbe
	for path, pr := range probes {
		if app == nil {
			app = map[string]dataplane.AppProbe{}
		}
		app[path] = dataplane.AppProbe(pr)
	}
	return dataplane.Proxy{Namespace: p.Namespace, ServiceAccount: p.Spec.ServiceAccountName, Labels: p.Labels, IPs: ips,
		Kind: dataplane.KindSidecar, AppProbes: app}, nil
}

// Capture is the nat tables weft-init installs in the pod, read from the
// injected weft-init container's arguments as weft-init parses them, for
// IPv4 and IPv6 (capture.Rules, capture.RulesV6). This is the one place to
// follow weft-init.
func Capture(pod *corev1.Pod) (v4, v6 *sim.NAT, err error) {
	var args []string
	for _, c := range pod.Spec.InitContainers {
		if c.Name == dataplane.InitContainerName {
			args = c.Args
		}
	}
	if args == nil {
		return nil, nil, fmt.Errorf("pod %s/%s has no %s container", pod.Namespace, pod.Name, dataplane.InitContainerName)
	}
	o := capture.Defaults()
	for _, a := range args {
		k, v, _ := strings.Cut(a, "=")
		switch k {
		case "--exclude-inbound-ports":
			o.ExcludeInboundPorts, err = capture.ParsePorts(v)
		case "--exclude-outbound-ports":
			o.ExcludeOutboundPorts, err = capture.ParsePorts(v)
		case "--exclude-outbound-ip-ranges":
			o.ExcludeOutboundCIDRs, err = capture.ParseCIDRs(v)
		case "--no-inbound":
			o.NoInbound = true
		case "--proxy-uid", "--proxy-gid", "--inbound-port", "--outbound-port":
			// the defaults, which the webhook writes out
		default:
			err = fmt.Errorf("weft-init argument %q unknown to meshgen", a)
		}
		if err != nil {
			return nil, nil, err
		}
	}
	rules, err := capture.Rules(o)
	if err != nil {
		return nil, nil, err
	}
	if v4, err = sim.ParseNAT(rules); err != nil {
		return nil, nil, err
	}
	rules6, err := capture.RulesV6(o)
	if err != nil {
		return nil, nil, err
	}
	v6, err = sim.ParseNAT(rules6)
	return v4, v6, err
}
