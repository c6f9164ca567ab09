package offline

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"

	"github.com/weftmesh/weft/capture"
	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/dataplane/sim"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/ir"
)

// World is the traffic simulator's World of a mesh as weft serves it:
//
//   - every Service is what kube-proxy does with its cluster IPs (ports to
//     the addresses of its EndpointSlices); its names
//     (NAME.NAMESPACE and NAME.NAMESPACE.svc.cluster.local) resolve to its
//     cluster IPs, or, headless, to its endpoints;
//   - every meshed pod's sidecar has the resources Builder.Build gives it
//     (translator.Translate, then envoy, as weft-controller sends them), its
//     workload identity, and the nat tables weft-init installs: capture.Rules
//     and capture.RulesV6 of the pod's weft-init arguments (weft-init's
//     defaults when the pod has no weft-init container, as in translator
//     test manifests that only name the sidecar);
//   - every application listens, bound to [::] (every address, IPv4 too, as
//     Go and Java servers do by default), on its containers' ports and on
//     the ports its endpoints name.
//
// A proxyless gRPC pod is walked as an unmeshed one: the simulator does not
// model gRPC's xDS client.
func World(in *translator.Inputs, mesh *ir.Mesh) (*sim.World, error) {
	return WorldWithApps(in, mesh, nil)
}

