package webhook

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/dataplane"
)

var update = flag.Bool("update", false, "rewrite the golden files (then read every diff before committing)")

// TestGolden injects each testdata/NAME.yaml and compares the result with
// NAME.injected.yaml, or, when injection is refused, the message with
// NAME.error.txt. An input may start with a Namespace (default: the
// object's namespace, labelled weft.dev/inject=enabled) and a MeshConfig
// (default: none). Names starting with "legacy" use LegacySidecar, and
// "legacy-no-sleep" also NoSleepAction. Run with -update to rewrite the
// goldens; stale ones are removed.
func TestGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, in := range inputs {
		if strings.HasSuffix(in, ".injected.yaml") {
			continue
		}
		name := strings.TrimSuffix(filepath.Base(in), ".yaml")
		t.Run(name, func(t *testing.T) {
			obj, ns, mc := readCase(t, in)
			o := Options{InitImage: "ghcr.io/weftmesh/weft-init:v0.1.0"}
			if strings.HasPrefix(name, "legacy") {
				o.LegacySidecar = true
			}
			if strings.HasPrefix(name, "legacy-no-sleep") {
				o.NoSleepAction = true
			}
			out, report, ok, err := InjectObject(obj, ns, mc, o)
			if !ok {
				t.Fatalf("%T is not a kind weft injects", obj)
			}
			var got []byte
			golden := filepath.Join("testdata", name+".injected.yaml")
			if err != nil {
				golden = filepath.Join("testdata", name+".error.txt")
				got = []byte(err.Error() + "\n")
			} else {
				var b bytes.Buffer
				if err := EncodeYAML(&b, []runtime.Object{out}); err != nil {
					t.Fatal(err)
				}
				got = b.Bytes()
				// Injection is idempotent: injecting the result again
				// changes nothing.
				again, _, _, err := InjectObject(out, ns, mc, o)
				if err != nil {
					t.Fatalf("injecting the injected object: %v", err)
				}
				if d := cmp.Diff(out, again); d != "" {
					t.Errorf("injecting twice changed the object (-once +twice):\n%s", d)
				}
				if report.Injected != strings.Contains(string(got), "weft.dev/inject-status: injected") {
					t.Errorf("report %+v disagrees with the status annotation", report)
				}
			}
			want[golden] = true
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			expected, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./webhook -run TestGolden -update, then read it)", err)
			}
			if d := cmp.Diff(string(expected), string(got)); d != "" {
				t.Errorf("%s differs (-golden +got); run with -update and read the diff:\n%s", golden, d)
			}
		})
	}
	outputs, _ := filepath.Glob("testdata/*.injected.yaml")
	errs, _ := filepath.Glob("testdata/*.error.txt")
	for _, o := range append(outputs, errs...) {
		if !want[o] {
			if *update {
				t.Logf("removing stale golden %s", o)
				_ = os.Remove(o)
			} else {
				t.Errorf("stale golden %s has no input (run with -update to remove it)", o)
			}
		}
	}
}

func readCase(t *testing.T, path string) (runtime.Object, *corev1.Namespace, *v1alpha1.MeshConfig) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := DecodeYAML(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var (
		obj runtime.Object
		ns  *corev1.Namespace
		mc  *v1alpha1.MeshConfig
	)
	for _, o := range objs {
		switch o := o.(type) {
		case *corev1.Namespace:
			ns = o
		case *v1alpha1.MeshConfig:
			mc = o
		default:
			if obj != nil {
				t.Fatalf("%s: more than one workload", path)
			}
			obj = o
		}
	}
	if obj == nil {
		t.Fatalf("%s: no workload", path)
	}
	if ns == nil {
		name := obj.(metav1.Object).GetNamespace()
		ns = &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{dataplane.LabelInject: dataplane.InjectEnabled}}}
	}
	return obj, ns, mc
}
