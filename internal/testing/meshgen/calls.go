package meshgen

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"strconv"

	corev1 "k8s.io/api/core/v1"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/dataplane/sim"
)

// Via says how a call names its destination.
type Via string

const (
	ViaService  Via = "Service"          // a Service's DNS name (its cluster IP)
	ViaHeadless Via = "headless Service" // a headless Service's name (a pod IP)
	ViaPodIP    Via = "pod IP"           // a pod's address, directly
	ViaProbe    Via = "kubelet probe"    // the kubelet probing a pod
)

// Case is one walk and what the generator meant by it.
type Case struct {
	Call sim.Call
	// Source workload and pod; nil for a caller outside the cluster (or
	// the kubelet).
	Source    *Workload
	SourcePod *corev1.Pod
	// Peer: the source address the destination sees.
	Peer netip.Addr
	Via  Via
	// Service and its port, for ViaService and ViaHeadless.
	Service     *ServiceInfo
	ServicePort *corev1.ServicePort
	// Dest and DestPod for ViaPodIP and ViaProbe; Port is the port called.
	Dest    *Workload
	DestPod *corev1.Pod
	Port    int32
	// Proto is what the destination port speaks (ProtoTCP for a port no
	// Service declares).
	Proto Proto
	V6    bool

	meshSeed uint64 // for messages
}

// Called is the port number the caller connects to (for a headless
// Service, the target port; otherwise Port).
func (c Case) Called() int32 {
	_, p, _ := cutPort(c.Call.To)
	n, _ := strconv.Atoi(p)
	return int32(n)
}

func (c Case) String() string {
	from := "outside " + c.Peer.String()
	if c.SourcePod != nil {
		from = c.SourcePod.Namespace + "/" + c.SourcePod.Name
	}
	s := fmt.Sprintf("%s -> %s (%s, %s", from, c.Call.To, c.Via, c.Call.Protocol)
	if c.Call.TLS != nil {
		s += fmt.Sprintf(", app TLS ALPN %v", c.Call.TLS.ALPN)
	}
	if c.Call.Protocol != sim.TCP && c.Call.Protocol != sim.ServerFirst {
		s += fmt.Sprintf(" %s %s", c.Call.Method, c.Call.Path)
	}
	return s + ", " + family(c.V6) + ")"
}

func family(v6 bool) string {
	if v6 {
		return "IPv6"
	}
	return "IPv4"
}

// Outside callers and the node (the kubelet's address).
var (
	OutsideV4 = netip.MustParseAddr("192.0.2.1")
	OutsideV6 = netip.MustParseAddr("2001:db8::1")
	NodeV4    = netip.MustParseAddr("10.255.0.1")
	NodeV6    = netip.MustParseAddr("fd00:ff::1")
)

// samplePaths and sampleMethods: the requests sampled on HTTP ports,
// around the policies' paths (element prefix edges included).
var (
	samplePaths   = []string{"/", "/admin", "/admin/x", "/adminx", "/api", "/api/v1", "/apix", "/api?x=1"}
	sampleMethods = []string{"GET", "POST", "DELETE"}
)

// httpSamples is how many (method, path) pairs each HTTP destination gets.
// Three per (source, destination, family) cover the policies' edges over a
// mesh's thousands of pairs without multiplying the walks by 24.
const httpSamples = 3

