// Package charts holds the tests of weft's Helm chart (charts/weft): with
// its defaults it renders the same objects as the kustomize install
// (config/default), and each option the same objects as its kustomize
// counterpart; bad values fail with the value's name.
package charts

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"

	"github.com/weftmesh/weft/internal/testing/testenv"
)

type tools struct{ root, helm, kubectl string }

func setup(t *testing.T) tools {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := testenv.EnsureBinaries(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", filepath.Join(root, "hack", "build-helm.sh"))
	cmd.Env = append(os.Environ(), "WEFT_BIN_DIR="+bin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("hack/build-helm.sh: %v\n%s", err, out)
	}
	return tools{root: root, helm: filepath.Join(bin, "helm"), kubectl: filepath.Join(bin, "kubectl")}
}

func (x tools) run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = x.root
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("%s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), err
}

func (x tools) helmTemplate(t *testing.T, set ...string) map[string]map[string]any {
	t.Helper()
	args := []string{"template", "weft", "charts/weft", "--namespace", "weft-system"}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	out, err := x.run(t, x.helm, args...)
	if err != nil {
		t.Fatal(err)
	}
	objs := parse(t, out)
	for _, o := range objs {
		// Helm's own: CRDs are kept on uninstall (deleting one deletes
		// every object of its kind). kubectl has no uninstall to guard.
		if ann := annotations(o); ann != nil {
			delete(ann, "helm.sh/resource-policy")
		}
	}
	return objs
}

func (x tools) kustomize(t *testing.T, dir string) map[string]map[string]any {
	t.Helper()
	out, err := x.run(t, x.kubectl, "kustomize", dir)
	if err != nil {
		t.Fatal(err)
	}
	objs := parse(t, out)
	// `helm install --create-namespace` makes the release namespace; the
	// chart does not hold it (a chart that did would fail to install
	// into a namespace Helm had just created).
	delete(objs, "Namespace/<nil>/weft-system")
	return objs
}

// parse keys every object of a multi-document YAML stream by
// kind/namespace/name.
func parse(t *testing.T, stream string) map[string]map[string]any {
	t.Helper()
	objs := map[string]map[string]any{}
	for _, doc := range strings.Split("\n"+stream, "\n---") {
		var o map[string]any
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			t.Fatalf("a rendered document does not parse: %v\n%s", err, doc)
		}
		if len(o) == 0 {
			continue
		}
		md, _ := o["metadata"].(map[string]any)
		key := fmt.Sprintf("%v/%v/%v", o["kind"], md["namespace"], md["name"])
		if _, dup := objs[key]; dup {
			t.Fatalf("%s rendered twice", key)
		}
		objs[key] = o
	}
	return objs
}

func annotations(o map[string]any) map[string]any {
	md, _ := o["metadata"].(map[string]any)
	a, _ := md["annotations"].(map[string]any)
	return a
}

