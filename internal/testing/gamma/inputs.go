package gamma

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/dataplane/sim"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/webhook"
)

// BaseManifests is the mesh profile's shared setup (namespaces, the echo
// Deployments and Services), relative to the module root.
const BaseManifests = "mesh/manifests.yaml"

// Cluster is what the manifests make once applied to a cluster with weft:
// the translator's inputs (pods injected, addresses and EndpointSlices
// assigned as the cluster's controllers would) and what each pod's
// application listens on.
type Cluster struct {
	In   *translator.Inputs
	Apps map[string][]sim.AppSocket // by pod key
	// Unsupported names the objects weft does not read, with the reason.
	Unsupported []string
}

// Load applies the manifests (paths relative to the module at dir) in
// order. Namespaces get weft's injection label, as a user enabling the
// mesh for them would do; each Deployment gets one pod, injected by
// weft's webhook.
func Load(dir string, manifests ...string) (*Cluster, error) {
	c := &Cluster{In: &translator.Inputs{}, Apps: map[string][]sim.AppSocket{}}
	var deployments []*appsv1.Deployment
	for _, m := range manifests {
		data, err := os.ReadFile(filepath.Join(dir, m))
		if err != nil {
			return nil, err
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
		for i := 0; ; i++ {
			var raw runtime.RawExtension
			if err := dec.Decode(&raw); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return nil, fmt.Errorf("%s document %d: %w", m, i, err)
			}
			doc := bytes.TrimSpace(raw.Raw)
			if len(doc) == 0 || string(doc) == "null" {
				continue
			}
			var meta metav1.TypeMeta
			if err := yaml.Unmarshal(doc, &meta); err != nil {
				return nil, err
			}
			if meta.Kind == "Deployment" {
				var d appsv1.Deployment
				if err := yaml.Unmarshal(doc, &d); err != nil {
					return nil, err
				}
				deployments = append(deployments, &d)
				continue
			}
			in, err := translator.DecodeInputs(doc)
			if err != nil {
				var obj struct {
					Kind     string
					Metadata struct{ Namespace, Name string }
				}
				_ = yaml.Unmarshal(doc, &obj)
				c.Unsupported = append(c.Unsupported, fmt.Sprintf("%s %s/%s: %v", obj.Kind, obj.Metadata.Namespace, obj.Metadata.Name, err))
				continue
			}
			c.In.Add(in)
		}
	}
	for _, ns := range c.In.Namespaces {
		if ns.Labels == nil {
			ns.Labels = map[string]string{}
		}
		ns.Labels[dataplane.LabelInject] = dataplane.InjectEnabled
	}
	for i, s := range c.In.Services {
		if s.Spec.ClusterIP == "" {
			s.Spec.ClusterIP = fmt.Sprintf("10.96.%d.%d", i/250, 1+i%250)
			s.Spec.ClusterIPs = []string{s.Spec.ClusterIP}
		}
	}
	for i, d := range deployments {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: d.Namespace, Name: d.Name + "-0", Labels: d.Spec.Template.Labels},
			Spec: *d.Spec.Template.Spec.DeepCopy()}
		var ns *corev1.Namespace
		for _, n := range c.In.Namespaces {
			if n.Name == d.Namespace {
				ns = n
			}
		}
		out, _, err := webhook.Inject(pod, ns, c.In.MeshConfig, webhook.Options{})
		if err != nil {
			return nil, fmt.Errorf("injecting %s/%s: %w", pod.Namespace, pod.Name, err)
		}
		ip := fmt.Sprintf("10.244.%d.%d", i/250, 1+i%250)
		out.Status.PodIP, out.Status.PodIPs, out.Status.Phase = ip, []corev1.PodIP{{IP: ip}}, corev1.PodRunning
		c.In.Pods = append(c.In.Pods, out)
		c.Apps[out.Namespace+"/"+out.Name] = echoSockets(out)
	}
	c.endpointSlices()
	return c, nil
}

// echoSockets: what the conformance echo server listens on, from its
// arguments (--port=N and --grpc=N serve plaintext, --tcp=N raw TCP,
// --tls=N marks a --port as TLS), bound to every address.
func echoSockets(p *corev1.Pod) []sim.AppSocket {
	ports := map[uint16]bool{} // port -> TLS
	for _, c := range p.Spec.Containers {
		for _, a := range c.Args {
			k, v, ok := strings.Cut(a, "=")
			n, err := strconv.Atoi(v)
			if !ok || err != nil {
				continue
			}
			switch k {
			case "--port", "--tcp", "--grpc":
				if _, seen := ports[uint16(n)]; !seen {
					ports[uint16(n)] = false
				}
			case "--tls":
				ports[uint16(n)] = true
			}
		}
	}
	var out []sim.AppSocket
	for port, tls := range ports {
		out = append(out, sim.AppSocket{Port: port, Bind: netip.IPv6Unspecified(), TLS: tls})
	}
	return out
}

// endpointSlices does what the EndpointSlice controller does: one slice
// per Service with the ready pods its selector picks.
func (c *Cluster) endpointSlices() {
	ready := true
	for _, s := range c.In.Services {
		if len(s.Spec.Selector) == 0 {
			continue
		}
		es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name + "-1",
			Labels: map[string]string{discoveryv1.LabelServiceName: s.Name}}, AddressType: discoveryv1.AddressTypeIPv4}
		for _, sp := range s.Spec.Ports {
			port := sp.Port
			switch {
			case sp.TargetPort.Type == intstr.Int && sp.TargetPort.IntVal != 0:
				port = sp.TargetPort.IntVal
			case sp.TargetPort.Type == intstr.String && sp.TargetPort.StrVal != "":
				port = 0 // named: resolved per pod; the echo pods name none
			}
			name, proto := sp.Name, corev1.ProtocolTCP
			es.Ports = append(es.Ports, discoveryv1.EndpointPort{Name: &name, Port: &port, Protocol: &proto, AppProtocol: sp.AppProtocol})
		}
		for _, p := range c.In.Pods {
			if p.Namespace != s.Namespace || !selects(s.Spec.Selector, p.Labels) {
				continue
			}
			es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{p.Status.PodIP},
				Conditions: discoveryv1.EndpointConditions{Ready: &ready},
				TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: p.Namespace, Name: p.Name}})
		}
		c.In.EndpointSlices = append(c.In.EndpointSlices, es)
	}
}

func selects(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return len(sel) > 0
}

// Pod finds the pod of a client: in its namespace, matching its label
// selector ("app=echo,version=v1").
func (c *Cluster) Pod(cl Client) *corev1.Pod {
	sel := map[string]string{}
	for _, kv := range strings.Split(cl.App, ",") {
		k, v, _ := strings.Cut(kv, "=")
		sel[k] = v
	}
	for _, p := range c.In.Pods {
		if p.Namespace == cl.Namespace && selects(sel, p.Labels) {
			return p
		}
	}
	return nil
}
