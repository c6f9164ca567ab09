// Package meshgen generates random meshes as translator inputs, builds the
// traffic simulator's World from what weft would serve them, and holds a
// reference evaluator of AuthPolicy written from docs/api.md alone. The
// invariant tests (invariants_test.go) walk every source, destination,
// port, protocol, TLS mode and IP family of a generated mesh through
// dataplane/sim and compare the verdicts with what weft's API promises.
//
// The generator knows what it meant (which port speaks what, which pods
// are meshed, which namespaces are Strict); the checks compare the
// simulator's walk of weft's real output with that intent, never with
// weft's own idea of it.
package meshgen

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/webhook"
)

// Proto is what a container port speaks, as the generator meant it.
type Proto string

const (
	ProtoHTTP        Proto = "http"
	ProtoH2C         Proto = "h2c"
	ProtoGRPC        Proto = "grpc"
	ProtoTCP         Proto = "tcp"
	ProtoServerFirst Proto = "server-first" // MySQL-like: the server speaks first
	ProtoTLS         Proto = "tls"          // the application terminates TLS itself
)

// IsHTTP: the port is declared as HTTP of some kind, so the mesh parses
// requests on it.
func (p Proto) IsHTTP() bool { return p == ProtoHTTP || p == ProtoH2C || p == ProtoGRPC }

// Family is a pod's (and its Services') IP families.
type Family int

const (
	IPv4 Family = iota
	IPv6
	DualStack
)

func (f Family) Has(v6 bool) bool {
	return f == DualStack || (f == IPv6) == v6
}

func (f Family) String() string { return [...]string{"IPv4", "IPv6", "dual-stack"}[f] }

// ContainerPort is a port the workload's application listens on.
type ContainerPort struct {
	Name  string
	Port  int32
	Proto Proto
}

// UndeclaredPort is a port every application also listens on that no
// Service declares (an admin port, a debug server).
const UndeclaredPort = 7777

// Workload is a set of replicas with one service account and labels.
type Workload struct {
	Namespace, Name, ServiceAccount string
	Labels                          map[string]string
	Family                          Family
	// Meshed: the pods have the sidecar (and weft-init's capture).
	Meshed bool
	Ports  []ContainerPort
	// ExcludeInbound are ports the pod annotation excludes from inbound
	// capture; ExcludeOutbound destination ports excluded from outbound
	// capture.
	ExcludeInbound, ExcludeOutbound []int32
	// Probe: the readiness probe's container port and path (0: none).
	ProbePort int32
	ProbePath string
	// Pods are the injected pods (what the API server holds after the
	// webhook), with their IPs.
	Pods []*corev1.Pod
}

// Port returns the container port with the name or number.
func (w *Workload) Port(tp intstr.IntOrString) (ContainerPort, bool) {
	for _, p := range w.Ports {
		if (tp.Type == intstr.String && p.Name == tp.StrVal) || (tp.Type == intstr.Int && p.Port == tp.IntVal) {
			return p, true
		}
	}
	return ContainerPort{}, false
}

// ServiceInfo is a generated Service and the workload it selects.
type ServiceInfo struct {
	Svc      *corev1.Service
	Workload *Workload
	// Protos by Service port number.
	Protos map[int32]Proto
}

// Mesh is a generated mesh: the translator's inputs and the generator's
// intent.
type Mesh struct {
	Seed      uint64
	In        *translator.Inputs
	Workloads []*Workload
	Services  []*ServiceInfo
	// Strict namespaces.
	Strict map[string]bool
}

// Options shape a generated mesh; zero values take the defaults below.
type Options struct {
	// Namespaces with injection enabled (each Permissive or Strict at
	// random), besides one namespace without injection ("legacy").
	Namespaces int
	// Workloads per meshed namespace.
	Workloads int
}

const (
	// defaultNamespaces, defaultWorkloads: three meshed namespaces of
	// three workloads (two replicas each) give about 20 pods, enough for
	// every kind of pair, and a few thousand walks per mesh (under a
	// second each mesh on 2 cores).
	defaultNamespaces = 3
	defaultWorkloads  = 3
	// replicas per workload: two, so named target ports resolve on more
	// than one pod (defect 12d's ground).
	replicas = 2
)

