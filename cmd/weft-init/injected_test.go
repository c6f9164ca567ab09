package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/dataplane"
)

// TestInjectedArgs: every weft-init the webhook's goldens inject
// (webhook/testdata/*.injected.yaml) is given arguments weft-init accepts,
// and the backend MeshConfig chose is the one it would use: the injector
// and weft-init agree on their flags without importing each other.
func TestInjectedArgs(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "webhook", "testdata", "*.injected.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	backends := map[string]int{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range strings.Split(string(data), "\n---\n") {
			for _, c := range podInits(doc, t) {
				if c.Name != dataplane.InitContainerName {
					continue
				}
				var out bytes.Buffer
				code, err := run(append(append([]string{}, c.Args...), "--dry-run"), &out)
				if code != 0 || err != nil {
					t.Errorf("%s: weft-init %v: exit %d, %v", filepath.Base(f), c.Args, code, err)
				}
				backend := "nftables"
				for _, a := range c.Args {
					if v, ok := strings.CutPrefix(a, "--backend="); ok {
						backend = v
					}
				}
				backends[backend]++
			}
		}
	}
	if backends["nftables"] < 5 || backends["iptables"] != 1 {
		t.Errorf("weft-init containers by backend %v; want the goldens' many nftables and capture-backend-iptables' one iptables", backends)
	}
}

// podInits finds the init containers of a Pod or of a workload's pod
// template, wherever the document holds them.
func podInits(doc string, t *testing.T) []corev1.Container {
	var obj map[string]any
	if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
		t.Fatal(err)
	}
	var out []corev1.Container
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if ics, ok := v["initContainers"]; ok {
				b, _ := yaml.Marshal(ics)
				var cs []corev1.Container
				if err := yaml.Unmarshal(b, &cs); err != nil {
					t.Fatal(err)
				}
				out = append(out, cs...)
				return
			}
			for _, x := range v {
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(obj)
	return out
}