func keys(m map[string]map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func same(t *testing.T, what string, got, want map[string]map[string]any) {
	t.Helper()
	if d := cmp.Diff(keys(want), keys(got)); d != "" {
		t.Errorf("%s: the chart renders other objects than kustomize (-kustomize +helm):\n%s", what, d)
	}
	for k, w := range want {
		if g, ok := got[k]; ok {
			if d := cmp.Diff(w, g); d != "" {
				t.Errorf("%s: %s differs (-kustomize +helm):\n%s", what, k, d)
			}
		}
	}
}

// TestChartRendersConfigDefault: `helm template` with the defaults gives
// exactly config/default's objects (the Namespace aside), field for field:
// one install, two formats.
func TestChartRendersConfigDefault(t *testing.T) {
	x := setup(t)
	if out, err := x.run(t, x.helm, "lint", "--strict", "charts/weft"); err != nil {
		t.Fatalf("helm lint: %v\n%s", err, out)
	}
	want := x.kustomize(t, "config/default")
	if len(want) < 10 {
		t.Fatalf("config/default rendered only %v", keys(want))
	}
	same(t, "defaults", x.helmTemplate(t), want)
}

// TestChartOptionsMatchKustomize: each of the chart's options renders what
// its kustomize counterpart adds.
func TestChartOptionsMatchKustomize(t *testing.T) {
	x := setup(t)

	// The anonymous plaintext xDS port: config/components/plaintext-xds.
	same(t, "xds.plaintext=true", x.helmTemplate(t, "xds.plaintext=true"), x.kustomize(t, "charts/testdata/plaintext-xds"))

	// The webhook's certificate from cert-manager:
	// config/components/webhook-cert-manager.
	same(t, "webhook.certManager=true", x.helmTemplate(t, "webhook.certManager=true"), x.kustomize(t, "charts/testdata/webhook-cert-manager"))

	// Prometheus Operator PodMonitors: config/components/monitoring. The
	// monitoring.coreos.com CRDs are not installed in the test API server
	// (nor needed: this compares renders, and nothing here applies them),
	// so the objects are checked field for field against the component,
	// not against the Operator's schema.
	same(t, "monitoring.podMonitors=true", x.helmTemplate(t, "monitoring.podMonitors=true"), x.kustomize(t, "charts/testdata/monitoring"))
	withLabel := x.helmTemplate(t, "monitoring.podMonitors=true", "monitoring.labels.release=kps")
	for _, name := range []string{"weft-controller", "weft-sidecars"} {
		pm := withLabel["PodMonitor/weft-system/"+name]
		if l := pm["metadata"].(map[string]any)["labels"].(map[string]any); l["release"] != "kps" {
			t.Errorf("monitoring.labels: PodMonitor %s has labels %v", name, l)
		}
	}

	// Values that change one field each.
	got := x.helmTemplate(t, "controller.replicas=3", "controller.image.tag=v9.9.9", "controller.initImage=registry.example/weft-init:v9.9.9")
	d := got["Deployment/weft-system/weft-controller"]
	spec := d["spec"].(map[string]any)
	container := spec["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)
	if spec["replicas"] != float64(3) || container["image"] != "ghcr.io/weftmesh/weft-controller:v9.9.9" ||
		!strings.Contains(fmt.Sprint(container["args"]), "--init-image=registry.example/weft-init:v9.9.9") {
		t.Errorf("values not applied: replicas %v, image %v, args %v", spec["replicas"], container["image"], container["args"])
	}
	digest := "sha256:" + strings.Repeat("ab", 32)
	got = x.helmTemplate(t, "controller.image.digest="+digest)
	container = got["Deployment/weft-system/weft-controller"]["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)
	if container["image"] != "ghcr.io/weftmesh/weft-controller@"+digest {
		t.Errorf("a digest pins the image: %v", container["image"])
	}
	if _, ok := x.helmTemplate(t, "crds.enabled=false")["CustomResourceDefinition//trafficsplits.mesh.weft.dev"]; ok {
		t.Error("crds.enabled=false still renders the CRDs")
	}
}

// TestChartRefusesBadValues: a wrong value fails the install with its name.
func TestChartRefusesBadValues(t *testing.T) {
	x := setup(t)
	for set, want := range map[string]string{
		"controller.image.tag=latest": "controller.image.tag: latest names no version",
		"controller.replicas=0":       "/controller/replicas': minimum: got 0, want 1",
		"controller.logFormat=xml":    "/controller/logFormat'",
		"webhook.timeoutSeconds=60":   "/webhook/timeoutSeconds'",
		"controller.image.digest=abc": "/controller/image/digest'",
		"controler.replicas=2":        "additional properties 'controler' not allowed",
		"xds.plaintext=maybe":         "/xds/plaintext'",
		"monitoring.podMonitor=true":  "additional properties 'podMonitor' not allowed",
	} {
		_, err := x.run(t, x.helm, "template", "weft", "charts/weft", "--namespace", "weft-system", "--set", set)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("--set %s: %v; want an error with %q", set, err, want)
		}
	}
}