// LegacyNamespace has no injection: its pods are unmeshed callers and
// servers.
const LegacyNamespace = "legacy"

// TrustDomain is the mesh's trust domain (MeshConfig's default).
const TrustDomain = "cluster.local"

// servicePorts are the Service port numbers drawn from: few, so that two
// Services often share one (TrafficSplit backends, port-keyed listeners).
var servicePorts = []int32{80, 8080, 9000}

// containerPorts are the application port numbers drawn from.
var containerPorts = []int32{8080, 8443, 9090, 3306, 5000, 6379}

// Generate makes a random mesh from seed.
func Generate(seed uint64, o Options) *Mesh {
	if o.Namespaces == 0 {
		o.Namespaces = defaultNamespaces
	}
	if o.Workloads == 0 {
		o.Workloads = defaultWorkloads
	}
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	m := &Mesh{Seed: seed, In: &translator.Inputs{}, Strict: map[string]bool{}}
	g := &gen{r: r, m: m}
	for n := 0; n <= o.Namespaces; n++ {
		name := fmt.Sprintf("ns-%d", n)
		labels := map[string]string{dataplane.LabelInject: dataplane.InjectEnabled}
		if n == o.Namespaces {
			name, labels = LegacyNamespace, nil
		} else if r.IntN(2) == 0 {
			labels[v1alpha1.LabelMTLSMode] = string(v1alpha1.MTLSModeStrict)
			m.Strict[name] = true
		} else if r.IntN(2) == 0 {
			labels[v1alpha1.LabelMTLSMode] = string(v1alpha1.MTLSModePermissive)
		}
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
		m.In.Namespaces = append(m.In.Namespaces, ns)
		count := o.Workloads
		if name == LegacyNamespace {
			count = 1
		}
		for i := 0; i < count; i++ {
			g.workload(ns, n, i)
		}
	}
	for _, ns := range m.In.Namespaces {
		if ns.Name == LegacyNamespace {
			continue
		}
		g.splits(ns.Name)
		g.retries(ns.Name)
		g.authPolicies(ns.Name)
	}
	// Last, so that the meshes of a seed stay what they were before
	// RateLimitPolicies were generated, plus these.
	for _, ns := range m.In.Namespaces {
		if ns.Name != LegacyNamespace {
			g.rateLimits(ns.Name)
		}
	}
	// Issue 17's policies draw from a stream of their own, so the meshes
	// (and the walks) of every seed keep the shape they had before them.
	p := &gen{r: rand.New(rand.NewPCG(seed^0x17, seed^0x5eed)), m: m, time: g.time}
	for _, ns := range m.In.Namespaces {
		if ns.Name == LegacyNamespace {
			continue
		}
		p.backendPolicies(ns.Name)
		p.faults(ns.Name)
	}
	// HTTPRoutes (issue 17) from a stream of their own too.
	h := &gen{r: rand.New(rand.NewPCG(seed^0x177, seed^0x4077e)), m: m, time: p.time}
	for _, ns := range m.In.Namespaces {
		if ns.Name != LegacyNamespace {
			h.httpRoutes(ns.Name)
		}
	}
	return m
}

