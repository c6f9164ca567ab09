package sim_test

import (
	"encoding/json"
	"net/netip"
	"os"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/weftmesh/weft/capture"
	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/dataplane/sim"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/envoy"
)

// weftWorld builds a World from translator inputs exactly as weft serves
// them today: translator.Translate, then envoy.Build for every pod with the
// weft-proxy container, and weft-init's default capture rules
// (capture.Rules and capture.RulesV6 of capture.Defaults(), applied with
// iptables-restore and ip6tables-restore). Every application listens
// on its Services' target ports, bound to [::] (every address of the pod,
// IPv4 included, as Go and Java servers bind by default).
//
// extra are more YAML documents appended to the file's (a policy or a pod
// a test needs beside the file's mesh).
func weftWorld(t *testing.T, path string, extra ...string) *sim.World {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range extra {
		data = append(data, "\n---\n"+e...)
	}
	in, err := translator.DecodeInputs(data)
	if err != nil {
		t.Fatal(err)
	}
	mesh := translator.Translate(in).Mesh
	rules, err := capture.Rules(capture.Defaults())
	if err != nil {
		t.Fatal(err)
	}
	v4, err := sim.ParseNAT(rules)
	if err != nil {
		t.Fatal(err)
	}
	rules6, err := capture.RulesV6(capture.Defaults())
	if err != nil {
		t.Fatal(err)
	}
	v6, err := sim.ParseNAT(rules6)
	if err != nil {
		t.Fatal(err)
	}
	w := &sim.World{DNS: map[string][]netip.Addr{}}
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
		for _, sp := range svc.Spec.Ports {
			port := sim.ServicePort{Port: uint16(sp.Port)}
			for _, es := range in.EndpointSlices {
				if es.Namespace != svc.Namespace || es.Labels["kubernetes.io/service-name"] != svc.Name {
					continue
				}
				for _, p := range es.Ports {
					if p.Port == nil || (p.Name != nil && *p.Name != sp.Name) {
						continue
					}
					for _, e := range es.Endpoints {
						for _, a := range e.Addresses {
							port.Endpoints = append(port.Endpoints, netip.AddrPortFrom(netip.MustParseAddr(a), uint16(*p.Port)))
						}
					}
				}
			}
			s.Ports = append(s.Ports, port)
		}
		w.Services = append(w.Services, s)
		for _, n := range []string{svc.Name + "." + svc.Namespace, svc.Name + "." + svc.Namespace + ".svc.cluster.local"} {
			w.DNS[n] = s.ClusterIPs
		}
	}
	for _, pod := range in.Pods {
		p := &sim.Pod{Namespace: pod.Namespace, Name: pod.Name}
		for _, ip := range pod.Status.PodIPs {
			p.IPs = append(p.IPs, netip.MustParseAddr(ip.IP))
		}
		// The application listens where its endpoints say it does.
		seen := map[uint16]bool{}
		for _, s := range w.Services {
			for _, sp := range s.Ports {
				for _, e := range sp.Endpoints {
					if slicesContains(p.IPs, e.Addr()) && !seen[e.Port()] {
						seen[e.Port()] = true
						p.Apps = append(p.Apps, sim.AppSocket{Port: e.Port(), Bind: netip.IPv6Unspecified()})
					}
				}
			}
		}
		if sidecar(pod) {
			proxy := proxyOf(pod)
			res := envoy.Build(mesh, proxy)
			p.Proxy = &sim.Resources{Listeners: res.Listeners, Routes: res.Routes, Clusters: res.Clusters, Endpoints: res.Endpoints}
			p.Identity = proxy.Identity(mesh.TrustDomain)
			p.CaptureV4, p.CaptureV6 = v4, v6
			if in := excludedInbound(t, pod); len(in) > 0 {
				o := capture.Defaults()
				o.ExcludeInboundPorts = in
				p.CaptureV4, p.CaptureV6 = mustNAT(t, capture.Rules, o), mustNAT(t, capture.RulesV6, o)
			}
		}
		w.Pods = append(w.Pods, p)
	}
	return w
}

// excludedInbound reads weft-init's --exclude-inbound-ports from the pod's
// init container, as weft-init would.
func excludedInbound(t *testing.T, p *corev1.Pod) []uint16 {
	t.Helper()
	for _, c := range p.Spec.InitContainers {
		if c.Name != dataplane.InitContainerName {
			continue
		}
		for _, a := range c.Args {
			if v, ok := strings.CutPrefix(a, "--exclude-inbound-ports="); ok {
				ports, err := capture.ParsePorts(v)
				if err != nil {
					t.Fatal(err)
				}
				return ports
			}
		}
	}
	return nil
}

func mustNAT(t *testing.T, of func(capture.Options) (string, error), o capture.Options) *sim.NAT {
	t.Helper()
	rules, err := of(o)
	if err != nil {
		t.Fatal(err)
	}
	n, err := sim.ParseNAT(rules)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func slicesContains(as []netip.Addr, a netip.Addr) bool {
	for _, x := range as {
		if x == a {
			return true
		}
	}
	return false
}

// sidecar: the pod has the injected proxy container.
func sidecar(p *corev1.Pod) bool {
	for _, c := range append(append([]corev1.Container(nil), p.Spec.InitContainers...), p.Spec.Containers...) {
		if c.Name == dataplane.SidecarContainerName {
			return true
		}
	}
	return false
}

// proxyOf is translator/envoy's test helper of the same name: what the xDS
// server learns of a pod's proxy.
func proxyOf(p *corev1.Pod) dataplane.Proxy {
	sa := p.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	var ips []string
	for _, ip := range p.Status.PodIPs {
		ips = append(ips, ip.IP)
	}
	px := dataplane.Proxy{Namespace: p.Namespace, ServiceAccount: sa, Labels: p.Labels, IPs: ips, Kind: dataplane.KindSidecar}
	if v := p.Annotations[dataplane.AnnotationAppProbes]; v != "" {
		// What the bootstrap sends in the node metadata, from the annotation.
		if err := json.Unmarshal([]byte(v), &px.AppProbes); err != nil {
			panic(err)
		}
	}
	return px
}

func podOf(t *testing.T, w *sim.World, key string) *sim.Pod {
	t.Helper()
	for _, p := range w.Pods {
		if p.Key() == key {
			return p
		}
	}
	t.Fatalf("no pod %s", key)
	return nil
}

// walk runs a call and logs its trace.
func walk(t *testing.T, w *sim.World, c sim.Call) sim.Verdict {
	t.Helper()
	r := w.Walk(c)
	from := c.From
	if from == "" {
		from = c.FromAddr.String()
	}
	t.Logf("%s -> %s:\n  %s\n  => %s", from, c.To, strings.Join(r.Trace, "\n  "), r.Verdict)
	return r.Verdict
}