// Cases lists every walk of the mesh: from every pod and from outside
// (each IP family the source has), to every Service port by name, every
// pod address at every container port plus UndeclaredPort and the
// sidecar's capture ports, with the port's protocol (HTTP ports with a
// sample of methods and paths, and a WebSocket upgrade; TLS ports with the
// application's own TLS, with and without ALPN); and the kubelet's probes.
func (m *Mesh) Cases() []Case {
	r := rand.New(rand.NewPCG(m.Seed, 7))
	var out []Case
	type source struct {
		w   *Workload
		pod *corev1.Pod
		out netip.Addr
	}
	var sources []source
	for _, w := range m.Workloads {
		for _, p := range w.Pods {
			sources = append(sources, source{w: w, pod: p})
		}
	}
	sources = append(sources, source{out: OutsideV4}, source{out: OutsideV6})
	for _, src := range sources {
		for _, v6 := range []bool{false, true} {
			base := Case{Source: src.w, SourcePod: src.pod, V6: v6}
			if src.pod != nil {
				a, ok := podAddr(src.pod, v6)
				if !ok {
					continue
				}
				base.Peer = a
				base.Call.From = src.pod.Namespace + "/" + src.pod.Name
			} else {
				if is6(src.out) != v6 {
					continue
				}
				base.Peer, base.Call.FromAddr = src.out, src.out
			}
			base.Call.IPv6 = v6
			for _, s := range m.Services {
				if !s.Workload.Family.Has(v6) {
					continue
				}
				for i := range s.Svc.Spec.Ports {
					sp := &s.Svc.Spec.Ports[i]
					c := base
					c.Service, c.ServicePort, c.Via = s, sp, ViaService
					if s.Svc.Spec.ClusterIP == corev1.ClusterIPNone {
						c.Via = ViaHeadless
					}
					c.Port, c.Proto = sp.Port, s.Protos[sp.Port]
					c.Call.To = fmt.Sprintf("%s.%s:%d", s.Svc.Name, s.Svc.Namespace, sp.Port)
					if c.Via == ViaHeadless {
						// A headless Service's name is its pods' addresses:
						// no one translates the port, clients use the
						// target port.
						c.Call.To = fmt.Sprintf("%s.%s:%d", s.Svc.Name, s.Svc.Namespace, s.targetPort(sp.Port))
					}
					out = append(out, protocols(r, c)...)
				}
			}
			for _, w := range m.Workloads {
				if !w.Family.Has(v6) {
					continue
				}
				for _, pod := range w.Pods {
					a, _ := podAddr(pod, v6)
					ports := []int32{UndeclaredPort}
					protos := map[int32]Proto{UndeclaredPort: ProtoTCP}
					for _, cp := range w.Ports {
						ports = append(ports, cp.Port)
						protos[cp.Port] = ProtoTCP
						if m.declared(w, cp) {
							protos[cp.Port] = cp.Proto
						} else if cp.Proto == ProtoTLS || cp.Proto == ProtoServerFirst {
							protos[cp.Port] = cp.Proto
						}
					}
					if w.Meshed && r.IntN(4) == 0 {
						ports = append(ports, dataplane.OutboundPort, dataplane.InboundPort)
					}
					for _, port := range ports {
						c := base
						c.Via, c.Dest, c.DestPod, c.Port, c.Proto = ViaPodIP, w, pod, port, protos[port]
						c.Call.To = netip.AddrPortFrom(a, uint16(port)).String()
						out = append(out, protocols(r, c)...)
					}
				}
			}
		}
	}
	// The kubelet probes each pod from the node, on each family.
	for _, w := range m.Workloads {
		if w.ProbePort == 0 {
			continue
		}
		for _, pod := range w.Pods {
			for _, v6 := range []bool{false, true} {
				a, ok := podAddr(pod, v6)
				if !ok {
					continue
				}
				node := NodeV4
				if v6 {
					node = NodeV6
				}
				c := Case{Via: ViaProbe, Dest: w, DestPod: pod, Peer: node, V6: v6, Proto: ProtoHTTP}
				c.Call = sim.Call{FromAddr: node, IPv6: v6, Protocol: sim.HTTP1, Method: "GET"}
				probes := pod.Spec.Containers[0].ReadinessProbe.HTTPGet
				// What the kubelet calls is the (possibly rewritten) probe
				// in the injected pod spec.
				c.Port = probes.Port.IntVal
				c.Call.Path = probes.Path
				c.Call.To = netip.AddrPortFrom(a, uint16(c.Port)).String()
				out = append(out, c)
			}
		}
	}
	return out
}

// declared: some Service selecting w declares the container port.
func (m *Mesh) declared(w *Workload, cp ContainerPort) bool {
	for _, s := range m.Services {
		if s.Workload != w {
			continue
		}
		for _, sp := range s.Svc.Spec.Ports {
			if p, ok := w.Port(sp.TargetPort); ok && p.Port == cp.Port {
				return true
			}
		}
	}
	return false
}

// protocols expands a case by the protocols its port speaks.
func protocols(r *rand.Rand, c Case) []Case {
	var out []Case
	switch c.Proto {
	case ProtoHTTP, ProtoH2C, ProtoGRPC:
		proto := map[Proto]sim.Protocol{ProtoHTTP: sim.HTTP1, ProtoH2C: sim.H2C, ProtoGRPC: sim.GRPC}[c.Proto]
		for _, k := range r.Perm(len(samplePaths) * len(sampleMethods))[:httpSamples] {
			x := c
			x.Call.Protocol, x.Call.Path, x.Call.Method = proto, samplePaths[k%len(samplePaths)], sampleMethods[k/len(samplePaths)]
			if proto == sim.GRPC {
				x.Call.Method = "POST" // what a gRPC client sends
			}
			out = append(out, x)
		}
		if c.Proto == ProtoHTTP {
			x := c
			x.Call.Protocol, x.Call.Method, x.Call.Path = sim.WebSocket, "GET", "/ws"
			out = append(out, x)
		}
	case ProtoTLS:
		for _, alpn := range [][]string{nil, {"h2", "http/1.1"}} {
			x := c
			host, _, _ := cutPort(c.Call.To)
			x.Call.Protocol, x.Call.TLS = sim.TCP, &sim.AppTLS{SNI: host, ALPN: alpn}
			out = append(out, x)
		}
	case ProtoServerFirst:
		c.Call.Protocol = sim.ServerFirst
		out = append(out, c)
	default:
		c.Call.Protocol = sim.TCP
		out = append(out, c)
		if c.Port == UndeclaredPort {
			x := c
			x.Call.Protocol, x.Call.Method, x.Call.Path = sim.HTTP1, "GET", "/admin"
			out = append(out, x)
		}
	}
	return out
}

func cutPort(hp string) (string, string, bool) {
	for i := len(hp) - 1; i >= 0; i-- {
		if hp[i] == ':' {
			return hp[:i], hp[i+1:], true
		}
	}
	return hp, "", false
}