// backendPolicies: sometimes a BackendTrafficPolicy on a Service of the
// namespace (one per Service, so none conflicts), with random breakers,
// outlier detection, algorithm and hash key, and connection settings.
func (g *gen) backendPolicies(ns string) {
	for _, s := range g.servicesIn(ns) {
		if !g.chance(0.4) {
			continue
		}
		spec := v1alpha1.BackendTrafficPolicySpec{
			TargetRefs: []v1alpha1.BackendTrafficPolicyTargetReference{{PolicyTargetReference: v1alpha1.PolicyTargetReference{Kind: "Service", Name: s.Svc.Name}}},
		}
		if g.chance(0.7) {
			spec.CircuitBreaker = &v1alpha1.CircuitBreaker{MaxConnections: ptr(int32(1 + g.pick(2000))), MaxRequests: ptr(int32(1 + g.pick(2000)))}
		}
		if g.chance(0.5) {
			spec.OutlierDetection = &v1alpha1.OutlierDetection{Consecutive5xx: ptr(int32(g.pick(10))), MaxEjectionPercent: ptr(int32(g.pick(101)))}
		}
		if g.chance(0.6) {
			lb := &v1alpha1.LoadBalancer{Type: []v1alpha1.LoadBalancerType{v1alpha1.LoadBalancerRoundRobin, v1alpha1.LoadBalancerLeastRequest, v1alpha1.LoadBalancerRingHash, v1alpha1.LoadBalancerMaglev}[g.pick(4)]}
			if lb.Type == v1alpha1.LoadBalancerRingHash || lb.Type == v1alpha1.LoadBalancerMaglev {
				if g.chance(0.5) {
					lb.ConsistentHash = &v1alpha1.ConsistentHash{Type: v1alpha1.ConsistentHashHeader, Header: &v1alpha1.HashHeader{Name: "x-user"}}
				} else {
					lb.ConsistentHash = &v1alpha1.ConsistentHash{Type: v1alpha1.ConsistentHashSourceIP}
				}
			}
			spec.LoadBalancer = lb
		}
		if g.chance(0.4) {
			spec.Connection = &v1alpha1.BackendConnection{ConnectTimeout: v1alpha1.Duration(fmt.Sprintf("%dms", 100+g.pick(5000)))}
		}
		g.m.In.BackendTrafficPolicies = append(g.m.In.BackendTrafficPolicies, &v1alpha1.BackendTrafficPolicy{ObjectMeta: g.meta(ns, "btp-"+s.Svc.Name), Spec: spec})
	}
}

// faults: sometimes a TrafficSplit of the namespace gets a fault (a delay
// and an abort of less than every request, so the walks still follow a
// request to a backend) and a mirror to another Service of the namespace.
func (g *gen) faults(ns string) {
	svcs := g.servicesIn(ns)
	for _, ts := range g.m.In.TrafficSplits {
		if ts.Namespace != ns || !g.chance(0.6) {
			continue
		}
		// Faults and mirrors are HTTP's: a TCP root port would make the
		// split Invalid, and a mirror needs an HTTP port of that number.
		port := *ts.Spec.RootService.Port
		var root *ServiceInfo
		var mirrors []*ServiceInfo
		for _, s := range svcs {
			if s.Svc.Name == ts.Spec.RootService.Name {
				root = s
			}
			if s.Protos[port].IsHTTP() {
				mirrors = append(mirrors, s)
			}
		}
		if root == nil || !root.Protos[port].IsHTTP() {
			continue
		}
		f := &v1alpha1.FaultInjection{}
		if g.chance(0.7) {
			f.Delay = &v1alpha1.FaultDelay{Percent: int32(g.pick(101)), FixedDelay: v1alpha1.Duration(fmt.Sprintf("%dms", 1+g.pick(3000)))}
		}
		if f.Delay == nil || g.chance(0.5) {
			f.Abort = &v1alpha1.FaultAbort{Percent: int32(g.pick(100))}
			if g.chance(0.5) {
				f.Abort.HTTPStatus = ptr(int32(500 + g.pick(100)))
			} else {
				f.Abort.GRPCStatus = ptr(v1alpha1.GRPCStatusCode("UNAVAILABLE"))
			}
		}
		ts.Spec.Fault = f
		if len(mirrors) > 0 && g.chance(0.5) {
			ts.Spec.Mirror = &v1alpha1.RequestMirror{Backend: v1alpha1.MirrorBackend{Name: mirrors[g.pick(len(mirrors))].Svc.Name}, Percent: ptr(int32(g.pick(101)))}
		}
	}
}

type gen struct {
	r    *rand.Rand
	m    *Mesh
	uid  int
	time int64
}

