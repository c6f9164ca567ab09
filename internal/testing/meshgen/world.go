package meshgen

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"

	"github.com/weftmesh/weft/dataplane/sim"
	"github.com/weftmesh/weft/internal/cli/offline"
	"github.com/weftmesh/weft/translator"
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
// them, built by the same code as `weft explain` (offline.WorldWithApps):
// translator.Translate, each sidecar's resources as weft-controller builds
// and checks them before a push (the proxy as its node metadata describes
// it, rewritten probes included), each such pod's capture rules from its
// weft-init arguments (IPv4 and IPv6), kube-proxy's Services from the
// EndpointSlices, and DNS: <name>.<namespace>[.svc.cluster.local] to the
// cluster IPs, or to the endpoints of a headless Service. apps says what
// each pod's application listens on.
func BuildWorld(in *translator.Inputs, apps func(*corev1.Pod) []sim.AppSocket) (*sim.World, error) {
	return offline.WorldWithApps(in, translator.Translate(in).Mesh, apps)
}
