package envoy_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/dataplane"
	"github.com/weftmesh/weft/translator"
	"github.com/weftmesh/weft/translator/envoy"
)

var update = flag.Bool("update", false, "rewrite the golden files (then read every diff before committing)")

// TestGolden builds, for every meshed pod of testdata/NAME.in.yaml (a pod
// with the weft-proxy container, or a proxyless gRPC one by annotation),
// that proxy's resources, checks that they
// validate, and compares each xDS type with
// testdata/NAME.NAMESPACE-POD.{listeners,routes,clusters,endpoints}.yaml.
func TestGolden(t *testing.T) {
	inputs, _ := filepath.Glob("testdata/*.in.yaml")
	if len(inputs) == 0 {
		t.Fatal("no test cases in testdata/")
	}
	want := map[string]bool{}
	for _, inPath := range inputs {
		name := strings.TrimSuffix(filepath.Base(inPath), ".in.yaml")
		data, err := os.ReadFile(inPath)
		if err != nil {
			t.Fatal(err)
		}
		in, err := translator.DecodeInputs(data)
		if err != nil {
			t.Fatalf("%s: %v", inPath, err)
		}
		mesh := translator.Translate(in).Mesh
		proxies := 0
		for _, pod := range in.Pods {
			if !meshed(pod) {
				continue
			}
			proxies++
			t.Run(name+"/"+pod.Namespace+"-"+pod.Name, func(t *testing.T) {
				res := envoy.Build(mesh, proxyOf(pod))
				if err := res.Validate(); err != nil {
					t.Fatalf("invalid resources: %v", err)
				}
				for typ, msgs := range map[string][]proto.Message{
					"listeners": list(res.Listeners), "routes": list(res.Routes),
					"clusters": list(res.Clusters), "endpoints": list(res.Endpoints),
				} {
					path := filepath.Join("testdata", fmt.Sprintf("%s.%s-%s.%s.yaml", name, pod.Namespace, pod.Name, typ))
					want[path] = true
					compare(t, path, render(t, msgs))
				}
			})
		}
		if proxies == 0 {
			t.Errorf("%s has no pod with the weft-proxy container: nothing to build", inPath)
		}
	}
	goldens, _ := filepath.Glob("testdata/*.*.*.yaml")
	for _, g := range goldens {
		if strings.HasSuffix(g, ".in.yaml") || want[g] {
			continue
		}
		if *update {
			t.Logf("removing stale golden %s", g)
			_ = os.Remove(g)
		} else {
			t.Errorf("stale golden %s: run with -update to remove it", g)
		}
	}
}

func meshed(p *corev1.Pod) bool {
	if p.Annotations[dataplane.AnnotationProxyless] == "grpc" {
		return true
	}
	for _, c := range append(append([]corev1.Container(nil), p.Spec.InitContainers...), p.Spec.Containers...) {
		if c.Name == dataplane.SidecarContainerName {
			return true
		}
	}
	return false
}

func proxyOf(p *corev1.Pod) dataplane.Proxy {
	sa := p.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	var ips []string
	for _, ip := range p.Status.PodIPs {
		ips = append(ips, ip.IP)
	}
	kind := dataplane.KindSidecar
	if p.Annotations[dataplane.AnnotationProxyless] == "grpc" {
		kind = dataplane.KindGRPC
	}
	var probes map[string]dataplane.AppProbe
	if raw := p.Annotations["weft.dev/app-probes"]; raw != "" {
		if err := json.Unmarshal([]byte(raw), &probes); err != nil {
			panic(err)
		}
	}
	proxy := dataplane.Proxy{Namespace: p.Namespace, ServiceAccount: sa, Labels: p.Labels, IPs: ips, Kind: kind, AppProbes: probes}
	// The controller reads the zone from the pod's Node, falling back to
	// the pod's own topology label: the inputs have no Nodes.
	proxy.Region, proxy.Zone = dataplane.Locality(nil, p.Labels)
	return proxy
}

func list[T proto.Message](in []T) []proto.Message {
	out := make([]proto.Message, len(in))
	for i, m := range in {
		out[i] = m
	}
	return out
}

// render writes messages as YAML through protojson, so Any fields show
// their type and content, and map keys are sorted.
func render(t *testing.T, msgs []proto.Message) []byte {
	var docs [][]byte
	for _, m := range msgs {
		j, err := protojson.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		y, err := yaml.JSONToYAML(j)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, y)
	}
	if len(docs) == 0 {
		return []byte("# none\n")
	}
	return bytes.Join(docs, []byte("---\n"))
}

func compare(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	exp, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./translator/envoy -update to create it, then read it)", err)
	}
	if d := cmp.Diff(string(exp), string(got)); d != "" {
		t.Errorf("%s differs (-want +got):\n%s", path, d)
	}
}