func (g *gen) pick(n int) int { return g.r.IntN(n) }

func (g *gen) chance(p float64) bool { return g.r.Float64() < p }

// meta gives every object a distinct creation time, so that "the older
// wins" is decided.
func (g *gen) meta(ns, name string) metav1.ObjectMeta {
	g.time++
	return metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 1,
		CreationTimestamp: metav1.Unix(1_700_000_000+g.time, 0)}
}

func (g *gen) workload(ns *corev1.Namespace, nsIdx, idx int) {
	w := &Workload{Namespace: ns.Name, Name: fmt.Sprintf("w%d", idx), Family: Family(g.pick(3))}
	w.Labels = map[string]string{"app": w.Name}
	w.ServiceAccount = fmt.Sprintf("sa%d", g.pick(2)) // two workloads may share one
	w.Meshed = ns.Name != LegacyNamespace
	protos := []Proto{ProtoHTTP, ProtoHTTP, ProtoH2C, ProtoGRPC, ProtoTCP, ProtoServerFirst, ProtoTLS}
	nPorts := 1 + g.pick(3)
	for _, n := range g.r.Perm(len(containerPorts))[:nPorts] {
		p := protos[g.pick(len(protos))]
		w.Ports = append(w.Ports, ContainerPort{Name: fmt.Sprintf("%s-%d", p, containerPorts[n]), Port: containerPorts[n], Proto: p})
	}
	slices.SortFunc(w.Ports, func(a, b ContainerPort) int { return int(a.Port - b.Port) })
	ann := map[string]string{}
	if w.Meshed && g.chance(0.25) {
		p := w.Ports[g.pick(len(w.Ports))].Port
		w.ExcludeInbound = []int32{p}
		ann[webhook.AnnotationExcludeInboundPorts] = strconv.Itoa(int(p))
	}
	if w.Meshed && g.chance(0.15) {
		w.ExcludeOutbound = []int32{containerPorts[g.pick(len(containerPorts))]}
		ann[webhook.AnnotationExcludeOutboundPorts] = strconv.Itoa(int(w.ExcludeOutbound[0]))
	}
	for _, p := range w.Ports {
		if p.Proto == ProtoHTTP && g.chance(0.6) {
			w.ProbePort, w.ProbePath = p.Port, "/healthz"
			break
		}
	}
	for rep := 0; rep < replicas; rep++ {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: fmt.Sprintf("%s-%d", w.Name, rep), Labels: w.Labels, Annotations: ann},
			Spec:       corev1.PodSpec{ServiceAccountName: w.ServiceAccount},
		}
		c := corev1.Container{Name: "app", Image: "app"}
		for _, p := range w.Ports {
			c.Ports = append(c.Ports, corev1.ContainerPort{Name: p.Name, ContainerPort: p.Port, Protocol: corev1.ProtocolTCP})
		}
		if w.ProbePort != 0 {
			c.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: w.ProbePath, Port: intstr.FromInt32(w.ProbePort)}}}
		}
		pod.Spec.Containers = []corev1.Container{c}
		if w.Meshed {
			out, _, err := webhook.Inject(pod, ns, nil, webhook.Options{})
			if err != nil {
				panic(fmt.Sprintf("meshgen: injecting %s/%s: %v", pod.Namespace, pod.Name, err))
			}
			pod = out
		}
		if w.Family.Has(false) {
			pod.Status.PodIPs = append(pod.Status.PodIPs, corev1.PodIP{IP: fmt.Sprintf("10.%d.%d.%d", nsIdx+1, idx, rep+10)})
		}
		if w.Family.Has(true) {
			pod.Status.PodIPs = append(pod.Status.PodIPs, corev1.PodIP{IP: canonical(fmt.Sprintf("fd00:%d::%d:%d", nsIdx+1, idx, rep+10))})
		}
		pod.Status.PodIP = pod.Status.PodIPs[0].IP
		pod.Status.Phase = corev1.PodRunning
		w.Pods = append(w.Pods, pod)
		g.m.In.Pods = append(g.m.In.Pods, pod)
	}
	g.m.Workloads = append(g.m.Workloads, w)
	g.service(w, w.Name, nsIdx, idx, false)
	if g.chance(0.3) {
		g.service(w, w.Name+"-hl", nsIdx, idx, true) // a headless Service beside it
	}
}