// WorldWithApps is World with what each pod's application listens on
// given by apps (nil: World's default, the containers' and endpoints'
// ports bound to [::]).
func WorldWithApps(in *translator.Inputs, mesh *ir.Mesh, apps func(*corev1.Pod) []sim.AppSocket) (*sim.World, error) {
	b := NewBuilder(mesh)
	w := &sim.World{DNS: map[string][]netip.Addr{}}
	endpointPorts := map[netip.Addr][]uint16{}
	for _, svc := range in.Services {
		s := &sim.Service{Namespace: svc.Namespace, Name: svc.Name}
		ips := svc.Spec.ClusterIPs
		if len(ips) == 0 && svc.Spec.ClusterIP != "" {
			ips = []string{svc.Spec.ClusterIP}
		}
		for _, ip := range ips {
			if a, err := netip.ParseAddr(ip); err == nil {
				s.ClusterIPs = append(s.ClusterIPs, a)
			}
		}
		var podAddrs []netip.Addr
		for _, sp := range svc.Spec.Ports {
			port := sim.ServicePort{Port: uint16(sp.Port)}
			for _, es := range in.EndpointSlices {
				if es.Namespace != svc.Namespace || es.Labels["kubernetes.io/service-name"] != svc.Name {
					continue
				}
				for _, p := range es.Ports {
					if p.Port == nil || (p.Name != nil && *p.Name != sp.Name) || (p.Name == nil && sp.Name != "") {
						continue
					}
					for _, e := range es.Endpoints {
						if e.Conditions.Ready != nil && !*e.Conditions.Ready {
							continue
						}
						for _, a := range e.Addresses {
							addr, err := netip.ParseAddr(a)
							if err != nil {
								return nil, fmt.Errorf("EndpointSlice %s/%s: address %q: %w", es.Namespace, es.Name, a, err)
							}
							port.Endpoints = append(port.Endpoints, netip.AddrPortFrom(addr, uint16(*p.Port)))
							endpointPorts[addr] = append(endpointPorts[addr], uint16(*p.Port))
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
			addrs = podAddrs
		} else {
			w.Services = append(w.Services, s)
		}
		for _, n := range []string{svc.Name + "." + svc.Namespace, svc.Name + "." + svc.Namespace + ".svc.cluster.local"} {
			w.DNS[n] = addrs
		}
	}
	for _, pod := range in.Pods {
		p := &sim.Pod{Namespace: pod.Namespace, Name: pod.Name}
		for _, ip := range pod.Status.PodIPs {
			a, err := netip.ParseAddr(ip.IP)
			if err != nil {
				return nil, fmt.Errorf("pod %s/%s: status.podIPs %q: %w", pod.Namespace, pod.Name, ip.IP, err)
			}
			p.IPs = append(p.IPs, a)
		}
		if apps != nil {
			p.Apps = apps(pod)
		} else {
			p.Apps = defaultApps(pod, p.IPs, endpointPorts)
		}
		if hasSidecar(pod) {
			node, err := ProxyOf(pod)
			if err != nil {
				return nil, fmt.Errorf("pod %s/%s: %w", pod.Namespace, pod.Name, err)
			}
			res, err := b.Build(node)
			if err != nil {
				return nil, fmt.Errorf("pod %s/%s: %w", pod.Namespace, pod.Name, err)
			}
			p.Proxy = &sim.Resources{Listeners: res.Listeners, Routes: res.Routes, Clusters: res.Clusters, Endpoints: res.Endpoints}
			p.Identity = node.Identity(mesh.TrustDomain)
			if p.CaptureV4, p.CaptureV6, err = Capture(pod); err != nil {
				return nil, err
			}
		}
		w.Pods = append(w.Pods, p)
	}
	return w, nil
}

// defaultApps: the application listens, bound to [::], on its containers'
// ports and on the ports its endpoints name.
func defaultApps(pod *corev1.Pod, ips []netip.Addr, endpointPorts map[netip.Addr][]uint16) []sim.AppSocket {
	var out []sim.AppSocket
	seen := map[uint16]bool{}
	listen := func(port uint16) {
		if port != 0 && !seen[port] {
			seen[port] = true
			out = append(out, sim.AppSocket{Port: port, Bind: netip.IPv6Unspecified()})
		}
	}
	for _, c := range pod.Spec.Containers {
		if c.Name == dataplane.SidecarContainerName {
			continue
		}
		for _, cp := range c.Ports {
			listen(uint16(cp.ContainerPort))
		}
	}
	for _, a := range ips {
		for _, port := range endpointPorts[a] {
			listen(port)
		}
	}
	return out
}

// Capture is the nat tables weft-init installs in the pod (IPv4 and
// IPv6), from the injected weft-init container's arguments read with
// weft-init's flags; weft-init's defaults when the pod has no weft-init
// container.
func Capture(pod *corev1.Pod) (v4, v6 *sim.NAT, err error) {
	var args []string
	for _, c := range pod.Spec.InitContainers {
		if c.Name == dataplane.InitContainerName {
			args = c.Args
		}
	}
	o, err := InitOptions(args)
	if err != nil {
		return nil, nil, fmt.Errorf("pod %s/%s: %s arguments: %w", pod.Namespace, pod.Name, dataplane.InitContainerName, err)
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

// InitOptions parses weft-init's arguments as weft-init does (the same
// flags and defaults; flags that only choose how rules are applied are
// accepted and ignored).
func InitOptions(args []string) (capture.Options, error) {
	o := capture.Defaults()
	var inPorts, outPorts, outCIDRs, ignored string
	var dry bool
	f := pflag.NewFlagSet(dataplane.InitContainerName, pflag.ContinueOnError)
	f.SetOutput(nopWriter{})
	f.Uint32Var(&o.ProxyUID, "proxy-uid", o.ProxyUID, "")
	f.Uint32Var(&o.ProxyGID, "proxy-gid", o.ProxyGID, "")
	f.Uint16Var(&o.InboundPort, "inbound-port", o.InboundPort, "")
	f.Uint16Var(&o.OutboundPort, "outbound-port", o.OutboundPort, "")
	f.BoolVar(&o.NoInbound, "no-inbound", false, "")
	f.StringVar(&inPorts, "exclude-inbound-ports", "", "")
	f.StringVar(&outPorts, "exclude-outbound-ports", "", "")
	f.StringVar(&outCIDRs, "exclude-outbound-ip-ranges", "", "")
	f.BoolVar(&dry, "dry-run", false, "")
	// How the rules reach the kernel, not which rules: both backends
	// install capture.Plan's (docs/design/085).
	f.StringVar(&ignored, "backend", "", "")
	f.StringVar(&ignored, "iptables-restore", "", "")
	f.StringVar(&ignored, "ip6tables-restore", "", "")
	if err := f.Parse(args); err != nil {
		return o, err
	}
	var err error
	if inPorts != "" {
		if o.ExcludeInboundPorts, err = capture.ParsePorts(inPorts); err != nil {
			return o, fmt.Errorf("--exclude-inbound-ports: %w", err)
		}
	}
	if outPorts != "" {
		if o.ExcludeOutboundPorts, err = capture.ParsePorts(outPorts); err != nil {
			return o, fmt.Errorf("--exclude-outbound-ports: %w", err)
		}
	}
	if outCIDRs != "" {
		if o.ExcludeOutboundCIDRs, err = capture.ParseCIDRs(outCIDRs); err != nil {
			return o, fmt.Errorf("--exclude-outbound-ip-ranges: %w", err)
		}
	}
	return o, o.Validate()
}

type nopWriter struct{}

func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }
