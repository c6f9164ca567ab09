package meshgen

import (
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/weftmesh/weft/dataplane/sim"
)

// The tests in this file assert what weft should do where the invariant
// tests found a defect beyond issue 12's list. Each was run without its
// skip and failed; whoever fixes the defect removes the skip (and the
// item from knownDefects).

// new-1: a raw TCP (or TLS, or server-first) connection from a meshed pod
// to another pod's address, on a port number where some visible Service
// speaks HTTP, is taken by that port's outbound HTTP filter chain (it
// matches every destination address) and reset as a codec error, instead
// of being passed through (or meshed) as TCP.
func TestNew1_TCPToAPodOnAnHTTPServicePort(t *testing.T) {
	for seed := uint64(1); seed <= defaultMeshes; seed++ {
		m := Generate(seed, Options{})
		w, err := m.World(false)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range m.Cases() {
			if c.Via != ViaPodIP || c.Source == nil || !c.Source.Meshed || c.Call.Protocol != sim.TCP || c.Call.TLS != nil || !m.httpServicePort(c.Port) {
				continue
			}
			r := w.Walk(c.Call)
			if v := r.Verdict; v.Kind == sim.Reset && strings.HasPrefix(v.Reason, c.SourcePod.Namespace+"/"+c.SourcePod.Name+":") {
				t.Fatalf("seed %d: %s: the caller's own sidecar resets it\n%s", seed, c, r)
			}
		}
	}
}

// httpServicePort: some Service (not headless) declares the port number
// as HTTP.
func (m *Mesh) httpServicePort(port int32) bool {
	for _, s := range m.Services {
		if s.Svc.Spec.ClusterIP != corev1.ClusterIPNone && s.Protos[port].IsHTTP() {
			return true
		}
	}
	return false
}

// new-2: weft-init's hairpin rule (nat OUTPUT: ! -d 127.0.0.1 -o lo
// --uid-owner <proxy> -j WEFT_IN_REDIRECT) jumps past WEFT_INBOUND's
// RETURN rules for excluded inbound ports: a sidecar calling a Service
// whose endpoint is its own pod, on a port the pod excludes from inbound
// capture, reaches its own inbound listener instead of the application.
func TestNew2_HairpinIgnoresExcludedInboundPorts(t *testing.T) {
	found := false
	for seed := uint64(1); seed <= 40 && !found; seed++ {
		m := Generate(seed, Options{})
		w, err := m.World(false)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range m.Cases() {
			if c.Via != ViaService || c.Source == nil || !c.Source.Meshed || c.Service.Workload != c.Source || !c.Service.excludedIn(c.Port) {
				continue
			}
			r := w.Walk(c.Call)
			self := c.SourcePod.Namespace + "/" + c.SourcePod.Name
			if !strings.Contains(strings.Join(r.Trace, "\n"), "envoy: listener \"inbound\"") || r.Verdict.Pod != self {
				continue // another replica served it
			}
			found = true
			t.Errorf("seed %d: %s: the pod's own call on an excluded port went through its inbound listener\n%s", seed, c, r)
			break
		}
	}
	if !found {
		t.Log("no hairpin call on an excluded port went through the inbound listener")
	}
}

// new-7: mayReach refuses a Service whose own (and namespace) AuthPolicies
// admit no request of the caller, but AuthPolicy applies per workload: in
// seed 138, ap-2 targets the headless w2-hl, which selects the same pods
// as w2, and allows ns-1/sa0; ns-1/w0-0 (ns-1/sa0) calling w2 gets 403 from
// its own sidecar.
func TestNew7_RefusalIgnoresPoliciesOfTheWorkloadsOtherServices(t *testing.T) {
	m := Generate(138, Options{})
	w, err := m.World(false)
	if err != nil {
		t.Fatal(err)
	}
	r := w.Walk(sim.Call{From: "ns-1/w0-0", To: "w2.ns-1:9000", Protocol: sim.GRPC, Path: "/api"})
	if v := r.Verdict; v.Kind != sim.Delivered || !v.MTLS || !strings.HasPrefix(v.Pod, "ns-1/w2-") {
		t.Errorf("ns-1/w0-0 (allowed by ap-2 through w2-hl) calling w2: %s\n%s", v, r)
	}
}