// service declares a Service selecting w with a port for some (at least
// one) of its container ports, and its EndpointSlices.
func (g *gen) service(w *Workload, name string, nsIdx, idx int, headless bool) {
	svc := &corev1.Service{ObjectMeta: g.meta(w.Namespace, name), Spec: corev1.ServiceSpec{Selector: w.Labels}}
	info := &ServiceInfo{Svc: svc, Workload: w, Protos: map[int32]Proto{}}
	sub := headlessIdx(headless)
	switch {
	case headless:
		svc.Spec.ClusterIP = corev1.ClusterIPNone
	default:
		if w.Family.Has(false) {
			svc.Spec.ClusterIPs = append(svc.Spec.ClusterIPs, fmt.Sprintf("10.96.%d.%d", nsIdx+1, idx*2+sub))
		}
		if w.Family.Has(true) {
			svc.Spec.ClusterIPs = append(svc.Spec.ClusterIPs, canonical(fmt.Sprintf("fd00:96::%d:%d", nsIdx+1, idx*2+sub)))
		}
		svc.Spec.ClusterIP = svc.Spec.ClusterIPs[0]
	}
	switch w.Family {
	case IPv4:
		svc.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol}
	case IPv6:
		svc.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
	default:
		svc.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
	}
	used := map[int32]bool{}
	for i, cp := range w.Ports {
		if i > 0 && g.chance(0.25) {
			continue // not every container port is declared
		}
		sp := servicePorts[g.pick(len(servicePorts))]
		for used[sp] {
			sp++
		}
		used[sp] = true
		port := corev1.ServicePort{Name: portName(cp.Proto, sp), Port: sp, Protocol: corev1.ProtocolTCP}
		if cp.Proto == ProtoH2C && g.chance(0.5) {
			// declared by appProtocol instead of the name
			ap := "kubernetes.io/h2c"
			port.AppProtocol, port.Name = &ap, fmt.Sprintf("p-%d", sp)
		}
		if g.chance(0.5) {
			port.TargetPort = intstr.FromString(cp.Name)
		} else {
			port.TargetPort = intstr.FromInt32(cp.Port)
		}
		svc.Spec.Ports = append(svc.Spec.Ports, port)
		info.Protos[sp] = cp.Proto
	}
	g.m.In.Services = append(g.m.In.Services, svc)
	g.m.Services = append(g.m.Services, info)
	ready := true
	for _, v6 := range []bool{false, true} {
		if !w.Family.Has(v6) {
			continue
		}
		typ := discoveryv1.AddressTypeIPv4
		if v6 {
			typ = discoveryv1.AddressTypeIPv6
		}
		es := &discoveryv1.EndpointSlice{ObjectMeta: g.meta(w.Namespace, fmt.Sprintf("%s-%s", name, map[bool]string{false: "v4", true: "v6"}[v6])), AddressType: typ}
		es.Labels = map[string]string{discoveryv1.LabelServiceName: name}
		for _, sp := range svc.Spec.Ports {
			cp, _ := w.Port(sp.TargetPort)
			es.Ports = append(es.Ports, discoveryv1.EndpointPort{Name: ptr(sp.Name), Port: ptr(cp.Port), Protocol: ptr(corev1.ProtocolTCP)})
		}
		for _, pod := range w.Pods {
			for _, ip := range pod.Status.PodIPs {
				if is6(netip.MustParseAddr(ip.IP)) == v6 {
					es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
						Addresses:  []string{ip.IP},
						Conditions: discoveryv1.EndpointConditions{Ready: &ready},
						TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name},
					})
				}
			}
		}
		g.m.In.EndpointSlices = append(g.m.In.EndpointSlices, es)
	}
}