func podAddr(p *corev1.Pod, v6 bool) (netip.Addr, bool) {
	for _, ip := range p.Status.PodIPs {
		if a := netip.MustParseAddr(ip.IP); is6(a) == v6 {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// Destinations are the pods (and their container ports) a case may end
// at: the Service's pods at its target port, and the pods of the backends
// of a TrafficSplit on that Service port; or the pod called.
func (m *Mesh) Destinations(c Case) map[string]int32 {
	out := map[string]int32{}
	add := func(s *ServiceInfo, port int32) {
		for _, sp := range s.Svc.Spec.Ports {
			if sp.Port != port {
				continue
			}
			cp, _ := s.Workload.Port(sp.TargetPort)
			for _, p := range s.Workload.Pods {
				out[p.Namespace+"/"+p.Name] = cp.Port
			}
		}
	}
	switch c.Via {
	case ViaService, ViaHeadless:
		add(c.Service, c.Port)
		if hr := m.httpRouteOf(c); hr != nil {
			for _, r := range hr.Spec.Rules {
				for s, port := range m.routeBackends(hr.Namespace, &r) {
					add(s, port)
				}
			}
		}
		for _, ts := range m.In.TrafficSplits {
			if ts.Namespace != c.Service.Svc.Namespace || ts.Spec.RootService.Name != c.Service.Svc.Name ||
				(ts.Spec.RootService.Port != nil && *ts.Spec.RootService.Port != c.Port) {
				continue
			}
			for _, b := range ts.Spec.Backends {
				port := c.Port
				if b.Port != nil {
					port = *b.Port
				}
				for _, s := range m.Services {
					if s.Svc.Namespace == ts.Namespace && s.Svc.Name == b.Name {
						add(s, port)
					}
				}
			}
		}
	default:
		out[c.DestPod.Namespace+"/"+c.DestPod.Name] = c.Port
	}
	return out
}

// Workload finds the workload of a pod key.
func (m *Mesh) Workload(podKey string) (*Workload, *corev1.Pod) {
	for _, w := range m.Workloads {
		for _, p := range w.Pods {
			if p.Namespace+"/"+p.Name == podKey {
				return w, p
			}
		}
	}
	return nil, nil
}

// HTTPPort: a Service selecting w declares the container port as HTTP of
// some kind, so the workload's sidecar parses requests on it.
func (m *Mesh) HTTPPort(w *Workload, port int32) bool {
	for _, cp := range w.Ports {
		if cp.Port == port && cp.Proto.IsHTTP() && m.declared(w, cp) {
			return true
		}
	}
	return false
}

// UndeclaredPort: no Service of the workload serves the container port,
// so its sidecar has no chain for it (docs/api.md: in Permissive mode
// plaintext HTTP to such a port is judged as HTTP, anything else as TCP).
func (m *Mesh) UndeclaredPort(w *Workload, port int32) bool {
	for _, cp := range w.Ports {
		if cp.Port == port && m.declared(w, cp) {
			return false
		}
	}
	return true
}

// Summary describes the mesh in a line.
func (m *Mesh) Summary() string {
	fam := map[Family]int{}
	for _, w := range m.Workloads {
		fam[w.Family]++
	}
	var strict []string
	for ns := range m.Strict {
		strict = append(strict, ns)
	}
	sort.Strings(strict)
	headless := 0
	for _, s := range m.Services {
		if s.Svc.Spec.ClusterIP == corev1.ClusterIPNone {
			headless++
		}
	}
	faults, mirrors := 0, 0
	for _, ts := range m.In.TrafficSplits {
		if ts.Spec.Fault != nil {
			faults++
		}
		if ts.Spec.Mirror != nil {
			mirrors++
		}
	}
	return fmt.Sprintf("seed %d: %d namespaces (Strict %v), %d workloads (%d IPv4, %d IPv6, %d dual-stack), %d pods, %d Services (%d headless), %d TrafficSplits (%d with a fault, %d with a mirror), %d HTTPRoutes, %d RetryPolicies, %d AuthPolicies, %d RateLimitPolicies, %d BackendTrafficPolicies",
		m.Seed, len(m.In.Namespaces), strict, len(m.Workloads), fam[IPv4], fam[IPv6], fam[DualStack], len(m.In.Pods),
		len(m.Services), headless, len(m.In.TrafficSplits), faults, mirrors, len(m.In.HTTPRoutes), len(m.In.RetryPolicies), len(m.In.AuthPolicies), len(m.In.RateLimitPolicies), len(m.In.BackendTrafficPolicies))
}

// targetPort is the container port behind a Service port.
func (s *ServiceInfo) targetPort(port int32) int32 {
	for _, sp := range s.Svc.Spec.Ports {
		if sp.Port == port {
			cp, _ := s.Workload.Port(sp.TargetPort)
			return cp.Port
		}
	}
	return 0
}

// excludedIn: the Service port's target port is excluded from inbound
// capture on its workload.
func (s *ServiceInfo) excludedIn(port int32) bool {
	return slices.Contains(s.Workload.ExcludeInbound, s.targetPort(port))
}