// new-8: in seed 8, ns-2's ap-0 denies every caller from namespace ns-1,
// so ns-1's sidecars drop ns-2's Services (mayReach) and must refuse
// calls to them. Over IPv6 the headless w0-hl's endpoint address is not
// refused: the call leaves in plaintext passthrough and ns-2/w0-0
// (Permissive) serves it, the namespace Deny having no identity to match.
// In seed 24, ns-0/ap-0 denies ns-0/w0-1 (itself a pod of the headless
// w0-hl) and ns-0/w1-*: over IPv4 their calls to w0-hl (w0-0's address)
// escaped the same way.
func TestNew8_HeadlessIPv6EscapesTheRefusal(t *testing.T) {
	for _, tc := range []struct {
		seed uint64
		call sim.Call
	}{
		{8, sim.Call{From: "ns-1/w0-0", To: "w0-hl.ns-2:5000", IPv6: true, Protocol: sim.GRPC, Path: "/x"}},
		{24, sim.Call{From: "ns-0/w0-1", To: "w0-hl.ns-0:5000", Protocol: sim.H2C, Method: "POST", Path: "/"}},
		{24, sim.Call{From: "ns-0/w1-0", To: "w0-hl.ns-0:8443", Protocol: sim.TCP}},
	} {
		m := Generate(tc.seed, Options{})
		w, err := m.World(false)
		if err != nil {
			t.Fatal(err)
		}
		r := w.Walk(tc.call)
		if v := r.Verdict; v.Kind == sim.Delivered || v.Kind == sim.PassthroughPlaintext {
			t.Errorf("seed %d: %s, denied by a namespace AuthPolicy, reached the headless %s: %s\n%s", tc.seed, tc.call.From, tc.call.To, v, r)
		}
	}
}

// new-6: a dual-stack Service's outbound cluster held the endpoints of
// both families. A meshed caller's sidecar must carry a call to the
// Service's IPv4 cluster IP to an IPv4 endpoint and to its IPv6 cluster
// IP to an IPv6 endpoint, as kube-proxy would (it never translates
// families): otherwise a single-stack caller is handed an endpoint it has
// no address to reach, and a dual-stack caller reaches the server from its
// address of the other family, which the server's ipBlocks judge. In seed
// 1, the dual-stack ns-0/w0-0 calling its own Service w0 at its IPv6
// cluster IP (TCP, port 9000) was carried to the IPv4 endpoint
// 10.1.0.10:5000.
func TestNew6_DualStackServiceKeepsTheCalledFamily(t *testing.T) {
	checked := 0
	for seed := uint64(1); seed <= defaultMeshes; seed++ {
		m := Generate(seed, Options{})
		w, err := m.World(false)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range m.Cases() {
			if c.Via != ViaService || c.Source == nil || !c.Source.Meshed || c.Service.Workload.Family != DualStack {
				continue
			}
			r := w.Walk(c.Call)
			if dw, _ := m.Workload(r.Verdict.Pod); dw != nil && dw.Family != DualStack {
				// A route (an HTTPRoute rule) sent the call to a
				// single-stack backend: it has one family to use.
				continue
			}
			src := c.SourcePod.Namespace + "/" + c.SourcePod.Name + " envoy: cluster "
			for _, line := range r.Trace {
				i := strings.Index(line, src)
				j := strings.LastIndex(line, "-> endpoint ")
				if i < 0 || j < 0 {
					continue
				}
				ep, err := netip.ParseAddrPort(strings.Fields(line[j+len("-> endpoint "):])[0])
				if err != nil {
					t.Fatalf("seed %d: %s: %v", seed, line, err)
				}
				checked++
				if ep.Addr().Is6() != c.V6 {
					t.Fatalf("seed %d: %s: the caller's sidecar chose the %s endpoint %s: %s\n%s", seed, c, family(ep.Addr().Is6()), ep, r.Verdict, r)
				}
				break
			}
		}
	}
	if checked == 0 {
		t.Fatal("no call to a dual-stack Service went through a caller's EDS cluster")
	}
	t.Logf("%d calls to dual-stack Services kept their family", checked)
}