func headlessIdx(h bool) int {
	if h {
		return 1
	}
	return 0
}

// portName names a Service port so that its protocol follows from the
// name prefix (Istio's convention, which weft reads).
func portName(p Proto, n int32) string {
	switch p {
	case ProtoHTTP:
		return fmt.Sprintf("http-%d", n)
	case ProtoH2C:
		return fmt.Sprintf("http2-%d", n)
	case ProtoGRPC:
		return fmt.Sprintf("grpc-%d", n)
	case ProtoTLS:
		return fmt.Sprintf("tls-%d", n)
	case ProtoServerFirst:
		return fmt.Sprintf("mysql-%d", n)
	}
	return fmt.Sprintf("tcp-%d", n)
}

// servicesIn are the non-headless Services of a namespace.
func (g *gen) servicesIn(ns string) []*ServiceInfo {
	var out []*ServiceInfo
	for _, s := range g.m.Services {
		if s.Svc.Namespace == ns && s.Svc.Spec.ClusterIP != corev1.ClusterIPNone {
			out = append(out, s)
		}
	}
	return out
}

// splits: sometimes a TrafficSplit from one Service's port to itself and
// another Service of the namespace with a port of the same protocol.
func (g *gen) splits(ns string) {
	svcs := g.servicesIn(ns)
	if len(svcs) < 2 || !g.chance(0.6) {
		return
	}
	root, other := svcs[g.pick(len(svcs))], svcs[g.pick(len(svcs))]
	if root == other {
		return
	}
	for _, rp := range root.Svc.Spec.Ports {
		for _, op := range other.Svc.Spec.Ports {
			if root.Protos[rp.Port] != other.Protos[op.Port] {
				continue
			}
			ts := &v1alpha1.TrafficSplit{ObjectMeta: g.meta(ns, root.Svc.Name), Spec: v1alpha1.TrafficSplitSpec{
				RootService: v1alpha1.RootServiceReference{Name: root.Svc.Name, Port: ptr(rp.Port)},
				Backends: []v1alpha1.Backend{
					{Name: root.Svc.Name, Weight: ptr(int32(1 + g.pick(100)))},
					{Name: other.Svc.Name, Port: ptr(op.Port), Weight: ptr(int32(1 + g.pick(100)))},
				},
			}}
			g.m.In.TrafficSplits = append(g.m.In.TrafficSplits, ts)
			return
		}
	}
}

func (g *gen) retries(ns string) {
	svcs := g.servicesIn(ns)
	if len(svcs) == 0 || !g.chance(0.5) {
		return
	}
	s := svcs[g.pick(len(svcs))]
	rp := &v1alpha1.RetryPolicy{ObjectMeta: g.meta(ns, "retry-"+s.Svc.Name), Spec: v1alpha1.RetryPolicySpec{
		TargetRefs: []v1alpha1.RetryPolicyTargetReference{{PolicyTargetReference: v1alpha1.PolicyTargetReference{Kind: "Service", Name: s.Svc.Name}}},
		RetryOn:    []v1alpha1.RetryCondition{"connect-failure", "5xx"},
		Attempts:   ptr(int32(g.pick(4))),
	}}
	g.m.In.RetryPolicies = append(g.m.In.RetryPolicies, rp)
}

// Paths and methods the AuthPolicies name and the calls sample.
var (
	policyPaths = []v1alpha1.PathMatch{
		{Type: v1alpha1.PathMatchExact, Value: "/admin"},
		{Type: v1alpha1.PathMatchPathPrefix, Value: "/admin"},
		{Value: "/api"},
		{Type: v1alpha1.PathMatchPathPrefix, Value: "/api/"},
		{Type: v1alpha1.PathMatchExact, Value: "/"},
	}
	policyMethods = []v1alpha1.HTTPMethod{"GET", "POST", "DELETE"}
)

func (g *gen) authPolicies(ns string) {
	n := g.pick(4)
	for i := 0; i < n; i++ {
		ap := &v1alpha1.AuthPolicy{ObjectMeta: g.meta(ns, fmt.Sprintf("ap-%d", i))}
		svcs := g.m.Services
		var local []*ServiceInfo
		for _, s := range svcs {
			if s.Svc.Namespace == ns {
				local = append(local, s)
			}
		}
		if g.chance(0.3) || len(local) == 0 {
			ap.Spec.TargetRefs = []v1alpha1.AuthPolicyTargetReference{{PolicyTargetReference: v1alpha1.PolicyTargetReference{Kind: "Namespace", Name: ns}}}
		} else {
			for _, k := range g.r.Perm(len(local))[:1+g.pick(min(2, len(local)))] {
				ap.Spec.TargetRefs = append(ap.Spec.TargetRefs, v1alpha1.AuthPolicyTargetReference{PolicyTargetReference: v1alpha1.PolicyTargetReference{Kind: "Service", Name: local[k].Svc.Name}})
			}
		}
		ap.Spec.Action = v1alpha1.AuthActionAllow
		if g.chance(0.5) {
			ap.Spec.Action = v1alpha1.AuthActionDeny
		}
		ap.Spec.Mode = v1alpha1.AuthModeEnforce
		if g.chance(0.2) {
			ap.Spec.Mode = v1alpha1.AuthModeDryRun
		}
		for k := 1 + g.pick(3); k > 0; k-- {
			ap.Spec.Rules = append(ap.Spec.Rules, g.rule())
		}
		g.m.In.AuthPolicies = append(g.m.In.AuthPolicies, ap)
	}
}

func (g *gen) rule() v1alpha1.AuthRule {
	var r v1alpha1.AuthRule
	if g.chance(0.7) {
		src := &v1alpha1.AuthSource{}
		for src.ServiceAccounts == nil && src.Namespaces == nil && src.IPBlocks == nil {
			if g.chance(0.5) {
				w := g.m.Workloads[g.pick(len(g.m.Workloads))]
				src.ServiceAccounts = []string{w.Namespace + "/" + w.ServiceAccount}
			}
			if g.chance(0.3) {
				src.Namespaces = []string{g.m.In.Namespaces[g.pick(len(g.m.In.Namespaces))].Name}
			}
			if g.chance(0.3) {
				src.IPBlocks = []string{g.ipBlock()}
			}
		}
		r.From = src
	}
	if g.chance(0.6) {
		op := &v1alpha1.AuthOperation{}
		for op.Ports == nil && op.Methods == nil && op.Paths == nil {
			if g.chance(0.4) {
				op.Ports = []int32{containerPorts[g.pick(len(containerPorts))]}
			}
			if g.chance(0.4) {
				op.Methods = []v1alpha1.HTTPMethod{policyMethods[g.pick(len(policyMethods))]}
			}
			if g.chance(0.4) {
				op.Paths = []v1alpha1.PathMatch{policyPaths[g.pick(len(policyPaths))]}
			}
		}
		r.To = op
	}
	return r
}

// ipBlock: a pod's address, a namespace's range (v4 or v6), or the
// outside callers' range.
func (g *gen) ipBlock() string {
	switch g.pick(4) {
	case 0:
		w := g.m.Workloads[g.pick(len(g.m.Workloads))]
		a := netip.MustParseAddr(w.Pods[0].Status.PodIPs[0].IP)
		return netip.PrefixFrom(a, a.BitLen()).String()
	case 1:
		return fmt.Sprintf("10.%d.0.0/16", 1+g.pick(len(g.m.In.Namespaces)))
	case 2:
		return fmt.Sprintf("fd00:%d::/32", 1+g.pick(len(g.m.In.Namespaces)))
	}
	return "192.0.2.0/24"
}

// canonical writes an address as the API server stores it (RFC 5952 for
// IPv6: fd00:3::10, not fd00:3::0:10).
func canonical(a string) string { return netip.MustParseAddr(a).String() }

func is6(a netip.Addr) bool { return a.Is6() && !a.Is4In6() }

func ptr[T any](v T) *T { return &v }
